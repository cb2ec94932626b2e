//! Blocks above 512 bytes from the thread heaps' spans: a model test of
//! random allocations, frees and reallocations of every size and alignment,
//! frees from other threads, and resizing in place.
#![cfg(not(miri))] // no segment region under Miri: every request falls back

mod common;

use proptest::prelude::*;
use pymalloc::every_size;

fn fill(p: *mut u8, n: usize, tag: u8) {
    // SAFETY: the test's blocks hold at least n bytes.
    unsafe { core::ptr::write_bytes(p, tag, n) };
}

fn holds(p: *const u8, n: usize, tag: u8) -> bool {
    // SAFETY: as for fill.
    unsafe { core::slice::from_raw_parts(p, n) }.iter().all(|&b| b == tag)
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        align_shift: u32,
        zero: bool,
    },
    Free(usize),
    Realloc(usize, usize),
    /// Give back what the heaps hold no block in (free pages of spans in
    /// use included), as after a full collection.
    Release,
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 513usize..=32 * 1024,
        2 => 32usize * 1024 + 1..=1008usize * 1024,
        1 => 1008usize * 1024 + 1..=3usize << 20,
        1 => 1usize..=512,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (size(), prop_oneof![3 => Just(4u32), 1 => 4u32..=16], any::<bool>())
            .prop_map(|(size, align_shift, zero)| Op::Alloc { size, align_shift, zero }),
        3 => any::<usize>().prop_map(Op::Free),
        2 => (any::<usize>(), size()).prop_map(|(i, n)| Op::Realloc(i, n)),
        1 => Just(Op::Release),
    ]
}

struct Live {
    p: *mut u8,
    n: usize,
    align: usize,
    tag: u8,
    /// From `every_size::malloc_with` (a pool block up to 512 bytes), not
    /// `every_size::alloc`: freed with `free_with` only, not resized here.
    front: bool,
}

type Front = pymalloc::LibcFallback;

/// Runs `f` on a thread of its own, one test at a time, on a heap that
/// holds nothing and whose free units are not resident. Two things would
/// otherwise leak from one test into another when libtest runs them in
/// threads of one process (`cargo test`; nextest runs each alone):
/// - a new thread adopts the heap of one that exited, with the empty spans
///   it keeps and the blocks it caches, which later requests reuse or
///   borrow (a 704-byte request served by a free 1,024-byte block);
/// - `release_free` and `purge` work on every heap, so one test's call
///   changes which units of another's heap are resident, and so where its
///   next span goes.
///
/// The tests here check placements and counts that hold on such a heap.
///
/// Where the address space has no room for the segment region (a small
/// `RLIMIT_AS`), there are no span heaps: `f` does not run, and what is
/// checked instead is that every request above 512 bytes goes to the
/// fallback ([`common::without_regions`]).
fn alone(f: impl FnOnce() + Send + 'static) {
    if common::without_regions() {
        return;
    }
    alone_with_or_without_regions(f);
}

/// [`alone`]'s run of `f`, with the regions or without them.
fn alone_with_or_without_regions(f: impl FnOnce() + Send + 'static) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed poisons the lock; the next one runs all the same.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = std::thread::spawn(move || {
        pymalloc::thread::purge();
        every_size::release_free();
        let st = every_size::current_stats();
        assert_eq!(
            (st.segments, st.medium_blocks, st.large_blocks),
            (0, 0, 0),
            "the adopted heap still holds blocks: a test before this one failed"
        );
        f()
    })
    .join();
    if let Err(panic) = run {
        std::panic::resume_unwind(panic);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn blocks_keep_their_bytes_and_the_heap_its_invariants(ops in proptest::collection::vec(op(), 1..120)) {
        // Without the regions (a small RLIMIT_AS) only the front's part
        // runs: pool blocks, and every larger size through the fallback.
        let regions = pymalloc::regions_reserved();
        alone_with_or_without_regions(move || {
            let mut live: Vec<Live> = Vec::new();
            for (k, op) in ops.into_iter().enumerate() {
                let tag = (k % 251) as u8 + 1;
                match op {
                    Op::Alloc { size, align_shift, zero } if (align_shift == 4 && !zero && k % 2 == 0) || !regions => {
                        // The front: the front cache first, pool blocks up
                        // to 512 bytes.
                        let p = every_size::malloc_with::<Front>(size);
                        assert!(!p.is_null(), "malloc({size})");
                        assert_eq!(p as usize % pymalloc::geometry::ALIGNMENT, 0);
                        assert_eq!(every_size::owns(p), size > 512 && regions, "{size}");
                        fill(p, size, tag);
                        live.push(Live { p, n: size, align: 16, tag, front: true });
                    }
                    Op::Alloc { size, align_shift, zero } => {
                        let align = 1usize << align_shift;
                        let p = every_size::alloc(size, align, zero);
                        assert!(!p.is_null(), "alloc({size}, {align})");
                        assert_eq!(p as usize % align, 0, "alignment {align} of a {size}-byte block");
                        assert!(every_size::owns(p));
                        assert!(unsafe { every_size::usable_size(p) } >= size);
                        if zero {
                            assert!(holds(p, size, 0), "calloc'd block of {size} not zero");
                        }
                        fill(p, size, tag);
                        live.push(Live { p, n: size, align, tag, front: false });
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let b = live.swap_remove(i % live.len());
                        assert!(holds(b.p, b.n, b.tag));
                        // Any block may go through the front's free.
                        if b.front || b.tag % 2 == 1 {
                            unsafe { every_size::free_with::<Front>(b.p) };
                        } else {
                            unsafe { every_size::free(b.p) };
                        }
                    }
                    Op::Realloc(i, n) if !live.is_empty() && regions => {
                        let i = i % live.len();
                        if live[i].align > 16 || live[i].front {
                            continue;
                        }
                        let b = &mut live[i];
                        let q = unsafe { every_size::realloc_in(b.p, n, |m| every_size::alloc(m, 16, false)) };
                        assert!(!q.is_null());
                        assert!(holds(q, b.n.min(n), b.tag), "realloc {} -> {n} lost bytes", b.n);
                        assert!(unsafe { every_size::usable_size(q) } >= n);
                        fill(q, n, tag);
                        *b = Live { p: q, n, align: 16, tag, front: false };
                    }
                    Op::Release => {
                        every_size::release_free();
                    }
                    _ => {}
                }
                pymalloc::thread::validate_current().unwrap();
            }
            let st = every_size::current_stats();
            let medium = live.iter().filter(|b| b.n <= 32 * 1024 && b.align <= 128).count();
            assert!(st.medium_blocks <= live.len() && st.medium_blocks >= medium.min(st.medium_blocks));
            for b in live {
                assert!(holds(b.p, b.n, b.tag));
                unsafe { every_size::free_with::<Front>(b.p) };
            }
            // Pool blocks the front cached go back with the heap's purge.
            pymalloc::thread::purge();
            pymalloc::thread::validate_current().unwrap();
            let st = every_size::current_stats();
            assert_eq!((st.medium_blocks, st.medium_bytes, st.large_blocks, st.large_bytes), (0, 0, 0, 0));
        });
    }
}

#[test]
fn blocks_freed_by_another_thread_go_back_to_their_heap() {
    let (to_freer, freer_rx) = std::sync::mpsc::channel::<usize>();
    let freer = std::thread::spawn(move || {
        for (i, p) in freer_rx.into_iter().enumerate() {
            // Through the front half the time: its cache must not take
            // another heap's block.
            if i % 2 == 0 {
                unsafe { every_size::free_with::<pymalloc::LibcFallback>(p as *mut u8) };
            } else {
                unsafe { every_size::free(p as *mut u8) };
            }
        }
    });
    alone(move || {
        for round in 0..20 {
            for i in 0..200 {
                let n = 600 + (i * 997 + round * 31) % 60_000;
                let p = if i % 3 == 0 {
                    every_size::malloc_with::<pymalloc::LibcFallback>(n)
                } else {
                    every_size::alloc(n, 16, false)
                };
                assert!(!p.is_null());
                fill(p, n, 7);
                to_freer.send(p as usize).unwrap();
            }
        }
        drop(to_freer);
        freer.join().unwrap();
        let before = every_size::current_stats();
        assert!(before.medium_blocks + before.large_blocks > 0, "frees from the other thread are queued here");
        // The owner drains its queue when it next needs a span, or on purge.
        pymalloc::thread::purge();
        pymalloc::thread::validate_current().unwrap();
        let after = every_size::current_stats();
        assert_eq!((after.medium_blocks, after.large_blocks, after.segments), (0, 0, 0), "{after:?}");
    });
}

#[test]
fn large_and_huge_blocks_grow_and_shrink_in_place() {
    alone(|| {
        let grow = |m: usize| every_size::alloc(m, 16, false);
        let p = every_size::alloc(40 << 10, 16, false);
        fill(p, 40 << 10, 3);
        let q = unsafe { every_size::realloc_in(p, 400 << 10, grow) };
        assert_eq!(p, q, "the units after a lone large block are free");
        assert!(holds(q, 40 << 10, 3));
        assert!(unsafe { every_size::usable_size(q) } >= 400 << 10);
        let r = unsafe { every_size::realloc_in(q, 100 << 10, grow) };
        assert_eq!(r, q, "shrinking a large block keeps it");
        assert_eq!(unsafe { every_size::usable_size(r) }, 112 << 10);
        pymalloc::thread::validate_current().unwrap();
        let s = unsafe { every_size::realloc_in(r, 5 << 20, grow) };
        assert!(holds(s, 40 << 10, 3), "moving to a huge block copies");
        let t = unsafe { every_size::realloc_in(s, 2 << 20, grow) };
        assert_eq!(s, t, "shrinking a huge block gives back its tail in place");
        assert!(unsafe { every_size::usable_size(t) } >= 2 << 20 && unsafe { every_size::usable_size(t) } < 3 << 20);
        assert!(holds(t, 40 << 10, 3));
        unsafe { every_size::free(t) };
        pymalloc::thread::validate_current().unwrap();
    });
}

/// A huge block grown by an eighth at a time, as `list.append` and
/// `bytearray +=` grow their buffers, grows where it is: once it ends the
/// region's used slots, the fresh slots after it are its to take. (It moved,
/// copied, at 9 of these 36 steps when only freed slots could be taken, and
/// each move kept the old block's pages for a while: a Python list of 3M
/// items peaked 9.7 MB higher than under glibc, whose `realloc` of a mapped
/// chunk is an `mremap`.)
#[test]
fn a_huge_block_grown_step_by_step_stays_where_it_is() {
    alone(|| {
        let mut n = 1usize << 20;
        let mut p = every_size::alloc(n, 16, false);
        fill(p, n, 4);
        let mut moves = 0;
        for _ in 0..36 {
            let m = n + (n >> 3) + 6;
            let q = unsafe { every_size::realloc_in(p, m, |k| every_size::alloc(k, 16, false)) };
            assert!(!q.is_null());
            if q != p {
                moves += 1;
            }
            // SAFETY: q holds m bytes.
            unsafe { core::ptr::write_bytes(q.add(n), 4, m - n) };
            p = q;
            n = m;
        }
        assert!(holds(p, n, 4));
        // At most one move: the first block may sit in a freed run with
        // a live slot after it (slots freed by the tests before this one).
        assert!(moves <= 1, "{moves} moves");
        unsafe { every_size::free(p) };
        pymalloc::thread::validate_current().unwrap();
    });
}

#[test]
fn a_large_block_at_the_end_of_its_segment_moves_to_grow() {
    alone(|| {
        let unit = 16 << 10;
        let grow = |m: usize| every_size::alloc(m, 16, false);
        // A fresh heap: units 1..=59 for the first block, 60..=63 for the second.
        let first = every_size::alloc(59 * unit, 16, false);
        let last = every_size::alloc(4 * unit, 16, false);
        assert_eq!(last as usize, first as usize + 59 * unit, "the second block ends the segment");
        fill(last, 4 * unit, 9);
        let moved = unsafe { every_size::realloc_in(last, 8 * unit, grow) };
        assert_ne!(moved, last, "no unit after the segment's last");
        assert!(holds(moved, 4 * unit, 9));
        pymalloc::thread::validate_current().unwrap();
        unsafe {
            every_size::free(first);
            every_size::free(moved);
        }
        pymalloc::thread::validate_current().unwrap();
    });
}

#[test]
fn medium_classes_serve_their_alignment_and_calloc_zeroes_reused_blocks() {
    alone(|| {
        let p = every_size::alloc(3000, 16, false);
        fill(p, 3000, 0xee);
        unsafe { every_size::free(p) };
        let q = every_size::alloc(3000, 16, true);
        assert!(holds(q, 3000, 0), "a reused block is zeroed for calloc");
        let a = every_size::alloc(1000, 4096, false);
        assert_eq!(a as usize % 4096, 0);
        let b = every_size::alloc(100, 256 << 10, false);
        assert_eq!(b as usize % (256 << 10), 0, "alignments past a unit come from huge blocks");
        assert!(every_size::alloc(100, 1 << 20, false).is_null(), "alignments above half a segment are refused");
        for x in [q, a, b] {
            unsafe { every_size::free(x) };
        }
        pymalloc::thread::validate_current().unwrap();
    });
}

#[test]
fn free_pages_of_spans_in_use_go_back_and_come_back() {
    alone(|| {
        // 2000 blocks of 1500 bytes (43 per 64 KiB span); keep one in 20.
        let live_before = every_size::current_live_page_bytes();
        let headers_before = every_size::current_header_page_bytes();
        let blocks: Vec<*mut u8> = (0..2000).map(|_| every_size::alloc(1500, 16, false)).collect();
        for (i, &b) in blocks.iter().enumerate() {
            fill(b, 1500, (i % 200) as u8 + 1);
        }
        let kept: Vec<(usize, *mut u8)> = blocks.iter().copied().enumerate().filter(|(i, _)| i % 20 == 0).collect();
        for (i, &b) in blocks.iter().enumerate() {
            if i % 20 != 0 {
                unsafe { every_size::free(b) };
            }
        }
        // The floor: exactly the pages the survivors' bytes lie on (the
        // spans are this test's own, so no one else's block shares them);
        // apart, the header pages of their segments.
        let pinned: std::collections::BTreeSet<usize> =
            kept.iter().flat_map(|&(_, b)| b.addr() / 4096..=(b.addr() + 1500 - 1) / 4096).collect();
        let segments: std::collections::BTreeSet<usize> = kept.iter().map(|&(_, b)| b.addr() >> 20).collect();
        let floor = pinned.len() * 4096;
        assert_eq!(every_size::current_live_page_bytes() - live_before, floor);
        assert_eq!(
            every_size::current_header_page_bytes() - headers_before,
            segments.len() * every_size::segment_header_bytes()
        );
        assert!(pinned.len() >= kept.len() && pinned.len() <= 2 * kept.len());
        let before = every_size::current_stats();
        assert_eq!(before.pages_out_bytes, 0);
        let given = every_size::release_free();
        let after = every_size::current_stats();
        pymalloc::thread::validate_current().unwrap();
        // Each survivor pins at most two pages of its span (it straddles one
        // boundary at most): of 16 pages per span, 12 or more go back.
        assert!(after.pages_out_bytes >= 47 * 12 * 4096, "{after:?}");
        assert!(given >= after.pages_out_bytes);
        for &(i, b) in &kept {
            assert!(holds(b, 1500, (i % 200) as u8 + 1), "a survivor lost its bytes");
        }
        assert_eq!(
            every_size::current_live_page_bytes() - live_before,
            floor,
            "giving free pages back leaves the floor where it was"
        );
        // Allocating again brings the pages back, block by block.
        let again: Vec<*mut u8> = (0..1900).map(|_| every_size::alloc(1500, 16, true)).collect();
        for &b in &again {
            assert!(holds(b, 1500, 0), "a block from a page given back reads as zeroes once calloc'd");
            fill(b, 1500, 0xee);
        }
        pymalloc::thread::validate_current().unwrap();
        assert_eq!(every_size::current_stats().pages_out_bytes, 0, "every page came back");
        for &(i, b) in &kept {
            assert!(holds(b, 1500, (i % 200) as u8 + 1));
            unsafe { every_size::free(b) };
        }
        for b in again {
            unsafe { every_size::free(b) };
        }
        pymalloc::thread::validate_current().unwrap();
    });
}

#[test]
fn the_medium_block_freed_last_is_handed_out_first_and_counts_free() {
    alone(|| {
        // Two spans of one class: the first full, the second listed.
        let blocks: Vec<*mut u8> = (0..400).map(|_| every_size::alloc(700, 16, false)).collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        let (x, y) = (blocks[3], blocks[blocks.len() - 2]);
        assert_ne!(x.addr() >> 16, y.addr() >> 16, "x and y lie in different spans");
        let before = every_size::current_stats();
        unsafe {
            every_size::free(x);
            every_size::free(y);
        }
        let after = every_size::current_stats();
        assert_eq!(before.medium_blocks - after.medium_blocks, 2, "cached blocks count free");
        assert_eq!(before.medium_bytes - after.medium_bytes, 2 * 704);
        pymalloc::thread::validate_current().unwrap();
        // Most recent first, whichever span heads the class's list.
        assert_eq!(every_size::alloc(700, 16, false), y);
        assert_eq!(every_size::alloc(700, 16, false), x);
        // A class caches at most 16 blocks of 704 bytes; the rest go back
        // to their spans, and everything adds up after every free.
        for &p in &blocks {
            unsafe { every_size::free(p) };
            pymalloc::thread::validate_current().unwrap();
        }
        assert_eq!(every_size::current_stats().medium_blocks, 0);
        pymalloc::thread::purge();
        assert_eq!(every_size::current_stats().segments, 0, "a purge flushes the cache");
    });
}

#[test]
fn a_full_medium_cache_keeps_its_blocks_and_sends_the_next_free_to_its_span() {
    alone(|| {
        let blocks: Vec<*mut u8> = (0..40).map(|_| every_size::alloc(700, 16, false)).collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        // 704-byte blocks: the class caches 16 (`span_cache.rs`).
        for &p in &blocks[..24] {
            unsafe { every_size::free(p) };
        }
        let st = every_size::current_stats();
        assert_eq!(st.medium_blocks, 16, "the 24 freed count free, cached or not");
        pymalloc::thread::validate_current().unwrap();
        // The cache kept the first 16 freed (the 8 after went to their span):
        // they come back most recent first, before any block of a span.
        let again: Vec<*mut u8> = (0..16).map(|_| every_size::alloc(700, 16, false)).collect();
        let first16: Vec<*mut u8> = blocks[..16].iter().rev().copied().collect();
        assert_eq!(again, first16);
        let from_span = every_size::alloc(700, 16, false);
        assert!(blocks[16..24].contains(&from_span), "then a block of a span");
        for p in again.into_iter().chain([from_span]).chain(blocks[24..].iter().copied()) {
            unsafe { every_size::free(p) };
        }
        assert_eq!(every_size::current_stats().medium_blocks, 0);
        pymalloc::thread::validate_current().unwrap();
    });
}

/// A class with no free block takes a free block of a class at most half
/// as large again before it takes a new span (`SpanHeap::borrow_larger`),
/// and the block stays its own class's; a class further up is left alone.
#[test]
fn an_empty_class_takes_a_neighbours_free_block_before_it_grows() {
    alone(|| {
        // 2,200 and 2,100 bytes: classes of 2,304 and 2,176 (sixteen per
        // doubling above 2 KiB), 1/17 apart.
        let big = every_size::alloc(2200, 16, false);
        assert!(!big.is_null());
        let spans_before = every_size::current_stats();
        unsafe { every_size::free(big) };
        let small = every_size::alloc(2100, 16, false);
        assert_eq!(small, big, "the free 2,304-byte block served the 2,100-byte request");
        assert_eq!(unsafe { every_size::usable_size(small) }, 2304, "the block keeps its class");
        let after = every_size::current_stats();
        assert_eq!(after.segments, spans_before.segments);
        assert_eq!((after.medium_blocks, after.medium_bytes), (spans_before.medium_blocks, spans_before.medium_bytes));
        pymalloc::thread::validate_current().unwrap();
        // Freed, it goes back to its own class: a 2,200-byte request gets it.
        unsafe { every_size::free(small) };
        assert_eq!(every_size::alloc(2200, 16, false), big);

        // 832 bytes is under half above 576: a 560-byte request takes a
        // free 832-byte block. 960 bytes is more: with that one held, the
        // next 560-byte request does not take a free 960-byte block.
        let mid = every_size::alloc(800, 16, false);
        unsafe { every_size::free(mid) };
        let near = every_size::alloc(560, 16, false);
        assert_eq!(near, mid, "the free 832-byte block served the 560-byte request");
        assert_eq!(unsafe { every_size::usable_size(near) }, 832);
        let far = every_size::alloc(900, 16, false);
        unsafe { every_size::free(far) };
        let own = every_size::alloc(560, 16, false);
        assert!(!own.is_null());
        assert_ne!(own, far);
        assert_eq!(unsafe { every_size::usable_size(own) }, 576);
        pymalloc::thread::validate_current().unwrap();
        unsafe {
            every_size::free(near);
            every_size::free(own);
            every_size::free(big);
        }
        pymalloc::thread::validate_current().unwrap();
    });
}

/// A new medium span goes where freed units are still resident
/// (`SpanHeap::find_units`): into the shortest freed run that holds it,
/// else into a freed run it is shortened to fit (down to two blocks), and
/// only then onto clean units.
#[test]
fn a_new_span_fills_freed_resident_units_before_clean_ones() {
    const UNIT: usize = 16 * 1024;
    alone(|| {
        // Large blocks take whole runs of units, in order, in the thread's
        // first segment: A (5 units), a separator, B (4), a separator.
        let a = every_size::alloc(5 * UNIT, 16, false);
        let s1 = every_size::alloc(3 * UNIT, 16, false);
        let b = every_size::alloc(4 * UNIT, 16, false);
        let s2 = every_size::alloc(3 * UNIT, 16, false);
        assert!([a, s1, b, s2].iter().all(|p| !p.is_null()));
        assert_eq!((s1 as usize - a as usize, b as usize - a as usize), (5 * UNIT, 8 * UNIT), "units in order");
        unsafe {
            every_size::free(a);
            every_size::free(b);
        }
        // A span of the 640-byte class wants 4 units: B's hole fits it
        // exactly, where the first fit would have been A's.
        let small = every_size::alloc(600, 16, false);
        assert_eq!(small, b, "the span went into the shortest freed run that holds it");
        // A span of the 20,480-byte class wants 10 units; no freed run is
        // that long, so it takes A's 5 and holds 4 blocks.
        let mid: Vec<*mut u8> = (0..5).map(|_| every_size::alloc(20000, 16, false)).collect();
        assert_eq!(unsafe { every_size::usable_size(mid[0]) }, 20480);
        for (i, &p) in mid[..4].iter().enumerate() {
            assert_eq!(p as usize, a as usize + i * 20480, "block {i} in the shortened span in A's units");
        }
        let after_a = (a as usize)..(a as usize + 5 * UNIT);
        assert!(!after_a.contains(&(mid[4] as usize)), "a fifth block does not fit there");
        pymalloc::thread::validate_current().unwrap();

        unsafe {
            for p in [small, s1, s2].into_iter().chain(mid) {
                every_size::free(p);
            }
        }
        pymalloc::thread::validate_current().unwrap();
    });
}

/// The front cache holds pool and medium classes side by side: a block
/// freed through the front is the next one of its class, whichever kind,
/// and the classes do not mix.
#[test]
fn the_front_hands_back_the_block_of_each_class_freed_last() {
    type F = pymalloc::LibcFallback;
    alone(|| {
        let sizes = [16usize, 100, 512, 513, 700, 1000, 4096];
        let blocks: Vec<*mut u8> = sizes.iter().map(|&n| every_size::malloc_with::<F>(n)).collect();
        let spare: Vec<*mut u8> = sizes.iter().map(|&n| every_size::malloc_with::<F>(n)).collect();
        for (&p, &n) in blocks.iter().zip(&sizes) {
            assert!(!p.is_null());
            assert_eq!(every_size::owns(p), n > 512, "{n} bytes: pool block up to 512, span block above");
            fill(p, n, 3);
        }
        for &p in blocks.iter().rev() {
            unsafe { every_size::free_with::<F>(p) };
        }
        pymalloc::thread::validate_current().unwrap();
        for (&p, &n) in blocks.iter().zip(&sizes) {
            assert_eq!(every_size::malloc_with::<F>(n), p, "{n} bytes");
        }
        for &p in blocks.iter().chain(&spare) {
            unsafe { every_size::free_with::<F>(p) };
        }
        pymalloc::thread::validate_current().unwrap();
    });
}

/// A unit that held a medium span and now holds the start of a large or a
/// huge block must not send that block to the front cache: its entry in
/// the block map says "no class" (a stale medium class there would cache a
/// large block as a medium one).
#[test]
fn large_and_huge_blocks_in_units_that_held_medium_spans_skip_the_front_cache() {
    alone(|| {
        for round in 0..3 {
            // Medium spans over whole segments, all freed and given back.
            let medium: Vec<*mut u8> = (0..3000).map(|_| every_size::alloc(3000, 16, false)).collect();
            for &p in &medium {
                unsafe { every_size::free(p) };
            }
            pymalloc::thread::purge();
            // Large blocks and huge ones at an offset past the first unit
            // now take those units and slots.
            let mut big: Vec<*mut u8> = (0..4).map(|i| every_size::alloc(1100 << 10, 64 << (10 + i), false)).collect();
            big.extend((0..40).map(|i| every_size::alloc(40_000 + i * 20_000, 16, false)));
            for &p in &big {
                assert!(!p.is_null());
                assert!(!unsafe { every_size::free_cached(p) }, "round {round}: a large or huge block was cached");
            }
            for &p in &big {
                unsafe { every_size::free_with::<pymalloc::LibcFallback>(p) };
            }
            pymalloc::thread::validate_current().unwrap();
        }
        pymalloc::thread::purge();
        let st = every_size::current_stats();
        assert_eq!((st.medium_blocks, st.large_blocks), (0, 0), "{st:?}");
    });
}

/// The thread heaps' own `free` takes a pool block of the calling thread's
/// heap by one look at the block map, into the class's cache: the next
/// request of that size gets the block back. A span block is not taken
/// there (its cache class is not a pool class): it goes on through the
/// front to the fallback that allocated it, which frees it as its own (the
/// span statistics come back, and the heap validates). A block of another
/// thread's heap is not taken either: it goes to its owner's queue.
#[test]
fn the_thread_heaps_free_takes_their_own_pool_blocks_by_the_block_map() {
    type All = every_size::EverySize<pymalloc::LibcFallback>;
    alone(|| {
        let sizes = [1usize, 16, 100, 300, 512];
        let blocks: Vec<*mut u8> = sizes.iter().map(|&n| pymalloc::thread::malloc(n)).collect();
        let spare: Vec<*mut u8> = sizes.iter().map(|&n| pymalloc::thread::malloc(n)).collect();
        for (&p, &n) in blocks.iter().zip(&sizes) {
            fill(p, n, 5);
        }
        for &p in blocks.iter().rev() {
            unsafe { pymalloc::thread::free(p) };
        }
        pymalloc::thread::validate_current().unwrap();
        for (&p, &n) in blocks.iter().zip(&sizes) {
            assert_eq!(pymalloc::thread::malloc(n), p, "{n} bytes");
        }

        let before = every_size::current_stats();
        let big: Vec<*mut u8> =
            [513usize, 700, 4096].iter().map(|&n| pymalloc::thread::malloc_with::<All>(n)).collect();
        assert!(big.iter().all(|&p| every_size::owns(p)));
        assert_eq!(every_size::current_stats().medium_blocks, before.medium_blocks + 3);
        for &p in &big {
            unsafe { pymalloc::thread::free_with::<All>(p) };
        }
        assert_eq!(every_size::current_stats().medium_blocks, before.medium_blocks);
        pymalloc::thread::validate_current().unwrap();

        // Freed by another thread: queued for this heap, taken back when it
        // next needs a pool; this heap still validates meanwhile.
        let addr = blocks[2] as usize;
        std::thread::spawn(move || unsafe { pymalloc::thread::free(addr as *mut u8) }).join().unwrap();
        pymalloc::thread::validate_current().unwrap();
        for &p in blocks.iter().enumerate().filter(|&(i, _)| i != 2).map(|(_, p)| p).chain(&spare) {
            unsafe { pymalloc::thread::free(p) };
        }
        pymalloc::thread::validate_current().unwrap();
    });
}
