//! A hint to the cache: bring in the line of a block that is about to be
//! used, without waiting for it.
//!
//! The block caches (`class_stacks.rs`) hand out the block freed last. A
//! cached block is one pymalloc never touched while it was free (the cache
//! holds its address, not a link in it), so without a hint it comes back
//! cold and its new user's first write waits for memory. Free-list
//! allocators, which write a link into every freed block, pay that miss in
//! `free`, off the critical path; the hint pays it there too. (The same hint
//! on the head of a pool's or span's free list when a block is taken, as
//! tcmalloc does, measured nothing on larson or the ring and is not made.)

/// Asks for the cache line at `p`, without waiting. Any address will do: a
/// prefetch reads nothing the program sees and never faults.
///
/// The hint is `_MM_HINT_ET0` (for writing), but LLVM emits `prefetchw` for
/// it only where the `prfchw` target feature is on; for the baseline x86-64
/// target this crate is built for, it emits `prefetcht0`, a read prefetch
/// (a line no other core holds arrives exclusive, so the store that follows
/// needs no second request). `prefetchw` itself, written in `asm!`,
/// measured no better on the ring; larson was too noisy to tell
/// (docs/every-size.md, "Twenty-first pass").
#[inline(always)]
pub(crate) fn for_write(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: a prefetch is a hint: it has no effect the program can
    // observe and does not fault, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_ET0 }>(p.cast())
    };
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}
