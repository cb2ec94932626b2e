//! The tracer in the child of `fork()`: threads trace allocations while the
//! main thread forks; each child traces allocations of its own, takes the
//! figures and a snapshot, and exits. Without the tracer's fork handlers a
//! child finds a trace shard, the traceback table or the timeline locked
//! by a thread it does not have, and waits until its alarm kills it.
#![cfg(not(miri))] // Miri: no fork

use pymalloc::trace::{self, Traced};
use pymalloc::PyMalloc;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[global_allocator]
static ALLOC: Traced<PyMalloc> = Traced(PyMalloc);

#[inline(never)]
fn churn(keep: &mut [Option<Vec<u8>>], i: usize) {
    keep[i % keep.len()] = Some(black_box(vec![i as u8; 1 + i % 700]));
}

#[test]
fn a_forked_child_traces_while_the_parents_threads_trace() {
    trace::start(4).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut keep: Vec<Option<Vec<u8>>> = (0..256).map(|_| None).collect();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    churn(&mut keep, i);
                    i += 1;
                }
            })
        })
        .collect();
    for round in 0..40 {
        // SAFETY: the child only allocates, frees, reads the tracer and
        // _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: alarm and _exit have no preconditions.
            unsafe { libc::alarm(10) };
            let before = trace::thread_heap_stats();
            let mut keep: Vec<Option<Vec<u8>>> = (0..64).map(|_| None).collect();
            for i in 0..2000 {
                churn(&mut keep, i);
            }
            let grew = trace::thread_heap_stats().since(&before).allocated_blocks >= 2000;
            let (current, peak) = trace::traced_memory();
            let snap = pymalloc::snapshot::Snapshot::take();
            let ok = grew && current > 0 && peak >= current && !snap.traces.is_empty();
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "round {round}: child status {status:#x} (a signal: it hung on a lock)"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    trace::stop();
}
