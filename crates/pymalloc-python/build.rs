//! Links the embedded libpython with an rpath, and records where the Python
//! it was built against keeps its standard library, so the launcher finds it
//! without PYTHONHOME.

use std::process::Command;

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
    pyo3_build_config::add_libpython_rpath_link_args();
    let cfg = pyo3_build_config::get();
    let python = cfg.executable().map(str::to_owned).unwrap_or_else(|| "python3".to_owned());
    let out = Command::new(&python)
        .args(["-c", "import sys; print(sys.base_prefix); print(sys.base_exec_prefix)"])
        .output()
        .expect("running the build's python3");
    let text = String::from_utf8(out.stdout).expect("utf-8 prefix");
    let mut lines = text.lines();
    let prefix = lines.next().expect("sys.base_prefix");
    let exec_prefix = lines.next().unwrap_or(prefix);
    println!("cargo:rustc-env=PYMALLOC_PYTHON_PREFIX={prefix}");
    println!("cargo:rustc-env=PYMALLOC_PYTHON_EXEC_PREFIX={exec_prefix}");
    println!("cargo:rustc-env=PYMALLOC_PYTHON_EXECUTABLE={python}");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-changed=build.rs");
}
