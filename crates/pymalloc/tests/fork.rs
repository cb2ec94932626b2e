//! `pymalloc::fork`: the handlers that keep the allocator usable in the
//! child of `fork()`. The deadlock they prevent is shown by
//! `crates/pymalloc-preload/tests/c/c_api.c` (fork beside allocating
//! threads); here: they leave every path usable, and the first thread heap
//! registers them.

use pymalloc::{fork, thread};

#[test]
fn prepare_and_release_leave_every_path_usable() {
    let p = thread::malloc(64);
    for _ in 0..2 {
        fork::prepare();
        // SAFETY: prepare() ran on this thread just now.
        unsafe { fork::release() };
    }
    let big = thread::malloc(100_000);
    let q = pymalloc::global_heap().malloc(48);
    // SAFETY: live blocks of their allocators.
    unsafe {
        thread::free(p);
        thread::free(big);
        pymalloc::global_heap().free(q);
    }
    assert!(pymalloc::global_heap().lock().validate().is_ok());
    thread::validate_current().unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "Miri has no fork and no pthread_atfork")]
fn the_first_thread_heap_installs_the_handlers() {
    let p = std::thread::spawn(|| thread::malloc(32) as usize).join().unwrap();
    assert!(fork::is_installed());
    // SAFETY: a live block of thread::malloc, freed from another thread.
    unsafe { thread::free(p as *mut u8) };
}

#[test]
#[cfg_attr(miri, ignore = "Miri has no fork and no pthread_atfork")]
fn a_forked_child_allocates_while_the_parent_has_threads() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut keep = vec![0usize; 64];
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = i % 64;
                    // SAFETY: blocks of thread::malloc, each freed once.
                    unsafe { thread::free(keep[k] as *mut u8) };
                    keep[k] = thread::malloc(1 + i % 500) as usize;
                    i += 1;
                }
                for b in keep {
                    // SAFETY: as above.
                    unsafe { thread::free(b as *mut u8) };
                }
            })
        })
        .collect();
    let _ = thread::malloc(16); // this thread's heap, and the handlers
    for _ in 0..20 {
        // SAFETY: the child only allocates, frees and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: alarm and _exit have no preconditions.
            unsafe { libc::alarm(10) };
            let bs: Vec<usize> = (0..2000).map(|i| thread::malloc(1 + i % 500) as usize).collect();
            let ok = bs.iter().all(|&b| b != 0);
            for b in bs {
                // SAFETY: as above.
                unsafe { thread::free(b as *mut u8) };
            }
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status:#x}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
}
