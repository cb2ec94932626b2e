//! Operation sequences on the calling thread's heap through the every-size
//! paths (the preload library's and `pymalloc_all`'s): pool blocks through
//! the front cache, medium blocks in spans, large spans of whole units and
//! huge runs of slots, at any alignment, zeroed or not, resized in place
//! or moved, freed through the front or past it; requests too large to
//! serve; now and then memory goes back (`release_free`, `release_empty`,
//! the heap's purge).
//!
//! The first byte picks the purge policy for the whole input (decay, a
//! decay of 0 ms, which sweeps whenever the heap reads its clock,
//! `immediate`, `threshold`, `never`). After every operation the heap's
//! invariants are checked (`thread::validate_current`: the pools, the
//! block caches, the span segments) and a new block must not overlap a
//! live one; a block's bytes are checked when it is resized or freed, and
//! at the end, when every block is freed and no medium, large or huge block
//! may remain.
//!
//! The heap outlives one input (it is the fuzzing thread's), so an input
//! starts from whatever the ones before it left free: segments kept,
//! units dirty or given back, blocks cached.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pymalloc::every_size::{self, EverySize};
use pymalloc::raw::MAX_SIZE;
use pymalloc::{config, regions_reserved, thread, LibcFallback, PurgePolicy};

type F = LibcFallback;

struct Live {
    ptr: *mut u8,
    size: usize,
    fill: u8,
    /// From `every_size::alloc` with an alignment above 16: freed through
    /// the front or with `every_size::free`, never resized (the front's
    /// `realloc` keeps 16 bytes' alignment only).
    aligned: bool,
}

/// Sizes on either side of a boundary: the pools' last class, the medium
/// classes' first, the first class of sixteen per doubling, the last
/// medium class, the largest large block, zero.
const EDGES: [usize; 12] = [0, 1, 512, 513, 576, 577, 2048, 2049, 32768, 32769, 1008 * 1024, 1008 * 1024 + 1];

/// A request size: `k` picks the kind (pool, medium, large, huge, an edge,
/// a small odd one), `a` the size within it; every medium size can come.
fn size_of(a: u16, k: u8) -> usize {
    let v = a as usize;
    match k % 8 {
        0 | 1 => 1 + v % 512,
        2 | 3 => 513 + v % (32 * 1024 - 512),
        4 => 32 * 1024 + 1 + v * 15,
        5 => 1008 * 1024 + 1 + v * 16,
        6 => EDGES[v % EDGES.len()],
        _ => v % 3000,
    }
}

fn check(b: &Live) {
    // SAFETY: a live block of at least `size` bytes.
    let bytes = unsafe { std::slice::from_raw_parts(b.ptr, b.size) };
    assert!(bytes.iter().all(|&x| x == b.fill), "block {:p} of {} corrupted", b.ptr, b.size);
}

struct State {
    live: Vec<Live>,
    /// Start → end of every live block, to catch overlaps.
    spans: BTreeMap<usize, usize>,
    fill: u8,
}

impl State {
    fn add(&mut self, ptr: *mut u8, size: usize, align: usize, aligned: bool) {
        assert!(!ptr.is_null(), "{size} bytes aligned to {align}");
        assert_eq!(ptr as usize % align, 0, "{size} bytes aligned to {align}");
        if every_size::owns(ptr) {
            // SAFETY: a live block of the segment region.
            assert!(unsafe { every_size::usable_size(ptr) } >= size, "usable size of {size} bytes");
        }
        let (s, e) = (ptr as usize, ptr as usize + size.max(1));
        if let Some((_, &pe)) = self.spans.range(..=s).next_back() {
            assert!(pe <= s, "overlap");
        }
        if let Some((&ns, _)) = self.spans.range(s..).next() {
            assert!(ns >= e, "overlap");
        }
        self.spans.insert(s, e);
        self.fill = self.fill.wrapping_add(1);
        // SAFETY: a fresh block of at least `size` bytes.
        unsafe { ptr.write_bytes(self.fill, size) };
        self.live.push(Live { ptr, size, fill: self.fill, aligned });
    }

    fn take(&mut self, i: usize) -> Live {
        let b = self.live.swap_remove(i);
        self.spans.remove(&(b.ptr as usize));
        check(&b);
        b
    }
}

fn is_zero(p: *const u8, n: usize) -> bool {
    // SAFETY: a fresh block of at least n bytes.
    unsafe { std::slice::from_raw_parts(p, n) }.iter().all(|&b| b == 0)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    config::set_purge_policy(match mode % 5 {
        0 => PurgePolicy::DEFAULT,
        1 => PurgePolicy::Decay { ms: 0 },
        2 => PurgePolicy::Immediate,
        3 => PurgePolicy::THRESHOLD,
        _ => PurgePolicy::Never,
    });
    let mut st = State { live: Vec::new(), spans: BTreeMap::new(), fill: 0 };
    for chunk in data.chunks_exact(4) {
        // op, flags (kind of size in bits 0-2, alignment in 3-6, zero in 7), size.
        let (op, k, a) = (chunk[0], chunk[1], u16::from_le_bytes([chunk[2], chunk[3]]));
        let n = size_of(a, k);
        match op % 8 {
            0..=2 => {
                // The front: the thread's cached block first.
                let p = every_size::malloc_with::<F>(n);
                st.add(p, n, 16, false);
            }
            3 => {
                let n = n.max(1);
                let align = 1usize << (4 + (k >> 3) as usize % 13);
                let zero = k & 0x80 != 0;
                let p = every_size::alloc(n, align, zero);
                if p.is_null() {
                    // Only without the segment region.
                    assert!(!regions_reserved(), "alloc({n}, {align}) failed");
                } else {
                    assert!(!zero || is_zero(p, n), "zeroed {n} bytes aligned to {align}");
                    st.add(p, n, align, align > 16);
                }
            }
            4 if !st.live.is_empty() => {
                let i = a as usize % st.live.len();
                if !st.live[i].aligned {
                    let n = size_of(a.rotate_left(5), k.wrapping_add(op >> 3));
                    let old = st.take(i);
                    // SAFETY: a live block of these paths, not used again.
                    let q = unsafe { thread::realloc_with::<EverySize<F>>(old.ptr, n) };
                    let kept = Live { ptr: q, size: old.size.min(n), fill: old.fill, aligned: false };
                    check(&kept);
                    st.add(q, n, 16, false);
                }
            }
            5 | 6 if !st.live.is_empty() => {
                let b = st.take(a as usize % st.live.len());
                // Any block may go through either front; aligned ones past
                // them too.
                // SAFETY: a live block of these paths, not used again.
                unsafe {
                    match (op >> 3) % 3 {
                        0 if b.aligned => every_size::free(b.ptr),
                        1 => thread::free_with::<EverySize<F>>(b.ptr),
                        _ => every_size::free_with::<F>(b.ptr),
                    }
                }
            }
            7 => match (op >> 3) % 8 {
                0 => {
                    every_size::release_free();
                }
                1 => {
                    thread::purge();
                }
                2 => {
                    thread::release_empty();
                }
                3 => {
                    let (nelem, elsize) = (a as usize % 64, 1 + k as usize * 3);
                    let p = thread::calloc_with::<EverySize<F>>(nelem, elsize);
                    assert!(is_zero(p, nelem * elsize), "calloc({nelem}, {elsize})");
                    st.add(p, nelem * elsize, 16, false);
                }
                4 => {
                    // Too large to serve: null, and nothing changes.
                    assert!(every_size::malloc_with::<F>(MAX_SIZE + 1 + n).is_null());
                    assert!(every_size::alloc(MAX_SIZE + 1, 16, k & 0x80 != 0).is_null());
                    assert!(thread::calloc_with::<EverySize<F>>(usize::MAX / 2, 3 + n).is_null());
                    if let Some(b) = st.live.iter().find(|b| !b.aligned) {
                        // SAFETY: a live block of these paths; a failed
                        // realloc leaves it as it was.
                        assert!(unsafe { thread::realloc_with::<EverySize<F>>(b.ptr, MAX_SIZE + 1) }.is_null());
                        check(b);
                    }
                }
                _ => {}
            },
            _ => {}
        }
        thread::validate_current().unwrap();
    }
    for i in (0..st.live.len()).rev() {
        let b = st.take(i);
        // SAFETY: a live block of these paths, not used again.
        unsafe { every_size::free_with::<F>(b.ptr) };
    }
    thread::purge();
    thread::validate_current().unwrap();
    let s = every_size::current_stats();
    assert_eq!((s.medium_blocks, s.large_blocks), (0, 0));
    // Huge blocks belong to no heap; nothing else in this process
    // allocates from pymalloc.
    assert_eq!(every_size::stats().huge_blocks, 0);
});
