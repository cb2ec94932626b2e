//! Free pages of pools in use go back to the OS on purge and come back when
//! the pool needs them (src/heap/pages.rs), with validate() and the
//! statistics checked at each step.

mod common;

use pymalloc::geometry::{num_blocks, size_class, POOL_OVERHEAD, POOL_SIZE};
use pymalloc::Heap;

const SIZE: usize = 64;

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    #[cfg(not(miri))]
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    #[cfg(miri)]
    let p = 4096;
    p
}

/// Pages of `pool` that no kept block overlaps, page 0 aside (the header's,
/// for a pool outside the arena region).
fn free_pages(kept: &[*mut u8], pool: usize) -> Vec<usize> {
    let page = page();
    let npages = POOL_SIZE / page;
    (1..npages)
        .filter(|&p| {
            let (lo, hi) = (pool + p * page, pool + (p + 1) * page);
            !kept.iter().any(|&b| (b as usize) < hi && b as usize + SIZE > lo)
        })
        .collect()
}

#[cfg(not(miri))]
fn resident(addr: usize, len: usize) -> bool {
    let page = page();
    let mut v = vec![0u8; len.div_ceil(page)];
    // SAFETY: a page-aligned range of our own mapping; v has a byte a page.
    let rc = unsafe { libc::mincore(addr as *mut libc::c_void, len, v.as_mut_ptr()) };
    assert_eq!(rc, 0);
    v.iter().any(|b| b & 1 != 0)
}

fn pattern(b: *mut u8) -> u8 {
    (b as usize / SIZE) as u8
}

fn run(mut heap: Heap) {
    // Fewer pools under Miri, where every validate() walks slowly; two still
    // cover a pool that keeps its last block and one that does not.
    let npools = common::full_or_miri(8, 2);
    let per_pool = num_blocks(size_class(SIZE).unwrap());
    let all: Vec<*mut u8> = (0..per_pool * npools).map(|_| heap.malloc(SIZE)).collect();
    for &b in &all {
        // SAFETY: a live block of SIZE bytes.
        unsafe { b.write_bytes(pattern(b), SIZE) };
    }
    // Keep the blocks that lie wholly in the first page of their pool, and
    // the last block of every other pool: the pages between go free.
    let page = page();
    let pool_of = |b: *mut u8| b as usize & !(POOL_SIZE - 1);
    let mut kept = Vec::new();
    let mut freed = Vec::new();
    for (i, &b) in all.iter().enumerate() {
        let off = b as usize - pool_of(b);
        let last_of_pool = (i + 1) % per_pool == 0 && (i / per_pool) % 2 == 0;
        if off + SIZE <= page || last_of_pool {
            kept.push(b);
        } else {
            freed.push(b);
        }
    }
    for &b in &freed {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
    }
    heap.validate().unwrap();
    let mut pools: Vec<usize> = kept.iter().map(|&b| pool_of(b)).collect();
    pools.dedup();
    // A pool keeps one block on its free list: where every freed block lies
    // on the free pages, the highest of them stays.
    let expected: usize = pools
        .iter()
        .map(|&p| {
            let pages = free_pages(&kept, p);
            let on_free_pages = |b: usize| pages.iter().any(|&q| b < p + (q + 1) * page && b + SIZE > p + q * page);
            let outside = freed.iter().any(|&b| pool_of(b) == p && !on_free_pages(b as usize));
            pages.len() - usize::from(!outside && !pages.is_empty())
        })
        .sum();
    let in_use = heap.stats().blocks_in_use();
    assert_eq!(in_use, kept.len());

    let given = heap.purge();
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!(s.blocks_in_use(), kept.len(), "purge frees nothing");
    if POOL_SIZE / page < 2 {
        assert_eq!(s.pages_out, 0, "one-page pools have nothing to split");
        assert_eq!(given, 0);
    } else {
        assert!(expected >= npools, "the scenario leaves pages free ({expected})");
        assert_eq!(s.pages_out, expected, "{s:?}");
        assert!(given >= expected * page, "{given} bytes for {expected} pages");
        #[cfg(not(miri))]
        {
            let out = pools.iter().flat_map(|&p| free_pages(&kept, p).into_iter().map(move |q| p + q * page));
            let gone = out.filter(|&a| !resident(a, page)).count();
            assert_eq!(gone, expected, "the pages out are not resident");
        }
    }
    for &b in &kept {
        // SAFETY: live blocks of SIZE bytes.
        let bytes = unsafe { core::slice::from_raw_parts(b, SIZE) };
        assert!(bytes.iter().all(|&x| x == pattern(b)), "a kept block changed");
    }
    // A second purge finds nothing new in those pools.
    let again = heap.purge();
    heap.validate().unwrap();
    assert_eq!(heap.stats().pages_out, s.pages_out);
    assert!(again < page * expected.max(1), "{again}");

    // Allocate as many as were freed: the pools take their pages back.
    let mut back = Vec::new();
    for i in 0..freed.len() {
        let b = heap.malloc(SIZE);
        assert!(!b.is_null());
        // SAFETY: a fresh block.
        unsafe { b.write_bytes(0xA5, SIZE) };
        back.push(b);
        if i % common::full_or_miri(97, 509) == 0 {
            heap.validate().unwrap();
        }
    }
    heap.validate().unwrap();
    assert_eq!(heap.stats().pages_out, 0, "every pool needed its pages again");
    assert_eq!(heap.stats().blocks_in_use(), all.len());
    let mut everything: Vec<usize> = kept.iter().chain(&back).map(|&b| b as usize).collect();
    everything.sort_unstable();
    everything.dedup();
    assert_eq!(everything.len(), all.len(), "no block handed out twice");
    for &b in &kept {
        // SAFETY: live blocks of SIZE bytes.
        let bytes = unsafe { core::slice::from_raw_parts(b, SIZE) };
        assert!(bytes.iter().all(|&x| x == pattern(b)), "a kept block changed");
    }
    for &b in kept.iter().chain(&back) {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
    }
    heap.validate().unwrap();
    assert_eq!(heap.stats().blocks_in_use(), 0);
    let _ = POOL_OVERHEAD;
}

#[test]
fn free_pages_of_pools_in_use_go_back_and_come_back() {
    run(Heap::new());
}

#[test]
fn the_same_in_a_caching_retaining_heap() {
    run(Heap::new_retaining());
}

/// A pool with pages out that empties is set up afresh when next taken.
#[test]
fn a_pool_with_pages_out_that_empties_starts_afresh() {
    let mut heap = Heap::new();
    let per_pool = num_blocks(size_class(SIZE).unwrap());
    // Two pools: the first keeps one block, so that it stays in use.
    let all: Vec<*mut u8> = (0..per_pool * 2).map(|_| heap.malloc(SIZE)).collect();
    for &b in &all[1..] {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
    }
    heap.purge();
    heap.validate().unwrap();
    let out = heap.stats().pages_out;
    if POOL_SIZE / page() >= 2 {
        // The first pool: all but one page, whose free blocks keep the free
        // list (the header's, for a pool outside the arena region). (The
        // second pool emptied and went back whole.)
        assert_eq!(out, POOL_SIZE / page() - 1);
    }
    // SAFETY: the last live block.
    unsafe { heap.free(all[0]) };
    heap.validate().unwrap();
    assert_eq!(heap.stats().pages_out, 0);
    let again: Vec<*mut u8> = (0..per_pool).map(|_| heap.malloc(SIZE)).collect();
    heap.validate().unwrap();
    for &b in &again {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
    }
    heap.validate().unwrap();
}

/// A retained pool with pages out that another class takes is set up
/// afresh for it, and the arenas' count of pages out drops by its pages.
#[test]
fn a_retained_pool_with_pages_out_serves_another_class_afresh() {
    let mut heap = Heap::new_retaining();
    let per_pool = num_blocks(size_class(SIZE).unwrap());
    let all: Vec<*mut u8> = (0..per_pool).map(|_| heap.malloc(SIZE)).collect();
    for &b in &all[1..] {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
    }
    heap.purge();
    heap.validate().unwrap();
    let split = POOL_SIZE / page() >= 2;
    if split {
        assert_eq!(heap.stats().pages_out, POOL_SIZE / page() - 1);
    }
    // The last block goes: the pool empties and stays its class's head,
    // its pages still out.
    // SAFETY: the last live block.
    unsafe { heap.free(all[0]) };
    heap.flush_cache();
    heap.validate().unwrap();
    assert_eq!(heap.stats().classes[size_class(SIZE).unwrap()].pools, 1);
    // Another class takes it (no free pool has resident pages), from its
    // first block, and fills it: every page back, the count of pages out 0.
    let other = 16;
    let n = num_blocks(size_class(other).unwrap());
    let taken: Vec<*mut u8> = (0..n).map(|_| heap.malloc(other)).collect();
    assert_eq!(taken[0] as usize & !(POOL_SIZE - 1), all[0] as usize & !(POOL_SIZE - 1));
    assert_eq!(taken[0] as usize % POOL_SIZE, POOL_OVERHEAD);
    for &b in &taken {
        // SAFETY: a live block of `other` bytes.
        unsafe { b.write_bytes(0x5a, other) };
    }
    let s = heap.stats();
    assert_eq!((s.pages_out, s.classes[size_class(SIZE).unwrap()].pools), (0, 0));
    heap.validate().unwrap();
    for &b in &taken {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
    }
    heap.validate().unwrap();
}

/// `live_page_bytes` counts the pages that hold a block in use; pages out
/// and free pages are not counted. Here each survivor lies on its pool's
/// first page, so no page is held for a header alone.
#[test]
fn live_page_bytes_counts_pages_holding_live_blocks() {
    let mut heap = Heap::new();
    let page = page();
    let npages = (POOL_SIZE / page).max(1);
    let per_pool = num_blocks(size_class(SIZE).unwrap());
    assert_eq!(heap.live_page_bytes(), 0);
    let all: Vec<*mut u8> = (0..per_pool * 3).map(|_| heap.malloc(SIZE)).collect();
    assert_eq!(heap.live_page_bytes(), 3 * npages * page, "three full pools");
    // In each pool keep the first block only.
    for (i, &b) in all.iter().enumerate() {
        if i % per_pool != 0 {
            // SAFETY: live, freed once.
            unsafe { heap.free(b) };
        }
    }
    let header_pages = 3 * page.min(POOL_SIZE) * usize::from(npages > 1) + 3 * POOL_SIZE * usize::from(npages <= 1);
    assert_eq!(heap.live_page_bytes(), header_pages, "only the first page of each pool");
    assert_eq!(heap.header_page_bytes(), 0, "the headers' pages hold the survivors");
    heap.purge();
    assert_eq!(heap.live_page_bytes(), header_pages, "purging frees no live page");
    heap.validate().unwrap();
    for &b in all.iter().step_by(per_pool) {
        // SAFETY: live, freed once.
        unsafe { heap.free(b) };
    }
    assert_eq!(heap.live_page_bytes(), 0);
}

/// `pinning` per class: pools in use, their blocks and live pages, and the
/// sparse pools (at most an eighth in use) with what they hold.
#[test]
fn pinning_names_the_sparse_pools_and_what_they_hold() {
    let mut heap = Heap::new();
    let page = page();
    let npages = (POOL_SIZE / page).max(1);
    let c = size_class(SIZE).unwrap();
    let per_pool = num_blocks(c);
    let all: Vec<*mut u8> = (0..per_pool * 4).map(|_| heap.malloc(SIZE)).collect();
    // Pools 0 and 1 keep one block each (sparse); pools 2 and 3 stay full.
    for (i, &b) in all.iter().enumerate() {
        if i < 2 * per_pool && i % per_pool != 0 {
            // SAFETY: live, freed once.
            unsafe { heap.free(b) };
        }
    }
    let p = heap.pinning()[c];
    assert_eq!(p.pools, 4);
    assert_eq!(p.blocks, 2 + 2 * per_pool);
    assert_eq!(p.sparse_pools, 2);
    assert_eq!(p.sparse_blocks, 2);
    assert_eq!(p.sparse_pages, 2, "one page each: the first, holding the block");
    assert_eq!(p.live_pages, 2 + 2 * npages);
    assert!(heap.pinning().iter().enumerate().all(|(k, q)| k == c || q.pools == 0));
    // The blocks that pin them: the two survivors, a page each.
    let pins = heap.pinning_blocks();
    let want: Vec<_> = [all[0], all[per_pool]]
        .iter()
        .map(|&b| pymalloc::PinningBlock { addr: b as usize, class: c, pinned_bytes: page })
        .collect();
    assert_eq!(pins, want);
    for (i, &b) in all.iter().enumerate() {
        if i >= 2 * per_pool || i % per_pool == 0 {
            // SAFETY: live, freed once.
            unsafe { heap.free(b) };
        }
    }
    assert_eq!(heap.pinning()[c], pymalloc::ClassPinning::default());
}

/// A survivor pins its own page; survivors sharing a page share it; the
/// shares add up to the sparse pools' pages. In a pool that keeps its
/// header at its start (outside the arena region), a survivor away from
/// the first page pins the header's page too: held for the header alone,
/// outside the floor (`live_pages`, `live_page_bytes`) and counted apart
/// (`header_pages`, `header_page_bytes`). A pool of the region keeps its
/// header in the header table and holds no such page.
fn pinning_blocks_share(mut heap: Heap, outside_the_region: bool) {
    let page = page();
    let npages = POOL_SIZE / page;
    if npages < 3 {
        return; // a pool of one or two pages: covered above
    }
    let c = size_class(SIZE).unwrap();
    let per_pool = num_blocks(c);
    let all: Vec<*mut u8> = (0..per_pool).map(|_| heap.malloc(SIZE)).collect();
    let pool = all[0] as usize & !(POOL_SIZE - 1);
    let page_of = |b: *mut u8| (b as usize - pool) / page;
    // Keep two neighbours on the last page (wholly inside it), free the rest.
    let last = npages - 1;
    let keep: Vec<usize> = (0..per_pool)
        .filter(|&i| page_of(all[i]) == last && page_of(all[i].wrapping_add(SIZE - 1)) == last)
        .take(2)
        .collect();
    assert_eq!(keep.len(), 2);
    for (i, &b) in all.iter().enumerate() {
        if !keep.contains(&i) {
            // SAFETY: live, freed once.
            unsafe { heap.free(b) };
        }
    }
    // The header is in the pool where the arena is outside the region
    // (another arena allocator, Miri, no room for the region).
    let h = usize::from(heap.stats().header_table_bytes == 0);
    assert!(h == 1 || !outside_the_region);
    let p = heap.pinning()[c];
    assert_eq!((p.sparse_pools, p.sparse_blocks, p.sparse_pages), (1, 2, 1 + h), "the last page (and the header's)");
    assert_eq!((p.live_pages, p.header_pages), (1, h), "the last page holds the survivors");
    assert_eq!((heap.live_page_bytes(), heap.header_page_bytes()), (page, h * page));
    let pins = heap.pinning_blocks();
    assert_eq!(pins.len(), 2);
    for (pin, &i) in pins.iter().zip(&keep) {
        assert_eq!(pin.addr, all[i] as usize);
        // Half the shared last page (and half the header's page).
        assert_eq!(pin.pinned_bytes, page / 2 + h * page / 2);
    }
    assert_eq!(pins.iter().map(|b| b.pinned_bytes).sum::<usize>(), p.sparse_pages * page);
    for &i in &keep {
        // SAFETY: live, freed once.
        unsafe { heap.free(all[i]) };
    }
    assert!(heap.pinning_blocks().is_empty());
}

#[test]
fn pinning_blocks_share_the_live_pages() {
    pinning_blocks_share(Heap::new(), false);
}

#[cfg(not(miri))]
#[test]
fn pinning_blocks_share_the_live_pages_and_a_header_page_outside_the_region() {
    pinning_blocks_share(common::heap_outside_the_region(), true);
}
