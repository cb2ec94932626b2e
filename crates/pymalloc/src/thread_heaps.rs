//! The registry of thread heaps: every heap ever made, and the heaps of
//! exited threads waiting to be adopted. Heaps are never freed, only
//! reused, so a pool's owner tag stays valid for as long as the process
//! runs. `thread.rs` gives each thread one of them.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::heap::{Heap, PurgePolicy, DECAY_WAKER};
use crate::raw;
use crate::sync::{SpinCell, SpinLock};

/// A thread's heap and its links in the registries.
///
/// Invariants: allocated once (C heap) and never freed; `heap` is at offset 0
/// (a pool's owner pointer is also a pointer to its `ThreadHeap`) and its
/// owner tag is its own address; `next_all` is set before the heap is
/// published on `ALL` and never changes; `next_abandoned` is used only under
/// `ABANDONED`'s lock; `abandoned` is true while the heap is on that list.
#[repr(C)]
struct ThreadHeap {
    heap: Heap,
    /// Keeps `abandoned`, which every free from another thread reads, off
    /// the cache lines of the heap's last fields.
    _pad: [usize; 15],
    abandoned: AtomicBool,
    next_all: *mut ThreadHeap,
    next_abandoned: *mut ThreadHeap,
}

// Thread heaps come from the C library's own `malloc` (`raw::meta`), which
// never re-enters a heap even when pymalloc is the process's `malloc`.

/// Every thread heap ever made (push-only).
static ALL: AtomicPtr<ThreadHeap> = AtomicPtr::new(ptr::null_mut());
static HEAPS: AtomicUsize = AtomicUsize::new(0);

/// Heaps of exited threads, waiting to be adopted.
struct Abandoned {
    lock: SpinLock,
    head: UnsafeCell<*mut ThreadHeap>,
}
// SAFETY: `head` is only touched with `lock` held.
unsafe impl Sync for Abandoned {}
static ABANDONED: Abandoned = Abandoned { lock: SpinLock::new(), head: UnsafeCell::new(ptr::null_mut()) };

/// Remote frees into abandoned heaps since they were last drained.
static ORPHAN_FREES: AtomicUsize = AtomicUsize::new(0);
/// Drain abandoned heaps after this many remote frees into them.
const ORPHAN_DRAIN_EVERY: usize = 1 << 14;
/// Heaps made from now on print statistics when they allocate an arena.
static STATS_ON_NEW_ARENA: AtomicBool = AtomicBool::new(false);

/// The purge policy of heaps made from now on.
static NEW_HEAP_POLICY: SpinCell<PurgePolicy> = SpinCell::new(PurgePolicy::DEFAULT);

/// Sets the purge policy of every thread heap, those made later included.
pub fn set_purge_policy(p: PurgePolicy) {
    NEW_HEAP_POLICY.set(p);
    for_each_heap(|h| h.set_purge_policy_shared(p));
}

/// A heap for the calling thread: an abandoned one adopted whole (its pools
/// keep their owner, so nothing is relinked), or a new one; null if memory
/// is short. The caller owns it from now on. `empty_only`: adopt only a
/// heap that holds no arena or segment. A thread that takes a heap to send
/// its frees in batches, not to allocate, would otherwise keep an adopted
/// heap's blocks out of the abandoned heaps' drain for as long as it
/// lives; the heaps such threads make hold nothing, so they take each
/// other's.
pub(crate) fn adopt_or_make(empty_only: bool) -> *const Heap {
    let th = adopt(empty_only).unwrap_or_else(make);
    if th.is_null() {
        return ptr::null();
    }
    // SAFETY: th is a live thread heap; `heap` is its first field.
    unsafe { ptr::addr_of!((*th).heap) }
}

/// A new thread heap, registered; null if memory is short.
fn make() -> *mut ThreadHeap {
    let th = raw::meta::zeroed(core::mem::size_of::<ThreadHeap>()).cast::<ThreadHeap>();
    if th.is_null() {
        return th;
    }
    // SAFETY: th is fresh zeroed memory for one ThreadHeap (malloc's
    // alignment is enough; `raw::meta` memory is zeroed). All-zero bytes
    // are a ThreadHeap with an uncached heap, no neighbours and not
    // abandoned; the heap gets its cache in place, without a 10 KiB value
    // built on the stack. It is initialised before anyone else can see it.
    unsafe {
        Heap::init_retaining_in_place(ptr::addr_of_mut!((*th).heap));
        // The owner tag keeps the provenance of the whole allocation: other
        // threads reach `abandoned` and `remote` through it.
        (*th).heap.set_print_stats_on_new_arena(STATS_ON_NEW_ARENA.load(Ordering::Relaxed));
        (*th).heap.set_purge_policy_shared(NEW_HEAP_POLICY.get());
        (*th).heap.set_owner_tag(th.cast::<Heap>());
        let mut head = ALL.load(Ordering::Relaxed);
        loop {
            (*th).next_all = head;
            match ALL.compare_exchange_weak(head, th, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
    }
    HEAPS.fetch_add(1, Ordering::Relaxed);
    th
}

/// Takes an abandoned heap, if any.
fn adopt(empty_only: bool) -> Option<*mut ThreadHeap> {
    let _g = ABANDONED.lock.lock();
    // SAFETY: the lock is held; list entries are live thread heaps that no
    // thread owns (`holds_memory` reads their counts under their own
    // bookkeeping lock: the decay thread may be releasing their arenas).
    unsafe {
        // A thread that allocates takes the most recently abandoned heap
        // that was its thread's own (warm), else any; a thread that only
        // frees, the first that holds no memory.
        let fits = |th: *mut ThreadHeap, pass: u8| match (empty_only, pass) {
            (true, _) => !(*th).heap.holds_memory(),
            (false, 0) => !(*th).heap.outbox_only(),
            (false, _) => true,
        };
        for pass in 0..2 {
            let mut link = ABANDONED.head.get();
            while !(*link).is_null() {
                let th = *link;
                if fits(th, pass) {
                    *link = (*th).next_abandoned;
                    (*th).abandoned.store(false, Ordering::Relaxed);
                    return Some(th);
                }
                link = ptr::addr_of_mut!((*th).next_abandoned);
            }
            if empty_only {
                break;
            }
        }
        None
    }
}

/// Hands a heap whose thread is exiting to the abandoned list, after
/// draining its queue and giving back what its policy says: under the decay
/// policy only what a sweep due now gives back (the next thread to start
/// adopts the heap, usually at once, and reuses what it holds: programs that
/// run many short threads, as servers and larson do, would otherwise give
/// everything back and fault it in again at every thread), under the others
/// everything it and the heaps abandoned before it hold no block in.
///
/// # Safety
/// `h` is the calling thread's heap (from [`adopt_or_make`]), which it
/// stops using.
pub(crate) unsafe fn abandon(h: *const Heap) {
    // A heap from adopt_or_make is at offset 0 of its ThreadHeap.
    let th = h.cast_mut().cast::<ThreadHeap>();
    // SAFETY: the caller owns the heap until it is on the list.
    unsafe {
        // The blocks of other heaps this thread freed last go to their
        // owners now: nobody else may touch this heap's outbox.
        send_outbox(&(*th).heap);
        let decays = (*th).heap.decay_period_ms().is_some();
        if decays {
            (*th).heap.drain_remote();
            (*th).heap.decay();
        }
        push_abandoned(th);
        if !decays {
            // This heap and those abandoned before it: their threads' last
            // blocks (glibc's record of the exit guard) reached their
            // queues after they were abandoned, and without a decay sweep
            // nobody else would drain them soon.
            purge_abandoned();
        }
    }
}

/// Sends what `h`'s outbox holds to its owner's queue, and counts it.
/// The caller owns `h`.
pub(crate) fn send_outbox(h: &Heap) {
    if let Some((owner, n)) = h.flush_outbox() {
        // SAFETY: an outbox lists blocks of a thread heap.
        unsafe { note_remote_frees(owner, n) };
    }
}

/// Hands back a heap its thread held only for its outbox (nothing was
/// allocated from it), its outbox sent: straight onto the abandoned list,
/// with none of [`abandon`]'s draining and giving back, which would find
/// nothing to do here and run on the thread's first allocation.
///
/// # Safety
/// `h` is the calling thread's outbox-only heap, which it stops using.
pub(crate) unsafe fn hand_back_empty(h: *const Heap) {
    let th = h.cast_mut().cast::<ThreadHeap>();
    // SAFETY: the caller owns the heap until it is on the list.
    unsafe {
        send_outbox(&(*th).heap);
        push_abandoned(th);
    }
}

/// Puts `th`, a thread heap nobody uses any more, at the head of the
/// abandoned list.
///
/// # Safety
/// `th` is a live thread heap that no thread owns and that is on no list.
unsafe fn push_abandoned(th: *mut ThreadHeap) {
    let _g = ABANDONED.lock.lock();
    // SAFETY: the lock is held; th is nobody's (the contract).
    unsafe {
        (*th).next_abandoned = *ABANDONED.head.get();
        (*th).abandoned.store(true, Ordering::Relaxed);
        *ABANDONED.head.get() = th;
    }
}

/// Drains every abandoned heap's queue and gives back what they hold no
/// block in. Returns the bytes given back.
pub(crate) fn purge_abandoned() -> usize {
    let mut bytes = 0;
    each_abandoned(|h| bytes += h.purge_shared());
    bytes
}

/// Drains the queues of the abandoned heaps if blocks reached them since
/// the last drain; what empties goes back by the heaps' own policy (the
/// decay sweep calls this). A thread's last blocks arrive after its heap
/// is abandoned: glibc frees its record of the thread's exit guard once
/// the guard has run.
#[inline]
pub(crate) fn drain_abandoned() {
    if ORPHAN_FREES.load(Ordering::SeqCst) != 0 {
        drain_abandoned_now();
    }
}

/// [`drain_abandoned`]'s work, out of line: a process without thread heaps
/// (the launcher's GIL heap) runs only the test above, and its code stays
/// with the thread heaps' (out of the default configuration's windows,
/// `pymalloc-text-layout`).
#[cold]
#[inline(never)]
fn drain_abandoned_now() {
    each_abandoned(|h| {
        h.drain_remote();
    });
}

/// Calls `f` on every abandoned heap, each taken off the list (so ours
/// alone: adoption cannot take it meanwhile) and put back afterwards.
fn each_abandoned(mut f: impl FnMut(&Heap)) {
    // Take the whole list, so that the heaps are ours while we work.
    let mut list = {
        let _g = ABANDONED.lock.lock();
        // SAFETY: the lock is held.
        unsafe { core::mem::replace(&mut *ABANDONED.head.get(), ptr::null_mut()) }
    };
    ORPHAN_FREES.store(0, Ordering::SeqCst);
    while !list.is_null() {
        // SAFETY: the heaps taken off the list are owned by no thread but us;
        // they go back on the list afterwards.
        unsafe {
            let next = (*list).next_abandoned;
            f(&(*list).heap);
            push_abandoned(list);
            list = next;
        }
    }
}

/// Counts a block another thread sent to `owner`'s queue; when the owner's
/// thread has exited, nobody drains it: the first such block since the last
/// drain wakes the decay thread if it is parked (its sweep drains them, see
/// [`drain_abandoned`]), and after many the abandoned heaps are drained
/// here.
///
/// # Safety
/// `owner` is a thread heap (a pool owner tag other than `NOT_THREAD_TAG`,
/// and not null).
pub(crate) unsafe fn note_remote_free(owner: *const Heap) {
    // SAFETY: the contract.
    unsafe { note_remote_frees(owner, 1) }
}

/// [`note_remote_free`] for `n` blocks sent at once.
///
/// # Safety
/// As [`note_remote_free`].
pub(crate) unsafe fn note_remote_frees(owner: *const Heap, n: u32) {
    // SAFETY: a thread heap is the heap at offset 0 of a live ThreadHeap,
    // never freed (the contract and ThreadHeap's invariant).
    let orphan = unsafe { (*owner.cast::<ThreadHeap>()).abandoned.load(Ordering::Relaxed) };
    if !orphan {
        return;
    }
    let before = ORPHAN_FREES.fetch_add(n as usize, Ordering::SeqCst);
    if before + n as usize >= ORPHAN_DRAIN_EVERY {
        purge_abandoned();
    } else if before == 0 {
        DECAY_WAKER.wake_if_parked();
    }
}

/// Calls `f` on every thread heap ever made (live or abandoned).
pub(crate) fn for_each_heap(f: impl FnMut(&Heap)) {
    for_each_heap_from(ALL.load(Ordering::Acquire), f);
}

/// Takes the registry's locks and every thread heap's bookkeeping lock
/// before `fork` (see `crate::fork`), in the order the allocator nests them:
/// the new-heap policy (never held with another), the abandoned list (held
/// with a heap's bookkeeping lock only inside it, where `adopt` asks an
/// abandoned heap whether it holds memory), then the heaps.
pub(crate) fn fork_acquire_registry() {
    NEW_HEAP_POLICY.lock.acquire();
    ABANDONED.lock.acquire();
}

/// The head of [`ALL`] when the prepare handler took the heaps' locks:
/// heaps pushed later (by threads still running during the prepare
/// handler) were not locked and must not be unlocked.
static FORK_HEAD: AtomicPtr<ThreadHeap> = AtomicPtr::new(ptr::null_mut());

/// Calls `f` on every heap from `head` down the registry.
fn for_each_heap_from(mut t: *mut ThreadHeap, mut f: impl FnMut(&Heap)) {
    while !t.is_null() {
        // SAFETY: heaps on ALL are never freed; their shared parts may be
        // read by anyone (see Heap's sharing invariant).
        unsafe {
            f(&(*t).heap);
            t = (*t).next_all;
        }
    }
}

/// Takes the bookkeeping lock of every thread heap made so far (after the
/// shared heap's lock).
pub(crate) fn fork_acquire_heaps() {
    let head = ALL.load(Ordering::Acquire);
    FORK_HEAD.store(head, Ordering::Relaxed);
    for_each_heap_from(head, Heap::fork_acquire_meta);
}

/// Releases what [`fork_acquire_registry`] and [`fork_acquire_heaps`]
/// took.
///
/// # Safety
/// Called by the fork parent or child handler after both.
pub(crate) unsafe fn fork_release() {
    // SAFETY: each lock was taken by this thread in the prepare handler
    // (our contract): the heaps from FORK_HEAD down, and the two registry
    // locks.
    unsafe {
        for_each_heap_from(FORK_HEAD.load(Ordering::Relaxed), |h| h.fork_release_meta());
        ABANDONED.lock.release();
        NEW_HEAP_POLICY.lock.release();
    }
}

/// Thread heaps made so far (live and abandoned).
pub fn heap_count() -> usize {
    HEAPS.load(Ordering::Relaxed)
}

/// Print statistics when any thread heap (made from now on) allocates an
/// arena (`PYTHONMALLOCSTATS`).
pub fn set_print_stats_on_new_arena(on: bool) {
    STATS_ON_NEW_ARENA.store(on, Ordering::Relaxed);
}
