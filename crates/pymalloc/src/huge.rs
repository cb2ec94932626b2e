//! Huge blocks (above [`LARGE_MAX`]): a run of 1 MiB slots of the segment
//! region each, its header at the start of the first slot. Any thread
//! allocates and frees them directly; they belong to no heap.
//!
//! A freed huge block's slots keep their pages for the next huge block
//! ("kept" slots of the region's slot table), as jemalloc's decay and
//! glibc's dynamic mmap threshold do: a program that frees a buffer of
//! megabytes and allocates another at once (a read loop, a resized image,
//! mimalloc-bench's malloc-large) reuses pages already faulted in instead
//! of faulting every one of them in again. What is kept is bounded twice:
//!
//! * by size: at most [`MIN_KEPT`] or as many bytes as live huge blocks
//!   hold, whichever is more (so huge blocks never hold more than twice
//!   their live bytes); a free beyond that gives its pages back at once.
//!   Measured on malloc-large (20 live blocks of 5 to 25 MiB, replaced at
//!   random): a bound of a quarter of the live bytes still faulted in 1.5
//!   million pages (5.6 s), half of them 0.4 million (2.7 s), the live
//!   bytes 0.14 million (1.9 s; tcmalloc 0.18 million, 2.0 s), for a peak
//!   of 543 MiB against glibc's 534;
//! * by time, under the decay policy: a sweep at most once per period gives
//!   back what was kept at the previous sweep and not reused since, so
//!   kept slots go back between one and two periods after they were freed.
//!   Huge calls sweep when due, and so does the background decay thread
//!   (`crate::background`) while anything is kept.
//!
//! A block whose run holds fewer kept slots than it needs takes the pages
//! of kept slots elsewhere, which the region moves into its run without a
//! fault (`Region::move_kept_into`): kept pages serve any later block, not
//! only one that fits where they lie.
//!
//! A zeroed huge block (calloc) never reuses kept bytes: kept slots in its
//! run are decommitted first and fault in as zeroes.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::block_map::{NOT_THREAD_TAG, NO_CLASS};
use crate::os;
use crate::region::SEGMENTS;
use crate::segment::{Segment, HUGE, HUGE_OFFSET, LARGE_MAX, SEGMENT_SIZE};

/// Kept huge bytes always tolerated (64 MiB: glibc's largest trim threshold).
const MIN_KEPT: usize = 64 << 20;

/// How long freed huge slots keep their pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Not at all: they go back to the OS when freed.
    Nothing,
    /// Until a sweep of the decay policy with this period (milliseconds).
    Decay(u32),
    /// Until the size bound or a purge gives them back.
    Bounded,
}

/// The policy, encoded: `KEEP_NOTHING`, `KEEP_BOUNDED`, or a decay period.
static KEEP: AtomicU32 = AtomicU32::new(1000);
const KEEP_NOTHING: u32 = 0;
const KEEP_BOUNDED: u32 = u32::MAX;
/// The clock ([`os::now_ms`]) at or after which the next sweep is due.
static NEXT_SWEEP: AtomicU64 = AtomicU64::new(0);

static HUGE_BLOCKS: AtomicUsize = AtomicUsize::new(0);
static HUGE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Sets how long freed huge slots keep their pages (the process's purge
/// policy, see `config::set_purge_policy`). Keeping nothing gives back
/// what is kept now.
pub(crate) fn set_keep(k: Keep) {
    let code = match k {
        Keep::Nothing => KEEP_NOTHING,
        Keep::Decay(ms) => ms.clamp(1, KEEP_BOUNDED - 1),
        Keep::Bounded => KEEP_BOUNDED,
    };
    KEEP.store(code, Ordering::Relaxed);
    if k == Keep::Nothing {
        release_kept();
    }
}

/// The process's huge blocks: `(blocks, bytes, kept_bytes)` (whole slots).
pub(crate) fn huge_figures() -> (usize, usize, usize) {
    (HUGE_BLOCKS.load(Ordering::Relaxed), HUGE_BYTES.load(Ordering::Relaxed), SEGMENTS.kept_slots() * SEGMENT_SIZE)
}

/// A huge block of `n` bytes aligned to `align`, zeroed if `zero`. Null if
/// the region has no room or `align` exceeds half a slot.
pub(crate) fn alloc_huge(n: usize, align: usize, zero: bool) -> *mut u8 {
    let off = align.max(HUGE_OFFSET);
    if off > SEGMENT_SIZE / 2 || n > isize::MAX as usize - SEGMENT_SIZE {
        return ptr::null_mut();
    }
    let slots = (off + n).div_ceil(SEGMENT_SIZE);
    sweep_if_due();
    let (seg, kept_in_run) = if zero { (SEGMENTS.alloc(slots), 0) } else { SEGMENTS.alloc_reusing_counted(slots) };
    let seg = seg.cast::<Segment>();
    if seg.is_null() {
        return ptr::null_mut();
    }
    // Slots taken fresh are memory the region grows into while slots kept
    // elsewhere wait for a reuse that is not coming: as many go back (as
    // for each arena taken, `region::alloc_arena`), of those kept beyond
    // the bound on huge blocks' (which only emptied span segments exceed:
    // `spans.rs`, `release_segment`). Without this, a program that freed
    // many medium blocks and then made a huge one would hold both; with
    // every kept slot traded, mimalloc-bench's malloc-large, which keeps
    // within the bound, ran 3.2 s against 1.9 (docs/benchmarks.md).
    let fresh = slots - kept_in_run;
    let over = SEGMENTS.kept_slots().saturating_sub(max_kept_slots());
    if fresh > 0 && over > 0 {
        SEGMENTS.release_kept_slots(fresh.min(over));
    }
    // SAFETY: a fresh run of slots, ours: its header is ours to write.
    unsafe {
        (*seg).kind = HUGE;
        (*seg).slots = slots;
    }
    bump(&HUGE_BLOCKS, 1);
    bump(&HUGE_BYTES, (slots * SEGMENT_SIZE) as isize);
    let p = seg.cast::<u8>().wrapping_add(off);
    // The block's unit may have held a medium span before: its front-cache
    // class must say "none" before the block is handed out. Its slot's
    // owner (the first slot's: the block starts there) is `NOT_THREAD_TAG`,
    // which no thread's heap pointer equals, null included: a huge block
    // belongs to no heap, and a live block's owner is never null, so a
    // thread without a heap finds it no more its own than one with a heap
    // (`thread::mine`).
    if let Some(at) = SEGMENTS.offset(p) {
        // SAFETY: p's unit lies in the region and the run is ours; so is
        // its first slot.
        unsafe {
            SEGMENTS.map().set_classes(at, 1, NO_CLASS);
            SEGMENTS.set_owner(seg.cast(), NOT_THREAD_TAG);
        }
    }
    p
}

/// Frees a huge block (any thread). Returns true if its slots kept their
/// pages (the caller may wake the background decay thread).
///
/// # Safety
/// `seg` is the segment of a live huge block, not used again.
pub(crate) unsafe fn free_huge(seg: *mut Segment) -> bool {
    // SAFETY: the contract: the run is ours to give back.
    let slots = unsafe { (*seg).slots };
    bump(&HUGE_BLOCKS, -1);
    bump(&HUGE_BYTES, -((slots * SEGMENT_SIZE) as isize));
    // SAFETY: as above.
    let kept = unsafe { give_back(seg.cast(), slots) };
    sweep_if_due();
    kept > 0
}

/// Resizes a huge block in place to hold `n` bytes: grows into free slots
/// after it, shrinks by giving back whole slots. False, with nothing
/// changed, when it cannot or `n` is not huge.
///
/// # Safety
/// `p` is a live huge block of segment `seg`; the caller owns the block.
pub(crate) unsafe fn resize_huge(seg: *mut Segment, p: *mut u8, n: usize) -> bool {
    if n <= LARGE_MAX || n > isize::MAX as usize - SEGMENT_SIZE {
        return false;
    }
    let off = p.addr() - seg.addr();
    let want = (off + n).div_ceil(SEGMENT_SIZE);
    // SAFETY: the contract: the header is live and the run is the caller's.
    let have = unsafe { (*seg).slots };
    // SAFETY: as above.
    unsafe {
        if want > have {
            if !SEGMENTS.grow(seg.cast(), have, want - have) {
                return false;
            }
        } else if want < have {
            give_back(seg.cast::<u8>().add(want * SEGMENT_SIZE), have - want);
        }
        (*seg).slots = want;
    }
    bump(&HUGE_BYTES, (want as isize - have as isize) * SEGMENT_SIZE as isize);
    true
}

/// Moves a huge block that cannot grow in place to a run of slots that
/// holds `n` bytes elsewhere: its pages move, its bytes are not copied (as
/// glibc's `mremap` of its mapped chunks). Returns the block's new address,
/// or null (nothing changed) when `n` is not a larger huge size, the
/// region has no such run, or pages cannot move: the caller copies.
///
/// # Safety
/// `p` is a live huge block of segment `seg`; the caller owns the block.
pub(crate) unsafe fn relocate_huge(seg: *mut Segment, p: *mut u8, n: usize) -> *mut u8 {
    if n <= LARGE_MAX || n > isize::MAX as usize - SEGMENT_SIZE {
        return ptr::null_mut();
    }
    let off = p.addr() - seg.addr();
    let want = (off + n).div_ceil(SEGMENT_SIZE);
    // SAFETY: the contract: the header is live and the run is the caller's.
    let have = unsafe { (*seg).slots };
    // SAFETY: as above: nobody else touches the block's bytes meanwhile.
    let new = unsafe { SEGMENTS.relocate(seg.cast(), have, want) }.cast::<Segment>();
    if new.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: the header moved with the run's first slot; the run is ours.
    unsafe { (*new).slots = want };
    bump(&HUGE_BYTES, ((want - have) * SEGMENT_SIZE) as isize);
    let q = new.cast::<u8>().wrapping_add(off);
    if let Some(at) = SEGMENTS.offset(q) {
        // SAFETY: as in alloc_huge: the block's unit and first slot are ours.
        unsafe {
            SEGMENTS.map().set_classes(at, 1, NO_CLASS);
            SEGMENTS.set_owner(new.cast(), NOT_THREAD_TAG);
        }
    }
    q
}

/// Gives `n` slots from `p` back, keeping their pages as the policy allows.
/// Returns the slots kept.
///
/// # Safety
/// The slots are a run of a live huge block that nothing uses any more.
unsafe fn give_back(p: *mut u8, n: usize) -> usize {
    // SAFETY: the contract.
    unsafe { SEGMENTS.free_keeping(p, n, max_kept_slots()) }
}

/// How many slots of the segment region a freed huge block may leave kept
/// (counting every kept slot, emptied span segments' too, which are kept
/// beyond it: `spans.rs`, `release_segment`): none if the policy keeps
/// nothing, else [`MIN_KEPT`] or the live huge bytes, whichever is more.
pub(crate) fn max_kept_slots() -> usize {
    match KEEP.load(Ordering::Relaxed) {
        KEEP_NOTHING => 0,
        _ => MIN_KEPT.max(HUGE_BYTES.load(Ordering::Relaxed)) / SEGMENT_SIZE,
    }
}

/// Under the decay policy, sweeps the kept slots if a sweep is due; returns
/// the bytes given back.
pub(crate) fn sweep_if_due() -> usize {
    if SEGMENTS.kept_slots() > 0 {
        decay_at(os::now_ms())
    } else {
        0
    }
}

/// Sweeps the kept slots if the policy decays and a sweep is due at
/// `now_ms`; returns the bytes given back.
pub(crate) fn decay_at(now_ms: u64) -> usize {
    let Some(ms) = decay_period() else { return 0 };
    let due = NEXT_SWEEP.load(Ordering::Relaxed);
    if now_ms < due
        || NEXT_SWEEP.compare_exchange(due, now_ms + u64::from(ms), Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        return 0;
    }
    SEGMENTS.sweep_kept(false) * SEGMENT_SIZE
}

/// One round of the background decay thread: sweeps if due; returns the
/// decay period while slots stay kept.
pub(crate) fn decay_round(now_ms: u64) -> Option<u32> {
    decay_at(now_ms);
    decay_period().filter(|_| SEGMENTS.kept_slots() > 0)
}

/// The decay period, if the policy keeps slots until a decay sweep.
fn decay_period() -> Option<u32> {
    match KEEP.load(Ordering::Relaxed) {
        KEEP_NOTHING | KEEP_BOUNDED => None,
        ms => Some(ms),
    }
}

/// Gives back every kept slot now; returns the bytes.
pub(crate) fn release_kept() -> usize {
    SEGMENTS.sweep_kept(true) * SEGMENT_SIZE
}

fn bump(c: &AtomicUsize, by: isize) {
    if by >= 0 {
        c.fetch_add(by as usize, Ordering::Relaxed);
    } else {
        c.fetch_sub(by.unsigned_abs(), Ordering::Relaxed);
    }
}
