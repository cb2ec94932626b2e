//! Two things the linker does for the preload library, on GNU/Linux:
//!
//! * It links the unwinder statically (`pymalloc-text-layout`'s
//!   `link_unwinder_statically`), so the library does not load
//!   `libgcc_s.so.1` into every program it is preloaded into.
//! * It lays out the text so that the code a program runs lies in one
//!   64 KiB window (`pymalloc-text-layout`'s script). A page fault on a file mapping
//!   makes the pages of the 64 KiB around it resident (the kernel's
//!   fault-around). Laid out by the linker's default, that code was spread
//!   over five windows among `std`'s panic and backtrace code: 236–244 KiB
//!   of the library's text resident in every program it was preloaded
//!   into. Grouped, it is 64 KiB in every program of the field's suite
//!   (test: `the_library_text_a_program_runs_is_one_window` in
//!   `tests/programs.rs`).

use pymalloc_text_layout::{
    link, link_unwinder_statically, listed_first, script, Targets, C_START_UP, STATISTICS, STD_RUNTIME, TRACER,
    UNWINDER_START_UP,
};

/// Before the window: our code that runs only on request (statistics, the
/// tracer and its snapshots, glibc's questions about the heap) and `std`'s environment reads, which run at
/// load only when tracing.
const COLD: &[&str] = &[
    STATISTICS,
    TRACER,
    "*(.text.*3std3env* .text.*3sys3env*)",
    "*(.text.malloc_trim .text.mallinfo .text.mallinfo2 .text.malloc_stats .text.*10introspect*)",
];

/// The window's head: the exported entry points, then (`listed_first`) the
/// functions programs run under the library execute, `text-order.txt`.
const ENTRY_POINTS: &[&str] = &[
    "*(.text.malloc .text.free .text.calloc .text.realloc .text.reallocarray)",
    "*(.text.posix_memalign .text.aligned_alloc .text.memalign .text.valloc .text.pvalloc)",
    "*(.text.malloc_usable_size .text._Znwm .text._Znam .text._Zd*)",
];

/// C++'s `nothrow` and over-aligned `new`, which few programs call: after
/// the window, with the code that runs only in some programs. (Every
/// `delete` stays in the window: the linker folds the identical ones, and
/// the section it keeps for `operator delete(void*, size_t)` may be that of
/// an over-aligned one.)
const RARE_ENTRY_POINTS: &str = "*(.text._Zn*)";

/// The window's rest: what of `std` and the C start-up objects runs in
/// every program (their functions share a section per object, which the
/// list cannot name), then our other code, then what runs only on request:
/// the rare C++ entry points and the unwinder (a panic, or the tracer's
/// fallback walk; the C start-up does not register unwind tables with it).
/// With all our code here by module alone, the code a program ran filled
/// the window to its last few hundred bytes (72 KB of the section, 60 of
/// them two sessions before): one more path (huge blocks that move their
/// pages) made it two windows, 128 KiB resident. The unwinder's object
/// (7 KiB) lay at the window's end until 2026-12-07, when the pool-emptying
/// and decay paths joined the list and pushed it out.
const REST: &[&str] = &[
    STD_RUNTIME,
    C_START_UP,
    "*(EXCLUDE_FILE(*libgcc_eh.a:*) .text.*pymalloc*)",
    RARE_ENTRY_POINTS,
    UNWINDER_START_UP,
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.contains("linux-gnu") {
        return;
    }
    link_unwinder_statically();
    // The tracing library (pymalloc-preload-trace) runs this script from
    // this folder: the list is pymalloc-preload's either way.
    let listed = listed_first("../pymalloc-preload/text-order.txt");
    let first: Vec<&str> =
        ENTRY_POINTS.iter().copied().chain(listed.iter().map(String::as_str)).chain(REST.iter().copied()).collect();
    link(&script(COLD, &first), Targets::Cdylib);
}
