//! Snapshots, statistics, comparisons, filters and dumps of the tracer,
//! with exact figures: blocks are tracked by hand (`trace::track`) from
//! known lines of this file. One test function: the tracer is
//! process-wide.
#![cfg(not(miri))] // Miri: no unwinder

use pymalloc::snapshot::{DomainFilter, Filter, KeyType, Snapshot, SnapshotError, TraceFilter};
use pymalloc::trace::{self, TraceError};
use std::hint::black_box;

/// Tracks `count` blocks of `size` bytes in `domain` from the line that
/// names the macro (a function, even inlined, would be its own frame);
/// returns the addresses.
#[collapse_debuginfo(yes)]
macro_rules! track_n {
    ($domain:expr, $base:expr, $count:expr, $size:expr) => {{
        let addrs: Vec<usize> = (0..$count).map(|i| $base + i * 0x100).collect();
        for &a in &addrs {
            trace::track($domain, a, $size).unwrap();
        }
        addrs
    }};
}

/// A nested caller, for tracebacks of more than one frame. The lines go
/// through `black_box`: an optimised build that sees them as constants
/// turns `outer`'s call into a jump, and its frame is gone.
#[inline(never)]
fn inner(addr: usize) -> u32 {
    trace::track(9, addr, 64).unwrap();
    black_box(line!() - 1)
}

#[inline(never)]
fn outer(addr: usize) -> (u32, u32) {
    let l = inner(addr);
    (black_box(line!() - 1), l)
}

fn lines(stats: &[impl ToString]) -> Vec<String> {
    stats.iter().map(|s| s.to_string()).collect()
}

/// `file:line` as the statistics print it.
fn at(file: &str, line: u32) -> String {
    format!("{file}:{line}")
}

#[test]
fn snapshots_group_compare_filter_and_round_trip_exactly() {
    assert_eq!(trace::track(1, 0x10, 1), Err(TraceError::NotTracing));
    assert_eq!(trace::start(0), Err(TraceError::BadLimit(0)));
    trace::start(1).unwrap();
    assert_eq!(trace::traceback_limit(), 1);

    let la = line!() + 1;
    let a = track_n!(1, 0x10_000, 3, 100);
    let lb = line!() + 1;
    track_n!(1, 0x20_000, 1, 1000);
    let lc = line!() + 1;
    track_n!(2, 0x30_000, 2, 50);
    assert_eq!(trace::traced_memory(), (1400, 1400));
    let s1 = Snapshot::take();
    assert_eq!(s1.traces.len(), 6);
    // The timeline saw the traced bytes reach 1400, in time order.
    assert_eq!(s1.timeline.iter().map(|p| p.1).max(), Some(1400), "{:?}", s1.timeline);
    assert!(s1.timeline.windows(2).all(|w| w[0].0 < w[1].0));
    let file = s1.traces[0].frames[0].filename.clone();
    assert!(file.ends_with("trace_snapshot.rs"), "{file}");

    // Grouped by line: biggest first.
    let by_line = s1.statistics(KeyType::Lineno, false).unwrap();
    assert_eq!(
        lines(&by_line),
        [
            format!("{}: size=1000 B, count=1, average=1000 B", at(&file, lb)),
            format!("{}: size=300 B, count=3, average=100 B", at(&file, la)),
            format!("{}: size=100 B, count=2, average=50 B", at(&file, lc)),
        ]
    );
    // By file: one group, line 0.
    let by_file = s1.statistics(KeyType::Filename, false).unwrap();
    assert_eq!(lines(&by_file), [format!("{}: size=1400 B, count=6, average=233 B", at(&file, 0))]);
    assert_eq!(s1.statistics(KeyType::Traceback, false).unwrap().len(), 3);
    assert!(matches!(s1.statistics(KeyType::Traceback, true), Err(SnapshotError::CumulativeTraceback)));

    // The traceback of one block.
    let tb = trace::traceback(1, a[0]).unwrap();
    assert_eq!((tb.len(), tb[0].lineno), (1, la));

    // Changes: one block of A goes, a big one comes.
    trace::untrack(1, a[0]).unwrap();
    let ld = line!() + 1;
    track_n!(1, 0x40_000, 1, 5000);
    let s2 = Snapshot::take();
    let diff = s2.compare_to(&s1, KeyType::Lineno, false).unwrap();
    assert_eq!(
        lines(&diff),
        [
            format!("{}: size=5000 B (+5000 B), count=1 (+1), average=5000 B", at(&file, ld)),
            format!("{}: size=200 B (-100 B), count=2 (-1), average=100 B", at(&file, la)),
            format!("{}: size=1000 B (+0 B), count=1 (+0), average=1000 B", at(&file, lb)),
            format!("{}: size=100 B (+0 B), count=2 (+0), average=50 B", at(&file, lc)),
        ]
    );
    // A group that is gone shows as size 0.
    let back = s1.compare_to(&s2, KeyType::Lineno, false).unwrap();
    assert_eq!(back[0].to_string(), format!("{}: size=0 B (-5000 B), count=0 (-1)", at(&file, ld)));

    // Filters.
    let only2 = s2.filter_traces(&[TraceFilter::Domain(DomainFilter { inclusive: true, domain: 2 })]);
    assert_eq!((only2.traces.len(), only2.total_size()), (2, 100));
    let not2 = s2.filter_traces(&[TraceFilter::Domain(DomainFilter { inclusive: false, domain: 2 })]);
    assert_eq!((not2.traces.len(), not2.total_size()), (4, 6200));
    let mut no_a = Filter::new(false, "*trace_snapshot.rs");
    no_a.lineno = Some(la);
    let without_a = s2.filter_traces(&[TraceFilter::Frames(no_a)]);
    assert_eq!((without_a.traces.len(), without_a.total_size()), (4, 6100));
    let none = s2.filter_traces(&[TraceFilter::Frames(Filter::new(true, "*/nothing_like_this.c"))]);
    assert!(none.traces.is_empty());
    let mut this_file_domain1 = Filter::new(true, "*trace_snapshot.rs");
    this_file_domain1.domain = Some(1);
    let d1 = s2.filter_traces(&[TraceFilter::Frames(this_file_domain1)]);
    assert_eq!((d1.traces.len(), d1.total_size()), (4, 6200));

    // Dump and load give the same snapshot and the same statistics.
    let dir = std::env::temp_dir().join(format!("pymalloc-snap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s2.snapshot");
    s2.dump(&path).unwrap();
    let loaded = Snapshot::load(&path).unwrap();
    assert_eq!(loaded, s2);
    assert_eq!(loaded.statistics(KeyType::Lineno, false).unwrap(), s2.statistics(KeyType::Lineno, false).unwrap());
    std::fs::write(&path, "not a snapshot\n").unwrap();
    assert!(matches!(Snapshot::load(&path), Err(SnapshotError::Format(1, _))));
    std::fs::remove_dir_all(&dir).unwrap();

    // Deeper tracebacks: the limit keeps the most recent frames.
    trace::clear_traces();
    assert_eq!(trace::traced_memory(), (0, 0));
    trace::start(2).unwrap();
    let (lo, li) = outer(0x50_000);
    let s3 = Snapshot::take();
    let frames = &s3.traces[0].frames;
    assert_eq!(frames.iter().map(|f| f.lineno).collect::<Vec<_>>(), [lo, li], "oldest first");
    assert!(frames[1].function.ends_with("inner"), "{}", frames[1].function);
    let by_tb = s3.statistics(KeyType::Traceback, false).unwrap();
    assert_eq!(by_tb[0].traceback.0.len(), 2);
    let cumulative = s3.statistics(KeyType::Lineno, true).unwrap();
    assert_eq!(cumulative.len(), 2, "each frame's line counts the block");
    assert!(cumulative.iter().all(|s| (s.size, s.count) == (64, 1)));

    // Peak: tracemalloc's get_traced_memory and reset_peak.
    trace::untrack(9, 0x50_000).unwrap();
    assert_eq!(trace::traced_memory(), (0, 64));
    trace::reset_peak();
    assert_eq!(trace::traced_memory(), (0, 0));
    let st = trace::heap_stats();
    assert_eq!((st.total_blocks, st.total_bytes, st.curr_blocks, st.max_bytes), (1, 64, 0, 0));

    trace::stop();
    assert!(!trace::is_tracing());
    assert_eq!(trace::untrack(9, 1), Err(TraceError::NotTracing));
}
