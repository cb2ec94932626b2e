//! Writes the pkg-config files of the library next to `libpymalloc.so` and
//! `libpymalloc.a` (`target/<profile>/`), pointing at the build tree:
//! `libdir` is that directory and `includedir` this crate's `include/`.
//!
//! * `pymalloc.pc`: links `libpymalloc.so` (`-lpymalloc`);
//! * `pymalloc-static.pc`: links `libpymalloc.a` and the system libraries
//!   the Rust standard library needs.
//!
//! `PKG_CONFIG_PATH=target/release pkg-config --cflags --libs pymalloc` then
//! works without installing anything. `install.sh` copies the library, the
//! header and these files, rewriting the three directory lines.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// What `rustc --print native-static-libs` lists for a staticlib on Linux.
const NATIVE_STATIC_LIBS: &str = "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    println!("cargo::rerun-if-changed=pymalloc.pc.in");
    println!("cargo::rerun-if-changed=build.rs");

    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out; the libraries
    // land in <target>/<profile>.
    let profile_dir = match out.ancestors().nth(2).and_then(Path::file_name) {
        Some(name) if name == "build" => out.ancestors().nth(3).map(Path::to_path_buf),
        _ => None,
    };
    let libdir = profile_dir.clone().unwrap_or_else(|| out.clone());
    let template = fs::read_to_string(manifest.join("pymalloc.pc.in")).expect("pymalloc.pc.in");
    let render = |name: &str, linkage: &str, libs: &str, private: &str| {
        template
            .replace("@PREFIX@", &libdir.display().to_string())
            .replace("@LIBDIR@", "${prefix}")
            .replace("@INCLUDEDIR@", &manifest.join("include").display().to_string())
            .replace("@NAME@", name)
            .replace("@LINKAGE@", linkage)
            .replace("@VERSION@", &env::var("CARGO_PKG_VERSION").unwrap())
            .replace("@LIBS@", libs)
            .replace("@LIBS_PRIVATE@", private)
    };
    let files = [
        ("pymalloc.pc", render("pymalloc", "", "-L${libdir} -lpymalloc", NATIVE_STATIC_LIBS)),
        (
            "pymalloc-static.pc",
            render(
                "pymalloc-static",
                " (static library)",
                &format!("${{libdir}}/libpymalloc.a {NATIVE_STATIC_LIBS}"),
                "",
            ),
        ),
    ];
    for (file, text) in &files {
        fs::write(out.join(file), text).expect("write to OUT_DIR");
        match &profile_dir {
            Some(dir) => {
                let dest = dir.join(file);
                fs::write(&dest, text).expect("write next to the library");
                // Written again if deleted.
                println!("cargo::rerun-if-changed={}", dest.display());
            }
            None => println!("cargo::warning=unexpected OUT_DIR layout; {file} is only in {}", out.display()),
        }
    }
}
