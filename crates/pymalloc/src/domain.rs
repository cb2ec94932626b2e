//! The allocator domains: RAW, MEM and OBJ (CPython's `PYMEM_DOMAIN_*`).
//!
//! Each domain has a current allocator, a [`MemAllocatorEx`] (a context
//! pointer plus `malloc`, `calloc`, `realloc` and `free`, with the layout of
//! CPython's struct of that name). Calls go through [`Domain`]'s methods,
//! which apply CPython's checks first (sizes above `isize::MAX` and
//! overflowing `calloc` products fail with null) and then call the current
//! allocator. [`Domain::allocator`] and [`Domain::set_allocator`] read and
//! replace it, so a hook can wrap the previous allocator.
//!
//! Defaults, as in CPython's `pymalloc` configuration: RAW is the C library
//! ([`raw::ALLOCATOR`](crate::raw::ALLOCATOR)); MEM and OBJ are pymalloc, with
//! one heap per thread ([`MemAllocatorEx::pymalloc_threaded`]).
//!
//! RAW must be thread-safe. MEM and OBJ are too with the default allocator;
//! an allocator installed in them that needs a lock held by callers
//! (CPython's GIL, [`MemAllocatorEx::pymalloc_gil`]) is the installer's
//! responsibility.
//!
//! ```
//! use pymalloc::Domain;
//! let p = Domain::Mem.malloc(100);
//! assert!(!p.is_null());
//! let p = unsafe { Domain::Mem.realloc(p, 200) };
//! unsafe { Domain::Mem.free(p) };
//!
//! // Typed helpers check the multiplication (CPython's PyMem_New).
//! let v: *mut u64 = Domain::Obj.new_array(10);
//! assert!(!v.is_null());
//! unsafe { Domain::Obj.del(v) };
//! assert!(Domain::Obj.new_array::<u64>(usize::MAX / 4).is_null());
//! ```

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};

pub use crate::allocator::MemAllocatorEx;
use crate::fallback::{raw_allocator, set_raw_allocator};
use crate::gil::{self, GilHeap};
use crate::locked::{self, LockedHeap};
use crate::raw::{self, MAX_SIZE};
use crate::thread;

/// The three allocator domains (CPython's `PyMemAllocatorDomain`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// `PYMEM_DOMAIN_RAW`: `PyMem_RawMalloc()` and friends; thread-safe.
    Raw = 0,
    /// `PYMEM_DOMAIN_MEM`: `PyMem_Malloc()` and friends.
    Mem = 1,
    /// `PYMEM_DOMAIN_OBJ`: `PyObject_Malloc()` and friends.
    Obj = 2,
}

impl Domain {
    /// All three, in CPython's order.
    pub const ALL: [Domain; 3] = [Domain::Raw, Domain::Mem, Domain::Obj];

    /// The API id byte the debug hooks record for this domain.
    pub const fn api_id(self) -> u8 {
        match self {
            Domain::Raw => b'r',
            Domain::Mem => b'm',
            Domain::Obj => b'o',
        }
    }
}

/// The allocators of the crate, as domain allocators. Each mode builds its
/// own (`thread.rs`, `locked.rs`, `gil.rs`); these are their public names.
impl MemAllocatorEx {
    /// pymalloc with one heap per thread ([`crate::thread`]): the default
    /// of MEM and OBJ. Thread-safe without a global lock; small requests are
    /// served from the calling thread's heap, others go to the RAW domain.
    pub const fn pymalloc_threaded() -> MemAllocatorEx {
        thread::domain_allocator()
    }

    /// Every size from the thread heaps: pool blocks up to 512 bytes, spans
    /// above ([`crate::every_size`]); the RAW domain of the `pymalloc_all`
    /// configurations, which MEM and OBJ fall back to.
    pub const fn pymalloc_every_size() -> MemAllocatorEx {
        crate::every_size::domain_allocator()
    }

    /// Every size from the thread heaps through one front, the rest to the
    /// RAW domain: MEM and OBJ of `pymalloc_all` in the threaded mode
    /// ([`crate::every_size`]).
    pub const fn pymalloc_every_size_front() -> MemAllocatorEx {
        crate::every_size::front_domain_allocator()
    }

    /// pymalloc on one `heap` shared by all threads behind its lock
    /// (CPython's `PYMALLOC_ALLOC` made thread-safe with a mutex).
    pub const fn pymalloc(heap: &'static LockedHeap) -> MemAllocatorEx {
        locked::domain_allocator(heap)
    }

    /// pymalloc on one `heap` with no lock at all: CPython's own
    /// arrangement, where callers of MEM and OBJ hold the GIL.
    ///
    /// # Safety
    /// Every call through the returned allocator must be serialised by the
    /// caller (one thread at a time, with happens-before between calls).
    pub const unsafe fn pymalloc_gil(heap: &'static GilHeap) -> MemAllocatorEx {
        // SAFETY: the caller serialises the calls (our contract is its).
        unsafe { gil::domain_allocator(heap) }
    }

    /// The C library's allocator (CPython's `MALLOC_ALLOC`).
    pub const fn malloc() -> MemAllocatorEx {
        raw::ALLOCATOR
    }
}

/// The slot of MEM or OBJ. Invariant: written only by
/// [`Domain::set_allocator`], whose contract rules out concurrent use of the
/// domain. (RAW's slot is below the modes, in `fallback.rs`, because they
/// fall back to it.)
struct Slot(UnsafeCell<MemAllocatorEx>);

// SAFETY: by the invariant, no write is concurrent with a read.
unsafe impl Sync for Slot {}

/// MEM and OBJ, in that order.
static SLOTS: [Slot; 2] = [
    Slot(UnsafeCell::new(MemAllocatorEx::pymalloc_threaded())),
    Slot(UnsafeCell::new(MemAllocatorEx::pymalloc_threaded())),
];

impl Domain {
    #[inline(always)]
    fn current(self) -> MemAllocatorEx {
        match self {
            Domain::Raw => raw_allocator(),
            // SAFETY: no write is concurrent with calls into the domain (the
            // slot's invariant).
            _ => unsafe { *SLOTS[self as usize - 1].0.get() },
        }
    }

    /// The current allocator (CPython's `PyMem_GetAllocator`).
    pub fn allocator(self) -> MemAllocatorEx {
        self.current()
    }

    /// Installs `a` as the domain's allocator (CPython's
    /// `PyMem_SetAllocator`) and returns the one it replaces.
    ///
    /// # Safety
    /// * No thread may be calling into this domain, or reading or setting its
    ///   allocator, during the call (CPython: call it before the first
    ///   allocation, or with the GIL held and no other thread allocating).
    /// * `a` must honour the [`MemAllocatorEx`] contract, be thread-safe if
    ///   the domain is used from several threads, and be able to resize and
    ///   free every live block of the domain (a hook forwards them to the
    ///   allocator it replaced).
    pub unsafe fn set_allocator(self, a: MemAllocatorEx) -> MemAllocatorEx {
        match self {
            // SAFETY: exclusive use of RAW, per the contract.
            Domain::Raw => unsafe { set_raw_allocator(a) },
            // SAFETY: exclusive use of the domain, per the contract.
            _ => unsafe { ptr::replace(SLOTS[self as usize - 1].0.get(), a) },
        }
    }

    /// Allocates `size` bytes (`PyMem_RawMalloc`, `PyMem_Malloc`,
    /// `PyObject_Malloc`). Zero bytes give a distinct non-null pointer; null
    /// if `size > isize::MAX` or memory is short.
    #[inline]
    pub fn malloc(self, size: usize) -> *mut u8 {
        // SAFETY: the installed allocator honours the MemAllocatorEx
        // contract (set_allocator's contract).
        unsafe { self.current().checked_malloc(size) }
    }

    /// Allocates `nelem * elsize` zeroed bytes; null if the product overflows
    /// `isize::MAX`. A zero in either argument behaves like `calloc(1, 1)`.
    #[inline]
    pub fn calloc(self, nelem: usize, elsize: usize) -> *mut u8 {
        // SAFETY: the installed allocator honours its contract.
        unsafe { self.current().checked_calloc(nelem, elsize) }
    }

    /// Resizes `p` to `size` bytes. `realloc(null, n)` is `malloc(n)`;
    /// `realloc(p, 0)` resizes and does not free. On failure returns null and
    /// `p` stays valid and unchanged.
    ///
    /// # Safety
    /// `p` is null or a live block of this domain.
    #[inline]
    pub unsafe fn realloc(self, p: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: the allocator honours its contract, and p is null or live
        // in this domain (the caller's contract), so its allocator's.
        unsafe { self.current().checked_realloc(p, size) }
    }

    /// Frees `p`; null does nothing.
    ///
    /// # Safety
    /// `p` is null or a live block of this domain, and is not used again.
    #[inline]
    pub unsafe fn free(self, p: *mut u8) {
        // SAFETY: as for realloc, and p is not used again.
        unsafe { self.current().call_free(p) }
    }
    /// Room for `n` values of `T` (CPython's `PyMem_New` family): null if
    /// `n * size_of::<T>()` exceeds `isize::MAX`. The memory is
    /// uninitialised.
    #[inline]
    pub fn new_array<T>(self, n: usize) -> *mut T {
        const { assert!(core::mem::align_of::<T>() <= crate::geometry::ALIGNMENT) };
        match array_bytes::<T>(n) {
            Some(bytes) => self.malloc(bytes).cast(),
            None => ptr::null_mut(),
        }
    }

    /// Resizes `p` to room for `n` values of `T` (CPython's `PyMem_Resize`):
    /// null on overflow or failure, leaving `p` valid.
    ///
    /// # Safety
    /// `p` is null or a live block of this domain.
    #[inline]
    pub unsafe fn resize_array<T>(self, p: *mut T, n: usize) -> *mut T {
        const { assert!(core::mem::align_of::<T>() <= crate::geometry::ALIGNMENT) };
        match array_bytes::<T>(n) {
            // SAFETY: p is null or live in this domain (our contract).
            Some(bytes) => unsafe { self.realloc(p.cast(), bytes).cast() },
            None => ptr::null_mut(),
        }
    }

    /// Frees an array from [`new_array`](Domain::new_array) (CPython's
    /// `PyMem_Del`). Values are not dropped.
    ///
    /// # Safety
    /// As for [`free`](Domain::free).
    #[inline]
    pub unsafe fn del<T>(self, p: *mut T) {
        // SAFETY: p is null or live in this domain, not used again (our
        // contract).
        unsafe { self.free(p.cast()) }
    }
}

/// `n * size_of::<T>()` if it is at most `isize::MAX`.
#[inline]
fn array_bytes<T>(n: usize) -> Option<usize> {
    let size = core::mem::size_of::<T>();
    if size != 0 && n > MAX_SIZE / size {
        None
    } else {
        Some(n * size)
    }
}

/// The error of the safe domain API: the allocator returned null.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocError;

impl core::fmt::Display for AllocError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("memory allocation failed")
    }
}

impl std::error::Error for AllocError {}

/// An owned, zero-initialised byte buffer in one domain: the safe face of
/// `malloc`/`realloc`/`free`.
///
/// ```
/// use pymalloc::{Block, Domain};
/// let mut b = Block::new(Domain::Obj, 8).unwrap();
/// b.copy_from_slice(b"pymalloc");
/// b.resize(12).unwrap();
/// assert_eq!(&b[..], b"pymalloc\0\0\0\0");
/// assert!(Block::new(Domain::Obj, usize::MAX).is_err());
/// ```
pub struct Block {
    ptr: NonNull<u8>,
    len: usize,
    domain: Domain,
}

// SAFETY: a Block owns its memory; domain allocators are callable from any
// thread that may use the domain (set_allocator's contract).
unsafe impl Send for Block {}
// SAFETY: &Block only gives shared access to initialised bytes.
unsafe impl Sync for Block {}

impl Block {
    /// `len` zeroed bytes from `domain`.
    pub fn new(domain: Domain, len: usize) -> Result<Block, AllocError> {
        let ptr = NonNull::new(domain.calloc(1, len)).ok_or(AllocError)?;
        Ok(Block { ptr, len, domain })
    }

    /// A copy of `data` in `domain`.
    pub fn from_slice(domain: Domain, data: &[u8]) -> Result<Block, AllocError> {
        let ptr = NonNull::new(domain.malloc(data.len())).ok_or(AllocError)?;
        // SAFETY: the new block holds data.len() bytes.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), ptr.as_ptr(), data.len()) };
        Ok(Block { ptr, len: data.len(), domain })
    }

    /// Resizes to `len` bytes, keeping the contents and zeroing new bytes.
    /// On failure the block is unchanged.
    pub fn resize(&mut self, len: usize) -> Result<(), AllocError> {
        // SAFETY: self.ptr is live in self.domain.
        let p = unsafe { self.domain.realloc(self.ptr.as_ptr(), len) };
        let p = NonNull::new(p).ok_or(AllocError)?;
        if len > self.len {
            // SAFETY: the block now holds `len` bytes.
            unsafe { ptr::write_bytes(p.as_ptr().add(self.len), 0, len - self.len) };
        }
        self.ptr = p;
        self.len = len;
        Ok(())
    }

    /// The domain the block lives in.
    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// The address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl core::ops::Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: len bytes, all initialised (zeroed or copied).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl core::ops::DerefMut for Block {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: len initialised bytes (zeroed or copied) of a live block,
        // and &mut self makes the access unique.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: the block is live in its domain and dropped once.
        unsafe { self.domain.free(self.ptr.as_ptr()) }
    }
}

impl core::fmt::Debug for Block {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Block").field("domain", &self.domain).field("len", &self.len).finish()
    }
}
