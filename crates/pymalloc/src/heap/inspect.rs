//! Looking at a heap from outside: statistics (CPython's
//! `_PyObject_DebugMallocStats` figures) and a picture of every arena, both
//! safe to take from another thread while the owner works (under `meta`).

use core::ptr;
use core::sync::atomic::Ordering;

use super::pages::PinningBlock;
use super::Heap;
use crate::geometry::{num_blocks, MAX_POOLS_IN_ARENA, NB_SMALL_SIZE_CLASSES, POOL_SIZE, POOL_SIZE_MASK};
use crate::radix::ARENA_MAP;
use crate::stats::Stats;
use crate::{pool, pool_table, region};

/// What one pool of an arena holds, as [`Heap::visit_arenas`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PoolState {
    /// Not carved from the arena yet: never touched.
    #[default]
    Untouched,
    /// Carved once, now empty (on the arena's free pools).
    Empty,
    /// Empty, and its pages were given back to the OS.
    Decommitted,
    /// Holding `blocks` blocks of size class `class`, with room for more.
    Used {
        /// Size class index.
        class: u8,
        /// Blocks in use.
        blocks: u16,
    },
    /// Every block of size class `class` in use.
    Full {
        /// Size class index.
        class: u8,
    },
}

/// One arena and the state of each of its pools.
#[derive(Clone, Copy, Debug)]
pub struct ArenaInfo {
    /// Base address of the arena.
    pub address: usize,
    /// Offset of the first pool (non-zero when the arena is not
    /// pool-aligned).
    pub first_pool_offset: usize,
    /// Pools the arena holds.
    pub ntotalpools: usize,
    /// Free pools: empty, decommitted and untouched.
    pub nfreepools: usize,
    /// `pools[..ntotalpools]`, in address order.
    pub pools: [PoolState; MAX_POOLS_IN_ARENA],
}

impl Heap {
    /// Calls `f` with a picture of every live arena, in table order. Nothing
    /// is allocated; `f` must not allocate from this heap.
    pub fn visit_arenas(&self, mut f: impl FnMut(&ArenaInfo)) {
        let _meta = self.meta.lock();
        self.arenas.for_each(|ao| {
            let base = ao.first_pool().addr();
            let mut info = ArenaInfo {
                address: ao.address.addr(),
                first_pool_offset: base - ao.address.addr(),
                ntotalpools: ao.ntotalpools as usize,
                nfreepools: ao.nfreepools as usize,
                pools: [PoolState::Untouched; MAX_POOLS_IN_ARENA],
            };
            let carved = (ao.pool_address.addr() - base) / POOL_SIZE;
            let free = ao.free_bits;
            for (i, state) in info.pools.iter_mut().enumerate().take(carved) {
                if ao.decommitted & (1u64 << i) != 0 {
                    *state = PoolState::Decommitted;
                    continue;
                }
                if free & (1u64 << i) != 0 {
                    *state = PoolState::Empty;
                    continue;
                }
                // SAFETY: pools below pool_address are carved and initialised;
                // the address lies inside this live arena; only the two fields
                // others may read are read.
                let (count, sz) = unsafe {
                    let h = pool::header_of(ao.address.with_addr(base + i * POOL_SIZE));
                    (pool::shared_count(h) as usize, pool::shared_szidx(h) as usize)
                };
                *state = if count == num_blocks(sz) {
                    PoolState::Full { class: sz as u8 }
                } else {
                    PoolState::Used { class: sz as u8, blocks: count as u16 }
                };
            }
            f(&info);
        })
    }

    /// Pictures of every live arena (see [`Heap::visit_arenas`]), the
    /// vector allocated outside the bookkeeping lock.
    pub fn arenas(&self) -> Vec<ArenaInfo> {
        collect_bounded(|| self.arena_count(), |f| self.visit_arenas(f))
    }

    /// The blocks of [`Heap::visit_pinning_blocks`], collected. Owner only.
    pub fn pinning_blocks(&self) -> Vec<PinningBlock> {
        let count = || self.pinning().iter().map(|p| p.sparse_blocks).sum();
        collect_bounded(count, |f| self.visit_pinning_blocks(f))
    }

    /// True if the heap holds an arena or a span segment (any thread may
    /// ask, under the heap's bookkeeping lock; a figure of the moment).
    pub(crate) fn holds_memory(&self) -> bool {
        let _meta = self.meta.lock();
        self.arenas.ncurrent.get() != 0 || self.spans.stats().segments != 0
    }

    /// Number of live arenas.
    pub fn arena_count(&self) -> usize {
        let _meta = self.meta.lock();
        self.arenas.ncurrent.get()
    }

    /// A snapshot of the heap's statistics (see [`crate::stats`]).
    pub fn stats(&self) -> Stats {
        let _meta = self.meta.lock();
        self.stats_locked()
    }

    /// The statistics, with `meta` held or exclusive access.
    pub(super) fn stats_locked(&self) -> Stats {
        let mut s = Stats::new();
        s.arenas_allocated_total = self.arenas.ntimes_allocated.get();
        s.arenas_highwater = self.arenas.highwater.get();
        s.raw_allocated_blocks = self.raw_allocated_blocks.load(Ordering::Relaxed);
        s.pages_out = self.arenas.pages_out.get();
        self.arenas.for_each(|ao| {
            s.arenas_current += 1;
            s.unused_pools += ao.nfreepools as usize;
            s.decommitted_pools += ao.decommitted.count_ones() as usize;
            if ao.address.addr() & POOL_SIZE_MASK != 0 {
                s.arena_alignment_bytes += POOL_SIZE;
            }
            if region::contains(ao.address) {
                s.header_table_bytes += pool_table::ARENA_ENTRY_BYTES;
            }
        });
        let mut free = (ptr::null::<u8>(), 0u64);
        self.arenas.for_each_pool(|ao, i, _, h| {
            if ao.decommitted & (1u64 << i) != 0 {
                return;
            }
            if free.0 != ao.address.cast_const() {
                free = (ao.address.cast_const(), ao.free_bits);
            }
            if free.1 & (1u64 << i) != 0 {
                return;
            }
            // A pool neither free nor decommitted is in use (a retained one
            // holds no block).
            // SAFETY: carved pools are initialised; only the two fields
            // others may read are read.
            let (count, sz) = unsafe { (pool::shared_count(h) as usize, pool::shared_szidx(h) as usize) };
            let c = &mut s.classes[sz];
            c.pools += 1;
            c.blocks_in_use += count;
            c.avail_blocks += num_blocks(sz) - count;
        });
        // Cached blocks are free to the user. (Read from another thread the
        // two counts may be a moment apart: never below zero.)
        for (i, c) in s.classes.iter_mut().enumerate().take(NB_SMALL_SIZE_CLASSES) {
            let k = self.cache().cached(i).min(c.blocks_in_use);
            c.blocks_in_use -= k;
            c.avail_blocks += k;
        }
        s.arenas_reclaimed = s.arenas_allocated_total - s.arenas_current;
        s.finish(ARENA_MAP.usage());
        s
    }
}

/// What a heap's visit yields (pictures of its arenas, pinning blocks), in a
/// vector allocated while no lock is held (it may come from the very heap):
/// `count` and `visit` each take what reaching the heap needs, and the visit
/// is retried if more items appeared in between.
pub(crate) fn collect_bounded<T: Copy>(count: impl Fn() -> usize, visit: impl Fn(&mut dyn FnMut(&T))) -> Vec<T> {
    loop {
        let mut out = Vec::with_capacity(count());
        let mut fits = true;
        visit(&mut |a| {
            if out.len() < out.capacity() {
                out.push(*a);
            } else {
                fits = false;
            }
        });
        if fits {
            return out;
        }
    }
}
