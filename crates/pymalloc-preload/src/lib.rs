//! `libpymalloc_preload.so`: pymalloc as the C library's allocator of any
//! program, loaded with `LD_PRELOAD`.
//!
//! ```text
//! LD_PRELOAD=target/release/libpymalloc_preload.so some-program ...
//! ```
//!
//! * `api.rs`: the exported C allocation API (`malloc`, `free`, `calloc`,
//!   `realloc`, `reallocarray`, `posix_memalign`, `aligned_alloc`,
//!   `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`); C++'s `new`
//!   and `delete` reach it through libstdc++.
//! * `introspect.rs`: glibc's questions about the heap (`malloc_trim`,
//!   `mallinfo2`, `mallinfo`, `malloc_stats`), answered for pymalloc's
//!   heaps and glibc's together.
//! * `cxx.rs`: C++'s `operator new` and `operator delete` (every form),
//!   straight to the same paths, with C++'s failure rules.
//! * `underneath.rs`: glibc's own allocator, reached by its `__libc_*`
//!   names, which serves what pymalloc does not (for now, requests above
//!   512 bytes and alignments above 16), the blocks glibc handed out before
//!   this library was in charge, and this library's own Rust allocations.
//! * `lifecycle.rs`: what happens at load (the `PYMALLOC_PURGE` policy, the
//!   `fork` handlers, tracing) and at exit (statistics on request).
//! * `traced.rs`: the tracer's hooks, compiled in with the `trace` feature
//!   only (`libpymalloc_preload_trace.so`, package
//!   `pymalloc-preload-trace`).
//!
//! Small requests are the thread heaps' (`pymalloc::thread`): one heap per
//! thread, no lock on the fast paths, frees from other threads queued to
//! the owner. Whether a pointer is pymalloc's is an O(1) address test, so a
//! block from anywhere else is handed to glibc whole.

#![warn(clippy::undocumented_unsafe_blocks)]

mod api;
mod cxx;
mod introspect;
mod lifecycle;
mod traced;
mod underneath;

/// This library's own Rust allocations (the thread-exit registration of
/// `std`, statistics text) go to glibc directly, never through the `malloc`
/// this library exports.
#[global_allocator]
static UNDERNEATH: underneath::GlibcGlobal = underneath::GlibcGlobal;
