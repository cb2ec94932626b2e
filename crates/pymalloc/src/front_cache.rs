//! A thread heap's front cache: per class, the last blocks its owner freed,
//! handed out again first, most recent first, in one array for every class
//! the heap caches. The pool classes come first (cache class `c` is size
//! class `c`), the medium classes after them ([`medium`]).
//!
//! One array, so that a `malloc` or a `free` that hits the cache runs the
//! same instructions for a block of 100 bytes as for one of 1,000: the
//! class comes from a table for a size ([`class_of_size`]) and from the
//! block map for an address (`block_map.rs`), and nothing branches on which
//! kind of class it is (see `every_size.rs`, [`crate::every_size::malloc_with`]).
//! What each kind of class may hold, and when it flushes, is its owner's:
//! `heap/cache.rs` for the pool classes, `span_cache.rs` for the medium
//! ones, each a view of this one.
//!
//! Invariants: `stacks` holds, per class, distinct blocks of that class of
//! this heap that their user freed and nobody has been handed since, at
//! most the class's limit of them (see `class_stacks.rs`); the limit is
//! at most `SLOTS`, and `end[c]` is the top at which it is reached
//! (`ClassStacks::end`): 0 for a class never opened, the class's base for
//! one closed, and set only after the class's top is raised. What a
//! cached block counts as (in use for its pool or span, free for the
//! statistics) is said by the two owners.

use core::cell::Cell;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crate::cell_array::CellArray;
use crate::class_stacks::ClassStacks;
use crate::geometry::{size_class, ALIGNMENT, ALIGNMENT_SHIFT, NB_SMALL_SIZE_CLASSES};
use crate::span_class::{medium_class, MEDIUM_MAX, NB_MEDIUM_CLASSES};

/// The most blocks a class may cache.
pub const SLOTS: usize = 32;

/// Classes of the front cache: the pool classes, then the medium ones.
pub(crate) const NB_CACHE_CLASSES: usize = NB_SMALL_SIZE_CLASSES + NB_MEDIUM_CLASSES;

/// A class no block has, whose stack is always empty: every request's class
/// while the class table's gate is shut ([`set_gate`]).
pub(crate) const SHUT_CLASS: usize = NB_CACHE_CLASSES;

/// The cache class of medium class `c`.
#[inline(always)]
pub(crate) const fn medium(c: usize) -> usize {
    NB_SMALL_SIZE_CLASSES + c
}

/// The front cache's stacks: one more than the classes, [`SHUT_CLASS`]'s.
type Stacks = ClassStacks<{ NB_CACHE_CLASSES + 1 }, SLOTS>;

pub(crate) struct FrontCache {
    /// One stack more than the classes: [`SHUT_CLASS`]'s, never pushed.
    stacks: Stacks,
    end: CellArray<u32, NB_CACHE_CLASSES>,
    /// The pool classes' limit when they cache: 0 (a heap without a block
    /// cache) or `SLOTS` (see `heap/cache.rs`).
    small_max: Cell<u32>,
}

impl FrontCache {
    /// An empty cache, every limit 0; the pool classes cache (when opened)
    /// if `small`.
    pub(crate) const fn new(small: bool) -> FrontCache {
        FrontCache {
            stacks: ClassStacks::new(),
            end: CellArray::new([0; NB_CACHE_CLASSES]),
            small_max: Cell::new(if small { SLOTS as u32 } else { 0 }),
        }
    }

    /// The most recently cached block of class `c`, taken out; null if none.
    /// Owner only.
    #[inline(always)]
    pub(crate) fn pop(&self, c: usize) -> *mut u8 {
        self.stacks.pop(c)
    }

    /// [`FrontCache::pop`] behind the gate ([`set_gate`]): `gate` is
    /// [`pop_gate`], 0 while the gate is open (this is `pop`) and all ones
    /// while it is shut (every class reads empty). The same instructions
    /// as `pop` for a front whose class is known (a Rust layout's), and the
    /// gate's load and its `or` into the class's base, which the top is
    /// compared with. A caller that tests the gate after a miss tests this
    /// `gate`, not a second load (see `global.rs`).
    ///
    /// # Safety
    /// `c < NB_CACHE_CLASSES`.
    #[inline(always)]
    pub(crate) unsafe fn pop_gated(&self, c: usize, gate: u32) -> *mut u8 {
        // SAFETY: the contract.
        unsafe { self.stacks.pop_gated_unchecked(c, gate) }
    }

    /// [`FrontCache::pop`] without a bounds check.
    ///
    /// # Safety
    /// `c <= SHUT_CLASS` (whose stack is empty).
    #[inline(always)]
    pub(crate) unsafe fn pop_unchecked(&self, c: usize) -> *mut u8 {
        // SAFETY: the contract.
        unsafe { self.stacks.pop_unchecked(c) }
    }

    /// Caches `p` in class `c` if `c` is a class with room; false (nothing
    /// done) otherwise, `c` out of range included ([`crate::block_map::NO_CLASS`]).
    /// Owner only.
    ///
    /// # Safety
    /// If `c` is a class, `p` is a live block of class `c` of this heap
    /// (so not null: a pop hands it out as a block), not cached, that its
    /// user gave up.
    #[inline(always)]
    pub(crate) unsafe fn try_push(&self, c: usize, p: *mut u8) -> bool {
        if c >= NB_CACHE_CLASSES {
            return false;
        }
        // SAFETY: c is a class.
        let (t, end) = unsafe { self.top_and_end(c) };
        if t >= end {
            return false;
        }
        // SAFETY: t < end, the top of the limit, at most SLOTS; p is a
        // free block of class c now.
        unsafe { self.push_at(c, t, p) };
        true
    }

    /// Class `c`'s top and the top at which it reaches its limit now: it
    /// has room if the first is below the second (see `class_stacks.rs`).
    ///
    /// # Safety
    /// `c < NB_CACHE_CLASSES`.
    #[inline(always)]
    pub(crate) unsafe fn top_and_end(&self, c: usize) -> (u32, u32) {
        // SAFETY: c is a class (the contract).
        unsafe { (self.stacks.top_unchecked(c), self.end.get_unchecked(c).get()) }
    }

    /// Caches `p` in class `c`, whose top is `t`.
    ///
    /// # Safety
    /// `c < NB_CACHE_CLASSES`, `(t, end)` is `top_and_end(c)` and `t <
    /// end`; `p` is a live block of class `c` of this heap (so not null),
    /// not cached, that its user gave up.
    #[inline(always)]
    pub(crate) unsafe fn push_at(&self, c: usize, t: u32, p: *mut u8) {
        // SAFETY: the slot exists (the contract: end is at most the top of
        // SLOTS blocks).
        unsafe { self.stacks.push_at(c, t, p) }
    }

    /// Sets class `c`'s limit (at most `SLOTS`, and at least what it holds).
    #[inline(always)]
    pub(crate) fn set_limit(&self, c: usize, lim: u32) {
        self.set_end(c, lim, Stacks::raise);
    }

    /// [`FrontCache::set_limit`] of a class a pop has just found empty (one
    /// load fewer: its top is set to its base, not read and raised; debug
    /// builds check that it is empty).
    #[inline(always)]
    pub(crate) fn set_limit_of_empty(&self, c: usize, lim: u32) {
        self.set_end(c, lim, Stacks::raise_empty);
    }

    /// Raises class `c` with `raise` ([`ClassStacks::raise`] or
    /// `raise_empty`), then sets its end for a limit of `lim`.
    #[inline(always)]
    fn set_end(&self, c: usize, lim: u32, raise: unsafe fn(&Stacks, usize)) {
        debug_assert!(lim as usize <= SLOTS);
        let end = &self.end[c];
        // SAFETY: c is a class (checked by the index above).
        unsafe { raise(&self.stacks, c) };
        end.set(Stacks::end(c, lim));
    }

    /// The pool classes' limit when they cache.
    #[inline(always)]
    pub(crate) fn small_max(&self) -> u32 {
        self.small_max.get()
    }

    /// Lets the pool classes cache (from when each next opens).
    pub(crate) fn enable_small(&self) {
        self.small_max.set(SLOTS as u32);
    }

    /// Blocks cached in class `c`.
    #[inline]
    pub(crate) fn cached(&self, c: usize) -> usize {
        self.stacks.count(c)
    }

    /// The cached blocks of class `c`, oldest first. Owner only.
    pub(crate) fn blocks(&self, c: usize) -> impl Iterator<Item = *mut u8> + '_ {
        self.stacks.blocks(c)
    }

    /// Takes the `k` oldest blocks of class `c` out of the cache into `out`
    /// and returns how many (at most what it holds). Owner only.
    pub(crate) fn take_oldest(&self, c: usize, k: usize, out: &mut [*mut u8; SLOTS]) -> usize {
        self.stacks.take_oldest(c, k, out)
    }
}

/// The cache class of a request of `n` bytes, 1 to [`MEDIUM_MAX`], that
/// needs no more alignment than [`ALIGNMENT`]: its pool class up to 512
/// bytes, its medium class's after. One load from a table of a byte per
/// [`ALIGNMENT`] bytes (2 KiB).
///
/// # Safety
/// `1 <= n <= MEDIUM_MAX`.
#[inline(always)]
pub(crate) unsafe fn class_of_size(n: usize) -> usize {
    debug_assert!((1..=MEDIUM_MAX).contains(&n));
    // SAFETY: (n - 1) >> ALIGNMENT_SHIFT < MEDIUM_MAX / ALIGNMENT (the
    // contract). Every entry is below NB_CACHE_CLASSES (the table's
    // construction; the test below checks each).
    usize::from(unsafe { *SIZE_CLASSES.get_unchecked((n - 1) >> ALIGNMENT_SHIFT) })
}

/// [`class_of_size`] behind the gate ([`set_gate`]): [`SHUT_CLASS`] for
/// every size while it is shut. The same instructions as `class_of_size`
/// (the table's address is loaded instead of computed), so a front that
/// gates its fast path on it (a tracing one, which shuts it while it
/// traces) pays nothing for the gate while it is open.
///
/// # Safety
/// `1 <= n <= MEDIUM_MAX`.
#[inline(always)]
pub(crate) unsafe fn class_of_size_gated(n: usize) -> usize {
    debug_assert!((1..=MEDIUM_MAX).contains(&n));
    let table = CLASS_TABLE.load(Ordering::Relaxed);
    // SAFETY: the table is SIZE_CLASSES or SHUT_CLASSES, of the same length
    // (see class_of_size).
    usize::from(unsafe { *table.add((n - 1) >> ALIGNMENT_SHIFT) })
}

/// Shuts (`false`) or opens the gates of [`class_of_size_gated`] and
/// [`FrontCache::pop_gated`].
pub(crate) fn set_gate(open: bool) {
    let table = if open { &SIZE_CLASSES } else { &SHUT_CLASSES };
    CLASS_TABLE.store(table.as_ptr().cast_mut(), Ordering::SeqCst);
    POP_GATE.store(if open { 0 } else { u32::MAX }, Ordering::SeqCst);
}

/// The gate's mask for [`FrontCache::pop_gated`]: 0 while it is open,
/// `u32::MAX` (above every top) while it is shut.
#[inline(always)]
pub(crate) fn pop_gate() -> u32 {
    POP_GATE.load(Ordering::Relaxed)
}

/// True while the gate is shut.
#[inline(always)]
pub(crate) fn gate_is_shut() -> bool {
    pop_gate() != 0
}

/// See [`pop_gate`]. Invariant: 0 or `u32::MAX`, written by [`set_gate`]
/// with the class table.
static POP_GATE: AtomicU32 = AtomicU32::new(0);

/// The table [`class_of_size_gated`] reads: [`SIZE_CLASSES`] or
/// [`SHUT_CLASSES`].
static CLASS_TABLE: AtomicPtr<u8> = AtomicPtr::new(SIZE_CLASSES.as_ptr().cast_mut());

/// Every size's class while the gate is shut.
static SHUT_CLASSES: [u8; MEDIUM_MAX / ALIGNMENT] = [SHUT_CLASS as u8; MEDIUM_MAX / ALIGNMENT];

/// Every size's class (a byte per [`ALIGNMENT`] bytes of request).
static SIZE_CLASSES: [u8; MEDIUM_MAX / ALIGNMENT] = {
    let mut t = [0u8; MEDIUM_MAX / ALIGNMENT];
    let mut i = 0;
    while i < t.len() {
        // The largest request of the entry's range: every request in it
        // maps to the same class (class bounds are multiples of ALIGNMENT).
        let n = (i + 1) * ALIGNMENT;
        t[i] = match size_class(n) {
            Some(c) => c as u8,
            None => medium(medium_class(n)) as u8,
        };
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_class::{medium_size, table_test_sizes};

    #[test]
    fn every_request_maps_to_the_class_that_serves_it() {
        for n in table_test_sizes(ALIGNMENT) {
            // SAFETY: 1 <= n <= MEDIUM_MAX.
            let c = unsafe { class_of_size(n) };
            match size_class(n) {
                Some(s) => assert_eq!(c, s, "{n}"),
                None if c >= NB_CACHE_CLASSES => panic!("{n}: class {c} out of range"),
                None => {
                    assert_eq!(c, medium(medium_class(n)), "{n}");
                    assert!(medium_size(c - NB_SMALL_SIZE_CLASSES) >= n);
                }
            }
        }
    }

    #[test]
    fn a_class_out_of_range_or_full_or_closed_is_refused() {
        let f = FrontCache::new(true);
        let b = |i: usize| (i * 64) as *mut u8;
        // SAFETY: fake addresses, never dereferenced by the cache (push
        // prefetches, which cannot fault).
        unsafe {
            assert!(!f.try_push(NB_CACHE_CLASSES, b(1)), "out of range");
            assert!(!f.try_push(0xff, b(1)), "NO_CLASS");
            let m = medium(3);
            assert!(!f.try_push(m, b(1)), "closed (limit 0)");
            f.set_limit(m, 2);
            assert!(f.try_push(m, b(1)) && f.try_push(m, b(2)));
            assert!(!f.try_push(m, b(3)), "full");
            assert_eq!(f.cached(m), 2);
            assert_eq!(f.cached(3), 0, "pool class 3 is apart from medium class 3");
        }
        assert_eq!(f.pop(medium(3)), b(2));
        assert_eq!(f.small_max(), SLOTS as u32);
    }
}
