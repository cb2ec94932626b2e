//! Snapshots of the traced blocks, and what tracemalloc computes from them:
//! statistics grouped by file, by line or by traceback, the difference
//! between two snapshots, filters, and a file format to keep them.
//!
//! The semantics are tracemalloc's (`Lib/tracemalloc.py`): the same
//! grouping, the same sort orders, the same filter rules and the same
//! text (`Statistic`'s and `StatisticDiff`'s `str`). Frames are resolved to
//! file, line and function when the snapshot is taken.
//!
//! ```
//! use pymalloc::snapshot::{KeyType, Snapshot};
//! use pymalloc::trace;
//! trace::start(1).unwrap();
//! trace::track(5, 0x1000, 300).unwrap();
//! trace::track(5, 0x2000, 100).unwrap();
//! let snap = Snapshot::take();
//! trace::stop();
//! let stats = snap.statistics(KeyType::Lineno, false).unwrap();
//! assert_eq!((stats[0].size, stats[0].count), (400, 2), "both tracked from the same line");
//! ```

use core::fmt;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use crate::trace::{self, Frame, Source};

/// A file and line: what statistics are grouped by.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The source file.
    pub filename: String,
    /// The line (0 when grouped by file).
    pub lineno: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.filename, self.lineno)
    }
}

/// A traceback of locations, oldest frame first (tracemalloc's
/// `Traceback`). Its text is that of its first frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Traceback(pub Vec<Location>);

impl fmt::Display for Traceback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.first() {
            Some(l) => l.fmt(f),
            None => f.write_str("<no frame>"),
        }
    }
}

/// One traced block of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTrace {
    /// Its tracemalloc domain.
    pub domain: u32,
    /// Where it came from.
    pub source: Source,
    /// Its size in bytes.
    pub size: usize,
    /// The program's frames that allocated it, oldest first.
    pub frames: Arc<[Frame]>,
}

impl SnapshotTrace {
    fn locations(&self) -> impl Iterator<Item = Location> + '_ {
        self.frames.iter().map(|f| Location { filename: f.filename.clone(), lineno: f.lineno })
    }

    /// The most recent frame (tracemalloc's `traceback[0]` before it is
    /// reversed), if any.
    fn most_recent(&self) -> Option<&Frame> {
        self.frames.last()
    }
}

/// What [`Snapshot::statistics`] groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// The file of the most recent frame.
    Filename,
    /// The file and line of the most recent frame.
    Lineno,
    /// The whole traceback.
    Traceback,
}

/// Why a snapshot operation failed.
#[derive(Debug)]
pub enum SnapshotError {
    /// Cumulative statistics exist for files and lines only.
    CumulativeTraceback,
    /// Reading or writing a dump failed.
    Io(std::io::Error),
    /// A dump is not in this format (line number, what was wrong).
    Format(usize, String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::CumulativeTraceback => {
                f.write_str("cumulative mode cannot by used with key type 'traceback'")
            }
            SnapshotError::Io(e) => write!(f, "{e}"),
            SnapshotError::Format(line, what) => write!(f, "not a pymalloc snapshot: line {line}: {what}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<std::io::Error> for SnapshotError {
    fn from(e: std::io::Error) -> Self {
        SnapshotError::Io(e)
    }
}

/// Bytes and blocks of one group (tracemalloc's `Statistic`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statistic {
    /// The group's key.
    pub traceback: Traceback,
    /// Bytes of its blocks.
    pub size: usize,
    /// Its blocks.
    pub count: usize,
}

impl fmt::Display for Statistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: size={}, count={}", self.traceback, format_size(self.size as f64, false), self.count)?;
        if self.count > 0 {
            write!(f, ", average={}", format_size(self.size as f64 / self.count as f64, false))?;
        }
        Ok(())
    }
}

/// A group in two snapshots (tracemalloc's `StatisticDiff`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatisticDiff {
    /// The group's key.
    pub traceback: Traceback,
    /// Bytes in the newer snapshot.
    pub size: usize,
    /// Newer minus older bytes.
    pub size_diff: isize,
    /// Blocks in the newer snapshot.
    pub count: usize,
    /// Newer minus older blocks.
    pub count_diff: isize,
}

impl fmt::Display for StatisticDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: size={} ({}), count={} ({:+})",
            self.traceback,
            format_size(self.size as f64, false),
            format_size(self.size_diff as f64, true),
            self.count,
            self.count_diff
        )?;
        if self.count > 0 {
            write!(f, ", average={}", format_size(self.size as f64 / self.count as f64, false))?;
        }
        Ok(())
    }
}

/// tracemalloc's `_format_size`: three significant digits and a binary unit.
pub fn format_size(size: f64, sign: bool) -> String {
    let mut size = size;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if size.abs() < 100.0 && unit != "B" {
            return if sign { format!("{size:+.1} {unit}") } else { format!("{size:.1} {unit}") };
        }
        if size.abs() < 10.0 * 1024.0 || unit == "TiB" {
            return if sign { format!("{size:+.0} {unit}") } else { format!("{size:.0} {unit}") };
        }
        size /= 1024.0;
    }
    unreachable!("the loop returns at TiB")
}

/// Keeps or drops traces by the file and line of their frames, and by
/// domain (tracemalloc's `Filter`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Keep the traces that match (true) or those that do not (false).
    pub inclusive: bool,
    /// A shell pattern (`*`, `?`, `[...]`) for the file name.
    pub filename_pattern: String,
    /// Only this line, if set.
    pub lineno: Option<u32>,
    /// Look at every frame, not only the most recent.
    pub all_frames: bool,
    /// Only this domain, if set.
    pub domain: Option<u32>,
}

impl Filter {
    /// A filter on file names only.
    pub fn new(inclusive: bool, filename_pattern: &str) -> Filter {
        Filter { inclusive, filename_pattern: filename_pattern.into(), lineno: None, all_frames: false, domain: None }
    }

    fn match_frame_impl(&self, filename: &str, lineno: u32) -> bool {
        fnmatch(&self.filename_pattern, filename) && self.lineno.is_none_or(|l| l == lineno)
    }

    fn match_traceback(&self, t: &SnapshotTrace) -> bool {
        if self.all_frames {
            if t.frames.iter().any(|f| self.match_frame_impl(&f.filename, f.lineno)) {
                self.inclusive
            } else {
                !self.inclusive
            }
        } else {
            let (file, line) = t.most_recent().map_or(("<unknown>", 0), |f| (f.filename.as_str(), f.lineno));
            self.match_frame_impl(file, line) ^ !self.inclusive
        }
    }

    fn matches(&self, t: &SnapshotTrace) -> bool {
        let res = self.match_traceback(t);
        match self.domain {
            Some(d) if self.inclusive => res && t.domain == d,
            Some(d) => res || t.domain != d,
            None => res,
        }
    }
}

/// Keeps or drops the traces of one domain (tracemalloc's `DomainFilter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainFilter {
    /// Keep that domain (true) or every other (false).
    pub inclusive: bool,
    /// The domain.
    pub domain: u32,
}

/// Either kind of filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceFilter {
    /// By file, line (and domain).
    Frames(Filter),
    /// By domain.
    Domain(DomainFilter),
}

impl TraceFilter {
    fn inclusive(&self) -> bool {
        match self {
            TraceFilter::Frames(f) => f.inclusive,
            TraceFilter::Domain(d) => d.inclusive,
        }
    }

    fn matches(&self, t: &SnapshotTrace) -> bool {
        match self {
            TraceFilter::Frames(f) => f.matches(t),
            TraceFilter::Domain(d) => (t.domain == d.domain) ^ !d.inclusive,
        }
    }
}

/// Shell-style matching: `*` any run, `?` any character, `[abc]`, `[a-z]`
/// and `[!abc]` one character of (or not of) a set; the rest literally.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with backtracking to the last star.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, next)) = class(&p, pi, n[ni]) {
                        if ok {
                            pi = next;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `c` is in the set `[...]` at `p[start]`, and the index after
/// it; None if the bracket is not closed (then it is a literal `[`).
fn class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && p[i] == '!';
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() && (first || p[i] != ']') {
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            hit |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    (i < p.len()).then_some((hit ^ negate, i + 1))
}

/// The traced blocks at one moment (tracemalloc's `Snapshot`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every traced block, in no particular order.
    pub traces: Vec<SnapshotTrace>,
    /// The traceback limit when it was taken.
    pub traceback_limit: usize,
    /// Mean bytes between samples when it was taken (0: every block was
    /// traced; see [`crate::trace::set_sampling`]).
    pub sample_bytes: usize,
    /// Traced bytes over time until it was taken ([`trace::timeline`]).
    pub timeline: Vec<(u64, usize)>,
}

impl Snapshot {
    /// The traced blocks now, their frames resolved (tracemalloc's
    /// `take_snapshot`). Empty if tracing is off.
    pub fn take() -> Snapshot {
        let (raw, tbs) = trace::copy_traces();
        trace::untraced(|| {
            let mut memo: HashMap<usize, Vec<Frame>> = HashMap::new();
            let limit = trace::traceback_limit();
            let tracebacks: HashMap<u32, Arc<[Frame]>> = tbs
                .into_iter()
                .map(|(id, ips)| (id, Arc::from(crate::trace_frames::program_frames(&ips, limit, &mut memo))))
                .collect();
            let traces = raw
                .into_iter()
                .map(|(source, domain, size, tb)| SnapshotTrace {
                    domain,
                    source,
                    size,
                    frames: tracebacks[&tb].clone(),
                })
                .collect();
            Snapshot {
                traces,
                traceback_limit: trace::traceback_limit(),
                sample_bytes: trace::sampling(),
                timeline: trace::timeline(),
            }
        })
    }

    /// What was live when the traced bytes peaked, as kept since
    /// [`trace::keep_peak`] was turned on (dhat's "t-gmax"): the blocks of
    /// each traceback then, with their sizes evened out (the figures per
    /// traceback are kept, not each block's). Its total is the peak.
    pub fn take_peak() -> Snapshot {
        let (_, figures) = trace::peak_figures();
        trace::untraced(|| {
            let mut memo: HashMap<usize, Vec<Frame>> = HashMap::new();
            let limit = trace::traceback_limit();
            let mut traces = Vec::new();
            for f in figures {
                let frames: Arc<[Frame]> =
                    Arc::from(crate::trace_frames::program_frames(&trace::raw_frames(f.traceback), limit, &mut memo));
                for i in 0..f.blocks {
                    // Sizes that add up to the traceback's bytes exactly.
                    let size = f.bytes / f.blocks + usize::from(i < f.bytes % f.blocks);
                    traces.push(SnapshotTrace { domain: f.domain, source: f.source, size, frames: frames.clone() });
                }
            }
            Snapshot { traces, traceback_limit: limit, sample_bytes: trace::sampling(), timeline: trace::timeline() }
        })
    }

    /// The traces the filters keep: those some inclusive filter matches
    /// (if there is one) and every exclusive filter matches.
    pub fn filter_traces(&self, filters: &[TraceFilter]) -> Snapshot {
        let (inc, exc): (Vec<&TraceFilter>, Vec<&TraceFilter>) = filters.iter().partition(|f| f.inclusive());
        let keep = |t: &SnapshotTrace| {
            (inc.is_empty() || inc.iter().any(|f| f.matches(t))) && exc.iter().all(|f| f.matches(t))
        };
        Snapshot {
            traces: self.traces.iter().filter(|t| keep(t)).cloned().collect(),
            traceback_limit: self.traceback_limit,
            sample_bytes: self.sample_bytes,
            timeline: self.timeline.clone(),
        }
    }

    fn group_by(&self, key: KeyType, cumulative: bool) -> Result<HashMap<Traceback, (usize, usize)>, SnapshotError> {
        if cumulative && key == KeyType::Traceback {
            return Err(SnapshotError::CumulativeTraceback);
        }
        let unknown = || Location { filename: "<unknown>".into(), lineno: 0 };
        let mut stats: HashMap<Traceback, (usize, usize)> = HashMap::new();
        let mut add = |tb: Traceback, size: usize| {
            let e = stats.entry(tb).or_insert((0, 0));
            e.0 += size;
            e.1 += 1;
        };
        for t in &self.traces {
            if cumulative {
                for mut l in t.locations() {
                    if key == KeyType::Filename {
                        l.lineno = 0;
                    }
                    add(Traceback(vec![l]), t.size);
                }
                continue;
            }
            let recent =
                t.most_recent().map_or_else(unknown, |f| Location { filename: f.filename.clone(), lineno: f.lineno });
            let tb = match key {
                KeyType::Traceback => Traceback(t.locations().collect()),
                KeyType::Lineno => Traceback(vec![recent]),
                KeyType::Filename => Traceback(vec![Location { lineno: 0, ..recent }]),
            };
            add(tb, t.size);
        }
        Ok(stats)
    }

    /// Bytes and blocks per group, biggest first (by size, then count,
    /// then key, all descending, as tracemalloc sorts).
    pub fn statistics(&self, key: KeyType, cumulative: bool) -> Result<Vec<Statistic>, SnapshotError> {
        let mut v: Vec<Statistic> = self
            .group_by(key, cumulative)?
            .into_iter()
            .map(|(traceback, (size, count))| Statistic { traceback, size, count })
            .collect();
        v.sort_by(|a, b| (b.size, b.count, &b.traceback).cmp(&(a.size, a.count, &a.traceback)));
        Ok(v)
    }

    /// The groups of this snapshot against an older one, the largest change
    /// first (by absolute size change, size, absolute count change, count,
    /// key, all descending).
    pub fn compare_to(
        &self,
        old: &Snapshot,
        key: KeyType,
        cumulative: bool,
    ) -> Result<Vec<StatisticDiff>, SnapshotError> {
        let new = self.group_by(key, cumulative)?;
        let mut old = old.group_by(key, cumulative)?;
        let mut v: Vec<StatisticDiff> = new
            .into_iter()
            .map(|(tb, (size, count))| {
                let (os, oc) = old.remove(&tb).unwrap_or((0, 0));
                StatisticDiff {
                    traceback: tb,
                    size,
                    size_diff: size as isize - os as isize,
                    count,
                    count_diff: count as isize - oc as isize,
                }
            })
            .collect();
        v.extend(old.into_iter().map(|(tb, (os, oc))| StatisticDiff {
            traceback: tb,
            size: 0,
            size_diff: -(os as isize),
            count: 0,
            count_diff: -(oc as isize),
        }));
        let key = |d: &StatisticDiff| (d.size_diff.unsigned_abs(), d.size, d.count_diff.unsigned_abs(), d.count);
        v.sort_by(|a, b| (key(b), &b.traceback).cmp(&(key(a), &a.traceback)));
        Ok(v)
    }

    /// A sampled snapshot with each trace's size replaced by the bytes it
    /// stands for (`size / (1 - exp(-size / K))`, rounded), so statistics
    /// estimate the whole heap; an exact snapshot unchanged.
    pub fn scaled(&self) -> Snapshot {
        let mut s = self.clone();
        for t in &mut s.traces {
            t.size = crate::trace_sample::estimate(t.size, self.sample_bytes).round() as usize;
        }
        s.sample_bytes = 0;
        s
    }

    /// Total bytes of the traces.
    pub fn total_size(&self) -> usize {
        self.traces.iter().map(|t| t.size).sum()
    }

    /// Writes the snapshot to `path` (a text format of its own; see
    /// [`Snapshot::load`]).
    pub fn dump(&self, path: &std::path::Path) -> Result<(), SnapshotError> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
        self.write_to(&mut w)?;
        w.flush()?;
        Ok(())
    }

    /// The dump format: a header line, the limit, each distinct traceback
    /// once (`traceback ID N` and N `frame` lines, oldest first), one
    /// `trace` line per block, then the timeline's `point` lines. Fields are tab-separated; tabs, newlines and
    /// backslashes in names are escaped.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        writeln!(w, "{DUMP_MAGIC}")?;
        writeln!(w, "traceback_limit\t{}", self.traceback_limit)?;
        if self.sample_bytes != 0 {
            writeln!(w, "sample_bytes\t{}", self.sample_bytes)?;
        }
        let mut ids: HashMap<*const Frame, usize> = HashMap::new();
        for t in &self.traces {
            let key = t.frames.as_ptr();
            if ids.contains_key(&key) {
                continue;
            }
            let id = ids.len();
            ids.insert(key, id);
            writeln!(w, "traceback\t{id}\t{}", t.frames.len())?;
            for f in t.frames.iter() {
                writeln!(w, "frame\t{:x}\t{}\t{}\t{}", f.addr, f.lineno, escape(&f.function), escape(&f.filename))?;
            }
        }
        for t in &self.traces {
            writeln!(w, "trace\t{}\t{}\t{}\t{}", t.domain, t.source as u8, t.size, ids[&t.frames.as_ptr()])?;
        }
        for (ms, bytes) in &self.timeline {
            writeln!(w, "point\t{ms}\t{bytes}")?;
        }
        Ok(())
    }

    /// Reads a snapshot [`Snapshot::dump`] wrote.
    pub fn load(path: &std::path::Path) -> Result<Snapshot, SnapshotError> {
        Snapshot::read_from(std::io::BufReader::new(std::fs::File::open(path)?))
    }

    /// Reads the dump format from `r`.
    pub fn read_from(r: impl BufRead) -> Result<Snapshot, SnapshotError> {
        let mut snap = Snapshot::default();
        let mut tracebacks: Vec<Arc<[Frame]>> = Vec::new();
        let mut pending: Option<(usize, Vec<Frame>)> = None;
        let bad = |n: usize, what: &str| SnapshotError::Format(n, what.to_string());
        for (i, line) in r.lines().enumerate() {
            let line = line?;
            let n = i + 1;
            let f: Vec<&str> = line.split('\t').collect();
            if n == 1 {
                if line != DUMP_MAGIC {
                    return Err(bad(n, "bad header"));
                }
                continue;
            }
            let num = |s: Option<&&str>| s.and_then(|s| s.parse::<usize>().ok()).ok_or_else(|| bad(n, "bad number"));
            if f[0] != "frame" {
                if let Some((want, frames)) = pending.take() {
                    if frames.len() != want {
                        return Err(bad(n, "traceback cut short"));
                    }
                    tracebacks.push(Arc::from(frames));
                }
            }
            match f[0] {
                "traceback_limit" => snap.traceback_limit = num(f.get(1))?,
                "sample_bytes" => snap.sample_bytes = num(f.get(1))?,
                "point" => snap.timeline.push((num(f.get(1))? as u64, num(f.get(2))?)),
                "traceback" => {
                    if num(f.get(1))? != tracebacks.len() {
                        return Err(bad(n, "traceback ids out of order"));
                    }
                    pending = Some((num(f.get(2))?, Vec::new()));
                }
                "frame" => {
                    let (_, frames) = pending.as_mut().ok_or_else(|| bad(n, "frame outside a traceback"))?;
                    if f.len() != 5 {
                        return Err(bad(n, "a frame has five fields"));
                    }
                    frames.push(Frame {
                        addr: usize::from_str_radix(f[1], 16).map_err(|_| bad(n, "bad address"))?,
                        lineno: f[2].parse().map_err(|_| bad(n, "bad line"))?,
                        function: unescape(f[3]),
                        filename: unescape(f[4]),
                    });
                }
                "trace" => {
                    let source = Source::ALL.get(num(f.get(2))?).copied().ok_or_else(|| bad(n, "bad source"))?;
                    let tb = num(f.get(4))?;
                    snap.traces.push(SnapshotTrace {
                        domain: u32::try_from(num(f.get(1))?).map_err(|_| bad(n, "bad domain"))?,
                        source,
                        size: num(f.get(3))?,
                        frames: tracebacks.get(tb).cloned().ok_or_else(|| bad(n, "unknown traceback"))?,
                    });
                }
                _ => return Err(bad(n, "unknown record")),
            }
        }
        if pending.is_some() {
            return Err(bad(0, "the dump ends inside a traceback"));
        }
        Ok(snap)
    }
}

const DUMP_MAGIC: &str = "pymalloc-tracemalloc-snapshot 1";

/// Where `PYMALLOC_TRACE_DUMP` and `PYMALLOC_TRACE_PEAK_DUMP` asked for the
/// snapshots at exit.
static DUMP_AT_EXIT: Mutex<(Option<String>, Option<String>)> = Mutex::new((None, None));

extern "C" fn dump_at_exit() {
    let (now, peak) = std::mem::take(&mut *DUMP_AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()));
    for (var, path, snap) in [
        ("PYMALLOC_TRACE_DUMP", now, Snapshot::take as fn() -> Snapshot),
        ("PYMALLOC_TRACE_PEAK_DUMP", peak, Snapshot::take_peak),
    ] {
        if let Some(path) = path {
            if let Err(e) = snap().dump(std::path::Path::new(&path)) {
                eprintln!("pymalloc: {var}={path}: {e}");
            }
        }
    }
}

/// Tracing as the environment asks, for a front's start-up (the C
/// library's `PyMalloc_InitFromEnv`, the preload library's constructor):
/// `PYTHONTRACEMALLOC=N` (CPython's variable) starts tracing with up to `N`
/// frames, `PYMALLOC_TRACE_DUMP=path` writes a snapshot there at exit and
/// `PYMALLOC_TRACE_PEAK_DUMP=path` the snapshot at the peak. Unset, empty
/// or 0: nothing (Ok(false)), as in CPython. Ok(true) when tracing started; a bad `N` is
/// an error naming the valid range, with nothing done. The front traces its
/// own allocations (hooks, `trace::record_alloc`).
pub fn trace_from_env() -> Result<bool, String> {
    let var = |n: &str| std::env::var(n).ok().filter(|p| !p.is_empty());
    let Some(n) = var("PYTHONTRACEMALLOC") else { return Ok(false) };
    // CPython's rule: 0 leaves tracing off; anything but 0 to 65535 is an
    // error.
    let nframe =
        n.parse::<usize>().ok().filter(|&k| k <= trace::MAX_NFRAME).ok_or_else(|| {
            format!("PYTHONTRACEMALLOC: invalid number of frames: {n:?} (0 to {})", trace::MAX_NFRAME)
        })?;
    if nframe == 0 {
        return Ok(false);
    }
    trace::start(nframe).map_err(|e| e.to_string())?;
    let (now, peak) = (var("PYMALLOC_TRACE_DUMP"), var("PYMALLOC_TRACE_PEAK_DUMP"));
    if peak.is_some() {
        trace::keep_peak(true);
    }
    if now.is_some() || peak.is_some() {
        *DUMP_AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()) = (now, peak);
        // SAFETY: registering a plain function with no captured state.
        unsafe { libc::atexit(dump_at_exit) };
    }
    Ok(true)
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// The top `limit` groups as tracemalloc's documentation prints them
/// (`display_top`): a title, one numbered line per group, what the others
/// hold, and the total.
pub fn format_top(stats: &[Statistic], limit: usize) -> String {
    let mut s = format!("Top {} lines\n", limit.min(stats.len()));
    for (i, st) in stats.iter().take(limit).enumerate() {
        s += &format!("#{}: {}: {:.1} KiB\n", i + 1, st.traceback, st.size as f64 / 1024.0);
    }
    let other: usize = stats.iter().skip(limit).map(|s| s.size).sum();
    if stats.len() > limit {
        s += &format!("{} other: {:.1} KiB\n", stats.len() - limit, other as f64 / 1024.0);
    }
    let total: usize = stats.iter().map(|s| s.size).sum();
    s += &format!("Total allocated size: {:.1} KiB\n", total as f64 / 1024.0);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_format_as_tracemalloc_formats_them() {
        assert_eq!(format_size(0.0, false), "0 B");
        assert_eq!(format_size(10239.0, false), "10239 B");
        assert_eq!(format_size(10240.0, false), "10.0 KiB");
        assert_eq!(format_size(4855.0 * 1024.0, false), "4855 KiB");
        assert_eq!(format_size(126.4, false), "126 B");
        assert_eq!(format_size(-2048.0 * 1024.0, true), "-2048 KiB");
        assert_eq!(format_size(150.0 * 1024.0 * 1024.0, true), "+150 MiB");
        assert_eq!(format_size(5.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0, false), "5120 TiB");
    }

    #[test]
    fn shell_patterns_match_as_fnmatch_does() {
        assert!(fnmatch("*.rs", "src/a.rs"));
        assert!(!fnmatch("*.rs", "src/a.rs.bak"));
        assert!(fnmatch("src/?.rs", "src/a.rs"));
        assert!(fnmatch("[a-c]x", "bx"));
        assert!(!fnmatch("[!a-c]x", "bx"));
        assert!(fnmatch("*", ""));
        assert!(fnmatch("a*b*c", "aXbYbZc"));
        assert!(fnmatch("[x", "[x"));
        assert!(!fnmatch("abc", "ab"));
    }
}
