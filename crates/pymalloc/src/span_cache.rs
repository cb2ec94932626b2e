//! The medium block cache of a span heap: per medium class, the last few
//! blocks its owner freed, handed out again first, most recent first.
//!
//! Without it a medium block goes back onto its own span's free list and
//! the next request of its class takes the head of the *first listed*
//! span's list, usually another span, whose head was freed long ago: a cold
//! line to read before the block can be handed out, and another when the
//! program writes it. larson (8–1000 bytes, random frees) spent two thirds
//! of its time in those misses when its requests were medium
//! (docs/every-size.md). The small classes have had the same cache for
//! the same reason (`heap/cache.rs`).
//!
//! A cached block stays in use as far as its span is concerned, so it keeps
//! its span (and segment) from going back; the cache is bounded per class
//! by bytes ([`limit`]), and it is flushed before the heap takes a new
//! segment and whenever the heap gives memory back or measures what it
//! could give back (`spans.rs`).

use crate::front_cache::{medium, FrontCache, SLOTS};
use crate::span_class::{medium_size, NB_MEDIUM_CLASSES};

/// The most blocks a class may cache.
pub(crate) const MAX_SLOTS: usize = 16;
const _: () = assert!(MAX_SLOTS <= SLOTS);

/// The fewest blocks a class caches, if it caches at all.
const MIN_SLOTS: usize = 4;

/// The bytes a class may cache, as far as [`MAX_SLOTS`] allows: sixteen
/// blocks up to 1 KiB, four at 4 KiB, none above (a cache of one or two
/// blocks flushed every other free costs more than it saves: 179 → 230
/// instructions per malloc/free pair of 513–32768 bytes with one slot for
/// the largest classes, callgrind).
const CLASS_BYTES: usize = 16 * 1024;

/// Blocks class `c` may cache: `CLASS_BYTES / size` up to [`MAX_SLOTS`],
/// or none if that is under [`MIN_SLOTS`].
const fn limit_of(c: usize) -> u32 {
    let k = CLASS_BYTES / medium_size(c);
    if k < MIN_SLOTS {
        0
    } else if k > MAX_SLOTS {
        MAX_SLOTS as u32
    } else {
        k as u32
    }
}

/// [`limit_of`] for every class.
const LIMITS: [u8; NB_MEDIUM_CLASSES] = {
    let mut t = [0u8; NB_MEDIUM_CLASSES];
    let mut c = 0;
    while c < NB_MEDIUM_CLASSES {
        t[c] = limit_of(c) as u8;
        c += 1;
    }
    t
};

/// The blocks class `c` (a class) may cache.
pub(crate) fn limit(c: usize) -> u32 {
    u32::from(LIMITS[c])
}

/// The medium classes of a heap's front cache (`front_cache.rs`: medium
/// class `c` is cache class [`medium`]`(c)`).
///
/// Invariants: the stack of class `c` holds distinct medium blocks of class
/// `c` of this heap's spans that their user freed and nobody has been
/// handed since, at most its limit. Their spans count them in use (they are
/// on no free list); statistics count them free. The limit is 0 or
/// [`limit`]`(c)`, set by the first full push of the class
/// ([`MediumCache::open`]): a heap may start as zeroed memory, and the free
/// path reads the limit beside the counts (the static table would be a load
/// through the GOT in the shared libraries).
#[derive(Clone, Copy)]
pub(crate) struct MediumCache<'a>(pub(crate) &'a FrontCache);

impl<'a> MediumCache<'a> {
    /// The most recently cached block of class `c` (a class), taken out;
    /// null if none. Owner only.
    #[inline(always)]
    pub(crate) fn pop(self, c: usize) -> *mut u8 {
        self.0.pop(medium(c))
    }

    /// Caches `p`, a block of class `c` (a class) of this heap that its user
    /// freed, if the class has room; false (nothing done) if it is full, or
    /// not yet [opened](Self::open). Owner only.
    ///
    /// # Safety
    /// `p` is not null: a later [`Self::pop`] hands it out as a block
    /// (`class_stacks.rs`'s invariant, which the compiler is told).
    #[inline(always)]
    pub(crate) unsafe fn push(self, c: usize, p: *mut u8) -> bool {
        debug_assert!(c < NB_MEDIUM_CLASSES);
        // SAFETY: a medium class's cache class is a class; p is a block of
        // it that its user freed (the contract).
        unsafe { self.0.try_push(medium(c), p) }
    }

    /// Sets class `c`'s limit (a no-op after the first time); true if the
    /// class is full.
    pub(crate) fn open(self, c: usize) -> bool {
        self.0.set_limit(medium(c), limit(c));
        self.cached(c) >= limit(c) as usize
    }

    /// Blocks cached in class `c`.
    pub(crate) fn cached(self, c: usize) -> usize {
        self.0.cached(medium(c))
    }

    /// True if no class holds a block.
    pub(crate) fn is_empty(self) -> bool {
        (0..NB_MEDIUM_CLASSES).all(|c| self.cached(c) == 0)
    }

    /// Blocks and bytes cached in every class (any thread: a figure).
    pub(crate) fn totals(self) -> (usize, usize) {
        (0..NB_MEDIUM_CLASSES).fold((0, 0), |(b, s), c| {
            let k = self.cached(c);
            (b + k, s + k * medium_size(c))
        })
    }

    /// The cached blocks of class `c`, oldest first. Owner only.
    pub(crate) fn blocks(self, c: usize) -> impl Iterator<Item = *mut u8> + 'a {
        self.0.blocks(medium(c))
    }

    /// Takes the `k` oldest blocks of class `c` out of the cache into `out`
    /// and returns how many (at most what it holds). Owner only.
    pub(crate) fn take_oldest(self, c: usize, k: usize, out: &mut [*mut u8; SLOTS]) -> usize {
        self.0.take_oldest(medium(c), k, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_class::medium_class;
    use core::ptr;

    #[test]
    fn limits_bound_each_class_by_bytes_and_slots() {
        assert_eq!(limit(medium_class(600)), MAX_SLOTS as u32);
        assert_eq!(limit(medium_class(1024)), 16);
        assert_eq!(limit(medium_class(2048)), 8);
        assert_eq!(limit(medium_class(4096)), 4);
        assert_eq!(limit(medium_class(4097)), 0);
        assert_eq!(limit(medium_class(32 * 1024)), 0);
        for c in 0..NB_MEDIUM_CLASSES {
            let k = limit(c) as usize;
            assert!(k == 0 || (MIN_SLOTS..=MAX_SLOTS).contains(&k), "class {c}");
            assert!(k * medium_size(c) <= CLASS_BYTES, "class {c}");
        }
    }

    #[test]
    fn last_in_first_out_up_to_the_limit_then_oldest_taken_first() {
        let front = FrontCache::new(true);
        let cache = MediumCache(&front);
        let c = medium_class(3000); // 3072: five slots
        let k = limit(c) as usize;
        let blocks: Vec<*mut u8> = (1..=k + 1).map(|i| (i * 4096) as *mut u8).collect();
        // The fake blocks are not null, and the cache never reads through
        // them (its push prefetches, which cannot fault).
        let push = |b| {
            // SAFETY: b is one of the fake blocks above, not null.
            unsafe { cache.push(c, b) }
        };
        assert!(!push(blocks[0]), "closed until opened");
        assert!(!cache.open(c), "opened empty");
        for &b in &blocks[..k] {
            assert!(push(b));
        }
        assert!(!push(blocks[k]), "full at its limit");
        assert!(cache.open(c), "full");
        assert_eq!(cache.totals(), (k, k * medium_size(c)));
        assert_eq!(cache.pop(c), blocks[k - 1], "most recent first");
        let mut out = [ptr::null_mut(); SLOTS];
        assert_eq!(cache.take_oldest(c, 2, &mut out), 2);
        assert_eq!(&out[..2], &blocks[..2]);
        assert_eq!(cache.blocks(c).collect::<Vec<_>>(), blocks[2..k - 1].to_vec());
        assert_eq!(cache.take_oldest(c, SLOTS, &mut out), k - 3);
        assert!(cache.pop(c).is_null());
        assert_eq!(cache.totals(), (0, 0));
    }
}
