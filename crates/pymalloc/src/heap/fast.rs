//! The hot paths (CPython's `pymalloc_alloc` and `pymalloc_free`): a block
//! from the block cache or the first used pool of its class, and a block
//! back to the cache or its pool. Everything rarer (a pool filling, a full
//! pool coming back, a pool emptying, a new pool) is out of line in
//! `transitions.rs`.

use core::ptr;

use super::Heap;
use crate::geometry::{class_size, MIN_PAGE, NB_SMALL_SIZE_CLASSES, POOL_SIZE_MASK};
use crate::pool::{self, base_of, class_of, header_at, header_in_region, header_of, launder, PoolHeader};
use crate::region;

impl Heap {
    /// Takes a block of size class `szidx`: the most recently cached one, or
    /// one from a pool; null if no arena can be had. This is pymalloc's fast
    /// path.
    #[inline(always)]
    pub(crate) fn alloc_small(&self, szidx: usize) -> *mut u8 {
        debug_assert!(szidx < NB_SMALL_SIZE_CLASSES);
        let b = self.cache().pop(szidx);
        if !b.is_null() {
            return b;
        }
        // Allocating from pools again: the class caches again.
        self.cache().reopen(szidx);
        self.alloc_from_pool(szidx)
    }

    /// [`Heap::alloc_small`] when it needs no call: the most recently cached
    /// block of class `szidx`, else [`Heap::pool_block_at_hand`]. Null means
    /// "take `alloc_small`" (a cache miss reopens the class, as there;
    /// nothing else changed). Calls nothing, so that an entry point that
    /// tail-calls its full path needs no stack frame.
    #[inline(always)]
    pub(crate) fn alloc_small_at_hand(&self, szidx: usize) -> *mut u8 {
        debug_assert!(szidx < NB_SMALL_SIZE_CLASSES);
        let b = self.cache().pop(szidx);
        if !b.is_null() {
            return b;
        }
        self.alloc_small_past_cache(szidx)
    }

    /// [`Heap::alloc_small_at_hand`] past a cache miss: reopens the class
    /// and takes [`Heap::pool_block_at_hand`]. For a caller that popped the
    /// class's cache itself and found it empty (the reopening sets the
    /// class's top to its base).
    #[inline(always)]
    pub(crate) fn alloc_small_past_cache(&self, szidx: usize) -> *mut u8 {
        debug_assert!(szidx < NB_SMALL_SIZE_CLASSES);
        self.cache().reopen(szidx);
        self.pool_block_at_hand(szidx)
    }

    /// The allocation fast path of a heap without a block cache
    /// ([`Heap::pool_block_at_hand`]).
    #[inline(always)]
    pub(crate) fn alloc_fast_uncached(&self, szidx: usize) -> *mut u8 {
        debug_assert!(!self.cache().enabled());
        self.pool_block_at_hand(szidx)
    }

    /// The next block of class `szidx`'s first used pool, carving the
    /// pool's next virgin blocks when its free list runs out, unless that
    /// fills the pool. Null means "take the full path" (nothing changed).
    /// Calls nothing.
    #[inline(always)]
    fn pool_block_at_hand(&self, szidx: usize) -> *mut u8 {
        debug_assert!(szidx < NB_SMALL_SIZE_CLASSES);
        // SAFETY: szidx < NB_SMALL_SIZE_CLASSES (caller's size_class).
        let pool = unsafe { self.used.first.get_unchecked(szidx) }.get();
        if pool.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: pools on a used list are live and have a non-null free
        // list whose head is a free block of the pool (UsedPools and
        // PoolHeader invariants).
        unsafe {
            let bp = (*pool).freeblock;
            let next = bp.cast::<*mut u8>().read();
            if next.is_null() {
                // The free list runs out: carve the next virgin blocks, or
                // leave the full pool to the full path.
                if !Self::carve_virgin(pool, szidx, bp) {
                    return ptr::null_mut();
                }
            } else {
                (*pool).freeblock = next;
            }
            (*pool).set_count((*pool).count() + 1);
            bp
        }
    }

    /// The free fast path of a heap without a block cache: `p` is a block
    /// of the arena region whose pool neither empties nor leaves the full
    /// state. False means "take the full path" (nothing changed).
    ///
    /// # Safety
    /// `p` is null, a live block of this heap, or a live block of the raw
    /// allocator; this heap has no block cache.
    #[inline(always)]
    pub(crate) unsafe fn free_fast_uncached(&self, p: *mut u8) -> bool {
        debug_assert!(!self.cache().enabled());
        // Null and raw blocks are outside the region.
        let Some(off) = region::arena_offset(p) else {
            return false;
        };
        let pool = header_at(off);
        // SAFETY: an address of the region handed out by this heap is a
        // live block (caller's contract): its pool is live and in use.
        unsafe {
            let count = (*pool).count();
            let last = (*pool).freeblock;
            if count <= 1 || last.is_null() {
                return false;
            }
            p.cast::<*mut u8>().write(last);
            (*pool).freeblock = launder(p);
            (*pool).set_count(count - 1);
        }
        true
    }

    /// Takes a block of size class `szidx` from a pool (CPython's
    /// `pymalloc_alloc`).
    #[inline(always)]
    pub(super) fn alloc_from_pool(&self, szidx: usize) -> *mut u8 {
        let pool = self.used.head(szidx);
        if !pool.is_null() {
            // SAFETY: pools on a used list are live and have a non-null free
            // list whose head is a free block of the pool (UsedPools and
            // PoolHeader invariants).
            unsafe {
                let bp = (*pool).freeblock;
                let next = bp.cast::<*mut u8>().read();
                (*pool).freeblock = next;
                (*pool).set_count((*pool).count() + 1);
                if next.is_null() {
                    self.pool_exhausted(pool, szidx, bp);
                }
                return bp;
            }
        }
        self.alloc_from_new_pool(szidx)
    }

    /// Puts the never-used blocks of `pool` that start in the page of the
    /// next one on its (empty) free list; false if the pool has none left
    /// (it is full). `block` is any block of the pool (the one just taken):
    /// the pool's address comes from it, one `and`, rather than from the
    /// header, which may lie in the header table (`pool_table.rs`).
    ///
    /// CPython carves one block each time the free list runs out; a page's
    /// worth at once costs six instructions a block instead of about a
    /// dozen, and writes only into the page the next block's allocation
    /// would have touched anyway (twenty-sixth pass). The loop stays
    /// inline: called out of line, it made the allocation fast paths that
    /// reach it save registers on every call (callgrind, random: 69.2
    /// instructions an operation, against 68.3 before and 65.7 inline).
    ///
    /// # Safety
    /// `pool` is a live pool of class `szidx` whose free list is empty, and
    /// `block` one of its blocks.
    #[inline(always)]
    pub(super) unsafe fn carve_virgin(pool: *mut PoolHeader, szidx: usize, block: *mut u8) -> bool {
        debug_assert_eq!(base_of(pool), block.map_addr(|a| a & !POOL_SIZE_MASK));
        // SAFETY: `pool` is live and of class szidx (the contract), so a
        // virgin block at any offset from nextoffset to max_next_offset lies
        // inside it, and nobody uses it.
        unsafe {
            let off = (*pool).nextoffset as usize;
            let max = pool::max_next_offset(szidx) as usize;
            if off > max {
                return false;
            }
            let size = class_size(szidx);
            let base = block.map_addr(|a| a & !POOL_SIZE_MASK);
            // The last offset a block carved now may start at: in the
            // first one's page, and no further than the pool allows.
            let last = max.min(off | (MIN_PAGE - 1));
            let first = base.add(off);
            let mut p = first;
            let mut o = off + size;
            while o <= last {
                let q = base.add(o);
                p.cast::<*mut u8>().write(q);
                p = q;
                o += size;
            }
            p.cast::<*mut u8>().write(ptr::null_mut());
            (*pool).nextoffset = o as u32;
            (*pool).freeblock = first;
            true
        }
    }

    /// Frees a block of this heap: into the block cache if its class has
    /// room, else to its pool.
    ///
    /// # Safety
    /// `p` is a live block handed out by this heap's `alloc_small`.
    #[inline(always)]
    pub(crate) unsafe fn free_small(&self, p: *mut u8) {
        // SAFETY: p is a live block of this heap.
        unsafe { self.free_small_class(p, class_of(p)) }
    }

    /// [`Heap::free_small`] of a block whose class `c` the caller has read.
    ///
    /// # Safety
    /// `p` is a live block handed out by this heap's `alloc_small`, of class
    /// `c` (`pool::class_of(p)`).
    #[inline(always)]
    pub(crate) unsafe fn free_small_class(&self, p: *mut u8, c: usize) {
        // SAFETY: the contract.
        unsafe { self.free_small_with(p, c, || header_of(p)) }
    }

    /// [`Heap::free_small_class`] of a block of the arena region (its class
    /// read in the block map): its header found without the region's bounds.
    ///
    /// # Safety
    /// As for [`Heap::free_small_class`], and `p` lies in the arena region.
    #[inline(always)]
    pub(crate) unsafe fn free_region_block(&self, p: *mut u8, c: usize) {
        // SAFETY: the contract.
        unsafe { self.free_small_with(p, c, || header_in_region(p)) }
    }

    /// [`Heap::free_region_block`] past the block cache, for a caller whose
    /// push into the class's cache failed (full, closed or off): the block
    /// goes straight back to its pool.
    ///
    /// # Safety
    /// As for [`Heap::free_region_block`].
    #[inline(always)]
    pub(crate) unsafe fn free_region_block_past_cache(&self, p: *mut u8) {
        // SAFETY: p is a live block of this heap, not cached, in the arena
        // region (the contract).
        unsafe { self.free_into(p, header_in_region(p)) }
    }

    /// Frees `p`, of class `c`, into the block cache if the class has room,
    /// else to its pool, whose header `header` finds.
    ///
    /// # Safety
    /// As for [`Heap::free_small_class`]; `header()` is `header_of(p)`.
    #[inline(always)]
    unsafe fn free_small_with(&self, p: *mut u8, c: usize, header: impl FnOnce() -> *mut PoolHeader) {
        // SAFETY: c < NB_SMALL_SIZE_CLASSES (read from a live pool).
        let (t, end) = unsafe { self.cache().top_and_end(c) };
        if t < end {
            // SAFETY: the class has room (t < end), c is a class, and p is
            // a free block of class c now.
            unsafe { self.cache().push(c, t, launder(p)) };
            return;
        }
        // The class's cache is full, closed, or off (an uncached heap): the
        // block goes straight back to its pool (see `cache.rs`).
        // SAFETY: p is a live block of this heap, not cached, in the pool
        // whose header this is.
        unsafe { self.free_into(p, header()) }
    }

    /// Returns a block of pymalloc memory to its pool (CPython's
    /// `pymalloc_free`).
    ///
    /// # Safety
    /// `p` is a live block of this heap, not in the cache.
    #[inline(always)]
    pub(crate) unsafe fn free_to_pool(&self, p: *mut u8) {
        // SAFETY: the contract.
        unsafe { self.free_into(p, header_of(p)) }
    }

    /// [`Heap::free_to_pool`] of `p` whose pool's header is `pool`.
    ///
    /// # Safety
    /// As for [`Heap::free_to_pool`]; `pool` is `header_of(p)`.
    #[inline(always)]
    unsafe fn free_into(&self, p: *mut u8, pool: *mut PoolHeader) {
        debug_assert_eq!(pool, header_of(p));
        // SAFETY: p is a live block, so its pool is live and in use.
        unsafe {
            let count = (*pool).count();
            let last = (*pool).freeblock;
            // The link is written through the caller's pointer (its tag may
            // be protected while it hands the block back); the free list keeps
            // the block under the arena's provenance, so the next owner does
            // not inherit the caller's narrowed tag.
            p.cast::<*mut u8>().write(last);
            (*pool).freeblock = launder(p);
            if count <= 2 || last.is_null() {
                self.pool_changes_list(pool, count, last);
                return;
            }
            (*pool).set_count(count - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::geometry::{class_size, MIN_PAGE, POOL_OVERHEAD};
    use crate::pool::{self, header_of};
    use crate::Heap;

    /// A pool's first two blocks come from `init_for_class`; when the
    /// second is taken, the free list is empty and the virgin blocks that
    /// start in the next one's page go on it at once, in address order.
    #[test]
    fn a_pool_carves_the_blocks_of_a_page_at_once_in_address_order() {
        for c in [0, 2, 7, 31] {
            let size = class_size(c);
            let mut heap = Heap::new();
            let a = heap.malloc(size);
            let b = heap.malloc(size);
            assert_eq!(b.addr() - a.addr(), size);
            let start = POOL_OVERHEAD + 2 * size;
            let last = (pool::max_next_offset(c) as usize).min(start | (MIN_PAGE - 1));
            let count = (last - start) / size + 1;
            // SAFETY: b is a live block of this heap: its pool's header is
            // live, and its free list links free blocks of the pool.
            unsafe {
                let h = header_of(b);
                assert_eq!((*h).nextoffset as usize, start + count * size, "class {c}");
                let mut p = (*h).freeblock;
                let mut seen = 0;
                while !p.is_null() {
                    assert_eq!(p.addr(), a.addr() - POOL_OVERHEAD + start + seen * size, "class {c}");
                    p = p.cast::<*mut u8>().read();
                    seen += 1;
                }
                assert_eq!(seen, count, "class {c}");
            }
            // The page's blocks are handed out in address order, then the
            // next page's, if the pool has one.
            let more = start + count * size <= pool::max_next_offset(c) as usize;
            let taken = count + usize::from(more);
            let mut prev = b;
            for _ in 0..taken {
                let q = heap.malloc(size);
                assert_eq!(q.addr() - prev.addr(), size, "class {c}");
                prev = q;
            }
            assert!(heap.validate().is_ok());
            // SAFETY: the blocks were allocated from this heap above.
            unsafe {
                let mut p = a;
                for _ in 0..taken + 2 {
                    heap.free(p);
                    p = p.add(size);
                }
            }
            assert!(heap.validate().is_ok());
        }
    }
}
