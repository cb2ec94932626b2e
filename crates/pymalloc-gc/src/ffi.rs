//! The C ABI of the object layer and of the `gc` module, under CPython's
//! names where CPython has the function (declared in
//! `crates/pymalloc-capi/include/pymalloc_gc.h`, which `pymalloc.h` includes).
//!
//! These functions are exported under their names only with the
//! `c-symbols` feature, which the C library (`pymalloc-capi`) enables: a Rust
//! program linking this crate next to libpython (through pyo3, say) would
//! otherwise get two `Py_IncRef`s. They use one process-wide
//! collector whose objects come from the OBJ domain, and, like CPython's,
//! they assume the caller holds the embedder's lock (the GIL): no two
//! threads may call them at the same time.
//!
//! A C type is a [`TypeObject`]; a container type sets
//! [`TPFLAGS_HAVE_GC`](crate::object::TPFLAGS_HAVE_GC), a `tp_traverse` that
//! visits each object it references, and a `tp_clear` that drops those
//! references. A `tp_dealloc` written as in CPython untracks, clears its
//! references, and calls `PyObject_GC_Del`; a type may leave `tp_dealloc`
//! null to get exactly that (plus weak-reference clearing and the trashcan).

#![allow(non_snake_case, non_camel_case_types)]

use core::ffi::{c_char, c_int, c_ulong, c_void, CStr};
use core::ptr;
use std::sync::OnceLock;

use crate::collector::{Collector, Phase, NUM_GENERATIONS};
use crate::freelist::FreeLists;
use crate::object::{PyObject, PyVarObject, TypeObject};
use crate::weakref;
pub use crate::weakref::{WeakCallback, WeakDataDrop};

struct GilCollector(&'static Collector);
// SAFETY: the C ABI's contract: callers serialise all calls (the GIL), so
// the collector is never used by two threads at once.
unsafe impl Sync for GilCollector {}
// SAFETY: the collector may be used from any thread as long as calls are
// serialised (the GIL, the C ABI's contract): it holds no thread-local
// state, its memory comes from the process-wide OBJ domain.
unsafe impl Send for GilCollector {}

static GLOBAL: OnceLock<GilCollector> = OnceLock::new();

/// The process-wide collector behind the C ABI (objects in the OBJ domain).
pub fn global_collector() -> &'static Collector {
    GLOBAL.get_or_init(|| GilCollector(Collector::leak_obj_domain())).0
}

fn gc() -> &'static Collector {
    global_collector()
}

// ---------------------------------------------------------------------------
// Object allocation

/// `_PyObject_New(type)`: a plain object of `tp_basicsize` bytes from the OBJ
/// domain, reference count 1. NULL when out of memory.
///
/// # Safety
/// `tp` points to a live type descriptor.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn _PyObject_New(tp: *const TypeObject) -> *mut PyObject {
    // SAFETY: caller's contract.
    unsafe { gc().new_object(tp) }
}

/// `_PyObject_NewVar(type, nitems)`: a plain variable-size object. NULL when
/// out of memory, when `nitems` is negative or when the size overflows.
///
/// # Safety
/// `tp` points to a live type descriptor.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn _PyObject_NewVar(tp: *const TypeObject, nitems: isize) -> *mut PyVarObject {
    // SAFETY: caller's contract.
    unsafe { gc().new_var_object(tp, nitems) }
}

/// `PyObject_Init(op, type)`: sets the type and a reference count of 1.
///
/// # Safety
/// `op` points to at least `size_of::<PyObject>()` writable bytes.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyObject_Init(op: *mut PyObject, tp: *const TypeObject) -> *mut PyObject {
    if !op.is_null() {
        // SAFETY: caller's contract.
        unsafe { op.write(PyObject { ob_refcnt: 1, ob_type: tp }) };
    }
    op
}

/// `PyObject_InitVar(op, type, size)`.
///
/// # Safety
/// `op` points to at least `size_of::<PyVarObject>()` writable bytes.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyObject_InitVar(
    op: *mut PyVarObject,
    tp: *const TypeObject,
    size: isize,
) -> *mut PyVarObject {
    if !op.is_null() {
        // SAFETY: caller's contract.
        unsafe {
            PyObject_Init(op.cast(), tp);
            (*op).ob_size = size;
        }
    }
    op
}

/// `PyObject_Del(op)` (CPython's `PyObject_Free` of a plain object). NULL
/// does nothing.
///
/// # Safety
/// `op` is NULL or a plain object from `_PyObject_New`/`_PyObject_NewVar`,
/// not used again.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyObject_Del(op: *mut c_void) {
    if !op.is_null() {
        // SAFETY: caller's contract.
        unsafe { gc().del(op.cast()) }
    }
}

/// `_PyObject_GC_New(type)`: a container object with a GC header in front,
/// reference count 1, untracked; taken from the type's free list when it has
/// one. Counts in generation 0 and may trigger a collection. NULL when out of
/// memory.
///
/// # Safety
/// `tp` points to a live GC type descriptor.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn _PyObject_GC_New(tp: *const TypeObject) -> *mut PyObject {
    // SAFETY: caller's contract.
    unsafe { gc().gc_new(tp) }
}

/// `_PyObject_GC_NewVar(type, nitems)`: a variable-size container object.
/// NULL when out of memory, when `nitems` is negative or the size overflows.
///
/// # Safety
/// `tp` points to a live GC type descriptor.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn _PyObject_GC_NewVar(tp: *const TypeObject, nitems: isize) -> *mut PyVarObject {
    // SAFETY: caller's contract.
    unsafe { gc().gc_new_var(tp, nitems) }
}

/// `_PyObject_GC_Resize(op, nitems)`: resizes an untracked variable-size
/// container object; NULL when out of memory (`op` is then unchanged).
///
/// # Safety
/// `op` is a live untracked variable-size container object.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn _PyObject_GC_Resize(op: *mut PyVarObject, nitems: isize) -> *mut PyVarObject {
    // SAFETY: caller's contract.
    unsafe { gc().gc_resize(op, nitems) }
}

/// `PyObject_GC_Del(op)`: untracks if needed, uncounts from generation 0,
/// and frees (or keeps the block in the type's free list). NULL does nothing.
///
/// # Safety
/// `op` is NULL or a container object, not used again.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyObject_GC_Del(op: *mut c_void) {
    if !op.is_null() {
        // SAFETY: caller's contract.
        unsafe { gc().gc_del(op.cast()) }
    }
}

/// `PyObject_GC_Track(op)`: adds the object to generation 0. Tracking an
/// object twice is a fatal error.
///
/// # Safety
/// `op` is a live container object whose `tp_traverse` can run.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyObject_GC_Track(op: *mut c_void) {
    // SAFETY: caller's contract.
    unsafe { gc().track(op.cast()) }
}

/// `PyObject_GC_UnTrack(op)`: removes the object from its generation; does
/// nothing if it is not tracked.
///
/// # Safety
/// `op` is a live container object.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyObject_GC_UnTrack(op: *mut c_void) {
    // SAFETY: caller's contract.
    unsafe { gc().untrack(op.cast()) }
}

/// `PyObject_GC_IsTracked(op)`: 1 if the object is a tracked container.
///
/// # Safety
/// `op` is a live object.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyObject_GC_IsTracked(op: *mut PyObject) -> c_int {
    // SAFETY: caller's contract.
    c_int::from(unsafe { gc().is_tracked(op) })
}

/// `PyObject_GC_IsFinalized(op)`: 1 if the object's `tp_finalize` has run.
///
/// # Safety
/// `op` is a live object.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyObject_GC_IsFinalized(op: *mut PyObject) -> c_int {
    // SAFETY: caller's contract.
    c_int::from(unsafe { gc().is_finalized(op) })
}

/// `Py_IncRef(op)` (NULL allowed).
///
/// # Safety
/// `op` is NULL or a live object.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn Py_IncRef(op: *mut PyObject) {
    if !op.is_null() {
        // SAFETY: caller's contract.
        unsafe { Collector::incref(op) }
    }
}

/// `Py_DecRef(op)` (NULL allowed): at zero, `tp_dealloc` runs.
///
/// # Safety
/// `op` is NULL or a live object whose reference the caller gives up.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn Py_DecRef(op: *mut PyObject) {
    if !op.is_null() {
        // SAFETY: caller's contract.
        unsafe { gc().decref(op) }
    }
}

/// `Py_REFCNT(op)`.
///
/// # Safety
/// `op` is a live object.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn Py_REFCNT(op: *mut PyObject) -> isize {
    // SAFETY: caller's contract.
    unsafe { (*op).ob_refcnt }
}

/// The trashcan's entry (CPython's `Py_TRASHCAN_BEGIN`): a `tp_dealloc`
/// calls it after untracking; 0 means the deallocation was deferred (return
/// at once), 1 means go on and call [`PyMemGc_Trashcan_End`] at the end.
///
/// # Safety
/// `op` is an untracked container object being deallocated.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_Trashcan_Begin(op: *mut PyObject) -> c_int {
    // SAFETY: caller's contract.
    c_int::from(unsafe { gc().trash_begin(op) })
}

/// The trashcan's exit (CPython's `Py_TRASHCAN_END`).
///
/// # Safety
/// Pairs with a [`PyMemGc_Trashcan_Begin`] that returned 1.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_Trashcan_End() {
    gc().trash_end()
}

// ---------------------------------------------------------------------------
// Weak references

/// Creates a weak reference to the container object `ob` (CPython's
/// `PyWeakref_NewRef`, with a C callback and its data instead of a Python
/// callable): `callback(weakref, data)` runs when `ob` dies, if the weak
/// reference is alive then; `data_drop(data)` runs once the callback ran or
/// the weak reference died. Returns a new reference, or NULL when out of
/// memory or when `ob` is not a container object.
///
/// # Safety
/// `ob` is a live object; `callback`/`data_drop` accept `data`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_Weakref_New(
    ob: *mut PyObject,
    callback: Option<WeakCallback>,
    data: *mut c_void,
    data_drop: Option<WeakDataDrop>,
) -> *mut PyObject {
    // SAFETY: caller's contract.
    unsafe { weakref::new_ref(gc(), ob, callback, data, data_drop) }
}

/// `PyWeakref_GetObject(ref)`: the referent (borrowed), or NULL once it is
/// gone (CPython returns `None`).
///
/// # Safety
/// `wr` is a live weak reference.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyWeakref_GetObject(wr: *mut PyObject) -> *mut PyObject {
    // SAFETY: caller's contract.
    unsafe { weakref::get_object(wr) }
}

/// `PyObject_ClearWeakRefs(op)`: a `tp_dealloc` calls it to clear the weak
/// references to the dying object and run their callbacks.
///
/// # Safety
/// `op` is a container object being deallocated.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyObject_ClearWeakRefs(op: *mut PyObject) {
    // SAFETY: caller's contract.
    unsafe { weakref::clear_weakrefs(gc(), op) }
}

// ---------------------------------------------------------------------------
// The gc module

/// `PyGC_Collect()`: a full collection if automatic collection is enabled
/// (0 otherwise, or when a collection is running); the number of
/// unreachable objects found.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyGC_Collect() -> isize {
    let c = gc();
    if !c.is_enabled() {
        return 0;
    }
    c.collect(NUM_GENERATIONS - 1).unwrap_or(0) as isize
}

/// `PyGC_Enable()`: enables automatic collection; returns the previous state.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyGC_Enable() -> c_int {
    let c = gc();
    let old = c.is_enabled();
    c.enable();
    c_int::from(old)
}

/// `PyGC_Disable()`: disables automatic collection; returns the previous state.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyGC_Disable() -> c_int {
    let c = gc();
    let old = c.is_enabled();
    c.disable();
    c_int::from(old)
}

/// `PyGC_IsEnabled()`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyGC_IsEnabled() -> c_int {
    c_int::from(gc().is_enabled())
}

/// `gc.collect(generation)`, even when disabled: the number of unreachable
/// objects found, or -1 for an invalid generation.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyMemGc_Collect(generation: c_int) -> isize {
    match usize::try_from(generation) {
        Ok(g) => gc().collect(g).map_or(-1, |n| n as isize),
        Err(_) => -1,
    }
}

/// `gc.get_threshold()` into `out[0..3]`.
///
/// # Safety
/// `out` points to 3 writable `Py_ssize_t`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_GetThreshold(out: *mut isize) {
    for (i, t) in gc().threshold().into_iter().enumerate() {
        // SAFETY: caller's contract.
        unsafe { out.add(i).write(t as isize) };
    }
}

/// `gc.set_threshold(t0, t1, t2)`; negative values count as 0.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyMemGc_SetThreshold(t0: isize, t1: isize, t2: isize) {
    gc().set_threshold([t0, t1, t2].map(|t| t.max(0) as usize));
}

/// `gc.get_count()` into `out[0..3]`.
///
/// # Safety
/// `out` points to 3 writable `Py_ssize_t`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_GetCount(out: *mut isize) {
    for (i, t) in gc().count().into_iter().enumerate() {
        // SAFETY: caller's contract.
        unsafe { out.add(i).write(t as isize) };
    }
}

/// One generation of `gc.get_stats()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyMemGc_GenStats {
    /// Collections of the generation.
    pub collections: isize,
    /// Objects they collected.
    pub collected: isize,
    /// Objects they found uncollectable.
    pub uncollectable: isize,
}

/// `gc.get_stats()` into `out[0..3]`.
///
/// # Safety
/// `out` points to 3 writable `PyMemGc_GenStats`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_GetStats(out: *mut PyMemGc_GenStats) {
    for (i, s) in gc().stats().into_iter().enumerate() {
        // SAFETY: caller's contract.
        unsafe {
            out.add(i).write(PyMemGc_GenStats {
                collections: s.collections as isize,
                collected: s.collected as isize,
                uncollectable: s.uncollectable as isize,
            })
        };
    }
}

/// `gc.set_debug(flags)`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyMemGc_SetDebug(flags: c_ulong) {
    gc().set_debug(flags as u32)
}

/// `gc.get_debug()`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyMemGc_GetDebug() -> c_ulong {
    c_ulong::from(gc().debug())
}

/// `gc.freeze()`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyMemGc_Freeze() {
    gc().freeze()
}

/// `gc.unfreeze()`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyMemGc_Unfreeze() {
    gc().unfreeze()
}

/// `gc.get_freeze_count()`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyMemGc_GetFreezeCount() -> isize {
    gc().freeze_count() as isize
}

/// Writes up to `cap` objects of `v` to `out` as new references; returns the
/// total number.
unsafe fn write_refs(v: &[*mut PyObject], out: *mut *mut PyObject, cap: isize) -> isize {
    let cap = usize::try_from(cap).unwrap_or(0);
    for (i, &op) in v.iter().take(cap).enumerate() {
        // SAFETY: caller's contract (out has cap slots); op is live.
        unsafe {
            Collector::incref(op);
            out.add(i).write(op);
        }
    }
    v.len() as isize
}

/// `gc.get_objects(generation)` (`generation` -1 for all): writes up to
/// `cap` objects to `out` as new references and returns how many there are,
/// or -1 for an invalid generation.
///
/// # Safety
/// `out` has `cap` writable slots.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_GetObjects(generation: c_int, out: *mut *mut PyObject, cap: isize) -> isize {
    let g = if generation < 0 { None } else { Some(generation as usize) };
    match gc().objects(g) {
        // SAFETY: caller's contract.
        Ok(v) => unsafe { write_refs(&v, out, cap) },
        Err(_) => -1,
    }
}

/// `gc.get_referrers(*objs)`: new references into `out`, returns the count.
///
/// # Safety
/// `objs` has `n` live objects; `out` has `cap` writable slots.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_GetReferrers(
    objs: *const *mut PyObject,
    n: isize,
    out: *mut *mut PyObject,
    cap: isize,
) -> isize {
    // SAFETY: caller's contract.
    let objs = unsafe { core::slice::from_raw_parts(objs, n.max(0) as usize) };
    let v = gc().referrers(objs);
    // SAFETY: caller's contract.
    unsafe { write_refs(&v, out, cap) }
}

/// `gc.get_referents(*objs)`: new references into `out`, returns the count.
///
/// # Safety
/// As [`PyMemGc_GetReferrers`].
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_GetReferents(
    objs: *const *mut PyObject,
    n: isize,
    out: *mut *mut PyObject,
    cap: isize,
) -> isize {
    // SAFETY: caller's contract.
    let objs = unsafe { core::slice::from_raw_parts(objs, n.max(0) as usize) };
    // SAFETY: caller's contract (live objects).
    let v = unsafe { gc().referents(objs) };
    // SAFETY: caller's contract.
    unsafe { write_refs(&v, out, cap) }
}

/// `len(gc.garbage)`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyMemGc_GarbageSize() -> isize {
    gc().garbage().len() as isize
}

/// `gc.garbage[i]` (borrowed), NULL when out of range.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyMemGc_GarbageGet(i: isize) -> *mut PyObject {
    usize::try_from(i).ok().and_then(|i| gc().garbage().get(i).copied()).unwrap_or(ptr::null_mut())
}

/// `del gc.garbage[:]`.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyMemGc_GarbageClear() {
    gc().clear_garbage()
}

/// What a collection callback receives (`gc.callbacks`' `info` dict).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PyMemGc_CallbackInfo {
    /// 0 for `"start"`, 1 for `"stop"`.
    pub phase: c_int,
    /// The oldest generation collected.
    pub generation: c_int,
    /// Objects collected (0 at start).
    pub collected: isize,
    /// Objects found uncollectable (0 at start).
    pub uncollectable: isize,
}

/// A collection callback.
pub type PyMemGc_Callback = unsafe extern "C" fn(info: *const PyMemGc_CallbackInfo, data: *mut c_void);

struct SendPtr(*mut c_void);

/// `gc.callbacks.append(cb)`: returns an id for [`PyMemGc_RemoveCallback`].
///
/// # Safety
/// `cb` accepts `data` for as long as it stays registered.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_AddCallback(cb: PyMemGc_Callback, data: *mut c_void) -> u64 {
    let data = SendPtr(data);
    gc().add_callback(move |info| {
        let c = PyMemGc_CallbackInfo {
            phase: match info.phase {
                Phase::Start => 0,
                Phase::Stop => 1,
            },
            generation: info.generation as c_int,
            collected: info.collected as isize,
            uncollectable: info.uncollectable as isize,
        };
        let d = &data;
        // SAFETY: the registration contract.
        unsafe { cb(&c, d.0) }
    })
}

/// `gc.callbacks.remove(cb)`: 1 if it was registered.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub extern "C" fn PyMemGc_RemoveCallback(id: u64) -> c_int {
    c_int::from(gc().remove_callback(id))
}

// ---------------------------------------------------------------------------
// Free lists

/// Creates free lists for a type (assign the result to its `tp_freelist`):
/// objects of `basicsize + index * itemsize` bytes for indexes
/// `first..first+n`, at most `max` blocks each. Full collections empty them.
///
/// # Safety
/// `name` is a NUL-terminated string.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_FreeLists_New(
    name: *const c_char,
    basicsize: isize,
    itemsize: isize,
    first: isize,
    n: isize,
    max: isize,
) -> *mut FreeLists {
    let name = if name.is_null() {
        "?".into()
    } else {
        // SAFETY: caller's contract.
        unsafe { CStr::from_ptr(name) }.to_string_lossy()
    };
    let u = |x: isize| x.max(0) as usize;
    let fl = Box::into_raw(Box::new(FreeLists::new(&name, u(basicsize), u(itemsize), u(first), u(n), u(max))));
    gc().register_freelists(fl);
    fl
}

/// Empties the free lists, freeing their blocks.
///
/// # Safety
/// `fl` comes from [`PyMemGc_FreeLists_New`].
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_FreeLists_Clear(fl: *mut FreeLists) {
    let c = gc();
    // SAFETY: caller's contract; the blocks are the global collector's.
    unsafe { (*fl).clear_with(|b| c.free_block(b)) };
}

/// Empties and destroys free lists (no type may use them any more).
///
/// # Safety
/// `fl` comes from [`PyMemGc_FreeLists_New`] and is not used again.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_FreeLists_Free(fl: *mut FreeLists) {
    // SAFETY: caller's contract.
    unsafe {
        PyMemGc_FreeLists_Clear(fl);
        gc().unregister_freelists(fl);
        drop(Box::from_raw(fl));
    }
}

/// Blocks kept for index `index`.
///
/// # Safety
/// `fl` comes from [`PyMemGc_FreeLists_New`].
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_FreeLists_Len(fl: *const FreeLists, index: isize) -> isize {
    // SAFETY: caller's contract.
    unsafe { (*fl).len(index.max(0) as usize) as isize }
}

/// Writes the `sys._debugmallocstats()` lines of the free lists into `buf`
/// (NUL-terminated, cut to `cap`); returns the length of the whole text.
///
/// # Safety
/// `fl` comes from [`PyMemGc_FreeLists_New`]; `buf` has `cap` writable bytes.
#[cfg_attr(feature = "c-symbols", unsafe(no_mangle))]
pub unsafe extern "C" fn PyMemGc_FreeLists_Stats(fl: *const FreeLists, buf: *mut c_char, cap: isize) -> isize {
    let mut s = String::new();
    // SAFETY: caller's contract.
    let _ = unsafe { (*fl).write_stats(&mut s) };
    let cap = cap.max(0) as usize;
    if cap > 0 && !buf.is_null() {
        let n = s.len().min(cap - 1);
        // SAFETY: caller's contract (cap bytes).
        unsafe {
            ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), n);
            buf.add(n).write(0);
        }
    }
    s.len() as isize
}
