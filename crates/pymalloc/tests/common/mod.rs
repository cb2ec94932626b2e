//! Shared by the integration tests that change process-wide state.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard, PoisonError};

use pymalloc::config::{self, AllocatorName};

static LOCK: Mutex<()> = Mutex::new(());

/// Exclusive use of the domains for one test; the default configuration is
/// back when it drops.
pub struct Exclusive(#[allow(dead_code)] MutexGuard<'static, ()>);

pub fn exclusive() -> Exclusive {
    let g = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: the lock keeps every other test of this binary off the domains.
    unsafe { config::setup(AllocatorName::Pymalloc).unwrap() };
    Exclusive(g)
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        pymalloc::debug::set_lock_check(None);
        // SAFETY: still holding the lock.
        unsafe { config::setup(AllocatorName::Pymalloc).unwrap() };
    }
}

/// The configurations a semantic test runs under.
pub const CONFIGS: [AllocatorName; 4] =
    [AllocatorName::Pymalloc, AllocatorName::Malloc, AllocatorName::PymallocDebug, AllocatorName::MallocDebug];

#[cfg(not(miri))]
unsafe extern "C" fn mmap_arena(_: *mut std::ffi::c_void, size: usize) -> *mut std::ffi::c_void {
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p
    }
}

#[cfg(not(miri))]
unsafe extern "C" fn munmap_arena(_: *mut std::ffi::c_void, p: *mut std::ffi::c_void, size: usize) {
    // SAFETY: a mapping of mmap_arena, given back once.
    unsafe { libc::munmap(p, size) };
}

/// A heap whose arenas are plain `mmap` mappings, outside the arena region:
/// its pools keep their headers at their start, as CPython's do
/// (src/pool_table.rs).
#[cfg(not(miri))]
pub fn heap_outside_the_region() -> pymalloc::Heap {
    let mut heap = pymalloc::Heap::new();
    // SAFETY: the heap has no arena yet; the functions map and unmap arenas
    // of the size asked, from any thread.
    unsafe {
        heap.set_arena_allocator(pymalloc::ArenaAllocator {
            ctx: std::ptr::null_mut(),
            alloc: mmap_arena,
            free: munmap_arena,
        })
    };
    heap
}
