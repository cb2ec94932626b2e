//! The gated fast paths: the C fronts' (`every_size::malloc_gated`,
//! `free_gated`, `malloc_cached_gated`), which the tracing preload
//! library's `malloc` and `free` are, and the Rust global allocator's
//! (`trace::TraceGate` for `PyMalloc` and `PyMallocSmall`, which
//! `Traced<A>` calls): while tracing is off they serve the thread's cached blocks
//! as `malloc_with` and `free_with` do; from `trace::start` to
//! `trace::stop` every call goes to the slow path the front names (which
//! traces), so that the untraced fast path needs no test of the tracing
//! flag. A process of its own: tracing is process-wide.
#![cfg(not(miri))] // the tracer's unwinder reads the process's own text

mod common;

use std::alloc::Layout;
use std::sync::atomic::{AtomicUsize, Ordering};

use pymalloc::every_size;
use pymalloc::trace::{Flagged, TraceGate};
use pymalloc::{trace, LibcFallback, PyMalloc, PyMallocSmall};

/// The tests of this file switch tracing, process-wide: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

static SLOW_MALLOCS: AtomicUsize = AtomicUsize::new(0);
static SLOW_FREES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn slow_malloc(n: usize) -> *mut u8 {
    SLOW_MALLOCS.fetch_add(1, Ordering::Relaxed);
    every_size::malloc_uncached::<LibcFallback>(n)
}

unsafe extern "C" fn slow_free(p: *mut u8) {
    SLOW_FREES.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the caller's contract is free_uncached's.
    unsafe { every_size::free_uncached::<LibcFallback>(p) }
}

fn malloc(n: usize) -> *mut u8 {
    every_size::malloc_gated::<LibcFallback>(n, slow_malloc)
}

fn free(p: *mut u8) {
    // SAFETY: the test's blocks are live from malloc and not used again.
    unsafe { every_size::free_gated::<LibcFallback>(p, slow_free) }
}

/// (slow mallocs, slow frees) made by `f`.
fn slow_calls(f: impl FnOnce()) -> (usize, usize) {
    let (m, f0) = (SLOW_MALLOCS.load(Ordering::Relaxed), SLOW_FREES.load(Ordering::Relaxed));
    f();
    (SLOW_MALLOCS.load(Ordering::Relaxed) - m, SLOW_FREES.load(Ordering::Relaxed) - f0)
}

#[test]
fn tracing_shuts_the_gated_fast_paths_and_stopping_opens_them() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // This thread's heap, made by a first request.
    free(malloc(64));
    // A pool class and a medium class each, all different.
    let sizes = [16, 100, 512, 513, 700, 1000, 4096];
    let cached_blocks = pymalloc::regions_reserved();

    // Open: a freed block of each size is cached and handed out again
    // without either slow path (with the regions; without them no block
    // is a thread's own by the block map, and every free is slow). A spare
    // block of each class keeps its pool or span in use.
    let blocks: Vec<*mut u8> = sizes.iter().map(|&n| malloc(n)).collect();
    let spare: Vec<*mut u8> = sizes.iter().map(|&n| malloc(n)).collect();
    assert!(blocks.iter().chain(&spare).all(|p| !p.is_null()));
    let (_, frees) = slow_calls(|| blocks.iter().rev().for_each(|&p| free(p)));
    if cached_blocks {
        assert_eq!(frees, 0, "an open gate's free of the thread's own blocks took the slow path");
        let (mallocs, _) = slow_calls(|| {
            for (&n, &p) in sizes.iter().zip(&blocks) {
                assert_eq!(malloc(n), p, "{n} bytes: not the cached block");
            }
        });
        assert_eq!(mallocs, 0, "an open gate's malloc of a cached class took the slow path");
        blocks.iter().rev().for_each(|&p| free(p));
        for (&n, &p) in sizes.iter().zip(&blocks) {
            assert_eq!(every_size::malloc_cached_gated(n), p, "{n} bytes");
        }
        blocks.iter().rev().for_each(|&p| free(p));
    } else {
        assert_eq!(frees, sizes.len());
        common::without_regions();
    }

    trace::start(1).unwrap();
    // Shut: every size goes to the slow path, the cached ones included (0
    // and 40,000, above the medium classes, took it before), and so does
    // every free. (The slow path may hand out the cached blocks: it is the
    // whole allocator.)
    let (mallocs, _) = slow_calls(|| {
        for &n in &sizes {
            assert!(every_size::malloc_cached_gated(n).is_null(), "{n} bytes: a cached block while tracing");
        }
    });
    assert_eq!(mallocs, 0, "malloc_cached_gated calls nothing");
    let mut traced = Vec::new();
    let (mallocs, _) = slow_calls(|| traced = sizes.iter().chain(&[0, 40_000]).map(|&n| malloc(n)).collect());
    assert_eq!(mallocs, sizes.len() + 2, "a request past a shut gate took the fast path");
    let (_, frees) = slow_calls(|| traced.iter().filter(|p| !p.is_null()).for_each(|&p| free(p)));
    assert_eq!(frees, traced.iter().filter(|p| !p.is_null()).count(), "a free past a shut gate took the fast path");
    trace::stop();

    // Open again: the thread's cached blocks are handed out without a
    // slow call.
    let mut again = Vec::new();
    let (mallocs, _) = slow_calls(|| again = sizes.iter().map(|&n| malloc(n)).collect());
    assert!(again.iter().all(|p| !p.is_null()));
    if cached_blocks {
        assert_eq!(mallocs, 0, "a malloc after stop took the slow path");
        let (_, frees) = slow_calls(|| again.iter().for_each(|&p| free(p)));
        assert_eq!(frees, 0, "a free after stop took the slow path");
    } else {
        again.iter().for_each(|&p| free(p));
    }
    spare.iter().for_each(|&p| free(p));
    pymalloc::thread::validate_current().unwrap();
}

/// A `start` and a `stop` at the same moment leave the gate as the flag
/// says: shut if tracing is on (else a thread's frees would take the fast
/// path and leave their traces behind), open if it is off. Checked after
/// each of many rounds in which one thread starts and another stops.
#[test]
fn racing_start_and_stop_leave_the_gate_as_the_flag_says() {
    use std::sync::{Arc, Barrier};
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    free(malloc(64));
    const ROUNDS: usize = 2000;
    let go = Arc::new(Barrier::new(3));
    let done = Arc::new(Barrier::new(3));
    let switch = |start: bool| {
        let (go, done) = (go.clone(), done.clone());
        std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                go.wait();
                if start {
                    trace::start(1).unwrap();
                } else {
                    trace::stop();
                }
                done.wait();
            }
        })
    };
    let (a, b) = (switch(true), switch(false));
    for round in 0..ROUNDS {
        go.wait();
        done.wait();
        let shut = every_size::malloc_cached_gated(64).is_null() && {
            let (_, frees) = slow_calls(|| free(malloc(64)));
            frees == 1 || !pymalloc::regions_reserved()
        };
        if trace::is_tracing() {
            assert!(shut, "round {round}: tracing on and the gate open");
        } else {
            // Open: a freed block of the class is cached and comes back
            // (without the regions no block is cached by the block map).
            let p = malloc(64);
            free(p);
            if pymalloc::regions_reserved() {
                assert_eq!(every_size::malloc_cached_gated(64), p, "round {round}: tracing off and the gate shut");
                free(p);
            }
        }
    }
    a.join().unwrap();
    b.join().unwrap();
    trace::stop();
}

// ---- the Rust global allocator's gate ----

static RUST_TRACED: AtomicUsize = AtomicUsize::new(0);

/// Traced-path calls made by `f` through [`through_gate`]'s paths.
fn rust_traced_calls(f: impl FnOnce()) -> usize {
    let before = RUST_TRACED.load(Ordering::Relaxed);
    f();
    RUST_TRACED.load(Ordering::Relaxed) - before
}

/// `a`'s allocation, free and `realloc` as `Traced<A>` makes them, with a
/// traced path that counts its calls and then makes the plain one.
struct ThroughGate<'a, A>(&'a A);

impl<A: TraceGate> ThroughGate<'_, A> {
    fn alloc(&self, l: Layout, zeroed: bool) -> *mut u8 {
        let a = self.0;
        // SAFETY: non-zero sizes only (the test's layouts).
        unsafe {
            a.alloc_or(l, zeroed, |l, z| {
                RUST_TRACED.fetch_add(1, Ordering::Relaxed);
                if z {
                    a.alloc_zeroed(l)
                } else {
                    a.alloc(l)
                }
            })
        }
    }
    fn dealloc(&self, p: *mut u8, l: Layout) {
        let a = self.0;
        // SAFETY: the test's blocks are live from `alloc` with `l`.
        unsafe {
            a.dealloc_or(p, l, |p, l| {
                RUST_TRACED.fetch_add(1, Ordering::Relaxed);
                a.dealloc(p, l)
            })
        }
    }
    fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let a = self.0;
        // SAFETY: as for dealloc.
        unsafe {
            a.realloc_or(p, l, n, |p, l, n| {
                RUST_TRACED.fetch_add(1, Ordering::Relaxed);
                a.realloc(p, l, n)
            })
        }
    }
}

/// The gate of `Traced<PyMalloc>` and `Traced<PyMallocSmall>`: while
/// tracing is off, a block the thread's cache holds is handed out and a
/// block of the thread's own is freed without the traced path (and so
/// without a test of the tracing flag); from `trace::start` to
/// `trace::stop` every allocation (pool, medium and large sizes, a large
/// alignment, zeroed), every free and every `realloc` takes it.
#[test]
fn tracing_shuts_the_rust_allocators_fast_paths_and_stopping_opens_them() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    check_rust_gate(&ThroughGate(&PyMalloc), &[16, 100, 512, 700, 4096]);
    check_rust_gate(&ThroughGate(&PyMallocSmall), &[16, 100, 512]);
}

/// [`tracing_shuts_the_rust_allocators_fast_paths_and_stopping_opens_them`]
/// for one allocator, whose heaps serve blocks of `cached` sizes from the
/// thread's cache.
fn check_rust_gate<A: TraceGate>(a: &ThroughGate<'_, A>, cached: &[usize]) {
    let layout = |n: usize| Layout::from_size_align(n, 8).unwrap();
    // This thread's heap, made by a first request.
    a.dealloc(a.alloc(layout(64), false), layout(64));
    let with_regions = pymalloc::regions_reserved();

    // Open: a freed block of each size comes back from the cache, neither
    // path traced (without the regions the block map knows no block, and
    // the free takes the traced path). A spare block of each size keeps
    // its pool or span in use.
    let spare: Vec<*mut u8> = cached.iter().map(|&n| a.alloc(layout(n), false)).collect();
    let blocks: Vec<*mut u8> = cached.iter().map(|&n| a.alloc(layout(n), false)).collect();
    assert!(blocks.iter().chain(&spare).all(|p| !p.is_null()));
    let frees = rust_traced_calls(|| cached.iter().zip(&blocks).rev().for_each(|(&n, &p)| a.dealloc(p, layout(n))));
    if with_regions {
        assert_eq!(frees, 0, "an open gate's free of the thread's own block took the traced path");
    } else {
        assert_eq!(frees, cached.len());
    }
    let mut again = Vec::new();
    let allocs = rust_traced_calls(|| again = cached.iter().map(|&n| a.alloc(layout(n), false)).collect());
    assert_eq!(allocs, 0, "an open gate's allocation of a cached class took the traced path");
    if with_regions {
        assert_eq!(again, blocks, "not the cached blocks");
    }
    // A realloc within the class stays, untraced.
    let q = rust_traced_calls(|| assert_eq!(a.realloc(again[0], layout(16), 10), again[0]));
    assert_eq!(q, 0, "an open gate's realloc within the class took the traced path");
    let l10 = layout(10);
    a.dealloc(again[0], l10);
    cached.iter().zip(&again).skip(1).for_each(|(&n, &p)| a.dealloc(p, layout(n)));

    trace::start(1).unwrap();
    // Shut: every request takes the traced path, the cached sizes
    // included, and so does every free and realloc.
    let requests: Vec<(Layout, bool)> = cached
        .iter()
        .chain(&[513, 40_000, 1 << 20])
        .map(|&n| (layout(n), false))
        .chain([(Layout::from_size_align(32, 64).unwrap(), false), (layout(48), true), (layout(2000), true)])
        .collect();
    let mut traced = Vec::new();
    let allocs = rust_traced_calls(|| traced = requests.iter().map(|&(l, z)| a.alloc(l, z)).collect());
    assert_eq!(allocs, requests.len(), "a request past a shut gate took the fast path");
    assert!(traced.iter().all(|p| !p.is_null()));
    for (&(l, z), &p) in requests.iter().zip(&traced) {
        if z {
            // SAFETY: p holds l.size() bytes.
            assert!(unsafe { std::slice::from_raw_parts(p, l.size()) }.iter().all(|&b| b == 0), "{l:?} not zeroed");
        }
    }
    let r = rust_traced_calls(|| assert_eq!(a.realloc(traced[0], requests[0].0, 10), traced[0]));
    assert_eq!(r, 1, "a realloc within its class past a shut gate took the fast path");
    let frees = rust_traced_calls(|| {
        a.dealloc(traced[0], l10);
        requests.iter().zip(&traced).skip(1).for_each(|(&(l, _), &p)| a.dealloc(p, l));
    });
    assert_eq!(frees, requests.len(), "a free past a shut gate took the fast path");
    trace::stop();

    // Open again: the cache's blocks come back untraced.
    let mut after = Vec::new();
    let allocs = rust_traced_calls(|| after = cached.iter().map(|&n| a.alloc(layout(n), false)).collect());
    assert_eq!(allocs, 0, "an allocation after stop took the traced path");
    let frees = rust_traced_calls(|| cached.iter().zip(&after).for_each(|(&n, &p)| a.dealloc(p, layout(n))));
    assert_eq!(frees, if with_regions { 0 } else { cached.len() }, "a free after stop took the traced path");
    cached.iter().zip(&spare).for_each(|(&n, &p)| a.dealloc(p, layout(n)));
    pymalloc::thread::validate_current().unwrap();
}

/// Another allocator, through `Flagged` (`TraceGate`'s provided methods):
/// no traced call while tracing is off, every call traced while it is on.
#[test]
fn a_flagged_allocator_takes_the_traced_path_exactly_while_tracing() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let a = ThroughGate(&Flagged(std::alloc::System));
    let l = Layout::from_size_align(100, 8).unwrap();
    let round = || {
        let p = a.alloc(l, false);
        let p = a.realloc(p, l, 200);
        a.dealloc(p, Layout::from_size_align(200, 8).unwrap());
    };
    assert_eq!(rust_traced_calls(round), 0, "traced while off");
    trace::start(1).unwrap();
    let on = rust_traced_calls(round);
    trace::stop();
    assert_eq!(on, 3, "an allocation, a realloc and a free while tracing");
    assert_eq!(rust_traced_calls(round), 0, "traced after stop");
}
