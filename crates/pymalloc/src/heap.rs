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
//! * A pool hands out its never-used blocks one at a time, only when its free
//!   list is empty. A pool that becomes full leaves the used list; a pool
//!   that becomes empty goes to its arena's free pools.
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
//!   (`madvise`) under a [`PurgePolicy`]: by default when the heap holds more
//!   empty pools than a quarter of the pools in use (and at least an arena's
//!   worth), emptiest arenas first. [`Heap::purge`] gives back everything it
//!   can at once.
//! * A heap can be owned by one thread while others free its blocks: those
//!   go onto a lock-free queue (`remote`) that the owner drains
//!   ([`crate::thread`]).
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

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicIsize, AtomicPtr, AtomicU32, Ordering};

use crate::arena_alloc::ArenaAllocator;
use crate::cell_array::CellArray;
use crate::domain::Domain;
use crate::geometry::*;
use crate::pool::{self, launder, pool_of, PoolHeader, DUMMY_SIZE_IDX};
use crate::radix::ARENA_MAP;
use crate::sync::SpinLock;
use crate::{os, raw, region};

/// Free blocks a caching heap keeps per size class (see [`Heap::new_retaining`]).
pub const CACHE_SLOTS: usize = 32;

/// Number of arena objects the table starts with (room for 16 arenas).
const INITIAL_ARENA_OBJECTS: u32 = 16;

/// The threshold policy gives an arena's free pools back only if one
/// `madvise` returns this many pools on average (64 KiB by default): scattered
/// single free pools, as random frees leave them, are not worth a system call
/// each, and their arena is likely to become wholly free and go back whole.
const MIN_POOLS_PER_CALL: usize = 4;

/// After a purge that could not reach its target, the threshold policy waits
/// this many emptied pools before walking the arenas again, doubling the wait
/// after each walk that gave nothing back, up to `PURGE_RETRY_MAX`.
const PURGE_RETRY_EVENTS: u64 = 32;
const PURGE_RETRY_MAX: u64 = 8192;

// The per-arena mask of decommitted pools is one u64.
const _: () = assert!(MAX_POOLS_IN_ARENA <= 64);

/// Bookkeeping for one arena (CPython's `struct arena_object`).
///
/// Invariants:
/// * `address` is null if and only if the object is on the heap's
///   `unused_arena_objects` list (linked through `nextarena`).
/// * Otherwise the arena spans `address..address+ARENA_SIZE`, came from
///   `allocator`, and is marked in the arena map. Pools are carved from
///   `pool_address` upwards. `nfreepools` counts the free pools: those on
///   `freepools` (`nfree_committed` of them), those whose pages were given
///   back (bits of `decommitted`, by pool index from the first pool), and
///   those not carved yet. `ntotalpools` is the number of whole pools the
///   arena holds after alignment.
/// * `nfreepools > 0` if and only if the arena is on `usable_arenas`
///   (doubly linked through `nextarena`/`prevarena`).
/// * `free_bits` has bit `i` set exactly when pool `i` is on `freepools`.
/// * `purgeable`: the arena comes from pymalloc's own OS allocator, so pages
///   of its free pools may be given back with `madvise`.
/// * All of it is written only under the heap's `meta` lock.
#[repr(C)]
struct ArenaObject {
    address: *mut u8,
    pool_address: *mut u8,
    nfreepools: u32,
    ntotalpools: u32,
    freepools: *mut PoolHeader,
    nextarena: *mut ArenaObject,
    prevarena: *mut ArenaObject,
    allocator: ArenaAllocator,
    nfree_committed: u32,
    purgeable: bool,
    decommitted: u64,
    free_bits: u64,
}

impl ArenaObject {
    /// Address of the first pool (the arena base rounded up to a pool).
    fn first_pool(&self) -> *mut u8 {
        self.address.map_addr(|a| round_up(a, POOL_SIZE))
    }

    /// The bit of `pool` in the per-arena masks.
    fn bit(&self, pool: *const PoolHeader) -> u64 {
        1u64 << ((pool.addr() - self.first_pool().addr()) / POOL_SIZE)
    }
}

/// When empty pools inside live arenas give their pages back to the OS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurgePolicy {
    /// Never (CPython's behaviour): only whole arenas go back.
    Never,
    /// As soon as a pool becomes empty.
    Immediate,
    /// When the heap holds more than `max(min_pools, pools_in_use /
    /// divisor)` empty pools with pages, give back those of the emptiest
    /// arenas until half that many remain, skipping arenas whose free pools
    /// are too scattered for a system call to return at least 64 KiB.
    Threshold {
        /// Empty pools always tolerated.
        min_pools: usize,
        /// Empty pools tolerated per pool in use is `1 / divisor`.
        divisor: usize,
    },
}

impl PurgePolicy {
    /// The default: `Threshold { min_pools: MAX_POOLS_IN_ARENA, divisor: 4 }`
    /// (an arena's worth, or a quarter of what is in use).
    pub const DEFAULT: PurgePolicy = PurgePolicy::Threshold { min_pools: MAX_POOLS_IN_ARENA, divisor: 4 };

    /// The names [`PurgePolicy::parse`] accepts.
    pub const NAMES: &'static str = "default, never, immediate, threshold:MIN_POOLS:DIVISOR";

    /// Reads a policy by name: `default` (or empty), `never`, `immediate`,
    /// or `threshold:MIN_POOLS:DIVISOR` (both positive integers). An unknown
    /// name is an error that lists the valid ones.
    pub fn parse(name: &str) -> Result<PurgePolicy, String> {
        match name {
            "" | "default" => return Ok(PurgePolicy::DEFAULT),
            "never" => return Ok(PurgePolicy::Never),
            "immediate" => return Ok(PurgePolicy::Immediate),
            _ => {}
        }
        let bad = || format!("unknown purge policy '{name}'; valid: {}", PurgePolicy::NAMES);
        let rest = name.strip_prefix("threshold:").ok_or_else(bad)?;
        let (a, b) = rest.split_once(':').ok_or_else(bad)?;
        match (a.parse::<usize>(), b.parse::<usize>()) {
            (Ok(min_pools), Ok(divisor)) if divisor > 0 => Ok(PurgePolicy::Threshold { min_pools, divisor }),
            _ => Err(bad()),
        }
    }
}

impl Default for PurgePolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The pymalloc heap. See the module documentation.
///
/// Invariants (beyond those of [`PoolHeader`] and `ArenaObject`):
/// * `used_first[c]..used_last[c]` lists exactly the pools of class `c` with
///   `0 < count < num_blocks(c)`, and perhaps, at its head, one pool with
///   `count == 0` that emptied there and was kept ("retained"; it counts as
///   in use, and [`Heap::purge`] gives it back).
/// * `arenas[..maxarenas]` is the arena table (from the C heap); pools refer
///   to it by index. It only grows when no arena object is unused and no
///   arena is usable, so no pointer into it is live when it moves.
/// * `usable_arenas` is sorted by ascending `nfreepools`, and
///   `nfp2lasta[n]` is its last arena with `nfreepools == n`, or null.
/// * `pools_in_use` counts used and full pools; `committed_empty` counts
///   pools on the arenas' `freepools` lists.
/// * The block cache: `cache[c][..cache_n[c]]` are distinct blocks of class
///   `c` of this heap's pools that were freed and not handed out again. Their
///   pools still count them (a cached block is in use as far as its pool is
///   concerned, and on no free list); statistics count them as free.
/// * Sharing: the state is in `Cell`s and methods take `&self`, so that a
///   heap owned by one thread can be read by others. Only the owner calls
///   the allocating and freeing methods. Everything others read (the arena
///   table, arena objects, pool size classes, the counters below) is written
///   under `meta`; pool counts are atomics; `remote` and
///   `raw_allocated_blocks` are atomics anyone may update.
pub struct Heap {
    used_first: CellArray<*mut PoolHeader, NB_SMALL_SIZE_CLASSES>,
    used_last: CellArray<*mut PoolHeader, NB_SMALL_SIZE_CLASSES>,
    arenas: Cell<*mut ArenaObject>,
    maxarenas: Cell<u32>,
    unused_arena_objects: Cell<*mut ArenaObject>,
    usable_arenas: Cell<*mut ArenaObject>,
    nfp2lasta: CellArray<*mut ArenaObject, { MAX_POOLS_IN_ARENA + 1 }>,
    narenas_currently_allocated: Cell<usize>,
    ntimes_arena_allocated: Cell<usize>,
    narenas_highwater: Cell<usize>,
    pools_in_use: Cell<usize>,
    committed_empty: Cell<usize>,
    /// Pools emptied so far, and the count at which the threshold policy may
    /// look for pools to give back again.
    empty_events: Cell<u64>,
    next_purge_check: Cell<u64>,
    purge_backoff: Cell<u64>,
    purge_policy: Cell<PurgePolicy>,
    /// This heap's own arena allocator, or None for the process-wide one.
    arena_allocator: Cell<Option<ArenaAllocator>>,
    stats_on_new_arena: Cell<bool>,
    /// Keep a head pool that empties on its used list (see the invariant).
    retain: Cell<bool>,
    /// Blocks the cache may hold per class: 0 (no cache) or `CACHE_SLOTS`.
    cache_max: Cell<u32>,
    /// The limit now, per class: `cache_max`, or 0 while the class drains
    /// (a flush emptied a pool: frees go straight to pools until the class
    /// allocates from a pool again).
    cache_lim: CellArray<u32, NB_SMALL_SIZE_CLASSES>,
    /// Blocks cached per class (read by statistics from other threads).
    cache_n: [AtomicU32; NB_SMALL_SIZE_CLASSES],
    /// The cache: `cache[c][..cache_n[c]]` (slots `c * CACHE_SLOTS..`, see
    /// [`Heap::cache_slot`]) are free blocks of class `c`, oldest first.
    cache: CellArray<*mut u8, { NB_SMALL_SIZE_CLASSES * CACHE_SLOTS }>,
    /// Stamped on pools as their owner: this heap's address for thread
    /// heaps (at a stable address), null otherwise.
    owner_tag: Cell<*const Heap>,
    raw_allocated_blocks: AtomicIsize,
    /// Blocks freed by other threads, linked through their first word; on
    /// cache lines of its own, so that the threads pushing to it do not pull
    /// the owner's hot fields away from it.
    remote: Isolated<AtomicPtr<u8>>,
    meta: SpinLock,
}

/// A value alone on its cache lines whatever the alignment of what holds it:
/// 120 bytes of padding on either side (two lines, for the adjacent-line
/// prefetcher), without asking the holder for more than word alignment.
#[repr(C)]
pub(crate) struct Isolated<T> {
    _before: [usize; 15],
    value: T,
    _after: [usize; 15],
}

impl<T> Isolated<T> {
    pub(crate) const fn new(value: T) -> Self {
        Isolated { _before: [0; 15], value, _after: [0; 15] }
    }
}

impl<T> core::ops::Deref for Isolated<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.value
    }
}

// SAFETY: a Heap exclusively owns its arenas and table; nothing in it is tied
// to the thread that created it. It is not Sync: see the sharing invariant.
unsafe impl Send for Heap {}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

/// True if `p` lies in an arena of any pymalloc heap in this process.
///
/// This is the exact ownership test, for any address (the radix map); the
/// entry points use a faster test that is exact for the addresses of live
/// blocks.
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
    ARENA_MAP.contains(p)
}

/// Ownership test for the address of a live block: in the arena region, or
/// (arenas from elsewhere) in the arena map. A live raw block is never in the
/// region, so this is exact for live blocks.
#[inline(always)]
pub(crate) fn owns_live(p: *const u8) -> bool {
    region::contains(p) || ARENA_MAP.contains(p)
}

/// What one pool of an arena holds, as [`Heap::visit_arenas`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PoolState {
    /// Not carved from the arena yet: never touched.
    #[default]
    Untouched,
    /// Carved once, now empty (on the arena's free pools).
    Empty,
    /// Empty, and its pages were given back to the OS.
    Decommitted,
    /// Holding `blocks` blocks of size class `class`, with room for more.
    Used {
        /// Size class index.
        class: u8,
        /// Blocks in use.
        blocks: u16,
    },
    /// Every block of size class `class` in use.
    Full {
        /// Size class index.
        class: u8,
    },
}

/// One arena and the state of each of its pools.
#[derive(Clone, Copy, Debug)]
pub struct ArenaInfo {
    /// Base address of the arena.
    pub address: usize,
    /// Offset of the first pool (non-zero when the arena is not
    /// pool-aligned).
    pub first_pool_offset: usize,
    /// Pools the arena holds.
    pub ntotalpools: usize,
    /// Free pools: empty, decommitted and untouched.
    pub nfreepools: usize,
    /// `pools[..ntotalpools]`, in address order.
    pub pools: [PoolState; MAX_POOLS_IN_ARENA],
}

/// A broken heap invariant, reported by [`Heap::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvariantError {
    /// Which invariant failed.
    pub what: &'static str,
    /// An address or count that locates the failure.
    pub at: usize,
}

impl core::fmt::Display for InvariantError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "heap invariant broken: {} (at {:#x})", self.what, self.at)
    }
}

impl std::error::Error for InvariantError {}

fn check(ok: bool, what: &'static str, at: usize) -> Result<(), InvariantError> {
    if ok {
        Ok(())
    } else {
        Err(InvariantError { what, at })
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
    /// recent first, still in cache), flushing the older half to their pools
    /// when the cache is full. The heaps behind the domains and
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

    const fn with_options(retain: bool, cache: bool) -> Heap {
        Heap {
            used_first: CellArray::new([ptr::null_mut(); NB_SMALL_SIZE_CLASSES]),
            used_last: CellArray::new([ptr::null_mut(); NB_SMALL_SIZE_CLASSES]),
            arenas: Cell::new(ptr::null_mut()),
            maxarenas: Cell::new(0),
            unused_arena_objects: Cell::new(ptr::null_mut()),
            usable_arenas: Cell::new(ptr::null_mut()),
            nfp2lasta: CellArray::new([ptr::null_mut(); MAX_POOLS_IN_ARENA + 1]),
            narenas_currently_allocated: Cell::new(0),
            ntimes_arena_allocated: Cell::new(0),
            narenas_highwater: Cell::new(0),
            pools_in_use: Cell::new(0),
            committed_empty: Cell::new(0),
            empty_events: Cell::new(0),
            next_purge_check: Cell::new(0),
            purge_backoff: Cell::new(PURGE_RETRY_EVENTS),
            purge_policy: Cell::new(PurgePolicy::DEFAULT),
            arena_allocator: Cell::new(None),
            stats_on_new_arena: Cell::new(false),
            retain: Cell::new(retain),
            cache_max: Cell::new(if cache { CACHE_SLOTS as u32 } else { 0 }),
            // Set from `cache_max` by the first allocation of each class.
            cache_lim: CellArray::new([0; NB_SMALL_SIZE_CLASSES]),
            cache_n: [const { AtomicU32::new(0) }; NB_SMALL_SIZE_CLASSES],
            cache: CellArray::new([ptr::null_mut(); NB_SMALL_SIZE_CLASSES * CACHE_SLOTS]),
            owner_tag: Cell::new(ptr::null()),
            raw_allocated_blocks: AtomicIsize::new(0),
            remote: Isolated::new(AtomicPtr::new(ptr::null_mut())),
            meta: SpinLock::new(),
        }
    }

    /// The allocator new arenas come from: the heap's own, or the
    /// process-wide one ([`crate::arena_alloc::process_default`]).
    pub fn arena_allocator(&self) -> ArenaAllocator {
        self.arena_allocator.get().unwrap_or_else(crate::arena_alloc::process_default)
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
        self.arena_allocator.set(Some(a));
    }

    /// Print the statistics to stderr each time a new arena is about to be
    /// allocated (CPython's `PYTHONMALLOCSTATS`).
    pub fn set_print_stats_on_new_arena(&self, on: bool) {
        self.stats_on_new_arena.set(on);
    }

    /// When empty pools give their pages back (default
    /// [`PurgePolicy::DEFAULT`]).
    pub fn set_purge_policy(&mut self, p: PurgePolicy) {
        self.set_purge_policy_shared(p);
    }

    /// [`Heap::set_purge_policy`] through a shared reference (the owner of
    /// a shared heap only).
    pub(crate) fn set_purge_policy_shared(&self, p: PurgePolicy) {
        self.purge_policy.set(p);
    }

    /// The current purge policy.
    pub fn purge_policy(&self) -> PurgePolicy {
        self.purge_policy.get()
    }

    /// True if this heap keeps head pools that empty (see
    /// [`Heap::new_retaining`]).
    pub fn retains_empty_pools(&self) -> bool {
        self.retain.get()
    }

    /// Gives back to the OS everything that holds no block: the pages of
    /// every empty pool, and every wholly free arena (the spare too).
    /// Returns the number of bytes given back.
    pub fn purge(&mut self) -> usize {
        self.purge_shared()
    }

    /// Allocates `nbytes` (CPython's `_PyObject_Malloc`): from a pool when
    /// `1 <= nbytes <= 512` and an arena is available, else from the RAW
    /// domain. Null when neither can serve it.
    #[inline]
    pub fn malloc(&mut self, nbytes: usize) -> *mut u8 {
        malloc(self, nbytes)
    }

    /// Allocates `nelem * elsize` zeroed bytes (`_PyObject_Calloc`); null if
    /// the product overflows `isize::MAX`.
    #[inline]
    pub fn calloc(&mut self, nelem: usize, elsize: usize) -> *mut u8 {
        calloc(self, nelem, elsize)
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
        // SAFETY: forwarded contract.
        unsafe { realloc(self, p, nbytes) }
    }

    /// Frees `p` (`_PyObject_Free`); null does nothing.
    ///
    /// # Safety
    /// `p` is null or a live block of this heap (or of the RAW domain), and
    /// is not used again.
    #[inline]
    pub unsafe fn free(&mut self, p: *mut u8) {
        // SAFETY: forwarded contract.
        unsafe { free(self, p) }
    }

    // ---------------------------------------------------------------------
    // Shared-access core (owner only, see the sharing invariant).

    /// Makes this heap stamp `tag` (its own address, as a pointer whose
    /// provenance covers the thread heap around it) on its pools, so that
    /// other threads can send it the blocks they free.
    ///
    /// # Safety
    /// `tag` points to this heap, which stays at that address for as long as
    /// any of its pools live, and has no arena yet.
    pub(crate) unsafe fn set_owner_tag(&self, tag: *const Heap) {
        debug_assert_eq!(self.narenas_currently_allocated.get(), 0);
        debug_assert!(ptr::eq(tag, self));
        self.owner_tag.set(tag);
    }

    /// Takes a block of size class `szidx`: the most recently cached one, or
    /// one from a pool; null if no arena can be had. This is pymalloc's fast
    /// path.
    #[inline(always)]
    pub(crate) fn alloc_small(&self, szidx: usize) -> *mut u8 {
        debug_assert!(szidx < NB_SMALL_SIZE_CLASSES);
        let n = self.cache_n[szidx].load(Ordering::Relaxed) as usize;
        if n > 0 {
            // SAFETY: n <= CACHE_SLOTS, and cache[szidx][n - 1] is a cached
            // free block (invariant); it leaves the cache.
            unsafe {
                let b = self.cache_slot(szidx, n - 1).get();
                self.cache_n[szidx].store(n as u32 - 1, Ordering::Relaxed);
                return b;
            }
        }
        // Allocating from pools again: the class caches again.
        // SAFETY: szidx < NB_SMALL_SIZE_CLASSES.
        unsafe { self.cache_lim.get_unchecked(szidx).set(self.cache_max.get()) };
        self.alloc_from_pool(szidx)
    }

    /// The allocation fast path of a heap without a block cache: the next
    /// block of the class's first used pool, carving the pool's next virgin
    /// block when its free list runs out, unless that fills the pool. Null
    /// means "take the full path" (nothing changed). Calls nothing, so that
    /// a caller that tail-calls its full path needs no stack frame.
    #[inline(always)]
    pub(crate) fn alloc_fast_uncached(&self, szidx: usize) -> *mut u8 {
        debug_assert_eq!(self.cache_max.get(), 0);
        debug_assert!(szidx < NB_SMALL_SIZE_CLASSES);
        // SAFETY: szidx < NB_SMALL_SIZE_CLASSES (caller's size_class).
        let pool = unsafe { self.used_first.get_unchecked(szidx) }.get();
        if pool.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: pools on a used list are live and have a non-null free
        // list whose head is a free block of the pool (invariants).
        unsafe {
            let bp = (*pool).freeblock;
            let next = bp.cast::<*mut u8>().read();
            if next.is_null() {
                // The free list runs out: carve the next virgin block, or
                // leave the full pool to the full path.
                if !Self::carve_virgin(pool, szidx) {
                    return ptr::null_mut();
                }
            } else {
                (*pool).freeblock = next;
            }
            (*pool).set_count((*pool).count() + 1);
            bp
        }
    }

    /// The free fast path of a heap without a block cache: `p` is a block
    /// of the arena region whose pool neither empties nor leaves the full
    /// state. False means "take the full path" (nothing changed).
    ///
    /// # Safety
    /// `p` is null, a live block of this heap, or a live block of the raw
    /// allocator; this heap has no block cache.
    #[inline(always)]
    pub(crate) unsafe fn free_fast_uncached(&self, p: *mut u8) -> bool {
        debug_assert_eq!(self.cache_max.get(), 0);
        // Null and raw blocks are outside the region.
        if !region::contains(p) {
            return false;
        }
        let pool = pool_of(p);
        // SAFETY: an address of the region handed out by this heap is a
        // live block (caller's contract): its pool is live and in use.
        unsafe {
            let count = (*pool).count();
            let last = (*pool).freeblock;
            if count <= 1 || last.is_null() {
                return false;
            }
            p.cast::<*mut u8>().write(last);
            (*pool).freeblock = launder(p);
            (*pool).set_count(count - 1);
        }
        true
    }

    /// Takes a block of size class `szidx` from a pool (CPython's
    /// `pymalloc_alloc`).
    #[inline(always)]
    fn alloc_from_pool(&self, szidx: usize) -> *mut u8 {
        let pool = self.used_first[szidx].get();
        if !pool.is_null() {
            // SAFETY: pools on a used list are live and have a non-null free
            // list whose head is a free block of the pool (invariants).
            unsafe {
                let bp = (*pool).freeblock;
                let next = bp.cast::<*mut u8>().read();
                (*pool).freeblock = next;
                (*pool).set_count((*pool).count() + 1);
                if next.is_null() {
                    self.pool_exhausted(pool, szidx);
                }
                return bp;
            }
        }
        self.alloc_from_new_pool(szidx)
    }

    /// The free list of `pool` ran out: carve its next virgin block, or if
    /// none is left the pool is full and leaves the used list.
    #[inline(never)]
    unsafe fn pool_exhausted(&self, pool: *mut PoolHeader, szidx: usize) {
        // SAFETY: the caller passes the live head of used[szidx].
        unsafe {
            if !Self::carve_virgin(pool, szidx) {
                self.unlink_used(pool, szidx);
            }
        }
    }

    /// Puts the next never-used block of `pool` on its (empty) free list;
    /// false if the pool has none left (it is full).
    ///
    /// # Safety
    /// `pool` is a live pool of class `szidx` whose free list is empty.
    #[inline(always)]
    unsafe fn carve_virgin(pool: *mut PoolHeader, szidx: usize) -> bool {
        // SAFETY: per the contract; a virgin block lies inside the pool.
        unsafe {
            let off = (*pool).nextoffset;
            if off > pool::max_next_offset(szidx) {
                return false;
            }
            let bp = pool.cast::<u8>().add(off as usize);
            (*pool).nextoffset = off + class_size(szidx) as u32;
            bp.cast::<*mut u8>().write(ptr::null_mut());
            (*pool).freeblock = bp;
            true
        }
    }

    /// Frees a block of this heap: into the block cache if there is room,
    /// else to its pool.
    ///
    /// # Safety
    /// `p` is a live block handed out by this heap's `alloc_small`.
    #[inline(always)]
    pub(crate) unsafe fn free_small(&self, p: *mut u8) {
        // SAFETY: p is a live block of this heap.
        let c = unsafe { Self::block_class(p) };
        let n = self.cache_n[c].load(Ordering::Relaxed);
        // SAFETY: c < NB_SMALL_SIZE_CLASSES (read from a live pool).
        let lim = unsafe { self.cache_lim.get_unchecked(c).get() };
        if n < lim {
            // SAFETY: n < CACHE_SLOTS; p is a free block of class c now.
            unsafe { self.cache_slot(c, n as usize).set(launder(p)) };
            self.cache_n[c].store(n + 1, Ordering::Relaxed);
            return;
        }
        if lim > 0 {
            // SAFETY: forwarded.
            unsafe { self.cache_full(p, c) };
            return;
        }
        // No cache in the way (an uncached heap, or a class draining): the
        // block goes straight back to its pool.
        // SAFETY: forwarded.
        unsafe { self.free_to_pool(p) }
    }

    /// The cache of class `c` is full (and on): its older half goes back to
    /// the pools, and `p` takes a slot.
    ///
    /// A cached block keeps its pool, and so its arena, in use. So that a
    /// program freeing a large structure gets its pools and arenas back as
    /// CPython would, a flush that empties a pool sends the whole cache of
    /// the class back and turns the cache of the class off until the class
    /// next allocates from a pool.
    ///
    /// # Safety
    /// `p` is a live block of class `c` of this heap, not in the cache.
    #[cold]
    #[inline(never)]
    unsafe fn cache_full(&self, p: *mut u8, c: usize) {
        let pools = self.pools_in_use.get();
        self.flush_cache_class(c, CACHE_SLOTS / 2);
        if self.pools_in_use.get() < pools {
            self.flush_cache_class(c, CACHE_SLOTS);
            self.cache_lim[c].set(0);
            // SAFETY: forwarded.
            unsafe { self.free_to_pool(p) };
            return;
        }
        let n = self.cache_n[c].load(Ordering::Relaxed);
        // SAFETY: the flush made room.
        unsafe { self.cache_slot(c, n as usize).set(launder(p)) };
        self.cache_n[c].store(n + 1, Ordering::Relaxed);
    }

    /// Gives the `k` oldest cached blocks of class `c` back to their pools.
    fn flush_cache_class(&self, c: usize, k: usize) {
        let n = self.cache_n[c].load(Ordering::Relaxed) as usize;
        let k = k.min(n);
        let mut out = [ptr::null_mut::<u8>(); CACHE_SLOTS];
        // SAFETY: c is a class and k <= n <= CACHE_SLOTS (invariant).
        unsafe {
            for (i, o) in out[..k].iter_mut().enumerate() {
                *o = self.cache_slot(c, i).get();
            }
            for i in k..n {
                self.cache_slot(c, i - k).set(self.cache_slot(c, i).get());
            }
        }
        // The count drops before the blocks reach their pools, so that
        // statistics never count one of them free twice.
        self.cache_n[c].store((n - k) as u32, Ordering::Relaxed);
        for &b in &out[..k] {
            // SAFETY: a block that was cached: a live block of this heap
            // that nobody uses.
            unsafe { self.free_to_pool(b) };
        }
    }

    /// Gives every cached block back to its pool (see
    /// [`Heap::new_retaining`]); [`Heap::purge`] does this first.
    pub fn flush_cache(&mut self) {
        self.flush_cache_shared();
    }

    /// [`Heap::flush_cache`] through a shared reference (the owner of a
    /// shared heap only).
    pub(crate) fn flush_cache_shared(&self) {
        for c in 0..NB_SMALL_SIZE_CLASSES {
            self.flush_cache_class(c, CACHE_SLOTS);
        }
    }

    /// Slot `n` of the block cache of class `c`.
    ///
    /// # Safety
    /// `c < NB_SMALL_SIZE_CLASSES` and `n < CACHE_SLOTS`.
    #[inline(always)]
    unsafe fn cache_slot(&self, c: usize, n: usize) -> &Cell<*mut u8> {
        debug_assert!(c < NB_SMALL_SIZE_CLASSES && n < CACHE_SLOTS);
        // SAFETY: c * CACHE_SLOTS + n < NB_SMALL_SIZE_CLASSES * CACHE_SLOTS.
        unsafe { self.cache.get_unchecked(c * CACHE_SLOTS + n) }
    }

    /// Cached blocks of class `c`.
    #[inline]
    pub(crate) fn cached(&self, c: usize) -> usize {
        self.cache_n[c].load(Ordering::Relaxed) as usize
    }

    /// Returns a block of pymalloc memory to its pool (CPython's
    /// `pymalloc_free`).
    ///
    /// # Safety
    /// `p` is a live block of this heap, not in the cache.
    #[inline(always)]
    pub(crate) unsafe fn free_to_pool(&self, p: *mut u8) {
        let pool = pool_of(p);
        // SAFETY: p is a live block, so its pool is live and was in use.
        unsafe {
            let count = (*pool).count();
            debug_assert!(count > 0);
            let last = (*pool).freeblock;
            // The link is written through the caller's pointer (its tag may
            // be protected while it hands the block back); the free list keeps
            // the block under the arena's provenance, so the next owner does
            // not inherit the caller's narrowed tag.
            p.cast::<*mut u8>().write(last);
            (*pool).freeblock = launder(p);
            if count == 1 || last.is_null() {
                self.pool_changes_list(pool, count, last);
                return;
            }
            (*pool).set_count(count - 1);
        }
    }

    /// The rare cases of [`Heap::free_to_pool`], after the block went on
    /// the free list: the pool empties (`count == 1`), or it was full
    /// (`last` null) and goes back on its used list.
    ///
    /// # Safety
    /// `pool` is the live pool of the block just freed; `count` and `last`
    /// are its count and free-list head from before.
    #[cold]
    #[inline(never)]
    unsafe fn pool_changes_list(&self, pool: *mut PoolHeader, count: u32, last: *mut u8) {
        // SAFETY: per the contract.
        unsafe {
            if count == 1 {
                if self.retain.get() && self.used_first[(*pool).szidx as usize].get() == pool {
                    // The head pool of its class empties: keep it there
                    // ("retained"), so that a loop allocating and freeing one
                    // block does not give a pool back and take it again each
                    // time. It still counts as a pool in use.
                    (*pool).set_count(0);
                    return;
                }
                // The pool becomes empty: its count drops to 0 together with
                // the arena's bookkeeping, under the lock, so that statistics
                // never see a pool neither in use nor free.
                self.pool_emptied(pool);
                return;
            }
            (*pool).set_count(count - 1);
            if last.is_null() {
                // The pool was full: back to the used list, at the end, as
                // CPython's insert_to_usedpool does.
                self.append_used(pool);
            }
        }
    }

    /// Size class of a live pymalloc block (read without touching lists).
    ///
    /// # Safety
    /// `p` is a live block of some heap.
    #[inline(always)]
    pub(crate) unsafe fn block_class(p: *mut u8) -> usize {
        // SAFETY: the pool of a live block is live and its class cannot
        // change while the block is handed out.
        unsafe { (*pool_of(p)).szidx as usize }
    }

    /// The owner stamped on the pool of a live block (null for pools of heaps
    /// that are not thread heaps).
    ///
    /// # Safety
    /// `p` is a live block of some heap.
    #[inline(always)]
    pub(crate) unsafe fn block_owner(p: *mut u8) -> *const Heap {
        // An arena of the region: its owner from the region's table, which
        // other threads read without touching the pool header the owner
        // writes on every allocation.
        if let Some(o) = region::owner(p) {
            return o.cast();
        }
        // SAFETY: as above; the owner changes only while the pool is empty.
        unsafe { (*pool_of(p)).owner }
    }

    /// Sends `p` to its owning heap's queue of blocks freed by other threads.
    ///
    /// # Safety
    /// `owner` is the live thread heap stamped on `p`'s pool; `p` is live
    /// and not used again.
    pub(crate) unsafe fn push_remote(owner: *const Heap, p: *mut u8) {
        // SAFETY: thread heaps are never freed; `remote` is an atomic.
        let q = unsafe { &(*owner).remote };
        let mut head = q.load(Ordering::Relaxed);
        loop {
            // SAFETY: p is a free block: its first word is ours to use.
            unsafe { p.cast::<*mut u8>().write(head) };
            match q.compare_exchange_weak(head, p, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Frees the blocks other threads sent this heap. Returns how many.
    pub(crate) fn drain_remote(&self) -> usize {
        if self.remote.load(Ordering::Relaxed).is_null() {
            return 0;
        }
        let mut p = self.remote.swap(ptr::null_mut(), Ordering::Acquire);
        let mut n = 0;
        while !p.is_null() {
            // SAFETY: every block on the queue is a block of this heap that
            // its user gave up; its first word links the queue.
            unsafe {
                let next = p.cast::<*mut u8>().read();
                self.free_to_pool(launder(p));
                p = next;
            }
            n += 1;
        }
        n
    }

    unsafe fn unlink_used(&self, pool: *mut PoolHeader, szidx: usize) {
        // SAFETY: `pool` is on used[szidx]; its neighbours are live pools.
        unsafe {
            let (next, prev) = ((*pool).nextpool, (*pool).prevpool);
            if prev.is_null() {
                self.used_first[szidx].set(next);
            } else {
                (*prev).nextpool = next;
            }
            if next.is_null() {
                self.used_last[szidx].set(prev);
            } else {
                (*next).prevpool = prev;
            }
        }
    }

    unsafe fn append_used(&self, pool: *mut PoolHeader) {
        // SAFETY: `pool` is a live pool on no list.
        unsafe {
            let c = (*pool).szidx as usize;
            let last = self.used_last[c].get();
            (*pool).nextpool = ptr::null_mut();
            (*pool).prevpool = last;
            if last.is_null() {
                self.used_first[c].set(pool);
            } else {
                (*last).nextpool = pool;
            }
            self.used_last[c].set(pool);
        }
    }

    #[inline(always)]
    fn arena_index(&self, ao: *mut ArenaObject) -> u32 {
        // SAFETY: `ao` points into the arena table.
        unsafe { ao.offset_from(self.arenas.get()) as u32 }
    }

    /// No used pool of class `szidx`: take a free pool from the first usable
    /// arena (making an arena if there is none) and start it for that class.
    /// Blocks other threads sent back are freed first; they may refill it.
    #[cold]
    #[inline(never)]
    fn alloc_from_new_pool(&self, szidx: usize) -> *mut u8 {
        if self.drain_remote() > 0 && !self.used_first[szidx].get().is_null() {
            return self.alloc_from_pool(szidx);
        }
        if self.usable_arenas.get().is_null() && self.retain.get() {
            // A new arena is next: first give back cached blocks and retained
            // pools, which may leave empty pools that can serve instead. (Only
            // the owner writes `usable_arenas`, so it reads it without `meta`.)
            self.release_held_pools();
        }
        let _meta = self.meta.lock();
        // SAFETY: all pointers followed are to live arena objects and pools of
        // this heap, per the invariants; `meta` is held for their writes.
        unsafe {
            if self.usable_arenas.get().is_null() {
                let ao = self.new_arena();
                if ao.is_null() {
                    return ptr::null_mut();
                }
                (*ao).nextarena = ptr::null_mut();
                (*ao).prevarena = ptr::null_mut();
                self.usable_arenas.set(ao);
                let nf = (*ao).nfreepools as usize;
                debug_assert!(self.nfp2lasta[nf].get().is_null());
                self.nfp2lasta[nf].set(ao);
            }
            let ao = self.usable_arenas.get();
            let nf = (*ao).nfreepools as usize;
            debug_assert!(nf > 0);
            // `ao` heads the list, so it has the fewest free pools; taking one
            // keeps it first. Only the fingers need fixing.
            if self.nfp2lasta[nf].get() == ao {
                self.nfp2lasta[nf].set(ptr::null_mut());
            }
            if nf > 1 {
                debug_assert!(self.nfp2lasta[nf - 1].get().is_null());
                self.nfp2lasta[nf - 1].set(ao);
            }
            let pool;
            if !(*ao).freepools.is_null() {
                pool = (*ao).freepools;
                (*ao).freepools = (*pool).nextpool;
                (*ao).free_bits &= !(*ao).bit(pool);
                (*ao).nfree_committed -= 1;
                self.committed_empty.set(self.committed_empty.get() - 1);
            } else if (*ao).decommitted != 0 {
                // A pool whose pages went back: it reads as zeroes, like a
                // virgin pool, and is set up as one.
                let i = (*ao).decommitted.trailing_zeros() as usize;
                (*ao).decommitted &= !(1u64 << i);
                pool = (*ao).first_pool().add(i * POOL_SIZE).cast::<PoolHeader>();
                (*pool).arenaindex = self.arena_index(ao);
                (*pool).szidx = DUMMY_SIZE_IDX;
            } else {
                pool = (*ao).pool_address.cast::<PoolHeader>();
                (*pool).arenaindex = self.arena_index(ao);
                (*pool).szidx = DUMMY_SIZE_IDX;
                (*ao).pool_address = (*ao).pool_address.add(POOL_SIZE);
            }
            (*pool).owner = self.owner_tag.get();
            (*ao).nfreepools -= 1;
            if (*ao).nfreepools == 0 {
                // Wholly allocated: leaves the usable list.
                let next = (*ao).nextarena;
                self.usable_arenas.set(next);
                if !next.is_null() {
                    (*next).prevarena = ptr::null_mut();
                }
            }
            self.pools_in_use.set(self.pools_in_use.get() + 1);

            // The used list of this class was empty; the pool is all of it.
            (*pool).nextpool = ptr::null_mut();
            (*pool).prevpool = ptr::null_mut();
            self.used_first[szidx].set(pool);
            self.used_last[szidx].set(pool);
            if (*pool).szidx == szidx as u32 {
                // Last held this class: header and free list are ready, and
                // an emptied pool has at least two blocks on its list.
                (*pool).set_count(1);
                let bp = (*pool).freeblock;
                (*pool).freeblock = bp.cast::<*mut u8>().read();
                debug_assert!(!(*pool).freeblock.is_null());
                return bp;
            }
            pool::init_for_class(pool, szidx)
        }
    }

    /// A pool just became empty: move it from its used list to its arena's
    /// free pools, then restore the usable-arena order, or release the arena,
    /// and give pages back as the purge policy says.
    #[cold]
    unsafe fn pool_emptied(&self, pool: *mut PoolHeader) {
        let _meta = self.meta.lock();
        // SAFETY: `pool` is live and on used[szidx] (a pool of two or more
        // blocks holding one block is not full); its arena object is live;
        // list pointers follow the invariants; `meta` is held.
        unsafe {
            (*pool).set_count(0);
            self.unlink_used(pool, (*pool).szidx as usize);
            self.pools_in_use.set(self.pools_in_use.get() - 1);
            let ao = self.arenas.get().add((*pool).arenaindex as usize);
            (*pool).nextpool = (*ao).freepools;
            (*ao).freepools = pool;
            (*ao).free_bits |= (*ao).bit(pool);
            (*ao).nfree_committed += 1;
            self.committed_empty.set(self.committed_empty.get() + 1);
            let mut nf = (*ao).nfreepools as usize;
            // If `ao` was the last arena with `nf` free pools, the finger moves
            // to its predecessor when that one has `nf` too.
            let lastnf = self.nfp2lasta[nf].get();
            if lastnf == ao {
                let p = (*ao).prevarena;
                self.nfp2lasta[nf].set(if !p.is_null() && (*p).nfreepools as usize == nf {
                    p
                } else {
                    ptr::null_mut()
                });
            }
            nf += 1;
            (*ao).nfreepools = nf as u32;

            if nf == (*ao).ntotalpools as usize && !(*ao).nextarena.is_null() {
                // Case 1: every pool is free and another usable arena follows:
                // give the arena back (the last one is kept as a spare).
                self.unlink_usable(ao);
                self.release_arena(ao);
            } else if nf == 1 {
                // Case 2: the arena had no free pool, so it was on no list; it
                // now has the fewest free pools and goes first.
                let head = self.usable_arenas.get();
                (*ao).nextarena = head;
                (*ao).prevarena = ptr::null_mut();
                if !head.is_null() {
                    (*head).prevarena = ao;
                }
                self.usable_arenas.set(ao);
                if self.nfp2lasta[1].get().is_null() {
                    self.nfp2lasta[1].set(ao);
                }
            } else {
                if self.nfp2lasta[nf].get().is_null() {
                    self.nfp2lasta[nf].set(ao);
                }
                // Case 4: it was the last arena with its old count, so it is
                // still in order. Case 3: move it to just after the last
                // arena with the old count.
                if ao != lastnf {
                    debug_assert!(!(*ao).nextarena.is_null());
                    self.unlink_usable(ao);
                    (*ao).prevarena = lastnf;
                    (*ao).nextarena = (*lastnf).nextarena;
                    if !(*ao).nextarena.is_null() {
                        (*(*ao).nextarena).prevarena = ao;
                    }
                    (*lastnf).nextarena = ao;
                }
            }
            self.apply_purge_policy();
        }
    }

    /// Gives pages back if the policy says so (`meta` held).
    fn apply_purge_policy(&self) {
        let empty = self.committed_empty.get();
        let events = self.empty_events.get() + 1;
        self.empty_events.set(events);
        match self.purge_policy.get() {
            PurgePolicy::Never => {}
            PurgePolicy::Immediate => {
                if empty > 0 {
                    self.decommit_down_to(0, 1);
                }
            }
            PurgePolicy::Threshold { min_pools, divisor } => {
                let limit = min_pools.max(self.pools_in_use.get() / divisor.max(1));
                if empty > limit && events >= self.next_purge_check.get() {
                    let given = self.decommit_down_to(limit / 2, MIN_POOLS_PER_CALL);
                    if self.committed_empty.get() > limit {
                        // Not enough worth giving back yet: look again later,
                        // later still if this walk found nothing.
                        let wait = self.purge_backoff.get();
                        self.next_purge_check.set(events + wait);
                        if given == 0 {
                            self.purge_backoff.set((wait * 2).min(PURGE_RETRY_MAX));
                        } else {
                            self.purge_backoff.set(PURGE_RETRY_EVENTS);
                        }
                    } else {
                        self.purge_backoff.set(PURGE_RETRY_EVENTS);
                    }
                }
            }
        }
    }

    /// Gives back the pages of empty pools, emptiest arenas first, until at
    /// most `target` empty pools keep theirs, in arenas where one system call
    /// returns `min_per_call` pools on average (`meta` held). Returns the
    /// pools decommitted.
    fn decommit_down_to(&self, target: usize, min_per_call: usize) -> usize {
        // The usable list is sorted most-used first: walk it from the end.
        let mut ao = self.usable_arenas.get();
        // SAFETY: usable-list entries are live arena objects; `meta` is held.
        unsafe {
            if ao.is_null() {
                return 0;
            }
            while !(*ao).nextarena.is_null() {
                ao = (*ao).nextarena;
            }
            let mut n = 0;
            while !ao.is_null() && self.committed_empty.get() > target {
                if (*ao).purgeable && (*ao).nfree_committed > 0 {
                    n += self.decommit_arena_pools(ao, min_per_call);
                }
                ao = (*ao).prevarena;
            }
            n
        }
    }

    /// Gives back the pages of every pool on `ao`'s free list, in runs of
    /// adjacent pools, if the runs average `min_per_call` pools. Returns how
    /// many pools.
    ///
    /// # Safety
    /// `ao` is a live, purgeable arena object of this heap; `meta` is held.
    unsafe fn decommit_arena_pools(&self, ao: *mut ArenaObject, min_per_call: usize) -> usize {
        // SAFETY: per the contract; free pools hold nothing anyone uses.
        unsafe {
            let first = (*ao).first_pool();
            let mask = Self::free_mask(&*ao);
            let n = mask.count_ones() as usize;
            // Runs of set bits: each starts where a bit is set and the one
            // below it is not.
            let runs = (mask & !(mask << 1)).count_ones() as usize;
            if n < min_per_call * runs {
                return 0;
            }
            let mut rest = mask;
            while rest != 0 {
                let start = rest.trailing_zeros() as usize;
                let run = (rest >> start).trailing_ones() as usize;
                os::discard(first.add(start * POOL_SIZE), run * POOL_SIZE);
                rest &= !((((1u128 << run) - 1) as u64) << start);
            }
            (*ao).freepools = ptr::null_mut();
            (*ao).free_bits = 0;
            (*ao).nfree_committed = 0;
            (*ao).decommitted |= mask;
            self.committed_empty.set(self.committed_empty.get() - n);
            n
        }
    }

    /// Gives cached blocks back to their pools and retained empty pools back
    /// to their arenas (the owner, without `meta`).
    fn release_held_pools(&self) {
        self.flush_cache_shared();
        for c in 0..NB_SMALL_SIZE_CLASSES {
            let head = self.used_first[c].get();
            // SAFETY: a used-list head is a live pool of this heap.
            if !head.is_null() && unsafe { (*head).count() } == 0 {
                // SAFETY: a retained pool is on its used list.
                unsafe { self.pool_emptied(head) };
            }
        }
    }

    /// [`Heap::purge`] through a shared reference: for the owner of a
    /// shared heap (a thread heap, a [`GilHeap`](crate::GilHeap) with its
    /// lock held). Blocks other threads sent back are freed first.
    pub fn purge_shared(&self) -> usize {
        self.drain_remote();
        self.release_held_pools();
        let _meta = self.meta.lock();
        let mut bytes = self.decommit_down_to(0, 1) * POOL_SIZE;
        // Wholly free arenas, the spare included.
        let mut ao = self.usable_arenas.get();
        // SAFETY: usable-list entries are live arena objects; `meta` is held.
        unsafe {
            while !ao.is_null() {
                let next = (*ao).nextarena;
                if (*ao).nfreepools == (*ao).ntotalpools {
                    let nf = (*ao).nfreepools as usize;
                    if self.nfp2lasta[nf].get() == ao {
                        let p = (*ao).prevarena;
                        self.nfp2lasta[nf].set(if !p.is_null() && (*p).nfreepools as usize == nf {
                            p
                        } else {
                            ptr::null_mut()
                        });
                    }
                    self.unlink_usable(ao);
                    self.release_arena(ao);
                    bytes += ARENA_SIZE;
                }
                ao = next;
            }
        }
        bytes
    }

    unsafe fn unlink_usable(&self, ao: *mut ArenaObject) {
        // SAFETY: `ao` is on usable_arenas; its neighbours are live.
        unsafe {
            let (prev, next) = ((*ao).prevarena, (*ao).nextarena);
            if prev.is_null() {
                self.usable_arenas.set(next);
            } else {
                (*prev).nextarena = next;
            }
            if !next.is_null() {
                (*next).prevarena = prev;
            }
        }
    }

    /// Gives an arena (on no list) back to the allocator that made it and
    /// puts its object on the unused list (`meta` held).
    unsafe fn release_arena(&self, ao: *mut ArenaObject) {
        // SAFETY: `ao` is a live arena object whose pools are all free.
        unsafe {
            let address = (*ao).address;
            ARENA_MAP.mark(address.addr(), false);
            let a = (*ao).allocator;
            (a.free)(a.ctx, address.cast(), ARENA_SIZE);
            self.committed_empty.set(self.committed_empty.get() - (*ao).nfree_committed as usize);
            (*ao).address = ptr::null_mut();
            (*ao).nextarena = self.unused_arena_objects.get();
            self.unused_arena_objects.set(ao);
            self.narenas_currently_allocated.set(self.narenas_currently_allocated.get() - 1);
        }
    }

    /// Allocates a new arena and returns its object, or null (`meta` held).
    #[cold]
    unsafe fn new_arena(&self) -> *mut ArenaObject {
        if self.stats_on_new_arena.get() {
            crate::stats::print_to_stderr(&self.stats_locked());
        }
        // SAFETY: table manipulation follows the invariants: the table only
        // moves when no pointer into it is live.
        unsafe {
            if self.unused_arena_objects.get().is_null() && !self.grow_arena_table() {
                return ptr::null_mut();
            }
            let ao = self.unused_arena_objects.get();
            debug_assert!((*ao).address.is_null());
            let a = self.arena_allocator();
            let mut address = (a.alloc)(a.ctx, ARENA_SIZE).cast::<u8>();
            if !address.is_null() && !ARENA_MAP.mark(address.addr(), true) {
                (a.free)(a.ctx, address.cast(), ARENA_SIZE);
                address = ptr::null_mut();
            }
            if address.is_null() {
                return ptr::null_mut(); // `ao` stays at the head of the unused list
            }
            // Blocks come back from callers with their own (possibly
            // narrowed) provenance; the heap reaches headers through this.
            let _ = address.expose_provenance();
            if region::contains(address) {
                // Every arena of the region names its heap, null included:
                // the slot may have served another heap before.
                region::set_owner(address, self.owner_tag.get().cast());
            }
            self.unused_arena_objects.set((*ao).nextarena);
            (*ao).address = address;
            (*ao).allocator = a;
            (*ao).purgeable = a.is_os();
            (*ao).decommitted = 0;
            (*ao).free_bits = 0;
            (*ao).nfree_committed = 0;
            self.narenas_currently_allocated.set(self.narenas_currently_allocated.get() + 1);
            self.ntimes_arena_allocated.set(self.ntimes_arena_allocated.get() + 1);
            self.narenas_highwater.set(self.narenas_highwater.get().max(self.narenas_currently_allocated.get()));
            (*ao).freepools = ptr::null_mut();
            let excess = address.addr() & POOL_SIZE_MASK;
            let (pool_address, npools) = if excess == 0 {
                (address, MAX_POOLS_IN_ARENA)
            } else {
                (address.add(POOL_SIZE - excess), MAX_POOLS_IN_ARENA - 1)
            };
            (*ao).pool_address = pool_address;
            (*ao).nfreepools = npools as u32;
            (*ao).ntotalpools = npools as u32;
            ao
        }
    }

    /// Doubles the arena table and puts the new objects on the unused list.
    unsafe fn grow_arena_table(&self) -> bool {
        debug_assert!(self.usable_arenas.get().is_null() && self.unused_arena_objects.get().is_null());
        let max = self.maxarenas.get();
        let n = if max == 0 { INITIAL_ARENA_OBJECTS } else { max << 1 };
        if n <= max {
            return false; // overflow
        }
        let Some(bytes) = (n as usize).checked_mul(core::mem::size_of::<ArenaObject>()) else {
            return false;
        };
        // SAFETY: the table is null or from raw::realloc, and no pointer into
        // it is live (see the struct invariant).
        let table = unsafe { raw::realloc(self.arenas.get().cast(), bytes) }.cast::<ArenaObject>();
        if table.is_null() {
            return false;
        }
        self.arenas.set(table);
        for i in max..n {
            let next = if i + 1 < n {
                // SAFETY: i + 1 < n, inside the new table.
                unsafe { table.add(i as usize + 1) }
            } else {
                ptr::null_mut()
            };
            // SAFETY: i < n, inside the new table; the slot is uninitialised.
            unsafe {
                table.add(i as usize).write(ArenaObject {
                    address: ptr::null_mut(),
                    pool_address: ptr::null_mut(),
                    nfreepools: 0,
                    ntotalpools: 0,
                    freepools: ptr::null_mut(),
                    nextarena: next,
                    prevarena: ptr::null_mut(),
                    allocator: ArenaAllocator::os(),
                    nfree_committed: 0,
                    purgeable: false,
                    decommitted: 0,
                    free_bits: 0,
                })
            };
        }
        // SAFETY: max < n.
        self.unused_arena_objects.set(unsafe { table.add(max as usize) });
        self.maxarenas.set(n);
        true
    }

    /// The pools of `ao` on its free list, as a mask by pool index (`meta`
    /// held): with the decommitted mask, what tells a retained empty pool
    /// (in use) from a free one.
    fn free_mask(ao: &ArenaObject) -> u64 {
        ao.free_bits
    }

    /// Calls `f` for every live arena (`meta` held or exclusive access).
    fn for_each_arena(&self, mut f: impl FnMut(&ArenaObject)) {
        let table = self.arenas.get();
        for i in 0..self.maxarenas.get() as usize {
            // SAFETY: i < maxarenas; every table slot is initialised.
            let ao = unsafe { &*table.add(i) };
            if !ao.address.is_null() {
                f(ao);
            }
        }
    }

    /// Calls `f` for every pool carved from a live arena (`meta` held or
    /// exclusive access).
    fn for_each_pool(&self, mut f: impl FnMut(&ArenaObject, usize, *mut PoolHeader)) {
        self.for_each_arena(|ao| {
            let mut base = ao.first_pool();
            let mut i = 0;
            while base < ao.pool_address {
                f(ao, i, base.cast());
                // SAFETY: base < pool_address, which is inside the arena.
                base = unsafe { base.add(POOL_SIZE) };
                i += 1;
            }
        })
    }

    /// Calls `f` with a picture of every live arena, in table order. Nothing
    /// is allocated; `f` must not allocate from this heap.
    pub fn visit_arenas(&self, mut f: impl FnMut(&ArenaInfo)) {
        let _meta = self.meta.lock();
        self.for_each_arena(|ao| {
            let base = ao.first_pool().addr();
            let mut info = ArenaInfo {
                address: ao.address.addr(),
                first_pool_offset: base - ao.address.addr(),
                ntotalpools: ao.ntotalpools as usize,
                nfreepools: ao.nfreepools as usize,
                pools: [PoolState::Untouched; MAX_POOLS_IN_ARENA],
            };
            let carved = (ao.pool_address.addr() - base) / POOL_SIZE;
            let free = Self::free_mask(ao);
            for (i, state) in info.pools.iter_mut().enumerate().take(carved) {
                if ao.decommitted & (1u64 << i) != 0 {
                    *state = PoolState::Decommitted;
                    continue;
                }
                if free & (1u64 << i) != 0 {
                    *state = PoolState::Empty;
                    continue;
                }
                // SAFETY: pools below pool_address are carved and initialised;
                // the address lies inside this live arena; only the two fields
                // others may read are read.
                let (count, sz) = unsafe {
                    let p = ao.address.with_addr(base + i * POOL_SIZE).cast::<PoolHeader>();
                    (pool::shared_count(p) as usize, pool::shared_szidx(p) as usize)
                };
                *state = if count == num_blocks(sz) {
                    PoolState::Full { class: sz as u8 }
                } else {
                    PoolState::Used { class: sz as u8, blocks: count as u16 }
                };
            }
            f(&info);
        })
    }

    /// Number of live arenas.
    pub fn arena_count(&self) -> usize {
        let _meta = self.meta.lock();
        self.narenas_currently_allocated.get()
    }

    /// A snapshot of the heap's statistics (see [`crate::stats`]).
    pub fn stats(&self) -> crate::stats::Stats {
        let _meta = self.meta.lock();
        self.stats_locked()
    }

    /// The statistics, with `meta` held or exclusive access.
    fn stats_locked(&self) -> crate::stats::Stats {
        let mut s = crate::stats::Stats::new();
        s.arenas_allocated_total = self.ntimes_arena_allocated.get();
        s.arenas_highwater = self.narenas_highwater.get();
        s.raw_allocated_blocks = self.raw_allocated_blocks.load(Ordering::Relaxed);
        self.for_each_arena(|ao| {
            s.arenas_current += 1;
            s.unused_pools += ao.nfreepools as usize;
            s.decommitted_pools += ao.decommitted.count_ones() as usize;
            if ao.address.addr() & POOL_SIZE_MASK != 0 {
                s.arena_alignment_bytes += POOL_SIZE;
            }
        });
        let mut free = (ptr::null::<u8>(), 0u64);
        self.for_each_pool(|ao, i, p| {
            if ao.decommitted & (1u64 << i) != 0 {
                return;
            }
            if free.0 != ao.address.cast_const() {
                free = (ao.address.cast_const(), Self::free_mask(ao));
            }
            if free.1 & (1u64 << i) != 0 {
                return;
            }
            // A pool neither free nor decommitted is in use (a retained one
            // holds no block). SAFETY: carved pools are initialised; only the
            // two fields others may read are read.
            let (count, sz) = unsafe { (pool::shared_count(p) as usize, pool::shared_szidx(p) as usize) };
            let c = &mut s.classes[sz];
            c.pools += 1;
            c.blocks_in_use += count;
            c.avail_blocks += num_blocks(sz) - count;
        });
        // Cached blocks are free to the user. (Read from another thread the
        // two counts may be a moment apart: never below zero.)
        for (i, c) in s.classes.iter_mut().enumerate().take(NB_SMALL_SIZE_CLASSES) {
            let k = self.cached(i).min(c.blocks_in_use);
            c.blocks_in_use -= k;
            c.avail_blocks += k;
        }
        s.arenas_reclaimed = s.arenas_allocated_total - s.arenas_current;
        s.finish(ARENA_MAP.usage());
        s
    }

    /// Checks every structural invariant of the heap (the checks CPython
    /// makes under `Py_DEBUG`, and more). Walks all arenas and pools: for
    /// tests, fuzzing and debugging, not for hot paths. Owner only.
    pub fn validate(&self) -> Result<(), InvariantError> {
        let _meta = self.meta.lock();
        // Arena objects: unused list vs. live arenas.
        let mut live = 0usize;
        let mut usable_expected = 0usize;
        let mut committed = 0usize;
        let mut err = Ok(());
        self.for_each_arena(|ao| {
            live += 1;
            if ao.nfreepools > 0 {
                usable_expected += 1;
            }
            committed += ao.nfree_committed as usize;
            let a = ao.address.addr();
            let r = check(owns(ao.address), "arena not marked in the map", a)
                .and(check(owns(ao.address.wrapping_add(ARENA_SIZE - 1)), "arena end not marked", a))
                .and(check(ao.nfreepools <= ao.ntotalpools, "more free pools than pools", a))
                .and(check((a..=a + ARENA_SIZE).contains(&ao.pool_address.addr()), "pool_address outside arena", a))
                .and(check(ao.decommitted == 0 || ao.purgeable, "decommitted pools in a foreign arena", a));
            if err.is_ok() {
                err = r;
            }
        });
        err?;
        check(live == self.narenas_currently_allocated.get(), "live arena count", live)?;
        check(self.narenas_highwater.get() >= live, "highwater below current", live)?;
        check(committed == self.committed_empty.get(), "committed empty pool count", committed)?;
        let mut unused = 0usize;
        let mut ao = self.unused_arena_objects.get();
        while !ao.is_null() {
            // SAFETY: unused list entries are table slots.
            unsafe {
                check((*ao).address.is_null(), "unused arena object has an address", ao.addr())?;
                ao = (*ao).nextarena;
            }
            unused += 1;
            check(unused <= self.maxarenas.get() as usize, "unused list cycles", unused)?;
        }
        check(unused + live == self.maxarenas.get() as usize, "arena objects lost", unused)?;

        // Usable arenas: sorted, linked both ways, fingers right.
        let mut n = 0usize;
        let mut prev: *mut ArenaObject = ptr::null_mut();
        let mut ao = self.usable_arenas.get();
        let mut last_with = [ptr::null_mut::<ArenaObject>(); MAX_POOLS_IN_ARENA + 1];
        while !ao.is_null() {
            // SAFETY: usable list entries are live table slots.
            unsafe {
                let nf = (*ao).nfreepools as usize;
                check(!(*ao).address.is_null(), "usable arena not allocated", ao.addr())?;
                check(nf > 0, "usable arena without free pools", ao.addr())?;
                check((*ao).prevarena == prev, "usable list back link", ao.addr())?;
                if !prev.is_null() {
                    check((*prev).nfreepools as usize <= nf, "usable arenas out of order", nf)?;
                }
                last_with[nf] = ao;
                prev = ao;
                ao = (*ao).nextarena;
            }
            n += 1;
            check(n <= live, "usable list cycles", n)?;
        }
        check(n == usable_expected, "arena with free pools missing from usable list", n)?;
        for (i, (&want, got)) in last_with.iter().zip(self.nfp2lasta.iter()).enumerate() {
            check(want == got.get(), "nfp2lasta finger wrong", i)?;
        }

        // The block cache: blocks of the right class, in use in their pools,
        // each once.
        // (A fixed array: validation may run inside a global allocator.)
        let mut seen = [0usize; NB_SMALL_SIZE_CLASSES * CACHE_SLOTS];
        let mut nseen = 0;
        for c in 0..NB_SMALL_SIZE_CLASSES {
            let n = self.cached(c);
            check(n <= self.cache_max.get() as usize, "cache over its limit", c)?;
            for i in 0..n {
                // SAFETY: c is a class and n <= cache_max <= CACHE_SLOTS
                // (checked just above).
                let b = unsafe { self.cache_slot(c, i) }.get();
                check(owns(b), "cached block outside every arena", b.addr())?;
                let pool = pool_of(b);
                // SAFETY: b lies in a live arena; its pool is carved (it
                // held b) and initialised.
                unsafe {
                    check((*pool).szidx as usize == c, "cached block of another class", b.addr())?;
                    check((*pool).count() > 0, "cached block in an empty pool", b.addr())?;
                    check((*pool).owner == self.owner_tag.get(), "cached block of another heap", b.addr())?;
                    let off = b.addr() - pool.addr();
                    check(
                        off >= POOL_OVERHEAD && (off - POOL_OVERHEAD) % class_size(c) == 0,
                        "cached block misaligned",
                        b.addr(),
                    )?;
                }
                seen[nseen] = b.addr();
                nseen += 1;
            }
        }
        let seen = &mut seen[..nseen];
        seen.sort_unstable();
        check(seen.windows(2).all(|w| w[0] != w[1]), "block cached twice", nseen)?;

        // Pools: counts, free lists, list membership.
        let mut on_used = [0usize; NB_SMALL_SIZE_CLASSES];
        let mut in_use = 0usize;
        let mut r = Ok(());
        self.for_each_pool(|ao, i, p| {
            if r.is_err() {
                return;
            }
            // SAFETY: carved pools are initialised; free-list entries are
            // checked to be inside the pool before they are followed.
            r = unsafe { self.check_pool(ao, i, p, &mut on_used, &mut in_use) };
        });
        r?;
        check(in_use == self.pools_in_use.get(), "pools in use count", in_use)?;
        for (c, &expected) in on_used.iter().enumerate() {
            let mut n = 0usize;
            let mut prev = ptr::null_mut();
            let mut p = self.used_first[c].get();
            while !p.is_null() {
                // SAFETY: used-list entries are live pools.
                unsafe {
                    check((*p).szidx as usize == c, "pool on the wrong used list", p.addr())?;
                    check((*p).prevpool == prev, "used list back link", p.addr())?;
                    prev = p;
                    p = (*p).nextpool;
                }
                n += 1;
                check(n <= expected, "used list too long or cyclic", c)?;
            }
            check(self.used_last[c].get() == prev, "used list tail", c)?;
            check(n == expected, "used pool missing from its list", c)?;
        }
        Ok(())
    }

    unsafe fn check_pool(
        &self,
        ao: &ArenaObject,
        index: usize,
        p: *mut PoolHeader,
        on_used: &mut [usize; NB_SMALL_SIZE_CLASSES],
        in_use: &mut usize,
    ) -> Result<(), InvariantError> {
        let at = p.addr();
        let decommitted = ao.decommitted & (1u64 << index) != 0;
        // SAFETY: see the caller.
        unsafe {
            let mut f = ao.freepools;
            let mut on_free = false;
            while !f.is_null() {
                on_free |= f == p;
                f = (*f).nextpool;
            }
            check(on_free == (ao.free_bits & (1u64 << index) != 0), "free-pool mask disagrees with the list", at)?;
            if decommitted {
                // Its header is not read: that would fault the page back in.
                return check(!on_free, "decommitted pool on a free list", at);
            }
            check(ptr::eq(self.arenas.get().add((*p).arenaindex as usize), ao), "pool arena index", at)?;
            check((*p).owner == self.owner_tag.get(), "pool owner", at)?;
            let count = (*p).count() as usize;
            if on_free {
                return check(count == 0, "pool in use on a free list", at);
            }
            *in_use += 1;
            let sz = (*p).szidx as usize;
            if count == 0 {
                check(
                    sz < NB_SMALL_SIZE_CLASSES && self.used_first[sz].get() == p,
                    "empty pool neither free nor retained at the head of its list",
                    at,
                )?;
            }
            check(sz < NB_SMALL_SIZE_CLASSES, "bad size class", at)?;
            let size = class_size(sz);
            let virgin_from = (*p).nextoffset as usize;
            check(virgin_from >= POOL_OVERHEAD + size, "nextoffset too small", at)?;
            let carved = (virgin_from.min(POOL_SIZE) - POOL_OVERHEAD) / size;
            let mut free = 0usize;
            let mut b = (*p).freeblock;
            while !b.is_null() {
                let off = b.addr().wrapping_sub(at);
                check(off >= POOL_OVERHEAD && off < virgin_from, "free block outside carved area", at)?;
                check((off - POOL_OVERHEAD) % size == 0, "free block misaligned", b.addr())?;
                free += 1;
                check(free <= carved, "free list cycles", at)?;
                b = b.cast::<*mut u8>().read();
            }
            check(count + free == carved, "count + free != carved blocks", at)?;
            let full = count == num_blocks(sz);
            check(full == (*p).freeblock.is_null(), "free list empty iff full", at)?;
            if !full {
                on_used[sz] += 1;
            }
            Ok(())
        }
    }
}

impl Drop for Heap {
    /// Gives every arena back to the allocator that made it, and frees the
    /// arena table. Blocks still live in pools die with their arenas; blocks
    /// of the raw allocator are not tracked and stay allocated.
    fn drop(&mut self) {
        let table = self.arenas.get();
        for i in 0..self.maxarenas.get() as usize {
            // SAFETY: i < maxarenas; the heap is going away, so nothing can
            // use its arenas any more.
            unsafe {
                let ao = table.add(i);
                if !(*ao).address.is_null() {
                    self.release_arena(ao);
                }
            }
        }
        // SAFETY: the table came from raw::realloc.
        unsafe { raw::free(table.cast()) };
    }
}

/// How the composite entry points reach a heap: directly (`&mut Heap`) or
/// through a lock, and where requests pymalloc does not serve go. Neither the
/// raw fallback nor the ownership test runs inside `with`.
pub(crate) trait HeapAccess {
    /// Runs `f` with exclusive use of the heap.
    fn with<R>(&mut self, f: impl FnOnce(&Heap) -> R) -> R;
    /// The heap's counter of live blocks handed to the raw allocator.
    fn raw_counter(&self) -> &AtomicIsize;
    /// The raw allocator's malloc: the RAW domain unless overridden.
    #[inline]
    fn raw_malloc(&self, n: usize) -> *mut u8 {
        Domain::Raw.malloc(n)
    }
    /// The raw allocator's calloc.
    #[inline]
    fn raw_calloc(&self, nelem: usize, elsize: usize) -> *mut u8 {
        Domain::Raw.calloc(nelem, elsize)
    }
    /// The raw allocator's realloc.
    ///
    /// # Safety
    /// `p` is null or live from this raw allocator.
    #[inline]
    unsafe fn raw_realloc(&self, p: *mut u8, n: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { Domain::Raw.realloc(p, n) }
    }
    /// The raw allocator's free.
    ///
    /// # Safety
    /// `p` is null or live from this raw allocator, and not used again.
    #[inline]
    unsafe fn raw_free(&self, p: *mut u8) {
        // SAFETY: forwarded contract.
        unsafe { Domain::Raw.free(p) }
    }
}

impl Heap {
    /// This heap's counter of live raw blocks.
    #[inline(always)]
    pub(crate) fn raw_counter(&self) -> &AtomicIsize {
        &self.raw_allocated_blocks
    }
}

impl HeapAccess for Heap {
    #[inline(always)]
    fn with<R>(&mut self, f: impl FnOnce(&Heap) -> R) -> R {
        f(self)
    }
    #[inline(always)]
    fn raw_counter(&self) -> &AtomicIsize {
        &self.raw_allocated_blocks
    }
}

/// `_PyObject_Malloc` over any heap access.
#[inline(always)]
pub(crate) fn malloc(h: &mut impl HeapAccess, nbytes: usize) -> *mut u8 {
    if let Some(c) = size_class(nbytes) {
        let p = h.with(|heap| heap.alloc_small(c));
        if !p.is_null() {
            return p;
        }
    }
    raw_fallback_malloc(h, nbytes)
}

#[inline(never)]
fn raw_fallback_malloc(h: &mut impl HeapAccess, nbytes: usize) -> *mut u8 {
    let p = h.raw_malloc(nbytes);
    if !p.is_null() {
        h.raw_counter().fetch_add(1, Ordering::Relaxed);
    }
    p
}

/// `_PyObject_Calloc` over any heap access.
#[inline]
pub(crate) fn calloc(h: &mut impl HeapAccess, nelem: usize, elsize: usize) -> *mut u8 {
    if elsize != 0 && nelem > raw::MAX_SIZE / elsize {
        return ptr::null_mut();
    }
    let nbytes = nelem * elsize;
    if let Some(c) = size_class(nbytes) {
        let p = h.with(|heap| heap.alloc_small(c));
        if !p.is_null() {
            // SAFETY: p is a fresh block of at least nbytes.
            unsafe { ptr::write_bytes(p, 0, nbytes) };
            return p;
        }
    }
    let p = h.raw_calloc(nelem, elsize);
    if !p.is_null() {
        h.raw_counter().fetch_add(1, Ordering::Relaxed);
    }
    p
}

/// `_PyObject_Realloc` over any heap access.
///
/// # Safety
/// `p` is null, a live block of the heap, or a live block of its raw
/// allocator.
#[inline]
pub(crate) unsafe fn realloc(h: &mut impl HeapAccess, p: *mut u8, nbytes: usize) -> *mut u8 {
    if p.is_null() {
        return malloc(h, nbytes);
    }
    if !owns_live(p) {
        // Not ours: the raw allocator keeps managing it.
        // SAFETY: p is a live raw block (caller's contract).
        return unsafe { h.raw_realloc(p, nbytes) };
    }
    let p = launder(p);
    // SAFETY: p is a live pymalloc block.
    let mut size = class_size(unsafe { Heap::block_class(p) });
    if nbytes <= size {
        // Shrinking (or same): stay unless at least a quarter would be saved.
        if 4 * nbytes > 3 * size {
            return p;
        }
        size = nbytes;
    }
    let bp = malloc(h, nbytes);
    if !bp.is_null() {
        // SAFETY: the new block is distinct from p, and both hold at least
        // `size` bytes; p is live until freed here.
        unsafe {
            ptr::copy_nonoverlapping(p, bp, size);
            free(h, p);
        }
    }
    bp
}

/// `_PyObject_Free` over any heap access.
///
/// # Safety
/// `p` is null, a live block of the heap, or a live block of its raw
/// allocator; it is not used again.
#[inline(always)]
pub(crate) unsafe fn free(h: &mut impl HeapAccess, p: *mut u8) {
    if p.is_null() {
        return;
    }
    if owns_live(p) {
        // SAFETY: p is a live pymalloc block of this heap (caller's contract).
        h.with(|heap| unsafe { heap.free_small(p) });
    } else {
        // SAFETY: p is a live raw block (caller's contract).
        unsafe { raw_fallback_free(h, p) };
    }
}

#[inline(never)]
unsafe fn raw_fallback_free(h: &mut impl HeapAccess, p: *mut u8) {
    // SAFETY: p is a live raw block (caller's contract).
    unsafe { h.raw_free(p) };
    h.raw_counter().fetch_sub(1, Ordering::Relaxed);
}
