//! `pymalloc-python`: python3, with all three allocator domains on
//! pymalloc-rs.
//!
//! It embeds the machine's libpython and, before the interpreter starts,
//! installs pymalloc-rs's allocators with `PyMem_SetAllocator` in the RAW,
//! MEM and OBJ domains. CPython's pre-initialisation would install its own
//! when it sees `PYTHONMALLOC` or dev mode, so the launcher decides the
//! configuration itself and keeps both from CPython's pre-initialisation:
//! `PYTHONMALLOC` is hidden from it (and put back before `os.environ` is
//! built, so child processes inherit it), and pre-initialisation runs with
//! dev mode off (the main configuration gets it back). Everything else is
//! CPython's own startup: the command line, `sys.executable` (this binary),
//! the standard library of the Python it was built against, and
//! `Py_RunMain`.
//!
//! The binary has no Rust `main`: Rust's runtime start-up would reopen closed
//! standard descriptors on `/dev/null`, ignore `SIGPIPE` and install its own
//! `SIGSEGV`/`SIGBUS` handlers, and python3 does none of these (its test suite
//! checks). The C `main` below starts straight from the C runtime, as
//! python3's does.

// The unit-test harness brings its own `main`.
#![cfg_attr(not(test), no_main)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod embed;
mod fork;
mod module;
mod options;
mod pins;
#[cfg(test)]
mod supported;
mod version;

use std::ffi::{c_char, c_int, CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::exit;

use pymalloc::config::{self, AllocatorName};
use pymalloc::{global_heap, Domain};
use pyo3_ffi as ffi;

/// The process entry point, called by the C runtime.
///
/// # Safety
/// `argv` holds `argc` NUL-terminated strings, as the C runtime passes them.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: the C runtime's argument vector, valid for the whole process.
    let args: Vec<OsString> = (0..argc.max(0) as usize)
        .map(|i| unsafe { OsStr::from_bytes(std::ffi::CStr::from_ptr(*argv.add(i)).to_bytes()).to_owned() })
        .collect();
    run(args)
}

fn run(args: Vec<OsString>) -> c_int {
    let opts = options::parse(args.iter().skip(1).map(OsString::as_os_str));
    let use_env = !opts.ignore_environment;
    // CPython's _Py_GetEnv: unset and empty are the same.
    let env = |name: &str| {
        if use_env {
            std::env::var_os(name).filter(|v| !v.is_empty())
        } else {
            None
        }
    };

    let dev_mode = opts.dev_mode || env("PYTHONDEVMODE").is_some();
    let chosen = match env("PYTHONMALLOC") {
        Some(v) => chosen_allocator(&v),
        // PYTHONMALLOC takes priority over dev mode, as in CPython.
        None if dev_mode => AllocatorName::Debug.into(),
        None => AllocatorName::Default.into(),
    };
    let stats_at_exit = env("PYTHONMALLOCSTATS").is_some();

    // SAFETY: single-threaded start-up, before any allocation through the
    // domains and before libpython is initialised.
    unsafe { install_allocators(chosen, stats_at_exit) };

    let argv: Vec<CString> = args.iter().map(|a| CString::new(a.clone().into_vec()).unwrap_or_default()).collect();
    let mut argv_ptrs: Vec<*mut c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    let argc = argv_ptrs.len() as ffi::Py_ssize_t;

    // SAFETY: CPython's documented embedding sequence; argv outlives it.
    let code = unsafe {
        preinitialize(use_env, argc, argv_ptrs.as_mut_ptr());
        initialize(dev_mode, argc, argv_ptrs.as_mut_ptr());
        module::install_sys_overrides(purge_policy());
        ffi::Py_RunMain()
    };
    if stats_at_exit {
        print_stats();
    }
    code
}

/// The configuration `PYTHONMALLOC` names; an unknown name ends the
/// process as python3 does. Out of line, as every path a run in the default
/// configuration does not take (`build.rs`: the code a run executes fits
/// one 64 KiB window of the launcher's text).
#[inline(never)]
fn chosen_allocator(v: &OsStr) -> version::Allocator {
    match version::parse_pythonmalloc(v.to_str().unwrap_or("\u{fffd}")) {
        Ok(a) => a,
        Err(e) => unknown_allocator(&e),
    }
}

/// Ends the process on an unknown `PYTHONMALLOC`, as python3 does (its
/// first two lines, status 1), then names the valid ones.
#[cold]
#[inline(never)]
fn unknown_allocator(e: &str) -> ! {
    eprintln!("Fatal Python error: preconfig_init_allocator: PYTHONMALLOC: unknown allocator");
    eprintln!("Python runtime state: preinitializing");
    eprintln!();
    eprintln!("pymalloc-python: {e}");
    exit(1);
}

/// `PYTHONMALLOCSTATS`'s report at exit. Out of line: the statistics are a
/// value of some 16 KiB, which inlined into `run` made every run's stack
/// that much deeper under all of CPython (16 KiB more of it resident).
#[cold]
#[inline(never)]
fn print_stats() {
    pymalloc::stats::print_to_stderr(&config::pymalloc_stats());
}

/// Sets up `chosen`'s configuration in pymalloc-rs's domains, with the
/// embedder callbacks of the debug hooks and this CPython's statistics
/// layout, and hands the three domain allocators to libpython.
///
/// # Safety
/// Single-threaded, before libpython allocates anything.
unsafe fn install_allocators(chosen: version::Allocator, stats: bool) {
    let name = chosen.config;
    pymalloc::stats::set_table_layout(version::STATS_LAYOUT);
    // SAFETY: the caller's contract; the Gil mode is sound because CPython
    // holds the GIL for every MEM and OBJ call (the debug hooks check it).
    unsafe {
        config::set_pymalloc_mode(pymalloc_mode(chosen.mode));
        config::setup(name).expect("a parsed configuration name");
    }
    if name.is_debug() {
        install_debug_reports();
    }
    config::set_purge_policy(purge_policy());
    if stats {
        print_stats_on_new_arenas();
    }
    for d in Domain::ALL {
        let mut a = d.allocator();
        // SAFETY: pymalloc's MemAllocatorEx has the layout of CPython's
        // PyMemAllocatorEx (context then four functions), and libpython is not
        // running yet.
        unsafe { embed::PyMem_SetAllocator(d as c_int, &mut a) };
    }
}

/// The debug hooks' reports as CPython prints them (out of line: see
/// [`chosen_allocator`]).
#[cold]
#[inline(never)]
fn install_debug_reports() {
    embed::install_debug_callbacks();
    // The serial-number line of PYMEM_DEBUG_SERIALNO builds, on request.
    if std::env::var_os("PYMALLOC_DEBUG_SERIALNO").is_some_and(|v| !v.is_empty()) {
        pymalloc::debug::set_report_serial(true);
    }
}

/// `PYTHONMALLOCSTATS`: statistics each time a heap takes a new arena.
#[cold]
#[inline(never)]
fn print_stats_on_new_arenas() {
    global_heap().lock().set_print_stats_on_new_arena(true);
    pymalloc::thread::set_print_stats_on_new_arena(true);
    pymalloc::gil_heap().heap().set_print_stats_on_new_arena(true);
}

/// How pymalloc serves MEM and OBJ: `PYMALLOC_MODE` = `gil` (one heap with
/// the GIL as its lock, CPython's own arrangement), `threaded` (one heap per
/// thread) or `locked` (one heap behind a mutex). Unset, the mode
/// `PYTHONMALLOC` asked for (`threaded` for 3.13's `mimalloc` names), else
/// `gil`.
fn pymalloc_mode(asked: Option<config::PymallocMode>) -> config::PymallocMode {
    match std::env::var_os("PYMALLOC_MODE") {
        Some(name) if !name.is_empty() => named_mode(&name),
        _ => asked.unwrap_or(config::PymallocMode::Gil),
    }
}

/// The mode `PYMALLOC_MODE` names; a bad name ends the process with the
/// valid ones listed (out of line: see [`chosen_allocator`]).
#[cold]
#[inline(never)]
fn named_mode(name: &OsStr) -> config::PymallocMode {
    config::PymallocMode::from_name(&name.to_string_lossy()).unwrap_or_else(|e| bad_setting("", &e))
}

/// Ends the process on a bad setting, with its message (`e`, which lists
/// the valid values) after `what`.
fn bad_setting(what: &str, e: &str) -> ! {
    eprintln!("pymalloc-python: {what}{e}");
    exit(1);
}

/// When the heaps give memory back: `PYMALLOC_PURGE` (see
/// [`pymalloc::PurgePolicy::parse`]), for every heap of every mode.
fn purge_policy() -> pymalloc::PurgePolicy {
    match std::env::var_os("PYMALLOC_PURGE") {
        Some(v) if !v.is_empty() => named_purge_policy(&v),
        _ => pymalloc::PurgePolicy::DEFAULT,
    }
}

/// The policy `PYMALLOC_PURGE` names; a bad name ends the process with the
/// valid ones listed (out of line: see [`chosen_allocator`]).
#[cold]
#[inline(never)]
fn named_purge_policy(v: &OsStr) -> pymalloc::PurgePolicy {
    pymalloc::PurgePolicy::parse(&v.to_string_lossy()).unwrap_or_else(|e| bad_setting("PYMALLOC_PURGE: ", &e))
}

/// Pre-initialises CPython without letting it install allocators: dev mode
/// off, and PYTHONMALLOC out of its sight (then back, for children).
///
/// # Safety
/// Start-up, single-threaded; `argv` holds `argc` C strings.
unsafe fn preinitialize(use_env: bool, argc: ffi::Py_ssize_t, argv: *mut *mut c_char) {
    let hidden = if use_env { std::env::var_os("PYTHONMALLOC") } else { None };
    if hidden.is_some() {
        // SAFETY: no other thread exists yet (our contract).
        unsafe { hide_pythonmalloc() };
    }
    // SAFETY: PyPreConfig is plain data initialised by CPython.
    unsafe {
        let mut pre: ffi::PyPreConfig = std::mem::zeroed();
        ffi::PyPreConfig_InitPythonConfig(&mut pre);
        pre.dev_mode = 0; // dev mode would install CPython's debug allocators
        pre.allocator = 0; // PYMEM_ALLOCATOR_NOT_SET: keep ours
        check(ffi::Py_PreInitializeFromBytesArgs(&pre, argc, argv));
    }
    if let Some(v) = hidden {
        // SAFETY: still single-threaded.
        unsafe { restore_pythonmalloc(&v) };
    }
}

/// Unsets `PYTHONMALLOC` (out of line: see [`chosen_allocator`]).
///
/// # Safety
/// No other thread exists.
#[cold]
#[inline(never)]
unsafe fn hide_pythonmalloc() {
    // SAFETY: the contract.
    unsafe { std::env::remove_var("PYTHONMALLOC") };
}

/// Sets `PYTHONMALLOC` back to `v` (out of line: see [`chosen_allocator`]).
///
/// # Safety
/// No other thread exists.
#[cold]
#[inline(never)]
unsafe fn restore_pythonmalloc(v: &OsStr) {
    // SAFETY: the contract.
    unsafe { std::env::set_var("PYTHONMALLOC", v) };
}

/// Initialises the interpreter from the command line.
///
/// # Safety
/// After `preinitialize`; `argv` holds `argc` C strings.
unsafe fn initialize(dev_mode: bool, argc: ffi::Py_ssize_t, argv: *mut *mut c_char) {
    module::register();
    // SAFETY: CPython's PyConfig API, used as documented.
    unsafe {
        let mut cfg: ffi::PyConfig = std::mem::zeroed();
        ffi::PyConfig_InitPythonConfig(&mut cfg);
        if dev_mode {
            // Pre-initialisation ran without it; the rest of dev mode
            // (warnings, faulthandler, sys.flags) comes from here.
            cfg.dev_mode = 1;
        }
        let status = ffi::PyConfig_SetBytesArgv(&mut cfg, argc, argv.cast::<*const c_char>());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(&mut cfg);
            ffi::Py_ExitStatusException(status);
        }
        let status = ffi::Py_InitializeFromConfig(&cfg);
        ffi::PyConfig_Clear(&mut cfg);
        check(status);
    }
}

/// Exits as CPython does on an error or exit status.
unsafe fn check(status: ffi::PyStatus) {
    // SAFETY: status comes from CPython.
    unsafe {
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::Py_ExitStatusException(status);
        }
    }
}
