//! Segments: the 1 MiB slots of the segment region ([`crate::region::SEGMENTS`])
//! that blocks above 512 bytes live in, and the header at the start of each.
//!
//! A *span segment* is 64 units of 16 KiB. Unit 0 holds the header; every
//! other unit is free or part of one *span*: a run of units serving either
//! one medium size class (a free list of blocks, carved lazily as CPython's
//! pools carve theirs) or one large block. The header keeps, per unit, how
//! far back its span's head unit is (`back`), and per head unit the span's
//! descriptor (`spans`), so the span of any block is two loads from the
//! block's address: the segment is the address rounded down to 1 MiB.
//!
//! A *huge segment* is a run of slots holding one block, for requests that
//! do not fit in a span segment; its header says how long the run is.

use core::ptr;

use crate::region::SEGMENT_BITS;

/// Bytes of a segment (one slot of the segment region).
pub(crate) const SEGMENT_SIZE: usize = 1 << SEGMENT_BITS;
/// Bytes of a unit.
pub(crate) const UNIT_BITS: u32 = 14;
pub(crate) const UNIT: usize = 1 << UNIT_BITS;
/// Units in a span segment (unit 0 is the header's).
pub(crate) const UNITS: usize = SEGMENT_SIZE / UNIT;
/// Every unit but the header's.
pub(crate) const ALL_UNITS: u64 = !1;
/// The largest block a span segment serves: one span of every unit.
pub(crate) const LARGE_MAX: usize = (UNITS - 1) * UNIT;
/// Offset of a huge block in its run when it needs no more alignment than
/// this: past the header.
pub(crate) const HUGE_OFFSET: usize = 64;

/// `Segment::kind` of a span segment.
pub(crate) const SPANS: u8 = 1;
/// `Segment::kind` of a huge segment.
pub(crate) const HUGE: u8 = 2;

/// `Span::class` of a span holding one large block.
pub(crate) const LARGE: u8 = 0xff;
/// `Span::class` of a head unit not in use.
pub(crate) const NOT_A_SPAN: u8 = 0xfe;

/// The descriptor of a span, at its head unit's index in the header.
///
/// Invariants, for a live medium span: `virgin` blocks have been carved
/// (`virgin <= capacity`); of them `used` are handed out and the others are
/// on `free` (linked through their first words); `listed` says the span is
/// on its heap's list for the class (`next`, `prev`), which it is exactly
/// when `used < capacity`; blocks overlapping `pages_out` are free and on
/// no list (`span_pages.rs`). For a large span `size` is the block's usable
/// bytes (`units * UNIT`) and the span is never listed.
#[repr(C)]
pub(crate) struct Span {
    pub(crate) free: *mut u8,
    pub(crate) next: *mut Span,
    pub(crate) prev: *mut Span,
    pub(crate) size: u32,
    pub(crate) used: u16,
    pub(crate) capacity: u16,
    pub(crate) virgin: u16,
    pub(crate) class: u8,
    pub(crate) units: u8,
    pub(crate) listed: bool,
    /// Pages of a medium span given back while it lives (see
    /// `span_pages.rs`).
    pub(crate) pages_out: u64,
}

/// The header of a segment, at its base.
///
/// Invariants: `kind` is written before the segment's first block is handed
/// out and never changes while it lives (any thread may read it); `slots`
/// is a huge segment's run length, written by whoever owns its block. For span segments, written by
/// the owning heap under its bookkeeping lock: a unit is in `free` exactly
/// when it is in no span; `dirty` and `zero` are disjoint, `dirty` is within
/// `free` (a free unit whose pages may be resident), and a unit in `zero`
/// reads as zeroes; `back[u]` is `u - head` for every unit of a span, and
/// `spans[head]` its descriptor (`class == NOT_A_SPAN` for other units);
/// `stale` holds the units that were dirty at the last decay sweep and
/// `stale_free` says the segment was wholly free then;
/// `next`/`prev` link the heap's span segments.
#[repr(C)]
pub(crate) struct Segment {
    pub(crate) kind: u8,
    pub(crate) stale_free: bool,
    pub(crate) slots: usize,
    pub(crate) free: u64,
    pub(crate) dirty: u64,
    pub(crate) zero: u64,
    pub(crate) stale: u64,
    pub(crate) next: *mut Segment,
    pub(crate) prev: *mut Segment,
    pub(crate) back: [u8; UNITS],
    pub(crate) spans: [Span; UNITS],
}

const _: () = assert!(core::mem::size_of::<Segment>() <= UNIT);
const _: () = assert!(core::mem::offset_of!(Segment, free) <= HUGE_OFFSET);

/// The segment holding block `p` (its address rounded down to 1 MiB).
#[inline(always)]
pub(crate) fn segment_of(p: *const u8) -> *mut Segment {
    p.cast_mut().map_addr(|a| a & !(SEGMENT_SIZE - 1)).cast()
}

/// The span of a block of a span segment, and its head unit.
///
/// # Safety
/// `p` is a live block of the span segment `seg`.
#[inline(always)]
pub(crate) unsafe fn span_of(seg: *mut Segment, p: *const u8) -> (*mut Span, usize) {
    let unit = (p.addr() - seg.addr()) >> UNIT_BITS;
    // SAFETY: the header is live (the segment is), and a live block's unit
    // lies in a span whose head `back` names.
    unsafe {
        let head = unit - usize::from(*(*seg).back.get_unchecked(unit));
        ((&raw mut (*seg).spans).cast::<Span>().add(head), head)
    }
}

/// The first byte of the unit `head` of `seg`.
#[inline(always)]
pub(crate) fn unit_address(seg: *mut Segment, head: usize) -> *mut u8 {
    seg.cast::<u8>().wrapping_add(head << UNIT_BITS)
}

/// The mask of `k` units from `start`.
#[inline]
pub(crate) const fn run_mask(start: usize, k: usize) -> u64 {
    (((1u128 << k) - 1) as u64) << start
}

/// The maximal runs of set bits of `units`, lowest first, as (first unit,
/// length).
pub(crate) fn runs(mut units: u64) -> impl Iterator<Item = (usize, usize)> {
    core::iter::from_fn(move || {
        if units == 0 {
            return None;
        }
        let start = units.trailing_zeros() as usize;
        let len = ((!(units >> start)).trailing_zeros() as usize).min(64 - start);
        units &= !run_mask(start, len);
        Some((start, len))
    })
}

/// Sets up the header of a span segment taken from the region: every unit
/// but the header's free; `zeroed` says the slot reads as zeroes (fresh
/// pages), otherwise its free units are dirty (a kept slot: old bytes, maybe
/// resident).
///
/// # Safety
/// `seg` is the base of a committed slot nobody else uses.
pub(crate) unsafe fn init_span_segment(seg: *mut Segment, zeroed: bool) {
    const UNUSED: Span = Span {
        free: ptr::null_mut(),
        next: ptr::null_mut(),
        prev: ptr::null_mut(),
        size: 0,
        used: 0,
        capacity: 0,
        virgin: 0,
        class: NOT_A_SPAN,
        units: 0,
        listed: false,
        pages_out: 0,
    };
    // SAFETY: the slot is ours and writable; every field is written, so old
    // bytes of a kept slot mean nothing afterwards.
    unsafe {
        (*seg).kind = SPANS;
        (*seg).stale_free = false;
        (*seg).slots = 0;
        (*seg).free = ALL_UNITS;
        (*seg).dirty = if zeroed { 0 } else { ALL_UNITS };
        (*seg).zero = if zeroed { ALL_UNITS } else { 0 };
        (*seg).stale = 0;
        (*seg).next = ptr::null_mut();
        (*seg).prev = ptr::null_mut();
        (*seg).back = [0; UNITS];
        for s in (*seg).spans.iter_mut() {
            ptr::write(s, UNUSED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_found_lowest_first_and_only_when_long_enough() {
        assert_eq!(runs(0b1110_1101).collect::<Vec<_>>(), [(0, 1), (2, 2), (5, 3)]);
        assert_eq!(runs(u64::MAX << 60).collect::<Vec<_>>(), [(60, 4)]);
        assert_eq!(runs(u64::MAX).collect::<Vec<_>>(), [(0, 64)]);
        assert_eq!(runs(0).count(), 0);
        assert_eq!(run_mask(60, 4), u64::MAX << 60);
        assert_eq!(run_mask(1, 63), ALL_UNITS);
    }
}
