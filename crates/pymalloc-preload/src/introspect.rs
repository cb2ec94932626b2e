//! glibc's questions about the heap (`<malloc.h>`): `malloc_trim`,
//! `mallinfo2`, `mallinfo` and `malloc_stats`, answered for the heap the
//! program allocates from.
//!
//! Without these, a program under the preload library that calls them
//! reaches glibc's, which know only the blocks glibc still serves (those
//! allocated before the library took over, and what pymalloc cannot
//! serve): a service that calls `malloc_trim(0)` after a peak, as many do,
//! gave nothing back, and a monitor reading `mallinfo2()` saw an almost
//! empty heap. Each function here answers for pymalloc's heaps and then
//! adds glibc's own answer, so that the figures cover both.
//!
//! * `malloc_trim(pad)` gives back what [`pymalloc::thread::purge`] and
//!   [`every_size::release_free`] can: the free pages of the calling
//!   thread's pools and medium spans, empty pools and arenas, the heaps of
//!   exited threads and the shared heap, every heap's free span units and
//!   the slots freed huge blocks kept. Other live threads' pools are their
//!   owners' (their free lists are not for another thread to walk): the
//!   decay policy gives those back. Then glibc trims its own heap (with
//!   `pad`). Returns 1 if memory was given back, as glibc does.
//! * `mallinfo2()` adds pymalloc's figures to glibc's field by field (see
//!   [`ours`]).
//! * `mallinfo()`, glibc's older form, is the same with each field cut to
//!   an `int` (glibc's saturates likewise since 2.35).
//! * `malloc_stats()` prints CPython's statistics table of the thread
//!   heaps and the line on the blocks above 512 bytes (as
//!   `PYMALLOC_PRELOAD_STATS` does at exit), then glibc's report, to
//!   stderr.
//!
//! `mallopt` is left to glibc: its parameters tune glibc's heap, which
//! still serves what pymalloc does not.
//!
//! A Python program that calls `ctypes.CDLL("libc.so.6").malloc_trim(0)`
//! asks glibc by name and reaches glibc's function; `ctypes.CDLL(None)`
//! (the program's own symbols, the preloaded library first) reaches this
//! one.

use core::ffi::{c_int, c_void};

use pymalloc::every_size::{self, SEGMENT_BYTES};
use pymalloc::thread;

use crate::underneath::{self, Next};

/// glibc's `malloc_trim`, `mallinfo2` and `malloc_stats`.
static GLIBC_TRIM: Next = Next::new(c"malloc_trim");
static GLIBC_INFO: Next = Next::new(c"mallinfo2");
static GLIBC_STATS: Next = Next::new(c"malloc_stats");

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn malloc_trim(pad: usize) -> c_int {
    let ours = thread::purge() + every_size::release_free();
    let glibc = match GLIBC_TRIM.get() {
        // SAFETY: glibc's malloc_trim has this signature and no
        // precondition.
        Some(f) => unsafe { core::mem::transmute::<*mut c_void, unsafe extern "C" fn(usize) -> c_int>(f)(pad) },
        None => 0,
    };
    c_int::from(ours > 0 || glibc != 0)
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn mallinfo2() -> libc::mallinfo2 {
    let g = glibc_mallinfo2();
    let o = ours();
    libc::mallinfo2 {
        arena: g.arena + o.arena,
        ordblks: g.ordblks + o.ordblks,
        smblks: g.smblks,
        hblks: g.hblks + o.hblks,
        hblkhd: g.hblkhd + o.hblkhd,
        usmblks: g.usmblks,
        fsmblks: g.fsmblks,
        uordblks: g.uordblks + o.uordblks,
        fordblks: g.fordblks + o.fordblks,
        keepcost: g.keepcost,
    }
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn mallinfo() -> libc::mallinfo {
    // SAFETY: no precondition.
    let m = unsafe { mallinfo2() };
    let int = |v: usize| c_int::try_from(v).unwrap_or(c_int::MAX);
    libc::mallinfo {
        arena: int(m.arena),
        ordblks: int(m.ordblks),
        smblks: int(m.smblks),
        hblks: int(m.hblks),
        hblkhd: int(m.hblkhd),
        usmblks: int(m.usmblks),
        fsmblks: int(m.fsmblks),
        uordblks: int(m.uordblks),
        fordblks: int(m.fordblks),
        keepcost: int(m.keepcost),
    }
}

/// # Safety
/// None beyond C's.
#[no_mangle]
pub unsafe extern "C" fn malloc_stats() {
    crate::lifecycle::write_stats(2);
    if let Some(f) = GLIBC_STATS.get() {
        // SAFETY: glibc's malloc_stats has this signature and no
        // precondition.
        unsafe { core::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(f)() }
    }
}

/// glibc's `mallinfo2()`, or zeroes if it cannot be found.
fn glibc_mallinfo2() -> libc::mallinfo2 {
    match GLIBC_INFO.get() {
        // SAFETY: glibc's mallinfo2 has this signature and no precondition.
        Some(f) => unsafe { core::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> libc::mallinfo2>(f)() },
        None => underneath::zero_mallinfo2(),
    }
}

/// pymalloc's part of `mallinfo2`, in glibc's meanings:
///
/// * `arena`, the memory the heap holds apart from its largest blocks: the
///   arenas of the pools and the span segments, 1 MiB each;
/// * `uordblks`, the bytes in blocks handed out there (pool blocks at their
///   class size, medium blocks at theirs, large blocks in whole units), and
///   `fordblks` the rest of `arena`;
/// * `ordblks`, the free blocks of pools in use;
/// * `hblks` and `hblkhd`, the huge blocks (runs of 1 MiB slots of their
///   own, as glibc's `mmap`ed chunks are) and their bytes.
///
/// Blocks in the thread heaps' caches count as free, as in CPython's
/// statistics.
fn ours() -> libc::mallinfo2 {
    let pools = thread::stats();
    let spans = every_size::stats();
    let arena = pools.arena_bytes + spans.segments * SEGMENT_BYTES;
    let used = pools.allocated_bytes + spans.medium_bytes + spans.large_bytes;
    let mut m = underneath::zero_mallinfo2();
    m.arena = arena;
    m.uordblks = used;
    m.fordblks = arena.saturating_sub(used);
    m.ordblks = pools.classes.iter().map(|c| c.avail_blocks).sum();
    m.hblks = spans.huge_blocks;
    m.hblkhd = spans.huge_bytes;
    m
}
