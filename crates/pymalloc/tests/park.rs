//! Parked pools (src/heap/park.rs): a purge gives back a sparse pool's first
//! page when no live block lies on it, keeping the pool's header apart; a
//! free into the pool, or an allocation of its class that finds no used
//! pool, brings it back. Checked with validate(), the statistics, the
//! floor's figures and mincore at each step.
//!
//! Pools are parked only in the arena region and only where a pool spans
//! two pages or more. Miri has no arena region (its "OS" is the Rust
//! heap), so there is no parking to test under it: the file is left out
//! there, as are its `mincore` and `mlock` calls.

#![cfg(not(miri))]

use pymalloc::geometry::{num_blocks, size_class, POOL_SIZE};
use pymalloc::Heap;

const SIZE: usize = 64;

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

fn resident(addr: usize) -> bool {
    let mut v = [0u8; 1];
    // SAFETY: a page-aligned page of our own mapping; v has a byte for it.
    let rc = unsafe { libc::mincore(addr as *mut libc::c_void, page(), v.as_mut_ptr()) };
    assert_eq!(rc, 0);
    v[0] & 1 != 0
}

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

fn run(mut heap: Heap) {
    let page = page();
    if POOL_SIZE / page < 2 {
        return; // a pool of one page: nothing to park
    }
    let npools = 6;
    let kept = sparse_pools(&mut heap, npools, 1);
    let pools: Vec<usize> = kept.iter().map(|&b| pool_of(b)).collect();
    assert!(kept.iter().all(|&b| b as usize - pool_of(b) >= page), "the survivors lie past the first page");
    let before = heap.stats();
    assert_eq!(heap.header_page_bytes(), npools * page, "before the purge: a header page per pool");
    let floor = heap.live_page_bytes();

    heap.purge();
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!(s.blocks_in_use(), npools, "purge frees nothing");
    assert_eq!(s.classes, before.classes, "CPython's statistics do not see the parking");
    assert_eq!(heap.header_page_bytes(), 0, "no page is held for a header alone");
    assert_eq!(heap.live_page_bytes(), floor, "the survivors' pages stay");
    for &p in &pools {
        assert!(!resident(p), "the first page of a parked pool went back");
    }
    // Every page a survivor lies on is resident, and the survivors kept
    // their bytes.
    assert!(kept.iter().all(|&b| resident(b as usize & !(page - 1)) && holds_pattern(b)));
    // A pool's pages: its first and the pages without a survivor are out.
    assert_eq!(s.pages_out, npools * (POOL_SIZE / page - 1), "{s:?}");

    // A free into a parked pool brings it back, and here empties it.
    // SAFETY: live, freed once.
    unsafe { heap.free(kept[0]) };
    heap.validate().unwrap();
    assert_eq!(heap.stats().blocks_in_use(), npools - 1);

    // An allocation of the class finds no used pool (a retaining heap keeps
    // the emptied one at the head of its list, and takes from it): it
    // unparks one of the parked pools rather than take a new one, and that
    // pool's first page comes back.
    let b = heap.malloc(SIZE);
    heap.validate().unwrap();
    let from = pool_of(b);
    let retained = heap.retains_empty_pools();
    let expected = if retained { &pools[..1] } else { &pools[1..] };
    assert!(expected.contains(&from), "the block comes from a parked pool ({from:#x})");
    assert!(resident(from));
    let c = size_class(SIZE).unwrap();
    assert!(heap.stats().classes[c].pools <= npools, "no new pool");
    // SAFETY: a live block of SIZE bytes.
    unsafe { b.write_bytes(pattern(b), SIZE) };
    // That pool serves the next blocks too, from its first page's blocks.
    let more: Vec<*mut u8> = (0..8).map(|_| heap.malloc(SIZE)).collect();
    assert!(more.iter().all(|&m| pool_of(m) == from));
    heap.validate().unwrap();

    // Frees into the other parked pools: each comes back with its blocks.
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
    // A caching heap's frees went to its cache, pools parked or not: they
    // reach their pools now, bringing the parked ones back.
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
fn a_purge_parks_pools_whose_first_page_holds_no_live_block() {
    run(Heap::new());
}

#[test]
fn the_same_in_a_caching_retaining_heap() {
    run(Heap::new_retaining());
}

/// Parked pools come back one by one as their class needs them, every
/// block handed out once, and a parked pool refills wholly.
#[test]
fn a_class_refills_its_parked_pools_before_taking_new_ones() {
    let page = page();
    if POOL_SIZE / page < 2 {
        return;
    }
    let mut heap = Heap::new();
    let npools = 4;
    let kept = sparse_pools(&mut heap, npools, 1);
    heap.purge();
    heap.validate().unwrap();
    assert_eq!(heap.header_page_bytes(), 0, "parked");
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

/// A free into a parked pool that leaves other blocks in use brings the
/// pool back onto its used list, where the next allocation finds it.
#[test]
fn a_free_that_leaves_blocks_in_use_brings_the_pool_back_to_its_list() {
    let page = page();
    if POOL_SIZE / page < 2 {
        return;
    }
    let mut heap = Heap::new();
    let kept = sparse_pools(&mut heap, 2, 3);
    heap.purge();
    heap.validate().unwrap();
    let pool = pool_of(kept[0]);
    assert!(!resident(pool), "parked");
    let out = heap.stats().pages_out;
    // SAFETY: live, freed once.
    unsafe { heap.free(kept[0]) };
    heap.validate().unwrap();
    assert!(resident(pool), "its first page is back");
    let s = heap.stats();
    assert_eq!(s.blocks_in_use(), 5);
    assert_eq!(s.pages_out, out - 1, "{s:?}");
    assert!(kept[1..].iter().all(|&b| holds_pattern(b)));
    // The next block of the class comes from that pool, now on its list,
    // not from the other, still parked.
    let b = heap.malloc(SIZE);
    assert_eq!(pool_of(b), pool);
    assert!(!resident(pool_of(kept[3])), "the other stays parked");
    heap.validate().unwrap();
    for &x in kept[1..].iter().chain([&b]) {
        // SAFETY: live, freed once.
        unsafe { heap.free(x) };
        heap.validate().unwrap();
    }
    assert_eq!(heap.stats().blocks_in_use(), 0);
}

/// A first page the OS will not give back (locked memory: `madvise`
/// refuses it) parks all the same: the pool's own header is zeroed, so
/// every free into the pool still finds it parked, and no free is lost.
#[test]
fn a_pool_whose_first_page_cannot_go_back_parks_all_the_same() {
    let page = page();
    if POOL_SIZE / page < 2 {
        return;
    }
    let mut heap = Heap::new();
    let kept = sparse_pools(&mut heap, 1, 3);
    let pool = pool_of(kept[0]);
    // SAFETY: a range of our own live mapping.
    let rc = unsafe { libc::mlock(pool as *const libc::c_void, POOL_SIZE) };
    assert_eq!(rc, 0, "mlock: {}", std::io::Error::last_os_error());
    heap.purge();
    heap.validate().unwrap();
    assert!(resident(pool), "a locked page stays");
    assert_eq!(heap.header_page_bytes(), 0, "parked");
    for (n, &b) in kept.iter().enumerate() {
        assert!(holds_pattern(b));
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
        heap.validate().unwrap();
        assert_eq!(heap.stats().blocks_in_use(), kept.len() - n - 1, "a free was lost");
    }
    // SAFETY: the range locked above.
    unsafe { libc::munlock(pool as *const libc::c_void, POOL_SIZE) };
}
