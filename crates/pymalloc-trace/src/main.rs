//! `pymalloc-trace`: reports from a snapshot the tracer dumped
//! (`pymalloc::snapshot::Snapshot::dump`, `PyMalloc_TraceDumpSnapshot`,
//! `PYMALLOC_TRACE_DUMP=path`).
//!
//! ```text
//! pymalloc-trace top SNAPSHOT [--key lineno|filename|traceback] [--cumulative] [--limit N]
//! pymalloc-trace compare OLD NEW [--key ...] [--cumulative] [--limit N]
//! pymalloc-trace collapsed SNAPSHOT [-o FILE]
//! pymalloc-trace flamegraph SNAPSHOT [-o FILE.svg] [--title TEXT]
//! ```
//!
//! * `top`: tracemalloc's statistics lines, biggest first, then the
//!   documentation's `display_top` summary.
//! * `compare`: tracemalloc's `compare_to` lines, largest change first.
//! * `collapsed`: live bytes by stack, one `frame;frame;... bytes` line per
//!   stack, oldest frame first, for flamegraph tools and speedscope.
//! * `flamegraph`: the same as an SVG flamegraph (inferno).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pymalloc::snapshot::{format_top, KeyType, Snapshot};

const USAGE: &str = "usage:
  pymalloc-trace top SNAPSHOT [--key lineno|filename|traceback] [--cumulative] [--limit N]
  pymalloc-trace compare OLD NEW [--key lineno|filename|traceback] [--cumulative] [--limit N]
  pymalloc-trace collapsed SNAPSHOT [-o FILE]
  pymalloc-trace flamegraph SNAPSHOT [-o FILE.svg] [--title TEXT]";

/// The parsed command line.
struct Args {
    command: String,
    files: Vec<PathBuf>,
    key: KeyType,
    cumulative: bool,
    limit: usize,
    out: Option<PathBuf>,
    title: String,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let command = it.next().ok_or("no command")?;
    let mut a = Args {
        command,
        files: Vec::new(),
        key: KeyType::Lineno,
        cumulative: false,
        limit: 10,
        out: None,
        title: "Live bytes by stack".into(),
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--key" => {
                a.key = match value("--key")?.as_str() {
                    "lineno" => KeyType::Lineno,
                    "filename" => KeyType::Filename,
                    "traceback" => KeyType::Traceback,
                    k => return Err(format!("unknown key {k:?}: lineno, filename or traceback")),
                }
            }
            "--cumulative" => a.cumulative = true,
            "--limit" => a.limit = value("--limit")?.parse().map_err(|_| "--limit takes a number")?,
            "-o" | "--output" => a.out = Some(value("-o")?.into()),
            "--title" => a.title = value("--title")?,
            f if !f.starts_with('-') => a.files.push(f.into()),
            f => return Err(format!("unknown option {f}")),
        }
    }
    let want = match a.command.as_str() {
        "top" | "collapsed" | "flamegraph" => 1,
        "compare" => 2,
        c => return Err(format!("unknown command {c:?}: top, compare, collapsed or flamegraph")),
    };
    if a.files.len() != want {
        return Err(format!("{} takes {want} snapshot file(s)", a.command));
    }
    Ok(a)
}

fn load(p: &Path) -> Result<Snapshot, String> {
    Snapshot::load(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Live bytes per stack, `frame;frame;... bytes`, oldest frame first, in
/// a stable order.
fn collapsed(s: &Snapshot) -> Vec<String> {
    let mut stacks: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for t in &s.traces {
        let names: Vec<String> = t.frames.iter().map(|f| f.function.replace([';', ' '], "_")).collect();
        let key = if names.is_empty() { "[unknown]".to_string() } else { names.join(";") };
        *stacks.entry(key).or_default() += t.size;
    }
    stacks.into_iter().map(|(k, v)| format!("{k} {v}")).collect()
}

fn write_out(out: &Option<PathBuf>, bytes: &[u8]) -> Result<(), String> {
    match out {
        Some(p) => std::fs::write(p, bytes).map_err(|e| format!("{}: {e}", p.display())),
        None => std::io::stdout().write_all(bytes).map_err(|e| e.to_string()),
    }
}

fn run(a: &Args) -> Result<(), String> {
    let err = |e: pymalloc::snapshot::SnapshotError| e.to_string();
    match a.command.as_str() {
        "top" => {
            let s = load(&a.files[0])?;
            let stats = s.statistics(a.key, a.cumulative).map_err(err)?;
            let mut text = String::new();
            for st in stats.iter().take(a.limit) {
                text += &format!("{st}\n");
            }
            text += "\n";
            text += &format_top(&stats, a.limit);
            write_out(&a.out, text.as_bytes())
        }
        "compare" => {
            let (old, new) = (load(&a.files[0])?, load(&a.files[1])?);
            let diff = new.compare_to(&old, a.key, a.cumulative).map_err(err)?;
            let text: String = diff.iter().take(a.limit).map(|d| format!("{d}\n")).collect();
            write_out(&a.out, text.as_bytes())
        }
        "collapsed" => {
            let s = load(&a.files[0])?;
            let text: String = collapsed(&s).into_iter().map(|l| l + "\n").collect();
            write_out(&a.out, text.as_bytes())
        }
        "flamegraph" => {
            let s = load(&a.files[0])?;
            let lines = collapsed(&s);
            if lines.is_empty() {
                return Err("the snapshot holds no trace".into());
            }
            let mut opts = inferno::flamegraph::Options::default();
            opts.title = a.title.clone();
            opts.count_name = "bytes".into();
            let mut svg = Vec::new();
            inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)
                .map_err(|e| e.to_string())?;
            write_out(&a.out, &svg)
        }
        _ => unreachable!("parse checked the command"),
    }
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pymalloc-trace: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pymalloc-trace: {e}");
            ExitCode::FAILURE
        }
    }
}
