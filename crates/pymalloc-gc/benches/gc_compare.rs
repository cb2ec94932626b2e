//! pymalloc-gc against gcmodule, rust-cc, dumpster, bacon_rajan_cc (and
//! `std::rc::Rc` on the system allocator for acyclic work) on the same graph
//! shapes. CPython's own collector on the same shapes is measured by
//! `scripts/cpython_gc_bench.py`; `scripts/bench_table.py` puts both into
//! the table of the README.
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

/// xorshift64*: the same random graph for every implementation.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// One module per implementation, all with the same node (three optional
/// strong edges in `RefCell`s) and the same shapes.
macro_rules! shapes {
    ($modname:ident, $label:expr, $cc:ty, $new:expr, $collect:expr, [$($derive:path),*]) => {
        mod $modname {
            #![allow(dead_code)]
            use std::cell::RefCell;
            type Cc<T> = $cc;
            pub const LABEL: &str = $label;

            #[derive($($derive),*)]
            pub struct Node {
                pub a: RefCell<Option<Cc<Node>>>,
                pub b: RefCell<Option<Cc<Node>>>,
                pub c: RefCell<Option<Cc<Node>>>,
            }

            #[inline(always)]
            pub fn node() -> Cc<Node> {
                ($new)(Node {
                    a: RefCell::new(None),
                    b: RefCell::new(None),
                    c: RefCell::new(None),
                })
            }

            pub fn collect() {
                ($collect)()
            }

            pub fn ring(n: usize) -> Cc<Node> {
                let first = node();
                let mut last = first.clone();
                for _ in 1..n {
                    let x = node();
                    *last.a.borrow_mut() = Some(x.clone());
                    last = x;
                }
                *last.a.borrow_mut() = Some(first.clone());
                first
            }

            /// Binary tree in breadth-first order; `parent_links` adds the
            /// strong child-to-parent edge (every edge becomes a cycle).
            pub fn tree(n: usize, parent_links: bool) -> Cc<Node> {
                let nodes: Vec<Cc<Node>> = (0..n).map(|_| node()).collect();
                for i in 1..n {
                    let p = &nodes[(i - 1) / 2];
                    let slot = if i % 2 == 1 { &p.b } else { &p.c };
                    *slot.borrow_mut() = Some(nodes[i].clone());
                    if parent_links {
                        *nodes[i].a.borrow_mut() = Some(p.clone());
                    }
                }
                nodes[0].clone()
            }

            /// Every node has two edges to random nodes.
            pub fn random(n: usize) -> Cc<Node> {
                let mut rng = super::Rng(0x9E37_79B9_7F4A_7C15);
                let nodes: Vec<Cc<Node>> = (0..n).map(|_| node()).collect();
                for x in &nodes {
                    *x.a.borrow_mut() = Some(nodes[rng.next(n)].clone());
                    *x.b.borrow_mut() = Some(nodes[rng.next(n)].clone());
                }
                nodes[0].clone()
            }
        }
    };
}

shapes!(
    ours,
    "pymalloc-gc",
    pymalloc_gc::Cc<T>,
    pymalloc_gc::Cc::new,
    || {
        pymalloc_gc::gc::collect();
    },
    [pymalloc_gc::Trace]
);
shapes!(
    with_gcmodule,
    "gcmodule",
    gcmodule::Cc<T>,
    gcmodule::Cc::new,
    || {
        gcmodule::collect_thread_cycles();
    },
    []
);
shapes!(
    with_rust_cc,
    "rust-cc",
    rust_cc::Cc<T>,
    rust_cc::Cc::new,
    rust_cc::collect_cycles,
    [rust_cc::Trace, rust_cc::Finalize]
);
shapes!(with_dumpster, "dumpster", dumpster::unsync::Gc<T>, dumpster::unsync::Gc::new, dumpster::unsync::collect, []);
shapes!(
    with_bacon,
    "bacon_rajan_cc",
    bacon_rajan_cc::Cc<T>,
    bacon_rajan_cc::Cc::new,
    bacon_rajan_cc::collect_cycles,
    []
);
shapes!(with_rc, "Rc (system allocator)", std::rc::Rc<T>, std::rc::Rc::new, || (), []);

impl bacon_rajan_cc::Trace for with_bacon::Node {
    fn trace(&self, t: &mut bacon_rajan_cc::Tracer) {
        self.a.trace(t);
        self.b.trace(t);
        self.c.trace(t);
    }
}

// gcmodule's derive recurses forever in `is_type_tracked` on a
// self-referential type, so its Trace is written by hand.
impl gcmodule::Trace for with_gcmodule::Node {
    fn trace(&self, t: &mut gcmodule::Tracer) {
        self.a.trace(t);
        self.b.trace(t);
        self.c.trace(t);
    }
    fn is_type_tracked() -> bool {
        true
    }
}

// SAFETY: visits the three fields, each of which owns at most one Gc.
unsafe impl dumpster::Trace for with_dumpster::Node {
    fn accept<V: dumpster::Visitor>(&self, v: &mut V) -> Result<(), ()> {
        self.a.accept(v)?;
        self.b.accept(v)?;
        self.c.accept(v)
    }
}

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
