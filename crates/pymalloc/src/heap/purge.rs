//! Giving memory back while arenas stay in use: the pages of empty pools
//! are `madvise(MADV_DONTNEED)`-ed, runs of neighbouring pools in one call,
//! as the heap's [`PurgePolicy`] says. A decommitted pool reads as zeroes
//! and is set up again as a virgin pool when it is next taken. The decay
//! policy's sweeps are in `decay.rs`.

use core::cell::Cell;

use super::arenas::ArenaObject;
use super::Heap;
use crate::geometry::{MAX_POOLS_IN_ARENA, POOL_SIZE};
use crate::pool::PoolHeader;
use crate::{os, pool_table, region};

/// The threshold policy gives an arena's free pools back only if one
/// `madvise` returns this many pools on average (64 KiB by default): scattered
/// single free pools, as random frees leave them, are not worth a system call
/// each, and their arena is likely to become wholly free and go back whole.
const MIN_POOLS_PER_CALL: usize = 4;

/// After a purge that could not reach its target, the threshold policy waits
/// this many emptied pools before walking the arenas again, doubling the wait
/// after each walk that gave nothing back, up to `PURGE_RETRY_MAX`.
const PURGE_RETRY_EVENTS: u64 = 32;
const PURGE_RETRY_MAX: u64 = 8192;

/// When empty pools inside live arenas give their pages back to the OS,
/// and when wholly free arenas do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurgePolicy {
    /// Keep what was freed for a while, give back what stays unused (as
    /// jemalloc's `dirty_decay_ms` and mimalloc's purge delay do): empty pools
    /// and wholly free arenas are kept while they are reused, and go back to
    /// the OS once they have gone unused for between `ms` and `2 * ms`
    /// milliseconds. Time is read every 16th time a pool empties, and by the background
    /// thread ([`crate::config::start_background_decay`]) when the process
    /// makes no calls.
    Decay {
        /// The decay period in milliseconds.
        ms: u32,
    },
    /// Never (CPython's behaviour): only whole arenas go back, at once.
    Never,
    /// As soon as a pool becomes empty.
    Immediate,
    /// When the heap holds more than `max(min_pools, pools_in_use /
    /// divisor)` empty pools with pages, give back those of the emptiest
    /// arenas until half that many remain, skipping arenas whose free pools
    /// are too scattered for a system call to return at least 64 KiB.
    Threshold {
        /// Empty pools always tolerated.
        min_pools: usize,
        /// Empty pools tolerated per pool in use is `1 / divisor`.
        divisor: usize,
    },
}

/// [`PurgePolicy::parse`]'s error, out of line: the preload library's
/// start-up parses the variable, and four inlined copies of the message's
/// formatting took room in its one window of resident text.
#[cold]
#[inline(never)]
fn unknown_policy(name: &str) -> String {
    format!("unknown purge policy '{name}'; valid: {}", PurgePolicy::NAMES)
}

impl PurgePolicy {
    /// The default: [`PurgePolicy::Decay`] with a one-second period.
    pub const DEFAULT: PurgePolicy = PurgePolicy::Decay { ms: 1000 };

    /// The policy `threshold` names: `Threshold { min_pools:
    /// MAX_POOLS_IN_ARENA, divisor: 4 }` (an arena's worth, or a quarter of
    /// what is in use).
    pub const THRESHOLD: PurgePolicy = PurgePolicy::Threshold { min_pools: MAX_POOLS_IN_ARENA, divisor: 4 };

    /// The names [`PurgePolicy::parse`] accepts.
    pub const NAMES: &'static str =
        "default, decay, decay:MS, never, immediate, threshold, threshold:MIN_POOLS:DIVISOR";

    /// Reads a policy by name: `default` (or empty) and `decay` are
    /// [`PurgePolicy::DEFAULT`]; `decay:MS` sets the period; `never`,
    /// `immediate`; `threshold` is [`PurgePolicy::THRESHOLD`], and
    /// `threshold:MIN_POOLS:DIVISOR` (a positive divisor) sets its figures.
    /// An unknown name is an error that lists the valid ones.
    ///
    /// ```
    /// use pymalloc::PurgePolicy;
    /// assert_eq!(PurgePolicy::parse("decay:250"), Ok(PurgePolicy::Decay { ms: 250 }));
    /// assert_eq!(PurgePolicy::parse(&PurgePolicy::THRESHOLD.name()), Ok(PurgePolicy::THRESHOLD));
    /// assert!(PurgePolicy::parse("soon").unwrap_err().contains("valid: default, decay"));
    /// ```
    pub fn parse(name: &str) -> Result<PurgePolicy, String> {
        match name {
            "" | "default" | "decay" => return Ok(PurgePolicy::DEFAULT),
            "never" => return Ok(PurgePolicy::Never),
            "immediate" => return Ok(PurgePolicy::Immediate),
            "threshold" => return Ok(PurgePolicy::THRESHOLD),
            _ => {}
        }
        let bad = || unknown_policy(name);
        if let Some(ms) = name.strip_prefix("decay:") {
            return ms.parse::<u32>().map(|ms| PurgePolicy::Decay { ms }).map_err(|_| bad());
        }
        let rest = name.strip_prefix("threshold:").ok_or_else(bad)?;
        let (a, b) = rest.split_once(':').ok_or_else(bad)?;
        match (a.parse::<usize>(), b.parse::<usize>()) {
            (Ok(min_pools), Ok(divisor)) if divisor > 0 => Ok(PurgePolicy::Threshold { min_pools, divisor }),
            _ => Err(bad()),
        }
    }

    /// The policy's name, as [`PurgePolicy::parse`] reads it back.
    pub fn name(&self) -> String {
        match *self {
            PurgePolicy::Decay { ms } => format!("decay:{ms}"),
            PurgePolicy::Never => "never".into(),
            PurgePolicy::Immediate => "immediate".into(),
            PurgePolicy::Threshold { min_pools, divisor } => format!("threshold:{min_pools}:{divisor}"),
        }
    }
}

impl Default for PurgePolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The policy, the threshold policy's back-off and the decay policy's
/// clock. Invariants: `events` counts pools emptied so far; the threshold
/// policy walks the arenas only once `events >= next_check`; `backoff` is
/// the wait after a walk that fell short, between `PURGE_RETRY_EVENTS` and
/// `PURGE_RETRY_MAX` (0 reads as `PURGE_RETRY_EVENTS`); the decay policy
/// sweeps at the first event at or after `next_sweep` (milliseconds of
/// [`os::now_ms`]), and gives back before a large request of the front's
/// fallback no sooner than `next_room` ([`Heap::make_room`]). The policy
/// is [`PurgePolicy::DEFAULT`] until `chosen` (so a new state is all zero
/// bytes: see `Heap`). All of it is read and
/// written under `meta` only, so that the background thread may sweep a
/// heap another thread owns.
pub(super) struct PurgeState {
    chosen: Cell<bool>,
    policy: Cell<PurgePolicy>,
    pub(super) events: Cell<u64>,
    next_check: Cell<u64>,
    backoff: Cell<u64>,
    pub(super) next_sweep: Cell<u64>,
    pub(super) next_room: Cell<u64>,
}

impl PurgeState {
    pub(super) const fn new() -> PurgeState {
        PurgeState {
            chosen: Cell::new(false),
            // Not read until chosen; the variant whose bytes are zero.
            policy: Cell::new(PurgePolicy::Decay { ms: 0 }),
            events: Cell::new(0),
            next_check: Cell::new(0),
            backoff: Cell::new(0),
            next_sweep: Cell::new(0),
            next_room: Cell::new(0),
        }
    }

    /// The policy (`meta` held).
    #[inline]
    pub(super) fn policy(&self) -> PurgePolicy {
        if self.chosen.get() {
            self.policy.get()
        } else {
            PurgePolicy::DEFAULT
        }
    }

    /// Sets the policy (`meta` held).
    pub(super) fn set_policy(&self, p: PurgePolicy) {
        self.policy.set(p);
        self.chosen.set(true);
    }

    /// Whether wholly free arenas stay until the decay gives them back
    /// (`meta` held).
    pub(super) fn keeps_free_arenas(&self) -> bool {
        matches!(self.policy(), PurgePolicy::Decay { .. })
    }
}

impl Heap {
    /// A pool just emptied: gives pages back if the policy says so (`meta`
    /// held).
    pub(super) fn apply_purge_policy(&self) {
        let p = &self.purge;
        let empty = self.arenas.committed_empty.get();
        let events = p.events.get() + 1;
        p.events.set(events);
        match p.policy() {
            PurgePolicy::Decay { ms } => self.decay_if_due(events, ms),
            PurgePolicy::Never => {}
            PurgePolicy::Immediate => {
                if empty > 0 {
                    self.decommit_down_to(0, 1);
                }
            }
            PurgePolicy::Threshold { min_pools, divisor } => {
                let limit = min_pools.max(self.arenas.pools_in_use.get() / divisor.max(1));
                if empty > limit && events >= p.next_check.get() {
                    let given = self.decommit_down_to(limit / 2, MIN_POOLS_PER_CALL);
                    if self.arenas.committed_empty.get() > limit {
                        // Not enough worth giving back yet: look again later,
                        // later still if this walk found nothing.
                        let wait = p.backoff.get().max(PURGE_RETRY_EVENTS);
                        p.next_check.set(events + wait);
                        if given == 0 {
                            p.backoff.set((wait * 2).min(PURGE_RETRY_MAX));
                        } else {
                            p.backoff.set(PURGE_RETRY_EVENTS);
                        }
                    } else {
                        p.backoff.set(PURGE_RETRY_EVENTS);
                    }
                }
            }
        }
    }

    /// Gives back the pages of empty pools, emptiest arenas first, until at
    /// most `target` empty pools keep theirs, in arenas where one system call
    /// returns `min_per_call` pools on average (`meta` held). Returns the
    /// pools decommitted.
    pub(super) fn decommit_down_to(&self, target: usize, min_per_call: usize) -> usize {
        // The usable list is sorted most-used first: walk it from the end.
        let mut ao = self.arenas.usable.get();
        // SAFETY: usable-list entries are live arena objects; `meta` is held.
        unsafe {
            if ao.is_null() {
                return 0;
            }
            while !(*ao).nextarena.is_null() {
                ao = (*ao).nextarena;
            }
            let mut n = 0;
            while !ao.is_null() && self.arenas.committed_empty.get() > target {
                if (*ao).purgeable && (*ao).nfree_committed > 0 {
                    n += self.decommit_arena_pools(ao, min_per_call);
                }
                ao = (*ao).prevarena;
            }
            n
        }
    }

    /// Gives back the pages of every pool on `ao`'s free list, in runs of
    /// adjacent pools, if the runs average `min_per_call` pools. Returns how
    /// many pools.
    ///
    /// # Safety
    /// `ao` is a live, purgeable arena object of this heap; `meta` is held.
    unsafe fn decommit_arena_pools(&self, ao: *mut ArenaObject, min_per_call: usize) -> usize {
        // SAFETY: per the contract; free pools hold nothing anyone uses, and
        // every run lies inside the arena.
        unsafe {
            let mask = (*ao).free_bits;
            let n = mask.count_ones() as usize;
            // Runs of set bits: each starts where a bit is set and the one
            // below it is not.
            let runs = (mask & !(mask << 1)).count_ones() as usize;
            if n < min_per_call * runs {
                return 0;
            }
            self.decommit_pools(ao, mask)
        }
    }

    /// Gives back the pages of the free pools of `ao` in `mask` (a subset
    /// of its `free_bits`), in runs of adjacent pools, and takes them off its
    /// free list. Returns how many pools.
    ///
    /// # Safety
    /// `ao` is a live, purgeable arena object of this heap; `meta` is held.
    pub(super) unsafe fn decommit_pools(&self, ao: *mut ArenaObject, mask: u64) -> usize {
        // SAFETY: per the contract; free pools hold nothing anyone uses, and
        // every run lies inside the arena. The free list links only pools of
        // this arena.
        unsafe {
            debug_assert_eq!(mask & !(*ao).free_bits, 0);
            if mask == 0 {
                return 0;
            }
            // Unlinked first: the links lie in the pools' headers, which
            // the discard zeroes where they are kept in the pool.
            if mask == (*ao).free_bits {
                (*ao).freepools = core::ptr::null_mut();
            } else {
                // Unlink the pools of `mask`, keeping the others in order.
                let mut link: *mut *mut PoolHeader = &raw mut (*ao).freepools;
                while !(*link).is_null() {
                    if mask & (*ao).bit(*link) != 0 {
                        *link = (**link).nextpool;
                    } else {
                        link = &raw mut (**link).nextpool;
                    }
                }
            }
            os::discard_runs((*ao).first_pool(), mask, POOL_SIZE);
            // Headers in the table read as zeroes too, as headers in the
            // pools now do (`pool_table.rs`).
            if let Some(off) = region::arena_offset((*ao).first_pool()) {
                let mut m = mask;
                while m != 0 {
                    let i = m.trailing_zeros() as usize;
                    pool_table::clear(off + i * POOL_SIZE);
                    m &= m - 1;
                }
            }
            let n = mask.count_ones() as usize;
            (*ao).free_bits &= !mask;
            (*ao).stale_bits &= !mask;
            (*ao).nfree_committed -= n as u32;
            (*ao).decommitted |= mask;
            let a = &self.arenas;
            a.committed_empty.set(a.committed_empty.get() - n);
            n
        }
    }

    /// [`Heap::purge`] through a shared reference: for the owner of a
    /// shared heap (a thread heap, a [`GilHeap`](crate::GilHeap) with its
    /// lock held). Blocks other threads sent back are freed first; then the
    /// free pages of pools in use, empty pools and wholly free arenas go
    /// back.
    pub fn purge_shared(&self) -> usize {
        self.drain_remote();
        self.release_held_pools();
        self.release_kept_spans();
        let _meta = self.meta.lock();
        self.discard_free_pages() + self.release_empty_locked()
    }

    /// Gives back the pages of every empty pool and every wholly free arena
    /// (the spare too), whatever the policy; leaves pools in use alone. Any
    /// thread may call it: it touches only what the heap's bookkeeping lock
    /// guards. Returns the bytes.
    pub fn release_empty(&self) -> usize {
        let _meta = self.meta.lock();
        self.release_empty_locked()
    }

    /// [`Heap::release_empty`] with `meta` held.
    pub(super) fn release_empty_locked(&self) -> usize {
        self.decommit_down_to(0, 1) * POOL_SIZE + self.release_free_arenas() + self.spans.purge()
    }
}
