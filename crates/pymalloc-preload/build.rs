//! Two things the linker does for the preload library, on GNU/Linux:
//!
//! * It links the unwinder statically (`libgcc_eh.a`, as
//!   `gcc -static-libgcc` does), so the library does not load
//!   `libgcc_s.so.1` into every program it is preloaded into: that shared
//!   library's pages are resident memory the program would not otherwise
//!   have. The unwinder is only there for Rust's panic machinery; its
//!   symbols stay local to this library.
//! * It lays out the text so that the code a program runs lies in one
//!   64 KiB window (`pymalloc-text-layout`'s script). A page fault on a file mapping
//!   makes the pages of the 64 KiB around it resident (the kernel's
//!   fault-around). Laid out by the linker's default, that code was spread
//!   over five windows among `std`'s panic and backtrace code: 236–244 KiB
//!   of the library's text resident in every program it was preloaded
//!   into. Grouped, it is 64 KiB in every program of the field's suite
//!   (test: `the_library_text_a_program_runs_is_one_window` in
//!   `tests/programs.rs`).

use pymalloc_text_layout::{link, script, Targets, C_START_UP, STATISTICS, STD_RUNTIME, TRACER};

/// Before the window: our code that runs only on request (statistics, the
/// tracer and its snapshots) and `std`'s environment reads, which run at
/// load only when tracing.
const COLD: &[&str] = &[STATISTICS, TRACER, "*(.text.*3std3env* .text.*3sys3env*)"];

/// The window: the exported entry points, the rest of our code, and what of
/// `std`, the C start-up objects and the unwinder runs in every program. It
/// holds 60 KB of code in the plain library (56 before `free` inlined the
/// medium free).
const FIRST: &[&str] = &[
    "*(.text.malloc .text.free .text.calloc .text.realloc .text.reallocarray)",
    "*(.text.posix_memalign .text.aligned_alloc .text.memalign .text.valloc .text.pvalloc)",
    "*(.text.malloc_usable_size .text._Zn* .text._Zd*)",
    "*(EXCLUDE_FILE(*libgcc_eh.a:*) .text.*pymalloc*)",
    STD_RUNTIME,
    C_START_UP,
    "*libgcc_eh.a:unwind-dw2-fde*.o(.text .text.*)",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.contains("linux-gnu") {
        return;
    }
    println!("cargo:rustc-link-lib=static:+verbatim=libgcc_eh.a");
    let out = std::process::Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .arg("-print-file-name=libgcc_eh.a")
        .output();
    if let Ok(o) = out {
        let path = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if let Some(dir) = std::path::Path::new(&path).parent() {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
    }
    link(&script(COLD, FIRST), Targets::Cdylib);
}
