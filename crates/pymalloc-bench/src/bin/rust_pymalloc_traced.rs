//! The Rust workloads with pymalloc's thread heaps under the tracer
//! (`Traced(PyMalloc)`). `TRACE_NFRAME=N` starts tracing with up to N frames
//! before the workload; unset or 0 leaves it off (the wrapper's cost alone).
//! `TRACE_SAMPLE=K` traces one block per K bytes on average instead of all.
#[global_allocator]
static A: pymalloc::trace::Traced<pymalloc::PyMalloc> = pymalloc::trace::Traced(pymalloc::PyMalloc);
#[path = "../workloads.rs"]
mod workloads;
fn main() {
    let n: usize = std::env::var("TRACE_NFRAME").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let k: usize = std::env::var("TRACE_SAMPLE").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    pymalloc::trace::set_sampling(k);
    if n > 0 {
        pymalloc::trace::start(n).expect("TRACE_NFRAME: 1 to 65535");
    }
    workloads::main()
}
