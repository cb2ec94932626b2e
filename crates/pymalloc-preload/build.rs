//! Links the unwinder statically (`libgcc_eh.a`, as `gcc -static-libgcc`
//! does), so the library does not load `libgcc_s.so.1` into every program it
//! is preloaded into: that shared library's pages are resident memory the
//! program would not otherwise have. The unwinder is only there for Rust's
//! panic machinery; its symbols stay local to this library.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("linux-gnu") {
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
    }
}
