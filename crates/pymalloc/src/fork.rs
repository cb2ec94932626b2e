//! pymalloc in the child of `fork()` of a program with threads.
//!
//! The child of a multi-threaded process runs only the thread that forked;
//! a lock another thread held at that moment stays held for ever in the
//! child, and the child's next arena, new thread heap or exiting-thread
//! allocation would wait on it. [`prepare`] takes every lock the allocator
//! can take, in the order its paths nest them (the registry's locks, the
//! shared heap's mutex, each thread heap's bookkeeping lock, the arena
//! allocator's, the regions' first reservation, their slot tables), so the
//! fork happens when no other thread is inside a locked section; [`release`]
//! gives them back, in the parent and in the child (what glibc's malloc and
//! jemalloc do).
//!
//! The thread heaps' fast paths take no lock. The heap of a thread that
//! does not exist in the child is left as the fork found it, possibly in the
//! middle of an operation, so the child never adopts it; the child's frees
//! of its blocks go to its queue, whose pushes are single atomic steps.
//! The blocks another thread had freed for some heap but not yet sent
//! (its outbox, `heap/remote.rs`: at most 31 pool blocks per thread) are
//! lost to the child: they stay counted in use, and pin their pools.
//!
//! [`install`] registers the handlers with `pthread_atfork`, once: when
//! the first thread heap is made (the C library's default, the Rust global
//! allocator, the preload library), and by the preload library when it is
//! loaded.

use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::{arena_alloc, locked, region, thread_heaps};

/// Takes every allocator lock before `fork`. Pair each call with one
/// [`release`] on the same thread.
pub fn prepare() {
    thread_heaps::fork_acquire_registry();
    // SAFETY: this is the prepare step; release() follows on this thread.
    unsafe { locked::fork_acquire() };
    thread_heaps::fork_acquire_heaps();
    arena_alloc::fork_acquire();
    // SAFETY: as for the shared heap.
    unsafe {
        region::fork_acquire_reservation();
        region::ARENAS.fork_acquire();
        region::SEGMENTS.fork_acquire();
    }
}

/// Releases what [`prepare`] took, in the parent or in the child.
///
/// # Safety
/// The calling thread called [`prepare`] and has not released since (in the
/// child: the thread that forked, which is that thread).
pub unsafe fn release() {
    // SAFETY: each was taken by prepare() on this thread (our contract).
    unsafe {
        region::SEGMENTS.fork_release();
        region::ARENAS.fork_release();
        region::fork_release_reservation();
        arena_alloc::fork_release();
        thread_heaps::fork_release();
        locked::fork_release();
    }
}

extern "C" fn prepare_handler() {
    prepare();
}

extern "C" fn release_handler() {
    // SAFETY: pthread_atfork runs this after prepare_handler, on the thread
    // that forked (in the parent and, as its only thread, in the child).
    unsafe { release() };
}

static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Registers [`prepare`] and [`release`] with `pthread_atfork` (once per
/// process). Returns false if the registration failed.
pub fn install() -> bool {
    if cfg!(miri) {
        // Miri runs one process: no fork(), no pthread_atfork.
        return false;
    }
    INSTALL.call_once(|| {
        // SAFETY: the handlers are plain functions that live as long as the
        // program; pthread_atfork has no other precondition.
        let rc = unsafe { libc::pthread_atfork(Some(prepare_handler), Some(release_handler), Some(release_handler)) };
        INSTALLED.store(rc == 0, Ordering::Relaxed);
    });
    // call_once synchronises with the store.
    INSTALLED.load(Ordering::Relaxed)
}

/// Whether the handlers are registered.
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}
