//! The pymalloc heap: size classes, pools and arenas (CPython's `obmalloc.c`).
//!
//! A [`Heap`] is a plain value holding everything pymalloc needs: the used
//! pool lists per size class, the arena table and its lists. It is `Send` but
//! not `Sync`; share one between threads through a
//! [`LockedHeap`](crate::LockedHeap), or give each thread its own
//! ([`crate::thread`]).
//!
//! The algorithm is CPython 3.11's:
//! * `used[c]` lists the pools of class `c` that have a free block, so a
//!   request finds its block in O(1): first pool of the list, head of its free
//!   list.
//! * A pool hands out its never-used blocks only when its free list is
//!   empty (CPython carves one at a time; this heap carves those that
//!   start in one page at once, `fast.rs`). A pool that becomes full
//!   leaves the used list; a pool that becomes empty goes to its arena's
//!   free pools.
//! * Arenas with free pools are kept in `usable_arenas`, sorted by their
//!   number of free pools, most-used first, so new pools come from busy arenas
//!   and nearly empty ones can drain. `nfp2lasta[n]` points to the last arena
//!   with `n` free pools, which makes every re-sort O(1) (bpo-37029).
//! * An arena whose pools are all free goes back to its arena allocator,
//!   unless it is the last usable arena: one spare is kept so that a loop
//!   allocating and freeing one block does not map and unmap an arena each
//!   time (bpo-37257).
//! * Requests of 0 or more than 512 bytes, and requests pymalloc cannot serve
//!   because no arena can be had, go to the RAW domain.
//!
//! Beyond CPython:
//! * Empty pools inside arenas still in use give their pages back to the OS
//!   (`madvise`) under a [`PurgePolicy`]: by default once they have gone
//!   unused for a second or two ([`PurgePolicy::Decay`]); wholly free arenas
//!   then stay until the same decay gives them back, instead of going back
//!   at once. [`Heap::purge`] gives back everything it can at once.
//! * A heap can be owned by one thread while others free its blocks: those
//!   go onto a lock-free queue (`remote`) that the owner drains, one by one
//!   or in lists from the freeing heaps' outboxes ([`crate::thread`]).
//!
//! Where each part lives:
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the `Heap` and its state, grouped; construction, settings, the composite entry points |
//! | `fast.rs` | the hot paths: a block from the first used pool, a block back to its pool |
//! | `used.rs` | the used-pool lists per size class |
//! | `transitions.rs` | a pool fills, comes back from full, empties; a new pool is taken |
//! | `arenas.rs` | arena objects, the arena table, the usable-arena order, new and released arenas |
//! | `purge.rs` | the purge policies: pages of empty pools back to the OS |
//! | `decay.rs` | the decay policy's sweeps: what stays unused for a period goes back |
//! | `pages.rs` | free pages of pools in use back to the OS, and back in |
//! | `cache.rs` | the block cache of caching heaps |
//! | `remote.rs` | blocks freed by other threads, and the owner tag |
//! | `big.rs` | blocks above 512 bytes: the span heap with this heap's tag, lock and policy |
//! | `inspect.rs` | statistics and pictures of the arenas |
//! | `validate.rs` | every invariant, checked |
//!
//! ```
//! use pymalloc::Heap;
//! let mut heap = Heap::new();
//! let p = heap.malloc(32); // a 32-byte block in both geometries
//! assert!(!p.is_null() && p as usize % pymalloc::geometry::ALIGNMENT == 0);
//! unsafe {
//!     let q = heap.realloc(p, 30); // fits, and over 3/4 of 32: stays put
//!     assert_eq!(p, q);
//!     let r = heap.realloc(q, 20); // a quarter or more to save: moves
//!     assert_ne!(q, r);
//!     heap.free(r);
//! }
//! assert_eq!(heap.stats().blocks_in_use(), 0);
//! heap.validate().unwrap();
//! ```

mod arenas;
mod big;
mod cache;
mod decay;
mod fast;
mod inspect;
mod pages;
mod purge;
mod remote;
mod transitions;
mod used;
mod validate;

use core::cell::Cell;
use core::sync::atomic::AtomicIsize;

use crate::arena_alloc::ArenaAllocator;
use crate::fallback::RawDomain;
use crate::front::{self, Pools};
use crate::spans::SpanHeap;
use crate::sync::SpinLock;

use crate::front_cache::FrontCache;
pub use cache::CACHE_SLOTS;
pub(crate) use inspect::collect_bounded;
pub use inspect::{ArenaInfo, PoolState};
pub use pages::{page_bytes, ClassPinning, PinningBlock};
pub use purge::PurgePolicy;
pub use validate::InvariantError;

// The `retained` hint and `robbed` have a bit per size class.
const _: () = assert!(crate::geometry::NB_SMALL_SIZE_CLASSES <= 64);

use arenas::Arenas;
use cache::BlockCache;
pub(crate) use decay::WAKER as DECAY_WAKER;
use purge::PurgeState;
use remote::RemoteFrees;
use used::UsedPools;

/// The pymalloc heap. See the module documentation.
///
/// Its state, each part with its invariant where it is declared:
/// * `used`: the used-pool lists ([`UsedPools`], `used.rs`);
/// * `arenas`: the arena table, the usable-arena order and the pool counts
///   ([`Arenas`], `arenas.rs`);
/// * `purge`: when empty pools give their pages back ([`PurgeState`],
///   `purge.rs`);
/// * the block cache ([`BlockCache`], `cache.rs`): the pool classes of the
///   front cache, which `spans` holds with the medium classes
///   (`crate::front_cache`);
/// * `remote`: blocks other threads freed, and the owner tag stamped on
///   pools ([`RemoteFrees`], `remote.rs`);
/// * `spans`: blocks above 512 bytes, in segments ([`SpanHeap`],
///   `crate::spans`; the heap's entry points to it in `big.rs`).
///
/// Invariants of the whole:
/// * `releases_head`: false if the head pool of a class that empties may
///   stay on its used list (see [`UsedPools`]); set once, at construction.
/// * Zero bytes: the heaps the library keeps in statics (the GIL heap, the
///   locked heap) start as all-zero values, so that they lie in `.bss` and
///   cost no resident page in a process that never uses them (the preload
///   library's, which uses thread heaps). Hence the senses of
///   `releases_head`, of the purge state's fields and of the cache's flag.
/// * Sharing: the state is in `Cell`s and methods take `&self`, so that a
///   heap owned by one thread can be read by others. Only the owner calls
///   the allocating and freeing methods. Everything others read (the arena
///   table, arena objects, pool size classes, the counters) is written
///   under `meta`; pool counts and cache counts are atomics; the remote
///   queue and `raw_allocated_blocks` are atomics anyone may update.
pub struct Heap {
    used: UsedPools,
    arenas: Arenas,
    purge: PurgeState,
    /// Give back a head pool that empties, as CPython does (false: keep it
    /// on its used list).
    releases_head: Cell<bool>,
    /// A hint: bit `c` is set when class `c`'s head pool emptied and stayed
    /// on its list ("retained"). It may be stale (the pool took a block
    /// again since); [`Heap::alloc_from_new_pool`] checks and clears it.
    retained: Cell<u64>,
    /// Bit `c` is set when class `c`'s retained pool went to another class
    /// ([`Heap::alloc_from_new_pool`]); its next new pool is its own.
    robbed: Cell<u64>,
    remote: RemoteFrees,
    spans: SpanHeap,
    /// Live blocks the heap's own entry points handed to the raw allocator.
    raw_allocated_blocks: AtomicIsize,
    meta: SpinLock,
}

// SAFETY: a Heap exclusively owns its arenas and table, and nothing in it is
// tied to the thread that created it (no thread-local state, no thread id);
// it is not Sync: see the sharing invariant.
unsafe impl Send for Heap {}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

impl Heap {
    /// An empty heap with CPython 3.11's behaviour: no arenas until the
    /// first small request; a pool that empties always goes back to its
    /// arena.
    pub const fn new() -> Heap {
        Heap::with_options(false, false)
    }

    /// An empty heap tuned for speed: it keeps the head pool of a size class
    /// on its list when it empties (at most one such pool per class), so that
    /// a loop allocating and freeing the same size does not give a pool back
    /// and take it again each time, and it keeps up to [`CACHE_SLOTS`]
    /// recently freed blocks per class and hands them out again first (most
    /// recent first, still in cache); a block freed when its class's cache
    /// is full goes to its pool. The heaps behind the domains and
    /// [`PyMalloc`](crate::PyMalloc) are made this way; [`Heap::purge`] gives
    /// retained pools and cached blocks back. Statistics count cached blocks
    /// as free.
    pub const fn new_retaining() -> Heap {
        Heap::with_options(true, true)
    }

    /// Like [`Heap::new_retaining`] but without the block cache: a freed
    /// block goes straight back to its pool, as in CPython. For workloads
    /// that free in long runs (an interpreter tearing down a structure), the
    /// cache only adds a copy per block.
    pub const fn new_retaining_uncached() -> Heap {
        Heap::with_options(true, false)
    }

    /// Makes the zeroed memory at `p` a heap as [`Heap::new_retaining`]
    /// makes it, writing only its non-zero bytes: a heap built as a value
    /// and then moved (some 10 KiB) went through the stack, which made
    /// every new thread's stack 12 KiB deeper (and a preloaded program's
    /// peak resident memory 50-120 KiB larger) than it needs.
    ///
    /// # Safety
    /// `p` is valid for writes of a `Heap`, aligned, and every byte of it is
    /// zero.
    pub(crate) unsafe fn init_retaining_in_place(p: *mut Heap) {
        // SAFETY: all-zero bytes are `Heap::new_retaining_uncached()` (the
        // zero-bytes invariant, which the preload library's test of its
        // `.bss` statics checks), so `*p` is a valid heap; it gets its
        // cache.
        unsafe { (*p).start_caching() };
    }

    const fn with_options(retain: bool, cache: bool) -> Heap {
        Heap {
            used: UsedPools::new(),
            arenas: Arenas::new(),
            purge: PurgeState::new(),
            releases_head: Cell::new(!retain),
            retained: Cell::new(0),
            robbed: Cell::new(0),
            remote: RemoteFrees::new(),
            spans: SpanHeap::new(FrontCache::new(cache)),
            raw_allocated_blocks: AtomicIsize::new(0),
            meta: SpinLock::new(),
        }
    }

    /// The allocator new arenas come from: the heap's own, or the
    /// process-wide one ([`crate::arena_alloc::process_default`]).
    pub fn arena_allocator(&self) -> ArenaAllocator {
        self.arenas.allocator()
    }

    /// Gives this heap an arena allocator of its own, instead of the
    /// process-wide one. Arenas already allocated are released to the
    /// allocator that made them.
    ///
    /// # Safety
    /// `a` must honour the [`ArenaAllocator`] contract for as long as any
    /// arena it returns is live, and be callable from every thread this heap
    /// is used on.
    pub unsafe fn set_arena_allocator(&mut self, a: ArenaAllocator) {
        self.arenas.own_allocator.set(Some(a));
    }

    /// Print the statistics to stderr each time a new arena is about to be
    /// allocated (CPython's `PYTHONMALLOCSTATS`).
    pub fn set_print_stats_on_new_arena(&self, on: bool) {
        self.arenas.stats_on_new_arena.set(on);
    }

    /// When empty pools give their pages back (default
    /// [`PurgePolicy::DEFAULT`]).
    pub fn set_purge_policy(&mut self, p: PurgePolicy) {
        self.set_purge_policy_shared(p);
    }

    /// [`Heap::set_purge_policy`] through a shared reference (the owner of
    /// a shared heap only).
    pub(crate) fn set_purge_policy_shared(&self, p: PurgePolicy) {
        let _meta = self.meta.lock();
        self.purge.set_policy(p);
    }

    /// Takes the bookkeeping lock before `fork` (see `crate::fork`).
    pub(crate) fn fork_acquire_meta(&self) {
        self.meta.acquire();
    }

    /// Releases what [`Heap::fork_acquire_meta`] took.
    ///
    /// # Safety
    /// Called by the fork parent or child handler after `fork_acquire_meta`.
    pub(crate) unsafe fn fork_release_meta(&self) {
        // SAFETY: taken by fork_acquire_meta on this thread (our contract).
        unsafe { self.meta.release() };
    }

    /// The pool classes of the front cache.
    #[inline(always)]
    fn cache(&self) -> BlockCache<'_> {
        BlockCache(self.spans.front_cache())
    }

    /// The front cache, every class (owner only; see `front_cache.rs`).
    #[inline(always)]
    pub(crate) fn front_cache(&self) -> &FrontCache {
        self.spans.front_cache()
    }

    /// The current purge policy.
    pub fn purge_policy(&self) -> PurgePolicy {
        let _meta = self.meta.lock();
        self.purge.policy()
    }

    /// True if this heap keeps recently freed blocks in its block cache
    /// (see [`Heap::new_retaining`]).
    pub fn caches_blocks(&self) -> bool {
        self.cache().enabled()
    }

    /// Turns the block cache on, for a heap made without it: the shared
    /// locked heap is made uncached, so that its initial bytes are all zero
    /// (see the invariants), and turns it on at its first use.
    pub(crate) fn start_caching(&self) {
        self.cache().enable();
    }

    /// True if this heap keeps head pools that empty (see
    /// [`Heap::new_retaining`]).
    pub fn retains_empty_pools(&self) -> bool {
        !self.releases_head.get()
    }

    /// Gives back to the OS everything that holds no block: the free pages
    /// of pools in use, the pages of every empty pool, and every wholly free
    /// arena (the spare too). Returns the number of bytes given back.
    pub fn purge(&mut self) -> usize {
        self.purge_shared()
    }

    /// Gives every cached block back to its pool (see
    /// [`Heap::new_retaining`]); [`Heap::purge`] does this first.
    pub fn flush_cache(&mut self) {
        self.flush_cache_shared();
    }

    // The composite entry points: the front over this heap used directly,
    // falling back to the RAW domain.

    /// Allocates `nbytes` (CPython's `_PyObject_Malloc`): from a pool when
    /// `1 <= nbytes <= 512` and an arena is available, else from the RAW
    /// domain. Null when neither can serve it.
    #[inline]
    pub fn malloc(&mut self, nbytes: usize) -> *mut u8 {
        front::object_malloc::<RawDomain>(self, nbytes)
    }

    /// Allocates `nelem * elsize` zeroed bytes (`_PyObject_Calloc`); null if
    /// the product overflows `isize::MAX`.
    #[inline]
    pub fn calloc(&mut self, nelem: usize, elsize: usize) -> *mut u8 {
        front::object_calloc::<RawDomain>(self, nelem, elsize)
    }

    /// Resizes `p` (`_PyObject_Realloc`). A pool block stays in place while
    /// the new size fits its class and is at least three quarters of it;
    /// otherwise it moves. Blocks of the raw allocator stay there. On
    /// failure returns null and `p` is untouched.
    ///
    /// # Safety
    /// `p` is null or a live block of this heap (or of the RAW domain).
    #[inline]
    pub unsafe fn realloc(&mut self, p: *mut u8, nbytes: usize) -> *mut u8 {
        // SAFETY: p is null or live here or in RAW (the contract above),
        // which is the front's contract for this heap and RawDomain.
        unsafe { front::object_realloc::<RawDomain>(self, p, nbytes) }
    }

    /// Frees `p` (`_PyObject_Free`); null does nothing.
    ///
    /// # Safety
    /// `p` is null or a live block of this heap (or of the RAW domain), and
    /// is not used again.
    #[inline]
    pub unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: as for realloc, and p is not used again.
        unsafe { front::object_free::<RawDomain>(self, p) }
    }
}

/// A heap reached directly: by its owner with `&mut`, or through a lock or
/// a GIL that serialises its users.
impl Pools for Heap {
    #[inline(always)]
    fn alloc(&self, c: usize) -> *mut u8 {
        self.alloc_small(c)
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: p is a live pool block of this heap (the trait's contract).
        unsafe { self.free_small(p) }
    }
    #[inline(always)]
    unsafe fn free_in_region(&self, p: *mut u8, off: usize) {
        // SAFETY: p is a live pool block of this heap at offset off of the
        // arena region (the trait's contract), so of the class recorded
        // there.
        unsafe { self.free_region_block(p, crate::pool::class_at(p, off)) }
    }
    #[inline(always)]
    fn fallback_blocks(&self) -> &AtomicIsize {
        &self.raw_allocated_blocks
    }
    fn make_room(&self) {
        Heap::make_room(self);
    }
}

impl Drop for Heap {
    /// Gives every arena back to the allocator that made it, and frees the
    /// arena table. Blocks still live in pools die with their arenas; blocks
    /// of the raw allocator are not tracked and stay allocated.
    fn drop(&mut self) {
        self.release_all_arenas();
    }
}
