//! Thread-safe pymalloc without a global lock: one heap per thread.
//!
//! Each thread gets a [`Heap`] of its own the first time it allocates
//! (arenas come from the shared arena region), so the fast paths take no
//! lock and touch no shared cache line:
//!
//! * `malloc` takes a block from the calling thread's heap;
//! * `free` by the thread that owns the block's pool is pymalloc's ordinary
//!   free; a pool block freed by another thread waits in that thread's
//!   outbox and goes, 32 at a time and lock-free, onto its owning heap's
//!   queue (`remote`), which the owner drains when it next needs a pool or a
//!   span (a thread that frees before it ever allocates takes a heap for
//!   its outbox then); larger blocks go onto the queue one by one;
//! * when a thread exits, its heap drains its queue and is *abandoned*: the
//!   next thread to start adopts it whole (its pools and segments keep their
//!   owner, so nothing has to be relinked), and [`purge`] drains abandoned
//!   heaps that nobody adopts. Under the decay policy the exiting thread
//!   only sweeps if a sweep is due (the next thread usually adopts the heap
//!   and reuses what it holds, and the background thread sweeps abandoned
//!   heaps too); under the other policies it gives back all it can at once.
//!   Blocks other threads still free into an abandoned heap wait in its
//!   queue until it is adopted, purged, or drained by the decay thread's
//!   sweep.
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

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicIsize, Ordering};

use crate::allocator::MemAllocatorEx;
use crate::block_map;
use crate::fallback::{Fallback, RawDomain};
use crate::fork;
use crate::front::{self, Pools};
use crate::geometry::NB_SMALL_SIZE_CLASSES;
use crate::heap::{ArenaInfo, ClassPinning, Heap, InvariantError, PinningBlock};
use crate::locked::global_heap;
use crate::pool::{self, launder, NOT_THREAD_TAG};
use crate::region;
use crate::stats::Stats;
use crate::thread_heaps;
use crate::tls_slot;

pub use crate::thread_heaps::{heap_count, set_print_stats_on_new_arena, set_purge_policy};

/// Live blocks handed to the raw allocator by the thread-safe entry points.
static RAW_BLOCKS: AtomicIsize = AtomicIsize::new(0);

/// Counts `delta` blocks handed to (or back from) the raw allocator by a
/// front that counts its fallback itself (`every_size::CountedRaw`).
#[inline]
pub(crate) fn count_raw_blocks(delta: isize) {
    RAW_BLOCKS.fetch_add(delta, Ordering::Relaxed);
}
const NONE: u8 = 0;
const ACTIVE: u8 = 1;
const EXITING: u8 = 2;
/// Getting a heap: requests made meanwhile (none on the usual path) go to
/// the shared heap instead of recursing.
const CREATING: u8 = 3;

// The calling thread's heap, or null, lives in `tls_slot` (one instruction
// to read, even in libpymalloc.so); the rest of the thread's state is only
// read on the slow paths.
thread_local! {
    static STATE: Cell<u8> = const { Cell::new(NONE) };
    /// Dropped at thread exit: abandons the heap.
    static GUARD: Guard = const { Guard };
}

struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        give_up_heap();
    }
}

/// The thread stops using its heap, if it has one: the heap goes to the
/// abandoned list, and the thread's later requests to the shared heap.
fn give_up_heap() {
    let h = current();
    tls_slot::set(ptr::null());
    STATE.with(|s| s.set(EXITING));
    if !h.is_null() {
        // SAFETY: h is this thread's heap, which it stops using; it is
        // handed over to the abandoned list.
        unsafe { thread_heaps::abandon(h) };
    }
}

/// The calling thread's heap (fast: one thread-local load).
#[inline(always)]
fn current() -> *const Heap {
    tls_slot::get().cast()
}

/// The calling thread's heap, or null if it has none yet.
#[inline(always)]
pub(crate) fn current_heap() -> *const Heap {
    current()
}

/// The calling thread's heap, made or adopted if it has none (or traded
/// for the outbox-only heap it holds, see [`current_or_create`]); null when
/// the thread is exiting or no heap can be had.
#[inline(always)]
pub(crate) fn heap() -> *const Heap {
    let h = current();
    // SAFETY: a heap in the slot is this thread's.
    if h.is_null() || unsafe { (*h).outbox_only() } {
        current_or_create(false)
    } else {
        h
    }
}

/// The calling thread's heap, made or adopted if it has none; null when the
/// thread is exiting or no heap can be had.
///
/// `for_frees`: the thread takes a heap only to carry its outbox
/// (`free_foreign`): it adopts only a heap that holds no memory and marks
/// it outbox-only. Nothing is allocated from such a heap: the first
/// request of the thread that reaches a slow path (every path does, the
/// heap being empty) trades it for a heap of its own
/// ([`leave_outbox_heap`]), and it goes back empty for the next thread that
/// only frees. No thread-local guard is registered for it (the
/// registration allocates, and glibc's record would come from the heap),
/// only the exit key ([`exit_key`]).
#[cold]
fn current_or_create(for_frees: bool) -> *const Heap {
    match STATE.with(Cell::get) {
        ACTIVE => {
            let h = current();
            // SAFETY: a heap in the slot is this thread's.
            return if !for_frees && unsafe { (*h).outbox_only() } { leave_outbox_heap(h) } else { h };
        }
        EXITING | CREATING => return ptr::null(),
        _ => {}
    }
    if for_frees && !exit_key::usable() {
        // No key (the process ran out of them): nothing could give an
        // outbox-only heap up at exit, so the thread frees one at a time.
        return ptr::null();
    }
    STATE.with(|s| s.set(CREATING));
    let h = thread_heaps::adopt_or_make(for_frees);
    if h.is_null() {
        STATE.with(|s| s.set(NONE));
        return ptr::null();
    }
    // SAFETY: h is the heap this thread just took.
    unsafe { (*h).set_outbox_only(for_frees) };
    if for_frees {
        // Requests made meanwhile (glibc's `pthread_setspecific` may
        // allocate, as may `fork::install`) go to the shared heap: nothing
        // comes from this one.
        fork::install();
        if !exit_key::arm() {
            // Without the key nothing would give the heap up at exit: the
            // thread frees one block at a time, and may still take a heap
            // of its own to allocate.
            // SAFETY: h is the outbox-only heap just taken, unused.
            unsafe { thread_heaps::hand_back_empty(h) };
            STATE.with(|s| s.set(NONE));
            return ptr::null();
        }
        tls_slot::set(h.cast());
        STATE.with(|s| s.set(ACTIVE));
        return h;
    }
    tls_slot::set(h.cast());
    STATE.with(|s| s.set(ACTIVE));
    // Thread heaps exist: from now on a fork() must not find one of their
    // locks held (once per process; registering may allocate, from h).
    fork::install();
    if !own_heap_taken(h) {
        return ptr::null();
    }
    h
}

/// What a thread does once it holds a heap of its own, `h`, in its slot
/// (STATE active): registers the thread-local guard and arms the exit key,
/// then drains the heap's queue. False (the heap given up) if the guard
/// cannot be registered.
fn own_heap_taken(h: *const Heap) -> bool {
    // Registering the guard's destructor, which allocates (served by the
    // heap just taken: it is the thread's already), fails once
    // thread-local destruction has begun: then the heap goes back. Before
    // the heap, those requests went to the shared heap, which then held an
    // arena and three pages of its own in every process. (glibc frees its
    // record of the destructor after the destructor has abandoned the
    // heap: that block reaches the abandoned heap's queue, which
    // `thread_heaps` drains.)
    if GUARD.try_with(|_| ()).is_err() {
        give_up_heap();
        return false;
    }
    // A heap taken while glibc runs the thread's pthread key destructors,
    // which come after the thread-local ones: the guard registered above
    // will never run (glibc has run that list), and without the key the
    // heap would never be abandoned (a heap per thread, each with an
    // arena, for threads whose first allocation is in such a destructor).
    // The key, set now, makes glibc run its destructor in this round or
    // the next. In every other case the guard runs first and the key's
    // destructor finds nothing to do.
    exit_key::arm();
    // SAFETY: h is a live thread heap this thread now owns: it may drain
    // its queue.
    unsafe { (*h).drain_remote() };
    true
}

/// The thread that held `old` only for its outbox allocates: it takes a
/// heap of its own, and `old`, still empty, goes back (its outbox sent) for
/// the next thread that only frees. Null if the thread cannot keep a heap.
#[cold]
#[inline(never)]
fn leave_outbox_heap(old: *const Heap) -> *const Heap {
    STATE.with(|s| s.set(CREATING));
    // `old` is not on the abandoned list, so this is another heap.
    let h = thread_heaps::adopt_or_make(false);
    if h.is_null() {
        // No other heap to be had: `old` becomes the thread's own.
        // SAFETY: old is this thread's heap.
        unsafe { (*old).set_outbox_only(false) };
        STATE.with(|s| s.set(ACTIVE));
        return if own_heap_taken(old) { old } else { ptr::null() };
    }
    // SAFETY: h is the heap this thread just took.
    unsafe { (*h).set_outbox_only(false) };
    tls_slot::set(h.cast());
    STATE.with(|s| s.set(ACTIVE));
    // SAFETY: old was this thread's outbox-only heap until the line above,
    // and nothing else holds it: it goes to the abandoned list (its outbox
    // sent).
    unsafe { thread_heaps::hand_back_empty(old) };
    if !own_heap_taken(h) {
        return ptr::null();
    }
    h
}

/// The pthread key whose destructor gives up the thread's heap if the
/// thread-local guard has not (see [`current_or_create`]).
mod exit_key {
    use core::cell::Cell;
    use core::ffi::c_void;
    use core::sync::atomic::{AtomicUsize, Ordering};

    /// The key plus one; 0 before the first heap, `NO_KEY` if the process
    /// could not make one.
    static KEY: AtomicUsize = AtomicUsize::new(0);
    const NO_KEY: usize = usize::MAX;

    /// The key, or None if the process could not make one. (An atomic, not
    /// a `OnceLock`: its generic code would be std's, outside the library's
    /// first text window, `pymalloc-text-layout`.)
    fn key() -> Option<libc::pthread_key_t> {
        match KEY.load(Ordering::Acquire) {
            0 => make_key(),
            k => decode(k),
        }
    }

    /// The key a non-zero value of `KEY` stands for.
    fn decode(k: usize) -> Option<libc::pthread_key_t> {
        (k != NO_KEY).then(|| (k - 1) as libc::pthread_key_t)
    }

    /// Makes the key, once: of two threads racing, the loser deletes its
    /// own and takes the winner's.
    #[cold]
    fn make_key() -> Option<libc::pthread_key_t> {
        let mut k: libc::pthread_key_t = 0;
        // SAFETY: k is written by the call; the destructor has C's
        // signature.
        let made =
            if unsafe { libc::pthread_key_create(&mut k, Some(at_exit)) } == 0 { k as usize + 1 } else { NO_KEY };
        let kept = match KEY.compare_exchange(0, made, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => made,
            Err(theirs) => {
                if made != NO_KEY {
                    // SAFETY: our own key, never given a value.
                    unsafe { libc::pthread_key_delete(k) };
                }
                theirs
            }
        };
        decode(kept)
    }

    /// True if the process has the key.
    pub(super) fn usable() -> bool {
        key().is_some()
    }

    /// Gives the key a value for the calling thread; false if it cannot.
    pub(super) fn arm() -> bool {
        let Some(k) = key() else { return false };
        // SAFETY: a key of ours; any non-null value makes glibc call the
        // destructor at the thread's exit (the value is not used).
        unsafe { libc::pthread_setspecific(k, core::ptr::NonNull::<c_void>::dangling().as_ptr()) == 0 }
    }

    /// Runs after the thread's thread-local destructors: gives the heap up
    /// if the guard did not.
    extern "C" fn at_exit(_: *mut c_void) {
        if super::STATE.with(Cell::get) == super::ACTIVE {
            super::give_up_heap();
        }
    }
}

/// A block of size class `c` from the calling thread's heap; null if no
/// arena can be had (no raw fallback).
///
/// Inline, only what needs no call (a cached block, or one of the first
/// used pool); the rest is a jump to [`alloc_small_slow`], so that the
/// callers' fast paths (the Rust global allocator's `alloc`) keep no stack
/// frame.
#[inline(always)]
pub(crate) fn alloc_small(c: usize) -> *mut u8 {
    let h = current();
    if !h.is_null() {
        // SAFETY: h is this thread's heap.
        let p = unsafe { (*h).alloc_small_at_hand(c) };
        if !p.is_null() {
            return p;
        }
    }
    alloc_small_slow(c)
}

#[cold]
#[inline(never)]
fn alloc_small_slow(c: usize) -> *mut u8 {
    let h = current_or_create(false);
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
    // SAFETY: p is a live pool block; its owner and class are its pool's
    // (read from the region's tables at its offset, if it lies there).
    unsafe {
        match region::arena_offset(p) {
            Some(off) => free_small_in_region(p, off),
            None => free_small_owned(p, Heap::block_owner(p), || pool::class_of(p), false),
        }
    }
}

/// [`free_small`] of a block of the arena region at offset `off`: its owner
/// and class read from the region's tables at that offset, so the region's
/// bounds are compared once per free.
///
/// # Safety
/// `p` is a live pool block handed out by this module's allocators, and
/// `off` is `region::arena_offset(p)`.
#[inline(always)]
pub(crate) unsafe fn free_small_in_region(p: *mut u8, off: usize) {
    // SAFETY: off is p's offset in the region (the contract), so the
    // region's tables at off hold its pool's owner and class.
    unsafe { free_small_owned(p, region::owner_at(off).cast(), || pool::class_at(p, off), true) }
}

/// Frees pool block `p` whose pool's owner is `owner`: into this thread's
/// heap (its class from `class`) if it owns it, else to its owner.
///
/// # Safety
/// `p` is a live pool block handed out by this module's allocators,
/// `owner` the owner stamped on its pool and `class()` its class;
/// `in_region` only if `p` lies in the arena region.
#[inline(always)]
unsafe fn free_small_owned(p: *mut u8, owner: *const Heap, class: impl FnOnce() -> usize, in_region: bool) {
    let h = current();
    // No live block's owner is null (`block_map::NOT_THREAD_TAG`): a thread
    // without a heap (h null) goes to `free_foreign`.
    if owner == h {
        // SAFETY: the block belongs to this thread's heap, of class class(),
        // in the region if in_region.
        unsafe {
            if in_region {
                (*h).free_region_block(p, class());
            } else {
                (*h).free_small_class(p, class());
            }
        }
    } else {
        // SAFETY: p is a live pool block and owner the owner stamped on it.
        unsafe { free_foreign(p, owner) };
    }
}

/// A block of another heap: to its owner's queue, or (owner
/// `NOT_THREAD_TAG`: the shared locked heap's) to the shared heap.
///
/// `extern "C"`, which cannot unwind: a caller that is itself an `extern
/// "C"` entry point (a domain's `free`) needs no landing pad around the
/// call, so it reaches this function by a jump and its fast path keeps no
/// stack frame.
#[cold]
#[inline(never)]
unsafe extern "C" fn free_foreign(p: *mut u8, owner: *const Heap) {
    debug_assert!(!owner.is_null(), "a live block without an owner");
    if owner.cast() == NOT_THREAD_TAG {
        let heap = global_heap().lock();
        // SAFETY: a block of a heap that is not a thread heap is a live
        // block of the shared locked heap (the only heap these entry points use that is
        // not a thread heap), whose lock is held.
        unsafe { heap.free_small(launder(p)) };
        return;
    }
    // A thread without a heap takes one here: its outbox batches what it
    // frees (a thread that only frees, as a consumer does, would otherwise
    // swap the owner's queue once per block).
    let mut h = current();
    if h.is_null() {
        h = current_or_create(true);
    }
    if h.is_null() {
        // Exiting, or no heap to be had: one block at once.
        // SAFETY: owner is the live thread heap stamped on p's pool, and p
        // is live and not used again (our contract).
        unsafe { Heap::push_remote(owner, p) };
        // SAFETY: an owner other than NOT_THREAD_TAG is a thread heap.
        unsafe { thread_heaps::note_remote_free(owner) };
        return;
    }
    if ptr::eq(h, owner) {
        // The heap just taken is the one that owns p (an abandoned heap
        // adopted): p is this thread's own block now.
        // SAFETY: p is a live pool block (our contract).
        return unsafe { free_small(p) };
    }
    // SAFETY: h is this thread's heap, not owner; owner and p as above.
    if let Some((to, n)) = unsafe { (*h).send_remote(owner, p) } {
        // SAFETY: an outbox lists blocks of a thread heap.
        unsafe { thread_heaps::note_remote_frees(to, n) };
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
    fn alloc_at_hand(&self, c: usize) -> *mut u8 {
        let h = current();
        if h.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: h is this thread's heap.
        unsafe { (*h).alloc_small_at_hand(c) }
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: p is a live pool block from these entry points (the
        // trait's contract).
        unsafe { free_small(p) }
    }
    #[inline(always)]
    unsafe fn free_in_region(&self, p: *mut u8, off: usize) {
        // SAFETY: the trait's contract.
        unsafe { free_small_in_region(p, off) }
    }
    #[inline(always)]
    fn fallback_blocks(&self) -> &AtomicIsize {
        &RAW_BLOCKS
    }
    fn make_room(&self) {
        let h = current();
        if !h.is_null() {
            // SAFETY: h is this thread's live heap; make_room takes only
            // its bookkeeping lock.
            unsafe { (*h).make_room() };
        }
    }
}

/// Allocates `n` bytes, thread-safe, without a global lock; large requests
/// go to the RAW domain. See the module documentation.
#[inline]
pub fn malloc(n: usize) -> *mut u8 {
    malloc_with::<RawDomain>(n)
}

/// Allocates `nelem * elsize` zeroed bytes; null on overflow.
#[inline]
pub fn calloc(nelem: usize, elsize: usize) -> *mut u8 {
    calloc_with::<RawDomain>(nelem, elsize)
}

/// [`malloc`], with the requests pymalloc does not serve sent to `F`
/// rather than to the RAW domain (see [`Fallback`]).
#[inline(always)]
pub fn malloc_with<F: Fallback>(n: usize) -> *mut u8 {
    front::object_malloc::<F>(&ThreadHeaps, n)
}

/// [`calloc`], with the rest sent to `F`.
#[inline]
pub fn calloc_with<F: Fallback>(nelem: usize, elsize: usize) -> *mut u8 {
    front::object_calloc::<F>(&ThreadHeaps, nelem, elsize)
}

/// [`realloc`], with the rest sent to `F`.
///
/// # Safety
/// `p` is null, a live block from these functions, or a live block of `F`.
#[inline]
pub unsafe fn realloc_with<F: Fallback>(p: *mut u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract is the front's.
    unsafe { front::object_realloc::<F>(&ThreadHeaps, p, n) }
}

/// [`free`], with blocks pymalloc does not own handed to `F`.
///
/// # Safety
/// `p` is null, a live block from these functions, or a live block of `F`;
/// it is not used again.
#[inline(always)]
pub unsafe fn free_with<F: Fallback>(p: *mut u8) {
    if let Some((h, c)) = mine(p) {
        if c < NB_SMALL_SIZE_CLASSES {
            // SAFETY: p is a live pool block of this thread's heap h (the
            // contract and `mine`), of size class c, so of the arena region.
            unsafe { (*h).free_region_block(p, c) };
            return;
        }
    }
    // SAFETY: the contract.
    unsafe { free_by_front::<F>(p) }
}

/// [`free_with`] without its first look at the block map, for a caller
/// that has already asked [`mine`] about `p` (the every-size front): the
/// front's own test.
///
/// # Safety
/// As for [`free_with`].
#[inline(always)]
pub(crate) unsafe fn free_by_front<F: Fallback>(p: *mut u8) {
    // SAFETY: the caller's contract is the front's.
    unsafe { front::object_free::<F>(&ThreadHeaps, p) }
}

/// The calling thread's heap and the cache class the block map records for
/// `p`, if `p` lies in a slot of that heap (for a live block: if it is one
/// of that heap's: a pool block, whose cache class is its size class, or a
/// block of its spans); `None` for null, another thread's block, an
/// address outside the regions, or a thread without a heap. One look at
/// the block map, where the front's own test (region, then fallback, then
/// radix map) takes several.
#[inline(always)]
pub(crate) fn mine(p: *const u8) -> Option<(*const Heap, usize)> {
    mine_by(p, block_map::owner_and_offset)
}

/// [`mine`] behind the block map's gate (`block_map::set_gate`): `None`
/// for every address while it is shut.
#[inline(always)]
pub(crate) fn mine_gated(p: *const u8) -> Option<(*const Heap, usize)> {
    mine_by(p, block_map::owner_and_offset_gated)
}

#[inline(always)]
fn mine_by(p: *const u8, look_up: impl Fn(*const u8) -> Option<(*const (), usize)>) -> Option<(*const Heap, usize)> {
    // A thread without a heap (h null) owns nothing: no live block's owner
    // is null (`block_map::NOT_THREAD_TAG`), and the block map's entries are read
    // only for live blocks.
    let h = current();
    let (owner, off) = look_up(p)?;
    if owner != h.cast() {
        return None;
    }
    Some((h, block_map::class_at_offset(off)))
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
    unsafe { realloc_with::<RawDomain>(p, n) }
}

/// Frees a block from [`malloc`]/[`calloc`]/[`realloc`], from any thread.
///
/// # Safety
/// `p` is null or a live block from these functions, not used again.
#[inline]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: as for realloc, and p is not used again.
    unsafe { free_with::<RawDomain>(p) }
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

/// Statistics of all thread heaps added up (each read under its own lock;
/// counts of pools in use on other threads may be a moment old), plus the
/// shared heap that exiting threads use. The calling thread's outbox is
/// sent first; blocks waiting in other threads' outboxes count as in use.
pub fn stats() -> Stats {
    send_pending_frees();
    let mut total = global_heap().stats();
    thread_heaps::for_each_heap(|h| total.add(&h.stats()));
    total.raw_allocated_blocks += RAW_BLOCKS.load(Ordering::Relaxed);
    total
}

/// Pictures of the arenas of every thread heap and of the shared heap.
pub fn arenas() -> Vec<ArenaInfo> {
    let mut out = global_heap().arenas();
    let mut n = 0;
    thread_heaps::for_each_heap(|h| n += h.arena_count());
    out.reserve(n + 16);
    thread_heaps::for_each_heap(|h| {
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
    send_pending_frees();
    let h = current();
    // SAFETY: h is this thread's heap.
    let mine = if h.is_null() { 0 } else { unsafe { (*h).purge_shared() } };
    mine + thread_heaps::purge_abandoned() + global_heap().purge()
}

/// Sends the blocks of other threads' heaps that the calling thread freed
/// and still holds in its outbox (at most
/// 31 pool blocks) to their
/// owner. A thread's exit, [`purge`] and the statistics do this
/// themselves.
pub fn send_pending_frees() {
    let h = current();
    if !h.is_null() {
        // SAFETY: h is this thread's live heap, and this thread its owner.
        thread_heaps::send_outbox(unsafe { &*h });
    }
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

/// What pins the pages of the calling thread's pools (see
/// [`Heap::pinning`]).
pub fn current_pinning() -> [ClassPinning; NB_SMALL_SIZE_CLASSES] {
    let h = current();
    if h.is_null() {
        [ClassPinning::default(); NB_SMALL_SIZE_CLASSES]
    } else {
        // SAFETY: h is this thread's live heap, and this thread its owner.
        unsafe { (*h).pinning() }
    }
}

/// Gives back the empty pools and free arenas of every thread heap (see
/// [`Heap::release_empty`]; any thread may do it). Returns the bytes.
pub fn release_empty() -> usize {
    let mut bytes = 0;
    thread_heaps::for_each_heap(|h| bytes += h.release_empty());
    bytes
}

/// The calling thread's pinning blocks (see [`Heap::pinning_blocks`]).
pub fn current_pinning_blocks() -> Vec<PinningBlock> {
    let h = current();
    if h.is_null() {
        Vec::new()
    } else {
        // SAFETY: h is this thread's live heap, and this thread its owner.
        unsafe { (*h).pinning_blocks() }
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
