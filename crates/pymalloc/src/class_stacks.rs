//! `ClassStacks<C, S>`: per size class, a stack of at most `S` block
//! pointers, the storage of both block caches (`heap/cache.rs` for pool
//! blocks, `span_cache.rs` for medium blocks). What a cache may hold, and
//! when it flushes, is the cache's; this file only keeps the stacks.
//!
//! Invariant: `slots[c][..n[c]]` are the stack of class `c`, oldest first,
//! none of them null, and `n[c] <= S`. Only the owner pushes, pops and
//! reads the slots; `n` is atomic because statistics read it from other
//! threads.

use core::cell::{Cell, UnsafeCell};
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::cell_array::AtomicArray;

pub(crate) struct ClassStacks<const C: usize, const S: usize> {
    n: AtomicArray<AtomicU32, C>,
    /// One `UnsafeCell` for all the slots (see `cell_array.rs`: Miri checks
    /// one cell at once where it would check an array of cells one by one).
    slots: UnsafeCell<[[*mut u8; S]; C]>,
}

impl<const C: usize, const S: usize> ClassStacks<C, S> {
    pub(crate) const fn new() -> Self {
        ClassStacks {
            n: AtomicArray::new([const { AtomicU32::new(0) }; C]),
            slots: UnsafeCell::new([[ptr::null_mut(); S]; C]),
        }
    }

    /// Slot `i` of class `c`.
    ///
    /// # Safety
    /// `c < C` and `i < S`.
    #[inline(always)]
    unsafe fn slot(&self, c: usize, i: usize) -> &Cell<*mut u8> {
        debug_assert!(c < C && i < S);
        // SAFETY: c < C and i < S (the contract), so the element is inside
        // the array; `Cell<T>` has `T`'s layout and the pointer carries the
        // UnsafeCell's shared, mutable provenance (as `CellArray` does).
        unsafe { &*self.slots.get().cast::<*mut u8>().add(c * S + i).cast::<Cell<*mut u8>>() }
    }

    /// The block in slot `i` of class `c`, below the stack's top.
    ///
    /// # Safety
    /// `c < C` and `i < n[c]`.
    #[inline(always)]
    unsafe fn block(&self, c: usize, i: usize) -> *mut u8 {
        // SAFETY: c < C and i < n[c] <= S (the contract and the invariant).
        let b = unsafe { self.slot(c, i) }.get();
        // SAFETY: a slot below the top holds a block, never null (the
        // invariant): said to the compiler, a pop's caller that tells "a
        // block" from "empty" by null tests the count alone.
        unsafe { core::hint::assert_unchecked(!b.is_null()) };
        b
    }

    /// Blocks on class `c`'s stack, without a bounds check.
    ///
    /// # Safety
    /// `c < C`.
    #[inline(always)]
    pub(crate) unsafe fn count_unchecked(&self, c: usize) -> u32 {
        // SAFETY: c < C (the contract).
        unsafe { self.n.get_unchecked(c) }.load(Ordering::Relaxed)
    }

    /// Blocks on class `c`'s stack.
    #[inline(always)]
    pub(crate) fn count(&self, c: usize) -> usize {
        self.n[c].load(Ordering::Relaxed) as usize
    }

    /// The top of class `c`'s stack, taken off; null if it is empty.
    #[inline(always)]
    pub(crate) fn pop(&self, c: usize) -> *mut u8 {
        let n = self.count(c);
        if n == 0 {
            return ptr::null_mut();
        }
        // SAFETY: c indexed `n` in `count`, and n - 1 < n.
        let b = unsafe { self.block(c, n - 1) };
        self.n[c].store(n as u32 - 1, Ordering::Relaxed);
        b
    }

    /// [`Self::pop`] without a bounds check.
    ///
    /// # Safety
    /// `c < C`.
    #[inline(always)]
    pub(crate) unsafe fn pop_unchecked(&self, c: usize) -> *mut u8 {
        // SAFETY: c < C (the contract).
        let n = unsafe { self.count_unchecked(c) } as usize;
        if n == 0 {
            return ptr::null_mut();
        }
        // SAFETY: c < C, and n - 1 < n.
        unsafe {
            let b = self.block(c, n - 1);
            self.n.get_unchecked(c).store(n as u32 - 1, Ordering::Relaxed);
            b
        }
    }

    /// [`Self::pop_unchecked`] that takes a block only from a stack of
    /// more than `floor` blocks: null for every stack while `floor` is
    /// `u32::MAX`. The same instructions as `pop_unchecked` where `floor`
    /// is a load the comparison takes as its operand.
    ///
    /// # Safety
    /// `c < C`.
    #[inline(always)]
    pub(crate) unsafe fn pop_above_unchecked(&self, c: usize, floor: u32) -> *mut u8 {
        // SAFETY: c < C (the contract).
        let n = unsafe { self.count_unchecked(c) };
        if n <= floor {
            return ptr::null_mut();
        }
        // SAFETY: c < C, and 0 <= floor < n, so n - 1 < n.
        unsafe {
            let b = self.block(c, n as usize - 1);
            self.n.get_unchecked(c).store(n - 1, Ordering::Relaxed);
            b
        }
    }

    /// Puts `p` on class `c`'s stack, which holds `n` blocks.
    ///
    /// # Safety
    /// `c < C`, `n` is `count(c)` and `n < S`; `p` is not null.
    #[inline(always)]
    pub(crate) unsafe fn push_at(&self, c: usize, n: u32, p: *mut u8) {
        debug_assert!(!p.is_null());
        // The block is the next one handed out: its line comes in now.
        crate::prefetch::for_write(p);
        // SAFETY: c < C and n < S (the contract).
        unsafe {
            self.slot(c, n as usize).set(p);
            self.n.get_unchecked(c).store(n + 1, Ordering::Relaxed);
        }
    }

    /// Class `c`'s stack, oldest first.
    pub(crate) fn blocks(&self, c: usize) -> impl Iterator<Item = *mut u8> + '_ {
        // SAFETY: c indexed `n` in `count`, and i < n <= S (invariant).
        (0..self.count(c)).map(move |i| unsafe { self.slot(c, i) }.get())
    }

    /// Takes the `k` oldest blocks of class `c` off its stack into `out`
    /// and returns how many (at most what it holds). The count drops before
    /// the caller frees them, so statistics never count one twice.
    pub(crate) fn take_oldest(&self, c: usize, k: usize, out: &mut [*mut u8; S]) -> usize {
        let n = self.count(c);
        let k = k.min(n);
        // SAFETY: c indexed `n` in `count`; every index is below n <= S.
        unsafe {
            for (i, o) in out[..k].iter_mut().enumerate() {
                *o = self.slot(c, i).get();
            }
            for i in k..n {
                self.slot(c, i - k).set(self.slot(c, i).get());
            }
        }
        self.n[c].store((n - k) as u32, Ordering::Relaxed);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::ClassStacks;
    use core::ptr;

    #[test]
    fn each_class_is_a_stack_whose_oldest_can_be_taken() {
        let s: ClassStacks<3, 4> = ClassStacks::new();
        let b = |i: usize| (i * 64) as *mut u8;
        for i in 1..=4 {
            // SAFETY: class 1 < 3, and the count below 4.
            unsafe { s.push_at(1, s.count_unchecked(1), b(i)) };
        }
        // SAFETY: class 2 < 3 and its count 0 < 4.
        unsafe { s.push_at(2, 0, b(9)) };
        assert_eq!((s.count(0), s.count(1), s.count(2)), (0, 4, 1));
        assert_eq!(s.pop(1), b(4));
        assert!(s.pop(0).is_null());
        let mut out = [ptr::null_mut(); 4];
        assert_eq!(s.take_oldest(1, 2, &mut out), 2);
        assert_eq!(&out[..2], &[b(1), b(2)]);
        assert_eq!(s.blocks(1).collect::<Vec<_>>(), vec![b(3)]);
        assert_eq!(s.take_oldest(1, 4, &mut out), 1);
        assert_eq!(s.blocks(2).collect::<Vec<_>>(), vec![b(9)], "classes are apart");
    }
}
