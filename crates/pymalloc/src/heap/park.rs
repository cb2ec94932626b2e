//! Parked pools: a sparse pool's first page given back, its header kept
//! apart.
//!
//! CPython's layout keeps a pool's header on the pool's first page. After a
//! peak, a pool whose surviving blocks all lie on its later pages would keep
//! that page resident for 48 bytes: in heaps of scattered records about a
//! third of what a process kept after a purge (docs/pool-headers.md). A
//! purge (`pages.rs`) *parks* such a pool: its header is copied into its
//! arena's array of parked headers, the blocks of its first page leave its
//! free list, the pool leaves its used list, and the first page goes back to
//! the OS.
//!
//! Nothing on the hot paths changes. A parked pool is on no used list, so no
//! allocation reads its header. A free into it reads the count of the given
//! back page, 0, which no pool holding a live block has: `free_to_pool`
//! takes its out-of-line path (it has written the freed block at the head
//! of the zeroed header's list first), and `pool_changes_list` unparks the
//! pool ([`Heap::unpark_for_free`]) before it goes on as for any pool. A
//! class that runs out of used pools unparks one of its parked pools before
//! it takes a new one ([`Heap::unpark_one`]), as CPython would have gone on
//! allocating from it. Whoever reads headers from outside (statistics,
//! `validate`, the floor) reads a parked pool's copy ([`Arenas::header`]).
//!
//! Invariants, for pool `i` of arena object `ao` with bit `i` of
//! `ao.parked` set (all written under `meta`):
//! * the arena is a purgeable arena of the arena region, so a block's class
//!   and owner come from the region's tables, never from the header; pools
//!   span two pages or more;
//! * `ao.parked_headers[i]` is the pool's header: its count is at least 1,
//!   its free list is not empty and none of its blocks overlaps the first
//!   page; the pool is on no used list;
//! * every carved block overlapping the first page is free and on no list;
//!   the pool's own header was zeroed and its first page given back (if
//!   the OS refused, as for locked memory, the page stays, zeroed header
//!   and all): it reads as zeroes until a free into the pool writes its
//!   free-list head there;
//! * `Arenas::pages_out` counts the first page, `Arenas::parked[c]` the
//!   pool, `Arenas::pools_in_use` counts it as in use.

use core::ptr;

use super::arenas::{ArenaObject, Arenas};
use super::pages::{overlaps_out, FreeBlocks};
use super::Heap;
use crate::geometry::{class_size, MAX_POOLS_IN_ARENA, POOL_OVERHEAD, POOL_SIZE};
use crate::pool::PoolHeader;
use crate::{os, raw, region};

/// Carved blocks of class size `size` that overlap a pool's first page, of
/// `carved` carved ones.
fn first_page_blocks(page: usize, size: usize, carved: usize) -> usize {
    (page - POOL_OVERHEAD).div_ceil(size).min(carved)
}

impl Heap {
    /// Parks `pool` if its first page holds no block in use and the rest of
    /// its free list can do without that page's blocks; returns the bytes
    /// given back (the page, or 0).
    ///
    /// # Safety
    /// `pool` is a used pool of class `c` of this heap on its used list, in
    /// a purgeable arena whose object is `ao`; pools span two or more pages
    /// of `page` bytes; `meta` is held.
    pub(super) unsafe fn try_park(&self, ao: *mut ArenaObject, pool: *mut PoolHeader, c: usize, page: usize) -> usize {
        if !region::contains(pool.cast()) {
            return 0;
        }
        // SAFETY: per the contract: the pool and its arena object are live
        // and ours, `meta` is held; free-list entries are its blocks.
        unsafe {
            if (*pool).count() == 0 {
                return 0; // the retained head: nothing to park for
            }
            let size = class_size(c);
            let carved = ((*pool).nextoffset as usize).min(POOL_SIZE).saturating_sub(POOL_OVERHEAD) / size;
            let free = FreeBlocks::of(pool.cast(), pool, size);
            let out = (*pool).pages_out;
            // Free: on the free list, or on a page out already (a block
            // that straddles into the second page).
            let is_free = |k: usize| free.contains(k) || overlaps_out(out, POOL_OVERHEAD + k * size, size);
            if !(0..first_page_blocks(page, size, carved)).all(is_free) {
                return 0; // a block in use (or cached) lies on it
            }
            if (*ao).parked_headers.is_null() {
                let headers = raw::meta::zeroed(MAX_POOLS_IN_ARENA * size_of::<PoolHeader>());
                if headers.is_null() {
                    return 0;
                }
                (*ao).parked_headers = headers.cast();
            }
            // The free list keeps a block beyond the first page, or nothing
            // is done.
            if !self.unlink_page_blocks(pool, 1, page, size) {
                return 0;
            }
            let i = (pool.addr() - (*ao).first_pool().addr()) / POOL_SIZE;
            self.used.unlink(pool, c);
            ptr::copy_nonoverlapping(pool, (*ao).parked_headers.add(i), 1);
            // The pool's own count must read 0 whether or not the page goes
            // back (`madvise` refuses locked memory): zeroed here, it does.
            ptr::write_bytes(pool, 0, 1);
            (*ao).parked |= 1u64 << i;
            let a = &self.arenas;
            a.parked[c].set(a.parked[c].get() + 1);
            a.pages_out.set(a.pages_out.get() + 1);
            if os::discard(pool.cast(), page) {
                page
            } else {
                0
            }
        }
    }

    /// A free into `pool` read its count as 0: if the pool is parked, it
    /// comes back ([`Heap::unpark`]) with the freed block, which
    /// `free_to_pool` left at the head of the zeroed header's free list,
    /// at the head of its list. Returns the pool's count and free-list head
    /// from before the free, as `pool_changes_list` takes them; None if the
    /// pool is not parked.
    ///
    /// # Safety
    /// `pool` is the pool of a block just freed by `free_to_pool`, which
    /// read its count as 0.
    #[cold]
    pub(super) unsafe fn unpark_for_free(&self, pool: *mut PoolHeader) -> Option<(u32, *mut u8)> {
        let _meta = self.meta.lock();
        let ao = self.arenas.holding(pool);
        if ao.is_null() {
            return None;
        }
        // SAFETY: the pool lies in this live arena; `meta` is held.
        unsafe {
            let i = (pool.addr() - (*ao).first_pool().addr()) / POOL_SIZE;
            if (*ao).parked & (1u64 << i) == 0 {
                return None;
            }
            let freed = (*pool).freeblock;
            Some(self.unpark(ao, i, pool, freed))
        }
    }

    /// Unparks a parked pool of class `c`, if there is one, onto the used
    /// list of `c`; true if it did. The test is inline: a class with no
    /// parked pool (nearly always) costs its allocation's slow path a load.
    #[inline(always)]
    pub(super) fn unpark_one(&self, c: usize) -> bool {
        self.arenas.parked[c].get() != 0 && self.unpark_one_slow(c)
    }

    #[cold]
    #[inline(never)]
    fn unpark_one_slow(&self, c: usize) -> bool {
        let _meta = self.meta.lock();
        let mut done = false;
        self.arenas.for_each_mut(|ao| {
            // SAFETY: a live arena object of this heap, `meta` held; a set
            // bit of `parked` names a pool whose copy is in the array.
            unsafe {
                let mut bits = (*ao).parked;
                while !done && bits != 0 {
                    let i = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if usize::from((*(*ao).parked_headers.add(i)).szidx) == c {
                        let pool = (*ao).first_pool().add(i * POOL_SIZE).cast::<PoolHeader>();
                        self.unpark(ao, i, pool, ptr::null_mut());
                        done = true;
                    }
                }
            }
        });
        done
    }

    /// Brings parked pool `i` of `ao`, at `pool`, back: its header from its
    /// copy, the blocks of its first page (those on no page out) back on its
    /// free list ahead of the rest, and `freed` (if not null) ahead of them;
    /// the pool goes back on its used list. Returns its count and the head
    /// of its list without `freed`.
    ///
    /// # Safety
    /// Pool `i` of the live arena object `ao` is parked, at `pool`; `freed`
    /// is null or a block of it being freed; `meta` is held.
    unsafe fn unpark(&self, ao: *mut ArenaObject, i: usize, pool: *mut PoolHeader, freed: *mut u8) -> (u32, *mut u8) {
        // SAFETY: per the contract; writing the header faults the first
        // page back in, zeroed; the blocks written are carved blocks of the
        // pool on that page.
        unsafe {
            ptr::copy_nonoverlapping((*ao).parked_headers.add(i), pool, 1);
            let c = usize::from((*pool).szidx);
            let size = class_size(c);
            let page = os::page_size();
            let carved = ((*pool).nextoffset as usize).min(POOL_SIZE).saturating_sub(POOL_OVERHEAD) / size;
            let out = (*pool).pages_out;
            let mut head = (*pool).freeblock;
            for k in (0..first_page_blocks(page, size, carved)).rev() {
                let off = POOL_OVERHEAD + k * size;
                if overlaps_out(out, off, size) {
                    continue; // comes back with its page out
                }
                let b = pool.cast::<u8>().add(off);
                b.cast::<*mut u8>().write(head);
                head = b;
            }
            let last = head;
            if !freed.is_null() {
                freed.cast::<*mut u8>().write(head);
                head = freed;
            }
            (*pool).freeblock = head;
            (*ao).parked &= !(1u64 << i);
            if (*ao).parked == 0 {
                // No copy left to keep: the array goes until the next park.
                raw::meta::free((*ao).parked_headers.cast());
                (*ao).parked_headers = ptr::null_mut();
            }
            let a = &self.arenas;
            a.parked[c].set(a.parked[c].get() - 1);
            a.pages_out.set(a.pages_out.get() - 1);
            self.used.append(pool);
            ((*pool).count(), last)
        }
    }
}

impl Arenas {
    /// The live arena object whose arena holds `pool`, found by address (a
    /// parked pool's own header says nothing); null if none does. `meta`
    /// held.
    fn holding(&self, pool: *const PoolHeader) -> *mut ArenaObject {
        let mut found = ptr::null_mut();
        self.for_each_mut(|ao| {
            // SAFETY: a live arena object (for_each_mut).
            let (lo, hi) = unsafe { ((*ao).first_pool().addr(), (*ao).pool_address.addr()) };
            if (lo..hi).contains(&pool.addr()) {
                found = ao;
            }
        });
        found
    }

    /// The header of the carved pool at `pool`: its own, or its copy while
    /// it is parked. `meta` held.
    pub(super) fn header_at(&self, pool: *mut PoolHeader) -> *mut PoolHeader {
        let ao = self.holding(pool);
        if ao.is_null() {
            return pool;
        }
        // SAFETY: a live arena object holding the pool.
        unsafe {
            let i = (pool.addr() - (*ao).first_pool().addr()) / POOL_SIZE;
            Arenas::header(&*ao, i, pool)
        }
    }

    /// Calls `f` with every live arena object (`meta` held).
    pub(super) fn for_each_mut(&self, mut f: impl FnMut(*mut ArenaObject)) {
        let table = self.table.get();
        for k in 0..self.max.get() as usize {
            // SAFETY: k < max; every table slot is initialised.
            let ao = unsafe { table.add(k) };
            // SAFETY: as above.
            if !unsafe { (*ao).address.is_null() } {
                f(ao);
            }
        }
    }
}
