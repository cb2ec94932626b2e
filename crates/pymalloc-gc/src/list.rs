//! The circular doubly linked lists of GC headers (CPython's `gc_list_*`) and
//! the accessors of the flag bits and `gc_refs` kept in `GcHead::prev`.
//!
//! Every function takes raw header pointers; the invariants are those of
//! [`GcHead`](crate::object::GcHead). A list head is a `GcHead` whose flags are
//! always zero; an empty list's head points to itself both ways.

use core::ptr;

use crate::object::{
    GcHead, NEXT_MASK_UNREACHABLE, PREV_FLAGS, PREV_MASK_COLLECTING, PREV_MASK_FINALIZED, PREV_MASK_WEAKREFS,
    PREV_SHIFT,
};

// All functions below share one contract, stated once: every header pointer
// passed in is a live `GcHead` (an object's or a list head), and the lists
// involved satisfy the invariants documented at `GcHead`.

/// `GC_NEXT` (bit 0 must be clear).
#[inline(always)]
pub(crate) unsafe fn next(g: *mut GcHead) -> *mut GcHead {
    // SAFETY: module contract.
    unsafe { (*g).next }
}

/// Sets `next` (clearing the unreachable mask).
#[inline(always)]
pub(crate) unsafe fn set_next(g: *mut GcHead, n: *mut GcHead) {
    // SAFETY: module contract.
    unsafe { (*g).next = n }
}

/// `GC_PREV`: the previous element (flags masked off).
#[inline(always)]
pub(crate) unsafe fn prev(g: *mut GcHead) -> *mut GcHead {
    // SAFETY: module contract.
    unsafe { (*g).prev.map_addr(|a| a & !PREV_FLAGS) }
}

/// `_PyGCHead_SET_PREV`: sets the previous element, keeping the flags.
#[inline(always)]
pub(crate) unsafe fn set_prev(g: *mut GcHead, p: *mut GcHead) {
    // SAFETY: module contract.
    unsafe {
        let flags = (*g).prev.addr() & PREV_FLAGS;
        (*g).prev = p.map_addr(|a| a | flags);
    }
}

/// Reads the flags of `prev`.
#[inline(always)]
pub(crate) unsafe fn flags(g: *mut GcHead) -> usize {
    // SAFETY: module contract.
    unsafe { (*g).prev.addr() & PREV_FLAGS }
}

/// Sets the given flag bits of `prev`.
#[inline(always)]
pub(crate) unsafe fn set_flags(g: *mut GcHead, f: usize) {
    // SAFETY: module contract.
    unsafe { (*g).prev = (*g).prev.map_addr(|a| a | f) }
}

/// Clears the given flag bits of `prev`.
#[inline(always)]
pub(crate) unsafe fn clear_flags(g: *mut GcHead, f: usize) {
    // SAFETY: module contract.
    unsafe { (*g).prev = (*g).prev.map_addr(|a| a & !f) }
}

/// `_PyObject_GC_IS_TRACKED`.
#[inline(always)]
pub(crate) unsafe fn is_tracked(g: *mut GcHead) -> bool {
    // SAFETY: module contract.
    unsafe { !(*g).next.is_null() }
}

/// `gc_is_collecting`.
#[inline(always)]
pub(crate) unsafe fn is_collecting(g: *mut GcHead) -> bool {
    // SAFETY: module contract.
    unsafe { flags(g) & PREV_MASK_COLLECTING != 0 }
}

/// `gc_get_refs`.
#[inline(always)]
pub(crate) unsafe fn get_refs(g: *mut GcHead) -> usize {
    // SAFETY: module contract.
    unsafe { (*g).prev.addr() >> PREV_SHIFT }
}

/// `gc_set_refs`: replaces the prev pointer by `refs`, keeping the flags.
#[inline(always)]
pub(crate) unsafe fn set_refs(g: *mut GcHead, refs: usize) {
    // SAFETY: module contract.
    unsafe {
        let f = flags(g);
        (*g).prev = ptr::without_provenance_mut(f | (refs << PREV_SHIFT));
    }
}

/// `gc_reset_refs`: sets `refs` and the collecting flag, keeping the
/// finalized and weak-reference flags.
#[inline(always)]
pub(crate) unsafe fn reset_refs(g: *mut GcHead, refs: usize) {
    // SAFETY: module contract.
    unsafe {
        let f = flags(g) & (PREV_MASK_FINALIZED | PREV_MASK_WEAKREFS);
        (*g).prev = ptr::without_provenance_mut(f | PREV_MASK_COLLECTING | (refs << PREV_SHIFT));
    }
}

/// `gc_decref`. Saturates at zero: a traversal that reports more references
/// than the object's count makes the object look unreachable, never wraps.
#[inline(always)]
pub(crate) unsafe fn decref(g: *mut GcHead) {
    // SAFETY: module contract.
    unsafe {
        if get_refs(g) > 0 {
            (*g).prev = (*g).prev.wrapping_byte_sub(1 << PREV_SHIFT);
        }
    }
}

/// Whether bit 0 of `next` is set.
#[inline(always)]
pub(crate) unsafe fn is_unreachable_marked(g: *mut GcHead) -> bool {
    // SAFETY: module contract.
    unsafe { (*g).next.addr() & NEXT_MASK_UNREACHABLE != 0 }
}

/// `next` with the unreachable mask removed.
#[inline(always)]
pub(crate) unsafe fn next_unmasked(g: *mut GcHead) -> *mut GcHead {
    // SAFETY: module contract.
    unsafe { (*g).next.map_addr(|a| a & !NEXT_MASK_UNREACHABLE) }
}

/// `next` set to `n` with the unreachable mask.
#[inline(always)]
pub(crate) unsafe fn set_next_masked(g: *mut GcHead, n: *mut GcHead) {
    // SAFETY: module contract.
    unsafe { (*g).next = n.map_addr(|a| a | NEXT_MASK_UNREACHABLE) }
}

/// `gc_list_init`.
#[inline]
pub(crate) unsafe fn init(list: *mut GcHead) {
    // SAFETY: module contract.
    unsafe {
        (*list).next = list;
        (*list).prev = list;
    }
}

/// `gc_list_is_empty`.
#[inline]
pub(crate) unsafe fn is_empty(list: *mut GcHead) -> bool {
    // SAFETY: module contract.
    unsafe { next(list) == list }
}

/// `gc_list_append`: links `node` (not in any list) at the end of `list`.
#[inline(always)]
pub(crate) unsafe fn append(node: *mut GcHead, list: *mut GcHead) {
    // SAFETY: module contract.
    unsafe {
        let last = prev(list);
        set_next(last, node);
        set_prev(node, last);
        set_next(node, list);
        set_prev(list, node);
    }
}

/// `gc_list_remove`: unlinks `node`, which becomes untracked (`next` null).
#[inline(always)]
pub(crate) unsafe fn remove(node: *mut GcHead) {
    // SAFETY: module contract.
    unsafe {
        let p = prev(node);
        let n = next(node);
        set_next(p, n);
        set_prev(n, p);
        (*node).next = ptr::null_mut();
    }
}

/// `gc_list_move`: moves `node` from its list to the end of `list`.
#[inline]
pub(crate) unsafe fn move_to(node: *mut GcHead, list: *mut GcHead) {
    // SAFETY: module contract.
    unsafe {
        let p = prev(node);
        let n = next(node);
        set_next(p, n);
        set_prev(n, p);
        append(node, list);
    }
}

/// `gc_list_merge`: appends `from` to `to`; `from` becomes empty.
pub(crate) unsafe fn merge(from: *mut GcHead, to: *mut GcHead) {
    // SAFETY: module contract.
    unsafe {
        if !is_empty(from) {
            let tail = prev(to);
            let first = next(from);
            let last = prev(from);
            set_next(tail, first);
            set_prev(first, tail);
            set_next(last, to);
            set_prev(to, last);
        }
        init(from);
    }
}

/// `gc_list_size`.
pub(crate) unsafe fn size(list: *mut GcHead) -> usize {
    let mut n = 0;
    // SAFETY: module contract.
    unsafe {
        let mut g = next(list);
        while g != list {
            n += 1;
            g = next(g);
        }
    }
    n
}

/// `gc_list_clear_collecting`.
pub(crate) unsafe fn clear_collecting_all(list: *mut GcHead) {
    // SAFETY: module contract.
    unsafe {
        let mut g = next(list);
        while g != list {
            clear_flags(g, PREV_MASK_COLLECTING);
            g = next(g);
        }
    }
}

/// `clear_unreachable_mask`.
pub(crate) unsafe fn clear_unreachable_mask(list: *mut GcHead) {
    // SAFETY: module contract.
    unsafe {
        let mut g = next_unmasked(list);
        while g != list {
            (*g).next = next_unmasked(g);
            g = next(g);
        }
    }
}
