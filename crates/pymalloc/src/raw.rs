//! The raw allocator: the C library's `malloc` family with CPython's rules.
//!
//! These are the functions behind CPython's `MALLOC_ALLOC` (`_PyMem_RawMalloc`
//! and friends), the default allocator of the RAW domain, and of all three
//! domains in the `malloc` configuration. They are thread-safe.
//!
//! * a request of 0 bytes is a request of 1 byte, so it returns a distinct
//!   non-null pointer (`calloc(n, 0)` and `calloc(0, n)` are `calloc(1, 1)`);
//!   (every request is in fact rounded up to 16 bytes, so every block is
//!   16-byte aligned whatever the C library);
//! * `realloc(p, 0)` resizes to one byte and does not free;
//! * sizes above `isize::MAX`, and `calloc` products that overflow, fail with
//!   null before reaching the C library.
//!
//! ```
//! let p = pymalloc::raw::malloc(0);
//! assert!(!p.is_null());
//! let q = unsafe { pymalloc::raw::realloc(p, 0) };
//! assert!(!q.is_null());
//! unsafe { pymalloc::raw::free(q) };
//! assert!(pymalloc::raw::malloc(usize::MAX).is_null());
//! assert!(pymalloc::raw::calloc(usize::MAX / 2, 3).is_null());
//! ```

use core::ffi::c_void;

use crate::allocator::MemAllocatorEx;

/// Largest size any allocator in this crate accepts (`PY_SSIZE_T_MAX`).
pub const MAX_SIZE: usize = crate::allocator::MAX_SIZE;

/// Requests are at least this big. C only promises alignment suitable for
/// objects that fit in the size asked for (a 1-byte block may be 1-aligned);
/// asking for at least 16 bytes gets 16-byte alignment from any C library,
/// which the brief promises for every block.
const MIN_REQUEST: usize = 16;

/// `malloc(size)`, or `malloc(1)` for a zero size; null above [`MAX_SIZE`].
#[inline]
pub fn malloc(size: usize) -> *mut u8 {
    if size > MAX_SIZE {
        return core::ptr::null_mut();
    }
    // SAFETY: malloc has no preconditions.
    unsafe { libc::malloc(size.max(MIN_REQUEST)).cast() }
}

/// `calloc(nelem, elsize)`; zero in either argument is `calloc(1, 1)`; null if
/// the product overflows or exceeds [`MAX_SIZE`].
#[inline]
pub fn calloc(nelem: usize, elsize: usize) -> *mut u8 {
    if elsize != 0 && nelem > MAX_SIZE / elsize {
        return core::ptr::null_mut();
    }
    let (n, e) = if nelem == 0 || elsize == 0 { (1, 1) } else { (nelem, elsize) };
    // SAFETY: calloc has no preconditions; the product does not overflow.
    unsafe { libc::calloc(n, e).cast() }
}

/// `realloc(p, size)`; `size == 0` resizes to one byte; null above
/// [`MAX_SIZE`], in which case `p` is untouched.
///
/// # Safety
/// `p` is null or a live pointer from this module's functions.
#[inline]
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if size > MAX_SIZE {
        return core::ptr::null_mut();
    }
    // SAFETY: the caller passes null or a live C-heap pointer.
    unsafe { libc::realloc(p.cast(), size.max(MIN_REQUEST)).cast() }
}

/// `free(p)`; `free(null)` does nothing.
///
/// # Safety
/// `p` is null or a live pointer from this module's functions, not used again.
#[inline]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: the caller passes null or a live C-heap pointer.
    unsafe { libc::free(p.cast()) }
}

/// Memory aligned to `align` (a power of two that is a multiple of the pointer
/// size), released with [`free`]. Null on failure or for sizes above
/// [`MAX_SIZE`].
#[inline]
pub fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    if size > MAX_SIZE {
        return core::ptr::null_mut();
    }
    let mut out: *mut c_void = core::ptr::null_mut();
    // SAFETY: out is a valid place to store the result; posix_memalign checks
    // `align` itself and returns an error code for bad values.
    let rc = unsafe { libc::posix_memalign(&mut out, align, size.max(MIN_REQUEST)) };
    if rc == 0 {
        out.cast()
    } else {
        core::ptr::null_mut()
    }
}

/// Gives the C library's free memory back to the OS where it can
/// (glibc's `malloc_trim(0)`: the top of the heap and whole free pages inside
/// it). True if memory was released. Elsewhere (another C library, Miri) it
/// does nothing.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
    {
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", not(miri))))]
    {
        false
    }
}

/// Bytes the C library's allocator has handed out and not had back
/// (glibc's `mallinfo2().uordblks`), if it can tell.
pub fn in_use() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
    {
        // SAFETY: mallinfo2 has no preconditions.
        Some(unsafe { libc::mallinfo2() }.uordblks)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", not(miri))))]
    {
        None
    }
}

/// Bytes free inside the C library's heap that trimming might give back
/// (glibc's `mallinfo2().fordblks`), if it can tell.
pub fn free_in_heap() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
    {
        // SAFETY: mallinfo2 has no preconditions.
        Some(unsafe { libc::mallinfo2() }.fordblks)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", not(miri))))]
    {
        None
    }
}

unsafe extern "C" fn libc_malloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    malloc(size).cast()
}
unsafe extern "C" fn libc_calloc(_ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    calloc(nelem, elsize).cast()
}
unsafe extern "C" fn libc_realloc(_ctx: *mut c_void, p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: p is null or live from this allocator (the domain caller's
    // contract for realloc).
    unsafe { realloc(p.cast(), size).cast() }
}
unsafe extern "C" fn libc_free(_ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: p is null or live from this allocator, not used again (the
    // domain caller's contract for free).
    unsafe { free(p.cast()) }
}

/// The context of [`ALLOCATOR`]: unused, but its address identifies the raw
/// allocator (function addresses are not reliable identities in Rust).
static RAW_CTX: u8 = 0;

/// The raw allocator as a domain allocator (CPython's `MALLOC_ALLOC`).
pub const ALLOCATOR: MemAllocatorEx = MemAllocatorEx {
    ctx: &RAW_CTX as *const u8 as *mut c_void,
    malloc: libc_malloc,
    calloc: libc_calloc,
    realloc: libc_realloc,
    free: libc_free,
};

/// Memory for pymalloc's own bookkeeping (radix nodes, arena tables, thread
/// heaps).
///
/// Outside Miri it comes from the OS directly, a mapping per block with its
/// length in a 64-byte header: these requests are few and long-lived, and a
/// C heap underneath would cost more than it holds. glibc's `calloc` clears
/// a 128 KiB radix node that `mmap` hands out as untouched zero pages, and
/// its first call in each thread builds a thread arena. It also never comes
/// back into pymalloc when pymalloc *is* the process's `malloc` (the preload
/// library), whose lock the caller may hold. Under Miri, which has no
/// `mmap`, the C library's functions.
pub(crate) mod meta {
    #[cfg(not(miri))]
    mod imp {
        use crate::os;

        /// Bytes before the block: the mapping's length, and 64-byte
        /// alignment for what follows.
        const HEADER: usize = 64;

        fn mapping_len(n: usize) -> Option<usize> {
            let page = os::page_size();
            Some(n.checked_add(HEADER + page - 1)? & !(page - 1))
        }

        /// A fresh zeroed block of `n` bytes, null if the OS refuses.
        pub(crate) fn zeroed(n: usize) -> *mut u8 {
            let Some(len) = mapping_len(n) else { return core::ptr::null_mut() };
            let base = os::map_aligned(len, os::page_size());
            if base.is_null() {
                return base;
            }
            // SAFETY: base is a fresh mapping of len >= HEADER bytes,
            // page-aligned, so the header word is aligned and in bounds.
            unsafe {
                base.cast::<usize>().write(len);
                base.add(HEADER)
            }
        }

        /// The mapping's base and length of a block from [`zeroed`].
        ///
        /// # Safety
        /// `p` is a live block from [`zeroed`].
        unsafe fn mapping(p: *mut u8) -> (*mut u8, usize) {
            // SAFETY: the header is the HEADER bytes before p (contract).
            unsafe {
                let base = p.sub(HEADER);
                (base, base.cast::<usize>().read())
            }
        }

        /// `realloc` with C's rules: null leaves `p` as it was.
        ///
        /// # Safety
        /// `p` is null or a live block of this module.
        pub(crate) unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
            if p.is_null() {
                return zeroed(n);
            }
            // SAFETY: p is live (contract).
            let (_, len) = unsafe { mapping(p) };
            if mapping_len(n) == Some(len) {
                return p;
            }
            let q = zeroed(n);
            if !q.is_null() {
                // SAFETY: p holds len - HEADER bytes and q at least n; two
                // distinct mappings; p is given up after the copy.
                unsafe {
                    core::ptr::copy_nonoverlapping(p, q, (len - HEADER).min(n));
                    free(p);
                }
            }
            q
        }

        /// # Safety
        /// `p` is null or a live block of this module, not used again.
        pub(crate) unsafe fn free(p: *mut u8) {
            if p.is_null() {
                return;
            }
            // SAFETY: p is live (contract), so base..base+len is its whole
            // mapping, which nothing uses any more.
            unsafe {
                let (base, len) = mapping(p);
                os::unmap(base, len);
            }
        }
    }

    #[cfg(miri)]
    mod imp {
        /// `calloc(1, n)`.
        pub(crate) fn zeroed(n: usize) -> *mut u8 {
            // SAFETY: no precondition.
            unsafe { libc::calloc(1, n).cast() }
        }

        /// # Safety
        /// `p` is null or a live block of this module.
        pub(crate) unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
            // SAFETY: the contract.
            unsafe { libc::realloc(p.cast(), n).cast() }
        }

        /// # Safety
        /// `p` is null or a live block of this module, not used again.
        pub(crate) unsafe fn free(p: *mut u8) {
            // SAFETY: the contract.
            unsafe { libc::free(p.cast()) }
        }
    }

    /// Zeroed bytes, null on failure.
    pub(crate) fn zeroed(n: usize) -> *mut u8 {
        imp::zeroed(n)
    }

    /// `realloc(p, n)`; null (p untouched) on failure.
    ///
    /// # Safety
    /// `p` is null or a live block from this module.
    pub(crate) unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
        // SAFETY: the contract.
        unsafe { imp::realloc(p, n) }
    }

    /// `free(p)`.
    ///
    /// # Safety
    /// `p` is null or a live block from this module, not used again.
    pub(crate) unsafe fn free(p: *mut u8) {
        // SAFETY: the contract.
        unsafe { imp::free(p) }
    }
}
