//! Links the embedded libpython with an rpath, and records which python3 the
//! launcher was built against (its tests compare the two).
//!
//! The launcher does not record or set a home: like python3 itself, it lets
//! CPython's path calculation find the standard library, which falls back to
//! the prefix compiled into libpython when nothing sits beside the executable.
//! Setting `PyConfig.home` would override `._pth` files, venv detection and
//! embedders' own settings, which python3's test suite checks.

use std::process::Command;

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    pyo3_build_config::add_libpython_rpath_link_args();
    let cfg = pyo3_build_config::get();
    let python = cfg.executable().map(str::to_owned).unwrap_or_else(|| "python3".to_owned());
    // Fail the build early if that interpreter does not run.
    let ok = Command::new(&python).args(["-c", "pass"]).status().is_ok_and(|s| s.success());
    assert!(ok, "the python3 the launcher is built against ({python}) does not run");
    println!("cargo:rustc-env=PYMALLOC_PYTHON_EXECUTABLE={python}");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
}
