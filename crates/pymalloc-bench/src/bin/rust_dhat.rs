//! The Rust workloads under dhat-rs's heap profiler (`dhat::Alloc` over the
//! system allocator, a backtrace per allocation), for the tracer's overhead
//! against it. The profile is written to `DHAT_OUT` (default: a file in the
//! temporary directory) when the workload is over, outside its timing.
#[global_allocator]
static A: dhat::Alloc = dhat::Alloc;
#[path = "../workloads.rs"]
mod workloads;
fn main() {
    let out = std::env::var("DHAT_OUT").unwrap_or_else(|_| {
        std::env::temp_dir().join(format!("dhat-{}.json", std::process::id())).display().to_string()
    });
    let _profiler = dhat::Profiler::builder().file_name(&out).build();
    workloads::main()
}
