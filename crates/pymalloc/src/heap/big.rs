//! Blocks above 512 bytes: the heap's [`SpanHeap`] with the heap's owner
//! tag, bookkeeping lock and purge policy, and the remote queue drained
//! before a span segment is taken, so that a thread that only frees other
//! threads' blocks does not make their owners grow.

use super::Heap;
use crate::heap::PurgePolicy;
use crate::spans::{Ctx, GiveBack, SpanStats};

impl Heap {
    fn span_ctx(&self) -> Ctx<'_> {
        let give_back = match self.purge.policy() {
            PurgePolicy::Immediate => GiveBack::Immediate,
            PurgePolicy::Decay { .. } => GiveBack::Decay,
            PurgePolicy::Never | PurgePolicy::Threshold { .. } => GiveBack::WithSegment,
        };
        Ctx { tag: self.owner_tag(), meta: &self.meta, give_back }
    }

    /// A block of `n` bytes (any size, though meant for those above 512)
    /// aligned to `align`, zeroed if `zero`; null if no segment can be had
    /// (owner only).
    #[inline(always)]
    pub(crate) fn alloc_big(&self, n: usize, align: usize, zero: bool) -> *mut u8 {
        let p = self.spans.alloc_listed(n, align);
        if p.is_null() {
            return self.alloc_big_slow(n, align, zero);
        }
        if zero {
            // SAFETY: a fresh block of at least n bytes.
            unsafe { core::ptr::write_bytes(p, 0, n) };
        }
        p
    }

    /// [`Heap::alloc_big`]'s fast path: a block of the class's listed span
    /// (medium requests only), or null.
    #[inline(always)]
    pub(crate) fn alloc_big_listed(&self, n: usize, align: usize) -> *mut u8 {
        self.spans.alloc_listed(n, align)
    }

    /// A block of medium class `c`'s first listed span, or null (owner
    /// only): the fast path past the cache, for a caller that has the class.
    #[inline(always)]
    pub(crate) fn alloc_medium_listed(&self, c: usize) -> *mut u8 {
        self.spans.listed_block(c)
    }

    /// No listed span serves the request: drain the blocks other threads
    /// freed (they may list a span again), then the span heap's slow path,
    /// which takes a listed span first, else a new span or segment.
    #[cold]
    #[inline(never)]
    fn alloc_big_slow(&self, n: usize, align: usize, zero: bool) -> *mut u8 {
        self.drain_remote();
        self.spans.alloc_slow(n, align, zero, &self.span_ctx())
    }

    /// Frees a medium or large block of this heap (owner only).
    ///
    /// # Safety
    /// `p` is a live medium or large block of this heap, not used again.
    #[inline(always)]
    pub(crate) unsafe fn free_big(&self, p: *mut u8) {
        // SAFETY: the contract.
        if unsafe { self.spans.free(p, || self.span_ctx()) } {
            self.units_released();
        }
    }

    /// Units went back to a segment: under the decay policy, count the
    /// event and sweep if due, as when a pool empties.
    #[cold]
    fn units_released(&self) {
        if let PurgePolicy::Decay { ms } = self.purge.policy() {
            let _meta = self.meta.lock();
            let events = self.purge.events.get() + 1;
            self.purge.events.set(events);
            self.decay_if_due(events, ms);
        }
    }

    /// Resizes a large block of this heap in place (owner only); false if it
    /// cannot (see [`SpanHeap::resize_large`](crate::spans::SpanHeap)).
    ///
    /// # Safety
    /// `p` is a live large block of this heap.
    pub(crate) unsafe fn resize_large(&self, p: *mut u8, n: usize) -> bool {
        // SAFETY: the contract.
        unsafe { self.spans.resize_large(p, n, &self.span_ctx()) }
    }

    /// Gives back the empty spans kept on the class lists (owner only).
    pub(super) fn release_kept_spans(&self) {
        self.spans.release_kept(&self.span_ctx());
    }

    /// Gives back the free units of this heap's span segments and its
    /// wholly free segments now, whatever the policy; returns the bytes.
    /// Any thread may call it: it touches only what `meta` guards.
    pub fn release_free_units(&self) -> usize {
        let _meta = self.meta.lock();
        self.spans.purge()
    }

    /// Gives back the free pages of this heap's medium spans in use (owner
    /// only); returns the bytes.
    pub(crate) fn release_span_pages(&self) -> usize {
        self.spans.discard_span_pages(&self.span_ctx())
    }

    /// Bytes of this heap's span pages holding a block in use, and of the
    /// header pages of the segments holding them (owner only; see
    /// `SpanHeap::live_page_bytes`).
    pub(crate) fn span_live_page_bytes(&self) -> (usize, usize) {
        self.spans.live_page_bytes(&self.span_ctx())
    }

    /// Live blocks above 512 bytes of this heap (huge ones: the process's).
    pub fn span_stats(&self) -> SpanStats {
        self.spans.stats()
    }
}
