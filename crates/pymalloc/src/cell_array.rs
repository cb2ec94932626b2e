//! `CellArray<T, N>`: `[Cell<T>; N]` stored as one cell; `AtomicArray<A, N>`:
//! `[A; N]` of atomics, the same way.
//!
//! The program sees `N` independent cells (indexing gives `&Cell<T>`, or
//! `&A`); the machine code is that of the array. The difference is for
//! Miri: whenever a reference to a structure is made (every `&self` method
//! call on a [`Heap`](crate::Heap)), Stacked Borrows looks for the interior
//! mutability inside it, element by element in an array of cells or of
//! atomics (each atomic holds an `UnsafeCell`), at once in a single
//! `UnsafeCell`. ARCHITECTURE.md ("Arrays of cells in the heap") has what
//! each step measured.

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

/// `N` atomics of type `A` (`AtomicU32`, ...) in one `UnsafeCell`: the
/// program sees `[A; N]` (indexing gives `&A`, and every access is the
/// atomic's own); Miri sees one cell (see the module's documentation).
/// Like `UnsafeCell`, it is not `Sync`: it lives in structures that are not
/// shared as such (a [`Heap`](crate::Heap)), whose owners let other threads
/// read through raw pointers, as they did the array.
#[repr(transparent)]
pub(crate) struct AtomicArray<A, const N: usize>(UnsafeCell<[A; N]>);

impl<A, const N: usize> AtomicArray<A, N> {
    /// The atomics `v`.
    pub(crate) const fn new(v: [A; N]) -> Self {
        AtomicArray(UnsafeCell::new(v))
    }

    /// Atomic `i`, without a bounds check.
    ///
    /// # Safety
    /// `i < N`.
    #[inline(always)]
    pub(crate) unsafe fn get_unchecked(&self, i: usize) -> &A {
        debug_assert!(i < N);
        // SAFETY: i < N (caller), so the element is inside the array. Only
        // shared references to the elements are ever made (nothing hands
        // out the array itself, nor `&mut` to it), and an atomic is meant
        // to be shared: this is indexing `[A; N]` through the cell.
        unsafe { &*self.0.get().cast::<A>().add(i) }
    }
}

impl<A, const N: usize> core::ops::Index<usize> for AtomicArray<A, N> {
    type Output = A;

    /// Atomic `i`; panics if `i >= N`, as indexing an array does.
    #[inline(always)]
    fn index(&self, i: usize) -> &A {
        assert!(i < N, "index {i} out of range for {N} atomics");
        // SAFETY: checked just above.
        unsafe { self.get_unchecked(i) }
    }
}

#[cfg(test)]
mod tests {
    use super::{AtomicArray, CellArray};
    use core::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn cells_are_independent() {
        let a: CellArray<u32, 4> = CellArray::new([1, 2, 3, 4]);
        a[2].set(30);
        // SAFETY: 3 < 4.
        unsafe { a.get_unchecked(3).set(40) };
        assert_eq!(a.iter().map(|c| c.get()).collect::<Vec<_>>(), [1, 2, 30, 40]);
    }

    #[test]
    fn atomics_are_independent() {
        let a: AtomicArray<AtomicU32, 3> = AtomicArray::new([const { AtomicU32::new(7) }; 3]);
        a[0].store(1, Ordering::Relaxed);
        // SAFETY: 2 < 3.
        unsafe { a.get_unchecked(2).fetch_add(5, Ordering::Relaxed) };
        assert_eq!((0..3).map(|i| a[i].load(Ordering::Relaxed)).collect::<Vec<_>>(), [1, 7, 12]);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn atomic_indexing_is_checked() {
        let a: AtomicArray<AtomicU32, 2> = AtomicArray::new([const { AtomicU32::new(0) }; 2]);
        a[2].load(Ordering::Relaxed);
    }

    /// A field declared as an array of cells or atomics, as this crate
    /// writes one, on one line of a struct body (`name: [Cell<...>; N]`,
    /// `name: [AtomicU32; N]`, arrays of them, the types named by path); a
    /// `static` is not a field. An array of structures that hold cells
    /// costs Miri the same and is not caught: the review is for that.
    fn is_array_of_cells(line: &str) -> bool {
        let l = line.trim_start();
        let l = l.strip_prefix("pub(crate) ").or_else(|| l.strip_prefix("pub(super) ")).unwrap_or(l);
        let l = l.strip_prefix("pub ").unwrap_or(l);
        match l.split_once(": [") {
            Some((name, ty)) => {
                // Arrays of arrays too, and the types named by path.
                let ty = ty.trim_start_matches('[');
                let ty = ["core::cell::", "std::cell::", "core::sync::atomic::", "std::sync::atomic::"]
                    .iter()
                    .find_map(|path| ty.strip_prefix(path))
                    .unwrap_or(ty);
                name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    && (ty.starts_with("Cell<") || ty.starts_with("Atomic"))
            }
            None => false,
        }
    }

    /// Every structure a `Heap` holds, and the tracer's per-thread block,
    /// keeps its arrays of cells and atomics as one cell (see the module's
    /// documentation): an array of them would make every `&Heap` (every
    /// traced call) cost Miri a walk over its elements again.
    #[test]
    fn the_heaps_structures_hold_no_array_of_cells() {
        assert!(is_array_of_cells("    pub(super) first: [Cell<*mut PoolHeader>; 32],"));
        assert!(is_array_of_cells("    n: [AtomicU32; C],"));
        assert!(!is_array_of_cells("    n: AtomicArray<AtomicU32, C>,"));
        assert!(!is_array_of_cells("static OWNERS: [AtomicPtr<()>; 4] ="));
        assert!(is_array_of_cells("    rows: [[core::cell::Cell<u8>; 4]; 2],"));
        assert!(!is_array_of_cells("    slots: UnsafeCell<[[*mut u8; S]; C]>,"));
        let files = [
            ("heap/mod.rs", include_str!("heap/mod.rs")),
            ("heap/arenas.rs", include_str!("heap/arenas.rs")),
            ("heap/cache.rs", include_str!("heap/cache.rs")),
            ("heap/decay.rs", include_str!("heap/decay.rs")),
            ("heap/pages.rs", include_str!("heap/pages.rs")),
            ("heap/purge.rs", include_str!("heap/purge.rs")),
            ("heap/remote.rs", include_str!("heap/remote.rs")),
            ("heap/used.rs", include_str!("heap/used.rs")),
            ("spans.rs", include_str!("spans.rs")),
            ("span_cache.rs", include_str!("span_cache.rs")),
            ("front_cache.rs", include_str!("front_cache.rs")),
            ("class_stacks.rs", include_str!("class_stacks.rs")),
            ("sync.rs", include_str!("sync.rs")),
            ("pool.rs", include_str!("pool.rs")),
            // Not the heap's, but lent as a whole on every traced call.
            ("trace_thread.rs", include_str!("trace_thread.rs")),
        ];
        for (name, src) in files {
            for (i, line) in src.lines().enumerate() {
                assert!(!is_array_of_cells(line), "{name}:{}: an array of cells; use CellArray or AtomicArray", i + 1);
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn indexing_is_checked() {
        let a: CellArray<u8, 2> = CellArray::new([0; 2]);
        a[2].get();
    }
}
