//! The snapshot at the peak: what was live when the traced bytes were at
//! their highest, as dhat's "t-gmax" and jemalloc's `prof_gdump` keep it.
//!
//! While it is on ([`set_enabled`]), the tracer keeps the live bytes and
//! blocks of each traceback (`NOW`). When the traced bytes reach a new peak,
//! those figures *are* the peak's, so nothing is copied then; the first
//! decrease after a new peak copies them (`PEAK`) before it applies. A
//! program that grows and then shrinks copies once per new peak it leaves,
//! and each copy is as long as the distinct tracebacks.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::sync::SpinLock;
use crate::trace_table::{untraced, Source};

/// One traceback's live figures, with the domain and source of its first
/// block. `id1 == 0` marks an empty slot.
#[derive(Clone, Copy)]
struct Entry {
    id1: u32,
    domain: u32,
    source: Source,
    bytes: usize,
    blocks: usize,
}

/// Words of an entry, for the untraced allocation.
const ENTRY_WORDS: usize = core::mem::size_of::<Entry>() / core::mem::size_of::<usize>();
const _: () = assert!(ENTRY_WORDS * core::mem::size_of::<usize>() == core::mem::size_of::<Entry>());

/// Figures per traceback id, open addressing. Invariant: `slots` is null
/// or `mask + 1` entries (a power of two), at most half of them used.
struct Figures {
    slots: *mut Entry,
    mask: usize,
    used: usize,
}

impl Figures {
    const fn new() -> Figures {
        Figures { slots: ptr::null_mut(), mask: 0, used: 0 }
    }

    fn capacity(&self) -> usize {
        if self.slots.is_null() {
            0
        } else {
            self.mask + 1
        }
    }

    fn entries(&self) -> &[Entry] {
        if self.slots.is_null() {
            return &[];
        }
        // SAFETY: mask + 1 entries (invariant).
        unsafe { core::slice::from_raw_parts(self.slots, self.mask + 1) }
    }

    fn entries_mut(&mut self) -> &mut [Entry] {
        if self.slots.is_null() {
            return &mut [];
        }
        // SAFETY: as in `entries`, and `&mut self` is exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.slots, self.mask + 1) }
    }

    fn slot(&mut self, id: u32) -> Option<&mut Entry> {
        if 2 * (self.used + 1) > self.capacity() && !self.grow() {
            return None;
        }
        let mask = self.mask;
        let mut i = ((id as usize).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) & mask;
        let e = self.entries_mut();
        while e[i].id1 != 0 && e[i].id1 != id + 1 {
            i = (i + 1) & mask;
        }
        if e[i].id1 == 0 {
            e[i].id1 = id + 1;
            self.used += 1;
        }
        Some(&mut self.entries_mut()[i])
    }

    fn grow(&mut self) -> bool {
        let cap = (self.capacity() * 2).max(256);
        let new = untraced::words(cap * ENTRY_WORDS).cast::<Entry>();
        if new.is_null() {
            return false;
        }
        let old = core::mem::replace(self, Figures { slots: new, mask: cap - 1, used: 0 });
        for e in old.entries().iter().filter(|e| e.id1 != 0) {
            if let Some(s) = self.slot(e.id1 - 1) {
                *s = *e;
            }
        }
        // SAFETY: the old array came from untraced::words.
        unsafe { untraced::free(old.slots) };
        true
    }

    /// Makes this a copy of `o`; false if memory is short.
    fn copy_from(&mut self, o: &Figures) -> bool {
        if self.capacity() != o.capacity() {
            self.clear();
            if o.capacity() > 0 {
                let new = untraced::words(o.capacity() * ENTRY_WORDS).cast::<Entry>();
                if new.is_null() {
                    return false;
                }
                *self = Figures { slots: new, mask: o.mask, used: 0 };
            }
        }
        self.entries_mut().copy_from_slice(o.entries());
        self.used = o.used;
        true
    }

    fn clear(&mut self) {
        // SAFETY: the array came from untraced::words (or is null).
        unsafe { untraced::free(self.slots) };
        *self = Figures::new();
    }
}

/// The figures now and at the peak. Invariant: touched with `LOCK` held;
/// `fresh` says the peak is now (`NOW` holds it, `PEAK` is stale).
struct State {
    now: Figures,
    peak: Figures,
    peak_bytes: usize,
    now_bytes: usize,
    fresh: bool,
}

struct Cell(UnsafeCell<State>);
// SAFETY: only touched with LOCK held.
unsafe impl Sync for Cell {}

static ON: AtomicBool = AtomicBool::new(false);
static LOCK: SpinLock = SpinLock::new();
static STATE: Cell = Cell(UnsafeCell::new(State {
    now: Figures::new(),
    peak: Figures::new(),
    peak_bytes: 0,
    now_bytes: 0,
    fresh: true,
}));

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let _g = LOCK.lock();
    // SAFETY: LOCK is held.
    f(unsafe { &mut *STATE.0.get() })
}

/// Turns the peak snapshot on or off; either way it starts afresh (only
/// blocks traced from now on count).
pub(crate) fn set_enabled(on: bool) {
    clear();
    ON.store(on, Ordering::SeqCst);
}

/// Whether the peak is kept.
#[inline(always)]
pub(crate) fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// A traced block of `size` bytes with traceback `tb` appeared.
pub(crate) fn on_add(tb: u32, domain: u32, source: Source, size: usize) {
    with(|s| {
        if let Some(e) = s.now.slot(tb) {
            if e.blocks == 0 {
                (e.domain, e.source) = (domain, source);
            }
            e.bytes += size;
            e.blocks += 1;
        }
        s.now_bytes += size;
        if s.now_bytes > s.peak_bytes {
            s.peak_bytes = s.now_bytes;
            s.fresh = true;
        }
    });
}

/// A traced block of `size` bytes with traceback `tb` went away.
pub(crate) fn on_remove(tb: u32, size: usize) {
    with(|s| {
        if s.fresh && s.now_bytes == s.peak_bytes && size > 0 {
            // Leaving a new peak: keep its figures.
            let State { now, peak, .. } = s;
            s.fresh = !peak.copy_from(now);
        }
        if let Some(e) = s.now.slot(tb) {
            e.bytes = e.bytes.saturating_sub(size);
            e.blocks = e.blocks.saturating_sub(1);
        }
        s.now_bytes = s.now_bytes.saturating_sub(size);
    });
}

/// One traceback's figures at the peak.
pub(crate) struct AtPeak {
    pub(crate) traceback: u32,
    pub(crate) domain: u32,
    pub(crate) source: Source,
    pub(crate) bytes: usize,
    pub(crate) blocks: usize,
}

/// The peak's traced bytes and each traceback's figures then (those with
/// no block left out). Call it untraced: it allocates under the lock the
/// tracer takes.
pub(crate) fn at_peak() -> (usize, Vec<AtPeak>) {
    with(|s| {
        let f = if s.fresh { &s.now } else { &s.peak };
        let v = f.entries().iter().filter(|e| e.id1 != 0 && e.blocks > 0).map(|e| AtPeak {
            traceback: e.id1 - 1,
            domain: e.domain,
            source: e.source,
            bytes: e.bytes,
            blocks: e.blocks,
        });
        (s.peak_bytes, v.collect())
    })
}

/// Forgets both sets of figures.
pub(crate) fn clear() {
    with(|s| {
        s.now.clear();
        s.peak.clear();
        (s.peak_bytes, s.now_bytes, s.fresh) = (0, 0, true);
    });
}

/// Takes the lock (before `fork`).
pub(crate) fn fork_acquire() {
    LOCK.acquire();
}

/// Gives back what [`fork_acquire`] took.
///
/// # Safety
/// The calling thread ran [`fork_acquire`] and has not released since.
pub(crate) unsafe fn fork_release() {
    // SAFETY: taken by fork_acquire on this thread (our contract).
    unsafe { LOCK.release() };
}
