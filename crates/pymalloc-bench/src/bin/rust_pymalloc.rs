//! The Rust workloads with pymalloc-rs (per-thread heaps) as the global allocator.
#[global_allocator]
static A: pymalloc::PyMalloc = pymalloc::PyMalloc;
#[path = "../workloads.rs"]
mod workloads;
fn main() {
    // As a program using the crate would: the thread that gives back what
    // the decay policy let go cold while the program makes no calls.
    pymalloc::config::start_background_decay();
    workloads::main()
}
