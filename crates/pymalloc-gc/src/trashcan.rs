//! The trashcan (CPython's `Py_TRASHCAN_BEGIN` / `Py_TRASHCAN_END`,
//! `_PyTrash_thread_deposit_object`, `_PyTrash_thread_destroy_chain`):
//! deallocations nested deeper than [`TRASHCAN_LIMIT`] are deferred to a
//! chain that the outermost deallocation destroys, so that dropping a
//! structure of any depth uses bounded stack.
//!
//! The collector's public entry points are
//! [`Collector::trash_begin`](crate::Collector::trash_begin) and
//! [`Collector::trash_end`](crate::Collector::trash_end); this module holds
//! the state and the algorithm, and is given the deallocation to run.
//!
//! # Invariants
//!
//! * `depth` is the number of deallocations entered (`begin` returned true)
//!   and not yet left (`end`).
//! * `head` is null or the last deposited object: an untracked GC object
//!   with reference count zero whose `GcHead::prev` holds the GC header of
//!   the next deposited object (or null), and nothing else.

use core::cell::Cell;
use core::ptr;

use crate::list;
use crate::object::{as_gc, from_gc, PyObject};

/// Deallocations nested deeper than this are deferred (CPython's trashcan,
/// `_PyTrash_UNWIND_LEVEL`).
pub const TRASHCAN_LIMIT: u32 = 50;

/// The trashcan of one collector. See the module documentation.
pub(crate) struct Trashcan {
    depth: Cell<u32>,
    head: Cell<*mut PyObject>,
}

impl Trashcan {
    pub(crate) const fn new() -> Trashcan {
        Trashcan { depth: Cell::new(0), head: Cell::new(ptr::null_mut()) }
    }

    /// `Py_TRASHCAN_BEGIN`: enters a deallocation, or deposits `op` and
    /// returns false when deallocations are nested deeper than
    /// [`TRASHCAN_LIMIT`].
    ///
    /// # Safety
    /// `op` is an untracked GC object being deallocated (count zero).
    #[inline(always)]
    pub(crate) unsafe fn begin(&self, op: *mut PyObject) -> bool {
        let d = self.depth.get();
        if d >= TRASHCAN_LIMIT {
            // SAFETY: op is untracked (caller's contract), so its prev word
            // is free for the link.
            unsafe { self.deposit(op) };
            return false;
        }
        self.depth.set(d + 1);
        true
    }

    /// `_PyTrash_thread_deposit_object`.
    ///
    /// # Safety
    /// As [`begin`](Self::begin).
    #[cold]
    unsafe fn deposit(&self, op: *mut PyObject) {
        let g = as_gc(op);
        let head = self.head.get();
        let link = if head.is_null() { ptr::null_mut() } else { as_gc(head) };
        // SAFETY: op is untracked (caller's contract): prev holds only flags.
        unsafe { list::set_prev(g, link) };
        self.head.set(op);
    }

    /// `Py_TRASHCAN_END`: leaves a deallocation; the outermost one runs
    /// `dealloc` on every deposited object.
    #[inline(always)]
    pub(crate) fn end(&self, dealloc: impl FnMut(*mut PyObject)) {
        let d = self.depth.get() - 1;
        self.depth.set(d);
        if d == 0 && !self.head.get().is_null() {
            self.destroy_chain(dealloc);
        }
    }

    /// `_PyTrash_thread_destroy_chain`: deallocates the deposited objects
    /// one level deep (their own nested deallocations may deposit more,
    /// which this loop then takes too).
    #[cold]
    #[inline(never)]
    fn destroy_chain(&self, mut dealloc: impl FnMut(*mut PyObject)) {
        loop {
            let op = self.head.get();
            if op.is_null() {
                break;
            }
            let g = as_gc(op);
            // SAFETY: deposited objects are untracked with the next link in
            // prev (the invariant of `head`).
            unsafe {
                let n = list::prev(g);
                self.head.set(if n.is_null() { ptr::null_mut() } else { from_gc(n) });
                list::set_prev(g, ptr::null_mut());
            }
            self.depth.set(self.depth.get() + 1);
            dealloc(op);
            self.depth.set(self.depth.get() - 1);
        }
    }
}
