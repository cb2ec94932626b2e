//! A huge block that finds no run of kept slots long enough takes the pages
//! of kept slots elsewhere, moved into its run without a fault or a copy,
//! instead of faulting in fresh ones while those wait; one that cannot grow
//! in place moves its own pages to a longer run instead of copying its
//! bytes. A process of its own: what is kept is process-wide.
#![cfg(not(miri))] // no segment region under Miri

mod common;

use pymalloc::{config, every_size, PurgePolicy};

use common::{free_every_size as free, huge_block as huge, kept_huge_bytes as kept};

const MIB: usize = 1 << 20;

fn bytes<'a>(p: *const u8, n: usize) -> &'a [u8] {
    // SAFETY: the test's blocks hold at least n bytes.
    unsafe { core::slice::from_raw_parts(p, n) }
}

/// Page faults the calling thread has taken so far.
fn faults() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut u: libc::rusage = core::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut u), 0);
        u.ru_minflt + u.ru_majflt
    }
}

#[test]
fn huge_blocks_move_pages_instead_of_faulting_or_copying() {
    if common::without_regions() {
        return;
    }
    config::set_purge_policy(PurgePolicy::Decay { ms: 60_000 });

    // Two runs of four kept slots, apart: `b` stays live between them.
    let (a, b, c) = (huge(4), huge(4), huge(4));
    // SAFETY: the blocks hold 4 MiB - 64 bytes each.
    unsafe {
        core::ptr::write_bytes(a, 0xa1, 4 * MIB - 64);
        core::ptr::write_bytes(c, 0xc1, 4 * MIB - 64);
    }
    free(a);
    free(c);
    assert_eq!(kept(), 8 * MIB);

    // Eight slots: no kept run is that long. One run is reused where it
    // lies; the other's pages move in after it.
    let before = faults();
    let d = huge(8);
    let data = bytes(d, 8 * MIB - 64);
    let from_a = data.iter().filter(|&&x| x == 0xa1).count();
    let from_c = data.iter().filter(|&&x| x == 0xc1).count();
    // Each run's bytes, but for the headers of the blocks and of the run
    // that moved (64 bytes each).
    assert!(from_a >= 4 * MIB - 192 && from_c >= 4 * MIB - 192, "{from_a} bytes of a, {from_c} of c: pages faulted in");
    assert_eq!(kept(), 0, "every kept slot went into the new block");
    // SAFETY: d holds 8 MiB - 64 bytes.
    unsafe { core::ptr::write_bytes(d, 0xd1, 8 * MIB - 64) };
    let taken = faults() - before;
    assert!(taken < 64, "{taken} page faults for a block of resident pages (2,048 if faulted in)");

    // A block that cannot grow in place (`wall` follows it) moves to a
    // longer run: its pages come along, not copies of its bytes.
    let e = huge(3);
    let wall = huge(1);
    let pattern = |i: usize| (i % 251) as u8;
    // SAFETY: e holds 3 MiB - 64 bytes.
    unsafe { (0..3 * MIB - 64).for_each(|i| *e.add(i) = pattern(i)) };
    let before = faults();
    // SAFETY: e is a live block of the segment region; not used again.
    let f = unsafe { every_size::realloc_in(e, 6 * MIB - 64, |n| every_size::alloc(n, 16, false)) };
    assert!(!f.is_null() && f != e, "moved");
    assert!(bytes(f, 3 * MIB - 64).iter().enumerate().all(|(i, &x)| x == pattern(i)), "the bytes came along");
    let taken = faults() - before;
    assert!(taken < 64, "{taken} page faults: copied into fresh pages (768 if so)");
    // SAFETY: f now holds 6 MiB - 64 bytes.
    unsafe { core::ptr::write_bytes(f.add(3 * MIB), 0xf1, 3 * MIB - 64) };
    assert_eq!(every_size::stats().huge_bytes, (4 + 8 + 6 + 1) * MIB, "b, d, f and the wall");
    free(f);
    free(wall);

    // A zeroed block moves nothing: it reads zeroes.
    free(d);
    let z = every_size::alloc(12 * MIB - 64, 16, true);
    assert!(!z.is_null());
    assert!(bytes(z, 12 * MIB - 64).iter().all(|&x| x == 0));
    free(z);
    free(b);
}
