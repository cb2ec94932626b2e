//! The tracer's hooks in the C allocation API, compiled in only with the
//! `trace` feature: `libpymalloc_preload_trace.so` (the
//! `pymalloc-preload-trace` package, the same sources) has them,
//! `libpymalloc_preload.so` does not.
//!
//! Why two libraries: the unwinder and symbolizer (`backtrace`, gimli,
//! addr2line) grew the library's file from 2.4 to 4.3 MB, and the kernel's
//! fault-around made 160 KiB more of it resident in every program it was
//! preloaded into, tracing or not; checking the tracing flag cost 4.5
//! instructions per call (docs/every-size.md). heaptrack ships its preload
//! library apart for the same reason.

#[cfg(feature = "trace")]
use pymalloc::trace::{self, Source};

/// Whether `malloc` and `free` take the gated fast paths
/// (`pymalloc::every_size::malloc_gated`), which the tracer shuts while it
/// traces: with the feature. Their untraced fast paths are then the plain
/// library's, with no test of the tracing flag.
pub(crate) const GATED: bool = cfg!(feature = "trace");

/// Whether blocks are being traced (a constant false without the feature,
/// so the hooks below vanish).
#[inline(always)]
pub(crate) fn is_on() -> bool {
    #[cfg(feature = "trace")]
    return trace::is_tracing();
    #[cfg(not(feature = "trace"))]
    false
}

/// Records a block of `n` bytes at `p` (null: nothing).
#[inline(always)]
pub(crate) fn alloc(p: *mut u8, n: usize) {
    #[cfg(feature = "trace")]
    trace::record_alloc_in_caller(Source::Malloc, p, n);
    #[cfg(not(feature = "trace"))]
    let _ = (p, n);
}

/// Forgets the block at `p`.
#[inline(always)]
pub(crate) fn free(p: *mut u8) {
    #[cfg(feature = "trace")]
    trace::record_free(p);
    #[cfg(not(feature = "trace"))]
    let _ = p;
}

/// Starts tracing as `PYTHONTRACEMALLOC` says (`pymalloc::snapshot::
/// trace_from_env`). Without the feature, a request to trace is answered
/// with a line on stderr naming the library that traces, and the program
/// runs untraced.
pub(crate) fn start_from_env() -> Result<(), String> {
    #[cfg(feature = "trace")]
    return pymalloc::snapshot::trace_from_env().map(|_| ());
    #[cfg(not(feature = "trace"))]
    {
        if crate::lifecycle::env(c"PYTHONTRACEMALLOC").is_some_and(|n| !n.is_empty() && n != "0") {
            eprintln!(
                "libpymalloc_preload: PYTHONTRACEMALLOC is set, but this library does not trace; \
                 preload libpymalloc_preload_trace.so to trace"
            );
        }
        Ok(())
    }
}
