//! Giving back the free pages of pools that still hold live blocks.
//!
//! A pool is several OS pages (16 KiB pools are four 4 KiB pages). A page
//! whose every block is free can go back to the OS while the pool stays in
//! use: its blocks leave the pool's free list, the page is
//! `madvise(MADV_DONTNEED)`-ed, and its bit is set in the pool's
//! `pages_out`. When the pool next runs out of free and virgin blocks, all
//! its pages come back at once: their blocks (which read as zeroes now) go
//! back on the free list. Nothing CPython's algorithm or statistics observe
//! changes: the blocks stay free and the pool's count does not move.
//!
//! Invariants, for a pool of a live arena with `pages_out != 0`:
//! * the arena is purgeable (pymalloc's own OS memory);
//! * no page `p` in `pages_out` is the first page of a pool that keeps its
//!   header there (outside the arena region: `pool_table.rs`), and every
//!   block that overlaps it (the "blocks of the page") lies below
//!   `nextoffset`: they were all carved before it went out;
//! * the blocks of pages out are free and on no free list; every other free
//!   carved block is on the free list, which is not empty;
//! * `Arenas::pages_out` counts the set bits of all pools (under `meta`).
//!
//! With the older geometry (4 KiB pools of one page) there is nothing to
//! split: a pool's only page goes back with the pool.

use core::ptr;

use super::Heap;
use crate::geometry::{class_size, NB_SMALL_SIZE_CLASSES, POOL_OVERHEAD, POOL_SIZE};
use crate::os;
use crate::pool::{base_of, header_in_pool, PoolHeader};

/// The most blocks a pool holds (the smallest class), for bitmaps.
const MAX_BLOCKS: usize = (POOL_SIZE - POOL_OVERHEAD) / class_size(0);
const BITMAP_WORDS: usize = MAX_BLOCKS.div_ceil(64);

/// The pages of a pool: their size, and how many (at most 16: `pages_out`
/// is a u16).
fn pool_pages() -> (usize, usize) {
    let page = os::page_size();
    (page, (POOL_SIZE / page).min(16))
}

/// The blocks of class size `size` that overlap page `p` of a pool: indices
/// `first..=last` (the block holding the page's first byte, or the first
/// block, to the one holding its last, or the pool's last block). Page `p`
/// starts below the end of the pool's last block.
fn blocks_of_page(p: usize, page: usize, size: usize) -> (usize, usize) {
    let first = (p * page).saturating_sub(POOL_OVERHEAD) / size;
    let last = ((p + 1) * page - 1 - POOL_OVERHEAD) / size;
    (first, last.min((POOL_SIZE - POOL_OVERHEAD) / size - 1))
}

/// The end of the last block a pool of class size `size` holds.
fn blocks_end(size: usize) -> usize {
    POOL_OVERHEAD + (POOL_SIZE - POOL_OVERHEAD) / size * size
}

/// The first page of a pool whose header is `hdr` that may go back while
/// the pool is in use: the pool's first, unless the header lies there.
fn first_free_page(hdr: *const PoolHeader) -> usize {
    usize::from(header_in_pool(hdr))
}

/// True if every block overlapping page `p` was carved before `next_off`.
fn wholly_carved(p: usize, page: usize, size: usize, next_off: usize) -> bool {
    ((p + 1) * page).min(blocks_end(size)) <= next_off
}

impl Heap {
    /// Gives back the free pages of every pool in use of this heap (owner
    /// only, `meta` held). Returns the bytes.
    pub(super) fn discard_free_pages(&self) -> usize {
        let (page, npages) = pool_pages();
        if npages < 2 {
            return 0;
        }
        let mut bytes = 0;
        for c in super::used::every_class() {
            let mut pool = self.used.head(c);
            while !pool.is_null() {
                // SAFETY: pools on a used list are live pools of this heap,
                // and `meta` is held (our contract).
                unsafe {
                    let next = (*pool).nextpool;
                    let ao = self.arenas.of_pool(pool);
                    if (*ao).purgeable {
                        bytes += self.discard_pool_pages(pool, c, page, npages);
                    }
                    pool = next;
                }
            }
        }
        bytes
    }

    /// Gives back the pages of `pool` whose blocks are all free; returns the
    /// bytes. Virgin pages (wholly at or past `nextoffset`) go back too,
    /// without bookkeeping: carving a block there later faults a zeroed page
    /// in, as for a pool never touched.
    ///
    /// # Safety
    /// `pool` is a used pool of class `c` of this heap in a purgeable arena;
    /// `meta` is held.
    unsafe fn discard_pool_pages(&self, pool: *mut PoolHeader, c: usize, page: usize, npages: usize) -> usize {
        let size = class_size(c);
        let base = base_of(pool);
        // SAFETY: the pool is live and ours (the contract); free-list
        // entries are blocks of the pool (PoolHeader invariant).
        unsafe {
            let next_off = (*pool).nextoffset as usize;
            let free = FreeBlocks::of(base, pool, size);
            let is_free = |i: usize| free.contains(i);
            let mut out = 0u16; // pages to give back now, with bookkeeping
            let mut virgin = 0u16; // wholly virgin pages
            for p in first_free_page(pool)..npages {
                let bit = 1u16 << p;
                if (*pool).pages_out & bit != 0 {
                    continue;
                }
                if p * page >= next_off.min(blocks_end(size)) {
                    // No carved block overlaps it (or no block at all).
                    virgin |= bit;
                } else if wholly_carved(p, page, size, next_off) {
                    // Wholly carved: its blocks all start below next_off.
                    let (first, last) = blocks_of_page(p, page, size);
                    if (first..=last).all(is_free) {
                        out |= bit;
                    }
                }
            }
            if out == 0 && virgin == 0 {
                return 0;
            }
            // The free list must keep a block: while every free block lies
            // in the pages chosen, keep the highest of them.
            while out != 0 && !self.unlink_page_blocks(pool, out, page, size) {
                out &= !(1u16 << (15 - out.leading_zeros()));
            }
            let all = out | virgin;
            os::discard_runs(base, u64::from(all), page);
            (*pool).pages_out |= out;
            self.arenas.pages_out.set(self.arenas.pages_out.get() + out.count_ones() as usize);
            all.count_ones() as usize * page
        }
    }

    /// Takes the free blocks overlapping the pages of `mask` off `pool`'s
    /// free list, unless that would leave it empty (then nothing changes
    /// and the answer is false).
    ///
    /// # Safety
    /// As for `discard_pool_pages`; the pages of `mask` are wholly carved
    /// and all their blocks are free.
    pub(super) unsafe fn unlink_page_blocks(&self, pool: *mut PoolHeader, mask: u16, page: usize, size: usize) -> bool {
        let base = base_of(pool).addr();
        let in_mask = |b: *mut u8| {
            let off = b.addr() - base;
            // The pages the block overlaps.
            let (p0, p1) = (off / page, (off + size - 1) / page);
            (p0..=p1).any(|p| p < 16 && mask & (1 << p) != 0)
        };
        // SAFETY: free-list entries are free blocks of the pool.
        unsafe {
            let mut b = (*pool).freeblock;
            let mut kept = false;
            while !b.is_null() {
                kept |= !in_mask(b);
                b = b.cast::<*mut u8>().read();
            }
            if !kept {
                return false;
            }
            // Rebuild the list in its order, without those blocks.
            let mut head: *mut u8 = ptr::null_mut();
            let mut tail: *mut u8 = ptr::null_mut();
            let mut b = (*pool).freeblock;
            while !b.is_null() {
                let next = b.cast::<*mut u8>().read();
                if !in_mask(b) {
                    if tail.is_null() {
                        head = b;
                    } else {
                        tail.cast::<*mut u8>().write(b);
                    }
                    tail = b;
                }
                b = next;
            }
            tail.cast::<*mut u8>().write(ptr::null_mut());
            (*pool).freeblock = head;
            true
        }
    }

    /// `pool` ran out of free and virgin blocks but has pages out: they all
    /// come back, their blocks onto the free list. True if any did.
    ///
    /// # Safety
    /// `pool` is a live pool of class `c` of this heap whose free list is
    /// empty.
    #[cold]
    #[inline(never)]
    pub(super) unsafe fn restore_pages(&self, pool: *mut PoolHeader, c: usize) -> bool {
        // SAFETY: the pool is live and ours (the contract); the pages out
        // are carved (invariant), so every block written lies in the pool.
        unsafe {
            let out = (*pool).pages_out;
            if out == 0 {
                return false;
            }
            let size = class_size(c);
            let base = base_of(pool);
            // The blocks of the pages out, linked in address order.
            let mut head: *mut u8 = ptr::null_mut();
            let mut tail: *mut u8 = ptr::null_mut();
            for i in blocks_of_pages(out, size) {
                let b = base.add(POOL_OVERHEAD + i * size);
                if tail.is_null() {
                    head = b;
                } else {
                    tail.cast::<*mut u8>().write(b);
                }
                tail = b;
            }
            tail.cast::<*mut u8>().write(ptr::null_mut());
            (*pool).freeblock = head;
            let _meta = self.meta.lock();
            self.forget_pages_out(pool)
        }
    }

    /// Clears `pool`'s pages out and takes them off the arenas' count
    /// (their blocks are back on its free list, or the pool is set up
    /// afresh, where those pages read as zeroes like virgin ones). True if
    /// it had any.
    ///
    /// # Safety
    /// `pool` is a live pool of this heap; `meta` is held.
    pub(super) unsafe fn forget_pages_out(&self, pool: *mut PoolHeader) -> bool {
        // SAFETY: the pool is live (the contract).
        let out = unsafe { core::mem::replace(&mut (*pool).pages_out, 0) };
        self.arenas.pages_out.set(self.arenas.pages_out.get() - out.count_ones() as usize);
        out != 0
    }
}

/// For `validate`: the number of blocks of class size `size` overlapping the
/// pages of `mask`, each counted once.
pub(super) fn blocks_out(mask: u16, size: usize) -> usize {
    blocks_of_pages(mask, size).count()
}

/// The indices of the blocks of class size `size` that overlap the pages of
/// `mask`, each once (a block may overlap two of them), in ascending order.
fn blocks_of_pages(mask: u16, size: usize) -> impl Iterator<Item = usize> {
    let (page, _) = pool_pages();
    let mut next = 0; // the lowest index not yet given
    (0..16usize).filter(move |p| mask & (1 << p) != 0).flat_map(move |p| {
        let (first, last) = blocks_of_page(p, page, size);
        let from = first.max(next);
        next = next.max(last + 1);
        from..=last
    })
}

/// For `validate`: true if a block at offset `off` of class size `size`
/// overlaps a page of `mask`.
pub(super) fn overlaps_out(mask: u16, off: usize, size: usize) -> bool {
    let (page, _) = pool_pages();
    (off / page..=(off + size - 1) / page).any(|p| p < 16 && mask & (1 << p) != 0)
}

/// For `validate`: the pages of `mask` (of the pool whose header is `hdr`)
/// are all ones that may go back (not a first page holding the header),
/// and their blocks (of class size `size`) all lie below `next_off`.
pub(super) fn mask_is_valid(hdr: *const PoolHeader, mask: u16, size: usize, next_off: usize) -> bool {
    let (page, npages) = pool_pages();
    let first = first_free_page(hdr);
    (0..16)
        .filter(|p| mask & (1 << p) != 0)
        .all(|p| p >= first && p < npages && p * page < blocks_end(size) && wholly_carved(p, page, size, next_off))
}

/// Who pins memory in one size class: the pools in use, the pages their
/// live blocks hold, and how much of that the sparsely used pools hold
/// (those with at most an eighth of their blocks in use), which is what would
/// come back if their few blocks were gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassPinning {
    /// Pools holding at least one block in use.
    pub pools: usize,
    /// Blocks in use in them.
    pub blocks: usize,
    /// Pages of those pools holding a block in use: what no allocator that
    /// never moves a block could give back.
    pub live_pages: usize,
    /// Pools whose first page holds no block in use but their header: a
    /// page held for the header alone, on top of `live_pages` (only pools
    /// outside the arena region keep their headers in the pool, as CPython
    /// does; see `pool_table.rs`).
    pub header_pages: usize,
    /// Pools with at most an eighth of their blocks in use.
    pub sparse_pools: usize,
    /// Blocks in use in the sparse pools.
    pub sparse_blocks: usize,
    /// Pages the sparse pools' blocks hold: the bytes that would come back
    /// (`sparse_pages * page size`) if those blocks were gone.
    pub sparse_pages: usize,
}

impl Heap {
    /// Calls `f` for every pool holding a block in use, with its address,
    /// header, block count and class, `meta` held. Owner only (`f` may read
    /// free lists).
    fn for_each_pool_in_use(&self, mut f: impl FnMut(*mut u8, *mut PoolHeader, usize, usize)) {
        let _meta = self.meta.lock();
        self.arenas.for_each_pool(|ao, i, pool, hdr| {
            if ao.decommitted & (1u64 << i) != 0 || ao.free_bits & (1u64 << i) != 0 {
                return;
            }
            // SAFETY: a carved pool of a live arena, not free: its header is
            // initialised.
            let (count, c) = unsafe { ((*hdr).count() as usize, (*hdr).szidx as usize) };
            if count > 0 {
                f(pool, hdr, count, c);
            }
        });
    }

    /// Per size class, what pins this heap's pages (see [`ClassPinning`]).
    /// Owner only (it reads the free lists).
    pub fn pinning(&self) -> [ClassPinning; NB_SMALL_SIZE_CLASSES] {
        let (page, npages) = pool_pages();
        let mut out = [ClassPinning::default(); NB_SMALL_SIZE_CLASSES];
        self.for_each_pool_in_use(|pool, hdr, count, c| {
            // SAFETY: a pool in use; the owner (our caller) is not changing
            // its free list.
            let (live, header_only) = unsafe { live_pages(pool, hdr, page, npages.max(1)) };
            let header = usize::from(header_only);
            let p = &mut out[c];
            p.pools += 1;
            p.blocks += count;
            p.live_pages += live;
            p.header_pages += header;
            if is_sparse(count, c) {
                p.sparse_pools += 1;
                p.sparse_blocks += count;
                // A header's page (a pool outside the region) comes back
                // with the pool too.
                p.sparse_pages += live + header;
            }
        });
        out
    }

    /// Calls `f` for every block in use in a sparse pool (at most an eighth
    /// of its blocks in use, as [`ClassPinning`] counts them), with the bytes
    /// of the pool's live pages it holds: each live page is shared among the
    /// blocks on it, and a header page holding no block among all the pool's
    /// blocks. Over all blocks this adds up to the sparse pools' live pages,
    /// up to rounding. Owner only; `f` runs under the heap's bookkeeping lock
    /// and must not allocate from this heap.
    pub fn visit_pinning_blocks(&self, f: &mut dyn FnMut(&PinningBlock)) {
        let (page, npages) = pool_pages();
        self.for_each_pool_in_use(|pool, hdr, count, c| {
            if is_sparse(count, c) {
                // SAFETY: a pool in use; the owner (our caller) is not
                // changing its free list.
                unsafe { visit_pool_blocks(pool, hdr, page.min(POOL_SIZE), npages.max(1), f) };
            }
        });
    }

    /// Bytes of the pages of this heap's pools that hold at least one block
    /// in use (cached blocks count as in use): what no allocator that never
    /// moves a block could give back of the pools. Owner only (it reads the
    /// free lists).
    pub fn live_page_bytes(&self) -> usize {
        self.pinning().iter().map(|p| p.live_pages).sum::<usize>() * page_bytes()
    }

    /// Bytes of the pages this heap's pools in use hold for their headers
    /// alone (first pages holding no block in use, of pools that keep their
    /// header there): on top of [`Heap::live_page_bytes`]. Owner only, as
    /// that.
    pub fn header_page_bytes(&self) -> usize {
        self.pinning().iter().map(|p| p.header_pages).sum::<usize>() * page_bytes()
    }
}

/// A pool with `count` of its blocks of class `c` in use is sparse when at
/// most an eighth of them are.
fn is_sparse(count: usize, c: usize) -> bool {
    count * 8 <= crate::geometry::num_blocks(c)
}

/// A block in use in a sparse pool, and what it pins
/// ([`Heap::visit_pinning_blocks`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinningBlock {
    /// The block's address.
    pub addr: usize,
    /// Its size class.
    pub class: usize,
    /// Its share of the bytes of its pool's live pages.
    pub pinned_bytes: usize,
}

/// The live blocks of one pool, each with its share of the live pages.
///
/// # Safety
/// `pool` is a carved pool in use whose free list nobody changes meanwhile.
unsafe fn visit_pool_blocks(
    base: *mut u8,
    hdr: *const PoolHeader,
    page: usize,
    npages: usize,
    f: &mut dyn FnMut(&PinningBlock),
) {
    // SAFETY: per the contract; free-list entries are blocks of the pool.
    unsafe {
        let c = (*hdr).szidx as usize;
        let size = class_size(c);
        let carved = ((*hdr).nextoffset as usize).min(POOL_SIZE).saturating_sub(POOL_OVERHEAD) / size;
        let free = FreeBlocks::of(base, hdr, size);
        let out = (*hdr).pages_out;
        let page_span = |off: usize| off / page..=((off + size - 1) / page).min(npages - 1);
        let live = |i: usize| !free.contains(i) && !overlaps_out(out, POOL_OVERHEAD + i * size, size);
        let mut on_page = [0usize; 16];
        let mut blocks = 0;
        for i in (0..carved).filter(|&i| live(i)) {
            blocks += 1;
            for pg in page_span(POOL_OVERHEAD + i * size) {
                on_page[pg] += 1;
            }
        }
        if blocks == 0 {
            return;
        }
        // A header's page is held even when no block lies on it.
        let header_share = if on_page[0] == 0 && header_in_pool(hdr) { page / blocks } else { 0 };
        for i in (0..carved).filter(|&i| live(i)) {
            let off = POOL_OVERHEAD + i * size;
            let pinned = header_share + page_span(off).map(|pg| page / on_page[pg]).sum::<usize>();
            f(&PinningBlock { addr: base.addr() + off, class: c, pinned_bytes: pinned });
        }
    }
}

/// The bytes of one page as `ClassPinning` counts them: an OS page, or a
/// whole pool where pools are no bigger than a page.
pub fn page_bytes() -> usize {
    os::page_size().min(POOL_SIZE)
}

/// The free carved blocks of a pool, by index: a bitmap of its free list.
pub(super) struct FreeBlocks([u64; BITMAP_WORDS]);

impl FreeBlocks {
    /// The free list of the pool at `base` whose header is `hdr`.
    ///
    /// # Safety
    /// The pool is carved, of class size `size`, and nobody changes its
    /// free list meanwhile.
    pub(super) unsafe fn of(base: *mut u8, hdr: *const PoolHeader, size: usize) -> FreeBlocks {
        let mut free = [0u64; BITMAP_WORDS];
        // SAFETY: the header is initialised; free-list entries are blocks of
        // the pool (PoolHeader invariant).
        unsafe {
            let mut b = (*hdr).freeblock;
            while !b.is_null() {
                let i = (b.addr() - base.addr() - POOL_OVERHEAD) / size;
                free[i / 64] |= 1 << (i % 64);
                b = b.cast::<*mut u8>().read();
            }
        }
        FreeBlocks(free)
    }

    pub(super) fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// The pages of `pool` (of `npages` pages of `page` bytes; one page when
/// pools are smaller than pages) that hold at least one block in use, and
/// whether its first page holds its header and no block in use.
///
/// # Safety
/// `pool` is a carved pool in use whose free list nobody changes meanwhile.
unsafe fn live_pages(base: *mut u8, hdr: *const PoolHeader, page: usize, npages: usize) -> (usize, bool) {
    // SAFETY: the header is initialised; free-list entries are blocks of the
    // pool (PoolHeader invariant).
    unsafe {
        if npages <= 1 {
            return (1, false);
        }
        let size = class_size((*hdr).szidx as usize);
        let carved = ((*hdr).nextoffset as usize).min(POOL_SIZE).saturating_sub(POOL_OVERHEAD) / size;
        let free = FreeBlocks::of(base, hdr, size);
        let out = (*hdr).pages_out;
        let mut live = [false; 16];
        for i in 0..carved {
            if free.contains(i) {
                continue;
            }
            let off = POOL_OVERHEAD + i * size;
            if overlaps_out(out, off, size) {
                continue; // a block of a page out: free
            }
            for l in &mut live[off / page..=((off + size - 1) / page).min(15)] {
                *l = true;
            }
        }
        (live[..npages].iter().filter(|&&l| l).count(), !live[0] && header_in_pool(hdr))
    }
}
