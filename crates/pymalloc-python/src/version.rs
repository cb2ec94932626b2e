//! Everything that differs between the CPython versions the launcher
//! supports, 3.9 to 3.13 (GIL builds), in one place.
//!
//! The launcher is built against one libpython (see `build.rs`), so each
//! difference is settled when it is compiled, from pyo3's `Py_3_N` cfgs and
//! build.rs's `cpython_mimalloc` (that CPython was built with mimalloc).
//! build.rs refuses older versions and free-threaded builds, with the reason
//! (`supported.rs`).
//!
//! | what | 3.9 | 3.10–3.12 | 3.13 |
//! |---|---|---|---|
//! | `PYTHONMALLOC` names | CPython's six | the same | plus `mimalloc`, `mimalloc_debug` (mimalloc builds) |
//! | `sys._debugmallocstats()` table | no arena-map block | arena-map block | arena-map block |
//! | free-list lines after it | CPython's own function | the same | the same |
//! | `os.fork()` warns if other OS threads run | no | 3.12: yes | yes |
//! | "is tracemalloc tracing?" | `_Py_tracemalloc_config` | the same; 3.12: `_PyTraceMalloc_IsTracing()` | `_tracemalloc.is_tracing()`, under the GIL |

use std::ffi::c_int;

use pymalloc::config::{AllocatorName, PymallocMode};
use pymalloc::stats::TableLayout;

/// The CPython minor version the launcher was built against (3.x).
pub const MINOR: u8 = if cfg!(Py_3_13) {
    13
} else if cfg!(Py_3_12) {
    12
} else if cfg!(Py_3_11) {
    11
} else if cfg!(Py_3_10) {
    10
} else {
    9
};

/// The layout of `_PyObject_DebugMallocStats` in this version: 3.9 has no
/// arena map (the radix tree came with 3.10).
pub const STATS_LAYOUT: TableLayout = if MINOR >= 10 { TableLayout::Cpython310 } else { TableLayout::Cpython39 };

/// `os.fork()` counts the parent's OS threads and warns when there is more
/// than one (3.12 and later): the decay thread must not be among them.
pub const FORK_COUNTS_THREADS: bool = MINOR >= 12;

/// Every `PYTHONMALLOC` name this CPython accepts, in its parser's order.
pub fn allocator_names() -> &'static [&'static str] {
    const BASE: &[&str] = &["default", "debug", "pymalloc", "pymalloc_debug", "malloc", "malloc_debug"];
    const MIMALLOC: &[&str] =
        &["default", "debug", "pymalloc", "pymalloc_debug", "mimalloc", "mimalloc_debug", "malloc", "malloc_debug"];
    if cfg!(cpython_mimalloc) {
        MIMALLOC
    } else {
        BASE
    }
}

/// What a `PYTHONMALLOC` name means under the launcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocator {
    /// The configuration of pymalloc-rs's domains.
    pub config: AllocatorName,
    /// The pymalloc mode it asks for, if it asks for one (`PYMALLOC_MODE`
    /// still decides when it is set).
    pub mode: Option<PymallocMode>,
}

impl From<AllocatorName> for Allocator {
    /// `config`, in whichever mode `PYMALLOC_MODE` picks.
    fn from(config: AllocatorName) -> Self {
        Allocator { config, mode: None }
    }
}

/// Parses a `PYTHONMALLOC` value as this CPython would, into our nearest
/// equivalent. CPython 3.13's `mimalloc` is a heap per thread, the choice
/// of ours closest to it (thread-safe without the GIL's help), and
/// `mimalloc_debug` adds the debug hooks.
pub fn parse_pythonmalloc(value: &str) -> Result<Allocator, String> {
    // Ours beside CPython's: every size served by pymalloc.
    let ours = matches!(value, "pymalloc_all" | "pymalloc_all_debug");
    let known = value.is_empty() || ours || allocator_names().contains(&value);
    let threaded = |config| Allocator { config, mode: Some(PymallocMode::Threaded) };
    match value {
        _ if !known => Err(unknown(value)),
        "mimalloc" => Ok(threaded(AllocatorName::Pymalloc)),
        "mimalloc_debug" => Ok(threaded(AllocatorName::PymallocDebug)),
        _ => value.parse::<AllocatorName>().map(Allocator::from).map_err(|e| e.to_string()),
    }
}

/// The message for an unknown `PYTHONMALLOC` value (out of line: a run
/// that names a known one does not execute it, see the launcher's
/// `build.rs`).
#[cold]
#[inline(never)]
fn unknown(value: &str) -> String {
    format!("unknown PYTHONMALLOC allocator '{value}'; CPython 3.{MINOR} accepts: {}", allocator_names().join(", "))
}

/// Is tracemalloc tracing? `gil_held` tells whether Python may be called:
/// 3.13 exports no flag, so there the answer takes the GIL's module call,
/// and is "no" without the GIL.
pub fn tracemalloc_is_tracing(gil_held: bool) -> bool {
    // SAFETY: dlsym with RTLD_DEFAULT and NUL-terminated names; the symbols,
    // when present, have the types CPython gives them.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, c"_PyTraceMalloc_IsTracing".as_ptr());
        if !f.is_null() {
            let f: extern "C" fn() -> c_int = std::mem::transmute(f);
            return f() != 0;
        }
        // 3.9 to 3.11: the flag is the second int of this struct.
        let cfg = libc::dlsym(libc::RTLD_DEFAULT, c"_Py_tracemalloc_config".as_ptr());
        if !cfg.is_null() {
            return *cfg.cast::<c_int>().add(1) != 0;
        }
    }
    gil_held && tracing_by_module()
}

/// `_tracemalloc.is_tracing()`, with the GIL held.
fn tracing_by_module() -> bool {
    use pyo3::prelude::*;
    // SAFETY: the caller holds the GIL (tracemalloc_is_tracing's contract).
    let py = unsafe { Python::assume_attached() };
    py.import("_tracemalloc")
        .and_then(|m| m.call_method0("is_tracing"))
        .and_then(|r| r.extract::<bool>())
        .unwrap_or_else(|e| {
            e.restore(py);
            // SAFETY: the GIL is held.
            unsafe { pyo3_ffi::PyErr_Clear() };
            false
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pythonmalloc_names_are_exactly_this_cpythons() {
        for name in allocator_names() {
            let a = parse_pythonmalloc(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(a.config.is_debug(), name.ends_with("debug"), "{name}");
        }
        assert_eq!(parse_pythonmalloc("").unwrap().config, AllocatorName::Default);
        let e = parse_pythonmalloc("jemalloc").unwrap_err();
        assert!(e.contains("'jemalloc'") && e.contains(&allocator_names().join(", ")), "{e}");
        // mimalloc exactly where this CPython has it.
        assert_eq!(parse_pythonmalloc("mimalloc").is_ok(), MINOR >= 13 && cfg!(cpython_mimalloc));
        if cfg!(cpython_mimalloc) {
            let m = parse_pythonmalloc("mimalloc_debug").unwrap();
            assert_eq!(m, Allocator { config: AllocatorName::PymallocDebug, mode: Some(PymallocMode::Threaded) });
        }
        assert_eq!(parse_pythonmalloc("malloc").unwrap(), Allocator { config: AllocatorName::Malloc, mode: None });
        assert_eq!(Allocator::from(AllocatorName::Debug), Allocator { config: AllocatorName::Debug, mode: None });
    }

    #[test]
    fn only_3_9_lacks_the_arena_map() {
        assert_eq!(STATS_LAYOUT == TableLayout::Cpython39, MINOR == 9);
        assert!((9..=13).contains(&MINOR));
    }
}
