//! The Rust workloads with mimalloc (the `mimalloc` crate) as the global allocator.
#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[path = "../workloads.rs"]
mod workloads;
fn main() {
    workloads::main()
}
