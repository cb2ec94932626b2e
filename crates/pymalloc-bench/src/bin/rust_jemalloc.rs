//! The Rust workloads with jemalloc (`tikv-jemallocator`) as the global allocator.
#[global_allocator]
static A: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[path = "../workloads.rs"]
mod workloads;
fn main() {
    workloads::main()
}
