//! The tracer's counts of blocks and bytes (dhat's `HeapStats`, the live
//! bytes of each source, and each thread's own figures), kept per thread.
//!
//! Each thread that traces takes a [`Slot`] of its own and is its only
//! writer: it counts with loads and stores, no locked instruction, in one
//! thread-local look-up. (It used to make four locked additions per traced
//! allocation and two per free on global counters, and look up a
//! thread-local of its own figures besides.) Readers add the slots up. A
//! slot outlives its thread's claim: the next thread to claim it goes on
//! counting in it, so the sums keep what exited threads counted, and a
//! thread's own figures are its slot's counts less those it found there.
//! Threads beyond [`NSLOTS`] at once count in one more slot, [`SHARED`],
//! with locked additions, and keep no figures of their own.
//!
//! The traced bytes now and their peak stay one global counter each
//! (`trace.rs`): a peak is a moment of the whole process, not a sum.
//!
//! Invariants: an owned slot is stored to by its owner alone (the thread
//! whose block's `slot` holds it; in the child of a fork, [`fork_child`]
//! gives up the slots of the parent's other threads, which do not exist
//! there, so their copied blocks are never read again); [`SHARED`] is never owned and only changed by
//! `fetch_add`. Counters wrap: a thread frees blocks other threads
//! allocated, so one slot's live figures may go "below zero"; only sums
//! mean something. [`BASE`] holds the sums at the last [`clear`].

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::trace_table::Source;
use crate::trace_thread;

/// A thread's own allocations and frees, while it traced (its frees of
/// blocks of other threads included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadHeapStats {
    /// Blocks this thread allocated.
    pub allocated_blocks: u64,
    /// Bytes this thread allocated.
    pub allocated_bytes: u64,
    /// Blocks this thread freed.
    pub freed_blocks: u64,
    /// Bytes this thread freed.
    pub freed_bytes: u64,
    /// The most bytes this thread's allocations minus its frees reached.
    pub max_bytes: u64,
}

impl ThreadHeapStats {
    /// What happened between `earlier` and these figures (peak aside).
    pub fn since(&self, earlier: &ThreadHeapStats) -> ThreadHeapStats {
        ThreadHeapStats {
            allocated_blocks: self.allocated_blocks - earlier.allocated_blocks,
            allocated_bytes: self.allocated_bytes - earlier.allocated_bytes,
            freed_blocks: self.freed_blocks - earlier.freed_blocks,
            freed_bytes: self.freed_bytes - earlier.freed_bytes,
            max_bytes: self.max_bytes,
        }
    }

    /// Bytes allocated minus bytes freed.
    pub fn net_bytes(&self) -> i64 {
        self.allocated_bytes as i64 - self.freed_bytes as i64
    }

    /// Blocks allocated minus blocks freed.
    pub fn net_blocks(&self) -> i64 {
        self.allocated_blocks as i64 - self.freed_blocks as i64
    }
}

/// Blocks and bytes allocated, blocks and bytes freed, then the live bytes
/// of each [`Source`].
const ALLOCS: usize = 0;
const ALLOC_BYTES: usize = 1;
const FREES: usize = 2;
const FREE_BYTES: usize = 3;
const LIVE: usize = 4;
const COUNTERS: usize = LIVE + Source::ALL.len();

/// Slots that threads own, one each, at once.
const NSLOTS: usize = 128;
// A thread's block keeps its slot's index plus one in a byte.
const _: () = assert!(NSLOTS < u8::MAX as usize);

/// One thread's counts (or, for [`SHARED`], those of every thread that
/// found no slot free), on cache lines of its own.
#[repr(align(128))]
struct Slot {
    owned: AtomicBool,
    counters: [AtomicU64; COUNTERS],
    /// The owner's: the first four counters when it claimed the slot, and
    /// the most its allocated bytes less its freed bytes reached since.
    claimed_at: [AtomicU64; 4],
    max_net: AtomicU64,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            owned: AtomicBool::new(false),
            counters: [const { AtomicU64::new(0) }; COUNTERS],
            claimed_at: [const { AtomicU64::new(0) }; 4],
            max_net: AtomicU64::new(0),
        }
    }

    /// Counter `i` as the owner sees it.
    #[inline(always)]
    fn get(&self, i: usize) -> u64 {
        self.counters[i].load(Ordering::Relaxed)
    }

    /// Adds `d` to counter `i`; owner only (one writer: no lost update).
    #[inline(always)]
    fn add(&self, i: usize, d: u64) {
        self.counters[i].store(self.get(i).wrapping_add(d), Ordering::Relaxed);
    }

    /// Counter `i` (one of the first four) since the owner's claim.
    #[inline(always)]
    fn since_claim(&self, i: usize) -> u64 {
        self.get(i).wrapping_sub(self.claimed_at[i].load(Ordering::Relaxed))
    }
}

static SLOTS: [Slot; NSLOTS] = [const { Slot::new() }; NSLOTS];
static SHARED: Slot = Slot::new();
/// One past the highest slot ever claimed: readers add up `SLOTS[..HIGH]`.
static HIGH: AtomicUsize = AtomicUsize::new(0);
static BASE: [AtomicU64; COUNTERS] = [const { AtomicU64::new(0) }; COUNTERS];

/// Gives the calling thread's slot (its block's `slot`, `trace_thread.rs`)
/// back when the thread exits. Registered by the claim: a `thread_local!`
/// with a destructor, touched only then.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let i = trace_thread::with(|t| t.slot.replace(0));
        if i != 0 {
            // Release: the next owner starts from this thread's last counts.
            SLOTS[usize::from(i) - 1].owned.store(false, Ordering::Release);
        }
    }
}

std::thread_local! {
    static RELEASE: Release = const { Release };
}

/// The slot the calling thread holds, if any.
#[inline(always)]
fn claimed() -> Option<&'static Slot> {
    // 0 (none) wraps past the end: one comparison for both.
    SLOTS.get(usize::from(trace_thread::with(|t| t.slot.get())).wrapping_sub(1))
}

/// The calling thread's slot, claimed on first use; None if none is free
/// or the thread is past its Rust `thread_local!` destructors (then nothing
/// would give the slot back). A claim made later still, after glibc ran
/// the thread's destructors (a traced call from a `pthread_key`
/// destructor), registers a release that never runs: that slot stays
/// owned, and once all are, threads count in [`SHARED`].
#[inline(always)]
fn mine() -> Option<&'static Slot> {
    claimed().or_else(claim)
}

/// Adds each `(counter, delta)` pair in the calling thread's slot, or in
/// [`SHARED`] if it has none; the slot, if it counted there. (Three pairs,
/// as arguments: an array of them was built on the stack at every call,
/// 16 instructions more per traced alloc+free pair, callgrind.)
#[inline(always)]
fn count(a: (usize, u64), b: (usize, u64), c: (usize, u64)) -> Option<&'static Slot> {
    let Some(s) = mine() else {
        shared_add(a, b, c);
        return None;
    };
    for (i, d) in [a, b, c] {
        s.add(i, d);
    }
    Some(s)
}

#[cold]
#[inline(never)]
fn claim() -> Option<&'static Slot> {
    RELEASE.try_with(|_| ()).ok()?;
    let (i, s) = SLOTS.iter().enumerate().find(|(_, s)| {
        !s.owned.load(Ordering::Relaxed)
            && s.owned.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    })?;
    for (k, a) in s.claimed_at.iter().enumerate() {
        a.store(s.get(k), Ordering::Relaxed);
    }
    s.max_net.store(0, Ordering::Relaxed);
    HIGH.fetch_max(i + 1, Ordering::Release);
    trace_thread::with(|t| t.slot.set(i as u8 + 1));
    Some(s)
}

/// Counts a traced block of `size` bytes from `source`.
#[inline(always)]
pub(crate) fn on_alloc(source: Source, size: usize) {
    let size = size as u64;
    let Some(s) = count((ALLOCS, 1), (ALLOC_BYTES, size), (LIVE + source as usize, size)) else { return };
    let net = s.since_claim(ALLOC_BYTES).saturating_sub(s.since_claim(FREE_BYTES));
    if net > s.max_net.load(Ordering::Relaxed) {
        s.max_net.store(net, Ordering::Relaxed);
    }
}

/// Counts the free of a traced block of `size` bytes from `source`.
#[inline(always)]
pub(crate) fn on_free(source: Source, size: usize) {
    let size = size as u64;
    count((FREES, 1), (FREE_BYTES, size), (LIVE + source as usize, size.wrapping_neg()));
}

/// Counts in [`SHARED`], for a thread without a slot.
#[cold]
#[inline(never)]
fn shared_add(a: (usize, u64), b: (usize, u64), c: (usize, u64)) {
    for (i, d) in [a, b, c] {
        SHARED.counters[i].fetch_add(d, Ordering::Relaxed);
    }
}

/// The calling thread's own figures since it first traced (all zero if it
/// has no slot).
pub(crate) fn thread_stats() -> ThreadHeapStats {
    let Some(s) = claimed() else { return ThreadHeapStats::default() };
    ThreadHeapStats {
        allocated_blocks: s.since_claim(ALLOCS),
        allocated_bytes: s.since_claim(ALLOC_BYTES),
        freed_blocks: s.since_claim(FREES),
        freed_bytes: s.since_claim(FREE_BYTES),
        max_bytes: s.max_net.load(Ordering::Relaxed),
    }
}

/// Counter `i` added up over every slot.
fn raw_sum(i: usize) -> u64 {
    let high = HIGH.load(Ordering::Acquire);
    let all = SLOTS[..high].iter().chain([&SHARED]);
    all.fold(0u64, |a, s| a.wrapping_add(s.counters[i].load(Ordering::Relaxed)))
}

/// Counter `i` added up over every slot, since the last [`clear`].
fn sum(i: usize) -> u64 {
    raw_sum(i).wrapping_sub(BASE[i].load(Ordering::Relaxed))
}

/// Blocks traced (since the last [`clear`]).
pub(crate) fn total_blocks() -> u64 {
    sum(ALLOCS)
}

/// Bytes traced (since the last [`clear`]).
pub(crate) fn total_bytes() -> u64 {
    sum(ALLOC_BYTES)
}

/// Traced blocks live now.
pub(crate) fn live_blocks() -> usize {
    sum(ALLOCS).wrapping_sub(sum(FREES)) as usize
}

/// Traced bytes live now from `source`.
pub(crate) fn live_bytes(source: Source) -> usize {
    sum(LIVE + source as usize) as usize
}

/// In the child of `fork`, whose only thread is the one that forked: the
/// slots the parent's other threads held, which no thread here will give
/// back, are free again; their counts stay, as an exited thread's do.
/// Every slot, not only those below [`HIGH`]: a claim sets its slot's
/// flag before it raises `HIGH`, and a fork in between must not leave the
/// slot owned.
pub(crate) fn fork_child() {
    let mine = claimed().map(|s| s as *const Slot);
    for s in &SLOTS {
        if mine != Some(s as *const Slot) {
            s.owned.store(false, Ordering::Release);
        }
    }
}

/// Whether slot `i` is owned, and the calling thread's slot index (for
/// `trace_fork`'s test of a real fork).
#[cfg(test)]
pub(crate) fn owned_slots() -> (Vec<bool>, Option<usize>) {
    let owned = SLOTS.iter().map(|s| s.owned.load(Ordering::Acquire)).collect();
    (owned, usize::from(trace_thread::with(|t| t.slot.get())).checked_sub(1))
}

/// Counts from zero again (each thread's own figures go on). Counts that
/// threads make meanwhile may land on either side, as with any counter
/// cleared while it runs.
pub(crate) fn clear() {
    for (i, b) in BASE.iter().enumerate() {
        b.store(raw_sum(i), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_keep_the_counts_of_exited_threads_and_slots_are_reused() {
        let _g = crate::trace_table::global_tables();
        let before = (total_blocks(), total_bytes(), live_bytes(Source::Tracked));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..100 {
                        on_alloc(Source::Tracked, 10 + t);
                        if i % 2 == 0 {
                            on_free(Source::Tracked, 10 + t);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(total_blocks() - before.0, 400);
        assert_eq!(total_bytes() - before.1, 100 * (10 + 11 + 12 + 13));
        assert_eq!(live_bytes(Source::Tracked) - before.2, 50 * (10 + 11 + 12 + 13));
        let high = HIGH.load(Ordering::Relaxed);
        // Four more threads, one after another: each takes a slot given
        // back, so the slots in use do not grow with the threads made.
        for _ in 0..4 {
            std::thread::spawn(|| on_alloc(Source::Tracked, 1)).join().unwrap();
        }
        assert_eq!(HIGH.load(Ordering::Relaxed), high);
        assert_eq!(total_blocks() - before.0, 404);
    }

    /// A block freed by another thread than the one that allocated it: the
    /// live figures come back to where they were in the sum, though each
    /// slot alone is off.
    #[test]
    fn frees_from_other_threads_cancel_in_the_sum() {
        let _g = crate::trace_table::global_tables();
        let before = live_bytes(Source::Raw);
        std::thread::spawn(|| on_alloc(Source::Raw, 4096)).join().unwrap();
        assert_eq!(live_bytes(Source::Raw).wrapping_sub(before), 4096);
        std::thread::spawn(|| on_free(Source::Raw, 4096)).join().unwrap();
        assert_eq!(live_bytes(Source::Raw), before);
    }

    #[test]
    fn the_shared_slot_counts_with_locked_additions() {
        let _g = crate::trace_table::global_tables();
        // Fewer under Miri, which runs threads one step at a time.
        const N: u64 = if cfg!(miri) { 500 } else { 10_000 };
        let before = SHARED.get(ALLOCS);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..N {
                        shared_add((ALLOCS, 1), (ALLOC_BYTES, 0), (FREES, 0));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(SHARED.get(ALLOCS) - before, 4 * N);
    }

    /// A thread's own figures start at zero in a slot another thread used,
    /// and its peak is of its own allocations less its own frees.
    #[test]
    fn a_threads_own_figures_start_from_its_claim() {
        let _g = crate::trace_table::global_tables();
        std::thread::spawn(|| {
            on_alloc(Source::Rust, 500);
            on_free(Source::Rust, 500);
        })
        .join()
        .unwrap();
        let st = std::thread::spawn(|| {
            assert_eq!(thread_stats(), ThreadHeapStats::default());
            on_alloc(Source::Rust, 100);
            on_alloc(Source::Rust, 300);
            on_free(Source::Rust, 100);
            on_alloc(Source::Rust, 50);
            thread_stats()
        })
        .join()
        .unwrap();
        let want = ThreadHeapStats {
            allocated_blocks: 3,
            allocated_bytes: 450,
            freed_blocks: 1,
            freed_bytes: 100,
            max_bytes: 400,
        };
        assert_eq!(st, want);
    }
}
