//! Blocks freed by other threads, and the owner tag that sends them here.
//!
//! A thread heap stamps its address (its [`OwnerTag`]) on its pools and in
//! the arena region's owner table. Another thread freeing one of its blocks
//! reads the owner ([`Heap::block_owner`]) and pushes the block onto the
//! owner's queue with one compare-and-swap ([`Heap::push_remote`]); the
//! owner frees the queued blocks when it next needs a pool
//! ([`Heap::drain_remote`]).

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use super::Heap;
use crate::pool::{header_of, launder, OwnerTag, NOT_THREAD_TAG};
use crate::region;
use crate::sync::Isolated;

/// Invariants: `tag` is null (a heap that is not a thread heap, which
/// stamps [`NOT_THREAD_TAG`]: see [`Heap::owner_tag`]), or this heap's own
/// address (with provenance
/// over the thread heap around it), set before the heap takes its first
/// arena and never changed. `queue` heads a list, linked through the blocks'
/// first words, of blocks of this heap that their users gave up; anyone
/// pushes, only the owner takes. The queue is on cache lines of its own, so
/// that threads pushing to it do not pull the owner's hot fields away.
pub(super) struct RemoteFrees {
    /// Null, not `NOT_THREAD_TAG`, so that a new heap is all zeroes (a
    /// static heap stays in `.bss`).
    tag: Cell<OwnerTag>,
    queue: Isolated<AtomicPtr<u8>>,
}

impl RemoteFrees {
    pub(super) const fn new() -> RemoteFrees {
        RemoteFrees { tag: Cell::new(ptr::null()), queue: Isolated::new(AtomicPtr::new(ptr::null_mut())) }
    }
}

impl Heap {
    /// Makes this heap stamp `tag` (its own address, as a pointer whose
    /// provenance covers the thread heap around it) on its pools, so that
    /// other threads can send it the blocks they free.
    ///
    /// # Safety
    /// `tag` points to this heap, which stays at that address for as long as
    /// any of its pools live, and has no arena yet.
    pub(crate) unsafe fn set_owner_tag(&self, tag: *const Heap) {
        debug_assert_eq!(self.arenas.ncurrent.get(), 0);
        debug_assert!(ptr::eq(tag, self));
        self.remote.tag.set(tag.cast());
    }

    /// The owner tag this heap stamps on its pools and slots: its address
    /// if it is a thread heap, else [`NOT_THREAD_TAG`]; never null.
    #[inline]
    pub(crate) fn owner_tag(&self) -> OwnerTag {
        let t = self.remote.tag.get();
        if t.is_null() {
            NOT_THREAD_TAG
        } else {
            t
        }
    }

    /// The owner stamped on the pool of a live block ([`NOT_THREAD_TAG`] for
    /// pools of heaps that are not thread heaps; never null). Blocks above 512 bytes are routed by
    /// `region::SEGMENTS.owner` instead.
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
        // SAFETY: the pool of a live block is live; its owner changes only
        // while the pool is empty, and tags are heap addresses (or
        // NOT_THREAD_TAG).
        unsafe { (*header_of(p)).owner.cast() }
    }

    /// Sends `p` to its owning heap's queue of blocks freed by other threads.
    ///
    /// # Safety
    /// `owner` is the live thread heap stamped on `p`'s pool; `p` is live
    /// and not used again.
    pub(crate) unsafe fn push_remote(owner: *const Heap, p: *mut u8) {
        // SAFETY: thread heaps are never freed (owner is live, the
        // contract); the queue is an atomic anyone may push to.
        let q = unsafe { &*(*owner).remote.queue };
        let mut head = q.load(Ordering::Relaxed);
        loop {
            // SAFETY: p is a block its user gave up: its first word is ours.
            unsafe { p.cast::<*mut u8>().write(head) };
            match q.compare_exchange_weak(head, p, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Frees the blocks other threads sent this heap (owner only). Returns
    /// how many.
    pub(crate) fn drain_remote(&self) -> usize {
        let q = &*self.remote.queue;
        if q.load(Ordering::Relaxed).is_null() {
            return 0;
        }
        let mut p = q.swap(ptr::null_mut(), Ordering::Acquire);
        let mut n = 0;
        while !p.is_null() {
            // SAFETY: every block on the queue is a block of this heap that
            // its user gave up (invariant); its first word links the queue.
            unsafe {
                let next = p.cast::<*mut u8>().read();
                if region::SEGMENTS.contains(p) {
                    self.free_big(p);
                } else {
                    self.free_to_pool(launder(p));
                }
                p = next;
            }
            n += 1;
        }
        n
    }
}
