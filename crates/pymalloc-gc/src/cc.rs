//! The safe front: [`Cc<T>`], a reference-counted pointer whose cycles the
//! thread's collector finds and frees, [`Weak<T>`], [`Finalize`] (PEP 442
//! finalizers) and [`AnyCc`], a type-erased handle.
//!
//! Each thread has its own [`Collector`] with its own pymalloc heap. A `Cc`
//! is an ordinary container object of that collector: a GC header, an object
//! header (reference count, type) and the value. Its type descriptor is
//! generated per `T`: `tp_traverse` calls [`Trace::trace`], `tp_clear` drops
//! the value (the object then becomes a *zombie*: its memory stays until the
//! last handle goes, and dereferencing it panics), `tp_dealloc` drops and
//! frees inside the trashcan, so dropping a chain of any length uses bounded
//! stack.
//!
//! # Invariants
//!
//! * A handle (`Cc`, `AnyCc`) owns one reference; `ob_refcnt` counts them
//!   (plus temporary references the collector holds).
//! * `ob_type` is the descriptor of `T` while the value is alive, and
//!   `ZOMBIE_TYPE` from the moment its drop starts; a zombie is untracked
//!   and has no weak references.
//! * Objects never leave their thread (`Cc` is neither `Send` nor `Sync`),
//!   so the thread's collector is the one that allocated them.

use core::cell::Cell;
use core::ffi::{c_int, c_void};
use core::fmt;
use core::marker::PhantomData;
use core::mem::{self, ManuallyDrop};
use core::ops::Deref;
use core::ptr::{self, NonNull};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::collect::{decref_gc, reachable_gc, VISIT_DECREF, VISIT_REACHABLE};
use crate::collector::{Collector, NUM_GENERATIONS};
use crate::object::{PyObject, TypeObject, VisitProc, TPFLAGS_HAVE_GC};
use crate::trace::{Trace, Tracer};
use crate::weakref;

/// PEP 442 finalizer: runs once, before the object's value is dropped,
/// whether the object dies by reference count or in a collected cycle. It
/// may resurrect the object by storing a clone of `this` somewhere; the
/// value is then kept and the finalizer never runs again.
///
/// Objects get a finalizer by being created with [`Cc::new_finalizable`].
pub trait Finalize: Trace + Sized + 'static {
    /// The finalizer.
    fn finalize(this: &Cc<Self>);
}

/// The object layout of a `Cc<T>` (after the GC header).
#[repr(C)]
struct CcBox<T> {
    ob: PyObject,
    value: T,
}

/// The descriptor of an object whose value has been dropped.
pub(crate) static ZOMBIE_TYPE: TypeObject = TypeObject {
    tp_name: c"zombie".as_ptr(),
    tp_flags: TPFLAGS_HAVE_GC,
    tp_dealloc: Some(zombie_dealloc),
    ..TypeObject::EMPTY
};

struct Vt<T>(PhantomData<T>);

impl<T: Trace + 'static> Vt<T> {
    const PLAIN: &'static TypeObject = &TypeObject {
        tp_name: T::NAME.as_ptr(),
        tp_basicsize: mem::size_of::<CcBox<T>>() as isize,
        tp_flags: TPFLAGS_HAVE_GC,
        tp_dealloc: Some(cc_dealloc_c::<T>),
        tp_traverse: Some(cc_traverse::<T>),
        tp_clear: Some(cc_clear::<T>),
        ..TypeObject::EMPTY
    };
    const ALIGN_OK: () = assert!(mem::align_of::<CcBox<T>>() <= 16, "Cc<T> supports alignments up to 16");
}

impl<T: Finalize> Vt<T> {
    const FINALIZABLE: &'static TypeObject = &TypeObject { tp_finalize: Some(cc_finalize::<T>), ..*Vt::<T>::PLAIN };
}

// ---------------------------------------------------------------------------
// The thread's collector

thread_local! {
    static LOCAL: Cell<*mut Collector> = const { Cell::new(ptr::null_mut()) };
    static GUARD: LocalGuard = const { LocalGuard };
}

struct LocalGuard;

impl Drop for LocalGuard {
    fn drop(&mut self) {
        // Thread exit: collect the thread's cycles, then free the collector
        // and its heap if no object is left; otherwise leak them (objects
        // held by other thread-locals may still be dropped by their
        // destructors, and those need the collector).
        let p = LOCAL.with(|l| l.get());
        if p.is_null() {
            return;
        }
        // SAFETY: p is this thread's collector (from new_raw_with_heap).
        let c = unsafe { &*p };
        if c.is_collecting() {
            return;
        }
        c.clear_garbage();
        let _ = c.collect(NUM_GENERATIONS - 1);
        c.clear_garbage();
        if c.live_blocks() == 0 {
            LOCAL.with(|l| l.set(ptr::null_mut()));
            // SAFETY: no object is left, so nothing refers to the collector.
            unsafe { Collector::destroy(p) };
        }
    }
}

#[cold]
#[inline(never)]
fn init_local() -> &'static Collector {
    let raw = Collector::new_raw_with_heap();
    LOCAL.with(|l| l.set(raw));
    let _ = GUARD.try_with(|_| ());
    // SAFETY: raw is a valid collector, freed only at thread exit when no
    // object is left.
    unsafe { &*raw }
}

/// The calling thread's collector (created on first use).
#[inline(always)]
pub(crate) fn local_collector() -> &'static Collector {
    let p = LOCAL.with(|l| l.get());
    if p.is_null() {
        init_local()
    } else {
        // SAFETY: a non-null LOCAL is this thread's leaked collector, freed
        // only at thread exit when no object is left.
        unsafe { &*p }
    }
}

// ---------------------------------------------------------------------------
// Type slots for Cc<T>

fn report_unraisable(what: &str, name: &str) {
    eprintln!("pymalloc-gc: panic ignored in {what} of <{name}>");
}

unsafe extern "C" fn cc_traverse<T: Trace + 'static>(op: *mut PyObject, visit: VisitProc, arg: *mut c_void) -> c_int {
    let b = op.cast::<CcBox<T>>();
    let mut tracer = Tracer::new(visit, arg);
    // SAFETY: op is a live, non-zombie Cc<T> object (only those are tracked).
    unsafe { (*b).value.trace(&mut tracer) };
    0
}

/// `tp_clear`: drops the value, leaving a zombie.
unsafe extern "C" fn cc_clear<T: Trace + 'static>(op: *mut PyObject) -> c_int {
    let c = local_collector();
    // SAFETY: op is a live Cc<T> object of this thread (the collector holds
    // a reference during the call).
    unsafe {
        c.untrack(op);
        weakref::clear_weakrefs(c, op);
        if ptr::eq((*op).ob_type, &ZOMBIE_TYPE) {
            return 0;
        }
        (*op).ob_type = &ZOMBIE_TYPE;
        let v = ptr::addr_of_mut!((*op.cast::<CcBox<T>>()).value);
        if catch_unwind(AssertUnwindSafe(|| ptr::drop_in_place(v))).is_err() {
            report_unraisable("drop during collection", T::NAME.to_str().unwrap_or("?"));
        }
    }
    0
}

/// `tp_finalize`.
unsafe extern "C" fn cc_finalize<T: Finalize>(op: *mut PyObject) {
    // SAFETY: op is a live Cc<T> and the caller holds a reference, which the
    // temporary handle borrows without owning.
    let this = ManuallyDrop::new(unsafe { Cc::<T>::from_object_ptr(op) });
    if catch_unwind(AssertUnwindSafe(|| T::finalize(&this))).is_err() {
        report_unraisable("finalizer", T::NAME.to_str().unwrap_or("?"));
    }
}

/// `tp_dealloc` as the collector and the trashcan call it: panics are
/// reported, not propagated.
unsafe extern "C" fn cc_dealloc_c<T: Trace + 'static>(op: *mut PyObject) {
    // SAFETY: caller's contract (count zero).
    if catch_unwind(AssertUnwindSafe(|| unsafe { cc_dealloc::<T>(op) })).is_err() {
        report_unraisable("drop", T::NAME.to_str().unwrap_or("?"));
    }
}

/// Frees the object and leaves the trashcan level when dropped, so that a
/// panicking `Drop` of the value leaks nothing and unbalances nothing.
struct FreeOnExit<'a> {
    c: &'a Collector,
    op: *mut PyObject,
}

impl Drop for FreeOnExit<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the object is an untracked zombie without weak references
        // and count zero (cc_dealloc).
        unsafe { self.c.gc_free_untracked(self.op) };
        self.c.trash_end();
    }
}

/// Deallocation of a `Cc<T>` whose count reached zero.
///
/// # Safety
/// `op` is a `Cc<T>` object (or a zombie) of this thread with count zero.
#[inline]
unsafe fn cc_dealloc<T: Trace + 'static>(op: *mut PyObject) {
    let c = local_collector();
    // SAFETY: caller's contract and the invariants of this module.
    unsafe {
        let tp = (*op).ob_type;
        if ptr::eq(tp, &ZOMBIE_TYPE) {
            c.gc_free_untracked(op);
            return;
        }
        if let Some(fin) = (*tp).tp_finalize {
            if !c.is_finalized(op) {
                c.set_finalized(op);
                (*op).ob_refcnt = 1;
                fin(op);
                (*op).ob_refcnt -= 1;
                if (*op).ob_refcnt != 0 {
                    return; // resurrected
                }
            }
        }
        c.untrack(op);
        if !c.trash_begin(op) {
            return;
        }
        let _free = FreeOnExit { c, op };
        weakref::clear_weakrefs(c, op);
        (*op).ob_type = &ZOMBIE_TYPE;
        ptr::drop_in_place(ptr::addr_of_mut!((*op.cast::<CcBox<T>>()).value));
    }
}

unsafe extern "C" fn zombie_dealloc(op: *mut PyObject) {
    // SAFETY: a zombie with count zero: untracked, no weak references.
    unsafe { local_collector().gc_free_untracked(op) };
}

#[cold]
#[inline(never)]
fn zombie_access() -> ! {
    panic!("Cc: value accessed after its cycle was collected (it was dropped by the collector)")
}

// ---------------------------------------------------------------------------
// Cc<T>

/// A reference-counted pointer whose reference cycles are collected by the
/// thread's cycle collector (CPython's generational algorithm).
///
/// Cloning adds a reference; dropping the last one drops the value at once.
/// Values in unreachable cycles are dropped by the collector, which runs
/// automatically as objects are allocated (thresholds 700, 10, 10, as
/// CPython's) or on [`gc::collect`](crate::gc::collect).
///
/// ```
/// use pymalloc_gc::{Cc, Trace, gc};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Person { friends: RefCell<Vec<Cc<Person>>> }
///
/// let a = Cc::new(Person { friends: RefCell::new(vec![]) });
/// let b = Cc::new(Person { friends: RefCell::new(vec![a.clone()]) });
/// a.friends.borrow_mut().push(b.clone());
/// drop((a, b));
/// assert_eq!(gc::collect(), 2); // the pair was a cycle
/// ```
///
/// If a value's `Drop` dereferences another member of its collected cycle
/// that has already been dropped, that dereference panics (the panic is
/// reported and the collection goes on).
pub struct Cc<T: Trace + 'static> {
    ptr: NonNull<CcBox<T>>,
    _owns: PhantomData<CcBox<T>>,
}

impl<T: Trace + 'static> Cc<T> {
    /// Allocates a tracked object holding `value`. Aborts through
    /// [`std::alloc::handle_alloc_error`] when out of memory, as `Rc::new`.
    #[inline]
    pub fn new(value: T) -> Cc<T> {
        match Self::with_type(value, Vt::<T>::PLAIN) {
            Ok(c) => c,
            Err(_) => Self::oom(),
        }
    }

    /// As [`new`](Self::new), but gives the value back when out of memory.
    pub fn try_new(value: T) -> Result<Cc<T>, T> {
        Self::with_type(value, Vt::<T>::PLAIN)
    }

    #[cold]
    fn oom() -> ! {
        std::alloc::handle_alloc_error(
            std::alloc::Layout::new::<CcBox<T>>().align_to(16).unwrap_or(std::alloc::Layout::new::<u128>()),
        )
    }

    #[inline(always)]
    fn with_type(value: T, tp: &'static TypeObject) -> Result<Cc<T>, T> {
        #[allow(clippy::let_unit_value)]
        let () = Vt::<T>::ALIGN_OK;
        let c = local_collector();
        let op = c.gc_alloc(mem::size_of::<CcBox<T>>());
        let Some(nn) = NonNull::new(op.cast::<CcBox<T>>()) else {
            return Err(value);
        };
        // SAFETY: a fresh block of size_of::<CcBox<T>>() bytes, 16-aligned
        // (gc_alloc's blocks are 16-aligned and the header is 16 bytes).
        unsafe {
            nn.as_ptr().write(CcBox { ob: PyObject { ob_refcnt: 1, ob_type: tp }, value });
            c.track(op);
        }
        Ok(Cc { ptr: nn, _owns: PhantomData })
    }

    /// A handle for an object (does not add a reference).
    ///
    /// # Safety
    /// `op` is a live `Cc<T>` object; the returned handle owns one of its
    /// references.
    unsafe fn from_object_ptr(op: *mut PyObject) -> Cc<T> {
        Cc {
            // SAFETY: caller's contract (non-null live object).
            ptr: unsafe { NonNull::new_unchecked(op.cast()) },
            _owns: PhantomData,
        }
    }

    /// The object pointer (CPython's `PyObject *`).
    #[inline(always)]
    pub fn as_object_ptr(&self) -> *mut PyObject {
        self.ptr.as_ptr().cast()
    }

    #[inline(always)]
    fn header(&self) -> *mut PyObject {
        self.ptr.as_ptr().cast()
    }

    /// Whether two handles point to the same object.
    pub fn ptr_eq(a: &Cc<T>, b: &Cc<T>) -> bool {
        a.ptr == b.ptr
    }

    /// The reference count.
    pub fn strong_count(this: &Cc<T>) -> usize {
        // SAFETY: the handle keeps the object alive.
        unsafe { (*this.header()).ob_refcnt as usize }
    }

    /// `gc.is_tracked`: always true while the value is alive.
    pub fn is_tracked(this: &Cc<T>) -> bool {
        // SAFETY: the handle keeps the object alive; it is a GC object.
        unsafe { local_collector().is_tracked(this.header()) }
    }

    /// `gc.is_finalized`: whether the finalizer has run.
    pub fn is_finalized(this: &Cc<T>) -> bool {
        // SAFETY: the handle keeps the object alive.
        unsafe { local_collector().is_finalized(this.header()) }
    }

    /// Whether the collector has dropped the value (it was part of a
    /// collected cycle): dereferencing then panics.
    pub fn is_zombie(this: &Cc<T>) -> bool {
        // SAFETY: the handle keeps the object alive.
        unsafe { ptr::eq((*this.header()).ob_type, &ZOMBIE_TYPE) }
    }

    /// The value, or `None` if the collector has dropped it.
    pub fn try_get(this: &Cc<T>) -> Option<&T> {
        if Self::is_zombie(this) {
            None
        } else {
            // SAFETY: not a zombie, so the value is alive while the handle is.
            Some(unsafe { &(*this.ptr.as_ptr()).value })
        }
    }

    /// Creates a weak reference (reusing an existing one without callback).
    pub fn downgrade(this: &Cc<T>) -> Weak<T> {
        let c = local_collector();
        let op = this.header();
        if let Some(head) = c.weak_table.first(op) {
            // SAFETY: table entries are live weak references.
            unsafe {
                if (*head).wr_callback.is_none() {
                    Collector::incref(head.cast());
                    return Weak::from_object_ptr(head.cast());
                }
            }
        }
        // SAFETY: op is a live GC object of this thread's collector.
        let wr = unsafe { weakref::new_ref(c, op, None, ptr::null_mut(), None) };
        if wr.is_null() {
            Self::oom()
        }
        // SAFETY: a new reference to a weak reference object.
        unsafe { Weak::from_object_ptr(wr) }
    }

    /// Creates a weak reference whose callback runs when the object dies,
    /// if the weak reference itself is still alive then (CPython's
    /// `weakref.ref(obj, callback)`). The callback receives the (dead) weak
    /// reference.
    pub fn downgrade_with_callback(this: &Cc<T>, f: impl FnOnce(Weak<T>) + 'static) -> Weak<T> {
        type Boxed = Box<dyn FnOnce(*mut PyObject)>;
        unsafe extern "C" fn call(wr: *mut PyObject, data: *mut c_void) {
            // SAFETY: data is the Box<Option<Boxed>> made below.
            let slot = unsafe { &mut *data.cast::<Option<Boxed>>() };
            if let Some(f) = slot.take() {
                if catch_unwind(AssertUnwindSafe(|| f(wr))).is_err() {
                    report_unraisable("callback", "weakref");
                }
            }
        }
        unsafe extern "C" fn release(data: *mut c_void) {
            // SAFETY: data is the Box<Option<Boxed>> made below, released once.
            drop(unsafe { Box::from_raw(data.cast::<Option<Boxed>>()) });
        }
        let boxed: Boxed = Box::new(move |wr: *mut PyObject| {
            // SAFETY: the collector holds a reference to wr during the callback.
            unsafe { Collector::incref(wr) };
            // SAFETY: the reference just added.
            f(unsafe { Weak::from_object_ptr(wr) })
        });
        let data = Box::into_raw(Box::new(Some(boxed))).cast::<c_void>();
        let c = local_collector();
        // SAFETY: this.header() is a live GC object of this thread.
        let wr = unsafe { weakref::new_ref(c, this.header(), Some(call), data, Some(release)) };
        if wr.is_null() {
            // SAFETY: not handed over.
            unsafe { release(data) };
            Self::oom()
        }
        // SAFETY: a new reference.
        unsafe { Weak::from_object_ptr(wr) }
    }

    /// A type-erased handle to the same object.
    pub fn to_any(this: &Cc<T>) -> AnyCc {
        // SAFETY: the handle keeps the object alive.
        unsafe { Collector::incref(this.header()) };
        AnyCc { op: this.ptr.cast() }
    }
}

impl<T: Finalize> Cc<T> {
    /// Allocates a tracked object whose [`Finalize::finalize`] runs once
    /// before the value is dropped.
    pub fn new_finalizable(value: T) -> Cc<T> {
        match Self::with_type(value, Vt::<T>::FINALIZABLE) {
            Ok(c) => c,
            Err(_) => Self::oom(),
        }
    }
}

impl<T: Trace + 'static> Clone for Cc<T> {
    #[inline(always)]
    fn clone(&self) -> Cc<T> {
        // SAFETY: the handle keeps the object alive.
        unsafe { Collector::incref(self.header()) };
        Cc { ptr: self.ptr, _owns: PhantomData }
    }
}

impl<T: Trace + 'static> Drop for Cc<T> {
    #[inline(always)]
    fn drop(&mut self) {
        let op = self.header();
        // SAFETY: this handle owns a reference; at zero nothing else refers
        // to the object (module invariants).
        unsafe {
            let rc = (*op).ob_refcnt - 1;
            (*op).ob_refcnt = rc;
            if rc == 0 {
                cc_dealloc::<T>(op);
            }
        }
    }
}

impl<T: Trace + 'static> Deref for Cc<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        let p = self.ptr.as_ptr();
        // SAFETY: the handle keeps the object alive; the value is alive
        // unless the object is a zombie, which is checked.
        unsafe {
            if ptr::eq((*p).ob.ob_type, &ZOMBIE_TYPE) {
                zombie_access()
            }
            &(*p).value
        }
    }
}

impl<T: Trace + fmt::Debug + 'static> fmt::Debug for Cc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Cc::try_get(self) {
            Some(v) => v.fmt(f),
            None => f.write_str("<collected>"),
        }
    }
}

// SAFETY: reports exactly the one handle.
unsafe impl<T: Trace + 'static> Trace for Cc<T> {
    #[inline(always)]
    fn trace(&self, t: &mut Tracer<'_>) {
        t.visit(self)
    }
}

// ---------------------------------------------------------------------------
// The handles' visits

impl Tracer<'_> {
    /// Visits a GC object, with the collector's two hot visitors inlined
    /// (an address comparison; if it fails, the call is made as usual).
    #[inline(always)]
    fn visit_gc_object(&mut self, op: *mut PyObject) {
        let (visit, arg) = self.parts();
        // SAFETY: op is a live GC object (a Cc handle owns it); the inlined
        // bodies are those of the visitor the collector passed, with its
        // argument.
        unsafe {
            if ptr::fn_addr_eq(visit, VISIT_DECREF) {
                decref_gc(op)
            } else if ptr::fn_addr_eq(visit, VISIT_REACHABLE) {
                reachable_gc(op, arg)
            } else {
                visit(op, arg);
            }
        }
    }

    /// Reports a strong reference.
    #[inline(always)]
    pub fn visit<T: Trace + 'static>(&mut self, cc: &Cc<T>) {
        self.visit_gc_object(cc.as_object_ptr());
    }

    /// Reports a weak reference handle (the weak reference object, not its
    /// referent).
    #[inline]
    pub fn visit_weak<T: Trace + 'static>(&mut self, w: &Weak<T>) {
        self.visit_object(w.as_object_ptr());
    }

    /// Reports a type-erased strong reference.
    #[inline]
    pub fn visit_any(&mut self, a: &AnyCc) {
        self.visit_object(a.as_ptr());
    }
}

// ---------------------------------------------------------------------------
// Weak<T>

/// A weak reference to a `Cc<T>`: does not keep the value alive, is cleared
/// when the object dies (by reference count or in a collected cycle).
pub struct Weak<T: Trace + 'static> {
    wr: NonNull<PyObject>,
    _t: PhantomData<Cc<T>>,
}

impl<T: Trace + 'static> Weak<T> {
    /// # Safety
    /// `wr` is a live weak reference to a `Cc<T>` object (or cleared); the
    /// handle owns one reference to it.
    unsafe fn from_object_ptr(wr: *mut PyObject) -> Weak<T> {
        Weak {
            // SAFETY: caller's contract.
            wr: unsafe { NonNull::new_unchecked(wr) },
            _t: PhantomData,
        }
    }

    /// The weak reference object's pointer.
    pub fn as_object_ptr(&self) -> *mut PyObject {
        self.wr.as_ptr()
    }

    /// A strong handle, if the object is alive.
    pub fn upgrade(&self) -> Option<Cc<T>> {
        // SAFETY: the handle keeps the weak reference alive; a non-null
        // referent is a live, non-zombie Cc<T> object (weak references are
        // cleared before a value is dropped).
        unsafe {
            let o = weakref::get_object(self.wr.as_ptr());
            if o.is_null() || ptr::eq((*o).ob_type, &ZOMBIE_TYPE) {
                return None;
            }
            Collector::incref(o);
            Some(Cc::from_object_ptr(o))
        }
    }

    /// Whether the referent is gone.
    pub fn is_dead(&self) -> bool {
        self.upgrade().is_none()
    }
}

impl<T: Trace + 'static> Clone for Weak<T> {
    fn clone(&self) -> Weak<T> {
        // SAFETY: the handle keeps the weak reference alive.
        unsafe { Collector::incref(self.wr.as_ptr()) };
        Weak { wr: self.wr, _t: PhantomData }
    }
}

impl<T: Trace + 'static> Drop for Weak<T> {
    fn drop(&mut self) {
        // SAFETY: the handle owns a reference to an object of this thread.
        unsafe { local_collector().decref(self.wr.as_ptr()) };
    }
}

// SAFETY: reports exactly the one handle (the weak reference object).
unsafe impl<T: Trace + 'static> Trace for Weak<T> {
    fn trace(&self, t: &mut Tracer<'_>) {
        t.visit_weak(self)
    }
}

impl<T: Trace + 'static> fmt::Debug for Weak<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_dead() { "(Weak: dead)" } else { "(Weak)" })
    }
}

// ---------------------------------------------------------------------------
// AnyCc

/// A strong, type-erased handle to any object of the thread's collector
/// (what `gc.get_objects()`, `gc.get_referrers()` and `gc.garbage` return).
pub struct AnyCc {
    op: NonNull<PyObject>,
}

impl AnyCc {
    /// # Safety
    /// `op` is a live object of this thread's collector.
    pub(crate) unsafe fn new_ref(op: *mut PyObject) -> AnyCc {
        // SAFETY: caller's contract.
        unsafe { Collector::incref(op) };
        AnyCc {
            // SAFETY: live objects are non-null.
            op: unsafe { NonNull::new_unchecked(op) },
        }
    }

    /// The object pointer.
    pub fn as_ptr(&self) -> *mut PyObject {
        self.op.as_ptr()
    }

    /// The type's name (`Trace::NAME`, `"weakref"`, `"zombie"`).
    pub fn type_name(&self) -> &'static str {
        // SAFETY: the handle keeps the object alive; descriptors are static.
        let tp: &'static TypeObject = unsafe { &*(*self.op.as_ptr()).ob_type };
        tp.name()
    }

    /// Whether this is the object of `cc`.
    pub fn is<T: Trace + 'static>(&self, cc: &Cc<T>) -> bool {
        self.op.as_ptr() == cc.as_object_ptr()
    }

    /// The reference count.
    pub fn refcount(&self) -> usize {
        // SAFETY: the handle keeps the object alive.
        unsafe { (*self.op.as_ptr()).ob_refcnt as usize }
    }
}

impl Clone for AnyCc {
    fn clone(&self) -> AnyCc {
        // SAFETY: the handle keeps the object alive.
        unsafe { AnyCc::new_ref(self.op.as_ptr()) }
    }
}

impl Drop for AnyCc {
    fn drop(&mut self) {
        // SAFETY: the handle owns a reference to an object of this thread.
        unsafe { local_collector().decref(self.op.as_ptr()) };
    }
}

impl PartialEq for AnyCc {
    fn eq(&self, o: &AnyCc) -> bool {
        self.op == o.op
    }
}

impl fmt::Debug for AnyCc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} {:p}>", self.type_name(), self.op.as_ptr())
    }
}

// SAFETY: reports exactly the one handle.
unsafe impl Trace for AnyCc {
    fn trace(&self, t: &mut Tracer<'_>) {
        t.visit_any(self)
    }
}
