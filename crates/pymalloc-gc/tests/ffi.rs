//! The C ABI, driven the way a C extension would: type descriptors with
//! `extern "C"` traverse/clear/dealloc/finalize/del slots, objects made with
//! `_PyObject_GC_NewVar`, references counted with `Py_IncRef`/`Py_DecRef`.
//! The C ABI has one process-wide collector and assumes a lock held by the
//! caller (CPython's GIL); the tests take `GIL` for that.

use core::ffi::{c_int, c_void};
use core::mem::size_of;
use core::ptr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard};

use pymalloc_gc::ffi::*;
use pymalloc_gc::freelist::FreeLists;
use pymalloc_gc::object::{PyObject, PyVarObject, TypeObject, VisitProc, TPFLAGS_HAVE_GC};

static GIL: Mutex<()> = Mutex::new(());

/// Takes the lock and starts from a clean collector state.
fn gil() -> MutexGuard<'static, ()> {
    let g = GIL.lock().unwrap_or_else(|e| e.into_inner());
    PyMemGc_SetDebug(0);
    PyMemGc_GarbageClear();
    PyGC_Enable();
    PyMemGc_SetThreshold(700, 10, 10);
    PyMemGc_Unfreeze();
    PyMemGc_Collect(2);
    g
}

// --- a list type ---------------------------------------------------------------

static LIST_DEALLOCS: AtomicUsize = AtomicUsize::new(0);

fn items(op: *mut PyObject) -> (*mut *mut PyObject, usize) {
    let v = op.cast::<PyVarObject>();
    // SAFETY: op is a live list object: ob_size items follow the header.
    unsafe { (v.add(1).cast::<*mut PyObject>(), (*v).ob_size as usize) }
}

unsafe extern "C" fn list_traverse(op: *mut PyObject, visit: VisitProc, arg: *mut c_void) -> c_int {
    let (it, n) = items(op);
    for i in 0..n {
        // SAFETY: live list.
        let x = unsafe { *it.add(i) };
        if !x.is_null() {
            // SAFETY: x is a live object the list references.
            let r = unsafe { visit(x, arg) };
            if r != 0 {
                return r;
            }
        }
    }
    0
}

unsafe extern "C" fn list_clear(op: *mut PyObject) -> c_int {
    let (it, n) = items(op);
    for i in 0..n {
        // SAFETY: live list; the slot owns its reference.
        unsafe {
            let x = core::mem::replace(&mut *it.add(i), ptr::null_mut());
            Py_DecRef(x);
        }
    }
    0
}

unsafe extern "C" fn list_dealloc(op: *mut PyObject) {
    // SAFETY: op is a list with count zero (CPython's list_dealloc shape).
    unsafe {
        PyObject_GC_UnTrack(op.cast());
        if PyMemGc_Trashcan_Begin(op) == 0 {
            return;
        }
        PyObject_ClearWeakRefs(op);
        list_clear(op);
        LIST_DEALLOCS.fetch_add(1, SeqCst);
        PyObject_GC_Del(op.cast());
        PyMemGc_Trashcan_End();
    }
}

static LIST_TYPE: TypeObject = TypeObject {
    tp_name: c"list".as_ptr(),
    tp_basicsize: size_of::<PyVarObject>() as isize,
    tp_itemsize: size_of::<*mut PyObject>() as isize,
    tp_flags: TPFLAGS_HAVE_GC,
    tp_dealloc: Some(list_dealloc),
    tp_traverse: Some(list_traverse),
    tp_clear: Some(list_clear),
    ..TypeObject::EMPTY
};

fn new_list_of(tp: &'static TypeObject, n: usize) -> *mut PyObject {
    // SAFETY: tp is a GC type of the list layout.
    let op = unsafe { _PyObject_GC_NewVar(tp, n as isize) }.cast::<PyObject>();
    assert!(!op.is_null());
    let (it, n) = items(op);
    for i in 0..n {
        // SAFETY: fresh object with n item slots.
        unsafe { it.add(i).write(ptr::null_mut()) };
    }
    // SAFETY: initialised, so traverse can run.
    unsafe { PyObject_GC_Track(op.cast()) };
    op
}

fn new_list(n: usize) -> *mut PyObject {
    new_list_of(&LIST_TYPE, n)
}

/// `list[i] = x`, stealing the reference to `x`.
fn set(list: *mut PyObject, i: usize, x: *mut PyObject) {
    let (it, n) = items(list);
    assert!(i < n);
    // SAFETY: in bounds; the old item's reference is released.
    unsafe {
        let old = core::mem::replace(&mut *it.add(i), x);
        Py_DecRef(old);
    }
}

fn incref(x: *mut PyObject) -> *mut PyObject {
    // SAFETY: live object.
    unsafe { Py_IncRef(x) };
    x
}

fn decref(x: *mut PyObject) {
    // SAFETY: the caller owns the reference.
    unsafe { Py_DecRef(x) }
}

fn count() -> [isize; 3] {
    let mut c = [0isize; 3];
    // SAFETY: three slots.
    unsafe { PyMemGc_GetCount(c.as_mut_ptr()) };
    c
}

fn stats() -> [PyMemGc_GenStats; 3] {
    let mut s = [PyMemGc_GenStats::default(); 3];
    // SAFETY: three slots.
    unsafe { PyMemGc_GetStats(s.as_mut_ptr()) };
    s
}

// --- plain objects and allocation limits -----------------------------------------

#[test]
fn plain_objects() {
    let _g = gil();
    static PLAIN: TypeObject = TypeObject { tp_name: c"plain".as_ptr(), tp_basicsize: 32, ..TypeObject::EMPTY };
    static VAR: TypeObject =
        TypeObject { tp_name: c"var".as_ptr(), tp_basicsize: 24, tp_itemsize: 8, ..TypeObject::EMPTY };
    // SAFETY: valid descriptors; each object freed once.
    unsafe {
        let o = _PyObject_New(&PLAIN);
        assert!(!o.is_null());
        assert_eq!((*o).ob_refcnt, 1);
        assert!(ptr::eq((*o).ob_type, &PLAIN));
        assert_eq!(o.addr() % 16, 0);
        assert_eq!(PyObject_GC_IsTracked(o), 0, "not a container");
        PyObject_Del(o.cast());
        let v = _PyObject_NewVar(&VAR, 10);
        assert_eq!((*v).ob_size, 10);
        PyObject_Del(v.cast());
        assert!(_PyObject_NewVar(&VAR, -1).is_null());
        assert!(_PyObject_NewVar(&VAR, isize::MAX).is_null());
        assert!(_PyObject_NewVar(&VAR, isize::MAX / 8).is_null());
        PyObject_Del(ptr::null_mut());
        // Init on caller-provided memory.
        let mut mem = [0u64; 3];
        let v = PyObject_InitVar(mem.as_mut_ptr().cast(), &VAR, 5);
        assert_eq!(((*v).ob_base.ob_refcnt, (*v).ob_size), (1, 5));
    }
}

#[test]
fn gc_allocation_limits_are_clean_failures() {
    let _g = gil();
    static HUGE: TypeObject =
        TypeObject { tp_basicsize: isize::MAX - 8, tp_flags: TPFLAGS_HAVE_GC, ..TypeObject::EMPTY };
    // SAFETY: valid descriptors.
    unsafe {
        assert!(_PyObject_GC_New(&HUGE).is_null());
        assert!(_PyObject_GC_NewVar(&LIST_TYPE, -1).is_null());
        assert!(_PyObject_GC_NewVar(&LIST_TYPE, isize::MAX).is_null());
        assert!(_PyObject_GC_NewVar(&LIST_TYPE, isize::MAX / 8 - 2).is_null());
    }
    assert_eq!(count()[0], 0, "failed allocations are not counted");
}

#[test]
fn track_untrack_and_counts() {
    let _g = gil();
    // SAFETY: a list object, freed once.
    unsafe {
        let op = _PyObject_GC_NewVar(&LIST_TYPE, 0).cast::<PyObject>();
        assert_eq!(count()[0], 1, "allocation counts in generation 0");
        assert_eq!(PyObject_GC_IsTracked(op), 0);
        PyObject_GC_Track(op.cast());
        assert_eq!(PyObject_GC_IsTracked(op), 1);
        PyObject_GC_UnTrack(op.cast());
        PyObject_GC_UnTrack(op.cast()); // twice is fine
        assert_eq!(PyObject_GC_IsTracked(op), 0);
        PyObject_GC_Track(op.cast());
        PyObject_GC_Del(op.cast()); // untracks
        assert_eq!(count()[0], 0, "deallocation uncounts");
    }
}

#[test]
fn resize_keeps_items() {
    let _g = gil();
    let a = new_list(0);
    // SAFETY: `l` is a live list, untracked before resizing (as CPython requires).
    unsafe {
        let l = new_list(2);
        set(l, 0, incref(a));
        set(l, 1, incref(a));
        PyObject_GC_UnTrack(l.cast());
        let l2 = _PyObject_GC_Resize(l.cast(), 1000).cast::<PyObject>();
        assert!(!l2.is_null());
        assert_eq!((*l2.cast::<PyVarObject>()).ob_size, 1000);
        let (it, _) = items(l2);
        assert_eq!(*it, a);
        assert_eq!(*it.add(1), a);
        for i in 2..1000 {
            it.add(i).write(ptr::null_mut());
        }
        assert!(_PyObject_GC_Resize(l2.cast(), isize::MAX).is_null());
        assert_eq!((*l2.cast::<PyVarObject>()).ob_size, 1000, "unchanged on failure");
        let l3 = _PyObject_GC_Resize(l2.cast(), 2).cast::<PyObject>();
        PyObject_GC_Track(l3.cast());
        assert_eq!(Py_REFCNT(a), 3);
        decref(l3);
        assert_eq!(Py_REFCNT(a), 1);
    }
    decref(a);
}

// --- collection ---------------------------------------------------------------

#[test]
fn cycles_of_lists_are_collected() {
    let _g = gil();
    let before = LIST_DEALLOCS.load(SeqCst);
    let a = new_list(1);
    let b = new_list(1);
    set(a, 0, incref(b));
    set(b, 0, incref(a));
    let keep = new_list(1);
    set(keep, 0, new_list(0)); // reachable, acyclic
    decref(a);
    decref(b);
    assert_eq!(PyMemGc_Collect(2), 2);
    assert_eq!(LIST_DEALLOCS.load(SeqCst) - before, 2);
    let s = stats();
    assert!(s[2].collected >= 2);
    decref(keep);
    assert_eq!(LIST_DEALLOCS.load(SeqCst) - before, 4);
    assert_eq!(PyMemGc_Collect(3), -1);
    assert_eq!(PyMemGc_Collect(-1), -1);
}

#[test]
fn pygc_enable_disable_collect() {
    let _g = gil();
    assert_eq!(PyGC_IsEnabled(), 1);
    assert_eq!(PyGC_Disable(), 1);
    assert_eq!(PyGC_Disable(), 0);
    assert_eq!(PyGC_IsEnabled(), 0);
    let a = new_list(1);
    set(a, 0, incref(a));
    decref(a);
    assert_eq!(PyGC_Collect(), 0, "PyGC_Collect does nothing while disabled");
    assert_eq!(PyGC_Enable(), 0);
    assert_eq!(PyGC_Collect(), 1);
}

#[test]
fn thresholds_trigger_collections() {
    let _g = gil();
    PyMemGc_SetThreshold(5, 10, 10);
    let mut t = [0isize; 3];
    // SAFETY: three slots.
    unsafe { PyMemGc_GetThreshold(t.as_mut_ptr()) };
    assert_eq!(t, [5, 10, 10]);
    let before = stats()[0].collections;
    let deallocs = LIST_DEALLOCS.load(SeqCst);
    for _ in 0..10 {
        let a = new_list(1);
        set(a, 0, incref(a));
        decref(a);
    }
    assert!(stats()[0].collections > before);
    assert!(LIST_DEALLOCS.load(SeqCst) - deallocs >= 5);
}

static FINALIZED: AtomicUsize = AtomicUsize::new(0);
static RESURRECTED: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static RESURRECT: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn fin_finalize(op: *mut PyObject) {
    FINALIZED.fetch_add(1, SeqCst);
    if RESURRECT.load(SeqCst) != 0 {
        incref(op);
        RESURRECTED.lock().unwrap().push(op.addr());
    }
}

static FIN_TYPE: TypeObject = TypeObject { tp_name: c"fin".as_ptr(), tp_finalize: Some(fin_finalize), ..LIST_TYPE };

#[test]
fn finalizers_run_once_and_may_resurrect() {
    let _g = gil();
    FINALIZED.store(0, SeqCst);
    RESURRECT.store(1, SeqCst);
    let a = new_list_of(&FIN_TYPE, 1);
    let b = new_list_of(&FIN_TYPE, 1);
    set(a, 0, incref(b));
    set(b, 0, incref(a));
    decref(a);
    decref(b);
    assert_eq!(PyMemGc_Collect(2), 0, "resurrected: nothing collected");
    assert_eq!(FINALIZED.load(SeqCst), 2);
    // SAFETY: both alive (resurrected).
    unsafe {
        assert_eq!(PyObject_GC_IsFinalized(a), 1);
        assert_eq!(PyObject_GC_IsTracked(a), 1);
    }
    RESURRECT.store(0, SeqCst);
    for p in RESURRECTED.lock().unwrap().drain(..) {
        decref(ptr::with_exposed_provenance_mut(p));
    }
    let _ = a.expose_provenance() + b.expose_provenance();
    assert_eq!(PyMemGc_Collect(2), 2);
    assert_eq!(FINALIZED.load(SeqCst), 2, "not finalized twice");
}

unsafe extern "C" fn legacy_del(_op: *mut PyObject) {}

static LEGACY_TYPE: TypeObject = TypeObject { tp_name: c"legacy".as_ptr(), tp_del: Some(legacy_del), ..LIST_TYPE };

#[test]
fn legacy_finalizers_make_cycles_uncollectable() {
    let _g = gil();
    let l = new_list_of(&LEGACY_TYPE, 1);
    let a = new_list(1);
    set(l, 0, incref(a));
    set(a, 0, incref(l));
    decref(l);
    decref(a);
    let before = stats()[2];
    static OUT: Mutex<String> = Mutex::new(String::new());
    OUT.lock().unwrap().clear();
    global_collector().set_debug_sink(Some(Box::new(|s| OUT.lock().unwrap().push_str(s))));
    PyMemGc_SetDebug(4); // DEBUG_UNCOLLECTABLE
                         // Both are unreachable, neither is collectable; only the object with the
                         // legacy finalizer goes to gc.garbage.
    assert_eq!(PyMemGc_Collect(2), 2);
    PyMemGc_SetDebug(0);
    global_collector().set_debug_sink(None);
    let out = OUT.lock().unwrap().clone();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains(&format!("gc: uncollectable <legacy {l:p}>")), "{out}");
    assert!(out.contains(&format!("gc: uncollectable <list {a:p}>")), "{out}");
    assert_eq!(stats()[2].uncollectable - before.uncollectable, 2);
    assert_eq!(PyMemGc_GarbageSize(), 1);
    assert_eq!(PyMemGc_GarbageGet(0), l);
    assert!(PyMemGc_GarbageGet(1).is_null());
    // gc.garbage keeps them reachable now.
    assert_eq!(PyMemGc_Collect(2), 0);
    assert_eq!(PyMemGc_GarbageSize(), 1);
    // Without it they are found again, still uncollectable.
    PyMemGc_GarbageClear();
    assert_eq!(PyMemGc_Collect(2), 2);
    assert_eq!(PyMemGc_GarbageSize(), 1);
    // Breaking the cycle by hand frees them.
    let freed = LIST_DEALLOCS.load(SeqCst);
    incref(a);
    PyMemGc_GarbageClear();
    set(a, 0, ptr::null_mut());
    assert_eq!(LIST_DEALLOCS.load(SeqCst) - freed, 1);
    decref(a);
    assert_eq!(LIST_DEALLOCS.load(SeqCst) - freed, 2);
    assert_eq!(PyMemGc_Collect(2), 0);
}

#[test]
fn debug_saveall() {
    let _g = gil();
    PyMemGc_SetDebug(32);
    assert_eq!(PyMemGc_GetDebug(), 32);
    let a = new_list(1);
    set(a, 0, incref(a));
    decref(a);
    assert_eq!(PyMemGc_Collect(2), 1);
    assert_eq!(PyMemGc_GarbageSize(), 1);
    assert_eq!(PyMemGc_GarbageGet(0), a);
    PyMemGc_SetDebug(0);
    PyMemGc_GarbageClear();
    assert_eq!(PyMemGc_Collect(2), 1);
}

static CALLBACKS: AtomicUsize = AtomicUsize::new(0);
static DATA_DROPS: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn weak_cb(wr: *mut PyObject, data: *mut c_void) {
    // SAFETY: wr is alive during its callback.
    assert!(unsafe { PyWeakref_GetObject(wr) }.is_null(), "cleared first");
    assert_eq!(data.addr(), 42);
    CALLBACKS.fetch_add(1, SeqCst);
}

unsafe extern "C" fn weak_data_drop(data: *mut c_void) {
    assert_eq!(data.addr(), 42);
    DATA_DROPS.fetch_add(1, SeqCst);
}

fn weakref(ob: *mut PyObject) -> *mut PyObject {
    // SAFETY: ob is a live container object.
    let w = unsafe { PyMemGc_Weakref_New(ob, Some(weak_cb), ptr::without_provenance_mut(42), Some(weak_data_drop)) };
    assert!(!w.is_null());
    w
}

#[test]
fn weakref_callbacks_during_collection() {
    let _g = gil();
    CALLBACKS.store(0, SeqCst);
    DATA_DROPS.store(0, SeqCst);
    // Reachable weak reference to trash: cleared, callback runs.
    let a = new_list(1);
    set(a, 0, incref(a));
    let w = weakref(a);
    // SAFETY: w is alive.
    assert_eq!(unsafe { PyWeakref_GetObject(w) }, a);
    decref(a);
    assert_eq!(PyMemGc_Collect(2), 1);
    assert_eq!(CALLBACKS.load(SeqCst), 1);
    assert_eq!(DATA_DROPS.load(SeqCst), 1);
    // SAFETY: w is alive.
    assert!(unsafe { PyWeakref_GetObject(w) }.is_null());
    decref(w);
    // Weak reference that is itself trash: cleared, no callback.
    let b = new_list(2);
    set(b, 0, incref(b));
    let w2 = weakref(b);
    set(b, 1, w2); // b owns its weak reference
    decref(b);
    assert_eq!(PyMemGc_Collect(2), 2);
    assert_eq!(CALLBACKS.load(SeqCst), 1, "no callback for a trash weak reference");
    assert_eq!(DATA_DROPS.load(SeqCst), 2);
    // Reference-count death runs the callback too.
    let c = new_list(0);
    let w3 = weakref(c);
    decref(c);
    assert_eq!(CALLBACKS.load(SeqCst), 2);
    decref(w3);
    // A non-container cannot be weakly referenced here.
    static PLAIN: TypeObject = TypeObject::EMPTY;
    // SAFETY: a plain object, freed once.
    unsafe {
        let p = _PyObject_New(&PLAIN);
        assert!(PyMemGc_Weakref_New(p, None, ptr::null_mut(), None).is_null());
        PyObject_Del(p.cast());
    }
}

#[test]
fn referrers_referents_objects_freeze() {
    let _g = gil();
    let x = new_list(0);
    let a = new_list(1);
    let b = new_list(2);
    set(a, 0, incref(x));
    set(b, 0, incref(x));
    set(b, 1, incref(a));
    let mut out = [ptr::null_mut(); 8];
    // SAFETY: live objects, 8 slots.
    unsafe {
        let n = PyMemGc_GetReferrers(&x, 1, out.as_mut_ptr(), 8);
        assert_eq!(n, 2);
        let got: Vec<_> = out[..2].to_vec();
        assert!(got.contains(&a) && got.contains(&b));
        got.into_iter().for_each(decref);
        let n = PyMemGc_GetReferents(&b, 1, out.as_mut_ptr(), 8);
        assert_eq!(n, 2);
        assert_eq!(&out[..2], &[x, a]);
        out[..2].iter().for_each(|&o| decref(o));
        let total = PyMemGc_GetObjects(-1, ptr::null_mut(), 0);
        assert!(total >= 3);
        assert_eq!(PyMemGc_GetObjects(0, out.as_mut_ptr(), 8), 3);
        out[..3].iter().for_each(|&o| decref(o));
        assert_eq!(PyMemGc_GetObjects(3, out.as_mut_ptr(), 8), -1);
    }
    PyMemGc_Freeze();
    assert!(PyMemGc_GetFreezeCount() >= 3);
    // SAFETY: no slots needed.
    assert_eq!(unsafe { PyMemGc_GetObjects(-1, ptr::null_mut(), 0) }, 0);
    set(a, 0, incref(a));
    decref(a);
    assert_eq!(PyMemGc_Collect(2), 0, "frozen");
    PyMemGc_Unfreeze();
    assert_eq!(PyMemGc_GetFreezeCount(), 0);
    set(b, 1, ptr::null_mut());
    assert_eq!(PyMemGc_Collect(2), 1);
    decref(b);
    decref(x);
}

static CB_LOG: Mutex<Vec<(c_int, c_int, isize, isize)>> = Mutex::new(Vec::new());

unsafe extern "C" fn gc_cb(info: *const PyMemGc_CallbackInfo, data: *mut c_void) {
    assert_eq!(data.addr(), 7);
    // SAFETY: valid during the call.
    let i = unsafe { *info };
    CB_LOG.lock().unwrap().push((i.phase, i.generation, i.collected, i.uncollectable));
}

#[test]
fn collection_callbacks() {
    let _g = gil();
    CB_LOG.lock().unwrap().clear();
    // SAFETY: gc_cb accepts the data while registered.
    let id = unsafe { PyMemGc_AddCallback(gc_cb, ptr::without_provenance_mut(7)) };
    let a = new_list(1);
    set(a, 0, incref(a));
    decref(a);
    assert_eq!(PyMemGc_Collect(1), 1);
    assert_eq!(*CB_LOG.lock().unwrap(), vec![(0, 1, 0, 0), (1, 1, 1, 0)]);
    assert_eq!(PyMemGc_RemoveCallback(id), 1);
    assert_eq!(PyMemGc_RemoveCallback(id), 0);
}

#[test]
fn trashcan_bounds_the_stack_for_long_chains() {
    let _g = gil();
    let n = if cfg!(miri) { 200 } else { 1_000_000 };
    let before = LIST_DEALLOCS.load(SeqCst);
    let mut head = new_list(1);
    for _ in 1..n {
        let l = new_list(1);
        set(l, 0, head);
        head = l;
    }
    decref(head);
    assert_eq!(LIST_DEALLOCS.load(SeqCst) - before, n);
}

// --- free lists ------------------------------------------------------------------

/// A tuple type with CPython's free lists (lengths 1..=20, 2000 each), on
/// the heap so that objects can point at it; the caller frees it (Miri's
/// leak check) with `Box::from_raw` once no object of the type is left.
fn tuple_type() -> *mut TypeObject {
    // SAFETY: a valid name.
    let fl = unsafe { PyMemGc_FreeLists_New(c"PyTupleObject".as_ptr(), 24, 8, 1, 20, 2000) };
    Box::into_raw(Box::new(TypeObject { tp_name: c"tuple".as_ptr(), tp_freelist: fl, ..LIST_TYPE }))
}

#[test]
fn free_lists_reuse_blocks_and_print_like_cpython() {
    let _g = gil();
    let tuple_box = tuple_type();
    // SAFETY: live until the end of the test, where it is freed.
    let tuple: &'static TypeObject = unsafe { &*tuple_box };
    let fl: *mut FreeLists = tuple.tp_freelist;
    // SAFETY: fl is the tuple type's free list; objects are tuples.
    unsafe {
        let t = new_list_of(tuple, 3);
        let addr = t.addr();
        let c0 = count()[0];
        decref(t);
        assert_eq!(PyMemGc_FreeLists_Len(fl, 3), 1);
        assert_eq!(count()[0], c0, "a block kept in a free list is not uncounted");
        let t2 = new_list_of(tuple, 3);
        assert_eq!(t2.addr(), addr, "the block is reused");
        assert_eq!(PyMemGc_FreeLists_Len(fl, 3), 0);
        decref(t2);
        // Sizes without a list are freed normally.
        decref(new_list_of(tuple, 25));
        decref(new_list_of(tuple, 0));
        assert_eq!(PyMemGc_FreeLists_Len(fl, 25), 0);
        PyMemGc_FreeLists_Clear(fl);

        // Fill the lists as in the reference output of CPython 3.11's
        // sys._debugmallocstats() on this machine, and compare the text.
        let counts = [4, 8, 2, 2, 3, 0, 8, 6, 1, 0, 1, 3, 5, 1, 2, 2, 2, 3, 1, 6];
        let mut objs = Vec::new();
        for (i, &c) in counts.iter().enumerate() {
            for _ in 0..c {
                objs.push(new_list_of(tuple, i + 1));
            }
        }
        objs.into_iter().for_each(decref);
        let mut buf = vec![0u8; 4096];
        let n = PyMemGc_FreeLists_Stats(fl, buf.as_mut_ptr().cast(), 4096) as usize;
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        let reference = include_str!("data/cpython311-debugmallocstats.txt");
        let want: Vec<&str> = reference.lines().filter(|l| l.contains("-sized PyTupleObjects")).collect();
        assert_eq!(want.len(), 20);
        assert_eq!(text.lines().collect::<Vec<_>>(), want);
        // A short buffer gets a cut, NUL-terminated text and the full length.
        let mut small = [0xffu8; 10];
        assert_eq!(PyMemGc_FreeLists_Stats(fl, small.as_mut_ptr().cast(), 10) as usize, n);
        assert_eq!(small[9], 0);

        // A full collection empties the free lists (CPython's clear_freelists).
        PyMemGc_Collect(1);
        assert_eq!(PyMemGc_FreeLists_Len(fl, 2), 8);
        PyMemGc_Collect(2);
        assert!((1..=20).all(|i| PyMemGc_FreeLists_Len(fl, i) == 0));
        PyMemGc_FreeLists_Free(fl);
        // SAFETY: made by tuple_type; every tuple is freed.
        drop(Box::from_raw(tuple_box));
    }
}

#[test]
fn fixed_size_free_list_lines() {
    // The other free-list lines of the reference, for fixed-size types.
    let reference = include_str!("data/cpython311-debugmallocstats.txt");
    for (name, n, size) in [("PyDictObject", 8, 48), ("PyFloatObject", 4, 24), ("PyListObject", 40, 40)] {
        let mut fl = FreeLists::new(name, size, 0, 0, 1, 100);
        let blocks: Vec<*mut u8> = (0..n).map(|_| pymalloc::Domain::Obj.malloc(size)).collect();
        for &b in &blocks {
            assert!(fl.push(0, b));
        }
        let mut s = String::new();
        fl.write_stats(&mut s).unwrap();
        let want = reference.lines().find(|l| l.contains(&format!("free {name}s"))).unwrap();
        assert_eq!(s.trim_end_matches('\n'), want);
        // SAFETY: the blocks came from the OBJ domain.
        fl.clear_with(|b| unsafe { pymalloc::Domain::Obj.free(b) });
        assert!(fl.is_empty());
    }
    // Bounded: pushes beyond max are refused.
    let mut fl = FreeLists::new("x", 16, 0, 0, 1, 1);
    let a = pymalloc::Domain::Obj.malloc(16);
    let b = pymalloc::Domain::Obj.malloc(16);
    assert!(fl.push(0, a));
    assert!(!fl.push(0, b));
    assert!(!fl.push(1, b), "no list for index 1");
    assert_eq!(fl.len(0), 1);
    // SAFETY: OBJ-domain blocks.
    unsafe {
        fl.clear_with(|p| pymalloc::Domain::Obj.free(p));
        pymalloc::Domain::Obj.free(b);
    }
}
