//! Weak references (CPython's `Objects/weakrefobject.c`, the part the
//! collector relies on: `PyWeakref_NewRef`, `PyWeakref_GetObject`,
//! `_PyWeakref_ClearRef`, `PyObject_ClearWeakRefs`) and the collector's
//! `handle_weakrefs` (`Modules/gcmodule.c`).
//!
//! A weak reference is itself a GC object of type [`WEAKREF_TYPE`]. The
//! weak references to one object form a doubly linked list whose first
//! element is found in a side table, the [`WeakTable`] each collector owns,
//! keyed by the referent's address (CPython keeps the list head inside the
//! object, at `tp_weaklistoffset`; a side table lets every GC object be
//! weakly referenced without a field of its own).
//!
//! This module sits below the collector: what it needs of the collector
//! (allocating, tracking, freeing objects) it asks through the
//! [`WeakRefOwner`] trait, which the collector implements.
//!
//! # Invariants
//!
//! * A referent has `PREV_MASK_WEAKREFS` set exactly when its table has an
//!   entry for its address; the entry is the first of the weak references
//!   whose `wr_object` is that referent, linked by `wr_prev`/`wr_next`.
//! * A live weak reference's `wr_table` is the table of the collector that
//!   allocated it, and that table's owner is that collector.
//! * A cleared weak reference has `wr_object`, `wr_prev` and `wr_next` null
//!   and is in no list; it never becomes live again.
//! * `wr_callback` runs at most once; after it runs (or when the weak
//!   reference dies) `wr_data_drop(wr_data)` releases the data.

use core::cell::{Cell, RefCell};
use core::ffi::{c_int, c_void};
use core::ptr;
use std::collections::HashMap;

use crate::list;
use crate::object::{as_gc, from_gc, incref, is_gc, GcHead, PyObject, TypeObject, PREV_MASK_WEAKREFS, TPFLAGS_HAVE_GC};

/// What weak references need of the collector that owns them and their
/// referents ([`Collector`](crate::Collector) implements it).
pub(crate) trait WeakRefOwner {
    /// The owner's table of weak references.
    fn weak_table(&self) -> &WeakTable;
    /// `_PyObject_GC_New(&WEAKREF_TYPE)`: a new, untracked weak reference
    /// object with reference count 1 and uninitialised fields, or null.
    fn gc_new_weakref(&self) -> *mut PyObject;
    /// `PyObject_GC_Track`.
    ///
    /// # Safety
    /// `op` is a live, untracked GC object of the owner, ready to traverse.
    unsafe fn track(&self, op: *mut PyObject);
    /// `PyObject_GC_UnTrack`.
    ///
    /// # Safety
    /// `op` is a live GC object of the owner.
    unsafe fn untrack(&self, op: *mut PyObject);
    /// `Py_DECREF`.
    ///
    /// # Safety
    /// `op` is a live object of the owner; the caller owns one reference.
    unsafe fn decref(&self, op: *mut PyObject);
    /// `PyObject_GC_Del`.
    ///
    /// # Safety
    /// `op` is a GC object of the owner, not used again.
    unsafe fn gc_del(&self, op: *mut PyObject);
}

/// A collector's side table of weak references: referent address -> the
/// first weak reference to it (see the module invariants), and the
/// collector that owns the table.
pub(crate) struct WeakTable {
    first: RefCell<HashMap<usize, *mut WeakRefObject>>,
    owner: Cell<Option<*const dyn WeakRefOwner>>,
}

impl WeakTable {
    /// An empty table without owner.
    pub(crate) fn new() -> WeakTable {
        WeakTable { first: RefCell::new(HashMap::new()), owner: Cell::new(None) }
    }

    /// Records the collector that holds this table.
    ///
    /// # Safety
    /// `owner` holds this table, never moves and outlives every weak
    /// reference made with the table.
    pub(crate) unsafe fn set_owner(&self, owner: *const dyn WeakRefOwner) {
        self.owner.set(Some(owner));
    }

    /// The collector that holds this table.
    ///
    /// # Safety
    /// `set_owner` was called (true of every collector's table).
    unsafe fn owner(&self) -> &dyn WeakRefOwner {
        match self.owner.get() {
            // SAFETY: the contract of set_owner.
            Some(o) => unsafe { &*o },
            None => unreachable!("a weak table without owner"),
        }
    }

    /// The first weak reference to `referent`, if any.
    #[inline]
    pub(crate) fn first(&self, referent: *mut PyObject) -> Option<*mut WeakRefObject> {
        self.first.borrow().get(&referent.addr()).copied()
    }

    /// `_PyWeakref_ClearRef`: unlinks the weak reference from its referent's
    /// list and clears it, leaving the callback in place.
    ///
    /// # Safety
    /// `wr` is a live weak reference of this table.
    pub(crate) unsafe fn clear_ref(&self, wr: *mut PyObject) {
        let wr = wr.cast::<WeakRefObject>();
        // SAFETY: module invariants: the list links are live weak references.
        unsafe {
            let o = (*wr).wr_object;
            if o.is_null() {
                return;
            }
            let prev = (*wr).wr_prev;
            let next = (*wr).wr_next;
            if prev.is_null() {
                let mut t = self.first.borrow_mut();
                if next.is_null() {
                    t.remove(&o.addr());
                    list::clear_flags(as_gc(o), PREV_MASK_WEAKREFS);
                } else {
                    t.insert(o.addr(), next);
                }
            } else {
                (*prev).wr_next = next;
            }
            if !next.is_null() {
                (*next).wr_prev = prev;
            }
            (*wr).wr_object = ptr::null_mut();
            (*wr).wr_prev = ptr::null_mut();
            (*wr).wr_next = ptr::null_mut();
        }
    }

    /// Clears every weak reference to `op` without running callbacks.
    ///
    /// # Safety
    /// `op` is a GC object of this table's collector.
    pub(crate) unsafe fn forget_all(&self, op: *mut PyObject) {
        while let Some(wr) = self.first(op) {
            // SAFETY: the table's entries are live weak references to op.
            unsafe { self.clear_ref(wr.cast()) };
        }
    }
}

/// A weak reference callback: receives the (already cleared) weak reference
/// and the data given at creation.
pub type WeakCallback = unsafe extern "C" fn(weakref: *mut PyObject, data: *mut c_void);
/// Releases the data of a weak reference callback.
pub type WeakDataDrop = unsafe extern "C" fn(data: *mut c_void);

/// A weak reference object (CPython's `PyWeakReference`, with the callback
/// as a C function and its data instead of a Python callable).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct WeakRefObject {
    /// The object header.
    pub(crate) ob_base: PyObject,
    pub(crate) wr_object: *mut PyObject,
    pub(crate) wr_callback: Option<WeakCallback>,
    pub(crate) wr_data: *mut c_void,
    pub(crate) wr_data_drop: Option<WeakDataDrop>,
    pub(crate) wr_prev: *mut WeakRefObject,
    pub(crate) wr_next: *mut WeakRefObject,
    /// The table of the collector that allocated this weak reference.
    pub(crate) wr_table: *const WeakTable,
}

/// The type of weak references (`_PyWeakref_RefType`).
pub(crate) static WEAKREF_TYPE: TypeObject = TypeObject {
    tp_name: c"weakref".as_ptr(),
    tp_basicsize: core::mem::size_of::<WeakRefObject>() as isize,
    tp_flags: TPFLAGS_HAVE_GC,
    tp_dealloc: Some(weakref_dealloc),
    tp_clear: Some(weakref_tp_clear),
    ..TypeObject::EMPTY
};

/// `PyWeakref_Check`.
///
/// # Safety
/// `op` is a live object.
#[inline]
pub(crate) unsafe fn is_weakref(op: *mut PyObject) -> bool {
    // SAFETY: caller's contract.
    unsafe { ptr::eq((*op).ob_type, &WEAKREF_TYPE) }
}

/// Creates a weak reference to `referent` (a live GC object of `c`) with an
/// optional callback. Returns a new reference, or null when out of memory
/// or when `referent` is not a GC object.
///
/// # Safety
/// `referent` is a live object of `c`; `data` is what `callback` and
/// `data_drop` expect.
pub(crate) unsafe fn new_ref(
    c: &impl WeakRefOwner,
    referent: *mut PyObject,
    callback: Option<WeakCallback>,
    data: *mut c_void,
    data_drop: Option<WeakDataDrop>,
) -> *mut PyObject {
    // SAFETY: caller's contract.
    if !unsafe { is_gc(referent) } {
        return ptr::null_mut();
    }
    let op = c.gc_new_weakref();
    if op.is_null() {
        return op;
    }
    let wr = op.cast::<WeakRefObject>();
    let table = c.weak_table();
    let head = table.first(referent).unwrap_or(ptr::null_mut());
    // SAFETY: op is a fresh WeakRefObject; head (if any) is the live first
    // weak reference to referent (module invariants).
    unsafe {
        ptr::addr_of_mut!((*wr).wr_object).write(referent);
        ptr::addr_of_mut!((*wr).wr_callback).write(callback);
        ptr::addr_of_mut!((*wr).wr_data).write(data);
        ptr::addr_of_mut!((*wr).wr_data_drop).write(data_drop);
        ptr::addr_of_mut!((*wr).wr_prev).write(ptr::null_mut());
        ptr::addr_of_mut!((*wr).wr_next).write(head);
        ptr::addr_of_mut!((*wr).wr_table).write(table);
        if !head.is_null() {
            (*head).wr_prev = wr;
        }
        list::set_flags(as_gc(referent), PREV_MASK_WEAKREFS);
        c.track(op);
    }
    table.first.borrow_mut().insert(referent.addr(), wr);
    op
}

/// `PyWeakref_GetObject`: the referent (borrowed), or null once cleared.
///
/// # Safety
/// `wr` is a live weak reference.
pub(crate) unsafe fn get_object(wr: *mut PyObject) -> *mut PyObject {
    // SAFETY: caller's contract.
    unsafe { (*wr.cast::<WeakRefObject>()).wr_object }
}

/// Takes the callback out of a weak reference and runs it, then releases
/// its data.
///
/// # Safety
/// `wr` is a live weak reference (the caller holds a reference to it).
unsafe fn call_callback(wr: *mut PyObject) {
    let w = wr.cast::<WeakRefObject>();
    // SAFETY: caller's contract; the callback contract of new_ref.
    unsafe {
        let cb = (*w).wr_callback.take();
        let data = core::mem::replace(&mut (*w).wr_data, ptr::null_mut());
        let drop_data = (*w).wr_data_drop.take();
        if let Some(cb) = cb {
            cb(wr, data);
        }
        if let Some(d) = drop_data {
            d(data);
        }
    }
}

/// Drops the callback of a weak reference without running it.
///
/// # Safety
/// `w` is a live weak reference.
unsafe fn drop_callback(w: *mut WeakRefObject) {
    // SAFETY: caller's contract (live weak reference).
    unsafe {
        (*w).wr_callback = None;
        let data = core::mem::replace(&mut (*w).wr_data, ptr::null_mut());
        if let Some(d) = (*w).wr_data_drop.take() {
            d(data);
        }
    }
}

/// `PyObject_ClearWeakRefs`: clears every weak reference to `op` (which is
/// being deallocated), then runs their callbacks.
///
/// # Safety
/// `op` is a GC object of `c` being deallocated.
#[inline]
pub(crate) unsafe fn clear_weakrefs(c: &impl WeakRefOwner, op: *mut PyObject) {
    // SAFETY: op is a live GC object (caller's contract).
    if unsafe { list::flags(as_gc(op)) } & PREV_MASK_WEAKREFS == 0 {
        return;
    }
    // SAFETY: the caller's contract, passed on.
    unsafe { clear_weakrefs_slow(c, op) }
}

/// The part of [`clear_weakrefs`] for an object that has weak references.
///
/// # Safety
/// As [`clear_weakrefs`].
#[cold]
unsafe fn clear_weakrefs_slow(c: &impl WeakRefOwner, op: *mut PyObject) {
    let table = c.weak_table();
    let mut with_callback = Vec::new();
    while let Some(wr) = table.first(op) {
        // SAFETY: the table's entries are live weak references to op.
        unsafe {
            table.clear_ref(wr.cast());
            if (*wr).wr_callback.is_some() {
                incref(wr.cast());
                with_callback.push(wr.cast::<PyObject>());
            }
        }
    }
    for wr in with_callback {
        // SAFETY: we hold a reference to each.
        unsafe {
            call_callback(wr);
            c.decref(wr);
        }
    }
}

unsafe extern "C" fn weakref_dealloc(op: *mut PyObject) {
    let w = op.cast::<WeakRefObject>();
    // SAFETY: op is a weak reference with count zero; its table and the
    // table's owner outlive it (module invariants).
    unsafe {
        let table = &*(*w).wr_table;
        let c = table.owner();
        c.untrack(op);
        table.clear_ref(op);
        drop_callback(w);
        c.gc_del(op);
    }
}

unsafe extern "C" fn weakref_tp_clear(op: *mut PyObject) -> c_int {
    let w = op.cast::<WeakRefObject>();
    // SAFETY: op is a live weak reference; its table outlives it.
    unsafe {
        (*(*w).wr_table).clear_ref(op);
        drop_callback(w);
    }
    0
}

/// `handle_weakrefs`: clears the weak references to unreachable objects
/// (and the unreachable weak references themselves), then runs the callbacks
/// of the cleared weak references that are themselves reachable. Returns
/// the number of those weak references freed after their callback.
///
/// # Safety
/// `unreachable` is the collection's unreachable list (masks cleared), `old`
/// a generation head, both of `c`.
pub(crate) unsafe fn handle_weakrefs(c: &impl WeakRefOwner, unreachable: *mut GcHead, old: *mut GcHead) -> usize {
    let table = c.weak_table();
    let mut wrcb = GcHead::new();
    let wrcb: *mut GcHead = &mut wrcb;
    let mut freed = 0;
    // SAFETY: the lists are consistent; the table's entries are live.
    unsafe {
        list::init(wrcb);
        let mut g = list::next(unreachable);
        while g != unreachable {
            let op = from_gc(g);
            let next = list::next(g);
            if is_weakref(op) {
                // An unreachable weak reference must not call back later.
                table.clear_ref(op);
            }
            if list::flags(g) & PREV_MASK_WEAKREFS != 0 {
                while let Some(wr) = table.first(op) {
                    table.clear_ref(wr.cast());
                    if (*wr).wr_callback.is_none() {
                        continue;
                    }
                    let wg = as_gc(wr.cast());
                    if list::is_collecting(wg) {
                        // The weak reference is trash too: no callback.
                        continue;
                    }
                    incref(wr.cast());
                    if list::is_tracked(wg) {
                        list::move_to(wg, wrcb);
                    } else {
                        list::append(wg, wrcb);
                    }
                }
            }
            g = next;
        }
        while !list::is_empty(wrcb) {
            let g = list::next(wrcb);
            let op = from_gc(g);
            call_callback(op);
            c.decref(op);
            if list::next(wrcb) == g {
                list::move_to(g, old);
            } else {
                freed += 1;
            }
        }
    }
    freed
}
