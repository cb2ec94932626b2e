//! The tracer: tracemalloc for every program on pymalloc-rs.
//!
//! While tracing is on, every traced allocation records a trace: where the
//! block came from ([`Source`]: an allocator domain, the Rust global
//! allocator, or a block tracked by hand), its tracemalloc domain number
//! (0 for all of ours, as CPython records), its size, and the return
//! addresses of up to [`traceback_limit`] frames of the program that
//! allocated it (`trace_frames.rs`). Traces live in the tracer's own tables
//! (`trace_table.rs`), which never allocate through what they trace.
//!
//! What is traced:
//!
//! * the three allocator domains, once [`hook_domains`] has wrapped their
//!   allocators (as CPython's tracemalloc does; [`unhook_domains`] puts the
//!   allocators back): the hooks pass calls through untouched while tracing
//!   is off;
//! * Rust programs whose global allocator is [`Traced`] around any
//!   allocator: while off, a test of the flag per call ([`TraceGate`]'s
//!   provided methods), or for `Traced(PyMalloc)` the plain fast paths
//!   behind the gate, one load more per allocation the cache serves;
//! * blocks allocated elsewhere, with [`track`] and [`untrack`]
//!   (`PyTraceMalloc_Track` in the C library).
//!
//! ```
//! use pymalloc::trace;
//! trace::start(1).unwrap();
//! trace::track(7, 0x1000, 100).unwrap();
//! assert_eq!(trace::traced_memory(), (100, 100));
//! trace::untrack(7, 0x1000).unwrap();
//! assert_eq!(trace::traced_memory(), (0, 100));
//! trace::stop();
//! ```
//!
//! Allocations the tracer makes itself (symbol resolution, snapshots) are
//! never traced: a per-thread guard is up while it works.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::domain::{Domain, MemAllocatorEx};
use crate::sync::SpinLock;
use crate::trace_fork;
pub use crate::trace_frames::Frame;
use crate::trace_frames::{self, capture, Mark};
use crate::trace_memo;
use crate::trace_peak;
use crate::trace_sample;
use crate::trace_table::{self as table, Trace};
pub use crate::trace_table::{Source, DEFAULT_DOMAIN};
use crate::trace_tally;
pub use crate::trace_tally::ThreadHeapStats;
use crate::trace_thread;
use crate::trace_timeline;

/// The largest traceback limit (CPython's `MAX_NFRAME`, 65535).
pub const MAX_NFRAME: usize = u16::MAX as usize;

/// Why a tracer call did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceError {
    /// Tracing is off (`PyTraceMalloc_Track` returns -2).
    NotTracing,
    /// The traceback limit is outside `1..=MAX_NFRAME`.
    BadLimit(usize),
    /// The tracer's tables could not grow (-1).
    NoMemory,
    /// A null address cannot be tracked.
    NullAddress,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceError::NotTracing => f.write_str("the tracer is not tracing memory allocations"),
            TraceError::BadLimit(n) => write!(f, "the number of frames must be in range [1; {MAX_NFRAME}], not {n}"),
            TraceError::NoMemory => f.write_str("memory for the tracer's tables is short"),
            TraceError::NullAddress => f.write_str("a null address cannot be tracked"),
        }
    }
}

impl std::error::Error for TraceError {}

static TRACING: AtomicBool = AtomicBool::new(false);
static LIMIT: AtomicUsize = AtomicUsize::new(1);

/// Held while [`start`] or [`stop`] turns tracing on or off. Invariant,
/// outside it: the gated fast paths' gate (`every_size::set_gate`) is shut
/// whenever `TRACING` is up. Without it a `start` and a `stop` racing could
/// end with tracing on and the gate open (frees taking the fast path and
/// leaving their traces behind). `trace_fork` takes it first.
static SWITCH: SpinLock = SpinLock::new();

/// The traced bytes now and at their peak (tracemalloc's
/// `get_traced_memory`), and the traced blocks live at that peak (dhat's
/// `max_blocks`); the other counts are per thread (`trace_tally.rs`).
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static MAX_BLOCKS: AtomicUsize = AtomicUsize::new(0);

/// Figures of the traced blocks, as dhat's `HeapStats`: every count is of
/// blocks traced since tracing started (or the traces were cleared).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Blocks allocated.
    pub total_blocks: u64,
    /// Bytes allocated.
    pub total_bytes: u64,
    /// Blocks live now.
    pub curr_blocks: usize,
    /// Bytes live now.
    pub curr_bytes: usize,
    /// Blocks live when the live bytes peaked.
    pub max_blocks: usize,
    /// The most bytes live at once.
    pub max_bytes: usize,
}

/// The trace of the block a domain hook is freeing or moving: out of the
/// table during the wrapped allocator's call (after which the address may
/// be another thread's new block), and kept in the thread's block
/// (`trace_thread.rs`) for a debug hook's report in that call
/// ([`traceback`]).
fn set_leaving(t: Option<Trace>) {
    trace_thread::with(|b| match t {
        Some(t) => {
            b.leaving.set((t.addr, t.size, t.domain, t.traceback));
            b.leaving_source.set(t.source as u8 + 1);
        }
        None => b.leaving_source.set(0),
    })
}

/// The trace [`set_leaving`] keeps, if any.
fn kept_leaving() -> Option<Trace> {
    trace_thread::with(|b| {
        let source = *Source::ALL.get(usize::from(b.leaving_source.get()).checked_sub(1)?)?;
        let (addr, size, domain, traceback) = b.leaving.get();
        Some(Trace { addr, size, domain, traceback, source })
    })
}

/// This thread's guard, up until dropped.
struct Entered;

impl Drop for Entered {
    fn drop(&mut self) {
        trace_thread::with(|t| t.busy.set(false));
    }
}

/// Raises this thread's guard (its block's `busy`: up while the thread is
/// inside the tracer, so that what it allocates then is not traced); None
/// if it was up already (the tracer, or an allocator under a traced call,
/// re-entered).
fn enter() -> Option<Entered> {
    // `then`, not `then_some`: an Entered built and dropped would lower the
    // guard.
    trace_thread::with(|t| !t.busy.replace(true)).then(|| Entered)
}

/// Runs `f` with this thread's guard up; None if it was up already.
fn guarded<R>(f: impl FnOnce() -> R) -> Option<R> {
    enter().map(|_g| f())
}

/// Runs `f` untraced: what it allocates is not recorded (the tracer's
/// reports allocate).
pub(crate) fn untraced<R>(f: impl FnOnce() -> R) -> R {
    let was = trace_thread::with(|t| t.busy.replace(true));
    let r = f();
    if !was {
        trace_thread::with(|t| t.busy.set(false));
    }
    r
}

/// Starts tracing with tracebacks of up to `nframe` frames (tracemalloc's
/// `start`). Already tracing: the limit changes for new traces.
pub fn start(nframe: usize) -> Result<(), TraceError> {
    if !(1..=MAX_NFRAME).contains(&nframe) {
        return Err(TraceError::BadLimit(nframe));
    }
    LIMIT.store(nframe, Ordering::Relaxed);
    trace_fork::install();
    let was = {
        let _g = SWITCH.lock();
        // Shut before the flag is up: a gated front (the preload library's)
        // that reads the flag up (an acquire load) and so traces a block
        // sees the gate shut when it frees it, and untraces it.
        crate::every_size::set_gate(false);
        TRACING.swap(true, Ordering::SeqCst)
    };
    if !was {
        trace_timeline::restart();
    }
    Ok(())
}

/// Traces one block per `mean_bytes` allocated on average instead of every
/// block (jemalloc's sampling; 0: every block, the default). Sampled
/// traces keep their real sizes; [`crate::snapshot::Snapshot::scaled`]
/// turns them into estimates of all the bytes. Blocks tracked by hand are
/// always traced.
pub fn set_sampling(mean_bytes: usize) {
    trace_sample::set_mean(mean_bytes);
}

/// The mean bytes between samples (0: every block is traced).
pub fn sampling() -> usize {
    trace_sample::mean()
}

/// Keeps (or stops keeping) what is live at the peak of the traced bytes,
/// for [`crate::snapshot::Snapshot::take_peak`]. It costs a lock per traced
/// allocation and free, and a copy of the per-traceback figures each time
/// the traced bytes leave a new peak. Turning it on starts afresh: blocks
/// traced before do not count.
pub fn keep_peak(on: bool) {
    guarded(|| trace_peak::set_enabled(on));
}

/// The traced bytes at the peak [`keep_peak`] keeps, and each traceback's
/// figures then (guard up).
pub(crate) fn peak_figures() -> (usize, Vec<trace_peak::AtPeak>) {
    untraced(trace_peak::at_peak)
}

/// Traced memory over time since tracing started: `(milliseconds, most
/// bytes traced in that step)`, at most 2048 points covering the whole run.
pub fn timeline() -> Vec<(u64, usize)> {
    untraced(|| trace_timeline::points(CURRENT.load(Ordering::Relaxed)))
}

/// The raw frames of traceback `id` (most recent first).
pub(crate) fn raw_frames(id: u32) -> Vec<usize> {
    untraced(|| table::with_frames(id, <[usize]>::to_vec)).unwrap_or_default()
}

/// Stops tracing and forgets every trace (tracemalloc's `stop`).
pub fn stop() {
    {
        let _g = SWITCH.lock();
        TRACING.store(false, Ordering::SeqCst);
        crate::every_size::set_gate(true);
    }
    clear_traces();
}

/// Whether allocations are being traced.
///
/// An acquire load (on x86-64 the same instruction as a relaxed one): a
/// gated front that finds tracing on, and so traces a block, then sees the
/// gate [`start`] shut before raising the flag, and untraces the block
/// when it frees it.
#[inline(always)]
pub fn is_tracing() -> bool {
    TRACING.load(Ordering::Acquire)
}

/// Takes [`SWITCH`] before a `fork` (`trace_fork`).
pub(crate) fn fork_acquire() {
    SWITCH.acquire();
}

/// Gives back what [`fork_acquire`] took.
///
/// # Safety
/// The calling thread ran [`fork_acquire`] and has not released since.
pub(crate) unsafe fn fork_release() {
    // SAFETY: taken by fork_acquire on this thread (our contract).
    unsafe { SWITCH.release() };
}

/// The most frames a traceback keeps.
pub fn traceback_limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// `(current, peak)` bytes of the traced blocks (tracemalloc's
/// `get_traced_memory`).
pub fn traced_memory() -> (usize, usize) {
    (CURRENT.load(Ordering::Relaxed), PEAK.load(Ordering::Relaxed))
}

/// Sets the peak to the current traced bytes.
pub fn reset_peak() {
    PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
    MAX_BLOCKS.store(trace_tally::live_blocks(), Ordering::Relaxed);
}

/// Forgets every trace and traceback, and zeroes the counters.
pub fn clear_traces() {
    guarded(|| {
        table::clear();
        trace_peak::clear();
    });
    trace_sample::clear_marks();
    for c in [&CURRENT, &PEAK, &MAX_BLOCKS] {
        c.store(0, Ordering::Relaxed);
    }
    trace_tally::clear();
}

/// Live traced bytes from `source`.
pub fn traced_bytes(source: Source) -> usize {
    trace_tally::live_bytes(source)
}

/// The figures of the traced blocks.
pub fn heap_stats() -> HeapStats {
    HeapStats {
        total_blocks: trace_tally::total_blocks(),
        total_bytes: trace_tally::total_bytes(),
        curr_blocks: trace_tally::live_blocks(),
        curr_bytes: CURRENT.load(Ordering::Relaxed),
        max_blocks: MAX_BLOCKS.load(Ordering::Relaxed),
        max_bytes: PEAK.load(Ordering::Relaxed),
    }
}

/// The calling thread's traced allocations and frees so far.
pub fn thread_heap_stats() -> ThreadHeapStats {
    trace_tally::thread_stats()
}

/// The traceback of the live traced block at `addr` of `domain`, oldest
/// frame first (tracemalloc's `get_object_traceback`), symbols resolved.
pub fn traceback(domain: u32, addr: usize) -> Option<Vec<Frame>> {
    // The lookup allocates nothing: no guard needed (and a report from
    // inside a traced call, with the guard up, must still find the trace).
    let leaving = || kept_leaving().filter(|t| t.domain == domain && t.addr == addr);
    let t = table::get(domain, addr).or_else(leaving)?;
    untraced(|| {
        let ips = table::with_frames(t.traceback, <[usize]>::to_vec)?;
        Some(trace_frames::program_frames(&ips, traceback_limit(), &mut Default::default()))
    })
}

/// Records that `size` bytes at `addr` belong to tracemalloc domain
/// `domain` (`PyTraceMalloc_Track`), with the caller's traceback; replaces
/// a trace already there.
#[inline(never)]
pub fn track(domain: u32, addr: usize, size: usize) -> Result<(), TraceError> {
    let marker = 0u8;
    if !is_tracing() {
        return Err(TraceError::NotTracing);
    }
    if addr == 0 {
        return Err(TraceError::NullAddress);
    }
    let mark = Mark::here(&marker);
    match guarded(|| add(Source::Tracked, domain, addr, size, mark)) {
        Some(false) => Err(TraceError::NoMemory),
        _ => Ok(()),
    }
}

/// Forgets the trace of `addr` in `domain` (`PyTraceMalloc_Untrack`); no
/// trace is not an error.
pub fn untrack(domain: u32, addr: usize) -> Result<(), TraceError> {
    if !is_tracing() {
        return Err(TraceError::NotTracing);
    }
    guarded(|| remove(domain, addr));
    Ok(())
}

/// Records a trace (guard up). False if the tables are full.
fn add(source: Source, domain: u32, addr: usize, size: usize, mark: Mark) -> bool {
    let limit = LIMIT.load(Ordering::Relaxed);
    let mut small = core::mem::MaybeUninit::<[usize; 32]>::uninit();
    let mut big = Vec::new();
    let frames: &mut [usize] = if limit <= 32 {
        // SAFETY: the first `limit` words of the buffer are written (only
        // those: a walk of one frame need not clear 32) before the slice
        // over them is made. The usual traceback of one frame is one
        // store: `write_bytes` of a variable length is a call to the C
        // library's memset (12 instructions per traced allocation).
        unsafe {
            let p = small.as_mut_ptr().cast::<usize>();
            if limit == 1 {
                p.write(0);
            } else {
                ptr::write_bytes(p, 0, limit);
            }
            core::slice::from_raw_parts_mut(p, limit)
        }
    } else {
        big.resize(limit, 0);
        &mut big
    };
    let n = capture(frames, limit, mark);
    let Some(tb) = trace_memo::intern(&frames[..n]) else { return false };
    let t = Trace { addr, size, domain, traceback: tb, source };
    match table::insert(t) {
        Err(()) => false,
        Ok(old) => {
            if let Some(old) = old {
                account_free(&old);
            }
            account_alloc(&t);
            if trace_sample::mean() != 0 {
                trace_sample::mark(addr);
            }
            true
        }
    }
}

/// Whether the block at `addr` may have a trace (always, unless sampling
/// says it was never sampled).
#[inline]
fn may_be_traced(addr: usize) -> bool {
    trace_sample::mean() == 0 || trace_sample::maybe_marked(addr)
}

/// Forgets a trace (guard up).
fn remove(domain: u32, addr: usize) -> Option<Trace> {
    let t = table::remove(domain, addr)?;
    account_free(&t);
    Some(t)
}

fn account_alloc(t: &Trace) {
    let (source, size) = (t.source, t.size);
    if trace_peak::enabled() {
        trace_peak::on_add(t.traceback, t.domain, source, size);
    }
    trace_tally::on_alloc(source, size);
    let cur = CURRENT.fetch_add(size, Ordering::Relaxed) + size;
    if cur > PEAK.load(Ordering::Relaxed) && PEAK.fetch_max(cur, Ordering::Relaxed) < cur {
        new_peak();
    }
    trace_timeline::note(cur);
}

/// The traced bytes left a new peak: the blocks live now are its blocks
/// (added up over the threads' counts, so out of the way of the common
/// allocation, which is not a new peak once a program has warmed up).
#[cold]
#[inline(never)]
fn new_peak() {
    MAX_BLOCKS.store(trace_tally::live_blocks(), Ordering::Relaxed);
}

fn account_free(t: &Trace) {
    if trace_peak::enabled() {
        trace_peak::on_remove(t.traceback, t.size);
    }
    trace_tally::on_free(t.source, t.size);
    trace_timeline::note(CURRENT.fetch_sub(t.size, Ordering::Relaxed) - t.size);
}

/// A trace as copied out: source, domain, size, traceback id.
pub(crate) type RawTrace = (Source, u32, usize, u32);
/// A traceback as copied out: its id and return addresses.
pub(crate) type RawTraceback = (u32, Vec<usize>);

/// Every live trace, copied (guard up), with its raw traceback (most
/// recent frame first).
pub(crate) fn copy_traces() -> (Vec<RawTrace>, Vec<RawTraceback>) {
    untraced(|| {
        let mut traces = Vec::new();
        table::for_each(|t| traces.push((t.source, t.domain, t.size, t.traceback)));
        let mut ids: Vec<u32> = traces.iter().map(|t| t.3).collect();
        ids.sort_unstable();
        ids.dedup();
        let tbs =
            ids.into_iter().map(|id| (id, table::with_frames(id, <[usize]>::to_vec).unwrap_or_default())).collect();
        (traces, tbs)
    })
}

// ---- the Rust global allocator ----

/// A Rust global allocator that traces the blocks of the one it wraps while
/// tracing is on.
///
/// ```no_run
/// #[global_allocator]
/// static ALLOC: pymalloc::trace::Traced<pymalloc::PyMalloc> = pymalloc::trace::Traced(pymalloc::PyMalloc);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Traced<A>(pub A);

/// For an allocator front of its own (the preload library's `malloc`):
/// records the block of `size` bytes at `p` it just handed out, if tracing
/// is on and sampling takes it. Call it from the front's entry point, so
/// that the frames above are the program's.
#[cold]
#[inline(never)]
pub fn record_alloc(source: Source, p: *mut u8, size: usize) {
    record_alloc_in_caller(source, p, size);
}

/// [`record_alloc`], inlined into the entry point that calls it: the walk
/// then starts at that entry point's frame, one frame fewer to walk. For a
/// front's out-of-line traced path (the preload library's).
#[inline(always)]
pub fn record_alloc_in_caller(source: Source, p: *mut u8, size: usize) {
    let marker = 0u8;
    if !is_tracing() || p.is_null() || !trace_sample::take(size) {
        return;
    }
    // Taken here, in the caller's frame (Mark::here is inlined too): only
    // for a block that is traced.
    let mark = Mark::here(&marker);
    guarded(|| add(source, DEFAULT_DOMAIN, p as usize, size, mark));
}

/// For an allocator front of its own: forgets the block at `p` before the
/// front frees it.
#[cold]
#[inline(never)]
pub fn record_free(p: *mut u8) {
    if !is_tracing() || !may_be_traced(p as usize) {
        return;
    }
    guarded(|| remove(DEFAULT_DOMAIN, p as usize));
}

impl<A: GlobalAlloc> Traced<A> {
    /// An allocation's traced path: the wrapped allocator's call, recorded
    /// if tracing is on. Out of line, so that the untraced path is the
    /// wrapped allocator's fast path.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_traced(&self, l: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: the caller's contract is the wrapped allocator's.
        let p = unsafe {
            if zeroed {
                self.0.alloc_zeroed(l)
            } else {
                self.0.alloc(l)
            }
        };
        record_alloc_in_caller(Source::Rust, p, l.size());
        p
    }

    /// A free's traced path, out of line as [`Self::alloc_traced`].
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_traced(&self, p: *mut u8, l: Layout) {
        // The trace goes first: once freed, the address may be another
        // thread's new block.
        record_free(p);
        // SAFETY: the caller's contract is the wrapped allocator's.
        unsafe { self.0.dealloc(p, l) }
    }

    /// A `realloc`'s traced path, out of line. Not cold: a block that
    /// leaves its class takes it while tracing is off too.
    #[inline(never)]
    unsafe fn realloc_traced(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if !is_tracing() {
            // SAFETY: the caller's contract is the wrapped allocator's.
            return unsafe { self.0.realloc(p, l, n) };
        }
        record_free(p);
        // SAFETY: as above.
        let q = unsafe { self.0.realloc(p, l, n) };
        if q.is_null() {
            // p lives on, unchanged.
            record_alloc(Source::Rust, p, l.size());
        } else {
            record_alloc(Source::Rust, q, n);
        }
        q
    }
}

/// How [`Traced`] calls the allocator it wraps: each call is given the
/// traced path (`traced`: the same call, recorded while tracing is on),
/// which it must take while tracing is on.
///
/// The provided methods test the tracing flag before the call: a load, a
/// test and a branch per call. [`PyMalloc`](crate::PyMalloc)'s and
/// [`PyMallocSmall`](crate::PyMallocSmall)'s test nothing. Their fast paths
/// read the thread's cache, the block map and the class table through the
/// gate that [`start`] shuts and [`stop`] opens (ARCHITECTURE.md, "The
/// gate"): while it is shut every call reaches `traced`, and while it is
/// open a block the thread's cache serves costs one load more than it
/// costs the plain allocator.
///
/// [`std::alloc::System`] and [`LockedHeap`](crate::LockedHeap) take the
/// provided methods, and so does any allocator wrapped in [`Flagged`]:
/// `Traced(Flagged(MyAlloc))` (a type of your own may also implement this
/// trait with `unsafe impl TraceGate for MyAlloc {}`).
///
/// # Safety
/// Each method either does what the [`GlobalAlloc`] method of its name
/// does with the same arguments, or calls `traced` once with them, having
/// changed nothing its caller can observe, and returns what it returns.
/// It calls `traced` whenever the call happens after a [`start`] that no
/// [`stop`] has followed (a call racing with either may go either way).
pub unsafe trait TraceGate: GlobalAlloc {
    /// `alloc` (`alloc_zeroed` if `zeroed`), or `traced()`.
    ///
    /// # Safety
    /// As for [`GlobalAlloc::alloc`].
    #[inline(always)]
    unsafe fn alloc_or(&self, l: Layout, zeroed: bool, traced: impl FnOnce(Layout, bool) -> *mut u8) -> *mut u8 {
        if is_tracing() {
            return traced(l, zeroed);
        }
        // SAFETY: the caller's contract.
        unsafe {
            if zeroed {
                self.alloc_zeroed(l)
            } else {
                self.alloc(l)
            }
        }
    }

    /// `dealloc`, or `traced()`.
    ///
    /// # Safety
    /// As for [`GlobalAlloc::dealloc`].
    #[inline(always)]
    unsafe fn dealloc_or(&self, p: *mut u8, l: Layout, traced: impl FnOnce(*mut u8, Layout)) {
        if is_tracing() {
            return traced(p, l);
        }
        // SAFETY: the caller's contract.
        unsafe { self.dealloc(p, l) }
    }

    /// `realloc`, or `traced()`.
    ///
    /// # Safety
    /// As for [`GlobalAlloc::realloc`].
    #[inline(always)]
    unsafe fn realloc_or(
        &self,
        p: *mut u8,
        l: Layout,
        n: usize,
        traced: impl FnOnce(*mut u8, Layout, usize) -> *mut u8,
    ) -> *mut u8 {
        if is_tracing() {
            return traced(p, l, n);
        }
        // SAFETY: the caller's contract.
        unsafe { self.realloc(p, l, n) }
    }
}

/// Any [`GlobalAlloc`], for [`Traced`]: its calls test the tracing flag
/// ([`TraceGate`]'s provided methods). For an allocator of another crate,
/// which cannot implement `TraceGate` itself:
///
/// ```no_run
/// use pymalloc::trace::{Flagged, Traced};
/// #[global_allocator]
/// static ALLOC: Traced<Flagged<std::alloc::System>> = Traced(Flagged(std::alloc::System));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Flagged<A>(pub A);

// SAFETY: every call goes to the wrapped allocator unchanged.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Flagged<A> {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the wrapped allocator's.
        unsafe { self.0.alloc(l) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as in alloc.
        unsafe { self.0.alloc_zeroed(l) }
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as in alloc.
        unsafe { self.0.dealloc(p, l) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: as in alloc.
        unsafe { self.0.realloc(p, l, n) }
    }
}

// SAFETY: the provided methods test the flag first.
unsafe impl<A: GlobalAlloc> TraceGate for Flagged<A> {}
// SAFETY: as above.
unsafe impl TraceGate for std::alloc::System {}
// SAFETY: as above.
unsafe impl TraceGate for crate::LockedHeap {}

/// `TraceGate` for one of the Rust allocators of the thread heaps, by
/// `global.rs`'s gated paths (`$all`: every size from the heaps, or the
/// pool sizes only).
macro_rules! gated_front {
    ($front:ty, $all:literal) => {
        // SAFETY: the gated paths (global.rs) do what the allocator's
        // methods do, or call `traced` once having changed nothing
        // observable; the gate they read is shut from before the tracing
        // flag goes up until after it comes down (`start`, `stop`), and
        // shut they reach `traced` for every call.
        unsafe impl TraceGate for $front {
            #[inline(always)]
            unsafe fn alloc_or(
                &self,
                l: Layout,
                zeroed: bool,
                traced: impl FnOnce(Layout, bool) -> *mut u8,
            ) -> *mut u8 {
                crate::global::alloc_gated::<$all>(l, zeroed, traced)
            }
            #[inline(always)]
            unsafe fn dealloc_or(&self, p: *mut u8, l: Layout, traced: impl FnOnce(*mut u8, Layout)) {
                // SAFETY: the caller's contract; traced frees p as dealloc
                // would.
                unsafe { crate::global::dealloc_gated::<$all>(p, l, traced) }
            }
            #[inline(always)]
            unsafe fn realloc_or(
                &self,
                p: *mut u8,
                l: Layout,
                n: usize,
                traced: impl FnOnce(*mut u8, Layout, usize) -> *mut u8,
            ) -> *mut u8 {
                // SAFETY: as above.
                unsafe { crate::global::realloc_gated(p, l, n, traced) }
            }
        }
    };
}

gated_front!(crate::PyMalloc, true);
gated_front!(crate::PyMallocSmall, false);

// SAFETY: every call goes to the wrapped allocator unchanged (through
// TraceGate, whose contract is that); the tracer only reads the addresses
// and sizes.
unsafe impl<A: TraceGate> GlobalAlloc for Traced<A> {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // A block allocated while tracing starts may go untraced, as one
        // allocated just before.
        // SAFETY: the caller's contract is the wrapped allocator's.
        unsafe { self.0.alloc_or(l, false, move |l, z| self.alloc_traced(l, z)) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as in alloc.
        unsafe { self.0.alloc_or(l, true, move |l, z| self.alloc_traced(l, z)) }
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as in alloc.
        unsafe { self.0.dealloc_or(p, l, move |p, l| self.dealloc_traced(p, l)) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        // SAFETY: as in alloc.
        unsafe { self.0.realloc_or(p, l, n, move |p, l, n| self.realloc_traced(p, l, n)) }
    }
}

// ---- the allocator domains ----

/// The allocator a domain's hook wraps. Invariant: written only while the
/// domain is not in use ([`hook_domains`]' contract).
struct HookState(UnsafeCell<(Source, MemAllocatorEx)>);
// SAFETY: see the invariant.
unsafe impl Sync for HookState {}

static HOOKS: [HookState; 3] = [
    HookState(UnsafeCell::new((Source::Raw, crate::raw::ALLOCATOR))),
    HookState(UnsafeCell::new((Source::Mem, crate::raw::ALLOCATOR))),
    HookState(UnsafeCell::new((Source::Obj, crate::raw::ALLOCATOR))),
];

/// # Safety
/// `ctx` is one of the `HOOKS` states.
unsafe fn state<'a>(ctx: *mut c_void) -> &'a (Source, MemAllocatorEx) {
    // SAFETY: the contract; not written while the hook is in use.
    unsafe { &*ctx.cast::<(Source, MemAllocatorEx)>() }
}

// The hooks call the allocator they wrap with the guard up, so that what
// it calls in turn (pymalloc's fallback to RAW for large blocks) is not
// traced a second time, as CPython's tracemalloc does with its reentrancy
// flag.

unsafe extern "C" fn hook_malloc(ctx: *mut c_void, n: usize) -> *mut c_void {
    let marker = 0u8;
    // SAFETY: installed with a HOOKS state as its context.
    let (source, inner) = unsafe { state(ctx) };
    let entered = if is_tracing() && trace_sample::take(n) { enter() } else { None };
    // SAFETY: the wrapped allocator's contract is the domain's.
    let p = unsafe { (inner.malloc)(inner.ctx, n) };
    if entered.is_some() && !p.is_null() {
        add(*source, DEFAULT_DOMAIN, p as usize, n, Mark::here(&marker));
    }
    p
}

unsafe extern "C" fn hook_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    let marker = 0u8;
    // SAFETY: as in hook_malloc.
    let (source, inner) = unsafe { state(ctx) };
    let entered = if is_tracing() && trace_sample::take(nelem.saturating_mul(elsize)) { enter() } else { None };
    // SAFETY: as in hook_malloc.
    let p = unsafe { (inner.calloc)(inner.ctx, nelem, elsize) };
    if entered.is_some() && !p.is_null() {
        add(*source, DEFAULT_DOMAIN, p as usize, nelem.saturating_mul(elsize), Mark::here(&marker));
    }
    p
}

unsafe extern "C" fn hook_realloc(ctx: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    let marker = 0u8;
    // SAFETY: as in hook_malloc.
    let (source, inner) = unsafe { state(ctx) };
    let Some(_entered) = (if is_tracing() { enter() } else { None }) else {
        // SAFETY: as in hook_malloc.
        return unsafe { (inner.realloc)(inner.ctx, p, n) };
    };
    // As in hook_free.
    let gone = if p.is_null() || !may_be_traced(p as usize) { None } else { table::remove(DEFAULT_DOMAIN, p as usize) };
    // SAFETY: as in hook_malloc.
    let q = leaving(gone, || unsafe { (inner.realloc)(inner.ctx, p, n) });
    if let Some(t) = gone {
        // Failed: p lives on, with its trace.
        if q.is_null() && table::insert(t).is_ok() {
            return q;
        }
        account_free(&t);
    }
    if !q.is_null() && trace_sample::take(n) {
        add(*source, DEFAULT_DOMAIN, q as usize, n, Mark::here(&marker));
    }
    q
}

unsafe extern "C" fn hook_free(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: as in hook_malloc.
    let (_, inner) = unsafe { state(ctx) };
    let Some(_entered) = (if is_tracing() && !p.is_null() && may_be_traced(p as usize) { enter() } else { None })
    else {
        // SAFETY: as in hook_malloc.
        return unsafe { (inner.free)(inner.ctx, p) };
    };
    // The trace goes before the block (once freed, the address may be
    // another thread's new block), and stays at hand while it is freed, so
    // that a debug hook's report on it can print its traceback.
    let gone = remove(DEFAULT_DOMAIN, p as usize);
    // SAFETY: as in hook_malloc.
    leaving(gone, || unsafe { (inner.free)(inner.ctx, p) });
}

/// Runs `f` (the wrapped allocator's free or realloc of a block) with the
/// block's trace `gone`, already out of the table, at hand for
/// [`traceback`].
fn leaving<R>(gone: Option<Trace>, f: impl FnOnce() -> R) -> R {
    if gone.is_none() {
        return f();
    }
    set_leaving(gone);
    let r = f();
    set_leaving(None);
    r
}

fn hook_allocator(d: Domain) -> MemAllocatorEx {
    MemAllocatorEx {
        ctx: HOOKS[d as usize].0.get().cast::<c_void>(),
        malloc: hook_malloc,
        calloc: hook_calloc,
        realloc: hook_realloc,
        free: hook_free,
    }
}

/// True if `d`'s allocator is the tracer's hook.
pub fn is_hooked(d: Domain) -> bool {
    ptr::eq(d.allocator().ctx, hook_allocator(d).ctx)
}

/// Prints the allocation traceback of the traced block at `p` to file
/// descriptor `fd` as CPython's `_PyMem_DumpTraceback` does after a debug
/// hook's report: `Memory block allocated at (most recent call first):`
/// and a `  File "...", line N` line per frame; the line asking to enable
/// tracemalloc when not tracing; nothing for a block without a trace.
/// (Resolving the symbols allocates, unlike the rest of the report.)
pub fn dump_traceback(fd: i32, p: *const u8) {
    let mut text = String::new();
    untraced(|| {
        if !is_tracing() {
            text.push_str("Enable tracemalloc to get the memory block allocation traceback\n\n");
        } else if let Some(frames) = traceback(DEFAULT_DOMAIN, p as usize) {
            text.push_str("Memory block allocated at (most recent call first):\n");
            for f in frames.iter().rev() {
                text.push_str(&format!("  File \"{}\", line {}\n", f.filename, f.lineno));
            }
            text.push('\n');
        }
    });
    let mut b = text.as_bytes();
    while !b.is_empty() {
        // SAFETY: writing our own bytes to a descriptor the caller names.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            break;
        }
        b = &b[n as usize..];
    }
}

/// Wraps each domain's allocator in the tracer's hook (those hooked
/// already stay as they are). The hooks trace while tracing is on. The
/// debug hooks' reports then print the block's allocation traceback
/// ([`dump_traceback`]) unless an embedder installed its own printer.
///
/// # Safety
/// As for [`Domain::set_allocator`]: no thread uses the domains meanwhile.
pub unsafe fn hook_domains() {
    crate::debug::set_traceback_dumper_if_unset(dump_traceback);
    for d in Domain::ALL {
        if is_hooked(d) {
            continue;
        }
        let current = d.allocator();
        // SAFETY: the domain is not in use (our contract), nor its state.
        unsafe {
            (*HOOKS[d as usize].0.get()).1 = current;
            d.set_allocator(hook_allocator(d));
        }
    }
}

/// Puts back the allocators [`hook_domains`] wrapped, where the hook is
/// still the domain's allocator.
///
/// # Safety
/// As for [`hook_domains`].
pub unsafe fn unhook_domains() {
    crate::debug::unset_traceback_dumper(dump_traceback);
    for d in Domain::ALL {
        if is_hooked(d) {
            // SAFETY: as in hook_domains.
            unsafe { d.set_allocator((*HOOKS[d as usize].0.get()).1) };
        }
    }
}
