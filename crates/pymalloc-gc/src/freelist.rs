//! Bounded free lists of object blocks, per type and optionally per size
//! (CPython keeps one per tuple length 1..=20, `PyTuple_MAXSAVESIZE`, each at
//! most `PyTuple_MAXFREELIST` = 2000 long), with statistics in the layout of
//! the free-list lines of `sys._debugmallocstats()`.
//!
//! # Invariants
//!
//! * `lists[i]` holds exactly `counts[i]` blocks, linked through their first
//!   word, each of the size of an object of index `first + i`; `counts[i] <=
//!   max`.
//! * A block in a list is owned by the list: nothing else uses it.
//!
//! ```
//! use pymalloc_gc::freelist::FreeLists;
//! // Tuples: lengths 1..=20, object size 24 + 8 * length.
//! let mut fl = FreeLists::new("PyTupleObject", 24, 8, 1, 20, 2000);
//! let block = pymalloc::Domain::Obj.malloc(16 + 32);
//! assert!(fl.push(1, block));
//! let mut text = String::new();
//! fl.write_stats(&mut text).unwrap();
//! assert!(text.starts_with("   1 free 1-sized PyTupleObjects * 32 bytes each ="));
//! assert_eq!(fl.pop(1), block);
//! unsafe { pymalloc::Domain::Obj.free(block) };
//! ```

use core::fmt;
use core::ptr;

/// Free lists for one type: one list per object size index.
///
/// Blocks still kept when the value is dropped are leaked: the owner, who
/// knows their allocator, empties it first with [`clear_with`](Self::clear_with).
#[derive(Debug)]
pub struct FreeLists {
    name: String,
    basicsize: usize,
    itemsize: usize,
    first: usize,
    max: usize,
    heads: Box<[*mut u8]>,
    counts: Box<[usize]>,
}

impl FreeLists {
    /// Free lists for the type `name` whose objects have
    /// `basicsize + index * itemsize` bytes, for indexes `first..first+n`,
    /// each holding at most `max` blocks. A fixed-size type uses
    /// `itemsize = 0, first = 0, n = 1`.
    pub fn new(name: &str, basicsize: usize, itemsize: usize, first: usize, n: usize, max: usize) -> FreeLists {
        FreeLists {
            name: name.to_owned(),
            basicsize,
            itemsize,
            first,
            max,
            heads: vec![ptr::null_mut(); n].into_boxed_slice(),
            counts: vec![0; n].into_boxed_slice(),
        }
    }

    #[inline]
    fn slot(&self, index: usize) -> Option<usize> {
        let i = index.checked_sub(self.first)?;
        (i < self.heads.len()).then_some(i)
    }

    /// Takes a block for an object of size index `index`, or null if there
    /// is none.
    #[inline]
    pub fn pop(&mut self, index: usize) -> *mut u8 {
        let Some(i) = self.slot(index) else {
            return ptr::null_mut();
        };
        let b = self.heads[i];
        if !b.is_null() {
            // SAFETY: blocks in the list are owned by it and start with the
            // link word (module invariants).
            self.heads[i] = unsafe { b.cast::<*mut u8>().read() };
            self.counts[i] -= 1;
        }
        b
    }

    /// Keeps `block` (of the size of an object of index `index`, at least a
    /// word) for reuse. Returns `false`, keeping nothing, when that list is
    /// full or the index has no list: the caller then frees the block.
    #[inline]
    pub fn push(&mut self, index: usize, block: *mut u8) -> bool {
        let Some(i) = self.slot(index) else {
            return false;
        };
        if self.counts[i] >= self.max || block.is_null() {
            return false;
        }
        // SAFETY: the caller hands the block over; it is at least a word
        // long and suitably aligned (allocator blocks are 16-aligned).
        unsafe { block.cast::<*mut u8>().write(self.heads[i]) };
        self.heads[i] = block;
        self.counts[i] += 1;
        true
    }

    /// Number of blocks kept for index `index`.
    pub fn len(&self, index: usize) -> usize {
        self.slot(index).map_or(0, |i| self.counts[i])
    }

    /// Whether no blocks are kept at all.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }

    /// The bound of each list.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Empties every list, handing each block to `release`.
    pub fn clear_with(&mut self, mut release: impl FnMut(*mut u8)) {
        for i in 0..self.heads.len() {
            while !self.heads[i].is_null() {
                let b = self.heads[i];
                // SAFETY: blocks in the list are owned by it and start with
                // the link word (module invariants).
                self.heads[i] = unsafe { b.cast::<*mut u8>().read() };
                self.counts[i] -= 1;
                release(b);
            }
        }
    }

    /// Writes one line per list in the layout of `sys._debugmallocstats()`:
    /// `free PyDictObjects` for a fixed-size type, `free N-sized
    /// PyTupleObjects` per size otherwise.
    pub fn write_stats(&self, out: &mut impl fmt::Write) -> fmt::Result {
        for i in 0..self.heads.len() {
            let index = self.first + i;
            let size = self.basicsize + index * self.itemsize;
            let label = if self.itemsize == 0 {
                format!("free {}", self.name)
            } else {
                format!("free {index}-sized {}", self.name)
            };
            pymalloc::stats::allocator_stats_line(out, &label, self.counts[i], size)?;
        }
        Ok(())
    }
}
