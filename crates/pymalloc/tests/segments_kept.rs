//! Under the decay policy, span segments that empty go back to the region
//! with their pages, however many: the next segments take them without
//! faulting their pages in again. (Huge blocks' slots keep theirs only up
//! to a bound, tests/huge_kept.rs.) A huge block taking fresh slots sends
//! as many kept ones back. A process of its own: kept slots are
//! process-wide.
#![cfg(not(miri))] // no segment region under Miri

mod common;

use pymalloc::{config, every_size, PurgePolicy};

const MIB: usize = 1 << 20;
const SIZE: usize = 2048;
/// More than the 64 MiB that huge blocks may keep whatever else is live.
const TOTAL: usize = 96 * MIB;

fn minor_faults() -> i64 {
    let mut u = core::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes the struct.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) }, 0);
    // SAFETY: written by getrusage.
    unsafe { u.assume_init() }.ru_minflt
}

/// TOTAL bytes of SIZE-byte medium blocks, each written on every page.
fn blocks() -> Vec<usize> {
    (0..TOTAL / SIZE)
        .map(|i| {
            let p = every_size::alloc(SIZE, 16, false);
            assert!(!p.is_null());
            // SAFETY: a fresh block of SIZE bytes.
            unsafe { p.write_bytes(i as u8, SIZE) };
            p as usize
        })
        .collect()
}

fn free_all(bs: Vec<usize>) {
    for b in bs {
        // SAFETY: a live block of every_size, freed once.
        unsafe { every_size::free(b as *mut u8) };
    }
}

#[test]
fn emptied_span_segments_keep_their_pages_for_the_next_ones() {
    if common::without_regions() {
        return;
    }
    // A period longer than the test: no sweep gives anything back.
    config::set_purge_policy(PurgePolicy::Decay { ms: 600_000 });
    let first = blocks();
    free_all(first);
    let kept = every_size::stats().huge_kept_bytes;
    assert!(kept >= TOTAL * 3 / 4, "the emptied segments kept their pages: {} MiB", kept / MIB);

    let before = minor_faults();
    let again = blocks();
    let faults = minor_faults() - before;
    let pages = (TOTAL / 4096) as i64;
    assert!(faults < pages / 10, "{faults} page faults for {pages} pages written again");
    assert!(every_size::stats().huge_kept_bytes < kept / 4, "the new segments took the kept slots");
    free_all(again);

    // A purge gives them back.
    every_size::release_free();
    assert_eq!(every_size::stats().huge_kept_bytes, 0);

    // Kept beyond the huge blocks' bound (64 MiB), a huge block that takes
    // fresh slots sends as many kept ones back: kept memory is traded for
    // growth elsewhere, so emptied segments and a new huge block are not
    // both held. One block stays in every other segment, so no kept run is
    // long enough for the huge block.
    let mut many: Vec<usize> = (0..4).flat_map(|_| blocks()).collect();
    many.sort_unstable();
    let mut pinned = Vec::new();
    let mut rest = Vec::new();
    let mut last_segment = usize::MAX;
    for b in many {
        let segment = b / MIB;
        if segment % 2 == 1 && segment != last_segment {
            pinned.push(b);
            last_segment = segment;
        } else {
            rest.push(b);
        }
    }
    free_all(rest);
    let kept = every_size::stats().huge_kept_bytes;
    assert!(kept > 64 * MIB + 8 * MIB, "kept beyond the bound: {} MiB", kept / MIB);
    let d = every_size::alloc(8 * MIB - 64, 16, false);
    assert!(!d.is_null());
    let after = every_size::stats().huge_kept_bytes;
    assert!(after <= kept - 8 * MIB, "D's 8 fresh slots sent 8 kept ones back: {} -> {} MiB", kept / MIB, after / MIB);
    // SAFETY: a live huge block, freed once.
    unsafe { every_size::free(d) };
    free_all(pinned);
}
