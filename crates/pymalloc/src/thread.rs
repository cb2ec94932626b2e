//! Thread-safe pymalloc without a global lock: one heap per thread.
//!
//! Each thread gets a [`Heap`] of its own the first time it allocates
//! (arenas come from the shared arena region), so the fast paths take no
//! lock and touch no shared cache line:
//!
//! * `malloc` takes a block from the calling thread's heap;
//! * `free` by the thread that owns the block's pool is pymalloc's ordinary
//!   free; a block freed by another thread is pushed, lock-free, onto its
//!   owning heap's queue (`remote`), which the owner drains when it next needs
//!   a pool;
//! * when a thread exits, its heap drains its queue, gives back what it can,
//!   and is *abandoned*: the next thread to start adopts it whole (its pools
//!   keep their owner, so nothing has to be relinked), and [`purge`] drains
//!   abandoned heaps that nobody adopts. Blocks other threads still free into
//!   an abandoned heap wait in its queue until then.
//!
//! Heaps are never freed, only reused: a pool's owner pointer stays valid for
//! as long as the process runs. Statistics ([`stats`]) add up every heap,
//! each read under its own bookkeeping lock.
//!
//! ```
//! let p = pymalloc::thread::malloc(100);
//! let t = std::thread::spawn(move || {
//!     let q = pymalloc::thread::malloc(100); // this thread's own heap
//!     unsafe { pymalloc::thread::free(q) };
//! });
//! t.join().unwrap();
//! let addr = p as usize;
//! std::thread::spawn(move || unsafe { pymalloc::thread::free(addr as *mut u8) }) // freed remotely
//!     .join()
//!     .unwrap();
//! ```

use core::cell::{Cell, UnsafeCell};
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicPtr, AtomicUsize, Ordering};

use crate::allocator::MemAllocatorEx;
use crate::fallback::RawDomain;
use crate::front::{self, Pools};
use crate::heap::{ArenaInfo, Heap, InvariantError};
use crate::locked::global_heap;
use crate::pool::launder;
use crate::raw;
use crate::stats::Stats;
use crate::sync::SpinLock;

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

/// Live blocks handed to the raw allocator by the thread-safe entry points.
static RAW_BLOCKS: AtomicIsize = AtomicIsize::new(0);
/// Remote frees into abandoned heaps since they were last drained.
static ORPHAN_FREES: AtomicUsize = AtomicUsize::new(0);
/// Drain abandoned heaps after this many remote frees into them.
const ORPHAN_DRAIN_EVERY: usize = 1 << 14;
static STATS_ON_NEW_ARENA: AtomicBool = AtomicBool::new(false);

const NONE: u8 = 0;
const ACTIVE: u8 = 1;
const EXITING: u8 = 2;

thread_local! {
    /// The calling thread's heap, or null.
    static CURRENT: Cell<*const Heap> = const { Cell::new(ptr::null()) };
    static STATE: Cell<u8> = const { Cell::new(NONE) };
    /// Dropped at thread exit: abandons the heap.
    static GUARD: Guard = const { Guard };
}

struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        let h = CURRENT.with(|c| c.replace(ptr::null()));
        STATE.with(|s| s.set(EXITING));
        if !h.is_null() {
            // SAFETY: h is this thread's heap, which no other thread uses as
            // owner; it is handed over to the abandoned list.
            unsafe { abandon(h.cast_mut().cast::<ThreadHeap>()) };
        }
    }
}

/// The calling thread's heap (fast: one thread-local load).
#[inline(always)]
fn current() -> *const Heap {
    CURRENT.with(Cell::get)
}

/// The calling thread's heap, made or adopted if it has none; null when the
/// thread is exiting or no heap can be had.
#[cold]
fn current_or_create() -> *const Heap {
    match STATE.with(Cell::get) {
        ACTIVE => return current(),
        EXITING => return ptr::null(),
        _ => {}
    }
    // Registering the guard's destructor; fails once thread-local
    // destruction has begun.
    if GUARD.try_with(|_| ()).is_err() {
        STATE.with(|s| s.set(EXITING));
        return ptr::null();
    }
    let th = adopt().unwrap_or_else(make);
    if th.is_null() {
        return ptr::null();
    }
    // SAFETY: th is a live thread heap that this thread now owns.
    let h = unsafe { ptr::addr_of!((*th).heap) };
    CURRENT.with(|c| c.set(h));
    STATE.with(|s| s.set(ACTIVE));
    // SAFETY: h is the heap of the live thread heap th, which this thread
    // now owns: it may drain its queue.
    unsafe { (*h).drain_remote() };
    h
}

/// A new thread heap, registered; null if memory is short.
fn make() -> *mut ThreadHeap {
    let th = raw::malloc(core::mem::size_of::<ThreadHeap>()).cast::<ThreadHeap>();
    if th.is_null() {
        return th;
    }
    // SAFETY: th is fresh memory for one ThreadHeap (malloc's alignment is
    // enough); it is initialised before anyone else can see it.
    unsafe {
        th.write(ThreadHeap {
            heap: Heap::new_retaining(),
            _pad: [0; 15],
            abandoned: AtomicBool::new(false),
            next_all: ptr::null_mut(),
            next_abandoned: ptr::null_mut(),
        });
        // The owner tag keeps the provenance of the whole allocation: other
        // threads reach `abandoned` and `remote` through it.
        (*th).heap.set_print_stats_on_new_arena(STATS_ON_NEW_ARENA.load(Ordering::Relaxed));
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
fn adopt() -> Option<*mut ThreadHeap> {
    let _g = ABANDONED.lock.lock();
    // SAFETY: the lock is held; list entries are live thread heaps.
    unsafe {
        let head = *ABANDONED.head.get();
        if head.is_null() {
            return None;
        }
        *ABANDONED.head.get() = (*head).next_abandoned;
        (*head).abandoned.store(false, Ordering::Relaxed);
        Some(head)
    }
}

/// Hands a heap whose thread is exiting to the abandoned list, after
/// draining its queue and giving back what it can.
///
/// # Safety
/// `th` is the calling thread's heap, which it stops using.
unsafe fn abandon(th: *mut ThreadHeap) {
    // SAFETY: the caller owns the heap until it is on the list.
    unsafe {
        (*th).heap.purge_shared();
        let _g = ABANDONED.lock.lock();
        (*th).next_abandoned = *ABANDONED.head.get();
        (*th).abandoned.store(true, Ordering::Relaxed);
        *ABANDONED.head.get() = th;
    }
}

/// Drains every abandoned heap's queue and gives back what they hold no
/// block in. Returns the bytes given back.
fn purge_abandoned() -> usize {
    // Take the whole list, so that the heaps are ours while we work.
    let mut list = {
        let _g = ABANDONED.lock.lock();
        // SAFETY: the lock is held.
        unsafe { core::mem::replace(&mut *ABANDONED.head.get(), ptr::null_mut()) }
    };
    ORPHAN_FREES.store(0, Ordering::Relaxed);
    let mut bytes = 0;
    while !list.is_null() {
        // SAFETY: the heaps taken off the list are owned by no thread but us;
        // they go back on the list afterwards.
        unsafe {
            let next = (*list).next_abandoned;
            bytes += (*list).heap.purge_shared();
            let _g = ABANDONED.lock.lock();
            (*list).next_abandoned = *ABANDONED.head.get();
            *ABANDONED.head.get() = list;
            list = next;
        }
    }
    bytes
}

/// A block of size class `c` from the calling thread's heap; null if no
/// arena can be had (no raw fallback).
#[inline(always)]
pub(crate) fn alloc_small(c: usize) -> *mut u8 {
    let h = current();
    if !h.is_null() {
        // SAFETY: h is this thread's heap.
        let p = unsafe { (*h).alloc_small(c) };
        if !p.is_null() {
            return p;
        }
    }
    alloc_small_slow(c)
}

#[cold]
#[inline(never)]
fn alloc_small_slow(c: usize) -> *mut u8 {
    let h = current_or_create();
    if h.is_null() {
        // Exiting thread (or no memory for a heap): the shared locked heap.
        return global_heap().lock().alloc_small(c);
    }
    // SAFETY: h is this thread's heap.
    unsafe { (*h).alloc_small(c) }
}

/// Frees a block known to come from a pool (of any thread heap, or of the
/// shared locked heap).
///
/// # Safety
/// `p` is a live pool block handed out by this module's allocators.
#[inline(always)]
pub(crate) unsafe fn free_small(p: *mut u8) {
    // SAFETY: p is a live pool block.
    let owner = unsafe { Heap::block_owner(p) };
    let h = current();
    if owner == h && !h.is_null() {
        // SAFETY: the block belongs to this thread's heap.
        unsafe { (*h).free_small(p) };
    } else {
        // SAFETY: p is a live pool block (our contract) and owner the owner
        // stamped on it.
        unsafe { free_foreign(p, owner) };
    }
}

/// A block of another heap: to its owner's queue, or (no owner: the shared
/// locked heap's) to the shared heap.
#[cold]
#[inline(never)]
unsafe fn free_foreign(p: *mut u8, owner: *const Heap) {
    if owner.is_null() {
        let heap = global_heap().lock();
        // SAFETY: a block without an owner tag is a live block of the
        // shared locked heap (the only heap these entry points use that is
        // not a thread heap), whose lock is held.
        unsafe { heap.free_small(launder(p)) };
        return;
    }
    // SAFETY: owner is the live thread heap stamped on p's pool.
    unsafe { Heap::push_remote(owner, p) };
    // SAFETY: a pool's owner is the heap at offset 0 of a live ThreadHeap.
    let orphan = unsafe { (*owner.cast::<ThreadHeap>()).abandoned.load(Ordering::Relaxed) };
    if orphan && ORPHAN_FREES.fetch_add(1, Ordering::Relaxed) + 1 >= ORPHAN_DRAIN_EVERY {
        // Nobody drains an abandoned heap's queue: do it now and then.
        purge_abandoned();
    }
}

/// The calling thread's heap, as the front's source of pool blocks; the
/// live raw blocks of every thread are counted together.
pub(crate) struct ThreadHeaps;

impl Pools for ThreadHeaps {
    #[inline(always)]
    fn alloc(&self, c: usize) -> *mut u8 {
        alloc_small(c)
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: p is a live pool block from these entry points (the
        // trait's contract).
        unsafe { free_small(p) }
    }
    #[inline(always)]
    fn fallback_blocks(&self) -> &AtomicIsize {
        &RAW_BLOCKS
    }
}

/// Allocates `n` bytes, thread-safe, without a global lock; large requests
/// go to the RAW domain. See the module documentation.
#[inline]
pub fn malloc(n: usize) -> *mut u8 {
    front::object_malloc::<RawDomain>(&ThreadHeaps, n)
}

/// Allocates `nelem * elsize` zeroed bytes; null on overflow.
#[inline]
pub fn calloc(nelem: usize, elsize: usize) -> *mut u8 {
    front::object_calloc::<RawDomain>(&ThreadHeaps, nelem, elsize)
}

/// Resizes a block from [`malloc`]/[`calloc`]/[`realloc`], with CPython's
/// rule (a pool block stays in place while the new size fits and is over
/// three quarters of its class); raw blocks stay raw.
///
/// # Safety
/// `p` is null or a live block from these functions.
#[inline]
pub unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
    // SAFETY: p is null or live from these functions (the contract): a pool
    // block of a thread heap or a RAW block.
    unsafe { front::object_realloc::<RawDomain>(&ThreadHeaps, p, n) }
}

/// Frees a block from [`malloc`]/[`calloc`]/[`realloc`], from any thread.
///
/// # Safety
/// `p` is null or a live block from these functions, not used again.
#[inline]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: as for realloc, and p is not used again.
    unsafe { front::object_free::<RawDomain>(&ThreadHeaps, p) }
}

static THREADED_CTX: u8 = 0;

/// The domain allocator of the thread heaps (see
/// [`MemAllocatorEx::pymalloc_threaded`]).
pub(crate) const fn domain_allocator() -> MemAllocatorEx {
    MemAllocatorEx {
        ctx: &THREADED_CTX as *const u8 as *mut c_void,
        malloc: threaded_malloc,
        calloc: threaded_calloc,
        realloc: threaded_realloc,
        free: threaded_free,
    }
}

unsafe extern "C" fn threaded_malloc(_: *mut c_void, n: usize) -> *mut c_void {
    malloc(n).cast()
}
unsafe extern "C" fn threaded_calloc(_: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    calloc(nelem, elsize).cast()
}
unsafe extern "C" fn threaded_realloc(_: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: p is null or live in the domain (the domain caller's
    // contract), so from these entry points.
    unsafe { realloc(p.cast(), n).cast() }
}
unsafe extern "C" fn threaded_free(_: *mut c_void, p: *mut c_void) {
    // SAFETY: as for threaded_realloc, and p is not used again.
    unsafe { free(p.cast()) }
}

/// Calls `f` on every thread heap ever made (live or abandoned).
fn for_each_heap(mut f: impl FnMut(&Heap)) {
    let mut t = ALL.load(Ordering::Acquire);
    while !t.is_null() {
        // SAFETY: heaps on ALL are never freed; their shared parts may be
        // read by anyone (see Heap's sharing invariant).
        unsafe {
            f(&(*t).heap);
            t = (*t).next_all;
        }
    }
}

/// Statistics of all thread heaps added up (each read under its own lock;
/// counts of pools in use on other threads may be a moment old), plus the
/// shared heap that exiting threads use.
pub fn stats() -> Stats {
    let mut total = global_heap().stats();
    for_each_heap(|h| total.add(&h.stats()));
    total.raw_allocated_blocks += RAW_BLOCKS.load(Ordering::Relaxed);
    total
}

/// Pictures of the arenas of every thread heap and of the shared heap.
pub fn arenas() -> Vec<ArenaInfo> {
    let mut out = global_heap().arenas();
    let mut n = 0;
    for_each_heap(|h| n += h.arena_count());
    out.reserve(n + 16);
    for_each_heap(|h| {
        h.visit_arenas(|a| {
            if out.len() < out.capacity() {
                out.push(*a);
            }
        })
    });
    out
}

/// Gives back to the OS what the calling thread's heap, the heaps of exited
/// threads and the shared heap hold no block in. Returns the bytes.
pub fn purge() -> usize {
    let h = current();
    // SAFETY: h is this thread's heap.
    let mine = if h.is_null() { 0 } else { unsafe { (*h).purge_shared() } };
    mine + purge_abandoned() + global_heap().purge()
}

/// Thread heaps made so far (live and abandoned).
pub fn heap_count() -> usize {
    HEAPS.load(Ordering::Relaxed)
}

/// Statistics of the calling thread's heap alone (empty if it has none).
pub fn current_stats() -> Stats {
    let h = current();
    if h.is_null() {
        Stats::new()
    } else {
        // SAFETY: h is this thread's live heap (thread heaps are never freed).
        unsafe { (*h).stats() }
    }
}

/// Checks the invariants of the calling thread's heap.
pub fn validate_current() -> Result<(), InvariantError> {
    let h = current();
    if h.is_null() {
        Ok(())
    } else {
        // SAFETY: h is this thread's live heap, and this thread its owner.
        unsafe { (*h).validate() }
    }
}

/// Print statistics when any thread heap (made from now on) allocates an
/// arena (`PYTHONMALLOCSTATS`).
pub fn set_print_stats_on_new_arena(on: bool) {
    STATS_ON_NEW_ARENA.store(on, Ordering::Relaxed);
}
