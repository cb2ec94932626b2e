//! Giving back the free pages of medium spans that still hold live blocks,
//! as `heap/pages.rs` does for pools.
//!
//! A medium span is 64 KiB or more (16 pages and up) holding a few dozen
//! blocks. After a program drops most of what it built, a scattered
//! survivor keeps its span, and the span keeps every page, though most of
//! them hold nothing live. [`discard_free_pages`] gives back each page
//! whose blocks are all free: those blocks leave the span's free list, the
//! page is `madvise(MADV_DONTNEED)`-ed and its bit set in `pages_out`. When
//! the span next runs out of free and virgin blocks, [`restore_pages`] puts
//! them all back on the free list (they read as zeroes). A page whose blocks
//! are all virgin (never carved), or that lies past the last block, is given
//! back without a mark: carving writes it in again as any fresh page.
//!
//! Invariants, for a live medium span with `pages_out != 0` (the
//! descriptor's other invariants are in `segment.rs`):
//! * every block overlapping a page out (its "out blocks") was carved
//!   (`index < virgin`) and is free, on no free list, and not handed out;
//! * so `used + free-list length + out blocks == virgin`.
//!
//! Only the owner calls these (the free list is the owner's).

use crate::os;
use crate::segment::{Span, UNIT};

/// Blocks a medium span holds at most (64 KiB of the smallest class, 544
/// bytes, is 120), for the bitmap of free blocks.
const MAX_BLOCKS: usize = 128;

/// The pages of a span of `units` units: their size, and how many (at most
/// 64: `pages_out` is a u64). None if a page is not smaller than a unit.
fn span_pages(units: usize) -> Option<(usize, usize)> {
    let page = os::page_size();
    (page < UNIT).then(|| (page, (units * UNIT / page).min(64)))
}

/// The blocks of `s` overlapping page `p`: `first..=last`, or None if the
/// page lies past the last block.
fn blocks_of_page(s: &Span, p: usize, page: usize) -> Option<(usize, usize)> {
    let size = s.size as usize;
    let end = usize::from(s.capacity) * size;
    if p * page >= end {
        return None;
    }
    Some((p * page / size, (((p + 1) * page).min(end) - 1) / size))
}

/// True if block `i` of `s` overlaps a page in `mask`.
fn overlaps(s: &Span, i: usize, mask: u64, page: usize) -> bool {
    let size = s.size as usize;
    let (first, last) = (i * size / page, ((i + 1) * size - 1) / page);
    (first..=last.min(63)).any(|p| mask & (1 << p) != 0)
}

/// Blocks of `s` overlapping its pages out.
pub(crate) fn out_blocks(s: &Span) -> usize {
    match span_pages(usize::from(s.units)) {
        Some((page, _)) if s.pages_out != 0 => {
            (0..usize::from(s.virgin)).filter(|&i| overlaps(s, i, s.pages_out, page)).count()
        }
        _ => 0,
    }
}

/// True if block `b` (at `base`) of `s` overlaps a page out.
pub(crate) fn is_out(s: &Span, base: *mut u8, b: *mut u8) -> bool {
    match span_pages(usize::from(s.units)) {
        Some((page, _)) if s.pages_out != 0 => {
            overlaps(s, (b.addr() - base.addr()) / s.size as usize, s.pages_out, page)
        }
        _ => false,
    }
}

/// The blocks on the free list of `sp` (at `base`), as a bitmap.
///
/// # Safety
/// `sp` is a live medium span at `base`, and the caller is its owner.
unsafe fn free_blocks(sp: &Span, base: *mut u8) -> [u64; MAX_BLOCKS / 64] {
    debug_assert!(usize::from(sp.capacity) <= MAX_BLOCKS);
    let mut free = [0u64; MAX_BLOCKS / 64];
    let mut b = sp.free;
    while !b.is_null() {
        let i = (b.addr() - base.addr()) / sp.size as usize;
        free[i / 64] |= 1 << (i % 64);
        // SAFETY: free-list blocks are free blocks of the span, linked
        // through their first word.
        b = unsafe { b.cast::<*mut u8>().read() };
    }
    free
}

/// Bytes of the pages of medium span `s` (at `base`) that hold part of a
/// block in use: what no allocator that never moves a block could give
/// back. Where pages are not smaller than units, the blocks in use.
///
/// # Safety
/// As for [`discard_free_pages`].
pub(crate) unsafe fn live_page_bytes(s: *const Span, base: *mut u8) -> usize {
    // SAFETY: the contract: the descriptor is live and ours.
    let sp = unsafe { &*s };
    let Some((page, npages)) = span_pages(usize::from(sp.units)) else {
        return usize::from(sp.used) * sp.size as usize;
    };
    // SAFETY: the contract.
    let free = unsafe { free_blocks(sp, base) };
    let virgin = usize::from(sp.virgin);
    // Out blocks are free too (and on no list).
    let in_use = |i: usize| i < virgin && free[i / 64] & (1 << (i % 64)) == 0 && !overlaps(sp, i, sp.pages_out, page);
    (0..npages).filter(|&p| blocks_of_page(sp, p, page).is_some_and(|(first, last)| (first..=last).any(in_use))).count()
        * page
}

/// Gives back the pages of medium span `s` (at `base`) whose blocks are all
/// free; returns the bytes of the pages newly marked out (pages given back
/// without a mark are not counted: they may never have been resident).
///
/// # Safety
/// `s` is a live medium span of the caller's heap at `base`, and the caller
/// is its owner.
pub(crate) unsafe fn discard_free_pages(s: *mut Span, base: *mut u8) -> usize {
    // SAFETY: the contract: the descriptor is live and ours.
    let sp = unsafe { &mut *s };
    let Some((page, npages)) = span_pages(usize::from(sp.units)) else { return 0 };
    if sp.used == sp.virgin && sp.virgin == sp.capacity {
        return 0;
    }
    let size = sp.size as usize;
    // SAFETY: the contract.
    let free = unsafe { free_blocks(sp, base) };
    let is_free = |i: usize| free[i / 64] & (1 << (i % 64)) != 0;
    let virgin = usize::from(sp.virgin);
    let (mut out, mut bare) = (0u64, 0u64);
    for p in 0..npages {
        if sp.pages_out & (1 << p) != 0 {
            continue;
        }
        match blocks_of_page(sp, p, page) {
            None => bare |= 1 << p,
            Some((first, _)) if first >= virgin => bare |= 1 << p,
            Some((first, last)) if last < virgin && (first..=last).all(is_free) => out |= 1 << p,
            Some(_) => {}
        }
    }
    if out | bare == 0 {
        return 0;
    }
    if out != 0 {
        // Unlink the blocks of the pages going out, keeping the list's order.
        let mut link: *mut *mut u8 = &mut sp.free;
        // SAFETY: as above; `link` points at the descriptor's head or at a
        // free block's first word.
        unsafe {
            while !(*link).is_null() {
                let b = *link;
                if overlaps(sp, (b.addr() - base.addr()) / size, out, page) {
                    *link = b.cast::<*mut u8>().read();
                } else {
                    link = b.cast::<*mut u8>();
                }
            }
        }
        sp.pages_out |= out;
    }
    // SAFETY: every page named holds only free, unlisted blocks, virgin
    // blocks or bytes past the last block: nothing anyone uses.
    unsafe { os::discard_runs(base, out | bare, page) };
    out.count_ones() as usize * page
}

/// Puts the out blocks of `s` (at `base`) back on its free list and clears
/// `pages_out`; returns the bytes of the pages that were out.
///
/// # Safety
/// As for [`discard_free_pages`].
#[cold]
#[inline(never)]
pub(crate) unsafe fn restore_pages(s: *mut Span, base: *mut u8) -> usize {
    // SAFETY: the contract.
    let sp = unsafe { &mut *s };
    let Some((page, _)) = span_pages(usize::from(sp.units)) else { return 0 };
    let out = sp.pages_out;
    let size = sp.size as usize;
    for i in (0..usize::from(sp.virgin)).rev() {
        if overlaps(sp, i, out, page) {
            // SAFETY: an out block is free, unlisted and inside the span.
            unsafe {
                let b = base.add(i * size);
                b.cast::<*mut u8>().write(sp.free);
                sp.free = b;
            }
        }
    }
    sp.pages_out = 0;
    out.count_ones() as usize * page
}

/// Bytes of the pages out of `s`.
pub(crate) fn out_bytes(s: &Span) -> usize {
    s.pages_out.count_ones() as usize * span_pages(usize::from(s.units)).map_or(0, |(page, _)| page)
}

/// Forgets the pages out of a span that is being released whole; returns
/// their bytes.
pub(crate) fn forget_pages(s: &mut Span) -> usize {
    let bytes = out_bytes(s);
    s.pages_out = 0;
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ptr;

    fn span(size: usize, units: u8, capacity: u16) -> Span {
        Span {
            free: ptr::null_mut(),
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            size: size as u32,
            used: 0,
            capacity,
            virgin: 0,
            class: 0,
            units,
            listed: false,
            pages_out: 0,
        }
    }

    #[test]
    fn blocks_and_pages_overlap_as_their_bytes_do() {
        if os::page_size() != 4096 {
            return;
        }
        // 3000-byte blocks in 64 KiB: 21 blocks, the last ending at 63000.
        let s = span(3000, 4, 21);
        assert_eq!(blocks_of_page(&s, 0, 4096), Some((0, 1)));
        assert_eq!(blocks_of_page(&s, 1, 4096), Some((1, 2)), "block 1 straddles pages 0 and 1");
        assert_eq!(blocks_of_page(&s, 15, 4096), Some((20, 20)));
        let tail = span(5000, 4, 13); // 65000 bytes: page 15 starts at 61440
        assert_eq!(blocks_of_page(&tail, 15, 4096), Some((12, 12)));
        assert!(overlaps(&s, 1, 1 << 1, 4096) && overlaps(&s, 1, 1, 4096) && !overlaps(&s, 3, 1, 4096));
    }
}
