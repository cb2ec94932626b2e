//! The tracer's per-thread state, in one block of thread-local storage that
//! every traced call reaches inline.
//!
//! A traced allocation and its free touch the tracer's per-thread state
//! about six or seven times: the re-entry guard (raised and lowered), the
//! one-frame traceback memo, the stack top the walk stops at, the counting
//! slot, the timeline's notes; a domain hook's free also keeps the leaving
//! trace, and sampling its countdown. As Rust `thread_local!`s in a shared
//! object (`libpymalloc.so`, the tracing preload library) each access
//! called `__tls_get_addr`: 9% of the instructions of a traced C ring
//! (callgrind). Here they are the fields of one block declared, as
//! `tls_slot.rs` declares the heap slot, in assembly with the initial-exec
//! model: its address is the thread pointer plus an offset the dynamic
//! linker writes once (an immediate in an executable). The library's
//! thread-local storage is static already (`tls_slot.rs`), so the block
//! costs no room beyond the `thread_local!`s it replaces.
//!
//! That is on x86-64 Linux; elsewhere (other targets, Miri) the block is a
//! plain `thread_local!`, which on a target whose std keeps thread-locals
//! under OS keys cannot be reached once the thread's destructors ran.
//!
//! Invariants: every field starts zeroed in every thread, and zero is each
//! field's "nothing yet" (the users say what their fields mean; a
//! compile-time check below makes sure all zeros is a `TracerThread`); on
//! x86-64 Linux the block lives as long as its thread, so it answers even
//! in thread-local destructors; only the calling thread touches its block
//! (`Cell`s: the reference [`with`] lends is neither `Send` nor `Sync`).

use core::cell::Cell;

use crate::cell_array::CellArray;

/// One-frame memo entries per thread (`trace_memo.rs`): 1 KiB, within the
/// static room glibc keeps for a library opened with `dlopen` (about
/// 1.6 KiB), which `libpymalloc.so`'s thread-local storage takes from.
pub(crate) const MEMO_ENTRIES: usize = 64;

/// The tracer's state of one thread. All zeros is its start.
#[repr(C)]
pub(crate) struct TracerThread {
    /// Up while the thread is inside the tracer (`trace.rs`).
    pub(crate) busy: Cell<bool>,
    /// The top of the thread's stack plus one; 0 until looked up
    /// (`trace_frames.rs`, where a top of 0 means unknown).
    pub(crate) stack_top_plus_one: Cell<u64>,
    /// The counting slot the thread holds, as its index plus one; 0 if
    /// none (`trace_tally.rs`, which alone writes it).
    pub(crate) slot: Cell<u8>,
    /// The source of the leaving trace plus one, 0 if none; then its
    /// address, size, domain and traceback id (`trace.rs`: the trace a
    /// domain hook took out for the wrapped free).
    pub(crate) leaving_source: Cell<u8>,
    pub(crate) leaving: Cell<(usize, usize, u32, u32)>,
    /// Sampling's bytes left before the next sample plus one (0: not drawn
    /// yet) and its random state (0: not seeded) (`trace_sample.rs`).
    pub(crate) sample_left_plus_one: Cell<i64>,
    pub(crate) sample_rng: Cell<u64>,
    /// The timeline's notes (`trace_timeline.rs`).
    pub(crate) notes: Cell<(u32, usize, u64)>,
    /// The memo: (return address, traceback id, clear count); an address
    /// of 0 is an empty entry (`trace_memo.rs`).
    pub(crate) memo: CellArray<(usize, u32, u32), MEMO_ENTRIES>,
}

/// All zeros is the block's start (the `.tbss` block below, the fallback's
/// initialiser): checked here, at compile time, for every field.
// SAFETY: the fields are Cells (and a CellArray, one UnsafeCell of an
// array) of integers, of tuples of integers and of a bool, for which zero
// bits are valid values.
#[cfg_attr(all(target_arch = "x86_64", target_os = "linux", not(miri)), allow(dead_code))]
// A value to initialise each thread's block from (the fallback's
// `thread_local!`), never a shared cell: its Cells are copied, not shared.
#[allow(clippy::declare_interior_mutable_const)]
const ZEROED: TracerThread = unsafe { core::mem::zeroed() };

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
mod imp {
    use super::TracerThread;

    /// The block's symbol (as `tls_slot.rs`'s heap slot's).
    macro_rules! block {
        () => {
            crate::tls_slot::tls_symbol!("pymalloc_rs_tracer_thread_")
        };
    }

    // The block: zeroed thread-local storage of the struct's size and
    // alignment.
    crate::tls_slot::initial_exec_block!(
        "pymalloc_rs_tracer_thread_",
        core::mem::size_of::<TracerThread>(),
        core::mem::align_of::<TracerThread>().trailing_zeros()
    );

    /// The calling thread's block.
    #[inline(always)]
    pub(super) fn block() -> *const TracerThread {
        let p: *const TracerThread;
        // SAFETY: the first instruction loads the block's offset from the
        // thread pointer (a GOT entry the dynamic linker fills, or an
        // immediate after relaxation), the second the thread pointer itself
        // (the x86-64 ABI keeps it at %fs:0), and their sum is the calling
        // thread's block, which exists from the thread's start to its end.
        // `nomem` and `pure`: what it reads never changes while the thread
        // runs, so the compiler may keep the address across the block's
        // stores and merge the copies of one function body, which never
        // changes thread (the assumption compilers made of thread-local
        // addresses before LLVM's `llvm.threadlocal.address`).
        unsafe {
            core::arch::asm!(
                concat!("movq ", block!(), "@gottpoff(%rip), {p}"),
                "addq %fs:0, {p}",
                p = out(reg) p,
                options(att_syntax, nostack, nomem, pure),
            );
        }
        p
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri))))]
mod imp {
    use super::TracerThread;

    std::thread_local! {
        static BLOCK: TracerThread = const { super::ZEROED };
    }

    /// The calling thread's block.
    #[inline(always)]
    pub(super) fn block() -> *const TracerThread {
        BLOCK.with(|b| b as *const TracerThread)
    }
}

/// Runs `f` on the calling thread's block.
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(&TracerThread) -> R) -> R {
    // SAFETY: the block is the calling thread's, zero-initialised (a valid
    // TracerThread: `ZEROED`, checked at compile time) and alive
    // for the whole thread; the reference does not leave `f`, and the Cells
    // keep it on this thread.
    f(unsafe { &*imp::block() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_has_its_own_block_starting_zeroed() {
        with(|t| {
            t.notes.set((1, 2, 3));
            t.memo[MEMO_ENTRIES - 1].set((4, 5, 6));
        });
        std::thread::spawn(|| {
            with(|t| {
                assert!(!t.busy.get());
                assert_eq!(t.stack_top_plus_one.get(), 0);
                assert_eq!(t.slot.get(), 0);
                assert_eq!((t.leaving_source.get(), t.leaving.get()), (0, (0, 0, 0, 0)));
                assert_eq!((t.sample_left_plus_one.get(), t.sample_rng.get()), (0, 0));
                assert_eq!(t.notes.get(), (0, 0, 0));
                assert!(t.memo.iter().all(|e| e.get() == (0, 0, 0)), "a new thread's block starts zeroed");
                t.memo[MEMO_ENTRIES - 1].set((7, 8, 9));
            })
        })
        .join()
        .unwrap();
        with(|t| {
            assert_eq!(t.notes.get(), (1, 2, 3));
            assert_eq!(t.memo[MEMO_ENTRIES - 1].get(), (4, 5, 6), "another thread's store does not reach this one");
            t.notes.set((0, 0, 0));
            t.memo[MEMO_ENTRIES - 1].set((0, 0, 0));
        });
    }
}
