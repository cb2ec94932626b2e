//! Shared by the integration tests that change process-wide state.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard, PoisonError};

use pymalloc::config::{self, AllocatorName};

static LOCK: Mutex<()> = Mutex::new(());

/// `full` natively and `miri` under Miri: how much a test does, less where
/// Miri would take minutes (a call into the heap costs it milliseconds;
/// ARCHITECTURE.md says why).
pub fn full_or_miri<T>(full: T, miri: T) -> T {
    if cfg!(miri) {
        miri
    } else {
        full
    }
}

/// Exclusive use of the domains for one test; the default configuration is
/// back when it drops.
pub struct Exclusive(#[allow(dead_code)] MutexGuard<'static, ()>);

pub fn exclusive() -> Exclusive {
    let g = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: the lock keeps every other test of this binary off the domains.
    unsafe { config::setup(AllocatorName::Pymalloc).unwrap() };
    Exclusive(g)
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        pymalloc::debug::set_lock_check(None);
        // SAFETY: still holding the lock.
        unsafe { config::setup(AllocatorName::Pymalloc).unwrap() };
    }
}

/// The configurations a semantic test runs under.
pub const CONFIGS: [AllocatorName; 6] = [
    AllocatorName::Pymalloc,
    AllocatorName::Malloc,
    AllocatorName::PymallocDebug,
    AllocatorName::MallocDebug,
    AllocatorName::PymallocAll,
    AllocatorName::PymallocAllDebug,
];

#[cfg(not(miri))]
unsafe extern "C" fn mmap_arena(_: *mut std::ffi::c_void, size: usize) -> *mut std::ffi::c_void {
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p
    }
}

#[cfg(not(miri))]
unsafe extern "C" fn munmap_arena(_: *mut std::ffi::c_void, p: *mut std::ffi::c_void, size: usize) {
    // SAFETY: a mapping of mmap_arena, given back once.
    unsafe { libc::munmap(p, size) };
}

/// A heap whose arenas are plain `mmap` mappings, outside the arena region:
/// its pools keep their headers at their start, as CPython's do
/// (src/pool_table.rs).
#[cfg(not(miri))]
pub fn heap_outside_the_region() -> pymalloc::Heap {
    let mut heap = pymalloc::Heap::new();
    // SAFETY: the heap has no arena yet; the functions map and unmap arenas
    // of the size asked, from any thread.
    unsafe {
        heap.set_arena_allocator(pymalloc::ArenaAllocator {
            ctx: std::ptr::null_mut(),
            alloc: mmap_arena,
            free: munmap_arena,
        })
    };
    heap
}

/// The process's address space in use, in bytes (`VmSize`).
pub fn vm_size() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

/// Inaccessible mappings of at least 1 GiB: the regions' reservation.
pub fn reservations() -> Vec<(usize, usize, String)> {
    mappings().into_iter().filter(|(a, b, perms)| perms.starts_with("---") && b - a >= 1 << 30).collect()
}

/// The limit a run of the tests started with (`ulimit -v` may have set
/// one, hard limit included, which an unprivileged process cannot raise).
pub fn initial_limit() -> libc::rlimit {
    static INITIAL: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();
    *INITIAL.get_or_init(|| {
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) }, 0);
        rl
    })
}

/// Before any region exists (checked), limits the address space to what
/// is in use, room for the regions' smallest reservation (2 GiB), and
/// `extra` bytes more.
pub fn limit_to_the_smallest_reservation_and(extra: usize) {
    assert!(reservations().is_empty(), "no region before: {:?}", reservations());
    set_limit(Some(vm_size() + (2 << 30) + extra));
}

/// Sets the soft `RLIMIT_AS` to `bytes` (at most the hard limit), or puts
/// back the one the run started with.
pub fn set_limit(bytes: Option<usize>) {
    let initial = initial_limit();
    let cur = bytes.map_or(initial.rlim_cur, |b| (b as libc::rlim_t).min(initial.rlim_max));
    let rl = libc::rlimit { rlim_cur: cur, rlim_max: initial.rlim_max };
    // SAFETY: plain setrlimit on our own process.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
}

/// The address ranges of /proc/self/maps, with their permissions.
pub fn mappings() -> Vec<(usize, usize, String)> {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            let (a, b) = w.next().unwrap().split_once('-').unwrap();
            let perms = w.next().unwrap().to_owned();
            (usize::from_str_radix(a, 16).unwrap(), usize::from_str_radix(b, 16).unwrap(), perms)
        })
        .collect()
}

/// The OS page size.
pub fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// True if the page at `addr` (page-aligned, of our own mapping) is
/// resident.
pub fn resident(addr: usize) -> bool {
    let mut v = [0u8; 1];
    // SAFETY: a page-aligned page of our own mapping; v has a byte for it.
    let rc = unsafe { libc::mincore(addr as *mut libc::c_void, page(), v.as_mut_ptr()) };
    assert_eq!(rc, 0);
    v[0] & 1 != 0
}

/// True if the address space has no room for the arena and segment regions
/// (a small `RLIMIT_AS`, `ulimit -v`), after checking what that means for a
/// test of them to look at: the span heaps serve no size (the every-size
/// front's requests above 512 bytes go to its fallback) and hold nothing.
/// A test of the regions' own behaviour returns when this is true.
pub fn without_regions() -> bool {
    use pymalloc::every_size;
    if pymalloc::regions_reserved() {
        return false;
    }
    for n in [513usize, 40_000, 4 << 20] {
        assert!(every_size::alloc(n, 16, false).is_null(), "{n} bytes from a span heap without a region");
        let p = every_size::malloc_with::<pymalloc::LibcFallback>(n);
        assert!(!p.is_null() && !every_size::owns(p), "{n} bytes through the fallback");
        // SAFETY: a live block of the front just taken, not used again.
        unsafe { every_size::free_with::<pymalloc::LibcFallback>(p) };
    }
    let st = every_size::stats();
    assert_eq!((st.segments, st.huge_kept_bytes), (0, 0), "{st:?}");
    true
}

/// Whether every byte of `bytes` is `v`. It compares 64-byte chunks (a
/// `memcmp`), not byte by byte: Miri runs a byte loop about a hundred times
/// slower, and these checks were most of some tests' time there.
pub fn all_bytes(bytes: &[u8], v: u8) -> bool {
    const N: usize = 64;
    let pattern = [v; N];
    bytes.chunks(N).all(|c| c == &pattern[..c.len()])
}

/// A huge block of `every_size` that fills exactly `slots` slots of 1 MiB
/// (its header takes 64 bytes), not zeroed.
pub fn huge_block(slots: usize) -> *mut u8 {
    let p = pymalloc::every_size::alloc((slots << 20) - 64, 16, false);
    assert!(!p.is_null());
    p
}

/// Frees a block of `every_size`.
pub fn free_every_size(p: *mut u8) {
    // SAFETY: the callers pass live blocks of every_size, not used again.
    unsafe { pymalloc::every_size::free(p) };
}

/// Bytes of freed huge blocks' slots kept with their pages.
pub fn kept_huge_bytes() -> usize {
    pymalloc::every_size::stats().huge_kept_bytes
}
