//! Tracing off costs the Rust global allocator almost nothing: the entry
//! points `Traced<PyMalloc>` compiles to (`__rust_alloc`, `__rust_dealloc`,
//! `__rust_realloc` of `rust-pymalloc-traced`) read no tracing flag and run
//! the plain `PyMalloc`'s instructions (`rust-pymalloc`), one load more on
//! an allocation (the gate's floor). Release builds, read with `objdump`,
//! as the preload library's test of its own fast paths does.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The disassembly of the two release binaries: (plain, traced).
fn disassembly() -> &'static (String, String) {
    static TEXT: OnceLock<(String, String)> = OnceLock::new();
    TEXT.get_or_init(|| {
        // This binary is <target>/<profile>/deps/traced_codegen-<hash>.
        let exe = std::env::current_exe().unwrap();
        let target = exe.parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .args(["build", "--release", "-p", "pymalloc-bench", "--bin", "rust-pymalloc", "--bin"])
            .arg("rust-pymalloc-traced")
            .arg("--target-dir")
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "building the binaries:\n{}", String::from_utf8_lossy(&out.stderr));
        let text = |name: &str| {
            let bin: PathBuf = target.join("release").join(name);
            let out = Command::new("objdump").args(["-d", "--no-show-raw-insn", "-C"]).arg(&bin).output().unwrap();
            assert!(out.status.success(), "objdump {}", bin.display());
            String::from_utf8(out.stdout).unwrap()
        };
        (text("rust-pymalloc"), text("rust-pymalloc-traced"))
    })
}

/// The instructions of the function `name` (mnemonic and operands, one per
/// line), padding left out.
fn body(text: &str, name: &str) -> Vec<String> {
    let start = text.find(&format!("<{name}>:\n")).unwrap_or_else(|| panic!("{name} not in the binary"));
    let rest = &text[start..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    rest[..end]
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(":\t").map(|(_, i)| i.trim().to_string()))
        .filter(|i| !i.starts_with("int3") && !i.starts_with("nop"))
        .collect()
}

/// From the entry to the first `ret`: the path of a block the thread's
/// cache serves, which the compilers lay out first.
fn to_first_ret(body: &[String]) -> &[String] {
    let n = body.iter().position(|i| i.starts_with("ret")).expect("no ret");
    &body[..=n]
}

#[test]
fn the_traced_entry_points_read_no_tracing_flag() {
    let (_, traced) = disassembly();
    for name in ["__rustc::__rust_alloc", "__rustc::__rust_dealloc", "__rustc::__rust_realloc"] {
        let b = body(traced, name);
        assert!(!b.iter().any(|i| i.contains("TRACING")), "{name} reads the tracing flag:\n{}", b.join("\n"));
    }
}

/// An allocation the cache serves: the plain path and the gate's floor,
/// loaded where the plain path tests the count for zero (one instruction),
/// and at most one register copy the compiler adds.
#[test]
fn a_cached_allocation_costs_one_load_more_than_the_plain_one() {
    let (plain, traced) = disassembly();
    let p = body(plain, "__rustc::__rust_alloc");
    let t = body(traced, "__rustc::__rust_alloc");
    let (p, t) = (to_first_ret(&p), to_first_ret(&t));
    assert!(t.iter().any(|i| i.contains("POP_FLOOR")), "the cached path does not read the gate:\n{}", t.join("\n"));
    assert!(t.len() <= p.len() + 2, "plain:\n{}\n\ntraced:\n{}", p.join("\n"), t.join("\n"));
}

/// A free: the same look at the block map, through the gated size.
#[test]
fn a_free_costs_what_the_plain_one_does() {
    let (plain, traced) = disassembly();
    let p = body(plain, "__rustc::__rust_dealloc");
    let t = body(traced, "__rustc::__rust_dealloc");
    assert!(t.len() <= p.len(), "plain:\n{}\n\ntraced:\n{}", p.join("\n"), t.join("\n"));
}
