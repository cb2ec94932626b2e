//! Weak references (CPython's `Objects/weakrefobject.c`, the part the
//! collector relies on) and the collector's `handle_weakrefs`.
//!
//! A weak reference is itself a GC object of type [`WEAKREF_TYPE`]. The
//! weak references to one object form a doubly linked list whose first
//! element is found in the collector's side table, keyed by the referent's
//! address (CPython keeps the list head inside the object, at
//! `tp_weaklistoffset`; a side table lets every GC object be weakly
//! referenced without a field of its own).
//!
//! # Invariants
//!
//! * A referent has `PREV_MASK_WEAKREFS` set exactly when the side table
//!   has an entry for its address; the entry is the first of the weak
//!   references whose `wr_object` is that referent, linked by
//!   `wr_prev`/`wr_next`.
//! * A cleared weak reference has `wr_object`, `wr_prev` and `wr_next` null
//!   and is in no list; it never becomes live again.
//! * `wr_callback` runs at most once; after it runs (or when the weak
//!   reference dies) `wr_data_drop(wr_data)` releases the data.

use core::ffi::{c_int, c_void};
use core::ptr;

use crate::collector::Collector;
use crate::list;
use crate::object::{as_gc, is_gc, GcHead, PyObject, TypeObject, PREV_MASK_WEAKREFS, TPFLAGS_HAVE_GC};

/// A weak reference callback: receives the (already cleared) weak reference
/// and the data given at creation.
pub type WeakCallback = unsafe extern "C" fn(weakref: *mut PyObject, data: *mut c_void);
/// Releases the data of a weak reference callback.
pub type WeakDataDrop = unsafe extern "C" fn(data: *mut c_void);

/// A weak reference object (CPython's `PyWeakReference`, with the callback
/// as a C function and its data instead of a Python callable).
#[repr(C)]
#[derive(Debug)]
pub struct WeakRefObject {
    /// The object header.
    pub ob_base: PyObject,
    pub(crate) wr_object: *mut PyObject,
    pub(crate) wr_callback: Option<WeakCallback>,
    pub(crate) wr_data: *mut c_void,
    pub(crate) wr_data_drop: Option<WeakDataDrop>,
    pub(crate) wr_prev: *mut WeakRefObject,
    pub(crate) wr_next: *mut WeakRefObject,
    pub(crate) wr_collector: *const Collector,
}

/// The type of weak references (`_PyWeakref_RefType`).
pub static WEAKREF_TYPE: TypeObject = TypeObject {
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
pub unsafe fn is_weakref(op: *mut PyObject) -> bool {
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
pub unsafe fn new_ref(
    c: &Collector,
    referent: *mut PyObject,
    callback: Option<WeakCallback>,
    data: *mut c_void,
    data_drop: Option<WeakDataDrop>,
) -> *mut PyObject {
    // SAFETY: caller's contract.
    if !unsafe { is_gc(referent) } {
        return ptr::null_mut();
    }
    // SAFETY: WEAKREF_TYPE is a GC type with a WeakRefObject-sized basicsize.
    let op = unsafe { c.gc_new(&WEAKREF_TYPE) };
    if op.is_null() {
        return op;
    }
    let wr = op.cast::<WeakRefObject>();
    let key = referent.addr();
    let head = c.weak_table.borrow().get(&key).copied().unwrap_or(ptr::null_mut());
    // SAFETY: op is a fresh WeakRefObject; head (if any) is the live first
    // weak reference to referent (module invariants).
    unsafe {
        ptr::addr_of_mut!((*wr).wr_object).write(referent);
        ptr::addr_of_mut!((*wr).wr_callback).write(callback);
        ptr::addr_of_mut!((*wr).wr_data).write(data);
        ptr::addr_of_mut!((*wr).wr_data_drop).write(data_drop);
        ptr::addr_of_mut!((*wr).wr_prev).write(ptr::null_mut());
        ptr::addr_of_mut!((*wr).wr_next).write(head);
        ptr::addr_of_mut!((*wr).wr_collector).write(c);
        if !head.is_null() {
            (*head).wr_prev = wr;
        }
        list::set_flags(as_gc(referent), PREV_MASK_WEAKREFS);
        c.track(op);
    }
    c.weak_table.borrow_mut().insert(key, wr);
    op
}

/// `PyWeakref_GetObject`: the referent (borrowed), or null once cleared.
///
/// # Safety
/// `wr` is a live weak reference.
pub unsafe fn get_object(wr: *mut PyObject) -> *mut PyObject {
    // SAFETY: caller's contract.
    unsafe { (*wr.cast::<WeakRefObject>()).wr_object }
}

/// `_PyWeakref_ClearRef`: unlinks the weak reference from its referent's
/// list and clears it, leaving the callback in place.
///
/// # Safety
/// `wr` is a live weak reference of `c`.
pub(crate) unsafe fn clear_ref(c: &Collector, wr: *mut PyObject) {
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
            let mut t = c.weak_table.borrow_mut();
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
pub unsafe fn clear_weakrefs(c: &Collector, op: *mut PyObject) {
    // SAFETY: caller's contract.
    if unsafe { list::flags(as_gc(op)) } & PREV_MASK_WEAKREFS == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { clear_weakrefs_slow(c, op) }
}

#[cold]
unsafe fn clear_weakrefs_slow(c: &Collector, op: *mut PyObject) {
    let mut with_callback = Vec::new();
    loop {
        let head = c.weak_table.borrow().get(&op.addr()).copied();
        let Some(wr) = head else { break };
        // SAFETY: the table's entries are live weak references to op.
        unsafe {
            clear_ref(c, wr.cast());
            if (*wr).wr_callback.is_some() {
                Collector::incref(wr.cast());
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

/// Clears every weak reference to `op` without running callbacks.
///
/// # Safety
/// `op` is a GC object of `c`.
pub(crate) unsafe fn forget_all(c: &Collector, op: *mut PyObject) {
    loop {
        let head = c.weak_table.borrow().get(&op.addr()).copied();
        let Some(wr) = head else { break };
        // SAFETY: the table's entries are live weak references to op.
        unsafe { clear_ref(c, wr.cast()) };
    }
}

unsafe extern "C" fn weakref_dealloc(op: *mut PyObject) {
    let w = op.cast::<WeakRefObject>();
    // SAFETY: op is a weak reference with count zero; its collector outlives it.
    unsafe {
        let c = &*(*w).wr_collector;
        c.untrack(op);
        clear_ref(c, op);
        drop_callback(w);
        c.gc_del(op);
    }
}

unsafe extern "C" fn weakref_tp_clear(op: *mut PyObject) -> c_int {
    let w = op.cast::<WeakRefObject>();
    // SAFETY: op is a live weak reference.
    unsafe {
        let c = &*(*w).wr_collector;
        clear_ref(c, op);
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
/// a generation head.
pub(crate) unsafe fn handle_weakrefs(c: &Collector, unreachable: *mut GcHead, old: *mut GcHead) -> usize {
    let mut wrcb = GcHead::new();
    let wrcb: *mut GcHead = &mut wrcb;
    let mut freed = 0;
    // SAFETY: the lists are consistent; the table's entries are live.
    unsafe {
        list::init(wrcb);
        let mut g = list::next(unreachable);
        while g != unreachable {
            let op = crate::object::from_gc(g);
            let next = list::next(g);
            if is_weakref(op) {
                // An unreachable weak reference must not call back later.
                clear_ref(c, op);
            }
            if list::flags(g) & PREV_MASK_WEAKREFS != 0 {
                loop {
                    let head = c.weak_table.borrow().get(&op.addr()).copied();
                    let Some(wr) = head else { break };
                    clear_ref(c, wr.cast());
                    if (*wr).wr_callback.is_none() {
                        continue;
                    }
                    let wg = as_gc(wr.cast());
                    if list::is_collecting(wg) {
                        // The weak reference is trash too: no callback.
                        continue;
                    }
                    Collector::incref(wr.cast());
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
            let op = crate::object::from_gc(g);
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
