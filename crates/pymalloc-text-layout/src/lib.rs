//! Build support for the preload library and the launcher (GNU/Linux): a
//! linker script that lays their text out so that the code a run executes
//! lies in adjacent 64 KiB windows.
//!
//! A page fault on a file mapping makes the pages of the 64 KiB around it
//! resident (the kernel's fault-around). Laid out by the linker's default,
//! the code a run executes is spread among code that never runs (`std`'s
//! panic and backtrace machinery, the tracer, the statistics), and nearly
//! the whole text ends up resident in every process.
//!
//! Section names are `.text.<symbol>` (Rust and C compile each function
//! into a section of its own), and a section goes to the first output
//! section whose pattern it matches, in script order:
//!
//! * `.text.pymalloc_cold`, first: code that runs only on request;
//! * the windows, aligned to 64 KiB: `.init`, `.fini`, the PLT, then the
//!   caller's hot code and the pieces of `std`, the C start-up objects and
//!   `libc_nonshared.a` that every run executes.
//!
//! `INSERT BEFORE .text` keeps the linker's default layout for the rest.
//!
//! Two more things make the windows the kernel's windows and keep the
//! read-only data in one of them:
//!
//! * The segments are aligned to 64 KiB (`-z max-page-size=0x10000`), so the
//!   loader (the kernel for an executable, `ld.so` for a shared library)
//!   places them at 64 KiB boundaries. Aligned to a page only, a position
//!   independent program landed at any page, and the 64 KiB boundaries of
//!   the script fell anywhere inside the kernel's windows: the launcher's
//!   code, two windows' worth, made three or four resident.
//! * The unwind and exception tables (`.eh_frame_hdr`, `.eh_frame`,
//!   `.gcc_except_table`), read only when something unwinds, lie after the
//!   text, in a read-only segment of their own that a run leaves
//!   untouched (with lld, rustc's linker on x86-64 GNU/Linux; GNU ld puts
//!   them in the text segment instead). Before the text they made the first read-only segment
//!   longer than a window, and the window around the headers, symbols and
//!   read-only data a run reads took the tables in with them: 64 KiB of the
//!   preload library's first segment resident, 40 now.
//! * Relative relocations are packed (`-z pack-relative-relocs`, DT_RELR:
//!   glibc 2.36, binutils 2.38 and lld): the loader reads the whole table at
//!   start-up, and in the RELA format it was 9 KiB of the preload library's
//!   first segment and 32 KiB of the launcher's.

use std::path::PathBuf;

/// The tracer and its snapshots: they run only when a program traces.
pub const TRACER: &str =
    "*(.text.*8pymalloc5trace* .text.*pymalloc..trace..* .text.*8pymalloc8snapshot* .text.*pymalloc..snapshot..*)";

/// The statistics' printing and heap inspection, which run on request.
pub const STATISTICS: &str = "*(.text.*pymalloc*stats* .text.*pymalloc*4heap7inspect*)";

/// What of `std` every run executes: the argument capture at load,
/// thread-local storage and its destructors, `Once` and the futex locks.
pub const STD_RUNTIME: &str = "*(.text.*ARGV_INIT_ARRAY* .text.*thread_local*)
    *(.text.*3sys4sync* .text.*4sync4once* .text.*3pal4unix5futex*)";

/// The statically linked unwinder's look-up of unwind tables, which the
/// preload library's windows hold (see [`link_unwinder_statically`]). The
/// launcher's runs do not execute it: there it would push the default
/// configuration's code past its window.
pub const UNWINDER_START_UP: &str = "*libgcc_eh.a:unwind-dw2-fde*.o(.text .text.*)";

/// The C start-up objects' code that runs: `crtbegin`'s registration of the
/// unwind tables, and `libc_nonshared.a` (`atexit`, `pthread_atfork`).
pub const C_START_UP: &str = "*crtbegin*.o(.text .text.*)
    *libc_nonshared.a:*(.text .text.*)";

/// The script: `cold` and `first` are input-section descriptions (one per
/// line), for the section before the windows and for the windows.
pub fn script(cold: &[&str], first: &[&str]) -> String {
    let lines = |l: &[&str]| l.iter().map(|d| format!("    {d}\n")).collect::<String>();
    format!(
        "SECTIONS\n{{\n  .text.pymalloc_cold :\n  {{\n{}  }}\n}}\nINSERT BEFORE .text;\n\
         SECTIONS\n{{\n  .init ALIGN(0x10000) : {{ KEEP(*(SORT_NONE(.init))) }}\n  .fini : {{ KEEP(*(SORT_NONE(.fini))) }}\n\
         \x20 .plt : {{ *(.plt) *(.iplt) }}\n  .text.pymalloc_first :\n  {{\n{}  }}\n}}\nINSERT BEFORE .text;\n\
         SECTIONS\n{{\n  .eh_frame_hdr : {{ *(.eh_frame_hdr) }}\n  .eh_frame : ONLY_IF_RO {{ KEEP(*(.eh_frame)) *(.eh_frame.*) }}\n\
         \x20 .gcc_except_table : ONLY_IF_RO {{ *(.gcc_except_table .gcc_except_table.*) }}\n}}\nINSERT AFTER .text;\n",
        lines(cold),
        lines(first)
    )
}

/// Which of the package's targets the script is linked into.
#[derive(Clone, Copy)]
pub enum Targets {
    /// Its `cdylib` (`cargo:rustc-cdylib-link-arg`).
    Cdylib,
    /// Its binaries (`cargo:rustc-link-arg-bins`).
    Bins,
}

/// Writes `script` into the build script's `OUT_DIR` and links it into
/// `targets`, on GNU/Linux (elsewhere: nothing).
pub fn link(script: &str, targets: Targets) {
    if !std::env::var("TARGET").unwrap_or_default().contains("linux-gnu") {
        return;
    }
    // Named by its contents: a linker argument cargo sees change relinks
    // the target when only the script's contents (a new `text-order.txt`)
    // changed, which a fixed name would not.
    let digest = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        script.hash(&mut h);
        h.finish()
    };
    let path = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join(format!("first_code-{digest:016x}.ld"));
    std::fs::write(&path, script).expect("write the linker script");
    let directive = match targets {
        Targets::Cdylib => "cargo:rustc-cdylib-link-arg",
        Targets::Bins => "cargo:rustc-link-arg-bins",
    };
    println!("{directive}=-Wl,-T,{}", path.display());
    println!("{directive}=-Wl,-z,max-page-size=0x10000");
    println!("{directive}=-Wl,-z,pack-relative-relocs");
}

/// The input-section descriptions of the functions a list names (one
/// symbol pattern per line, `#` comments; made by `scripts/text_order.py`
/// from callgrind runs): their sections are `.text.<symbol>`, or
/// `.text.unlikely.<symbol>` for a cold one. Placed first in the windows,
/// the code a run executes lies together there, whatever the groups after
/// it hold. None if `list` (a path relative to the package) is missing,
/// with a warning; cargo reruns the build script when it changes.
pub fn listed_first(list: &str) -> Vec<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo");
    let path = std::path::Path::new(&dir).join(list);
    println!("cargo:rerun-if-changed={}", path.display());
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("cargo:warning={} is missing: the code a run executes is laid out by module alone", path.display());
        return Vec::new();
    };
    sections_of(&text)
}

/// [`listed_first`]'s descriptions from the list's text, eight sections
/// each.
fn sections_of(text: &str) -> Vec<String> {
    let sections: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .flat_map(|p| [format!(".text.{p}"), format!(".text.unlikely.{p}")])
        .collect();
    sections.chunks(8).map(|c| format!("*({})", c.join(" "))).collect()
}

/// Links the unwinder statically (`libgcc_eh.a`, as `gcc -static-libgcc`
/// does) into every target of the package, on GNU/Linux.
///
/// Rust's standard library needs an unwinder (its panic machinery and
/// backtraces), and on GNU/Linux it asks for `libgcc_s.so.1`. Loading that
/// library makes about 100 KiB of its pages resident in every process (its
/// read-only data, a 64 KiB window of its code, which its start-up runs, its
/// relocated data), pages a C program or python3 does not have. Linked from
/// the archive, its symbols stay local to the target, and
/// `libgcc_s.so.1` is no longer needed (the linker drops it: `--as-needed`).
///
/// Only for targets a static library is not built from: a `static` native
/// library is bundled into a `staticlib`, and a C program linking
/// `libpymalloc.a` would carry a second unwinder beside its own.
pub fn link_unwinder_statically() {
    if !std::env::var("TARGET").unwrap_or_default().contains("linux-gnu") {
        return;
    }
    println!("cargo:rustc-link-lib=static:+verbatim=libgcc_eh.a");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = std::process::Command::new(cc).arg("-print-file-name=libgcc_eh.a").output();
    if let Ok(o) = out {
        let path = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if let Some(dir) = std::path::Path::new(&path).parent() {
            println!("cargo:rustc-link-search=native={}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_gives_each_function_its_plain_and_cold_section() {
        let d = sections_of("# made by a script\nmalloc\n\n  _ZN8pymalloc4heap*17h*E  \n");
        assert_eq!(
            d,
            ["*(.text.malloc .text.unlikely.malloc .text._ZN8pymalloc4heap*17h*E .text.unlikely._ZN8pymalloc4heap*17h*E)"]
        );
        let many = (0..5).map(|i| format!("f{i}\n")).collect::<String>();
        assert_eq!(sections_of(&many).len(), 2, "eight sections a description");
    }

    #[test]
    fn the_script_puts_cold_code_first_and_the_windows_on_a_64_kib_boundary() {
        let s = script(&[TRACER], &["*(.text.main)", C_START_UP]);
        let cold = s.find(".text.pymalloc_cold").unwrap();
        let window = s.find(".init ALIGN(0x10000)").unwrap();
        let first = s.find(".text.pymalloc_first").unwrap();
        assert!(cold < window && window < first);
        assert!(s[cold..window].contains("8pymalloc5trace"));
        assert!(s[first..].contains("*(.text.main)") && s[first..].contains("libc_nonshared.a"));
        assert_eq!(s.matches("INSERT BEFORE .text;").count(), 2);
        let unwind = s.find(".eh_frame_hdr").unwrap();
        assert!(s[unwind..].contains(".eh_frame :") && s[unwind..].contains(".gcc_except_table"));
        assert!(s[unwind..].contains("INSERT AFTER .text;"));
        assert_eq!(s.matches('{').count(), s.matches('}').count());
    }
}
