//! pymalloc's geometry: size classes, pools and arenas.
//!
//! The defaults are CPython 3.11's on 64-bit targets (`Objects/obmalloc.c` with
//! `USE_LARGE_ARENAS` and `USE_LARGE_POOLS`): requests of 1 to 512 bytes are
//! rounded up to a multiple of 16 and served from one of 32 size classes;
//! blocks of one class live in 16 KiB pools; pools are carved from 1 MiB
//! arenas.
//!
//! Building with the `legacy-geometry` feature selects the older table that the
//! seed document describes (and that CPython used before 3.8 on 64-bit): an
//! 8-byte step, 64 classes, 4 KiB pools and 256 KiB arenas.
//!
//! ```
//! use pymalloc::geometry::*;
//! assert_eq!(SMALL_REQUEST_THRESHOLD, 512);
//! assert_eq!(size_class(1), Some(0));
//! assert_eq!(size_class(SMALL_REQUEST_THRESHOLD), Some(NB_SMALL_SIZE_CLASSES - 1));
//! assert_eq!(size_class(0), None); // zero-byte requests go to the raw allocator
//! assert_eq!(size_class(513), None); // so do large ones
//! // 17 bytes round up to the next multiple of the step.
//! assert_eq!(class_size(size_class(17).unwrap()), round_up(17, ALIGNMENT));
//! ```

/// log2 of [`ALIGNMENT`].
#[cfg(not(feature = "legacy-geometry"))]
pub const ALIGNMENT_SHIFT: u32 = 4;
/// log2 of [`ALIGNMENT`].
#[cfg(feature = "legacy-geometry")]
pub const ALIGNMENT_SHIFT: u32 = 3;

/// Alignment of every block pymalloc hands out, and the step between size
/// classes (16 bytes by default, 8 with `legacy-geometry`).
pub const ALIGNMENT: usize = 1 << ALIGNMENT_SHIFT;

/// Requests of at most this many bytes are served by pymalloc; larger ones go
/// to the raw domain.
pub const SMALL_REQUEST_THRESHOLD: usize = 512;

/// Number of size classes: class `i` holds blocks of `(i + 1) * ALIGNMENT`
/// bytes.
pub const NB_SMALL_SIZE_CLASSES: usize = SMALL_REQUEST_THRESHOLD / ALIGNMENT;

/// log2 of [`ARENA_SIZE`].
#[cfg(not(feature = "legacy-geometry"))]
pub const ARENA_BITS: u32 = 20;
/// log2 of [`ARENA_SIZE`].
#[cfg(feature = "legacy-geometry")]
pub const ARENA_BITS: u32 = 18;

/// Bytes in one arena (1 MiB by default, 256 KiB with `legacy-geometry`).
pub const ARENA_SIZE: usize = 1 << ARENA_BITS;
/// `ARENA_SIZE - 1`.
pub const ARENA_SIZE_MASK: usize = ARENA_SIZE - 1;

/// log2 of [`POOL_SIZE`].
#[cfg(not(feature = "legacy-geometry"))]
pub const POOL_BITS: u32 = 14;
/// log2 of [`POOL_SIZE`].
#[cfg(feature = "legacy-geometry")]
pub const POOL_BITS: u32 = 12;

/// Bytes in one pool (16 KiB by default, 4 KiB with `legacy-geometry`).
pub const POOL_SIZE: usize = 1 << POOL_BITS;
/// `POOL_SIZE - 1`.
pub const POOL_SIZE_MASK: usize = POOL_SIZE - 1;

/// The smallest page size, for layouts decided at compile time: what a
/// block touches, and where a pool carves at once. A larger page only
/// makes these more cautious than they need be.
pub const MIN_PAGE: usize = 4096;

/// Pools in an arena whose base is pool-aligned.
pub const MAX_POOLS_IN_ARENA: usize = ARENA_SIZE / POOL_SIZE;

/// Bytes at the start of every pool before its first block (CPython's
/// `POOL_OVERHEAD`, where CPython keeps the pool's header): four 32-bit
/// fields and four pointers, rounded up to [`ALIGNMENT`]; 48 on 64-bit.
/// Pools of the arena region keep their header in the header table and
/// leave these bytes unused, so that their blocks sit where CPython's do.
/// The pool header is checked against this at compile time where it is
/// declared.
pub const POOL_OVERHEAD: usize = round_up(4 * 4 + 4 * core::mem::size_of::<usize>(), ALIGNMENT);

const _: () = {
    assert!(ALIGNMENT <= SMALL_REQUEST_THRESHOLD && SMALL_REQUEST_THRESHOLD <= 512);
    assert!(SMALL_REQUEST_THRESHOLD % ALIGNMENT == 0);
    assert!(MAX_POOLS_IN_ARENA * POOL_SIZE == ARENA_SIZE);
    // Every pool must hold at least two blocks of the largest class: the
    // free path relies on a pool that was full not becoming empty at once.
    assert!(num_blocks(NB_SMALL_SIZE_CLASSES - 1) >= 2);
    // Arena offsets are stored in the radix map as i32.
    assert!(ARENA_BITS < 32);
    #[cfg(target_pointer_width = "64")]
    assert!(POOL_OVERHEAD == 48);
};

/// Rounds `n` up to a multiple of `align` (a power of two).
pub const fn round_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

/// Bytes in a block of size class `index`.
#[inline(always)]
pub const fn class_size(index: usize) -> usize {
    (index + 1) << ALIGNMENT_SHIFT
}

/// Size class of a request of `nbytes`, or `None` when pymalloc does not
/// serve it (zero bytes, or more than [`SMALL_REQUEST_THRESHOLD`]).
#[inline(always)]
pub const fn size_class(nbytes: usize) -> Option<usize> {
    // `nbytes - 1` wraps for 0, so one comparison rejects both ends.
    let m = nbytes.wrapping_sub(1);
    if m < SMALL_REQUEST_THRESHOLD {
        Some(m >> ALIGNMENT_SHIFT)
    } else {
        None
    }
}

/// Number of blocks a pool of size class `index` holds.
pub const fn num_blocks(index: usize) -> usize {
    (POOL_SIZE - POOL_OVERHEAD) / class_size(index)
}
