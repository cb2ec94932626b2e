//! `CellArray<T, N>`: `[Cell<T>; N]` stored as one cell.
//!
//! The program sees `N` independent cells (indexing gives `&Cell<T>`); the
//! machine code is that of an array of cells. The difference is for Miri:
//! whenever a reference to a structure is made (every `&self` method call on
//! a [`Heap`](crate::Heap)), Stacked Borrows looks for the interior
//! mutability inside it, and does so element by element in an array of cells
//! but at once for a single `UnsafeCell`. With the heap's 1,200 cells as
//! arrays, each call cost Miri about 2.5 ms.

use core::cell::{Cell, UnsafeCell};

/// `N` cells of `T` in one `UnsafeCell`. Like `Cell`, it is not `Sync`.
#[repr(transparent)]
pub(crate) struct CellArray<T, const N: usize>(UnsafeCell<[T; N]>);

impl<T: Copy, const N: usize> CellArray<T, N> {
    /// `N` cells holding `v`.
    pub(crate) const fn new(v: [T; N]) -> Self {
        CellArray(UnsafeCell::new(v))
    }

    /// Cell `i`, without a bounds check.
    ///
    /// # Safety
    /// `i < N`.
    #[inline(always)]
    pub(crate) unsafe fn get_unchecked(&self, i: usize) -> &Cell<T> {
        debug_assert!(i < N);
        // SAFETY: i < N (caller), so the element is inside the array;
        // `Cell<T>` has `T`'s layout, and the pointer carries the
        // UnsafeCell's shared, mutable provenance, so handing out `&Cell<T>`
        // is what `Cell::as_array_of_cells` does, one element at a time.
        unsafe { &*self.0.get().cast::<Cell<T>>().add(i) }
    }

    /// The cells in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Cell<T>> {
        // SAFETY: every index below N.
        (0..N).map(move |i| unsafe { self.get_unchecked(i) })
    }
}

impl<T: Copy, const N: usize> core::ops::Index<usize> for CellArray<T, N> {
    type Output = Cell<T>;

    /// Cell `i`; panics if `i >= N`, as indexing an array does.
    #[inline(always)]
    fn index(&self, i: usize) -> &Cell<T> {
        assert!(i < N, "index {i} out of range for {N} cells");
        // SAFETY: checked just above.
        unsafe { self.get_unchecked(i) }
    }
}

#[cfg(test)]
mod tests {
    use super::CellArray;

    #[test]
    fn cells_are_independent() {
        let a: CellArray<u32, 4> = CellArray::new([1, 2, 3, 4]);
        a[2].set(30);
        // SAFETY: 3 < 4.
        unsafe { a.get_unchecked(3).set(40) };
        assert_eq!(a.iter().map(|c| c.get()).collect::<Vec<_>>(), [1, 2, 30, 40]);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn indexing_is_checked() {
        let a: CellArray<u8, 2> = CellArray::new([0; 2]);
        a[2].get();
    }
}
