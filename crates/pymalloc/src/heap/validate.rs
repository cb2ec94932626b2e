//! Checking every invariant written at the heap's structures (the checks
//! CPython makes under `Py_DEBUG`, and more): for tests, fuzzing and
//! debugging, never on a hot path. Nothing here allocates, so validation
//! may run inside a global allocator.

use core::ptr;

use super::arenas::ArenaObject;
use super::cache::CACHE_SLOTS;
use super::{pages, Heap};
use crate::geometry::{
    class_size, num_blocks, ARENA_SIZE, MAX_POOLS_IN_ARENA, NB_SMALL_SIZE_CLASSES, POOL_OVERHEAD, POOL_SIZE,
    POOL_SIZE_MASK,
};
use crate::ownership::owns;
use crate::pool::{self, header_of, PoolHeader};

/// A broken heap invariant, reported by [`Heap::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvariantError {
    /// Which invariant failed.
    pub what: &'static str,
    /// An address or count that locates the failure.
    pub at: usize,
}

impl core::fmt::Display for InvariantError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "heap invariant broken: {} (at {:#x})", self.what, self.at)
    }
}

impl std::error::Error for InvariantError {}

fn check(ok: bool, what: &'static str, at: usize) -> Result<(), InvariantError> {
    if ok {
        Ok(())
    } else {
        Err(InvariantError { what, at })
    }
}

/// What the walk over the pools counts, to check against the heap's own
/// counts and lists.
struct PoolTally {
    /// Used pools per class: their used list's length.
    on_used: [usize; NB_SMALL_SIZE_CLASSES],
    /// Pools in use (used, full, retained).
    in_use: usize,
    /// Pages out.
    pages_out: usize,
}

impl PoolTally {
    fn new() -> PoolTally {
        PoolTally { on_used: [0; NB_SMALL_SIZE_CLASSES], in_use: 0, pages_out: 0 }
    }
}

impl Heap {
    /// Checks every structural invariant of the heap (the checks CPython
    /// makes under `Py_DEBUG`, and more). Walks all arenas and pools: for
    /// tests, fuzzing and debugging, not for hot paths. Owner only.
    pub fn validate(&self) -> Result<(), InvariantError> {
        let _meta = self.meta.lock();
        self.spans.validate().map_err(|(what, at)| InvariantError { what, at })?;
        self.validate_outbox().map_err(|(what, at)| InvariantError { what, at })?;
        // Arena objects: unused list vs. live arenas.
        let mut live = 0usize;
        let mut usable_expected = 0usize;
        let mut committed = 0usize;
        let mut err = Ok(());
        self.arenas.for_each(|ao| {
            live += 1;
            if ao.nfreepools > 0 {
                usable_expected += 1;
            }
            committed += ao.nfree_committed as usize;
            let a = ao.address.addr();
            let r = check(owns(ao.address), "arena not owned", a)
                .and(check(owns(ao.address.wrapping_add(ARENA_SIZE - 1)), "arena end not owned", a))
                .and(check(ao.nfreepools <= ao.ntotalpools, "more free pools than pools", a))
                .and(check((a..=a + ARENA_SIZE).contains(&ao.pool_address.addr()), "pool_address outside arena", a))
                .and(check(ao.decommitted == 0 || ao.purgeable, "decommitted pools in a foreign arena", a))
                .and(check(ao.stale_bits & !ao.free_bits == 0, "stale pool not on the free list", a))
                .and(check(!ao.stale_free || ao.nfreepools == ao.ntotalpools, "stale arena with pools in use", a));
            if err.is_ok() {
                err = r;
            }
        });
        err?;
        check(live == self.arenas.ncurrent.get(), "live arena count", live)?;
        check(self.arenas.highwater.get() >= live, "highwater below current", live)?;
        check(committed == self.arenas.committed_empty.get(), "committed empty pool count", committed)?;
        let mut unused = 0usize;
        let mut ao = self.arenas.unused.get();
        while !ao.is_null() {
            // SAFETY: unused list entries are table slots.
            unsafe {
                check((*ao).address.is_null(), "unused arena object has an address", ao.addr())?;
                ao = (*ao).nextarena;
            }
            unused += 1;
            check(unused <= self.arenas.max.get() as usize, "unused list cycles", unused)?;
        }
        check(unused + live == self.arenas.max.get() as usize, "arena objects lost", unused)?;

        // Usable arenas: sorted, linked both ways, fingers right.
        let mut n = 0usize;
        let mut prev: *mut ArenaObject = ptr::null_mut();
        let mut ao = self.arenas.usable.get();
        let mut last_with = [ptr::null_mut::<ArenaObject>(); MAX_POOLS_IN_ARENA + 1];
        while !ao.is_null() {
            // SAFETY: usable list entries are live table slots.
            unsafe {
                let nf = (*ao).nfreepools as usize;
                check(!(*ao).address.is_null(), "usable arena not allocated", ao.addr())?;
                check(nf > 0, "usable arena without free pools", ao.addr())?;
                check((*ao).prevarena == prev, "usable list back link", ao.addr())?;
                if !prev.is_null() {
                    check((*prev).nfreepools as usize <= nf, "usable arenas out of order", nf)?;
                }
                last_with[nf] = ao;
                prev = ao;
                ao = (*ao).nextarena;
            }
            n += 1;
            check(n <= live, "usable list cycles", n)?;
        }
        check(n == usable_expected, "arena with free pools missing from usable list", n)?;
        for (i, (&want, got)) in last_with.iter().zip(self.arenas.nfp2lasta.iter()).enumerate() {
            check(want == got.get(), "nfp2lasta finger wrong", i)?;
        }

        // The block cache: blocks of the right class, in use in their pools,
        // each once.
        // (A fixed array: validation may run inside a global allocator.)
        let mut seen = [0usize; NB_SMALL_SIZE_CLASSES * CACHE_SLOTS];
        let mut nseen = 0;
        for c in 0..NB_SMALL_SIZE_CLASSES {
            // Checked before the blocks are read: `blocks` relies on it.
            check(self.cache().cached(c) <= self.cache().max(), "cache over its limit", c)?;
            for b in self.cache().blocks(c) {
                check(owns(b), "cached block outside every arena", b.addr())?;
                let pool = header_of(b);
                // SAFETY: b lies in a live arena; its pool is carved (it
                // held b) and initialised.
                unsafe {
                    check((*pool).szidx as usize == c, "cached block of another class", b.addr())?;
                    check((*pool).count() > 0, "cached block in an empty pool", b.addr())?;
                    check((*pool).owner == self.owner_tag(), "cached block of another heap", b.addr())?;
                    let off = b.addr() & POOL_SIZE_MASK;
                    check(
                        off >= POOL_OVERHEAD && (off - POOL_OVERHEAD) % class_size(c) == 0,
                        "cached block misaligned",
                        b.addr(),
                    )?;
                }
                seen[nseen] = b.addr();
                nseen += 1;
            }
        }
        let seen = &mut seen[..nseen];
        seen.sort_unstable();
        check(seen.windows(2).all(|w| w[0] != w[1]), "block cached twice", nseen)?;

        // Pools: counts, free lists, list membership.
        let mut t = PoolTally::new();
        let mut r = Ok(());
        self.arenas.for_each_pool(|ao, i, base, h| {
            if r.is_err() {
                return;
            }
            // SAFETY: carved pools are initialised; free-list entries are
            // checked to be inside the pool before they are followed.
            r = unsafe { self.check_pool(ao, i, base, h, &mut t) };
        });
        r?;
        check(t.in_use == self.arenas.pools_in_use.get(), "pools in use count", t.in_use)?;
        check(t.pages_out == self.arenas.pages_out.get(), "pages out count", t.pages_out)?;
        for (c, &expected) in t.on_used.iter().enumerate() {
            let mut n = 0usize;
            let mut prev = ptr::null_mut();
            let mut p = self.used.first[c].get();
            while !p.is_null() {
                // SAFETY: used-list entries are live pools.
                unsafe {
                    check((*p).szidx as usize == c, "pool on the wrong used list", p.addr())?;
                    check((*p).prevpool == prev, "used list back link", p.addr())?;
                    prev = p;
                    p = (*p).nextpool;
                }
                n += 1;
                check(n <= expected, "used list too long or cyclic", c)?;
            }
            check(self.used.last[c].get() == prev, "used list tail", c)?;
            check(n == expected, "used pool missing from its list", c)?;
        }
        Ok(())
    }

    unsafe fn check_pool(
        &self,
        ao: &ArenaObject,
        index: usize,
        base: *mut u8,
        h: *mut PoolHeader,
        t: &mut PoolTally,
    ) -> Result<(), InvariantError> {
        let at = base.addr();
        let decommitted = ao.decommitted & (1u64 << index) != 0;
        // SAFETY: see the caller.
        unsafe {
            let mut f = ao.freepools;
            let mut on_free = false;
            while !f.is_null() {
                on_free |= f == h;
                f = (*f).nextpool;
            }
            check(on_free == (ao.free_bits & (1u64 << index) != 0), "free-pool mask disagrees with the list", at)?;
            if decommitted {
                // Its header is not read: kept in the pool, it would fault
                // the page back in.
                return check(!on_free, "decommitted pool on a free list", at);
            }
            check(ptr::eq(self.arenas.table.get().add((*h).arenaindex as usize), ao), "pool arena index", at)?;
            check((*h).owner == self.owner_tag(), "pool owner", at)?;
            let count = (*h).count() as usize;
            if on_free {
                check((*h).pages_out == 0, "free pool with pages out", at)?;
                return check(count == 0, "pool in use on a free list", at);
            }
            t.in_use += 1;
            let first = base.add(POOL_OVERHEAD);
            check(pool::class_of(first) == usize::from((*h).szidx), "pool class table disagrees with the header", at)?;
            let sz = (*h).szidx as usize;
            if count == 0 {
                check(
                    sz < NB_SMALL_SIZE_CLASSES && self.used.first[sz].get() == h,
                    "empty pool neither free nor retained at the head of its list",
                    at,
                )?;
            }
            check(sz < NB_SMALL_SIZE_CLASSES, "bad size class", at)?;
            let size = class_size(sz);
            let virgin_from = (*h).nextoffset as usize;
            check(virgin_from >= POOL_OVERHEAD + size, "nextoffset too small", at)?;
            let carved = (virgin_from.min(POOL_SIZE) - POOL_OVERHEAD) / size;
            let out = (*h).pages_out;
            if out != 0 {
                check(ao.purgeable, "pages out in a foreign arena", at)?;
                check(pages::mask_is_valid(h, out, size, virgin_from), "pages out not wholly carved", at)?;
                check(!(*h).freeblock.is_null(), "pages out with an empty free list", at)?;
                t.pages_out += out.count_ones() as usize;
            }
            let mut free = 0usize;
            let mut b = (*h).freeblock;
            while !b.is_null() {
                let off = b.addr().wrapping_sub(at);
                check(off >= POOL_OVERHEAD && off < virgin_from, "free block outside carved area", at)?;
                check((off - POOL_OVERHEAD) % size == 0, "free block misaligned", b.addr())?;
                check(!pages::overlaps_out(out, off, size), "free block on a page out", b.addr())?;
                free += 1;
                check(free <= carved, "free list cycles", at)?;
                b = b.cast::<*mut u8>().read();
            }
            let gone = if out == 0 { 0 } else { pages::blocks_out(out, size) };
            check(count + free + gone == carved, "count + free + blocks of pages out != carved blocks", at)?;
            let full = count == num_blocks(sz);
            check(full == (*h).freeblock.is_null(), "free list empty iff full", at)?;
            if !full {
                t.on_used[sz] += 1;
            }
            Ok(())
        }
    }
}
