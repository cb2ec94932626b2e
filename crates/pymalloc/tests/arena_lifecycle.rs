//! Arenas come and go: fill several, free everything, and see them
//! reclaimed in the statistics and in the process's memory mappings: a
//! reclaimed arena is unmapped, or (arenas of the reserved region) mapped
//! without access and holding no resident page.
//! (One test in this binary, so no other test maps memory meanwhile.)

mod common;

use common::mappings;
use pymalloc::geometry::{num_blocks, size_class, ARENA_SIZE, ARENA_SIZE_MASK};
use pymalloc::{owns, Heap, PurgePolicy};

/// True if `addr` is mapped readable and writable.
fn mapped(maps: &[(usize, usize, String)], addr: usize) -> bool {
    maps.iter().any(|(a, b, perms)| *a <= addr && addr < *b && perms.starts_with("rw"))
}

/// Resident pages of `addr..addr+len` (mincore; an unmapped range has none).
fn resident_pages(addr: usize, len: usize) -> usize {
    let page = 4096;
    let mut vec = vec![0u8; len.div_ceil(page)];
    let rc = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return 0; // ENOMEM: not mapped at all
    }
    vec.iter().filter(|&&b| b & 1 != 0).count()
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc/self/maps; Miri arenas are not mappings")]
fn arenas_are_reclaimed_in_stats_and_mappings() {
    decay_keeps_free_arenas_then_gives_them_back();
    cpython_gives_free_arenas_back_at_once();
    a_dropped_heap_releases_arenas_with_live_blocks();
}

/// Fills five arenas of `heap`; returns the blocks and the arena bases.
fn fill_five_arenas(heap: &mut Heap) -> (Vec<*mut u8>, Vec<usize>) {
    let per_pool = num_blocks(size_class(256).unwrap());
    let mut blocks = Vec::new();
    while heap.stats().arenas_current < 5 {
        for _ in 0..per_pool {
            blocks.push(heap.malloc(256));
        }
    }
    let mut arenas: Vec<usize> = blocks.iter().map(|&p| p as usize & !ARENA_SIZE_MASK).collect();
    arenas.sort();
    arenas.dedup();
    assert_eq!(arenas.len(), 5);
    let maps = mappings();
    for &a in &arenas {
        assert!(mapped(&maps, a) && mapped(&maps, a + ARENA_SIZE - 1), "live arena {a:#x} not mapped");
        assert!(resident_pages(a, ARENA_SIZE) > 0, "a filled arena has pages");
    }
    let s = heap.stats();
    assert_eq!((s.arenas_current, s.arenas_reclaimed, s.arenas_highwater), (5, 0, 5));
    (blocks, arenas)
}

/// The decay policy keeps wholly free arenas, resident, for reuse; the
/// first sweep marks them, the next one a period later gives them all back.
fn decay_keeps_free_arenas_then_gives_them_back() {
    let mut heap = Heap::new();
    heap.set_purge_policy(PurgePolicy::Decay { ms: 1000 });
    let (blocks, arenas) = fill_five_arenas(&mut heap);
    // A sweep far in the future: the frees below (which read the real
    // clock) find none due.
    let t = 1u64 << 40;
    assert_eq!(heap.decay_at(t), 0, "nothing free to mark yet");
    for p in blocks {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
    assert_eq!(heap.stats().arenas_current, 5, "free arenas are kept");
    assert!(heap.holds_free_memory());
    assert!(arenas.iter().all(|&a| resident_pages(a, ARENA_SIZE) > 0), "kept arenas stay resident");

    // Reuse before the period ends takes a kept arena and makes no new one.
    let p = heap.malloc(256);
    assert!(arenas.contains(&(p as usize & !ARENA_SIZE_MASK)));
    assert_eq!(heap.stats().arenas_allocated_total, 5);
    unsafe { heap.free(p) };

    assert_eq!(heap.decay_at(t + 999), 0, "no sweep before the period ends");
    assert_eq!(heap.decay_at(t + 1000), 0, "the first sweep after the frees only marks");
    heap.validate().unwrap();
    assert_eq!(heap.decay_at(t + 1999), 0, "no sweep before the period ends");
    assert_eq!(heap.decay_at(t + 2000), 5 * ARENA_SIZE, "every arena unused for a period goes back");
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!((s.arenas_current, s.arenas_reclaimed), (0, 5));
    assert!(!heap.holds_free_memory());
    let maps = mappings();
    for &a in &arenas {
        assert!(!mapped(&maps, a), "decayed arena {a:#x} is still accessible");
        assert_eq!(resident_pages(a, ARENA_SIZE), 0, "decayed arena {a:#x} still holds pages");
    }
}

/// CPython's rule: an arena goes back as soon as all its pools are free,
/// except the last usable one, kept as a spare.
fn cpython_gives_free_arenas_back_at_once() {
    let mut heap = Heap::new();
    heap.set_purge_policy(PurgePolicy::Never);
    let (mut blocks, arenas) = fill_five_arenas(&mut heap);
    for p in blocks.drain(..) {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!(s.arenas_allocated_total, 5);
    assert_eq!(s.arenas_current, 1);
    assert_eq!(s.arenas_reclaimed, 4);
    assert_eq!(s.arenas_highwater, 5);
    assert_eq!(s.blocks_in_use(), 0);

    let maps = mappings();
    let kept: Vec<_> = arenas.iter().copied().filter(|&a| owns(a as *const u8)).collect();
    assert_eq!(kept.len(), 1, "exactly one spare arena");
    assert!(mapped(&maps, kept[0]), "the spare is still mapped");
    for &a in arenas.iter().filter(|&&a| a != kept[0]) {
        assert!(!mapped(&maps, a), "reclaimed arena {a:#x} is still accessible");
        assert!(!mapped(&maps, a + ARENA_SIZE - 1), "reclaimed arena {a:#x} is still accessible");
        assert_eq!(resident_pages(a, ARENA_SIZE), 0, "reclaimed arena {a:#x} still holds pages");
    }

    // Dropping the heap releases the spare too.
    drop(heap);
    assert!(!mapped(&mappings(), kept[0]));
    assert_eq!(resident_pages(kept[0], ARENA_SIZE), 0);
    assert!(!owns(kept[0] as *const u8));
}

/// Whether the reserved regions exist: a block above 512 bytes of the
/// thread heaps lies in the segment region, the arena region's other half.
fn region_reserved() -> bool {
    use pymalloc::every_size::{self, EverySize};
    let m = pymalloc::thread::malloc_with::<EverySize<pymalloc::LibcFallback>>(2000);
    let reserved = every_size::owns(m);
    // SAFETY: m is a live block from malloc_with of the same fallback.
    unsafe { pymalloc::thread::free_with::<EverySize<pymalloc::LibcFallback>>(m) };
    reserved
}

/// A heap dropped while blocks are still live unmaps their arena too.
/// (Here, not beside the other heap tests: in a binary whose tests run on
/// several threads, another test's arena can be mapped at the freed address
/// between the drop and the check.)
fn a_dropped_heap_releases_arenas_with_live_blocks() {
    let mut heap = Heap::new();
    let p = heap.malloc(64);
    let arena = p as usize & !ARENA_SIZE_MASK;
    assert!(owns(p) && mapped(&mappings(), arena));
    // An arena of the reserved region is known by the region's table of
    // live slots, not by the radix map: a process whose arenas are all in
    // the region grows none of the map's nodes. Without the region (a small
    // RLIMIT_AS), the map holds every arena.
    if region_reserved() {
        assert!(!pymalloc::radix::ARENA_MAP.contains(p), "a region arena marked in the radix map");
        assert_eq!(pymalloc::radix::ARENA_MAP.usage().mid_nodes, 0, "the radix map grew a node");
    } else {
        assert!(pymalloc::radix::ARENA_MAP.contains(p), "an arena outside the region not in the radix map");
    }
    assert!(owns(p.wrapping_add(ARENA_SIZE - 65)) && !owns(arena.wrapping_add(ARENA_SIZE) as *const u8));
    drop(heap); // with the block still live
    assert!(!owns(p));
    assert!(!mapped(&mappings(), arena));
    assert_eq!(resident_pages(arena, ARENA_SIZE), 0);
}
