//! Blocks freed by other threads, and the owner tag that sends them here.
//!
//! A thread heap stamps its address (its [`OwnerTag`]) on its pools and in
//! the arena region's owner table. Another thread freeing one of its blocks
//! reads the owner ([`Heap::block_owner`]) and pushes the block onto the
//! owner's queue with one compare-and-swap ([`Heap::push_remote`]); the
//! owner frees the queued blocks when it next needs a pool
//! ([`Heap::drain_remote`]).
//!
//! A thread sends other heaps' pool blocks in batches ([`Outbox`],
//! [`Heap::send_remote`]): the blocks it frees for one owner are linked in
//! its own heap's outbox and go onto the owner's queue with one
//! compare-and-swap per [`OUTBOX_BLOCKS`], when a block of another owner
//! comes, or when the thread flushes ([`Heap::flush_outbox`]: at its exit,
//! and before it purges or reads statistics). A thread that frees before
//! it ever allocates takes a heap for this (`thread.rs`). One swap per
//! block made the queue's head a line the freeing threads and the owner
//! fought over: in xmalloc-test (two threads allocate 64-byte blocks, two
//! others free them) 75% of the remote free's samples were on that swap
//! (docs/every-size.md, twenty-fifth pass).

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
    out: Outbox,
    /// Taken by a thread that had freed other heaps' blocks before it
    /// ever allocated, only to carry its outbox (`thread.rs`): nothing
    /// has been allocated from it. Owner only.
    outbox_only: Cell<bool>,
}

impl RemoteFrees {
    pub(super) const fn new() -> RemoteFrees {
        RemoteFrees {
            tag: Cell::new(ptr::null()),
            queue: Isolated::new(AtomicPtr::new(ptr::null_mut())),
            out: Outbox {
                owner: Cell::new(ptr::null()),
                head: Cell::new(ptr::null_mut()),
                tail: Cell::new(ptr::null_mut()),
                count: Cell::new(0),
            },
            outbox_only: Cell::new(false),
        }
    }
}

/// The blocks an outbox sends at once: at most 31 pool blocks (15.5 KiB)
/// wait in a thread that stops freeing, and one swap on the owner's queue
/// serves 32 frees.
pub(crate) const OUTBOX_BLOCKS: u32 = 32;

/// Pool blocks of one other thread heap that this heap's owner freed and
/// has not sent yet. Written by the owner of the heap it is in, only.
///
/// Invariants: `owner` is null and `count` 0 (empty), or `owner` is a
/// thread heap other than this one, and `head` heads a list of `count`
/// (1 to [`OUTBOX_BLOCKS`] - 1 between calls) of its pool blocks that their
/// users gave up, linked through their first words, ending at `tail`,
/// whose first word is null. Until sent they count as in use in their
/// pools (so none of those pools can empty and change hands).
struct Outbox {
    owner: Cell<*const Heap>,
    head: Cell<*mut u8>,
    tail: Cell<*mut u8>,
    count: Cell<u32>,
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
        // SAFETY: the contract: p alone is a list of owner's blocks.
        unsafe { Heap::push_remote_list(owner, p, p) }
    }

    /// Sends `p`, a pool block of heap `owner`, through this heap's outbox
    /// (owner of this heap only). Returns the owner and the count of a
    /// batch it sent to its queue, for the caller to count
    /// (`thread_heaps::note_remote_frees`).
    ///
    /// # Safety
    /// `owner` is the live thread heap stamped on `p`'s pool, not this
    /// heap; `p` is live and not used again; the calling thread owns this
    /// heap.
    #[inline]
    pub(crate) unsafe fn send_remote(&self, owner: *const Heap, p: *mut u8) -> Option<(*const Heap, u32)> {
        debug_assert!(!ptr::eq(owner, self));
        let o = &self.remote.out;
        if o.owner.get() == owner {
            // SAFETY: p is a block its user gave up: its first word is ours;
            // the outbox lists owner's blocks (invariant).
            unsafe { p.cast::<*mut u8>().write(o.head.get()) };
            o.head.set(p);
            let n = o.count.get() + 1;
            o.count.set(n);
            return if n >= OUTBOX_BLOCKS { self.flush_outbox() } else { None };
        }
        let sent = self.flush_outbox();
        // SAFETY: as above; p starts a list of one.
        unsafe { p.cast::<*mut u8>().write(ptr::null_mut()) };
        o.owner.set(owner);
        o.head.set(p);
        o.tail.set(p);
        o.count.set(1);
        sent
    }

    /// True if the heap was taken only to carry its thread's outbox, and
    /// nothing has been allocated from it (owner only).
    #[inline]
    pub(crate) fn outbox_only(&self) -> bool {
        self.remote.outbox_only.get()
    }

    /// Marks the heap as taken only for its outbox, or not (owner only).
    pub(crate) fn set_outbox_only(&self, only: bool) {
        self.remote.outbox_only.set(only);
    }

    /// Sends what this heap's outbox holds to its owner's queue (owner of
    /// this heap only). Returns that owner and the count, if any.
    pub(crate) fn flush_outbox(&self) -> Option<(*const Heap, u32)> {
        let o = &self.remote.out;
        let owner = o.owner.get();
        if owner.is_null() {
            return None;
        }
        let n = o.count.get();
        // SAFETY: the outbox lists `n` blocks of the live thread heap
        // `owner`, from `head` to `tail` (invariant).
        unsafe { Heap::push_remote_list(owner, o.head.get(), o.tail.get()) };
        o.owner.set(ptr::null());
        o.head.set(ptr::null_mut());
        o.tail.set(ptr::null_mut());
        o.count.set(0);
        Some((owner, n))
    }

    /// Checks the outbox's invariant (owner only): `Err((what, at))`.
    pub(super) fn validate_outbox(&self) -> Result<(), (&'static str, usize)> {
        let o = &self.remote.out;
        let (owner, n) = (o.owner.get(), o.count.get());
        if owner.is_null() {
            return if n == 0 { Ok(()) } else { Err(("outbox without owner holds blocks", n as usize)) };
        }
        if ptr::eq(owner, self) || n == 0 || n >= OUTBOX_BLOCKS {
            return Err(("outbox owner or count", n as usize));
        }
        let (mut p, mut seen, mut last) = (o.head.get(), 0u32, ptr::null_mut());
        while !p.is_null() && seen < n {
            // SAFETY: a block of the outbox is live as far as its pool knows.
            if !ptr::eq(unsafe { Heap::block_owner(p) }, owner) {
                return Err(("outbox block of another owner", p.addr()));
            }
            last = p;
            // SAFETY: the outbox links `n` blocks through their first words
            // (invariant); the walk stops after `n`.
            p = unsafe { p.cast::<*mut u8>().read() };
            seen += 1;
        }
        if seen != n || !p.is_null() || last != o.tail.get() {
            return Err(("outbox list length or tail", seen as usize));
        }
        Ok(())
    }

    /// Sends the list `head`..`tail` (linked through first words) to
    /// `owner`'s queue with one compare-and-swap.
    ///
    /// # Safety
    /// `owner` is a live thread heap; the list's blocks are its blocks that
    /// their users gave up, `tail` the last.
    unsafe fn push_remote_list(owner: *const Heap, head: *mut u8, tail: *mut u8) {
        // SAFETY: thread heaps are never freed; the queue is an atomic
        // anyone may push to.
        let q = unsafe { &*(*owner).remote.queue };
        let mut cur = q.load(Ordering::Relaxed);
        loop {
            // SAFETY: tail is a block of the list, its first word ours.
            unsafe { tail.cast::<*mut u8>().write(cur) };
            match q.compare_exchange_weak(cur, head, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(h) => cur = h,
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
