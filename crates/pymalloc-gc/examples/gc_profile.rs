//! A fixed workload for profiling (`valgrind --tool=callgrind`): build a
//! ring or an acyclic tree, then drop and collect it, with the node and the
//! shapes of the GC comparison (`benches/peers`).
//!
//! `cargo run --release -p pymalloc-gc --example gc_profile -- ring 100000`
//! (shapes: `ring`, `acyclic`, `acyclic-nogc`, `alloc-drop`, and `acyclic-rc` with
//! `std::rc::Rc` on the system allocator)

#[path = "../benches/peers/mod.rs"]
mod peers;
use peers::{ours, with_rc};

#[inline(never)]
fn drop_and_collect(root: pymalloc_gc::Cc<ours::Node>) -> usize {
    drop(root);
    pymalloc_gc::gc::collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shape = args.get(1).map(String::as_str).unwrap_or("ring");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    match shape {
        "ring" => {
            let r = ours::ring(n);
            let found = drop_and_collect(r);
            assert_eq!(found, n);
        }
        "acyclic" => drop(ours::tree(n, false)),
        "acyclic-nogc" => {
            pymalloc_gc::gc::disable();
            drop(ours::tree(n, false))
        }
        "acyclic-rc" => drop(with_rc::tree(n, false)),
        "alloc-drop" => {
            for _ in 0..n {
                drop(std::hint::black_box(ours::node()));
            }
        }
        _ => panic!("shape: ring, acyclic, acyclic-nogc, acyclic-rc or alloc-drop"),
    }
}
