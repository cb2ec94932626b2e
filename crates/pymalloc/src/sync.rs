//! A small spin lock for the heap's bookkeeping.
//!
//! It guards what other threads may read of a heap (its arena table, for
//! statistics) and is taken only on slow paths (a new pool, an emptied pool,
//! a new arena). It never allocates, so the allocator can use it inside the
//! global allocator, and it is almost never contended: the owner of the heap
//! is the only thread that takes it, apart from someone reading statistics.

use core::sync::atomic::{AtomicBool, Ordering};

/// A test-and-test-and-set lock that yields to the OS when it spins long.
pub(crate) struct SpinLock(AtomicBool);

/// Holds a [`SpinLock`] until dropped.
pub(crate) struct SpinGuard<'a>(&'a SpinLock);

impl SpinLock {
    pub(crate) const fn new() -> SpinLock {
        SpinLock(AtomicBool::new(false))
    }

    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_> {
        if self.0.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        SpinGuard(self)
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.0.load(Ordering::Relaxed) {
                if spins < 64 {
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                spins = spins.saturating_add(1);
            }
            if self.0.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return;
            }
        }
    }
}

impl Drop for SpinGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0 .0.store(false, Ordering::Release);
    }
}

/// A value alone on its cache lines whatever the alignment of what holds it:
/// 120 bytes of padding on either side (two lines, for the adjacent-line
/// prefetcher), without asking the holder for more than word alignment.
#[repr(C)]
pub(crate) struct Isolated<T> {
    _before: [usize; 15],
    value: T,
    _after: [usize; 15],
}

impl<T> Isolated<T> {
    pub(crate) const fn new(value: T) -> Self {
        Isolated { _before: [0; 15], value, _after: [0; 15] }
    }
}

impl<T> core::ops::Deref for Isolated<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.value
    }
}
