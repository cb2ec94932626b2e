//! Reading and replacing allocators: the domains' `PyMemAllocatorEx`, the
//! debug hooks, and the arena allocator `PyObjectArenaAllocator`.
//!
//! The C structs are declared here with nullable function pointers (C can
//! hand over NULL members); the core's [`MemAllocatorEx`] and
//! [`ArenaAllocator`] have the same layout with non-nullable ones, so a struct
//! coming from C is checked before it is converted.
//!
//! Domain values arrive as C `int`s and are matched against the three
//! enumerators; no other value is ever turned into a [`Domain`].

use core::ffi::{c_int, c_void};

use pymalloc_core::{ArenaAllocator, Domain, MemAllocatorEx};

/// `void *(*malloc)(void *ctx, size_t size)`.
pub type MallocFn = unsafe extern "C" fn(ctx: *mut c_void, size: usize) -> *mut c_void;
/// `void *(*calloc)(void *ctx, size_t nelem, size_t elsize)`.
pub type CallocFn = unsafe extern "C" fn(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void;
/// `void *(*realloc)(void *ctx, void *ptr, size_t new_size)`.
pub type ReallocFn = unsafe extern "C" fn(ctx: *mut c_void, ptr: *mut c_void, new_size: usize) -> *mut c_void;
/// `void (*free)(void *ctx, void *ptr)`.
pub type FreeFn = unsafe extern "C" fn(ctx: *mut c_void, ptr: *mut c_void);
/// `void *(*alloc)(void *ctx, size_t size)` of an arena allocator.
pub type ArenaAllocFn = unsafe extern "C" fn(ctx: *mut c_void, size: usize) -> *mut c_void;
/// `void (*free)(void *ctx, void *ptr, size_t size)` of an arena allocator.
pub type ArenaFreeFn = unsafe extern "C" fn(ctx: *mut c_void, ptr: *mut c_void, size: usize);

/// CPython's `PyMemAllocatorEx` as C sees it: `ctx` followed by four function
/// pointers, any of which C may leave NULL.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PyMemAllocatorEx {
    /// Passed as the first argument of the four functions.
    pub ctx: *mut c_void,
    /// Allocates a block.
    pub malloc: Option<MallocFn>,
    /// Allocates a zeroed block.
    pub calloc: Option<CallocFn>,
    /// Resizes a block.
    pub realloc: Option<ReallocFn>,
    /// Frees a block.
    pub free: Option<FreeFn>,
}

impl PyMemAllocatorEx {
    /// All members NULL: what `PyMem_GetAllocator` gives for an unknown domain.
    pub const NULL: PyMemAllocatorEx =
        PyMemAllocatorEx { ctx: core::ptr::null_mut(), malloc: None, calloc: None, realloc: None, free: None };

    /// The C view of a core allocator.
    pub fn from_core(a: MemAllocatorEx) -> PyMemAllocatorEx {
        PyMemAllocatorEx {
            ctx: a.ctx,
            malloc: Some(a.malloc),
            calloc: Some(a.calloc),
            realloc: Some(a.realloc),
            free: Some(a.free),
        }
    }

    /// The core allocator, if no function pointer is NULL.
    pub fn to_core(&self) -> Option<MemAllocatorEx> {
        Some(MemAllocatorEx {
            ctx: self.ctx,
            malloc: self.malloc?,
            calloc: self.calloc?,
            realloc: self.realloc?,
            free: self.free?,
        })
    }
}

/// CPython's `PyObjectArenaAllocator` as C sees it: `ctx`, `alloc`, `free`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PyObjectArenaAllocator {
    /// Passed as the first argument of both functions.
    pub ctx: *mut c_void,
    /// Returns `size` bytes for an arena, or NULL.
    pub alloc: Option<ArenaAllocFn>,
    /// Releases an arena returned by `alloc`.
    pub free: Option<ArenaFreeFn>,
}

impl PyObjectArenaAllocator {
    /// The C view of a core arena allocator.
    pub fn from_core(a: ArenaAllocator) -> PyObjectArenaAllocator {
        PyObjectArenaAllocator { ctx: a.ctx, alloc: Some(a.alloc), free: Some(a.free) }
    }

    /// The core arena allocator, if neither function pointer is NULL.
    pub fn to_core(&self) -> Option<ArenaAllocator> {
        Some(ArenaAllocator { ctx: self.ctx, alloc: self.alloc?, free: self.free? })
    }
}

/// `PYMEM_DOMAIN_RAW` (0), `PYMEM_DOMAIN_MEM` (1), `PYMEM_DOMAIN_OBJ` (2); any
/// other value is no domain.
pub fn domain_from_c(domain: c_int) -> Option<Domain> {
    match domain {
        0 => Some(Domain::Raw),
        1 => Some(Domain::Mem),
        2 => Some(Domain::Obj),
        _ => None,
    }
}

/// `PyMem_GetAllocator(domain, allocator)`: copies the current allocator of
/// `domain` into `*allocator`. For a value that is not a domain, sets every
/// member to NULL (as CPython does). A NULL `allocator` does nothing.
///
/// # Safety
/// `allocator` is NULL or points to writable memory for a `PyMemAllocatorEx`.
/// No thread may be replacing the domain's allocator meanwhile.
#[no_mangle]
pub unsafe extern "C" fn PyMem_GetAllocator(domain: c_int, allocator: *mut PyMemAllocatorEx) {
    if allocator.is_null() {
        return;
    }
    let a = match domain_from_c(domain) {
        Some(d) => PyMemAllocatorEx::from_core(d.allocator()),
        None => PyMemAllocatorEx::NULL,
    };
    // SAFETY: allocator is non-null and writable (caller's contract); it may
    // be unaligned if C misbehaves, so write unaligned.
    unsafe { allocator.write_unaligned(a) }
}

/// `PyMem_SetAllocator(domain, allocator)`: makes `*allocator` the allocator
/// of `domain`. A value that is not a domain is ignored (as in CPython); so
/// are a NULL `allocator` and one with a NULL function pointer (CPython would
/// store it and crash at the first call).
///
/// # Safety
/// CPython's rules: no thread may use the domain during the call; the new
/// allocator must honour the `PyMemAllocatorEx` contract (distinct non-NULL
/// blocks for zero sizes, `realloc(p, 0)` does not free, ...), be callable
/// from every thread that uses the domain, and be able to resize and free
/// the domain's live blocks (a hook forwards them to the previous allocator).
#[no_mangle]
pub unsafe extern "C" fn PyMem_SetAllocator(domain: c_int, allocator: *const PyMemAllocatorEx) {
    let Some(d) = domain_from_c(domain) else {
        return;
    };
    if allocator.is_null() {
        return;
    }
    // SAFETY: non-null and readable (caller's contract).
    let a = unsafe { allocator.read_unaligned() };
    let Some(a) = a.to_core() else {
        return;
    };
    // SAFETY: exclusive use of the domain and a valid allocator are the
    // caller's contract, which is Domain::set_allocator's.
    unsafe { d.set_allocator(a) };
}

/// `PyMem_SetupDebugHooks()`: installs CPython's debug hooks over the current
/// allocator of each domain (a domain that has them keeps them).
///
/// # Safety
/// As for [`PyMem_SetAllocator`], for all three domains.
#[no_mangle]
pub unsafe extern "C" fn PyMem_SetupDebugHooks() {
    // SAFETY: the caller guarantees no concurrent use of the domains.
    unsafe { pymalloc_core::debug::setup_debug_hooks() }
}

/// `PyObject_GetArenaAllocator(allocator)`: copies the allocator that new
/// pymalloc arenas come from into `*allocator`. NULL does nothing.
///
/// # Safety
/// `allocator` is NULL or points to writable memory for a
/// `PyObjectArenaAllocator`.
#[no_mangle]
pub unsafe extern "C" fn PyObject_GetArenaAllocator(allocator: *mut PyObjectArenaAllocator) {
    if allocator.is_null() {
        return;
    }
    let a = PyObjectArenaAllocator::from_core(pymalloc_core::arena_alloc::process_default());
    // SAFETY: non-null and writable (caller's contract).
    unsafe { allocator.write_unaligned(a) }
}

/// `PyObject_SetArenaAllocator(allocator)`: new pymalloc arenas come from
/// `*allocator`. Each live arena is released to the allocator that made it.
/// A NULL `allocator`, or one with a NULL function pointer, is ignored.
///
/// The allocator is process-wide: new arenas of every pymalloc heap (each
/// thread's, in the default mode) come from it. Unlike the domains, this may
/// be called while other threads allocate: a lock orders the swap with arena
/// work.
///
/// # Safety
/// `allocator` is NULL or readable; `alloc` returns NULL or `size` bytes of
/// readable and writable memory that nothing else uses until the matching
/// `free`, and both functions stay callable, from any thread, for as long as
/// an arena they made is live.
#[no_mangle]
pub unsafe extern "C" fn PyObject_SetArenaAllocator(allocator: *const PyObjectArenaAllocator) {
    if allocator.is_null() {
        return;
    }
    // SAFETY: non-null and readable (caller's contract).
    let a = unsafe { allocator.read_unaligned() };
    let Some(a) = a.to_core() else {
        return;
    };
    // SAFETY: the allocator honours the arena contract, from any thread
    // (caller's promise).
    unsafe { pymalloc_core::arena_alloc::set_process_default(a) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn c_views_have_the_core_layouts() {
        assert_eq!(size_of::<PyMemAllocatorEx>(), size_of::<MemAllocatorEx>());
        assert_eq!(size_of::<PyMemAllocatorEx>(), 5 * size_of::<usize>());
        assert_eq!(offset_of!(PyMemAllocatorEx, ctx), offset_of!(MemAllocatorEx, ctx));
        assert_eq!(offset_of!(PyMemAllocatorEx, malloc), offset_of!(MemAllocatorEx, malloc));
        assert_eq!(offset_of!(PyMemAllocatorEx, calloc), offset_of!(MemAllocatorEx, calloc));
        assert_eq!(offset_of!(PyMemAllocatorEx, realloc), offset_of!(MemAllocatorEx, realloc));
        assert_eq!(offset_of!(PyMemAllocatorEx, free), offset_of!(MemAllocatorEx, free));
        assert_eq!(size_of::<PyObjectArenaAllocator>(), size_of::<ArenaAllocator>());
        assert_eq!(size_of::<PyObjectArenaAllocator>(), 3 * size_of::<usize>());
        assert_eq!(offset_of!(PyObjectArenaAllocator, alloc), offset_of!(ArenaAllocator, alloc));
        assert_eq!(offset_of!(PyObjectArenaAllocator, free), offset_of!(ArenaAllocator, free));
    }

    #[test]
    fn only_the_three_enumerators_are_domains() {
        assert_eq!(domain_from_c(0), Some(Domain::Raw));
        assert_eq!(domain_from_c(1), Some(Domain::Mem));
        assert_eq!(domain_from_c(2), Some(Domain::Obj));
        for bad in [-1, 3, 4, 100, c_int::MIN, c_int::MAX] {
            assert_eq!(domain_from_c(bad), None, "{bad}");
        }
    }

    #[test]
    fn null_members_are_not_converted() {
        let full = PyMemAllocatorEx::from_core(MemAllocatorEx::malloc());
        assert!(full.to_core().unwrap().same_as(&MemAllocatorEx::malloc()));
        for i in 0..4 {
            let mut a = full;
            match i {
                0 => a.malloc = None,
                1 => a.calloc = None,
                2 => a.realloc = None,
                _ => a.free = None,
            }
            assert!(a.to_core().is_none(), "member {i}");
        }
        let arena = PyObjectArenaAllocator::from_core(ArenaAllocator::os());
        assert!(arena.to_core().unwrap().same_as(&ArenaAllocator::os()));
        assert!(PyObjectArenaAllocator { alloc: None, ..arena }.to_core().is_none());
        assert!(PyObjectArenaAllocator { free: None, ..arena }.to_core().is_none());
    }
}
