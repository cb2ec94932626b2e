//! The C-layout allocator struct of the domains (CPython's
//! `PyMemAllocatorEx`), at the bottom of the crate: the raw allocator, the
//! pymalloc modes and the debug hooks each describe themselves with one,
//! and the domains ([`crate::Domain`]) hold one per domain.
//!
//! The struct of the arena allocator (`PyObjectArenaAllocator`) is
//! [`crate::ArenaAllocator`], beside the OS arena functions it defaults to.

use core::ffi::c_void;
use core::ptr;

/// A domain allocator (CPython's `PyMemAllocatorEx`). `ctx` is passed as the
/// first argument of every function.
///
/// Contract for an allocator installed in a domain: `malloc(ctx, n)` returns
/// null or a block of at least `n` bytes aligned like `malloc`'s (16 bytes on
/// 64-bit), distinct from every live block even for `n == 0`; `calloc`
/// returns zeroed memory; `realloc(ctx, null, n)` is `malloc`, `realloc(ctx,
/// p, 0)` does not free, and a failed `realloc` leaves `p` valid; `free(ctx,
/// null)` does nothing. Functions receive sizes already checked against
/// `isize::MAX`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MemAllocatorEx {
    /// Opaque context, passed back to every function.
    pub ctx: *mut c_void,
    /// Allocates `size` bytes.
    pub malloc: unsafe extern "C" fn(ctx: *mut c_void, size: usize) -> *mut c_void,
    /// Allocates `nelem * elsize` zeroed bytes.
    pub calloc: unsafe extern "C" fn(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void,
    /// Resizes a block.
    pub realloc: unsafe extern "C" fn(ctx: *mut c_void, ptr: *mut c_void, new_size: usize) -> *mut c_void,
    /// Frees a block.
    pub free: unsafe extern "C" fn(ctx: *mut c_void, ptr: *mut c_void),
}

// SAFETY: the context is opaque; installing an allocator whose context is not
// thread-safe in a domain used from several threads is ruled out by the
// contract of `Domain::set_allocator`.
unsafe impl Send for MemAllocatorEx {}
// SAFETY: sharing the struct shares only the context pointer and function
// pointers; whether the context may be used from several threads is ruled by
// `Domain::set_allocator`'s contract, as for Send.
unsafe impl Sync for MemAllocatorEx {}

impl MemAllocatorEx {
    /// True if both have the same context and the same four functions.
    ///
    /// Function addresses are not reliable identities in Rust (the same
    /// function may have several, two identical ones may share one), so the
    /// crate itself recognises its allocators by context alone
    /// ([`is`](MemAllocatorEx::is)); give every allocator a context of its
    /// own.
    pub fn same_as(&self, other: &MemAllocatorEx) -> bool {
        self.ctx == other.ctx
            && ptr::fn_addr_eq(self.malloc, other.malloc)
            && ptr::fn_addr_eq(self.calloc, other.calloc)
            && ptr::fn_addr_eq(self.realloc, other.realloc)
            && ptr::fn_addr_eq(self.free, other.free)
    }

    /// True if both have the same context: how the crate tells allocators
    /// apart.
    pub fn is(&self, other: &MemAllocatorEx) -> bool {
        ptr::eq(self.ctx, other.ctx)
    }

    // CPython's checks before any domain allocator is called (`PyMem_Malloc`
    // and friends): the domains and the RAW fallback both call through these.

    /// `malloc(size)`, null without a call when `size > isize::MAX`.
    ///
    /// # Safety
    /// `self` honours the contract above.
    #[inline(always)]
    pub(crate) unsafe fn checked_malloc(&self, size: usize) -> *mut u8 {
        if size > MAX_SIZE {
            return ptr::null_mut();
        }
        // SAFETY: the allocator honours the contract (ours), and size is in
        // range.
        unsafe { (self.malloc)(self.ctx, size).cast() }
    }

    /// `calloc(nelem, elsize)`, null without a call when the product
    /// overflows `isize::MAX`.
    ///
    /// # Safety
    /// As for [`MemAllocatorEx::checked_malloc`].
    #[inline(always)]
    pub(crate) unsafe fn checked_calloc(&self, nelem: usize, elsize: usize) -> *mut u8 {
        if elsize != 0 && nelem > MAX_SIZE / elsize {
            return ptr::null_mut();
        }
        // SAFETY: as for checked_malloc; the product is in range.
        unsafe { (self.calloc)(self.ctx, nelem, elsize).cast() }
    }

    /// `realloc(p, size)`, null without a call (`p` untouched) when `size >
    /// isize::MAX`.
    ///
    /// # Safety
    /// As for [`MemAllocatorEx::checked_malloc`]; `p` is null or live from
    /// this allocator.
    #[inline(always)]
    pub(crate) unsafe fn checked_realloc(&self, p: *mut u8, size: usize) -> *mut u8 {
        if size > MAX_SIZE {
            return ptr::null_mut();
        }
        // SAFETY: p is null or ours (caller's contract), size in range.
        unsafe { (self.realloc)(self.ctx, p.cast(), size).cast() }
    }

    /// `free(p)`.
    ///
    /// # Safety
    /// As for [`MemAllocatorEx::checked_realloc`]; `p` is not used again.
    #[inline(always)]
    pub(crate) unsafe fn call_free(&self, p: *mut u8) {
        // SAFETY: p is null or ours, not used again (caller's contract).
        unsafe { (self.free)(self.ctx, p.cast()) }
    }
}

/// Largest size any allocator in this crate accepts (`PY_SSIZE_T_MAX`).
pub(crate) const MAX_SIZE: usize = isize::MAX as usize;
