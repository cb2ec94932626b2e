//! Operation sequences on the calling thread's heap through the every-size
//! paths (the preload library's and `pymalloc_all`'s): pool blocks through
//! the front cache, medium blocks in spans, large spans of whole units and
//! huge runs of slots, at any alignment, zeroed or not, resized in place
//! or moved, freed through the front or past it; now and then memory goes
//! back (`release_free`, the heap's purge) or the purge policy changes
//! (a decay of 0 ms sweeps at every event). After every operation the
//! heap's invariants are checked (`thread::validate_current`: the pools,
//! the pool classes' cache, the span segments), every live block still
//! holds what was written to it, and no two blocks overlap. At the end
//! every block is freed and the heap must hold no medium or large block.
//!
//! The heap outlives one input (it is the fuzzing thread's), so an input
//! starts from whatever the ones before it left free: segments kept,
//! units dirty or given back, blocks cached.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pymalloc::every_size::{self, EverySize};
use pymalloc::{config, thread, LibcFallback, PurgePolicy};

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

/// A request size from two bytes: mostly pool and medium sizes, some large
/// ones, a few huge ones (up to 2 MiB, as each is written whole).
fn size_of(a: u16) -> usize {
    let v = (a & 0x3fff) as usize;
    match a >> 14 {
        0 => 1 + v % 512,
        1 => 513 + v * 2 % (32 * 1024 - 512),
        2 => 32 * 1024 + 1 + v * 61,
        _ if v % 8 == 0 => 1008 * 1024 + 1 + v * 64,
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

fuzz_target!(|data: &[u8]| {
    let mut st = State { live: Vec::new(), spans: BTreeMap::new(), fill: 0 };
    for chunk in data.chunks_exact(3) {
        let a = u16::from_le_bytes([chunk[1], chunk[2]]);
        match chunk[0] % 8 {
            0..=2 => {
                // The front: the thread's cached block first.
                let n = size_of(a);
                let p = every_size::malloc_with::<F>(n);
                st.add(p, n, 16, false);
            }
            3 => {
                let n = size_of(a).max(1);
                let align = 1usize << (4 + chunk[0] as usize / 8 % 13);
                let zero = chunk[1] & 1 == 1;
                let p = every_size::alloc(n, align, zero);
                if zero && !p.is_null() {
                    // SAFETY: a fresh block of at least n bytes.
                    assert!(unsafe { std::slice::from_raw_parts(p, n) }.iter().all(|&b| b == 0), "calloc {n}");
                }
                st.add(p, n, align, align > 16);
            }
            4 if !st.live.is_empty() => {
                let i = chunk[1] as usize % st.live.len();
                if st.live[i].aligned {
                    continue;
                }
                let n = size_of(a.rotate_left(5));
                let old = st.take(i);
                // SAFETY: a live block of these paths, not used again.
                let q = unsafe { thread::realloc_with::<EverySize<F>>(old.ptr, n) };
                let kept = Live { ptr: q, size: old.size.min(n), fill: old.fill, aligned: false };
                check(&kept);
                st.add(q, n, 16, false);
            }
            5 | 6 if !st.live.is_empty() => {
                let b = st.take(a as usize % st.live.len());
                // Any block may go through the front; aligned ones past it too.
                // SAFETY: a live block of these paths, not used again.
                unsafe {
                    if b.aligned && chunk[0] & 8 == 0 {
                        every_size::free(b.ptr);
                    } else {
                        every_size::free_with::<F>(b.ptr);
                    }
                }
            }
            7 => match a % 16 {
                0 => {
                    every_size::release_free();
                }
                1 => {
                    thread::purge();
                }
                2 => config::set_purge_policy(match (a >> 4) % 4 {
                    0 => PurgePolicy::DEFAULT,
                    1 => PurgePolicy::Immediate,
                    2 => PurgePolicy::Never,
                    _ => PurgePolicy::Decay { ms: 0 },
                }),
                3 => {
                    let (n, s) = ((a >> 4) as usize % 64, chunk[1] as usize % 200);
                    let p = thread::calloc_with::<EverySize<F>>(n, s);
                    assert!(!p.is_null());
                    // SAFETY: a fresh block of at least n * s bytes.
                    assert!(unsafe { std::slice::from_raw_parts(p, n * s) }.iter().all(|&b| b == 0));
                    st.add(p, n * s, 16, false);
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
});
