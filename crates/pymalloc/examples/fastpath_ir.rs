//! Drives one allocator fast path in a loop, for instruction counts under
//! callgrind (`scripts/fastpath_instructions.py` runs it).
//!
//! `fastpath_ir MODE N`: MODE is `gil`, `thread` or `pymalloc` (the GIL
//! heap through its domain allocator's function pointers, the thread heaps'
//! `thread::malloc`/`free`, the Rust allocator `PyMalloc`). A ballast of
//! half-full pools is made first, so that the measured mallocs pop free
//! lists and the measured frees push onto them, with the pool transitions
//! (a pool filling, a full pool coming back) amortised as in a real heap.
//! Only `measured_malloc` and `measured_free` are meant to be counted
//! (callgrind `--toggle-collect=measured_*`).

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use std::hint::black_box;

use pymalloc::{gil_heap, MemAllocatorEx, PyMalloc};

const SIZE: usize = 64;

/// One allocator under test: malloc and free of SIZE bytes.
trait Under {
    fn malloc(&self) -> *mut u8;
    /// # Safety
    /// `p` came from `malloc` of the same allocator.
    unsafe fn free(&self, p: *mut u8);
}

struct Gil(MemAllocatorEx);
impl Under for Gil {
    #[inline(always)]
    fn malloc(&self) -> *mut u8 {
        // SAFETY: one thread only: calls are serialised.
        unsafe { (self.0.malloc)(self.0.ctx, SIZE).cast() }
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: p came from this allocator; one thread only.
        unsafe { (self.0.free)(self.0.ctx, p.cast::<c_void>()) }
    }
}

struct Thread;
impl Under for Thread {
    #[inline(always)]
    fn malloc(&self) -> *mut u8 {
        pymalloc::thread::malloc(SIZE)
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: p came from thread::malloc.
        unsafe { pymalloc::thread::free(p) }
    }
}

struct Rust;
const LAYOUT: Layout = match Layout::from_size_align(SIZE, 8) {
    Ok(l) => l,
    Err(_) => panic!("bad layout"),
};
impl Under for Rust {
    #[inline(always)]
    fn malloc(&self) -> *mut u8 {
        // SAFETY: a non-zero size.
        unsafe { PyMalloc.alloc(LAYOUT) }
    }
    #[inline(always)]
    unsafe fn free(&self, p: *mut u8) {
        // SAFETY: p came from PyMalloc.alloc(LAYOUT).
        unsafe { PyMalloc.dealloc(p, LAYOUT) }
    }
}

#[no_mangle]
#[inline(never)]
fn measured_malloc(u: &dyn Fn() -> *mut u8, out: &mut [*mut u8]) {
    for slot in out.iter_mut() {
        *slot = u();
    }
}

#[no_mangle]
#[inline(never)]
fn measured_free(f: &dyn Fn(*mut u8), blocks: &[*mut u8]) {
    for &p in blocks.iter().rev() {
        f(p);
    }
}

fn run<U: Under>(u: U, n: usize) {
    // Ballast: 4n blocks, every other one freed, so every pool is half full.
    let ballast: Vec<*mut u8> = (0..4 * n).map(|_| u.malloc()).collect();
    for &p in ballast.iter().step_by(2) {
        // SAFETY: from u.malloc, freed once.
        unsafe { u.free(p) };
    }
    let mut blocks = vec![core::ptr::null_mut(); n];
    // Statically dispatched closures, so that each loop body is the fast
    // path inlined into one indirect call per operation, as in a program.
    measured_malloc(&|| black_box(u.malloc()), &mut blocks);
    assert!(blocks.iter().all(|p| !p.is_null()));
    // SAFETY: each block came from u.malloc and is freed once.
    measured_free(&|p| unsafe { u.free(black_box(p)) }, &blocks);
    for &p in ballast.iter().skip(1).step_by(2) {
        // SAFETY: as above.
        unsafe { u.free(p) };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("gil");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    match mode {
        // SAFETY: this program calls the GIL heap from one thread only.
        "gil" => run(Gil(unsafe { MemAllocatorEx::pymalloc_gil(gil_heap()) }), n),
        "thread" => run(Thread, n),
        "pymalloc" => run(Rust, n),
        other => {
            eprintln!("unknown mode '{other}'; valid: gil, thread, pymalloc");
            std::process::exit(2);
        }
    }
}
