//! C++'s `operator new` and `operator delete`, exported under their Itanium
//! names, so that a C++ program reaches pymalloc in one call instead of
//! through libstdc++'s operators, which call `malloc` and `free` through
//! the PLT: 22 more instructions and two more indirect jumps per `new[]`
//! and `delete[]` pair (callgrind on larson). mimalloc, jemalloc and
//! tcmalloc export them too. A program that defines its own operators keeps
//! them: the executable's definitions come before a preloaded library's.
//!
//! Failure is C++'s: a throwing `new` that pymalloc cannot serve hands the
//! request to the next definition (libstdc++'s, found with
//! `dlsym(RTLD_NEXT)`), which calls the program's new-handler and retries,
//! and throws `std::bad_alloc` when there is none. The exception unwinds
//! through this library's frame, hence `extern "C-unwind"`. A `nothrow`
//! `new` hands over the same way to libstdc++'s `nothrow` operator, which
//! returns null. Every `delete` is `free`: the sized ones need no size,
//! the aligned ones no alignment (every block's owner is told by address).

use core::ffi::{c_void, CStr};

use crate::api;

/// The next definition of `name` after this library (libstdc++'s), or an
/// abort naming it: a C++ runtime without its operators cannot go on.
#[cold]
#[inline(never)]
fn next(name: &CStr) -> *mut c_void {
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    if f.is_null() {
        eprintln!("libpymalloc_preload: out of memory, and no {} after this library", name.to_string_lossy());
        // SAFETY: abort has no precondition.
        unsafe { libc::abort() };
    }
    f
}

type New = unsafe extern "C-unwind" fn(usize) -> *mut c_void;
type NewAligned = unsafe extern "C-unwind" fn(usize, usize) -> *mut c_void;
type NewNothrow = unsafe extern "C-unwind" fn(usize, *const c_void) -> *mut c_void;
type NewAlignedNothrow = unsafe extern "C-unwind" fn(usize, usize, *const c_void) -> *mut c_void;

/// `operator new(n)`: pymalloc's block, else libstdc++'s operator `name`.
/// A cached block inline; the rest out of line and reached by a jump, so
/// the exported operators keep no stack frame on their fast path.
#[inline(always)]
unsafe fn new(n: usize, name: &'static CStr) -> *mut c_void {
    let p = api::malloc_cached(n);
    if !p.is_null() {
        return p;
    }
    // SAFETY: the callers' contract.
    unsafe { new_full(n, name.as_ptr()) }
}

/// [`new`] past the cache. `extern "C-unwind"` as the operators are (the
/// exception of libstdc++'s operator unwinds through it), so they reach it
/// by a jump.
///
/// # Safety
/// `name` is the NUL-terminated name of an `operator new(size_t)`.
#[cold]
#[inline(never)]
unsafe extern "C-unwind" fn new_full(n: usize, name: *const core::ffi::c_char) -> *mut c_void {
    let p = api::malloc_here(n);
    if !p.is_null() {
        return p;
    }
    // SAFETY: `name` is an `operator new(size_t)`'s (the contract).
    unsafe { core::mem::transmute::<*mut c_void, New>(next(CStr::from_ptr(name)))(n) }
}

#[inline(always)]
unsafe fn new_nothrow(n: usize, tag: *const c_void, name: &CStr) -> *mut c_void {
    let p = api::malloc_here(n);
    if !p.is_null() {
        return p;
    }
    // SAFETY: `name` is an `operator new(size_t, const nothrow_t&)`.
    unsafe { core::mem::transmute::<*mut c_void, NewNothrow>(next(name))(n, tag) }
}

#[inline(always)]
unsafe fn new_aligned(n: usize, align: usize, name: &CStr) -> *mut c_void {
    let p = api::aligned(align, n);
    if !p.is_null() {
        return p.cast();
    }
    // SAFETY: `name` is an `operator new(size_t, align_val_t)`.
    unsafe { core::mem::transmute::<*mut c_void, NewAligned>(next(name))(n, align) }
}

#[inline(always)]
unsafe fn new_aligned_nothrow(n: usize, align: usize, tag: *const c_void, name: &CStr) -> *mut c_void {
    let p = api::aligned(align, n);
    if !p.is_null() {
        return p.cast();
    }
    // SAFETY: `name` is an `operator new(size_t, align_val_t, const
    // nothrow_t&)`.
    unsafe { core::mem::transmute::<*mut c_void, NewAlignedNothrow>(next(name))(n, align, tag) }
}

/// `operator delete`, every form.
#[inline(always)]
unsafe fn delete(p: *mut c_void) {
    // SAFETY: p is null or a live block of this process (C++'s contract).
    unsafe { api::free_here(p) }
}

// The exports. `size_t` is `m`, `align_val_t` is `St11align_val_t`, and
// `const nothrow_t&` is `RKSt9nothrow_t` in their names.

/// # Safety
/// C++'s.
#[no_mangle]
pub unsafe extern "C-unwind" fn _Znwm(n: usize) -> *mut c_void {
    // SAFETY: the name is operator new(size_t)'s.
    unsafe { new(n, c"_Znwm") }
}

/// # Safety
/// C++'s.
#[no_mangle]
pub unsafe extern "C-unwind" fn _Znam(n: usize) -> *mut c_void {
    // SAFETY: the name is operator new[](size_t)'s.
    unsafe { new(n, c"_Znam") }
}

/// # Safety
/// C++'s.
#[no_mangle]
pub unsafe extern "C-unwind" fn _ZnwmRKSt9nothrow_t(n: usize, tag: *const c_void) -> *mut c_void {
    // SAFETY: the name is this operator's.
    unsafe { new_nothrow(n, tag, c"_ZnwmRKSt9nothrow_t") }
}

/// # Safety
/// C++'s.
#[no_mangle]
pub unsafe extern "C-unwind" fn _ZnamRKSt9nothrow_t(n: usize, tag: *const c_void) -> *mut c_void {
    // SAFETY: the name is this operator's.
    unsafe { new_nothrow(n, tag, c"_ZnamRKSt9nothrow_t") }
}

/// # Safety
/// C++'s.
#[no_mangle]
pub unsafe extern "C-unwind" fn _ZnwmSt11align_val_t(n: usize, align: usize) -> *mut c_void {
    // SAFETY: the name is this operator's.
    unsafe { new_aligned(n, align, c"_ZnwmSt11align_val_t") }
}

/// # Safety
/// C++'s.
#[no_mangle]
pub unsafe extern "C-unwind" fn _ZnamSt11align_val_t(n: usize, align: usize) -> *mut c_void {
    // SAFETY: the name is this operator's.
    unsafe { new_aligned(n, align, c"_ZnamSt11align_val_t") }
}

/// # Safety
/// C++'s.
#[no_mangle]
pub unsafe extern "C-unwind" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    n: usize,
    align: usize,
    tag: *const c_void,
) -> *mut c_void {
    // SAFETY: the name is this operator's.
    unsafe { new_aligned_nothrow(n, align, tag, c"_ZnwmSt11align_val_tRKSt9nothrow_t") }
}

/// # Safety
/// C++'s.
#[no_mangle]
pub unsafe extern "C-unwind" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    n: usize,
    align: usize,
    tag: *const c_void,
) -> *mut c_void {
    // SAFETY: the name is this operator's.
    unsafe { new_aligned_nothrow(n, align, tag, c"_ZnamSt11align_val_tRKSt9nothrow_t") }
}

/// Declares `operator delete` forms: each frees its first argument.
macro_rules! deletes {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        /// # Safety
        /// C++'s: `p` is null or a live block, not used again.
        #[no_mangle]
        pub unsafe extern "C" fn $name(p: *mut c_void, $(_: $ty),*) {
            // SAFETY: the contract.
            unsafe { delete(p) }
        }
    )*};
}

deletes! {
    _ZdlPv();
    _ZdaPv();
    _ZdlPvm(n: usize);
    _ZdaPvm(n: usize);
    _ZdlPvRKSt9nothrow_t(t: *const c_void);
    _ZdaPvRKSt9nothrow_t(t: *const c_void);
    _ZdlPvSt11align_val_t(a: usize);
    _ZdaPvSt11align_val_t(a: usize);
    _ZdlPvmSt11align_val_t(n: usize, a: usize);
    _ZdaPvmSt11align_val_t(n: usize, a: usize);
    _ZdlPvSt11align_val_tRKSt9nothrow_t(a: usize, t: *const c_void);
    _ZdaPvSt11align_val_tRKSt9nothrow_t(a: usize, t: *const c_void);
}
