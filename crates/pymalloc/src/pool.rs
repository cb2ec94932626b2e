//! Pools: runs of `POOL_SIZE` bytes holding blocks of one size class.
//!
//! A pool has a [`PoolHeader`]: in the header table for a pool of the arena
//! region (`pool_table.rs`), else at the pool's start. Either way its blocks
//! lie at `POOL_OVERHEAD + k * class_size` from the pool's start. Blocks are
//! handed out from the pool's free list first, and from its never-used tail
//! ("virgin" blocks, at `nextoffset`) only when the free list is empty, so a
//! pool's memory is touched only as it is needed.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::geometry::{class_size, POOL_OVERHEAD, POOL_SIZE, POOL_SIZE_MASK};
use crate::{pool_table, region};

/// Who owns a pool, as its heap stamps it: the owning thread heap's address
/// (where other threads send the blocks they free), or [`NOT_THREAD_TAG`].
/// Opaque at this layer: only the heap that made it turns it back into a
/// heap.
pub(crate) type OwnerTag = *const ();

pub(crate) use crate::block_map::NOT_THREAD_TAG;

/// Size class recorded in a pool just carved from its arena and never
/// initialised for any class.
pub(crate) const DUMMY_SIZE_IDX: u16 = 0xffff;

/// A pool's header (CPython's `struct pool_header`, 48 bytes on 64-bit;
/// CPython's `maxnextoffset` is computed from the size class instead of
/// stored, which leaves room for the owning heap): in the header table for
/// a pool of the arena region (`pool_table.rs`), at the pool's start for
/// any other.
///
/// Invariants, for a pool carved from a live arena:
/// * `count` is the number of blocks of this pool currently handed out. Only
///   the owning heap writes it; statistics may read it from another thread,
///   hence the (relaxed) atomic.
/// * `count == 0`: the pool is *empty*: it is on its arena's `freepools`
///   list (linked through `nextpool`), or its pages were given back to the OS
///   (its bit is set in the arena's `decommitted` mask and the header reads
///   as zeroes). An empty pool on `freepools` keeps `szidx`/`freeblock`/
///   `nextoffset` of the class it last held, so it can be reused for that
///   class without reinitialising.
/// * `0 < count < num_blocks(szidx)`: the pool is *used*: it is on the
///   heap's used list for `szidx`, and `freeblock` is non-null.
/// * `count == num_blocks(szidx)`: the pool is *full*: it is on no list and
///   `freeblock` is null; `nextpool`/`prevpool` are meaningless.
/// * `freeblock` heads a null-terminated list of free blocks of this pool,
///   each block's first word holding the next. Blocks at offsets at or past
///   `nextoffset` have never been handed out and are not on the list.
/// * `arenaindex` indexes the owning heap's arena table; `owner` is that heap
///   when it is a thread heap (where blocks freed by other threads are sent),
///   and null otherwise. Both change only while the pool is empty.
#[repr(C)]
pub(crate) struct PoolHeader {
    /// Blocks in use.
    pub count: AtomicU32,
    /// Offset of the first never-used block.
    pub nextoffset: u32,
    /// Head of the free list, or null.
    pub freeblock: *mut u8,
    /// Next pool in the used list, or in the arena's free list.
    pub nextpool: *mut PoolHeader,
    /// Previous pool in the used list.
    pub prevpool: *mut PoolHeader,
    /// Index of the arena object in the heap's table.
    pub arenaindex: u32,
    /// Size class index, or [`DUMMY_SIZE_IDX`].
    pub szidx: u16,
    /// Pages of the pool given back to the OS while it is in use: bit `p`
    /// for page `p` (see `heap/pages.rs` for the invariant). Zero in a pool
    /// just carved or set up for a class.
    pub pages_out: u16,
    /// The heap owning the pool, if it is a thread heap; else null.
    pub owner: OwnerTag,
}

// The header fits the room the geometry reserves for it.
const _: () = assert!(core::mem::size_of::<PoolHeader>() <= POOL_OVERHEAD);

impl PoolHeader {
    /// Blocks in use (owner or statistics).
    #[inline(always)]
    pub fn count(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
    /// Sets the blocks in use (owner only: a plain store, no read-modify-write).
    #[inline(always)]
    pub fn set_count(&self, n: u32) {
        self.count.store(n, Ordering::Relaxed)
    }
}

/// The largest offset a block of class `szidx` can start at in its pool
/// (CPython's `maxnextoffset`, computed rather than stored).
#[inline(always)]
pub(crate) const fn max_next_offset(szidx: usize) -> u32 {
    (POOL_SIZE - class_size(szidx)) as u32
}

/// The blocks in use of `pool`, for readers on other threads (statistics):
/// only the atomic `count` field is touched, never the whole header, which its
/// owner may be writing.
///
/// # Safety
/// `pool` is a carved pool of a live arena.
#[inline]
pub(crate) unsafe fn shared_count(pool: *const PoolHeader) -> u32 {
    // SAFETY: a field pointer, then a reference to the atomic alone.
    unsafe { (*core::ptr::addr_of!((*pool).count)).load(Ordering::Relaxed) }
}

/// The size class of `pool`, for readers holding its heap's bookkeeping lock
/// (the class is only written under that lock).
///
/// # Safety
/// As for [`shared_count`], with the lock held.
#[inline]
pub(crate) unsafe fn shared_szidx(pool: *const PoolHeader) -> u16 {
    // SAFETY: reads this one field through a field pointer.
    unsafe { core::ptr::addr_of!((*pool).szidx).read() }
}

/// The header of the pool containing `p` (an address inside a
/// pool-aligned pool): its entry in the header table for a pool of the
/// arena region (`pool_table.rs`), else the pool's own first bytes.
///
/// The header is reached through the table's or the arena's exposed
/// provenance, not `p`'s: a pointer handed back by Rust code may carry a tag
/// narrowed to the block itself (a `Box` is retagged for its size), which
/// does not cover the header.
#[inline(always)]
pub(crate) fn header_of(p: *mut u8) -> *mut PoolHeader {
    #[cfg(not(miri))]
    if let Some(off) = region::arena_offset(p) {
        return header_at(off);
    }
    core::ptr::with_exposed_provenance_mut(p.addr() & !POOL_SIZE_MASK)
}

/// The header of the pool at offset `off` of the arena region (of any
/// address in it): [`header_of`] with the region already looked at.
#[inline(always)]
pub(crate) fn header_at(off: usize) -> *mut PoolHeader {
    pool_table::entry(off).cast()
}

/// The header of the pool holding `p`, an address of the arena region
/// (a block whose class the block map gave): [`header_of`] without the
/// region's bounds.
#[inline(always)]
pub(crate) fn header_in_region(p: *const u8) -> *mut PoolHeader {
    debug_assert!(region::contains(p));
    pool_table::entry_of(p.addr()).cast()
}

/// The address of the pool whose header is `hdr` (a header [`header_of`]
/// gave): where its blocks are counted from.
#[inline(always)]
pub(crate) fn base_of(hdr: *const PoolHeader) -> *mut u8 {
    match pool_table::pool_offset(hdr.addr()) {
        Some(off) => core::ptr::with_exposed_provenance_mut(region::arena_map().bounds().0 + off),
        None => hdr.cast_mut().cast(),
    }
}

/// True if `hdr` lies in its pool's first bytes (a pool outside the arena
/// region): then the pool's first page holds it.
#[inline]
pub(crate) fn header_in_pool(hdr: *const PoolHeader) -> bool {
    pool_table::pool_offset(hdr.addr()).is_none()
}

/// Size class of a live pymalloc block (read without touching lists).
///
/// # Safety
/// `p` is a live block of some heap.
#[inline(always)]
pub(crate) unsafe fn class_of(p: *mut u8) -> usize {
    #[cfg(not(miri))]
    if let Some(off) = region::arena_offset(p) {
        // SAFETY: off is p's offset in the region.
        return unsafe { class_at(p, off) };
    }
    // SAFETY: the pool of a live block is live and its class cannot change
    // while the block is handed out.
    unsafe { (*header_of(p)).szidx as usize }
}

/// Size class of a live pymalloc block `p` at offset `off` of the arena
/// region: [`class_of`] with the region already looked at.
///
/// # Safety
/// `p` is a live block of some heap and `off` is `region::arena_offset(p)`.
#[inline(always)]
pub(crate) unsafe fn class_at(p: *mut u8, off: usize) -> usize {
    #[cfg(not(miri))]
    {
        let _ = p;
        // SAFETY: off is p's offset in the region (the contract). The pool
        // was set up for its class (and the entry written) before the block
        // was handed out, by the thread now freeing it or before some
        // synchronisation that handed it over. A pool block's cache class
        // is its size class.
        usize::from(unsafe { region::arena_map().class_at(off) })
    }
    #[cfg(miri)]
    {
        let _ = off;
        // SAFETY: the pool of a live block is live and its class cannot
        // change while the block is handed out.
        unsafe { (*header_of(p)).szidx as usize }
    }
}

/// Records the class of `pool` in the region's table (if it is in the
/// region).
#[inline]
fn note_class(pool: *mut PoolHeader, szidx: usize) {
    #[cfg(not(miri))]
    if let Some(off) = region::arena_offset(base_of(pool)) {
        // SAFETY: off is the pool's offset in the region, and its blocks are
        // the caller's to describe (it is setting the pool up).
        unsafe { region::arena_map().set_classes(off, 1, szidx as u8) };
    }
    #[cfg(miri)]
    let _ = (pool, szidx);
}

/// `p` re-derived from the arena's exposed provenance: used for every block
/// coming back from a caller, so the heap never keeps or writes through a
/// caller's (possibly narrowed) tag.
#[inline(always)]
pub(crate) fn launder(p: *mut u8) -> *mut u8 {
    core::ptr::with_exposed_provenance_mut(p.addr())
}

/// Sets up `pool` to hold blocks of class `szidx` with exactly one block in
/// use, and returns that block (the pool's first). The free list then holds
/// just the second block; the rest stays virgin.
///
/// # Safety
/// `pool` is the header ([`header_of`]) of a pool of `POOL_SIZE` writable
/// bytes owned by the caller's heap, and nothing else refers to its blocks.
#[inline]
pub(crate) unsafe fn init_for_class(pool: *mut PoolHeader, szidx: usize) -> *mut u8 {
    let size = class_size(szidx);
    // SAFETY: per the contract `pool` is a writable pool we own; offsets stay
    // inside it because every pool holds at least two blocks.
    unsafe {
        (*pool).szidx = szidx as u16;
        note_class(pool, szidx);
        (*pool).pages_out = 0;
        (*pool).set_count(1);
        let first = base_of(pool).add(POOL_OVERHEAD);
        let second = first.add(size);
        (*pool).nextoffset = (POOL_OVERHEAD + 2 * size) as u32;
        second.cast::<*mut u8>().write(core::ptr::null_mut());
        (*pool).freeblock = second;
        first
    }
}
