//! The pymalloc algorithm on private `Heap` values: size classes, lazy
//! carving, pool and arena life cycles, realloc, routing to the raw
//! allocator. Nothing here changes process-wide state.

mod common;

use pymalloc::geometry::*;
use pymalloc::{owns, Heap, PurgePolicy};

/// Offset of a block inside its pool.
fn pool_offset(p: *mut u8) -> usize {
    p as usize & POOL_SIZE_MASK
}

fn pool_base(p: *mut u8) -> usize {
    p as usize & !POOL_SIZE_MASK
}

#[test]
fn geometry_tables() {
    #[cfg(not(feature = "legacy-geometry"))]
    {
        assert_eq!((ALIGNMENT, NB_SMALL_SIZE_CLASSES, POOL_SIZE, ARENA_SIZE), (16, 32, 16384, 1 << 20));
        assert_eq!(MAX_POOLS_IN_ARENA, 64);
        assert_eq!(num_blocks(0), (16384 - 48) / 16);
    }
    #[cfg(feature = "legacy-geometry")]
    {
        assert_eq!((ALIGNMENT, NB_SMALL_SIZE_CLASSES, POOL_SIZE, ARENA_SIZE), (8, 64, 4096, 256 << 10));
        assert_eq!(MAX_POOLS_IN_ARENA, 64);
        assert_eq!(num_blocks(0), (4096 - 48) / 8);
        // The seed's table: 1-8 -> class 0, 505-512 -> class 63.
        assert_eq!(size_class(8), Some(0));
        assert_eq!(size_class(9), Some(1));
        assert_eq!(size_class(505), Some(63));
    }
    assert_eq!(POOL_OVERHEAD, 48);
    for n in 1..=SMALL_REQUEST_THRESHOLD {
        let c = size_class(n).unwrap();
        assert!(class_size(c) >= n && class_size(c) - n < ALIGNMENT, "size {n}");
    }
    assert_eq!(size_class(0), None);
    assert_eq!(size_class(SMALL_REQUEST_THRESHOLD + 1), None);
    assert_eq!(size_class(usize::MAX), None);
}

#[test]
fn every_small_size_is_aligned_and_owned() {
    let mut heap = Heap::new();
    let ptrs: Vec<_> = (1..=SMALL_REQUEST_THRESHOLD).map(|n| (n, heap.malloc(n))).collect();
    for &(n, p) in &ptrs {
        assert!(!p.is_null());
        assert_eq!(p as usize % ALIGNMENT, 0, "size {n}");
        assert!(owns(p), "size {n} not from a pool");
        unsafe { p.write_bytes(n as u8, n) };
    }
    for &(n, p) in &ptrs {
        let bytes = unsafe { std::slice::from_raw_parts(p, n) };
        assert!(common::all_bytes(bytes, n as u8), "size {n} overwritten");
    }
    heap.validate().unwrap();
    for (_, p) in ptrs {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
    assert_eq!(heap.stats().blocks_in_use(), 0);
}

#[test]
fn zero_and_large_requests_go_to_the_raw_allocator() {
    let mut heap = Heap::new();
    let z1 = heap.malloc(0);
    let z2 = heap.malloc(0);
    assert!(!z1.is_null() && !z2.is_null() && z1 != z2);
    assert!(!owns(z1) && !owns(z2));
    let big = heap.malloc(SMALL_REQUEST_THRESHOLD + 1);
    assert!(!big.is_null() && !owns(big));
    assert_eq!(big as usize % 16, 0);
    let s = heap.stats();
    assert_eq!(s.raw_allocated_blocks, 3);
    assert_eq!(s.arenas_allocated_total, 0, "no arena for raw requests");
    assert_eq!(s.allocated_blocks(), 3);
    unsafe {
        heap.free(z1);
        heap.free(z2);
        heap.free(big);
        heap.free(std::ptr::null_mut());
    }
    assert_eq!(heap.stats().raw_allocated_blocks, 0);
    assert!(heap.malloc(usize::MAX).is_null());
    assert!(heap.malloc(isize::MAX as usize + 1).is_null());
    assert!(heap.calloc(usize::MAX / 2, 3).is_null());
    assert_eq!(heap.stats().raw_allocated_blocks, 0, "failures are not counted");
}

#[test]
fn last_freed_block_is_reused_first() {
    let mut heap = Heap::new();
    let a = heap.malloc(40);
    let b = heap.malloc(40);
    unsafe { heap.free(a) };
    assert_eq!(heap.malloc(40), a);
    unsafe {
        heap.free(b);
        heap.free(a);
    }
}

#[test]
fn blocks_are_carved_lazily_in_address_order() {
    let mut heap = Heap::new();
    let c = size_class(100).unwrap();
    let size = class_size(c);
    let blocks: Vec<_> = (0..10).map(|_| heap.malloc(100)).collect();
    let base = pool_base(blocks[0]);
    for (i, &p) in blocks.iter().enumerate() {
        assert_eq!(pool_base(p), base);
        assert_eq!(pool_offset(p), POOL_OVERHEAD + i * size, "block {i}");
    }
    let s = heap.stats();
    assert_eq!(s.classes[c].pools, 1);
    assert_eq!(s.classes[c].blocks_in_use, 10);
    assert_eq!(s.classes[c].avail_blocks, num_blocks(c) - 10);
    heap.validate().unwrap();
    for p in blocks {
        unsafe { heap.free(p) };
    }
}

#[test]
fn a_full_pool_leaves_the_used_list_and_comes_back_at_its_end() {
    let mut heap = Heap::new();
    let n = 256;
    let c = size_class(n).unwrap();
    let per_pool = num_blocks(c);
    let first: Vec<_> = (0..per_pool).map(|_| heap.malloc(n)).collect();
    assert!(first.iter().all(|&p| pool_base(p) == pool_base(first[0])));
    heap.validate().unwrap();
    // The pool is full: the next block comes from a new pool.
    let second = heap.malloc(n);
    assert_ne!(pool_base(second), pool_base(first[0]));
    assert_eq!(heap.stats().classes[c].pools, 2);
    // Freeing into the full pool puts it back on the used list, behind the
    // second pool, so allocation keeps filling the second pool first.
    let hole = first[per_pool / 2];
    unsafe { heap.free(hole) };
    heap.validate().unwrap();
    let next = heap.malloc(n);
    assert_eq!(pool_base(next), pool_base(second));
    // Fill the second pool; then the hole is used.
    let mut rest = vec![second, next];
    while rest.len() < per_pool {
        rest.push(heap.malloc(n));
    }
    assert!(rest.iter().all(|&p| pool_base(p) == pool_base(second)));
    assert_eq!(heap.malloc(n), hole);
    heap.validate().unwrap();
    for p in first.into_iter().chain(rest) {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
    assert_eq!(heap.stats().classes[c].pools, 0);
}

#[test]
fn an_empty_pool_returns_to_its_arena_and_is_reused_by_any_class() {
    let mut heap = Heap::new();
    let a = heap.malloc(16);
    let pool = pool_base(a);
    unsafe { heap.free(a) };
    let s = heap.stats();
    assert_eq!(s.blocks_in_use(), 0);
    assert_eq!(s.classes.iter().map(|c| c.pools).sum::<usize>(), 0);
    assert_eq!(s.unused_pools, MAX_POOLS_IN_ARENA - usize::from(s.arena_alignment_bytes != 0));
    heap.validate().unwrap();
    // The emptied pool is the arena's first free pool: another class gets it.
    let b = heap.malloc(300);
    assert_eq!(pool_base(b), pool);
    assert_eq!(pool_offset(b), POOL_OVERHEAD);
    unsafe { heap.free(b) };
    // And the same class again reuses its free list without reinitialising:
    // the first block is handed out again.
    assert_eq!(heap.malloc(300), b);
    unsafe { heap.free(b) };
    heap.validate().unwrap();
}

#[test]
fn realloc_stays_in_place_exactly_as_cpython_does() {
    let mut heap = Heap::new();
    for c in 0..NB_SMALL_SIZE_CLASSES {
        let size = class_size(c);
        for n in [size / 2, size * 3 / 4, size * 3 / 4 + 1, size - 1, size, size + 1] {
            if n == 0 {
                continue;
            }
            let p = heap.malloc(size);
            assert_eq!(size_class(size), Some(c));
            let keep = n.min(size);
            for i in 0..keep {
                unsafe { *p.add(i) = (i * 7 + c) as u8 };
            }
            let q = unsafe { heap.realloc(p, n) };
            assert!(!q.is_null());
            let stays = n <= size && 4 * n > 3 * size;
            assert_eq!(q == p, stays, "class {c} size {size} -> {n}");
            for i in 0..keep {
                assert_eq!(unsafe { *q.add(i) }, (i * 7 + c) as u8, "class {c} -> {n}: byte {i}");
            }
            unsafe { heap.free(q) };
        }
    }
    heap.validate().unwrap();
}

#[test]
fn realloc_moves_between_pools_and_the_raw_allocator() {
    let mut heap = Heap::new();
    let p = heap.malloc(100);
    unsafe { p.write_bytes(0xAB, 100) };
    let big = unsafe { heap.realloc(p, 10_000) };
    assert!(!owns(big));
    assert!(unsafe { std::slice::from_raw_parts(big, 100) }.iter().all(|&b| b == 0xAB));
    assert_eq!(heap.stats().raw_allocated_blocks, 1);
    assert_eq!(heap.stats().blocks_in_use(), 0);
    // A raw block stays with the raw allocator even when it shrinks.
    let shrunk = unsafe { heap.realloc(big, 10) };
    assert!(!owns(shrunk));
    assert!(unsafe { std::slice::from_raw_parts(shrunk, 10) }.iter().all(|&b| b == 0xAB));
    // realloc(p, 0) does not free and returns a usable pointer.
    let small = heap.malloc(64);
    let z = unsafe { heap.realloc(small, 0) };
    assert!(!z.is_null());
    // A failed realloc leaves the block alone.
    let keep = heap.malloc(64);
    unsafe { keep.write_bytes(0x5A, 64) };
    assert!(unsafe { heap.realloc(keep, usize::MAX) }.is_null());
    if !cfg!(miri) {
        // Reaches the C library, which says no; Miri cannot model that.
        assert!(unsafe { heap.realloc(keep, isize::MAX as usize) }.is_null());
    }
    assert!(unsafe { std::slice::from_raw_parts(keep, 64) }.iter().all(|&b| b == 0x5A));
    // realloc(null, n) is malloc(n).
    let fresh = unsafe { heap.realloc(std::ptr::null_mut(), 32) };
    assert!(owns(fresh));
    unsafe {
        heap.free(shrunk);
        heap.free(z);
        heap.free(keep);
        heap.free(fresh);
    }
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!((s.blocks_in_use(), s.raw_allocated_blocks), (0, 0));
}

#[test]
fn calloc_zeroes_recycled_blocks() {
    let mut heap = Heap::new();
    let p = heap.malloc(200);
    unsafe {
        p.write_bytes(0xFF, 200);
        heap.free(p);
    }
    let q = heap.calloc(10, 20);
    assert_eq!(q, p, "same class reuses the block");
    assert!(unsafe { std::slice::from_raw_parts(q, 200) }.iter().all(|&b| b == 0));
    let z = heap.calloc(0, 5);
    let z2 = heap.calloc(5, 0);
    assert!(!z.is_null() && !z2.is_null() && z != z2);
    unsafe {
        heap.free(q);
        heap.free(z);
        heap.free(z2);
    }
}

/// Allocates whole pools of one class until `n` arenas are completely used;
/// returns the blocks grouped by pool.
fn fill_arenas(heap: &mut Heap, n: usize, size: usize) -> Vec<Vec<*mut u8>> {
    let per_pool = num_blocks(size_class(size).unwrap());
    let start = heap.stats();
    assert_eq!(start.arenas_current, 0, "a fresh heap");
    let mut pools = Vec::new();
    // Arenas from the default allocator are aligned: every one holds
    // MAX_POOLS_IN_ARENA pools.
    for _ in 0..n * MAX_POOLS_IN_ARENA {
        pools.push((0..per_pool).map(|_| heap.malloc(size)).collect::<Vec<_>>());
    }
    let s = heap.stats();
    assert_eq!((s.arenas_current, s.unused_pools), (n, 0));
    pools
}

#[test]
fn one_spare_arena_is_kept_the_rest_go_back() {
    let mut heap = Heap::new();
    heap.set_purge_policy(PurgePolicy::Never);
    // (Two arenas under Miri, which takes milliseconds a call.)
    let n = common::full_or_miri(3, 2);
    let pools = fill_arenas(&mut heap, n, 512);
    let s = heap.stats();
    assert_eq!(s.arenas_current, n);
    assert_eq!(s.unused_pools, 0);
    heap.validate().unwrap();
    for pool in pools {
        for p in pool {
            unsafe { heap.free(p) };
        }
    }
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!(s.arenas_allocated_total, n);
    assert_eq!(s.arenas_current, 1, "one wholly free arena is kept as a spare");
    assert_eq!(s.arenas_reclaimed, n - 1);
    assert_eq!(s.arenas_highwater, n);
    // The spare serves the next request without a new arena.
    let p = heap.malloc(8);
    assert_eq!(heap.stats().arenas_allocated_total, n);
    unsafe { heap.free(p) };
}

#[test]
fn new_pools_come_from_the_most_used_arena() {
    let mut heap = Heap::new();
    // (Two arenas under Miri, which takes milliseconds a call: the third,
    // full and untouched, is not needed to tell the order of the first two.)
    let n = common::full_or_miri(3, 2);
    let mut pools = fill_arenas(&mut heap, n, 512);
    let arena_of = |p: *mut u8| p as usize & !ARENA_SIZE_MASK;
    let arenas: Vec<usize> = {
        let mut v: Vec<usize> = pools.iter().map(|b| arena_of(b[0])).collect();
        v.dedup();
        v
    };
    assert_eq!(arenas.len(), n);
    // Empty 10 pools of arena 0 and 5 of arena 1: arena 1 is now the more
    // used, so it must supply the next pools, then arena 0 (any further arena
    // stays full and untouched).
    let mut emptied = |arena: usize, k: usize, pools: &mut Vec<Vec<*mut u8>>| {
        let mut done = 0;
        pools.retain(|blocks| {
            if done < k && arena_of(blocks[0]) == arena {
                for &p in blocks {
                    unsafe { heap.free(p) };
                }
                done += 1;
                false
            } else {
                true
            }
        });
        heap.validate().unwrap();
    };
    emptied(arenas[0], 10, &mut pools);
    emptied(arenas[1], 5, &mut pools);
    let mut fresh = Vec::new();
    for i in 0..15 {
        let p = heap.malloc(512);
        let want = if i < 5 { arenas[1] } else { arenas[0] };
        assert_eq!(arena_of(p), want, "pool {i} came from the wrong arena");
        fresh.push(p);
        // One block per pool: fill the rest so each malloc above takes a pool.
        for _ in 1..num_blocks(size_class(512).unwrap()) {
            fresh.push(heap.malloc(512));
        }
    }
    heap.validate().unwrap();
    assert_eq!(heap.stats().arenas_current, n);
    for p in fresh.into_iter().chain(pools.into_iter().flatten()) {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
}

#[test]
fn statistics_account_for_every_arena_byte() {
    let mut heap = Heap::new();
    let mut live = Vec::new();
    let mut x: u64 = 0x2545F4914F6CDD1D;
    for i in 0..common::full_or_miri(20_000, 2_000) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = (x % 600) as usize;
        live.push(heap.malloc(n));
        if i % 3 == 0 {
            let j = (x >> 20) as usize % live.len();
            unsafe { heap.free(live.swap_remove(j)) };
        }
    }
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!(s.accounted_bytes(), s.arena_bytes);
    assert_eq!(s.arena_bytes, s.arenas_current * ARENA_SIZE);
    let small = live.iter().filter(|&&p| owns(p)).count();
    assert_eq!(s.blocks_in_use(), small);
    assert_eq!(s.allocated_blocks(), live.len() as isize);
    for c in &s.classes {
        assert_eq!(c.pools * num_blocks(size_class(c.size).unwrap()), c.blocks_in_use + c.avail_blocks);
    }
    for p in live {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
}

#[test]
fn arena_pictures_show_every_pool_state() {
    use pymalloc::{ArenaInfo, PoolState};
    let mut heap = Heap::new();
    let c = size_class(512).unwrap();
    let full: Vec<_> = (0..num_blocks(c)).map(|_| heap.malloc(512)).collect();
    let used = heap.malloc(16);
    let gone = heap.malloc(32);
    unsafe { heap.free(gone) };
    let mut seen: Vec<ArenaInfo> = Vec::new();
    heap.visit_arenas(|a| seen.push(*a));
    assert_eq!(seen.len(), 1);
    let a = &seen[0];
    assert_eq!(a.address, full[0] as usize & !ARENA_SIZE_MASK);
    assert_eq!(a.ntotalpools, MAX_POOLS_IN_ARENA);
    assert_eq!(a.nfreepools, MAX_POOLS_IN_ARENA - 2);
    assert_eq!(a.pools[0], PoolState::Full { class: c as u8 });
    // 16 bytes is class 0, or class 1 with the seed's 8-byte step.
    let c16 = size_class(16).unwrap() as u8;
    assert_eq!(a.pools[1], PoolState::Used { class: c16, blocks: 1 });
    assert_eq!(a.pools[2], PoolState::Empty);
    assert!(a.pools[3..].iter().all(|&p| p == PoolState::Untouched));
    assert_eq!(heap.arena_count(), 1);
    for p in full.into_iter().chain([used]) {
        unsafe { heap.free(p) };
    }
}

#[test]
fn a_retaining_heap_keeps_the_head_pool_that_empties() {
    use pymalloc::PoolState;
    let mut heap = Heap::new_retaining();
    assert!(heap.retains_empty_pools() && !Heap::new().retains_empty_pools());
    let c = size_class(64).unwrap();
    let p = heap.malloc(64);
    unsafe { heap.free(p) };
    // The block waits in the cache: free to statistics, still held by its
    // pool in the arena's picture.
    let s = heap.stats();
    assert_eq!((s.classes[c].pools, s.classes[c].blocks_in_use, s.classes[c].avail_blocks), (1, 0, num_blocks(c)));
    let mut pictures = Vec::new();
    heap.visit_arenas(|a| pictures.push(a.pools[0]));
    assert_eq!(pictures, [PoolState::Used { class: c as u8, blocks: 1 }]);
    heap.validate().unwrap();
    // Flushed, the pool stays on its list, empty, counted as a pool in use.
    heap.flush_cache();
    let s = heap.stats();
    assert_eq!((s.classes[c].pools, s.classes[c].blocks_in_use, s.classes[c].avail_blocks), (1, 0, num_blocks(c)));
    assert_eq!(s.accounted_bytes(), s.arena_bytes);
    heap.validate().unwrap();
    let mut pictures = Vec::new();
    heap.visit_arenas(|a| pictures.push(a.pools[0]));
    assert_eq!(pictures, [PoolState::Used { class: c as u8, blocks: 0 }]);
    // Allocating again takes the same block without a new pool.
    for _ in 0..1000 {
        let q = heap.malloc(64);
        assert_eq!(q, p);
        unsafe { heap.free(q) };
    }
    assert_eq!(heap.stats().arenas_allocated_total, 1);
    // Only the head pool is kept: fill two pools, free everything.
    let two: Vec<_> = (0..num_blocks(c) + 1).map(|_| heap.malloc(64)).collect();
    for q in two {
        unsafe { heap.free(q) };
    }
    heap.flush_cache();
    let s = heap.stats();
    assert_eq!(s.classes[c].pools, 1, "the second pool went back to its arena");
    heap.validate().unwrap();
    // purge gives the retained pool back, and with it the arena.
    assert!(heap.purge() > 0);
    let s = heap.stats();
    assert_eq!((s.classes[c].pools, s.arenas_current), (0, 0));
    heap.validate().unwrap();
}

/// A class that needs a pool when none with resident pages is free takes
/// the empty pool another class retains before a pool never used: a
/// program that moves from one size to the next holds the pools of its
/// largest phase, not of all of them (glibc-simple's 16-, 32- and 64-byte
/// phases held two pools more per thread).
#[test]
fn a_retained_pool_serves_another_class_before_a_pool_never_used() {
    use pymalloc::PoolState;
    let mut heap = Heap::new_retaining();
    let (small, large) = (size_class(16).unwrap(), size_class(64).unwrap());
    // The small class's phase: its head pool empties and stays on its list.
    let phase: Vec<_> = (0..100).map(|_| heap.malloc(16)).collect();
    let retained = pool_base(phase[0]);
    for p in phase {
        unsafe { heap.free(p) };
    }
    heap.flush_cache();
    assert_eq!(heap.stats().classes[small].pools, 1);
    heap.validate().unwrap();
    // The large class's phase: no free pool has resident pages, so its
    // first pool is the one the small class retained.
    let p = heap.malloc(64);
    assert_eq!(pool_base(p), retained);
    let s = heap.stats();
    assert_eq!((s.classes[small].pools, s.classes[large].pools, s.classes[large].blocks_in_use), (0, 1, 1));
    let mut pictures = Vec::new();
    heap.visit_arenas(|a| pictures.push(a.pools[..3].to_vec()));
    assert_eq!(
        pictures,
        [vec![PoolState::Used { class: large as u8, blocks: 1 }, PoolState::Untouched, PoolState::Untouched]]
    );
    heap.validate().unwrap();
    // The large class's block goes: its pool is retained in turn. The
    // small class, back, takes a pool never used, not that one: its own
    // pool went to another class once, so it takes its own now, and two
    // classes that take turns with one block each do not trade one pool
    // on every allocation.
    unsafe { heap.free(p) };
    heap.flush_cache();
    let q = heap.malloc(16);
    assert_ne!(pool_base(q), retained);
    let s = heap.stats();
    assert_eq!((s.classes[small].pools, s.classes[large].pools), (1, 1));
    heap.validate().unwrap();
    let pools = (pool_base(q), pool_base(p));
    unsafe { heap.free(q) };
    heap.flush_cache();
    for _ in 0..100 {
        let a = heap.malloc(16);
        unsafe { heap.free(a) };
        heap.flush_cache();
        let b = heap.malloc(64);
        unsafe { heap.free(b) };
        heap.flush_cache();
        assert_eq!((pool_base(a), pool_base(b)), pools);
    }
    heap.validate().unwrap();
}

/// Blocks of class `c` the heap holds in its cache: in use as far as their
/// pools are concerned, free as far as the statistics are.
fn cached_blocks(heap: &Heap, c: usize) -> usize {
    use pymalloc::PoolState;
    let mut in_pools = 0;
    heap.visit_arenas(|a| {
        for p in a.pools {
            match p {
                PoolState::Full { class } if class as usize == c => in_pools += num_blocks(c),
                PoolState::Used { class, blocks } if class as usize == c => in_pools += blocks as usize,
                _ => {}
            }
        }
    });
    in_pools - heap.stats().classes[c].blocks_in_use
}

#[test]
fn a_caching_heap_gives_a_freed_structure_back_as_cpython_does() {
    // Under Miri, which takes milliseconds a call: fewer arenas and the
    // largest class (half the blocks a pool).
    let (size, arenas) = common::full_or_miri((256, 5), (512, 3));
    let c = size_class(size).unwrap();
    for reverse in [false, true] {
        let mut heap = Heap::new_retaining();
        heap.set_purge_policy(PurgePolicy::Never);
        let n = arenas * MAX_POOLS_IN_ARENA * num_blocks(c);
        let mut blocks: Vec<_> = (0..n).map(|_| heap.malloc(size)).collect();
        assert!(heap.arena_count() >= arenas);
        if reverse {
            blocks.reverse();
        }
        for p in blocks {
            unsafe { heap.free(p) };
        }
        heap.validate().unwrap();
        // The first pool to empty turned the cache of the class off: nothing
        // is left cached, every arena but CPython's spare (and the one that
        // holds the retained head pool) went back.
        assert_eq!(cached_blocks(&heap, c), 0, "reverse={reverse}");
        assert!(heap.arena_count() <= 2, "{} arenas left (reverse={reverse})", heap.arena_count());
        let s = heap.stats();
        assert_eq!(s.classes[c].blocks_in_use, 0);
        assert!(s.classes[c].pools <= 1);
        // Allocating again turns the cache back on.
        let p = heap.malloc(size);
        unsafe { heap.free(p) };
        assert_eq!(cached_blocks(&heap, c), 1);
        assert_eq!(heap.malloc(size), p, "the cached block is handed out first");
        unsafe { heap.free(p) };
        heap.validate().unwrap();
    }
}

#[test]
fn a_full_cache_sends_the_next_free_to_its_pool_and_a_pool_emptying_closes_the_class() {
    let c = size_class(64).unwrap();
    let slots = pymalloc::CACHE_SLOTS;
    let per_pool = num_blocks(c);
    assert!(per_pool > slots + 10);
    let mut heap = Heap::new_retaining();
    heap.set_purge_policy(PurgePolicy::Never);
    // Two full pools and one block in a third (the head of the used list,
    // so neither of the first two is the retained head pool).
    let blocks: Vec<_> = (0..2 * per_pool + 1).map(|_| heap.malloc(64)).collect();
    let in_use = |heap: &Heap| heap.stats().classes[c].blocks_in_use;
    // The cache keeps the first `slots` freed, and the ten after go straight
    // to their pool (no flush of an older half).
    for &p in &blocks[..slots + 10] {
        unsafe { heap.free(p) };
    }
    assert_eq!(cached_blocks(&heap, c), slots);
    assert_eq!(in_use(&heap), 2 * per_pool + 1 - slots - 10);
    heap.validate().unwrap();
    // Allocating takes the cached blocks, most recent first, and the class
    // still caches: a free takes the slot back.
    assert_eq!(heap.malloc(64), blocks[slots - 1]);
    unsafe { heap.free(blocks[slots - 1]) };
    assert_eq!(cached_blocks(&heap, c), slots);
    assert_eq!(heap.malloc(64), blocks[slots - 1]);
    assert_eq!(cached_blocks(&heap, c), slots - 1);
    unsafe { heap.free(blocks[2 * per_pool]) };
    assert_eq!(cached_blocks(&heap, c), slots);
    heap.validate().unwrap();
    // A pool empties (the second, not the head): the cached blocks go back
    // too, and the class closes, so its later frees go to their pools.
    for &p in &blocks[per_pool..2 * per_pool] {
        unsafe { heap.free(p) };
    }
    assert_eq!(cached_blocks(&heap, c), 0, "the cached blocks went back when a pool emptied");
    assert_eq!(in_use(&heap), per_pool - slots - 10 + 1);
    unsafe { heap.free(blocks[slots - 1]) };
    assert_eq!(cached_blocks(&heap, c), 0, "the class is closed");
    assert_eq!(in_use(&heap), per_pool - slots - 10);
    heap.validate().unwrap();
    // An allocation that finds the cache empty opens the class again.
    let p = heap.malloc(64);
    unsafe { heap.free(p) };
    assert_eq!(cached_blocks(&heap, c), 1);
    assert_eq!(heap.malloc(64), p);
    unsafe { heap.free(p) };
    for &p in &blocks[slots + 10..per_pool] {
        unsafe { heap.free(p) };
    }
    heap.flush_cache();
    assert_eq!(in_use(&heap), 0);
    heap.validate().unwrap();
}

#[test]
fn cached_blocks_do_not_keep_their_pools_when_the_rest_is_freed() {
    let c = size_class(512).unwrap();
    let per_pool = num_blocks(c);
    let pools = pymalloc::CACHE_SLOTS;
    let mut heap = Heap::new_retaining();
    heap.set_purge_policy(PurgePolicy::Never);
    let blocks: Vec<_> = (0..pools * per_pool).map(|_| heap.malloc(512)).collect();
    assert_eq!(heap.stats().classes[c].pools, pools);
    // One block of each pool first: they all wait in the cache, each the
    // last block of its pool once the rest are freed.
    let (first, rest): (Vec<_>, Vec<_>) = blocks.iter().enumerate().partition(|(i, _)| i % per_pool == 0);
    for (_, &p) in first {
        unsafe { heap.free(p) };
    }
    assert_eq!(cached_blocks(&heap, c), pymalloc::CACHE_SLOTS);
    for (_, &p) in rest {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!(s.classes[c].blocks_in_use, 0);
    assert_eq!(cached_blocks(&heap, c), 0, "cached blocks went back with their pools' last blocks");
    assert!(s.classes[c].pools <= 1, "{} pools kept by cached blocks", s.classes[c].pools);
}

#[test]
fn a_caching_heap_empties_its_cache_before_taking_a_new_arena() {
    let mut heap = Heap::new_retaining();
    let a = size_class(512).unwrap();
    let per_pool = num_blocks(a);
    assert!(per_pool <= pymalloc::CACHE_SLOTS, "a pool's blocks fit in the cache");
    // Fill every pool of one arena with class `a`.
    let blocks: Vec<_> = (0..MAX_POOLS_IN_ARENA * per_pool).map(|_| heap.malloc(512)).collect();
    assert_eq!(heap.arena_count(), 1);
    let s = heap.stats();
    assert_eq!(s.unused_pools, 0, "the arena is full");
    // Free the blocks of the last pool: they all wait in the cache, which
    // keeps the pool full.
    let (keep, last) = blocks.split_at(blocks.len() - per_pool);
    for &p in last.iter().rev() {
        unsafe { heap.free(p) };
    }
    assert_eq!(cached_blocks(&heap, a), per_pool);
    assert_eq!(heap.stats().unused_pools, 0);
    // Another class needs a pool: the cache goes back first, the pool
    // empties, and the other class gets it instead of a new arena.
    let q = heap.malloc(16);
    assert!(!q.is_null());
    assert_eq!(heap.arena_count(), 1, "no new arena while cached blocks held a whole pool");
    assert_eq!(heap.stats().arenas_allocated_total, 1);
    assert_eq!(cached_blocks(&heap, a), 0);
    assert_eq!(pool_base(q), pool_base(last[0]), "the emptied pool was reused");
    heap.validate().unwrap();
    unsafe { heap.free(q) };
    for &p in keep {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
}
