//! Is this address pymalloc's? The two ownership tests every free and
//! realloc starts with (CPython's `address_in_range`).
//!
//! * [`owns`]: exact for any address: the arena region's table of live
//!   slots for an address in the region, the radix map of the arenas
//!   outside it for any other.
//! * [`owns_live`]: exact for the address of a live block (pymalloc's or the
//!   raw allocator's), and faster: the arena region first (one subtraction
//!   and one comparison), the radix map only for arenas outside it.
//!
//! The radix map holds only the arenas outside the region (from a custom
//! arena allocator, or when the region cannot be had): marking the
//! region's arenas too made every process touch the map's root and two
//! nodes, 20 KiB resident for an answer the region gives.

use crate::radix::ARENA_MAP;
use crate::region;

/// True if `p` lies in an arena of any pymalloc heap in this process.
///
/// This is the exact ownership test, for any address; the entry points use
/// a faster test that is exact for the addresses of live blocks. For an
/// address in the arena region it takes the region's slot-table lock: it is
/// not for signal handlers, and a slot taken from the region outside any
/// heap (an arena allocator called directly) counts as owned.
///
/// ```
/// let mut heap = pymalloc::Heap::new();
/// let small = heap.malloc(100);
/// let large = heap.malloc(100_000);
/// assert!(pymalloc::owns(small));
/// assert!(!pymalloc::owns(large));
/// assert!(!pymalloc::owns(core::ptr::null()));
/// unsafe { heap.free(small); heap.free(large) };
/// ```
#[inline]
pub fn owns(p: *const u8) -> bool {
    if region::contains(p) {
        region::in_live_arena(p)
    } else {
        ARENA_MAP.contains(p)
    }
}

/// Ownership test for the address of a live block: in the arena region, or
/// (arenas from elsewhere) in the arena map. A live raw block is never in the
/// region, so this is exact for live blocks.
#[inline(always)]
pub(crate) fn owns_live(p: *const u8) -> bool {
    region::contains(p) || ARENA_MAP.contains(p)
}
