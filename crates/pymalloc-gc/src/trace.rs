//! The [`Trace`] trait: how the collector finds the references a value holds
//! (CPython's `tp_traverse`), the [`Tracer`] it is given (a `visitproc` and
//! its argument), and its implementations for standard types. The visits of
//! the handle types (`Tracer::visit`, `visit_weak`, `visit_any`) are in
//! [`cc`](crate::cc), with the handles.

use core::cell::{Cell, RefCell};
use core::ffi::{c_void, CStr};
use core::marker::PhantomData;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, LinkedList, VecDeque};

use crate::object::{PyObject, VisitProc};

/// Reports the collectable references a value owns.
///
/// Use `#[derive(Trace)]` (fields marked `#[trace(skip)]` are not traced:
/// they must then own no `Cc`, `Weak` or `AnyCc`).
///
/// # Safety
///
/// `trace` must call [`Tracer::visit`] (or `visit_weak`, `visit_any`)
/// exactly once for each [`Cc`](crate::Cc), [`Weak`](crate::Weak) and
/// [`AnyCc`](crate::AnyCc) handle the value owns, and for nothing else. It
/// must not create, clone or drop handles, nor mutate anything (in
/// particular it must not borrow a `RefCell` mutably). Reporting fewer handles than the
/// value owns is allowed (the objects are then kept alive, perhaps leaked);
/// reporting more could let the collector break a cycle whose values are
/// still borrowed, which is why the trait is `unsafe`. A `RefCell` that is
/// mutably borrowed during a collection is skipped, which reports fewer.
///
/// ```
/// use pymalloc_gc::{Cc, Trace};
/// use std::cell::RefCell;
///
/// #[derive(Trace)]
/// struct Node {
///     next: RefCell<Option<Cc<Node>>>,
///     #[trace(skip)]
///     label: String,
/// }
///
/// let a = Cc::new(Node { next: RefCell::new(None), label: "a".into() });
/// *a.next.borrow_mut() = Some(a.clone()); // a cycle
/// drop(a);
/// assert_eq!(pymalloc_gc::gc::collect(), 1);
/// ```
pub unsafe trait Trace {
    /// Visits every collectable handle the value owns.
    fn trace(&self, tracer: &mut Tracer<'_>);

    /// The type name shown by the collector's debug output (`tp_name`).
    const NAME: &'static CStr = c"Cc";
}

/// The visitor handed to [`Trace::trace`] (CPython's `visitproc` and its
/// argument).
pub struct Tracer<'a> {
    visit: VisitProc,
    arg: *mut c_void,
    _lifetime: PhantomData<&'a mut ()>,
}

impl Tracer<'_> {
    pub(crate) fn new(visit: VisitProc, arg: *mut c_void) -> Tracer<'static> {
        Tracer { visit, arg, _lifetime: PhantomData }
    }

    #[inline(always)]
    pub(crate) fn visit_object(&mut self, op: *mut PyObject) {
        // SAFETY: op is a live object (a handle owns it); visit/arg come
        // from the collector, which made this tracer for this traversal.
        unsafe { (self.visit)(op, self.arg) };
    }

    /// The visitor and its argument (for the handle types' visits, in
    /// [`cc`](crate::cc)).
    #[inline(always)]
    pub(crate) fn parts(&self) -> (VisitProc, *mut c_void) {
        (self.visit, self.arg)
    }
}

macro_rules! leaf {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: the type owns no collectable handle.
        unsafe impl Trace for $t {
            #[inline(always)]
            fn trace(&self, _: &mut Tracer<'_>) {}
        }
    )*};
}

leaf!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    &'static str,
    std::ffi::CString,
    std::path::PathBuf,
);

// SAFETY: a Cell of a Copy type owns no handle (handles are not Copy).
unsafe impl<T: Copy> Trace for Cell<T> {
    #[inline(always)]
    fn trace(&self, _: &mut Tracer<'_>) {}
}

// SAFETY: forwards to the contents.
unsafe impl<T: Trace + ?Sized> Trace for Box<T> {
    #[inline]
    fn trace(&self, t: &mut Tracer<'_>) {
        (**self).trace(t)
    }
}

// SAFETY: forwards to the contents, if any.
unsafe impl<T: Trace> Trace for Option<T> {
    #[inline]
    fn trace(&self, t: &mut Tracer<'_>) {
        if let Some(v) = self {
            v.trace(t)
        }
    }
}

// SAFETY: forwards to the contents when they are not mutably borrowed; a
// mutably borrowed cell reports nothing (fewer references: allowed).
unsafe impl<T: Trace + ?Sized> Trace for RefCell<T> {
    #[inline]
    fn trace(&self, t: &mut Tracer<'_>) {
        // SAFETY: `try_borrow_unguarded` fails if the cell is mutably
        // borrowed; otherwise no mutable borrow can start while `v` is
        // used, because tracing runs no code that mutates values (the
        // contract of `Trace`), so the unguarded shared borrow is sound and
        // spares two writes to the borrow flag per cell.
        if let Ok(v) = unsafe { self.try_borrow_unguarded() } {
            v.trace(t)
        }
    }
}

// SAFETY: forwards to each element.
unsafe impl<T: Trace> Trace for [T] {
    fn trace(&self, t: &mut Tracer<'_>) {
        for v in self {
            v.trace(t)
        }
    }
}

// SAFETY: forwards to each element.
unsafe impl<T: Trace, const N: usize> Trace for [T; N] {
    fn trace(&self, t: &mut Tracer<'_>) {
        for v in self {
            v.trace(t)
        }
    }
}

macro_rules! seq {
    ($($c:ident),*) => {$(
        // SAFETY: forwards to each element.
        unsafe impl<T: Trace> Trace for $c<T> {
            fn trace(&self, t: &mut Tracer<'_>) {
                for v in self {
                    v.trace(t)
                }
            }
        }
    )*};
}
seq!(Vec, VecDeque, LinkedList, BTreeSet);

// SAFETY: forwards to each element.
unsafe impl<T: Trace, S> Trace for HashSet<T, S> {
    fn trace(&self, t: &mut Tracer<'_>) {
        for v in self {
            v.trace(t)
        }
    }
}

// SAFETY: forwards to each key and value.
unsafe impl<K: Trace, V: Trace, S> Trace for HashMap<K, V, S> {
    fn trace(&self, t: &mut Tracer<'_>) {
        for (k, v) in self {
            k.trace(t);
            v.trace(t);
        }
    }
}

// SAFETY: forwards to each key and value.
unsafe impl<K: Trace, V: Trace> Trace for BTreeMap<K, V> {
    fn trace(&self, t: &mut Tracer<'_>) {
        for (k, v) in self {
            k.trace(t);
            v.trace(t);
        }
    }
}

macro_rules! tuple {
    ($($n:ident),+) => {
        // SAFETY: forwards to each member.
        unsafe impl<$($n: Trace),+> Trace for ($($n,)+) {
            #[allow(non_snake_case)]
            fn trace(&self, t: &mut Tracer<'_>) {
                let ($($n,)+) = self;
                $($n.trace(t);)+
            }
        }
    };
}
tuple!(A);
tuple!(A, B);
tuple!(A, B, C);
tuple!(A, B, C, D);
tuple!(A, B, C, D, E);
tuple!(A, B, C, D, E, F);
