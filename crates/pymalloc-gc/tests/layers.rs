//! The modules of `src/` form layers: a module may use only the modules
//! below it in [`LAYERS`]. This reads every `use crate::...` (and every
//! other `crate::` path outside comments) of every source file and fails
//! on a path that reaches up, and on a source file that is not in the list.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// The layers, bottom up: each module may use those before it.
const LAYERS: &[&str] = &[
    "freelist",  // bounded free lists of blocks (no crate imports)
    "object",    // object and GC headers, the type descriptor
    "list",      // the lists of GC headers
    "trace",     // the Trace trait and the Tracer
    "memory",    // a collector's memory backing
    "trashcan",  // deferred deep deallocation
    "weakref",   // weak references and their table
    "collector", // the Collector's state, built from the above
    "alloc",     // impl Collector: the object allocator
    "collect",   // impl Collector: the collection phases
    "gcmodule",  // impl Collector: the gc module's API
    "cc",        // the safe front: Cc, Weak, AnyCc
    "gc",        // the gc module for the thread's collector
    "ffi",       // the C ABI
];

/// Items the crate root re-exports, and the module each comes from.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Cc", "cc"),
    ("Weak", "cc"),
    ("AnyCc", "cc"),
    ("Finalize", "cc"),
    ("Collector", "collector"),
    ("Trace", "trace"),
    ("Tracer", "trace"),
];

fn layer(module: &str) -> usize {
    LAYERS.iter().position(|m| *m == module).unwrap_or_else(|| panic!("module `{module}` is not in LAYERS"))
}

/// The code of a source file without comments (line comments and doc
/// comments; the crate uses no block comments).
fn code(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The crate modules a piece of code names: `crate::m::...`, `crate::m;`,
/// `crate::{m, n::x}` and the root re-exports `crate::Item`.
fn used_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let heads: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => top_level_items(group),
            None => vec![rest],
        };
        for h in heads {
            let name: String = h.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if name.is_empty() {
                continue;
            }
            match ROOT_ITEMS.iter().find(|(item, _)| *item == name) {
                Some((_, m)) => out.insert(m.to_string()),
                None => out.insert(name),
            };
        }
    }
    out
}

/// The items of a use group up to its closing brace, at the top level only
/// (`a, b::{c, d}, e}` gives `a`, `b::{c, d}`, `e`).
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(group[start..i].trim());
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(group[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut seen = BTreeSet::new();
    let mut errors = Vec::new();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_str().unwrap().to_string();
        if module == "lib" {
            continue;
        }
        let own = layer(&module);
        for used in used_modules(&code(&fs::read_to_string(&path).unwrap())) {
            if used != module && layer(&used) > own {
                errors.push(format!("{module} uses {used}, a higher layer"));
            }
        }
        seen.insert(module);
    }
    assert!(errors.is_empty(), "{errors:#?}");
    let listed: BTreeSet<String> = LAYERS.iter().map(|m| m.to_string()).collect();
    assert_eq!(seen, listed, "LAYERS and the files of src/ differ");
}

#[test]
fn lib_declares_the_modules_in_layer_order() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let lib = code(&lib);
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert_eq!(declared, LAYERS);
}

#[test]
fn the_scanner_sees_groups_and_root_items() {
    let found = used_modules("use crate::{list, object::{a, b}};\nlet x = crate::Cc::new(1);");
    assert_eq!(found, ["cc", "list", "object"].iter().map(|s| s.to_string()).collect());
}
