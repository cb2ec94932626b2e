//! The Rust workloads with pymalloc-rs (per-thread heaps) as the global allocator.
#[global_allocator]
static A: pymalloc::PyMalloc = pymalloc::PyMalloc;
#[path = "../workloads.rs"]
mod workloads;
fn main() {
    workloads::main()
}
