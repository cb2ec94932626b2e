//! Traced memory over time: up to [`POINTS`] points `(milliseconds since
//! tracing started, most traced bytes in that step)`, for the chart of
//! `pymalloc-trace chart`. A point covers one step of time; when the
//! points run out, neighbours merge two by two (keeping the larger bytes)
//! and the step doubles, so the whole run stays covered at a resolution
//! that only depends on its length. No allocation: a static array.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::os;
use crate::sync::SpinLock;
use crate::trace_thread;

/// Points kept at most.
pub(crate) const POINTS: usize = 2048;

/// Invariant: touched with `LOCK` held; `points[..len]` are in time order,
/// each the maximum traced bytes seen in its step of `step_ms`.
struct Timeline {
    points: [(u64, usize); POINTS],
    len: usize,
    step_ms: u64,
}

struct Cell(UnsafeCell<Timeline>);
// SAFETY: only touched with LOCK held.
unsafe impl Sync for Cell {}

static LOCK: SpinLock = SpinLock::new();
static LINE: Cell = Cell(UnsafeCell::new(Timeline { points: [(0, 0); POINTS], len: 0, step_ms: 1 }));
/// The clock when tracing started (0: not started).
static START_MS: AtomicU64 = AtomicU64::new(0);

/// Starts a new timeline now.
pub(crate) fn restart() {
    let _g = LOCK.lock();
    // A start later than the last one, even within its millisecond: it
    // tells each thread's notes of an earlier timeline apart (each thread's `notes`).
    let last = START_MS.load(Ordering::Relaxed);
    START_MS.store(os::now_ms().max(last + 1), Ordering::Relaxed);
    PENDING.store(0, Ordering::Relaxed);
    // SAFETY: LOCK is held.
    let t = unsafe { &mut *LINE.0.get() };
    (t.len, t.step_ms) = (0, 1);
}

impl Timeline {
    /// Adds `bytes` at `ms` (not before the last point).
    fn push(&mut self, ms: u64, bytes: usize) {
        let slot = ms / self.step_ms * self.step_ms;
        if self.len > 0 && self.points[self.len - 1].0 == slot {
            let last = &mut self.points[self.len - 1].1;
            *last = (*last).max(bytes);
            return;
        }
        if self.len == POINTS {
            self.halve();
            return self.push(ms, bytes);
        }
        self.points[self.len] = (slot, bytes);
        self.len += 1;
    }

    /// Doubles the step, merging the points that now share one.
    fn halve(&mut self) {
        self.step_ms *= 2;
        let mut j = 0;
        for i in 0..self.len {
            let (when, b) = self.points[i];
            let when = when / self.step_ms * self.step_ms;
            if j > 0 && self.points[j - 1].0 == when {
                self.points[j - 1].1 = self.points[j - 1].1.max(b);
            } else {
                self.points[j] = (when, b);
                j += 1;
            }
        }
        self.len = j;
    }
}

/// The traced bytes when the timeline last took a point: the least the
/// next point can show.
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// A thread reads the clock, takes the lock and brings its maximum in once
/// per this many notes; in between a note touches only the thread's own
/// figures.
const NOTES_PER_POINT: u32 = 64;

/// A thread's notes, in its block (`trace_thread.rs`): its notes since it
/// last took a point, the most bytes among them, and the timeline they
/// belong to (its start: notes of an earlier one, or of none, count for
/// nothing).
#[inline(always)]
fn notes<R>(f: impl FnOnce(&core::cell::Cell<(u32, usize, u64)>) -> R) -> R {
    trace_thread::with(|t| f(&t.notes))
}

/// Records that `bytes` are traced now. A thread keeps the most bytes it
/// noted and takes a point with them every [`NOTES_PER_POINT`]-th note;
/// so a point's time can lag its bytes by that many allocations, and a
/// point another thread takes misses this thread's last few notes, which
/// its own next point brings in. (A shared maximum raised at every note
/// that set a new one was a locked instruction on 97% of a growing
/// program's traced allocations.)
#[inline]
pub(crate) fn note(bytes: usize) {
    let start = START_MS.load(Ordering::Relaxed);
    if start == 0 {
        return;
    }
    let due = notes(|n| {
        let (k, most) = mine(n.get(), start);
        let most = most.max(bytes);
        if k + 1 == NOTES_PER_POINT {
            n.set((0, 0, start));
            Some(most)
        } else {
            n.set((k + 1, most, start));
            None
        }
    });
    if let Some(most) = due {
        take_point(bytes, most);
    }
}

/// This thread's notes of the timeline that started at `start`, and the
/// most bytes among them, from its `notes` (none if they are an earlier
/// timeline's).
fn mine((k, most, of): (u32, usize, u64), start: u64) -> (u32, usize) {
    if of == start {
        (k, most)
    } else {
        (0, 0)
    }
}

/// Adds a point now: the most of `most` (the calling thread's maximum
/// since its last point) and the traced bytes at the timeline's last point
/// and now; `bytes`, the traced bytes now, start the next.
#[cold]
#[inline(never)]
fn take_point(bytes: usize, most: usize) {
    let start = START_MS.load(Ordering::Relaxed);
    if start == 0 {
        return;
    }
    let ms = os::now_ms().saturating_sub(start);
    let _g = LOCK.lock();
    let most = PENDING.swap(bytes, Ordering::Relaxed).max(bytes).max(most);
    // SAFETY: LOCK is held.
    unsafe { (*LINE.0.get()).push(ms, most) };
}

/// The points so far, the notes since the last point included; `current`
/// is the traced bytes now.
pub(crate) fn points(current: usize) -> Vec<(u64, usize)> {
    let start = START_MS.load(Ordering::Relaxed);
    let most = notes(|n| mine(n.replace((0, 0, start)), start).1);
    take_point(current, most);
    let _g = LOCK.lock();
    // SAFETY: LOCK is held.
    let t = unsafe { &*LINE.0.get() };
    t.points[..t.len].to_vec()
}

/// Takes the lock (before `fork`).
pub(crate) fn fork_acquire() {
    LOCK.acquire();
}

/// Gives back what [`fork_acquire`] took.
///
/// # Safety
/// The calling thread ran [`fork_acquire`] and has not released since.
pub(crate) unsafe fn fork_release() {
    // SAFETY: taken by fork_acquire on this thread (our contract).
    unsafe { LOCK.release() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threads_notes_reach_the_timeline_but_not_a_later_one() {
        restart();
        for b in [100, 5000, 200] {
            note(b);
        }
        let p = points(200);
        assert_eq!(p.iter().map(|p| p.1).max(), Some(5000), "the spike between two points: {p:?}");
        // Notes a point has not taken yet, then a new timeline: they belong
        // to the old one.
        note(9000);
        note(300);
        restart();
        note(400);
        let p = points(400);
        assert_eq!(p.iter().map(|p| p.1).max(), Some(400), "{p:?}");
        // A point every NOTES_PER_POINT notes, with their maximum.
        restart();
        for i in 0..NOTES_PER_POINT as usize {
            note(if i == 10 { 7000 } else { 1 });
        }
        let _g = LOCK.lock();
        // SAFETY: LOCK is held.
        let t = unsafe { &*LINE.0.get() };
        assert_eq!(t.points[..t.len].iter().map(|p| p.1).max(), Some(7000));
    }

    #[test]
    fn a_full_timeline_halves_its_resolution_keeping_order_and_maxima() {
        let mut t = Box::new(Timeline { points: [(0, 0); POINTS], len: 0, step_ms: 1 });
        t.push(0, 5);
        t.push(0, 3);
        assert_eq!((t.len, t.points[0]), (1, (0, 5)), "one point per step, the larger bytes");
        for ms in 1..POINTS as u64 {
            t.push(ms, (ms % 7) as usize);
        }
        assert_eq!(t.len, POINTS);
        t.push(POINTS as u64, 100);
        assert_eq!(t.step_ms, 2);
        assert_eq!(t.len, POINTS / 2 + 1);
        assert_eq!(t.points[0], (0, 5));
        assert_eq!(t.points[3], (6, 6));
        assert_eq!(t.points[t.len - 1], (POINTS as u64, 100));
        assert!(t.points[..t.len].windows(2).all(|w| w[0].0 < w[1].0));
    }
}
