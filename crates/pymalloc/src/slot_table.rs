//! Which slots of a reserved region are handed out: a bitmap of freed slots
//! below a bump index. Fixed-size, so that the allocator never allocates to
//! manage its own address space (it may be the global allocator).

/// Invariant: a slot below `next` is live (handed out) exactly when its bit
/// in `free` is clear; slots at or above `next` were never used; `nfree`
/// counts the set bits; no bit below word `hint` is set.
pub(crate) struct SlotTable<const WORDS: usize> {
    next: usize,
    nfree: usize,
    hint: usize,
    free: [u64; WORDS],
}

impl<const WORDS: usize> SlotTable<WORDS> {
    pub(crate) const fn new() -> Self {
        SlotTable { next: 0, nfree: 0, hint: 0, free: [0; WORDS] }
    }

    /// One slot below `limit` (the slots the region really has), lowest
    /// freed one first.
    pub(crate) fn take(&mut self, limit: usize) -> Option<usize> {
        if self.nfree > 0 {
            for w in self.hint..WORDS {
                if self.free[w] != 0 {
                    let b = self.free[w].trailing_zeros() as usize;
                    self.free[w] &= !(1 << b);
                    self.nfree -= 1;
                    self.hint = w;
                    return Some(w * 64 + b);
                }
            }
        }
        self.bump(1, limit)
    }

    /// `n` adjacent slots below `limit`: the first run of freed slots long
    /// enough, else fresh ones.
    pub(crate) fn take_run(&mut self, n: usize, limit: usize) -> Option<usize> {
        if n == 1 {
            return self.take(limit);
        }
        if self.nfree >= n {
            if let Some(start) = self.find_freed_run(n) {
                for s in start..start + n {
                    self.free[s / 64] &= !(1 << (s % 64));
                }
                self.nfree -= n;
                return Some(start);
            }
        }
        self.bump(n, limit)
    }

    fn find_freed_run(&self, n: usize) -> Option<usize> {
        let (mut run, mut start) = (0, 0);
        let mut s = self.hint * 64;
        while s < self.next {
            let word = self.free[s / 64] >> (s % 64);
            if word == 0 {
                run = 0;
                s = (s / 64 + 1) * 64;
                continue;
            }
            if word & 1 == 1 {
                if run == 0 {
                    start = s;
                }
                run += 1;
                if run == n {
                    return Some(start);
                }
            } else {
                run = 0;
            }
            s += 1;
        }
        None
    }

    fn bump(&mut self, n: usize, limit: usize) -> Option<usize> {
        if self.next + n <= limit.min(WORDS * 64) {
            self.next += n;
            Some(self.next - n)
        } else {
            None
        }
    }

    /// True if the `n` slots from `start` are all freed (and below `next`).
    pub(crate) fn run_is_free(&self, start: usize, n: usize) -> bool {
        start + n <= self.next && (start..start + n).all(|s| self.free[s / 64] & (1 << (s % 64)) != 0)
    }

    /// Takes the `n` freed slots from `start` (see [`Self::run_is_free`]).
    pub(crate) fn take_exact(&mut self, start: usize, n: usize) {
        debug_assert!(self.run_is_free(start, n));
        for s in start..start + n {
            self.free[s / 64] &= !(1 << (s % 64));
        }
        self.nfree -= n;
    }

    /// Gives `n` live slots from `start` back.
    pub(crate) fn give_run(&mut self, start: usize, n: usize) {
        for s in start..start + n {
            let (w, b) = (s / 64, s % 64);
            debug_assert!(s < self.next && self.free[w] & (1 << b) == 0, "slot freed twice");
            self.free[w] |= 1 << b;
        }
        self.nfree += n;
        self.hint = self.hint.min(start / 64);
    }
}

#[cfg(test)]
mod tests {
    use super::SlotTable;

    #[test]
    fn runs_reuse_freed_slots_and_bump_past_the_end() {
        let mut t = SlotTable::<2>::new();
        assert_eq!(t.take(128), Some(0));
        assert_eq!(t.take_run(3, 128), Some(1));
        assert_eq!(t.take_run(2, 128), Some(4));
        t.give_run(1, 3);
        assert_eq!(t.take_run(4, 128), Some(6), "a freed run of 3 cannot hold 4");
        assert_eq!(t.take_run(2, 128), Some(1));
        assert!(t.run_is_free(3, 1) && !t.run_is_free(3, 2));
        t.take_exact(3, 1);
        assert_eq!(t.take(128), Some(10));
        assert_eq!(t.take_run(200, 128), None);
        assert_eq!(t.take_run(117, 128), Some(11));
        assert_eq!(t.take(128), None);
    }
}
