//! The GIL mode's allocator (`MemAllocatorEx::pymalloc_gil`), whose malloc
//! and free have fast paths of their own (no block cache; virgin blocks
//! carved inline; a free that neither empties nor un-fills a pool done
//! inline), walked through every pool transition and checked against the
//! heap's invariants and statistics. And the purge-policy names the launcher
//! reads from `PYMALLOC_PURGE`.

mod common;

use std::collections::HashSet;
use std::ffi::c_void;

use pymalloc::geometry::{num_blocks, size_class, MAX_POOLS_IN_ARENA};
use pymalloc::{GilHeap, MemAllocatorEx, PurgePolicy};

/// This file's only user: the one test below touches it.
static HEAP: GilHeap = GilHeap::new();

fn live_blocks(h: &GilHeap) -> usize {
    h.heap().stats().blocks_in_use()
}

#[test]
fn gil_allocator_through_full_and_empty_pools() {
    // SAFETY: only this test uses HEAP, from one thread.
    let a = unsafe { MemAllocatorEx::pymalloc_gil(&HEAP) };
    // CPython's rule: free arenas go back at once (but a spare).
    HEAP.set_purge_policy(PurgePolicy::Never);
    let malloc = |n: usize| unsafe { (a.malloc)(a.ctx, n).cast::<u8>() };
    let free = |p: *mut u8| unsafe { (a.free)(a.ctx, p.cast::<c_void>()) };
    // Under Miri the largest class (31 blocks a pool) and a few pools;
    // natively 340 blocks a pool and three arenas' worth.
    let size: usize = common::full_or_miri(48, 512);
    let c = size_class(size).unwrap();
    let per_pool = num_blocks(c);
    let pools = common::full_or_miri(3 * MAX_POOLS_IN_ARENA, 3);
    let n = pools * per_pool;

    // Fill: every block carved from virgin pools, pools filling up.
    let mut blocks: Vec<*mut u8> = (0..n).map(|_| malloc(size)).collect();
    let mut seen = HashSet::new();
    for (i, &p) in blocks.iter().enumerate() {
        assert!(!p.is_null());
        assert_eq!(p as usize % 16, 0, "misaligned block");
        assert!(seen.insert(p as usize), "block handed out twice");
        // SAFETY: a live block of `size` bytes.
        unsafe { p.write_bytes(i as u8, size) };
    }
    HEAP.heap().validate().unwrap();
    let s = HEAP.heap().stats();
    assert_eq!(s.classes[c].blocks_in_use, n);
    assert_eq!(s.classes[c].avail_blocks, 0, "every pool is full");
    if !cfg!(miri) {
        assert!(s.arenas_current >= 3);
    }

    // Free every other block: each pool leaves the full state once (the
    // full path), then frees inline.
    for p in blocks.iter_mut().step_by(2) {
        free(*p);
        *p = std::ptr::null_mut();
    }
    HEAP.heap().validate().unwrap();
    assert_eq!(live_blocks(&HEAP), n - n.div_ceil(2));
    for (i, &p) in blocks.iter().enumerate().filter(|(_, p)| !p.is_null()) {
        // SAFETY: a live block of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, size) };
        assert!(bytes.iter().all(|&b| b == i as u8), "a live block changed");
    }

    // Allocate the holes again: served from the free lists, no new arena.
    let arenas = HEAP.heap().stats().arenas_current;
    for p in blocks.iter_mut().step_by(2) {
        *p = malloc(size);
        assert!(!p.is_null());
    }
    HEAP.heap().validate().unwrap();
    assert_eq!(live_blocks(&HEAP), n);
    assert_eq!(HEAP.heap().stats().arenas_current, arenas);
    let distinct: HashSet<usize> = blocks.iter().map(|&p| p as usize).collect();
    assert_eq!(distinct.len(), n, "a block handed out twice");

    // Free everything: pools empty, arenas go back (one spare may stay).
    let reclaimed = HEAP.heap().stats().arenas_reclaimed;
    for &p in &blocks {
        free(p);
    }
    HEAP.heap().validate().unwrap();
    let s = HEAP.heap().stats();
    assert_eq!(s.blocks_in_use(), 0);
    assert!(s.arenas_current <= 1, "{} arenas kept", s.arenas_current);
    if !cfg!(miri) {
        assert!(s.arenas_reclaimed >= reclaimed + 2);
    }

    // Null and requests above the threshold take the full path.
    free(std::ptr::null_mut());
    let big = malloc(10_000);
    assert!(!big.is_null() && !pymalloc::owns(big));
    free(big);
    assert_eq!(HEAP.heap().stats().raw_allocated_blocks, 0);
}

#[test]
fn purge_policy_names() {
    assert_eq!(PurgePolicy::parse(""), Ok(PurgePolicy::DEFAULT));
    assert_eq!(PurgePolicy::parse("default"), Ok(PurgePolicy::DEFAULT));
    assert_eq!(PurgePolicy::parse("decay"), Ok(PurgePolicy::DEFAULT));
    assert_eq!(PurgePolicy::DEFAULT, PurgePolicy::Decay { ms: 1000 });
    assert_eq!(PurgePolicy::parse("decay:0"), Ok(PurgePolicy::Decay { ms: 0 }));
    assert_eq!(PurgePolicy::parse("threshold"), Ok(PurgePolicy::THRESHOLD));
    assert_eq!(PurgePolicy::parse("never"), Ok(PurgePolicy::Never));
    assert_eq!(PurgePolicy::parse("immediate"), Ok(PurgePolicy::Immediate));
    assert_eq!(PurgePolicy::parse("threshold:128:8"), Ok(PurgePolicy::Threshold { min_pools: 128, divisor: 8 }));
    for p in [PurgePolicy::DEFAULT, PurgePolicy::Never, PurgePolicy::Immediate, PurgePolicy::THRESHOLD] {
        assert_eq!(PurgePolicy::parse(&p.name()), Ok(p));
    }
    for bad in ["Never", "decay:", "decay:-1", "decay:1s", "threshold:1", "threshold:1:0", "threshold:x:2", "sometimes"]
    {
        let e = PurgePolicy::parse(bad).unwrap_err();
        assert!(e.contains(bad) && e.contains(PurgePolicy::NAMES), "{e}");
    }
}
