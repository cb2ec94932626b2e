//! One peer of the GC comparison in a process of its own: measuring
//! several collectors in one process distorts the later ones (their
//! allocator and heap state is what the earlier ones left), so
//! `scripts/peer_bench.py` runs this once per peer, shape, size and round,
//! alternating the peers, and takes medians; under callgrind it gives the
//! instructions of the timed part alone (`--toggle-collect='gc_peer::timed*'`).
//!
//! `gc_peer PEER SHAPE N [REPS] [WARMUP]` prints one JSON line with the
//! median nanoseconds per object over REPS repetitions (default 5) of the
//! timed part, after WARMUP repetitions (default 1) that are neither timed
//! nor counted by callgrind (so that, as in criterion's iterations, the
//! collectors run in the state their own previous repetition left):
//!
//! * peers: `pymalloc-gc`, `pymalloc-gc-nogc` (automatic collection off;
//!   `acyclic_tree` only), `gcmodule`, `rust-cc`, `dumpster`,
//!   `bacon_rajan_cc`, `rc` (`std::rc::Rc` on the system allocator;
//!   `alloc_drop` and `acyclic_tree` only);
//! * shapes (those of `benches/gc_compare.rs`): `alloc_drop` and
//!   `acyclic_tree` (all of it timed), `ring`, `tree_parent`, `random` (the
//!   graph built untimed; timed: dropping its last outside handle plus one
//!   full collection).
//!
//! It runs on a thread with a 1 GiB stack, as the benchmark: the recursive
//! collectors overflow the default stack on the deeper shapes at 10^6.

use std::hint::black_box;
use std::time::Instant;

#[path = "../benches/peers/mod.rs"]
mod peers;
use peers::{ours, with_bacon, with_dumpster, with_gcmodule, with_rc, with_rust_cc};

/// The timed part (a function of its own, so that callgrind can count it
/// alone).
#[inline(never)]
fn timed(work: &mut dyn FnMut()) -> u128 {
    let t0 = Instant::now();
    work();
    t0.elapsed().as_nanos()
}

/// Runs `warmup` then `reps` repetitions of `setup` (building the graph)
/// then `work`; returns the time of `work` in each of the `reps` (the only
/// ones that go through `timed`).
fn measure<S>((reps, warmup): (usize, usize), mut setup: impl FnMut() -> S, mut work: impl FnMut(S)) -> Vec<u128> {
    for _ in 0..warmup {
        work(setup());
    }
    let mut times = Vec::new();
    for _ in 0..reps {
        let mut state = Some(setup());
        times.push(timed(&mut || work(state.take().expect("one run per setup"))));
    }
    times
}

macro_rules! run {
    ($m:ident, $shape:expr, $n:expr, $reps:expr, $cyclic:expr) => {{
        let n: usize = $n;
        match $shape {
            "alloc_drop" => measure(
                $reps,
                || (),
                |()| {
                    for _ in 0..n {
                        drop(black_box($m::node()));
                    }
                },
            ),
            "acyclic_tree" => measure($reps, || (), |()| drop($m::tree(n, false))),
            "ring" if $cyclic => measure($reps, || $m::ring(n), |root| cyclic_drop(root, $m::collect)),
            "tree_parent" if $cyclic => measure($reps, || $m::tree(n, true), |root| cyclic_drop(root, $m::collect)),
            "random" if $cyclic => measure($reps, || $m::random(n), |root| cyclic_drop(root, $m::collect)),
            s => panic!("shape {s}: alloc_drop, acyclic_tree, ring, tree_parent or random (not every peer has all)"),
        }
    }};
}

/// Drops the last outside handle of a graph, then collects.
#[inline(always)]
fn cyclic_drop<R>(root: R, collect: fn()) {
    drop(root);
    collect();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: gc_peer PEER SHAPE N [REPS] [WARMUP]");
        std::process::exit(2);
    }
    let (peer, shape) = (args[1].clone(), args[2].clone());
    let n: usize = args[3].parse().expect("N");
    let reps: usize = args.get(4).map_or(5, |r| r.parse().expect("REPS"));
    let warmup: usize = args.get(5).map_or(1, |r| r.parse().expect("WARMUP"));
    let reps = (reps, warmup);
    let h = std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || {
            let s = shape.as_str();
            let times = match peer.as_str() {
                "pymalloc-gc" => run!(ours, s, n, reps, true),
                "pymalloc-gc-nogc" => {
                    pymalloc_gc::gc::disable();
                    run!(ours, s, n, reps, false)
                }
                "gcmodule" => run!(with_gcmodule, s, n, reps, true),
                "rust-cc" => run!(with_rust_cc, s, n, reps, true),
                "dumpster" => run!(with_dumpster, s, n, reps, true),
                "bacon_rajan_cc" => run!(with_bacon, s, n, reps, true),
                "rc" => run!(with_rc, s, n, reps, false),
                p => panic!("peer {p}: pymalloc-gc, pymalloc-gc-nogc, gcmodule, rust-cc, dumpster, bacon_rajan_cc or rc"),
            };
            let mut per: Vec<f64> = times.iter().map(|&t| t as f64 / n as f64).collect();
            per.sort_by(f64::total_cmp);
            let median = per[per.len() / 2];
            let all: Vec<String> = per.iter().map(|x| format!("{x:.2}")).collect();
            println!(
                "{{\"peer\": \"{peer}\", \"shape\": \"{s}\", \"n\": {n}, \"ns_per_object\": {median:.3}, \"reps\": [{}]}}",
                all.join(", ")
            );
        })
        .expect("thread");
    h.join().expect("peer run panicked");
}
