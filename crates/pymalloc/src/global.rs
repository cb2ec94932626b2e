//! [`PyMalloc`]: pymalloc as the Rust global allocator.
//!
//! ```
//! #[global_allocator]
//! static ALLOC: pymalloc::PyMalloc = pymalloc::PyMalloc;
//!
//! let v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
//! assert_eq!(v[999], "999");
//! assert!(pymalloc::owns(v[0].as_ptr())); // small strings live in pools
//! ```
//!
//! It allocates from the process's heap ([`global_heap`]), the one the MEM
//! and OBJ domains use by default. Any [`Layout`] is honoured: alignments up
//! to [`ALIGNMENT`](crate::geometry::ALIGNMENT) come from pools (or the C
//! library above 512 bytes), larger ones from `posix_memalign`. Requests
//! pymalloc does not serve go straight to the C library, not through the
//! RAW domain, so a hook installed on RAW may itself allocate Rust values.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;

use crate::domain::global_heap;

/// The Rust allocator handle of the process's pymalloc heap. Thread-safe.
#[derive(Clone, Copy, Debug, Default)]
pub struct PyMalloc;

// SAFETY: delegates to LockedHeap's GlobalAlloc implementation.
unsafe impl GlobalAlloc for PyMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { GlobalAlloc::alloc(global_heap(), layout) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { GlobalAlloc::alloc_zeroed(global_heap(), layout) }
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { GlobalAlloc::dealloc(global_heap(), p, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { GlobalAlloc::realloc(global_heap(), p, layout, new_size) }
    }
}

// SAFETY: delegates to the Allocator implementation of &LockedHeap.
unsafe impl allocator_api2::alloc::Allocator for PyMalloc {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        Allocator::allocate(&global_heap(), layout)
    }
    #[inline]
    fn allocate_zeroed(
        &self,
        layout: Layout,
    ) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        Allocator::allocate_zeroed(&global_heap(), layout)
    }
    #[inline]
    unsafe fn deallocate(&self, p: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { Allocator::deallocate(&global_heap(), p, layout) }
    }
}
