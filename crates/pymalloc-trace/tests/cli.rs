//! The command-line tool on snapshots made by hand: exact text for `top`,
//! `compare` and `collapsed`, an SVG for `flamegraph`, and clear errors.

use std::process::Command;
use std::sync::Arc;

use pymalloc::snapshot::{Snapshot, SnapshotTrace};
use pymalloc::trace::{Frame, Source};

fn frame(function: &str, file: &str, line: u32) -> Frame {
    Frame { filename: file.into(), lineno: line, function: function.into(), addr: 0x1000 + line as usize }
}

/// main -> parse -> alloc_node (3 x 100 B), main -> load (1 x 5000 B).
fn snapshot(extra: usize) -> Snapshot {
    let node: Arc<[Frame]> = Arc::from(vec![
        frame("main", "src/main.rs", 10),
        frame("parse", "src/parse.rs", 20),
        frame("alloc_node", "src/parse.rs", 33),
    ]);
    let load: Arc<[Frame]> = Arc::from(vec![frame("main", "src/main.rs", 11), frame("load", "src/io.rs", 7)]);
    let t =
        |frames: &Arc<[Frame]>, size| SnapshotTrace { domain: 0, source: Source::Rust, size, frames: frames.clone() };
    let mut traces = vec![t(&node, 100), t(&node, 100), t(&node, 100), t(&load, 5000)];
    traces.extend((0..extra).map(|_| t(&node, 100)));
    Snapshot {
        traces,
        traceback_limit: 3,
        sample_bytes: 0,
        timeline: vec![(0, 0), (10, 5300 + 100 * extra), (20, 300)],
    }
}

fn tool(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pymalloc-trace")).args(args).output().unwrap()
}

fn stdout(args: &[&str]) -> String {
    let out = tool(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn reports_from_dumped_snapshots() {
    let dir = std::env::temp_dir().join(format!("pymalloc-trace-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (old, new) = (dir.join("old.snap"), dir.join("new.snap"));
    snapshot(0).dump(&old).unwrap();
    snapshot(2).dump(&new).unwrap();
    let (old_s, new_s) = (old.to_str().unwrap(), new.to_str().unwrap());

    assert_eq!(
        stdout(&["top", old_s, "--limit", "1"]),
        "src/io.rs:7: size=5000 B, count=1, average=5000 B\n\
         \n\
         Top 1 lines\n\
         #1: src/io.rs:7: 4.9 KiB\n\
         1 other: 0.3 KiB\n\
         Total allocated size: 5.2 KiB\n"
    );
    assert_eq!(
        stdout(&["top", old_s, "--key", "filename", "--cumulative"]).lines().take(3).collect::<Vec<_>>(),
        [
            "src/main.rs:0: size=5300 B, count=4, average=1325 B",
            "src/io.rs:0: size=5000 B, count=1, average=5000 B",
            "src/parse.rs:0: size=600 B, count=6, average=100 B",
        ]
    );
    assert_eq!(
        stdout(&["compare", old_s, new_s]),
        "src/parse.rs:33: size=500 B (+200 B), count=5 (+2), average=100 B\n\
         src/io.rs:7: size=5000 B (+0 B), count=1 (+0), average=5000 B\n"
    );
    assert_eq!(stdout(&["collapsed", new_s]), "main;load 5000\nmain;parse;alloc_node 500\n");

    let svg = dir.join("flame.svg");
    stdout(&["flamegraph", new_s, "-o", svg.to_str().unwrap(), "--title", "test flame"]);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{}", &svg[..100]);
    for name in ["test flame", "alloc_node", "load"] {
        assert!(svg.contains(name), "{name} missing");
    }

    let chart = dir.join("chart.svg");
    stdout(&["chart", new_s, "-o", chart.to_str().unwrap()]);
    let chart = std::fs::read_to_string(&chart).unwrap();
    assert!(chart.contains("<polyline") && chart.contains("Traced memory over time"), "{chart}");
    assert!(chart.contains("(peak 5.4 KiB)"), "the timeline's peak, 5500 B: {chart}");

    // dhat's viewer format: two program points, frames most recent first.
    let dhat = stdout(&["dhat", new_s]);
    assert!(dhat.starts_with("{\"dhatFileVersion\":2,\"mode\":\"rust-ad-hoc\""), "{dhat}");
    assert!(dhat.contains("{\"tb\":5000,\"tbk\":1,\"fs\":["), "{dhat}");
    assert!(dhat.contains("{\"tb\":500,\"tbk\":5,\"fs\":[1,2,3]}"), "{dhat}");
    assert!(dhat.contains("\"ftbl\":[\"[root]\",\"0x1021: alloc_node (src/parse.rs:33)\""), "{dhat}");

    // Errors: a usage message for a bad command line, the file for a bad file.
    let out = tool(&["draw", old_s]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("unknown command \"draw\": top, compare, collapsed, flamegraph, chart or dhat"));
    let out = tool(&["top", old_s, "--key", "line"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key \"line\": lineno, filename or traceback"));
    let out = tool(&["top", dir.join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    std::fs::remove_dir_all(&dir).unwrap();
}
