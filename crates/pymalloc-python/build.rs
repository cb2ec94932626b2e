//! Links the embedded libpython with an rpath, records which python3 the
//! launcher was built against (its tests compare the two), refuses the
//! builds it cannot serve, and tells `src/version.rs` whether that CPython
//! was built with mimalloc (cfg `cpython_mimalloc`: `PYTHONMALLOC` then
//! accepts `mimalloc` and `mimalloc_debug`).
//!
//! The launcher does not record or set a home: like python3 itself, it lets
//! CPython's path calculation find the standard library, which falls back to
//! the prefix compiled into libpython when nothing sits beside the executable.
//! Setting `PyConfig.home` would override `._pth` files, venv detection and
//! embedders' own settings, which python3's test suite checks.

use std::process::Command;

use pymalloc_text_layout::{C_START_UP, STD_RUNTIME, TRACER};

/// The launcher's text layout (GNU/Linux, `pymalloc-text-layout`): laid
/// out by the linker's default, the ~68 KB of the launcher that a Python
/// program runs (155 functions under callgrind: our allocator, `main`, the
/// `_pymalloc` module's hooks, pieces of `std` and pyo3) were spread over
/// the whole text: 432 of its 491 KiB resident in every process, most of
/// what separates the launcher's resident memory from python3's.
///
/// Before the windows: code that runs only on request or in other modes
/// (the tracer and its snapshots, the debug hooks, the thread heaps,
/// `_pymalloc`'s pinning report) and the symbolizer (`backtrace`, gimli,
/// addr2line, miniz), which runs only when a program traces or panics.
const COLD: &[&str] = &[
    TRACER,
    "*(.text._ZN9backtrace* .text._ZN5gimli* .text._ZN9addr2line* .text._ZN11miniz_oxide* .text._ZN14rustc_demangle*)",
    "*(.text.*8pymalloc5debug* .text.*8pymalloc12thread_heaps* .text.*8pymalloc6thread* .text.*15pymalloc_python4pins*)",
];

/// The windows: the C start-up code, `main`, the rest of our code, pyo3,
/// and the pieces of `std` (start-up, environment, threads for the decay
/// sweep, closures' shims, C strings, vector growth) that a run executes.
const FIRST: &[&str] = &[
    "*crt1.o(.text .text.*)",
    "*crti.o(.text .text.*)",
    "*(.text.main .text.PyInit__pymalloc)",
    "*(.text.*pymalloc*)",
    "*(.text.*pyo3* .text.*once_cell*)",
    "*(.text.*3std2rt* .text.*__rust_begin_short_backtrace* .text.*3std6thread* .text.*3sys6thread*)",
    "*(.text.*3std3env* .text.*3sys3env*)",
    "*(.text.*3ops8function6FnOnce* .text.*3ffi5c_str* .text.*7raw_vec*)",
    STD_RUNTIME,
    C_START_UP,
];

#[path = "src/supported.rs"]
mod supported;

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    pyo3_build_config::add_libpython_rpath_link_args();
    let cfg = pyo3_build_config::get();
    let python = cfg.executable().map(str::to_owned).unwrap_or_else(|| "python3".to_owned());
    // Fail the build early if that interpreter does not run.
    let ok = Command::new(&python).args(["-c", "pass"]).status().is_ok_and(|s| s.success());
    assert!(ok, "the python3 the launcher is built against ({python}) does not run");
    println!("cargo:rustc-env=PYMALLOC_PYTHON_EXECUTABLE={python}");

    println!("cargo:rustc-check-cfg=cfg(cpython_mimalloc)");
    let vars = sysconfig(&python, &["Py_GIL_DISABLED", "WITH_MIMALLOC"]);
    if let Some(why) = supported::refusal(cfg.version().major, cfg.version().minor, vars[0]) {
        panic!("pymalloc-python cannot be built against {python}: {why}");
    }
    if vars[1] {
        println!("cargo:rustc-cfg=cpython_mimalloc");
    }
    pymalloc_text_layout::link(&pymalloc_text_layout::script(COLD, FIRST), pymalloc_text_layout::Targets::Bins);
    // Relative relocations packed (DT_RELR, glibc 2.36 and binutils 2.38 on):
    // the loader reads the whole table at start-up, and as RELA entries it
    // was 32 KiB of the read-only segment, which pushed what a run reads of
    // that segment past one 64 KiB fault-around window. 148 -> 88 KiB of the
    // segment resident in a run of a small script.
    if std::env::var("TARGET").unwrap_or_default().contains("linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/supported.rs");
}

/// Whether each of `names` is set to a true value in `python`'s sysconfig.
fn sysconfig(python: &str, names: &[&str]) -> Vec<bool> {
    let code = format!("import sysconfig; print(' '.join(str(bool(sysconfig.get_config_var(n))) for n in {names:?}))");
    let out = Command::new(python).args(["-c", &code]).output().expect("running the target python3");
    assert!(out.status.success(), "{python} could not report its sysconfig");
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(|w| w == "True").collect()
}
