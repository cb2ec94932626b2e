//! The arena region: one reserved range of address space that the default
//! arena allocator carves arenas from.
//!
//! Reserving [`REGION_SIZE`] bytes once (`PROT_NONE`, `MAP_NORESERVE`: no
//! memory, only addresses) buys two things:
//!
//! * an ownership test of one subtraction and one comparison: an address in
//!   the region can only be a pymalloc block, because the kernel never hands
//!   out addresses inside a reservation to anyone else;
//! * arenas that go back to the OS without leaving a hole: a released arena
//!   is mapped `PROT_NONE` again in place, which frees its pages at once (the
//!   process's resident size drops) and keeps the range reserved.
//!
//! If the reservation fails (a small `RLIMIT_AS`, strict overcommit) or the
//! region is full, arenas come from single mappings outside it, and the radix
//! map ([`crate::radix`]) answers for them as it does for arenas of custom
//! allocators. Under Miri there is no region.

use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::geometry::ARENA_SIZE;
use crate::sync::HeldAcrossFork;

/// Bytes the region tries to reserve (64 GiB: 65,536 default-geometry
/// arenas). Where that much address space cannot be had (a small
/// `RLIMIT_AS`, valgrind), it tries a quarter as much, down to 1 GiB.
pub(crate) const REGION_SIZE: usize = 1 << 36;
#[cfg(not(miri))]
const MIN_REGION_SIZE: usize = 1 << 30;
const SLOTS: usize = REGION_SIZE / ARENA_SIZE;

/// Base and size of the region. Before it is reserved the size is 0, so
/// `contains` is false for every address.
#[repr(C, align(16))]
struct Bounds {
    base: AtomicUsize,
    size: AtomicUsize,
}
static BOUNDS: Bounds = Bounds { base: AtomicUsize::new(0), size: AtomicUsize::new(0) };

const UNTRIED: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNTRIED);

/// Slot bookkeeping. Invariant: a slot below `next` is live (handed out)
/// exactly when its bit in `free` is clear; slots at or above `next` were
/// never used. Fixed-size, so that the allocator never allocates to manage
/// its arenas (it may be the global allocator).
struct Slots {
    next: usize,
    nfree: usize,
    /// Lowest word of `free` that may have a set bit.
    hint: usize,
    free: [u64; SLOTS / 64],
}

impl Slots {
    fn take(&mut self) -> Option<usize> {
        if self.nfree > 0 {
            for w in self.hint..self.free.len() {
                if self.free[w] != 0 {
                    let b = self.free[w].trailing_zeros() as usize;
                    self.free[w] &= !(1 << b);
                    self.nfree -= 1;
                    self.hint = w;
                    return Some(w * 64 + b);
                }
            }
        }
        if self.next < BOUNDS.size.load(Ordering::Relaxed) / ARENA_SIZE {
            self.next += 1;
            return Some(self.next - 1);
        }
        None
    }

    fn give(&mut self, slot: usize) {
        let (w, b) = (slot / 64, slot % 64);
        debug_assert!(self.free[w] & (1 << b) == 0, "slot freed twice");
        self.free[w] |= 1 << b;
        self.nfree += 1;
        self.hint = self.hint.min(w);
    }
}

static SLOTS_LOCK: Mutex<Slots> = Mutex::new(Slots { next: 0, nfree: 0, hint: 0, free: [0; SLOTS / 64] });
static SLOTS_HELD: HeldAcrossFork<std::sync::MutexGuard<'static, Slots>> = HeldAcrossFork::new();

/// Takes the slot table's lock before `fork` (see `crate::fork`).
///
/// # Safety
/// Called by the fork prepare handler, then [`fork_release`] once.
pub(crate) unsafe fn fork_acquire() {
    // SAFETY: the prepare handler (our contract).
    unsafe { SLOTS_HELD.keep(SLOTS_LOCK.lock().unwrap_or_else(|e| e.into_inner())) };
}

/// Releases what [`fork_acquire`] took.
///
/// # Safety
/// Called by the fork parent or child handler after `fork_acquire`.
pub(crate) unsafe fn fork_release() {
    // SAFETY: as for fork_acquire.
    unsafe { SLOTS_HELD.drop_guard() };
}

/// The heap that owns each arena of the region (its owner tag, see
/// `Heap::block_owner`), written when the heap takes the arena, before any of
/// its blocks is handed out; a block reaches another thread only through
/// some synchronisation after that, so relaxed loads see the right owner.
/// Zeroed statics: pages of the table that no arena uses are never touched.
static OWNERS: [AtomicPtr<()>; SLOTS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; SLOTS];

/// Records the owner of the region's arena at `arena`: where frees of its
/// blocks from other threads are sent.
///
/// # Safety
/// `arena` is the base of an arena [`alloc_arena`] returned that the caller
/// owns and has not freed, and `owner` is the tag its heap stamps on its
/// pools: every later free of a block of the arena is routed by it.
pub(crate) unsafe fn set_owner(arena: *mut u8, owner: *const ()) {
    let off = arena.addr().wrapping_sub(BOUNDS.base.load(Ordering::Relaxed));
    debug_assert!(off < BOUNDS.size.load(Ordering::Relaxed) && off % ARENA_SIZE == 0);
    // SAFETY: an arena of the region lies at off < size <= REGION_SIZE (the
    // contract), so the slot is in the table.
    unsafe { OWNERS.get_unchecked(off / ARENA_SIZE) }.store(owner.cast_mut(), Ordering::Relaxed);
}

/// The owner recorded for the arena holding `p`, if `p` lies in the region.
#[inline(always)]
pub(crate) fn owner(p: *const u8) -> Option<*const ()> {
    let off = p.addr().wrapping_sub(BOUNDS.base.load(Ordering::Relaxed));
    if off < BOUNDS.size.load(Ordering::Relaxed) {
        // SAFETY: off < size <= REGION_SIZE, so the slot is in the table.
        Some(unsafe { OWNERS.get_unchecked(off / ARENA_SIZE) }.load(Ordering::Relaxed).cast_const())
    } else {
        None
    }
}

/// True if `p` lies in the region. For the address of a live block this is
/// exactly "the block is in an arena of the region".
#[inline(always)]
pub(crate) fn contains(p: *const u8) -> bool {
    p.addr().wrapping_sub(BOUNDS.base.load(Ordering::Relaxed)) < BOUNDS.size.load(Ordering::Relaxed)
}

#[cfg(not(miri))]
fn reserve() -> bool {
    let mut size = REGION_SIZE;
    while size >= MIN_REGION_SIZE {
        if reserve_size(size) {
            return true;
        }
        size /= 4;
    }
    false
}

#[cfg(not(miri))]
fn reserve_size(region: usize) -> bool {
    // Reserve one arena more than needed, to align the start.
    let len = region + ARENA_SIZE;
    // SAFETY: a fresh anonymous reservation at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    // Arenas are later reached from plain addresses in the region.
    let _ = p.expose_provenance();
    let start = p.addr();
    let base = (start + ARENA_SIZE - 1) & !(ARENA_SIZE - 1);
    // SAFETY: trimming the unaligned head and the tail of our own reservation.
    unsafe {
        if base > start {
            libc::munmap(p, base - start);
        }
        let tail = start + len - (base + region);
        if tail > 0 {
            libc::munmap(p.cast::<u8>().add(base - start + region).cast(), tail);
        }
    }
    // Published with the Release store of STATE (readers of the bounds only
    // ever compare addresses they were handed, which came after it).
    BOUNDS.base.store(base, Ordering::Relaxed);
    BOUNDS.size.store(region, Ordering::Relaxed);
    true
}

#[cfg(miri)]
fn reserve() -> bool {
    false
}

/// Reserves the region on first use. False if it cannot be had.
fn ready() -> bool {
    match STATE.load(Ordering::Acquire) {
        READY => true,
        FAILED => false,
        _ => {
            let slots = SLOTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            // Re-check under the lock: another thread may have reserved it.
            match STATE.load(Ordering::Acquire) {
                READY => return true,
                FAILED => return false,
                _ => {}
            }
            let ok = reserve();
            drop(slots);
            STATE.store(if ok { READY } else { FAILED }, Ordering::Release);
            ok
        }
    }
}

/// One arena from the region, readable and writable and zeroed; null if
/// the region cannot be had or is full.
pub(crate) fn alloc_arena() -> *mut u8 {
    if !ready() {
        return core::ptr::null_mut();
    }
    let Some(slot) = SLOTS_LOCK.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return core::ptr::null_mut();
    };
    let base = BOUNDS.base.load(Ordering::Relaxed);
    let p = core::ptr::with_exposed_provenance_mut::<u8>(base + slot * ARENA_SIZE);
    if commit(p) {
        p
    } else {
        release_slot(slot);
        core::ptr::null_mut()
    }
}

/// Gives an arena of the region back: its pages go to the OS at once, its
/// addresses stay reserved.
///
/// # Safety
/// `p` came from [`alloc_arena`] and nothing uses it any more.
pub(crate) unsafe fn free_arena(p: *mut u8) {
    let base = BOUNDS.base.load(Ordering::Relaxed);
    debug_assert!(contains(p) && (p.addr() - base) % ARENA_SIZE == 0);
    // SAFETY: the caller gives the arena up.
    unsafe { decommit(p, ARENA_SIZE) };
    release_slot((p.addr() - base) / ARENA_SIZE);
}

fn release_slot(slot: usize) {
    SLOTS_LOCK.lock().unwrap_or_else(|e| e.into_inner()).give(slot);
}

#[cfg(not(miri))]
fn commit(p: *mut u8) -> bool {
    // SAFETY: p..p+ARENA_SIZE is a slot of our reservation that nobody uses.
    unsafe { libc::mprotect(p.cast(), ARENA_SIZE, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

#[cfg(miri)]
fn commit(_: *mut u8) -> bool {
    false
}

/// Replaces `p..p+len` by a fresh inaccessible reservation: the pages are
/// freed now, the addresses stay ours.
///
/// # Safety
/// The range lies in the region and holds nothing anyone uses.
#[cfg(not(miri))]
unsafe fn decommit(p: *mut u8, len: usize) {
    // SAFETY: MAP_FIXED over our own reservation.
    let r = unsafe {
        libc::mmap(
            p.cast(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    debug_assert_ne!(r, libc::MAP_FAILED);
}

#[cfg(miri)]
unsafe fn decommit(_: *mut u8, _: usize) {}
