//! The Rust workloads with glibc (std's System) as the global allocator.
#[global_allocator]
static A: std::alloc::System = std::alloc::System;
#[path = "../workloads.rs"]
mod workloads;
fn main() {
    workloads::main()
}
