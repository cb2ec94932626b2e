//! The C allocation API, exported under its standard names.
//!
//! pymalloc serves requests of 1 to 512 bytes with an alignment of at most
//! 16 (every block of a size class is 16-aligned); the rest, and any block
//! pymalloc does not own, is glibc's ([`Glibc`]). The semantics are glibc's
//! where CPython's differ: `realloc(p, 0)` frees `p` and returns null, and
//! every failure sets `errno` to `ENOMEM` (or returns `EINVAL`/`ENOMEM`
//! from `posix_memalign`).

use core::ffi::{c_int, c_void};

use pymalloc::geometry::ALIGNMENT;
use pymalloc::thread;

use crate::underneath::{self, Glibc};

#[inline(always)]
fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns the calling thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// `p`, or `ENOMEM` in `errno` if it is null.
#[inline(always)]
fn or_enomem(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p.cast()
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn malloc(n: usize) -> *mut c_void {
    or_enomem(thread::malloc_with::<Glibc>(n))
}

/// # Safety
/// `p` is null or a live block of this process's allocator, not used again.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: a pymalloc block goes to its heap, anything else to glibc
    // (the caller's contract: p is live from malloc and friends).
    unsafe { thread::free_with::<Glibc>(p.cast()) }
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn calloc(nelem: usize, elsize: usize) -> *mut c_void {
    or_enomem(thread::calloc_with::<Glibc>(nelem, elsize))
}

/// # Safety
/// `p` is null or a live block of this process's allocator.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, n: usize) -> *mut c_void {
    if n == 0 && !p.is_null() {
        // glibc's rule: realloc(p, 0) frees p.
        // SAFETY: p is live (the caller's contract) and not used again.
        unsafe { free(p) };
        return core::ptr::null_mut();
    }
    // SAFETY: p is null or live (the caller's contract); a pymalloc block is
    // resized by the front, anything else by glibc.
    or_enomem(unsafe { thread::realloc_with::<Glibc>(p.cast(), n) })
}

/// # Safety
/// As for `realloc`.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    match nelem.checked_mul(elsize) {
        // SAFETY: the caller's contract is realloc's.
        Some(n) => unsafe { realloc(p, n) },
        None => {
            set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// A block of `n` bytes aligned to `align` (a power of two).
fn aligned(align: usize, n: usize) -> *mut u8 {
    if align <= ALIGNMENT {
        thread::malloc_with::<Glibc>(n)
    } else {
        underneath::memalign(align, n)
    }
}

/// # Safety
/// `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, n: usize) -> c_int {
    if !align.is_power_of_two() || align % core::mem::size_of::<*mut c_void>() != 0 {
        return libc::EINVAL;
    }
    let p = aligned(align, n);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: out is writable (the caller's contract).
    unsafe { *out = p.cast() };
    0
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(align: usize, n: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    or_enomem(aligned(align, n))
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn memalign(align: usize, n: usize) -> *mut c_void {
    if align <= ALIGNMENT {
        return or_enomem(thread::malloc_with::<Glibc>(n));
    }
    // glibc rounds an alignment that is not a power of two up.
    underneath::memalign(align, n).cast()
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn valloc(n: usize) -> *mut c_void {
    underneath::valloc(n).cast()
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(n: usize) -> *mut c_void {
    underneath::pvalloc(n).cast()
}

/// # Safety
/// `p` is null or a live block of this process's allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    // SAFETY: p is live (the caller's contract): pymalloc's or not at all.
    match unsafe { pymalloc::usable_size(p.cast()) } {
        Some(n) => n,
        // SAFETY: a live block pymalloc does not own is glibc's.
        None => unsafe { underneath::usable_size(p.cast()) },
    }
}
