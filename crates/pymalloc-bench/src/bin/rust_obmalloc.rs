//! The Rust workloads with CPython 3.11's obmalloc (libpython's
//! `PyObject_Malloc`/`PyObject_Free`) as the global allocator, for the
//! single-threaded workloads (obmalloc needs the GIL; no thread here takes
//! it, so the producer/consumer workload is not run on it). Alignments above
//! 16 go to the system allocator.
#![warn(clippy::undocumented_unsafe_blocks)]

use std::alloc::{GlobalAlloc, Layout, System};

struct Obmalloc;

// SAFETY: PyObject_Malloc returns 16-byte aligned blocks of at least the size
// asked for (CPython 3.11, 64-bit); larger alignments go to System; each
// block is freed by the allocator that made it (chosen by its layout).
unsafe impl GlobalAlloc for Obmalloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.align() <= 16 {
            // SAFETY: obmalloc's static state works before Py_Initialize;
            // this process is single-threaded when it allocates through it.
            unsafe { pyo3_ffi::PyObject_Malloc(l.size()).cast() }
        } else {
            // SAFETY: GlobalAlloc's contract, passed on: System made the
            // blocks of this alignment.
            unsafe { System.alloc(l) }
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if l.align() <= 16 {
            // SAFETY: p came from PyObject_Malloc.
            unsafe { pyo3_ffi::PyObject_Free(p.cast()) }
        } else {
            // SAFETY: GlobalAlloc's contract, passed on: System made the
            // blocks of this alignment.
            unsafe { System.dealloc(p, l) }
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if l.align() <= 16 {
            // SAFETY: p came from PyObject_Malloc.
            unsafe { pyo3_ffi::PyObject_Realloc(p.cast(), new).cast() }
        } else {
            // SAFETY: GlobalAlloc's contract, passed on: System made the
            // blocks of this alignment.
            unsafe { System.realloc(p, l, new) }
        }
    }
}

#[global_allocator]
static A: Obmalloc = Obmalloc;
#[path = "../workloads.rs"]
mod workloads;
fn main() {
    workloads::main()
}
