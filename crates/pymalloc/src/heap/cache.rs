//! The block cache of caching heaps ([`Heap::new_retaining`]): up to
//! [`CACHE_SLOTS`] recently freed blocks per size class, handed out again
//! first, most recent first.
//!
//! A free that finds its class's cache full sends its block straight to
//! the block's pool; the cache keeps what it holds. Sending the older half
//! of a full cache to the pools, as this heap did until 2026-12-05,
//! touched each such block twice: in a random-order free of a million
//! blocks that was 24 instructions per free on top of the pool's own work
//! (callgrind), and in the ring of 10,000 blocks the flushed blocks were
//! the ones allocations would have reused.
//!
//! A cached block keeps its pool, and so its arena, in use. So that cached
//! blocks never keep memory CPython would give back: when a pool of a
//! class empties, the class's cached blocks go back to their pools too, and
//! the class *closes* (frees go straight to pools) until an allocation
//! finds its cache empty (`transitions.rs`; freeing a large structure
//! returns its arenas as CPython does); the same when a free to a pool
//! leaves it one block in use, which may be a cached one (the pool could
//! then never empty); and before taking a new arena the heap flushes every
//! cache.

use core::ptr;

use super::Heap;
use crate::front_cache::FrontCache;
pub use crate::front_cache::SLOTS as CACHE_SLOTS;
use crate::geometry::NB_SMALL_SIZE_CLASSES;

/// The pool classes of the heap's front cache (`front_cache.rs`: cache
/// class `c` is size class `c`).
///
/// Invariants: the stack of class `c` holds distinct blocks of class `c` of
/// this heap's pools that were freed and not handed out again, at most its
/// limit, which is the front cache's `small_max` (0: no cache, or
/// `CACHE_SLOTS`) or 0 while the class is closed (a pool of the class
/// emptied or was left one block in use: frees go straight to pools until
/// an allocation finds the cache empty). Their pools still count them (a
/// cached block is in use as far as its pool is concerned, and on no free
/// list); statistics count them as free.
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

    /// Class `c`, whose pop has just found it empty, allocates from its
    /// pools again: it may cache again.
    #[inline(always)]
    pub(super) fn reopen(self, c: usize) {
        debug_assert!(c < NB_SMALL_SIZE_CLASSES);
        self.0.set_limit_of_empty(c, self.0.small_max());
    }

    /// Class `c` closes: frees go to its pools until an allocation finds its
    /// cache empty.
    pub(super) fn close(self, c: usize) {
        self.0.set_limit(c, 0);
    }

    /// Class `c`'s top and the top of its limit now: room if the first is
    /// below the second (`front_cache.rs`).
    ///
    /// # Safety
    /// `c < NB_SMALL_SIZE_CLASSES`.
    #[inline(always)]
    pub(super) unsafe fn top_and_end(self, c: usize) -> (u32, u32) {
        debug_assert!(c < NB_SMALL_SIZE_CLASSES);
        // SAFETY: c is a pool class, so a cache class (the contract).
        unsafe { self.0.top_and_end(c) }
    }

    /// Caches `p` in class `c`, whose top is `t`.
    ///
    /// # Safety
    /// `c < NB_SMALL_SIZE_CLASSES`, `(t, end)` is `top_and_end(c)` and `t <
    /// end`; `p` is a live block of class `c` of this heap, not cached,
    /// that its user gave up.
    #[inline(always)]
    pub(super) unsafe fn push(self, c: usize, t: u32, p: *mut u8) {
        // SAFETY: the slot exists (the contract).
        unsafe { self.0.push_at(c, t, p) }
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

    /// Takes every cached block of class `c` out of the cache into `out`,
    /// and returns how many.
    fn take_all(self, c: usize, out: &mut [*mut u8; CACHE_SLOTS]) -> usize {
        self.0.take_oldest(c, CACHE_SLOTS, out)
    }
}

impl Heap {
    /// Gives the cached blocks of class `c` back to their pools. Out of
    /// line: inlined into the loop over every class, it made that loop
    /// 14 KB of code.
    #[inline(never)]
    pub(super) fn flush_cache_class(&self, c: usize) {
        let mut out = [ptr::null_mut::<u8>(); CACHE_SLOTS];
        let k = self.cache().take_all(c, &mut out);
        for &b in &out[..k] {
            // SAFETY: a block that was cached: a live block of this heap
            // that nobody uses, no longer cached.
            unsafe { self.free_to_pool(b) };
        }
    }

    /// [`Heap::flush_cache`] through a shared reference (the owner of a
    /// shared heap only).
    pub(crate) fn flush_cache_shared(&self) {
        for c in super::used::every_class() {
            self.flush_cache_class(c);
        }
    }
}
