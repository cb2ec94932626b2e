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

use pymalloc_text_layout::{link_unwinder_statically, C_START_UP, STD_RUNTIME, TRACER};

/// The launcher's text layout (GNU/Linux, `pymalloc-text-layout`).
///
/// Laid out by the linker's default, the ~70 KB of the launcher that a
/// Python program runs (our allocator, `main`, the `_pymalloc` module's
/// hooks, pieces of `std` and pyo3; about 130 functions under callgrind)
/// were spread over the whole text: 432 of its 491 KiB resident in every
/// process, most of what separates the launcher's resident memory from
/// python3's. A first layout put all our code in the windows; as the
/// every-size heaps and `_pymalloc`'s reports grew, that was 203 KB and
/// four windows (256 KiB) resident. Now the windows hold what a run in the
/// default configuration executes, then what `PYTHONMALLOC=pymalloc_all`
/// adds, then the rest of our code.
///
/// Before the windows: code that runs only on request or in other modes
/// (the tracer and its snapshots, the debug hooks, the locked heap, heap
/// validation, `_pymalloc`'s functions other than its hooks, the pinning
/// report, the fatal-error path) and the symbolizer (`backtrace`, gimli,
/// addr2line, miniz), which runs only when a program traces or panics.
/// `_pymalloc`'s functions are `__pyfunction_<name>`; its hooks, which run
/// at every collection and fork, are named with a leading underscore
/// (`__pyfunction__fork_before`), which `[a-z]` does not match.
const COLD: &[&str] = &[
    TRACER,
    "*(.text._ZN9backtrace* .text._ZN5gimli* .text._ZN9addr2line* .text._ZN11miniz_oxide* .text._ZN14rustc_demangle*)",
    "*(.text.*8pymalloc5debug* .text.*8pymalloc6locked* .text.*8pymalloc4heap8validate*)",
    "*(.text.*15pymalloc_python6module9_pymalloc*__pyfunction_[a-z]*)",
    "*(.text.*15pymalloc_python4pins* .text.*15pymalloc_python5embed* .text.*pymalloc*pinning*)",
];

/// The windows, in this order: the C start-up code; the functions a run in
/// the default configuration executes (`text-order.txt`, see
/// [`executed_first`]); then, by module, `main`; the GIL
/// heap and what it calls (the default configuration's allocator in all
/// three domains, with its purge and decay); the module's hooks; pyo3 and
/// the pieces of `std` (start-up, environment, the decay sweep's thread,
/// closures' shims, C strings, vector growth) a run executes; then the
/// thread heaps and the heaps of blocks above 512 bytes, which only
/// `pymalloc_all` runs; then the rest of our code. The default
/// configuration also runs the every-size purge (from the end of a full
/// collection, on empty heaps) and `core`'s UTF-8 check (reading
/// `PYTHONMALLOC`); those few functions are named. What a run touches:
/// `perf record -e page-faults -d` on the launcher lists each fault on its
/// text with the function; callgrind lists every function that ran.
///
/// [`START_UP`] is the first part, [`BY_MODULE`] the groups after
/// [`executed_first`]'s.
const START_UP: &[&str] = &["*crt1.o(.text .text.*)", "*crti.o(.text .text.*)", C_START_UP];

/// The windows' groups after [`START_UP`] and [`executed_first`], by module
/// (see [`START_UP`]).
const BY_MODULE: &[&str] = &[
    STD_RUNTIME,
    "*(.text.main .text.PyInit__pymalloc)",
    "*(.text.*8pymalloc3gil* .text.*8pymalloc4heap* .text.*8pymalloc3raw* .text.*8pymalloc5front*)",
    "*(.text.*8pymalloc5radix* .text.*8pymalloc2os* .text.*8pymalloc11arena_alloc* .text.*8pymalloc6region*)",
    "*(.text.*8pymalloc6config* .text.*8pymalloc10background* .text.*15pymalloc_python*)",
    "*(.text.*pymalloc..gil..* .text.*pymalloc..heap..* .text.*pymalloc..config..* .text.*pymalloc_python..*)",
    "*(.text.*8pymalloc10every_size12release_free* .text.*8pymalloc5spans8SpanHeap11flush_cache* .text.*8pymalloc5spans8SpanHeap5purge*)",
    "*(.text.*pyo3* .text.*once_cell*)",
    "*(.text.*3std2rt* .text.*__rust_begin_short_backtrace* .text.*3std6thread* .text.*3sys6thread*)",
    "*(.text.*3std3env* .text.*3sys3env*)",
    "*(.text.*3ops8function6FnOnce* .text.*3ffi5c_str* .text.*7raw_vec* .text.*4core3str8converts*)",
    "*(.text.*8pymalloc6thread* .text.*8pymalloc12thread_heaps* .text.*8pymalloc10every_size* .text.*8pymalloc5spans*)",
    "*(.text.*8pymalloc10span_* .text.*8pymalloc11front_cache* .text.*8pymalloc7segment* .text.*8pymalloc4huge* .text.*8pymalloc10slot_table*)",
    "*(.text.*pymalloc*)",
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
    let executed = executed_first();
    let first: Vec<&str> =
        START_UP.iter().copied().chain(executed.iter().map(String::as_str)).chain(BY_MODULE.iter().copied()).collect();
    pymalloc_text_layout::link(&pymalloc_text_layout::script(COLD, &first), pymalloc_text_layout::Targets::Bins);
    // Without libgcc_s.so.1: 100 KiB less resident in every run (the
    // function's comment); python3 does not load it either.
    link_unwinder_statically();
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/supported.rs");
}

/// The windows' first input-section descriptions: the functions a run in
/// the default configuration executes, as `text-order.txt` lists them (none
/// if it is missing; `scripts/text_order.py` makes it). Placed right after
/// the C start-up code, they lie together in the first window (58 KB of
/// it), whatever the modules' groups below hold besides: ordered by module
/// alone, the code a run executes was 69 KB spread over 130 KB of two
/// windows, with code that never runs between, and had grown to within a
/// few hundred bytes of a third. The paths a default run does not take are
/// out of line in the functions it runs (`main`'s parsing of
/// `PYTHONMALLOC`, the error exits, the sweeps of other modes' heaps), so
/// that those functions are small.
fn executed_first() -> Vec<String> {
    pymalloc_text_layout::listed_first("text-order.txt")
}

/// Whether each of `names` is set to a true value in `python`'s sysconfig.
fn sysconfig(python: &str, names: &[&str]) -> Vec<bool> {
    let code = format!("import sysconfig; print(' '.join(str(bool(sysconfig.get_config_var(n))) for n in {names:?}))");
    let out = Command::new(python).args(["-c", &code]).output().expect("running the target python3");
    assert!(out.status.success(), "{python} could not report its sysconfig");
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(|w| w == "True").collect()
}
