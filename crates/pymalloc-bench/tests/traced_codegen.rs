//! Tracing off costs the Rust global allocator almost nothing: the entry
//! points `Traced<PyMalloc>` compiles to (`__rust_alloc`, `__rust_dealloc`,
//! `__rust_realloc` of `rust-pymalloc-traced`) read no tracing flag and run
//! the plain `PyMalloc`'s instructions (`rust-pymalloc`), two more on an
//! allocation (the gate's mask, loaded and ORed into the pop's comparison).
//! Release builds, read with `objdump`, as the preload library's test of
//! its own fast paths does.

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

/// An allocation the cache serves: the plain path, and the gate's mask
/// ORed into the class's base, which the pop compares the class's top with:
/// two instructions more, the mask's load and the `or` (LLVM does not fold
/// an atomic load into the `or`). Before the caches' tops were absolute the
/// gate was a floor the pop compared the count with where the plain pop
/// tested it for zero, one instruction more; the plain pop now compares
/// with the base, and the two paths are both shorter than they were.
/// (The out-of-line rest took the layout as a `Layout`, alignment first,
/// and the compiler copied the size aside at every entry for that tail
/// call's swap: one more instruction, which this test allowed before.)
/// Both binaries come from one compiler, but the bound has no slack: a
/// register-allocation change on the traced path alone would break it.
/// Measured with rustc 1.95.0.
#[test]
fn a_cached_allocation_costs_a_load_and_an_or_more_than_the_plain_one() {
    let (plain, traced) = disassembly();
    let p = body(plain, "__rustc::__rust_alloc");
    let t = body(traced, "__rustc::__rust_alloc");
    let (p, t) = (to_first_ret(&p), to_first_ret(&t));
    assert!(t.iter().any(|i| i.contains("POP_GATE")), "the cached path does not read the gate:\n{}", t.join("\n"));
    assert!(t.len() <= p.len() + 2, "plain:\n{}\n\ntraced:\n{}", p.join("\n"), t.join("\n"));
}

/// A free: the same look at the block map, through the gated size (the
/// third word of `block_map::ALL`, where the plain one reads the second).
#[test]
fn a_free_costs_what_the_plain_one_does_through_the_gated_size() {
    let (plain, traced) = disassembly();
    let p = body(plain, "__rustc::__rust_dealloc");
    let t = body(traced, "__rustc::__rust_dealloc");
    assert!(t.len() <= p.len(), "plain:\n{}\n\ntraced:\n{}", p.join("\n"), t.join("\n"));
    let (size, gated) = (8, 16);
    assert!(reads_word_of_all(plain, &p, size) && !reads_word_of_all(plain, &p, gated), "plain:\n{}", p.join("\n"));
    assert!(reads_word_of_all(traced, &t, gated) && !reads_word_of_all(traced, &t, size), "traced:\n{}", t.join("\n"));
}

/// True if an instruction of `body` reads `block_map::ALL`'s word at byte
/// `offset` (objdump's comment gives a RIP-relative operand's address and
/// the symbol it lies in).
fn reads_word_of_all(text: &str, body: &[String], offset: u64) -> bool {
    let all = symbol_address(text, "pymalloc::block_map::ALL");
    body.iter().filter_map(|i| i.split_once("# ")).any(|(_, c)| {
        c.split_whitespace().next().and_then(|a| u64::from_str_radix(a, 16).ok()) == Some(all + offset)
            && c.contains("<pymalloc::block_map::ALL")
    })
}

/// The address of the data symbol `name`: the lowest address objdump's
/// comments name with `<name>` (its first word, read by every free).
fn symbol_address(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once("# ").map(|(_, c)| c))
        .filter(|c| c.contains(&format!("<{name}>")) || c.contains(&format!("<{name}+")))
        .filter_map(|c| {
            let a = u64::from_str_radix(c.split_whitespace().next()?, 16).ok()?;
            // `<name+0x10>` names an address 0x10 past the symbol.
            let off = c
                .split_once('+')
                .and_then(|(_, r)| u64::from_str_radix(r.trim_end_matches('>').trim_start_matches("0x"), 16).ok());
            Some(a - off.unwrap_or(0))
        })
        .min()
        .unwrap_or_else(|| panic!("{name} not read anywhere"))
}
