//! The object layout: object header, variable-size header, GC header and the
//! type descriptor (CPython's `PyObject`, `PyVarObject`, `PyGC_Head`, and the
//! part of `PyTypeObject` the memory manager and the collector use).
//!
//! A container object is laid out as CPython 3.11 lays it out:
//!
//! ```text
//!   block from the allocator ─┐
//!                             v
//!                             [ GcHead: next | prev ][ ob_refcnt | ob_type | (ob_size) | fields... ]
//!                                                    ^ the object pointer (*mut PyObject)
//! ```
//!
//! A plain object (`PyObject_New`) has no `GcHead`.
//!
//! ## GcHead invariants (written once, here)
//!
//! * `next == null` exactly when the object is untracked; otherwise `next`,
//!   with bit 0 masked off, is the next element of the circular doubly linked
//!   list the object is in (a generation, or a list local to a collection).
//!   Bit 0 (`NEXT_MASK_UNREACHABLE`) is set only during a collection, on
//!   objects that `move_unreachable` tentatively put in the unreachable list.
//! * `prev`'s low three bits are flags (`PREV_MASK_FINALIZED`,
//!   `PREV_MASK_COLLECTING`, `PREV_MASK_WEAKREFS`); the list operations
//!   preserve them. Outside the first phases of a collection the other bits
//!   are the previous element's address (heads are 16-aligned, so those bits
//!   are free). While `PREV_MASK_COLLECTING` is set during `update_refs`,
//!   `subtract_refs` and `move_unreachable`, they hold `gc_refs << 3` instead
//!   and the list is only singly linked; `move_unreachable` restores them.
//! * An untracked object's `prev` holds only flags, except while it waits in
//!   the trashcan, when it also holds the next waiting object.

use core::ffi::{c_char, c_int, c_ulong, c_void, CStr};
use core::ptr;

use crate::freelist::FreeLists;

/// CPython's `PyObject`: the reference count and the type.
#[repr(C)]
#[derive(Debug)]
pub struct PyObject {
    /// The reference count (`ob_refcnt`).
    pub ob_refcnt: isize,
    /// The type descriptor (`ob_type`).
    pub ob_type: *const TypeObject,
}

/// CPython's `PyVarObject`: an object header plus the number of items.
#[repr(C)]
#[derive(Debug)]
pub struct PyVarObject {
    /// The object header.
    pub ob_base: PyObject,
    /// The number of items (`ob_size`).
    pub ob_size: isize,
}

/// CPython's `PyGC_Head` (3.11 layout: two words, flags in the low bits).
/// See the module documentation for its invariants.
#[repr(C, align(16))]
#[derive(Debug)]
pub struct GcHead {
    pub(crate) next: *mut GcHead,
    pub(crate) prev: *mut GcHead,
}

/// Size of the GC header in front of a container object.
pub const GC_HEAD_SIZE: usize = core::mem::size_of::<GcHead>();

/// Bit 0 of `next`: the object is in `move_unreachable`'s unreachable list.
pub(crate) const NEXT_MASK_UNREACHABLE: usize = 1;
/// Bit 0 of `prev`: `tp_finalize` has run (PEP 442).
pub(crate) const PREV_MASK_FINALIZED: usize = 1;
/// Bit 1 of `prev`: the object is in the generation being collected.
pub(crate) const PREV_MASK_COLLECTING: usize = 2;
/// Bit 2 of `prev`: weak references to the object exist (our addition:
/// weak-reference lists live in a side table instead of `tp_weaklistoffset`).
pub(crate) const PREV_MASK_WEAKREFS: usize = 4;
/// All flag bits of `prev`.
pub(crate) const PREV_FLAGS: usize = 7;
/// `gc_refs` is stored above the flags.
pub(crate) const PREV_SHIFT: u32 = 3;

impl GcHead {
    /// An untracked header (both words zero).
    pub const fn new() -> GcHead {
        GcHead { next: ptr::null_mut(), prev: ptr::null_mut() }
    }
}

impl Default for GcHead {
    fn default() -> Self {
        GcHead::new()
    }
}

/// CPython's `visitproc`: called by a traversal for each referenced object;
/// a non-zero return stops the traversal and is passed up.
pub type VisitProc = unsafe extern "C" fn(object: *mut PyObject, arg: *mut c_void) -> c_int;
/// CPython's `traverseproc`: call `visit(child, arg)` for every object the
/// object holds a strong reference to; return the first non-zero result.
pub type TraverseProc = unsafe extern "C" fn(object: *mut PyObject, visit: VisitProc, arg: *mut c_void) -> c_int;
/// CPython's `inquiry` (`tp_clear`): drop the references the object holds.
pub type Inquiry = unsafe extern "C" fn(object: *mut PyObject) -> c_int;
/// CPython's `destructor` (`tp_dealloc`, `tp_finalize`, `tp_del`).
pub type Destructor = unsafe extern "C" fn(object: *mut PyObject);

/// CPython's `Py_TPFLAGS_HAVE_GC`: instances carry a GC header.
pub const TPFLAGS_HAVE_GC: c_ulong = 1 << 14;

/// The type descriptor: the slots of CPython's `PyTypeObject` that the
/// object layer and the collector use.
///
/// It is read-only after construction (the free lists it points to are
/// mutated only by the collector that owns the objects), which is why it may
/// be a `static`.
#[repr(C)]
#[derive(Debug)]
pub struct TypeObject {
    /// The type's name (`tp_name`), a NUL-terminated string, or null.
    pub tp_name: *const c_char,
    /// Size of an instance without items, header included (`tp_basicsize`).
    pub tp_basicsize: isize,
    /// Size of one item of a variable-size object (`tp_itemsize`).
    pub tp_itemsize: isize,
    /// Flags; [`TPFLAGS_HAVE_GC`] marks container types.
    pub tp_flags: c_ulong,
    /// Called when the reference count drops to zero. `None` means: untrack,
    /// clear weak references, call `tp_clear`, and free (`GC_Del`/`Del`).
    pub tp_dealloc: Option<Destructor>,
    /// Visits every object the instance references (containers only).
    pub tp_traverse: Option<TraverseProc>,
    /// Drops the instance's references to break a cycle (containers only).
    pub tp_clear: Option<Inquiry>,
    /// PEP 442 finalizer: run at most once, before a cycle is broken; it may
    /// resurrect the object.
    pub tp_finalize: Option<Destructor>,
    /// Legacy (pre-PEP 442) finalizer: cycles containing such an object are
    /// uncollectable and end up in the collector's `garbage` list.
    pub tp_del: Option<Destructor>,
    /// Optional free lists: `GC_New`/`GC_NewVar` take blocks from it first and
    /// `GC_Del` returns blocks to it while it has room.
    pub tp_freelist: *mut FreeLists,
}

// SAFETY: a TypeObject is immutable after construction: its pointers are to
// static text and to functions; the free list it points to is only used by
// the one collector that owns the type's objects (CPython's GIL contract).
unsafe impl Sync for TypeObject {}

impl TypeObject {
    /// A descriptor with no slots, to fill in with struct-update syntax.
    ///
    /// ```
    /// use pymalloc_gc::object::{TypeObject, PyObject, TPFLAGS_HAVE_GC};
    /// static BOX: TypeObject = TypeObject {
    ///     tp_name: c"Box".as_ptr(),
    ///     tp_basicsize: core::mem::size_of::<PyObject>() as isize + 8,
    ///     tp_flags: TPFLAGS_HAVE_GC,
    ///     ..TypeObject::EMPTY
    /// };
    /// assert!(BOX.is_gc());
    /// ```
    pub const EMPTY: TypeObject = TypeObject {
        tp_name: ptr::null(),
        tp_basicsize: core::mem::size_of::<PyObject>() as isize,
        tp_itemsize: 0,
        tp_flags: 0,
        tp_dealloc: None,
        tp_traverse: None,
        tp_clear: None,
        tp_finalize: None,
        tp_del: None,
        tp_freelist: ptr::null_mut(),
    };

    /// Whether instances carry a GC header (CPython's `PyType_IS_GC`).
    #[inline]
    pub const fn is_gc(&self) -> bool {
        self.tp_flags & TPFLAGS_HAVE_GC != 0
    }

    /// The name, or `"?"` when there is none.
    pub fn name(&self) -> &str {
        if self.tp_name.is_null() {
            return "?";
        }
        // SAFETY: tp_name is a NUL-terminated static string by the field's contract.
        unsafe { CStr::from_ptr(self.tp_name) }.to_str().unwrap_or("?")
    }
}

/// `AS_GC(o)`: the GC header in front of a container object.
#[inline(always)]
pub(crate) fn as_gc(op: *mut PyObject) -> *mut GcHead {
    op.cast::<u8>().wrapping_sub(GC_HEAD_SIZE).cast()
}

/// `FROM_GC(g)`: the object behind a GC header.
#[inline(always)]
pub(crate) fn from_gc(g: *mut GcHead) -> *mut PyObject {
    g.cast::<u8>().wrapping_add(GC_HEAD_SIZE).cast()
}

/// `Py_INCREF`.
///
/// # Safety
/// `op` is a live object.
#[inline(always)]
pub(crate) unsafe fn incref(op: *mut PyObject) {
    // SAFETY: caller's contract.
    unsafe { (*op).ob_refcnt += 1 }
}

/// `PyObject_IS_GC(op)`.
///
/// # Safety
/// `op` points to a live object whose type descriptor is live.
#[inline(always)]
pub(crate) unsafe fn is_gc(op: *mut PyObject) -> bool {
    // SAFETY: by the caller's contract.
    unsafe { (*(*op).ob_type).is_gc() }
}

/// `_PyObject_VAR_SIZE`: `basicsize + nitems * itemsize` rounded up to a
/// word, or `None` if that overflows or exceeds `isize::MAX`.
pub(crate) fn var_size(tp: &TypeObject, nitems: usize) -> Option<usize> {
    let basic = usize::try_from(tp.tp_basicsize).ok()?;
    let item = usize::try_from(tp.tp_itemsize).ok()?;
    let n = item.checked_mul(nitems)?.checked_add(basic)?;
    let word = core::mem::size_of::<usize>();
    let n = n.checked_add(word - 1)? & !(word - 1);
    (n <= isize::MAX as usize).then_some(n)
}
