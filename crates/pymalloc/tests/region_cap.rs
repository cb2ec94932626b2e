//! Under a finite `RLIMIT_AS` the regions take at most half of it: a limit
//! with room for the smallest reservation (2 GiB) and little more leaves
//! the heap without the regions, and the program its address space.
//! Reserving all it could, the regions left a program limited to 2.15 GB
//! too little for a thread's stack.
//!
//! One test in the file: it lowers the process's address-space limit
//! before the first arena, which a test run beside it would feel.

#![cfg(not(miri))]

mod common;

use common::{limit_to_the_smallest_reservation_and, reservations, set_limit};

const GIB: usize = 1 << 30;
const MIB: usize = 1 << 20;

#[test]
fn under_a_limit_the_regions_leave_the_program_half_of_it() {
    // Room for the smallest reservation with its tables, and 256 MiB more.
    limit_to_the_smallest_reservation_and(256 * MIB);

    let p = pymalloc::thread::malloc(64);
    let big = pymalloc::every_size::alloc(100_000, 16, false);
    let reserved = pymalloc::regions_reserved();
    let left = reservations();
    // The program still has its address space: 1 GiB in one mapping.
    // SAFETY: a fresh anonymous mapping, unmapped below.
    let room = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            GIB,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    let room_ok = room != libc::MAP_FAILED;
    if room_ok {
        // SAFETY: the mapping just made.
        unsafe { libc::munmap(room, GIB) };
    }
    set_limit(None);

    assert!(!reserved && left.is_empty(), "regions reserved under a limit with room for little more ({left:?} left)");
    assert!(room_ok, "no gigabyte left to the program under its limit");
    assert!(!p.is_null() && pymalloc::owns(p), "a pool block from an arena of the OS");
    assert!(big.is_null(), "no span heap without the segment region");
    // SAFETY: a live block of thread::malloc.
    unsafe { pymalloc::thread::free(p) };
    pymalloc::thread::validate_current().unwrap();
}
