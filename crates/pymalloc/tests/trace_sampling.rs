//! The tracer's sampling mode under the Rust global allocator: about one
//! trace per K bytes, scaled estimates close to the real bytes, and frees
//! that untrack every sampled block. A process of its own.
#![cfg(not(miri))] // Miri: no unwinder

use pymalloc::snapshot::Snapshot;
use pymalloc::trace::{self, Traced};
use pymalloc::PyMalloc;

#[global_allocator]
static ALLOC: Traced<PyMalloc> = Traced(PyMalloc);

const K: usize = 4096;
const N: usize = 200_000;
const SIZE: usize = 64;

#[test]
fn one_trace_per_k_bytes_and_estimates_near_the_truth() {
    trace::set_sampling(K);
    assert_eq!(trace::sampling(), K);
    trace::start(1).unwrap();
    let blocks: Vec<Box<[u8; SIZE]>> = (0..N).map(|i| Box::new([i as u8; SIZE])).collect();
    let snap = Snapshot::take();
    assert_eq!(snap.sample_bytes, K);
    let ours: Vec<_> = snap.traces.iter().filter(|t| t.size == SIZE).collect();
    // About N * SIZE / K samples (3125); a Poisson count within 15 %.
    let want = (N * SIZE / K) as f64;
    assert!((ours.len() as f64 / want - 1.0).abs() < 0.15, "{} samples, {want} expected", ours.len());
    // Scaled, they estimate all the blocks' bytes.
    let scaled = snap.scaled();
    let est: usize = snap.traces.iter().zip(&scaled.traces).filter(|(t, _)| t.size == SIZE).map(|(_, s)| s.size).sum();
    let truth = (N * SIZE) as f64;
    assert!((est as f64 / truth - 1.0).abs() < 0.15, "estimate {est}, truth {truth}");
    // Dumped and loaded, the sampling mean comes back.
    let path = std::env::temp_dir().join(format!("pymalloc-sampled-{}.snap", std::process::id()));
    snap.dump(&path).unwrap();
    assert_eq!(Snapshot::load(&path).unwrap().sample_bytes, K);
    std::fs::remove_file(&path).unwrap();

    // Freeing every block untracks every sampled one (most frees skip the
    // tables: their blocks were never sampled).
    let before = trace::heap_stats().curr_blocks;
    drop(blocks);
    let after = trace::heap_stats().curr_blocks;
    assert!(before - after >= ours.len(), "{before} -> {after}, {} sampled", ours.len());
    trace::stop();
    trace::set_sampling(0);
}
