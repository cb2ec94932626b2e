//! The tracer's sampling mode, as jemalloc's heap profiler samples: one
//! trace per `K` bytes allocated on average. Each thread counts down the
//! bytes it allocates from a gap drawn from an exponential distribution of
//! mean `K`; the allocation that crosses zero is traced and a new gap is
//! drawn. A block of `s` bytes is thus traced with probability
//! `1 - exp(-s / K)`, which reports undo ([`estimate`]).
//!
//! Frees must not look every block up in the trace tables: a bitmap of
//! hashed addresses says which blocks may have been sampled (set when one
//! is, cleared with the traces), so the free of a block that never was
//! costs one load.

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::trace_thread;

/// Mean bytes between samples; 0: every block is traced.
static MEAN: AtomicUsize = AtomicUsize::new(0);

const MARK_WORDS: usize = 1 << 14; // 2^20 bits, 128 KiB
static MARKS: [AtomicU64; MARK_WORDS] = [const { AtomicU64::new(0) }; MARK_WORDS];

/// Sets the mean bytes between samples (0: trace every block).
pub(crate) fn set_mean(bytes: usize) {
    MEAN.store(bytes, Ordering::Relaxed);
    trace_thread::with(|t| t.sample_left_plus_one.set(0));
}

/// The mean bytes between samples (0: every block).
#[inline(always)]
pub(crate) fn mean() -> usize {
    MEAN.load(Ordering::Relaxed)
}

/// Whether an allocation of `size` bytes is to be traced.
#[inline]
pub(crate) fn take(size: usize) -> bool {
    let k = mean();
    if k == 0 {
        return true;
    }
    // The thread's bytes left before its next sample, kept plus one in its
    // block (0: not drawn yet).
    trace_thread::with(|t| {
        let l = &t.sample_left_plus_one;
        let mut left = l.get() - 1;
        if left < 0 {
            left = gap(k);
        }
        left = left.saturating_sub(i64::try_from(size).unwrap_or(i64::MAX));
        if left > 0 {
            l.set(left + 1);
            false
        } else {
            l.set(gap(k) + 1);
            true
        }
    })
}

/// A gap drawn from the exponential distribution of mean `k` (at least 1).
fn gap(k: usize) -> i64 {
    let x = trace_thread::with(|t| {
        let r = &t.sample_rng;
        let mut s = r.get();
        if s == 0 {
            // Seeded from the address of the thread's own block and the
            // clock.
            s = (r as *const Cell<u64> as u64) ^ crate::os::now_ms().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        }
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        r.set(s);
        s
    });
    // u in (0, 1]: 53 random bits.
    let u = ((x >> 11) + 1) as f64 / (1u64 << 53) as f64;
    // At most i64::MAX - 1: the countdown is kept plus one.
    ((-u.ln() * k as f64) as i64).clamp(1, i64::MAX - 1)
}

#[inline]
fn bit(addr: usize) -> (usize, u64) {
    let h = (addr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 44; // 20 bits
    (h >> 6, 1 << (h & 63))
}

/// Notes that the block at `addr` was sampled.
pub(crate) fn mark(addr: usize) {
    let (w, b) = bit(addr);
    MARKS[w].fetch_or(b, Ordering::Relaxed);
}

/// False if the block at `addr` certainly was not sampled.
#[inline]
pub(crate) fn maybe_marked(addr: usize) -> bool {
    let (w, b) = bit(addr);
    MARKS[w].load(Ordering::Relaxed) & b != 0
}

/// Forgets every mark (with the traces).
pub(crate) fn clear_marks() {
    for w in &MARKS {
        w.store(0, Ordering::Relaxed);
    }
}

/// The bytes a sampled block of `size` bytes stands for, given mean `k`
/// between samples: `size / (1 - exp(-size / k))` (unbiased); `size` itself
/// when every block was traced.
pub fn estimate(size: usize, k: usize) -> f64 {
    if k == 0 || size == 0 {
        return size as f64;
    }
    let s = size as f64;
    s / -(-s / k as f64).exp_m1()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_average_the_mean_and_estimates_undo_the_sampling() {
        let k = 4096;
        let n = if cfg!(miri) { 2_000 } else { 20_000 };
        // A fixed seed, so the test cannot flake; and a bound of four
        // standard errors (an exponential's deviation is its mean), which
        // a broken draw misses by far.
        trace_thread::with(|t| t.sample_rng.set(0x2545_F491_4F6C_DD1D));
        let mean = (0..n).map(|_| gap(k) as f64).sum::<f64>() / n as f64;
        assert!((mean / k as f64 - 1.0).abs() < 4.0 / (n as f64).sqrt(), "mean gap {mean}");
        assert_eq!(estimate(100, 0), 100.0);
        // Large blocks are always sampled and stand for themselves.
        assert!((estimate(1 << 30, k) - (1u64 << 30) as f64).abs() < 1.0);
        // A small block stands for about k bytes.
        assert!((estimate(16, k) / k as f64 - 1.0).abs() < 0.01);
        let (a, b) = (0x7000_1230usize, 0x7000_1240usize);
        mark(a);
        assert!(maybe_marked(a));
        assert!(!maybe_marked(b) || bit(a) == bit(b));
    }
}
