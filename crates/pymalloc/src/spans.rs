//! The blocks above 512 bytes of one heap ([`SpanHeap`]), in segments of
//! the segment region (see `segment.rs` for their layout):
//!
//! * **medium** (513 bytes to 32 KiB): 80 size classes (`span_class.rs`),
//!   each served from the heap's cache of blocks it freed last
//!   (`span_cache.rs`), else from spans of 64 KiB or more, found as CPython
//!   finds pools: the first span of the class's list, the head of its free
//!   list, or the next block it has never handed out;
//! * **large** (to 1008 KiB): a span of whole 16 KiB units per block, which
//!   grows and shrinks in place while the units after it are free;
//! * **huge**: a run of 1 MiB slots per block, which belongs to no heap
//!   (see `huge.rs`).
//!
//! Units that spans give back stay in their segment ("dirty") and go back
//! to the OS as the heap's purge policy says: at once, after the decay
//! period, or (never) only with their whole segment.

use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::block_map::NO_CLASS;
use crate::cell_array::CellArray;
use crate::front_cache::{self, FrontCache};
use crate::huge::{alloc_huge, huge_figures};
use crate::os;
use crate::region::SEGMENTS;
use crate::segment::{
    init_span_segment, run_mask, runs, segment_of, span_of, unit_address, Segment, Span, ALL_UNITS, HUGE, LARGE,
    LARGE_MAX, NOT_A_SPAN, SEGMENT_SIZE, SPANS, UNIT, UNITS, UNIT_BITS,
};
use crate::span_cache::{self, MediumCache};
use crate::span_class::{
    aligned_class, medium_align, medium_class, medium_size, span_units, MEDIUM_MAX, MIN_MEDIUM_ALIGN, NB_MEDIUM_CLASSES,
};
use crate::span_pages;
use crate::sync::SpinLock;

/// When units given back by spans return to the OS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GiveBack {
    /// At once, and a wholly free segment at once.
    Immediate,
    /// At the decay sweep after the next (see [`SpanHeap::sweep`]).
    Decay,
    /// Only with their segment, once it is wholly free.
    WithSegment,
}

/// What a span heap needs from the heap around it on its rare paths.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The owner tag routing frees of the heap's blocks (null: none).
    pub(crate) tag: *const (),
    /// The heap's bookkeeping lock, which guards the segments' unit state.
    pub(crate) meta: &'a SpinLock,
    pub(crate) give_back: GiveBack,
}

/// Live blocks and bytes above 512 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanStats {
    /// Span segments (1 MiB each) held.
    pub segments: usize,
    /// Medium blocks in use.
    pub medium_blocks: usize,
    /// Bytes of the medium blocks in use (by class size).
    pub medium_bytes: usize,
    /// Large blocks in use.
    pub large_blocks: usize,
    /// Bytes of the large blocks in use (whole units).
    pub large_bytes: usize,
    /// Huge blocks in use in the process.
    pub huge_blocks: usize,
    /// Bytes of the huge blocks in use (whole slots).
    pub huge_bytes: usize,
    /// Bytes of free units still resident (given back later by the policy).
    pub dirty_bytes: usize,
    /// Bytes of free pages given back inside medium spans still in use.
    pub pages_out_bytes: usize,
    /// Bytes of freed huge blocks' slots still resident, in the process
    /// (given back later by the policy).
    pub huge_kept_bytes: usize,
}

impl SpanStats {
    /// Adds `o`'s figures to these (huge figures are process-wide: kept).
    pub fn add(&mut self, o: &SpanStats) {
        self.segments += o.segments;
        self.medium_blocks += o.medium_blocks;
        self.medium_bytes += o.medium_bytes;
        self.large_blocks += o.large_blocks;
        self.large_bytes += o.large_bytes;
        self.dirty_bytes += o.dirty_bytes;
        self.pages_out_bytes += o.pages_out_bytes;
    }
}

/// Counters the owner writes (plain loads and stores of relaxed atomics:
/// no read-modify-write on the hot path) and anyone reads.
#[derive(Default)]
struct Counters {
    segments: AtomicUsize,
    medium_blocks: AtomicUsize,
    medium_bytes: AtomicUsize,
    large_blocks: AtomicUsize,
    large_bytes: AtomicUsize,
    dirty_units: AtomicUsize,
    pages_out_bytes: AtomicUsize,
}

#[inline(always)]
fn bump(c: &AtomicUsize, by: isize) {
    c.store(c.load(Ordering::Relaxed).wrapping_add_signed(by), Ordering::Relaxed);
}

/// The pages of a span segment's header (its descriptors and bitmaps),
/// resident while the segment holds a span.
pub fn segment_header_bytes() -> usize {
    size_of::<Segment>().next_multiple_of(crate::os::page_size())
}

/// Calls `f(head unit, descriptor)` for every span of segment `seg`.
///
/// # Safety
/// `seg` is a live span segment whose owner's `meta` is held.
unsafe fn spans_in(seg: *mut Segment, mut f: impl FnMut(usize, *mut Span)) {
    let mut u = 1;
    // SAFETY: the contract; a unit that is not free belongs to a span whose
    // descriptor is at its head.
    unsafe {
        while u < UNITS {
            if (*seg).free & (1 << u) != 0 {
                u += 1;
                continue;
            }
            let s = (&raw mut (*seg).spans).cast::<Span>().add(u);
            f(u, s);
            u += usize::from((*s).units);
        }
    }
}

/// The blocks above 512 bytes of one heap.
///
/// Invariants: `classes[c]` heads a doubly linked list of exactly the
/// medium spans of class `c` of this heap with a free block (owner only);
/// `segments` heads the list of this heap's span segments, those with a free
/// unit before those without, `last` its last (changed under the heap's
/// bookkeeping lock, which sweeps from other threads take too); `cache`
/// holds blocks its owner freed that their spans still count in use
/// (`span_cache.rs`), and the medium counters count them too (statistics
/// subtract them).
pub(crate) struct SpanHeap {
    classes: CellArray<*mut Span, NB_MEDIUM_CLASSES>,
    /// The heap's front cache, pool classes and medium classes
    /// (`front_cache.rs`); this heap uses the medium ones ([`MediumCache`]).
    front: FrontCache,
    segments: Cell<*mut Segment>,
    /// The last segment of `segments` (null when it is empty).
    last: Cell<*mut Segment>,
    counters: Counters,
}

/// For each medium class `c`, the end of the classes
/// [`SpanHeap::borrow_larger`] looks at: those above it at most half as
/// large again (a table: the loop would otherwise compute every size).
const BORROW_END: [u8; NB_MEDIUM_CLASSES] = {
    let mut t = [0u8; NB_MEDIUM_CLASSES];
    let mut c = 0;
    while c < NB_MEDIUM_CLASSES {
        let mut k = c + 1;
        while k < NB_MEDIUM_CLASSES && medium_size(k) <= medium_size(c) + medium_size(c) / 2 {
            k += 1;
        }
        t[c] = k as u8;
        c += 1;
    }
    t
};

/// [`SpanHeap::find_units`]'s choice among the segments `segs` yields in
/// list order, as (segment, free units, dirty units): the shortest run of
/// free dirty units at least `k` long (the first such run exactly `k` long
/// at once), else the longest dirty run at least `least` long (shortened
/// to fit), else the shortest free run at least `k` long; the first of
/// equal ones in list order. Returns (segment, first unit, units).
///
/// One walk finds all three, reading each segment once: three walks, one
/// per kind, read every segment's header up to three times per new span,
/// and the headers, each at the start of a 1 MiB slot, share one set of
/// the L1 cache (in a ring of 64 large blocks the search missed the L1
/// cache 35 times per block taken, 90% of the run's read misses:
/// docs/every-size.md, nineteenth pass).
fn choose_units<S: Copy>(
    segs: impl Iterator<Item = (S, u64, u64)>,
    least: usize,
    k: usize,
) -> Option<(S, usize, usize)> {
    // The filter below skips a segment with fewer than `least` free units.
    debug_assert!(least <= k);
    // The best run so far of each kind: (segment, first unit, length, cost).
    type Best<S> = Option<(S, usize, usize, usize)>;
    fn offer<S>(best: &mut Best<S>, seg: S, u: usize, len: usize, cost: usize) {
        if best.as_ref().is_none_or(|b| cost < b.3) {
            *best = Some((seg, u, len, cost));
        }
    }
    // Dirty runs holding k (cost: the excess), dirty runs holding only
    // `least` (cost: the units short), free runs holding k (the excess).
    let (mut fit, mut longest, mut clean) = (None, None, None);
    for (seg, free, dirty) in segs {
        if (free.count_ones() as usize) < least {
            continue;
        }
        for (u, len) in runs(free & dirty) {
            if len == k {
                return Some((seg, u, k));
            } else if len > k {
                offer(&mut fit, seg, u, len, len - k);
            } else if len >= least {
                offer(&mut longest, seg, u, len, k - len);
            }
        }
        // A dirty run of either kind beats every clean one.
        if fit.is_none() && longest.is_none() {
            for (u, len) in runs(free) {
                if len >= k {
                    offer(&mut clean, seg, u, len, len - k);
                }
            }
        }
    }
    if let Some((seg, u, _, _)) = fit {
        return Some((seg, u, k));
    }
    if let Some((seg, u, len, _)) = longest {
        return Some((seg, u, len));
    }
    clean.map(|(seg, u, _, _)| (seg, u, k))
}

/// Records cache class `class` in the block map for units `head..head + k`
/// of `seg` (a unit in use is looked up by the front's `free`: a medium
/// span's units read its class, a large block's head unit [`NO_CLASS`]).
///
/// # Safety
/// The units are the caller's, about to hold blocks of that kind.
unsafe fn note_units(seg: *mut Segment, head: usize, k: usize, class: u8) {
    if let Some(off) = SEGMENTS.offset(unit_address(seg, head)) {
        // SAFETY: the units lie in the region (a segment is a slot of it)
        // and are the caller's (the contract).
        unsafe { SEGMENTS.map().set_classes(off, k, class) };
    }
}

impl SpanHeap {
    /// An empty span heap holding `front`, its heap's front cache.
    pub(crate) const fn new(front: FrontCache) -> SpanHeap {
        SpanHeap {
            classes: CellArray::new([ptr::null_mut(); NB_MEDIUM_CLASSES]),
            front,
            segments: Cell::new(ptr::null_mut()),
            last: Cell::new(ptr::null_mut()),
            counters: Counters {
                segments: AtomicUsize::new(0),
                medium_blocks: AtomicUsize::new(0),
                medium_bytes: AtomicUsize::new(0),
                large_blocks: AtomicUsize::new(0),
                large_bytes: AtomicUsize::new(0),
                dirty_units: AtomicUsize::new(0),
                pages_out_bytes: AtomicUsize::new(0),
            },
        }
    }

    /// The heap's front cache, every class.
    #[inline(always)]
    pub(crate) fn front_cache(&self) -> &FrontCache {
        &self.front
    }

    /// The medium classes of the front cache.
    #[inline(always)]
    fn cache(&self) -> MediumCache<'_> {
        MediumCache(&self.front)
    }

    /// A medium block of `n` bytes aligned to `align` from the class's cache
    /// or a span already on its class list; null if the class has neither
    /// (or `n`, `align` are not medium): then [`Self::alloc_slow`].
    #[inline(always)]
    pub(crate) fn alloc_listed(&self, n: usize, align: usize) -> *mut u8 {
        if n > MEDIUM_MAX {
            return ptr::null_mut();
        }
        let c = medium_class(n);
        if align > MIN_MEDIUM_ALIGN && align > medium_align(c) {
            return ptr::null_mut();
        }
        let p = self.cache().pop(c);
        if !p.is_null() {
            return p;
        }
        self.listed_block(c)
    }

    /// A block of the first span listed for medium class `c`, or null if
    /// none is (owner only): [`Self::alloc_listed`] past the cache.
    #[inline(always)]
    pub(crate) fn listed_block(&self, c: usize) -> *mut u8 {
        let s = self.classes[c].get();
        if s.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: a listed span is a live medium span of this heap with a
        // free block (invariant), and only the owner calls this.
        unsafe { self.take_block(c, s) }
    }

    /// Any block of `n` bytes aligned to `align` (a power of two); zeroed if
    /// `zero`. Null if no segment can be had or the alignment is beyond a
    /// huge block's (half a segment).
    pub(crate) fn alloc_slow(&self, n: usize, align: usize, zero: bool, ctx: &Ctx<'_>) -> *mut u8 {
        if n <= MEDIUM_MAX {
            if let Some(c) = aligned_class(medium_class(n), align) {
                let mut p = self.cache().pop(c);
                if p.is_null() {
                    p = self.take_or_grow(c, align, ctx);
                    if p.is_null() {
                        return ptr::null_mut();
                    }
                }
                if zero {
                    // SAFETY: a fresh block of medium_size(c) >= n bytes.
                    unsafe { ptr::write_bytes(p, 0, n) };
                }
                return p;
            }
        }
        if n <= LARGE_MAX && align <= UNIT {
            return self.alloc_large(n, zero, ctx);
        }
        alloc_huge(n, align, zero)
    }

    /// Pops a block of listed span `s` of class `c`; unlists it if full.
    /// The free list's head inline; carving a virgin block, or taking back
    /// the pages of blocks given to the OS, out of line.
    ///
    /// # Safety
    /// `s` is a live span of class `c` on this heap's list; owner only.
    #[inline(always)]
    unsafe fn take_block(&self, c: usize, s: *mut Span) -> *mut u8 {
        // SAFETY: the contract; the free list links blocks of the span.
        unsafe {
            let p = (*s).free;
            if p.is_null() {
                return self.take_unlinked_block(c, s);
            }
            (*s).free = p.cast::<*mut u8>().read();
            self.block_taken(c, s);
            p
        }
    }

    /// A block of class `c`, whose cache is empty: from its listed span,
    /// else a neighbour's freed block ([`Self::borrow_larger`]), else from a
    /// new span; null if no segment can be had.
    fn take_or_grow(&self, c: usize, align: usize, ctx: &Ctx<'_>) -> *mut u8 {
        let mut s = self.classes[c].get();
        if s.is_null() {
            let p = self.borrow_larger(c, align);
            if !p.is_null() {
                return p;
            }
            s = self.new_medium_span(c, ctx);
            if s.is_null() {
                return ptr::null_mut();
            }
        }
        // SAFETY: s is a live listed span of class c of this heap.
        unsafe { self.take_block(c, s) }
    }

    /// Class `c` has no free block: a freed block of a larger class at
    /// most half as large again (four classes up to 2 KiB, eight above)
    /// and aligned to `align`, cached or on the free list of the class's
    /// listed span; null if there is none, and then class `c` grows. Never
    /// a virgin block: a heap that grows fills its own classes (borrowing
    /// virgin blocks raised the peak of a heap of 0.5–8 KB strings by 3%).
    ///
    /// In a heap of mixed sizes each class's count of live blocks wanders,
    /// and a class keeps room for the most it ever held; the room the
    /// classes keep adds up with their number. Taking a neighbour's free
    /// block before growing pools the room of neighbouring classes, and a
    /// class used now and then takes a block some other class has touched
    /// instead of pages of its own. Reach an eighth → a half: a ring of
    /// 2,000 random blocks of 513 B–32 KiB peaks 41.5 → 39.0 MiB
    /// (first and last bytes written) and 41.8 → 40.9 (written whole),
    /// glibc-thread 2.5 → 2.3 MiB, the Python service heap 0.2% higher
    /// (docs/every-size.md, eighth pass). Only when the class has no span
    /// with a free or virgin block: taken before a virgin block of its own,
    /// a borrowed block held a long-lived survivor and the service heap
    /// ended 1.4% higher. The block stays its own class's: it is freed
    /// there, and its usable size is its class's.
    #[cold]
    fn borrow_larger(&self, c: usize, align: usize) -> *mut u8 {
        for k in c + 1..usize::from(BORROW_END[c]) {
            if align > MIN_MEDIUM_ALIGN && medium_align(k) < align {
                continue;
            }
            let p = self.cache().pop(k);
            if !p.is_null() {
                return p;
            }
            let s = self.classes[k].get();
            // SAFETY: a listed span is a live span of this heap.
            if !s.is_null() && unsafe { !(*s).free.is_null() } {
                // SAFETY: s is a live listed span of class k of this heap,
                // with a block on its free list.
                return unsafe { self.take_block(k, s) };
            }
        }
        ptr::null_mut()
    }

    /// [`Self::take_block`] when the span's free list is empty: a virgin
    /// block, or (none left) the free blocks whose pages went back.
    ///
    /// # Safety
    /// As for [`Self::take_block`].
    #[cold]
    #[inline(never)]
    unsafe fn take_unlinked_block(&self, c: usize, s: *mut Span) -> *mut u8 {
        // SAFETY: the contract; the free list links blocks of the span.
        unsafe {
            if (*s).virgin == (*s).capacity {
                // The free blocks left are out: their pages come back.
                let out = span_pages::restore_pages(s, span_base(s));
                bump(&self.counters.pages_out_bytes, -(out as isize));
            }
            let p = if !(*s).free.is_null() {
                let p = (*s).free;
                (*s).free = p.cast::<*mut u8>().read();
                p
            } else {
                let base = span_base(s);
                let p = base.add(usize::from((*s).virgin) * (*s).size as usize);
                (*s).virgin += 1;
                p
            };
            self.block_taken(c, s);
            p
        }
    }

    /// Counts a block taken from listed span `s` of class `c`, and unlists
    /// the span if that filled it.
    ///
    /// # Safety
    /// As for [`Self::take_block`].
    #[inline(always)]
    unsafe fn block_taken(&self, c: usize, s: *mut Span) {
        // SAFETY: the contract.
        unsafe {
            (*s).used += 1;
            if (*s).used == (*s).capacity {
                self.unlist(c, s);
            }
            bump(&self.counters.medium_blocks, 1);
            // The span's own size: on the line just read, where the class's
            // size would be a dozen instructions of arithmetic.
            bump(&self.counters.medium_bytes, (*s).size as isize);
        }
    }

    #[cold]
    fn new_medium_span(&self, c: usize, ctx: &Ctx<'_>) -> *mut Span {
        // Span units wanted; fewer, down to two blocks' worth, to fill a hole.
        let want = span_units(c, UNIT);
        let least = (2 * medium_size(c)).div_ceil(UNIT);
        let Some((seg, head, k)) = self.take_units_zero(least, want, ctx, false) else { return ptr::null_mut() };
        let size = medium_size(c);
        // SAFETY: the units are ours now (taken under the lock); their
        // descriptor is the owner's to write.
        unsafe {
            let s = (&raw mut (*seg).spans).cast::<Span>().add(head);
            (*s).free = ptr::null_mut();
            (*s).size = size as u32;
            (*s).used = 0;
            (*s).virgin = 0;
            (*s).capacity = ((k * UNIT) / size) as u16;
            (*s).class = c as u8;
            (*s).units = k as u8;
            (*s).pages_out = 0;
            note_units(seg, head, k, front_cache::medium(c) as u8);
            self.list(c, s);
            s
        }
    }

    #[cold]
    fn alloc_large(&self, n: usize, zero: bool, ctx: &Ctx<'_>) -> *mut u8 {
        let k = n.max(1).div_ceil(UNIT);
        let Some((seg, head, _)) = self.take_units_zero(k, k, ctx, zero) else { return ptr::null_mut() };
        // SAFETY: as in new_medium_span.
        unsafe {
            let s = (&raw mut (*seg).spans).cast::<Span>().add(head);
            (*s).size = (k * UNIT) as u32;
            (*s).class = LARGE;
            (*s).units = k as u8;
            (*s).listed = false;
            (*s).pages_out = 0;
            note_units(seg, head, 1, NO_CLASS);
            bump(&self.counters.large_blocks, 1);
            bump(&self.counters.large_bytes, (k * UNIT) as isize);
            unit_address(seg, head)
        }
    }

    /// Takes a run of `least` to `want` free units ([`Self::find_units`]; of
    /// a new segment, `want`), writes its `back` offsets and returns
    /// (segment, first unit, units); zeroes it if `zero` and it may hold
    /// old bytes.
    ///
    /// Before a new segment, the cached blocks go back to their spans (which
    /// may free a run).
    fn take_units_zero(
        &self,
        least: usize,
        want: usize,
        ctx: &Ctx<'_>,
        zero: bool,
    ) -> Option<(*mut Segment, usize, usize)> {
        let mut flushed = false;
        let (seg, head, dirty, k) = loop {
            let meta = ctx.meta.lock();
            let (seg, head, k) = match self.find_units(least, want) {
                Some(found) => found,
                None if !flushed && !self.cache().is_empty() => {
                    drop(meta);
                    self.flush_cache(ctx);
                    flushed = true;
                    continue;
                }
                None => (self.new_segment(ctx)?, 1, want),
            };
            let m = run_mask(head, k);
            // SAFETY: seg is a live span segment of this heap, `meta` held.
            unsafe {
                let was_full_after = (*seg).free & !m == 0;
                let dirty = (*seg).zero & m != m;
                bump(&self.counters.dirty_units, -(((*seg).dirty & m).count_ones() as isize));
                (*seg).free &= !m;
                (*seg).dirty &= !m;
                (*seg).zero &= !m;
                (*seg).stale &= !m;
                (*seg).stale_free = false;
                if was_full_after {
                    self.move_to_back(seg);
                }
                for i in 0..k {
                    (*seg).back[head + i] = i as u8;
                }
                break (seg, head, dirty, k);
            }
        };
        if zero && dirty {
            // SAFETY: the run is ours and k units long.
            unsafe { ptr::write_bytes(unit_address(seg, head), 0, k * UNIT) };
        }
        Some((seg, head, k))
    }

    /// Where a span of `k` units (or of `least` to `k`) goes, `meta` held:
    /// (segment, first unit, units). Resident memory first: the shortest
    /// run of free dirty units at least `k` long, else the longest at least
    /// `least` long (a span shortened to fit it); only then the shortest
    /// run of `k` free units, clean ones among them; None if no segment of
    /// the list has one.
    ///
    /// Spans of 4 to 16 units come and go in segments of 63, and a free
    /// run shorter than the span wanted next stays resident and unused. In
    /// a ring of 2,000 random blocks of 513 B–32 KiB written whole, taking
    /// the first run of `k` free units let a sixth of the segments' units
    /// sit free and dirty, and the peak stood at 1.46× the live bytes
    /// (mimalloc 1.24×); best fit among dirty runs, then spans shortened to
    /// fit them, bring it to 1.25× (docs/every-size.md, eighth pass).
    /// ([`choose_units`] chooses.)
    fn find_units(&self, least: usize, k: usize) -> Option<(*mut Segment, usize, usize)> {
        let mut seg = self.segments.get();
        let walk = core::iter::from_fn(|| unsafe {
            // SAFETY: list entries are live span segments of this heap, and
            // `meta` is held while the walk is used up, inside this call.
            // Segments without a free unit are at the back.
            if seg.is_null() || (*seg).free == 0 {
                return None;
            }
            let here = seg;
            seg = (*seg).next;
            Some((here, (*here).free, (*here).dirty))
        });
        choose_units(walk, least, k)
    }

    /// A new span segment at the front of the list (`meta` held): a slot
    /// another heap gave back with its pages kept if there is one (no page
    /// to fault in), else a fresh one.
    fn new_segment(&self, ctx: &Ctx<'_>) -> Option<*mut Segment> {
        let (seg, kept) = SEGMENTS.alloc_reusing_counted(1);
        let seg = seg.cast::<Segment>();
        if seg.is_null() {
            return None;
        }
        // SAFETY: a committed slot, ours; the tag is this heap's.
        unsafe {
            init_span_segment(seg, kept == 0);
            SEGMENTS.set_owner(seg.cast(), ctx.tag);
            self.push_front(seg);
            bump(&self.counters.dirty_units, (*seg).dirty.count_ones() as isize);
        }
        bump(&self.counters.segments, 1);
        Some(seg)
    }

    /// Frees a medium or large block of this heap (owner only). True if
    /// units went back to their segment (a span emptied, or the block was
    /// large). `ctx` is asked for only then, out of the hot path.
    ///
    /// # Safety
    /// `p` is a live medium or large block of this heap, not used again.
    #[inline(always)]
    pub(crate) unsafe fn free<'a>(&self, p: *mut u8, ctx: impl FnOnce() -> Ctx<'a>) -> bool {
        let seg = segment_of(p);
        // SAFETY: p is a live block of this heap's span segment seg.
        unsafe {
            let (s, head) = span_of(seg, p);
            let class = (*s).class;
            if class == LARGE {
                bump(&self.counters.large_blocks, -1);
                bump(&self.counters.large_bytes, -((*s).size as isize));
                self.release_units(seg, s, head, &ctx());
                return true;
            }
            let c = usize::from(class);
            // SAFETY: p is a live block (the contract), so not null.
            if self.cache().push(c, p) {
                return false;
            }
            if span_cache::limit(c) == 0 {
                return self.free_to_span_at(seg, s, head, p, ctx);
            }
            self.cache_full(c, p, &ctx())
        }
    }

    /// The cache of class `c` (a class that caches) refused `p`: it is
    /// full, and keeps what it holds while `p` goes to its span (as the
    /// pool classes do, `heap/cache.rs`), or it was not opened yet, and `p`
    /// is its first block. True if units went back to a segment.
    ///
    /// # Safety
    /// `p` is a live medium block of class `c` of this heap, not used again.
    #[cold]
    #[inline(never)]
    unsafe fn cache_full(&self, c: usize, p: *mut u8, ctx: &Ctx<'_>) -> bool {
        // SAFETY: p is a live block (the contract), so not null.
        if !self.cache().open(c) && unsafe { self.cache().push(c, p) } {
            return false;
        }
        // SAFETY: the contract.
        unsafe { self.free_to_span(p, ctx) }
    }

    /// Gives the cached blocks of class `c` back to their spans. True if
    /// units went back to a segment.
    fn flush_cache_class(&self, c: usize, ctx: &Ctx<'_>) -> bool {
        let mut out = [ptr::null_mut(); front_cache::SLOTS];
        let k = self.cache().take_oldest(c, span_cache::MAX_SLOTS, &mut out);
        let mut released = false;
        for &b in &out[..k] {
            // SAFETY: a block that was cached: a live medium block of this
            // heap that nobody uses, no longer cached.
            released |= unsafe { self.free_to_span(b, ctx) };
        }
        released
    }

    /// Gives every cached block back to its span (owner only, `meta` not
    /// held). True if units went back to a segment.
    pub(crate) fn flush_cache(&self, ctx: &Ctx<'_>) -> bool {
        let mut released = false;
        for c in 0..NB_MEDIUM_CLASSES {
            if self.cache().cached(c) > 0 {
                released |= self.flush_cache_class(c, ctx);
            }
        }
        released
    }

    /// Puts medium block `p` back on its span's free list, listing the span
    /// if it was full and giving it back if it emptied (unless it is its
    /// class's only one). True if it went back.
    ///
    /// # Safety
    /// `p` is a live medium block of this heap, not cached, not used again;
    /// owner only, `meta` not held.
    unsafe fn free_to_span(&self, p: *mut u8, ctx: &Ctx<'_>) -> bool {
        let seg = segment_of(p);
        // SAFETY: the contract: p is a live medium block of seg's span s.
        unsafe {
            let (s, head) = span_of(seg, p);
            self.free_to_span_at(seg, s, head, p, || *ctx)
        }
    }

    /// [`Self::free_to_span`] with `p`'s segment, span and head unit looked
    /// up; `ctx` is asked for only if the span goes back.
    ///
    /// # Safety
    /// As for [`Self::free_to_span`], and `(s, head) == span_of(seg, p)`.
    #[inline(always)]
    unsafe fn free_to_span_at<'a>(
        &self,
        seg: *mut Segment,
        s: *mut Span,
        head: usize,
        p: *mut u8,
        ctx: impl FnOnce() -> Ctx<'a>,
    ) -> bool {
        // SAFETY: the contract: p is a live medium block of seg's span s.
        unsafe {
            let c = usize::from((*s).class);
            p.cast::<*mut u8>().write((*s).free);
            (*s).free = p;
            (*s).used -= 1;
            bump(&self.counters.medium_blocks, -1);
            bump(&self.counters.medium_bytes, -((*s).size as isize));
            if !(*s).listed {
                self.list(c, s);
            }
            // An empty span goes back unless it is its class's only one.
            if (*s).used == 0 && !(self.classes[c].get() == s && (*s).next.is_null()) {
                self.unlist(c, s);
                self.release_units(seg, s, head, &ctx());
                return true;
            }
            false
        }
    }

    /// Gives back the empty spans the class lists keep (owner only).
    pub(crate) fn release_kept(&self, ctx: &Ctx<'_>) {
        self.flush_cache(ctx);
        for c in 0..NB_MEDIUM_CLASSES {
            let mut s = self.classes[c].get();
            // SAFETY: listed spans are live medium spans of this heap; an
            // empty one holds no block anyone uses.
            unsafe {
                while !s.is_null() {
                    let next = (*s).next;
                    if (*s).used == 0 {
                        self.unlist(c, s);
                        let (seg, head) = span_head(s);
                        self.release_units(seg, s, head, ctx);
                    }
                    s = next;
                }
            }
        }
    }

    /// Gives the units of span `s` back to its segment.
    ///
    /// # Safety
    /// `s` (head unit `head`) is a live unlisted span of `seg`, a segment of
    /// this heap, and none of its blocks is used any more.
    #[cold]
    unsafe fn release_units(&self, seg: *mut Segment, s: *mut Span, head: usize, ctx: &Ctx<'_>) {
        let _meta = ctx.meta.lock();
        // SAFETY: the contract; `meta` is held.
        unsafe {
            let m = run_mask(head, usize::from((*s).units));
            bump(&self.counters.pages_out_bytes, -(span_pages::forget_pages(&mut *s) as isize));
            (*s).class = NOT_A_SPAN;
            let was_full = (*seg).free == 0;
            (*seg).free |= m;
            (*seg).dirty |= m;
            (*seg).stale_free = false;
            bump(&self.counters.dirty_units, m.count_ones() as isize);
            if was_full {
                self.unlink(seg);
                self.push_front(seg);
            }
            match ctx.give_back {
                GiveBack::Immediate => {
                    if (*seg).free == ALL_UNITS {
                        self.release_segment(seg, false);
                    } else {
                        self.discard(seg, m);
                    }
                }
                GiveBack::WithSegment => {
                    if (*seg).free == ALL_UNITS && self.counters.segments.load(Ordering::Relaxed) > 1 {
                        self.release_segment(seg, false);
                    }
                }
                GiveBack::Decay => {
                    // A wholly free segment goes to the region with its
                    // pages, where any heap's next segment (or a huge block)
                    // takes it and the region's sweep decays it; the heap
                    // keeps one, so that a loop that frees and allocates
                    // does not take and give a slot each time.
                    if (*seg).free == ALL_UNITS && self.counters.segments.load(Ordering::Relaxed) > 1 {
                        self.release_segment(seg, true);
                    }
                }
            }
        }
    }

    /// Gives the dirty units of `mask` to the OS (`meta` held).
    ///
    /// # Safety
    /// `seg` is a live span segment of this heap; `mask` names free units.
    unsafe fn discard(&self, seg: *mut Segment, mask: u64) -> usize {
        // SAFETY: the contract: free units hold nothing anyone uses.
        unsafe {
            let d = (*seg).dirty & mask;
            if d == 0 {
                return 0;
            }
            os::discard_runs(seg.cast(), d, UNIT);
            (*seg).dirty &= !d;
            (*seg).zero |= d;
            bump(&self.counters.dirty_units, -(d.count_ones() as isize));
            d.count_ones() as usize * UNIT
        }
    }

    /// Unlinks a wholly free segment and gives its slot back (`meta` held),
    /// with its pages if `keep`. Returns the bytes given to the OS.
    ///
    /// A kept segment slot is not bounded by size, as a huge block's is
    /// ([`crate::huge::max_kept_slots`]): any later segment fits it, so keeping it
    /// never makes the region take a fresh slot beside it (what the huge
    /// bound guards against), and the decay sweep gives it back within two
    /// periods if nothing takes it, or an arena taken meanwhile does
    /// (`region::alloc_arena`). Bounded like huge slots (64 MiB), a serde_json
    /// round trip of 100,000 objects faulted its 280 MiB of map nodes in again
    /// at every round: 297,650 page faults in five rounds, against
    /// mimalloc's 1,700-4,900 (docs/benchmarks.md, 2026-12-06).
    ///
    /// # Safety
    /// `seg` is a live span segment of this heap whose units are all free.
    unsafe fn release_segment(&self, seg: *mut Segment, keep: bool) -> usize {
        let max_kept = if keep { usize::MAX } else { 0 };
        // SAFETY: the contract.
        let kept = unsafe {
            debug_assert_eq!((*seg).free, ALL_UNITS);
            bump(&self.counters.dirty_units, -((*seg).dirty.count_ones() as isize));
            self.unlink(seg);
            SEGMENTS.set_owner(seg.cast(), ptr::null());
            SEGMENTS.free_keeping(seg.cast(), 1, max_kept)
        };
        bump(&self.counters.segments, -1);
        if kept == 0 {
            SEGMENT_SIZE
        } else {
            0
        }
    }

    /// One decay sweep (`meta` held): gives back the units that were free
    /// and dirty at the previous sweep and still are, and the segments that
    /// were wholly free then and still are; marks what is free now. Returns
    /// the bytes given back.
    pub(crate) fn sweep(&self) -> usize {
        let mut bytes = 0;
        let mut seg = self.segments.get();
        // SAFETY: list entries are live span segments; `meta` is held.
        unsafe {
            while !seg.is_null() {
                let next = (*seg).next;
                if (*seg).free == ALL_UNITS && (*seg).stale_free {
                    bytes += self.release_segment(seg, false);
                } else {
                    bytes += self.discard(seg, (*seg).stale);
                    (*seg).stale = (*seg).dirty;
                    (*seg).stale_free = (*seg).free == ALL_UNITS;
                }
                seg = next;
            }
        }
        bytes
    }

    /// Gives back every free unit and wholly free segment now (`meta`
    /// held). Returns the bytes.
    pub(crate) fn purge(&self) -> usize {
        let mut bytes = 0;
        let mut seg = self.segments.get();
        // SAFETY: as in sweep.
        unsafe {
            while !seg.is_null() {
                let next = (*seg).next;
                bytes += if (*seg).free == ALL_UNITS {
                    self.release_segment(seg, false)
                } else {
                    self.discard(seg, ALL_UNITS)
                };
                seg = next;
            }
        }
        bytes
    }

    /// Calls `f(segment)` for every segment of this heap.
    ///
    /// # Safety
    /// `meta` is held.
    unsafe fn each_segment(&self, mut f: impl FnMut(*mut Segment)) {
        let mut seg = self.segments.get();
        // SAFETY: list entries are live span segments of this heap, and
        // `meta` is held (the contract).
        unsafe {
            while !seg.is_null() {
                f(seg);
                seg = (*seg).next;
            }
        }
    }

    /// Gives back the free pages of the medium spans in use (owner only:
    /// the free lists are the owner's). Returns the bytes newly given back.
    pub(crate) fn discard_span_pages(&self, ctx: &Ctx<'_>) -> usize {
        self.flush_cache(ctx);
        let _meta = ctx.meta.lock();
        let mut bytes = 0;
        // SAFETY: `meta` is held and the caller owns the heap, so the spans'
        // free lists; each span is a live one at its head unit's address.
        unsafe {
            self.each_segment(|seg| {
                spans_in(seg, |u, s| {
                    if (*s).class != LARGE {
                        bytes += span_pages::discard_free_pages(s, unit_address(seg, u));
                    }
                })
            });
        }
        bump(&self.counters.pages_out_bytes, bytes as isize);
        bytes
    }

    /// Bytes of this heap's spans that hold a block in use, to the page:
    /// large blocks whole and medium spans' pages holding part of a block
    /// in use; then the bytes of the header pages of the segments holding
    /// either ([`segment_header_bytes`]), held for the descriptors alone
    /// (owner only: the free lists are the owner's).
    pub(crate) fn live_page_bytes(&self, ctx: &Ctx<'_>) -> (usize, usize) {
        self.flush_cache(ctx);
        let _meta = ctx.meta.lock();
        let (mut bytes, mut headers) = (0, 0);
        // SAFETY: as in discard_span_pages.
        unsafe {
            self.each_segment(|seg| {
                let mut held = 0;
                spans_in(seg, |u, s| {
                    held += if (*s).class == LARGE {
                        (*s).size as usize
                    } else {
                        span_pages::live_page_bytes(s, unit_address(seg, u))
                    };
                });
                if held > 0 {
                    bytes += held;
                    headers += segment_header_bytes();
                }
            });
        }
        (bytes, headers)
    }

    /// True if a sweep would give something back later (`meta` held).
    pub(crate) fn holds_free(&self) -> bool {
        let mut seg = self.segments.get();
        // SAFETY: as in sweep.
        unsafe {
            while !seg.is_null() && (*seg).free != 0 {
                if (*seg).dirty != 0 || (*seg).free == ALL_UNITS {
                    return true;
                }
                seg = (*seg).next;
            }
        }
        false
    }

    /// Resizes a large block of this heap in place to hold `n` bytes, if the
    /// units after it are free (growing) or `n` still needs a large block
    /// (shrinking). False, with nothing changed, otherwise.
    ///
    /// # Safety
    /// `p` is a live large block of this heap; owner only.
    pub(crate) unsafe fn resize_large(&self, p: *mut u8, n: usize, ctx: &Ctx<'_>) -> bool {
        if n <= MEDIUM_MAX || n > LARGE_MAX {
            return false;
        }
        let seg = segment_of(p);
        let want = n.div_ceil(UNIT);
        let _meta = ctx.meta.lock();
        // SAFETY: the contract; `meta` is held for the unit state.
        unsafe {
            let (s, head) = span_of(seg, p);
            let have = usize::from((*s).units);
            if want > have {
                if head + want > UNITS {
                    return false;
                }
                let extra = run_mask(head + have, want - have);
                if (*seg).free & extra != extra {
                    return false;
                }
                bump(&self.counters.dirty_units, -(((*seg).dirty & extra).count_ones() as isize));
                (*seg).free &= !extra;
                (*seg).dirty &= !extra;
                (*seg).zero &= !extra;
                (*seg).stale &= !extra;
                if (*seg).free == 0 {
                    self.move_to_back(seg);
                }
                for u in head + have..head + want {
                    (*seg).back[u] = (u - head) as u8;
                }
            } else if want < have {
                let tail = run_mask(head + want, have - want);
                let was_full = (*seg).free == 0;
                (*seg).free |= tail;
                (*seg).dirty |= tail;
                (*seg).stale &= !tail;
                bump(&self.counters.dirty_units, tail.count_ones() as isize);
                if was_full {
                    self.unlink(seg);
                    self.push_front(seg);
                }
                if ctx.give_back == GiveBack::Immediate {
                    self.discard(seg, tail);
                }
            }
            bump(&self.counters.large_bytes, (want as isize - have as isize) * UNIT as isize);
            (*s).units = want as u8;
            (*s).size = (want * UNIT) as u32;
        }
        true
    }

    /// The figures of this heap (huge blocks: the process's).
    /// Cached blocks count as free.
    pub(crate) fn stats(&self) -> SpanStats {
        let c = &self.counters;
        let (cached, cached_bytes) = self.cache().totals();
        SpanStats {
            segments: c.segments.load(Ordering::Relaxed),
            // Read from another thread while the owner works, the two may
            // disagree by the blocks in flight (never below zero).
            medium_blocks: c.medium_blocks.load(Ordering::Relaxed).saturating_sub(cached),
            medium_bytes: c.medium_bytes.load(Ordering::Relaxed).saturating_sub(cached_bytes),
            large_blocks: c.large_blocks.load(Ordering::Relaxed),
            large_bytes: c.large_bytes.load(Ordering::Relaxed),
            dirty_bytes: c.dirty_units.load(Ordering::Relaxed) * UNIT,
            pages_out_bytes: c.pages_out_bytes.load(Ordering::Relaxed),
            ..huge_stats()
        }
    }

    /// Checks every invariant of the segments and spans (owner, `meta`
    /// held): the first one broken, with an address.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, usize)> {
        let check = |ok: bool, what: &'static str, at: usize| if ok { Ok(()) } else { Err((what, at)) };
        let mut listed = [0usize; NB_MEDIUM_CLASSES];
        let (mut segments, mut seen_full, mut dirty_units, mut pages_out_bytes) = (0, false, 0, 0);
        let (mut medium, mut medium_bytes, mut large, mut large_bytes) = (0, 0, 0, 0);
        let mut seg = self.segments.get();
        // SAFETY: list entries are live span segments of this heap, and the
        // owner holds `meta`; span descriptors of live spans are live.
        unsafe {
            while !seg.is_null() {
                let a = seg.addr();
                segments += 1;
                check((*seg).kind == SPANS, "span segment kind", a)?;
                check((*seg).free & 1 == 0, "header unit free", a)?;
                check((*seg).dirty & !(*seg).free == 0, "dirty unit in use", a)?;
                check((*seg).dirty & (*seg).zero == 0, "unit both dirty and zero", a)?;
                if (*seg).free == 0 {
                    seen_full = true;
                } else {
                    check(!seen_full, "segment with free units after a full one", a)?;
                }
                dirty_units += (*seg).dirty.count_ones() as usize;
                let mut u = 1;
                while u < UNITS {
                    let s = &(*seg).spans[u];
                    if (*seg).free & (1 << u) != 0 {
                        check(s.class == NOT_A_SPAN, "free unit heads a span", a + (u << UNIT_BITS))?;
                        u += 1;
                        continue;
                    }
                    let k = usize::from(s.units);
                    check(s.class != NOT_A_SPAN && k > 0 && u + k <= UNITS, "unit in no span", a + (u << UNIT_BITS))?;
                    for i in 0..k {
                        check((*seg).back[u + i] as usize == i, "span back offset", a + ((u + i) << UNIT_BITS))?;
                    }
                    check((*seg).free & run_mask(u, k) == 0, "span unit free", a + (u << UNIT_BITS))?;
                    if s.class == LARGE {
                        check(s.size as usize == k * UNIT && !s.listed, "large span", a + (u << UNIT_BITS))?;
                        large += 1;
                        large_bytes += k * UNIT;
                    } else {
                        let c = usize::from(s.class);
                        check(c < NB_MEDIUM_CLASSES && s.size as usize == medium_size(c), "span class", a)?;
                        check(usize::from(s.capacity) == k * UNIT / medium_size(c), "span capacity", a)?;
                        check(s.used <= s.virgin && s.virgin <= s.capacity, "span counts", a)?;
                        let mut nfree = 0;
                        let mut b = s.free;
                        while !b.is_null() && nfree <= usize::from(s.capacity) {
                            nfree += 1;
                            b = b.cast::<*mut u8>().read();
                        }
                        let out = span_pages::out_blocks(s);
                        check(
                            nfree + out == usize::from(s.virgin - s.used),
                            "span free list length",
                            a + (u << UNIT_BITS),
                        )?;
                        let base = unit_address(seg, u);
                        let mut b = s.free;
                        while !b.is_null() {
                            check(!span_pages::is_out(s, base, b), "listed block on a page out", b.addr())?;
                            b = b.cast::<*mut u8>().read();
                        }
                        pages_out_bytes += span_pages::out_bytes(s);
                        check(s.listed == (s.used < s.capacity), "span listed", a + (u << UNIT_BITS))?;
                        listed[c] += usize::from(s.listed);
                        medium += usize::from(s.used);
                        medium_bytes += usize::from(s.used) * medium_size(c);
                    }
                    u += k;
                }
                check((*seg).next.is_null() == (seg == self.last.get()), "last segment", a)?;
                seg = (*seg).next;
            }
            check(segments > 0 || self.last.get().is_null(), "last segment of an empty list", 0)?;
            for (c, &want) in listed.iter().enumerate() {
                let (mut n, mut s, mut prev) = (0, self.classes[c].get(), ptr::null_mut());
                while !s.is_null() && n <= want {
                    check(usize::from((*s).class) == c && (*s).listed, "listed span's class", s.addr())?;
                    check((*s).prev == prev, "span list links", s.addr())?;
                    n += 1;
                    prev = s;
                    s = (*s).next;
                }
                check(n == want, "spans listed per class", c)?;
            }
        }
        self.validate_cache()?;
        let (cached, cached_bytes) = self.cache().totals();
        let st = self.stats();
        check(st.segments == segments, "segment count", segments)?;
        check(
            st.medium_blocks + cached == medium && st.medium_bytes + cached_bytes == medium_bytes,
            "medium counters",
            medium,
        )?;
        check(st.large_blocks == large && st.large_bytes == large_bytes, "large counters", large)?;
        check(st.dirty_bytes == dirty_units * UNIT, "dirty counter", dirty_units)?;
        check(st.pages_out_bytes == pages_out_bytes, "pages-out counter", pages_out_bytes)?;
        Ok(())
    }

    /// The cache's invariants (`span_cache.rs`; owner, `meta` held): each
    /// cached block is a block of a span of its class in one of this heap's
    /// segments, handed out once (below the span's virgin mark), on no free
    /// list, cached once, and no span has more cached blocks than in use.
    fn validate_cache(&self) -> Result<(), (&'static str, usize)> {
        let check = |ok: bool, what: &'static str, at: usize| if ok { Ok(()) } else { Err((what, at)) };
        let mut seen: [*mut u8; NB_MEDIUM_CLASSES * span_cache::MAX_SLOTS] =
            [ptr::null_mut(); NB_MEDIUM_CLASSES * span_cache::MAX_SLOTS];
        let mut n = 0;
        for c in 0..NB_MEDIUM_CLASSES {
            check(self.cache().cached(c) <= span_cache::limit(c) as usize, "medium cache over its limit", c)?;
            for b in self.cache().blocks(c) {
                let a = b.addr();
                let seg = segment_of(b);
                let mut mine = false;
                // SAFETY: the owner holds `meta` (the contract): list
                // entries are live segments, and the span of a block inside
                // one of them is described at its head unit.
                unsafe {
                    self.each_segment(|s| mine |= s == seg);
                    check(mine, "cached block outside the heap's segments", a)?;
                    let u = (a - seg.addr()) >> UNIT_BITS;
                    check(u >= 1 && (*seg).free & (1 << u) == 0, "cached block in a free unit", a)?;
                    let (s, head) = span_of(seg, b);
                    check(usize::from((*s).class) == c, "cached block's class", a)?;
                    let off = a - unit_address(seg, head).addr();
                    let size = (*s).size as usize;
                    check(off % size == 0 && off / size < usize::from((*s).virgin), "cached block's place", a)?;
                    let mut f = (*s).free;
                    while !f.is_null() {
                        check(f != b, "cached block on a free list", a)?;
                        f = f.cast::<*mut u8>().read();
                    }
                    let in_span = seen[..n].iter().filter(|&&x| span_of(segment_of(x), x).0 == s).count();
                    check(in_span < usize::from((*s).used), "more cached blocks than used in a span", a)?;
                }
                check(!seen[..n].contains(&b), "block cached twice", a)?;
                seen[n] = b;
                n += 1;
            }
        }
        Ok(())
    }

    // List plumbing.

    /// # Safety
    /// `s` is a live unlisted medium span of class `c` of this heap.
    unsafe fn list(&self, c: usize, s: *mut Span) {
        // SAFETY: the contract; list entries are live spans.
        unsafe {
            let head = self.classes[c].get();
            (*s).prev = ptr::null_mut();
            (*s).next = head;
            if !head.is_null() {
                (*head).prev = s;
            }
            (*s).listed = true;
            self.classes[c].set(s);
        }
    }

    /// # Safety
    /// `s` is a live listed span of class `c` of this heap.
    unsafe fn unlist(&self, c: usize, s: *mut Span) {
        // SAFETY: the contract.
        unsafe {
            let (prev, next) = ((*s).prev, (*s).next);
            if prev.is_null() {
                self.classes[c].set(next);
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*s).listed = false;
        }
    }

    /// # Safety
    /// `seg` is a live span segment of this heap not on the list; `meta` held.
    unsafe fn push_front(&self, seg: *mut Segment) {
        // SAFETY: the contract.
        unsafe {
            let head = self.segments.get();
            (*seg).prev = ptr::null_mut();
            (*seg).next = head;
            if head.is_null() {
                self.last.set(seg);
            } else {
                (*head).prev = seg;
            }
            self.segments.set(seg);
        }
    }

    /// # Safety
    /// `seg` is on this heap's list; `meta` held.
    unsafe fn unlink(&self, seg: *mut Segment) {
        // SAFETY: the contract.
        unsafe {
            let (prev, next) = ((*seg).prev, (*seg).next);
            if prev.is_null() {
                self.segments.set(next);
            } else {
                (*prev).next = next;
            }
            if next.is_null() {
                self.last.set(prev);
            } else {
                (*next).prev = prev;
            }
        }
    }

    /// Moves a segment that has just filled to the back of the list.
    ///
    /// # Safety
    /// As for [`Self::unlink`].
    unsafe fn move_to_back(&self, seg: *mut Segment) {
        // SAFETY: the contract; list entries are live.
        unsafe {
            if (*seg).next.is_null() {
                return;
            }
            self.unlink(seg);
            let last = self.last.get();
            (*last).next = seg;
            (*seg).prev = last;
            (*seg).next = ptr::null_mut();
            self.last.set(seg);
        }
    }
}

/// The first byte of span `s` (its descriptor sits in its segment's header
/// at its head unit's index).
#[inline(always)]
fn span_base(s: *mut Span) -> *mut u8 {
    let (seg, head) = span_head(s);
    unit_address(seg, head)
}

/// The segment of span descriptor `s`, and its head unit.
#[inline(always)]
fn span_head(s: *mut Span) -> (*mut Segment, usize) {
    let seg = segment_of(s.cast());
    (seg, (s.addr() - (seg.addr() + core::mem::offset_of!(Segment, spans))) / core::mem::size_of::<Span>())
}

/// The process's huge blocks alone (every other figure 0).
pub(crate) fn huge_stats() -> SpanStats {
    let (huge_blocks, huge_bytes, huge_kept_bytes) = huge_figures();
    SpanStats { huge_blocks, huge_bytes, huge_kept_bytes, ..SpanStats::default() }
}

/// The usable bytes of a block of the segment region.
///
/// # Safety
/// `p` is a live block of the segment region.
#[inline]
pub(crate) unsafe fn usable_size(p: *const u8) -> usize {
    let seg = segment_of(p);
    // SAFETY: the contract: the segment and the block's span are live.
    unsafe {
        if (*seg).kind == HUGE {
            return (*seg).slots * SEGMENT_SIZE - (p.addr() - seg.addr());
        }
        (*span_of(seg, p).0).size as usize
    }
}

/// True if `p` (a live block of the segment region) is huge.
///
/// # Safety
/// As for [`usable_size`].
#[inline(always)]
pub(crate) unsafe fn is_huge(p: *const u8) -> bool {
    // SAFETY: the contract: the header is live; `kind` never changes.
    unsafe { (*segment_of(p)).kind == HUGE }
}

/// True if `p` (a live block of the segment region) is large.
///
/// # Safety
/// As for [`usable_size`], and `p` is not huge.
#[inline(always)]
pub(crate) unsafe fn is_large(p: *const u8) -> bool {
    // SAFETY: the contract.
    unsafe { (*span_of(segment_of(p), p).0).class == LARGE }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The choice as three walks of the list, one per kind (the search
    /// before `choose_units`): segment index, first unit, units.
    fn three_walks(segs: &[(u64, u64)], least: usize, k: usize) -> Option<(usize, usize, usize)> {
        let best_run = |units: &dyn Fn(u64, u64) -> u64, cost: &dyn Fn(usize) -> Option<usize>| {
            let mut best: Option<(usize, usize, usize, usize)> = None;
            for (i, &(free, dirty)) in segs.iter().enumerate() {
                for (u, len) in runs(units(free, dirty)) {
                    match cost(len) {
                        Some(0) => return Some((i, u, len)),
                        Some(x) if best.is_none_or(|b| x < b.3) => best = Some((i, u, len, x)),
                        _ => {}
                    }
                }
            }
            best.map(|(i, u, len, _)| (i, u, len))
        };
        let holds_k = |len: usize| len.checked_sub(k);
        let holds_least = |len: usize| (len >= least).then(|| k.saturating_sub(len));
        if let Some((i, u, _)) = best_run(&|f, d| f & d, &holds_k) {
            return Some((i, u, k));
        }
        if least < k {
            if let Some((i, u, len)) = best_run(&|f, d| f & d, &holds_least) {
                return Some((i, u, len.min(k)));
            }
        }
        best_run(&|f, _| f, &holds_k).map(|(i, u, _)| (i, u, k))
    }

    /// A segment's units with long runs likely: a few random runs set in
    /// an empty mask.
    fn units() -> impl Strategy<Value = u64> {
        prop::collection::vec((1usize..64, 1usize..24), 0..5).prop_map(|rs| {
            rs.into_iter().fold(0u64, |m, (start, len)| m | run_mask(start, len.min(64 - start))) & ALL_UNITS
        })
    }

    /// A segment's (free, dirty) units: dirty mostly within free (as in a
    /// segment, where only free units are dirty), sometimes not (the
    /// choice looks only at their intersection).
    fn segment() -> impl Strategy<Value = (u64, u64)> {
        (units(), units(), prop::bool::weighted(0.8))
            .prop_map(|(free, dirty, within)| (free, if within { dirty & free } else { dirty }))
    }

    /// Many cases natively (each takes microseconds); under Miri a few,
    /// without the failure file (Miri's isolation has no working
    /// directory).
    fn config() -> ProptestConfig {
        if cfg!(miri) {
            ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() }
        } else {
            ProptestConfig::with_cases(4096)
        }
    }

    proptest! {
        #![proptest_config(config())]
        #[test]
        fn one_walk_chooses_what_three_did(
            segs in prop::collection::vec(segment(), 0..8),
            least in 1usize..16,
            extra in 0usize..16,
        ) {
            // A list's walk stops at its first segment without a free unit.
            let segs: Vec<(u64, u64)> = segs.into_iter().take_while(|&(free, _)| free != 0).collect();
            let k = least + extra;
            let walk = segs.iter().enumerate().map(|(i, &(free, dirty))| (i, free, dirty));
            prop_assert_eq!(choose_units(walk, least, k), three_walks(&segs, least, k));
        }
    }

    #[test]
    fn dirty_runs_come_before_clean_ones_and_exact_fits_first() {
        let seg = |free: u64, dirty: u64| (free & ALL_UNITS, dirty);
        // Unit 1..4 clean and free, 10..16 free and dirty: a 3-unit span
        // takes the dirty run, though the clean one fits better.
        let a = seg(run_mask(1, 3) | run_mask(10, 6), run_mask(10, 6));
        assert_eq!(choose_units([(0, a.0, a.1)].into_iter(), 3, 3), Some((0, 10, 3)));
        // An exact dirty fit in a later segment beats a longer one earlier.
        let b = seg(run_mask(20, 3), run_mask(20, 3));
        assert_eq!(choose_units([(0, a.0, a.1), (1, b.0, b.1)].into_iter(), 3, 3), Some((1, 20, 3)));
        // No dirty run holds 8, the longest holding 2 does, shortened.
        assert_eq!(choose_units([(0, a.0, a.1)].into_iter(), 2, 8), Some((0, 10, 6)));
        // Nothing dirty: the shortest clean run holding 2.
        let c = seg(run_mask(1, 3) | run_mask(30, 9), 0);
        assert_eq!(choose_units([(0, c.0, c.1)].into_iter(), 2, 2), Some((0, 1, 2)));
        assert_eq!(choose_units([(0, c.0, c.1)].into_iter(), 10, 10), None);
    }
}
