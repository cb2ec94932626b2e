//! The background decay thread gives back what an idle process freed: a
//! thread heap frees everything and then makes no call; the thread's sweeps
//! return its arenas. (One test in this binary: it sets the process-wide
//! policy.)

use std::time::{Duration, Instant};

use pymalloc::geometry::ARENA_SIZE;
use pymalloc::{config, thread, PurgePolicy};

#[test]
#[cfg_attr(miri, ignore = "waits for a thread on the real clock")]
fn an_idle_process_gives_back_what_it_freed() {
    config::set_purge_policy(PurgePolicy::Decay { ms: 50 });
    assert!(!pymalloc::background::is_running());
    assert!(config::start_background_decay());
    assert!(config::start_background_decay(), "starting twice is harmless");
    assert!(pymalloc::background::is_running());

    // Let the thread park: nothing to give back yet.
    std::thread::sleep(Duration::from_millis(100));

    let n = 8 * ARENA_SIZE / 128;
    let blocks: Vec<_> = (0..n).map(|_| thread::malloc(128)).collect();
    let peak = thread::stats().arenas_current;
    assert!(peak >= 8, "{peak} arenas");
    for p in blocks {
        unsafe { thread::free(p) };
    }
    // This thread now makes no call into its heap.
    let start = Instant::now();
    let kept = loop {
        let now = thread::stats().arenas_current;
        if now <= 1 || start.elapsed() > Duration::from_secs(10) {
            break now;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // At most the arena of the class's retained head pool stays, which
    // only its owner can give back.
    assert!(kept <= 1, "{kept} of {peak} arenas still held after {:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    assert!(thread::stats().arenas_reclaimed + 1 >= peak);

    // Again, after the thread parked for want of work: a pool emptied wakes
    // it.
    std::thread::sleep(Duration::from_millis(300));
    let blocks: Vec<_> = (0..n).map(|_| thread::malloc(128)).collect();
    let peak = thread::stats().arenas_current;
    for p in blocks {
        unsafe { thread::free(p) };
    }
    let start = Instant::now();
    while thread::stats().arenas_current > 1 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(thread::stats().arenas_current <= 1, "the parked thread was not woken ({peak} arenas)");

    // stop() ends the thread and waits for it, even while it sleeps between
    // sweeps (so a process can fork with one thread); start() makes a new
    // one, which gives back as before.
    let threads = os_threads();
    let t = Instant::now();
    assert!(pymalloc::background::stop());
    assert!(t.elapsed() < Duration::from_millis(500), "stop waited {:?}", t.elapsed());
    assert!(!pymalloc::background::is_running());
    assert!(!pymalloc::background::stop(), "nothing left to stop");
    assert_eq!(os_threads(), threads - 1, "the thread is gone from the count at once");
    let blocks: Vec<_> = (0..n).map(|_| thread::malloc(128)).collect();
    for p in blocks {
        unsafe { thread::free(p) };
    }
    // Stopped while it sleeps between sweeps, with work in hand.
    assert!(config::start_background_decay());
    std::thread::sleep(Duration::from_millis(10));
    assert!(pymalloc::background::stop());
    assert_eq!(os_threads(), threads - 1);
    assert!(config::start_background_decay());
    assert_eq!(os_threads(), threads);
    let start = Instant::now();
    while thread::stats().arenas_current > 1 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(thread::stats().arenas_current <= 1, "the restarted thread gave nothing back");

    // Blocks freed into the heap of a thread that has exited (its heap is
    // abandoned, and nobody adopts it): the sweep drains its queue, and what
    // empties goes back like any free memory. (glibc frees its record of a
    // thread's exit guard that way, after the guard has run.)
    // Fewer blocks than the count of such frees that drains abandoned heaps
    // on the spot (16,384).
    let before = thread::stats().blocks_in_use();
    let theirs: Vec<usize> =
        std::thread::spawn(|| (0..4000).map(|_| thread::malloc(128) as usize).collect()).join().unwrap();
    assert!(thread::stats().blocks_in_use() >= before + 4000);
    for p in theirs {
        // SAFETY: a live block of the thread heaps, freed once.
        unsafe { thread::free(p as *mut u8) };
    }
    let start = Instant::now();
    while thread::stats().blocks_in_use() > before && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let queued = thread::stats().blocks_in_use() - before;
    assert_eq!(queued, 0, "the exited thread's blocks still queued after {:?}", start.elapsed());
}

/// The OS threads of this process.
fn os_threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line[8..].trim().parse().unwrap()
}
