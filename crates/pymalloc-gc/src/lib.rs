//! # pymalloc-gc
//!
//! CPython's object layer and cycle collector on top of [`pymalloc`]:
//!
//! | part | module | CPython |
//! |---|---|---|
//! | object and GC headers, type descriptor | [`object`] | `PyObject`, `PyVarObject`, `PyGC_Head`, `PyTypeObject` |
//! | object allocation, tracking, trashcan, the collector | [`collector`] | `PyObject_GC_New`, `PyObject_GC_Track`, `Py_TRASHCAN_*`, `gcmodule.c` |
//! | weak references | [`weakref`] | `PyWeakref_NewRef`, `PyObject_ClearWeakRefs`, `handle_weakrefs` |
//! | free lists | [`freelist`] | tuple/dict/list free lists, `_PyDebugAllocatorStats` |
//! | the `gc` module | [`gc`] | `gc.collect`, `gc.get_threshold`, ... |
//! | the safe front | [`Cc`], [`Weak`], [`Trace`], [`Finalize`] | — |
//! | the C ABI | [`ffi`] | `_PyObject_GC_New`, `PyGC_Collect`, ... |
//!
//! ## The safe front
//!
//! ```
//! use pymalloc_gc::{Cc, Trace, Weak, gc};
//! use std::cell::RefCell;
//!
//! #[derive(Trace)]
//! struct Tree {
//!     parent: RefCell<Option<Cc<Tree>>>, // a strong parent link: cycles
//!     children: RefCell<Vec<Cc<Tree>>>,
//! }
//!
//! let root = Cc::new(Tree { parent: RefCell::new(None), children: RefCell::new(vec![]) });
//! for _ in 0..3 {
//!     let child = Cc::new(Tree { parent: RefCell::new(Some(root.clone())), children: RefCell::new(vec![]) });
//!     root.children.borrow_mut().push(child);
//! }
//! let weak: Weak<Tree> = Cc::downgrade(&root);
//! drop(root);
//! assert!(weak.upgrade().is_some()); // kept alive by the parent links
//! assert_eq!(gc::collect(), 4); // the root and its three children
//! assert!(weak.upgrade().is_none()); // cleared by the collection
//! ```
//!
//! Each thread has its own collector (thresholds 700, 10, 10; automatic
//! collection as objects are allocated), its own pymalloc heap, and its own
//! trashcan, so dropping or collecting structures of any depth uses bounded
//! stack.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cc;
pub mod collector;
pub mod ffi;
pub mod freelist;
pub mod gc;
mod list;
pub mod object;
mod trace;
pub mod weakref;

pub use cc::{AnyCc, Cc, Finalize, Weak};
pub use collector::Collector;
pub use pymalloc_gc_derive::Trace;
pub use trace::{Trace, Tracer};
