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
