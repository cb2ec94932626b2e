//! The decay policy: memory freed stays while it is reused, and what stays
//! unused for a period goes back to the OS. Sweeps run on the tests' own
//! clock (`Heap::decay_at`), far ahead of the real one, so that the frees
//! (which read the real clock) never find a sweep due.

mod common;

use pymalloc::geometry::{num_blocks, size_class, ARENA_SIZE, POOL_SIZE};
use pymalloc::{Heap, PoolState, PurgePolicy};

const T: u64 = 1 << 40;
const PERIOD: u32 = 1000;

fn decaying_heap(retaining: bool) -> Heap {
    let mut heap = if retaining { Heap::new_retaining() } else { Heap::new() };
    heap.set_purge_policy(PurgePolicy::Decay { ms: PERIOD });
    assert_eq!(heap.decay_at(T), 0);
    heap
}

/// Pools by state: (empty with pages, decommitted).
fn empty_pools(heap: &Heap) -> (usize, usize) {
    let (mut empty, mut out) = (0, 0);
    heap.visit_arenas(|a| {
        for p in &a.pools[..a.ntotalpools] {
            match p {
                PoolState::Empty => empty += 1,
                PoolState::Decommitted => out += 1,
                _ => {}
            }
        }
    });
    (empty, out)
}

/// Minor page faults of this thread so far.
fn minor_faults() -> i64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    u.ru_minflt
}

#[test]
fn pools_unused_for_a_period_go_back_and_reused_ones_stay() {
    let mut heap = decaying_heap(false);
    let per = num_blocks(size_class(256).unwrap());
    let pools = common::full_or_miri(200, 24);
    let blocks: Vec<_> = (0..pools * per).map(|_| heap.malloc(256)).collect();
    // Keep one block in every fourth pool.
    let mut keep = Vec::new();
    for (i, p) in blocks.into_iter().enumerate() {
        if i % (per * 4) == 0 {
            unsafe { p.write_bytes(0xAB, 256) };
            keep.push(p);
        } else {
            unsafe { heap.free(p) };
        }
    }
    heap.validate().unwrap();
    let (empty, out) = empty_pools(&heap);
    assert_eq!(out, 0, "nothing goes back before a sweep");
    assert!(empty >= pools / 2, "{empty} empty pools");

    // The first sweep marks; reuse some pools before the next (the blocks
    // fill the survivors' pools first, then take empty ones).
    assert_eq!(heap.decay_at(T + u64::from(PERIOD)), 0);
    let again: Vec<_> = (0..(keep.len() + 10) * per).map(|_| heap.malloc(256)).collect();
    heap.validate().unwrap();
    let (unused, _) = empty_pools(&heap);
    assert!(unused + 10 <= empty, "{unused} of {empty} empty pools left");
    assert_eq!(heap.decay_at(T + u64::from(PERIOD) * 2 - 1), 0, "no sweep before the period ends");
    let given = heap.decay_at(T + u64::from(PERIOD) * 2);
    heap.validate().unwrap();
    assert_eq!(given, unused * POOL_SIZE, "exactly the pools left unused go back");
    assert_eq!(empty_pools(&heap), (0, unused));
    assert_eq!(heap.stats().decommitted_pools, unused);
    assert!(!heap.holds_free_memory());
    for &p in &keep {
        assert!(unsafe { std::slice::from_raw_parts(p, 256) }.iter().all(|&b| b == 0xAB));
    }

    // Decommitted pools serve again, zeroed and set up afresh.
    let more: Vec<_> = (0..unused * per).map(|_| heap.malloc(256)).collect();
    heap.validate().unwrap();
    for p in keep.into_iter().chain(again).chain(more) {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
    assert_eq!(heap.stats().blocks_in_use(), 0);
}

#[test]
#[cfg_attr(miri, ignore = "counts page faults")]
fn freeing_and_allocating_again_within_the_period_faults_nothing_in() {
    // Rounds of building 4 MiB of blocks and freeing them all in a shuffled
    // order, with a sweep (within the period) between rounds.
    let per_round = 4 * ARENA_SIZE / 256;
    // Returns the faults of the first round, of the later ones, of the last,
    // and the arenas made.
    let run = |policy: PurgePolicy| -> (i64, i64, i64, usize) {
        let mut heap = decaying_heap(true);
        heap.set_purge_policy(policy);
        let mut faults = Vec::new();
        // One vector for every round, faulted in first: only the heap's
        // pages are counted.
        let mut blocks: Vec<*mut u8> = vec![std::ptr::null_mut(); per_round];
        blocks.clear();
        for round in 0..4u64 {
            let before = minor_faults();
            blocks.extend((0..per_round).map(|_| heap.malloc(200)));
            for &p in &blocks {
                unsafe { p.write_bytes(1, 200) };
            }
            // A fixed shuffle.
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            for i in (1..blocks.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                blocks.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for p in blocks.drain(..) {
                unsafe { heap.free(p) };
            }
            heap.decay_at(T + 1 + round);
            faults.push(minor_faults() - before);
        }
        heap.validate().unwrap();
        (faults[0], faults[1..].iter().sum::<i64>(), faults[3], heap.stats().arenas_allocated_total)
    };
    let (first, later, last, arenas) = run(PurgePolicy::Decay { ms: PERIOD });
    // A round's blocks span this many pages (4 MiB in the default geometry,
    // 1 MiB in the older one).
    let pages = (per_round * 200 / 4096) as i64;
    assert!(first > pages / 2, "the first round faults its pages in ({first} of {pages})");
    // The second round may carve pools the first left untouched (the
    // arenas come back in another order); after that nothing is new.
    assert!(later * 4 < first, "later rounds fault {later} pages, the first {first}");
    assert!(last * 100 < first, "the last round faults {last} pages, the first {first}");
    assert!(arenas <= 5, "{arenas} arenas made: the rounds reuse them");

    // CPython's rule gives the arenas back after each round and faults
    // them in again.
    let (first, later, _, _) = run(PurgePolicy::Never);
    assert!(later > first, "CPython's rule: later rounds fault {later}, the first {first}");
}

#[test]
fn a_free_arena_kept_is_the_last_used_and_reused_before_a_new_one() {
    let mut heap = decaying_heap(false);
    let per = num_blocks(size_class(512).unwrap());
    // Under Miri, which takes milliseconds a call: two arenas, and one
    // arena's worth again (a new arena taken first would still show).
    let (arenas, again) = common::full_or_miri((3, 3), (2, 1));
    let n = arenas * ARENA_SIZE / POOL_SIZE * per;
    let blocks: Vec<_> = (0..n).map(|_| heap.malloc(512)).collect();
    let made = heap.stats().arenas_allocated_total;
    assert!(made >= arenas);
    for p in blocks {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
    assert_eq!(heap.stats().arenas_current, made, "free arenas are kept for the period");
    let blocks: Vec<_> = (0..again * ARENA_SIZE / POOL_SIZE * per).map(|_| heap.malloc(512)).collect();
    assert_eq!(heap.stats().arenas_allocated_total, made, "kept arenas serve before new ones");
    heap.validate().unwrap();
    for p in blocks {
        unsafe { heap.free(p) };
    }
    // Two sweeps a period apart give them all back.
    heap.decay_at(T + u64::from(PERIOD));
    assert_eq!(heap.decay_at(T + 2 * u64::from(PERIOD)), made * ARENA_SIZE);
    assert_eq!(heap.stats().arenas_current, 0);
    heap.validate().unwrap();
}

#[test]
fn other_policies_never_sweep() {
    for p in [PurgePolicy::Never, PurgePolicy::Immediate, PurgePolicy::THRESHOLD] {
        let mut heap = Heap::new();
        heap.set_purge_policy(p);
        let blocks: Vec<_> = (0..1000).map(|_| heap.malloc(64)).collect();
        for b in blocks.into_iter().skip(1) {
            unsafe { heap.free(b) };
        }
        assert_eq!(heap.decay_period_ms(), None);
        assert_eq!(heap.decay_at(T), 0);
        assert_eq!(heap.decay_at(T * 2), 0);
    }
}

/// (untouched, empty with pages) pools of each live arena, in table order.
fn pool_states(heap: &Heap) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    heap.visit_arenas(|a| {
        let pools = &a.pools[..a.ntotalpools];
        let count = |s: PoolState| pools.iter().filter(|&&p| p == s).count();
        v.push((count(PoolState::Untouched), count(PoolState::Empty)));
    });
    v
}

/// CPython takes every new pool from the usable arena with the fewest free
/// pools, carving its never-used ones while other arenas hold empty pools
/// with their pages. Kept for reuse under the decay policy, those stayed
/// resident beside the pages carved (a higher peak for nothing). A pool
/// whose pages are resident now serves first, wherever it lies.
#[test]
fn an_empty_pool_with_its_pages_serves_before_a_pool_is_carved() {
    let mut heap = decaying_heap(false);
    let per = num_blocks(size_class(512).unwrap());
    // Whole pools of 512-byte blocks until a second arena has two pools
    // left to carve.
    let mut pools: Vec<Vec<*mut u8>> = Vec::new();
    loop {
        pools.push((0..per).map(|_| heap.malloc(512)).collect());
        let states = pool_states(&heap);
        if states.len() == 2 && states.iter().any(|&(untouched, _)| untouched == 2) {
            break;
        }
        assert!(states.len() <= 2 && pools.len() < 200, "{states:?}");
    }
    let second = pool_states(&heap).iter().position(|&(untouched, _)| untouched == 2).unwrap();
    // Empty ten pools of the first arena.
    for blocks in pools.drain(..10) {
        for p in blocks {
            unsafe { heap.free(p) };
        }
    }
    heap.validate().unwrap();
    let before = pool_states(&heap);
    assert!(before[1 - second].1 >= 8, "{before:?}");
    // Two pools' worth of blocks: at least one new pool is taken.
    let more: Vec<_> = (0..2 * per).map(|_| heap.malloc(512)).collect();
    heap.validate().unwrap();
    let after = pool_states(&heap);
    assert_eq!(after[second].0, 2, "a pool was carved beside empty ones: {before:?} -> {after:?}");
    assert!(after[1 - second].1 < before[1 - second].1, "{before:?} -> {after:?}");
    for p in more.into_iter().chain(pools.into_iter().flatten()) {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
}

/// Pools taken from arenas other than the first move back in the usable
/// list, whose order and fingers `validate` checks: random whole pools
/// allocated and freed over several arenas, with sweeps that decommit
/// pools and give arenas back, checked after every step.
#[test]
fn taking_empty_pools_from_any_arena_keeps_the_usable_order() {
    let mut heap = decaying_heap(false);
    let per = num_blocks(size_class(512).unwrap());
    let (steps, most) = common::full_or_miri((8000, 400), (40, 16));
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    let mut pools: Vec<Vec<*mut u8>> = Vec::new();
    let mut now = T;
    let mut taken_elsewhere = 0;
    for step in 0..steps {
        match next(10) {
            0..=5 if pools.len() < most => {
                let head_has_empty = {
                    let s = pool_states(&heap);
                    s.iter().any(|&(_, empty)| empty > 0)
                };
                let before = pool_states(&heap).iter().map(|&(u, _)| u).sum::<usize>();
                pools.push((0..per).map(|_| heap.malloc(512)).collect());
                let after = pool_states(&heap).iter().map(|&(u, _)| u).sum::<usize>();
                if head_has_empty && after == before {
                    taken_elsewhere += 1;
                }
            }
            0..=8 if !pools.is_empty() => {
                let i = next(pools.len());
                for p in pools.swap_remove(i) {
                    unsafe { heap.free(p) };
                }
            }
            _ => {
                now += u64::from(PERIOD);
                heap.decay_at(now);
            }
        }
        if let Err(e) = heap.validate() {
            panic!("step {step}: {e:?}");
        }
    }
    assert!(taken_elsewhere > 0, "no empty pool was reused");
    for p in pools.into_iter().flatten() {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
}

/// Past the usable arenas `take_pool` looks at from the first (64), a
/// wholly free arena kept at the end of the list still serves before a
/// decommitted pool is taken back.
#[test]
#[cfg_attr(miri, ignore = "67 MiB of arenas")]
fn a_kept_free_arena_serves_behind_many_arenas_without_resident_free_pools() {
    let mut heap = decaying_heap(false);
    let per = num_blocks(size_class(512).unwrap());
    let mut pools: Vec<Vec<*mut u8>> = Vec::new();
    while heap.stats().arenas_current < 68 {
        pools.push((0..per).map(|_| heap.malloc(512)).collect());
    }
    // The last pool opened the 68th arena: give it back at once.
    for p in pools.pop().unwrap() {
        unsafe { heap.free(p) };
    }
    let per_arena = ARENA_SIZE / POOL_SIZE;
    // One pool freed in each of the first 66 arenas, then two sweeps: those
    // pools go back to the OS (decommitted, not resident).
    let mut freed = 0;
    for i in (0..66).map(|a| a * per_arena) {
        if i < pools.len() {
            for p in std::mem::take(&mut pools[i]) {
                unsafe { heap.free(p) };
            }
            freed += 1;
        }
    }
    heap.decay_at(T + u64::from(PERIOD));
    heap.decay_at(T + 2 * u64::from(PERIOD));
    heap.validate().unwrap();
    let (empty, out) = empty_pools(&heap);
    assert_eq!((empty, out), (0, freed), "the freed pools went back");
    // The 67th arena's pools, all freed: a wholly free arena with its
    // pages, kept (no sweep runs again), at the end of the usable list.
    let last: Vec<Vec<*mut u8>> = pools.drain(66 * per_arena..).collect();
    for p in last.into_iter().flatten() {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
    let (kept, _) = empty_pools(&heap);
    assert!(kept > 0, "no kept free arena");
    let more: Vec<_> = (0..2 * per).map(|_| heap.malloc(512)).collect();
    heap.validate().unwrap();
    let (empty, out) = empty_pools(&heap);
    assert_eq!(out, freed, "a decommitted pool was taken back before the kept arena's");
    assert!(empty < kept, "{empty} of {kept}");
    for p in more.into_iter().chain(pools.into_iter().flatten()) {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
}

/// Empties all but the first of `pools` pools of 256-byte blocks; returns
/// the block kept.
fn empty_all_but_one(heap: &mut Heap, pools: usize) -> *mut u8 {
    let per = num_blocks(size_class(256).unwrap());
    let blocks: Vec<_> = (0..pools * per).map(|_| heap.malloc(256)).collect();
    for &p in &blocks[1..] {
        unsafe { heap.free(p) };
    }
    blocks[0]
}

/// pyperformance's pyflate freed a phase's objects and built a 22 MB
/// buffer 40 ms later: the pools the decay kept for reuse sat under the
/// buffer and the process peaked 2.4 MiB above stock CPython. A request of
/// an arena's size or more to the fallback now gives them back first,
/// at most once per quarter period; a smaller request, or another
/// policy, keeps them.
#[test]
fn a_request_of_an_arena_or_more_gives_back_what_the_decay_keeps() {
    let pools = common::full_or_miri(40, 6);
    // A period so long that the second request below falls inside the
    // first's quarter, however slow the machine.
    let mut heap = Heap::new();
    heap.set_purge_policy(PurgePolicy::Decay { ms: u32::MAX });
    let kept = empty_all_but_one(&mut heap, pools);
    let (empty, out) = empty_pools(&heap);
    assert!(empty >= pools - 1, "{empty} empty pools");
    assert_eq!(out, 0);

    let below = heap.malloc(ARENA_SIZE - 1);
    assert_eq!(empty_pools(&heap), (empty, 0), "a request below an arena's size keeps them");
    let big = heap.malloc(ARENA_SIZE);
    assert!(!big.is_null());
    assert_eq!(empty_pools(&heap).0, 0, "a request of an arena's size gives every empty pool back");
    heap.validate().unwrap();

    // Within a quarter period, pools emptied since stay for reuse.
    let kept2 = empty_all_but_one(&mut heap, pools);
    let (again, _) = empty_pools(&heap);
    assert!(again >= pools - 1, "{again} empty pools");
    let big2 = unsafe { heap.realloc(big, 2 * ARENA_SIZE) };
    assert!(!big2.is_null());
    assert_eq!(empty_pools(&heap).0, again, "at most once per quarter period");
    heap.validate().unwrap();
    for p in [kept, kept2, below, big2] {
        unsafe { heap.free(p) };
    }

    // A fresh heap: realloc and calloc of the fallback's blocks give back
    // too.
    for grow in [true, false] {
        let mut heap = Heap::new();
        heap.set_purge_policy(PurgePolicy::Decay { ms: u32::MAX });
        let small = heap.malloc(4096);
        let kept = empty_all_but_one(&mut heap, pools);
        assert!(empty_pools(&heap).0 >= pools - 1);
        let big = if grow { unsafe { heap.realloc(small, ARENA_SIZE) } } else { heap.calloc(ARENA_SIZE, 1) };
        assert!(!big.is_null());
        assert_eq!(empty_pools(&heap).0, 0, "grow by realloc: {grow}");
        heap.validate().unwrap();
        unsafe {
            heap.free(big);
            heap.free(kept);
            if !grow {
                heap.free(small);
            }
        }
    }

    for p in [PurgePolicy::Never, PurgePolicy::THRESHOLD] {
        let mut heap = Heap::new();
        heap.set_purge_policy(p);
        let kept = empty_all_but_one(&mut heap, pools);
        let (empty, _) = empty_pools(&heap);
        let big = heap.malloc(2 * ARENA_SIZE);
        assert_eq!(empty_pools(&heap).0, empty, "{p:?} keeps its empty pools");
        unsafe {
            heap.free(big);
            heap.free(kept);
        }
    }
}
