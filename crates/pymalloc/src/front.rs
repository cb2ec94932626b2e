//! The front: CPython's composite entry points (`_PyObject_Malloc`,
//! `_PyObject_Calloc`, `_PyObject_Realloc`, `_PyObject_Free`), written
//! once for every way of reaching pool blocks.
//!
//! A mode supplies two things as types: where pool blocks come from
//! ([`Pools`]: one heap used directly, a heap behind a lock, the calling
//! thread's heap) and where the rest goes ([`Fallback`]). The rules are
//! CPython's:
//!
//! * requests of 1 to 512 bytes come from a pool; 0 bytes, larger requests,
//!   and small ones no arena can serve go to the fallback;
//! * `calloc` fails without a call when the product overflows `isize::MAX`;
//! * `realloc` keeps a pool block in place while the new size fits its class
//!   and is over three quarters of it, and moves it otherwise; a fallback
//!   block stays with the fallback;
//! * `free` and `realloc` tell pool blocks from fallback blocks by address
//!   ([`is_pool_block`]), outside any lock.
//!
//! The front knows pools and fallbacks, not heaps, so it sits below the heap
//! in the import order; the modes (`locked.rs`, `gil.rs`, `thread.rs`, and
//! `Heap`'s own methods) instantiate it.

use core::ptr;
use core::sync::atomic::{AtomicIsize, Ordering};

use crate::fallback::Fallback;
use crate::geometry::{class_size, size_class};
use crate::ownership::owns_live;
use crate::pool::{class_of, launder};
use crate::radix::ARENA_MAP;
use crate::raw::MAX_SIZE;
use crate::region;

/// Whether `p`, a live block of the pools or of `F`, is a pool block: in
/// the arena region (one comparison), else not claimed by `F` (a fallback
/// with a region of its own answers with one comparison more), else in
/// the radix map of arenas from outside the region. Exact for live
/// blocks, as [`owns_live`] is, which it refines with `F`'s answer.
#[inline(always)]
fn is_pool_block<F: Fallback>(p: *const u8) -> bool {
    region::contains(p) || (!F::claims(p) && ARENA_MAP.contains(p))
}

/// Where a front's pool blocks come from.
pub(crate) trait Pools {
    /// A block of size class `c`, or null if no arena can be had.
    fn alloc(&self, c: usize) -> *mut u8;
    /// A block of size class `c` if one is at hand, or null: then the
    /// front calls [`Pools::alloc`]. A source whose fast path calls nothing
    /// says so here, and the entry points' fast paths need no stack frame.
    #[inline(always)]
    fn alloc_at_hand(&self, c: usize) -> *mut u8 {
        self.alloc(c)
    }
    /// Frees a pool block.
    ///
    /// # Safety
    /// `p` is a live pool block handed out by this source's `alloc`, not
    /// used again.
    unsafe fn free(&self, p: *mut u8);
    /// [`Pools::free`] of a block of the arena region at offset `off`
    /// (`region::arena_offset(p)`), for sources that can use the offset
    /// rather than look at the region again.
    ///
    /// # Safety
    /// As for [`Pools::free`], and `off` is `p`'s offset in the region.
    #[inline(always)]
    unsafe fn free_in_region(&self, p: *mut u8, off: usize) {
        let _ = off;
        // SAFETY: the contract.
        unsafe { self.free(p) }
    }
    /// The count of live blocks this source's front handed to its fallback
    /// (`raw_allocated_blocks` in the statistics).
    fn fallback_blocks(&self) -> &AtomicIsize;
    /// A request of at least [`ROOM_MIN`] bytes is going to the fallback:
    /// the source's heap gives back the memory it keeps free, as its policy
    /// says ([`crate::Heap::make_room`]).
    fn make_room(&self);
}

/// Requests of this size or more to the fallback grow the process by as
/// much: the pools' source gives back its kept free memory first
/// ([`Pools::make_room`]). An arena's size.
pub(crate) const ROOM_MIN: usize = crate::geometry::ARENA_SIZE;

/// Before a request of `nbytes` to the fallback: one of [`ROOM_MIN`] or
/// more makes room first ([`Pools::make_room`]).
#[inline(always)]
fn make_room_for(pools: &impl Pools, nbytes: usize) {
    if nbytes >= ROOM_MIN {
        pools.make_room();
    }
}

/// `_PyObject_Malloc`.
#[inline(always)]
pub(crate) fn object_malloc<F: Fallback>(pools: &impl Pools, nbytes: usize) -> *mut u8 {
    match size_class(nbytes) {
        Some(c) => {
            let p = pools.alloc_at_hand(c);
            if !p.is_null() {
                return p;
            }
            small_malloc_slow::<F, _>(pools, c, nbytes)
        }
        None => fallback_malloc::<F, _>(pools, nbytes),
    }
}

/// [`object_malloc`] of class `c` when no block was at hand: the source's
/// full path, then the fallback if no arena can be had.
///
/// `extern "C"` because such a function cannot unwind (a panic aborts):
/// the C entry points, which may not unwind either, can then tail-call it,
/// where a call that might unwind needs a landing pad and a stack frame.
#[inline(never)]
extern "C" fn small_malloc_slow<F: Fallback, P: Pools>(pools: &P, c: usize, nbytes: usize) -> *mut u8 {
    let p = pools.alloc(c);
    if !p.is_null() {
        return p;
    }
    fallback_malloc::<F, _>(pools, nbytes)
}

/// The fallback's block, counted. `extern "C"` for the reason
/// [`small_malloc_slow`] is.
#[inline(never)]
extern "C" fn fallback_malloc<F: Fallback, P: Pools>(pools: &P, nbytes: usize) -> *mut u8 {
    make_room_for(pools, nbytes);
    let p = F::malloc(nbytes);
    if F::COUNTED && !p.is_null() {
        pools.fallback_blocks().fetch_add(1, Ordering::Relaxed);
    }
    p
}

/// `_PyObject_Calloc`: null if the product overflows `isize::MAX`.
#[inline]
pub(crate) fn object_calloc<F: Fallback>(pools: &impl Pools, nelem: usize, elsize: usize) -> *mut u8 {
    if elsize != 0 && nelem > MAX_SIZE / elsize {
        return ptr::null_mut();
    }
    let nbytes = nelem * elsize;
    if let Some(c) = size_class(nbytes) {
        let p = pools.alloc(c);
        if !p.is_null() {
            // SAFETY: p is a fresh block of at least nbytes.
            unsafe { ptr::write_bytes(p, 0, nbytes) };
            return p;
        }
    }
    make_room_for(pools, nbytes);
    let p = F::calloc(nelem, elsize);
    if F::COUNTED && !p.is_null() {
        pools.fallback_blocks().fetch_add(1, Ordering::Relaxed);
    }
    p
}

/// `_PyObject_Realloc`. On failure returns null and `p` is untouched.
///
/// # Safety
/// `p` is null, a live pool block of `pools`, or a live block of `F`.
#[inline]
pub(crate) unsafe fn object_realloc<F: Fallback>(pools: &impl Pools, p: *mut u8, nbytes: usize) -> *mut u8 {
    if p.is_null() {
        return object_malloc::<F>(pools, nbytes);
    }
    if !is_pool_block::<F>(p) {
        // SAFETY: p is a live fallback block (caller's contract).
        return unsafe { fallback_realloc::<F>(pools, p, nbytes) };
    }
    let p = launder(p);
    // SAFETY: p is a live pool block (caller's contract).
    let mut size = class_size(unsafe { class_of(p) });
    if nbytes <= size {
        // Shrinking (or same): stay unless at least a quarter would be saved.
        if 4 * nbytes > 3 * size {
            return p;
        }
        size = nbytes;
    }
    let bp = object_malloc::<F>(pools, nbytes);
    if !bp.is_null() {
        // SAFETY: the new block is distinct from p, and both hold at least
        // `size` bytes; p is a live pool block of `pools` until freed here.
        unsafe {
            ptr::copy_nonoverlapping(p, bp, size);
            pools.free(p);
        }
    }
    bp
}

/// [`object_realloc`] of a fallback block: the fallback keeps managing it.
///
/// # Safety
/// `p` is a live block of `F`.
#[inline(never)]
unsafe fn fallback_realloc<F: Fallback>(pools: &impl Pools, p: *mut u8, nbytes: usize) -> *mut u8 {
    make_room_for(pools, nbytes);
    // SAFETY: the contract.
    unsafe { F::realloc(p, nbytes) }
}

/// The usable size of a pool block (its size class), or `None` for null
/// and for any address pymalloc does not own (a fallback block, or a block
/// of another allocator altogether).
///
/// # Safety
/// `p` is null, not owned by pymalloc, or a live pool block.
pub unsafe fn usable_size(p: *const u8) -> Option<usize> {
    if p.is_null() || !owns_live(p) {
        return None;
    }
    // SAFETY: an owned address is a live pool block (the contract).
    Some(class_size(unsafe { class_of(launder(p.cast_mut())) }))
}

/// `_PyObject_Free`; null does nothing.
///
/// # Safety
/// `p` is null, a live pool block of `pools`, or a live block of `F`; it is
/// not used again.
#[inline(always)]
pub(crate) unsafe fn object_free<F: Fallback>(pools: &impl Pools, p: *mut u8) {
    if p.is_null() {
        return;
    }
    // SAFETY: p is a live pool block of `pools` or a live block of `F`
    // (caller's contract), told apart as `is_pool_block` does, with the
    // fallback's own region looked at (and its block freed) at once.
    unsafe {
        if let Some(off) = region::arena_offset(p) {
            pools.free_in_region(p, off);
        } else if F::free_if_claimed(p) {
            if F::COUNTED {
                pools.fallback_blocks().fetch_sub(1, Ordering::Relaxed);
            }
        } else if ARENA_MAP.contains(p) {
            pools.free(p);
        } else {
            fallback_free::<F>(pools, p);
        }
    }
}

#[inline(never)]
unsafe fn fallback_free<F: Fallback>(pools: &impl Pools, p: *mut u8) {
    // SAFETY: a live fallback block, not used again (caller's contract).
    unsafe { F::free(p) };
    if F::COUNTED {
        pools.fallback_blocks().fetch_sub(1, Ordering::Relaxed);
    }
}
