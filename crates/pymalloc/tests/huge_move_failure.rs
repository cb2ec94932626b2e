//! When the kernel refuses to move a huge block's pages (simulated: the
//! destination left reserved only, as a kernel that unmapped it before
//! failing leaves it), every block stays whole and writable, its bytes
//! kept, and the kept slots' count stays right. A process of its own:
//! what is kept is process-wide.
#![cfg(not(miri))] // no segment region under Miri

mod common;

use pymalloc::{config, every_size, fail_page_moves_for_tests, PurgePolicy};

use common::{free_every_size as free, huge_block as huge, kept_huge_bytes as kept};

const MIB: usize = 1 << 20;

fn fill(p: *mut u8, n: usize, byte: u8) {
    // SAFETY: the test's blocks hold at least n bytes.
    unsafe { core::ptr::write_bytes(p, byte, n) };
}

fn count(p: *const u8, n: usize, byte: u8) -> usize {
    // SAFETY: as for fill.
    unsafe { core::slice::from_raw_parts(p, n) }.iter().filter(|&&x| x == byte).count()
}

#[test]
fn a_refused_move_leaves_every_block_whole() {
    if common::without_regions() {
        return;
    }
    config::set_purge_policy(PurgePolicy::Decay { ms: 60_000 });

    // A new block over one kept run of four slots takes two slots' pages
    // from the other run; the third move fails. The block is still wholly
    // writable, and the failed run's slots are all given back.
    let (a, b, c) = (huge(4), huge(4), huge(4));
    fill(a, 4 * MIB - 64, 0xa1);
    fill(c, 4 * MIB - 64, 0xc1);
    free(a);
    free(c);
    assert_eq!(kept(), 8 * MIB);
    fail_page_moves_for_tests(2);
    let d = huge(8);
    assert!(count(d, 8 * MIB - 64, 0xc1) >= 4 * MIB - 128, "the kept run it lies on");
    assert!(count(d, 8 * MIB - 64, 0xa1) >= 2 * MIB - 128, "the two slots moved before the failure");
    fill(d, 8 * MIB - 64, 0xd1);
    assert_eq!(count(d, 8 * MIB - 64, 0xd1), 8 * MIB - 64);
    assert_eq!(kept(), 0, "the run moves failed on is given back whole");

    // A block that cannot grow in place moves one slot, fails on the
    // second, and copies the rest: its bytes are whole, its new slots
    // writable.
    let e = huge(3);
    let wall = huge(1);
    let pattern = |i: usize| (i % 251) as u8;
    // SAFETY: e holds 3 MiB - 64 bytes.
    unsafe { (0..3 * MIB - 64).for_each(|i| *e.add(i) = pattern(i)) };
    fail_page_moves_for_tests(1);
    // SAFETY: e is a live block of the segment region; not used again.
    let f = unsafe { every_size::realloc_in(e, 6 * MIB - 64, |n| every_size::alloc(n, 16, false)) };
    assert!(!f.is_null() && f != e);
    // SAFETY: f holds 6 MiB - 64 bytes.
    let moved = unsafe { core::slice::from_raw_parts(f, 3 * MIB - 64) };
    assert!(moved.iter().enumerate().all(|(i, &x)| x == pattern(i)), "the bytes came along");
    fill(f, 6 * MIB - 64, 0xf1);

    // The tail of a moved block filled from kept pages, one of whose moves
    // fails: the block is writable all along.
    let h = huge(2);
    let wall2 = huge(1);
    let g = huge(2);
    let wall3 = huge(1);
    free(g);
    assert_eq!(kept(), 2 * MIB);
    // h's two slots move; the first move of g's kept pages into the tail
    // fails.
    fail_page_moves_for_tests(2);
    // SAFETY: h is a live block of the segment region; not used again.
    let i = unsafe { every_size::realloc_in(h, 5 * MIB - 64, |n| every_size::alloc(n, 16, false)) };
    assert!(!i.is_null());
    fill(i, 5 * MIB - 64, 0x11);
    assert_eq!(count(i, 5 * MIB - 64, 0x11), 5 * MIB - 64);
    assert_eq!(kept(), 0, "g's run, whose move failed, is given back whole");

    for p in [b, d, f, wall, i, wall2, wall3] {
        free(p);
    }
}
