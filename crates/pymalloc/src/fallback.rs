//! Where requests pymalloc does not serve go: sizes of 0 or above 512
//! bytes, and small requests when no arena can be had.
//!
//! A front chooses its fallback as a type ([`Fallback`]), so the heap and
//! the front never call upward into the domains:
//!
//! * [`Libc`]: the C library with CPython's rules ([`crate::raw`]), for the
//!   Rust allocator traits, so that a hook installed on RAW may itself
//!   allocate Rust values;
//! * [`RawDomain`]: whatever allocator the RAW domain holds now (CPython's
//!   `PyMem_RawMalloc`), for the domain allocators and the heaps' own
//!   entry points. The RAW domain's slot lives here, below the pymalloc
//!   modes that fall back to it; [`crate::Domain`] reads and writes it.

use core::cell::UnsafeCell;
use core::ptr;

use crate::allocator::MemAllocatorEx;
use crate::raw;

/// An allocator pymalloc hands the requests it does not serve to. Each
/// applies CPython's size checks (null above `isize::MAX`).
///
/// Public so that a program that *is* the C library's allocator (the
/// preload library, whose `malloc` is pymalloc) can send those requests to
/// the allocator underneath (glibc's `__libc_malloc`) rather than to
/// `malloc`, which would be itself. An implementation must never allocate
/// from pymalloc.
pub trait Fallback {
    /// Whether the front counts this fallback's live blocks as the raw
    /// blocks of the statistics (`raw_allocated_blocks`): true for an
    /// allocator outside pymalloc; false for one that is pymalloc too
    /// ([`crate::every_size::EverySize`]), whose blocks have statistics of
    /// their own and whose hot paths must not share a counter across
    /// threads.
    const COUNTED: bool = true;

    /// Whether `p`, the address of a live block outside the arena region,
    /// is this fallback's, told without the radix map. The front asks
    /// before it looks up arenas from outside the region in the radix map
    /// (three dependent loads), so a fallback with a region of its own
    /// ([`crate::every_size::EverySize`]: the segment region) costs its
    /// blocks one comparison there. Must be false for every pool block.
    /// Default: no block is claimed this way.
    #[inline(always)]
    fn claims(_p: *const u8) -> bool {
        false
    }

    /// Frees `p` and returns true if [`Fallback::claims`] would say it is
    /// this fallback's; false, with nothing done, otherwise. The front's
    /// `free` asks this first for a block outside the arena region, so that
    /// a fallback with a region of its own frees its blocks after one look
    /// at it.
    ///
    /// # Safety
    /// `p` is a live block outside the arena region; if it is claimed, it is
    /// not used again.
    #[inline(always)]
    unsafe fn free_if_claimed(_p: *mut u8) -> bool {
        false
    }

    /// `malloc(n)`.
    fn malloc(n: usize) -> *mut u8;
    /// `calloc(nelem, elsize)`.
    fn calloc(nelem: usize, elsize: usize) -> *mut u8;
    /// `realloc(p, n)`.
    ///
    /// # Safety
    /// `p` is null or live from this allocator.
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8;
    /// `free(p)`.
    ///
    /// # Safety
    /// `p` is null or live from this allocator, and not used again.
    unsafe fn free(p: *mut u8);
}

/// The C library, with CPython's rules ([`crate::raw`]).
pub struct Libc;

impl Fallback for Libc {
    #[inline]
    fn malloc(n: usize) -> *mut u8 {
        raw::malloc(n)
    }
    #[inline]
    fn calloc(nelem: usize, elsize: usize) -> *mut u8 {
        raw::calloc(nelem, elsize)
    }
    #[inline]
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
        // SAFETY: p is null or a live raw block (the trait's contract).
        unsafe { raw::realloc(p, n) }
    }
    #[inline]
    unsafe fn free(p: *mut u8) {
        // SAFETY: p is null or a live raw block, not used again (the
        // trait's contract).
        unsafe { raw::free(p) }
    }
}

/// The RAW domain's current allocator (CPython's `PyMem_RawMalloc`).
pub(crate) struct RawDomain;

/// The RAW domain's slot. Invariant: written only by [`set_raw_allocator`],
/// whose contract rules out any concurrent use of the domain.
struct RawSlot(UnsafeCell<MemAllocatorEx>);

// SAFETY: see the invariant: no write is concurrent with a read.
unsafe impl Sync for RawSlot {}

static RAW_SLOT: RawSlot = RawSlot(UnsafeCell::new(raw::ALLOCATOR));

/// The RAW domain's current allocator.
#[inline(always)]
pub(crate) fn raw_allocator() -> MemAllocatorEx {
    // SAFETY: no write is concurrent with calls into the domain (the slot's
    // invariant).
    unsafe { *RAW_SLOT.0.get() }
}

/// Installs `a` in the RAW domain and returns the allocator it replaces.
///
/// # Safety
/// As for [`crate::Domain::set_allocator`]: nothing uses the RAW domain
/// during the call.
pub(crate) unsafe fn set_raw_allocator(a: MemAllocatorEx) -> MemAllocatorEx {
    // SAFETY: exclusive access per the contract.
    unsafe { ptr::replace(RAW_SLOT.0.get(), a) }
}

impl Fallback for RawDomain {
    #[inline]
    fn malloc(n: usize) -> *mut u8 {
        // SAFETY: the installed allocator honours the MemAllocatorEx
        // contract (Domain::set_allocator's contract).
        unsafe { raw_allocator().checked_malloc(n) }
    }
    #[inline]
    fn calloc(nelem: usize, elsize: usize) -> *mut u8 {
        // SAFETY: as for malloc.
        unsafe { raw_allocator().checked_calloc(nelem, elsize) }
    }
    #[inline]
    unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
        // SAFETY: the allocator honours its contract, and p is null or live
        // in the RAW domain (the trait's contract).
        unsafe { raw_allocator().checked_realloc(p, n) }
    }
    #[inline]
    unsafe fn free(p: *mut u8) {
        // SAFETY: as for realloc; p is not used again.
        unsafe { raw_allocator().call_free(p) }
    }
}
