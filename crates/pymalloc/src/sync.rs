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

impl SpinLock {
    /// Takes the lock with no guard, for a `fork` handler that releases it
    /// in another call ([`SpinLock::release`]).
    pub(crate) fn acquire(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken by [`SpinLock::acquire`].
    ///
    /// # Safety
    /// The calling thread took the lock with `acquire` and has not released
    /// it since.
    pub(crate) unsafe fn release(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A `Copy` value behind a [`SpinLock`], usable in a `static`: a setting
/// read on slow paths (the purge policy of heaps made later, the shared
/// heap's pending policy). `lock` is taken across `fork` by the handlers
/// of the module that owns the cell.
pub(crate) struct SpinCell<T: Copy> {
    pub(crate) lock: SpinLock,
    value: core::cell::UnsafeCell<T>,
}

// SAFETY: `value` is only touched with `lock` held.
unsafe impl<T: Copy + Send> Sync for SpinCell<T> {}

impl<T: Copy> SpinCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        SpinCell { lock: SpinLock::new(), value: core::cell::UnsafeCell::new(value) }
    }

    pub(crate) fn get(&self) -> T {
        let _g = self.lock.lock();
        // SAFETY: the lock is held.
        unsafe { *self.value.get() }
    }

    pub(crate) fn set(&self, value: T) {
        let _g = self.lock.lock();
        // SAFETY: the lock is held.
        unsafe { *self.value.get() = value };
    }
}

/// Guards of `std` locks held from a `fork` prepare handler to the parent's
/// or child's handler.
///
/// Invariant: only the thread that forks touches the cell, and only between
/// the prepare handler and the parent's or child's handler (which run on
/// that same thread, with the allocator's locks held, one fork at a time).
pub(crate) struct HeldAcrossFork<T>(core::cell::UnsafeCell<Option<T>>);

// SAFETY: see the invariant: one thread at a time, in sequence.
unsafe impl<T> Sync for HeldAcrossFork<T> {}

impl<T> HeldAcrossFork<T> {
    pub(crate) const fn new() -> Self {
        HeldAcrossFork(core::cell::UnsafeCell::new(None))
    }

    /// Keeps `guard` until [`HeldAcrossFork::drop_guard`].
    ///
    /// # Safety
    /// Called by a fork prepare handler (the invariant).
    pub(crate) unsafe fn keep(&self, guard: T) {
        // SAFETY: the invariant: no other access is concurrent.
        unsafe { *self.0.get() = Some(guard) };
    }

    /// Drops the guard kept by the prepare handler, releasing its lock.
    ///
    /// # Safety
    /// Called by a fork parent or child handler (the invariant).
    pub(crate) unsafe fn drop_guard(&self) {
        // SAFETY: the invariant: no other access is concurrent.
        drop(unsafe { (*self.0.get()).take() });
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
