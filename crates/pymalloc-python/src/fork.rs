//! The background decay thread and `os.fork()`.
//!
//! Threads do not survive `fork`: the child starts its own thread again
//! (`after_in_child`). CPython 3.12 and later also count the parent's OS
//! threads when `os.fork()` returns, after the `after_in_parent` hooks, and
//! warn ("This process ... is multi-threaded") when there is more than one;
//! stock python3 does not warn in a single-threaded program, so neither
//! may we. There the thread is stopped before the fork (`before`) and
//! started again once the count is behind us: a pending call (run by the
//! main thread between bytecodes) that waits until the frame that called
//! `os.fork()` runs again or is gone, or 20 ms have passed. The pending call
//! runs no earlier than the interpreter's next bytecode, and the hooks that
//! run after ours are the only bytecode before the count, so the frame
//! test is what keeps the new thread out of it.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pyo3_ffi as ffi;

/// The fork in progress, between the `before` hook and the restart. Read
/// and written with the GIL held.
struct PendingRestart {
    /// The frame that called `os.fork()` (a strong reference), or null.
    caller: *mut ffi::PyFrameObject,
    /// When the thread was stopped.
    since: Instant,
}

/// The longest the restart waits for the caller's frame.
const RESTART_AFTER: Duration = Duration::from_millis(20);

/// Only touched with the GIL held (hooks and pending calls), which is what
/// makes the `static mut`-like access sound.
struct GilCell(std::cell::UnsafeCell<Option<PendingRestart>>);
// SAFETY: every access holds the GIL (see the functions below).
unsafe impl Sync for GilCell {}
static PENDING: GilCell = GilCell(std::cell::UnsafeCell::new(None));

/// `before` hook (3.12+): stops the thread and remembers the caller.
pub fn before_fork() {
    if !pymalloc::background::stop() {
        return;
    }
    // SAFETY: hooks run with the GIL held; the frame, if any, is borrowed
    // and we take our own reference.
    unsafe {
        let caller = ffi::PyEval_GetFrame();
        if !caller.is_null() {
            ffi::Py_IncRef(caller.cast());
        }
        *PENDING.0.get() = Some(PendingRestart { caller, since: Instant::now() });
    }
}

/// `after_in_parent` hook (3.12+): asks for the restart once the count is
/// done.
pub fn after_fork_in_parent() {
    // SAFETY: the GIL is held; reading our own cell.
    if unsafe { (*PENDING.0.get()).is_some() } {
        schedule();
    }
}

/// `after_in_child` hook: the child starts its own thread at once (it has
/// no thread count to stay out of), dropping the restart it inherited.
///
/// Unless the fork was made by a thread other than the main one: then the
/// child's only thread is not the process's main thread, and the child ends
/// when that thread exits (`pthread_exit`), which another thread, ours,
/// would prevent: the child would outlive its last Python thread as a
/// zombie (test_threading's `test_main_thread_after_fork_from_nonmain_thread`
/// waits for it). Such a child decays on its allocation path and at full
/// collections only.
pub fn after_fork_in_child() {
    if FORKED_BY_MAIN_THREAD.load(Ordering::Relaxed) {
        finish();
    } else {
        drop_pending();
    }
}

/// Whether the last `fork` was made by the parent's main thread. In the
/// child the forking thread always has the process's id as thread id, so
/// it is recorded before the fork, by a `pthread_atfork` handler (which
/// runs for every `fork`, on every CPython version).
static FORKED_BY_MAIN_THREAD: AtomicBool = AtomicBool::new(true);

extern "C" fn record_forking_thread() {
    // SAFETY: gettid and getpid have no preconditions.
    let main = unsafe { libc::gettid() == libc::getpid() };
    FORKED_BY_MAIN_THREAD.store(main, Ordering::Relaxed);
}

/// Registers the handler that records which thread forks (once).
pub fn record_forking_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a plain function that lives as long as the program.
        unsafe { libc::pthread_atfork(Some(record_forking_thread), None, None) };
    });
}

fn schedule() {
    // SAFETY: Py_AddPendingCall may be called with or without the GIL.
    if unsafe { ffi::Py_AddPendingCall(Some(restart), std::ptr::null_mut()) } != 0 {
        // The queue is full: start now rather than never.
        finish();
    }
}

extern "C" fn restart(_: *mut c_void) -> c_int {
    // SAFETY: pending calls run in the main thread with the GIL held.
    let due = unsafe {
        match &*PENDING.0.get() {
            None => return 0,
            Some(p) => p.since.elapsed() >= RESTART_AFTER || !below(p.caller),
        }
    };
    if due {
        finish();
    } else {
        schedule();
    }
    0
}

/// Is the running code called, directly or not, from `caller` (and not
/// `caller` itself)? Then `os.fork()` may still be running its hooks.
///
/// # Safety
/// The GIL is held; `caller` is null or a frame we hold a reference to.
unsafe fn below(caller: *mut ffi::PyFrameObject) -> bool {
    if caller.is_null() {
        return false;
    }
    // SAFETY: the caller's contract; PyFrame_GetBack returns new references.
    unsafe {
        let mut f = ffi::PyEval_GetFrame();
        if f == caller || f.is_null() {
            return false;
        }
        ffi::Py_IncRef(f.cast());
        while !f.is_null() {
            let back = ffi::PyFrame_GetBack(f);
            ffi::Py_DecRef(f.cast());
            if back == caller {
                ffi::Py_DecRef(back.cast());
                return true;
            }
            f = back;
        }
        false
    }
}

/// Drops the pending restart, if any, and starts the thread.
fn finish() {
    drop_pending();
    pymalloc::config::start_background_decay();
}

/// Drops the pending restart, if any.
fn drop_pending() {
    // SAFETY: the GIL is held (pending call or hook). In a child the
    // caller's reference is its own copy of the parent's object.
    unsafe {
        if let Some(p) = (*PENDING.0.get()).take() {
            ffi::Py_DecRef(p.caller.cast());
        }
    }
}
