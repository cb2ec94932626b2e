//! The used-pool lists (CPython's `usedpools`): per size class, the pools
//! that have a free block, so that a request finds its block in O(1).

use core::ptr;

use crate::cell_array::CellArray;
use crate::geometry::NB_SMALL_SIZE_CLASSES;
use crate::pool::PoolHeader;

/// Invariant: `first[c]..last[c]`, linked through the pools' `nextpool` and
/// `prevpool`, lists exactly the pools of class `c` with `0 < count <
/// num_blocks(c)`, and perhaps, at its head, one pool with `count == 0`
/// that emptied there and was kept ("retained"; only in a heap that
/// retains: it counts as in use, and `Heap::purge` gives it back). Only the
/// owner touches the lists.
pub(super) struct UsedPools {
    pub(super) first: CellArray<*mut PoolHeader, NB_SMALL_SIZE_CLASSES>,
    pub(super) last: CellArray<*mut PoolHeader, NB_SMALL_SIZE_CLASSES>,
}

impl UsedPools {
    pub(super) const fn new() -> UsedPools {
        UsedPools {
            first: CellArray::new([ptr::null_mut(); NB_SMALL_SIZE_CLASSES]),
            last: CellArray::new([ptr::null_mut(); NB_SMALL_SIZE_CLASSES]),
        }
    }

    /// The first pool of class `c`, or null.
    #[inline(always)]
    pub(super) fn head(&self, c: usize) -> *mut PoolHeader {
        self.first[c].get()
    }

    /// Makes `pool` the whole list of class `c`, which was empty.
    ///
    /// # Safety
    /// `pool` is a live pool on no list; the list of `c` is empty.
    pub(super) unsafe fn set_only(&self, c: usize, pool: *mut PoolHeader) {
        // SAFETY: pool is live and ours (the contract).
        unsafe {
            (*pool).nextpool = ptr::null_mut();
            (*pool).prevpool = ptr::null_mut();
        }
        self.first[c].set(pool);
        self.last[c].set(pool);
    }

    /// Takes `pool` off the list of class `c`.
    ///
    /// # Safety
    /// `pool` is on the list of `c`; its neighbours are live pools.
    pub(super) unsafe fn unlink(&self, pool: *mut PoolHeader, c: usize) {
        // SAFETY: `pool` and its neighbours are live pools (the contract).
        unsafe {
            let (next, prev) = ((*pool).nextpool, (*pool).prevpool);
            if prev.is_null() {
                self.first[c].set(next);
            } else {
                (*prev).nextpool = next;
            }
            if next.is_null() {
                self.last[c].set(prev);
            } else {
                (*next).prevpool = prev;
            }
        }
    }

    /// Appends `pool` to the list of its class, as CPython's
    /// `insert_to_usedpool` does for a full pool that got a block back.
    ///
    /// # Safety
    /// `pool` is a live pool on no list, initialised for its class.
    pub(super) unsafe fn append(&self, pool: *mut PoolHeader) {
        // SAFETY: `pool` and the list's tail are live pools (the contract
        // and the invariant).
        unsafe {
            let c = (*pool).szidx as usize;
            let last = self.last[c].get();
            (*pool).nextpool = ptr::null_mut();
            (*pool).prevpool = last;
            if last.is_null() {
                self.first[c].set(pool);
            } else {
                (*last).nextpool = pool;
            }
            self.last[c].set(pool);
        }
    }
}

/// Every size class, as a range the compiler does not unroll: the loops
/// over all classes run on rare paths (an arena about to be taken, a
/// cache flushed, pages given back), where 32 or 64 copies of their bodies
/// took room in the preload library's one window of resident text
/// (`pymalloc-preload`'s `build.rs`).
pub(super) fn every_class() -> core::ops::Range<usize> {
    0..core::hint::black_box(NB_SMALL_SIZE_CLASSES)
}
