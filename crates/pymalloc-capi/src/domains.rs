//! The three domains' allocation functions: `PyMem_Raw*` (RAW), `PyMem_*`
//! (MEM) and `PyObject_*` (OBJ).
//!
//! Each forwards to [`Domain`]'s method of the same name, which applies
//! CPython's rules before calling the domain's current allocator:
//!
//! * `malloc(0)` returns a distinct non-NULL pointer, as if 1 byte had been
//!   asked for; `calloc(n, 0)` and `calloc(0, n)` behave like `calloc(1, 1)`;
//! * a size above `PY_SSIZE_T_MAX`, or a `calloc` product that overflows it,
//!   returns NULL without calling the allocator;
//! * `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` resizes and does not
//!   free; a failed `realloc` returns NULL and leaves `p` valid and unchanged;
//! * `free(NULL)` does nothing;
//! * every block is aligned to 16 bytes on 64-bit targets (default
//!   allocators).
//!
//! Memory from one domain must be resized and freed by the same domain.

use core::ffi::c_void;

use pymalloc_core::Domain;

// ---------------------------------------------------------------------------
// RAW

/// `PyMem_RawMalloc(size)`: `size` bytes from the RAW domain; NULL if `size`
/// exceeds `PY_SSIZE_T_MAX` or memory is short.
///
/// # Safety
/// The RAW domain's allocator honours the `PyMemAllocatorEx` contract (true of
/// the library's own allocators; an installed one is the installer's promise).
#[no_mangle]
pub unsafe extern "C" fn PyMem_RawMalloc(size: usize) -> *mut c_void {
    Domain::Raw.malloc(size).cast()
}

/// `PyMem_RawCalloc(nelem, elsize)`: `nelem * elsize` zeroed bytes from the
/// RAW domain; NULL if the product overflows `PY_SSIZE_T_MAX`.
///
/// # Safety
/// As for [`PyMem_RawMalloc`].
#[no_mangle]
pub unsafe extern "C" fn PyMem_RawCalloc(nelem: usize, elsize: usize) -> *mut c_void {
    Domain::Raw.calloc(nelem, elsize).cast()
}

/// `PyMem_RawRealloc(ptr, new_size)`: resizes a RAW block, keeping its
/// contents up to the smaller size.
///
/// # Safety
/// `ptr` is NULL or a live block of the RAW domain.
#[no_mangle]
pub unsafe extern "C" fn PyMem_RawRealloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    // SAFETY: ptr is NULL or live in RAW (caller's contract).
    unsafe { Domain::Raw.realloc(ptr.cast(), new_size).cast() }
}

/// `PyMem_RawFree(ptr)`: frees a RAW block; NULL does nothing.
///
/// # Safety
/// `ptr` is NULL or a live block of the RAW domain, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn PyMem_RawFree(ptr: *mut c_void) {
    // SAFETY: ptr is NULL or a live block of the RAW domain, not used
    // afterwards (our contract), which is Domain::free's.
    unsafe { Domain::Raw.free(ptr.cast()) }
}

// ---------------------------------------------------------------------------
// MEM

/// `PyMem_Malloc(size)`: `size` bytes from the MEM domain (pymalloc by
/// default).
///
/// # Safety
/// The MEM domain's allocator honours the `PyMemAllocatorEx` contract.
#[no_mangle]
pub unsafe extern "C" fn PyMem_Malloc(size: usize) -> *mut c_void {
    Domain::Mem.malloc(size).cast()
}

/// `PyMem_Calloc(nelem, elsize)`: zeroed bytes from the MEM domain.
///
/// # Safety
/// As for [`PyMem_Malloc`].
#[no_mangle]
pub unsafe extern "C" fn PyMem_Calloc(nelem: usize, elsize: usize) -> *mut c_void {
    Domain::Mem.calloc(nelem, elsize).cast()
}

/// `PyMem_Realloc(ptr, new_size)`: resizes a MEM block.
///
/// # Safety
/// `ptr` is NULL or a live block of the MEM domain.
#[no_mangle]
pub unsafe extern "C" fn PyMem_Realloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    // SAFETY: ptr is NULL or live in MEM (caller's contract).
    unsafe { Domain::Mem.realloc(ptr.cast(), new_size).cast() }
}

/// `PyMem_Free(ptr)`: frees a MEM block; NULL does nothing.
///
/// # Safety
/// `ptr` is NULL or a live block of the MEM domain, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn PyMem_Free(ptr: *mut c_void) {
    // SAFETY: ptr is NULL or a live block of the MEM domain, not used
    // afterwards (our contract), which is Domain::free's.
    unsafe { Domain::Mem.free(ptr.cast()) }
}

// ---------------------------------------------------------------------------
// OBJ

/// `PyObject_Malloc(size)`: `size` bytes from the OBJ domain (pymalloc by
/// default).
///
/// # Safety
/// The OBJ domain's allocator honours the `PyMemAllocatorEx` contract.
#[no_mangle]
pub unsafe extern "C" fn PyObject_Malloc(size: usize) -> *mut c_void {
    Domain::Obj.malloc(size).cast()
}

/// `PyObject_Calloc(nelem, elsize)`: zeroed bytes from the OBJ domain.
///
/// # Safety
/// As for [`PyObject_Malloc`].
#[no_mangle]
pub unsafe extern "C" fn PyObject_Calloc(nelem: usize, elsize: usize) -> *mut c_void {
    Domain::Obj.calloc(nelem, elsize).cast()
}

/// `PyObject_Realloc(ptr, new_size)`: resizes an OBJ block.
///
/// # Safety
/// `ptr` is NULL or a live block of the OBJ domain.
#[no_mangle]
pub unsafe extern "C" fn PyObject_Realloc(ptr: *mut c_void, new_size: usize) -> *mut c_void {
    // SAFETY: ptr is NULL or live in OBJ (caller's contract).
    unsafe { Domain::Obj.realloc(ptr.cast(), new_size).cast() }
}

/// `PyObject_Free(ptr)`: frees an OBJ block; NULL does nothing.
///
/// # Safety
/// `ptr` is NULL or a live block of the OBJ domain, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn PyObject_Free(ptr: *mut c_void) {
    // SAFETY: ptr is NULL or a live block of the OBJ domain, not used
    // afterwards (our contract), which is Domain::free's.
    unsafe { Domain::Obj.free(ptr.cast()) }
}
