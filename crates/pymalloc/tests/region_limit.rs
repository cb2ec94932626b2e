//! Where the address space has no room for the arena region with its header
//! table (a small `RLIMIT_AS`), the heap does without the region: the
//! reservation is not left mapped, arenas come from the OS one by one, and
//! their pools keep their headers at their start, as CPython's do. Those
//! arenas are pymalloc's own, so a purge gives back their pools' free
//! pages, but never a first page, which holds the header. (Under a limit
//! the reservation now takes at most half of it, `tests/region_cap.rs`, so
//! it is refused before its table would be.)
//!
//! One test in the file: it lowers the process's address-space limit
//! before the first arena, which a test run beside it would feel.

#![cfg(not(miri))]

mod common;

use common::{limit_to_the_smallest_reservation_and, page, reservations, resident, set_limit};
use pymalloc::geometry::{num_blocks, size_class, POOL_SIZE};
use pymalloc::Heap;

const SIZE: usize = 64;
const MIB: usize = 1 << 20;

#[test]
fn without_room_for_the_table_the_heap_keeps_headers_in_its_pools() {
    // Room for the smallest reservation (2 GiB, and a slot of alignment
    // slack) and 3 MiB more: the header table of its 1 GiB arena region
    // needs 4 MiB (16 MiB in the legacy geometry).
    // (Under a hard limit below the region's 2 GiB, `ulimit -v 1500000`,
    // the reservation fails before its table: the same layout is checked
    // without that step.)
    limit_to_the_smallest_reservation_and(4 * MIB);
    let mut heap = Heap::new();
    let per_pool = num_blocks(size_class(SIZE).unwrap());
    let npools = 4;
    let all: Vec<*mut u8> = (0..per_pool * npools).map(|_| heap.malloc(SIZE)).collect();
    let leftover = reservations();
    let stats = heap.stats();
    set_limit(None);
    assert!(all.iter().all(|b| !b.is_null()), "arenas from the OS");
    assert!(leftover.is_empty(), "the reservation without its table stays mapped: {leftover:?}");
    assert_eq!(stats.header_table_bytes, 0, "no arena in a region");

    // Sparse pools: each keeps its last block, on its last page.
    let mut kept = Vec::new();
    for (i, &b) in all.iter().enumerate() {
        // SAFETY: a live block of SIZE bytes.
        unsafe { b.write_bytes(0x5a, SIZE) };
        if i % per_pool == per_pool - 1 {
            kept.push(b);
        } else {
            // SAFETY: live, freed once.
            unsafe { heap.free(b) };
        }
    }
    let page = page();
    let pools: Vec<usize> = kept.iter().map(|&b| b as usize & !(POOL_SIZE - 1)).collect();
    let npages = POOL_SIZE / page;
    assert_eq!(heap.header_page_bytes(), npools * page * usize::from(npages > 1));
    heap.purge();
    heap.validate().unwrap();
    if npages > 1 {
        // The first page holds the header, the last the survivor; the pages
        // between go back (these arenas are pymalloc's own).
        assert!(pools.iter().all(|&p| resident(p)), "a first page holding the header stays");
        assert_eq!(heap.stats().pages_out, npools * (npages - 2), "{:?}", heap.stats());
        assert_eq!(heap.header_page_bytes(), npools * page);
    }
    // SAFETY: live blocks of SIZE bytes.
    assert!(kept.iter().all(|&b| unsafe { core::slice::from_raw_parts(b, SIZE) }.iter().all(|&x| x == 0x5a)));
    // The pools fill again, pages out coming back.
    let again: Vec<*mut u8> = (0..(per_pool - 1) * npools).map(|_| heap.malloc(SIZE)).collect();
    heap.validate().unwrap();
    assert_eq!(heap.stats().classes[size_class(SIZE).unwrap()].pools, npools, "no new pool");
    for &b in again.iter().chain(&kept) {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
    }
    heap.validate().unwrap();
    assert_eq!(heap.stats().blocks_in_use(), 0);
}
