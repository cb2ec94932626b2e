//! # pymalloc-capi
//!
//! The C library of pymalloc-rs: `libpymalloc.so` and `libpymalloc.a`, with
//! the header `include/pymalloc.h`. It exports CPython 3.11's memory API
//! under CPython's own names, signatures, constants and struct layouts, for C
//! programs that do **not** link libpython:
//!
//! | module | exports | CPython |
//! |---|---|---|
//! | [`domains`] | `PyMem_Raw{Malloc,Calloc,Realloc,Free}`, `PyMem_{Malloc,Calloc,Realloc,Free}`, `PyObject_{Malloc,Calloc,Realloc,Free}` | `Include/pymem.h`, `Include/objimpl.h` |
//! | [`allocators`] | `PyMemAllocatorEx`, `PyMem_GetAllocator`, `PyMem_SetAllocator`, `PyMem_SetupDebugHooks`, `PyObjectArenaAllocator`, `PyObject_GetArenaAllocator`, `PyObject_SetArenaAllocator` | `Include/cpython/pymem.h`, `Include/cpython/objimpl.h` |
//! | [`tracemalloc`] | `PyTraceMalloc_Track`, `PyTraceMalloc_Untrack`; beyond CPython `PyMalloc_Trace*` (start, stop, traced memory, snapshot dump) | `Include/tracemalloc.h`, `Modules/_tracemalloc.c` |
//! | [`extras`] | `PyMalloc_*`: statistics as a struct or as `sys._debugmallocstats()`'s table, configurations by `PYTHONMALLOC` name | — |
//! | [`gc`] (crate `pymalloc-gc`, header `pymalloc_gc.h`) | objects (`_PyObject_New`, `_PyObject_GC_New`, `PyObject_GC_Track`, ...), reference counts, the trashcan, weak references, the collector (`PyGC_Collect`, ...), the `gc` module as `PyMemGc_*`, free lists | `Include/objimpl.h`, `Modules/gcmodule.c` |
//!
//! The macros of CPython's API (`PyMem_New`, `PyMem_Resize`, `PyMem_Del`,
//! `PyMem_MALLOC`, ..., `PyObject_Del`) live in the header only.
//!
//! Everything here is a thin shell over the core crate (`pymalloc`): every
//! exported function validates what C can get wrong (null pointers, a domain
//! value outside the enum, null function pointers) and forwards. The rules
//! of CPython (zero sizes, overflow, `realloc` semantics, 16-byte alignment)
//! are the core's.
//!
//! ## Threads
//!
//! C programs have no GIL: every domain of this library is safe to call from
//! any thread in every configuration (RAW is the C library; MEM and OBJ use
//! the core's per-thread heaps unless `PyMalloc_SetMode` chose otherwise; the
//! debug hooks keep no unsynchronised state). The object layer ([`gc`]) is
//! CPython's: one thread at a time.
//! Replacing allocators (`PyMem_SetAllocator`, `PyMem_SetupDebugHooks`,
//! `PyMalloc_SetupByName`) follows CPython's rule: no thread may use the
//! domains while they are swapped.
//!
//! ## Building and linking
//!
//! ```sh
//! cargo build --release -p pymalloc-capi
//! cc prog.c -Icrates/pymalloc-capi/include -Ltarget/release -lpymalloc
//! # or with the pkg-config files the build writes next to the library
//! # (pymalloc.pc: shared, pymalloc-static.pc: static):
//! cc prog.c $(PKG_CONFIG_PATH=target/release pkg-config --cflags --libs pymalloc-static)
//! # installed under a prefix:
//! crates/pymalloc-capi/install.sh /usr/local target/release
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]
// The exported names are CPython's.
#![allow(non_snake_case)]

pub mod allocators;
pub mod domains;
pub mod extras;
pub mod tracemalloc;

/// The object layer and the cycle collector: `pymalloc-gc`'s C ABI, built
/// with its `c-symbols` feature so that this library exports it under the
/// names `pymalloc_gc.h` declares.
pub use pymalloc_gc::ffi as gc;

#[cfg(test)]
mod header_tests;
