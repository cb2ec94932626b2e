//! pymalloc-python behaves as python3 on its command line, and runs CPython
//! on pymalloc-rs in all three domains.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_pymalloc-python");
const PYTHON: &str = env!("PYMALLOC_PYTHON_EXECUTABLE");

fn run(exe: &str, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for var in ["PYTHONMALLOC", "PYTHONMALLOCSTATS", "PYTHONDEVMODE", "PYTHONHOME", "PYTHONPATH"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The minor version of the CPython the launcher was built against.
fn minor() -> u32 {
    static MINOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *MINOR.get_or_init(|| {
        let o = run(PYTHON, &["-c", "import sys; print(sys.version_info[1])"], &[], "");
        out(&o).trim().parse().expect("the stock interpreter's version")
    })
}

/// What that stock CPython printed, captured by
/// scripts/capture_cpython_reference.py.
fn reference(name: &str) -> String {
    let path = format!("{}/../pymalloc/tests/data/cpython-3.{}/{name}", env!("CARGO_MANIFEST_DIR"), minor());
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn ours(args: &[&str]) -> Output {
    run(LAUNCHER, args, &[], "")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pymalloc-python-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_command_line_and_exit_codes_are_python3s() {
    let script = scratch("argv.py", "import sys\nprint(sys.argv[1:])\nsys.exit(int(sys.argv[1]))\n");
    let script = script.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-c", "print(6 * 7)"], ""),
        (vec!["-c", "import sys; print(sys.argv)", "a", "-E", "b"], ""),
        (vec!["-c", "raise SystemExit(3)"], ""),
        (vec!["-c", "import sys; sys.exit('bye')"], ""),
        (vec!["-c", "1/0"], ""),
        (vec!["-c", "syntax error here"], ""),
        (vec![script, "5", "x"], ""),
        (vec!["-", "arg"], "import sys\nprint('stdin', sys.argv)\n"),
        (vec![], "print('from stdin')\n"),
        (vec!["-m", "json.tool"], "{\"b\": [1, 2], \"a\": null}"),
        (vec!["-m", "no_such_module_here"], ""),
        (vec!["-I", "-c", "import sys; print(sys.flags.isolated, sys.flags.ignore_environment)"], ""),
        (vec!["-E", "-c", "import sys; print(sys.flags.ignore_environment)"], ""),
        (vec!["-X", "utf8", "-c", "import sys; print(sys.flags.utf8_mode, sys._xoptions)"], ""),
        (vec!["-O", "-B", "-s", "-c", "import sys; print(sys.flags.optimize, sys.dont_write_bytecode)"], ""),
        (vec!["-W", "error", "-c", "import warnings; print(warnings.filters[0][0])"], ""),
        (vec!["-i", "-c", "x = 20"], "print(x + 22)\n"),
        (vec!["-q", "-i"], "print('repl', 1 + 1)\n"),
        (vec!["--version"], ""),
        (vec!["-V", "-V"], ""),
        (vec!["-h"], ""),
        (vec!["--no-such-option"], ""),
        (vec!["/no/such/script.py"], ""),
    ];
    for (args, stdin) in cases {
        let a = run(LAUNCHER, &args, &[], stdin);
        let b = run(PYTHON, &args, &[], stdin);
        assert_eq!(a.status.code(), b.status.code(), "exit code of {args:?}\n{}", err(&a));
        // Usage text names the program: compare with the names swapped.
        assert_eq!(out(&a).replace(LAUNCHER, "PYTHON"), out(&b).replace(PYTHON, "PYTHON"), "stdout of {args:?}");
        // stderr names the program; compare with the names swapped.
        let ea = err(&a).replace(LAUNCHER, "PYTHON");
        let eb = err(&b).replace(PYTHON, "PYTHON");
        let last = |s: &str| s.lines().last().map(str::to_owned);
        assert_eq!(last(&ea), last(&eb), "stderr of {args:?}:\n{ea}\n---\n{eb}");
    }
}

#[test]
fn sys_executable_is_the_launcher_and_children_run_on_it() {
    let o = ours(&[
        "-c",
        "import sys, subprocess, _pymalloc\n\
         print(sys.executable)\n\
         r = subprocess.run([sys.executable, '-c', 'import _pymalloc, sys; print(_pymalloc.allocator(), sys.executable)'], capture_output=True, text=True)\n\
         print(r.stdout.strip())\n\
         import multiprocessing as mp\n\
         if __name__ == '__main__':\n\
         \x20   with mp.get_context('spawn').Pool(1) as p:\n\
         \x20       print(p.apply(__import__('_pymalloc').allocator))",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let lines: Vec<String> = out(&o).lines().map(str::to_owned).collect();
    let exe = std::fs::canonicalize(LAUNCHER).unwrap();
    assert_eq!(std::fs::canonicalize(&lines[0]).unwrap(), exe);
    assert_eq!(lines[1], format!("pymalloc {}", lines[0]));
    assert_eq!(lines[2], "pymalloc", "a multiprocessing worker runs on pymalloc-rs");
}

#[test]
fn all_three_domains_are_ours() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/domains_are_ours.py");
    let o = ours(&[script.to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    let text = out(&o);
    assert_eq!(text.matches(" ours ").count(), 12, "{text}");
    assert!(text.contains("pymem_getallocatorsname: RuntimeError: cannot get allocators name"), "{text}");
    // The same check fails under stock python3: it does test something.
    let stock = run(PYTHON, &[script.to_str().unwrap()], &[], "");
    assert!(!stock.status.success());
    assert_eq!(out(&stock).matches(" NOT OURS ").count(), 12);
}

#[test]
fn pythonmalloc_selects_our_configurations() {
    let code =
        "import _pymalloc, os, sys; print(_pymalloc.allocator(), os.environ.get('PYTHONMALLOC'), sys.flags.dev_mode)";
    let mut cases = vec![
        ("", "pymalloc"),
        ("default", "pymalloc"),
        ("pymalloc", "pymalloc"),
        ("malloc", "malloc"),
        ("debug", "pymalloc_debug"),
        ("pymalloc_debug", "pymalloc_debug"),
        ("malloc_debug", "malloc_debug"),
        ("pymalloc_all", "pymalloc_all"),
        ("pymalloc_all_debug", "pymalloc_all_debug"),
    ];
    // CPython 3.13 built with mimalloc: our heap per thread stands for it.
    let has_mimalloc = run(PYTHON, &["-c", "pass"], &[("PYTHONMALLOC", "mimalloc")], "").status.success();
    if has_mimalloc {
        cases.extend([("mimalloc", "pymalloc"), ("mimalloc_debug", "pymalloc_debug")]);
    }
    for (var, want) in cases {
        let o = run(LAUNCHER, &["-c", &format!("{code}; print(_pymalloc.mode())")], &[("PYTHONMALLOC", var)], "");
        assert!(o.status.success(), "{var}: {}", err(&o));
        let words: Vec<String> = out(&o).split_whitespace().map(str::to_owned).collect();
        assert_eq!(words[0], want, "PYTHONMALLOC={var}");
        if !var.is_empty() {
            assert_eq!(words[1], var, "children inherit PYTHONMALLOC");
        }
        if want.starts_with("pymalloc") {
            let mode = if var.starts_with("mimalloc") { "threaded" } else { "gil" };
            assert_eq!(out(&o).lines().nth(1), Some(mode), "PYTHONMALLOC={var}");
        }
    }
    assert_eq!(has_mimalloc, minor() >= 13, "this machine's 3.13 is built with mimalloc");
    // Dev mode means debug hooks, unless PYTHONMALLOC says otherwise.
    let o = run(LAUNCHER, &["-X", "dev", "-c", code], &[], "");
    assert_eq!(out(&o).trim(), "pymalloc_debug None True");
    let o = run(LAUNCHER, &["-c", code], &[("PYTHONDEVMODE", "1")], "");
    assert_eq!(out(&o).trim(), "pymalloc_debug None True");
    let o = run(LAUNCHER, &["-X", "dev", "-c", code], &[("PYTHONMALLOC", "malloc")], "");
    assert_eq!(out(&o).trim(), "malloc malloc True");
    // -E and -I ignore the environment, PYTHONMALLOC included.
    let o = run(LAUNCHER, &["-E", "-c", code], &[("PYTHONMALLOC", "malloc")], "");
    assert_eq!(out(&o).split_whitespace().next(), Some("pymalloc"));
}

#[test]
fn an_unknown_pythonmalloc_is_an_error_listing_the_names() {
    // Exactly the names the stock interpreter accepts are accepted.
    let candidates = [
        "default",
        "debug",
        "pymalloc",
        "pymalloc_debug",
        "mimalloc",
        "mimalloc_debug",
        "malloc",
        "malloc_debug",
        "jemalloc",
        "Malloc",
        "pymalloc ",
    ];
    let mut accepted = vec![];
    for name in candidates {
        let stock = run(PYTHON, &["-c", "print('ran')"], &[("PYTHONMALLOC", name)], "");
        let o = run(LAUNCHER, &["-c", "print('ran')"], &[("PYTHONMALLOC", name)], "");
        assert_eq!(o.status.code(), stock.status.code(), "PYTHONMALLOC={name:?}: {}", err(&o));
        if stock.status.success() {
            assert_eq!(out(&o), "ran\n");
            accepted.push(name);
            continue;
        }
        assert_eq!(o.status.code(), Some(1));
        assert!(out(&o).is_empty());
        let e = err(&o);
        assert!(e.starts_with(&err(&stock)), "CPython's two lines first:\n{e}");
        assert!(e.contains(&format!("unknown PYTHONMALLOC allocator '{name}'")), "{e}");
    }
    assert!(accepted.len() >= 6, "{accepted:?}");
    // The message lists them in CPython's order.
    let o = run(LAUNCHER, &["-c", "print('ran')"], &[("PYTHONMALLOC", "jemalloc")], "");
    let list = format!("CPython 3.{} accepts: {}", minor(), accepted.join(", "));
    assert!(err(&o).contains(&list), "{} lacks {list}", err(&o));
    // Ignored with -E, as python3 does.
    let o = run(LAUNCHER, &["-E", "-c", "print('ran')"], &[("PYTHONMALLOC", "jemalloc")], "");
    assert_eq!(out(&o), "ran\n");
}

#[test]
fn pymalloc_mode_and_purge_select_ours_and_reject_unknown_values() {
    // Each mode and purge policy runs a program that builds and frees a
    // structure, and reports itself.
    let code = "import _pymalloc\nx = [str(i) * 3 for i in range(200000)]\ndel x\n\
                _pymalloc.validate()\nprint(_pymalloc.mode(), _pymalloc.purge() >= 0)";
    for (mode, purge) in
        [("gil", "never"), ("gil", "immediate"), ("gil", "threshold:16:2"), ("threaded", "default"), ("locked", "")]
    {
        let o = run(LAUNCHER, &["-c", code], &[("PYMALLOC_MODE", mode), ("PYMALLOC_PURGE", purge)], "");
        assert!(o.status.success(), "{mode}/{purge}: {}", err(&o));
        let line = out(&o);
        assert!(line.starts_with(mode), "{mode}/{purge}: {line}");
        assert!(line.trim_end().ends_with("True"), "{mode}/{purge}: {line}");
    }
    let o = run(LAUNCHER, &["-c", "print('ran')"], &[("PYMALLOC_PURGE", "sometimes")], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).is_empty());
    assert!(
        err(&o).contains("unknown purge policy 'sometimes'; valid: default, decay, decay:MS, never, immediate"),
        "{}",
        err(&o)
    );
    let o = run(LAUNCHER, &["-c", "print('ran')"], &[("PYMALLOC_MODE", "fast")], "");
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).is_empty());
    assert!(err(&o).contains("unknown PYMALLOC_MODE 'fast'; valid: gil, threaded, locked"), "{}", err(&o));
}

#[test]
fn pythonmallocstats_prints_our_table_on_new_arenas_and_at_exit() {
    let o = run(
        LAUNCHER,
        &["-c", "x = [object() for i in range(100000)]; print(len(x))"],
        &[("PYTHONMALLOCSTATS", "1")],
        "",
    );
    assert!(o.status.success());
    let e = err(&o);
    let tables = e.matches("Small block threshold = 512, in 32 size classes.").count();
    assert!(tables >= 3, "one per new arena and one at exit: {tables}");
    let last = e.rsplit("Small block threshold").next().unwrap();
    assert!(last.contains("# arenas allocated current         ="), "{last}");
    // 3.9 has no arena map.
    assert_eq!(last.contains("# bytes lost to arena map root     =              262,144"), minor() >= 10, "{last}");
    let o = ours(&["-c", "pass"]);
    assert!(!err(&o).contains("Small block threshold"));
}

/// A `sys._debugmallocstats()` text with the values taken out: the class
/// rows as one line, numbers as N (the column of each `=` stays), and the
/// free-list lines as their kinds (the lists' lengths vary by version).
fn stats_layout(text: &str) -> (Vec<String>, std::collections::BTreeSet<String>) {
    let (mut table, mut kinds) = (vec![], std::collections::BTreeSet::new());
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(i) = words.iter().position(|&w| w == "free") {
            kinds.insert(words[i..words.iter().position(|&w| w == "*").unwrap()].join(" "));
            continue;
        }
        let shape: String = line.chars().map(|c| if c.is_ascii_digit() || c == ',' { 'N' } else { c }).collect();
        if words.len() == 5 && words.iter().all(|w| w.parse::<u64>().is_ok()) {
            if table.last().is_some_and(|l| l == "ROWS") {
                continue;
            }
            table.push("ROWS".to_owned());
            continue;
        }
        let mut squeezed = shape.split('=').map(|p| p.trim().replace("NNN", "N")).collect::<Vec<_>>().join(" = ");
        while squeezed.contains("NN") {
            squeezed = squeezed.replace("NN", "N");
        }
        if let Some(col) = line.find('=') {
            if !line.starts_with("Small") {
                // printone's layout: the label padded to 35 columns, "=",
                // then the value right-aligned in 21.
                assert!(col >= 35 && line.len() == col + 22, "{line:?}");
            }
        }
        table.push(squeezed);
    }
    (table, kinds)
}

#[test]
fn sys_debugmallocstats_reports_our_heap_then_cpythons_free_lists() {
    let o = ours(&["-c", "import sys; sys._debugmallocstats()"]);
    let e = err(&o);
    assert!(e.starts_with("Small block threshold = 512, in 32 size classes.\n\nclass   size   num pools"), "{e}");
    // The layout of this version's stock text, line for line: 3.9 has no
    // arena map, 3.12 no frame free list, 3.13 a dict-keys one.
    let (table, kinds) = stats_layout(&e);
    let (stock_table, stock_kinds) = stats_layout(&reference("debugmallocstats.txt"));
    assert_eq!(table, stock_table);
    assert_eq!(kinds, stock_kinds);
    assert!(kinds.contains("free PyDictObjects"), "{kinds:?}");
    let o = ours(&["-c", "import sys\ntry:\n sys._debugmallocstats(True)\nexcept TypeError:\n print('TypeError')"]);
    assert_eq!(out(&o), "TypeError\n");
    // pymalloc_all serves MEM and OBJ with pymalloc too: the same table.
    let o = run(LAUNCHER, &["-c", "import sys; sys._debugmallocstats()"], &[("PYTHONMALLOC", "pymalloc_all")], "");
    assert_eq!(stats_layout(&err(&o)).0, stock_table, "{}", err(&o));
    // With PYTHONMALLOC=malloc pymalloc is not in use: only the free lists.
    let o = run(LAUNCHER, &["-c", "import sys; sys._debugmallocstats()"], &[("PYTHONMALLOC", "malloc")], "");
    assert!(!err(&o).contains("Small block threshold") && err(&o).contains("free PyDictObjects"));
    assert_eq!(stats_layout(&err(&o)).1, stock_kinds);
}

#[test]
fn the_pymalloc_module() {
    let code = r#"
import _pymalloc, sys, gc
def pools_in_use(arenas):
    return [(a["address"], i, p[0], p[1]) for a in arenas for i, p in enumerate(a["pools"]) if p[0] in ("used", "full")]
def class_pools(stats):
    return [c["pools"] for c in stats["classes"]]
# Python allocates while building each result: trust an arena picture only
# when the statistics taken just before and just after it agree.
for attempt in range(50):
    s = _pymalloc.stats()
    arenas = _pymalloc.arenas()
    after = _pymalloc.stats()
    if class_pools(s) == class_pools(after) and s["arenas_current"] == after["arenas_current"]:
        break
    del s, arenas, after
else:
    raise AssertionError("the heap never held still")
parts = ("allocated_bytes", "available_bytes", "unused_pool_bytes", "pool_header_bytes",
         "quantization_bytes", "arena_alignment_bytes")
assert sum(s[k] for k in parts) == s["arena_bytes"] == s["arenas_current"] * s["arena_size"], s
assert s["blocks_in_use"] == sum(c["blocks_in_use"] for c in s["classes"])
assert len(s["classes"]) == s["size_classes"] == 32
assert len(arenas) == s["arenas_current"]
used = pools_in_use(arenas)
assert len(used) == sum(c["pools"] for c in s["classes"]), (len(used), s)
for c in s["classes"]:
    assert sum(1 for u in used if u[3] == c["index"]) == c["pools"], c
for a in arenas:
    assert len(a["pools"]) == a["ntotalpools"]
    assert a["nfreepools"] == sum(1 for p in a["pools"] if p[0] in ("empty", "untouched"))
text = _pymalloc.arena_map()
assert len(text.splitlines()) == 1 + len(arenas), text
svg = _pymalloc.arena_map_svg()
assert svg.startswith("<svg") and svg.count("<rect") == sum(a["ntotalpools"] for a in arenas)
import ctypes
small, big = object(), bytearray(100000)
big_buffer = ctypes.addressof((ctypes.c_char * len(big)).from_buffer(big))
assert _pymalloc.owns(id(small)), "small objects live in pools"
assert not _pymalloc.owns(big_buffer), "100 kB buffers come from the raw allocator"
assert _pymalloc.block_size(17) == 32 and _pymalloc.block_size(513) is None
_pymalloc.validate()
assert sys.getallocatedblocks is _pymalloc.getallocatedblocks and sys.getallocatedblocks() > 0
print("ok", _pymalloc.allocator())
"#;
    let o = ours(&["-c", code]);
    assert_eq!(out(&o), "ok pymalloc\n", "{}", err(&o));
}

/// After a peak, scattered survivors: purge gives back free pages of pools
/// in use (not the pages live blocks hold), first pages included (the
/// headers are in the header table), `floor()` reports what is left and,
/// apart, the pages held for metadata, and
/// `pinning()` names the sparse pools that pin the rest.
#[test]
fn purge_floor_and_pinning_after_a_peak() {
    let code = r#"
import _pymalloc, gc
# Whether the launcher has its regions (not under a small RLIMIT_AS): its
# arenas then keep their headers in the table.
REGION = _pymalloc.stats()["header_table_bytes"] > 0
records = [{"id": i, "name": str(i) * 3, "t": (i, i + 1)} for i in range(200000)]
keep = records[::100]
del records
gc.collect()
before = _pymalloc.floor()
pinned_before = _pymalloc.pinning()
given = _pymalloc.purge()
after = _pymalloc.floor()
_pymalloc.validate()
assert given > 0, given
assert set(after) == {"pool_pages", "span_pages", "malloc_in_use", "header_pages"}, after
# Scattered survivors leave pools whose first page holds none of them. The
# pools' headers are in the header table, not on those pages, so no pool
# page is held for a header alone: the purge gives them back with the
# rest. What the headers take is the table's entries, a 4 KiB page per arena.
# Without the region (a small RLIMIT_AS) arenas come from the OS and keep
# each pool's header on its first page, which the purge leaves.
st = _pymalloc.stats()
if REGION:
    assert sum(c["header_pages"] for c in pinned_before) == 0, pinned_before
    assert st["header_table_bytes"] == 4096 * st["arenas_current"] > 0, st
    assert st["header_table_bytes"] <= after["header_pages"] <= st["header_table_bytes"] + 2 ** 20, (after, st)
else:
    assert st["header_table_bytes"] == 0, st
    assert sum(c["header_pages"] for c in pinned_before) > 0, pinned_before
    assert after["header_pages"] > 0, after
assert after["pool_pages"] <= 1.01 * before["pool_pages"], (before, after)
assert after["pool_pages"] >= 0.9 * before["pool_pages"], ("purge frees no live page", before, after)
assert _pymalloc.stats()["pages_out"] > 0
p = _pymalloc.pinning()
assert p and all(set(c) == {"size", "pools", "blocks", "live_pages", "header_pages", "sparse_pools", "sparse_blocks", "sparse_bytes"} for c in p)
assert (sum(c["header_pages"] for c in p) == 0) == REGION, p
pinned = sum(c["sparse_bytes"] for c in p)
assert pinned > 0 and sum(c["sparse_blocks"] for c in p) < sum(c["blocks"] for c in p)
assert sum(c["live_pages"] for c in p) * 4096 >= after["pool_pages"] * 0.9
text = _pymalloc.pinning_report()
assert text.startswith("Who pins pymalloc's pool pages") and "total:" in text, text
assert len(keep) == 2000
print("ok")
"#;
    // With `never`, gc.collect() gives nothing back by itself: the explicit
    // purge is what this test measures.
    let o = run(LAUNCHER, &["-c", code], &[("PYMALLOC_PURGE", "never")], "");
    assert_eq!(out(&o), "ok\n", "{}", err(&o));
}

/// Under `pymalloc_all`, `floor()`'s `span_pages` counts the pages of our
/// own heaps holding blocks above 512 bytes: one page per survivor of a
/// heap of page-sized blocks kept one in four, before and after a purge.
#[test]
fn the_floor_counts_span_pages_under_every_size() {
    let code = r#"
import _pymalloc, gc
base = _pymalloc.floor()["span_pages"]
# The arena and segment regions are reserved together: the header table
# says whether the launcher has them (not under a small RLIMIT_AS).
REGION = _pymalloc.stats()["header_table_bytes"] > 0
if not REGION:
    # No segment region (a small RLIMIT_AS): every size above 512 bytes
    # goes to the C library, whose bytes the floor counts instead.
    m0 = _pymalloc.floor()["malloc_in_use"]
    blobs = [bytes([i % 256]) * 4000 for i in range(4000)]
    f = _pymalloc.floor()
    assert f["span_pages"] == base and _pymalloc.stats()["spans"]["medium_blocks"] == 0, f
    assert f["malloc_in_use"] - m0 >= 4000 * 4000, (f, m0)
    print("ok")
    raise SystemExit
blobs = [bytes([i % 256]) * 4000 for i in range(4000)]
full = _pymalloc.floor()["span_pages"] - base
sp = _pymalloc.stats()["spans"]
assert set(sp) == {"segments", "medium_blocks", "medium_bytes", "large_blocks", "large_bytes", "huge_blocks",
                   "huge_bytes", "dirty_bytes", "pages_out_bytes", "huge_kept_bytes"}, sp
assert sp["medium_blocks"] >= 4000 and sp["medium_bytes"] >= 4000 * 4096, sp
keep = blobs[::4]
del blobs
gc.collect()
_pymalloc.purge()
kept = _pymalloc.floor()["span_pages"] - base
# 4033-byte objects in 4096-byte blocks, one page each (span and segment
# headers add a little).
assert 4000 * 4096 <= full <= 4000 * 4096 * 1.02, full
assert 1000 * 4096 <= kept <= 1000 * 4096 * 1.05, kept
assert len(keep) == 1000
print("ok")
"#;
    let o = run(LAUNCHER, &["-c", code], &[("PYTHONMALLOC", "pymalloc_all")], "");
    assert_eq!(
        out(&o),
        "ok
",
        "{}",
        err(&o)
    );
}

/// A full collection gives memory back when enough lies free (a
/// `gc.callbacks` entry), unless `PYMALLOC_PURGE=never`; a small heap that
/// collects in a loop is left alone.
#[test]
fn full_collections_give_memory_back_unless_purge_is_never() {
    let code = r#"
import _pymalloc, gc, sys
small = _pymalloc.stats()["pages_out"]
for i in range(50):
    junk = [[j] for j in range(1000)]
    del junk
    gc.collect()
assert _pymalloc.stats()["pages_out"] == small, "a small heap is left alone"
records = [{"id": i, "name": str(i) * 3, "t": (i, i + 1)} for i in range(200000)]
keep = records[::100]
del records
gc.collect(1)
before = _pymalloc.stats()["pages_out"]
gc.collect()
after = _pymalloc.stats()["pages_out"]
_pymalloc.validate()
# The callback checks its arguments as a builtin does (it is C API code).
for bad in [("stop",), ("stop", []), (1, {}), ("stop", {}, 3)]:
    try:
        _pymalloc._after_collection(*bad)
    except TypeError:
        pass
    else:
        raise AssertionError(bad)
assert _pymalloc._after_collection("start", {"generation": 2}) is None
f = _pymalloc._after_collection
assert (f.__module__, f.__self__, f.__name__) == ("_pymalloc", _pymalloc, "_after_collection"), f
assert "_after_collection" in _pymalloc.__all__
print(len(gc.callbacks), before == small, after > before)
"#;
    let o = ours(&["-c", code]);
    assert_eq!(out(&o), "1 True True\n", "{}", err(&o));
    let o = run(LAUNCHER, &["-c", code], &[("PYMALLOC_PURGE", "never")], "");
    assert_eq!(out(&o), "0 True False\n", "{}", err(&o));
}

/// A request of an arena's size or more (a 16 MiB bytearray, which goes to
/// RAW) first gives back the empty pools and free arenas the decay policy
/// keeps: a program that drops a phase's objects and builds one large
/// buffer (pyperformance's pyflate) peaked with both. The period is long
/// enough that no sweep runs during the test.
#[test]
fn a_large_request_gives_back_what_the_decay_keeps() {
    let code = r#"
import _pymalloc, gc
gc.disable()
def held():
    s = _pymalloc.stats()
    empty = (s["unused_pools"] - s["decommitted_pools"]) * (s["unused_pool_bytes"] // max(s["unused_pools"], 1))
    return s["arena_bytes"] >> 20, empty >> 20
junk = [[i] for i in range(300000)]
del junk
before = held()
small = bytearray(512 << 10)
middle = held()
big = bytearray(16 << 20)
after = held()
print(before[0] >= 20, before[1] >= 16, middle == before, after[0] <= 12, after[1] <= 2, before, after)
"#;
    let o = run(LAUNCHER, &["-c", code], &[("PYMALLOC_PURGE", "decay:60000")], "");
    assert!(out(&o).starts_with("True True True True True "), "{}{}", out(&o), err(&o));
}

/// With tracemalloc on, the pinning report names the line whose scattered
/// survivors pin the sparse pools, as text, as dicts, and in the arena
/// picture; without it, the line is unknown and the report says how to
/// learn it.
#[test]
fn pinning_names_the_source_lines_that_pin_pages() {
    let code = r#"
import tracemalloc, gc, _pymalloc
traced = len(__import__("sys").argv) > 1
if traced:
    tracemalloc.start(1)
junk = [[i] for i in range(300000)]
keep = junk[::200]
del junk
gc.collect()
lines = _pymalloc.pinning_by_line(100)
top = lines[0]
total = sum(d["pinned_bytes"] for d in lines)
report = _pymalloc.pinning_report()
svg = _pymalloc.arena_map_svg()
if traced:
    # Each survivor is a list, its item array and an int: 1500 of each.
    print(top["filename"].endswith("-c") or top["filename"] == "<string>", top["lineno"],
          4000 <= top["blocks"] <= 4500, top["pinned_bytes"] * 10 > total * 9, top["pinned_bytes"] > 4 << 20,
          "<string>:6" in report, "most by &lt;string&gt;:6" in svg)
else:
    print(top["filename"], top["lineno"], top["blocks"] >= 4000, "start tracemalloc" in report, "&lt;not traced&gt;" in svg)
"#;
    let o = ours(&["-c", code, "traced"]);
    assert_eq!(out(&o), "True 6 True True True True True\n", "{}", err(&o));
    let o = ours(&["-c", code]);
    assert_eq!(out(&o), "None None True True True\n", "{}", err(&o));
}

/// The default decay policy keeps freed arenas for reuse, but the end of a
/// full collection gives them back at once, even for a heap too small for
/// the whole purge.
#[test]
fn a_full_collection_gives_back_free_arenas_without_waiting_for_the_decay() {
    let code = r#"
import _pymalloc, gc
arenas = lambda: _pymalloc.stats()["arenas_current"]
gc.collect()
before = arenas()
x = [(i,) for i in range(60000)]
grown = arenas()
del x
kept = arenas()
gc.collect()
print(grown - before >= 3, kept == grown, arenas() <= before + 1)
"#;
    let o = ours(&["-c", code]);
    assert_eq!(out(&o), "True True True\n", "{}", err(&o));
}

/// The default decay policy keeps what was freed for reuse, and the
/// background thread gives it back while the process sleeps; the child of
/// `os.fork()` gets a thread of its own.
#[test]
fn an_idle_process_gives_back_what_it_freed() {
    let code = r#"
import _pymalloc, os, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
assert _pymalloc.purge_policy() == ("decay:1000", True), _pymalloc.purge_policy()
base = rss()
x = [(i, float(i)) for i in range(1_000_000)]
peak = rss()
del x
kept = rss()
time.sleep(4)
idle = rss()
grown = peak - base
print(grown > 50e6, kept - base > grown / 2, idle - base < grown / 10)
pid = os.fork()
if pid == 0:
    os._exit(0 if _pymalloc.purge_policy()[1] else 1)
print(os.waitpid(pid, 0)[1] == 0)
"#;
    let o = ours(&["-c", code]);
    assert_eq!(out(&o), "True True True\nTrue\n", "{}", err(&o));
}

#[test]
fn tracemalloc_works_on_top_of_our_allocators() {
    let code = r#"
import tracemalloc
tracemalloc.start(10)
data = [bytes(100) for i in range(10000)]
cur, peak = tracemalloc.get_traced_memory()
snap = tracemalloc.take_snapshot()
top = snap.statistics("lineno")[0]
print(cur > 1_000_000, peak >= cur, top.count >= 10000, tracemalloc.get_object_traceback(data[0]) is not None)
import _pymalloc; print(_pymalloc.allocator())
"#;
    let o = ours(&["-c", code]);
    assert_eq!(out(&o), "True True True True\npymalloc\n", "{}", err(&o));
}

/// Replaces hexadecimal addresses (not byte values) with ADDR.
fn scrub(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("0x") {
        out.push_str(&rest[..i]);
        let hex = rest[i + 2..].bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex == 2 {
            out.push_str(&rest[i..i + 4]);
        } else {
            out.push_str("ADDR");
        }
        rest = &rest[i + 2 + hex..];
    }
    out.push_str(rest);
    out
}

#[test]
fn debug_hook_reports_match_cpython_byte_for_byte() {
    let reference = reference("debug-hooks-reports.txt");
    for case in ["pymem_buffer_overflow", "pymem_api_misuse", "pymem_malloc_without_gil", "pyobject_malloc_without_gil"]
    {
        let start = reference.find(&format!("=== {case}\n")).unwrap() + case.len() + 5;
        let want = reference[start..].split("=== ").next().unwrap();
        let o =
            run(LAUNCHER, &["-c", &format!("import _testcapi; _testcapi.{case}()")], &[("PYTHONMALLOC", "debug")], "");
        assert_eq!(o.status.code(), None, "{case} aborts");
        assert_eq!(scrub(&err(&o)), scrub(want), "{case}");
    }
    // With tracemalloc on, the report shows where the block was allocated.
    let o = run(
        LAUNCHER,
        &["-X", "tracemalloc=5", "-c", "import _testcapi\n_testcapi.pymem_buffer_overflow()"],
        &[("PYTHONMALLOC", "debug")],
        "",
    );
    let e = err(&o);
    assert!(e.contains("\nMemory block allocated at (most recent call first):\n  File \"<string>\", line 2\n\nFatal Python error: _PyMem_DebugRawFree: bad trailing pad byte\n"), "{e}");
    // The serial number line, on request.
    let o = run(
        LAUNCHER,
        &["-c", "import _testcapi; _testcapi.pymem_buffer_overflow()"],
        &[("PYTHONMALLOC", "pymalloc_debug"), ("PYMALLOC_DEBUG_SERIALNO", "1")],
        "",
    );
    assert!(err(&o).contains("    The block was made by call #"), "{}", err(&o));
}

/// The process state python3's own code starts from: signal dispositions and
/// closed standard descriptors are left as the parent gave them (Rust's
/// runtime start-up would install SIGSEGV/SIGBUS handlers and reopen closed
/// descriptors on /dev/null). glibc's two internal signals (32 and 33, for
/// thread cancellation and set*id) are left out: creating any thread (here,
/// the background decay thread) installs glibc's handler for them, as a
/// Python program's first `threading.Thread` does.
#[test]
fn process_start_up_is_python3s() {
    let probe = "import sys\n\
        f = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n\
        m = lambda k: '%016x' % (int(f[k], 16) & ~(3 << 31))\n\
        print(m('SigCgt'), m('SigIgn'), m('SigBlk'))\n";
    let stock = run(PYTHON, &["-c", probe], &[], "");
    let mine = ours(&["-c", probe]);
    assert!(stock.status.success() && mine.status.success(), "{}{}", err(&stock), err(&mine));
    assert_eq!(out(&mine), out(&stock), "caught/ignored/blocked signal masks differ from python3's");

    // Closed stdin, stdout and stderr: python3 sets the sys streams to None.
    let closed = "import sys, os; os.write(3, repr((sys.stdin, sys.stdout, sys.stderr)).encode())";
    let run_closed = |exe: &str| {
        let o = Command::new("sh")
            .args(["-c", "exec 3>&1; exec \"$0\" -c \"$1\" 0<&- 1>&- 2>&-", exe, closed])
            .env_remove("PYTHONMALLOC")
            .output()
            .expect("sh");
        assert!(o.status.success(), "{exe}: {:?}", o);
        out(&o)
    };
    let stock = run_closed(PYTHON);
    assert_eq!(stock, "(None, None, None)", "the probe itself");
    assert_eq!(run_closed(LAUNCHER), stock);
}

/// CPython 3.12+ warn at `os.fork()` when the process has more than one OS
/// thread. The decay thread is stopped around the fork and started again in
/// the parent once the warning's count is done, and in the child: a
/// single-threaded program forks without the warning, as under python3.
#[test]
fn fork_in_a_single_threaded_program_is_as_quiet_as_python3s() {
    let code = r#"
import os, time, _pymalloc
def fork_and_wait():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, b"1" if _pymalloc.purge_policy()[1] else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    return os.read(r, 1).decode()
child = fork_and_wait()
for i in range(5):
    time.sleep(0.01)
print("child", child, "parent", int(_pymalloc.purge_policy()[1]))
def nested():
    c = fork_and_wait()
    t = time.monotonic()
    while time.monotonic() - t < 0.1:
        pass
    return c, int(_pymalloc.purge_policy()[1])
print("nested", *nested())
"#;
    let o = run(LAUNCHER, &["-W", "always", "-c", code], &[], "");
    assert!(o.status.success(), "{}", err(&o));
    assert!(!err(&o).contains("multi-threaded"), "{}", err(&o));
    assert_eq!(out(&o), "child 1 parent 1\nnested 1 1\n", "the thread runs again in both");
    // The warning the test looks for exists: with a Python thread alive,
    // 3.12+ print it under both interpreters.
    let threaded = "import os, threading, time\n\
                    t = threading.Thread(target=time.sleep, args=(0.5,)); t.start()\n\
                    pid = os.fork()\n\
                    if pid == 0: os._exit(0)\n\
                    os.waitpid(pid, 0); t.join()";
    let stock = run(PYTHON, &["-W", "always", "-c", threaded], &[], "");
    let ours = run(LAUNCHER, &["-W", "always", "-c", threaded], &[], "");
    assert_eq!(err(&stock).contains("multi-threaded"), minor() >= 12, "{}", err(&stock));
    assert_eq!(err(&ours).contains("multi-threaded"), minor() >= 12, "{}", err(&ours));
}

/// A child forked by a thread other than the main one ends when that
/// thread (its only one) exits: the decay thread must not be started there
/// and keep it alive (test_threading's
/// `test_main_thread_after_fork_from_nonmain_thread`).
#[test]
fn a_child_forked_by_another_thread_ends_with_its_thread() {
    let code = r#"
import os, threading, time, warnings, _pymalloc
warnings.simplefilter("ignore")
def func():
    pid = os.fork()
    if pid == 0:
        print("child decay thread", int(_pymalloc.purge_policy()[1]), flush=True)
        return  # the child's only thread ends: so must the child
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print("child exited", os.waitstatus_to_exitcode(status), flush=True)
            return
        time.sleep(0.01)
    os.kill(pid, 9)
    print("child still running", flush=True)
t = threading.Thread(target=func); t.start(); t.join()
print("parent decay thread", int(_pymalloc.purge_policy()[1]))
"#;
    let o = run(LAUNCHER, &["-c", code], &[], "");
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o), "child decay thread 0\nchild exited 0\nparent decay thread 1\n", "{}", err(&o));
    // The main thread's children keep theirs (the test above).
}

/// The release launcher (built here, a no-op when fresh): the text layout
/// is for the optimised build, whose executed code is what the linker
/// script's patterns name; an unoptimised build runs many more functions.
fn release_launcher() -> std::path::PathBuf {
    // This binary is <target>/<profile>/deps/launcher-<hash>.
    let exe = std::env::current_exe().unwrap();
    let target = exe.parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(&cargo)
        .args(["build", "--release", "-p", "pymalloc-python", "--target-dir"])
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(o.status.success(), "building the release launcher:\n{}", err(&o));
    target.join("release/pymalloc-python")
}

/// The launcher's code that a run makes resident is one 64 KiB window, and
/// its read-only data one (`build.rs`: the linker script puts the functions
/// a run executes, `text-order.txt`, first in the window, the segments are
/// aligned to 64 KiB so that the windows are the kernel's fault-around
/// windows, and the exception tables lie after the read-only data; the
/// kernel's fault-around makes a whole window resident on one fault). Laid
/// out by the linker's default, 432 of the release build's 491 KiB of text
/// were resident; with all our code in the windows and the segments aligned
/// to 4 KiB, 256 KiB of text and 72-84 KiB of the read-only segment; with
/// the default configuration's modules first, 128 KiB. Checked with and
/// without `PYTHONMALLOC`, whose parsing runs code of its own.
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn the_code_a_run_makes_resident_is_one_window() {
    const WINDOW: u64 = 64 * 1024;
    let launcher = release_launcher();
    let launcher = launcher.to_str().unwrap();
    let headers = Command::new("readelf").args(["-lW", launcher]).output().expect("readelf");
    let headers = String::from_utf8_lossy(&headers.stdout).into_owned();
    for load in headers.lines().filter(|l| l.trim_start().starts_with("LOAD")) {
        let align = load.split_whitespace().last().unwrap();
        assert_eq!(align, "0x10000", "a segment not aligned to the fault-around window: {load}");
    }
    let sections = Command::new("readelf").args(["-SW", launcher]).output().expect("readelf");
    let sections = String::from_utf8_lossy(&sections.stdout).into_owned();
    let script = scratch(
        "text_rss.py",
        "import json, os, collections, pickle, decimal\n\
         d = [{'a': i, 'b': str(i) * 3} for i in range(20000)]\n\
         s = json.dumps(d); json.loads(s); import gc; gc.collect()\n\
         b = bytearray(4 << 20); del b\n\
         exe = os.readlink('/proc/self/exe'); rss = {}; perms = None\n\
         for line in open('/proc/self/smaps'):\n\
         \x20   f = line.split()\n\
         \x20   if '-' in f[0] and len(f) >= 5 and ':' in f[3]:\n\
         \x20       perms = f[1] if f[-1] == exe else None\n\
         \x20   elif perms and f[0] == 'Rss:':\n\
         \x20       rss[perms] = rss.get(perms, 0) + int(f[1])\n\
         big = lambda l: int(l.split()[0].split('-')[1], 16) - int(l.split()[0].split('-')[0], 16)\n\
         region = any(l.split()[1] == '---p' and big(l) >= 2 ** 30 for l in open('/proc/self/maps'))\n\
         print(rss.get('r-xp', 0), rss.get('r--p', 0), int(region))\n",
    );
    for env in [&[][..], &[("PYTHONMALLOC", "pymalloc")][..]] {
        let o = run(launcher, &[script.to_str().unwrap()], env, "");
        assert!(o.status.success(), "{}", err(&o));
        let kib: Vec<u64> = out(&o).split_whitespace().map(|w| w.parse().unwrap()).collect();
        let (text, read_only) = (kib[0] * 1024, kib[1] * 1024);
        // Without its regions (a small RLIMIT_AS: the run found no reserved
        // range of 1 GiB or more), the launcher's arenas come from the OS
        // through the radix map's code, which `text-order.txt` leaves out
        // of the window: the bound is then a second window, and a text-order
        // regression would go unseen there.
        let windows = if kib[2] == 1 { 1 } else { 2 };
        assert!(text > 0, "the launcher's text mapping was not found");
        assert!(
            text <= windows * WINDOW,
            "{} KiB of the launcher's text resident (env {env:?}): does text-order.txt list what a run executes \
             (python3 scripts/text_order.py --check)?",
            text / 1024
        );
        // The read-only segments: the one before the text (headers, symbols,
        // read-only data, unwind tables: one window) and the relocated data
        // after it (made read-only after relocation: 16-20 KiB).
        assert!(
            read_only <= WINDOW + 24 * 1024,
            "{} KiB of read-only segments resident (env {env:?})",
            read_only / 1024
        );
    }
    // Its relative relocations are packed (DT_RELR, build.rs): the loader
    // reads the whole relocation table at start-up, and in the RELA format
    // it was 32 KiB of the read-only segment.
    let dynamic = Command::new("readelf").args(["-dW", launcher]).output().expect("readelf");
    let dynamic = String::from_utf8_lossy(&dynamic.stdout).into_owned();
    assert!(dynamic.contains("(RELR)"), "no packed relocations:\n{dynamic}");
    let rela = sections.lines().find(|l| l.contains(".rela.dyn")).expect("a .rela.dyn section");
    let rela_size = u64::from_str_radix(rela.split(']').nth(1).unwrap().split_whitespace().collect::<Vec<_>>()[4], 16);
    assert!(rela_size.unwrap() < 8 * 1024, "{rela}");
}

/// The launcher carries its unwinder (build.rs, `link_unwinder_statically`):
/// it does not load `libgcc_s.so.1`, which python3 does not load either and
/// which was 100 KiB of resident pages in every run.
#[test]
fn a_run_does_not_load_libgcc_s() {
    let launcher = release_launcher();
    let launcher = launcher.to_str().unwrap();
    let dynamic = Command::new("readelf").args(["-dW", launcher]).output().expect("readelf");
    let dynamic = String::from_utf8_lossy(&dynamic.stdout).into_owned();
    assert!(dynamic.contains("(NEEDED)") && dynamic.contains("libc.so"), "{dynamic}");
    assert!(!dynamic.contains("libgcc_s"), "the launcher needs libgcc_s:\n{dynamic}");
    // A run that imports extension modules (their libraries load beside it).
    let o = run(
        launcher,
        &["-c", "import ssl, ctypes, decimal; print(sum(1 for l in open('/proc/self/maps') if 'libgcc_s' in l))"],
        &[],
        "",
    );
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).trim(), "0", "libgcc_s.so.1 mapped in a run");
}
