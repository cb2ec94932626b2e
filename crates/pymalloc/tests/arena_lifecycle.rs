//! Arenas come and go: fill several, free everything, and see them
//! reclaimed in the statistics and gone from the process's memory mappings.
//! (One test in this binary, so no other test maps memory meanwhile.)

use pymalloc::geometry::{num_blocks, size_class, ARENA_SIZE, ARENA_SIZE_MASK};
use pymalloc::{owns, Heap};

/// The address ranges of /proc/self/maps.
fn mappings() -> Vec<(usize, usize)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .map(|l| {
            let range = l.split_whitespace().next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            )
        })
        .collect()
}

fn mapped(maps: &[(usize, usize)], addr: usize) -> bool {
    maps.iter().any(|&(a, b)| a <= addr && addr < b)
}

#[test]
#[cfg_attr(miri, ignore = "reads /proc/self/maps; Miri arenas are not mappings")]
fn arenas_are_reclaimed_in_stats_and_mappings() {
    let mut heap = Heap::new();
    let per_pool = num_blocks(size_class(256).unwrap());
    let mut blocks = Vec::new();
    while heap.stats().arenas_current < 5 {
        for _ in 0..per_pool {
            blocks.push(heap.malloc(256));
        }
    }
    let mut arenas: Vec<usize> = blocks
        .iter()
        .map(|&p| p as usize & !ARENA_SIZE_MASK)
        .collect();
    arenas.sort();
    arenas.dedup();
    assert_eq!(arenas.len(), 5);
    let maps = mappings();
    for &a in &arenas {
        assert!(
            mapped(&maps, a) && mapped(&maps, a + ARENA_SIZE - 1),
            "live arena {a:#x} not mapped"
        );
    }
    let s = heap.stats();
    assert_eq!(
        (s.arenas_current, s.arenas_reclaimed, s.arenas_highwater),
        (5, 0, 5)
    );

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
    let kept: Vec<_> = arenas
        .iter()
        .copied()
        .filter(|&a| owns(a as *const u8))
        .collect();
    assert_eq!(kept.len(), 1, "exactly one spare arena");
    assert!(mapped(&maps, kept[0]), "the spare is still mapped");
    for &a in arenas.iter().filter(|&&a| a != kept[0]) {
        assert!(!mapped(&maps, a), "reclaimed arena {a:#x} is still mapped");
        assert!(
            !mapped(&maps, a + ARENA_SIZE - 1),
            "reclaimed arena {a:#x} is still mapped"
        );
    }

    // Dropping the heap releases the spare too.
    drop(heap);
    assert!(!mapped(&mappings(), kept[0]));
    assert!(!owns(kept[0] as *const u8));
}
