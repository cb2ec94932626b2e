//! # pymalloc-gc
//!
//! CPython's object layer and cycle collector on top of [`pymalloc`]:
//!
//! | part | module | CPython |
//! |---|---|---|
//! | free lists | [`freelist`] | tuple/dict/list free lists, `_PyDebugAllocatorStats` |
//! | object and GC headers, type descriptor | [`object`] | `PyObject`, `PyVarObject`, `PyGC_Head`, `PyTypeObject` |
//! | lists of GC headers | `list` | `gc_list_*`, `gc_get_refs`, ... |
//! | the `Trace` trait | [`Trace`], [`Tracer`] | `tp_traverse`, `visitproc` |
//! | the memory backing | `memory` | `PyObject_Malloc`, `PyObject_Free` |
//! | the trashcan | `trashcan` | `Py_TRASHCAN_BEGIN`, `Py_TRASHCAN_END` |
//! | weak references | `weakref` | `PyWeakref_NewRef`, `PyObject_ClearWeakRefs`, `handle_weakrefs` |
//! | the collector's state | [`collector`] | `struct _gc_runtime_state`, `_PyGC_Init` |
//! | the object allocator | `alloc` | `_PyObject_GC_New`, `PyObject_GC_Track`, `PyObject_GC_Del`, `_Py_Dealloc` |
//! | the collection phases | `collect` | `gc_collect_main`, `update_refs`, `move_unreachable`, ... |
//! | the `gc` module on a collector | `gcmodule` | `gc.collect`, `gc.get_threshold`, ... ([`Collector`]'s methods) |
//! | the safe front | [`Cc`], [`Weak`], [`AnyCc`], [`Finalize`] ([`cc`]) | — |
//! | the `gc` module for the thread | [`gc`] | `gc.collect`, `gc.get_threshold`, ... |
//! | the C ABI | [`ffi`] | `_PyObject_GC_New`, `PyGC_Collect`, ... |
//!
//! The modules are layered in that order: each uses only modules above it
//! in the table (`tests/layers.rs` checks it).
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
#![warn(clippy::undocumented_unsafe_blocks)]

// In layer order, bottom up (the table above; `tests/layers.rs` checks that
// each module uses only those declared before it). Blank lines keep rustfmt
// from sorting them.
pub mod freelist;

pub mod object;

mod list;

mod trace;

mod memory;

mod trashcan;

mod weakref;

pub mod collector;

mod alloc;

mod collect;

mod gcmodule;

pub mod cc;

pub mod gc;

pub mod ffi;

pub use cc::{AnyCc, Cc, Finalize, Weak};
pub use collector::Collector;
pub use pymalloc_gc_derive::Trace;
pub use trace::{Trace, Tracer};
