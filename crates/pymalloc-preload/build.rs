//! Two things the linker does for the preload library, on GNU/Linux:
//!
//! * It links the unwinder statically (`libgcc_eh.a`, as
//!   `gcc -static-libgcc` does), so the library does not load
//!   `libgcc_s.so.1` into every program it is preloaded into: that shared
//!   library's pages are resident memory the program would not otherwise
//!   have. The unwinder is only there for Rust's panic machinery; its
//!   symbols stay local to this library.
//! * It lays out the text so that the code a program runs lies in one
//!   64 KiB window (`first_code.ld`, below). A page fault on a file mapping
//!   makes the pages of the 64 KiB around it resident (the kernel's
//!   fault-around). Laid out by the linker's default, that code was spread
//!   over five windows among `std`'s panic and backtrace code: 236–244 KiB
//!   of the library's text resident in every program it was preloaded
//!   into. Grouped, it is 64 KiB in every program of the field's suite
//!   (test: `the_library_text_a_program_runs_is_one_window` in
//!   `tests/programs.rs`).

use std::path::PathBuf;

/// Section names are `.text.<symbol>` (Rust and C compile each function
/// into a section of its own), and a section goes to the first output
/// section whose pattern it matches, in the order below.
///
/// * `.text.pymalloc_cold`, before the window: code of ours that runs only
///   on request (statistics, the tracer and its snapshots), and `std`'s
///   environment reads, which run at load only when tracing.
/// * The window, aligned to 64 KiB: `.init`, `.fini` and the PLT (every
///   call into libc goes through it), the exported entry points, the rest
///   of our code, and what of `std`, the C start-up objects and the
///   unwinder runs in every program: the argument capture at load,
///   thread-local destructors, `Once` and the futex locks, `atexit` and
///   `pthread_atfork` from `libc_nonshared.a`, and the registration of
///   this library's unwind tables by `crtbegin`.
///
/// `INSERT` keeps the linker's default layout for everything else. The
/// window holds 56 KB of code in the plain library.
const FIRST_CODE: &str = "\
SECTIONS
{
  .text.pymalloc_cold :
  {
    *(.text.*pymalloc*stats* .text.*pymalloc*4heap7inspect*)
    *(.text.*8pymalloc5trace* .text.*pymalloc..trace..* .text.*8pymalloc8snapshot* .text.*pymalloc..snapshot..*)
    *(.text.*3std3env* .text.*3sys3env*)
  }
}
INSERT BEFORE .text;
SECTIONS
{
  .init ALIGN(0x10000) : { KEEP(*(SORT_NONE(.init))) }
  .fini : { KEEP(*(SORT_NONE(.fini))) }
  .plt : { *(.plt) *(.iplt) }
  .text.pymalloc_first :
  {
    *(.text.malloc .text.free .text.calloc .text.realloc .text.reallocarray)
    *(.text.posix_memalign .text.aligned_alloc .text.memalign .text.valloc .text.pvalloc)
    *(.text.malloc_usable_size .text._Zn* .text._Zd*)
    *(EXCLUDE_FILE(*libgcc_eh.a:*) .text.*pymalloc*)
    *(.text.*ARGV_INIT_ARRAY*)
    *(.text.*thread_local*)
    *(.text.*3sys4sync* .text.*4sync4once*)
    *(.text.*3pal4unix5futex*)
    *crtbegin*.o(.text .text.*)
    *libc_nonshared.a:*(.text .text.*)
    *libgcc_eh.a:unwind-dw2-fde*.o(.text .text.*)
  }
}
INSERT BEFORE .text;
";

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
    let script = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("first_code.ld");
    std::fs::write(&script, FIRST_CODE).expect("write the linker script");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{}", script.display());
}
