//! The tracer in the child of `fork()` of a program with threads, as
//! `fork.rs` keeps the allocator: a lock another thread held when the
//! process forked stays held for ever in the child, whose next traced
//! allocation (or report) would wait on it. [`install`] registers handlers
//! with `pthread_atfork` that take every lock of the tracer before the fork
//! and give them back after it, in the parent and in the child.
//!
//! Order: the tracer's locks are taken before the allocator's. While a
//! trace shard is locked, a report's callback may allocate (through the
//! allocator, untraced), so a shard nests outside the allocator's locks;
//! `pthread_atfork` runs prepare handlers in the reverse of their
//! registration, and the tracer registers after the allocator (tracing
//! starts after the first heap is made), so its handler runs first. In the
//! child, the counting slots of the parent's other threads are freed too
//! (`trace_tally::fork_child`): no thread there would ever give them back. One
//! lock of the tracer nests in another: a walk by the system unwinder holds
//! the loader lock (`trace_unwind`) and may take the symbol lock
//! (`trace_frames`) to classify a frame, so [`prepare`] takes the loader
//! lock first. Before all of them it takes the lock under which tracing
//! is switched on or off (`trace.rs`), which is held around none of the
//! others. No other is taken while one is held (what runs under one may
//! allocate, untraced, but never traces).

use std::sync::Once;

use crate::{trace, trace_frames, trace_peak, trace_table, trace_tally, trace_timeline, trace_unwind};

/// Takes every lock of the tracer (the prepare step).
fn prepare() {
    trace::fork_acquire();
    trace_table::fork_acquire();
    trace_peak::fork_acquire();
    trace_timeline::fork_acquire();
    trace_unwind::fork_acquire();
    trace_frames::fork_acquire();
}

/// Gives back what [`prepare`] took.
///
/// # Safety
/// The calling thread ran [`prepare`] and has not released since.
unsafe fn release() {
    // SAFETY: each was taken by prepare() on this thread (our contract).
    unsafe {
        trace_frames::fork_release();
        trace_unwind::fork_release();
        trace_timeline::fork_release();
        trace_peak::fork_release();
        trace_table::fork_release();
        trace::fork_release();
    }
}

extern "C" fn prepare_handler() {
    prepare();
}

extern "C" fn release_handler() {
    // SAFETY: pthread_atfork runs this after prepare_handler, on the thread
    // that forked (in the parent and, as its only thread, in the child).
    unsafe { release() };
}

extern "C" fn child_handler() {
    // SAFETY: as release_handler's.
    unsafe { release() };
    // The child's only thread: the other threads' counting slots are free.
    trace_tally::fork_child();
}

static INSTALL: Once = Once::new();

/// Registers the handlers (once per process; when tracing first starts).
pub(crate) fn install() {
    if cfg!(miri) {
        return; // one process, no fork
    }
    INSTALL.call_once(|| {
        // SAFETY: the handlers are plain functions that live as long as the
        // program; pthread_atfork has no other precondition.
        unsafe { libc::pthread_atfork(Some(prepare_handler), Some(release_handler), Some(child_handler)) };
    });
}

#[cfg(test)]
mod tests {
    use crate::trace_table::Source;
    use crate::trace_tally::{on_alloc, on_free, owned_slots};

    /// In the child of a real fork, through the handlers `install`
    /// registers: the slot of a thread of the parent's is free, the forking
    /// thread's own is still owned. (In the parent both stay owned.)
    #[cfg(not(miri))]
    #[test]
    fn a_fork_child_frees_the_slots_of_the_parents_other_threads() {
        let _g = crate::trace_table::global_tables();
        super::install();
        on_alloc(Source::Tracked, 1);
        let mine = owned_slots().1.expect("a slot of this thread's");
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            on_alloc(Source::Tracked, 1);
            tx.send(owned_slots().1).unwrap();
            done_rx.recv().unwrap();
            on_free(Source::Tracked, 1);
        });
        let theirs = rx.recv().unwrap().expect("a slot of the other thread's");
        assert!(owned_slots().0[theirs] && owned_slots().0[mine]);
        // SAFETY: the child only reads statics and its own block, then
        // leaves with _exit (no destructor, no atexit handler).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let (owned, me) = owned_slots();
            let ok = !owned[theirs] && owned[mine] && me == Some(mine);
            // SAFETY: _exit has no precondition.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: pid is our child; status is ours to write.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "in the child: status {status:#x}");
        assert!(owned_slots().0[theirs], "the parent's thread keeps its slot");
        done_tx.send(()).unwrap();
        other.join().unwrap();
        on_free(Source::Tracked, 1);
    }

    #[test]
    fn prepare_and_release_leave_the_tracer_usable() {
        for _ in 0..2 {
            super::prepare();
            // SAFETY: prepare() ran on this thread just now.
            unsafe { super::release() };
        }
        // Every lock is free again: each can be taken and given back.
        super::prepare();
        // SAFETY: as above.
        unsafe { super::release() };
    }
}
