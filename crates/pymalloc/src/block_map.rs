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
//! [`owner_and_class`] answers "whose block, and which cached class" for an
//! address of either region without a branch on which region it is in: the
//! two regions' descriptions sit in one array, indexed by a comparison's
//! result. A program whose sizes straddle 512 bytes at random would
//! otherwise mispredict that branch on half its frees: a ring of 1,000
//! random blocks of 8–1,000 bytes took 17.4 ns per malloc/free pair, against
//! 7.0 ns for 8–512 and 10.3 ns for 513–1,000 alone (docs/every-size.md).
//!
//! Entries are written before any block they describe is handed out, by the
//! heap that owns the slot (or before some synchronisation that hands it
//! over); they are read only for live blocks, so stale entries of slots or
//! units not in use are never read.

use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

use crate::geometry::{ARENA_BITS, NB_SMALL_SIZE_CLASSES, POOL_BITS};

/// Bytes a region tries to reserve (64 GiB). Where that much address space
/// cannot be had (a small `RLIMIT_AS`, valgrind), it tries a quarter as much,
/// down to 1 GiB.
pub(crate) const REGION_SIZE: usize = 1 << 36;

/// Slot size of the segment region: 1 MiB in both geometries.
pub(crate) const SEGMENT_BITS: u32 = 20;
/// A span unit of a segment: 16 KiB in both geometries.
pub(crate) const UNIT_BITS: u32 = 14;

/// The cache class of a unit that holds no cached kind of block.
pub(crate) const NO_CLASS: u8 = 0xff;
const _: () = assert!(NB_SMALL_SIZE_CLASSES + crate::span_class::NB_MEDIUM_CLASSES < NO_CLASS as usize);

pub(crate) const ARENA_SLOTS: usize = REGION_SIZE >> ARENA_BITS;
pub(crate) const SEGMENT_SLOTS: usize = REGION_SIZE >> SEGMENT_BITS;

/// One region's map. Invariants: `base` and `size` are 0 until the region
/// is reserved, so no address is in it before; they are written once,
/// before any block of the region exists. `owners[off >> owner_bits]` is the
/// owner tag of the heap holding the slot at offset `off`, and
/// `classes[off >> class_bits]` the cache class of the pool or unit there
/// (both as the module documentation says), stored XORed with
/// [`NO_CLASS`], so that an entry never written (zeroed `.bss`) reads as
/// "none".
pub(crate) struct Lookup {
    base: AtomicUsize,
    size: AtomicUsize,
    owner_bits: u32,
    class_bits: u32,
    owners: &'static [AtomicPtr<()>],
    classes: &'static [AtomicU8],
}

/// Which region a [`Lookup`] describes.
pub(crate) const ARENA_REGION: usize = 0;
pub(crate) const SEGMENT_REGION: usize = 1;

/// The two regions' maps, in one array so that [`owner_and_class`] picks
/// one by index.
pub(crate) static LOOKUPS: [Lookup; 2] = [
    Lookup {
        base: AtomicUsize::new(0),
        size: AtomicUsize::new(0),
        owner_bits: ARENA_BITS,
        class_bits: POOL_BITS,
        owners: &ARENA_OWNERS,
        classes: arena_classes(),
    },
    Lookup {
        base: AtomicUsize::new(0),
        size: AtomicUsize::new(0),
        owner_bits: SEGMENT_BITS,
        class_bits: UNIT_BITS,
        owners: &SEGMENT_OWNERS,
        classes: segment_classes(),
    },
];

// Zeroed statics, each alone: they go to `.bss`, whose untouched pages are
// never resident (one byte per pool or unit, one word per slot).
static ARENA_OWNERS: [AtomicPtr<()>; ARENA_SLOTS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; ARENA_SLOTS];
static SEGMENT_OWNERS: [AtomicPtr<()>; SEGMENT_SLOTS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; SEGMENT_SLOTS];
#[cfg(not(miri))]
static ARENA_CLASSES: [AtomicU8; REGION_SIZE >> POOL_BITS] = [const { AtomicU8::new(0) }; REGION_SIZE >> POOL_BITS];
#[cfg(not(miri))]
static SEGMENT_CLASSES: [AtomicU8; REGION_SIZE >> UNIT_BITS] = [const { AtomicU8::new(0) }; REGION_SIZE >> UNIT_BITS];

// Under Miri there is no region (its size stays 0): nothing is looked up.
#[cfg(not(miri))]
const fn arena_classes() -> &'static [AtomicU8] {
    &ARENA_CLASSES
}
#[cfg(miri)]
const fn arena_classes() -> &'static [AtomicU8] {
    &[]
}
#[cfg(not(miri))]
const fn segment_classes() -> &'static [AtomicU8] {
    &SEGMENT_CLASSES
}
#[cfg(miri)]
const fn segment_classes() -> &'static [AtomicU8] {
    &[]
}

/// True where both regions have the same slot size and class granule (the
/// default geometry): the shifts are then constants of the code, not loads.
const SAME_SHIFTS: bool = ARENA_BITS == SEGMENT_BITS && POOL_BITS == UNIT_BITS;

impl Lookup {
    #[inline(always)]
    fn owner_bits(&self) -> u32 {
        if SAME_SHIFTS {
            SEGMENT_BITS
        } else {
            self.owner_bits
        }
    }

    #[inline(always)]
    fn class_bits(&self) -> u32 {
        if SAME_SHIFTS {
            UNIT_BITS
        } else {
            self.class_bits
        }
    }

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

    /// Records the reservation (once, before any block of it exists).
    pub(crate) fn set_bounds(&self, base: usize, size: usize) {
        debug_assert!(size <= REGION_SIZE);
        self.base.store(base, Ordering::Relaxed);
        self.size.store(size, Ordering::Relaxed);
    }

    /// The owner recorded for the slot at offset `off`.
    ///
    /// # Safety
    /// `off` is `offset(p)` of some `p` in the region.
    #[inline(always)]
    pub(crate) unsafe fn owner_at(&self, off: usize) -> *const () {
        debug_assert!(off < self.size.load(Ordering::Relaxed));
        // SAFETY: off < size <= REGION_SIZE (the contract), so the slot is in
        // the table.
        unsafe { self.owners.get_unchecked(off >> self.owner_bits()) }.load(Ordering::Relaxed).cast_const()
    }

    /// Records `owner` for the slot at offset `off`.
    ///
    /// # Safety
    /// `off` is the offset of a slot of the reserved region.
    pub(crate) unsafe fn set_owner_at(&self, off: usize, owner: *const ()) {
        debug_assert!(off < self.size.load(Ordering::Relaxed));
        // SAFETY: off < size <= REGION_SIZE (the contract).
        unsafe { self.owners.get_unchecked(off >> self.owner_bits()) }.store(owner.cast_mut(), Ordering::Relaxed);
    }

    /// The cache class recorded for the pool or unit at offset `off`.
    ///
    /// # Safety
    /// As for [`Lookup::owner_at`]; not under Miri (no region there).
    #[inline(always)]
    pub(crate) unsafe fn class_at(&self, off: usize) -> u8 {
        debug_assert!(off < self.size.load(Ordering::Relaxed));
        // SAFETY: off < size <= REGION_SIZE (the contract).
        unsafe { self.classes.get_unchecked(off >> self.class_bits()) }.load(Ordering::Relaxed) ^ NO_CLASS
    }

    /// Records cache class `class` for the `n` pools or units from offset
    /// `off`.
    ///
    /// # Safety
    /// `off` and the `n - 1` pools or units after it lie in the reserved
    /// region, and their blocks are the caller's to describe.
    pub(crate) unsafe fn set_classes(&self, off: usize, n: usize, class: u8) {
        let first = off >> self.class_bits();
        debug_assert!(off < self.size.load(Ordering::Relaxed) && first + n <= self.classes.len());
        for i in first..first + n {
            // SAFETY: inside the region (the contract), so in the table.
            unsafe { self.classes.get_unchecked(i) }.store(class ^ NO_CLASS, Ordering::Relaxed);
        }
    }
}

/// The owner tag and cache class recorded for `p`, if it lies in either
/// region; for a live block, whose heap holds it and which front-cache
/// class it goes to ([`NO_CLASS`] for a large or huge block). No branch on
/// which region `p` is in (see the module documentation).
#[inline(always)]
pub(crate) fn owner_and_class(p: *const u8) -> Option<(*const (), usize)> {
    let in_segments = LOOKUPS[ARENA_REGION].offset(p).is_none();
    let map = &LOOKUPS[usize::from(in_segments)];
    let off = map.offset(p)?;
    // SAFETY: off is p's offset in the region; there is a region, so this
    // is not Miri.
    unsafe { Some((map.owner_at(off), usize::from(map.class_at(off)))) }
}
