//! [`PyMalloc`]: pymalloc as the Rust global allocator.
//!
//! ```
//! #[global_allocator]
//! static ALLOC: pymalloc::PyMalloc = pymalloc::PyMalloc;
//!
//! let v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
//! assert_eq!(v[999], "999");
//! assert!(pymalloc::owns(v[0].as_ptr())); // small strings live in pools
//! ```
//!
//! It allocates from per-thread heaps ([`crate::thread`]): no global lock,
//! blocks may be freed by any thread. Any [`Layout`] is honoured: small
//! blocks with alignments up to [`ALIGNMENT`] come from pools, the rest from
//! the thread heaps' spans ([`crate::every_size`]: any alignment up to half
//! a megabyte). What those cannot serve (and everything above 512 bytes for
//! [`PyMallocSmall`]) goes straight to the C library, not through the RAW
//! domain, so a hook installed on RAW may itself allocate Rust values.
//!
//! Because Rust hands the layout back on deallocation, blocks here follow one
//! rule that makes freeing cheap: a block always lives in the size class of
//! its layout's size (a small request never falls back to the C library, and
//! `realloc` keeps a block in place only within its class). `dealloc` then
//! knows from the layout alone whether the block is in a pool.
//! [`LockedHeap`](crate::LockedHeap) is the single-heap alternative.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use crate::fallback::Libc;
use crate::geometry::{size_class, ALIGNMENT, SMALL_REQUEST_THRESHOLD};
use crate::heap::Heap;
use crate::{every_size, front_cache, raw, thread};

/// The Rust allocator handle of pymalloc's per-thread heaps, serving every
/// size: blocks above 512 bytes come from the thread heaps' spans
/// ([`crate::every_size`]). Thread-safe.
#[derive(Clone, Copy, Debug, Default)]
pub struct PyMalloc;

/// Like [`PyMalloc`], but only blocks of up to 512 bytes are pymalloc's;
/// larger ones come from the C library (CPython's division of labour).
#[derive(Clone, Copy, Debug, Default)]
pub struct PyMallocSmall;

#[inline(always)]
fn pooled(l: Layout) -> Option<usize> {
    if l.align() <= ALIGNMENT {
        size_class(l.size())
    } else {
        None
    }
}

// Both impls: blocks are at least `layout.size()` bytes and aligned
// to `layout.align()` (pool blocks and glibc blocks are ALIGNMENT-aligned,
// span blocks are served at the alignment asked; larger alignments from the
// C library use posix_memalign); a failed realloc leaves the old block
// untouched; dealloc routes each block by the rule above, which alloc and
// realloc keep, and tells span blocks from C-library blocks by address.
// SAFETY: as just said.
unsafe impl GlobalAlloc for PyMalloc {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        alloc::<true>(l)
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        alloc_zeroed::<true>(l)
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: GlobalAlloc's contract.
        unsafe { dealloc::<true>(p, l) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract.
        unsafe { realloc::<true>(p, l, new_size) }
    }
}

// SAFETY: as for PyMalloc.
unsafe impl GlobalAlloc for PyMallocSmall {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        alloc::<false>(l)
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        alloc_zeroed::<false>(l)
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: GlobalAlloc's contract.
        unsafe { dealloc::<false>(p, l) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract.
        unsafe { realloc::<false>(p, l, new_size) }
    }
}

#[inline(always)]
fn alloc<const ALL: bool>(l: Layout) -> *mut u8 {
    if let Some(c) = pooled(l) {
        return thread::alloc_small(c);
    }
    alloc_other::<ALL>(l, false)
}

#[inline(always)]
fn alloc_zeroed<const ALL: bool>(l: Layout) -> *mut u8 {
    if let Some(c) = pooled(l) {
        let p = thread::alloc_small(c);
        if !p.is_null() {
            // SAFETY: a fresh block of at least l.size() bytes.
            unsafe { ptr::write_bytes(p, 0, l.size()) };
        }
        return p;
    }
    alloc_other::<ALL>(l, true)
}

/// A block of the calling thread's heap into its front cache or to its
/// pool or span, found by one look at the block map (any size: the map
/// records the owner and class of every pool and span); anything else
/// (another thread's block, the C library's, a thread without a heap)
/// out of line by its layout.
#[inline(always)]
unsafe fn dealloc<const ALL: bool>(p: *mut u8, l: Layout) {
    // SAFETY: the caller's contract.
    unsafe { dealloc_through::<ALL>(p, l, thread::mine, || dealloc_elsewhere::<ALL>(p, l)) }
}

/// [`dealloc`] with the block map read by `mine` ([`thread::mine`] or its
/// gated twin) and `other` taking what it does not find the thread's own.
/// Without ALL, only a pool layout's block may be the heaps'.
///
/// # Safety
/// As for [`dealloc`]; `other` frees `p`.
#[inline(always)]
unsafe fn dealloc_through<const ALL: bool>(
    p: *mut u8,
    l: Layout,
    mine: impl FnOnce(*const u8) -> Option<(*const Heap, usize)>,
    other: impl FnOnce(),
) {
    if ALL || pooled(l).is_some() {
        if let Some((h, c)) = mine(p) {
            // SAFETY: p is live from this allocator (the contract), and the
            // block map says it is a block of this thread's heap h, of
            // cache class c.
            unsafe { every_size::free_mine_inline::<Libc>(h, p, c) };
            return;
        }
    }
    other()
}

/// [`dealloc`] of a block that is not the calling thread's own, by its
/// layout: a pool block to its owner, anything else to the span heaps or
/// the C library.
///
/// # Safety
/// As for [`dealloc`].
#[inline(never)]
unsafe fn dealloc_elsewhere<const ALL: bool>(p: *mut u8, l: Layout) {
    if pooled(l).is_some() {
        // SAFETY: by the rule, a block of this layout lives in a pool.
        unsafe { thread::free_small(p) };
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { dealloc_other::<ALL>(p) }
}

/// [`dealloc`] of a block outside the pools: out of line, so that a pool
/// block's free needs no stack frame (the huge and decay paths below
/// would give it one).
///
/// # Safety
/// `p` is a live block of the span heaps or of the C library, not used
/// again.
#[inline(never)]
unsafe fn dealloc_other<const ALL: bool>(p: *mut u8) {
    // SAFETY: the contract.
    if ALL && unsafe { every_size::free_if_owned(p) } {
        return;
    }
    // SAFETY: other blocks come from the C library.
    unsafe { raw::free(p) }
}

#[inline(always)]
unsafe fn realloc<const ALL: bool>(p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
    // A pool block whose class holds the new size stays, with no call (so
    // no stack frame); anything else out of line.
    if l.align() <= ALIGNMENT {
        if let (Some(a), Some(b)) = (size_class(l.size()), size_class(new_size)) {
            if a == b {
                return p;
            }
        }
    }
    // SAFETY: GlobalAlloc's contract.
    unsafe { realloc_moving::<ALL>(p, l, new_size) }
}

/// [`realloc`] past its in-place case.
///
/// # Safety
/// As for [`realloc`].
#[inline(never)]
unsafe fn realloc_moving<const ALL: bool>(p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
    if l.align() > ALIGNMENT {
        // SAFETY: p was allocated here with l (GlobalAlloc's contract).
        return unsafe { realloc_by_copy::<ALL>(p, l, new_size) };
    }
    match (size_class(l.size()), size_class(new_size)) {
        // (Both in one class: `realloc` kept the block in place.)
        (None, None) if ALL && every_size::owns(p) => {
            // SAFETY: a live span block, ALIGNMENT-aligned.
            unsafe {
                every_size::realloc_in(p, new_size, |n| {
                    alloc_other::<true>(Layout::from_size_align_unchecked(n, ALIGNMENT), false)
                })
            }
        }
        (None, None) => {
            // SAFETY: a C-library block.
            unsafe { raw::realloc(p, new_size) }
        }
        _ => {
            // SAFETY: p was allocated here with l (GlobalAlloc's contract).
            unsafe { realloc_by_copy::<ALL>(p, l, new_size) }
        }
    }
}

// ---- behind the tracer's gate ----
//
// What `trace::Traced` runs for these two allocators (their `TraceGate`
// methods; `traced` is the wrapper's traced path: the plain call, recorded
// while tracing is on). The tracer shuts the gate (`every_size::set_gate`)
// from before tracing starts until it has stopped, and it lives in loads
// the fast paths make anyway:
// * an allocation's pop from the thread's cache compares the class's top
//   with its base ORed with the gate's mask (0 open, all ones shut, so
//   that every stack reads empty), where the plain pop compares with the
//   base: a load and an `or` (LLVM does not fold the atomic load in);
// * a free's look at the block map takes the reservation's gated size (0
//   shut), so that no block is the thread's own;
// * a `realloc` within its class reads the new size's class from the gated
//   table.
// Shut, every call reaches `traced`; open, the fast paths are the plain
// ones with the mask's load and `or` more on an allocation, and no tracing
// flag is read. What they do not serve goes to `traced`, or (a pool class the
// cache could not serve) to the plain path once the gate is seen open.

/// [`alloc`] (or [`alloc_zeroed`]) behind the gate: the plain path with
/// its pop from the thread's cache gated ([`FrontCache::pop_gated`] with
/// the gate's mask), so that a hit costs two instructions more than the
/// plain one (the mask's load and its `or`). Everything past the pop and the pool at hand, everything while
/// the gate is shut, and a zeroed block go to [`alloc_rest_gated`]. This
/// keeps the inlined body as small as the plain one (one callee past the
/// pool at hand): LLVM inlines the plain `__rust_alloc` into its callers
/// at a cost just under its threshold (245 of 250), and a body over it
/// costs each call site a call and its constant-folded class.
///
/// [`FrontCache::pop_gated`]: crate::front_cache::FrontCache::pop_gated
#[inline(always)]
pub(crate) fn alloc_gated<const ALL: bool>(
    l: Layout,
    zero: bool,
    traced: impl FnOnce(Layout, bool) -> *mut u8,
) -> *mut u8 {
    if zero {
        // Out of line: a zeroed block costs its memset anyway, and the
        // inline paths stay those of `alloc`.
        // SAFETY: l's own size and alignment.
        return unsafe { alloc_rest_gated::<ALL, true>(l.size(), l.align(), traced) };
    }
    let p = 'fast: {
        if let Some(c) = pooled(l) {
            let h = thread::current_heap();
            if !h.is_null() {
                // SAFETY: h is this thread's heap, c a pool class.
                let p = unsafe { (*h).front_cache().pop_gated(c, front_cache::pop_gate()) };
                if !p.is_null() {
                    break 'fast p;
                }
                // A miss reads the gate again, and reopens the class only
                // if its stack is empty: a gate opened since the pop would
                // otherwise let the reopening (which sets the top to the
                // base) drop the blocks the shut gate hid. Keeping the
                // first load for this test instead cost the hit path a
                // register copy.
                // SAFETY: as above.
                if !front_cache::gate_is_shut() && unsafe { (*h).front_cache().cached(c) } == 0 {
                    // SAFETY: as above.
                    let p = unsafe { (*h).alloc_small_past_cache(c) };
                    if !p.is_null() {
                        break 'fast p;
                    }
                }
            }
        }
        // SAFETY: as above.
        return unsafe { alloc_rest_gated::<ALL, false>(l.size(), l.align(), traced) };
    };
    p
}

/// [`alloc_gated`] past its fast paths: `traced` while the gate is shut,
/// else the plain path (a layout the pools do not serve; a thread without
/// a heap, which it makes).
///
/// The layout comes as its size and alignment, in `__rust_alloc`'s order:
/// a tail call from it then moves no register (a `Layout` argument is
/// passed alignment first, and the pair's swap made the register
/// allocator copy the size aside at every entry).
///
/// # Safety
/// `size` and `align` are a `Layout`'s.
#[inline(never)]
unsafe fn alloc_rest_gated<const ALL: bool, const ZERO: bool>(
    size: usize,
    align: usize,
    traced: impl FnOnce(Layout, bool) -> *mut u8,
) -> *mut u8 {
    // SAFETY: the contract.
    let l = unsafe { Layout::from_size_align_unchecked(size, align) };
    if front_cache::gate_is_shut() {
        return traced(l, ZERO);
    }
    if ZERO {
        alloc_zeroed::<ALL>(l)
    } else {
        alloc::<ALL>(l)
    }
}

/// [`dealloc`] behind the gate: the block map read through it, so that
/// every block goes to `traced` while it is shut.
///
/// # Safety
/// As for [`dealloc`]; `traced` frees `p` as `dealloc` would.
#[inline(always)]
pub(crate) unsafe fn dealloc_gated<const ALL: bool>(p: *mut u8, l: Layout, traced: impl FnOnce(*mut u8, Layout)) {
    // SAFETY: the contract.
    unsafe { dealloc_through::<ALL>(p, l, thread::mine_gated, || traced(p, l)) }
}

/// [`realloc`] behind the gate: a pool block whose class holds the new
/// size stays, its class read through the gate; anything else to `traced`.
///
/// # Safety
/// As for [`realloc`]; `traced` is `realloc`'s call.
#[inline(always)]
pub(crate) unsafe fn realloc_gated(
    p: *mut u8,
    l: Layout,
    new_size: usize,
    traced: impl FnOnce(*mut u8, Layout, usize) -> *mut u8,
) -> *mut u8 {
    if l.align() <= ALIGNMENT && new_size.wrapping_sub(1) < SMALL_REQUEST_THRESHOLD {
        if let Some(a) = size_class(l.size()) {
            // SAFETY: 1 <= new_size <= 512; a pool class's cache class is
            // its size class.
            if unsafe { front_cache::class_of_size_gated(new_size) } == a {
                return p;
            }
        }
    }
    traced(p, l, new_size)
}

#[inline(never)]
fn alloc_other<const ALL: bool>(l: Layout, zero: bool) -> *mut u8 {
    if ALL {
        let p = every_size::alloc(l.size(), l.align(), zero);
        if !p.is_null() {
            return p;
        }
    }
    if l.align() <= ALIGNMENT {
        return if zero { raw::calloc(1, l.size()) } else { raw::malloc(l.size()) };
    }
    let p = raw::aligned_alloc(l.align(), l.size());
    if zero && !p.is_null() {
        // SAFETY: p holds l.size() bytes.
        unsafe { ptr::write_bytes(p, 0, l.size()) };
    }
    p
}

/// A new block of the new layout, the contents copied, the old block freed.
#[inline(never)]
unsafe fn realloc_by_copy<const ALL: bool>(p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
    let Ok(nl) = Layout::from_size_align(new_size, l.align()) else {
        return ptr::null_mut();
    };
    // SAFETY: GlobalAlloc contract: p was allocated with l; nl is valid.
    unsafe {
        let q = alloc::<ALL>(nl);
        if !q.is_null() {
            ptr::copy_nonoverlapping(p, q, l.size().min(new_size));
            dealloc::<ALL>(p, l);
        }
        q
    }
}

// SAFETY: delegates to the GlobalAlloc implementation above; zero-sized
// requests get a dangling aligned pointer that deallocate recognises.
unsafe impl allocator_api2::alloc::Allocator for PyMalloc {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        // SAFETY: non-zero sizes only (allocate_with handles zero).
        crate::locked::allocate_with(layout, false, |l, _| unsafe { GlobalAlloc::alloc(self, l) })
    }
    #[inline]
    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        // SAFETY: allocate_with calls the closure for non-zero sizes only.
        crate::locked::allocate_with(layout, true, |l, _| unsafe { GlobalAlloc::alloc_zeroed(self, l) })
    }
    #[inline]
    unsafe fn deallocate(&self, p: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: Allocator contract: p was allocated here with `layout`.
            unsafe { GlobalAlloc::dealloc(self, p.as_ptr(), layout) }
        }
    }
}
