//! Every size from the thread heaps: blocks above 512 bytes from the calling
//! thread's span heap (medium, large and huge blocks in the segment region,
//! see `spans.rs`), with the same per-thread ownership and remote frees as
//! the pool blocks.
//!
//! [`EverySize<F>`] is a [`Fallback`]: a front whose requests above 512
//! bytes would go to `F` sends them here instead, and only what the span
//! heaps cannot serve (no segment region, an exiting thread, alignments
//! above half a segment, 0 bytes) and the blocks `F` already owns go on to
//! `F`. Which block is whose is told by address: the segment region is one
//! reserved range, so the test is one subtraction and one comparison.
//!
//! ```
//! use pymalloc::every_size::{self, EverySize};
//! use pymalloc::Fallback;
//! let p = pymalloc::thread::malloc_with::<EverySize<pymalloc::LibcFallback>>(100_000);
//! // The span heaps' block, unless the address space has no room for their
//! // region (then the fallback's).
//! assert_eq!(every_size::owns(p), pymalloc::regions_reserved());
//! if every_size::owns(p) {
//!     assert!(unsafe { every_size::usable_size(p) } >= 100_000);
//! }
//! unsafe { pymalloc::thread::free_with::<EverySize<pymalloc::LibcFallback>>(p) };
//! ```

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr;

use crate::allocator::MemAllocatorEx;
use crate::fallback::{Fallback, Libc, RawDomain};
use crate::front_cache;
use crate::geometry::{ALIGNMENT, NB_SMALL_SIZE_CLASSES};
use crate::heap::{Heap, DECAY_WAKER};
use crate::pool::launder;
use crate::raw::MAX_SIZE;
use crate::region::SEGMENTS;
use crate::segment::segment_of;
use crate::span_class::MEDIUM_MAX;
use crate::spans::{self, SpanStats};
use crate::{block_map, huge, thread, thread_heaps};

/// A [`Fallback`] that serves blocks above 512 bytes from the thread heaps
/// and hands the rest to `F`. See the module documentation.
pub struct EverySize<F>(PhantomData<F>);

/// True if `p` lies in the segment region: for a live block, exactly "a
/// block above 512 bytes of the thread heaps".
#[inline(always)]
pub fn owns(p: *const u8) -> bool {
    SEGMENTS.contains(p)
}

/// `malloc(n)` of every size from the thread heaps, `F` underneath: the
/// calling thread's front cache first, then
/// [`thread::malloc_with`]`::<EverySize<F>>`. The preload library's
/// `malloc` and the `pymalloc_all` RAW domain are this.
#[inline(always)]
pub fn malloc_with<F: Fallback>(n: usize) -> *mut u8 {
    malloc_through::<F, false>(n, malloc_uncached::<F>)
}

/// [`malloc_with`] behind the gate ([`set_gate`]): while it is shut, every
/// request goes to `slow` (a tracing front's path, which records the block
/// and otherwise takes [`malloc_uncached`]); while it is open, the fast
/// path is [`malloc_with`]'s, instruction for instruction, and `slow`
/// takes what that would hand to [`malloc_uncached`]. A tracing front so
/// pays nothing on its fast paths for being able to trace.
#[inline(always)]
pub fn malloc_gated<F: Fallback>(n: usize, slow: extern "C" fn(usize) -> *mut u8) -> *mut u8 {
    malloc_through::<F, true>(n, slow)
}

/// Shuts (`false`) or opens the gate of the C fronts' [`malloc_gated`],
/// [`malloc_cached_gated`] and [`free_gated`], and of the Rust
/// allocator's (`global.rs`: `alloc_gated`, `dealloc_gated`,
/// `realloc_gated`): the tracer shuts it before it starts tracing and
/// opens it once it has stopped (`trace::start`, `trace::stop`). Shut,
/// the size-to-class table they read gives every size a class whose
/// cache is always empty (`front_cache::SHUT_CLASS`), the pop's mask
/// (`front_cache::POP_GATE`) is above every cache's top, and the
/// block map's gated look-up finds no block: the same loads as the open
/// paths, other answers. What keeps a traced block from being freed by
/// the fast path is the order in `trace::start`: every part is shut
/// before the tracing flag goes up, and a front reads the flag with an
/// acquire load before it traces, so it then sees them shut; the order of
/// the parts here does not matter.
pub(crate) fn set_gate(open: bool) {
    block_map::set_gate(open);
    front_cache::set_gate(open);
}

/// The fast path (the thread's cached block of `n`'s class), behind the
/// gate if `GATED`; `other` takes a size without a class (0, above
/// `MEDIUM_MAX`), a thread without a heap and, gated, everything while the
/// gate is shut.
#[inline(always)]
fn malloc_through<F: Fallback, const GATED: bool>(n: usize, other: extern "C" fn(usize) -> *mut u8) -> *mut u8 {
    let Some((h, c)) = cache_of::<GATED>(n) else { return other(n) };
    // SAFETY: h is this thread's heap and c a cache class or the shut one
    // (cache_of).
    let p = unsafe { (*h).front_cache().pop_unchecked(c) };
    if !p.is_null() {
        return p;
    }
    if GATED && c == front_cache::SHUT_CLASS {
        return other(n);
    }
    // SAFETY: as above; c is n's class.
    unsafe { malloc_mine::<F>(h, n, c) }
}

/// [`malloc_with`]'s first step alone: the calling thread's cached block
/// for `n` bytes, or null (then take [`malloc_with`]; nothing changed).
/// Calls nothing, so that an entry point that must look at the result of
/// the full path (C++'s `operator new`) can keep that path out of line
/// and its own fast path without a stack frame.
#[inline(always)]
pub fn malloc_cached(n: usize) -> *mut u8 {
    malloc_cached_through::<false>(n)
}

/// [`malloc_cached`] behind the gate (see [`malloc_gated`]): null while it
/// is shut.
#[inline(always)]
pub fn malloc_cached_gated(n: usize) -> *mut u8 {
    malloc_cached_through::<true>(n)
}

#[inline(always)]
fn malloc_cached_through<const GATED: bool>(n: usize) -> *mut u8 {
    match cache_of::<GATED>(n) {
        // SAFETY: h is this thread's heap and c a cache class or the shut
        // one, whose cache is empty (cache_of).
        Some((h, c)) => unsafe { (*h).front_cache().pop_unchecked(c) },
        None => ptr::null_mut(),
    }
}

/// The calling thread's heap and the front-cache class of `n`, if `n`
/// (1 to `MEDIUM_MAX`) has one and the thread has a heap; gated, the class
/// is `front_cache::SHUT_CLASS` while the gate is shut.
#[inline(always)]
fn cache_of<const GATED: bool>(n: usize) -> Option<(*const Heap, usize)> {
    if n.wrapping_sub(1) >= MEDIUM_MAX {
        return None;
    }
    let h = thread::current_heap();
    // SAFETY: 1 <= n <= MEDIUM_MAX, the range of cache classes.
    let class = |n| unsafe {
        if GATED {
            front_cache::class_of_size_gated(n)
        } else {
            front_cache::class_of_size(n)
        }
    };
    (!h.is_null()).then(|| (h, class(n)))
}

/// A request of `n` bytes, of cache class `c`, that the calling thread's
/// heap `h` had no cached block for: its pool's or its class's listed
/// span's next block, without working the class out again (a program that
/// allocates a burst of blocks empties its cache, and each further
/// `malloc` would otherwise take the size apart twice); the full path if
/// neither has one.
///
/// # Safety
/// `h` is the calling thread's heap; `c` is the cache class of `n`, whose
/// stack in `h`'s front cache is empty (the pool path does not pop it
/// again).
#[inline(never)]
unsafe extern "C" fn malloc_mine<F: Fallback>(h: *const Heap, n: usize, c: usize) -> *mut u8 {
    if c >= NB_SMALL_SIZE_CLASSES {
        // SAFETY: the contract, and c is a medium cache class: a cache
        // class of n (never the shut one: `malloc_through` returns before
        // this for it) that is not a pool class.
        return unsafe { malloc_mine_span::<F>(h, n, c) };
    }
    // A pool class: its pool path inline and without a stack frame (a
    // burst of allocations takes this for every block once the cache is
    // empty), as `free_mine` keeps the pool free.
    // SAFETY: the contract; the owner calls, and the cache was empty.
    let p = unsafe { (*h).alloc_small_past_cache(c) };
    if !p.is_null() {
        return p;
    }
    malloc_uncached::<F>(n)
}

/// [`malloc_mine`] of a medium class: its first listed span's next block,
/// else the full path.
///
/// # Safety
/// As for [`malloc_mine`]; `c` is a medium cache class.
#[inline(never)]
unsafe extern "C" fn malloc_mine_span<F: Fallback>(h: *const Heap, n: usize, c: usize) -> *mut u8 {
    // SAFETY: the contract; the owner calls.
    let p = unsafe { (*h).alloc_medium_listed(c - NB_SMALL_SIZE_CLASSES) };
    if !p.is_null() {
        return p;
    }
    malloc_uncached::<F>(n)
}

/// [`malloc_with`] past the cache. `extern "C"` (a panic aborts), so that
/// callers tail-call it without a landing pad or a stack frame.
#[inline(never)]
pub extern "C" fn malloc_uncached<F: Fallback>(n: usize) -> *mut u8 {
    thread::malloc_with::<EverySize<F>>(n)
}

/// `free(p)` of every size from the thread heaps, `F` underneath: into the
/// calling thread's front cache if `p` is its block and its class has room;
/// a block of the thread's own whose class is full or closed goes on to
/// its pool or span with the class already read ([`free_mine`]); anything
/// else to [`thread::free_with`]`::<EverySize<F>>`.
///
/// # Safety
/// `p` is null, a live block from [`malloc_with`] and friends, or a live
/// block of `F`; it is not used again.
#[inline(always)]
pub unsafe fn free_with<F: Fallback>(p: *mut u8) {
    // SAFETY: the contract.
    if unsafe { free_front::<F>(p) } {
        return;
    }
    // SAFETY: the contract.
    unsafe { free_uncached::<F>(p) }
}

/// [`free_with`] behind the gate (see [`malloc_gated`]): while it is shut,
/// every block goes to `slow` (a tracing front's path, which untraces it
/// and otherwise takes [`free_uncached`]); while it is open, the fast path
/// is [`free_with`]'s, and `slow` takes what that would hand to
/// [`free_uncached`].
///
/// # Safety
/// As for [`free_with`]; `slow` frees `p` as [`free_uncached`] does.
#[inline(always)]
pub unsafe fn free_gated<F: Fallback>(p: *mut u8, slow: unsafe extern "C" fn(*mut u8)) {
    // SAFETY: the contract.
    if unsafe { free_mine_front::<F>(p, thread::mine_gated(p)) } {
        return;
    }
    // SAFETY: the contract.
    unsafe { slow(p) }
}

/// Frees `p`, a block of the calling thread's heap `h` of cache class `c`
/// as the block map records it: into the front cache if its class has
/// room (inline), else to its pool or span ([`free_mine`]).
///
/// # Safety
/// `h` is the calling thread's heap and `p` a live block of it of cache
/// class `c` (or `NO_CLASS`), not used again.
#[inline(always)]
pub(crate) unsafe fn free_mine_inline<F: Fallback>(h: *const Heap, p: *mut u8, c: usize) {
    // SAFETY: the contract; the owner calls.
    unsafe {
        if !(*h).front_cache().try_push(c, launder(p)) {
            free_mine::<F>(h, p, c);
        }
    }
}

/// Frees `p` and returns true if it is a block of the calling thread's
/// heap: into the front cache if its class has room, else to its pool or
/// span ([`free_mine`]); false, with nothing done, for any other address
/// (another thread's block, `F`'s, null).
///
/// # Safety
/// As for [`free_with`].
#[inline(always)]
pub unsafe fn free_front<F: Fallback>(p: *mut u8) -> bool {
    // SAFETY: the contract; `mine`'s answer for p.
    unsafe { free_mine_front::<F>(p, thread::mine(p)) }
}

/// [`free_front`] with `p`'s look-up made: `mine` is `thread::mine(p)` (or
/// the gated one's, which may say `None` for a block of the thread's own).
///
/// # Safety
/// As for [`free_with`]; `mine` is as said.
#[inline(always)]
unsafe fn free_mine_front<F: Fallback>(p: *mut u8, mine: Option<(*const Heap, usize)>) -> bool {
    let Some((h, c)) = mine else { return false };
    // SAFETY: p is a live block of this thread's heap h (the contract and
    // `mine`), of cache class c as the block map records it (or NO_CLASS).
    unsafe { free_mine_inline::<F>(h, p, c) };
    true
}

/// A block of the calling thread's heap `h`, of cache class `c`, that the
/// front cache did not take: its pool or span path, without looking the
/// block up again (a program that frees a burst of blocks fills its cache,
/// and each further free would otherwise read the block map and then the
/// regions again), and a pool block without looking at the cache again.
/// A large or huge block ([`crate::block_map::NO_CLASS`]) takes the full
/// path.
///
/// # Safety
/// `h` is the calling thread's heap, `p` a live block of it of cache class
/// `c`, not used again, that its class's front cache did not take.
#[inline(never)]
unsafe extern "C" fn free_mine<F: Fallback>(h: *const Heap, p: *mut u8, c: usize) {
    // SAFETY: the contract.
    unsafe {
        if c < NB_SMALL_SIZE_CLASSES {
            // A pool class in the block map: a block of the arena region.
            // Inline, and without a stack frame (a burst of frees takes
            // this for every block past the cache's 32).
            (*h).free_region_block_past_cache(p);
        } else {
            free_mine_span::<F>(h, p, c);
        }
    }
}

/// [`free_mine`] of a medium block (its span path, with a stack frame of
/// its own) or of a large or huge one (the full path).
///
/// # Safety
/// As for [`free_mine`]; `c` is not a pool class.
#[inline(never)]
unsafe extern "C" fn free_mine_span<F: Fallback>(h: *const Heap, p: *mut u8, c: usize) {
    // SAFETY: the contract: a medium block of this heap, or a large or
    // huge one.
    unsafe {
        if c < front_cache::NB_CACHE_CLASSES {
            (*h).free_big(p);
        } else {
            free_uncached::<F>(p);
        }
    }
}

/// [`free_with`] past the cache (see [`malloc_uncached`]): the front's test,
/// `p` having been looked up in the block map already ([`thread::mine`]).
///
/// # Safety
/// As for [`free_with`].
#[inline(never)]
pub unsafe extern "C" fn free_uncached<F: Fallback>(p: *mut u8) {
    // SAFETY: the contract.
    unsafe { thread::free_by_front::<EverySize<F>>(p) }
}

/// Puts `p` in the calling thread's front cache if it is a block of that
/// thread's heap whose class caches and has room (one look at the block
/// map, whichever region it lies in); false, with nothing done, otherwise.
///
/// # Safety
/// `p` is null or a live block of some allocator; if this returns true it
/// is not used again.
#[inline(always)]
pub unsafe fn free_cached(p: *mut u8) -> bool {
    let Some((h, c)) = thread::mine(p) else { return false };
    // SAFETY: p is a live block of this thread's heap h (the contract and
    // `mine`), of cache class c or NO_CLASS; the heap's owner calls.
    unsafe { (*h).front_cache().try_push(c, launder(p)) }
}

/// A block of `n` bytes aligned to `align` (a power of two) from the
/// calling thread's span heap, zeroed if `zero`; null if it cannot serve it
/// (no region, no memory, an exiting thread, an alignment above half a
/// segment). Never calls a fallback.
///
/// The fast path (a block of the class's listed span, for a thread that
/// has its heap) is inline; everything else is [`alloc_slow`].
#[inline(always)]
pub fn alloc(n: usize, align: usize, zero: bool) -> *mut u8 {
    let h = thread::current_heap();
    if !h.is_null() && !zero {
        // SAFETY: h is the calling thread's heap.
        let p = unsafe { (*h).alloc_big_listed(n, align) };
        if !p.is_null() {
            return p;
        }
    }
    alloc_slow(n, align, zero)
}

#[cold]
#[inline(never)]
fn alloc_slow(n: usize, align: usize, zero: bool) -> *mut u8 {
    if n > MAX_SIZE {
        return ptr::null_mut();
    }
    let h = thread::heap();
    if h.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: h is the calling thread's heap.
    unsafe { (*h).alloc_big(n, align, zero) }
}

/// Frees a block of the segment region, from any thread.
///
/// # Safety
/// `p` is a live block of the segment region ([`owns`]), not used again.
#[inline]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: the contract.
    unsafe { free_owned(p, SEGMENTS.owner(p).unwrap_or(ptr::null())) }
}

/// Frees `p` if it is a block of the segment region and returns true;
/// false (and nothing done) for any other address. One look at the region
/// answers both "ours?" and "whose?", where [`owns`] then [`free`] would
/// look twice.
///
/// # Safety
/// `p` is a live block of some allocator; if it is the segment region's,
/// it is not used again.
#[inline(always)]
pub unsafe fn free_if_owned(p: *mut u8) -> bool {
    match SEGMENTS.owner(p) {
        // SAFETY: in the region, so a live block of a segment (the contract).
        Some(owner) => unsafe { free_owned(p, owner) },
        None => return false,
    }
    true
}

/// [`free`] with the owner the region records for `p`'s slot.
///
/// # Safety
/// As for [`free`]; `owner` is `SEGMENTS.owner(p)`.
#[inline(always)]
unsafe fn free_owned(p: *mut u8, owner: *const ()) {
    // SAFETY: the contract: p is a live block of a segment.
    unsafe {
        if spans::is_huge(p) {
            if huge::free_huge(segment_of(p)) {
                DECAY_WAKER.wake_if_parked();
            }
            return;
        }
        let owner = owner.cast::<Heap>();
        let h = thread::current_heap();
        // A segment of live blocks belongs to a thread heap: never to null,
        // which a thread without a heap (h null) reads.
        if owner == h {
            (*h).free_big(p);
        } else {
            free_remote(owner, p);
        }
    }
}

#[cold]
#[inline(never)]
unsafe fn free_remote(owner: *const Heap, p: *mut u8) {
    debug_assert!(
        !owner.is_null() && owner.cast() != crate::block_map::NOT_THREAD_TAG,
        "span segments belong to thread heaps"
    );
    // SAFETY: owner is the live thread heap recorded for p's segment, and
    // p is live and not used again (the caller's contract).
    unsafe {
        Heap::push_remote(owner, p);
        thread_heaps::note_remote_free(owner);
    }
}

/// The usable bytes of a block of the segment region.
///
/// # Safety
/// `p` is a live block of the segment region.
#[inline]
pub unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: the contract.
    unsafe { spans::usable_size(p) }
}

/// Resizes a block of the segment region to `n` bytes aligned to `align`,
/// in place where it can (a block that still fits and would not save half,
/// a large or huge block with room after it); a huge block that cannot
/// grow moves its pages to a longer run elsewhere (`huge::relocate_huge`,
/// no copy); otherwise moves it to a block from `alloc_new`, copying. Null
/// (the block untouched) when that fails.
///
/// # Safety
/// `p` is a live block of the segment region, aligned to `align`; after a
/// non-null return it is not used again.
pub unsafe fn realloc_in(p: *mut u8, n: usize, alloc_new: impl FnOnce(usize) -> *mut u8) -> *mut u8 {
    // SAFETY: the contract: p is live in a segment.
    unsafe {
        let old = spans::usable_size(p);
        if n <= old && n > old / 2 {
            return p;
        }
        if spans::is_huge(p) {
            if huge::resize_huge(segment_of(p), p, n) {
                return p;
            }
            let q = huge::relocate_huge(segment_of(p), p, n);
            if !q.is_null() {
                return q;
            }
        } else if spans::is_large(p) {
            let h = thread::current_heap();
            if SEGMENTS.owner(p) == Some(h.cast()) && (*h).resize_large(p, n) {
                return p;
            }
        }
        let q = alloc_new(n);
        if !q.is_null() {
            ptr::copy_nonoverlapping(p, q, old.min(n));
            free(p);
        }
        q
    }
}

/// Live blocks above 512 bytes of the calling thread's heap (huge blocks:
/// the process's); empty if it has none.
pub fn current_stats() -> SpanStats {
    let h = thread::current_heap();
    if h.is_null() {
        return SpanStats::default();
    }
    // SAFETY: h is this thread's live heap (thread heaps are never freed).
    unsafe { (*h).span_stats() }
}

/// Live blocks above 512 bytes of every thread heap, added up.
pub fn stats() -> SpanStats {
    let mut total = spans::huge_stats();
    thread_heaps::for_each_heap(|h| total.add(&h.span_stats()));
    total
}

/// What no allocator that never moves a block could give back of the
/// blocks above 512 bytes, in bytes: the calling thread's span pages that
/// hold part of a block in use (large blocks whole), every other thread
/// heap's medium and large bytes in use (their free lists are theirs to
/// walk), and the huge blocks in use. The segments' header pages are not in
/// it ([`current_header_page_bytes`]).
pub fn live_page_bytes() -> usize {
    let me = thread::current_heap();
    let mut bytes = spans::huge_stats().huge_bytes + current_live_page_bytes();
    thread_heaps::for_each_heap(|h| {
        if !ptr::eq(h, me) {
            let st = h.span_stats();
            bytes += st.medium_bytes + st.large_bytes;
        }
    });
    bytes
}

pub use crate::spans::segment_header_bytes;

/// Bytes of a span segment ([`SpanStats::segments`] counts them).
pub const SEGMENT_BYTES: usize = crate::segment::SEGMENT_SIZE;

/// The calling thread's span pages that hold part of a block in use
/// (large blocks whole), in bytes; 0 if it has no heap.
pub fn current_live_page_bytes() -> usize {
    current_pages().0
}

/// The header pages of the calling thread's segments that hold a block in
/// use ([`segment_header_bytes`] each): held for the span descriptors, on
/// top of [`current_live_page_bytes`]; 0 if it has no heap.
pub fn current_header_page_bytes() -> usize {
    current_pages().1
}

fn current_pages() -> (usize, usize) {
    let h = thread::current_heap();
    if h.is_null() {
        return (0, 0);
    }
    // SAFETY: h is this thread's live heap: its owner calls.
    unsafe { (*h).span_live_page_bytes() }
}

/// Gives back the free units of every thread heap's span segments, the
/// slots freed huge blocks kept, and the free pages of the calling thread's
/// medium spans in use, now; returns the bytes.
pub fn release_free() -> usize {
    let bytes = crate::huge::release_kept();
    if thread_heaps::heap_count() == 0 {
        return bytes;
    }
    bytes + release_thread_heaps_free()
}

/// [`release_free`]'s work on the thread heaps, out of line: the launcher's
/// default configuration, which has none, runs this function at every full
/// collection, and its code stays in the window of what a run executes
/// (`pymalloc-text-layout`).
#[cold]
#[inline(never)]
fn release_thread_heaps_free() -> usize {
    let mut bytes = 0;
    let h = thread::current_heap();
    if !h.is_null() {
        // SAFETY: h is this thread's live heap: its owner calls.
        bytes += unsafe { (*h).release_span_pages() };
    }
    thread_heaps::for_each_heap(|h| bytes += h.release_free_units());
    bytes
}

static EVERY_SIZE_CTX: u8 = 0;

/// The domain allocator serving every size from the thread heaps (pool
/// blocks up to 512 bytes, spans above), the C library only for what
/// neither can serve: the RAW domain of the `pymalloc_all` configuration.
pub(crate) const fn domain_allocator() -> MemAllocatorEx {
    over::<Libc>(&EVERY_SIZE_CTX)
}

static FRONT_CTX: u8 = 0;

/// MEM and OBJ of the `pymalloc_all` configuration in the threaded mode:
/// every size through the calling thread's front cache, as RAW's
/// [`domain_allocator`] (one class table for 1 byte to 32 KiB, no branch
/// on 512 bytes), and what the thread heaps cannot serve to the RAW domain,
/// as pymalloc always sends it. Through the pool allocator, a request above
/// 512 bytes took that branch, left the front and went through the RAW
/// domain's slot to reach the same span heap (`libpymalloc.so`'s mixed
/// ring, 10% of requests above 512 bytes: docs/every-size.md, nineteenth
/// pass).
pub(crate) const fn front_domain_allocator() -> MemAllocatorEx {
    over::<CountedRaw>(&FRONT_CTX)
}

/// The domain allocator of every size from the thread heaps with `F`
/// underneath, told apart from the others by `ctx`.
const fn over<F: Fallback>(ctx: &'static u8) -> MemAllocatorEx {
    MemAllocatorEx {
        ctx: ctx as *const u8 as *mut c_void,
        malloc: domain_malloc::<F>,
        calloc: domain_calloc::<F>,
        realloc: domain_realloc::<F>,
        free: domain_free::<F>,
    }
}

unsafe extern "C" fn domain_malloc<F: Fallback>(_: *mut c_void, n: usize) -> *mut c_void {
    malloc_with::<F>(n).cast()
}
unsafe extern "C" fn domain_calloc<F: Fallback>(_: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    thread::calloc_with::<EverySize<F>>(nelem, elsize).cast()
}
unsafe extern "C" fn domain_realloc<F: Fallback>(_: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: p is null or live in the domain (the domain caller's
    // contract), so from these entry points or from F.
    unsafe { thread::realloc_with::<EverySize<F>>(p.cast(), n).cast() }
}
unsafe extern "C" fn domain_free<F: Fallback>(_: *mut c_void, p: *mut c_void) {
    // SAFETY: as for domain_realloc, and p is not used again.
    unsafe { free_with::<F>(p.cast()) }
}

/// The RAW domain under MEM and OBJ's every-size front, its live blocks
/// counted as the raw blocks of the statistics (`raw_allocated_blocks`, as
/// pymalloc counts what it hands to RAW: CPython's `sys.getallocatedblocks()`
/// sees them). [`EverySize`] is not counted by the front (its own blocks
/// have statistics of their own), so what it passes on is counted here.
pub(crate) struct CountedRaw;

impl Fallback for CountedRaw {
    #[inline]
    fn malloc(n: usize) -> *mut u8 {
        counted(RawDomain::malloc(n))
    }
    #[inline]
    fn calloc(nelem: usize, elsize: usize) -> *mut u8 {
        counted(RawDomain::calloc(nelem, elsize))
    }
    #[inline]
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
        // SAFETY: p is null or live from RAW (the trait's contract).
        let q = unsafe { RawDomain::realloc(p, n) };
        if p.is_null() {
            counted(q)
        } else {
            q
        }
    }
    #[inline]
    unsafe fn free(p: *mut u8) {
        if !p.is_null() {
            thread::count_raw_blocks(-1);
        }
        // SAFETY: p is null or live from RAW, not used again (the trait's
        // contract).
        unsafe { RawDomain::free(p) }
    }
}

/// `p`, counted as a raw block if it is one.
fn counted(p: *mut u8) -> *mut u8 {
    if !p.is_null() {
        thread::count_raw_blocks(1);
    }
    p
}

impl<F: Fallback> Fallback for EverySize<F> {
    const COUNTED: bool = false;

    #[inline]
    fn malloc(n: usize) -> *mut u8 {
        if n != 0 {
            let p = alloc(n, ALIGNMENT, false);
            if !p.is_null() {
                return p;
            }
        }
        F::malloc(n)
    }

    /// The segment region holds no pool: its blocks are all ours.
    #[inline(always)]
    fn claims(p: *const u8) -> bool {
        owns(p) || F::claims(p)
    }

    #[inline(always)]
    unsafe fn free_if_claimed(p: *mut u8) -> bool {
        // SAFETY: the contract: live, outside the arena region, not used
        // again if ours or F's.
        unsafe { free_if_owned(p) || F::free_if_claimed(p) }
    }

    #[inline]
    fn calloc(nelem: usize, elsize: usize) -> *mut u8 {
        if elsize != 0 && nelem > MAX_SIZE / elsize {
            return ptr::null_mut();
        }
        let n = nelem * elsize;
        if n != 0 {
            let p = alloc(n, ALIGNMENT, true);
            if !p.is_null() {
                return p;
            }
        }
        F::calloc(nelem, elsize)
    }

    #[inline]
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
        if p.is_null() {
            return Self::malloc(n);
        }
        if !owns(p) {
            // SAFETY: a live block of F (the trait's contract).
            return unsafe { F::realloc(p, n) };
        }
        if n > MAX_SIZE {
            return ptr::null_mut();
        }
        // SAFETY: a live block of ours, ALIGNMENT-aligned like all of them.
        unsafe { realloc_in(p, n, Self::malloc) }
    }

    #[inline]
    unsafe fn free(p: *mut u8) {
        // SAFETY: a live block of ours or of F, not used again (the
        // contract).
        if !unsafe { free_if_owned(p) } {
            // SAFETY: null or a live block of F (the contract).
            unsafe { F::free(p) }
        }
    }
}
