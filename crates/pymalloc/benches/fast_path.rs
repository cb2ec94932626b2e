//! Regression benches for the fast paths: one alloc-then-free pair per
//! iteration, through each entry point, with the C library for comparison.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pymalloc::{Domain, Heap, LockedHeap, PyMalloc};

fn pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc_free_pair");
    for size in [16usize, 64, 256, 512] {
        let mut heap = Heap::new();
        // Keep one block live so the pool stays and the pair is the pure fast path.
        let keep = heap.malloc(size);
        g.bench_with_input(BenchmarkId::new("heap", size), &size, |b, &n| {
            b.iter(|| {
                let p = heap.malloc(black_box(n));
                unsafe { heap.free(black_box(p)) };
            })
        });
        unsafe { heap.free(keep) };

        static LOCKED: LockedHeap = LockedHeap::new();
        g.bench_with_input(BenchmarkId::new("locked_heap", size), &size, |b, &n| {
            b.iter(|| {
                let p = LOCKED.malloc(black_box(n));
                unsafe { LOCKED.free(black_box(p)) };
            })
        });
        g.bench_with_input(BenchmarkId::new("domain_obj", size), &size, |b, &n| {
            b.iter(|| {
                let p = Domain::Obj.malloc(black_box(n));
                unsafe { Domain::Obj.free(black_box(p)) };
            })
        });
        let layout = Layout::from_size_align(size, 8).unwrap();
        g.bench_with_input(BenchmarkId::new("global_alloc", size), &layout, |b, &l| unsafe {
            b.iter(|| {
                let p = PyMalloc.alloc(black_box(l));
                PyMalloc.dealloc(black_box(p), l);
            })
        });
        g.bench_with_input(BenchmarkId::new("system", size), &layout, |b, &l| unsafe {
            b.iter(|| {
                let p = System.alloc(black_box(l));
                System.dealloc(black_box(p), l);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pairs);
criterion_main!(benches);
