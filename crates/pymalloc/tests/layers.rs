//! The import order of the crate, declared once: each module may name only
//! modules before it in [`LAYERS`] (by `crate::module` anywhere in its code,
//! `use` lines included), and each file of `src/heap/` only files before it
//! in [`HEAP`]. A module missing from the lists fails too, so a new file has
//! to be placed.

use std::collections::BTreeSet;
use std::path::Path;

/// The crate's modules, bottom first (ARCHITECTURE.md's layer table).
const LAYERS: &[&str] = &[
    // Foundations: nothing below them.
    "geometry",
    "prefetch",
    "tls_slot",
    "sync",
    "cell_array",
    "class_stacks",
    "allocator",
    // Size classes: the medium ones (pure arithmetic), and the front
    // cache's numbering of every class a thread heap caches.
    "span_class",
    "front_cache",
    // OS and raw memory (the vDSO's clock below the OS calls that read it).
    "vdso",
    "os",
    "raw",
    // Address space.
    "radix",
    "slot_table",
    "block_map",
    "pool_table",
    "region",
    "ownership",
    "arena_alloc",
    // Where requests pymalloc does not serve go (and the RAW slot).
    "fallback",
    "pool",
    "stats",
    // The composite entry points, generic over pools and fallback.
    "front",
    // Blocks above 512 bytes: segments, their classes, a heap's spans.
    "segment",
    "span_pages",
    "span_cache",
    "huge",
    "spans",
    "heap",
    // The modes.
    "locked",
    "gil",
    "thread_heaps",
    "fork",
    "thread",
    "every_size",
    "background",
    "global",
    // CPython's API.
    "domain",
    "debug",
    "config",
    // The tracer: the stack walker (or its stand-in), frames, its tables,
    // the hooks and API, snapshots. Beneath them all, each thread's state.
    "trace_thread",
    "trace_unwind",
    "trace_unwind_none",
    "trace_symtab",
    "trace_frames",
    "trace_sample",
    "trace_shadow",
    "trace_table",
    "trace_tally",
    "trace_memo",
    "trace_peak",
    "trace_timeline",
    "trace_fork",
    "trace",
    "snapshot",
];

/// The files of `src/heap/`, bottom first. `mod.rs` (the `Heap` itself,
/// which every file extends through `super::Heap`) is above them all.
const HEAP: &[&str] = &[
    "used",
    "cache",
    "remote",
    "arenas",
    "fast",
    "pages",
    "transitions",
    "purge",
    "decay",
    "big",
    "inspect",
    "validate",
];

/// The code of a file without its comments (line comments and doc comments;
/// the crate has no block comments).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The identifiers that follow `prefix` in `code`.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // part of a longer path, such as `pymalloc::crate`
        }
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The crate-root names `lib.rs` re-exports (`pub use module::{A, B};`),
/// each with the module it comes from: `crate::Heap` is a use of `heap`.
fn root_reexports(src: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // One statement per `;`, so that a list rustfmt spread over lines counts.
    let text = code(&src.join("lib.rs"));
    for stmt in text.split(';') {
        let stmt = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
        let Some(rest) = stmt.split("pub use ").nth(1) else { continue };
        let (module, names) = rest.split_once("::").unwrap_or((rest, ""));
        for n in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let n = n.trim();
            if !n.is_empty() {
                out.push((n.to_owned(), module.to_owned()));
            }
        }
    }
    out
}

fn check_order(what: &str, order: &[&str], module: &str, uses: &BTreeSet<String>, errors: &mut Vec<String>) {
    let Some(me) = order.iter().position(|m| *m == module) else {
        errors.push(format!("{what}: module `{module}` is not placed in the layer order"));
        return;
    };
    for u in uses {
        match order.iter().position(|m| m == u) {
            Some(them) if them < me => {}
            Some(_) => errors.push(format!("{what}: `{module}` imports `{u}`, which is not below it")),
            None => errors.push(format!("{what}: `{module}` names `{u}`, which is no module in the order")),
        }
    }
}

/// Every violation of the declared order in the crate at `src`.
fn violations(src: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    let roots = root_reexports(src);
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if name == "lib" {
            continue;
        }
        let files: Vec<_> = if path.is_dir() {
            std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()).collect()
        } else {
            vec![path.clone()]
        };
        for f in &files {
            let c = code(f);
            let mut uses: BTreeSet<String> = names_after(&c, "crate::")
                .into_iter()
                .map(|u| roots.iter().find(|(n, _)| *n == u).map_or(u, |(_, m)| m.clone()))
                .collect();
            uses.remove(&name);
            check_order("crate", LAYERS, &name, &uses, &mut errors);
            if path.is_dir() {
                let sub = f.file_stem().unwrap().to_str().unwrap();
                if sub != "mod" {
                    let mut subs = names_after(&c, "super::");
                    subs.remove("Heap");
                    check_order(&name, HEAP, sub, &subs, &mut errors);
                }
            }
        }
        seen.insert(name);
    }
    for m in LAYERS {
        if !seen.contains(*m) {
            errors.push(format!("crate: `{m}` is in the layer order but has no file"));
        }
    }
    errors
}

#[test]
#[cfg_attr(miri, ignore = "reads the source tree")]
fn imports_run_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let errors = violations(&src);
    assert!(errors.is_empty(), "layer violations:\n{}", errors.join("\n"));
}

/// The check itself: an upward import in a copy of the sources is caught.
#[test]
#[cfg_attr(miri, ignore = "reads the source tree")]
fn an_upward_import_is_caught() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let tmp = std::env::temp_dir().join(format!("pymalloc-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("heap")).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, tmp.join(p.file_name().unwrap())).unwrap();
        }
    }
    for entry in std::fs::read_dir(src.join("heap")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, tmp.join("heap").join(p.file_name().unwrap())).unwrap();
    }
    let clean = violations(&tmp);
    // geometry.rs reaching up into the pool header, as it once did.
    let g = tmp.join("geometry.rs");
    let text = std::fs::read_to_string(&g).unwrap();
    std::fs::write(&g, text + "\nconst _X: usize = crate::pool::POOL_HEADER_SIZE;\n").unwrap();
    // A heap file importing one above it.
    let u = tmp.join("heap").join("used.rs");
    let text = std::fs::read_to_string(&u).unwrap();
    std::fs::write(&u, text + "\nuse super::arenas::ArenaObject;\n").unwrap();
    // A new file nobody placed.
    std::fs::write(tmp.join("stray.rs"), "").unwrap();
    // A root re-export hides the module: `crate::Heap` is `heap`.
    let p = tmp.join("pool.rs");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text + "\nfn _x(_: &crate::Heap) {}\n").unwrap();
    let errors = violations(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(clean.is_empty(), "{clean:?}");
    assert!(errors.iter().any(|e| e.contains("`geometry` imports `pool`")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("`used` imports `arenas`")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("`stray` is not placed")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("`pool` imports `heap`")), "{errors:?}");
    assert_eq!(errors.len(), 4, "{errors:?}");
}
