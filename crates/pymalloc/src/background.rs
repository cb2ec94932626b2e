//! The background decay thread: gives back memory that has gone unused for
//! its decay period ([`PurgePolicy::Decay`](crate::PurgePolicy::Decay)) when
//! the process makes no calls that would do it.
//!
//! Without it, a heap sweeps only when one of its pools empties, so a
//! process that goes idle right after freeing keeps what it freed in the
//! last period or two for as long as it stays idle. The thread sweeps every
//! heap of every mode (the GIL heap, the locked heap, the thread heaps)
//! about twice per period while one of them holds free memory, and parks,
//! costing nothing, while none does; the heap that next frees a pool wakes
//! it. A sweep takes only a heap's bookkeeping lock, never the GIL, and
//! touches no pool in use.
//!
//! It is started on request ([`start`]): by `pymalloc-python` at start-up
//! and after `fork` in the child, by C programs through
//! `PyMalloc_StartBackgroundDecay` or `PYMALLOC_PURGE`, by Rust programs
//! through this function. [`stop`] ends it and waits for it: CPython 3.12
//! and later warn at `os.fork()` in a process with more than one OS thread,
//! so `pymalloc-python` stops it before a fork and starts it again after.
//! It sleeps on a futex (`DecayWaker::bell`), so waking it, for work or to
//! stop, needs no handle of it.

use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use core::time::Duration;
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::gil::gil_heap;
use crate::heap::{Heap, DECAY_WAKER};
use crate::locked::global_heap;
use crate::{huge, os, thread_heaps};

/// The shortest sleep between sweeps, whatever the period.
const MIN_SLEEP_MS: u64 = 5;

/// The running thread: the pid of the process it was started in (after
/// `fork` the child has no such thread, so [`start`] starts one again) and
/// its handle.
static STARTED_IN: Mutex<Option<(u32, JoinHandle<()>)>> = Mutex::new(None);

/// Raised by [`stop`] for the thread to end.
static STOP: AtomicBool = AtomicBool::new(false);

/// The running thread's kernel id, for [`stop`] to wait until the kernel
/// has released it (0 until the thread has stored it).
static TID: AtomicI32 = AtomicI32::new(0);

/// The longest [`stop`] waits for the kernel to release the joined thread;
/// it takes microseconds.
const RELEASE_LIMIT: Duration = Duration::from_secs(1);

/// Starts the background decay thread in this process, if it is not running
/// yet. Returns false if no thread could be made.
pub fn start() -> bool {
    let mut started = STARTED_IN.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if started.as_ref().is_some_and(|(p, _)| *p == pid) {
        return true;
    }
    // A handle inherited through fork names a thread of the parent.
    if let Some((_, inherited)) = started.take() {
        std::mem::forget(inherited);
    }
    register_fork_handlers();
    STOP.store(false, Ordering::SeqCst);
    TID.store(0, Ordering::SeqCst);
    // The thread takes no signal: a process-directed signal must reach the
    // program's own threads (sigwait in the main thread, Python's handlers).
    // It inherits a mask with every signal blocked.
    let spawned = with_signals_blocked(|| std::thread::Builder::new().name("pymalloc-decay".into()).spawn(run));
    let Ok(join) = spawned else {
        return false;
    };
    *started = Some((pid, join));
    true
}

/// Ends the background thread of this process and waits until the kernel
/// has released it, so the process's thread count no longer includes it;
/// returns whether one was running. What it would have given back stays with the
/// heaps until the next sweep (theirs, or the thread's once started again).
pub fn stop() -> bool {
    let mut started = STARTED_IN.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    match started.take() {
        Some((p, join)) if p == pid => {
            STOP.store(true, Ordering::SeqCst);
            DECAY_WAKER.ring();
            let _ = join.join();
            let tid = TID.load(Ordering::SeqCst);
            if tid != 0 {
                os::wait_thread_released(tid, RELEASE_LIMIT);
            }
            DECAY_WAKER.parked.store(false, Ordering::SeqCst);
            true
        }
        other => {
            *started = other;
            false
        }
    }
}

/// Runs `f` with every signal blocked in the calling thread, then restores
/// its mask.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data, filled by sigfillset before use; the
    // old mask is restored from what pthread_sigmask saved.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        r
    }
}

/// True if the thread runs in this process.
pub fn is_running() -> bool {
    STARTED_IN.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|(p, _)| *p == std::process::id())
}

/// Calls `f` on every heap of every mode.
fn each_heap(mut f: impl FnMut(&Heap)) {
    f(gil_heap().heap());
    if global_heap().is_used() || thread_heaps::heap_count() != 0 {
        each_other_heap(&mut f);
    }
}

/// [`each_heap`] past the GIL heap, out of line: the launcher's default
/// configuration has no other heap, and its sweeps' code stays in the window
/// of what a run executes (`pymalloc-text-layout`).
#[cold]
#[inline(never)]
fn each_other_heap(f: &mut dyn FnMut(&Heap)) {
    if global_heap().is_used() {
        f(&global_heap().lock());
    }
    thread_heaps::for_each_heap(f);
}

/// Held by the thread while it sweeps, and by `fork` (through
/// `pthread_atfork`) while the process forks, so that no heap's bookkeeping
/// lock is held by this thread when the child is made: the child would
/// inherit it locked, with no thread to release it.
static SWEEPING: AtomicBool = AtomicBool::new(false);

fn lock_sweeping() {
    while SWEEPING.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        std::thread::yield_now();
    }
}

fn unlock_sweeping() {
    SWEEPING.store(false, Ordering::Release);
}

extern "C" fn before_fork() {
    lock_sweeping();
}

extern "C" fn after_fork() {
    unlock_sweeping();
}

/// Registers the fork handlers, once per process image.
fn register_fork_handlers() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::Relaxed) {
        // SAFETY: the handlers are plain functions that take and release
        // an atomic flag; registering them has no other precondition.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
    }
}

/// One round: sweeps every heap that is due; returns the shortest decay
/// period among heaps that still hold free memory.
fn sweep_all() -> Option<u64> {
    lock_sweeping();
    let next = sweep_heaps();
    unlock_sweeping();
    next
}

/// Sweeps every heap that is due now, from the calling thread; returns the
/// bytes given back.
pub fn decay_now() -> usize {
    let mut bytes = huge::decay_at(os::now_ms());
    each_heap(|h| bytes += h.decay());
    bytes
}

fn sweep_heaps() -> Option<u64> {
    thread_heaps::drain_abandoned();
    let now = os::now_ms();
    let mut next: Option<u64> = None;
    let mut note = |ms: Option<u32>| {
        if let Some(ms) = ms {
            let ms = u64::from(ms);
            next = Some(next.map_or(ms, |n| n.min(ms)));
        }
    };
    each_heap(|h| note(h.decay_round(now)));
    note(huge::decay_round(now));
    next
}

fn run() {
    TID.store(os::thread_id(), Ordering::SeqCst);
    while !STOP.load(Ordering::SeqCst) {
        // The bell is lowered before each look, so a ring after the look
        // (a pool freed, or stop) cuts the sleep short.
        DECAY_WAKER.bell.store(0, Ordering::SeqCst);
        if let Some(ms) = sweep_all() {
            if !STOP.load(Ordering::SeqCst) {
                os::futex_wait(&DECAY_WAKER.bell, 0, Some((ms / 2).max(MIN_SLEEP_MS)));
            }
            continue;
        }
        // Nothing to give back: sleep until a heap frees a pool. The flag
        // is raised before the last look, so a pool freed after that look
        // finds it raised and rings.
        DECAY_WAKER.parked.store(true, Ordering::SeqCst);
        if sweep_all().is_some() || STOP.load(Ordering::SeqCst) {
            DECAY_WAKER.parked.store(false, Ordering::SeqCst);
            continue;
        }
        os::futex_wait(&DECAY_WAKER.bell, 0, None);
    }
}
