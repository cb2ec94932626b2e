//! The header table (src/pool_table.rs): the pools of the arena region keep
//! their headers in a table apart, so no page of a pool is held for its
//! header. A purge gives back a sparse pool's first page like any other
//! page whose blocks are all free; the pool stays on its used list, and its
//! first page comes back when the pool needs its blocks. Pools of arenas
//! outside the region keep their headers in the pool, as CPython does, and
//! their first pages count apart (`header_page_bytes`). Checked with
//! validate(), the statistics, the floor's figures and mincore.
//!
//! Where the region cannot be reserved (a small `RLIMIT_AS`), arenas come
//! from the OS with CPython's layout: each test then checks that layout's
//! side of the same figures instead. Miri has no arena region (its "OS" is
//! the Rust heap), so there is no table under it: the file is left out
//! there, as are its `mincore` calls.

#![cfg(not(miri))]

mod common;

use common::{page, resident};

use pymalloc::geometry::{num_blocks, size_class, ARENA_SIZE, POOL_OVERHEAD, POOL_SIZE};
use pymalloc::Heap;

const SIZE: usize = 64;

fn pattern(b: *mut u8) -> u8 {
    (b as usize / SIZE) as u8 | 1
}

fn holds_pattern(b: *mut u8) -> bool {
    // SAFETY: a live block of SIZE bytes.
    unsafe { core::slice::from_raw_parts(b, SIZE) }.iter().all(|&x| x == pattern(b))
}

fn pool_of(b: *mut u8) -> usize {
    b as usize & !(POOL_SIZE - 1)
}

/// `npools` pools of SIZE-byte blocks, each keeping its last `keep` blocks
/// (on its last page) and freeing the rest: no pool's first page holds a
/// live block. Returns the kept blocks.
fn sparse_pools(heap: &mut Heap, npools: usize, keep: usize) -> Vec<*mut u8> {
    let per_pool = num_blocks(size_class(SIZE).unwrap());
    let all: Vec<*mut u8> = (0..per_pool * npools).map(|_| heap.malloc(SIZE)).collect();
    for &b in &all {
        // SAFETY: a live block of SIZE bytes.
        unsafe { b.write_bytes(pattern(b), SIZE) };
    }
    let mut kept = Vec::new();
    for (i, &b) in all.iter().enumerate() {
        if (i % per_pool) + keep >= per_pool {
            kept.push(b);
        } else {
            // SAFETY: live, freed once.
            unsafe { heap.free(b) };
        }
    }
    heap.validate().unwrap();
    kept
}

/// Whether `heap`'s pools (it has some) keep their headers in the table:
/// its arenas are the region's. Without the region, arenas come from the
/// OS and the headers are in the pools (the size of the table says which).
fn headers_in_table(heap: &Heap) -> bool {
    assert!(heap.arena_count() > 0);
    heap.stats().header_table_bytes > 0
}

/// [`run`]'s sparse pools where the headers are in the pools: each pool's
/// first page is held for its header, and a purge leaves it.
fn run_with_headers_in_pools(mut heap: Heap, kept: Vec<*mut u8>) {
    let page = page();
    let npools = kept.len();
    assert_eq!(heap.header_page_bytes(), npools * page, "each first page is held for its header");
    heap.purge();
    heap.validate().unwrap();
    for &b in &kept {
        assert!(resident(pool_of(b)), "a header's page stays");
        assert!(holds_pattern(b));
    }
    assert_eq!(heap.stats().pages_out, npools * (POOL_SIZE / page - 2));
    for &b in &kept {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
    }
    heap.validate().unwrap();
    assert_eq!(heap.stats().blocks_in_use(), 0);
}

fn run(mut heap: Heap) {
    let page = page();
    if POOL_SIZE / page < 2 {
        return; // a pool of one page: it goes back whole or not at all
    }
    let npools = 6;
    let kept = sparse_pools(&mut heap, npools, 1);
    let pools: Vec<usize> = kept.iter().map(|&b| pool_of(b)).collect();
    assert!(kept.iter().all(|&b| b as usize - pool_of(b) >= page), "the survivors lie past the first page");
    if !headers_in_table(&heap) {
        return run_with_headers_in_pools(heap, kept);
    }
    let before = heap.stats();
    assert_eq!(heap.header_page_bytes(), 0, "no page is held for a header alone");
    assert_eq!(before.header_table_bytes, heap.arena_count() * 64 * (ARENA_SIZE / POOL_SIZE));
    let floor = heap.live_page_bytes();
    assert_eq!(floor, npools * page, "one page per pool holds a survivor");

    heap.purge();
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!(s.blocks_in_use(), npools, "purge frees nothing");
    assert_eq!(s.classes, before.classes, "CPython's statistics do not change");
    assert_eq!(heap.live_page_bytes(), floor, "the survivors' pages stay");
    for &p in &pools {
        assert!(!resident(p), "a pool's first page went back");
    }
    // Every page a survivor lies on is resident, and the survivors kept
    // their bytes.
    assert!(kept.iter().all(|&b| resident(b as usize & !(page - 1)) && holds_pattern(b)));
    // A pool's pages: all but the survivor's are out, the first included.
    assert_eq!(s.pages_out, npools * (POOL_SIZE / page - 1), "{s:?}");

    // A free into such a pool empties it.
    // SAFETY: live, freed once.
    unsafe { heap.free(kept[0]) };
    heap.validate().unwrap();
    assert_eq!(heap.stats().blocks_in_use(), npools - 1);

    // The next block of the class comes from a pool in use (a retaining
    // heap keeps the emptied one at the head of its list, and takes from
    // it), not from a new pool.
    let b = heap.malloc(SIZE);
    heap.validate().unwrap();
    let from = pool_of(b);
    let retained = heap.retains_empty_pools();
    let expected = if retained { &pools[..1] } else { &pools[1..] };
    assert!(expected.contains(&from), "the block comes from a pool in use ({from:#x})");
    let c = size_class(SIZE).unwrap();
    assert!(heap.stats().classes[c].pools <= npools, "no new pool");
    // SAFETY: a live block of SIZE bytes.
    unsafe { b.write_bytes(pattern(b), SIZE) };
    // That pool serves the next blocks too, its pages out coming back when
    // its free list runs out.
    let per_pool = num_blocks(c);
    let more: Vec<*mut u8> = (0..per_pool / 2).map(|_| heap.malloc(SIZE)).collect();
    assert!(more.iter().all(|&m| pool_of(m) == from));
    assert!(resident(from), "its first page is back");
    heap.validate().unwrap();

    // Frees into the other pools.
    for &k in &kept[2..] {
        assert!(holds_pattern(k));
        // SAFETY: live, freed once.
        unsafe { heap.free(k) };
        heap.validate().unwrap();
    }
    for &m in more.iter().chain([&b, &kept[1]]) {
        // SAFETY: live, freed once.
        unsafe { heap.free(m) };
    }
    heap.validate().unwrap();
    heap.flush_cache();
    heap.validate().unwrap();
    assert_eq!(heap.stats().blocks_in_use(), 0);
    // (A retaining heap keeps its emptied head pool, pages out and all,
    // until a purge.)
    heap.purge();
    heap.validate().unwrap();
    let end = heap.stats();
    assert_eq!(end.blocks_in_use(), 0);
    assert_eq!(end.pages_out, 0, "{end:?}");
}

#[test]
fn a_purge_gives_back_the_first_pages_of_sparse_pools() {
    run(Heap::new());
}

#[test]
fn the_same_in_a_caching_retaining_heap() {
    run(Heap::new_retaining());
}

/// After a purge, the class takes back its pools' blocks, pages out
/// included, before any new pool: every block handed out once.
#[test]
fn a_class_refills_its_pools_before_taking_new_ones() {
    let page = page();
    if POOL_SIZE / page < 2 {
        return;
    }
    let mut heap = Heap::new();
    let npools = 4;
    let kept = sparse_pools(&mut heap, npools, 1);
    // (Either layout: a purge leaves each pool's survivor, and its header's
    // page where the header is in the pool.)
    heap.purge();
    heap.validate().unwrap();
    assert!(heap.stats().pages_out > 0);
    let pools_before = heap.stats().classes[size_class(SIZE).unwrap()].pools;
    assert_eq!(pools_before, npools);
    let per_pool = num_blocks(size_class(SIZE).unwrap());
    let again: Vec<*mut u8> = (0..(per_pool - 1) * npools).map(|_| heap.malloc(SIZE)).collect();
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!(s.classes[size_class(SIZE).unwrap()].pools, npools, "no new pool: {s:?}");
    assert_eq!(s.pages_out, 0, "every page came back");
    let mut all: Vec<usize> = again.iter().chain(&kept).map(|&b| b as usize).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), per_pool * npools, "no block handed out twice");
    for &b in again.iter().chain(&kept) {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
    }
    heap.validate().unwrap();
    assert_eq!(heap.stats().blocks_in_use(), 0);
}

/// A region pool's first `POOL_OVERHEAD` bytes hold nothing the heap
/// reads: its header is in the table. Scribbling over them changes
/// nothing, and blocks still start where CPython's would.
#[test]
fn a_region_pool_does_not_hold_its_header() {
    let mut heap = Heap::new();
    let c = size_class(SIZE).unwrap();
    let per_pool = num_blocks(c);
    let all: Vec<*mut u8> = (0..per_pool + 3).map(|_| heap.malloc(SIZE)).collect();
    let pool = pool_of(all[0]);
    assert_eq!(all[0] as usize - pool, POOL_OVERHEAD, "the first block where CPython puts it");
    // Without the region the header is there (and must not be scribbled on).
    if headers_in_table(&heap) {
        // SAFETY: the pool's first bytes, in a live arena of this heap,
        // which the heap leaves unused (what this test checks).
        unsafe { (pool as *mut u8).write_bytes(0xa5, POOL_OVERHEAD) };
    }
    heap.validate().unwrap();
    for &b in &all {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
        heap.validate().unwrap();
    }
    let again: Vec<*mut u8> = (0..per_pool).map(|_| heap.malloc(SIZE)).collect();
    heap.validate().unwrap();
    assert_eq!(heap.stats().blocks_in_use(), per_pool);
    for &b in &again {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
    }
    heap.validate().unwrap();
}

/// Arenas from another allocator lie outside the region: their pools keep
/// their headers at their start, as CPython's do, so a pool whose survivors
/// all lie past its first page holds that page for the header.
#[test]
fn pools_outside_the_region_keep_their_headers() {
    let page = page();
    let mut heap = common::heap_outside_the_region();
    let npools = 3;
    let kept = sparse_pools(&mut heap, npools, 1);
    let s = heap.stats();
    assert_eq!(s.header_table_bytes, 0, "no arena in the region");
    if POOL_SIZE / page >= 2 {
        assert_eq!(heap.header_page_bytes(), npools * page, "a header page per pool");
    } else {
        assert_eq!(heap.header_page_bytes(), 0, "a pool of one page holds its survivor");
    }
    assert!(kept.iter().all(|&b| holds_pattern(b)));
    for &b in &kept {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
        heap.validate().unwrap();
    }
    assert_eq!(heap.stats().blocks_in_use(), 0);
}
