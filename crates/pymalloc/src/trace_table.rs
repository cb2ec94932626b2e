//! The tracer's storage: one trace per live traced block, and the
//! tracebacks they share, interned once each.
//!
//! Nothing here allocates through an allocator domain or the Rust global
//! allocator: tables live in memory of the C library's own entry points
//! (glibc's `__libc_*`, which neither our domains nor the preload library's
//! `malloc` reach), so tracing a domain never feeds itself.
//!
//! * **Traces** of blocks in the reserved regions, default domain, are
//!   words of the regions' shadows ([`crate::trace_shadow`]), at a fixed
//!   distance from their blocks.
//! * **Other traces** are keyed by `(domain, address)` in 64 shards, each an
//!   open-addressing table (linear probing, backward-shift deletion, at most
//!   half full) behind a spin lock, so threads tracing different blocks
//!   rarely meet.
//! * **Tracebacks** are stored once in a flat array of words, `[len, frame
//!   0, frame 1, ...]`; a traceback's id is its offset. An index maps a
//!   traceback's hash to its id. One lock; taken once per traced
//!   allocation.

use core::cell::UnsafeCell;
use core::ptr;

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::sync::SpinLock;
use crate::trace_shadow;

/// Zeroed and freed memory of the C library, untraced.
pub(crate) mod untraced {
    use core::ffi::c_void;

    #[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
    extern "C" {
        fn __libc_calloc(nelem: usize, elsize: usize) -> *mut c_void;
        fn __libc_free(p: *mut c_void);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", not(miri))))]
    use libc::{calloc as __libc_calloc, free as __libc_free};

    /// `n` zeroed words, null on failure.
    pub(crate) fn words(n: usize) -> *mut usize {
        // SAFETY: no precondition; calloc checks the product.
        unsafe { __libc_calloc(n, core::mem::size_of::<usize>()).cast() }
    }

    /// # Safety
    /// `p` is null or from [`words`], not used again.
    pub(crate) unsafe fn free<T>(p: *mut T) {
        // SAFETY: the contract.
        unsafe { __libc_free(p.cast()) }
    }
}

/// Where a traced block came from: one of the allocator domains, the Rust
/// global allocator, or `PyTraceMalloc_Track`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Source {
    /// The RAW domain.
    Raw = 0,
    /// The MEM domain.
    Mem = 1,
    /// The OBJ domain.
    Obj = 2,
    /// The Rust global allocator (`pymalloc::trace::Traced`).
    Rust = 3,
    /// A block allocated elsewhere and tracked by hand (`track`).
    Tracked = 4,
    /// The C allocation API of the preload library (`malloc`, ...).
    Malloc = 5,
}

impl Source {
    /// Every source, in order.
    pub const ALL: [Source; 6] = [Source::Raw, Source::Mem, Source::Obj, Source::Rust, Source::Tracked, Source::Malloc];
}

// Encodings index `ALL` by a source's value (a shadow word's source field,
// the leaving trace in a thread's block).
const _: () = {
    let mut i = 0;
    while i < Source::ALL.len() {
        assert!(Source::ALL[i] as usize == i);
        i += 1;
    }
};

/// One live traced block. `addr == 0` marks an empty table slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trace {
    pub(crate) addr: usize,
    pub(crate) size: usize,
    pub(crate) domain: u32,
    pub(crate) traceback: u32,
    pub(crate) source: Source,
}

const EMPTY: Trace = Trace { addr: 0, size: 0, domain: 0, traceback: 0, source: Source::Raw };

/// The domain of the allocator domains' blocks, of the Rust global
/// allocator's and of the preload library's (CPython's `DEFAULT_DOMAIN`).
pub const DEFAULT_DOMAIN: u32 = 0;

#[inline]
fn mix(x: usize) -> usize {
    // Fibonacci hashing: the high bits are well mixed.
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Addresses in one aligned run of `1 << RUN_SHIFT` bytes share a hash:
/// their traces go to one shard, in consecutive slots from the run's home
/// (16 bytes a slot). Neighbouring blocks are often allocated and freed
/// together; their traces then share cache lines, where a hash of each
/// address would put every trace on a line of its own.
const RUN_SHIFT: u32 = 8;

#[inline]
fn trace_hash(domain: u32, addr: usize) -> usize {
    mix((addr >> RUN_SHIFT) ^ ((domain as usize) << 40))
}

/// An open-addressing table of traces. Invariant: `slots` is null (no
/// capacity) or `mask + 1` slots, a power of two; `len` slots are not
/// empty and `2 * len <= mask + 1`; every trace sits in the probe run that
/// starts at its hash (no empty slot between its home and itself).
struct TraceMap {
    slots: *mut Trace,
    mask: usize,
    len: usize,
}

impl TraceMap {
    const fn new() -> TraceMap {
        TraceMap { slots: ptr::null_mut(), mask: 0, len: 0 }
    }

    fn capacity(&self) -> usize {
        if self.slots.is_null() {
            0
        } else {
            self.mask + 1
        }
    }

    /// The trace in slot `i` (`i <= mask` of a table with capacity).
    #[inline]
    fn at(&self, i: usize) -> Trace {
        debug_assert!(i < self.capacity());
        // SAFETY: i <= mask, inside the table (invariant; callers' index).
        unsafe { *self.slots.add(i) }
    }

    /// Writes slot `i` (`i <= mask` of a table with capacity).
    #[inline]
    fn set(&mut self, i: usize, t: Trace) {
        debug_assert!(i < self.capacity());
        // SAFETY: as in `at`.
        unsafe { self.slots.add(i).write(t) }
    }

    #[inline]
    fn home(&self, domain: u32, addr: usize) -> usize {
        let within_run = (addr >> 4) & ((1 << (RUN_SHIFT - 4)) - 1);
        ((trace_hash(domain, addr) >> 6) + within_run) & self.mask
    }

    /// The slot holding `(domain, addr)`, if any.
    fn find(&self, domain: u32, addr: usize) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mut i = self.home(domain, addr);
        loop {
            let t = self.at(i);
            if t.addr == 0 {
                return None;
            }
            if t.addr == addr && t.domain == domain {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Inserts `t`, replacing the trace of the same key; returns the one
    /// replaced. False if the table could not grow (nothing changed).
    fn insert(&mut self, t: Trace) -> Result<Option<Trace>, ()> {
        if let Some(i) = self.find(t.domain, t.addr) {
            let old = self.at(i);
            self.set(i, t);
            return Ok(Some(old));
        }
        if 2 * (self.len + 1) > self.capacity() && !self.grow() {
            return Err(());
        }
        self.place(t);
        self.len += 1;
        Ok(None)
    }

    /// Puts `t` (whose key is absent) in the first empty slot of its run.
    fn place(&mut self, t: Trace) {
        let mut i = self.home(t.domain, t.addr);
        // One slot is empty (the table is at most half full).
        while self.at(i).addr != 0 {
            i = (i + 1) & self.mask;
        }
        self.set(i, t);
    }

    fn grow(&mut self) -> bool {
        let cap = (self.capacity() * 2).max(64);
        let new = untraced::words(cap * core::mem::size_of::<Trace>() / core::mem::size_of::<usize>()).cast::<Trace>();
        if new.is_null() {
            return false;
        }
        let (old, old_cap) = (self.slots, self.capacity());
        self.slots = new;
        self.mask = cap - 1;
        for i in 0..old_cap {
            // SAFETY: slots of the old table.
            let t = unsafe { *old.add(i) };
            if t.addr != 0 {
                self.place(t);
            }
        }
        // SAFETY: the old table came from untraced::words and is not used
        // any more.
        unsafe { untraced::free(old) };
        true
    }

    /// Removes and returns the trace of `(domain, addr)`.
    fn remove(&mut self, domain: u32, addr: usize) -> Option<Trace> {
        let mut hole = self.find(domain, addr)?;
        let gone = self.at(hole);
        self.set(hole, EMPTY);
        self.len -= 1;
        // Backward shift: pull later members of the run into the hole when
        // their home does not lie between the hole and themselves.
        let mut i = (hole + 1) & self.mask;
        loop {
            let t = self.at(i);
            if t.addr == 0 {
                break;
            }
            let home = self.home(t.domain, t.addr);
            let dist_home = i.wrapping_sub(home) & self.mask;
            let dist_hole = i.wrapping_sub(hole) & self.mask;
            if dist_home >= dist_hole {
                self.set(hole, t);
                self.set(i, EMPTY);
                hole = i;
            }
            i = (i + 1) & self.mask;
        }
        Some(gone)
    }

    fn for_each(&self, mut f: impl FnMut(&Trace)) {
        for i in 0..self.capacity() {
            let t = self.at(i);
            if t.addr != 0 {
                f(&t);
            }
        }
    }

    fn clear(&mut self) {
        // SAFETY: the table came from untraced::words.
        unsafe { untraced::free(self.slots) };
        *self = TraceMap::new();
    }
}

/// A shard: its lock guards its map.
struct Shard {
    lock: SpinLock,
    map: UnsafeCell<TraceMap>,
}

// SAFETY: the map is only touched with the lock held.
unsafe impl Sync for Shard {}

const SHARDS: usize = 64;

#[allow(clippy::declare_interior_mutable_const)]
const SHARD: Shard = Shard { lock: SpinLock::new(), map: UnsafeCell::new(TraceMap::new()) };
static TRACES: [Shard; SHARDS] = [SHARD; SHARDS];

fn shard(domain: u32, addr: usize) -> &'static Shard {
    &TRACES[trace_hash(domain, addr) >> (usize::BITS - 6)]
}

fn with_shard<R>(s: &Shard, f: impl FnOnce(&mut TraceMap) -> R) -> R {
    let _g = s.lock.lock();
    // SAFETY: the shard's lock is held.
    f(unsafe { &mut *s.map.get() })
}

/// Records `t`; returns the trace it replaces (same domain and address).
/// Err if memory for the table is short (nothing recorded).
pub(crate) fn insert(t: Trace) -> Result<Option<Trace>, ()> {
    if t.domain == DEFAULT_DOMAIN {
        if let Some(w) = trace_shadow::word(t.addr) {
            return insert_shadowed(w, t);
        }
    }
    with_shard(shard(t.domain, t.addr), |m| m.insert(t))
}

/// Forgets and returns the trace of `(domain, addr)`.
pub(crate) fn remove(domain: u32, addr: usize) -> Option<Trace> {
    if domain == DEFAULT_DOMAIN {
        if let Some(w) = trace_shadow::word_if_mapped(addr) {
            let old = w.load(Ordering::Relaxed);
            if old == 0 {
                return None;
            }
            w.store(0, Ordering::Relaxed);
            return unshadow(old, addr, |m| m.remove(domain, addr));
        }
    }
    with_shard(shard(domain, addr), |m| m.remove(domain, addr))
}

/// The trace of `(domain, addr)`.
pub(crate) fn get(domain: u32, addr: usize) -> Option<Trace> {
    if domain == DEFAULT_DOMAIN {
        if let Some(w) = trace_shadow::word_if_mapped(addr) {
            let word = w.load(Ordering::Relaxed);
            return if word == 0 { None } else { unshadow(word, addr, |m| m.find(domain, addr).map(|i| m.at(i))) };
        }
    }
    with_shard(shard(domain, addr), |m| m.find(domain, addr).map(|i| m.at(i)))
}

/// Calls `f` with every trace, one shard at a time (each under its lock:
/// `f` must not trace), then those of the shadows.
pub(crate) fn for_each(mut f: impl FnMut(&Trace)) {
    for s in &TRACES {
        with_shard(s, |m| m.for_each(&mut f));
    }
    trace_shadow::for_each(|addr, w| {
        // A big one was met in its shard.
        if !is_big(w) {
            f(&decode(addr, w));
        }
    });
}

// ---- a trace as a word of a shadow ----

/// The size field of a word whose trace is kept in its shard as well (the
/// size does not fit: 512 MiB and up).
const BIG: u64 = (1 << 29) - 1;

/// The word of `t`: the traceback id in bits 0..32, the source plus one in
/// bits 32..35 (so never 0, the empty word), the size in bits 35..64.
fn encode(t: &Trace) -> u64 {
    let size = (t.size as u64).min(BIG);
    (size << 35) | ((t.source as u64 + 1) << 32) | u64::from(t.traceback)
}

fn is_big(w: u64) -> bool {
    w >> 35 == BIG
}

/// The trace of word `w` (not 0, not big) of the block at `addr`.
fn decode(addr: usize, w: u64) -> Trace {
    Trace {
        addr,
        size: (w >> 35) as usize,
        domain: DEFAULT_DOMAIN,
        traceback: w as u32,
        source: Source::ALL[((w >> 32) & 7) as usize - 1],
    }
}

/// The trace of the word `w` (not 0) just read at `addr`: decoded, or for a
/// big one what `in_shard` does with its shard's map.
fn unshadow(w: u64, addr: usize, in_shard: impl FnOnce(&mut TraceMap) -> Option<Trace>) -> Option<Trace> {
    if is_big(w) {
        with_shard(shard(DEFAULT_DOMAIN, addr), in_shard)
    } else {
        Some(decode(addr, w))
    }
}

/// [`insert`] for a trace whose word is `w`.
fn insert_shadowed(w: &AtomicU64, t: Trace) -> Result<Option<Trace>, ()> {
    let new = encode(&t);
    // A big trace goes to its shard first (that may fail; nothing changed
    // then), and replaces a big one there.
    let replaced_big = if is_big(new) { Some(with_shard(shard(t.domain, t.addr), |m| m.insert(t))?) } else { None };
    let old = w.load(Ordering::Relaxed);
    w.store(new, Ordering::Relaxed);
    Ok(match replaced_big {
        _ if old == 0 => None,
        _ if !is_big(old) => Some(decode(t.addr, old)),
        Some(shard_old) => shard_old,
        None => with_shard(shard(t.domain, t.addr), |m| m.remove(t.domain, t.addr)),
    })
}

/// Forgets every trace and traceback.
pub(crate) fn clear() {
    for s in &TRACES {
        with_shard(s, TraceMap::clear);
    }
    trace_shadow::clear();
    let _g = TRACEBACKS_LOCK.lock();
    // SAFETY: the lock is held.
    unsafe { (*TRACEBACKS.0.get()).clear() };
    CLEARS.fetch_add(1, Ordering::Release);
}

/// How many times the tracebacks were cleared: raised under their lock
/// after each clear. An id interned after reading `n` here belongs to the
/// table while this still reads `n` (for [`crate::trace_memo`]).
pub(crate) static CLEARS: AtomicU32 = AtomicU32::new(0);

/// Interned tracebacks. Invariant: `words[..len]` is a sequence of records
/// `[n, frame 0, ..., frame n-1]`; `index` (null or `mask + 1` entries, a
/// power of two, at most half full) holds `offset + 1` of every record, at
/// or after its hash's home (linear probing; never removed, but all cleared
/// at once).
///
/// A record's id is `base + offset`, and each clear moves `base` past every
/// id handed out before it. A thread that interned just before a clear
/// (`clear_traces` from another thread) can still store a trace with the
/// old id afterwards; [`Tracebacks::lookup`] finds no record for it, and
/// bounds every read, so such an id reads nothing of the new table.
struct Tracebacks {
    base: u32,
    words: *mut usize,
    cap: usize,
    len: usize,
    index: *mut u32,
    mask: usize,
    count: usize,
}

impl Tracebacks {
    const fn new(base: u32) -> Tracebacks {
        Tracebacks { base, words: ptr::null_mut(), cap: 0, len: 0, index: ptr::null_mut(), mask: 0, count: 0 }
    }

    /// The record at `off`, a record offset inside `words[..len]` (the
    /// index's and the re-indexing walk's).
    fn frames(&self, off: u32) -> &[usize] {
        debug_assert!((off as usize) < self.len);
        // SAFETY: record offsets lie inside words[..len], and a record's
        // frames follow its length there (the invariant).
        unsafe {
            let p = self.words.add(off as usize);
            core::slice::from_raw_parts(p.add(1), *p)
        }
    }

    /// The frames of traceback `id`, or None if `id` is not one of this
    /// table's (handed out before a clear).
    fn lookup(&self, id: u32) -> Option<&[usize]> {
        let off = id.wrapping_sub(self.base) as usize;
        if off >= self.len {
            return None;
        }
        // SAFETY: off < len words. Only this table's ids reach here, which
        // are record offsets; the check below keeps even a stray id inside
        // words[..len].
        let n = unsafe { *self.words.add(off) };
        if n > self.len - off - 1 {
            return None;
        }
        // SAFETY: words[off + 1..off + 1 + n] lies inside words[..len].
        Some(unsafe { core::slice::from_raw_parts(self.words.add(off + 1), n) })
    }

    /// The first id of the next table: past every id of this one. Ids wrap
    /// only after 2^31 words of tracebacks have been interned and cleared,
    /// when a stale id could name a record again (a wrong traceback, never
    /// a read outside the table).
    fn next_base(&self) -> u32 {
        let next = self.base as u64 + self.len as u64 + 1;
        if next > i32::MAX as u64 {
            0
        } else {
            next as u32
        }
    }

    fn intern(&mut self, frames: &[usize]) -> Option<u32> {
        let h = traceback_hash(frames);
        if !self.index.is_null() {
            let mut i = (h >> 8) & self.mask;
            loop {
                // SAFETY: i <= mask.
                let e = unsafe { *self.index.add(i) };
                if e == 0 {
                    break;
                }
                let f = self.frames(e - 1);
                // Element by element: a traceback is a few words, shorter
                // than a call to memcmp.
                if f.len() == frames.len() && f.iter().zip(frames).all(|(a, b)| a == b) {
                    return Some(self.base + (e - 1));
                }
                i = (i + 1) & self.mask;
            }
        }
        // A new record.
        let need = self.len.checked_add(frames.len() + 1)?;
        if need > (u32::MAX - self.base) as usize {
            return None;
        }
        if need > self.cap && !self.grow_words(need) {
            return None;
        }
        if 2 * (self.count + 1) > self.index_capacity() && !self.grow_index() {
            return None;
        }
        let id = self.len as u32;
        // SAFETY: need <= cap words.
        unsafe {
            self.words.add(self.len).write(frames.len());
            ptr::copy_nonoverlapping(frames.as_ptr(), self.words.add(self.len + 1), frames.len());
        }
        self.len = need;
        self.index_put(h, id);
        self.count += 1;
        Some(self.base + id)
    }

    fn index_capacity(&self) -> usize {
        if self.index.is_null() {
            0
        } else {
            self.mask + 1
        }
    }

    fn index_put(&mut self, h: usize, id: u32) {
        let mut i = (h >> 8) & self.mask;
        // SAFETY: inside the index, which has an empty entry.
        unsafe {
            while *self.index.add(i) != 0 {
                i = (i + 1) & self.mask;
            }
            self.index.add(i).write(id + 1);
        }
    }

    fn grow_words(&mut self, need: usize) -> bool {
        let cap = need.max(self.cap * 2).max(1024);
        let new = untraced::words(cap);
        if new.is_null() {
            return false;
        }
        // SAFETY: both hold at least len words; the old array goes.
        unsafe {
            if self.len > 0 {
                ptr::copy_nonoverlapping(self.words, new, self.len);
            }
            untraced::free(self.words);
        }
        self.words = new;
        self.cap = cap;
        true
    }

    fn grow_index(&mut self) -> bool {
        let cap = (self.index_capacity() * 2).max(256);
        let new = untraced::words(cap.div_ceil(2)).cast::<u32>();
        if new.is_null() {
            return false;
        }
        let old = core::mem::replace(&mut self.index, new);
        self.mask = cap - 1;
        // Re-index every record from the words.
        let mut off = 0;
        while off < self.len {
            let f = self.frames(off as u32);
            let (h, n) = (traceback_hash(f), f.len());
            self.index_put(h, off as u32);
            off += n + 1;
        }
        // SAFETY: the old index came from untraced::words.
        unsafe { untraced::free(old) };
        true
    }

    fn clear(&mut self) {
        // SAFETY: both came from untraced::words.
        unsafe {
            untraced::free(self.words);
            untraced::free(self.index);
        }
        *self = Tracebacks::new(self.next_base());
    }
}

/// The index's hash of a traceback.
fn traceback_hash(frames: &[usize]) -> usize {
    frames.iter().fold(frames.len(), |a, &f| mix(a ^ f))
}

struct TracebackCell(UnsafeCell<Tracebacks>);
// SAFETY: only touched with TRACEBACKS_LOCK held.
unsafe impl Sync for TracebackCell {}

static TRACEBACKS_LOCK: SpinLock = SpinLock::new();
static TRACEBACKS: TracebackCell = TracebackCell(UnsafeCell::new(Tracebacks::new(0)));

/// The id of `frames`, stored once; None if memory is short.
pub(crate) fn intern(frames: &[usize]) -> Option<u32> {
    let _g = TRACEBACKS_LOCK.lock();
    // SAFETY: the lock is held.
    unsafe { (*TRACEBACKS.0.get()).intern(frames) }
}

/// Takes every shard's lock and the tracebacks' (before `fork`).
pub(crate) fn fork_acquire() {
    for s in &TRACES {
        s.lock.acquire();
    }
    TRACEBACKS_LOCK.acquire();
}

/// Gives back what [`fork_acquire`] took.
///
/// # Safety
/// The calling thread ran [`fork_acquire`] and has not released since.
pub(crate) unsafe fn fork_release() {
    // SAFETY: each lock was taken by fork_acquire on this thread.
    unsafe {
        TRACEBACKS_LOCK.release();
        for s in TRACES.iter().rev() {
            s.lock.release();
        }
    }
}

/// Calls `f` with the frames of traceback `id` (most recent call first);
/// None if `id` was handed out before the last clear (a trace stored by a
/// thread that interned while another cleared).
pub(crate) fn with_frames<R>(id: u32, f: impl FnOnce(&[usize]) -> R) -> Option<R> {
    let _g = TRACEBACKS_LOCK.lock();
    // SAFETY: the lock is held.
    unsafe { (*TRACEBACKS.0.get()).lookup(id) }.map(f)
}

/// Serialises this crate's unit tests that use the process's tables (one
/// clears what another reads).
#[cfg(test)]
pub(crate) fn global_tables() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(addr: usize, domain: u32) -> Trace {
        Trace { addr, size: addr / 16, domain, traceback: 0, source: Source::Mem }
    }

    #[test]
    fn the_map_matches_a_model_through_growth_and_removal() {
        let mut m = TraceMap::new();
        let mut model = std::collections::HashMap::new();
        let mut x = 12345usize;
        let steps = if cfg!(miri) { 600 } else { 20_000 };
        for step in 0..steps {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let addr = ((x >> 33) % 3000 + 1) * 16;
            let domain = ((x >> 20) % 2) as u32;
            if step % 3 == 0 {
                assert_eq!(m.remove(domain, addr), model.remove(&(domain, addr)));
            } else {
                assert_eq!(m.insert(t(addr, domain)).unwrap(), model.insert((domain, addr), t(addr, domain)));
            }
            assert_eq!(m.len, model.len());
        }
        for (&(d, a), tr) in &model {
            assert_eq!(m.find(d, a).map(|i| m.at(i)), Some(*tr));
        }
        let mut n = 0;
        m.for_each(|_| n += 1);
        assert_eq!(n, model.len());
        m.clear();
        assert_eq!(m.find(0, 16), None);
    }

    /// The traces at `a..a + 64` (an arena of this test's own).
    fn traces_near(a: usize) -> Vec<Trace> {
        let mut v = Vec::new();
        for_each(|t| {
            if (a..a + 64).contains(&t.addr) {
                v.push(*t);
            }
        });
        v.sort_by_key(|t| (t.addr, t.domain));
        v
    }

    #[cfg(not(miri))]
    #[test]
    fn region_traces_live_in_the_shadow_and_big_ones_in_a_shard_too() {
        let _g = global_tables();
        let tr = |addr, size, domain| Trace { addr, size, domain, traceback: 7, source: Source::Obj };
        let in_shard =
            |addr| with_shard(shard(DEFAULT_DOMAIN, addr), |m| m.find(DEFAULT_DOMAIN, addr).map(|i| m.at(i)));
        if !crate::region::regions_reserved() {
            // No region (a small RLIMIT_AS): no shadow either, and every
            // trace lives in a shard.
            let buf = [0u8; 64];
            let a = buf.as_ptr() as usize;
            assert_eq!(insert(tr(a, 32, 0)), Ok(None));
            assert!(trace_shadow::word_if_mapped(a).is_none());
            assert_eq!(in_shard(a), Some(tr(a, 32, 0)));
            assert_eq!(get(0, a), Some(tr(a, 32, 0)));
            assert_eq!(remove(0, a), Some(tr(a, 32, 0)));
            assert_eq!((in_shard(a), get(0, a)), (None, None));
            return;
        }
        let arena = crate::region::alloc_arena();
        assert!(!arena.is_null(), "an arena of the region");
        let a = arena as usize;

        assert_eq!(insert(tr(a, 32, 0)), Ok(None));
        let w = trace_shadow::word_if_mapped(a).expect("the region's shadow is mapped by its first trace");
        assert_eq!(w.load(Ordering::Relaxed), encode(&tr(a, 32, 0)));
        assert_eq!(in_shard(a), None, "a small trace is only in the shadow");
        assert_eq!(get(0, a), Some(tr(a, 32, 0)));

        // Replacements, small and big (512 MiB and up) each way.
        assert_eq!(insert(tr(a, 1 << 30, 0)), Ok(Some(tr(a, 32, 0))));
        assert!(is_big(w.load(Ordering::Relaxed)));
        assert_eq!(in_shard(a), Some(tr(a, 1 << 30, 0)));
        assert_eq!(get(0, a), Some(tr(a, 1 << 30, 0)));
        assert_eq!(insert(tr(a, 3 << 30, 0)), Ok(Some(tr(a, 1 << 30, 0))));
        assert_eq!(insert(tr(a, 48, 0)), Ok(Some(tr(a, 3 << 30, 0))));
        assert_eq!(in_shard(a), None, "the big trace left its shard");

        // Another domain and an address off the granule go to the shards.
        assert_eq!(insert(tr(a + 16, 5 << 30, 0)), Ok(None));
        assert_eq!(insert(tr(a + 16, 8, 3)), Ok(None));
        assert_eq!(insert(tr(a + 33, 8, 0)), Ok(None));
        assert_eq!(in_shard(a + 33), Some(tr(a + 33, 8, 0)));
        assert_eq!(
            traces_near(a),
            [tr(a, 48, 0), tr(a + 16, 5 << 30, 0), tr(a + 16, 8, 3), tr(a + 33, 8, 0)],
            "every trace once, big ones included"
        );

        assert_eq!(remove(0, a + 16), Some(tr(a + 16, 5 << 30, 0)));
        assert_eq!(in_shard(a + 16), None);
        assert_eq!(remove(0, a + 16), None);
        assert_eq!(get(3, a + 16), Some(tr(a + 16, 8, 3)), "the other domain's trace stays");
        assert_eq!(remove(0, a), Some(tr(a, 48, 0)));
        assert_eq!(w.load(Ordering::Relaxed), 0);
        assert_eq!(traces_near(a), [tr(a + 16, 8, 3), tr(a + 33, 8, 0)]);

        assert_eq!(insert(tr(a + 32, 64, 0)), Ok(None));
        clear();
        assert_eq!(traces_near(a), []);
        assert_eq!(get(0, a + 32), None);
        // SAFETY: the arena is this test's, and nothing uses it any more.
        unsafe { crate::region::free_arena(arena) };
    }

    #[test]
    fn tracebacks_are_stored_once_and_read_back() {
        let mut tb = Tracebacks::new(0);
        let mut ids = Vec::new();
        for i in 0..if cfg!(miri) { 200usize } else { 2000 } {
            let frames: Vec<usize> = (0..(i % 5)).map(|k| i * 10 + k).collect();
            ids.push((tb.intern(&frames).unwrap(), frames));
        }
        for (id, frames) in &ids {
            assert_eq!(tb.lookup(*id), Some(&frames[..]));
            assert_eq!(tb.intern(frames), Some(*id), "interned once");
        }
        tb.clear();
    }

    /// An id handed out before a clear reads nothing afterwards, however
    /// the new table has grown: a thread can store a trace with it after
    /// another thread cleared.
    #[test]
    fn a_traceback_id_from_before_a_clear_reads_nothing() {
        let mut tb = Tracebacks::new(0);
        let old: Vec<(u32, Vec<usize>)> = (0..50usize)
            .map(|i| (i * 7..i * 7 + 1 + i % 4).collect::<Vec<_>>())
            .map(|f| (tb.intern(&f).unwrap(), f))
            .collect();
        for round in 0..3 {
            tb.clear();
            for (id, _) in &old {
                assert_eq!(tb.lookup(*id), None, "round {round}, id {id}, empty table");
            }
            // The new table grows longer than the old one.
            let new: Vec<(u32, Vec<usize>)> =
                (0..200usize).map(|i| vec![1000 + i; 1 + i % 3]).map(|f| (tb.intern(&f).unwrap(), f)).collect();
            for (id, _) in &old {
                assert_eq!(tb.lookup(*id), None, "round {round}, id {id}");
            }
            for (id, f) in &new {
                assert!(old.iter().all(|(o, _)| o != id), "id {id} handed out twice");
                assert_eq!(tb.lookup(*id), Some(&f[..]));
            }
        }
        // A stray id inside the table never reads past it.
        for id in 0..tb.base + tb.len as u32 + 8 {
            if let Some(f) = tb.lookup(id) {
                assert!(id - tb.base + 1 + f.len() as u32 <= tb.len as u32);
            }
        }
        tb.clear();
    }
}
