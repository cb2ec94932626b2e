//! The snapshot at the peak (dhat's "t-gmax"): what was live when the
//! traced bytes were highest, with exact figures, whether the peak is the
//! present or the past. A process of its own.
#![cfg(not(miri))] // Miri: no unwinder

use pymalloc::snapshot::{KeyType, Snapshot};
use pymalloc::trace;

/// Tracks `count` blocks of `size` bytes from the line that names the
/// macro (a function, even inlined, would be its own frame).
#[collapse_debuginfo(yes)]
macro_rules! track_n {
    ($base:expr, $count:expr, $size:expr) => {{
        let v: Vec<usize> = (0..$count).map(|i| $base + i * 0x100).collect();
        for &a in &v {
            trace::track(3, a, $size).unwrap();
        }
        v
    }};
}

/// `(line, bytes, blocks)` per line of a snapshot, by line.
fn by_line(s: &Snapshot) -> Vec<(u32, usize, usize)> {
    let mut v: Vec<_> = s
        .statistics(KeyType::Lineno, false)
        .unwrap()
        .iter()
        .map(|st| (st.traceback.0[0].lineno, st.size, st.count))
        .collect();
    v.sort();
    v
}

#[test]
fn the_peak_snapshot_holds_what_was_live_at_the_peak() {
    trace::start(1).unwrap();
    trace::keep_peak(true);
    let la = line!() + 1;
    let a = track_n!(0x10_000, 3, 1000);
    let lb = line!() + 1;
    track_n!(0x20_000, 2, 500);
    for p in a {
        trace::untrack(3, p).unwrap();
    }
    let lc = line!() + 1;
    track_n!(0x30_000, 1, 2000);
    assert_eq!(trace::traced_memory(), (3000, 4000));

    // The peak is past: A and B as they were.
    let peak = Snapshot::take_peak();
    assert_eq!(by_line(&peak), [(la, 3000, 3), (lb, 1000, 2)]);
    assert_eq!(peak.total_size(), 4000);
    assert!(peak.traces.iter().all(|t| t.domain == 3));

    // A new peak, present: B, C and D.
    let ld = line!() + 1;
    track_n!(0x40_000, 1, 5000);
    let now = Snapshot::take_peak();
    assert_eq!(by_line(&now), [(lb, 1000, 2), (lc, 2000, 1), (ld, 5000, 1)]);
    // Left behind, it stays.
    trace::untrack(3, 0x40_000).unwrap();
    assert_eq!(by_line(&Snapshot::take_peak()), by_line(&now));
    assert_eq!(trace::traced_memory(), (3000, 8000));

    // Off: nothing is kept.
    trace::keep_peak(false);
    assert!(Snapshot::take_peak().traces.is_empty());
    trace::stop();
}
