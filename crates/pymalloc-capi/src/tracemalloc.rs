//! tracemalloc in C: CPython's `PyTraceMalloc_Track` and
//! `PyTraceMalloc_Untrack` (blocks allocated elsewhere, in a domain of the
//! caller's choosing), and `PyMalloc_Trace*`, tracemalloc's functions for C
//! programs ([`pymalloc_core::trace`]): start and stop tracing the three
//! domains, the traced memory and its peak, the traceback limit, and a
//! snapshot dumped to a file ([`pymalloc_core::snapshot`]'s format).
//!
//! [`start_from_env`] applies `PYTHONTRACEMALLOC=N` (CPython's variable: trace
//! from the start with `N` frames), `PYMALLOC_TRACE_DUMP=path` (a snapshot
//! written there at exit) and `PYMALLOC_TRACE_PEAK_DUMP=path` (the snapshot
//! at the peak, written there at exit) for `PyMalloc_InitFromEnv`.

use core::ffi::{c_char, c_int, c_uint, CStr};

use pymalloc_core::snapshot::Snapshot;
use pymalloc_core::trace::{self, TraceError};

use crate::extras::{PYMALLOC_ERR_INVALID_ARGUMENT, PYMALLOC_ERR_IO, PYMALLOC_OK};

/// What CPython's functions return when tracemalloc is not tracing.
pub const TRACING_DISABLED: c_int = -2;

/// `PyTraceMalloc_Track(domain, ptr, size)`: records that `size` bytes at
/// `ptr` were allocated in tracemalloc domain `domain`, with the caller's
/// traceback (replacing a trace of the same address and domain). Returns 0,
/// -1 if memory for the trace is short or `ptr` is 0, or -2 if tracing is
/// off (nothing recorded).
///
/// # Safety
/// None: the arguments are plain values and are not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn PyTraceMalloc_Track(domain: c_uint, ptr: usize, size: usize) -> c_int {
    match trace::track(domain, ptr, size) {
        Ok(()) => 0,
        Err(TraceError::NotTracing) => TRACING_DISABLED,
        Err(_) => -1,
    }
}

/// `PyTraceMalloc_Untrack(domain, ptr)`: forgets the trace of `ptr` in
/// `domain` (no trace is not an error). Returns 0, or -2 if tracing is off.
///
/// # Safety
/// None: the arguments are plain values and are not dereferenced.
#[no_mangle]
pub unsafe extern "C" fn PyTraceMalloc_Untrack(domain: c_uint, ptr: usize) -> c_int {
    match trace::untrack(domain, ptr) {
        Ok(()) => 0,
        Err(_) => TRACING_DISABLED,
    }
}

/// `int PyMalloc_TraceStart(int nframe)`: traces the three domains from now
/// on, keeping up to `nframe` frames per traceback (tracemalloc's `start`;
/// already tracing: the limit changes). Returns 0, or
/// `PYMALLOC_ERR_INVALID_ARGUMENT` if `nframe` is not in `1..=65535`.
///
/// # Safety
/// As for `PyMem_SetAllocator`: no other thread uses the domains during the
/// call (the tracer wraps their allocators).
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_TraceStart(nframe: c_int) -> c_int {
    // trace::start checks the range and changes nothing when it is wrong.
    let Ok(n) = usize::try_from(nframe) else { return PYMALLOC_ERR_INVALID_ARGUMENT };
    if trace::start(n).is_err() {
        return PYMALLOC_ERR_INVALID_ARGUMENT;
    }
    // SAFETY: the caller's contract.
    unsafe { trace::hook_domains() };
    PYMALLOC_OK
}

/// `void PyMalloc_TraceStop(void)`: stops tracing, forgets every trace and
/// gives the domains their allocators back (tracemalloc's `stop`).
///
/// # Safety
/// As for [`PyMalloc_TraceStart`].
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_TraceStop() {
    trace::stop();
    // SAFETY: the caller's contract.
    unsafe { trace::unhook_domains() };
}

/// `int PyMalloc_TraceIsTracing(void)`: 1 while tracing, else 0.
#[no_mangle]
pub extern "C" fn PyMalloc_TraceIsTracing() -> c_int {
    c_int::from(trace::is_tracing())
}

/// `int PyMalloc_TraceGetLimit(void)`: the most frames a traceback keeps.
#[no_mangle]
pub extern "C" fn PyMalloc_TraceGetLimit() -> c_int {
    trace::traceback_limit() as c_int
}

/// `void PyMalloc_TraceGetTracedMemory(size_t *current, size_t *peak)`:
/// bytes of the traced blocks now and at their peak (either pointer may be
/// NULL).
///
/// # Safety
/// Each pointer is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_TraceGetTracedMemory(current: *mut usize, peak: *mut usize) {
    let (c, p) = trace::traced_memory();
    // SAFETY: null or writable (our contract).
    unsafe {
        if !current.is_null() {
            current.write(c);
        }
        if !peak.is_null() {
            peak.write(p);
        }
    }
}

/// `void PyMalloc_TraceResetPeak(void)`: the peak becomes the current size.
#[no_mangle]
pub extern "C" fn PyMalloc_TraceResetPeak() {
    trace::reset_peak();
}

/// `void PyMalloc_TraceClear(void)`: forgets every trace (tracing goes on).
#[no_mangle]
pub extern "C" fn PyMalloc_TraceClear() {
    trace::clear_traces();
}

/// `int PyMalloc_TraceDumpSnapshot(const char *path)`: writes a snapshot of
/// the traced blocks to `path`, for a report (`pymalloc::snapshot`). Returns
/// 0, `PYMALLOC_ERR_INVALID_ARGUMENT` for a NULL or non-UTF-8 path, or
/// `PYMALLOC_ERR_IO`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_TraceDumpSnapshot(path: *const c_char) -> c_int {
    // SAFETY: the contract is dump_to's.
    unsafe { dump_to(path, Snapshot::take) }
}

/// Writes `take()` to the file `path` names.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
unsafe fn dump_to(path: *const c_char, take: fn() -> Snapshot) -> c_int {
    if path.is_null() {
        return PYMALLOC_ERR_INVALID_ARGUMENT;
    }
    // SAFETY: NUL-terminated (our contract).
    let Ok(path) = unsafe { CStr::from_ptr(path) }.to_str() else { return PYMALLOC_ERR_INVALID_ARGUMENT };
    match take().dump(std::path::Path::new(path)) {
        Ok(()) => PYMALLOC_OK,
        Err(_) => PYMALLOC_ERR_IO,
    }
}

/// `void PyMalloc_TraceKeepPeak(int on)`: keeps (nonzero) or stops keeping
/// what is live at the peak of the traced bytes, from now on.
#[no_mangle]
pub extern "C" fn PyMalloc_TraceKeepPeak(on: c_int) {
    trace::keep_peak(on != 0);
}

/// `int PyMalloc_TraceDumpPeakSnapshot(const char *path)`: writes what was
/// live at the peak (see [`PyMalloc_TraceKeepPeak`]) to `path`, as
/// [`PyMalloc_TraceDumpSnapshot`] writes the present.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_TraceDumpPeakSnapshot(path: *const c_char) -> c_int {
    // SAFETY: the contract is dump_to's.
    unsafe { dump_to(path, Snapshot::take_peak) }
}

/// Why the environment's tracing request was refused.
#[derive(Debug)]
pub(crate) struct BadTraceEnv(pub(crate) String);

/// `PYTHONTRACEMALLOC=N`, `PYMALLOC_TRACE_DUMP=path` and
/// `PYMALLOC_TRACE_PEAK_DUMP=path` ([`pymalloc_core::snapshot::trace_from_env`]),
/// with the three domains hooked when tracing starts.
///
/// # Safety
/// As for [`PyMalloc_TraceStart`].
pub(crate) unsafe fn start_from_env() -> Result<(), BadTraceEnv> {
    match pymalloc_core::snapshot::trace_from_env() {
        Ok(true) => {
            // SAFETY: the caller's contract.
            unsafe { trace::hook_domains() };
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => Err(BadTraceEnv(e)),
    }
}
