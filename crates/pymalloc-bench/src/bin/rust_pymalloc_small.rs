//! The Rust workloads with pymalloc-rs serving only blocks of up to 512
//! bytes (the rest from the C library) as the global allocator: the
//! before-picture of `rust_pymalloc`, which serves every size.
#[global_allocator]
static A: pymalloc::PyMallocSmall = pymalloc::PyMallocSmall;
#[path = "../workloads.rs"]
mod workloads;
fn main() {
    pymalloc::config::start_background_decay();
    workloads::main()
}
