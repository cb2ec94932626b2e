//! Freed huge blocks keep their pages for the next huge block, within a
//! bound, and give them back by the purge policy: after the decay period,
//! at once under `immediate`, and on a purge. A process of its own: what is
//! kept is process-wide.
#![cfg(not(miri))] // no segment region under Miri

mod common;

use pymalloc::{config, every_size, PurgePolicy};

const MIB: usize = 1 << 20;

/// A block that fills exactly `slots` slots (its header takes 64 bytes).
fn huge(slots: usize, zero: bool) -> *mut u8 {
    let p = every_size::alloc(slots * MIB - 64, 16, zero);
    assert!(!p.is_null());
    p
}

fn free(p: *mut u8) {
    // SAFETY: p is a live block of every_size, not used again.
    unsafe { every_size::free(p) };
}

fn kept() -> usize {
    every_size::stats().huge_kept_bytes
}

fn fill(p: *mut u8, n: usize, tag: u8) {
    // SAFETY: the test's blocks hold at least n bytes.
    unsafe { core::ptr::write_bytes(p, tag, n) };
}

fn holds(p: *const u8, n: usize, tag: u8) -> bool {
    // SAFETY: as for fill.
    unsafe { core::slice::from_raw_parts(p, n) }.iter().all(|&b| b == tag)
}

/// Resident bytes of the process.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn freed_huge_blocks_keep_their_pages_within_bounds_until_the_policy_returns_them() {
    if common::without_regions() {
        return;
    }
    config::set_purge_policy(PurgePolicy::Decay { ms: 50 });

    // Reuse: the next huge block takes the kept slots, pages and bytes.
    let p = huge(9, false);
    fill(p, 9 * MIB - 64, 0xab);
    free(p);
    assert_eq!(kept(), 9 * MIB);
    let q = huge(6, false);
    assert_eq!(q, p, "kept slots first");
    assert!(holds(q, 6 * MIB - 64, 0xab), "the pages were kept, not faulted in again");
    assert_eq!(kept(), 3 * MIB);

    // A zeroed block over kept slots reads zeroes.
    let z = huge(3, true);
    assert_eq!(z as usize, p as usize + 6 * MIB, "the kept tail is the first free run");
    assert!(holds(z, 3 * MIB - 64, 0));
    assert_eq!(kept(), 0);

    // Decay: kept for one period at least, given back within two.
    free(q);
    free(z);
    assert_eq!(kept(), 9 * MIB);
    std::thread::sleep(std::time::Duration::from_millis(120));
    config::pymalloc_decay();
    std::thread::sleep(std::time::Duration::from_millis(120));
    config::pymalloc_decay();
    assert_eq!(kept(), 0, "two periods unused: given back");

    // The bound: 64 MiB or the live huge bytes. Freeing 10 blocks of 20
    // MiB keeps the first five (the fifth makes 100 MiB kept against 100
    // live); the sixth finds 100 kept against 80 live and goes back.
    let blocks: Vec<_> = (0..10).map(|_| huge(20, false)).collect();
    for &b in &blocks {
        fill(b, 20 * MIB - 64, 1);
    }
    let full = rss();
    for b in blocks {
        free(b);
    }
    assert_eq!(kept(), 100 * MIB, "200 MiB freed, 100 MiB kept");
    assert!(rss() + 90 * MIB < full, "the rest went back at once");
    let kept_rss = rss();

    // `immediate` keeps nothing, and gives back what is kept.
    config::set_purge_policy(PurgePolicy::Immediate);
    assert_eq!(kept(), 0);
    assert!(rss() + 90 * MIB < kept_rss, "the kept pages left the process");
    free(huge(4, false));
    assert_eq!(kept(), 0);

    // A purge gives back what the decay policy keeps.
    config::set_purge_policy(PurgePolicy::Decay { ms: 60_000 });
    free(huge(4, false));
    assert_eq!(kept(), 4 * MIB);
    // SAFETY: no pymalloc mode is active in this test process.
    unsafe { config::pymalloc_purge() };
    assert_eq!(kept(), 0);

    // What a full collection gives back: free units of every thread heap's
    // span segments and kept huge slots, without waiting for the decay.
    let medium: Vec<usize> = (0..200).map(|i| every_size::alloc(1000 + i * 100, 16, false) as usize).collect();
    free(huge(2, false));
    for &p in &medium {
        free(p as *mut u8);
    }
    let before = every_size::stats();
    assert!(before.dirty_bytes > 0 && before.huge_kept_bytes == 2 * MIB, "{before:?}");
    assert!(every_size::release_free() >= before.dirty_bytes + 2 * MIB);
    let after = every_size::stats();
    assert_eq!((after.dirty_bytes, after.huge_kept_bytes), (0, 0), "{after:?}");
}
