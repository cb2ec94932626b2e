//! A `fork` while another thread reserves the regions (the first arena or
//! segment of the process): the fork handlers wait for the reservation, so
//! the child does not inherit its lock held by a thread it does not have.
//! In a binary of its own: the regions must not be reserved before the
//! test starts.

#![cfg(not(miri))]

use std::time::{Duration, Instant};

use pymalloc::{fork, thread};

#[test]
fn a_child_forked_during_the_first_reservation_allocates() {
    assert!(fork::install());
    // The next reservation holds its lock 300 ms: long enough for this
    // thread to fork inside it.
    pymalloc::pause_next_reservation_for_tests(300);
    // A huge block: its segments come from the region with no other lock
    // of the allocator held (a pool's arena would hold the arena
    // allocator's, which the handlers take too).
    let reserving = std::thread::spawn(|| pymalloc::every_size::alloc(4 << 20, 16, false) as usize);
    // Fork only once that thread holds the reservation's lock.
    let t = Instant::now();
    while !pymalloc::reservation_paused_for_tests() {
        assert!(t.elapsed() < Duration::from_secs(10), "the reservation never started");
        std::thread::yield_now();
    }
    // SAFETY: the child only allocates, frees and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // Without the handlers' wait, the child's first arena waits for the
        // reservation's lock for ever; the alarm ends it.
        // SAFETY: alarm and _exit have no preconditions.
        unsafe { libc::alarm(5) };
        let p = thread::malloc(32);
        let ok = !p.is_null();
        // SAFETY: a live block of thread::malloc.
        unsafe { thread::free(p) };
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child did not allocate (status {status:#x}; signal {} is SIGALRM)",
        libc::SIGALRM
    );
    let p = reserving.join().unwrap();
    if !pymalloc::regions_reserved() {
        // No room for the regions (a small RLIMIT_AS): the reservation the
        // child waited for failed, and the span heaps serve nothing.
        assert_eq!(p, 0);
        return;
    }
    assert_ne!(p, 0);
    // SAFETY: a live block of the segment region, freed from another thread.
    unsafe { pymalloc::every_size::free(p as *mut u8) };
}
