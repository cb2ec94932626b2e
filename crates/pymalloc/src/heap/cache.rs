//! The block cache of caching heaps ([`Heap::new_retaining`]): up to
//! [`CACHE_SLOTS`] recently freed blocks per size class, handed out again
//! first, most recent first.
//!
//! A cached block keeps its pool, and so its arena, in use. So that cached
//! blocks never keep memory CPython would give back: a full cache flushes
//! its older half; a flush that empties a pool flushes the whole class and
//! turns its cache off until the class next allocates from a pool (freeing a
//! large structure returns its arenas as CPython does); and before taking a
//! new arena the heap flushes every cache (`transitions.rs`).

use core::ptr;

use super::Heap;
use crate::front_cache::FrontCache;
pub use crate::front_cache::SLOTS as CACHE_SLOTS;
use crate::geometry::NB_SMALL_SIZE_CLASSES;
use crate::pool::launder;

/// The pool classes of the heap's front cache (`front_cache.rs`: cache
/// class `c` is size class `c`).
///
/// Invariants: the stack of class `c` holds distinct blocks of class `c` of
/// this heap's pools that were freed and not handed out again, at most its
/// limit, which is the front cache's `small_max` (0: no cache, or
/// `CACHE_SLOTS`) or 0 while the class drains (a flush emptied a pool:
/// frees go straight to pools until the class allocates from a pool
/// again). Their pools still count them (a cached block is in use as far
/// as its pool is concerned, and on no free list); statistics count them
/// as free.
#[derive(Clone, Copy)]
pub(super) struct BlockCache<'a>(pub(super) &'a FrontCache);

impl<'a> BlockCache<'a> {
    /// True for a caching heap.
    pub(super) fn enabled(self) -> bool {
        self.0.small_max() != 0
    }

    /// Turns the cache on (an uncached heap's classes start caching when
    /// they next allocate from a pool).
    pub(super) fn enable(self) {
        self.0.enable_small();
    }

    /// The most recently cached block of class `c`, taken out; null if none.
    #[inline(always)]
    pub(super) fn pop(self, c: usize) -> *mut u8 {
        self.0.pop(c)
    }

    /// Class `c` allocates from its pools again: it may cache again.
    #[inline(always)]
    pub(super) fn reopen(self, c: usize) {
        debug_assert!(c < NB_SMALL_SIZE_CLASSES);
        self.0.set_limit(c, self.0.small_max());
    }

    /// Class `c` drains: frees go to its pools until it allocates from one.
    pub(super) fn close(self, c: usize) {
        self.0.set_limit(c, 0);
    }

    /// Blocks cached in class `c`, and its limit now.
    ///
    /// # Safety
    /// `c < NB_SMALL_SIZE_CLASSES`.
    #[inline(always)]
    pub(super) unsafe fn count_and_limit(self, c: usize) -> (u32, u32) {
        debug_assert!(c < NB_SMALL_SIZE_CLASSES);
        // SAFETY: c is a pool class, so a cache class (the contract).
        unsafe { self.0.count_and_limit(c) }
    }

    /// Caches `p` in class `c`, whose count is `n`.
    ///
    /// # Safety
    /// `c < NB_SMALL_SIZE_CLASSES`, `n` is the class's count and `n <
    /// CACHE_SLOTS`; `p` is a live block of class `c` of this heap, not
    /// cached, that its user gave up.
    #[inline(always)]
    pub(super) unsafe fn push(self, c: usize, n: u32, p: *mut u8) {
        // SAFETY: the slot exists (the contract).
        unsafe { self.0.push_at(c, n, p) }
    }

    /// Cached blocks of class `c`.
    #[inline]
    pub(super) fn cached(self, c: usize) -> usize {
        self.0.cached(c)
    }

    /// The cached blocks of class `c`, oldest first.
    pub(super) fn blocks(self, c: usize) -> impl Iterator<Item = *mut u8> + 'a {
        self.0.blocks(c)
    }

    /// The cache's limit per class (0 for an uncached heap).
    pub(super) fn max(self) -> usize {
        self.0.small_max() as usize
    }

    /// Takes the `k` oldest cached blocks of class `c` out of the cache
    /// into `out`, and returns how many.
    fn take_oldest(self, c: usize, k: usize, out: &mut [*mut u8; CACHE_SLOTS]) -> usize {
        self.0.take_oldest(c, k, out)
    }
}

impl Heap {
    /// The cache of class `c` is full (and on): its older half goes back to
    /// the pools, and `p` takes a slot. A flush that empties a pool flushes
    /// the whole class and turns its cache off (see the module
    /// documentation).
    ///
    /// # Safety
    /// `p` is a live block of class `c` of this heap, not in the cache.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn cache_full(&self, p: *mut u8, c: usize) {
        let pools = self.arenas.pools_in_use.get();
        self.flush_cache_class(c, CACHE_SLOTS / 2);
        if self.arenas.pools_in_use.get() < pools {
            self.flush_cache_class(c, CACHE_SLOTS);
            self.cache().close(c);
            // SAFETY: p is a live block of this heap, not cached (the
            // contract).
            unsafe { self.free_to_pool(p) };
            return;
        }
        let n = self.cache().cached(c) as u32;
        // SAFETY: the flush made room (n < CACHE_SLOTS), c is p's class.
        unsafe { self.cache().push(c, n, launder(p)) };
    }

    /// Gives the `k` oldest cached blocks of class `c` back to their pools.
    fn flush_cache_class(&self, c: usize, k: usize) {
        let mut out = [ptr::null_mut::<u8>(); CACHE_SLOTS];
        let k = self.cache().take_oldest(c, k, &mut out);
        for &b in &out[..k] {
            // SAFETY: a block that was cached: a live block of this heap
            // that nobody uses, no longer cached.
            unsafe { self.free_to_pool(b) };
        }
    }

    /// [`Heap::flush_cache`] through a shared reference (the owner of a
    /// shared heap only).
    pub(crate) fn flush_cache_shared(&self) {
        for c in 0..NB_SMALL_SIZE_CLASSES {
            self.flush_cache_class(c, CACHE_SLOTS);
        }
    }
}
