//! The GIL mode: one heap with no lock at all, for callers that serialise
//! themselves, as CPython's callers of MEM and OBJ hold the GIL
//! ([`crate::config::PymallocMode::Gil`], the launcher's default).
//!
//! The heap retains head pools and has no block cache
//! ([`Heap::new_retaining_uncached`]). Its domain allocator starts with fast
//! paths that call nothing (`Heap::alloc_fast_uncached`,
//! `Heap::free_fast_uncached`) and otherwise tail-calls the front, so the
//! common case needs no stack frame.

use core::ffi::c_void;

use crate::allocator::MemAllocatorEx;
use crate::fallback::RawDomain;
use crate::front;
use crate::geometry::size_class;
use crate::heap::{Heap, PurgePolicy};

/// A [`Heap`] used with no lock by callers that serialise themselves (a
/// GIL): see [`MemAllocatorEx::pymalloc_gil`].
pub struct GilHeap(Heap);

// SAFETY: the contract of MemAllocatorEx::pymalloc_gil (and of every
// method below) is that calls are serialised; the heap's cross-thread
// readers (statistics) go through its own bookkeeping lock.
unsafe impl Sync for GilHeap {}

impl GilHeap {
    /// An empty heap: it retains head pools but has no block cache
    /// ([`Heap::new_retaining_uncached`]), which the fast paths of
    /// [`MemAllocatorEx::pymalloc_gil`] rely on. In CPython's workloads a
    /// freed block is rarely the next one asked for, and the cache's flushes
    /// cost more than they save (callgrind, pyperformance's float).
    pub const fn new() -> GilHeap {
        GilHeap(Heap::new_retaining_uncached())
    }

    /// The heap, for statistics and inspection (its shared-access methods).
    pub fn heap(&self) -> &Heap {
        &self.0
    }

    /// Sets the heap's purge policy (from any thread: the policy lives under
    /// the heap's bookkeeping lock).
    pub fn set_purge_policy(&self, p: PurgePolicy) {
        self.0.set_purge_policy_shared(p);
    }
}

impl Default for GilHeap {
    fn default() -> Self {
        Self::new()
    }
}

static GIL_HEAP: GilHeap = GilHeap::new();

/// The process's unlocked pymalloc heap, for the `Gil` mode.
#[inline(always)]
pub fn gil_heap() -> &'static GilHeap {
    &GIL_HEAP
}

/// The domain allocator over `heap` (see [`MemAllocatorEx::pymalloc_gil`]).
///
/// # Safety
/// Every call through the returned allocator must be serialised by the
/// caller.
pub(crate) const unsafe fn domain_allocator(heap: &'static GilHeap) -> MemAllocatorEx {
    MemAllocatorEx {
        ctx: heap as *const GilHeap as *mut c_void,
        malloc: gil_malloc,
        calloc: gil_calloc,
        realloc: gil_realloc,
        free: gil_free,
    }
}

/// The heap behind a GIL allocator's context.
///
/// # Safety
/// `ctx` is the `&'static GilHeap` given to [`domain_allocator`], and the
/// caller holds the lock that serialises its calls.
#[inline(always)]
unsafe fn heap_of<'a>(ctx: *mut c_void) -> &'a Heap {
    // SAFETY: per the contract.
    unsafe { &(*ctx.cast::<GilHeap>()).0 }
}

unsafe extern "C" fn gil_malloc(ctx: *mut c_void, n: usize) -> *mut c_void {
    if let Some(c) = size_class(n) {
        // SAFETY: ctx is our GilHeap and calls are serialised (the domain
        // allocator's contract).
        let p = unsafe { heap_of(ctx) }.alloc_fast_uncached(c);
        if !p.is_null() {
            return p.cast();
        }
    }
    // SAFETY: ctx is our GilHeap; calls are serialised.
    unsafe { gil_malloc_full(ctx, n) }
}
#[inline(never)]
unsafe extern "C" fn gil_malloc_full(ctx: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: ctx is our GilHeap and calls are serialised.
    front::object_malloc::<RawDomain>(unsafe { heap_of(ctx) }, n).cast()
}
unsafe extern "C" fn gil_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: ctx is our GilHeap and calls are serialised.
    front::object_calloc::<RawDomain>(unsafe { heap_of(ctx) }, nelem, elsize).cast()
}
unsafe extern "C" fn gil_realloc(ctx: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: ctx is our GilHeap and calls are serialised; p is null or live
    // in the domain (the domain caller's contract): a block of this heap or
    // of RAW.
    unsafe { front::object_realloc::<RawDomain>(heap_of(ctx), p.cast(), n).cast() }
}
unsafe extern "C" fn gil_free(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: ctx is our GilHeap, whose heap has no block cache
    // (GilHeap::new); calls are serialised; p is null or live in the domain.
    if unsafe { heap_of(ctx).free_fast_uncached(p.cast()) } {
        return;
    }
    // SAFETY: ctx is our GilHeap and calls are serialised; p is null or live
    // in the domain, and not used again.
    unsafe { gil_free_full(ctx, p) }
}
#[inline(never)]
unsafe extern "C" fn gil_free_full(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: ctx is our GilHeap and calls are serialised; p is null or live
    // in the domain, and not used again.
    unsafe { front::object_free::<RawDomain>(heap_of(ctx), p.cast()) }
}
