//! Under the decay policy a heap keeps one wholly free span segment and
//! gives the others to the segment region with their pages: another
//! thread's heap takes them next (no page faulted in, no new slot), and the
//! region's sweep gives them to the OS once they have gone unused for a
//! period. A process of its own: kept slots are process-wide.
#![cfg(not(miri))] // no segment region under Miri

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use pymalloc::{config, every_size, PurgePolicy};

const MIB: usize = 1 << 20;
/// A medium size: 255 blocks to a segment's 63 units of 16 KiB.
const BLOCK: usize = 4096;
/// Enough blocks for four segments.
const BLOCKS: usize = 4 * 255;

fn kept() -> usize {
    every_size::stats().huge_kept_bytes
}

/// Allocates `BLOCKS` medium blocks, each filled with `tag` past its first
/// word, and returns their addresses.
fn fill(tag: u8) -> Vec<usize> {
    (0..BLOCKS)
        .map(|_| {
            let p = every_size::alloc(BLOCK, 16, false);
            assert!(!p.is_null());
            // SAFETY: a fresh block of BLOCK bytes.
            unsafe { core::ptr::write_bytes(p, tag, BLOCK) };
            p as usize
        })
        .collect()
}

fn free_all(blocks: &[usize]) {
    for &p in blocks {
        // SAFETY: live blocks of every_size, each freed once.
        unsafe { every_size::free(p as *mut u8) };
    }
}

/// Minor page faults of the calling thread so far.
fn minor_faults() -> i64 {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD is the calling thread.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    u.ru_minflt
}

fn segments(blocks: &[usize]) -> BTreeSet<usize> {
    blocks.iter().map(|&p| p & !(MIB - 1)).collect()
}

#[test]
fn wholly_free_segments_pass_between_heaps_with_their_pages_and_decay() {
    if common::without_regions() {
        return;
    }
    config::set_purge_policy(PurgePolicy::Decay { ms: 1000 });
    assert_eq!(kept(), 0);

    // One thread fills four segments and frees everything: its heap keeps
    // one, the region keeps the others with their pages.
    let segs_a = std::thread::spawn(|| {
        let blocks = fill(0xa5);
        let segs = segments(&blocks);
        assert!(segs.len() >= 4, "{} segments", segs.len());
        free_all(&blocks);
        assert_eq!(every_size::current_stats().segments, 1, "the heap keeps one free segment");
        assert_eq!(kept(), (segs.len() - 1) * MIB, "the others are kept by the region");
        segs
    })
    .join()
    .unwrap();

    // Another thread's heap (or the first one's, adopted) takes them: the
    // same slots, with their pages (few faults where fresh slots would
    // fault in every page), and the region keeps nothing after.
    std::thread::spawn(move || {
        let faults = minor_faults();
        let blocks = fill(0x3c);
        let faults = minor_faults() - faults;
        let segs_b = segments(&blocks);
        assert!(segs_b.is_subset(&segs_a), "new segments came from the kept slots: {segs_b:?} vs {segs_a:?}");
        assert_eq!(kept(), 0);
        // Fresh slots would fault in every page of the blocks; kept ones
        // fault in none. The heap's own free segment may have given its
        // pages back when its thread ended: at most one segment's pages.
        let pages = BLOCKS * BLOCK / 4096;
        assert!(faults < (pages / 2) as i64, "{faults} page faults for {pages} pages of blocks");
        free_all(&blocks);
        assert_eq!(kept(), (segs_b.len() - 1) * MIB);
    })
    .join()
    .unwrap();

    // A purge gives the kept segments back too.
    every_size::release_free();
    assert_eq!(kept(), 0, "a purge gives back the kept segments");

    // Without a purge, the decay sweep gives them back within two periods.
    std::thread::spawn(|| {
        let blocks = fill(0x5a);
        free_all(&blocks);
        assert!(kept() >= 2 * MIB);
    })
    .join()
    .unwrap();
    let start = std::time::Instant::now();
    while kept() > 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        config::pymalloc_decay();
    }
    assert_eq!(kept(), 0, "kept segments decay");
    assert!(start.elapsed() < Duration::from_secs(4), "within two periods and a little: {:?}", start.elapsed());
}
