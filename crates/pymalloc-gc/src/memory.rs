//! The memory backing of a collector: where object blocks come from and go
//! back to (CPython's `PyObject_Malloc`, `PyObject_Realloc`,
//! `PyObject_Free`, as `gc_alloc` and `PyObject_GC_Del` use them), and the
//! count of blocks handed out.
//!
//! # Invariants
//!
//! * `live_blocks` counts the blocks handed out by [`Memory::alloc`] (and
//!   moved by [`Memory::realloc`]) and not yet given to [`Memory::free`]:
//!   objects, free-list blocks and weak references.
//! * A heap backing is used by its collector alone, from one thread, and
//!   none of its methods calls back into the collector, so each access
//!   through the `UnsafeCell` is the only live reference to the heap.
//! * One block cache: the heap is a [`pymalloc::Heap::new_retaining`], whose
//!   per-class cache keeps recently freed blocks (they are free as far as
//!   `live_blocks` is concerned); full collections flush it
//!   ([`Memory::flush_cache`]), as CPython's empty their free lists.

use core::cell::{Cell, UnsafeCell};

/// Where a collector's objects come from. (The heap is inline: a collector
/// is made once per thread, and every allocation saves an indirection.)
#[allow(clippy::large_enum_variant)]
enum Backing {
    /// The OBJ domain (CPython's `PyObject_Malloc`); for the process-wide
    /// collector of the C ABI.
    ObjDomain,
    /// A pymalloc heap owned by the collector (thread-local collectors).
    Heap(UnsafeCell<pymalloc::Heap>),
}

/// A backing and its count of live blocks. See the module documentation.
pub(crate) struct Memory {
    backing: Backing,
    live_blocks: Cell<usize>,
}

impl Memory {
    /// Blocks from the OBJ domain.
    pub(crate) fn obj_domain() -> Memory {
        Memory { backing: Backing::ObjDomain, live_blocks: Cell::new(0) }
    }

    /// Blocks from a heap of its own, with the core's block cache.
    pub(crate) fn own_heap() -> Memory {
        Memory { backing: Backing::Heap(UnsafeCell::new(pymalloc::Heap::new_retaining())), live_blocks: Cell::new(0) }
    }

    /// A block of `n` bytes, 16-aligned, or null when out of memory.
    #[inline(always)]
    pub(crate) fn alloc(&self, n: usize) -> *mut u8 {
        let p = match &self.backing {
            Backing::ObjDomain => pymalloc::Domain::Obj.malloc(n),
            // SAFETY: the heap is used only through this Memory, and malloc
            // does not call back into it, so this is the only live &mut.
            Backing::Heap(h) => unsafe { (*h.get()).malloc(n) },
        };
        if !p.is_null() {
            self.live_blocks.set(self.live_blocks.get() + 1);
        }
        p
    }

    /// Frees a block.
    ///
    /// # Safety
    /// `p` came from `alloc` (or `realloc`) of this Memory and is not used
    /// again.
    #[inline(always)]
    pub(crate) unsafe fn free(&self, p: *mut u8) {
        self.live_blocks.set(self.live_blocks.get() - 1);
        match &self.backing {
            // SAFETY: p is a live OBJ-domain block (caller's contract).
            Backing::ObjDomain => unsafe { pymalloc::Domain::Obj.free(p) },
            // SAFETY: the only live &mut to the heap (free does not call
            // back into it); p is a live block of this heap.
            Backing::Heap(h) => unsafe { (*h.get()).free(p) },
        }
    }

    /// Resizes a block; null when out of memory (`p` is then unchanged).
    ///
    /// # Safety
    /// `p` came from `alloc` of this Memory and is live.
    pub(crate) unsafe fn realloc(&self, p: *mut u8, n: usize) -> *mut u8 {
        match &self.backing {
            // SAFETY: p is a live OBJ-domain block (caller's contract).
            Backing::ObjDomain => unsafe { pymalloc::Domain::Obj.realloc(p, n) },
            // SAFETY: the only live &mut to the heap (realloc does not call
            // back into it); p is a live block of this heap.
            Backing::Heap(h) => unsafe { (*h.get()).realloc(p, n) },
        }
    }

    /// Gives the blocks cached by an own heap back to their pools.
    pub(crate) fn flush_cache(&self) {
        if let Backing::Heap(h) = &self.backing {
            // SAFETY: the only live &mut to the heap: flush_cache does not
            // call back into it.
            unsafe { (*h.get()).flush_cache() };
        }
    }

    /// Blocks handed out and not yet freed.
    #[inline(always)]
    pub(crate) fn live_blocks(&self) -> usize {
        self.live_blocks.get()
    }

    /// The statistics of an own heap.
    pub(crate) fn heap_stats(&self) -> Option<pymalloc::Stats> {
        match &self.backing {
            Backing::ObjDomain => None,
            // SAFETY: stats() only reads, and no &mut to the heap is live
            // (every other access is inside one call of this Memory).
            Backing::Heap(h) => Some(unsafe { (*h.get()).stats() }),
        }
    }
}
