//! Pool state transitions, out of line from the hot paths: a used pool
//! runs out of free blocks (it fills), a full pool gets a block back, a
//! pool empties, and a class with no used pool takes a new one.
//!
//! A pool is *used* (on its class's used list), *full* (on no list) or
//! *empty* (on its arena's free pools, or decommitted); see
//! [`PoolHeader`](crate::pool::PoolHeader) for the invariants each state
//! keeps.

use core::ptr;

use super::Heap;
use crate::pool::{self, PoolHeader};

/// The pool a class that needs one would get ([`Heap::alloc_from_new_pool`]).
enum NextPool {
    /// A free pool whose pages are resident.
    Warm,
    /// A pool never used, or whose pages went back to the OS.
    Cold,
    /// None: a new arena is needed.
    InNewArena,
}

impl Heap {
    /// The free list of `pool` ran out: carve its next virgin blocks, or
    /// bring back the pages it gave back (`pages.rs`), or if there is
    /// neither the pool is full and leaves the used list.
    ///
    /// # Safety
    /// `pool` is the live head of the used list of `szidx`, with an empty
    /// free list; `block` is one of its blocks.
    #[inline(never)]
    pub(super) unsafe fn pool_exhausted(&self, pool: *mut PoolHeader, szidx: usize, block: *mut u8) {
        // SAFETY: per the contract.
        unsafe {
            if !Self::carve_virgin(pool, szidx, block) && ((*pool).pages_out == 0 || !self.restore_pages(pool, szidx)) {
                self.used.unlink(pool, szidx);
            }
        }
    }

    /// No used pool of class `szidx`: take a free pool from the first usable
    /// arena (making an arena if there is none) and start it for that class.
    /// Blocks other threads sent back are freed first; they may refill it.
    #[cold]
    #[inline(never)]
    pub(super) fn alloc_from_new_pool(&self, szidx: usize) -> *mut u8 {
        if self.drain_remote() > 0 && !self.used.head(szidx).is_null() {
            return self.alloc_from_pool(szidx);
        }
        if !self.releases_head.get() {
            match self.next_pool() {
                // A new arena is next: first give back cached blocks and
                // retained pools, which may leave empty pools that can serve
                // instead.
                NextPool::InNewArena => self.release_held_pools(),
                // A pool whose pages are not resident is next: a retained
                // pool of another class serves instead, its pages already
                // in (a program that moves from one size to the next holds
                // the largest phase's pools, not their sum).
                NextPool::Cold => {
                    let bp = self.alloc_from_retained_pool(szidx);
                    if !bp.is_null() {
                        return bp;
                    }
                }
                NextPool::Warm => {}
            }
        }
        let _meta = self.meta.lock();
        if self.arenas.usable.get().is_null() && !self.add_first_arena() {
            return ptr::null_mut();
        }
        // SAFETY: the usable list is not empty and `meta` is held; the pool
        // taken is live, ours, and on no list.
        unsafe {
            let pool = self.arenas.take_pool();
            (*pool).owner = self.owner_tag();
            // The used list of this class was empty; the pool is all of it.
            self.used.set_only(szidx, pool);
            if (*pool).szidx as usize == szidx {
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

    /// The rare cases of [`Heap::free_to_pool`], after the block went on
    /// the free list: the pool empties (`count == 1`), is left one block in
    /// use (`count == 2`), or it was full (`last` null) and goes back on its
    /// used list.
    ///
    /// # Safety
    /// `pool` is the live pool of the block just freed; `count` and `last`
    /// are its count and free-list head from before.
    ///
    /// `extern "C"` (it cannot unwind) for the reason `thread::free_foreign`
    /// is: the domains' `free` reaches it by a jump, without a stack frame.
    #[cold]
    #[inline(never)]
    pub(super) unsafe extern "C" fn pool_changes_list(&self, pool: *mut PoolHeader, count: u32, last: *mut u8) {
        // SAFETY: per the contract, `pool` is live and ours.
        unsafe {
            debug_assert!(count > 0, "a free into a pool with no block in use");
            if count <= 1 {
                let c = (*pool).szidx as usize;
                if !self.releases_head.get() && self.used.head(c) == pool {
                    // The head pool of its class empties: keep it there
                    // ("retained"), so that a loop allocating and freeing one
                    // block does not give a pool back and take it again each
                    // time. It still counts as a pool in use.
                    (*pool).set_count(0);
                    self.retained.set(self.retained.get() | 1u64 << c);
                } else {
                    // The pool becomes empty: its count drops to 0 together
                    // with the arena's bookkeeping, under the lock, so that
                    // statistics never see a pool neither in use nor free.
                    self.pool_emptied(pool);
                }
                self.give_back_class_cache(c);
                return;
            }
            (*pool).set_count(count - 1);
            if last.is_null() {
                // The pool was full: back to the used list, at the end, as
                // CPython's insert_to_usedpool does.
                self.used.append(pool);
            }
            let c = (*pool).szidx as usize;
            if count == 2 && self.cache().cached(c) != 0 {
                // One block left, which may be a cached one: the pool could
                // never empty while the cache holds it (`cache.rs`).
                self.give_back_class_cache(c);
            }
        }
    }

    /// A pool of class `c` emptied, or was left one block in use: the
    /// class's cached blocks go back too, and the class closes
    /// (`cache.rs`): they may be all that holds their pools, and the frees
    /// that follow are likely a structure being torn down.
    fn give_back_class_cache(&self, c: usize) {
        if !self.cache().enabled() {
            return;
        }
        if self.cache().cached(c) != 0 {
            self.flush_cache_class(c);
        }
        self.cache().close(c);
    }

    /// A pool just became empty: move it from its used list to its arena's
    /// free pools, then restore the usable-arena order, or release the arena,
    /// and give pages back as the purge policy says.
    ///
    /// # Safety
    /// `pool` is a live pool of this heap on its used list (a pool of two or
    /// more blocks holding one block is not full), with no block in use.
    #[cold]
    pub(super) unsafe fn pool_emptied(&self, pool: *mut PoolHeader) {
        let _meta = self.meta.lock();
        // SAFETY: per the contract; `meta` is held.
        unsafe {
            (*pool).set_count(0);
            self.used.unlink(pool, (*pool).szidx as usize);
            if self.forget_pages_out(pool) {
                // Its free list lacks the blocks of its pages out: it is set
                // up afresh when next taken, as a pool never used.
                (*pool).szidx = crate::pool::DUMMY_SIZE_IDX;
            }
            if let Some(ao) = self.arenas.return_pool(pool, self.purge.keeps_free_arenas()) {
                self.release_arena(ao);
            }
        }
        self.apply_purge_policy();
    }

    /// What kind of pool [`Arenas::take_pool`](super::arenas) would take
    /// now (read under `meta`: the decay sweep of another thread may release
    /// arenas and decommit pools).
    fn next_pool(&self) -> NextPool {
        let _meta = self.meta.lock();
        if self.arenas.usable.get().is_null() {
            NextPool::InNewArena
        } else if self.arenas.committed_empty.get() == 0 {
            NextPool::Cold
        } else {
            NextPool::Warm
        }
    }

    /// Takes a retained pool (an empty head pool another class keeps) for
    /// class `szidx` and allocates from it, or returns null if no class has
    /// one. The pool passes from one used list to the other under `meta`:
    /// it stays in use, its pages resident. Looks only at the classes the
    /// `retained` hint names, and clears the stale ones.
    ///
    /// A class whose pool went to another this way takes a pool of its own
    /// the next time (its `robbed` bit), so that two classes that take
    /// turns with one block each do not trade one pool on every allocation.
    /// The owner, without `meta`.
    #[cold]
    #[inline(never)]
    fn alloc_from_retained_pool(&self, szidx: usize) -> *mut u8 {
        let robbed = self.robbed.get();
        if robbed & 1u64 << szidx != 0 {
            self.robbed.set(robbed & !(1u64 << szidx));
            return ptr::null_mut();
        }
        let mut hint = self.retained.get();
        while hint != 0 {
            let c = hint.trailing_zeros() as usize;
            hint &= hint - 1;
            let pool = self.used.head(c);
            // SAFETY: a used-list head is a live pool of this heap.
            if pool.is_null() || unsafe { (*pool).count() } != 0 {
                continue;
            }
            self.retained.set(hint);
            self.robbed.set(robbed | 1u64 << c);
            let _meta = self.meta.lock();
            // SAFETY: `pool` is a live pool of this heap at the head of the
            // list of `c`, with no block in use, cached or queued (count 0,
            // and the caller drained the remote queue); the list of `szidx`
            // is empty (the caller's). `meta` is held, so the decay sweep
            // sees the pool on one list or the other.
            unsafe {
                self.used.unlink(pool, c);
                // Set up afresh below, as a pool never used.
                self.forget_pages_out(pool);
                self.used.set_only(szidx, pool);
                return pool::init_for_class(pool, szidx);
            }
        }
        self.retained.set(0);
        ptr::null_mut()
    }

    /// Gives cached blocks back to their pools and retained empty pools back
    /// to their arenas (the owner, without `meta`).
    pub(super) fn release_held_pools(&self) {
        self.flush_cache_shared();
        for c in super::used::every_class() {
            let head = self.used.head(c);
            // SAFETY: a used-list head is a live pool of this heap.
            if !head.is_null() && unsafe { (*head).count() } == 0 {
                // SAFETY: a retained pool: on its used list, empty.
                unsafe { self.pool_emptied(head) };
            }
        }
    }
}
