//! OS pages: reserving and releasing address space for arenas.
//!
//! Arenas come from anonymous private mappings. [`map_aligned`] returns a
//! mapping aligned to its own size: an aligned arena loses no pool to
//! alignment and covers one slot of the radix map. Under Miri, which cannot
//! run `mmap`, the same functions are backed by the Rust heap so the rest of
//! the allocator can still be checked.

use core::ptr;

/// The size of an OS page, as the kernel reports it (4096 under Miri).
pub fn page_size() -> usize {
    #[cfg(not(miri))]
    {
        use core::sync::atomic::{AtomicUsize, Ordering};
        static PAGE: AtomicUsize = AtomicUsize::new(0);
        let p = PAGE.load(Ordering::Relaxed);
        if p != 0 {
            return p;
        }
        // From the auxiliary vector, not `sysconf`: glibc's `sysconf` lies
        // in the 64 KiB window of its text that also holds `clock_gettime`
        // (`vdso.rs`), which a program that only allocates need not map.
        // SAFETY: getauxval has no precondition.
        let p = unsafe { libc::getauxval(libc::AT_PAGESZ) } as usize;
        let p = if p.is_power_of_two() { p } else { 4096 };
        PAGE.store(p, Ordering::Relaxed);
        p
    }
    #[cfg(miri)]
    {
        4096
    }
}

/// Sleeps while `word` holds `expected`, for at most `timeout_ms` (None:
/// without limit), or until [`futex_wake`] on it. It may also return early
/// for no reason: callers look at `word` again.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32, timeout_ms: Option<u64>) {
    let ts = timeout_ms.map(|ms| libc::timespec { tv_sec: (ms / 1000) as _, tv_nsec: ((ms % 1000) * 1_000_000) as _ });
    let tsp = ts.as_ref().map_or(ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`, which lives as
    // long as the call; `tsp` is null or points to a relative timeout.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, expected, tsp);
    }
}

/// Wakes every thread sleeping in [`futex_wait`] on `word`.
pub fn futex_wake(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX);
    }
}

/// The calling thread's kernel id.
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Waits, for at most `limit`, until the kernel has taken the thread `tid`
/// of this process out of its thread group; returns whether it has. A
/// joined thread is not yet gone: the kernel wakes the joiner when it
/// clears the thread's id, before it releases the thread, and until then
/// the process's thread count (`/proc/self/stat`, which CPython reads at
/// `os.fork()`) still includes it. `tgkill` with signal 0 fails with ESRCH
/// exactly once the thread is released.
pub fn wait_thread_released(tid: i32, limit: core::time::Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        // SAFETY: signal 0 sends nothing; it only looks the thread up.
        let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Milliseconds on a monotonic clock that does not stop (the coarse clock:
/// a few nanoseconds through the vDSO, ticking every few milliseconds),
/// for the purge policy's decay. Read in the vDSO directly (`vdso.rs`).
pub fn now_ms() -> u64 {
    #[cfg(not(miri))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
    #[cfg(miri)]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    #[cfg(all(not(miri), target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
    let r = crate::vdso::clock_gettime(CLOCK, &mut t);
    // SAFETY: `t` is a valid timespec to write; the clock id is one Linux
    // knows.
    #[cfg(not(all(not(miri), target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
    let r = unsafe { libc::clock_gettime(CLOCK, &mut t) };
    if r != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// Maps `size` bytes of fresh zeroed memory aligned to `align` (a power of two,
/// at least the page size, and `size` a multiple of the page size).
/// Returns null when the OS refuses.
#[cfg(not(miri))]
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two() && align >= page_size());
    debug_assert!(size % page_size() == 0);
    // First try an exact mapping: Linux hands out mappings top-down, so after
    // one aligned arena the next exact mapping is usually aligned too.
    let p = map(size);
    if p.is_null() || p.addr() & (align - 1) == 0 {
        return p;
    }
    // SAFETY: p is a mapping of `size` bytes that we own.
    unsafe { unmap(p, size) };
    // Over-map by `align` and trim both ends.
    let Some(total) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    let raw = map(total);
    if raw.is_null() {
        return raw;
    }
    let lead = raw.addr().wrapping_neg() & (align - 1);
    let trail = total - lead - size;
    // SAFETY: both trimmed ranges lie inside the mapping `raw..raw+total`,
    // are page-aligned (lead is a multiple of the page size because `raw` and
    // `align` are page-aligned) and are not used afterwards.
    unsafe {
        if lead != 0 {
            unmap(raw, lead);
        }
        if trail != 0 {
            unmap(raw.add(lead + size), trail);
        }
        raw.add(lead)
    }
}

#[cfg(not(miri))]
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing cannot alias any existing Rust object.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Releases a mapping made by [`map_aligned`] or a reservation made by
/// [`reserve`].
///
/// # Safety
/// `p..p+size` must be (part of) a live mapping from [`map_aligned`] or
/// [`reserve`] that nothing refers to any more.
#[cfg(not(miri))]
pub unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: the caller owns the mapping and gives it up.
    let rc = unsafe { libc::munmap(p.cast(), size) };
    debug_assert_eq!(rc, 0, "munmap failed");
}

/// Tells the kernel the pages of `p..p+size` may be dropped; they read back as
/// zeroes. Used to give back free pools inside live arenas.
///
/// # Safety
/// The range must lie inside a live private anonymous mapping of ours (from
/// [`map_aligned`], or a committed range of a [`reserve`]d one), be
/// page-aligned, and hold nothing the program still needs.
#[cfg(not(miri))]
pub unsafe fn discard(p: *mut u8, size: usize) -> bool {
    // SAFETY: the caller guarantees the range is ours and dead.
    unsafe { libc::madvise(p.cast(), size, libc::MADV_DONTNEED) == 0 }
}

/// Reserves `size` bytes of address space aligned to `align` (a power of
/// two, a multiple of the page size), without memory: `PROT_NONE`,
/// `MAP_NORESERVE`. Null when the OS refuses. Ranges of it become usable
/// through [`commit`] and go back through [`decommit`].
#[cfg(not(miri))]
pub fn reserve(size: usize, align: usize) -> *mut u8 {
    let Some(len) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    // SAFETY: a fresh anonymous reservation at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return ptr::null_mut();
    }
    // Ranges of the reservation are later reached from plain addresses.
    let _ = p.expose_provenance();
    let start = p.addr();
    let base = (start + align - 1) & !(align - 1);
    // SAFETY: trimming the unaligned head and the tail of our own reservation.
    unsafe {
        if base > start {
            libc::munmap(p, base - start);
        }
        let tail = start + len - (base + size);
        if tail > 0 {
            libc::munmap(p.cast::<u8>().add(base - start + size).cast(), tail);
        }
    }
    ptr::with_exposed_provenance_mut(base)
}

/// The largest reservation [`reserve`] can have of `max` bytes, or a quarter
/// as much, down to `min`: its base and size.
#[cfg(not(miri))]
pub fn reserve_largest(max: usize, min: usize, align: usize) -> Option<(*mut u8, usize)> {
    let mut size = max;
    while size >= min {
        let p = reserve(size, align);
        if !p.is_null() {
            return Some((p, size));
        }
        size /= 4;
    }
    None
}

/// `size` bytes of zeroed, readable and writable address space whose pages
/// take memory only once written (`MAP_NORESERVE`: no commit charge for
/// the untouched rest). Null when the OS refuses.
#[cfg(not(miri))]
pub fn map_sparse(size: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping at a kernel-chosen address cannot
    // alias any existing Rust object.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Under Miri there is no sparse memory.
#[cfg(miri)]
pub fn map_sparse(_size: usize) -> *mut u8 {
    ptr::null_mut()
}

/// Makes `p..p+len` of a reservation readable and writable (zeroed pages).
///
/// # Safety
/// The range lies in a reservation from [`reserve`] and nobody uses it.
#[cfg(not(miri))]
pub unsafe fn commit(p: *mut u8, len: usize) -> bool {
    // SAFETY: the caller's contract.
    unsafe { libc::mprotect(p.cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

/// Replaces `p..p+len` by a fresh inaccessible reservation: the pages are
/// freed now, the addresses stay reserved.
///
/// # Safety
/// The range lies in a reservation from [`reserve`] and holds nothing anyone
/// uses.
#[cfg(not(miri))]
pub unsafe fn decommit(p: *mut u8, len: usize) {
    // SAFETY: MAP_FIXED over our own reservation (the contract).
    let r = unsafe { reserve_at(p, len, libc::MAP_FIXED) };
    debug_assert_ne!(r, libc::MAP_FAILED);
}

/// A fresh inaccessible reservation of `p..p+len` (`fixed`: `MAP_FIXED`,
/// or `MAP_FIXED_NOREPLACE`, which fails where anything is mapped).
///
/// # Safety
/// With `MAP_FIXED`, whatever is mapped there is ours and unused.
#[cfg(not(miri))]
unsafe fn reserve_at(p: *mut u8, len: usize, fixed: libc::c_int) -> *mut libc::c_void {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | fixed;
    // SAFETY: the contract; an anonymous mapping aliases no Rust object.
    unsafe { libc::mmap(p.cast(), len, libc::PROT_NONE, flags, -1, 0) }
}

/// Moves the pages of `from..from+len` to `to..to+len`, without copying or
/// faulting them: `to` becomes readable and writable and holds what `from`
/// held, its resident pages still resident; `from` stays mapped, empty (it
/// would read as zeroes). One `mremap` with `MREMAP_DONTUNMAP` (Linux 5.7),
/// which replaces the mapping at `to` and leaves `from` mapped: when it
/// succeeds, no slot is unmapped at any moment.
///
/// False if the kernel refused (the caller then stops moving pages: see
/// [`stop_moving_pages`]). `from` is then unchanged, and `to` is either
/// unchanged or, if the kernel had unmapped it before it failed (it does
/// for some limits), reserved again, inaccessible; the caller makes it
/// accessible if it needs it. Should that new reservation fail, the
/// process ends: a hole in the region would let anyone's mapping in.
///
/// # Safety
/// Both ranges lie in a reservation from [`reserve`], nobody uses them,
/// `from` lies in one mapping (made by [`commit`] or [`decommit`] calls on
/// whole multiples of `len`'s alignment unit), and `len` is a multiple of
/// the page size.
#[cfg(not(miri))]
pub unsafe fn move_pages(from: *mut u8, to: *mut u8, len: usize) -> bool {
    use core::sync::atomic::Ordering;
    match FAIL_AFTER.load(Ordering::Relaxed) {
        usize::MAX => {}
        0 => {
            FAIL_AFTER.store(usize::MAX, Ordering::Relaxed);
            // As a kernel that unmapped `to` before it failed leaves it,
            // once reserved again below.
            // SAFETY: MAP_FIXED over our own reservation, unused (the
            // contract).
            unsafe { decommit(to, len) };
            return false;
        }
        n => FAIL_AFTER.store(n - 1, Ordering::Relaxed),
    }
    let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP;
    // SAFETY: both ranges are our reservation's and unused (the contract);
    // MREMAP_FIXED replaces only our own mapping at `to`.
    let r = unsafe { libc::mremap(from.cast(), len, len, flags, to.cast::<libc::c_void>()) };
    if r != libc::MAP_FAILED {
        return true;
    }
    // The kernel may have unmapped `to` before it failed: reserve it again.
    // NOREPLACE, so that nothing mapped there is replaced: EEXIST means `to`
    // is mapped, which (the kernel failed before it unmapped anything, as
    // it does for a flag it does not know) is our own reservation. Another
    // thread's `mmap` could only have landed in the hole in the moment
    // between the two calls.
    // SAFETY: NOREPLACE touches no existing mapping.
    let again = unsafe { reserve_at(to, len, libc::MAP_FIXED_NOREPLACE) };
    if again == libc::MAP_FAILED && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
        die("pymalloc: a slot of the reserved region could not be reserved again after a failed mremap\n");
    }
    false
}

/// How many more moves [`move_pages`] makes before it fails one on purpose
/// (`usize::MAX`: none fails), for tests of the callers' failure paths.
#[cfg(not(miri))]
static FAIL_AFTER: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(usize::MAX);

/// For tests of what happens when the kernel refuses to move pages: moves
/// are allowed again (as after a fresh probe), `after` more of them
/// succeed, and the next one fails, leaving its destination reserved only,
/// as a kernel that unmapped it before failing does. Not for programs.
#[doc(hidden)]
pub fn fail_page_moves_for_tests(after: usize) {
    #[cfg(not(miri))]
    {
        FAIL_AFTER.store(after, core::sync::atomic::Ordering::Relaxed);
        MOVES.store(0, core::sync::atomic::Ordering::Relaxed);
    }
    #[cfg(miri)]
    let _ = after;
}

/// Writes `msg` to standard error, without allocating, and aborts.
#[cfg(not(miri))]
#[cold]
pub fn die(msg: &str) -> ! {
    // SAFETY: a write of our own bytes to descriptor 2, then abort.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

/// Whether [`move_pages`] may be used: 0 untried, 1 yes, 2 no.
#[cfg(not(miri))]
static MOVES: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// Whether [`move_pages`] works on this kernel: tried once, on a mapping of
/// its own, and remembered (until [`stop_moving_pages`]).
#[cfg(not(miri))]
pub fn can_move_pages() -> bool {
    use core::sync::atomic::Ordering;
    match MOVES.load(Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    let page = page_size();
    let both = map(2 * page);
    let ok = !both.is_null() && {
        // SAFETY: a fresh mapping of two pages, ours alone; the first page
        // is written, then moved onto the second.
        unsafe {
            both.write(7);
            let moved = libc::mremap(
                both.cast(),
                page,
                page,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP,
                both.add(page).cast::<libc::c_void>(),
            );
            moved != libc::MAP_FAILED && both.add(page).read() == 7 && both.read() == 0
        }
    };
    if !both.is_null() {
        // SAFETY: the probe's own mapping, unused from now on.
        unsafe { unmap(both, 2 * page) };
    }
    // A racing probe stores the same answer; a stop stays a stop.
    let _ = MOVES.compare_exchange(0, if ok { 1 } else { 2 }, Ordering::Relaxed, Ordering::Relaxed);
    MOVES.load(Ordering::Relaxed) == 1
}

/// [`can_move_pages`] says no from now on (a move failed in use).
#[cfg(not(miri))]
pub fn stop_moving_pages() {
    MOVES.store(2, core::sync::atomic::Ordering::Relaxed);
}

// Under Miri the "OS" is the Rust heap; alignment and zeroing are kept so the
// allocator above sees the same contract. Miri builds only support the one
// alignment the arena allocator asks for. `System` is named explicitly: the
// global allocator may be pymalloc itself, which would re-enter the heap.
/// Fresh zeroed memory of `size` bytes aligned to `align` (Miri build: from
/// the `System` allocator; `align` must be the arena size). Null when the
/// allocator refuses.
#[cfg(miri)]
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    debug_assert_eq!(align, crate::geometry::ARENA_SIZE);
    match std::alloc::Layout::from_size_align(size, crate::geometry::ARENA_SIZE) {
        // SAFETY: the layout has non-zero size.
        Ok(l) if size > 0 => unsafe { std::alloc::GlobalAlloc::alloc_zeroed(&std::alloc::System, l) },
        _ => ptr::null_mut(),
    }
}

/// Releases memory from [`map_aligned`] (Miri build).
///
/// # Safety
/// `p` must come from `map_aligned(size, ARENA_SIZE)` with the same `size`;
/// Miri builds cannot release part of a mapping.
#[cfg(miri)]
pub unsafe fn unmap(p: *mut u8, size: usize) {
    // SAFETY: same layout as the allocation, per the caller's contract.
    unsafe {
        std::alloc::GlobalAlloc::dealloc(
            &std::alloc::System,
            p,
            std::alloc::Layout::from_size_align_unchecked(size, crate::geometry::ARENA_SIZE),
        )
    }
}

/// Zeroes the range (Miri build: there are no pages to give back).
///
/// # Safety
/// As for the non-Miri `discard`.
#[cfg(miri)]
pub unsafe fn discard(p: *mut u8, size: usize) -> bool {
    // SAFETY: the caller guarantees the range is ours and dead.
    unsafe { ptr::write_bytes(p, 0, size) };
    true
}

/// Gives back the units of `base + i * unit` for every bit `i` set in
/// `mask`, one [`discard`] per run of adjacent set bits.
///
/// # Safety
/// As for [`discard`], for every unit named.
pub unsafe fn discard_runs(base: *mut u8, mask: u64, unit: usize) {
    let mut rest = mask;
    while rest != 0 {
        let start = rest.trailing_zeros() as usize;
        let run = (rest >> start).trailing_ones() as usize;
        // SAFETY: the run's units are named by the mask (our contract).
        unsafe { discard(base.add(start * unit), run * unit) };
        rest &= !((((1u128 << run) - 1) as u64) << start);
    }
}
