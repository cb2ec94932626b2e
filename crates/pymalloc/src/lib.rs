//! # pymalloc
//!
//! CPython's memory manager in Rust: the raw allocator, pymalloc (size
//! classes, pools, arenas, the radix map that tells which addresses are its
//! own), the three allocator domains with swappable and hookable allocators,
//! the debug hooks, and statistics laid out like `sys._debugmallocstats()`.
//!
//! The layers, bottom up, and where each lives:
//!
//! | layer | module | CPython |
//! |---|---|---|
//! | OS pages | [`os`], [`arena_alloc`] | `PyObjectArenaAllocator`, `_PyObject_ArenaMmap` |
//! | raw allocator | [`raw`] | `_PyMem_RawMalloc`, `MALLOC_ALLOC` |
//! | geometry | [`geometry`] | `ALIGNMENT`, `POOL_SIZE`, `ARENA_SIZE`, ... |
//! | arena map | [`radix`] | `arena_map_*`, `address_in_range` |
//! | pools, heap | `pool`, [`heap`] | `pool_header`, `arena_object`, `usedpools`, `pymalloc_alloc` |
//! | shared heap | [`locked`] | (the GIL) |
//! | domains | [`domain`] | `PyMem_GetAllocator`, `PyMem_SetAllocator`, `PyMem_Malloc`, ... |
//! | debug hooks | [`debug`] | `PyMem_SetupDebugHooks`, `_PyMem_DebugRawMalloc`, ... |
//! | configuration | [`config`] | `PYTHONMALLOC`, `PYTHONMALLOCSTATS` |
//! | statistics | [`stats`] | `_PyObject_DebugMallocStats` |
//! | Rust allocator | [`global`] | — |
//!
//! ## Three ways in
//!
//! A [`Heap`] value, for code that owns its heap:
//!
//! ```
//! let mut heap = pymalloc::Heap::new();
//! let p = heap.malloc(48);
//! unsafe { heap.free(p) };
//! ```
//!
//! The domains, as CPython's C API has them:
//!
//! ```
//! use pymalloc::Domain;
//! let p = Domain::Obj.malloc(48);
//! unsafe { Domain::Obj.free(p) };
//! ```
//!
//! The Rust global allocator, [`PyMalloc`].
//!
//! ## Build options
//!
//! The feature `legacy-geometry` switches to the seed document's older table
//! (8-byte step, 64 size classes, 4 KiB pools, 256 KiB arenas).

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod arena_alloc;
mod cell_array;
pub mod config;
pub mod debug;
pub mod domain;
pub mod geometry;
pub mod global;
pub mod heap;
pub mod locked;
pub mod os;
mod pool;
pub mod radix;
pub mod raw;
pub mod region;
pub mod stats;
mod sync;
pub mod thread;

pub use arena_alloc::ArenaAllocator;
pub use domain::{gil_heap, global_heap, AllocError, Block, Domain, GilHeap, MemAllocatorEx};
pub use global::PyMalloc;
pub use heap::{owns, ArenaInfo, Heap, InvariantError, PoolState, PurgePolicy, CACHE_SLOTS};
pub use locked::LockedHeap;
pub use stats::Stats;
