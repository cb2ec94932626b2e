//! Which slots of a reserved region are handed out: a bitmap of freed slots
//! below a bump index, and which of the freed slots still have their pages
//! ("kept": a huge block's slots wait there, committed, for the next huge
//! block). Fixed-size, so that the allocator never allocates to manage its
//! own address space (it may be the global allocator).

/// Invariant: a slot below `next` is live (handed out) exactly when its bit
/// in `free` is clear; slots at or above `next` were never used; `nfree`
/// counts the set bits of `free`; no bit below word `hint` is set in `free`.
/// `kept` is a subset of `free` (freed slots whose pages are committed; every
/// other freed slot is decommitted) and `nkept` counts it; `stale` is a
/// subset of `kept` (slots already kept at the last sweep).
pub(crate) struct SlotTable<const WORDS: usize> {
    next: usize,
    nfree: usize,
    hint: usize,
    nkept: usize,
    free: [u64; WORDS],
    kept: [u64; WORDS],
    stale: [u64; WORDS],
}

/// A run of slots taken from the table: where it starts, and how many of
/// its slots were kept (committed, holding old bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) start: usize,
    pub(crate) kept: usize,
}

impl<const WORDS: usize> SlotTable<WORDS> {
    pub(crate) const fn new() -> Self {
        SlotTable { next: 0, nfree: 0, hint: 0, nkept: 0, free: [0; WORDS], kept: [0; WORDS], stale: [0; WORDS] }
    }

    /// `n` adjacent slots below `limit` (the slots the region really has):
    /// with `prefer_kept`, the first run of kept slots long enough, else the
    /// run of freed (or fresh) slots that holds the most kept ones; else the
    /// first run of freed slots long enough (one that ends at the bump index
    /// grows past it), else fresh ones. Kept slots taken are reported to
    /// `on_kept` as runs `(start, len)`, before they count as taken.
    pub(crate) fn take_run(
        &mut self,
        n: usize,
        limit: usize,
        prefer_kept: bool,
        on_kept: impl FnMut(usize, usize),
    ) -> Option<Taken> {
        let limit = limit.min(WORDS * 64);
        let start = match prefer_kept && self.nkept > 0 {
            true if self.nkept >= n => first_run(&self.kept, self.hint, self.next, n),
            _ => None,
        };
        let start = start
            .or_else(|| if prefer_kept && self.nkept > 0 { self.most_kept_window(n, limit) } else { None })
            .or_else(|| if self.nfree > 0 { self.find_freed_run(n, limit) } else { None })
            .or_else(|| (self.next + n <= limit).then_some(self.next))?;
        let kept = self.take_at(start, n, on_kept);
        Some(Taken { start, kept })
    }

    /// The first run of `n` freed slots, or of freed slots that reaches the
    /// bump index and can grow past it below `limit`.
    fn find_freed_run(&self, n: usize, limit: usize) -> Option<usize> {
        first_run(&self.free, self.hint, self.next, n).or_else(|| {
            // A freed run ending at `next` is extended with fresh slots.
            let mut start = self.next;
            while start > self.hint * 64 && bit(&self.free, start - 1) {
                start -= 1;
            }
            (start < self.next && start + n <= limit).then_some(start)
        })
    }

    /// The start of the run of `n` freed or fresh slots below `limit` that
    /// holds the most kept slots (the lowest such run), if any holds one.
    fn most_kept_window(&self, n: usize, limit: usize) -> Option<usize> {
        let (mut best, mut best_kept) = (None, 0);
        let (mut run, mut kept) = (0, 0);
        // Windows reaching past `next + n` hold no kept slot.
        for s in self.hint * 64..(self.next + n).min(limit) {
            let fresh = s >= self.next;
            if !fresh && !bit(&self.free, s) {
                (run, kept) = (0, 0);
                continue;
            }
            run += 1;
            kept += usize::from(!fresh && bit(&self.kept, s));
            if run > n {
                let out = s - n;
                kept -= usize::from(out < self.next && bit(&self.kept, out));
            }
            if run >= n && kept > best_kept {
                (best, best_kept) = (Some(s + 1 - n), kept);
            }
        }
        best
    }

    /// Takes the `n` slots from `start`, freed ones or fresh ones from the
    /// bump index on; returns how many were kept, reporting their runs.
    fn take_at(&mut self, start: usize, n: usize, mut on_kept: impl FnMut(usize, usize)) -> usize {
        let end = start + n;
        let freed_end = end.min(self.next);
        let mut kept = 0;
        let mut s = start;
        while s < freed_end {
            let run = run_len(&self.kept, s, freed_end);
            if run > 0 {
                on_kept(s, run);
                kept += run;
                s += run;
            } else {
                s += 1;
            }
        }
        for s in start..freed_end {
            debug_assert!(bit(&self.free, s));
            clear(&mut self.free, s);
            clear(&mut self.kept, s);
            clear(&mut self.stale, s);
        }
        self.nfree -= freed_end - start;
        self.nkept -= kept;
        self.next = self.next.max(end);
        while self.hint < WORDS && self.hint * 64 < self.next && self.free[self.hint] == 0 {
            self.hint += 1;
        }
        kept
    }

    /// True if the `n` slots from `start` (at most the bump index) may be
    /// taken: those below the bump index are freed, those from it on are
    /// fresh, and the run ends at or below `limit` (the slots the region
    /// has). A run that ends the used slots can so grow past them: a huge
    /// block allocated last, grown by `realloc`, stays where it is instead
    /// of moving, copied, at every step.
    pub(crate) fn run_is_free(&self, start: usize, n: usize, limit: usize) -> bool {
        start <= self.next
            && start + n <= limit.min(WORDS * 64)
            && (start..(start + n).min(self.next)).all(|s| bit(&self.free, s))
    }

    /// Whether slot `s` is live (handed out and not given back).
    pub(crate) fn is_live(&self, s: usize) -> bool {
        s < self.next && !bit(&self.free, s)
    }

    /// Takes the `n` slots from `start` (see [`Self::run_is_free`]);
    /// returns how many of them were kept.
    pub(crate) fn take_exact(&mut self, start: usize, n: usize) -> usize {
        debug_assert!(self.run_is_free(start, n, WORDS * 64));
        self.take_at(start, n, |_, _| {})
    }

    /// Gives `n` live slots from `start` back; the first `keep` of them keep
    /// their pages (the caller decommitted the others).
    pub(crate) fn give_run(&mut self, start: usize, n: usize, keep: usize) {
        debug_assert!(keep <= n);
        for s in start..start + n {
            debug_assert!(s < self.next && !bit(&self.free, s), "slot freed twice");
            set(&mut self.free, s);
            if s < start + keep {
                set(&mut self.kept, s);
            }
        }
        self.nfree += n;
        self.nkept += keep;
        self.hint = self.hint.min(start / 64);
    }

    /// Gives back up to `n` kept slots, lowest first, reported to
    /// `decommit` as runs `(start, len)`; they stay freed. Returns how many.
    pub(crate) fn release_kept(&mut self, n: usize, mut decommit: impl FnMut(usize, usize)) -> usize {
        let mut given = 0;
        let mut w = self.hint;
        while given < n && self.nkept > given && w < self.next.div_ceil(64).min(WORDS) {
            let word = self.kept[w];
            if word == 0 {
                w += 1;
                continue;
            }
            let b = word.trailing_zeros() as usize;
            let len = ((word >> b).trailing_ones() as usize).min(n - given);
            let run = if len == 64 { u64::MAX } else { ((1u64 << len) - 1) << b };
            self.kept[w] &= !run;
            self.stale[w] &= !run;
            decommit(w * 64 + b, len);
            given += len;
        }
        self.nkept -= given;
        given
    }

    /// The lowest run of kept slots, at most `max` long, whose slots become
    /// plain freed ones (its caller moves or decommits their pages): its
    /// start and length, or none.
    #[cfg_attr(miri, allow(dead_code))] // no region under Miri
    pub(crate) fn pop_kept_run(&mut self, max: usize) -> Option<(usize, usize)> {
        if self.nkept == 0 || max == 0 {
            return None;
        }
        let w = (self.hint..self.next.div_ceil(64).min(WORDS)).find(|&w| self.kept[w] != 0)?;
        let start = w * 64 + self.kept[w].trailing_zeros() as usize;
        let len = run_len(&self.kept, start, (start + max).min(self.next));
        for s in start..start + len {
            clear(&mut self.kept, s);
            clear(&mut self.stale, s);
        }
        self.nkept -= len;
        Some((start, len))
    }

    /// The bump index: every slot ever handed out lies below it.
    #[cfg_attr(miri, allow(dead_code))]
    pub(crate) fn extent(&self) -> usize {
        self.next
    }

    /// Kept slots.
    pub(crate) fn kept(&self) -> usize {
        self.nkept
    }

    /// A sweep of the kept slots: those already kept at the previous sweep
    /// (all of them if `all`) are reported to `decommit` as runs `(start,
    /// len)` and become plain freed slots; what is kept now is marked for the
    /// next sweep. Returns the slots given back.
    pub(crate) fn sweep_kept(&mut self, all: bool, mut decommit: impl FnMut(usize, usize)) -> usize {
        let mut given = 0;
        if self.nkept == 0 {
            return 0;
        }
        for w in self.hint..self.next.div_ceil(64).min(WORDS) {
            let mut go = if all { self.kept[w] } else { self.kept[w] & self.stale[w] };
            self.kept[w] &= !go;
            self.stale[w] = self.kept[w];
            given += go.count_ones() as usize;
            while go != 0 {
                let b = go.trailing_zeros() as usize;
                let len = (go >> b).trailing_ones() as usize;
                decommit(w * 64 + b, len);
                go &= !(if len == 64 { u64::MAX } else { ((1u64 << len) - 1) << b });
            }
        }
        self.nkept -= given;
        given
    }
}

#[inline]
fn bit(map: &[u64], s: usize) -> bool {
    map[s / 64] & (1 << (s % 64)) != 0
}

#[inline]
fn set(map: &mut [u64], s: usize) {
    map[s / 64] |= 1 << (s % 64);
}

#[inline]
fn clear(map: &mut [u64], s: usize) {
    map[s / 64] &= !(1 << (s % 64));
}

/// The length of the run of set bits of `map` from `s`, stopping at `end`.
fn run_len(map: &[u64], s: usize, end: usize) -> usize {
    let mut e = s;
    while e < end && bit(map, e) {
        e += 1;
    }
    e - s
}

/// The first run of `n` set bits of `map` from word `hint` below `end`.
fn first_run(map: &[u64], hint: usize, end: usize, n: usize) -> Option<usize> {
    let (mut run, mut start) = (0, 0);
    let mut s = hint * 64;
    while s < end {
        let word = map[s / 64] >> (s % 64);
        if word == 0 {
            run = 0;
            s = (s / 64 + 1) * 64;
            continue;
        }
        // Skip the clear bits, then count the set ones, a word at a time.
        let zeros = word.trailing_zeros() as usize;
        if zeros > 0 {
            run = 0;
            s += zeros;
            continue;
        }
        let ones = (word.trailing_ones() as usize).min(64 - s % 64).min(end - s);
        if run == 0 {
            start = s;
        }
        run += ones;
        if run >= n {
            return Some(start);
        }
        s += ones;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{SlotTable, Taken};

    fn take(t: &mut SlotTable<2>, n: usize, limit: usize) -> Option<usize> {
        t.take_run(n, limit, false, |_, _| {}).map(|r| r.start)
    }

    #[test]
    fn runs_reuse_freed_slots_and_bump_past_the_end() {
        let mut t = SlotTable::<2>::new();
        assert_eq!(take(&mut t, 1, 128), Some(0));
        assert_eq!(take(&mut t, 3, 128), Some(1));
        assert_eq!(take(&mut t, 2, 128), Some(4));
        t.give_run(1, 3, 0);
        assert_eq!(take(&mut t, 4, 128), Some(6), "a freed run of 3 cannot hold 4");
        assert_eq!(take(&mut t, 2, 128), Some(1));
        assert!(t.run_is_free(3, 1, 128) && !t.run_is_free(3, 2, 128));
        assert_eq!(t.take_exact(3, 1), 0);
        assert_eq!(take(&mut t, 1, 128), Some(10));
        assert_eq!(take(&mut t, 200, 128), None);
        assert_eq!(take(&mut t, 117, 128), Some(11));
        assert_eq!(take(&mut t, 1, 128), None);
    }

    #[test]
    fn a_freed_run_at_the_end_grows_past_the_bump_index() {
        let mut t = SlotTable::<2>::new();
        assert_eq!(take(&mut t, 4, 128), Some(0));
        assert_eq!(take(&mut t, 4, 128), Some(4));
        t.give_run(4, 4, 0);
        assert_eq!(take(&mut t, 6, 128), Some(4), "slots 4..8 freed, 8..10 fresh");
        assert_eq!(take(&mut t, 1, 128), Some(10));
        t.give_run(4, 6, 0);
        assert_eq!(take(&mut t, 130, 128), None);
    }

    /// The last run grows past the bump index, into fresh slots, up to the
    /// limit; a run with a live slot after it does not.
    #[test]
    fn the_last_run_may_grow_into_fresh_slots() {
        let mut t = SlotTable::<2>::new();
        assert_eq!(take(&mut t, 2, 128), Some(0));
        assert_eq!(take(&mut t, 3, 128), Some(2));
        assert!(!t.run_is_free(2, 1, 128), "slot 2 is live");
        assert!(t.run_is_free(5, 3, 128), "slots 5.. are fresh");
        assert!(!t.run_is_free(5, 3, 7), "past the limit");
        assert!(!t.run_is_free(6, 1, 128), "a run cannot start past the bump index");
        assert_eq!(t.take_exact(5, 3), 0);
        assert_eq!(take(&mut t, 1, 128), Some(8), "the bump index moved past the grown run");
        t.give_run(2, 3, 0);
        assert!(t.run_is_free(2, 3, 128) && !t.run_is_free(2, 4, 128), "freed slots, then a live one");
    }

    #[test]
    fn kept_slots_go_back_a_few_at_a_time_lowest_first() {
        let mut t = SlotTable::<2>::new();
        assert_eq!(take(&mut t, 70, 128), Some(0));
        t.give_run(2, 3, 3);
        t.give_run(60, 8, 8);
        assert_eq!(t.kept(), 11);
        let mut runs = vec![];
        assert_eq!(t.release_kept(4, |s, n| runs.push((s, n))), 4);
        assert_eq!(runs, [(2, 3), (60, 1)]);
        assert_eq!(t.kept(), 7);
        assert!(t.run_is_free(2, 3, 128), "given back, still freed");
        runs.clear();
        assert_eq!(t.release_kept(100, |s, n| runs.push((s, n))), 7);
        assert_eq!(runs, [(61, 3), (64, 4)], "a run over a word boundary comes in two");
        assert_eq!(t.kept(), 0);
        assert_eq!(t.release_kept(1, |_, _| unreachable!()), 0);
        // Nothing kept is left for a sweep to find.
        assert_eq!(t.sweep_kept(true, |_, _| unreachable!()), 0);
    }

    #[test]
    fn kept_runs_are_popped_lowest_first_and_stay_freed() {
        let mut t = SlotTable::<2>::new();
        assert_eq!(take(&mut t, 80, 128), Some(0));
        t.give_run(5, 3, 3);
        t.give_run(62, 6, 6);
        t.give_run(20, 4, 0);
        assert_eq!(t.sweep_kept(false, |_, _| {}), 0, "marked stale");
        assert_eq!(t.pop_kept_run(0), None);
        assert_eq!(t.pop_kept_run(2), Some((5, 2)), "at most max");
        assert_eq!(t.pop_kept_run(9), Some((7, 1)), "the rest of the run, not the next");
        assert_eq!(t.pop_kept_run(9), Some((62, 6)), "over a word boundary");
        assert_eq!(t.kept(), 0);
        assert_eq!(t.pop_kept_run(9), None);
        assert!(t.run_is_free(5, 3, 128) && t.run_is_free(62, 6, 128), "popped slots stay freed");
        assert_eq!(t.sweep_kept(true, |_, _| unreachable!()), 0, "and are not stale any more");
        assert_eq!(t.extent(), 80);
    }

    #[test]
    fn kept_slots_are_preferred_reported_and_swept_after_two_sweeps() {
        let mut t = SlotTable::<2>::new();
        assert_eq!(take(&mut t, 10, 128), Some(0));
        assert_eq!(take(&mut t, 10, 128), Some(10));
        t.give_run(0, 10, 0);
        t.give_run(10, 10, 6);
        assert_eq!(t.kept(), 6);
        let mut runs = vec![];
        let r = t.take_run(4, 128, true, |s, n| runs.push((s, n)));
        assert_eq!(r, Some(Taken { start: 10, kept: 4 }), "kept slots first, though freed ones come earlier");
        assert_eq!(runs, [(10, 4)]);
        assert_eq!(t.kept(), 2);
        // A plain take of a run over kept and decommitted slots reports
        // the kept part.
        runs.clear();
        let r = t.take_run(10, 128, false, |s, n| runs.push((s, n)));
        assert_eq!(r, Some(Taken { start: 0, kept: 0 }));
        t.give_run(0, 10, 10);
        let r = t.take_run(12, 128, false, |s, n| runs.push((s, n)));
        assert_eq!(r, Some(Taken { start: 14, kept: 2 }), "no freed run of 12: 14..20 grows past the bump index");
        assert_eq!(runs, [(14, 2)]);
        assert_eq!(t.kept(), 10);
        // Sweeps: the first marks, the second gives back what stayed kept.
        let mut given = vec![];
        assert_eq!(t.sweep_kept(false, |s, n| given.push((s, n))), 0);
        assert_eq!(t.sweep_kept(false, |s, n| given.push((s, n))), 10);
        assert_eq!(given, [(0, 10)]);
        assert_eq!(t.kept(), 0);
        assert!(t.run_is_free(0, 10, 128), "swept slots stay freed");
        // Slots taken and kept again after a sweep survive the next one.
        assert_eq!(t.take_exact(0, 10), 0);
        t.give_run(0, 10, 3);
        assert_eq!(t.sweep_kept(false, |_, _| {}), 0);
        assert_eq!(t.take_exact(1, 1), 1, "a taken kept slot leaves the stale marks");
        t.give_run(1, 1, 1);
        given.clear();
        assert_eq!(t.sweep_kept(false, |s, n| given.push((s, n))), 2);
        assert_eq!(given, [(0, 1), (2, 1)]);
        assert_eq!(t.sweep_kept(true, |s, n| given.push((s, n))), 1, "all: the fresh one too");
        assert_eq!(t.kept(), 0);
    }
}
