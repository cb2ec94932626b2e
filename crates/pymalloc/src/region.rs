//! Reserved regions: ranges of address space reserved once and carved into
//! aligned slots, for the arenas of the small blocks ([`ARENAS`]) and for the
//! segments of the blocks above 512 bytes ([`SEGMENTS`]).
//!
//! Reserving [`REGION_SIZE`] bytes for each once (`PROT_NONE`,
//! `MAP_NORESERVE`: no memory, only addresses; the two regions are the two
//! halves of one reservation, so that one table of owners and one of
//! classes cover both, `block_map.rs`) buys two things:
//!
//! * an ownership test of one subtraction and one comparison: an address in
//!   a region can only be one of its blocks, because the kernel never hands
//!   out addresses inside a reservation to anyone else;
//! * slots that go back to the OS without leaving a hole: a released slot
//!   is mapped `PROT_NONE` again in place, which frees its pages at once (the
//!   process's resident size drops) and keeps the range reserved.
//!
//! If the regions cannot be reserved (a small `RLIMIT_AS`, strict
//! overcommit) or the arena region is full, arenas come from single mappings outside it, and
//! the radix map ([`crate::radix`]) answers for them as it does for arenas
//! custom allocators make outside the region (one that wraps
//! [`crate::ArenaAllocator::os`] gets the region's); without the segment
//! region, blocks above 512 bytes go to the fallback. Under Miri there is
//! no region.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::block_map::{Lookup, ARENA_REGION, ARENA_SLOTS, LOOKUPS, SEGMENT_REGION, SEGMENT_SLOTS};
pub(crate) use crate::block_map::{REGION_SIZE, SEGMENT_BITS};
use crate::geometry::ARENA_BITS;
#[cfg(not(miri))]
use crate::os;
use crate::slot_table::{SlotTable, Taken};
use crate::sync::HeldAcrossFork;

#[cfg(not(miri))]
const MIN_REGION_SIZE: usize = 1 << 30;

/// The region arenas of small blocks come from.
pub(crate) static ARENAS: Region<{ ARENA_SLOTS / 64 }> =
    Region::new(ARENA_BITS, &ARENA_TABLE, &ARENA_HELD, &LOOKUPS[ARENA_REGION]);
/// The region segments of larger blocks come from.
pub(crate) static SEGMENTS: Region<{ SEGMENT_SLOTS / 64 }> =
    Region::new(SEGMENT_BITS, &SEGMENT_TABLE, &SEGMENT_HELD, &LOOKUPS[SEGMENT_REGION]);

// The tables live in statics of their own and a region holds references to
// them, so that the region's hot fields sit in a small value: a reference to
// a large one would make every `&self` call retag the whole table under
// Miri's borrow checker. Each is a static alone: the large ones are all
// zeroes and go to `.bss`, whose untouched pages are never resident, while a
// static with an uninitialised byte (the fork guard's `None`) goes to
// `.data`, where reading a page maps the file's pages around it. The
// bounds and the owners are the region's map (`block_map.rs`).
type Held<const WORDS: usize> = HeldAcrossFork<MutexGuard<'static, SlotTable<WORDS>>>;
static ARENA_TABLE: Mutex<SlotTable<{ ARENA_SLOTS / 64 }>> = Mutex::new(SlotTable::new());
static SEGMENT_TABLE: Mutex<SlotTable<{ SEGMENT_SLOTS / 64 }>> = Mutex::new(SlotTable::new());
static ARENA_HELD: Held<{ ARENA_SLOTS / 64 }> = HeldAcrossFork::new();
static SEGMENT_HELD: Held<{ SEGMENT_SLOTS / 64 }> = HeldAcrossFork::new();

const UNTRIED: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;

/// A reserved region of slots of `1 << slot_bits` bytes (`WORDS` is the
/// slot table's bitmap, a bit per slot).
///
/// Invariants: the map's bounds are 0 until the reservation is made, so
/// `contains` is false for every address before; they are written once
/// (for both regions, by [`reserve_both`]), before `RESERVATION` becomes
/// `READY`. The map's owner of
/// slot `i` is the owner tag of the heap that took it (see
/// [`Region::set_owner`]).
pub(crate) struct Region<const WORDS: usize> {
    slot_bits: u32,
    slots: &'static Mutex<SlotTable<WORDS>>,
    held: &'static HeldAcrossFork<MutexGuard<'static, SlotTable<WORDS>>>,
    /// The slot table's kept slots, mirrored (written under its lock) for
    /// readers that do not take it.
    kept: AtomicUsize,
    /// Bounds, owners (written when a heap takes the slot, before any of its
    /// blocks is handed out; a block reaches another thread only through
    /// some synchronisation after that, so relaxed loads see the right
    /// owner) and cache classes.
    map: &'static Lookup,
}

impl<const WORDS: usize> Region<WORDS> {
    const fn new(
        slot_bits: u32,
        slots: &'static Mutex<SlotTable<WORDS>>,
        held: &'static HeldAcrossFork<MutexGuard<'static, SlotTable<WORDS>>>,
        map: &'static Lookup,
    ) -> Self {
        Region { slot_bits, slots, held, kept: AtomicUsize::new(0), map }
    }

    /// The region's map (bounds, owners, cache classes).
    #[inline(always)]
    pub(crate) fn map(&self) -> &'static Lookup {
        self.map
    }

    /// True if `p` lies in the region. For the address of a live block this
    /// is exactly "the block is in a slot of the region".
    #[inline(always)]
    pub(crate) fn contains(&self, p: *const u8) -> bool {
        self.offset(p).is_some()
    }

    /// The offset of `p` from the region's start, if `p` lies in the region.
    #[inline(always)]
    pub(crate) fn offset(&self, p: *const u8) -> Option<usize> {
        self.map.offset(p)
    }

    /// The region's base address and size (both 0 until it is reserved;
    /// once reserved, they never change).
    #[inline(always)]
    pub(crate) fn bounds(&self) -> (usize, usize) {
        self.map.bounds()
    }

    /// True if `p` lies in a live slot of the region (handed out by
    /// [`Self::alloc`] and not given back): exact for any address. Takes
    /// the slot table's lock.
    pub(crate) fn in_live_slot(&self, p: *const u8) -> bool {
        self.offset(p).is_some_and(|off| self.lock().is_live(off >> self.slot_bits))
    }

    /// The owner recorded for the slot holding `p`, if `p` lies in the
    /// region.
    #[inline(always)]
    pub(crate) fn owner(&self, p: *const u8) -> Option<*const ()> {
        // SAFETY: off is p's offset in the region.
        self.offset(p).map(|off| unsafe { self.owner_at(off) })
    }

    /// The owner recorded for the slot at offset `off` of the region.
    ///
    /// # Safety
    /// `off` is `offset(p)` of some `p` in the region.
    #[inline(always)]
    pub(crate) unsafe fn owner_at(&self, off: usize) -> *const () {
        // SAFETY: the contract.
        unsafe { self.map.owner_at(off) }
    }

    /// Records the owner of the slot at `slot_base`: where frees of its
    /// blocks from other threads are sent.
    ///
    /// # Safety
    /// `slot_base` is the base of a slot [`Self::alloc`] returned that the
    /// caller owns and has not freed, and `owner` is the tag its heap routes
    /// by: every later free of a block of the slot is routed by it.
    pub(crate) unsafe fn set_owner(&self, slot_base: *mut u8, owner: *const ()) {
        let off = slot_base.addr().wrapping_sub(self.bounds().0);
        debug_assert!(off < self.bounds().1 && off % (1 << self.slot_bits) == 0);
        // SAFETY: a slot of the region lies at off (the contract).
        unsafe { self.map.set_owner_at(off, owner) };
    }

    fn lock(&self) -> MutexGuard<'_, SlotTable<WORDS>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn limit(&self) -> usize {
        self.bounds().1 >> self.slot_bits
    }

    fn slot_address(&self, slot: usize) -> *mut u8 {
        core::ptr::with_exposed_provenance_mut(self.bounds().0 + (slot << self.slot_bits))
    }

    fn slot_index(&self, p: *const u8) -> usize {
        debug_assert!(self.contains(p) && p.addr() % (1 << self.slot_bits) == 0);
        (p.addr() - self.bounds().0) >> self.slot_bits
    }

    /// Reserves the region on first use. False if it cannot be had.
    fn ready(&self) -> bool {
        reserved()
    }

    /// `n` adjacent slots, readable, writable and zeroed; null if the region
    /// cannot be had or has no such run. Kept slots in the run are
    /// decommitted first (they hold old bytes).
    pub(crate) fn alloc(&self, n: usize) -> *mut u8 {
        self.alloc_run(n, false).0
    }

    /// `n` adjacent slots, readable and writable, kept slots first (their
    /// old bytes stay: not zeroed), and how many of the run's slots were
    /// kept (the others read as zeroes); null as for [`Self::alloc`].
    pub(crate) fn alloc_reusing_counted(&self, n: usize) -> (*mut u8, usize) {
        self.alloc_run(n, true)
    }

    fn alloc_run(&self, n: usize, reuse: bool) -> (*mut u8, usize) {
        if !self.ready() {
            return (core::ptr::null_mut(), 0);
        }
        let limit = self.limit();
        let taken = {
            let mut slots = self.lock();
            let mut kept_runs = Runs::new();
            let taken = slots.take_run(n, limit, reuse, |s, len| {
                if reuse {
                    kept_runs.push(s, len);
                } else {
                    // SAFETY: kept slots of the region, used by nobody; the
                    // lock is held, so nobody takes them meanwhile.
                    unsafe { self.decommit_slots(s, len) }
                }
            });
            let taken = match taken {
                Some(t) if reuse && t.kept < n && slots.kept() > 0 => Some(Taken {
                    start: t.start,
                    kept: t.kept + self.move_kept_into(&mut slots, t.start, n, &kept_runs),
                }),
                other => other,
            };
            self.note_kept(&slots);
            taken
        };
        match taken {
            None => (core::ptr::null_mut(), 0),
            // Every slot is committed already.
            Some(t) if reuse && t.kept == n => (self.slot_address(t.start), n),
            Some(t) => {
                let p = self.commit_taken(t.start, n);
                (p, if reuse && !p.is_null() { t.kept } else { 0 })
            }
        }
    }

    /// Fills the slots of the run of `n` from `start`, just taken, that were
    /// not kept (the others are `kept_runs`) with the pages of kept slots
    /// elsewhere, lowest first, moved without a fault or a copy
    /// ([`os::move_pages`]); the slots they leave become plain freed ones.
    /// Returns how many slots were filled so.
    ///
    /// Without it, a huge block that finds no run of kept slots long enough
    /// faults in fresh pages while the kept ones elsewhere wait for a block
    /// that fits them: mimalloc-bench's malloc-large (20 live blocks of
    /// 5–25 MiB, replaced at random) peaked 130 MiB above its live bytes.
    #[cfg(not(miri))]
    fn move_kept_into(&self, slots: &mut SlotTable<WORDS>, start: usize, n: usize, kept_runs: &Runs) -> usize {
        // Moved pages keep the kernel's record of where they were made, so
        // a slot filled from elsewhere stays a mapping of its own: moves
        // stay below MOVE_EXTENT, which bounds the mappings they add.
        if kept_runs.overflowed || slots.extent() + n > MOVE_EXTENT >> self.slot_bits || !os::can_move_pages() {
            return 0;
        }
        let len = 1usize << self.slot_bits;
        let mut moved = 0;
        let mut runs = kept_runs.runs[..kept_runs.len].iter().peekable();
        let mut s = start;
        while s < start + n {
            // The hole from `s`: up to the next kept run of the window.
            let hole_end = match runs.peek() {
                Some(&&(k, klen)) if s >= k => {
                    s = k + klen;
                    runs.next();
                    continue;
                }
                Some(&&(k, _)) => k,
                None => start + n,
            };
            // Runs of kept slots, lowest first, each moved slot by slot.
            let Some((from, count)) = slots.pop_kept_run(hole_end - s) else { break };
            let mut refused = false;
            for i in 0..count {
                // SAFETY: `from + i` was a kept slot (committed, unused) and
                // `s` a slot of the run just taken, not kept (inaccessible):
                // both ours under the lock. A slot lies in one mapping:
                // commits and decommits cover whole slots.
                if !unsafe { os::move_pages(self.slot_address(from + i), self.slot_address(s), len) } {
                    refused = true;
                    break;
                }
                moved += 1;
                s += 1;
            }
            // SAFETY: the run's slots are freed ones now, emptied or not
            // (a refused move leaves the rest), decommitted as every freed
            // slot that is not kept; the lock is held.
            unsafe { self.decommit_slots(from, count) };
            if refused {
                // The slot that failed may be left inaccessible: the callers
                // commit what was not filled.
                os::stop_moving_pages();
                break;
            }
        }
        moved
    }

    #[cfg(miri)]
    fn move_kept_into(&self, _: &mut SlotTable<WORDS>, _: usize, _: usize, _: &Runs) -> usize {
        0
    }

    /// Decommits the `n` slots from `slot`.
    ///
    /// # Safety
    /// The slots are freed (or just taken) and nobody uses them; the slot
    /// table's lock is held, so nobody takes them meanwhile.
    unsafe fn decommit_slots(&self, slot: usize, n: usize) {
        // SAFETY: the contract.
        unsafe { decommit(self.slot_address(slot), n << self.slot_bits) }
    }

    /// Mirrors the slot table's kept count (its lock held).
    fn note_kept(&self, slots: &SlotTable<WORDS>) {
        self.kept.store(slots.kept(), Ordering::Relaxed);
    }

    /// Commits the run of `n` slots from `slot` just taken; on failure gives
    /// it back decommitted and returns null.
    fn commit_taken(&self, slot: usize, n: usize) -> *mut u8 {
        let p = self.slot_address(slot);
        // SAFETY: the run is ours, in the reservation, and used by nobody.
        if unsafe { commit(p, n << self.slot_bits) } {
            return p;
        }
        // SAFETY: as above; kept slots in it must not stay committed as
        // plain freed ones.
        unsafe { decommit(p, n << self.slot_bits) };
        self.lock().give_run(slot, n, 0);
        core::ptr::null_mut()
    }

    /// Takes the `extra` slots right after the run of `n` at `p`, if they are
    /// freed or fresh (past the slots ever used, within the region): the run
    /// grows in place (kept slots keep their old bytes). False (nothing
    /// changed) otherwise.
    ///
    /// # Safety
    /// `p` is a live run of `n` slots from [`Self::alloc`].
    pub(crate) unsafe fn grow(&self, p: *mut u8, n: usize, extra: usize) -> bool {
        let next = self.slot_index(p) + n;
        let limit = self.limit();
        let mut slots = self.lock();
        if !slots.run_is_free(next, extra, limit) {
            return false;
        }
        let tail = self.slot_address(next);
        // SAFETY: the freed slots are ours now that the lock is held, in the
        // reservation, and used by nobody (committing kept ones again
        // changes nothing).
        if !unsafe { commit(tail, extra << self.slot_bits) } {
            return false;
        }
        slots.take_exact(next, extra);
        self.note_kept(&slots);
        true
    }

    /// Moves the run of `have` slots at `p` to a run of `want` (more) slots
    /// elsewhere, its pages moved, not copied ([`os::move_pages`]); the
    /// new run's other slots take the pages of kept slots or fresh ones,
    /// and the old run's slots are freed. Returns the new run, or null
    /// (nothing changed) if pages cannot move or no run is free.
    ///
    /// # Safety
    /// `p..` is a live run of `have` slots from [`Self::alloc`] whose bytes
    /// nobody reads or writes during the call.
    #[cfg(not(miri))]
    pub(crate) unsafe fn relocate(&self, p: *mut u8, have: usize, want: usize) -> *mut u8 {
        let len = 1usize << self.slot_bits;
        if want <= have || !os::can_move_pages() {
            return core::ptr::null_mut();
        }
        let limit = self.limit();
        let mut slots = self.lock();
        if slots.extent() + want > MOVE_EXTENT >> self.slot_bits {
            return core::ptr::null_mut();
        }
        let Some(t) = slots.take_run(want, limit, false, |s, n| {
            // SAFETY: kept slots of the region, used by nobody; the lock
            // is held.
            unsafe { self.decommit_slots(s, n) }
        }) else {
            return core::ptr::null_mut();
        };
        let q = self.slot_address(t.start);
        // SAFETY: the run just taken is ours and unused.
        if !unsafe { commit(q, want * len) } {
            // SAFETY: as above.
            unsafe { decommit(q, want * len) };
            slots.give_run(t.start, want, 0);
            self.note_kept(&slots);
            return core::ptr::null_mut();
        }
        for i in 0..have {
            // SAFETY: slot i of the old run (live, the caller's, in one
            // mapping) onto slot i of the new run (ours, unused).
            if unsafe { os::move_pages(p.add(i * len), q.add(i * len), len) } {
                continue;
            }
            // The kernel refused (it never should: see `os::move_pages`):
            // the rest is copied. The slots moved so far hold their bytes
            // in the new run already.
            os::stop_moving_pages();
            // SAFETY: the new run's rest is ours; made accessible again in
            // case the failed move left it reserved only; the old run's rest
            // still holds the block's bytes.
            unsafe {
                if !commit(q.add(i * len), (have - i) * len) {
                    os::die("pymalloc: a huge block's pages could neither move nor be copied\n");
                }
                core::ptr::copy_nonoverlapping(p.add(i * len), q.add(i * len), (have - i) * len);
            }
            break;
        }
        // The rest of the new run: kept pages from elsewhere, else the fresh
        // pages committed above.
        let filled = self.move_kept_into(&mut slots, t.start + have, want - have, &Runs::new());
        if filled < want - have {
            let rest = q.wrapping_add((have + filled) * len);
            // SAFETY: ours; a move that failed may have left its slot
            // reserved only, and the block is about to be handed out.
            if !unsafe { commit(rest, (want - have - filled) * len) } {
                os::die("pymalloc: a huge block's new slots could not be made accessible\n");
            }
        }
        // SAFETY: the old run's slots hold nothing any more (their pages
        // moved or were copied); freed, they are decommitted.
        unsafe { decommit(p, have * len) };
        slots.give_run(self.slot_index(p), have, 0);
        self.note_kept(&slots);
        q
    }

    /// Under Miri there is no region: nothing moves.
    #[cfg(miri)]
    pub(crate) unsafe fn relocate(&self, _: *mut u8, _: usize, _: usize) -> *mut u8 {
        core::ptr::null_mut()
    }

    /// Gives back `n` slots from `p`: their pages go to the OS at once, their
    /// addresses stay reserved.
    ///
    /// # Safety
    /// `p..` is `n` slots of live runs from [`Self::alloc`] that nothing uses
    /// any more.
    pub(crate) unsafe fn free(&self, p: *mut u8, n: usize) {
        // SAFETY: the caller gives the slots up.
        unsafe { self.free_keeping(p, n, 0) };
    }

    /// Gives back `n` slots from `p`, keeping the pages of as many of them
    /// as keeps the region's kept slots at most `max_kept` (the others go to
    /// the OS at once). Returns how many were kept.
    ///
    /// # Safety
    /// As for [`Self::free`].
    pub(crate) unsafe fn free_keeping(&self, p: *mut u8, n: usize, max_kept: usize) -> usize {
        // Read without the lock: racing frees may keep a little more.
        let keep = n.min(max_kept.saturating_sub(self.kept.load(Ordering::Relaxed)));
        if keep < n {
            // SAFETY: the caller gives the slots up; nobody takes them
            // before `give_run`.
            unsafe { decommit(p.add(keep << self.slot_bits), (n - keep) << self.slot_bits) };
        }
        let mut slots = self.lock();
        slots.give_run(self.slot_index(p), n, keep);
        self.note_kept(&slots);
        keep
    }

    /// Slots freed with their pages kept.
    pub(crate) fn kept_slots(&self) -> usize {
        self.kept.load(Ordering::Relaxed)
    }

    /// Decommits the kept slots that were kept at the previous call already
    /// (all of them if `all`) and marks those kept now for the next call.
    /// Returns the slots given back.
    pub(crate) fn sweep_kept(&self, all: bool) -> usize {
        self.give_back_kept(|slots, decommit_run| slots.sweep_kept(all, decommit_run))
    }

    /// Decommits up to `n` kept slots now, lowest first (they stay freed);
    /// returns how many.
    pub(crate) fn release_kept_slots(&self, n: usize) -> usize {
        self.give_back_kept(|slots, decommit_run| slots.release_kept(n, decommit_run))
    }

    /// Runs `f`, which gives kept slots back through the decommit it is
    /// handed and returns how many, on the slot table under its lock.
    fn give_back_kept(&self, f: impl FnOnce(&mut SlotTable<WORDS>, &mut dyn FnMut(usize, usize)) -> usize) -> usize {
        if self.kept_slots() == 0 {
            // Nothing to give back or mark (the stale marks are a subset).
            return 0;
        }
        let mut slots = self.lock();
        let given = f(&mut slots, &mut |s, len| {
            // SAFETY: kept slots, used by nobody; the lock is held.
            unsafe { self.decommit_slots(s, len) }
        });
        self.note_kept(&slots);
        given
    }

    /// Takes the slot table's lock before `fork` (see `crate::fork`).
    ///
    /// # Safety
    /// Called by the fork prepare handler, then [`Self::fork_release`] once.
    pub(crate) unsafe fn fork_acquire(&'static self) {
        // SAFETY: the prepare handler (our contract).
        unsafe { self.held.keep(self.lock()) };
    }

    /// Releases what [`Self::fork_acquire`] took.
    ///
    /// # Safety
    /// Called by the fork parent or child handler after `fork_acquire`.
    pub(crate) unsafe fn fork_release(&self) {
        // SAFETY: as for fork_acquire.
        unsafe { self.held.drop_guard() };
    }
}

/// Whether both regions are reserved: [`reserve_both`] at the first call.
static RESERVATION: AtomicU8 = AtomicU8::new(UNTRIED);

/// True once both regions are reserved (reserving them at the first
/// call); false if they cannot be.
#[inline]
fn reserved() -> bool {
    match RESERVATION.load(Ordering::Acquire) {
        READY => true,
        FAILED => false,
        _ => reserve_both(),
    }
}

/// Whether the arena and segment regions exist, reserving them at the
/// first call. False where the address space has no room for them (a small
/// `RLIMIT_AS`, `ulimit -v`): then arenas come from the OS one by one and
/// keep their pool headers in their pools, as CPython's do, and requests
/// above 512 bytes go to the fallback (the every-size front's
/// [`alloc`](crate::every_size::alloc) returns null).
pub fn regions_reserved() -> bool {
    reserved()
}

/// Taken by the first caller of [`reserved`] while it reserves; a leaf
/// lock (nothing else is taken under it), which the fork handlers take
/// too, after the heaps' locks that callers may hold around it.
static RESERVE_LOCK: Mutex<()> = Mutex::new(());
static RESERVE_HELD: HeldAcrossFork<MutexGuard<'static, ()>> = HeldAcrossFork::new();

/// Reserves both regions, as the two halves of one range (see
/// `block_map.rs`: one owner table and one class table cover both); false
/// if no range of at least twice `MIN_REGION_SIZE` can be had. Either
/// region may ask first, before it takes its own slot table's lock, so the
/// first caller reserves under [`RESERVE_LOCK`] and the others wait for its
/// answer.
#[cold]
fn reserve_both() -> bool {
    let _lock = RESERVE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    match RESERVATION.load(Ordering::Acquire) {
        READY => return true,
        FAILED => return false,
        _ => {}
    }
    pause_for_tests();
    let ok = reserve_range();
    // Publishes the bounds: readers of the bounds only ever compare
    // addresses they were handed, which came after this.
    RESERVATION.store(if ok { READY } else { FAILED }, Ordering::Release);
    ok
}

/// Takes the reservation's lock before `fork` (see `crate::fork`): a child
/// forked while another thread reserved would find the lock held by a
/// thread it does not have, and its first arena would wait for ever.
///
/// # Safety
/// Called by the fork prepare handler, then [`fork_release_reservation`]
/// once.
pub(crate) unsafe fn fork_acquire_reservation() {
    let guard = RESERVE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the prepare handler (our contract).
    unsafe { RESERVE_HELD.keep(guard) };
}

/// Releases what [`fork_acquire_reservation`] took.
///
/// # Safety
/// Called by the fork parent or child handler after
/// `fork_acquire_reservation`.
pub(crate) unsafe fn fork_release_reservation() {
    // SAFETY: as for fork_acquire_reservation.
    unsafe { RESERVE_HELD.drop_guard() };
}

/// Milliseconds the next reservation waits, its lock held (0: none).
static PAUSE_MS: AtomicUsize = AtomicUsize::new(0);
/// Up while a reservation waits for [`PAUSE_MS`].
static PAUSED: AtomicBool = AtomicBool::new(false);

/// For tests of what happens while the regions are being reserved: the
/// first reservation after this call holds its lock `ms` milliseconds
/// longer. Not for programs.
#[doc(hidden)]
pub fn pause_next_reservation_for_tests(ms: usize) {
    PAUSE_MS.store(ms, Ordering::Relaxed);
}

/// Whether a reservation is waiting, its lock held, as
/// [`pause_next_reservation_for_tests`] asked. Not for programs.
#[doc(hidden)]
pub fn reservation_paused_for_tests() -> bool {
    PAUSED.load(Ordering::SeqCst)
}

/// The most address space the reservation may take: under a finite
/// `RLIMIT_AS`, half the limit, rounded down to a power of two (the
/// reservation's sizes are); otherwise no bound. Taking all it could, the
/// reservation left a program whose limit was just above 2 GiB too little
/// address space for a thread's stack (a `multiprocessing` pool could not
/// start its threads under `ulimit -v 2150000`).
#[cfg(not(miri))]
fn reservation_cap() -> usize {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) } != 0 || rl.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    let half = usize::try_from(rl.rlim_cur / 2).unwrap_or(usize::MAX);
    half.checked_ilog2().map_or(0, |b| 1 << b)
}

fn pause_for_tests() {
    let ms = PAUSE_MS.swap(0, Ordering::Relaxed);
    if ms > 0 {
        PAUSED.store(true, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(ms as u64));
        PAUSED.store(false, Ordering::SeqCst);
    }
}

#[cfg(not(miri))]
fn reserve_range() -> bool {
    let slot = 1usize << ARENA_BITS.max(SEGMENT_BITS);
    let mut max = (2 * REGION_SIZE).min(reservation_cap());
    // The arena region's pools keep their headers in the header table, so
    // it must exist before the region does (`pool_table.rs`). Where the
    // address space has room for the reservation but not for its table (a
    // small `RLIMIT_AS`), a smaller reservation is tried, down to the
    // smallest; what is not used is unmapped.
    while let Some((base, size)) = os::reserve_largest(max, 2 * MIN_REGION_SIZE, slot) {
        if crate::pool_table::make(base.addr(), size / 2) {
            crate::block_map::set_reservation(base.addr(), size);
            return true;
        }
        // SAFETY: our own reservation, which nothing uses.
        unsafe { os::unmap(base, size) };
        max = size / 4;
    }
    false
}

#[cfg(miri)]
fn reserve_range() -> bool {
    false
}

/// One arena from the arena region, readable and writable and zeroed; null
/// if the region cannot be had or is full.
///
/// Its pages are memory the pools are growing into, while freed huge
/// blocks' slots may hold theirs for huge blocks and span segments the
/// program is not making now (pools never use them): for each arena taken,
/// as many kept segment slots go back, so that what is resident follows the
/// live heap while it grows. (A Python program that built an 8 MB JSON
/// string and then parsed it peaked 6 MB higher with every size served by
/// us than with the kept slots given back at once: the encoder's freed
/// buffers sat kept while the parse filled new arenas, until the decay
/// sweep.)
pub(crate) fn alloc_arena() -> *mut u8 {
    let p = ARENAS.alloc(1);
    if p.is_null() {
        return p;
    }
    // Its pools' headers: their page of the header table.
    if let Some(off) = arena_offset(p) {
        // SAFETY: the slot was just handed out to us; nobody uses its
        // entries.
        if !unsafe { crate::pool_table::commit_arena(off) } {
            // SAFETY: the arena we just took, unused.
            unsafe { ARENAS.free(p, 1) };
            return core::ptr::null_mut();
        }
    }
    if SEGMENTS.kept_slots() > 0 {
        // Arena bytes taken since the last slot went back (arenas may be
        // smaller than slots: 256 KiB in the legacy geometry).
        static CREDIT: AtomicUsize = AtomicUsize::new(0);
        let (arena, slot) = (1usize << ARENAS.slot_bits, 1usize << SEGMENTS.slot_bits);
        let mut due = 0;
        let _ = CREDIT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            due = (c + arena) / slot;
            Some((c + arena) % slot)
        });
        if due > 0 {
            SEGMENTS.release_kept_slots(due);
        }
    }
    p
}

/// Gives an arena of the arena region back.
///
/// # Safety
/// `p` came from [`alloc_arena`] and nothing uses it any more.
pub(crate) unsafe fn free_arena(p: *mut u8) {
    // SAFETY: the caller's contract; the pools' headers go while the slot is
    // still this caller's (`pool_table.rs`).
    unsafe {
        if let Some(off) = arena_offset(p) {
            crate::pool_table::forget_arena(off);
        }
        ARENAS.free(p, 1)
    }
}

/// The arena region's map, named as the static it is: reached through
/// `ARENAS` (which holds atomics, so the compiler loads its fields), every
/// look at the region's bounds took one load more.
#[inline(always)]
pub(crate) fn arena_map() -> &'static Lookup {
    &LOOKUPS[ARENA_REGION]
}

/// True if `p` lies in the arena region.
#[inline(always)]
pub(crate) fn contains(p: *const u8) -> bool {
    arena_map().offset(p).is_some()
}

/// True if `p` lies in a live arena of the arena region: exact for any
/// address (see [`Region::in_live_slot`]).
pub(crate) fn in_live_arena(p: *const u8) -> bool {
    ARENAS.in_live_slot(p)
}

/// The owner recorded for the arena holding `p`, if `p` lies in the arena
/// region.
#[inline(always)]
pub(crate) fn owner(p: *const u8) -> Option<*const ()> {
    let off = arena_offset(p)?;
    // SAFETY: off is p's offset in the region.
    Some(unsafe { owner_at(off) })
}

/// The owner recorded for the arena at offset `off` of the arena region.
///
/// # Safety
/// `off` is [`arena_offset`]`(p)` of some `p`.
#[inline(always)]
pub(crate) unsafe fn owner_at(off: usize) -> *const () {
    // SAFETY: the caller's contract.
    unsafe { arena_map().owner_at(off) }
}

/// The offset of `p` in the arena region, if it lies there.
#[inline(always)]
pub(crate) fn arena_offset(p: *const u8) -> Option<usize> {
    arena_map().offset(p)
}

/// The offset of `p` in the segment region, if it lies there (the map by
/// its static, as [`arena_offset`]).
#[inline(always)]
pub(crate) fn segment_offset(p: *const u8) -> Option<usize> {
    LOOKUPS[SEGMENT_REGION].offset(p)
}

/// Records the owner of the arena region's arena at `arena`.
///
/// # Safety
/// As for [`Region::set_owner`].
pub(crate) unsafe fn set_owner(arena: *mut u8, owner: *const ()) {
    // SAFETY: the caller's contract.
    unsafe { ARENAS.set_owner(arena, owner) }
}

/// Pages move between slots only in the first 8 GiB of a region: a slot
/// filled with moved pages is a mapping of its own, and the kernel allows a
/// process 65,530 (`vm.max_map_count`); moves so add at most 8,192 for
/// 1 MiB slots.
#[cfg_attr(miri, allow(dead_code))]
const MOVE_EXTENT: usize = 8 << 30;

/// The runs of kept slots a run just taken holds, as the slot table
/// reports them (in order), up to a bound.
#[cfg_attr(miri, allow(dead_code))] // no region under Miri
struct Runs {
    runs: [(usize, usize); 16],
    len: usize,
    overflowed: bool,
}

impl Runs {
    fn new() -> Self {
        Runs { runs: [(0, 0); 16], len: 0, overflowed: false }
    }

    fn push(&mut self, start: usize, len: usize) {
        match self.runs.get_mut(self.len) {
            Some(r) => {
                *r = (start, len);
                self.len += 1;
            }
            None => self.overflowed = true,
        }
    }
}

#[cfg(not(miri))]
unsafe fn commit(p: *mut u8, len: usize) -> bool {
    // SAFETY: the caller's contract: a range of a reservation nobody uses.
    unsafe { os::commit(p, len) }
}

#[cfg(miri)]
unsafe fn commit(_: *mut u8, _: usize) -> bool {
    false
}

#[cfg(not(miri))]
unsafe fn decommit(p: *mut u8, len: usize) {
    // SAFETY: the caller's contract: a range of a reservation nobody uses.
    unsafe { os::decommit(p, len) }
}

#[cfg(miri)]
unsafe fn decommit(_: *mut u8, _: usize) {}
