//! The caching stack walker's stand-in where it does not run (targets other
//! than x86-64 Linux, and Miri): every walk gives up, and the tracer uses
//! the system unwinder.

/// No registers are read.
#[derive(Clone, Copy)]
pub(crate) struct Regs;

impl Regs {
    #[inline(always)]
    pub(crate) fn here() -> Regs {
        Regs
    }
}

/// Gives up at once: the caller uses the system unwinder.
pub(crate) fn walk(_start: Regs, _stack_top: u64, _f: impl FnMut(u64, u64) -> bool) -> bool {
    false
}

/// No lock to take before `fork`.
pub(crate) fn fork_acquire() {}

/// Nothing to give back.
///
/// # Safety
/// None; the same contract as the walker's.
pub(crate) unsafe fn fork_release() {}

/// Unknown.
pub(crate) fn stack_top() -> u64 {
    0
}

/// Runs `f`: without the caching walker there is no walk of the system
/// unwinder to keep apart from the loader (see `trace_unwind.rs`).
pub(crate) fn with_loader<R>(f: impl FnOnce() -> R) -> R {
    f()
}
