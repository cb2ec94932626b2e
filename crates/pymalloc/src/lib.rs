//! # pymalloc
//!
//! CPython's memory manager in Rust: the raw allocator, pymalloc (size
//! classes, pools, arenas, the reserved regions and the radix map that tell
//! which addresses are its own), the three allocator domains with swappable
//! and hookable allocators, the debug hooks, and statistics laid out like
//! `sys._debugmallocstats()`.
//!
//! The layers, bottom up (each module imports only modules of the rows above
//! it, in the order `tests/layers.rs` declares and checks):
//!
//! | layer | modules | CPython |
//! |---|---|---|
//! | foundations | `geometry`, `sync`, `cell_array`, `allocator` | `ALIGNMENT`, `POOL_SIZE`, ..., `PyMemAllocatorEx` |
//! | OS and raw memory | `os`, [`raw`] | `_PyObject_ArenaMmap`, `_PyMem_RawMalloc` |
//! | address space | [`radix`], `region`, `ownership` | `arena_map_*`, `address_in_range` |
//! | arena allocator | [`arena_alloc`] | `PyObjectArenaAllocator` |
//! | fallback | `fallback` (the RAW slot) | `PyMem_RawMalloc` from `_PyObject_Malloc` |
//! | pools | `pool` | `pool_header` |
//! | statistics | [`stats`] | `_PyObject_DebugMallocStats` |
//! | the front | `front` | `_PyObject_Malloc/Calloc/Realloc/Free` |
//! | the heap | [`Heap`] (`heap/`) | `usedpools`, `arena_object`, `pymalloc_alloc/free` |
//! | modes | [`LockedHeap`], [`GilHeap`], `thread_heaps` + [`thread`], [`PyMalloc`] | (the GIL) |
//! | domains | [`Domain`] | `PyMem_GetAllocator`, `PyMem_SetAllocator`, `PyMem_Malloc`, ... |
//! | debug hooks | [`debug`] | `PyMem_SetupDebugHooks`, `_PyMem_DebugRawMalloc`, ... |
//! | configuration | [`config`] | `PYTHONMALLOC`, `PYTHONMALLOCSTATS` |
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
#![warn(clippy::undocumented_unsafe_blocks)]

// The import order of these modules is the table above, declared once in
// tests/layers.rs.
mod allocator;
pub mod arena_alloc;
pub mod background;
mod block_map;
mod cell_array;
mod class_stacks;
pub mod config;
pub mod debug;
mod domain;
pub mod every_size;
mod fallback;
pub mod fork;
mod front;
mod front_cache;
pub mod geometry;
mod gil;
mod global;
mod heap;
mod huge;
mod locked;
mod os;
mod ownership;
mod pool;
mod pool_table;
mod prefetch;
pub mod radix;
pub mod raw;
mod region;
mod segment;
mod slot_table;
pub mod snapshot;
mod span_cache;
mod span_class;
mod span_pages;
mod spans;
pub mod stats;
mod sync;
pub mod thread;
mod thread_heaps;
mod tls_slot;
pub mod trace;
mod trace_fork;
mod trace_frames;
mod trace_memo;
mod trace_peak;
mod trace_sample;
mod trace_shadow;
#[cfg(all(target_os = "linux", not(miri)))]
mod trace_symtab;
mod trace_table;
mod trace_tally;
mod trace_thread;
mod trace_timeline;
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
mod trace_unwind;
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri))))]
#[path = "trace_unwind_none.rs"]
mod trace_unwind;
#[cfg(all(not(miri), target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
mod vdso;

pub use allocator::MemAllocatorEx;
pub use arena_alloc::ArenaAllocator;
pub use domain::{AllocError, Block, Domain};
pub use fallback::{Fallback, Libc as LibcFallback};
pub use front::usable_size;
pub use gil::{gil_heap, GilHeap};
pub use global::{PyMalloc, PyMallocSmall};
pub use heap::{
    page_bytes, ArenaInfo, ClassPinning, Heap, InvariantError, PinningBlock, PoolState, PurgePolicy, CACHE_SLOTS,
};
pub use locked::{global_heap, LockedHeap};
#[doc(hidden)]
pub use os::fail_page_moves_for_tests;
pub use ownership::owns;
pub use region::regions_reserved;
#[doc(hidden)]
pub use region::{pause_next_reservation_for_tests, reservation_paused_for_tests};
pub use spans::SpanStats;
pub use stats::Stats;
