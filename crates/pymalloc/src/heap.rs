//! The pymalloc heap: size classes, pools and arenas (CPython's `obmalloc.c`).
//!
//! A [`Heap`] is a plain value holding everything pymalloc needs: the used
//! pool lists per size class, the arena table and its lists. It is `Send` but
//! not `Sync`; share one between threads through a
//! [`LockedHeap`](crate::LockedHeap), or give each thread its own.
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

use core::ptr;

use crate::arena_alloc::ArenaAllocator;
use crate::domain::Domain;
use crate::geometry::*;
use crate::pool::{self, launder, pool_of, PoolHeader, DUMMY_SIZE_IDX};
use crate::radix::ARENA_MAP;
use crate::raw;

/// Number of arena objects the table starts with (room for 16 arenas).
const INITIAL_ARENA_OBJECTS: u32 = 16;

/// Bookkeeping for one arena (CPython's `struct arena_object`).
///
/// Invariants:
/// * `address` is null if and only if the object is on the heap's
///   `unused_arena_objects` list (linked through `nextarena`).
/// * Otherwise the arena spans `address..address+ARENA_SIZE`, came from
///   `allocator`, and is marked in the arena map. Pools are carved from
///   `pool_address` upwards; `nfreepools` counts empty pools on `freepools`
///   plus pools not carved yet; `ntotalpools` is the number of whole pools
///   the arena holds after alignment.
/// * `nfreepools > 0` if and only if the arena is on `usable_arenas`
///   (doubly linked through `nextarena`/`prevarena`).
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
}

/// A doubly linked, null-terminated list of pools.
#[derive(Clone, Copy)]
struct PoolList {
    first: *mut PoolHeader,
    last: *mut PoolHeader,
}

const EMPTY_LIST: PoolList = PoolList {
    first: ptr::null_mut(),
    last: ptr::null_mut(),
};

/// The pymalloc heap. See the module documentation.
///
/// Invariants (beyond those of [`PoolHeader`] and `ArenaObject`):
/// * `used[c]` lists exactly the pools of class `c` with
///   `0 < count < num_blocks(c)`.
/// * `arenas[..maxarenas]` is the arena table (from the C heap); pools refer
///   to it by index. It only grows when no arena object is unused and no
///   arena is usable, so no pointer into it is live when it moves.
/// * `usable_arenas` is sorted by ascending `nfreepools`, and
///   `nfp2lasta[n]` is its last arena with `nfreepools == n`, or null.
pub struct Heap {
    used: [PoolList; NB_SMALL_SIZE_CLASSES],
    arenas: *mut ArenaObject,
    maxarenas: u32,
    unused_arena_objects: *mut ArenaObject,
    usable_arenas: *mut ArenaObject,
    nfp2lasta: [*mut ArenaObject; MAX_POOLS_IN_ARENA + 1],
    narenas_currently_allocated: usize,
    ntimes_arena_allocated: usize,
    narenas_highwater: usize,
    raw_allocated_blocks: isize,
    arena_allocator: ArenaAllocator,
    stats_on_new_arena: bool,
}

// SAFETY: a Heap exclusively owns its arenas and table; nothing in it is tied
// to the thread that created it. It is not Sync: all mutation needs &mut.
unsafe impl Send for Heap {}

impl Default for Heap {
    fn default() -> Self {
        Self::new()
    }
}

/// True if `p` lies in an arena of any pymalloc heap in this process.
///
/// This is the exact ownership test that decides whether a pointer is freed
/// by pymalloc or handed to the raw allocator; it accepts any address.
///
/// ```
/// let mut heap = pymalloc::Heap::new();
/// let small = unsafe { heap.malloc(100) };
/// let large = unsafe { heap.malloc(100_000) };
/// assert!(pymalloc::owns(small));
/// assert!(!pymalloc::owns(large));
/// assert!(!pymalloc::owns(core::ptr::null()));
/// unsafe { heap.free(small); heap.free(large) };
/// ```
#[inline(always)]
pub fn owns(p: *const u8) -> bool {
    ARENA_MAP.contains(p)
}

/// What one pool of an arena holds, as [`Heap::visit_arenas`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PoolState {
    /// Not carved from the arena yet: never touched.
    #[default]
    Untouched,
    /// Carved once, now empty (on the arena's free pools).
    Empty,
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
    /// Free pools: empty plus untouched.
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
        write!(
            f,
            "heap invariant broken: {} (at {:#x})",
            self.what, self.at
        )
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
    /// An empty heap: no arenas until the first small request.
    pub const fn new() -> Heap {
        Heap {
            used: [EMPTY_LIST; NB_SMALL_SIZE_CLASSES],
            arenas: ptr::null_mut(),
            maxarenas: 0,
            unused_arena_objects: ptr::null_mut(),
            usable_arenas: ptr::null_mut(),
            nfp2lasta: [ptr::null_mut(); MAX_POOLS_IN_ARENA + 1],
            narenas_currently_allocated: 0,
            ntimes_arena_allocated: 0,
            narenas_highwater: 0,
            raw_allocated_blocks: 0,
            arena_allocator: ArenaAllocator::os(),
            stats_on_new_arena: false,
        }
    }

    /// The allocator new arenas come from.
    pub fn arena_allocator(&self) -> ArenaAllocator {
        self.arena_allocator
    }

    /// Replaces the allocator new arenas come from (CPython's
    /// `PyObject_SetArenaAllocator`). Arenas already allocated are released
    /// to the allocator that made them.
    ///
    /// # Safety
    /// `a` must honour the [`ArenaAllocator`] contract for as long as any
    /// arena it returns is live, and be callable from every thread this heap
    /// is used on.
    pub unsafe fn set_arena_allocator(&mut self, a: ArenaAllocator) {
        self.arena_allocator = a;
    }

    /// Print the statistics to stderr each time a new arena is about to be
    /// allocated (CPython's `PYTHONMALLOCSTATS`).
    pub fn set_print_stats_on_new_arena(&mut self, on: bool) {
        self.stats_on_new_arena = on;
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

    /// Takes a block of size class `szidx` from a pool; null if no arena can
    /// be had. This is pymalloc's fast path.
    #[inline(always)]
    pub(crate) fn alloc_small(&mut self, szidx: usize) -> *mut u8 {
        debug_assert!(szidx < NB_SMALL_SIZE_CLASSES);
        let pool = self.used[szidx].first;
        if !pool.is_null() {
            // SAFETY: pools on a used list are live and have a non-null free
            // list whose head is a free block of the pool (invariants).
            unsafe {
                let bp = (*pool).freeblock;
                let next = bp.cast::<*mut u8>().read();
                (*pool).freeblock = next;
                (*pool).count += 1;
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
    unsafe fn pool_exhausted(&mut self, pool: *mut PoolHeader, szidx: usize) {
        // SAFETY: the caller passes the live head of used[szidx].
        unsafe {
            if (*pool).nextoffset <= (*pool).maxnextoffset {
                let bp = pool.cast::<u8>().add((*pool).nextoffset as usize);
                (*pool).nextoffset += class_size(szidx) as u32;
                bp.cast::<*mut u8>().write(ptr::null_mut());
                (*pool).freeblock = bp;
            } else {
                self.unlink_used(pool, szidx);
            }
        }
    }

    /// Returns a block of pymalloc memory to its pool.
    ///
    /// # Safety
    /// `p` is a live block handed out by this heap's `alloc_small`.
    #[inline(always)]
    pub(crate) unsafe fn free_small(&mut self, p: *mut u8) {
        let pool = pool_of(p);
        // SAFETY: p is a live block, so its pool is live and was in use.
        unsafe {
            debug_assert!((*pool).count > 0);
            let last = (*pool).freeblock;
            // The link is written through the caller's pointer (its tag may
            // be protected while it hands the block back); the free list keeps
            // the block under the arena's provenance, so the next owner does
            // not inherit the caller's narrowed tag.
            p.cast::<*mut u8>().write(last);
            (*pool).freeblock = launder(p);
            (*pool).count -= 1;
            if last.is_null() {
                // The pool was full: back to the used list, at the end, as
                // CPython's insert_to_usedpool does.
                self.append_used(pool);
            } else if (*pool).count == 0 {
                self.pool_emptied(pool);
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

    unsafe fn unlink_used(&mut self, pool: *mut PoolHeader, szidx: usize) {
        // SAFETY: `pool` is on used[szidx]; its neighbours are live pools.
        unsafe {
            let (next, prev) = ((*pool).nextpool, (*pool).prevpool);
            let list = &mut self.used[szidx];
            if prev.is_null() {
                list.first = next;
            } else {
                (*prev).nextpool = next;
            }
            if next.is_null() {
                list.last = prev;
            } else {
                (*next).prevpool = prev;
            }
        }
    }

    unsafe fn append_used(&mut self, pool: *mut PoolHeader) {
        // SAFETY: `pool` is a live pool on no list.
        unsafe {
            let list = &mut self.used[(*pool).szidx as usize];
            (*pool).nextpool = ptr::null_mut();
            (*pool).prevpool = list.last;
            if list.last.is_null() {
                list.first = pool;
            } else {
                (*list.last).nextpool = pool;
            }
            list.last = pool;
        }
    }

    #[inline(always)]
    fn arena_index(&self, ao: *mut ArenaObject) -> u32 {
        // SAFETY: `ao` points into the arena table.
        unsafe { ao.offset_from(self.arenas) as u32 }
    }

    /// No used pool of class `szidx`: take a free pool from the first usable
    /// arena (making an arena if there is none) and start it for that class.
    #[cold]
    #[inline(never)]
    fn alloc_from_new_pool(&mut self, szidx: usize) -> *mut u8 {
        // SAFETY: all pointers followed are to live arena objects and pools of
        // this heap, per the invariants.
        unsafe {
            if self.usable_arenas.is_null() {
                let ao = self.new_arena();
                if ao.is_null() {
                    return ptr::null_mut();
                }
                (*ao).nextarena = ptr::null_mut();
                (*ao).prevarena = ptr::null_mut();
                self.usable_arenas = ao;
                let nf = (*ao).nfreepools as usize;
                debug_assert!(self.nfp2lasta[nf].is_null());
                self.nfp2lasta[nf] = ao;
            }
            let ao = self.usable_arenas;
            let nf = (*ao).nfreepools as usize;
            debug_assert!(nf > 0);
            // `ao` heads the list, so it has the fewest free pools; taking one
            // keeps it first. Only the fingers need fixing.
            if self.nfp2lasta[nf] == ao {
                self.nfp2lasta[nf] = ptr::null_mut();
            }
            if nf > 1 {
                debug_assert!(self.nfp2lasta[nf - 1].is_null());
                self.nfp2lasta[nf - 1] = ao;
            }
            let pool;
            if !(*ao).freepools.is_null() {
                pool = (*ao).freepools;
                (*ao).freepools = (*pool).nextpool;
            } else {
                pool = (*ao).pool_address.cast::<PoolHeader>();
                (*pool).arenaindex = self.arena_index(ao);
                (*pool).szidx = DUMMY_SIZE_IDX;
                (*ao).pool_address = (*ao).pool_address.add(POOL_SIZE);
            }
            (*ao).nfreepools -= 1;
            if (*ao).nfreepools == 0 {
                // Wholly allocated: leaves the usable list.
                self.usable_arenas = (*ao).nextarena;
                if !self.usable_arenas.is_null() {
                    (*self.usable_arenas).prevarena = ptr::null_mut();
                }
            }

            // The used list of this class was empty; the pool is all of it.
            (*pool).nextpool = ptr::null_mut();
            (*pool).prevpool = ptr::null_mut();
            self.used[szidx] = PoolList {
                first: pool,
                last: pool,
            };
            if (*pool).szidx == szidx as u32 {
                // Last held this class: header and free list are ready, and
                // an emptied pool has at least two blocks on its list.
                (*pool).count = 1;
                let bp = (*pool).freeblock;
                (*pool).freeblock = bp.cast::<*mut u8>().read();
                debug_assert!(!(*pool).freeblock.is_null());
                return bp;
            }
            pool::init_for_class(pool, szidx)
        }
    }

    /// A pool just became empty: move it from its used list to its arena's
    /// free pools, then restore the usable-arena order, or release the arena.
    #[cold]
    unsafe fn pool_emptied(&mut self, pool: *mut PoolHeader) {
        // SAFETY: `pool` is live and on used[szidx]; its arena object is live;
        // list pointers follow the invariants.
        unsafe {
            self.unlink_used(pool, (*pool).szidx as usize);
            let ao = self.arenas.add((*pool).arenaindex as usize);
            (*pool).nextpool = (*ao).freepools;
            (*ao).freepools = pool;
            let mut nf = (*ao).nfreepools as usize;
            // If `ao` was the last arena with `nf` free pools, the finger moves
            // to its predecessor when that one has `nf` too.
            let lastnf = self.nfp2lasta[nf];
            if lastnf == ao {
                let p = (*ao).prevarena;
                self.nfp2lasta[nf] = if !p.is_null() && (*p).nfreepools as usize == nf {
                    p
                } else {
                    ptr::null_mut()
                };
            }
            nf += 1;
            (*ao).nfreepools = nf as u32;

            // Case 1: every pool is free and another usable arena follows:
            // give the arena back (the last one is kept as a spare).
            if nf == (*ao).ntotalpools as usize && !(*ao).nextarena.is_null() {
                self.unlink_usable(ao);
                self.release_arena(ao);
                return;
            }
            // Case 2: the arena had no free pool, so it was on no list; it
            // now has the fewest free pools and goes first.
            if nf == 1 {
                (*ao).nextarena = self.usable_arenas;
                (*ao).prevarena = ptr::null_mut();
                if !self.usable_arenas.is_null() {
                    (*self.usable_arenas).prevarena = ao;
                }
                self.usable_arenas = ao;
                if self.nfp2lasta[1].is_null() {
                    self.nfp2lasta[1] = ao;
                }
                return;
            }
            if self.nfp2lasta[nf].is_null() {
                self.nfp2lasta[nf] = ao;
            }
            // Case 4: it was the last arena with its old count, so it is
            // still in order.
            if ao == lastnf {
                return;
            }
            // Case 3: move it to just after the last arena with the old count.
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

    unsafe fn unlink_usable(&mut self, ao: *mut ArenaObject) {
        // SAFETY: `ao` is on usable_arenas; its neighbours are live.
        unsafe {
            let (prev, next) = ((*ao).prevarena, (*ao).nextarena);
            if prev.is_null() {
                self.usable_arenas = next;
            } else {
                (*prev).nextarena = next;
            }
            if !next.is_null() {
                (*next).prevarena = prev;
            }
        }
    }

    /// Gives an arena (on no list) back to the allocator that made it and
    /// puts its object on the unused list.
    unsafe fn release_arena(&mut self, ao: *mut ArenaObject) {
        // SAFETY: `ao` is a live arena object whose pools are all free.
        unsafe {
            let address = (*ao).address;
            ARENA_MAP.mark(address.addr(), false);
            let a = (*ao).allocator;
            (a.free)(a.ctx, address.cast(), ARENA_SIZE);
            (*ao).address = ptr::null_mut();
            (*ao).nextarena = self.unused_arena_objects;
            self.unused_arena_objects = ao;
            self.narenas_currently_allocated -= 1;
        }
    }

    /// Allocates a new arena and returns its object, or null.
    #[cold]
    unsafe fn new_arena(&mut self) -> *mut ArenaObject {
        if self.stats_on_new_arena {
            crate::stats::print_to_stderr(&self.stats());
        }
        // SAFETY: table manipulation follows the invariants: the table only
        // moves when no pointer into it is live.
        unsafe {
            if self.unused_arena_objects.is_null() && !self.grow_arena_table() {
                return ptr::null_mut();
            }
            let ao = self.unused_arena_objects;
            debug_assert!((*ao).address.is_null());
            let a = self.arena_allocator;
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
            self.unused_arena_objects = (*ao).nextarena;
            (*ao).address = address;
            (*ao).allocator = a;
            self.narenas_currently_allocated += 1;
            self.ntimes_arena_allocated += 1;
            self.narenas_highwater = self.narenas_highwater.max(self.narenas_currently_allocated);
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
    unsafe fn grow_arena_table(&mut self) -> bool {
        debug_assert!(self.usable_arenas.is_null() && self.unused_arena_objects.is_null());
        let n = if self.maxarenas == 0 {
            INITIAL_ARENA_OBJECTS
        } else {
            self.maxarenas << 1
        };
        if n <= self.maxarenas {
            return false; // overflow
        }
        let Some(bytes) = (n as usize).checked_mul(core::mem::size_of::<ArenaObject>()) else {
            return false;
        };
        // SAFETY: the table is null or from raw::realloc, and no pointer into
        // it is live (see the struct invariant).
        let table = unsafe { raw::realloc(self.arenas.cast(), bytes) }.cast::<ArenaObject>();
        if table.is_null() {
            return false;
        }
        self.arenas = table;
        for i in self.maxarenas..n {
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
                })
            };
        }
        // SAFETY: maxarenas < n.
        self.unused_arena_objects = unsafe { table.add(self.maxarenas as usize) };
        self.maxarenas = n;
        true
    }

    /// Calls `f` for every live arena: its base address and object.
    fn for_each_arena(&self, mut f: impl FnMut(&ArenaObject)) {
        for i in 0..self.maxarenas as usize {
            // SAFETY: i < maxarenas; every table slot is initialised.
            let ao = unsafe { &*self.arenas.add(i) };
            if !ao.address.is_null() {
                f(ao);
            }
        }
    }

    /// Calls `f` for every pool carved from a live arena.
    fn for_each_pool(&self, mut f: impl FnMut(&ArenaObject, *mut PoolHeader)) {
        self.for_each_arena(|ao| {
            let mut base = ao.address.map_addr(|a| round_up(a, POOL_SIZE));
            while base < ao.pool_address {
                f(ao, base.cast());
                // SAFETY: base < pool_address, which is inside the arena.
                base = unsafe { base.add(POOL_SIZE) };
            }
        })
    }

    /// Calls `f` with a picture of every live arena, in table order. Nothing
    /// is allocated; `f` must not allocate from this heap.
    pub fn visit_arenas(&self, mut f: impl FnMut(&ArenaInfo)) {
        self.for_each_arena(|ao| {
            let base = round_up(ao.address.addr(), POOL_SIZE);
            let mut info = ArenaInfo {
                address: ao.address.addr(),
                first_pool_offset: base - ao.address.addr(),
                ntotalpools: ao.ntotalpools as usize,
                nfreepools: ao.nfreepools as usize,
                pools: [PoolState::Untouched; MAX_POOLS_IN_ARENA],
            };
            let carved = (ao.pool_address.addr() - base) / POOL_SIZE;
            for (i, state) in info.pools.iter_mut().enumerate().take(carved) {
                let p = (base + i * POOL_SIZE) as *const PoolHeader;
                // SAFETY: pools below pool_address are carved and initialised;
                // the address lies inside this live arena.
                let (count, sz) = unsafe {
                    let p = ao.address.with_addr(p.addr()).cast::<PoolHeader>();
                    ((*p).count as usize, (*p).szidx as usize)
                };
                *state = if count == 0 {
                    PoolState::Empty
                } else if count == num_blocks(sz) {
                    PoolState::Full { class: sz as u8 }
                } else {
                    PoolState::Used {
                        class: sz as u8,
                        blocks: count as u16,
                    }
                };
            }
            f(&info);
        })
    }

    /// Number of live arenas.
    pub fn arena_count(&self) -> usize {
        self.narenas_currently_allocated
    }

    /// A snapshot of the heap's statistics (see [`crate::stats`]).
    pub fn stats(&self) -> crate::stats::Stats {
        let mut s = crate::stats::Stats::new();
        s.arenas_allocated_total = self.ntimes_arena_allocated;
        s.arenas_highwater = self.narenas_highwater;
        s.raw_allocated_blocks = self.raw_allocated_blocks;
        self.for_each_arena(|ao| {
            s.arenas_current += 1;
            s.unused_pools += ao.nfreepools as usize;
            if ao.address.addr() & POOL_SIZE_MASK != 0 {
                s.arena_alignment_bytes += POOL_SIZE;
            }
        });
        self.for_each_pool(|_, p| {
            // SAFETY: carved pools are initialised.
            let (count, sz) = unsafe { ((*p).count as usize, (*p).szidx as usize) };
            if count == 0 {
                return;
            }
            let c = &mut s.classes[sz];
            c.pools += 1;
            c.blocks_in_use += count;
            c.avail_blocks += num_blocks(sz) - count;
        });
        s.arenas_reclaimed = s.arenas_allocated_total - s.arenas_current;
        s.finish(ARENA_MAP.usage());
        s
    }

    /// Checks every structural invariant of the heap (the checks CPython
    /// makes under `Py_DEBUG`, and more). Walks all arenas and pools: for
    /// tests, fuzzing and debugging, not for hot paths.
    pub fn validate(&self) -> Result<(), InvariantError> {
        // Arena objects: unused list vs. live arenas.
        let mut live = 0usize;
        let mut usable_expected = 0usize;
        let mut err = Ok(());
        self.for_each_arena(|ao| {
            live += 1;
            if ao.nfreepools > 0 {
                usable_expected += 1;
            }
            let a = ao.address.addr();
            let r = check(owns(ao.address), "arena not marked in the map", a)
                .and(check(
                    owns(ao.address.wrapping_add(ARENA_SIZE - 1)),
                    "arena end not marked",
                    a,
                ))
                .and(check(
                    ao.nfreepools <= ao.ntotalpools,
                    "more free pools than pools",
                    a,
                ))
                .and(check(
                    (a..=a + ARENA_SIZE).contains(&ao.pool_address.addr()),
                    "pool_address outside arena",
                    a,
                ));
            if err.is_ok() {
                err = r;
            }
        });
        err?;
        check(
            live == self.narenas_currently_allocated,
            "live arena count",
            live,
        )?;
        check(
            self.narenas_highwater >= live,
            "highwater below current",
            live,
        )?;
        let mut unused = 0usize;
        let mut ao = self.unused_arena_objects;
        while !ao.is_null() {
            // SAFETY: unused list entries are table slots.
            unsafe {
                check(
                    (*ao).address.is_null(),
                    "unused arena object has an address",
                    ao.addr(),
                )?;
                ao = (*ao).nextarena;
            }
            unused += 1;
            check(
                unused <= self.maxarenas as usize,
                "unused list cycles",
                unused,
            )?;
        }
        check(
            unused + live == self.maxarenas as usize,
            "arena objects lost",
            unused,
        )?;

        // Usable arenas: sorted, linked both ways, fingers right.
        let mut n = 0usize;
        let mut prev: *mut ArenaObject = ptr::null_mut();
        let mut ao = self.usable_arenas;
        let mut last_with = [ptr::null_mut::<ArenaObject>(); MAX_POOLS_IN_ARENA + 1];
        while !ao.is_null() {
            // SAFETY: usable list entries are live table slots.
            unsafe {
                let nf = (*ao).nfreepools as usize;
                check(
                    !(*ao).address.is_null(),
                    "usable arena not allocated",
                    ao.addr(),
                )?;
                check(nf > 0, "usable arena without free pools", ao.addr())?;
                check((*ao).prevarena == prev, "usable list back link", ao.addr())?;
                if !prev.is_null() {
                    check(
                        (*prev).nfreepools as usize <= nf,
                        "usable arenas out of order",
                        nf,
                    )?;
                }
                last_with[nf] = ao;
                prev = ao;
                ao = (*ao).nextarena;
            }
            n += 1;
            check(n <= live, "usable list cycles", n)?;
        }
        check(
            n == usable_expected,
            "arena with free pools missing from usable list",
            n,
        )?;
        for (i, (&want, &got)) in last_with.iter().zip(self.nfp2lasta.iter()).enumerate() {
            check(want == got, "nfp2lasta finger wrong", i)?;
        }

        // Pools: counts, free lists, list membership.
        let mut on_used = [0usize; NB_SMALL_SIZE_CLASSES];
        let mut r = Ok(());
        self.for_each_pool(|ao, p| {
            if r.is_err() {
                return;
            }
            // SAFETY: carved pools are initialised; free-list entries are
            // checked to be inside the pool before they are followed.
            r = unsafe { self.check_pool(ao, p, &mut on_used) };
        });
        r?;
        for (c, list) in self.used.iter().enumerate() {
            let mut n = 0usize;
            let mut prev = ptr::null_mut();
            let mut p = list.first;
            while !p.is_null() {
                // SAFETY: used-list entries are live pools.
                unsafe {
                    check(
                        (*p).szidx as usize == c,
                        "pool on the wrong used list",
                        p.addr(),
                    )?;
                    check((*p).prevpool == prev, "used list back link", p.addr())?;
                    prev = p;
                    p = (*p).nextpool;
                }
                n += 1;
                check(n <= on_used[c], "used list too long or cyclic", c)?;
            }
            check(list.last == prev, "used list tail", c)?;
            check(n == on_used[c], "used pool missing from its list", c)?;
        }
        Ok(())
    }

    unsafe fn check_pool(
        &self,
        ao: &ArenaObject,
        p: *mut PoolHeader,
        on_used: &mut [usize; NB_SMALL_SIZE_CLASSES],
    ) -> Result<(), InvariantError> {
        // SAFETY: see the caller.
        unsafe {
            let at = p.addr();
            check(
                ptr::eq(self.arenas.add((*p).arenaindex as usize), ao),
                "pool arena index",
                at,
            )?;
            let count = (*p).count as usize;
            if count == 0 {
                let mut f = ao.freepools;
                while !f.is_null() && f != p {
                    f = (*f).nextpool;
                }
                return check(f == p, "empty pool not on its arena's free list", at);
            }
            let sz = (*p).szidx as usize;
            check(sz < NB_SMALL_SIZE_CLASSES, "bad size class", at)?;
            let size = class_size(sz);
            check(
                (*p).maxnextoffset as usize == POOL_SIZE - size,
                "maxnextoffset",
                at,
            )?;
            let virgin_from = (*p).nextoffset as usize;
            check(
                virgin_from >= POOL_OVERHEAD + size,
                "nextoffset too small",
                at,
            )?;
            let carved = (virgin_from.min(POOL_SIZE) - POOL_OVERHEAD) / size;
            let mut free = 0usize;
            let mut b = (*p).freeblock;
            while !b.is_null() {
                let off = b.addr().wrapping_sub(at);
                check(
                    off >= POOL_OVERHEAD && off < virgin_from,
                    "free block outside carved area",
                    at,
                )?;
                check(
                    (off - POOL_OVERHEAD) % size == 0,
                    "free block misaligned",
                    b.addr(),
                )?;
                free += 1;
                check(free <= carved, "free list cycles", at)?;
                b = b.cast::<*mut u8>().read();
            }
            check(count + free == carved, "count + free != carved blocks", at)?;
            let full = count == num_blocks(sz);
            check(
                full == (*p).freeblock.is_null(),
                "free list empty iff full",
                at,
            )?;
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
        for i in 0..self.maxarenas as usize {
            // SAFETY: i < maxarenas; the heap is going away, so nothing can
            // use its arenas any more.
            unsafe {
                let ao = self.arenas.add(i);
                if !(*ao).address.is_null() {
                    self.release_arena(ao);
                }
            }
        }
        // SAFETY: the table came from raw::realloc.
        unsafe { raw::free(self.arenas.cast()) };
    }
}

/// How the composite entry points reach a heap: directly (`&mut Heap`) or
/// through a lock, and where requests pymalloc does not serve go. Neither the
/// raw fallback nor the ownership test runs inside `with`.
pub(crate) trait HeapAccess {
    /// Runs `f` with exclusive access to the heap.
    fn with<R>(&mut self, f: impl FnOnce(&mut Heap) -> R) -> R;
    /// Adds `delta` to the count of live blocks handed to the raw allocator.
    fn note_raw(&mut self, delta: isize);
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

impl HeapAccess for Heap {
    #[inline(always)]
    fn with<R>(&mut self, f: impl FnOnce(&mut Heap) -> R) -> R {
        f(self)
    }
    #[inline(always)]
    fn note_raw(&mut self, delta: isize) {
        self.raw_allocated_blocks += delta;
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
        h.note_raw(1);
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
        h.note_raw(1);
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
    if !owns(p) {
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
    if owns(p) {
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
    h.note_raw(-1);
}
