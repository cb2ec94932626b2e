//! `ClassStacks<C, S>`: per size class, a stack of at most `S` block
//! pointers, the storage of the front cache (`front_cache.rs`, whose views
//! are `heap/cache.rs` for pool blocks and `span_cache.rs` for medium
//! blocks). What a cache may hold, and when it flushes, is the cache's;
//! this file only keeps the stacks.
//!
//! The slots are one array of `C * S`, class `c`'s from index `c * S`
//! (its *base*), and each class keeps its *top*: the index of the slot its
//! next push fills, `base + n` for a stack of `n` blocks. A push stores at
//! the top's index and a pop loads below it, each one instruction with the
//! slot array's offset folded in, where a class and a count took four more
//! to make the address (`base * 8` is not an x86 scale). A cache's limit is
//! kept the same way, as the top at which its class is full
//! ([`ClassStacks::end`]), so "room?" is still one comparison.
//!
//! Tops start at 0, so that a new set of stacks is all zeroes (a static
//! heap stays in `.bss`, its pages untouched until used): a top at or below
//! its base reads as an empty stack, and a class's top is raised to its
//! base ([`ClassStacks::raise`]) before the class is given room to push.
//!
//! Invariant: for each class `c`, `top[c]` is 0 or `base(c) <= top[c] <=
//! base(c) + S`; the slots from `base(c)` below `top[c]` are its stack,
//! oldest first, none of them null (none while `top[c] <= base(c)`). Only
//! the owner pushes, pops and reads the slots; `top` is atomic because
//! statistics read it from other threads.

use core::cell::{Cell, UnsafeCell};
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::cell_array::AtomicArray;

pub(crate) struct ClassStacks<const C: usize, const S: usize> {
    top: AtomicArray<AtomicU32, C>,
    /// One `UnsafeCell` for all the slots (see `cell_array.rs`: Miri checks
    /// one cell at once where it would check an array of cells one by one).
    slots: UnsafeCell<[[*mut u8; S]; C]>,
}

impl<const C: usize, const S: usize> ClassStacks<C, S> {
    pub(crate) const fn new() -> Self {
        // Every top fits a u32 (checked at compile time where `new` is
        // evaluated in a constant, as for the static heaps; at run time
        // otherwise).
        assert!(C * S <= u32::MAX as usize);
        ClassStacks {
            top: AtomicArray::new([const { AtomicU32::new(0) }; C]),
            slots: UnsafeCell::new([[ptr::null_mut(); S]; C]),
        }
    }

    /// Raises class `c`'s top to its base if it is below (never used): then
    /// [`Self::end`] of any limit is a top it may push up to.
    ///
    /// # Safety
    /// `c < C`.
    #[inline(always)]
    pub(crate) unsafe fn raise(&self, c: usize) {
        // SAFETY: c < C (the contract); the base keeps the invariant.
        unsafe {
            if self.top_unchecked(c) < Self::base(c) {
                self.set_top(c, Self::base(c));
            }
        }
    }

    /// Class `c`'s base: the index of its first slot, its top when empty.
    #[inline(always)]
    const fn base(c: usize) -> u32 {
        (c * S) as u32
    }

    /// Sets class `c`'s top to its base: the raise of a class a pop has just
    /// found empty (its top at or below its base), without reading the top
    /// again. A class with blocks would lose them (kept in their pools as
    /// in use): debug builds check.
    ///
    /// # Safety
    /// `c < C`.
    #[inline(always)]
    pub(crate) unsafe fn raise_empty(&self, c: usize) {
        // SAFETY: c < C (the contract); the base keeps the invariant.
        unsafe {
            debug_assert!(self.top_unchecked(c) <= Self::base(c), "raise_empty of a class with blocks");
            self.set_top(c, Self::base(c));
        }
    }

    /// The top at which class `c` holds `n` blocks (`n <= S`): what
    /// [`Self::top_unchecked`] is compared with to ask for room under a
    /// limit of `n`, once the class is raised ([`Self::raise`]).
    #[inline(always)]
    pub(crate) const fn end(c: usize, n: u32) -> u32 {
        debug_assert!(c < C && n as usize <= S);
        Self::base(c) + n
    }

    /// Slot `i` of the whole array.
    ///
    /// # Safety
    /// `i < C * S`.
    #[inline(always)]
    unsafe fn slot_at(&self, i: usize) -> &Cell<*mut u8> {
        debug_assert!(i < C * S);
        // SAFETY: i < C * S (the contract), so the element is inside the
        // array of arrays, which has no padding; `Cell<T>` has `T`'s layout
        // and the pointer carries the UnsafeCell's shared, mutable
        // provenance (as `CellArray` does).
        unsafe { &*self.slots.get().cast::<*mut u8>().add(i).cast::<Cell<*mut u8>>() }
    }

    /// The block in slot `i`, below its class's top.
    ///
    /// # Safety
    /// `i` lies from some class's base below its top.
    #[inline(always)]
    unsafe fn block_at(&self, i: usize) -> *mut u8 {
        // SAFETY: i < C * S (the contract and the invariant).
        let b = unsafe { self.slot_at(i) }.get();
        // SAFETY: a slot below the top holds a block, never null (the
        // invariant): said to the compiler, a pop's caller that tells "a
        // block" from "empty" by null tests the top alone.
        unsafe { core::hint::assert_unchecked(!b.is_null()) };
        b
    }

    /// Class `c`'s top, without a bounds check.
    ///
    /// # Safety
    /// `c < C`.
    #[inline(always)]
    pub(crate) unsafe fn top_unchecked(&self, c: usize) -> u32 {
        // SAFETY: c < C (the contract).
        unsafe { self.top.get_unchecked(c) }.load(Ordering::Relaxed)
    }

    /// Sets class `c`'s top.
    ///
    /// # Safety
    /// `c < C`, and `t` keeps the invariant.
    #[inline(always)]
    unsafe fn set_top(&self, c: usize, t: u32) {
        debug_assert!(Self::base(c) <= t && t <= Self::base(c) + S as u32);
        // SAFETY: c < C (the contract).
        unsafe { self.top.get_unchecked(c) }.store(t, Ordering::Relaxed)
    }

    /// Blocks on class `c`'s stack.
    #[inline(always)]
    pub(crate) fn count(&self, c: usize) -> usize {
        self.top[c].load(Ordering::Relaxed).saturating_sub(Self::base(c)) as usize
    }

    /// The top of class `c`'s stack, taken off; null if it is empty.
    #[inline(always)]
    pub(crate) fn pop(&self, c: usize) -> *mut u8 {
        assert!(c < C, "class {c} out of range for {C} stacks");
        // SAFETY: c < C, checked above.
        unsafe { self.pop_unchecked(c) }
    }

    /// [`Self::pop`] without a bounds check.
    ///
    /// # Safety
    /// `c < C`.
    #[inline(always)]
    pub(crate) unsafe fn pop_unchecked(&self, c: usize) -> *mut u8 {
        // SAFETY: c < C (the contract). An open gate: the `or` of 0 folds
        // away, and this is the plain pop.
        unsafe { self.pop_gated_unchecked(c, 0) }
    }

    /// The top of class `c`'s stack, taken off, with `gate` ORed into the
    /// base the top is compared with: null if the stack is empty, and for
    /// every stack while `gate` is `u32::MAX` (no top is above it); the
    /// plain pop ([`Self::pop_unchecked`]) while it is 0.
    ///
    /// # Safety
    /// `c < C`.
    #[inline(always)]
    pub(crate) unsafe fn pop_gated_unchecked(&self, c: usize, gate: u32) -> *mut u8 {
        // SAFETY: c < C (the contract).
        let t = unsafe { self.top_unchecked(c) };
        if t <= Self::base(c) | gate {
            return ptr::null_mut();
        }
        // SAFETY: c < C, and base(c) <= (base(c) | gate) < t, so base(c) <=
        // t - 1 < t: a block of the stack.
        unsafe {
            let b = self.block_at(t as usize - 1);
            self.set_top(c, t - 1);
            b
        }
    }

    /// Puts `p` on class `c`'s stack, whose top is `t`.
    ///
    /// # Safety
    /// `c < C`, `t` is `top_unchecked(c)`, raised, and `t < end(c, S)`
    /// (room); `p` is not null.
    #[inline(always)]
    pub(crate) unsafe fn push_at(&self, c: usize, t: u32, p: *mut u8) {
        debug_assert!(!p.is_null());
        debug_assert!(Self::base(c) <= t && t < Self::base(c) + S as u32);
        // The block is the next one handed out: its line comes in now.
        crate::prefetch::for_write(p);
        // SAFETY: t < base(c) + S <= C * S (the contract), and t + 1 keeps
        // the invariant.
        unsafe {
            self.slot_at(t as usize).set(p);
            self.set_top(c, t + 1);
        }
    }

    /// Class `c`'s stack, oldest first.
    pub(crate) fn blocks(&self, c: usize) -> impl Iterator<Item = *mut u8> + '_ {
        let base = Self::base(c) as usize;
        // SAFETY: count indexed c; every index lies from c's base below its
        // top (the invariant).
        (base..base + self.count(c)).map(move |i| unsafe { self.slot_at(i) }.get())
    }

    /// Takes the `k` oldest blocks of class `c` off its stack into `out`
    /// and returns how many (at most what it holds). The count drops before
    /// the caller frees them, so statistics never count one twice.
    pub(crate) fn take_oldest(&self, c: usize, k: usize, out: &mut [*mut u8; S]) -> usize {
        let n = self.count(c);
        let k = k.min(n);
        if k == 0 {
            return 0;
        }
        let base = Self::base(c) as usize;
        // SAFETY: count indexed c; every index lies from c's base below its
        // top, base + n; the new top, base + n - k, keeps the invariant.
        unsafe {
            for (i, o) in out[..k].iter_mut().enumerate() {
                *o = self.slot_at(base + i).get();
            }
            for i in k..n {
                self.slot_at(base + i - k).set(self.slot_at(base + i).get());
            }
            self.set_top(c, (base + n - k) as u32);
        }
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
        // SAFETY: classes below 3.
        unsafe {
            assert_eq!(s.top_unchecked(1), 0, "tops start at 0, all zeroes");
            assert!(s.pop_unchecked(1).is_null() && s.pop_unchecked(2).is_null(), "empty below the base");
            s.raise(1);
            s.raise(2);
        }
        for i in 1..=4 {
            // SAFETY: class 1 < 3, raised, and its top below its end.
            unsafe { s.push_at(1, s.top_unchecked(1), b(i)) };
        }
        // SAFETY: class 2 < 3, raised, and its top (empty) below its end.
        unsafe { s.push_at(2, s.top_unchecked(2), b(9)) };
        // SAFETY: class 2 < 3.
        let top2 = unsafe { s.top_unchecked(2) };
        assert_eq!(top2, ClassStacks::<3, 4>::end(2, 1), "tops are absolute");
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

    #[test]
    fn the_gate_hides_every_block_and_a_raise_keeps_them() {
        let s: ClassStacks<3, 4> = ClassStacks::new();
        let b = |i: usize| (i * 64) as *mut u8;
        // SAFETY: classes below 3, raised before they push, with room.
        unsafe {
            s.raise(2);
            s.push_at(2, s.top_unchecked(2), b(1));
            s.push_at(2, s.top_unchecked(2), b(2));
            assert!(s.pop_gated_unchecked(2, u32::MAX).is_null(), "shut: every stack reads empty");
            assert_eq!(s.count(2), 2, "and keeps its blocks");
            s.raise(2);
            assert_eq!(s.count(2), 2, "raising a class that holds blocks keeps them");
            assert_eq!(s.pop_gated_unchecked(2, 0), b(2), "open: the plain pop");
            assert_eq!(s.pop_unchecked(2), b(1));
            assert!(s.pop_gated_unchecked(2, 0).is_null());
            // Found empty: the store-only raise, and the class pushes again.
            s.raise_empty(2);
            assert_eq!(s.top_unchecked(2), ClassStacks::<3, 4>::end(2, 0));
            s.push_at(2, s.top_unchecked(2), b(3));
            assert_eq!(s.blocks(2).collect::<Vec<_>>(), vec![b(3)]);
            assert_eq!(s.count(0) + s.count(1), 0, "the other classes never raised read empty");
        }
    }
}
