//! The harness end to end, at a small scale (`BENCH_SCALE`): every driver
//! builds and runs every workload it supports, and the report, the JSON and
//! the chart hold one median per (API, workload, allocator).

use std::process::Command;

const C_ALLOCATORS: &[&str] = &[
    "pymalloc-rs",
    "pymalloc-rs shared",
    "pymalloc-rs all",
    "pymalloc-rs shared all",
    "pymalloc-rs single-heap",
    "pymalloc-rs debug hooks",
    "obmalloc",
    "obmalloc debug hooks",
    "glibc",
    "mimalloc",
    "jemalloc",
];
const RUST_ALLOCATORS: &[&str] = &["pymalloc-rs", "pymalloc-rs small", "obmalloc", "glibc", "mimalloc", "jemalloc"];
const C_WORKLOADS: &[&str] = &["fastpath", "ring", "random", "mixed", "medium", "large", "survivors", "prodcons"];
const RUST_WORKLOADS: &[&str] =
    &["fastpath", "ring", "random", "mixed", "medium", "large", "survivors", "prodcons", "json", "btree"];

#[test]
fn every_driver_runs_every_workload_and_the_outputs_agree() {
    let dir = std::env::temp_dir().join(format!("pymalloc-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg, md) = (dir.join("out.json"), dir.join("chart.svg"), dir.join("report.md"));
    let out = Command::new(env!("CARGO_BIN_EXE_pymalloc-bench"))
        .args(["--reps", "1", "--json"])
        .arg(&json)
        .arg("--svg")
        .arg(&svg)
        .arg("--markdown")
        .arg(&md)
        .env("BENCH_SCALE", "500")
        .output()
        .expect("running pymalloc-bench");
    assert!(out.status.success(), "pymalloc-bench failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let medians = v["medians"].as_array().unwrap();
    let has = |api: &str, w: &str, a: &str| {
        medians.iter().find(|m| m["api"] == api && m["workload"] == w && m["allocator"] == a).cloned()
    };
    let mut expected = 0;
    for (api, allocs, ws) in [("C", C_ALLOCATORS, C_WORKLOADS), ("Rust", RUST_ALLOCATORS, RUST_WORKLOADS)] {
        for &a in allocs {
            for &w in ws {
                // obmalloc needs the GIL: no threaded workload.
                let skipped = a.starts_with("obmalloc") && w == "prodcons";
                match has(api, w, a) {
                    Some(m) => {
                        assert!(!skipped, "{api} {w} {a} should have been skipped");
                        let ns = m["ns_per_op"].as_f64().unwrap();
                        assert!(ns > 0.0 && ns.is_finite(), "{api} {w} {a}: {ns} ns/op");
                        assert!(m["peak_rss_kib"].as_i64().unwrap() > 0, "{api} {w} {a}: no peak RSS");
                        expected += 1;
                    }
                    None => assert!(skipped, "{api} {w} {a}: no median"),
                }
            }
        }
    }
    assert_eq!(medians.len(), expected, "one median per run cell and nothing else");
    assert_eq!(v["runs"].as_array().unwrap().len(), expected, "one run per cell with --reps 1");

    let report = std::fs::read_to_string(&md).unwrap();
    assert_eq!(report, String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_owned() + "\n");
    for heading in ["### Time, through the C API (C)", "### Time, through the Rust global allocator (Rust)"] {
        assert!(report.contains(heading), "{heading} missing:\n{report}");
    }
    for w in RUST_WORKLOADS {
        assert!(report.contains(&format!("| {w} |")), "row {w} missing");
    }
    assert_eq!(report.matches("| survivors: kept after 2.5 s idle / peak |").count(), 2);

    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.trim_end().ends_with("</svg>"));
    // A bar per (workload, allocator) cell, pymalloc-rs's own included.
    assert_eq!(chart.matches("<rect x=").count() - C_ALLOCATORS.len() - RUST_ALLOCATORS.len(), expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_workload_is_refused_by_the_drivers() {
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_rust-pymalloc"));
    let out = Command::new(exe).args(["no-such-workload", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown workload no-such-workload"));
}
