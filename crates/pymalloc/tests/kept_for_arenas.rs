//! Freed huge blocks' kept slots go back as the pools grow: each megabyte of
//! arenas taken from the arena region gives back one kept slot of the
//! segment region.
//! Pools never use those slots, so keeping them while the small-object heap
//! grows only raised the peak. A process of its own: what is kept is
//! process-wide.
#![cfg(not(miri))] // no regions under Miri

mod common;

use pymalloc::geometry::ARENA_SIZE;
use pymalloc::{config, every_size, PurgePolicy};

const MIB: usize = 1 << 20;

fn kept() -> usize {
    every_size::stats().huge_kept_bytes
}

fn arenas_taken() -> usize {
    pymalloc::thread::stats().arenas_allocated_total
}

#[test]
fn each_arena_taken_gives_back_one_kept_slot() {
    if common::without_regions() {
        return;
    }
    // A long decay period: nothing goes back by time during the test.
    config::set_purge_policy(PurgePolicy::Decay { ms: 600_000 });
    let p = every_size::alloc(8 * MIB - 64, 16, false);
    assert!(!p.is_null());
    // SAFETY: p holds 8 MiB - 64 bytes; it is not used after the free.
    unsafe {
        core::ptr::write_bytes(p, 7, 8 * MIB - 64);
        every_size::free(p);
    }
    assert_eq!(kept(), 8 * MIB, "the freed block's slots are kept");

    // 3.5 MB of 512-byte blocks: arenas of 3.5 MB and a little more.
    let before = arenas_taken();
    let blocks: Vec<*mut u8> = (0..7_000).map(|_| pymalloc::thread::malloc(512)).collect();
    assert!(blocks.iter().all(|b| !b.is_null()));
    let taken = (arenas_taken() - before) * ARENA_SIZE;
    assert!((3 * MIB..6 * MIB).contains(&taken), "{taken} bytes of arenas");
    // A slot per megabyte of arenas (what an arena smaller than a slot
    // left over carries to the next one).
    let given = 8 * MIB - kept();
    assert!(given == taken / MIB * MIB || given == taken.div_ceil(MIB) * MIB, "{given} given for {taken}");
    for b in blocks {
        // SAFETY: b came from thread::malloc and is not used again.
        unsafe { pymalloc::thread::free(b) };
    }

    // With nothing kept, arenas take nothing from anyone.
    every_size::release_free();
    assert_eq!(kept(), 0);
    let more: Vec<*mut u8> = (0..7_000).map(|_| pymalloc::thread::malloc(500)).collect();
    assert!(more.iter().all(|b| !b.is_null()));
    for b in more {
        // SAFETY: as above.
        unsafe { pymalloc::thread::free(b) };
    }
    assert_eq!(kept(), 0);
}
