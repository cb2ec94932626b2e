//! `pymalloc-bench`: the same allocation workloads on pymalloc-rs, CPython
//! 3.11's obmalloc, glibc, mimalloc and jemalloc, through their C API and as
//! the Rust global allocator.
//!
//! ```text
//! cargo run --release -p pymalloc-bench -- [--reps 3] [--json out.json] [--svg chart.svg] [--markdown report.md]
//! ```
//!
//! Every (workload, allocator) pair runs in a process of its own, so that
//! resident-memory figures are the allocator's alone, and the allocators take
//! turns (their order rotates from one repetition to the next) so that a
//! noisy moment of the machine does not land on one of them. The figures are
//! medians over the repetitions.
//!
//! C API: `csrc/workloads.c`, compiled here once per allocator (pymalloc-rs
//! through `libpymalloc.a`'s `PyObject_Malloc`/`PyObject_Free`, obmalloc
//! through libpython's, `mi_malloc`, glibc's and jemalloc's `malloc`).
//! Rust: `src/workloads.rs` in one binary per `#[global_allocator]`.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(about = "pymalloc-rs against obmalloc, glibc, mimalloc and jemalloc")]
struct Args {
    /// Repetitions of every (workload, allocator) run.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Workloads to run (default: all).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Only these allocator entries (labels; default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Write the raw runs and the medians as JSON here ('-' for stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a chart (SVG) of the times relative to pymalloc-rs here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Write the markdown report here (it is printed either way).
    #[arg(long)]
    markdown: Option<PathBuf>,
}

const C_WORKLOADS: &[&str] = &["fastpath", "ring", "random", "mixed", "medium", "large", "survivors", "prodcons"];
const RUST_WORKLOADS: &[&str] =
    &["fastpath", "ring", "random", "mixed", "medium", "large", "survivors", "prodcons", "json", "btree"];

/// One allocator as benchmarked: a driver and how to run it.
struct Entry {
    label: &'static str,
    api: &'static str,
    exe: PathBuf,
    env: Vec<(&'static str, &'static str)>,
    /// Workloads it cannot run (obmalloc needs the GIL for threads).
    skip: &'static [&'static str],
    /// Environment for the threaded workloads instead of `env`.
    env_threads: Option<Vec<(&'static str, &'static str)>>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Run {
    workload: String,
    allocator: String,
    ops: u64,
    seconds: f64,
    ns_per_op: f64,
    base_rss_kib: i64,
    peak_rss_kib: i64,
    final_rss_kib: i64,
}

#[derive(Serialize, Clone, Debug)]
struct Median {
    api: String,
    workload: String,
    allocator: String,
    ns_per_op: f64,
    peak_rss_kib: i64,
    final_rss_kib: i64,
    /// (final - base) / (peak - base): resident memory kept after the frees.
    kept_fraction: f64,
}

fn target_dir() -> PathBuf {
    // This binary lives in target/<profile>/.
    std::env::current_exe().unwrap().parent().unwrap().to_path_buf()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn sh(cmd: &mut Command) {
    let st = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?} failed");
}

fn python_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("python3-config").args(args).output().expect("python3-config");
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(str::to_owned).collect()
}

/// Builds libpymalloc.a and the C drivers; returns the C entries.
fn build_c(dir: &Path) -> Vec<Entry> {
    let root = repo_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sh(Command::new(&cargo).args(["build", "--release", "-q", "-p", "pymalloc-capi"]).current_dir(&root));
    let lib = root.join("target/release/libpymalloc.a");
    let out = dir.join("bench-c");
    std::fs::create_dir_all(&out).unwrap();
    let src = root.join("crates/pymalloc-bench/csrc/workloads.c");
    let cc = |name: &str, defs: &[&str], link: &[String]| -> PathBuf {
        let exe = out.join(name);
        let mut cmd = Command::new("cc");
        cmd.args(["-O2", "-g", "-std=c11", "-pthread"]).args(defs).arg(&src).arg("-o").arg(&exe).args(link);
        sh(&mut cmd);
        exe
    };
    let sys = vec!["-lpthread".to_owned(), "-ldl".to_owned(), "-lm".to_owned()];
    let mut py = python_config(&["--ldflags", "--embed"]);
    let libdir: Vec<String> =
        py.iter().filter(|a| a.starts_with("-L")).map(|a| format!("-Wl,-rpath,{}", &a[2..])).collect();
    py.extend(libdir);
    let obmalloc = cc("c-obmalloc", &["-DALLOC_OBMALLOC"], &py);
    let pymalloc =
        cc("c-pymalloc", &["-DALLOC_PYMALLOC"], &[vec![lib.to_string_lossy().into_owned()], sys.clone()].concat());
    // The same driver linked to the shared library, as a C program using
    // `-lpymalloc` gets it.
    let libdir = root.join("target/release").to_string_lossy().into_owned();
    let shared = cc(
        "c-pymalloc-shared",
        &["-DALLOC_PYMALLOC"],
        &[vec![format!("-L{libdir}"), "-lpymalloc".to_owned(), format!("-Wl,-rpath,{libdir}")], sys.clone()].concat(),
    );
    vec![
        Entry { label: "pymalloc-rs", api: "C", exe: pymalloc.clone(), env: vec![], skip: &[], env_threads: None },
        Entry { label: "pymalloc-rs shared", api: "C", exe: shared.clone(), env: vec![], skip: &[], env_threads: None },
        // Every size served by pymalloc (RAW too): the `pymalloc_all` configuration.
        Entry {
            label: "pymalloc-rs all",
            api: "C",
            exe: pymalloc.clone(),
            env: vec![("PYTHONMALLOC", "pymalloc_all")],
            skip: &[],
            env_threads: None,
        },
        Entry {
            label: "pymalloc-rs shared all",
            api: "C",
            exe: shared,
            env: vec![("PYTHONMALLOC", "pymalloc_all")],
            skip: &[],
            env_threads: None,
        },
        Entry {
            label: "pymalloc-rs single-heap",
            api: "C",
            exe: pymalloc.clone(),
            env: vec![("PYMALLOC_MODE", "single")],
            skip: &[],
            // One heap shared by threads needs its lock.
            env_threads: Some(vec![("PYMALLOC_MODE", "locked")]),
        },
        Entry {
            label: "pymalloc-rs debug hooks",
            api: "C",
            exe: pymalloc,
            env: vec![("BENCH_DEBUG_HOOKS", "1")],
            skip: &[],
            env_threads: None,
        },
        Entry {
            label: "obmalloc",
            api: "C",
            exe: obmalloc.clone(),
            env: vec![],
            skip: &["prodcons"],
            env_threads: None,
        },
        Entry {
            label: "obmalloc debug hooks",
            api: "C",
            exe: obmalloc,
            env: vec![("BENCH_DEBUG_HOOKS", "1")],
            skip: &["prodcons"],
            env_threads: None,
        },
        Entry {
            label: "glibc",
            api: "C",
            exe: cc("c-glibc", &["-DALLOC_LIBC"], &sys),
            env: vec![],
            skip: &[],
            env_threads: None,
        },
        Entry {
            label: "mimalloc",
            api: "C",
            exe: cc("c-mimalloc", &["-DALLOC_MIMALLOC"], &[vec!["-lmimalloc".to_owned()], sys.clone()].concat()),
            env: vec![],
            skip: &[],
            env_threads: None,
        },
        Entry {
            label: "jemalloc",
            api: "C",
            exe: cc("c-jemalloc", &["-DALLOC_LIBC"], &[vec!["-ljemalloc".to_owned()], sys].concat()),
            env: vec![],
            skip: &[],
            env_threads: None,
        },
    ]
}

fn rust_entries(dir: &Path) -> Vec<Entry> {
    let e =
        |label, bin: &str, skip| Entry { label, api: "Rust", exe: dir.join(bin), env: vec![], skip, env_threads: None };
    vec![
        e("pymalloc-rs", "rust-pymalloc", &[]),
        e("pymalloc-rs small", "rust-pymalloc-small", &[]),
        e("obmalloc", "rust-obmalloc", &["prodcons"]),
        e("glibc", "rust-system", &[]),
        e("mimalloc", "rust-mimalloc", &[]),
        e("jemalloc", "rust-jemalloc", &[]),
    ]
}

fn run_one(e: &Entry, workload: &str) -> Run {
    let mut cmd = Command::new(&e.exe);
    // Cargo's LD_LIBRARY_PATH (its target's deps/) would take precedence over
    // the drivers' RUNPATH and could load a stale libpymalloc.so from there.
    cmd.args([workload, e.label]).env_remove("LD_LIBRARY_PATH");
    let env = if workload == "prodcons" { e.env_threads.as_ref().unwrap_or(&e.env) } else { &e.env };
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap_or_else(|err| panic!("{}: {err}", e.exe.display()));
    assert!(out.status.success(), "{} {workload}: {}", e.exe.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!("{} {workload}: bad output {err}: {}", e.exe.display(), String::from_utf8_lossy(&out.stdout))
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args = Args::parse();
    let dir = target_dir();
    eprintln!("building the C drivers in {}", dir.display());
    let mut entries = build_c(&dir);
    entries.extend(rust_entries(&dir));
    if !args.only.is_empty() {
        entries.retain(|e| args.only.iter().any(|o| o == e.label || o == &format!("{} ({})", e.label, e.api)));
    }
    let mut runs: Vec<(String, Run)> = Vec::new();
    for api in ["C", "Rust"] {
        let ws = if api == "C" { C_WORKLOADS } else { RUST_WORKLOADS };
        let group: Vec<&Entry> = entries.iter().filter(|e| e.api == api).collect();
        for &w in ws {
            if !args.workloads.is_empty() && !args.workloads.iter().any(|x| x == w) {
                continue;
            }
            for rep in 0..args.reps {
                // Rotate the order each repetition.
                for i in 0..group.len() {
                    let e = group[(i + rep) % group.len()];
                    if e.skip.contains(&w) {
                        continue;
                    }
                    let r = run_one(e, w);
                    eprintln!("{api:4} {w:9} {:24} {:8.2} ns/op", e.label, r.ns_per_op);
                    runs.push((api.to_owned(), r));
                }
            }
        }
    }

    // Medians per (api, workload, allocator).
    let mut groups: BTreeMap<(String, String, String), Vec<&Run>> = BTreeMap::new();
    for (api, r) in &runs {
        groups.entry((api.clone(), r.workload.clone(), r.allocator.clone())).or_default().push(r);
    }
    let medians: Vec<Median> = groups
        .iter()
        .map(|((api, w, a), rs)| {
            let base = median(rs.iter().map(|r| r.base_rss_kib as f64).collect());
            let peak = median(rs.iter().map(|r| r.peak_rss_kib as f64).collect());
            let fin = median(rs.iter().map(|r| r.final_rss_kib as f64).collect());
            Median {
                api: api.clone(),
                workload: w.clone(),
                allocator: a.clone(),
                ns_per_op: median(rs.iter().map(|r| r.ns_per_op).collect()),
                peak_rss_kib: peak as i64,
                final_rss_kib: fin as i64,
                kept_fraction: if peak > base { (fin - base).max(0.0) / (peak - base) } else { f64::NAN },
            }
        })
        .collect();

    let report = markdown(&entries, &medians, args.reps);
    println!("{report}");
    if let Some(p) = &args.markdown {
        std::fs::write(p, &report).unwrap();
    }
    if let Some(p) = &args.json {
        let all = serde_json::json!({
            "runs": runs.iter().map(|(api, r)| serde_json::json!({"api": api, "run": r})).collect::<Vec<_>>(),
            "medians": medians,
        });
        let text = serde_json::to_string_pretty(&all).unwrap();
        if p.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(p, text).unwrap();
        }
    }
    if let Some(p) = &args.svg {
        std::fs::write(p, svg(&entries, &medians)).unwrap();
    }
}

fn find<'a>(m: &'a [Median], api: &str, w: &str, a: &str) -> Option<&'a Median> {
    m.iter().find(|x| x.api == api && x.workload == w && x.allocator == a)
}

fn markdown(entries: &[Entry], m: &[Median], reps: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Medians of {reps} runs per cell, each in its own process, allocators alternating. \
         Cells: ns per operation, and in brackets pymalloc-rs's time divided by that allocator's \
         (below 1.00: pymalloc-rs is faster)."
    );
    for api in ["C", "Rust"] {
        let cols: Vec<&Entry> = entries.iter().filter(|e| e.api == api).collect();
        if cols.is_empty() {
            continue;
        }
        let ws: Vec<&str> = if api == "C" { C_WORKLOADS.to_vec() } else { RUST_WORKLOADS.to_vec() };
        let _ = writeln!(
            s,
            "\n### Time, through the {} ({api})\n",
            if api == "C" { "C API" } else { "Rust global allocator" }
        );
        let _ = writeln!(s, "| workload | {} |", cols.iter().map(|e| e.label).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(cols.len()));
        for w in &ws {
            let ours = find(m, api, w, "pymalloc-rs").map(|x| x.ns_per_op);
            let mut row = format!("| {w} |");
            let mut any = false;
            for e in &cols {
                match find(m, api, w, e.label) {
                    Some(x) => {
                        any = true;
                        let ratio = ours.map(|o| format!(" ({:.2})", o / x.ns_per_op)).unwrap_or_default();
                        let ratio = if e.label == "pymalloc-rs" { String::new() } else { ratio };
                        let _ = write!(row, " {:.2}{ratio} |", x.ns_per_op);
                    }
                    None => row.push_str(" n/a |"),
                }
            }
            if any {
                let _ = writeln!(s, "{row}");
            }
        }
        let _ = writeln!(s, "\n### Memory ({api}): peak / final resident MiB during the workload\n");
        let _ = writeln!(s, "| workload | {} |", cols.iter().map(|e| e.label).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(cols.len()));
        for w in ws.iter().filter(|w| cols.iter().any(|e| find(m, api, w, e.label).is_some())) {
            let mut row = format!("| {w} |");
            for e in &cols {
                match find(m, api, w, e.label) {
                    Some(x) => {
                        let _ = write!(
                            row,
                            " {:.1} / {:.1} |",
                            x.peak_rss_kib as f64 / 1024.0,
                            x.final_rss_kib as f64 / 1024.0
                        );
                    }
                    None => row.push_str(" n/a |"),
                }
            }
            let _ = writeln!(s, "{row}");
        }
        if cols.iter().any(|e| find(m, api, "survivors", e.label).is_some()) {
            let mut row = "| survivors: kept after 2.5 s idle / peak |".to_owned();
            for e in &cols {
                match find(m, api, "survivors", e.label) {
                    Some(x) => {
                        let _ = write!(row, " {:.3} |", x.kept_fraction);
                    }
                    None => row.push_str(" n/a |"),
                }
            }
            let _ = writeln!(s, "{row}");
        }
    }
    s
}

fn svg(entries: &[Entry], m: &[Median]) -> String {
    let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
    let mut s = String::new();
    let panels: Vec<(&str, &[&str])> = vec![("C", C_WORKLOADS), ("Rust", RUST_WORKLOADS)];
    let (bw, gap, ph) = (10.0, 14.0, 220.0);
    let width = 900.0;
    let height = 60.0 + panels.len() as f64 * (ph + 70.0);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="14">Time per operation relative to pymalloc-rs (1.0); lower is faster</text>"#
    );
    for (pi, (api, ws)) in panels.iter().enumerate() {
        let cols: Vec<&Entry> = entries.iter().filter(|e| e.api == *api).collect();
        let top = 40.0 + pi as f64 * (ph + 70.0);
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-size="12">{}</text>"#,
            top + 12.0,
            if *api == "C" { "C API" } else { "Rust global allocator" }
        );
        let ymax = 3.0f64;
        let y = |v: f64| top + 20.0 + ph - (v.min(ymax) / ymax) * ph;
        for t in [0.0, 1.0, 2.0, 3.0] {
            let _ = writeln!(
                s,
                r##"<line x1="50" x2="{}" y1="{y}" y2="{y}" stroke="#ccc"/><text x="20" y="{}">{t:.1}</text>"##,
                width - 10.0,
                y(t) + 4.0,
                y = y(t)
            );
        }
        let mut x = 60.0;
        for w in ws.iter() {
            let ours = find(m, api, w, "pymalloc-rs").map(|x| x.ns_per_op);
            let start = x;
            for (ci, e) in cols.iter().enumerate() {
                if let (Some(o), Some(v)) = (ours, find(m, api, w, e.label)) {
                    let r = v.ns_per_op / o;
                    let _ = writeln!(
                        s,
                        r#"<rect x="{x}" y="{}" width="{bw}" height="{}" fill="{}"><title>{} {w}: {:.2} ns ({r:.2}x)</title></rect>"#,
                        y(r),
                        y(0.0) - y(r),
                        colors[ci % colors.len()],
                        e.label,
                        v.ns_per_op
                    );
                }
                x += bw;
            }
            let _ =
                writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">{w}</text>"#, (start + x) / 2.0, y(0.0) + 14.0);
            x += gap;
        }
        for (ci, e) in cols.iter().enumerate() {
            let lx = 60.0 + ci as f64 * 130.0;
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
                y(0.0) + 24.0,
                colors[ci % colors.len()],
                lx + 14.0,
                y(0.0) + 33.0,
                e.label
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
