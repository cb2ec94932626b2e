//! The arena map: an exact, O(1) answer to "did pymalloc allocate this
//! address?" for any address outside the arena region.
//!
//! This is CPython 3.10+'s radix tree (`arena_map_*` in `obmalloc.c`). A
//! 64-bit address is split, from the top, into 15 bits indexing the root, 15
//! bits indexing a mid node, 14 bits indexing a bottom node, and the 20 bits of
//! an offset inside an "ideal" (arena-aligned) arena slot. Each bottom entry
//! records which part of its ideal slot is covered by a live arena:
//!
//! * `tail_hi`: an arena starts in this slot at offset `tail_hi` and runs past
//!   its end (`-1` when the arena starts exactly at the slot's start);
//! * `tail_lo`: an arena that started in the previous slot ends in this one,
//!   just below offset `tail_lo`.
//!
//! An address with offset `t` in its slot is inside an arena exactly when
//! `t < tail_lo`, or `t >= tail_hi` and `tail_hi != 0`.
//!
//! It holds the arenas outside the arena region ([`crate::region`]), which
//! knows its own (`ownership.rs`).
//!
//! Unlike CPython's, this map is shared by every [`Heap`](crate::Heap) in the
//! process and needs no lock: node pointers are published with a
//! compare-and-swap and never freed, and each coverage field is written only by
//! the heap owning the one arena that can occupy it. A reader only asks about
//! addresses it was handed, so the arena covering them (if any) is live and its
//! marks happened before the address reached the reader.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use crate::geometry::{ARENA_BITS, ARENA_SIZE, ARENA_SIZE_MASK};

const POINTER_BITS: u32 = usize::BITS;
#[cfg(target_pointer_width = "64")]
// CPython: (ADDRESS_BITS - ARENA_BITS + 2) / 3, a rounded-up third.
const INTERIOR_BITS: u32 = (POINTER_BITS - ARENA_BITS).div_ceil(3);
#[cfg(not(target_pointer_width = "64"))]
const INTERIOR_BITS: u32 = 0;

const MAP_TOP_BITS: u32 = INTERIOR_BITS;
const MAP_MID_BITS: u32 = INTERIOR_BITS;
const MAP_BOT_BITS: u32 = POINTER_BITS - ARENA_BITS - 2 * INTERIOR_BITS;
const MAP_TOP_LENGTH: usize = 1 << MAP_TOP_BITS;
const MAP_MID_LENGTH: usize = 1 << MAP_MID_BITS;
const MAP_BOT_LENGTH: usize = 1 << MAP_BOT_BITS;
const MAP_BOT_SHIFT: u32 = ARENA_BITS;
const MAP_MID_SHIFT: u32 = MAP_BOT_BITS + MAP_BOT_SHIFT;
const MAP_TOP_SHIFT: u32 = MAP_MID_BITS + MAP_MID_SHIFT;

#[inline(always)]
fn top_index(a: usize) -> usize {
    // The shift is taken modulo the width so a 32-bit build (one level) works.
    a.checked_shr(MAP_TOP_SHIFT).unwrap_or(0) & (MAP_TOP_LENGTH - 1)
}
#[inline(always)]
fn mid_index(a: usize) -> usize {
    a.checked_shr(MAP_MID_SHIFT).unwrap_or(0) & (MAP_MID_LENGTH - 1)
}
#[inline(always)]
fn bot_index(a: usize) -> usize {
    (a >> MAP_BOT_SHIFT) & (MAP_BOT_LENGTH - 1)
}

/// One bottom entry (CPython's `arena_coverage_t`); both fields are read
/// together, so they sit side by side.
#[repr(C)]
struct Coverage {
    tail_hi: AtomicI32,
    tail_lo: AtomicI32,
}

/// Bottom node. Invariant: allocated zeroed (all-zero is "nothing covered").
#[repr(C)]
struct BotNode {
    arenas: [Coverage; MAP_BOT_LENGTH],
}

/// Mid node. Invariant: allocated zeroed (all-zero is "no bottom nodes").
#[repr(C)]
struct MidNode {
    ptrs: [AtomicPtr<BotNode>; MAP_MID_LENGTH],
}

/// The root node: `MAP_TOP_LENGTH` mid-node pointers, each only ever
/// accessed atomically (through [`RootNode::slot`]) while the map is shared.
///
/// It is one `UnsafeCell` rather than an array of `AtomicPtr` for Miri's
/// sake: every `&ArenaMap` (each ownership test) makes Stacked Borrows look
/// for interior mutability inside the referent, element by element in an
/// array of atomics (32,768 of them here, 66 ms per call), but at once for
/// a single cell. The machine code is the same.
#[repr(transparent)]
struct RootNode(UnsafeCell<[*mut MidNode; MAP_TOP_LENGTH]>);

impl RootNode {
    /// The root entry `i` (`i < MAP_TOP_LENGTH`), as the atomic it is.
    #[inline(always)]
    fn slot(&self, i: usize) -> &AtomicPtr<MidNode> {
        debug_assert!(i < MAP_TOP_LENGTH);
        // SAFETY: i is in bounds; the entry is aligned for AtomicPtr (same
        // layout as *mut) and lives as long as `self`; while the map is
        // shared every access to an entry goes through this atomic view
        // (the only non-atomic access is `get_mut` under `&mut`).
        unsafe { AtomicPtr::from_ptr(self.0.get().cast::<*mut MidNode>().add(i)) }
    }
}

/// The radix map over the address space. See the module documentation.
///
/// Invariants: a non-null node pointer, once published, never changes and its
/// node is never freed; nodes come zeroed from `calloc`.
pub struct ArenaMap {
    root: RootNode,
    mid_count: AtomicUsize,
    bot_count: AtomicUsize,
}

// SAFETY: the root's entries are only accessed atomically while shared
// (RootNode::slot); everything else is atomics.
unsafe impl Sync for ArenaMap {}
// SAFETY: the nodes the map points to are owned by it (freed on drop) and
// not tied to a thread.
unsafe impl Send for ArenaMap {}

/// The process-wide map every heap uses.
pub static ARENA_MAP: ArenaMap = ArenaMap::new();

/// Sizes and counts of the map's nodes, for the statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapUsage {
    /// Mid nodes allocated.
    pub mid_nodes: usize,
    /// Bottom nodes allocated.
    pub bot_nodes: usize,
    /// Bytes of the root node (static).
    pub root_bytes: usize,
    /// Bytes of one mid node.
    pub mid_node_bytes: usize,
    /// Bytes of one bottom node.
    pub bot_node_bytes: usize,
}

// The nodes come from the C library's own entry points (`raw::meta`), which
// never re-enter a heap whose lock may be held here, even when pymalloc is
// the process's `malloc` (the preload library) and serves every size.

/// Allocates a zeroed node of `T` (all-zero is a valid empty node).
fn new_node<T>() -> *mut T {
    crate::raw::meta::zeroed(core::mem::size_of::<T>()).cast()
}

impl ArenaMap {
    /// An empty map.
    pub const fn new() -> ArenaMap {
        ArenaMap {
            root: RootNode(UnsafeCell::new([ptr::null_mut(); MAP_TOP_LENGTH])),
            mid_count: AtomicUsize::new(0),
            bot_count: AtomicUsize::new(0),
        }
    }

    /// The bottom node for address `a`, creating missing nodes if `create`.
    /// Null if it does not exist (or cannot be allocated).
    fn bottom(&self, a: usize, create: bool) -> *mut BotNode {
        let slot = self.root.slot(top_index(a));
        let mut mid = slot.load(Ordering::Acquire);
        if mid.is_null() {
            if !create {
                return ptr::null_mut();
            }
            mid = publish(slot, new_node::<MidNode>(), &self.mid_count);
            if mid.is_null() {
                return mid.cast();
            }
        }
        // SAFETY: published node pointers stay valid forever (invariant).
        let slot = unsafe { &(*mid).ptrs[mid_index(a)] };
        let bot = slot.load(Ordering::Acquire);
        if !bot.is_null() || !create {
            return bot;
        }
        publish(slot, new_node::<BotNode>(), &self.bot_count)
    }

    /// Records that `base..base+ARENA_SIZE` is (`used`) or is no longer
    /// (`!used`) a pymalloc arena. Returns false if a node could not be
    /// allocated, in which case nothing was recorded.
    ///
    /// The caller must own the arena: only the owner of an arena writes the
    /// entries it covers.
    pub(crate) fn mark(&self, base: usize, used: bool) -> bool {
        let hi_node = self.bottom(base, used);
        if hi_node.is_null() {
            debug_assert!(used, "unmarking an arena that was never marked");
            return false;
        }
        let i = bot_index(base);
        let tail = (base & ARENA_SIZE_MASK) as i32;
        // SAFETY: published nodes are valid forever.
        let hi = unsafe { &(*hi_node).arenas[i] };
        if tail == 0 {
            // The arena fills its ideal slot exactly.
            hi.tail_hi.store(if used { -1 } else { 0 }, Ordering::Release);
            return true;
        }
        hi.tail_hi.store(if used { tail } else { 0 }, Ordering::Release);
        // The arena also covers the start of the next slot, which may live
        // under other top and mid entries.
        let next = base.wrapping_add(ARENA_SIZE);
        debug_assert!(next > base);
        let lo_node = self.bottom(next, used);
        if lo_node.is_null() {
            debug_assert!(used);
            hi.tail_hi.store(0, Ordering::Release);
            return false;
        }
        // SAFETY: lo_node is a published bottom node, and published node
        // pointers stay valid forever (invariant).
        let lo = unsafe { &(*lo_node).arenas[bot_index(next)] };
        lo.tail_lo.store(if used { tail } else { 0 }, Ordering::Release);
        true
    }

    /// True if `p` lies inside a live pymalloc arena outside the arena
    /// region (the region's arenas are not marked here; [`crate::owns`]
    /// answers for every arena).
    #[inline(always)]
    pub fn contains(&self, p: *const u8) -> bool {
        let a = p.addr();
        let mid = self.root.slot(top_index(a)).load(Ordering::Acquire);
        if mid.is_null() {
            return false;
        }
        // SAFETY: published node pointers stay valid forever (invariant).
        let bot = unsafe { (*mid).ptrs[mid_index(a)].load(Ordering::Acquire) };
        if bot.is_null() {
            return false;
        }
        // SAFETY: bot is a published node pointer, valid forever (invariant).
        let c = unsafe { &(*bot).arenas[bot_index(a)] };
        let hi = c.tail_hi.load(Ordering::Acquire);
        let lo = c.tail_lo.load(Ordering::Acquire);
        let tail = (a & ARENA_SIZE_MASK) as i32;
        tail < lo || (tail >= hi && hi != 0)
    }

    /// Node counts and sizes, for the statistics.
    pub fn usage(&self) -> MapUsage {
        MapUsage {
            mid_nodes: self.mid_count.load(Ordering::Relaxed),
            bot_nodes: self.bot_count.load(Ordering::Relaxed),
            root_bytes: core::mem::size_of::<RootNode>(),
            mid_node_bytes: core::mem::size_of::<MidNode>(),
            bot_node_bytes: core::mem::size_of::<BotNode>(),
        }
    }
}

impl Default for ArenaMap {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ArenaMap {
    /// Frees the nodes of a map that is going away (the process-wide map is
    /// a static and never drops).
    fn drop(&mut self) {
        for &mut mid in self.root.0.get_mut() {
            if mid.is_null() {
                continue;
            }
            // SAFETY: `&mut self` means no other user; every published node
            // came from calloc and is freed once here.
            unsafe {
                for bot in &mut (*mid).ptrs {
                    crate::raw::meta::free((*bot.get_mut()).cast());
                }
                crate::raw::meta::free(mid.cast());
            }
        }
    }
}

/// Installs `node` in `slot` unless another thread got there first; returns
/// the node now in the slot (null only if `node` is null and the slot empty).
fn publish<T>(slot: &AtomicPtr<T>, node: *mut T, count: &AtomicUsize) -> *mut T {
    if node.is_null() {
        return slot.load(Ordering::Acquire);
    }
    match slot.compare_exchange(ptr::null_mut(), node, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            count.fetch_add(1, Ordering::Relaxed);
            node
        }
        Err(winner) => {
            // SAFETY: `node` came from calloc and was never published.
            unsafe { crate::raw::meta::free(node.cast()) };
            winner
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_cpython() {
        #[cfg(all(target_pointer_width = "64", not(feature = "legacy-geometry")))]
        {
            assert_eq!((MAP_TOP_BITS, MAP_MID_BITS, MAP_BOT_BITS), (15, 15, 14));
            let u = ARENA_MAP.usage();
            assert_eq!(u.root_bytes, 262_144);
            assert_eq!(u.mid_node_bytes, 262_144);
            assert_eq!(u.bot_node_bytes, 131_072);
        }
        assert_eq!(MAP_TOP_BITS + MAP_MID_BITS + MAP_BOT_BITS + ARENA_BITS, POINTER_BITS);
    }

    // A private map, so that marks made here cannot disturb other tests.
    fn private_map() -> Box<ArenaMap> {
        // SAFETY: all-zero bytes are an empty map (null pointers, zero counts).
        unsafe { Box::<ArenaMap>::new_zeroed().assume_init() }
    }

    #[test]
    fn ideal_and_unaligned_arenas() {
        let map = private_map();
        let base = 0x7000_0000_0000usize; // arena-aligned
        assert!(map.mark(base, true));
        let p = |a: usize| core::ptr::without_provenance::<u8>(a);
        assert!(map.contains(p(base)));
        assert!(map.contains(p(base + ARENA_SIZE - 1)));
        assert!(!map.contains(p(base + ARENA_SIZE)));
        assert!(!map.contains(p(base - 1)));

        let odd = base + 8 * ARENA_SIZE + 0x3000; // not aligned: spans two slots
        assert!(map.mark(odd, true));
        assert!(!map.contains(p(odd - 1)));
        assert!(map.contains(p(odd)));
        assert!(map.contains(p(odd + ARENA_SIZE - 1)));
        assert!(!map.contains(p(odd + ARENA_SIZE)));

        // An arena ending where the next starts, both in one slot.
        let next = odd + ARENA_SIZE;
        assert!(map.mark(next, true));
        assert!(map.contains(p(next - 1)) && map.contains(p(next)));
        assert!(map.mark(odd, false));
        assert!(!map.contains(p(odd)) && !map.contains(p(next - 1)));
        assert!(map.contains(p(next)) && map.contains(p(next + ARENA_SIZE - 1)));
        assert!(map.mark(next, false));
        assert!(map.mark(base, false));
        assert!(!map.contains(p(base)) && !map.contains(p(next)));

        // Addresses whose nodes were never made.
        assert!(!map.contains(core::ptr::null()));
        assert!(!map.contains(p(usize::MAX)));
        let u = map.usage();
        assert!(u.mid_nodes >= 1 && u.bot_nodes >= 1);
    }

    #[test]
    fn concurrent_marks_in_one_node() {
        let owned = private_map();
        let map: &ArenaMap = &owned;
        std::thread::scope(|s| {
            for t in 0..4usize {
                s.spawn(move || {
                    let iters = if cfg!(miri) { 5 } else { 2000 };
                    for i in 0..iters {
                        let base = 0x5000_0000_0000usize + (t * 64 + i % 64) * ARENA_SIZE;
                        assert!(map.mark(base, true));
                        assert!(map.contains(core::ptr::without_provenance(base)));
                        assert!(map.mark(base, false));
                        assert!(!map.contains(core::ptr::without_provenance(base)));
                    }
                });
            }
        });
        // All four threads shared one mid and one bottom node.
        assert_eq!(map.usage().mid_nodes, 1);
        assert_eq!(map.usage().bot_nodes, 1);
    }
}
