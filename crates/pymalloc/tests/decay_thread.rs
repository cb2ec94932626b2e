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
}
