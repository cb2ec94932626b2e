//! Writes `pymalloc.pc`, the pkg-config file of the library, next to
//! `libpymalloc.so` and `libpymalloc.a` (`target/<profile>/`), pointing at
//! the build tree: `libdir` is that directory and `includedir` this crate's
//! `include/`. `PKG_CONFIG_PATH=target/release pkg-config --cflags --libs
//! pymalloc` then works without installing anything. For an installed copy,
//! see `install.sh`, which renders the same template with a prefix.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let template_path = manifest.join("pymalloc.pc.in");
    println!("cargo::rerun-if-changed=pymalloc.pc.in");
    println!("cargo::rerun-if-changed=build.rs");

    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out; the libraries
    // land in <target>/<profile>.
    let profile_dir = out
        .ancestors()
        .nth(3)
        .filter(|_| out.ancestors().nth(2).and_then(Path::file_name) == Some("build".as_ref()))
        .map(Path::to_path_buf);

    let template = fs::read_to_string(&template_path).expect("read pymalloc.pc.in");
    let libdir = profile_dir.clone().unwrap_or_else(|| out.clone());
    let include = manifest.join("include");
    let pc = template
        .replace("@PREFIX@", &libdir.display().to_string())
        .replace("@LIBDIR@", "${prefix}")
        .replace("@INCLUDEDIR@", &include.display().to_string())
        .replace("@VERSION@", &env::var("CARGO_PKG_VERSION").unwrap());
    fs::write(out.join("pymalloc.pc"), &pc).expect("write pymalloc.pc in OUT_DIR");
    match profile_dir {
        Some(dir) => {
            let dest = dir.join("pymalloc.pc");
            fs::write(&dest, &pc).expect("write pymalloc.pc next to the library");
            // Written again if deleted.
            println!("cargo::rerun-if-changed={}", dest.display());
        }
        None => println!(
            "cargo::warning=unexpected OUT_DIR layout; pymalloc.pc is only in {}",
            out.display()
        ),
    }
}
