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
