//! The arena allocator: where pymalloc gets its 1 MiB arenas from.
//!
//! [`ArenaAllocator`] has the layout of CPython's `PyObjectArenaAllocator`: a
//! context pointer plus `alloc(ctx, size)` and `free(ctx, ptr, size)`. Each
//! [`Heap`](crate::Heap) has one, readable with
//! [`Heap::arena_allocator`](crate::Heap::arena_allocator) and replaceable with
//! [`Heap::set_arena_allocator`](crate::Heap::set_arena_allocator). Unlike
//! CPython, every arena remembers the allocator that made it and is given back
//! to that one, so swapping allocators while arenas are live is safe.
//!
//! ```
//! use core::ffi::c_void;
//! use core::sync::atomic::{AtomicUsize, Ordering};
//! use pymalloc::{ArenaAllocator, Heap};
//!
//! static LIVE: AtomicUsize = AtomicUsize::new(0);
//! unsafe extern "C" fn alloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
//!     LIVE.fetch_add(1, Ordering::Relaxed);
//!     unsafe { (ArenaAllocator::os().alloc)(core::ptr::null_mut(), size) }
//! }
//! unsafe extern "C" fn free(_ctx: *mut c_void, p: *mut c_void, size: usize) {
//!     LIVE.fetch_sub(1, Ordering::Relaxed);
//!     unsafe { (ArenaAllocator::os().free)(core::ptr::null_mut(), p, size) }
//! }
//!
//! let mut heap = Heap::new();
//! // SAFETY: alloc/free above honour the arena allocator contract.
//! unsafe { heap.set_arena_allocator(ArenaAllocator { ctx: core::ptr::null_mut(), alloc, free }) };
//! let p = unsafe { heap.malloc(100) };
//! assert_eq!(LIVE.load(Ordering::Relaxed), 1);
//! unsafe { heap.free(p) };
//! drop(heap); // a dropped heap gives all its arenas back
//! assert_eq!(LIVE.load(Ordering::Relaxed), 0);
//! ```

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr;

use crate::geometry::ARENA_SIZE;
use crate::sync::SpinLock;
use crate::{os, region};

/// CPython's `PyObjectArenaAllocator`: where arenas come from.
///
/// Contract for `alloc`: return null, or the address of `size` bytes of
/// readable and writable memory that nothing else uses until the matching
/// `free`. Addresses need not be aligned (pymalloc skips to the first
/// pool-aligned address), but [`ArenaAllocator::os`] aligns them to the arena
/// size so that no pool is lost. `free` receives the same address and size.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ArenaAllocator {
    /// Passed unchanged as the first argument of `alloc` and `free`.
    pub ctx: *mut c_void,
    /// Returns `size` bytes, or null.
    pub alloc: unsafe extern "C" fn(ctx: *mut c_void, size: usize) -> *mut c_void,
    /// Releases a block returned by `alloc`.
    pub free: unsafe extern "C" fn(ctx: *mut c_void, ptr: *mut c_void, size: usize),
}

// SAFETY: the context pointer is opaque to pymalloc; an allocator whose
// context is not thread-safe must only be installed in a heap used from one
// thread (the contract of `Heap::set_arena_allocator`).
unsafe impl Send for ArenaAllocator {}
// SAFETY: sharing the struct shares only its context and function pointers;
// whether the context may be used from several threads is ruled by
// `Heap::set_arena_allocator`'s contract, as for Send.
unsafe impl Sync for ArenaAllocator {}

/// The context of [`ArenaAllocator::os`]: unused, but its address identifies
/// pymalloc's own allocator (whose arenas may have pages given back).
static OS_CTX: u8 = 0;

impl ArenaAllocator {
    /// The default: arenas carved from the reserved arena region
    /// ([`crate::region`]), or anonymous `mmap` mappings aligned to the arena
    /// size when the region cannot serve (the Rust heap under Miri).
    pub const fn os() -> ArenaAllocator {
        ArenaAllocator { ctx: &OS_CTX as *const u8 as *mut c_void, alloc: os_arena_alloc, free: os_arena_free }
    }

    /// True if this is [`ArenaAllocator::os`] (recognised by its context).
    pub fn is_os(&self) -> bool {
        ptr::eq(self.ctx, &OS_CTX as *const u8 as *mut c_void)
    }

    /// True if `self` and `other` have the same context and functions.
    pub fn same_as(&self, other: &ArenaAllocator) -> bool {
        self.ctx == other.ctx
            && core::ptr::fn_addr_eq(self.alloc, other.alloc)
            && core::ptr::fn_addr_eq(self.free, other.free)
    }
}

/// The process-wide arena allocator: what every heap uses unless it was
/// given one of its own (CPython's single `_PyObject_Arena`).
struct ProcessDefault {
    lock: SpinLock,
    a: UnsafeCell<ArenaAllocator>,
}
// SAFETY: `a` is only read or written with `lock` held.
unsafe impl Sync for ProcessDefault {}
static PROCESS: ProcessDefault = ProcessDefault { lock: SpinLock::new(), a: UnsafeCell::new(ArenaAllocator::os()) };

/// Takes the process default's lock before `fork` (see `crate::fork`).
pub(crate) fn fork_acquire() {
    PROCESS.lock.acquire();
}

/// Releases what [`fork_acquire`] took.
///
/// # Safety
/// Called by the fork parent or child handler after `fork_acquire`.
pub(crate) unsafe fn fork_release() {
    // SAFETY: taken by fork_acquire on this thread (our contract).
    unsafe { PROCESS.lock.release() };
}

/// The process-wide arena allocator (CPython's `PyObject_GetArenaAllocator`).
pub fn process_default() -> ArenaAllocator {
    let _g = PROCESS.lock.lock();
    // SAFETY: the lock is held.
    unsafe { *PROCESS.a.get() }
}

/// Replaces the process-wide arena allocator (CPython's
/// `PyObject_SetArenaAllocator`): new arenas of every heap without an
/// allocator of its own come from `a`, from now on, on every thread. Arenas
/// already allocated go back to the allocator that made them.
///
/// # Safety
/// `a` must honour the [`ArenaAllocator`] contract, from any thread, for as
/// long as an arena it returns is live.
pub unsafe fn set_process_default(a: ArenaAllocator) {
    let _g = PROCESS.lock.lock();
    // SAFETY: the lock is held.
    unsafe { *PROCESS.a.get() = a };
}

impl Default for ArenaAllocator {
    fn default() -> Self {
        Self::os()
    }
}

unsafe extern "C" fn os_arena_alloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    if size == 0 || size % os::page_size() != 0 {
        return ptr::null_mut();
    }
    if size == ARENA_SIZE {
        let p = region::alloc_arena();
        if !p.is_null() {
            return p.cast();
        }
    }
    // Arena-sized requests get arena alignment; anything else page alignment.
    let align = if size == ARENA_SIZE { ARENA_SIZE } else { os::page_size() };
    os::map_aligned(size, align).cast()
}

unsafe extern "C" fn os_arena_free(_ctx: *mut c_void, p: *mut c_void, size: usize) {
    if p.is_null() {
        return;
    }
    // SAFETY: per the arena allocator contract, `p` and `size` come from
    // os_arena_alloc and the arena is no longer used.
    unsafe {
        if region::contains(p.cast()) {
            region::free_arena(p.cast());
        } else {
            os::unmap(p.cast(), size)
        }
    }
}
