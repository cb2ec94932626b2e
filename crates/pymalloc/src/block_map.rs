//! What an address of the two reserved regions is: the bounds of the arena
//! region and of the segment region, the owner of each of their slots, and
//! the *cache class* of each pool and of each span unit.
//!
//! The cache classes number every class a thread heap's front cache holds
//! (`front_cache.rs`): the pool classes first (a pool block of size class
//! `c` is cache class `c`), then the medium classes. A unit of a medium span
//! of class `m` reads `NB_SMALL_SIZE_CLASSES + m`; a unit holding a large
//! block's start or a huge block's reads [`NO_CLASS`].
//!
//! The two regions are the two halves of one reservation, and their
//! tables are one owner table and one class table over the whole of it, so
//! [`owner_and_offset`] then [`class_at_offset`] answer "whose block, and
//! which cached class" for an address of either region with one
//! subtraction, one comparison and two loads, as the arena region alone
//! took before, and without a branch on which region the address is in. A program whose sizes straddle 512 bytes
//! at random would otherwise mispredict that branch on half its frees: a
//! ring of 1,000 random blocks of 8–1,000 bytes took 17.4 ns per
//! malloc/free pair, against 7.0 ns for 8–512 and 10.3 ns for 513–1,000
//! alone (docs/every-size.md).
//!
//! Entries are written before any block they describe is handed out, by the
//! heap that owns the slot (or before some synchronisation that hands it
//! over); they are read only for live blocks, so stale entries of slots or
//! units not in use are never read. The owner of a slot holding a live
//! block is never null: a heap that is not a thread heap, and a huge
//! block, record [`NOT_THREAD_TAG`], so a thread without a heap, whose
//! heap pointer is null, matches no live block's owner.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicUsize, Ordering};

use crate::geometry::{ARENA_BITS, NB_SMALL_SIZE_CLASSES, POOL_BITS};

/// Bytes a region tries to reserve (64 GiB). Where that much address space
/// cannot be had (a small `RLIMIT_AS`, valgrind), it tries a quarter as much,
/// down to 1 GiB.
pub(crate) const REGION_SIZE: usize = 1 << 36;

/// Slot size of the segment region: 1 MiB in both geometries.
pub(crate) const SEGMENT_BITS: u32 = 20;
/// A span unit of a segment: 16 KiB in both geometries.
pub(crate) const UNIT_BITS: u32 = 14;

/// The owner recorded for a block no thread heap owns: a block of a heap
/// that is not a thread heap (the shared locked heap, the GIL heap, a heap
/// used directly), which stamps it as its pools' owner tag, and a huge
/// block. Not null, so that no live block has a null owner: a thread
/// without a heap, whose heap pointer is null, then matches no block's
/// owner, and the frees that compare the two need no test of their own for
/// a thread without a heap (two instructions on every free). Never a
/// heap's address (a heap is not at address 1).
pub(crate) const NOT_THREAD_TAG: *const () = core::ptr::without_provenance(1);

/// The cache class of a unit that holds no cached kind of block.
pub(crate) const NO_CLASS: u8 = 0xff;
const _: () = assert!(NB_SMALL_SIZE_CLASSES + crate::span_class::NB_MEDIUM_CLASSES < NO_CLASS as usize);

pub(crate) const ARENA_SLOTS: usize = REGION_SIZE >> ARENA_BITS;
pub(crate) const SEGMENT_SLOTS: usize = REGION_SIZE >> SEGMENT_BITS;

/// The owner table's granule: the smaller slot (both geometries' arenas are
/// no larger than a segment; a segment takes `1 << (SEGMENT_BITS -
/// OWNER_BITS)` entries).
const OWNER_BITS: u32 = if ARENA_BITS < SEGMENT_BITS { ARENA_BITS } else { SEGMENT_BITS };
/// The class table's granule: the smaller of a pool and a unit.
const CLASS_BITS: u32 = if POOL_BITS < UNIT_BITS { POOL_BITS } else { UNIT_BITS };

/// The whole reservation, both regions: `2 * REGION_SIZE` at most.
const SPAN: usize = 2 * REGION_SIZE;

/// One region's part of the map. Invariants: `base` and `size` are 0 until
/// the reservation is made, so no address is in the region before; they
/// are written once, before any block of the region exists, with `start`
/// (the region's offset from the reservation's base). The owner of the
/// slot at offset `off` is in `OWNERS` at `(start + off) >> OWNER_BITS`
/// (every entry of the slot), and the cache class of the pool or unit
/// there in `CLASSES` at `(start + off) >> CLASS_BITS` (every entry of the
/// granule), stored XORed with [`NO_CLASS`] so that an entry never written
/// (zeroed `.bss`) reads as "none".
pub(crate) struct Lookup {
    base: AtomicUsize,
    size: AtomicUsize,
    start: AtomicUsize,
    slot_bits: u32,
    granule_bits: u32,
}

/// Which region a [`Lookup`] describes.
pub(crate) const ARENA_REGION: usize = 0;
pub(crate) const SEGMENT_REGION: usize = 1;

/// The two regions' maps.
pub(crate) static LOOKUPS: [Lookup; 2] = [
    Lookup {
        base: AtomicUsize::new(0),
        size: AtomicUsize::new(0),
        start: AtomicUsize::new(0),
        slot_bits: ARENA_BITS,
        granule_bits: POOL_BITS,
    },
    Lookup {
        base: AtomicUsize::new(0),
        size: AtomicUsize::new(0),
        start: AtomicUsize::new(0),
        slot_bits: SEGMENT_BITS,
        granule_bits: UNIT_BITS,
    },
];

/// The whole reservation's bounds, on one cache line of their own, which
/// every free reads.
///
/// * `base` and `size`: 0 until the reservation is made; written once,
///   before any block exists.
/// * `gated_size`: the size a *gated* look-up ([`owner_and_offset_gated`])
///   takes the reservation to have. Invariant, once every writer has
///   returned: `size` while the gate is open, 0 while it is shut
///   (`GATE_SHUT`), so that a front whose fast free is gated finds no
///   address its own while the gate is shut and takes its slow path (a
///   tracing front's, which records the free), for the cost of the load the
///   ungated test makes. Beside `base`, so that a gated free touches no
///   line the ungated one does not.
#[repr(C, align(64))]
struct Bounds {
    base: AtomicUsize,
    size: AtomicUsize,
    gated_size: AtomicUsize,
}

static ALL: Bounds = Bounds { base: AtomicUsize::new(0), size: AtomicUsize::new(0), gated_size: AtomicUsize::new(0) };
static GATE_SHUT: AtomicBool = AtomicBool::new(false);

// Zeroed statics, each alone: they go to `.bss`, whose untouched pages are
// never resident (a word per slot, a byte per pool or unit).
static OWNERS: [AtomicPtr<()>; SPAN >> OWNER_BITS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; SPAN >> OWNER_BITS];
#[cfg(not(miri))]
static CLASSES: [AtomicU8; SPAN >> CLASS_BITS] = [const { AtomicU8::new(0) }; SPAN >> CLASS_BITS];

/// Records the reservation: `size` bytes from `base`, the arena region its
/// first half and the segment region its second (once, before any block of
/// either exists).
pub(crate) fn set_reservation(base: usize, size: usize) {
    debug_assert!(size <= SPAN && size % (2 << SEGMENT_BITS) == 0);
    let half = size / 2;
    ALL.base.store(base, Ordering::Relaxed);
    ALL.size.store(size, Ordering::Relaxed);
    for (i, map) in LOOKUPS.iter().enumerate() {
        map.start.store(i * half, Ordering::Relaxed);
        map.base.store(base + i * half, Ordering::Relaxed);
        map.size.store(half, Ordering::Relaxed);
    }
    settle_gate();
}

/// Shuts (`false`) or opens the gate of [`owner_and_offset_gated`].
pub(crate) fn set_gate(open: bool) {
    GATE_SHUT.store(!open, Ordering::SeqCst);
    settle_gate();
}

/// Writes `ALL.gated_size` from the gate and the reservation, until what it
/// wrote is what they say after the write. Two writers (the reservation,
/// a tracer starting or stopping) may race: one may write a value worked
/// out from a state the other has since changed, but the one whose write
/// comes last reads the state after it and writes again if it is stale,
/// so the invariant holds when both have returned. No lock, so nothing a
/// `fork` could leave held.
fn settle_gate() {
    let wanted = || if GATE_SHUT.load(Ordering::SeqCst) { 0 } else { ALL.size.load(Ordering::SeqCst) };
    loop {
        let v = wanted();
        ALL.gated_size.store(v, Ordering::SeqCst);
        if wanted() == v {
            return;
        }
    }
}

#[inline(always)]
fn owner_entry(i: usize) -> &'static AtomicPtr<()> {
    debug_assert!(i < OWNERS.len());
    // SAFETY: callers pass an index from an offset below the reservation's
    // size (at most SPAN), so below OWNERS.len().
    unsafe { OWNERS.get_unchecked(i) }
}

#[cfg(not(miri))]
#[inline(always)]
fn class_entry(i: usize) -> &'static AtomicU8 {
    debug_assert!(i < CLASSES.len());
    // SAFETY: as for owner_entry.
    unsafe { CLASSES.get_unchecked(i) }
}

impl Lookup {
    /// The offset of `p` from the region's start, if `p` lies in the region.
    #[inline(always)]
    pub(crate) fn offset(&self, p: *const u8) -> Option<usize> {
        let off = p.addr().wrapping_sub(self.base.load(Ordering::Relaxed));
        (off < self.size.load(Ordering::Relaxed)).then_some(off)
    }

    /// The region's base address and size (both 0 until it is reserved).
    #[inline(always)]
    pub(crate) fn bounds(&self) -> (usize, usize) {
        (self.base.load(Ordering::Relaxed), self.size.load(Ordering::Relaxed))
    }

    /// Offset `off` of the region as an offset of the reservation.
    #[inline(always)]
    fn whole(&self, off: usize) -> usize {
        debug_assert!(off < self.size.load(Ordering::Relaxed));
        self.start.load(Ordering::Relaxed) + off
    }

    /// The owner recorded for the slot at offset `off`.
    ///
    /// # Safety
    /// `off` is `offset(p)` of some `p` in the region.
    #[inline(always)]
    pub(crate) unsafe fn owner_at(&self, off: usize) -> *const () {
        owner_entry(self.whole(off) >> OWNER_BITS).load(Ordering::Relaxed).cast_const()
    }

    /// Records `owner` for the slot at offset `off`.
    ///
    /// # Safety
    /// `off` is the offset of a slot of the reserved region.
    pub(crate) unsafe fn set_owner_at(&self, off: usize, owner: *const ()) {
        let first = self.whole(off) >> OWNER_BITS;
        for i in first..first + (1 << (self.slot_bits - OWNER_BITS)) {
            owner_entry(i).store(owner.cast_mut(), Ordering::Relaxed);
        }
    }

    /// The cache class recorded for the pool or unit at offset `off`.
    ///
    /// # Safety
    /// As for [`Lookup::owner_at`]; not under Miri (no region there).
    #[cfg(not(miri))]
    #[inline(always)]
    pub(crate) unsafe fn class_at(&self, off: usize) -> u8 {
        class_entry(self.whole(off) >> CLASS_BITS).load(Ordering::Relaxed) ^ NO_CLASS
    }

    /// Records cache class `class` for the `n` pools or units from offset
    /// `off`.
    ///
    /// # Safety
    /// `off` and the `n - 1` pools or units after it lie in the reserved
    /// region, and their blocks are the caller's to describe.
    #[cfg(not(miri))]
    pub(crate) unsafe fn set_classes(&self, off: usize, n: usize, class: u8) {
        let first = self.whole(off) >> CLASS_BITS;
        for i in first..first + (n << (self.granule_bits - CLASS_BITS)) {
            class_entry(i).store(class ^ NO_CLASS, Ordering::Relaxed);
        }
    }

    /// Under Miri there is no region: nothing is recorded or read.
    #[cfg(miri)]
    pub(crate) unsafe fn set_classes(&self, _: usize, _: usize, _: u8) {}
}

/// The owner tag recorded for `p` and `p`'s offset in the reservation, if
/// `p` lies in either region; for a live block, whose heap holds it. Its
/// cache class is [`class_at_offset`] of that offset, read apart so that a
/// caller who wants the class of its own blocks only tests the owner first
/// and branches twice: the compiler then keeps the class's load behind the
/// owner's test and tests each with one compare and branch, where it merged
/// the two tests, once both values were loaded, into four instructions more
/// (see the module documentation).
#[inline(always)]
pub(crate) fn owner_and_offset(p: *const u8) -> Option<(*const (), usize)> {
    owner_and_offset_within(p, ALL.size.load(Ordering::Relaxed))
}

/// [`owner_and_offset`] behind the gate ([`set_gate`]): `None` for every
/// address while it is shut. The same instructions as the ungated test
/// (the size is loaded from another word).
#[inline(always)]
pub(crate) fn owner_and_offset_gated(p: *const u8) -> Option<(*const (), usize)> {
    owner_and_offset_within(p, ALL.gated_size.load(Ordering::Acquire))
}

/// [`owner_and_offset`] for a reservation taken to be `size` bytes (its
/// real size, or 0).
#[inline(always)]
fn owner_and_offset_within(p: *const u8, size: usize) -> Option<(*const (), usize)> {
    let off = p.addr().wrapping_sub(ALL.base.load(Ordering::Relaxed));
    if off >= size {
        return None;
    }
    Some((owner_entry(off >> OWNER_BITS).load(Ordering::Relaxed).cast_const(), off))
}

/// The cache class recorded at `off`, an offset [`owner_and_offset`]
/// returned for a live block ([`NO_CLASS`] for a large or huge block).
#[inline(always)]
pub(crate) fn class_at_offset(off: usize) -> usize {
    #[cfg(not(miri))]
    // XORed after the widening: one `xor` of the loaded word, where the
    // byte's own `not` then a zero extension took two.
    return usize::from(class_entry(off >> CLASS_BITS).load(Ordering::Relaxed)) ^ usize::from(NO_CLASS);
    #[cfg(miri)]
    {
        let _ = off;
        usize::from(NO_CLASS)
    }
}
