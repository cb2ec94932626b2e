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
use core::ffi::c_void;
use core::ptr::{self, NonNull};

use crate::heap::Heap;
use crate::locked::LockedHeap;
use crate::raw::{self, MAX_SIZE};

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
// SAFETY: as above.
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

    /// pymalloc with one heap per thread ([`crate::thread`]): the default
    /// of MEM and OBJ. Thread-safe without a global lock; small requests are
    /// served from the calling thread's heap, others go to the RAW domain.
    pub const fn pymalloc_threaded() -> MemAllocatorEx {
        MemAllocatorEx {
            ctx: &THREADED_CTX as *const u8 as *mut c_void,
            malloc: threaded_malloc,
            calloc: threaded_calloc,
            realloc: threaded_realloc,
            free: threaded_free,
        }
    }

    /// pymalloc on one `heap` shared by all threads behind its lock
    /// (CPython's `PYMALLOC_ALLOC` made thread-safe with a mutex).
    pub const fn pymalloc(heap: &'static LockedHeap) -> MemAllocatorEx {
        MemAllocatorEx {
            ctx: heap as *const LockedHeap as *mut c_void,
            malloc: pymalloc_malloc,
            calloc: pymalloc_calloc,
            realloc: pymalloc_realloc,
            free: pymalloc_free,
        }
    }

    /// pymalloc on one `heap` with no lock at all: CPython's own
    /// arrangement, where callers of MEM and OBJ hold the GIL.
    ///
    /// # Safety
    /// Every call through the returned allocator must be serialised by the
    /// caller (one thread at a time, with happens-before between calls).
    pub const unsafe fn pymalloc_gil(heap: &'static GilHeap) -> MemAllocatorEx {
        MemAllocatorEx {
            ctx: heap as *const GilHeap as *mut c_void,
            malloc: gil_malloc,
            calloc: gil_calloc,
            realloc: gil_realloc,
            free: gil_free,
        }
    }

    /// The C library's allocator (CPython's `MALLOC_ALLOC`).
    pub const fn malloc() -> MemAllocatorEx {
        raw::ALLOCATOR
    }
}

unsafe extern "C" fn pymalloc_malloc(ctx: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: ctx is the &'static LockedHeap given to MemAllocatorEx::pymalloc.
    unsafe { &*ctx.cast::<LockedHeap>() }.malloc(n).cast()
}
unsafe extern "C" fn pymalloc_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: as above.
    unsafe { &*ctx.cast::<LockedHeap>() }.calloc(nelem, elsize).cast()
}
unsafe extern "C" fn pymalloc_realloc(ctx: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: as above; p's validity is the domain caller's contract.
    unsafe { (*ctx.cast::<LockedHeap>()).realloc(p.cast(), n).cast() }
}
unsafe extern "C" fn pymalloc_free(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: as above.
    unsafe { (*ctx.cast::<LockedHeap>()).free(p.cast()) }
}

static THREADED_CTX: u8 = 0;

unsafe extern "C" fn threaded_malloc(_: *mut c_void, n: usize) -> *mut c_void {
    crate::thread::malloc(n).cast()
}
unsafe extern "C" fn threaded_calloc(_: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    crate::thread::calloc(nelem, elsize).cast()
}
unsafe extern "C" fn threaded_realloc(_: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: p's validity is the domain caller's contract.
    unsafe { crate::thread::realloc(p.cast(), n).cast() }
}
unsafe extern "C" fn threaded_free(_: *mut c_void, p: *mut c_void) {
    // SAFETY: as above.
    unsafe { crate::thread::free(p.cast()) }
}

/// A [`Heap`] used with no lock by callers that serialise themselves (a
/// GIL): see [`MemAllocatorEx::pymalloc_gil`].
pub struct GilHeap(Heap);

// SAFETY: the contract of MemAllocatorEx::pymalloc_gil (and of every
// method below) is that calls are serialised; the heap's cross-thread
// readers (statistics) go through its own bookkeeping lock.
unsafe impl Sync for GilHeap {}

impl GilHeap {
    /// An empty heap: it retains head pools but has no block cache
    /// ([`Heap::new_retaining_uncached`]), which the fast paths of
    /// [`MemAllocatorEx::pymalloc_gil`] rely on. In CPython's workloads a
    /// freed block is rarely the next one asked for, and the cache's flushes
    /// cost more than they save (callgrind, pyperformance's float).
    pub const fn new() -> GilHeap {
        GilHeap(Heap::new_retaining_uncached())
    }

    /// The heap, for statistics and inspection (its shared-access methods).
    pub fn heap(&self) -> &Heap {
        &self.0
    }

    /// Sets the heap's purge policy.
    ///
    /// # Safety
    /// Serialised with every other call on this heap (the GIL held, or
    /// before any use).
    pub unsafe fn set_purge_policy(&self, p: crate::PurgePolicy) {
        self.0.set_purge_policy_shared(p);
    }
}

impl Default for GilHeap {
    fn default() -> Self {
        Self::new()
    }
}

struct Gil<'a>(&'a Heap);

impl crate::heap::HeapAccess for Gil<'_> {
    #[inline(always)]
    fn with<R>(&mut self, f: impl FnOnce(&Heap) -> R) -> R {
        f(self.0)
    }
    #[inline(always)]
    fn raw_counter(&self) -> &core::sync::atomic::AtomicIsize {
        self.0.raw_counter()
    }
}

unsafe extern "C" fn gil_malloc(ctx: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: ctx is the GilHeap given to pymalloc_gil; calls are serialised.
    let heap = unsafe { &(*ctx.cast::<GilHeap>()).0 };
    if let Some(c) = crate::geometry::size_class(n) {
        let p = heap.alloc_fast_uncached(c);
        if !p.is_null() {
            return p.cast();
        }
    }
    // SAFETY: forwarded.
    unsafe { gil_malloc_full(ctx, n) }
}
#[inline(never)]
unsafe extern "C" fn gil_malloc_full(ctx: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: as above.
    crate::heap::malloc(&mut Gil(unsafe { &(*ctx.cast::<GilHeap>()).0 }), n).cast()
}
unsafe extern "C" fn gil_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    // SAFETY: as above.
    crate::heap::calloc(&mut Gil(unsafe { &(*ctx.cast::<GilHeap>()).0 }), nelem, elsize).cast()
}
unsafe extern "C" fn gil_realloc(ctx: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: as above; p's validity is the domain caller's contract.
    unsafe { crate::heap::realloc(&mut Gil(&(*ctx.cast::<GilHeap>()).0), p.cast(), n).cast() }
}
unsafe extern "C" fn gil_free(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: as above; the GilHeap has no block cache (GilHeap::new).
    if unsafe { (*ctx.cast::<GilHeap>()).0.free_fast_uncached(p.cast()) } {
        return;
    }
    // SAFETY: forwarded.
    unsafe { gil_free_full(ctx, p) }
}
#[inline(never)]
unsafe extern "C" fn gil_free_full(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: as above.
    unsafe { crate::heap::free(&mut Gil(&(*ctx.cast::<GilHeap>()).0), p.cast()) }
}

static GLOBAL_HEAP: LockedHeap = LockedHeap::new();
static GIL_HEAP: GilHeap = GilHeap::new();

/// The process's single locked pymalloc heap: MEM and OBJ use it in the
/// `Locked` mode (see [`crate::config::PymallocMode`]), and threads that are
/// exiting allocate from it.
#[inline(always)]
pub fn global_heap() -> &'static LockedHeap {
    &GLOBAL_HEAP
}

/// The process's unlocked pymalloc heap, for the `Gil` mode.
#[inline(always)]
pub fn gil_heap() -> &'static GilHeap {
    &GIL_HEAP
}

/// One domain's current allocator.
struct Slot(UnsafeCell<MemAllocatorEx>);

// SAFETY: writes only happen in `Domain::set_allocator`, whose contract rules
// out concurrent use of the domain.
unsafe impl Sync for Slot {}

static DOMAINS: [Slot; 3] = [
    Slot(UnsafeCell::new(raw::ALLOCATOR)),
    Slot(UnsafeCell::new(MemAllocatorEx::pymalloc_threaded())),
    Slot(UnsafeCell::new(MemAllocatorEx::pymalloc_threaded())),
];

impl Domain {
    #[inline(always)]
    fn current(self) -> MemAllocatorEx {
        // SAFETY: no write is concurrent with calls into the domain
        // (set_allocator's contract).
        unsafe { *DOMAINS[self as usize].0.get() }
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
        // SAFETY: exclusive access per the contract.
        unsafe { ptr::replace(DOMAINS[self as usize].0.get(), a) }
    }

    /// Allocates `size` bytes (`PyMem_RawMalloc`, `PyMem_Malloc`,
    /// `PyObject_Malloc`). Zero bytes give a distinct non-null pointer; null
    /// if `size > isize::MAX` or memory is short.
    #[inline]
    pub fn malloc(self, size: usize) -> *mut u8 {
        if size > MAX_SIZE {
            return ptr::null_mut();
        }
        let a = self.current();
        // SAFETY: the installed allocator honours the MemAllocatorEx contract.
        unsafe { (a.malloc)(a.ctx, size).cast() }
    }

    /// Allocates `nelem * elsize` zeroed bytes; null if the product overflows
    /// `isize::MAX`. A zero in either argument behaves like `calloc(1, 1)`.
    #[inline]
    pub fn calloc(self, nelem: usize, elsize: usize) -> *mut u8 {
        if elsize != 0 && nelem > MAX_SIZE / elsize {
            return ptr::null_mut();
        }
        let a = self.current();
        // SAFETY: as for malloc.
        unsafe { (a.calloc)(a.ctx, nelem, elsize).cast() }
    }

    /// Resizes `p` to `size` bytes. `realloc(null, n)` is `malloc(n)`;
    /// `realloc(p, 0)` resizes and does not free. On failure returns null and
    /// `p` stays valid and unchanged.
    ///
    /// # Safety
    /// `p` is null or a live block of this domain.
    #[inline]
    pub unsafe fn realloc(self, p: *mut u8, size: usize) -> *mut u8 {
        if size > MAX_SIZE {
            return ptr::null_mut();
        }
        let a = self.current();
        // SAFETY: p is null or live in this domain (caller's contract).
        unsafe { (a.realloc)(a.ctx, p.cast(), size).cast() }
    }

    /// Frees `p`; null does nothing.
    ///
    /// # Safety
    /// `p` is null or a live block of this domain, and is not used again.
    #[inline]
    pub unsafe fn free(self, p: *mut u8) {
        let a = self.current();
        // SAFETY: as for realloc.
        unsafe { (a.free)(a.ctx, p.cast()) }
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
            // SAFETY: forwarded contract.
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
        // SAFETY: forwarded contract.
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
        // SAFETY: as above, and uniquely owned.
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
