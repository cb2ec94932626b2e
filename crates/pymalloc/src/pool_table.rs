//! The header table: where the pools of the arena region keep their
//! headers.
//!
//! CPython puts a pool's header at the start of the pool. A free then reads
//! a line on a page of its own for every pool it touches: in a heap freed in
//! random order, a cache miss and a TLB miss per free, where mimalloc reads
//! metadata that lies together (docs/pool-headers.md). And a pool whose
//! surviving blocks all lie past its first page still holds that page for
//! the header.
//!
//! The pools of the arena region keep their headers here instead: one entry
//! of [`ENTRY_BYTES`] per pool, in the order of the pools in the region, so
//! the headers of one arena's pools fill one 4 KiB page of the table and the
//! headers of neighbouring arenas lie next to each other. The first
//! `POOL_OVERHEAD` bytes of such a pool stay unused, so its blocks sit where
//! CPython's would and the statistics do not change. Pools of arenas outside
//! the region (another arena allocator, or no region) keep their headers in
//! the pool (`pool.rs` chooses).
//!
//! Invariants: the table is made with the region's reservation, before any
//! arena of the region exists, and never goes away; `BASE`, `LEN` and
//! `DELTA` are written once then. The table is reserved address space
//! (`PROT_NONE`, no commit charge); the entries of a live arena of the
//! region are readable and writable ([`commit_arena`], when the region
//! hands the arena out), and they go back ([`forget_arena`]) before the
//! arena's slot returns to the region, so that a table costs a page per
//! live arena whatever the kernel's overcommit policy, and a huge page
//! could only ever hold the entries of 512 live arenas. (Where
//! the OS page is larger than an arena's entries, the whole table is made
//! writable at once instead, and forgotten entries are zeroed.) Only the
//! heap owning a pool writes its entry; every field is written when the
//! pool is taken, before anything reads it.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::geometry::{ARENA_BITS, POOL_BITS};
#[cfg(not(miri))]
use crate::os;

/// Bytes of one entry: a pool header (48 bytes) rounded up to a cache line,
/// so that no header straddles two lines.
pub(crate) const ENTRY_BYTES: usize = 64;
const ENTRY_BITS: u32 = ENTRY_BYTES.trailing_zeros();
/// Bytes of the entries of one arena's pools.
pub(crate) const ARENA_ENTRY_BYTES: usize = ENTRY_BYTES << (ARENA_BITS - POOL_BITS);

/// The table's address and length in bytes (0 until it is made).
static BASE: AtomicUsize = AtomicUsize::new(0);
static LEN: AtomicUsize = AtomicUsize::new(0);
/// The entry of the pool holding address `a` of the region is at
/// `DELTA + (a >> SHIFT & !(ENTRY_BYTES - 1))` (wrapping): the table's
/// address less the region's base scaled down the same way, exact because
/// the region's base is pool-aligned. One load, a shift, an `and` and an
/// add, without the region's base.
static DELTA: AtomicUsize = AtomicUsize::new(0);
const SHIFT: u32 = POOL_BITS - ENTRY_BITS;

/// Whether an arena's entries fill whole OS pages, so that they can be
/// made writable and given back arena by arena.
#[cfg(not(miri))]
fn per_arena() -> bool {
    ARENA_ENTRY_BYTES % os::page_size() == 0
}

/// Makes the table for the arena region, `region_size` bytes from
/// `region_base` (pool-aligned; once, before any arena of it exists); false
/// if the OS refuses the address space.
#[cfg(not(miri))]
pub(crate) fn make(region_base: usize, region_size: usize) -> bool {
    debug_assert_eq!(region_base % (1 << POOL_BITS), 0);
    let len = (region_size >> POOL_BITS) << ENTRY_BITS;
    let p = os::reserve(len, os::page_size());
    if p.is_null() {
        return false;
    }
    // SAFETY: the fresh reservation above, nobody uses it yet.
    if !per_arena() && !unsafe { os::commit(p, len) } {
        // SAFETY: our own reservation, unused.
        unsafe { os::unmap(p, len) };
        return false;
    }
    // Entries are reached from addresses computed from a pool's address.
    let base = p.expose_provenance();
    BASE.store(base, Ordering::Relaxed);
    LEN.store(len, Ordering::Relaxed);
    DELTA.store(base.wrapping_sub(region_base >> SHIFT), Ordering::Relaxed);
    true
}

/// Under Miri there is no region, so no table.
#[cfg(miri)]
pub(crate) fn make(_: usize, _: usize) -> bool {
    false
}

/// The entry of the pool at offset `off` of the arena region.
#[inline(always)]
pub(crate) fn entry(off: usize) -> *mut u8 {
    debug_assert!((off >> POOL_BITS << ENTRY_BITS) < LEN.load(Ordering::Relaxed));
    core::ptr::with_exposed_provenance_mut(BASE.load(Ordering::Relaxed) + (off >> POOL_BITS << ENTRY_BITS))
}

/// The entry of the pool holding `addr`, an address of the arena region.
#[inline(always)]
pub(crate) fn entry_of(addr: usize) -> *mut u8 {
    let e = DELTA.load(Ordering::Relaxed).wrapping_add((addr >> SHIFT) & !(ENTRY_BYTES - 1));
    debug_assert!(e.wrapping_sub(BASE.load(Ordering::Relaxed)) < LEN.load(Ordering::Relaxed));
    core::ptr::with_exposed_provenance_mut(e)
}

/// The arena-region offset of the pool whose entry is at `addr`, if `addr`
/// is an entry of the table.
#[inline(always)]
pub(crate) fn pool_offset(addr: usize) -> Option<usize> {
    let d = addr.wrapping_sub(BASE.load(Ordering::Relaxed));
    (d < LEN.load(Ordering::Relaxed)).then_some(d >> ENTRY_BITS << POOL_BITS)
}

/// Makes the entries of the arena at offset `off` of the arena region
/// usable (zeroed); false if the OS refuses.
///
/// # Safety
/// The arena's slot was just handed out by the region, and nobody uses its
/// entries.
#[cfg(not(miri))]
pub(crate) unsafe fn commit_arena(off: usize) -> bool {
    // SAFETY: the arena's entries lie in the table's reservation (made for
    // the whole region) and nobody uses them (the contract).
    !per_arena() || unsafe { os::commit(entry(off), ARENA_ENTRY_BYTES) }
}

/// Gives back the entries of the arena at offset `off` of the arena region
/// (or zeroes them, where they share an OS page with another arena's).
///
/// # Safety
/// The arena holds no pool anyone uses, and its slot has not gone back to
/// the region yet.
#[cfg(not(miri))]
pub(crate) unsafe fn forget_arena(off: usize) {
    let p = entry(off);
    // SAFETY: the arena's entries lie in the table and nobody reads or
    // writes them (the contract).
    unsafe {
        if per_arena() {
            os::decommit(p, ARENA_ENTRY_BYTES);
        } else {
            p.write_bytes(0, ARENA_ENTRY_BYTES);
        }
    }
}

/// Under Miri there is no table.
#[cfg(miri)]
pub(crate) unsafe fn commit_arena(_: usize) -> bool {
    true
}

/// Under Miri there is no table.
#[cfg(miri)]
pub(crate) unsafe fn forget_arena(_: usize) {}

/// Clears the entry of the pool at offset `off` of the arena region, whose
/// pages went back to the OS, so it reads as zeroes as they do.
///
/// # Safety
/// The pool is free and nobody reads or writes its entry meanwhile.
pub(crate) unsafe fn clear(off: usize) {
    // SAFETY: per the contract; the entry lies in the table.
    unsafe { entry(off).write_bytes(0, ENTRY_BYTES) }
}
