//! The traces of blocks in the reserved regions, kept at a fixed distance
//! from the blocks: each region ([`crate::region`]) has a shadow, one
//! 8-byte word per [`ALIGNMENT`] bytes of the region, and the trace of the
//! block at region offset `o` is the word `o / ALIGNMENT` of its shadow.
//!
//! Why: in the hash table ([`crate::trace_table`]) a trace sits where its
//! hash says, on a line of its own, in a table larger than the heap it
//! describes (32-byte slots, at most half full). Its first probe missed the
//! cache on most traced calls: two thirds of `record_alloc`'s samples on
//! serde_json. A shadow word needs no probe and no lock, and the words of
//! neighbouring blocks, which are allocated and freed together, share
//! lines: a 64-byte line holds the traces of 128 bytes of blocks.
//!
//! A word is 0 (no trace) or a trace as [`crate::trace_table`] encodes
//! it; this module knows only where words are.
//!
//! Which traces live here is decided by the address and domain alone
//! ([`word`] for writes, [`word_if_mapped`] for reads): the default domain,
//! an address aligned to [`ALIGNMENT`] inside a region whose shadow is
//! mapped. A shadow is mapped by the first trace of its region and stays;
//! if it cannot be mapped it never is, and that region's traces go to the
//! hash table as before. So a reader never misses a trace written
//! elsewhere.
//!
//! Concurrency: a word is written by the allocation and by the free of its
//! block, which the allocator orders (a block is freed after its allocation
//! returned, and the tracer forgets it before the block goes back, so a
//! later allocation of the address comes after), so relaxed loads and
//! stores suffice. A snapshot reading every word sees each one before or
//! after a concurrent call, never torn. No lock: nothing to take across
//! `fork`.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::geometry::{ALIGNMENT, ALIGNMENT_SHIFT};
use crate::os;
use crate::region::{self, ARENAS, REGION_SIZE, SEGMENTS};

/// Bytes of region per bit of [`Shadow::touched`].
const TOUCH_SHIFT: u32 = 20;
const TOUCH_WORDS: usize = (REGION_SIZE >> TOUCH_SHIFT) / 64;

/// A region's shadow. Invariant: `base` is 0 (not mapped yet), `FAILED`
/// (never will be), or the start of a mapping of `len` bytes, one word per
/// granule of the region; it changes only from 0, once. A bit of `touched`
/// is set before any word of its megabyte of region is written, and only
/// [`clear`] lowers it.
pub(crate) struct Shadow {
    base: AtomicUsize,
    len: AtomicUsize,
    touched: [AtomicU64; TOUCH_WORDS],
}

const FAILED: usize = 1;

impl Shadow {
    const fn new() -> Shadow {
        Shadow {
            base: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            touched: [const { AtomicU64::new(0) }; TOUCH_WORDS],
        }
    }

    /// The mapping's start, if mapped.
    #[inline(always)]
    fn mapped(&self) -> Option<usize> {
        let b = self.base.load(Ordering::Acquire);
        (b > FAILED).then_some(b)
    }

    /// Maps the shadow of a region of `region_size` bytes; its start, or
    /// None if it cannot be mapped (then never).
    #[cold]
    fn map(&self, region_size: usize) -> Option<usize> {
        match self.base.load(Ordering::Acquire) {
            0 => {}
            FAILED => return None,
            b => return Some(b),
        }
        let len = (region_size >> ALIGNMENT_SHIFT) * 8;
        let p = os::map_sparse(len);
        let mine = if p.is_null() { FAILED } else { p.expose_provenance() };
        if !p.is_null() {
            self.len.store(len, Ordering::Relaxed);
        }
        // No lock (nothing to hold across fork): threads that race each map
        // one, the first to publish wins and the others unmap theirs.
        match self.base.compare_exchange(0, mine, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => (mine != FAILED).then_some(mine),
            Err(winner) => {
                if !p.is_null() {
                    // SAFETY: our own mapping, never published.
                    unsafe { os::unmap(p, len) };
                }
                (winner != FAILED).then_some(winner)
            }
        }
    }

    /// The word of region offset `off` in the mapping at `base`.
    #[inline(always)]
    fn at(base: usize, off: usize) -> &'static AtomicU64 {
        // SAFETY: off < the region's size, so the word lies in the mapping
        // (one word per granule of it), which is never unmapped once
        // published; an AtomicU64 is valid for any bits, zero included.
        unsafe { &*core::ptr::with_exposed_provenance::<AtomicU64>(base + (off >> ALIGNMENT_SHIFT) * 8) }
    }

    /// Notes that words of the megabyte holding `off` are written.
    #[inline(always)]
    fn touch(&self, off: usize) {
        let bit = off >> TOUCH_SHIFT;
        let w = &self.touched[bit / 64];
        let m = 1u64 << (bit % 64);
        if w.load(Ordering::Relaxed) & m == 0 {
            w.fetch_or(m, Ordering::Relaxed);
        }
    }
}

static ARENA_SHADOW: Shadow = Shadow::new();
static SEGMENT_SHADOW: Shadow = Shadow::new();

/// The region holding `addr` (a granule start): its shadow, its base and
/// size, and the offset of `addr`.
#[inline(always)]
fn locate(addr: usize) -> Option<(&'static Shadow, usize)> {
    if addr & (ALIGNMENT - 1) != 0 {
        return None;
    }
    let p = core::ptr::without_provenance::<u8>(addr);
    // The regions' maps by their statics (`ARENAS` and `SEGMENTS` reach
    // them through a reference: one load more per traced call).
    if let Some(off) = region::arena_offset(p) {
        return Some((&ARENA_SHADOW, off));
    }
    region::segment_offset(p).map(|off| (&SEGMENT_SHADOW, off))
}

fn region_size(s: &Shadow) -> usize {
    if core::ptr::eq(s, &ARENA_SHADOW) {
        ARENAS.bounds().1
    } else {
        SEGMENTS.bounds().1
    }
}

/// The word for a new trace of the default domain at `addr`, mapping the
/// shadow if needed; None if `addr` has no shadow.
#[inline]
pub(crate) fn word(addr: usize) -> Option<&'static AtomicU64> {
    let (s, off) = locate(addr)?;
    let base = match s.mapped() {
        Some(b) => b,
        None => s.map(region_size(s))?,
    };
    s.touch(off);
    Some(Shadow::at(base, off))
}

/// The word of a trace of the default domain at `addr`, if `addr` has a
/// mapped shadow (else the trace, if any, is in the hash table).
#[inline]
pub(crate) fn word_if_mapped(addr: usize) -> Option<&'static AtomicU64> {
    let (s, off) = locate(addr)?;
    Some(Shadow::at(s.mapped()?, off))
}

/// Calls `f` with the address and word of every trace in the shadows.
pub(crate) fn for_each(mut f: impl FnMut(usize, u64)) {
    for (s, (region_base, region_size)) in [(&ARENA_SHADOW, ARENAS.bounds()), (&SEGMENT_SHADOW, SEGMENTS.bounds())] {
        let Some(base) = s.mapped() else { continue };
        for_each_touched(s, region_size, |off| {
            for o in (off..off + (1 << TOUCH_SHIFT)).step_by(ALIGNMENT) {
                let w = Shadow::at(base, o).load(Ordering::Relaxed);
                if w != 0 {
                    f(region_base + o, w);
                }
            }
        });
    }
}

/// Calls `f` with the region offset of every touched megabyte below
/// `region_size`.
fn for_each_touched(s: &Shadow, region_size: usize, mut f: impl FnMut(usize)) {
    for (i, w) in s.touched.iter().enumerate() {
        let mut bits = w.load(Ordering::Relaxed);
        while bits != 0 {
            let off = (i * 64 + bits.trailing_zeros() as usize) << TOUCH_SHIFT;
            bits &= bits - 1;
            if off < region_size {
                f(off);
            }
        }
    }
}

/// Forgets every trace in the shadows: their written pages go back to the
/// OS (they read as zeroes again).
pub(crate) fn clear() {
    for s in [&ARENA_SHADOW, &SEGMENT_SHADOW] {
        let Some(base) = s.mapped() else { continue };
        let len = s.len.load(Ordering::Relaxed);
        for (i, w) in s.touched.iter().enumerate() {
            let bits = w.swap(0, Ordering::Relaxed);
            for b in 0..64 {
                if bits & (1 << b) == 0 {
                    continue;
                }
                let start = (((i * 64 + b) << TOUCH_SHIFT) >> ALIGNMENT_SHIFT) * 8;
                let n = ((1usize << TOUCH_SHIFT) >> ALIGNMENT_SHIFT) * 8;
                if start < len {
                    // SAFETY: a page-aligned range (a multiple of 64 KiB)
                    // of our own mapping; its words are traces being
                    // forgotten, which read back as zeroes.
                    unsafe { os::discard(core::ptr::with_exposed_provenance_mut(base + start), n.min(len - start)) };
                }
            }
        }
    }
}
