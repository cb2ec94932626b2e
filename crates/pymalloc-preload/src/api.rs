//! The C allocation API, exported under its standard names.
//!
//! pymalloc serves every request: 1 to 512 bytes with an alignment of at
//! most 16 from pools, the rest from the thread heaps' spans
//! ([`pymalloc::every_size`]: any alignment up to half a megabyte). What
//! those cannot serve (0 bytes, larger alignments, no address space), and
//! any block pymalloc does not own (allocated before the library took
//! over), is glibc's ([`Glibc`]). The semantics are glibc's
//! where CPython's differ: `realloc(p, 0)` frees `p` and returns null, and
//! every failure sets `errno` to `ENOMEM` (or returns `EINVAL`/`ENOMEM`
//! from `posix_memalign`).

use core::ffi::{c_int, c_void};

use pymalloc::every_size::{self, EverySize};
use pymalloc::geometry::ALIGNMENT;
use pymalloc::thread;

use crate::traced;
use crate::underneath::{self, Glibc};

/// pymalloc with every size, glibc underneath.
type Ours = EverySize<Glibc>;

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
    malloc_here(n)
}

/// `malloc`, for this library's other entry points: inline, where a call
/// to the exported symbol would go through the GOT (it can be interposed).
#[inline(always)]
pub(crate) fn malloc_here(n: usize) -> *mut c_void {
    // No `or_enomem`: every null comes from glibc's `malloc` (pymalloc's
    // last resort for any size), which has set `errno`. Without work after
    // the call, the slow paths are tail calls and the fast path needs no
    // stack frame.
    if traced::GATED {
        // The tracer shuts the gate while it traces: then every call is
        // malloc_slow's, which records the block.
        return every_size::malloc_gated::<Glibc>(n, malloc_slow).cast();
    }
    every_size::malloc_with::<Glibc>(n).cast()
}

/// [`malloc_here`]'s cached block alone, or null (then take
/// `malloc_here`): no call, for entry points whose full path is out of
/// line (`cxx.rs`). Null while tracing, whose path records the block.
#[inline(always)]
pub(crate) fn malloc_cached(n: usize) -> *mut c_void {
    if traced::GATED {
        return every_size::malloc_cached_gated(n).cast();
    }
    every_size::malloc_cached(n).cast()
}

/// The gated `malloc`'s way past its fast path: the traced path while
/// tracing, else the untraced one's next step. `extern "C"` (it cannot
/// unwind), so that both are reached by jumps: the caller needs no landing
/// pad around the call, and the traced path's walk starts at the program's
/// frame.
#[inline(never)]
extern "C" fn malloc_slow(n: usize) -> *mut u8 {
    if traced::is_on() {
        return malloc_traced(n);
    }
    every_size::malloc_uncached::<Glibc>(n)
}

#[cold]
#[inline(never)]
extern "C" fn malloc_traced(n: usize) -> *mut u8 {
    let p = thread::malloc_with::<Ours>(n);
    traced::alloc(p, n);
    or_enomem(p).cast()
}

/// # Safety
/// `p` is null or a live block of this process's allocator, not used again.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the contract is free_here's.
    unsafe { free_here(p) }
}

/// `free`, inline for this library's other entry points (see
/// [`malloc_here`]).
///
/// # Safety
/// `p` is null or a live block of this process's allocator, not used again.
#[inline(always)]
pub(crate) unsafe fn free_here(p: *mut c_void) {
    // SAFETY: a pymalloc block goes to its heap, anything else to glibc
    // (the caller's contract: p is live from malloc and friends); free_slow
    // frees as free_uncached does.
    unsafe {
        if traced::GATED {
            // Shut while tracing: then every call is free_slow's.
            return every_size::free_gated::<Glibc>(p.cast(), free_slow);
        }
        every_size::free_with::<Glibc>(p.cast())
    }
}

/// The gated `free`'s way past its fast path (see [`malloc_slow`]).
///
/// # Safety
/// As for [`free_here`].
#[inline(never)]
unsafe extern "C" fn free_slow(p: *mut u8) {
    // SAFETY: as in free_here.
    unsafe {
        if traced::is_on() {
            return free_traced(p);
        }
        every_size::free_uncached::<Glibc>(p)
    }
}

/// # Safety
/// As for [`free_here`].
#[cold]
#[inline(never)]
unsafe extern "C" fn free_traced(p: *mut u8) {
    // The trace goes first: once freed, the address may be another
    // thread's new block.
    traced::free(p);
    // SAFETY: as in free_here.
    unsafe { thread::free_with::<Ours>(p) }
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn calloc(nelem: usize, elsize: usize) -> *mut c_void {
    let p = thread::calloc_with::<Ours>(nelem, elsize);
    if traced::is_on() {
        traced::alloc(p, nelem.saturating_mul(elsize));
    }
    or_enomem(p)
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
    let tracing = traced::is_on();
    if tracing {
        // The trace goes first (a moved block's address may be another
        // thread's at once); a failed realloc loses it.
        traced::free(p.cast());
    }
    // SAFETY: p is null or live (the caller's contract); a pymalloc block is
    // resized by the front, anything else by glibc.
    let q = unsafe { thread::realloc_with::<Ours>(p.cast(), n) };
    if tracing {
        traced::alloc(q, n);
    }
    or_enomem(q)
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
pub(crate) fn aligned(align: usize, n: usize) -> *mut u8 {
    let p = if align <= ALIGNMENT {
        thread::malloc_with::<Ours>(n)
    } else {
        let p = every_size::alloc(n, align, false);
        if p.is_null() {
            underneath::memalign(align, n)
        } else {
            p
        }
    };
    if traced::is_on() {
        traced::alloc(p, n);
    }
    p
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
    // glibc rounds an alignment that is not a power of two up.
    or_enomem(aligned(align.max(1).next_power_of_two(), n))
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn valloc(n: usize) -> *mut c_void {
    or_enomem(aligned(page_size(), n))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(n: usize) -> *mut c_void {
    let page = page_size();
    match n.max(1).checked_next_multiple_of(page) {
        Some(rounded) => or_enomem(aligned(page, rounded)),
        None => or_enomem(core::ptr::null_mut()),
    }
}

/// # Safety
/// `p` is null or a live block of this process's allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        return 0;
    }
    if every_size::owns(p.cast()) {
        // SAFETY: a live span block.
        return unsafe { every_size::usable_size(p.cast()) };
    }
    // SAFETY: p is live (the caller's contract): a pool block or not ours.
    match unsafe { pymalloc::usable_size(p.cast()) } {
        Some(n) => n,
        // SAFETY: a live block pymalloc does not own is glibc's.
        None => unsafe { underneath::usable_size(p.cast()) },
    }
}
