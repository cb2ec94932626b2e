//! Operation sequences on a private pymalloc heap. After every operation the
//! heap's invariants are checked (`Heap::validate`), every live block still
//! holds what was written to it, blocks never overlap, and the statistics
//! count exactly the live pool blocks.
//!
//! The first byte picks the heap: CPython's plain heap, or the caching heap
//! of thread heaps and the domains (`Heap::new_retaining`: block cache and
//! retained head pools), and its purge policy; operations include giving
//! pages back (`Heap::purge`), decay sweeps (`Heap::decay_at`), emptying
//! the block cache, and a burst of blocks of one size of which most are
//! freed at once (sparse pools, whose first pages a purge gives back too:
//! their headers are in the header table).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pymalloc::{owns, Heap, PurgePolicy};

struct Live {
    ptr: *mut u8,
    size: usize,
    fill: u8,
}

fn size_of(a: u16) -> usize {
    match a {
        0xFFFF => usize::MAX,
        0xFFFE => isize::MAX as usize + 1,
        _ => a as usize % 1100,
    }
}

fn check(b: &Live) {
    let bytes = unsafe { std::slice::from_raw_parts(b.ptr, b.size) };
    assert!(bytes.iter().all(|&x| x == b.fill), "block {:p} corrupted", b.ptr);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    let mut heap = if mode & 1 == 0 { Heap::new() } else { Heap::new_retaining() };
    heap.set_purge_policy(match (mode >> 1) % 4 {
        0 => PurgePolicy::DEFAULT,
        1 => PurgePolicy::Immediate,
        2 => PurgePolicy::THRESHOLD,
        _ => PurgePolicy::Never,
    });
    // The decay policy's sweeps run on a clock of our own, far ahead of the
    // real one, so only the operations below sweep.
    let mut clock = 1u64 << 40;
    let mut live: Vec<Live> = Vec::new();
    let mut spans: BTreeMap<usize, usize> = BTreeMap::new();
    let mut fill = 0u8;
    let mut add = |live: &mut Vec<Live>, spans: &mut BTreeMap<usize, usize>, ptr: *mut u8, size: usize| {
        assert_eq!(ptr as usize % 16, 0);
        let (s, e) = (ptr as usize, ptr as usize + size.max(1));
        if let Some((_, &pe)) = spans.range(..=s).next_back() {
            assert!(pe <= s, "overlap");
        }
        if let Some((&ns, _)) = spans.range(s..).next() {
            assert!(ns >= e, "overlap");
        }
        spans.insert(s, e);
        fill = fill.wrapping_add(1);
        unsafe { ptr.write_bytes(fill, size) };
        live.push(Live { ptr, size, fill });
    };
    for chunk in data.chunks_exact(3) {
        let a = u16::from_le_bytes([chunk[1], chunk[2]]);
        match chunk[0] % 6 {
            0 | 1 => {
                let n = size_of(a);
                let p = heap.malloc(n);
                if n > isize::MAX as usize {
                    assert!(p.is_null());
                } else {
                    assert!(!p.is_null());
                    add(&mut live, &mut spans, p, n);
                }
            }
            2 => {
                let (n, s) = ((a % 64) as usize, ((a >> 6) % 40) as usize);
                let p = heap.calloc(n, s);
                assert!(!p.is_null());
                assert!(unsafe { std::slice::from_raw_parts(p, n * s) }.iter().all(|&b| b == 0));
                add(&mut live, &mut spans, p, n * s);
            }
            3 if !live.is_empty() => {
                let i = (chunk[1] as usize) % live.len();
                let n = size_of(a.rotate_left(8));
                let q = unsafe { heap.realloc(live[i].ptr, n) };
                if n > isize::MAX as usize {
                    assert!(q.is_null());
                    check(&live[i]);
                    continue;
                }
                assert!(!q.is_null());
                let old = live.swap_remove(i);
                spans.remove(&(old.ptr as usize));
                let kept = Live { ptr: q, size: old.size.min(n), fill: old.fill };
                check(&kept);
                add(&mut live, &mut spans, q, n);
            }
            4 if !live.is_empty() => {
                let b = live.swap_remove(a as usize % live.len());
                spans.remove(&(b.ptr as usize));
                check(&b);
                unsafe { heap.free(b.ptr) };
            }
            5 => {
                // Rare: give memory back, or empty the block cache.
                if a % 8 == 0 {
                    heap.purge();
                } else if a % 8 == 1 {
                    heap.flush_cache();
                } else if a % 8 == 2 {
                    // A decay period passes: what stayed free goes back.
                    clock += 1000;
                    heap.decay_at(clock);
                } else if a % 8 == 3 {
                    // A burst of one size, all but every keep-th freed.
                    let (n, keep) = (200 + (a >> 3) as usize % 600, 8 + (a >> 8) as usize % 100);
                    let size = 1 + (chunk[1] as usize * 2) % 512;
                    let first = live.len();
                    for _ in 0..n {
                        let p = heap.malloc(size);
                        assert!(!p.is_null());
                        add(&mut live, &mut spans, p, size);
                    }
                    for k in (0..n).rev() {
                        if k % keep != keep - 1 {
                            let b = live.swap_remove(first + k);
                            spans.remove(&(b.ptr as usize));
                            check(&b);
                            unsafe { heap.free(b.ptr) };
                        }
                    }
                }
            }
            _ => {}
        }
        heap.validate().unwrap();
        let pooled = live.iter().filter(|b| owns(b.ptr)).count();
        assert_eq!(heap.stats().blocks_in_use(), pooled);
    }
    for b in live {
        check(&b);
        unsafe { heap.free(b.ptr) };
    }
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!((s.blocks_in_use(), s.raw_allocated_blocks), (0, 0));
    assert_eq!(s.accounted_bytes(), s.arena_bytes);
});
