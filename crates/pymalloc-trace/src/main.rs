//! `pymalloc-trace`: reports from a snapshot the tracer dumped
//! (`pymalloc::snapshot::Snapshot::dump`, `PyMalloc_TraceDumpSnapshot`,
//! `PYMALLOC_TRACE_DUMP=path`).
//!
//! ```text
//! pymalloc-trace top SNAPSHOT [--key lineno|filename|traceback] [--cumulative] [--limit N]
//! pymalloc-trace compare OLD NEW [--key ...] [--cumulative] [--limit N]
//! pymalloc-trace collapsed SNAPSHOT [-o FILE]
//! pymalloc-trace flamegraph SNAPSHOT [-o FILE.svg] [--title TEXT]
//! pymalloc-trace chart SNAPSHOT [-o FILE.svg] [--title TEXT]
//! pymalloc-trace dhat SNAPSHOT [-o FILE.json]
//! ```
//!
//! * `top`: tracemalloc's statistics lines, biggest first, then the
//!   documentation's `display_top` summary.
//! * `compare`: tracemalloc's `compare_to` lines, largest change first.
//! * `collapsed`: live bytes by stack, one `frame;frame;... bytes` line per
//!   stack, oldest frame first, for flamegraph tools and speedscope.
//! * `flamegraph`: the same as an SVG flamegraph (inferno).
//! * `chart`: traced memory over time until the snapshot, as an SVG line
//!   chart (the snapshot's timeline).
//! * `dhat`: the live blocks per stack in dhat's JSON format (its ad-hoc
//!   mode: bytes and blocks per program point), for dhat's viewer
//!   (`dh_view.html`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pymalloc::snapshot::{format_top, KeyType, Snapshot};

const USAGE: &str = "usage:
  pymalloc-trace top SNAPSHOT [--key lineno|filename|traceback] [--cumulative] [--limit N]
  pymalloc-trace compare OLD NEW [--key lineno|filename|traceback] [--cumulative] [--limit N]
  pymalloc-trace collapsed SNAPSHOT [-o FILE]
  pymalloc-trace flamegraph SNAPSHOT [-o FILE.svg] [--title TEXT]
  pymalloc-trace chart SNAPSHOT [-o FILE.svg] [--title TEXT]
  pymalloc-trace dhat SNAPSHOT [-o FILE.json]";

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
        title: String::new(),
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
        "top" | "collapsed" | "flamegraph" | "chart" | "dhat" => 1,
        "compare" => 2,
        c => return Err(format!("unknown command {c:?}: top, compare, collapsed, flamegraph, chart or dhat")),
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

/// A byte count with a binary unit, for axis labels.
fn bytes_label(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if v == v.trunc() {
        format!("{v:.0} {}", units[u])
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An SVG line chart of `(milliseconds, bytes)` points, as steps.
fn chart(points: &[(u64, usize)], title: &str) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 420.0, 90.0, 20.0, 40.0, 50.0);
    let t_max = points.iter().map(|p| p.0).max().unwrap_or(0).max(1) as f64;
    let b_max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let x = |ms: f64| left + (w - left - right) * ms / t_max;
    let y = |b: f64| h - bottom - (h - top - bottom) * b / b_max;
    let mut path = String::new();
    let mut last_y = y(0.0);
    path += &format!("{:.1},{:.1} ", x(0.0), last_y);
    for &(ms, b) in points {
        let px = x(ms as f64);
        path += &format!("{px:.1},{last_y:.1} ");
        last_y = y(b as f64);
        path += &format!("{px:.1},{last_y:.1} ");
    }
    let mut svg = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n",
        w / 2.0,
        xml_escape(title)
    );
    for i in 0..=4 {
        let b = b_max * i as f64 / 4.0;
        let t = t_max * i as f64 / 4.0;
        svg += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.2} s</text>\n",
            w - right,
            y(b),
            y(b),
            left - 6.0,
            y(b) + 4.0,
            bytes_label(b),
            x(t),
            h - bottom + 18.0,
            t / 1000.0
        );
    }
    svg += &format!(
        "<polyline fill=\"none\" stroke=\"#c0392b\" stroke-width=\"1.5\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time since tracing started (peak {})</text>\n</svg>\n",
        path.trim_end(),
        w / 2.0,
        h - 12.0,
        bytes_label(b_max)
    );
    svg
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out += "\\\"",
            '\\' => out += "\\\\",
            c if (c as u32) < 0x20 => out += &format!("\\u{:04x}", c as u32),
            c => out.push(c),
        }
    }
    out + "\""
}

/// dhat's JSON (file version 2, ad-hoc mode): one program point per stack
/// with its live bytes and blocks; frames most recent first, as dhat lists
/// them, each `0xADDR: function (file:line)`.
fn dhat_json(s: &Snapshot, path: &Path) -> String {
    let mut ftbl: Vec<String> = vec!["[root]".into()];
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut points: std::collections::BTreeMap<Vec<usize>, (u64, u64)> = std::collections::BTreeMap::new();
    for t in &s.traces {
        let fs: Vec<usize> = t
            .frames
            .iter()
            .rev()
            .map(|f| {
                let name = format!("{:#x}: {} ({}:{})", f.addr, f.function, f.filename, f.lineno);
                *index.entry(name.clone()).or_insert_with(|| {
                    ftbl.push(name);
                    ftbl.len() - 1
                })
            })
            .collect();
        let e = points.entry(fs).or_default();
        e.0 += t.size as u64;
        e.1 += 1;
    }
    let pps: Vec<String> = points
        .iter()
        .map(|(fs, (b, k))| {
            let fs: Vec<String> = fs.iter().map(usize::to_string).collect();
            format!("{{\"tb\":{b},\"tbk\":{k},\"fs\":[{}]}}", fs.join(","))
        })
        .collect();
    let ftbl: Vec<String> = ftbl.iter().map(|f| json_str(f)).collect();
    format!(
        "{{\"dhatFileVersion\":2,\"mode\":\"rust-ad-hoc\",\"verb\":\"Allocated\",\"bklt\":false,\"bkacc\":false,\"bu\":\"byte\",\"bsu\":\"bytes\",\"bksu\":\"blocks\",\"tu\":\"µs\",\"Mtu\":\"s\",\"cmd\":{},\"pid\":0,\"te\":{},\"pps\":[{}],\"ftbl\":[{}]}}\n",
        json_str(&format!("pymalloc-trace snapshot {}", path.display())),
        s.timeline.last().map_or(0, |p| p.0 * 1000),
        pps.join(","),
        ftbl.join(",")
    )
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
            opts.title = if a.title.is_empty() { "Live bytes by stack".into() } else { a.title.clone() };
            opts.count_name = "bytes".into();
            let mut svg = Vec::new();
            inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), &mut svg)
                .map_err(|e| e.to_string())?;
            write_out(&a.out, &svg)
        }
        "chart" => {
            let s = load(&a.files[0])?;
            if s.timeline.is_empty() {
                return Err("the snapshot has no timeline".into());
            }
            let title = if a.title.is_empty() { "Traced memory over time" } else { &a.title };
            write_out(&a.out, chart(&s.timeline, title).as_bytes())
        }
        "dhat" => {
            let s = load(&a.files[0])?;
            write_out(&a.out, dhat_json(&s, &a.files[0]).as_bytes())
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
