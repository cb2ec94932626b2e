//! The decay policy ([`PurgePolicy::Decay`]): memory freed is kept while it
//! is reused and given back once it has gone unused for a while.
//!
//! Sweeps happen at most once per period `ms`, when a pool empties or the
//! background thread calls [`Heap::decay`]. A sweep gives back what was
//! already free at the previous sweep and has not been taken since (the
//! arenas' `stale_bits` and `stale_free` marks), then marks what is free now.
//! So a free pool or arena goes back between `ms` and `2 * ms` after it was
//! last used, and a workload that frees and allocates again within a period
//! keeps its pages mapped and faults nothing in.
//!
//! A sweep touches only what `meta` guards (arena objects, their free pools,
//! the usable list and the counters), never pools in use, so any thread may
//! sweep a heap another thread owns.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::arenas::ArenaObject;
use super::purge::PurgePolicy;
use super::Heap;
use crate::geometry::{ARENA_SIZE, POOL_SIZE};
use crate::os;

/// A heap reads the clock once per this many pools emptied: a program that
/// empties and refills a pool in a loop pays for one clock read in 16 (the
/// background thread sweeps on time anyway).
const CLOCK_EVERY: u64 = 16;

/// The background thread's rendezvous. Invariant: `parked` is set by the
/// thread (before it looks at the heaps a last time and sleeps on `bell`)
/// and cleared by whoever wakes it; the thread sleeps only while `bell` is
/// 0, and whoever wakes it sets `bell` to 1 first.
pub(crate) struct DecayWaker {
    pub(crate) parked: AtomicBool,
    pub(crate) bell: AtomicU32,
}

pub(crate) static WAKER: DecayWaker = DecayWaker { parked: AtomicBool::new(false), bell: AtomicU32::new(0) };

impl DecayWaker {
    /// Wakes the background thread if it parked for want of work (takes no
    /// lock and allocates nothing).
    pub(crate) fn wake_if_parked(&self) {
        if self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst) {
            self.ring();
        }
    }

    /// Wakes the thread wherever it sleeps.
    pub(crate) fn ring(&self) {
        self.bell.store(1, Ordering::SeqCst);
        os::futex_wake(&self.bell);
    }
}

impl Heap {
    /// The `events`-th pool emptied, under the decay policy (`meta` held):
    /// every `CLOCK_EVERY` events, sweep if the period is over; always make
    /// sure someone will come back for what is now free.
    pub(super) fn decay_if_due(&self, events: u64, ms: u32) {
        if events % CLOCK_EVERY == 0 {
            let now = os::now_ms();
            if now >= self.purge.next_sweep.get() {
                self.sweep(now, ms);
            }
        }
        WAKER.wake_if_parked();
    }

    /// Gives back what has been free since the previous sweep and marks
    /// what is free now (`meta` held). Returns the bytes given back.
    fn sweep(&self, now: u64, ms: u32) -> usize {
        let mut bytes = 0;
        let mut ao = self.arenas.usable.get();
        // SAFETY: usable-list entries are live arena objects of this heap;
        // `meta` is held. An arena marked `stale_free` has every pool free,
        // so nothing in it is in use.
        unsafe {
            while !ao.is_null() {
                let next = (*ao).nextarena;
                bytes += self.sweep_arena(ao);
                ao = next;
            }
        }
        bytes += self.spans.sweep();
        // The segment region's kept slots (freed huge blocks, span segments
        // heaps gave back) decay on the same clock; it sweeps at most once
        // per period whoever asks.
        bytes += crate::huge::sweep_if_due();
        self.purge.next_sweep.set(now.saturating_add(u64::from(ms)));
        bytes
    }

    /// One arena of a sweep. Returns the bytes given back.
    ///
    /// # Safety
    /// `ao` is a live arena object on this heap's usable list; `meta` is
    /// held.
    unsafe fn sweep_arena(&self, ao: *mut ArenaObject) -> usize {
        // SAFETY: per the contract.
        unsafe {
            if (*ao).stale_free {
                debug_assert_eq!((*ao).nfreepools, (*ao).ntotalpools);
                self.arenas.leave_finger(ao);
                self.arenas.unlink_usable(ao);
                self.release_arena(ao);
                return ARENA_SIZE;
            }
            let mut n = 0;
            let stale = (*ao).stale_bits;
            if stale != 0 && (*ao).purgeable {
                n = self.decommit_pools(ao, stale);
            }
            (*ao).stale_bits = (*ao).free_bits;
            (*ao).stale_free = (*ao).nfreepools == (*ao).ntotalpools;
            n * POOL_SIZE
        }
    }

    /// Sweeps as the decay policy does, if this heap has that policy and a
    /// sweep is due by the clock. Any thread may call it: it touches only
    /// what the heap's bookkeeping lock guards. Returns the bytes given
    /// back.
    pub fn decay(&self) -> usize {
        self.decay_at(os::now_ms())
    }

    /// [`Heap::decay`] with the time given, in milliseconds of a monotonic
    /// clock (for tests and for callers that keep their own time).
    pub fn decay_at(&self, now_ms: u64) -> usize {
        let _meta = self.meta.lock();
        match self.purge.policy() {
            PurgePolicy::Decay { ms } if now_ms >= self.purge.next_sweep.get() => self.sweep(now_ms, ms),
            _ => 0,
        }
    }

    /// A request of at least an arena's size is going to the front's
    /// fallback (the C library, or the segment region), which grows the
    /// process by that much: under the decay policy, gives back the heap's
    /// empty pools and wholly free arenas now rather than after the decay,
    /// so that memory kept for reuse does not add to a new peak. (A program
    /// that frees a phase's objects and then builds one large buffer, as
    /// pyperformance's pyflate does, peaked 2.4 MiB above stock CPython, whose
    /// arenas go back at once.) At most once per quarter period, so that a
    /// loop of large requests between bursts of small ones faults pools in
    /// again at most four times a period. Any thread may call it (`meta`
    /// only). Returns the bytes given back.
    pub(crate) fn make_room(&self) -> usize {
        let _meta = self.meta.lock();
        let PurgePolicy::Decay { ms } = self.purge.policy() else { return 0 };
        // The clock first: one read of a coarse clock, where the test for
        // free memory may walk the arenas.
        let now = os::now_ms();
        if now < self.purge.next_room.get() || !self.holds_free_locked() {
            return 0;
        }
        self.purge.next_room.set(now.saturating_add(u64::from(ms / 4)));
        self.release_empty_locked()
    }

    /// True if the heap holds freed memory a later sweep would give back:
    /// empty pools with their pages, or wholly free arenas. Any thread may
    /// call it.
    pub fn holds_free_memory(&self) -> bool {
        let _meta = self.meta.lock();
        self.holds_free_locked()
    }

    /// One round of the background thread, under one lock: sweeps if the
    /// heap decays and a sweep is due at `now_ms`; returns the period if
    /// the heap still holds free memory for a later sweep.
    pub(crate) fn decay_round(&self, now_ms: u64) -> Option<u32> {
        let _meta = self.meta.lock();
        let PurgePolicy::Decay { ms } = self.purge.policy() else { return None };
        if now_ms >= self.purge.next_sweep.get() {
            self.sweep(now_ms, ms);
        }
        self.holds_free_locked().then_some(ms)
    }

    /// [`Heap::holds_free_memory`] with `meta` held.
    fn holds_free_locked(&self) -> bool {
        if self.arenas.committed_empty.get() > 0 || self.spans.holds_free() {
            return true;
        }
        let mut ao = self.arenas.usable.get();
        // SAFETY: usable-list entries are live arena objects; `meta` is held.
        unsafe {
            while !ao.is_null() {
                if (*ao).nfreepools == (*ao).ntotalpools {
                    return true;
                }
                ao = (*ao).nextarena;
            }
        }
        false
    }

    /// The decay period if the heap's policy is [`PurgePolicy::Decay`].
    pub fn decay_period_ms(&self) -> Option<u32> {
        let _meta = self.meta.lock();
        match self.purge.policy() {
            PurgePolicy::Decay { ms } => Some(ms),
            _ => None,
        }
    }
}
