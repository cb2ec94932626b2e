//! Arenas (CPython's `arena_object`, `usable_arenas`, `nfp2lasta`,
//! `new_arena`): the table of arena objects, the list of arenas with free
//! pools kept in order, and where a new pool comes from and an empty one
//! goes back to.

use core::cell::Cell;
use core::ptr;

use super::Heap;
use crate::arena_alloc::ArenaAllocator;
use crate::cell_array::CellArray;
use crate::geometry::{round_up, ARENA_SIZE, MAX_POOLS_IN_ARENA, POOL_SIZE, POOL_SIZE_MASK};
use crate::pool::{self, PoolHeader, DUMMY_SIZE_IDX};
use crate::radix::ARENA_MAP;
use crate::{raw, region};

/// How many usable arenas [`Arenas::take_pool`] looks at, from the first,
/// for an empty pool whose pages are resident.
const WARM_REACH: usize = 64;

/// Number of arena objects the table starts with (room for 16 arenas).
const INITIAL_ARENA_OBJECTS: u32 = 16;
// The table comes from the C library's own `realloc` (`raw::meta`), with the
// heap's lock held: it never re-enters this heap, even when pymalloc is the
// process's `malloc` (the preload library).

// The per-arena masks of free and decommitted pools are one u64 each.
const _: () = assert!(MAX_POOLS_IN_ARENA <= 64);

/// Bookkeeping for one arena (CPython's `struct arena_object`).
///
/// Invariants:
/// * `address` is null if and only if the object is on the heap's
///   `unused` list (linked through `nextarena`).
/// * Otherwise the arena spans `address..address+ARENA_SIZE`, came from
///   `allocator`, and is a live slot of the arena region or (outside it)
///   marked in the arena map: `owns` is true over it. Pools are carved from
///   `pool_address` upwards. `nfreepools` counts the free pools: those on
///   `freepools` (`nfree_committed` of them), those whose pages were given
///   back (bits of `decommitted`, by pool index from the first pool), and
///   those not carved yet. `ntotalpools` is the number of whole pools the
///   arena holds after alignment.
/// * `nfreepools > 0` if and only if the arena is on the usable list
///   (doubly linked through `nextarena`/`prevarena`).
/// * `free_bits` has bit `i` set exactly when pool `i` is on `freepools`.
/// * The decay policy's marks (`decay.rs`): `stale_bits` is a subset of
///   `free_bits`, the free pools untouched since the last sweep; `stale_free`
///   means the arena was wholly free at the last sweep and no pool was taken
///   from it since (so all its pools are free).
/// * `purgeable`: the arena comes from pymalloc's own OS allocator, so pages
///   of its free pools may be given back with `madvise`.
/// * All of it is written only under the heap's `meta` lock.
#[repr(C)]
pub(super) struct ArenaObject {
    pub(super) address: *mut u8,
    pub(super) pool_address: *mut u8,
    pub(super) nfreepools: u32,
    pub(super) ntotalpools: u32,
    pub(super) freepools: *mut PoolHeader,
    pub(super) nextarena: *mut ArenaObject,
    pub(super) prevarena: *mut ArenaObject,
    allocator: ArenaAllocator,
    pub(super) nfree_committed: u32,
    pub(super) purgeable: bool,
    pub(super) decommitted: u64,
    pub(super) free_bits: u64,
    pub(super) stale_bits: u64,
    pub(super) stale_free: bool,
}

impl ArenaObject {
    /// Address of the first pool (the arena base rounded up to a pool).
    pub(super) fn first_pool(&self) -> *mut u8 {
        self.address.map_addr(|a| round_up(a, POOL_SIZE))
    }

    /// The bit of the pool whose header is `pool` in the per-arena masks.
    pub(super) fn bit(&self, pool: *const PoolHeader) -> u64 {
        1u64 << ((pool::base_of(pool).addr() - self.first_pool().addr()) / POOL_SIZE)
    }
}

/// The heap's arenas and its pool counts.
///
/// Invariants:
/// * `table[..max]` is the arena table (from the C heap); pools refer to it
///   by index. It only grows when no arena object is unused and no arena is
///   usable, so no pointer into it is live when it moves.
/// * `usable` is sorted by ascending `nfreepools`, and `nfp2lasta[n]` is its
///   last arena with `nfreepools == n`, or null.
/// * `ncurrent` counts live arenas, `highwater` the most ever live at once,
///   `ntimes_allocated` every arena ever taken.
/// * `pools_in_use` counts used and full pools (retained ones too);
///   `committed_empty` counts pools on the arenas' `freepools` lists;
///   `pages_out` counts the pages pools in use gave back (`pages.rs`).
/// * Written only under the heap's `meta` lock (or by the owner where only
///   the owner reads).
pub(super) struct Arenas {
    pub(super) table: Cell<*mut ArenaObject>,
    pub(super) max: Cell<u32>,
    pub(super) unused: Cell<*mut ArenaObject>,
    pub(super) usable: Cell<*mut ArenaObject>,
    pub(super) nfp2lasta: CellArray<*mut ArenaObject, { MAX_POOLS_IN_ARENA + 1 }>,
    pub(super) ncurrent: Cell<usize>,
    pub(super) ntimes_allocated: Cell<usize>,
    pub(super) highwater: Cell<usize>,
    pub(super) pools_in_use: Cell<usize>,
    pub(super) committed_empty: Cell<usize>,
    /// Pages given back by pools in use (`pages.rs`).
    pub(super) pages_out: Cell<usize>,
    /// This heap's own arena allocator, or None for the process-wide one.
    pub(super) own_allocator: Cell<Option<ArenaAllocator>>,
    pub(super) stats_on_new_arena: Cell<bool>,
}

impl Arenas {
    pub(super) const fn new() -> Arenas {
        Arenas {
            table: Cell::new(ptr::null_mut()),
            max: Cell::new(0),
            unused: Cell::new(ptr::null_mut()),
            usable: Cell::new(ptr::null_mut()),
            nfp2lasta: CellArray::new([ptr::null_mut(); MAX_POOLS_IN_ARENA + 1]),
            ncurrent: Cell::new(0),
            ntimes_allocated: Cell::new(0),
            highwater: Cell::new(0),
            pools_in_use: Cell::new(0),
            committed_empty: Cell::new(0),
            pages_out: Cell::new(0),
            own_allocator: Cell::new(None),
            stats_on_new_arena: Cell::new(false),
        }
    }

    /// The allocator new arenas come from.
    pub(super) fn allocator(&self) -> ArenaAllocator {
        self.own_allocator.get().unwrap_or_else(crate::arena_alloc::process_default)
    }

    #[inline(always)]
    fn index_of(&self, ao: *mut ArenaObject) -> u32 {
        // SAFETY: `ao` points into the arena table (callers pass table
        // entries), so both pointers are in one allocation.
        unsafe { ao.offset_from(self.table.get()) as u32 }
    }

    /// The arena object a pool of this heap belongs to.
    ///
    /// # Safety
    /// `pool` is a carved, initialised pool of a live arena of this heap.
    pub(super) unsafe fn of_pool(&self, pool: *const PoolHeader) -> *mut ArenaObject {
        // SAFETY: arenaindex indexes the table (PoolHeader invariant).
        unsafe { self.table.get().add((*pool).arenaindex as usize) }
    }

    /// Calls `f` for every live arena (`meta` held or exclusive access).
    pub(super) fn for_each(&self, mut f: impl FnMut(&ArenaObject)) {
        let table = self.table.get();
        for k in 0..self.max.get() as usize {
            // SAFETY: k < max; every table slot is initialised.
            let ao = unsafe { &*table.add(k) };
            if !ao.address.is_null() {
                f(ao);
            }
        }
    }

    /// Calls `f` for every pool carved from a live arena, with its index in
    /// the arena, its address and its header (`meta` held or exclusive
    /// access).
    pub(super) fn for_each_pool(&self, mut f: impl FnMut(&ArenaObject, usize, *mut u8, *mut PoolHeader)) {
        self.for_each(|ao| {
            let mut base = ao.first_pool();
            let mut i = 0;
            while base < ao.pool_address {
                f(ao, i, base, pool::header_of(base));
                // SAFETY: base < pool_address, which is inside the arena.
                base = unsafe { base.add(POOL_SIZE) };
                i += 1;
            }
        })
    }

    /// `ao` is leaving the count of arenas with `nfreepools` free pools:
    /// if it was the last of them, the finger moves to its predecessor when
    /// that one has as many, else to nobody.
    ///
    /// # Safety
    /// `ao` is on the usable list (`meta` held).
    pub(super) unsafe fn leave_finger(&self, ao: *mut ArenaObject) {
        // SAFETY: `ao` and its predecessor are live usable arenas.
        unsafe {
            let nf = (*ao).nfreepools as usize;
            if self.nfp2lasta[nf].get() == ao {
                let p = (*ao).prevarena;
                self.nfp2lasta[nf].set(if !p.is_null() && (*p).nfreepools as usize == nf {
                    p
                } else {
                    ptr::null_mut()
                });
            }
        }
    }

    /// Takes `ao` off the usable list.
    ///
    /// # Safety
    /// `ao` is on the usable list; its neighbours are live (`meta` held).
    pub(super) unsafe fn unlink_usable(&self, ao: *mut ArenaObject) {
        // SAFETY: `ao` and its neighbours are live usable arenas.
        unsafe {
            let (prev, next) = ((*ao).prevarena, (*ao).nextarena);
            if prev.is_null() {
                self.usable.set(next);
            } else {
                (*prev).nextarena = next;
            }
            if !next.is_null() {
                (*next).prevarena = prev;
            }
        }
    }

    /// Puts `ao` on the usable list just after `after` (first if null).
    ///
    /// # Safety
    /// `ao` is a live arena on no list; `after` is null or on the usable
    /// list (`meta` held).
    unsafe fn link_usable_after(&self, ao: *mut ArenaObject, after: *mut ArenaObject) {
        // SAFETY: `ao`, `after` and the arena after it are live.
        unsafe {
            let next = if after.is_null() { self.usable.get() } else { (*after).nextarena };
            (*ao).prevarena = after;
            (*ao).nextarena = next;
            if after.is_null() {
                self.usable.set(ao);
            } else {
                (*after).nextarena = ao;
            }
            if !next.is_null() {
                (*next).prevarena = ao;
            }
        }
    }

    /// Takes a free pool, keeping the usable order: from the first usable
    /// arena (fewest free pools) when it has a free pool whose pages are
    /// resident, else from another usable arena that has one
    /// ([`Self::warm_arena`]), else from the first arena's decommitted or
    /// never-used pools. The pool's arena index is set; an empty pool keeps
    /// the class it last held, a never-used or decommitted one has
    /// [`DUMMY_SIZE_IDX`].
    ///
    /// CPython takes every pool from the first arena, so that the arenas
    /// with the most free pools drain and can be freed. Its empty arenas
    /// are freed at once; ours are kept for reuse under the decay policy,
    /// at the end of the list, and so were never reused while the first
    /// arena had pools left to carve: the process faulted in new pages
    /// beside resident free ones (pyperformance's json_dumps peaked 7%
    /// above stock python3's, 1.6% under `PYMALLOC_PURGE=immediate`).
    ///
    /// # Safety
    /// The usable list is not empty (`meta` held).
    pub(super) unsafe fn take_pool(&self) -> *mut PoolHeader {
        // SAFETY: usable-list entries are live arena objects (invariants);
        // their pools lie inside their arenas.
        unsafe {
            let mut ao = self.usable.get();
            let warm = if (*ao).freepools.is_null() && self.committed_empty.get() > 0 {
                self.warm_arena()
            } else {
                ptr::null_mut()
            };
            if warm.is_null() {
                self.one_pool_less_first();
            } else {
                // The first arena has no resident free pool, so `warm` is not
                // the first.
                ao = warm;
                self.one_pool_less(ao);
            }
            let pool;
            if !(*ao).freepools.is_null() {
                pool = (*ao).freepools;
                (*ao).freepools = (*pool).nextpool;
                (*ao).free_bits &= !(*ao).bit(pool);
                (*ao).stale_bits &= !(*ao).bit(pool);
                (*ao).nfree_committed -= 1;
                self.committed_empty.set(self.committed_empty.get() - 1);
            } else if (*ao).decommitted != 0 {
                // A pool whose pages went back: it reads as zeroes, like a
                // virgin pool, and is set up as one.
                let i = (*ao).decommitted.trailing_zeros() as usize;
                (*ao).decommitted &= !(1u64 << i);
                pool = pool::header_of((*ao).first_pool().add(i * POOL_SIZE));
                (*pool).arenaindex = self.index_of(ao);
                (*pool).szidx = DUMMY_SIZE_IDX;
            } else {
                pool = pool::header_of((*ao).pool_address);
                (*pool).arenaindex = self.index_of(ao);
                (*pool).szidx = DUMMY_SIZE_IDX;
                (*ao).pool_address = (*ao).pool_address.add(POOL_SIZE);
            }
            (*ao).stale_free = false;
            self.pools_in_use.set(self.pools_in_use.get() + 1);
            pool
        }
    }

    /// A usable arena with a pool on its free list (its pages resident):
    /// the nearest the head among the first [`WARM_REACH`], else the last
    /// one, which has the most free pools (the usable list ends with the
    /// wholly free arenas the decay policy keeps); null if neither has one,
    /// so that a heap of thousands of arenas never walks them all for a
    /// pool.
    ///
    /// # Safety
    /// The usable list is not empty (`meta` held).
    #[cold]
    unsafe fn warm_arena(&self) -> *mut ArenaObject {
        let mut a = self.usable.get();
        // SAFETY: usable-list entries and the fingers are live arenas.
        unsafe {
            for _ in 0..WARM_REACH {
                if a.is_null() || !(*a).freepools.is_null() {
                    return a;
                }
                a = (*a).nextarena;
            }
            let last = self.last_with_at_most(MAX_POOLS_IN_ARENA);
            if last.is_null() || (*last).freepools.is_null() {
                ptr::null_mut()
            } else {
                last
            }
        }
    }

    /// The last usable arena with at most `n` free pools (null if none):
    /// the finger of the largest count up to `n` that has one.
    fn last_with_at_most(&self, n: usize) -> *mut ArenaObject {
        // Not unrolled (64 copies of the look on a rare path: see
        // `used::every_class`).
        (1..=core::hint::black_box(n))
            .rev()
            .map(|k| self.nfp2lasta[k].get())
            .find(|a| !a.is_null())
            .unwrap_or(ptr::null_mut())
    }

    /// The first usable arena is about to give a pool: its count drops by
    /// one, which keeps it first; only the fingers move, and it leaves the
    /// list when that was its last free pool.
    ///
    /// # Safety
    /// The usable list is not empty (`meta` held).
    unsafe fn one_pool_less_first(&self) {
        // SAFETY: the head is a live usable arena.
        unsafe {
            let ao = self.usable.get();
            let nf = (*ao).nfreepools as usize;
            debug_assert!(nf > 0);
            if self.nfp2lasta[nf].get() == ao {
                self.nfp2lasta[nf].set(ptr::null_mut());
            }
            if nf > 1 {
                debug_assert!(self.nfp2lasta[nf - 1].get().is_null());
                self.nfp2lasta[nf - 1].set(ao);
            }
            (*ao).nfreepools -= 1;
            if nf == 1 {
                // Wholly allocated: leaves the usable list.
                let next = (*ao).nextarena;
                self.usable.set(next);
                if !next.is_null() {
                    (*next).prevarena = ptr::null_mut();
                }
            }
        }
    }

    /// Usable arena `ao`, not the first, is about to give a pool: it moves
    /// back to the end of the arenas with one pool fewer than it had (or
    /// leaves the list), keeping the order and the fingers.
    ///
    /// # Safety
    /// `ao` is on the usable list and not its first (`meta` held).
    #[cold]
    unsafe fn one_pool_less(&self, ao: *mut ArenaObject) {
        // SAFETY: `ao` and the fingers are live usable arenas.
        unsafe {
            debug_assert!(ao != self.usable.get());
            let nf = (*ao).nfreepools as usize;
            self.leave_finger(ao);
            self.unlink_usable(ao);
            (*ao).nfreepools -= 1;
            if nf > 1 {
                self.link_usable_after(ao, self.last_with_at_most(nf - 1));
                self.nfp2lasta[nf - 1].set(ao);
            }
        }
    }

    /// Puts an empty pool back on its arena's free pools and restores the
    /// usable order; returns the arena when all its pools are now free,
    /// another usable arena follows it (the last one is kept as a spare) and
    /// `keep_free` is false, already off the list, to be released. With
    /// `keep_free` a wholly free arena stays usable, at the end of the list,
    /// until the decay policy gives it back.
    ///
    /// # Safety
    /// `pool` is a live pool of this heap holding no block, on no list
    /// (`meta` held).
    pub(super) unsafe fn return_pool(&self, pool: *mut PoolHeader, keep_free: bool) -> Option<*mut ArenaObject> {
        // SAFETY: the pool's arena object is live; list pointers follow the
        // invariants.
        unsafe {
            self.pools_in_use.set(self.pools_in_use.get() - 1);
            let ao = self.of_pool(pool);
            (*pool).nextpool = (*ao).freepools;
            (*ao).freepools = pool;
            (*ao).free_bits |= (*ao).bit(pool);
            (*ao).nfree_committed += 1;
            self.committed_empty.set(self.committed_empty.get() + 1);
            let lastnf = self.nfp2lasta[(*ao).nfreepools as usize].get();
            if (*ao).nfreepools > 0 {
                self.leave_finger(ao);
            }
            let nf = (*ao).nfreepools as usize + 1;
            (*ao).nfreepools = nf as u32;

            if nf == (*ao).ntotalpools as usize && !(*ao).nextarena.is_null() && !keep_free {
                // Case 1: every pool is free and another usable arena follows:
                // the arena goes back (the last one is kept as a spare).
                self.unlink_usable(ao);
                return Some(ao);
            }
            if nf == 1 {
                // Case 2: the arena had no free pool, so it was on no list; it
                // now has the fewest free pools and goes first.
                self.link_usable_after(ao, ptr::null_mut());
                if self.nfp2lasta[1].get().is_null() {
                    self.nfp2lasta[1].set(ao);
                }
                return None;
            }
            if self.nfp2lasta[nf].get().is_null() {
                self.nfp2lasta[nf].set(ao);
            }
            // Case 4: it was the last arena with its old count, so it is
            // still in order. Case 3: move it to just after the last arena
            // with the old count.
            if ao != lastnf {
                debug_assert!(!(*ao).nextarena.is_null());
                self.unlink_usable(ao);
                self.link_usable_after(ao, lastnf);
            }
            None
        }
    }
}

impl Heap {
    /// Makes an arena the whole usable list, which is empty; false if no
    /// arena can be had (`meta` held).
    pub(super) fn add_first_arena(&self) -> bool {
        debug_assert!(self.arenas.usable.get().is_null());
        // SAFETY: `meta` is held (the caller's duty, documented above).
        let ao = unsafe { self.new_arena() };
        if ao.is_null() {
            return false;
        }
        // SAFETY: a fresh live arena object on no list.
        unsafe {
            (*ao).nextarena = ptr::null_mut();
            (*ao).prevarena = ptr::null_mut();
            self.arenas.usable.set(ao);
            let nf = (*ao).nfreepools as usize;
            debug_assert!(self.arenas.nfp2lasta[nf].get().is_null());
            self.arenas.nfp2lasta[nf].set(ao);
        }
        true
    }

    /// Allocates a new arena and returns its object, or null (`meta` held).
    #[cold]
    unsafe fn new_arena(&self) -> *mut ArenaObject {
        let a = &self.arenas;
        if a.stats_on_new_arena.get() {
            self.print_stats_on_new_arena();
        }
        // SAFETY: table manipulation follows the invariants: the table only
        // moves when no pointer into it is live.
        unsafe {
            if a.unused.get().is_null() && !self.grow_arena_table() {
                return ptr::null_mut();
            }
            let ao = a.unused.get();
            debug_assert!((*ao).address.is_null());
            let alloc = a.allocator();
            let mut address = (alloc.alloc)(alloc.ctx, ARENA_SIZE).cast::<u8>();
            // The region's arenas are known by the region (`ownership.rs`);
            // the map holds the others.
            if !address.is_null() && !region::contains(address) && !ARENA_MAP.mark(address.addr(), true) {
                (alloc.free)(alloc.ctx, address.cast(), ARENA_SIZE);
                address = ptr::null_mut();
            }
            if address.is_null() {
                return ptr::null_mut(); // `ao` stays at the head of the unused list
            }
            // Blocks come back from callers with their own (possibly
            // narrowed) provenance; the heap reaches headers through this.
            let _ = address.expose_provenance();
            if region::contains(address) {
                // Every arena of the region names its heap, a heap that is
                // not a thread heap included (`NOT_THREAD_TAG`, never null):
                // the slot may have served another heap before. The address
                // is the base of a region arena this heap now owns, and the
                // tag is the one it stamps on its pools.
                region::set_owner(address, self.owner_tag());
            }
            a.unused.set((*ao).nextarena);
            (*ao).address = address;
            (*ao).allocator = alloc;
            (*ao).purgeable = alloc.is_os();
            (*ao).decommitted = 0;
            (*ao).free_bits = 0;
            (*ao).stale_bits = 0;
            (*ao).stale_free = false;
            (*ao).nfree_committed = 0;
            a.ncurrent.set(a.ncurrent.get() + 1);
            a.ntimes_allocated.set(a.ntimes_allocated.get() + 1);
            a.highwater.set(a.highwater.get().max(a.ncurrent.get()));
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

    /// `PYTHONMALLOCSTATS`'s table before each new arena. Out of line: the
    /// statistics take 17 KiB of stack, which every thread making an arena
    /// would otherwise have probed, and made resident, in `new_arena`.
    #[cold]
    #[inline(never)]
    fn print_stats_on_new_arena(&self) {
        crate::stats::print_to_stderr(&self.stats_locked());
    }

    /// Doubles the arena table and puts the new objects on the unused list.
    unsafe fn grow_arena_table(&self) -> bool {
        let a = &self.arenas;
        debug_assert!(a.usable.get().is_null() && a.unused.get().is_null());
        let max = a.max.get();
        let n = if max == 0 { INITIAL_ARENA_OBJECTS } else { max << 1 };
        if n <= max {
            return false; // overflow
        }
        let Some(bytes) = (n as usize).checked_mul(core::mem::size_of::<ArenaObject>()) else {
            return false;
        };
        // SAFETY: the table is null or from raw::meta::realloc, and no pointer into
        // it is live (see the invariant).
        let table = unsafe { raw::meta::realloc(a.table.get().cast(), bytes) }.cast::<ArenaObject>();
        if table.is_null() {
            return false;
        }
        a.table.set(table);
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
                    stale_bits: 0,
                    stale_free: false,
                })
            };
        }
        // SAFETY: max < n, inside the new table.
        a.unused.set(unsafe { table.add(max as usize) });
        a.max.set(n);
        true
    }

    /// Gives an arena (on no list) back to the allocator that made it and
    /// puts its object on the unused list.
    ///
    /// # Safety
    /// `ao` is a live arena object of this heap, on no list, whose pools
    /// hold nothing anyone uses; `meta` is held.
    pub(super) unsafe fn release_arena(&self, ao: *mut ArenaObject) {
        let a = &self.arenas;
        // SAFETY: per the contract.
        unsafe {
            let address = (*ao).address;
            if !region::contains(address) {
                ARENA_MAP.mark(address.addr(), false);
            }
            let alloc = (*ao).allocator;
            (alloc.free)(alloc.ctx, address.cast(), ARENA_SIZE);
            a.committed_empty.set(a.committed_empty.get() - (*ao).nfree_committed as usize);
            (*ao).address = ptr::null_mut();
            (*ao).nextarena = a.unused.get();
            a.unused.set(ao);
            a.ncurrent.set(a.ncurrent.get() - 1);
        }
    }

    /// Gives back every wholly free arena on the usable list, the spare
    /// included (`meta` held). Returns the bytes.
    pub(super) fn release_free_arenas(&self) -> usize {
        let mut bytes = 0;
        let mut ao = self.arenas.usable.get();
        // SAFETY: usable-list entries are live arena objects; `meta` is held.
        unsafe {
            while !ao.is_null() {
                let next = (*ao).nextarena;
                if (*ao).nfreepools == (*ao).ntotalpools {
                    self.arenas.leave_finger(ao);
                    self.arenas.unlink_usable(ao);
                    self.release_arena(ao);
                    bytes += ARENA_SIZE;
                }
                ao = next;
            }
        }
        bytes
    }

    /// For `Drop`: every arena back to its allocator, and the table freed.
    pub(super) fn release_all_arenas(&mut self) {
        let table = self.arenas.table.get();
        for i in 0..self.arenas.max.get() as usize {
            // SAFETY: i < max; the heap is going away, so nothing can use
            // its arenas any more (exclusive access).
            unsafe {
                let ao = table.add(i);
                if !(*ao).address.is_null() {
                    self.release_arena(ao);
                }
            }
        }
        // SAFETY: the table came from raw::meta::realloc (or is null).
        unsafe { raw::meta::free(table.cast()) };
    }
}
