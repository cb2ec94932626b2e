//! `PyTraceMalloc_Track` and `PyTraceMalloc_Untrack`, CPython's hooks for
//! extensions that allocate memory outside the domains and want tracemalloc
//! to see it.
//!
//! Tracing does not exist in this library yet, so both report what CPython
//! reports when tracemalloc is not tracing: `-2`, having done nothing. Code
//! written for CPython (which ignores or tolerates `-2`) works unchanged.

use core::ffi::{c_int, c_uint};

/// What CPython's functions return when tracemalloc is disabled.
pub const TRACING_DISABLED: c_int = -2;

/// `PyTraceMalloc_Track(domain, ptr, size)`: would record that `size` bytes
/// at `ptr` were allocated in tracemalloc domain `domain`. Tracing is
/// disabled: returns -2 and records nothing.
///
/// # Safety
/// None: the arguments are plain values and are not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn PyTraceMalloc_Track(domain: c_uint, ptr: usize, size: usize) -> c_int {
    let _ = (domain, ptr, size);
    TRACING_DISABLED
}

/// `PyTraceMalloc_Untrack(domain, ptr)`: would forget the trace of `ptr`.
/// Tracing is disabled: returns -2.
///
/// # Safety
/// None: the arguments are plain values and are not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn PyTraceMalloc_Untrack(domain: c_uint, ptr: usize) -> c_int {
    let _ = (domain, ptr);
    TRACING_DISABLED
}
