//! pymalloc-gc against gcmodule, rust-cc, dumpster, bacon_rajan_cc (and
//! `std::rc::Rc` on the system allocator for acyclic work) on the same graph
//! shapes (`benches/peers`), all in one process: a quick look. A peer that
//! runs after others here works in the heap they left, which distorts it;
//! the README's tables come from `scripts/peer_bench.py`, which runs
//! `examples/gc_peer.rs` once per peer. CPython's own collector on the same
//! shapes is measured by `scripts/cpython_gc_bench.py`;
//! `scripts/bench_table.py` puts criterion's figures and CPython's into
//! one table.
//!
//! Groups (criterion reports time per iteration; divide by the parameter,
//! the object count, for ns/object, which `bench_table.py` does):
//!
//! * `alloc_drop`: allocate one object and drop it, `n` times: allocation
//!   plus drop without cycles, nothing alive at once.
//! * `acyclic_tree`: build a binary tree (children only) and drop it:
//!   allocation plus drop without cycles, all `n` alive at once (so the
//!   generational collector runs during the build, as CPython's does).
//! * `ring`, `tree_parent`, `random`: the graph is built untimed; timed is
//!   dropping the last outside handle plus one full collection.
//!
//! Everything runs on a thread with a 1 GiB stack: with the default stack,
//! the recursive collectors (dumpster, bacon_rajan_cc) overflow on the
//! deeper shapes at 10^6 objects, and there would be nothing to compare.
//!
//! `PYGC_BENCH_SIZES=100000,1000000` (default) selects the sizes.

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use std::time::Duration;

mod peers;
use peers::{ours, with_bacon, with_dumpster, with_gcmodule, with_rc, with_rust_cc};

fn sizes() -> Vec<usize> {
    std::env::var("PYGC_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().parse().expect("size")).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000])
}

macro_rules! cyclic {
    ($g:ident, $n:ident, $m:ident, $build:expr) => {
        $g.bench_with_input(BenchmarkId::new($m::LABEL, $n), &$n, |b, &n| {
            b.iter_batched(
                || $build(n),
                |root| {
                    drop(root);
                    $m::collect();
                },
                BatchSize::PerIteration,
            )
        });
    };
}

macro_rules! all_cyclic {
    ($c:ident, $name:expr, $shape:ident $(, $arg:expr)?) => {{
        let mut g = $c.benchmark_group($name);
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for n in sizes() {
            g.throughput(Throughput::Elements(n as u64));
            cyclic!(g, n, ours, |n| ours::$shape(n $(, $arg)?));
            cyclic!(g, n, with_gcmodule, |n| with_gcmodule::$shape(n $(, $arg)?));
            cyclic!(g, n, with_rust_cc, |n| with_rust_cc::$shape(n $(, $arg)?));
            cyclic!(g, n, with_dumpster, |n| with_dumpster::$shape(n $(, $arg)?));
            cyclic!(g, n, with_bacon, |n| with_bacon::$shape(n $(, $arg)?));
        }
        g.finish();
    }};
}

macro_rules! acyclic {
    ($g:ident, $n:ident, $m:ident) => {
        $g.bench_with_input(BenchmarkId::new($m::LABEL, $n), &$n, |b, &n| {
            b.iter(|| drop($m::tree(n, false)));
            $m::collect();
        });
    };
}

macro_rules! alloc_drop {
    ($g:ident, $n:ident, $m:ident) => {
        $g.bench_with_input(BenchmarkId::new($m::LABEL, $n), &$n, |b, &n| {
            b.iter(|| {
                for _ in 0..n {
                    drop(std::hint::black_box($m::node()));
                }
            });
            $m::collect();
        });
    };
}

fn benches(c: &mut Criterion) {
    {
        let mut g = c.benchmark_group("alloc_drop");
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for n in sizes() {
            g.throughput(Throughput::Elements(n as u64));
            alloc_drop!(g, n, with_rc);
            alloc_drop!(g, n, ours);
            alloc_drop!(g, n, with_gcmodule);
            alloc_drop!(g, n, with_rust_cc);
            alloc_drop!(g, n, with_dumpster);
            alloc_drop!(g, n, with_bacon);
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("acyclic_tree");
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for n in sizes() {
            g.throughput(Throughput::Elements(n as u64));
            acyclic!(g, n, with_rc);
            acyclic!(g, n, ours);
            g.bench_with_input(BenchmarkId::new("pymalloc-gc (gc disabled)", n), &n, |b, &n| {
                pymalloc_gc::gc::disable();
                b.iter(|| drop(ours::tree(n, false)));
                pymalloc_gc::gc::enable();
            });
            acyclic!(g, n, with_gcmodule);
            acyclic!(g, n, with_rust_cc);
            acyclic!(g, n, with_dumpster);
            acyclic!(g, n, with_bacon);
        }
        g.finish();
    }
    all_cyclic!(c, "ring", ring);
    all_cyclic!(c, "tree_parent", tree, true);
    all_cyclic!(c, "random", random);
}

fn main() {
    let h = std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(|| {
            let mut c = Criterion::default().configure_from_args();
            benches(&mut c);
            c.final_summary();
        })
        .expect("bench thread");
    h.join().expect("bench thread panicked");
}
