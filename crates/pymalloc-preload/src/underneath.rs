//! glibc's allocator, underneath pymalloc.
//!
//! The preloaded `malloc` is pymalloc, so `malloc` called from here would be
//! pymalloc again. glibc exports its allocator under second names
//! (`__libc_malloc`, ...), which reach it whatever else is loaded.
//! `malloc_usable_size` and glibc's questions about its heap
//! (`introspect.rs`) have no such names and are looked up with
//! `dlsym(RTLD_NEXT)` the first time they are needed ([`Next`]).

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicUsize, Ordering};

use pymalloc::Fallback;

extern "C" {
    fn __libc_malloc(n: usize) -> *mut c_void;
    fn __libc_calloc(nelem: usize, elsize: usize) -> *mut c_void;
    fn __libc_realloc(p: *mut c_void, n: usize) -> *mut c_void;
    fn __libc_free(p: *mut c_void);
    fn __libc_memalign(align: usize, n: usize) -> *mut c_void;
}

/// glibc's `malloc` family as pymalloc's fallback: glibc's own rules (it
/// sets `errno`; `malloc(0)` is a unique pointer).
pub(crate) struct Glibc;

impl Fallback for Glibc {
    #[inline]
    fn malloc(n: usize) -> *mut u8 {
        // SAFETY: __libc_malloc has no precondition.
        unsafe { __libc_malloc(n).cast() }
    }
    #[inline]
    fn calloc(nelem: usize, elsize: usize) -> *mut u8 {
        // SAFETY: __libc_calloc has no precondition (it checks overflow).
        unsafe { __libc_calloc(nelem, elsize).cast() }
    }
    #[inline]
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
        // SAFETY: p is null or a live glibc block (the trait's contract).
        unsafe { __libc_realloc(p.cast(), n).cast() }
    }
    #[inline]
    unsafe fn free(p: *mut u8) {
        // SAFETY: p is null or a live glibc block, not used again.
        unsafe { __libc_free(p.cast()) }
    }
}

/// `memalign(align, n)` of glibc.
pub(crate) fn memalign(align: usize, n: usize) -> *mut u8 {
    // SAFETY: glibc checks its arguments (EINVAL, ENOMEM).
    unsafe { __libc_memalign(align, n).cast() }
}

/// A function of glibc's without a second name, found with
/// `dlsym(RTLD_NEXT)` (the definition after this library's own) the first
/// time it is needed.
pub(crate) struct Next {
    name: &'static CStr,
    /// The address; 0 until looked up, 1 if it was not found.
    addr: AtomicUsize,
}

impl Next {
    pub(crate) const fn new(name: &'static CStr) -> Next {
        Next { name, addr: AtomicUsize::new(0) }
    }

    /// The function's address, or `None` if glibc has none of that name.
    pub(crate) fn get(&self) -> Option<*mut c_void> {
        let mut f = self.addr.load(Ordering::Acquire);
        if f == 0 {
            // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds the
            // definition after this library's own, glibc's.
            let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
            f = if p.is_null() { 1 } else { p as usize };
            self.addr.store(f, Ordering::Release);
        }
        (f != 1).then_some(f as *mut c_void)
    }
}

/// glibc's `malloc_usable_size`.
static USABLE_SIZE: Next = Next::new(c"malloc_usable_size");

/// `malloc_usable_size(p)` of glibc, for a block glibc handed out.
///
/// # Safety
/// `p` is a live glibc block.
pub(crate) unsafe fn usable_size(p: *mut u8) -> usize {
    match USABLE_SIZE.get() {
        // SAFETY: f is glibc's malloc_usable_size, of this signature; p is a
        // live glibc block (our contract).
        Some(f) => unsafe {
            core::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void) -> usize>(f)(p.cast())
        },
        None => 0,
    }
}

/// A `mallinfo2` of zeroes.
pub(crate) fn zero_mallinfo2() -> libc::mallinfo2 {
    libc::mallinfo2 {
        arena: 0,
        ordblks: 0,
        smblks: 0,
        hblks: 0,
        hblkhd: 0,
        usmblks: 0,
        fsmblks: 0,
        uordblks: 0,
        fordblks: 0,
        keepcost: 0,
    }
}

/// The Rust global allocator of this library: glibc, directly.
pub(crate) struct GlibcGlobal;

/// glibc's `malloc` aligns to 16 bytes on x86-64.
const GLIBC_ALIGN: usize = 16;

// SAFETY: every block comes from glibc with at least the layout's size and
// alignment, and goes back to glibc.
unsafe impl GlobalAlloc for GlibcGlobal {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.align() <= GLIBC_ALIGN {
            Glibc::malloc(l.size())
        } else {
            memalign(l.align(), l.size())
        }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.align() <= GLIBC_ALIGN {
            Glibc::calloc(1, l.size())
        } else {
            let p = memalign(l.align(), l.size());
            if !p.is_null() {
                // SAFETY: p is a fresh block of l.size() bytes.
                unsafe { core::ptr::write_bytes(p, 0, l.size()) };
            }
            p
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if l.align() <= GLIBC_ALIGN {
            // SAFETY: p is a live glibc block of this allocator.
            unsafe { Glibc::realloc(p, n) }
        } else {
            // Over-aligned: a new block, the bytes both hold, the old one freed.
            let q = memalign(l.align(), n);
            if !q.is_null() {
                // SAFETY: p holds l.size() bytes and q n; distinct blocks.
                unsafe {
                    core::ptr::copy_nonoverlapping(p, q, l.size().min(n));
                    Glibc::free(p);
                }
            }
            q
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, _: Layout) {
        // SAFETY: p is a live glibc block of this allocator.
        unsafe { Glibc::free(p) }
    }
}
