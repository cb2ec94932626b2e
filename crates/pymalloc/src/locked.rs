//! A [`Heap`] shared between threads behind a lock.
//!
//! [`LockedHeap`] is the `locked` mode of MEM and OBJ
//! ([`crate::config::PymallocMode::Locked`], the process's
//! [`global_heap`]), the heap exiting threads allocate from, and a
//! thread-safe single-heap alternative to [`PyMalloc`](crate::PyMalloc) as a
//! Rust allocator. Only pool work takes the lock: the ownership test of a
//! live block (the region's bounds, the radix map: lock-free), requests that
//! go to the raw allocator, and the copying done by `realloc` and `calloc`
//! all run outside it.
//!
//! ```
//! use pymalloc::LockedHeap;
//! static HEAP: LockedHeap = LockedHeap::new();
//!
//! let addr = HEAP.malloc(40) as usize; // hand the block to another thread
//! let t = std::thread::spawn(move || unsafe { HEAP.free(addr as *mut u8) });
//! t.join().unwrap();
//! assert_eq!(HEAP.stats().blocks_in_use(), 0);
//! ```

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::{fence, AtomicBool, AtomicIsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::allocator::MemAllocatorEx;
use crate::fallback::{Libc, RawDomain};
use crate::front::{self, Pools};
use crate::geometry::ALIGNMENT;
use crate::heap::{collect_bounded, ArenaInfo, Heap, PinningBlock, PurgePolicy};
use crate::raw;
use crate::stats::Stats;
use crate::sync::{HeldAcrossFork, SpinCell};

/// A [`Heap`] behind a mutex; `Sync`, usable in a `static`.
///
/// The count of live raw blocks is kept outside the mutex, so that the raw
/// path never takes the lock. `used` is set, once, by the first
/// [`LockedHeap::lock`]: until then the heap is all zero bytes, and code
/// that visits every heap (the decay sweep) leaves it alone rather than
/// make its pages resident.
pub struct LockedHeap {
    heap: Mutex<Heap>,
    raw_blocks: AtomicIsize,
    used: AtomicBool,
}

impl Default for LockedHeap {
    fn default() -> Self {
        Self::new()
    }
}

/// Pool work under the lock, one operation per lock.
impl Pools for LockedHeap {
    #[inline(always)]
    fn alloc(&self, c: usize) -> *mut u8 {
        self.lock().alloc_small(c)
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: p is a live pool block of this heap (the trait's contract).
        unsafe { self.lock().free_small(p) }
    }
    #[inline(always)]
    fn fallback_blocks(&self) -> &AtomicIsize {
        &self.raw_blocks
    }
    fn make_room(&self) {
        if self.is_used() {
            self.lock().make_room();
        }
    }
}

static GLOBAL_HEAP: LockedHeap = LockedHeap::new();
static GLOBAL_HELD: HeldAcrossFork<MutexGuard<'static, Heap>> = HeldAcrossFork::new();

/// The shared heap's purge policy, as last set by
/// [`set_global_purge_policy`]: the heap takes it at its first use. Most
/// processes never use the shared heap (only exiting threads and the
/// `locked` mode do), and setting the policy on the heap itself made three
/// of its pages resident in every one.
static GLOBAL_POLICY: SpinCell<Option<PurgePolicy>> = SpinCell::new(None);

/// Sets the purge policy of the shared heap ([`global_heap`]): on the heap
/// if it is in use, else when it is first used.
pub(crate) fn set_global_purge_policy(p: PurgePolicy) {
    GLOBAL_POLICY.set(Some(p));
    // Against a first use on another thread: it sets `used`, then reads
    // the pending policy; this sets the policy, then reads `used`. With a
    // full fence on each side, one of the two sees the other's write.
    fence(Ordering::SeqCst);
    if GLOBAL_HEAP.is_used() {
        set_used_global_purge_policy(p);
    }
}

/// The shared heap's policy set on the heap itself (it is in use): out of
/// line, with the locked heap's code, since most processes never get here.
#[cold]
#[inline(never)]
fn set_used_global_purge_policy(p: PurgePolicy) {
    GLOBAL_HEAP.lock().set_purge_policy(p);
}

/// Takes the shared heap's lock before `fork` (see `crate::fork`).
///
/// # Safety
/// Called by the fork prepare handler, then [`fork_release`] once.
pub(crate) unsafe fn fork_acquire() {
    // The mutex alone: a heap never used stays untouched. Then the pending
    // policy's lock (the order `first_use` takes them in): a child must not
    // inherit it held by a thread that was setting the policy.
    // SAFETY: the prepare handler (our contract).
    unsafe { GLOBAL_HELD.keep(GLOBAL_HEAP.heap.lock().unwrap_or_else(PoisonError::into_inner)) };
    GLOBAL_POLICY.lock.acquire();
}

/// Releases what [`fork_acquire`] took.
///
/// # Safety
/// Called by the fork parent or child handler after `fork_acquire`.
pub(crate) unsafe fn fork_release() {
    // SAFETY: as for fork_acquire, which took both.
    unsafe {
        GLOBAL_POLICY.lock.release();
        GLOBAL_HELD.drop_guard();
    }
}

/// The process's single locked pymalloc heap: MEM and OBJ use it in the
/// `Locked` mode (see [`crate::config::PymallocMode`]), and threads that are
/// exiting allocate from it.
///
/// Until something locks it, it is left untouched (no page of it resident):
/// a purge policy set meanwhile waits for its first use, and the decay
/// sweep and `purge` pass it by.
///
/// ```
/// use pymalloc::{config, global_heap, PurgePolicy};
/// let a = pymalloc::thread::malloc(40); // a thread heap's, not the shared one's
/// config::set_purge_policy(PurgePolicy::Immediate);
/// pymalloc::thread::purge();
/// assert!(!global_heap().is_used());
/// assert_eq!(global_heap().lock().purge_policy(), PurgePolicy::Immediate);
/// assert!(global_heap().is_used());
/// unsafe { pymalloc::thread::free(a) };
/// ```
#[inline(always)]
pub fn global_heap() -> &'static LockedHeap {
    &GLOBAL_HEAP
}

/// The domain allocator over `heap` (see [`MemAllocatorEx::pymalloc`]).
pub(crate) const fn domain_allocator(heap: &'static LockedHeap) -> MemAllocatorEx {
    MemAllocatorEx {
        ctx: heap as *const LockedHeap as *mut c_void,
        malloc: locked_malloc,
        calloc: locked_calloc,
        realloc: locked_realloc,
        free: locked_free,
    }
}

unsafe extern "C" fn locked_malloc(ctx: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: ctx is the &'static LockedHeap given to domain_allocator.
    unsafe { &*ctx.cast::<LockedHeap>() }.malloc(n).cast()
}
unsafe extern "C" fn locked_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: ctx is the &'static LockedHeap given to domain_allocator.
    unsafe { &*ctx.cast::<LockedHeap>() }.calloc(nelem, elsize).cast()
}
unsafe extern "C" fn locked_realloc(ctx: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: ctx is the &'static LockedHeap given to domain_allocator; p is
    // null or live in the domain (the domain caller's contract), so here.
    unsafe { (*ctx.cast::<LockedHeap>()).realloc(p.cast(), n).cast() }
}
unsafe extern "C" fn locked_free(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: as for locked_realloc, and p is not used again.
    unsafe { (*ctx.cast::<LockedHeap>()).free(p.cast()) }
}

impl LockedHeap {
    /// An empty heap (one that retains emptied head pools and caches
    /// blocks: see [`Heap::new_retaining`]). It is made without its block
    /// cache, which its first [`LockedHeap::lock`] turns on: a value of
    /// zero bytes, so a `static` of it lies in `.bss` and costs no page in
    /// a process that never uses it.
    pub const fn new() -> LockedHeap {
        LockedHeap {
            heap: Mutex::new(Heap::new_retaining_uncached()),
            raw_blocks: AtomicIsize::new(0),
            used: AtomicBool::new(false),
        }
    }

    /// Whether the heap has been [locked](Self::lock) (and so set up).
    pub fn is_used(&self) -> bool {
        self.used.load(Ordering::SeqCst)
    }

    /// Exclusive access to the heap, for inspection or configuration
    /// (statistics, [`Heap::validate`], arena allocator).
    ///
    /// Do not allocate from this heap while holding the guard: the lock is
    /// not reentrant.
    #[inline(always)]
    pub fn lock(&self) -> MutexGuard<'_, Heap> {
        // Heap operations do not panic while holding the lock; if a caller's
        // closure did, the heap itself is still consistent.
        let mut heap = self.heap.lock().unwrap_or_else(PoisonError::into_inner);
        if !heap.caches_blocks() {
            self.first_use(&mut heap);
        }
        heap
    }

    /// The first lock: the block cache goes on and, for the shared heap,
    /// the purge policy set meanwhile applies (see
    /// [`set_global_purge_policy`]).
    #[cold]
    #[inline(never)]
    fn first_use(&self, heap: &mut Heap) {
        heap.start_caching();
        self.used.store(true, Ordering::SeqCst);
        if ptr::eq(self, &GLOBAL_HEAP) {
            fence(Ordering::SeqCst);
            if let Some(p) = GLOBAL_POLICY.get() {
                heap.set_purge_policy(p);
            }
        }
    }

    /// See [`Heap::malloc`]; large requests go to the RAW domain.
    #[inline]
    pub fn malloc(&self, nbytes: usize) -> *mut u8 {
        front::object_malloc::<RawDomain>(self, nbytes)
    }

    /// See [`Heap::calloc`].
    #[inline]
    pub fn calloc(&self, nelem: usize, elsize: usize) -> *mut u8 {
        front::object_calloc::<RawDomain>(self, nelem, elsize)
    }

    /// See [`Heap::realloc`].
    ///
    /// # Safety
    /// `p` is null or a live block from this heap's `malloc`, `calloc` or
    /// `realloc`.
    #[inline]
    pub unsafe fn realloc(&self, p: *mut u8, nbytes: usize) -> *mut u8 {
        // SAFETY: p is null or live from this heap's entry points (the
        // contract above): a pool block of this heap or a RAW block.
        unsafe { front::object_realloc::<RawDomain>(self, p, nbytes) }
    }

    /// See [`Heap::free`].
    ///
    /// # Safety
    /// `p` is null or a live block from this heap's `malloc`, `calloc` or
    /// `realloc`, and is not used again.
    #[inline]
    pub unsafe fn free(&self, p: *mut u8) {
        // SAFETY: as for realloc, and p is not used again.
        unsafe { front::object_free::<RawDomain>(self, p) }
    }

    /// Pictures of every live arena (see [`Heap::visit_arenas`]). The vector
    /// is allocated outside the lock, so this may be called even when this
    /// heap is the global allocator.
    pub fn arenas(&self) -> Vec<ArenaInfo> {
        // Not under the mutex: the vector may come from this very heap.
        collect_bounded(|| self.lock().arena_count(), |f| self.lock().visit_arenas(f))
    }

    /// The heap's pinning blocks (see [`Heap::visit_pinning_blocks`]), in a
    /// vector allocated with the lock released (it may come from this heap).
    pub fn pinning_blocks(&self) -> Vec<PinningBlock> {
        let count = || self.lock().pinning().iter().map(|p| p.sparse_blocks).sum();
        collect_bounded(count, |f| self.lock().visit_pinning_blocks(f))
    }

    /// A statistics snapshot.
    pub fn stats(&self) -> Stats {
        let mut s = self.lock().stats();
        s.raw_allocated_blocks = self.raw_blocks.load(core::sync::atomic::Ordering::Relaxed);
        s
    }

    /// Gives back to the OS everything that holds no block (see
    /// [`Heap::purge`]). Returns the bytes given back: none from a heap
    /// never used, which is left untouched.
    #[inline]
    pub fn purge(&self) -> usize {
        if !self.is_used() {
            return 0;
        }
        self.purge_used()
    }

    /// [`Self::purge`] of a heap in use, out of line.
    #[inline(never)]
    fn purge_used(&self) -> usize {
        self.lock().purge()
    }

    // The Rust allocator entry points: any layout, raw fallback straight to
    // the C library.

    #[inline]
    fn alloc_layout(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        if layout.align() <= ALIGNMENT {
            return if zeroed {
                front::object_calloc::<Libc>(self, 1, layout.size())
            } else {
                front::object_malloc::<Libc>(self, layout.size())
            };
        }
        let p = raw::aligned_alloc(layout.align(), layout.size());
        if zeroed && !p.is_null() {
            // SAFETY: p holds layout.size() bytes.
            unsafe { ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }

    #[inline]
    unsafe fn dealloc_layout(&self, p: *mut u8, layout: Layout) {
        if layout.align() <= ALIGNMENT {
            // SAFETY: p came from alloc_layout with this small alignment: a
            // pool block of this heap or a C-library block.
            unsafe { front::object_free::<Libc>(self, p) }
        } else {
            // SAFETY: p came from raw::aligned_alloc.
            unsafe { raw::free(p) }
        }
    }

    #[inline]
    unsafe fn realloc_layout(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= ALIGNMENT {
            // SAFETY: p came from alloc_layout with this small alignment: a
            // pool block of this heap or a C-library block.
            return unsafe { front::object_realloc::<Libc>(self, p, new_size) };
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        let q = self.alloc_layout(new_layout, false);
        if !q.is_null() {
            // SAFETY: both blocks hold at least min(old, new) bytes and differ.
            unsafe {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc_layout(p, layout);
            }
        }
        q
    }
}

// SAFETY: every method honours GlobalAlloc's contract: blocks are at least
// `layout.size()` bytes, aligned to `layout.align()` (pymalloc and glibc
// blocks are ALIGNMENT-aligned; larger alignments use posix_memalign), and a
// failed realloc leaves the old block untouched.
unsafe impl GlobalAlloc for LockedHeap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.alloc_layout(layout, false)
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.alloc_layout(layout, true)
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc contract: p was allocated here with `layout`.
        unsafe { self.dealloc_layout(p, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc contract.
        unsafe { self.realloc_layout(p, layout, new_size) }
    }
}

// SAFETY: blocks are valid for their layout until deallocated, and clones of
// `&LockedHeap` are the same heap. Zero-sized requests get a dangling,
// aligned pointer that deallocate recognises by its zero size.
unsafe impl allocator_api2::alloc::Allocator for &LockedHeap {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        allocate_with(layout, false, |l, z| self.alloc_layout(l, z))
    }
    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        allocate_with(layout, true, |l, z| self.alloc_layout(l, z))
    }
    #[inline]
    unsafe fn deallocate(&self, p: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: Allocator contract: p was allocated here with `layout`.
            unsafe { self.dealloc_layout(p.as_ptr(), layout) }
        }
    }
}

/// Shared body of `Allocator::allocate{,_zeroed}`.
#[inline]
pub(crate) fn allocate_with(
    layout: Layout,
    zeroed: bool,
    alloc: impl FnOnce(Layout, bool) -> *mut u8,
) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
    if layout.size() == 0 {
        let dangling = ptr::without_provenance_mut::<u8>(layout.align());
        // SAFETY: align is non-zero.
        let p = unsafe { NonNull::new_unchecked(dangling) };
        return Ok(NonNull::slice_from_raw_parts(p, 0));
    }
    NonNull::new(alloc(layout, zeroed))
        .map(|p| NonNull::slice_from_raw_parts(p, layout.size()))
        .ok_or(allocator_api2::alloc::AllocError)
}
