//! The object allocator: allocation of objects with and without a GC
//! header, tracking, reference counts and deallocation, as an
//! `impl Collector` block (CPython's `Objects/object.c` and the allocation
//! half of `Modules/gcmodule.c`: `gc_alloc`, `_PyObject_GC_Link`,
//! `_PyObject_GC_New`, `_PyObject_GC_NewVar`, `_PyObject_GC_Resize`,
//! `PyObject_GC_Del`, `_PyObject_New`, `_PyObject_NewVar`, `PyObject_Del`,
//! `PyObject_GC_Track`, `PyObject_GC_UnTrack`, `PyObject_GC_IsTracked`,
//! `PyObject_GC_IsFinalized`, `Py_INCREF`, `Py_DECREF`, `_Py_Dealloc`), and
//! the collector's entries to the trashcan (`Py_TRASHCAN_BEGIN`/`END`).
//!
//! Every GC allocation counts in generation 0 and may start an automatic
//! collection ([`collect`](crate::collect)) before the new object is
//! tracked; free-list allocations neither count nor collect, as CPython's.

use core::ptr;

use crate::collector::{fatal, Collector};
use crate::list;
use crate::object::{
    as_gc, from_gc, incref, is_gc, var_size, GcHead, PyObject, PyVarObject, TypeObject, GC_HEAD_SIZE,
    PREV_MASK_COLLECTING, PREV_MASK_FINALIZED, PREV_MASK_WEAKREFS,
};
use crate::weakref;

impl Collector {
    /// `gc_alloc` + `_PyObject_GC_Link`: allocates `basicsize` bytes with a
    /// zeroed GC header in front, counts the allocation in generation 0 and,
    /// when the count exceeds the threshold, collects (before the new object
    /// is tracked). Returns the object pointer, or null when out of memory or
    /// when the size is too large.
    #[inline]
    pub fn gc_alloc(&self, basicsize: usize) -> *mut PyObject {
        if basicsize > isize::MAX as usize - GC_HEAD_SIZE {
            return ptr::null_mut();
        }
        let mem = self.memory.alloc(GC_HEAD_SIZE + basicsize);
        if mem.is_null() {
            return ptr::null_mut();
        }
        let g = mem.cast::<GcHead>();
        // SAFETY: mem is a fresh block of at least GC_HEAD_SIZE bytes,
        // 16-aligned (pymalloc's alignment).
        unsafe { g.write(GcHead::new()) };
        self.link();
        from_gc(g)
    }

    /// `_PyObject_GC_Link`'s accounting: count the new object and collect
    /// the generations whose thresholds are exceeded.
    #[inline(always)]
    fn link(&self) {
        if self.forbid_mutation.get() {
            fatal("object allocated while the collector traverses objects");
        }
        let g0 = &self.gens[0];
        let count = g0.count.get() + 1;
        g0.count.set(count);
        if count > g0.threshold.get() {
            self.maybe_collect_on_alloc();
        }
    }

    /// Takes a block for a type with free lists, or allocates one.
    fn alloc_for(&self, tp: *const TypeObject, index: usize, size: usize) -> *mut PyObject {
        // SAFETY: tp is a live type descriptor (callers' contract).
        let fl = unsafe { (*tp).tp_freelist };
        if !fl.is_null() {
            // SAFETY: the free lists of a type are used only by its collector.
            let b = unsafe { (*fl).pop(index) };
            if !b.is_null() {
                // CPython's free-list paths neither count nor collect.
                let g = b.cast::<GcHead>();
                // SAFETY: a free-list block is a whole object block.
                unsafe { g.write(GcHead::new()) };
                return from_gc(g);
            }
        }
        self.gc_alloc(size)
    }

    /// `_PyObject_GC_New`: a fixed-size container object (reference count 1,
    /// untracked). Null when out of memory.
    ///
    /// # Safety
    /// `tp` points to a live type descriptor of a GC type, with
    /// `tp_basicsize >= size_of::<PyObject>()`.
    pub unsafe fn gc_new(&self, tp: *const TypeObject) -> *mut PyObject {
        // SAFETY: caller's contract (a GC type whose basicsize holds a PyObject).
        unsafe { new_with(tp, None, |index, size| self.alloc_for(tp, index, size)) }
    }

    /// `_PyObject_GC_NewVar`: a variable-size container object with `nitems`
    /// items. Null when out of memory, when `nitems` is negative, or when the
    /// size overflows.
    ///
    /// # Safety
    /// As [`gc_new`](Self::gc_new), with
    /// `tp_basicsize >= size_of::<PyVarObject>()`.
    pub unsafe fn gc_new_var(&self, tp: *const TypeObject, nitems: isize) -> *mut PyVarObject {
        // SAFETY: caller's contract (a GC type whose basicsize holds a PyVarObject).
        unsafe { new_with(tp, Some(nitems), |index, size| self.alloc_for(tp, index, size)) }.cast()
    }

    /// `_PyObject_GC_Resize`: resizes an untracked variable-size object to
    /// `nitems` items. Returns the (possibly moved) object, or null when out
    /// of memory, in which case `op` is unchanged.
    ///
    /// # Safety
    /// `op` is a live, untracked variable-size GC object of this collector.
    pub unsafe fn gc_resize(&self, op: *mut PyVarObject, nitems: isize) -> *mut PyVarObject {
        // SAFETY: caller's contract.
        unsafe {
            if list::is_tracked(as_gc(op.cast())) {
                fatal("_PyObject_GC_Resize of a tracked object");
            }
            let Ok(n) = usize::try_from(nitems) else {
                return ptr::null_mut();
            };
            let Some(size) = var_size(&*(*op).ob_base.ob_type, n) else {
                return ptr::null_mut();
            };
            let g = self.memory.realloc(as_gc(op.cast()).cast(), GC_HEAD_SIZE + size);
            if g.is_null() {
                return ptr::null_mut();
            }
            let op = from_gc(g.cast()).cast::<PyVarObject>();
            (*op).ob_size = nitems;
            op
        }
    }

    /// `PyObject_GC_Del`: untracks if needed, forgets weak references,
    /// uncounts the object from generation 0 and frees it (or keeps it in its
    /// type's free list).
    ///
    /// # Safety
    /// `op` is a GC object of this collector, not used again.
    pub unsafe fn gc_del(&self, op: *mut PyObject) {
        let g = as_gc(op);
        // SAFETY: caller's contract.
        unsafe {
            if list::is_tracked(g) {
                self.untrack(op);
            }
            if list::flags(g) & PREV_MASK_WEAKREFS != 0 {
                // A deallocator that did not clear its weak references:
                // clear them without callbacks, the table must not keep
                // the address.
                self.weak_table.forget_all(op);
            }
            let tp = (*op).ob_type;
            let fl = (*tp).tp_freelist;
            if !fl.is_null() {
                let index = if (*tp).tp_itemsize != 0 { (*op.cast::<PyVarObject>()).ob_size as usize } else { 0 };
                if (*fl).push(index, g.cast()) {
                    return;
                }
            }
            let c0 = &self.gens[0].count;
            if c0.get() > 0 {
                c0.set(c0.get() - 1);
            }
            self.memory.free(g.cast());
        }
    }

    /// Frees a GC block: `gc_del` for the Rust front, whose objects have no
    /// type free list and no weak references left when they are freed.
    ///
    /// # Safety
    /// `op` is an untracked GC object of this collector without weak
    /// references; it is not used again.
    #[inline(always)]
    pub(crate) unsafe fn gc_free_untracked(&self, op: *mut PyObject) {
        let c0 = &self.gens[0].count;
        let c = c0.get();
        c0.set(c.saturating_sub(1));
        // SAFETY: caller's contract.
        unsafe { self.memory.free(as_gc(op).cast()) }
    }

    /// `_PyObject_New`: a plain (non-GC) object, reference count 1.
    ///
    /// # Safety
    /// `tp` is a live descriptor with `tp_basicsize >= size_of::<PyObject>()`.
    pub unsafe fn new_object(&self, tp: *const TypeObject) -> *mut PyObject {
        // SAFETY: caller's contract (basicsize holds a PyObject).
        unsafe { new_with(tp, None, |_, size| self.memory.alloc(size).cast()) }
    }

    /// `_PyObject_NewVar`: a plain variable-size object.
    ///
    /// # Safety
    /// As [`new_object`](Self::new_object), `tp_basicsize >= size_of::<PyVarObject>()`.
    pub unsafe fn new_var_object(&self, tp: *const TypeObject, nitems: isize) -> *mut PyVarObject {
        // SAFETY: caller's contract (basicsize holds a PyVarObject).
        unsafe { new_with(tp, Some(nitems), |_, size| self.memory.alloc(size).cast()) }.cast()
    }

    /// `PyObject_Del` (`PyObject_Free` of a plain object).
    ///
    /// # Safety
    /// `op` is a plain object of this collector, not used again.
    pub unsafe fn del(&self, op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe { self.memory.free(op.cast()) }
    }

    /// `PyObject_GC_Track`: links the object at the end of generation 0.
    /// Tracking a tracked object is a fatal error, as in CPython.
    ///
    /// # Safety
    /// `op` is a live GC object of this collector whose traversal is ready to run.
    #[inline(always)]
    pub unsafe fn track(&self, op: *mut PyObject) {
        if self.forbid_mutation.get() {
            fatal("object tracked while the collector traverses objects");
        }
        let g = as_gc(op);
        // SAFETY: caller's contract; generation 0's head is live.
        unsafe {
            if list::is_tracked(g) {
                fatal("object already tracked by the garbage collector");
            }
            list::append(g, self.gens[0].head());
        }
    }

    /// `PyObject_GC_UnTrack`: unlinks the object if it is tracked.
    ///
    /// # Safety
    /// `op` is a live GC object of this collector.
    #[inline(always)]
    pub unsafe fn untrack(&self, op: *mut PyObject) {
        let g = as_gc(op);
        // SAFETY: caller's contract.
        unsafe {
            if list::is_tracked(g) {
                if self.forbid_mutation.get() {
                    fatal("object untracked while the collector traverses objects");
                }
                list::remove(g);
                list::clear_flags(g, PREV_MASK_COLLECTING);
            }
        }
    }

    /// `PyObject_GC_IsTracked` / `gc.is_tracked`.
    ///
    /// # Safety
    /// `op` is a live object.
    pub unsafe fn is_tracked(&self, op: *mut PyObject) -> bool {
        // SAFETY: caller's contract.
        unsafe { is_gc(op) && list::is_tracked(as_gc(op)) }
    }

    /// `PyObject_GC_IsFinalized` / `gc.is_finalized`.
    ///
    /// # Safety
    /// `op` is a live object.
    pub unsafe fn is_finalized(&self, op: *mut PyObject) -> bool {
        // SAFETY: caller's contract.
        unsafe { is_gc(op) && list::flags(as_gc(op)) & PREV_MASK_FINALIZED != 0 }
    }

    /// Marks a GC object finalized (PEP 442: the finalizer will not run again).
    ///
    /// # Safety
    /// `op` is a live GC object.
    pub(crate) unsafe fn set_finalized(&self, op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe { list::set_flags(as_gc(op), PREV_MASK_FINALIZED) }
    }

    // -----------------------------------------------------------------------
    // Reference counts and deallocation (Objects/object.c)

    /// `Py_INCREF`.
    ///
    /// # Safety
    /// `op` is a live object.
    #[inline(always)]
    pub unsafe fn incref(op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe { incref(op) }
    }

    /// `Py_DECREF`: at zero, calls the type's `tp_dealloc` (or the default
    /// deallocation of this collector).
    ///
    /// # Safety
    /// `op` is a live object of this collector and the caller owns one reference.
    #[inline]
    pub unsafe fn decref(&self, op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe {
            (*op).ob_refcnt -= 1;
            if (*op).ob_refcnt == 0 {
                self.dealloc(op);
            }
        }
    }

    /// `_Py_Dealloc`.
    ///
    /// # Safety
    /// `op` is a live object of this collector with reference count zero.
    pub unsafe fn dealloc(&self, op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe {
            match (*(*op).ob_type).tp_dealloc {
                Some(d) => d(op),
                None => self.default_dealloc(op),
            }
        }
    }

    /// The deallocation of a type without `tp_dealloc`: untrack, clear weak
    /// references (running callbacks), call `tp_clear` to drop the object's
    /// references, and free, inside the trashcan.
    ///
    /// # Safety
    /// As [`dealloc`](Self::dealloc).
    pub unsafe fn default_dealloc(&self, op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe {
            let tp = (*op).ob_type;
            if !(*tp).is_gc() {
                self.del(op);
                return;
            }
            self.untrack(op);
            if !self.trash_begin(op) {
                return;
            }
            weakref::clear_weakrefs(self, op);
            if let Some(clear) = (*tp).tp_clear {
                clear(op);
            }
            self.gc_del(op);
            self.trash_end();
        }
    }

    // -----------------------------------------------------------------------
    // The trashcan's entries (its state and algorithm: `crate::trashcan`)

    /// Enters a deallocation (`Py_TRASHCAN_BEGIN`). Returns `false` when
    /// deallocations are nested deeper than
    /// [`TRASHCAN_LIMIT`](crate::collector::TRASHCAN_LIMIT): the object
    /// (refcount zero, untracked) has then been deposited, its `tp_dealloc`
    /// will run again when the outermost deallocation ends, and the caller
    /// must return at once. Otherwise the caller must call
    /// [`trash_end`](Self::trash_end) when done.
    ///
    /// # Safety
    /// `op` is an untracked GC object of this collector being deallocated.
    #[inline(always)]
    pub unsafe fn trash_begin(&self, op: *mut PyObject) -> bool {
        // SAFETY: caller's contract, which is Trashcan::begin's.
        unsafe { self.trash.begin(op) }
    }

    /// Leaves a deallocation (`Py_TRASHCAN_END`); the outermost one
    /// deallocates the deposited objects.
    #[inline(always)]
    pub fn trash_end(&self) {
        // SAFETY: deposited objects are objects of this collector with
        // count zero whose deallocation was deferred (trash_begin).
        self.trash.end(|op| unsafe { self.dealloc(op) });
    }
}

/// The path the four constructors share: the size of `tp`'s objects with
/// `nitems` items (`_PyObject_VAR_SIZE`; `None`: a fixed-size object), a
/// block of that size from `alloc(index, size)`, and its header with
/// reference count 1 (`PyObject_Init`, plus `ob_size` for a variable-size
/// object). Null for a negative count, a size that overflows, or no memory.
///
/// # Safety
/// `tp` is a live descriptor whose `tp_basicsize` holds the header written
/// (a `PyVarObject` when `nitems` is given); `alloc` returns null or a
/// fresh, 16-aligned block of `size` bytes.
#[inline(always)]
unsafe fn new_with(
    tp: *const TypeObject,
    nitems: Option<isize>,
    alloc: impl FnOnce(usize, usize) -> *mut PyObject,
) -> *mut PyObject {
    let index = match nitems.map(usize::try_from) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return ptr::null_mut(),
    };
    // SAFETY: tp is live (caller's contract).
    let Some(size) = var_size(unsafe { &*tp }, index) else {
        return ptr::null_mut();
    };
    let op = alloc(index, size);
    if !op.is_null() {
        // SAFETY: op is a fresh block of `size` bytes, which hold the header
        // (caller's contract).
        unsafe {
            op.write(PyObject { ob_refcnt: 1, ob_type: tp });
            if let Some(n) = nitems {
                (*op.cast::<PyVarObject>()).ob_size = n;
            }
        }
    }
    op
}
