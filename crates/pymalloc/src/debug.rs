//! CPython's memory debug hooks (`PyMem_SetupDebugHooks`,
//! `PYTHONMALLOC=debug`), layered over whatever allocator a domain has.
//!
//! Every block gets, with `S = size_of::<usize>()`:
//!
//! ```text
//! [S: size requested, big-endian][1: API id][S-1: 0xFD] data... [S: 0xFD][S: serial, big-endian]
//!                                                       ^ returned pointer
//! ```
//!
//! Fresh memory is filled with `0xCD`, freed memory with `0xDD`, and guard
//! bytes are `0xFD`. `free` and `realloc` check the API id (a block of
//! `PyMem_Malloc` freed with `PyObject_Free` is caught), the leading guard
//! bytes and the trailing ones; on a fault they print CPython 3.11's report
//! to stderr (`_PyObject_DebugDumpAddress`) and end the process through the
//! fatal-error handler, which by default prints CPython's
//! `Fatal Python error: <function>: <message>` line and aborts. The serial
//! number counts calls to the debug malloc and realloc; it is stored in each
//! block ([`block_info`]) and, on request ([`set_report_serial`]), printed in
//! the report as CPython builds with `PYMEM_DEBUG_SERIALNO` print it.
//!
//! The MEM and OBJ hooks also ask the embedder's lock check (CPython's
//! `PyGILState_Check`, installed with [`set_lock_check`]) and stop with
//! `Python memory allocator called without holding the GIL` when it fails.
//!
//! Nothing on the report path allocates memory.
//!
//! ```
//! use pymalloc::{debug, Domain};
//! # let _g = ();
//! // Only while no other thread uses the domains:
//! unsafe { debug::setup_debug_hooks() };
//! let p = Domain::Mem.malloc(4);
//! assert_eq!(unsafe { core::slice::from_raw_parts(p, 4) }, &[0xCD; 4]);
//! let info = unsafe { debug::block_info(p) };
//! assert_eq!((info.size, info.api_id), (4, b'm'));
//! unsafe { Domain::Mem.free(p) };
//! # unsafe { pymalloc::config::setup(pymalloc::config::AllocatorName::Pymalloc).unwrap() };
//! ```

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::fmt::{self, Write};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::domain::{Domain, MemAllocatorEx};
use crate::raw::MAX_SIZE;

/// Fill byte of fresh memory (`PYMEM_CLEANBYTE`).
pub const CLEANBYTE: u8 = 0xCD;
/// Fill byte of freed memory (`PYMEM_DEADBYTE`).
pub const DEADBYTE: u8 = 0xDD;
/// Guard byte around blocks (`PYMEM_FORBIDDENBYTE`).
pub const FORBIDDENBYTE: u8 = 0xFD;

const SST: usize = core::mem::size_of::<usize>();
/// Bytes the hooks add to each block: size and id word before, guard and
/// serial words after.
pub const EXTRA_BYTES: usize = 4 * SST;
/// Bytes of those before the pointer the hooks hand out (the size and the
/// API id with its pad): the hooks' pointer is the block's address plus
/// this.
pub const HEADER_BYTES: usize = 2 * SST;
/// Bytes erased at each end of a block before realloc moves it.
const ERASED_SIZE: usize = 64;

/// What a debug hook wraps, and which API id it stamps (CPython's
/// `debug_alloc_api_t`). Invariant: written only while the domain is not in
/// use (`setup_debug_hooks`' contract).
struct HookState(UnsafeCell<(u8, MemAllocatorEx)>);

// SAFETY: see the invariant.
unsafe impl Sync for HookState {}

static HOOKS: [HookState; 3] = [
    HookState(UnsafeCell::new((b'r', crate::raw::ALLOCATOR))),
    HookState(UnsafeCell::new((b'm', crate::raw::ALLOCATOR))),
    HookState(UnsafeCell::new((b'o', crate::raw::ALLOCATOR))),
];

static SERIALNO: AtomicUsize = AtomicUsize::new(0);
static REPORT_SERIAL: AtomicBool = AtomicBool::new(false);
// Callbacks, stored as pointers (not integers) so they keep their provenance.
static LOCK_CHECK: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());
static FATAL: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());
static TRACEBACK: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// The embedder's "is the lock held?" check for MEM and OBJ (CPython:
/// `PyGILState_Check`).
pub type LockCheck = fn() -> bool;
/// Ends the process after a fault: receives CPython's function name and
/// message (the message may hold a non-UTF-8 API id byte).
pub type FatalHandler = fn(func: &str, msg: &[u8]) -> !;
/// Prints the allocation traceback of the block at `p` to file descriptor
/// `fd` (CPython: `_PyMem_DumpTraceback`).
pub type TracebackDumper = fn(fd: i32, p: *const u8);

/// Installs (or with `None` removes) the lock check of the MEM and OBJ
/// hooks. Without one, no check is made.
pub fn set_lock_check(f: Option<LockCheck>) {
    LOCK_CHECK.store(f.map_or(ptr::null_mut(), |f| f as *mut ()), Ordering::Release);
}

/// Installs the handler that ends the process after a fault (default: print
/// `Fatal Python error: <func>: <msg>` and abort).
pub fn set_fatal_handler(f: Option<FatalHandler>) {
    FATAL.store(f.map_or(ptr::null_mut(), |f| f as *mut ()), Ordering::Release);
}

/// Installs the allocation-traceback printer used after a report (default:
/// CPython's `Enable tracemalloc to get the memory block allocation
/// traceback` line).
pub fn set_traceback_dumper(f: Option<TracebackDumper>) {
    TRACEBACK.store(f.map_or(ptr::null_mut(), |f| f as *mut ()), Ordering::Release);
}

/// Installs `f` as the allocation-traceback printer unless one is installed
/// already (the tracer's, beside an embedder's own); true if installed.
pub fn set_traceback_dumper_if_unset(f: TracebackDumper) -> bool {
    TRACEBACK.compare_exchange(ptr::null_mut(), f as *mut (), Ordering::AcqRel, Ordering::Acquire).is_ok()
}

/// Removes the allocation-traceback printer if it is `f`.
pub fn unset_traceback_dumper(f: TracebackDumper) {
    let _ = TRACEBACK.compare_exchange(f as *mut (), ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire);
}

/// Whether reports include the line `The block was made by call #N to debug
/// malloc/realloc.` (CPython prints it only when built with
/// `PYMEM_DEBUG_SERIALNO`; off by default, so reports match a standard
/// CPython 3.11 byte for byte). The serial number is stored either way.
pub fn set_report_serial(on: bool) {
    REPORT_SERIAL.store(on, Ordering::Relaxed);
}

/// The number of debug malloc/realloc calls so far.
pub fn serial_number() -> usize {
    SERIALNO.load(Ordering::Relaxed)
}

/// Wraps each domain's current allocator with the debug hooks (CPython's
/// `PyMem_SetupDebugHooks`); a domain that already has them is left alone.
///
/// # Safety
/// As for [`Domain::set_allocator`] on all three domains.
pub unsafe fn setup_debug_hooks() {
    for d in Domain::ALL {
        // SAFETY: nothing uses the three domains during the call (our
        // contract).
        unsafe { setup_domain(d) };
    }
}

/// Wraps one domain's current allocator with the debug hooks.
///
/// # Safety
/// As for [`Domain::set_allocator`].
pub unsafe fn setup_domain(d: Domain) {
    let current = d.allocator();
    if is_hook(&current) {
        return;
    }
    let state = &HOOKS[d as usize];
    // SAFETY: the domain is not in use (caller's contract), so neither is
    // its hook state.
    unsafe {
        *state.0.get() = (d.api_id(), current);
        d.set_allocator(hook_allocator(d));
    }
}

fn hook_allocator(d: Domain) -> MemAllocatorEx {
    let ctx = HOOKS[d as usize].0.get().cast::<c_void>();
    match d {
        Domain::Raw => MemAllocatorEx {
            ctx,
            malloc: debug_raw_malloc,
            calloc: debug_raw_calloc,
            realloc: debug_raw_realloc,
            free: debug_raw_free,
        },
        _ => {
            MemAllocatorEx { ctx, malloc: debug_malloc, calloc: debug_calloc, realloc: debug_realloc, free: debug_free }
        }
    }
}

/// Hooks are recognised by their context: the address of their state.
fn is_hook(a: &MemAllocatorEx) -> bool {
    HOOKS.iter().any(|h| ptr::eq(a.ctx, h.0.get().cast::<c_void>()))
}

/// If all three domains have the debug hooks, the allocators under them.
pub fn hooked_allocators() -> Option<[MemAllocatorEx; 3]> {
    let mut out = [crate::raw::ALLOCATOR; 3];
    for d in Domain::ALL {
        if !ptr::eq(d.allocator().ctx, hook_allocator(d).ctx) {
            return None;
        }
        // SAFETY: read while the domain's hooks are installed; writes only
        // happen in setup, which is not concurrent with use.
        out[d as usize] = unsafe { (*HOOKS[d as usize].0.get()).1 };
    }
    Some(out)
}

/// True if `d` currently has the debug hooks.
pub fn is_enabled(d: Domain) -> bool {
    ptr::eq(d.allocator().ctx, hook_allocator(d).ctx)
}

/// What the hooks recorded about a live debug block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// Bytes originally requested.
    pub size: usize,
    /// API id byte: `r`, `m` or `o`.
    pub api_id: u8,
    /// Serial number of the malloc/realloc call that made the block.
    pub serial: usize,
}

/// Reads the hooks' header and trailer of `p`.
///
/// # Safety
/// `p` is a live block allocated through the debug hooks.
pub unsafe fn block_info(p: *const u8) -> BlockInfo {
    let p = launder(p.cast_mut());
    // SAFETY: a debug block has 2*SST header bytes before p, and size + 2*SST
    // bytes from p.
    unsafe {
        let size = read_size(p.sub(2 * SST));
        BlockInfo { size, api_id: *p.sub(SST), serial: read_size(p.add(size + SST)) }
    }
}

fn read_size(p: *const u8) -> usize {
    let mut b = [0u8; SST];
    // SAFETY: callers pass SST readable bytes.
    unsafe { ptr::copy_nonoverlapping(p, b.as_mut_ptr(), SST) };
    usize::from_be_bytes(b)
}

fn write_size(p: *mut u8, n: usize) {
    // SAFETY: callers pass SST writable bytes.
    unsafe { ptr::copy_nonoverlapping(n.to_be_bytes().as_ptr(), p, SST) };
}

/// # Safety
/// `ctx` is one of the `HOOKS` states.
unsafe fn state<'a>(ctx: *mut c_void) -> &'a (u8, MemAllocatorEx) {
    // SAFETY: see the function contract; the state is not written while the
    // hook is in use.
    unsafe { &*ctx.cast::<(u8, MemAllocatorEx)>() }
}

/// Writes the header and trailer of a block whose data starts at `data`.
fn decorate(data: *mut u8, nbytes: usize, api_id: u8, serial: usize) {
    // SAFETY: callers pass a block with 2*SST bytes before data and
    // nbytes + 2*SST from it.
    unsafe {
        let head = data.sub(2 * SST);
        write_size(head, nbytes);
        *head.add(SST) = api_id;
        ptr::write_bytes(head.add(SST + 1), FORBIDDENBYTE, SST - 1);
        let tail = data.add(nbytes);
        ptr::write_bytes(tail, FORBIDDENBYTE, SST);
        write_size(tail.add(SST), serial);
    }
}

unsafe fn hooked_alloc(use_calloc: bool, ctx: *mut c_void, nbytes: usize) -> *mut c_void {
    // SAFETY: ctx is our hook state.
    let (api_id, under) = *unsafe { state(ctx) };
    if nbytes > MAX_SIZE - EXTRA_BYTES {
        return ptr::null_mut();
    }
    let total = nbytes + EXTRA_BYTES;
    // SAFETY: the wrapped allocator honours the MemAllocatorEx contract.
    let p = unsafe {
        if use_calloc {
            (under.calloc)(under.ctx, 1, total)
        } else {
            (under.malloc)(under.ctx, total)
        }
    }
    .cast::<u8>();
    if p.is_null() {
        return ptr::null_mut();
    }
    let serial = SERIALNO.fetch_add(1, Ordering::Relaxed) + 1;
    // The header is later reached from the data pointer a caller hands back,
    // whose provenance may not cover it: expose the whole block's.
    let _ = p.expose_provenance();
    // SAFETY: p holds `total` bytes.
    let data = unsafe { p.add(2 * SST) };
    if nbytes > 0 && !use_calloc {
        // SAFETY: data holds nbytes.
        unsafe { ptr::write_bytes(data, CLEANBYTE, nbytes) };
    }
    decorate(data, nbytes, api_id, serial);
    data.cast()
}

unsafe fn hooked_free(ctx: *mut c_void, p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: ctx is our hook state; p is claimed to be a live debug block,
    // which check_address verifies as far as it can before anything else.
    unsafe {
        let (api_id, under) = *state(ctx);
        let p = launder(p.cast::<u8>());
        check_address("_PyMem_DebugRawFree", api_id, p);
        let q = p.sub(2 * SST);
        let total = read_size(q) + EXTRA_BYTES;
        ptr::write_bytes(q, DEADBYTE, total);
        (under.free)(under.ctx, q.cast());
    }
}

unsafe fn hooked_realloc(ctx: *mut c_void, p: *mut c_void, nbytes: usize) -> *mut c_void {
    if p.is_null() {
        // SAFETY: ctx is our hook state (hooked_realloc's contract).
        return unsafe { hooked_alloc(false, ctx, nbytes) };
    }
    // SAFETY: ctx is our hook state; p is checked before its header is used.
    let (api_id, under) = *unsafe { state(ctx) };
    let data = launder(p.cast::<u8>());
    // SAFETY: p is claimed to be a live debug block.
    unsafe { check_address("_PyMem_DebugRawRealloc", api_id, data) };
    // SAFETY: the block passed the checks: its header and trailer are ours.
    unsafe {
        let head = data.sub(2 * SST);
        let original = read_size(head);
        if nbytes > MAX_SIZE - EXTRA_BYTES {
            return ptr::null_mut();
        }
        let total = nbytes + EXTRA_BYTES;
        let tail = data.add(original);
        let mut serial = read_size(tail.add(SST));

        // Mark the header, the trailer and up to ERASED_SIZE bytes at each
        // end as dead, so that a stale pointer to a moved block reads dead
        // bytes; keep a copy to restore.
        let mut save = [0u8; 2 * ERASED_SIZE];
        if original <= save.len() {
            ptr::copy_nonoverlapping(data, save.as_mut_ptr(), original);
            ptr::write_bytes(head, DEADBYTE, original + EXTRA_BYTES);
        } else {
            ptr::copy_nonoverlapping(data, save.as_mut_ptr(), ERASED_SIZE);
            ptr::write_bytes(head, DEADBYTE, ERASED_SIZE + 2 * SST);
            ptr::copy_nonoverlapping(tail.sub(ERASED_SIZE), save.as_mut_ptr().add(ERASED_SIZE), ERASED_SIZE);
            ptr::write_bytes(tail.sub(ERASED_SIZE), DEADBYTE, ERASED_SIZE + EXTRA_BYTES - 2 * SST);
        }

        let r = (under.realloc)(under.ctx, head.cast(), total).cast::<u8>();
        let (head, nbytes) = if r.is_null() {
            (head, original) // rewrite the old block's decorations
        } else {
            serial = SERIALNO.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = r.expose_provenance();
            (r, nbytes)
        };
        let data = head.add(2 * SST);
        decorate(data, nbytes, api_id, serial);

        if original <= save.len() {
            ptr::copy_nonoverlapping(save.as_ptr(), data, nbytes.min(original));
        } else {
            let i = original - ERASED_SIZE;
            ptr::copy_nonoverlapping(save.as_ptr(), data, nbytes.min(ERASED_SIZE));
            if nbytes > i {
                ptr::copy_nonoverlapping(save.as_ptr().add(ERASED_SIZE), data.add(i), (nbytes - i).min(ERASED_SIZE));
            }
        }
        if r.is_null() {
            return ptr::null_mut();
        }
        if nbytes > original {
            ptr::write_bytes(data.add(original), CLEANBYTE, nbytes - original);
        }
        data.cast()
    }
}

unsafe extern "C" fn debug_raw_malloc(ctx: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: installed with ctx = our hook state.
    unsafe { hooked_alloc(false, ctx, n) }
}
unsafe extern "C" fn debug_raw_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    if elsize != 0 && nelem > MAX_SIZE / elsize {
        return ptr::null_mut();
    }
    // SAFETY: installed with ctx = our hook state; p (if any) is null or
    // live in the hooked domain (the domain caller's contract).
    unsafe { hooked_alloc(true, ctx, nelem * elsize) }
}
unsafe extern "C" fn debug_raw_realloc(ctx: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: installed with ctx = our hook state; p (if any) is null or
    // live in the hooked domain (the domain caller's contract).
    unsafe { hooked_realloc(ctx, p, n) }
}
unsafe extern "C" fn debug_raw_free(ctx: *mut c_void, p: *mut c_void) {
    // SAFETY: installed with ctx = our hook state; p (if any) is null or
    // live in the hooked domain (the domain caller's contract).
    unsafe { hooked_free(ctx, p) }
}

#[inline]
fn check_lock(func: &str) {
    let f = LOCK_CHECK.load(Ordering::Acquire);
    if !f.is_null() {
        // SAFETY: only set_lock_check stores non-null values, all LockCheck.
        let f: LockCheck = unsafe { core::mem::transmute::<*mut (), LockCheck>(f) };
        if !f() {
            fatal(func, b"Python memory allocator called without holding the GIL");
        }
    }
}

unsafe extern "C" fn debug_malloc(ctx: *mut c_void, n: usize) -> *mut c_void {
    check_lock("_PyMem_DebugMalloc");
    // SAFETY: installed with ctx = our hook state; arguments from the
    // domain caller, as the raw hook expects them.
    unsafe { debug_raw_malloc(ctx, n) }
}
unsafe extern "C" fn debug_calloc(ctx: *mut c_void, nelem: usize, elsize: usize) -> *mut c_void {
    check_lock("_PyMem_DebugCalloc");
    // SAFETY: installed with ctx = our hook state; arguments from the
    // domain caller, as the raw hook expects them.
    unsafe { debug_raw_calloc(ctx, nelem, elsize) }
}
unsafe extern "C" fn debug_realloc(ctx: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    check_lock("_PyMem_DebugRealloc");
    // SAFETY: installed with ctx = our hook state; arguments from the
    // domain caller, as the raw hook expects them.
    unsafe { debug_raw_realloc(ctx, p, n) }
}
unsafe extern "C" fn debug_free(ctx: *mut c_void, p: *mut c_void) {
    check_lock("_PyMem_DebugFree");
    // SAFETY: installed with ctx = our hook state; arguments from the
    // domain caller, as the raw hook expects them.
    unsafe { debug_raw_free(ctx, p) }
}

/// Checks the API id and the guard bytes of `p`; on a fault, reports and
/// ends the process (CPython's `_PyMem_DebugCheckAddress`).
///
/// # Safety
/// `p` points at least `2*SST` bytes into readable memory.
unsafe fn check_address(func: &str, api: u8, p: *const u8) {
    // SAFETY: per the contract the header is readable; the trailer is read
    // only once the header looks intact, as CPython does.
    unsafe {
        let id = *p.sub(SST);
        if id != api {
            dump_address(p);
            let mut m = Msg::new();
            let _ = m.write_str("bad ID: Allocated using API '");
            m.push(id);
            let _ = m.write_str("', verified using API '");
            m.push(api);
            m.push(b'\'');
            fatal(func, m.as_bytes());
        }
        if (1..SST).any(|i| *p.sub(i) != FORBIDDENBYTE) {
            dump_address(p);
            fatal(func, b"bad leading pad byte");
        }
        let tail = p.wrapping_add(read_size(p.sub(2 * SST)));
        if !trailer_readable(p, tail) || (0..SST).any(|i| *tail.add(i) != FORBIDDENBYTE) {
            dump_address(p);
            fatal(func, b"bad trailing pad byte");
        }
    }
}

/// Prints CPython's description of the debug block at `p` to stderr
/// (`_PyObject_DebugDumpAddress`), then its allocation traceback.
///
/// # Safety
/// `p` is null, or points at least `2*SST` bytes into readable memory and,
/// if its leading guard is intact, is followed by its recorded size plus
/// `2*SST` readable bytes.
pub unsafe fn dump_address(p: *const u8) {
    let p = launder(p.cast_mut()).cast_const();
    let mut out = Stderr;
    let _ = write!(out, "Debug memory block at address p={:p}:", p);
    if p.is_null() {
        let _ = out.write_str("\n");
        return;
    }
    // SAFETY: per the contract.
    unsafe {
        let id = *p.sub(SST);
        let _ = out.write_str(" API '");
        out.raw(&[id]);
        let _ = out.write_str("'\n");
        let nbytes = read_size(p.sub(2 * SST));
        let _ = writeln!(out, "    {} bytes originally requested", nbytes);
        let _ = write!(out, "    The {} pad bytes at p-{} are ", SST - 1, SST - 1);
        if (1..SST).all(|i| *p.sub(i) == FORBIDDENBYTE) {
            let _ = out.write_str("FORBIDDENBYTE, as expected.\n");
        } else {
            let _ = writeln!(out, "not all FORBIDDENBYTE (0x{:02x}):", FORBIDDENBYTE);
            for i in (1..SST).rev() {
                let b = *p.sub(i);
                let _ = write!(out, "        at p-{}: 0x{:02x}", i, b);
                if b != FORBIDDENBYTE {
                    let _ = out.write_str(" *** OUCH");
                }
                let _ = out.write_str("\n");
            }
            let _ = out.write_str(
                "    Because memory is corrupted at the start, the count of bytes requested\n       may be bogus, and checking the trailing pad bytes may segfault.\n",
            );
        }
        let tail = p.wrapping_add(nbytes);
        let _ = write!(out, "    The {} pad bytes at tail={:p} are ", SST, tail);
        if !readable(tail, 2 * SST) {
            // A freed or trampled header gives a bogus size; CPython would
            // fault here. Say so and stop.
            let _ = out.write_str("not readable: the size above is bogus.\n\n");
            return;
        }
        if (0..SST).all(|i| *tail.add(i) == FORBIDDENBYTE) {
            let _ = out.write_str("FORBIDDENBYTE, as expected.\n");
        } else {
            let _ = writeln!(out, "not all FORBIDDENBYTE (0x{:02x}):", FORBIDDENBYTE);
            for i in 0..SST {
                let b = *tail.add(i);
                let _ = write!(out, "        at tail+{}: 0x{:02x}", i, b);
                if b != FORBIDDENBYTE {
                    let _ = out.write_str(" *** OUCH");
                }
                let _ = out.write_str("\n");
            }
        }
        if REPORT_SERIAL.load(Ordering::Relaxed) {
            let serial = read_size(tail.add(SST));
            let _ = writeln!(out, "    The block was made by call #{} to debug malloc/realloc.", serial);
        }
        if nbytes > 0 {
            let _ = out.write_str("    Data at p:");
            let mut q = p;
            let mut i = 0;
            while q < tail && i < 8 {
                let _ = write!(out, " {:02x}", *q);
                i += 1;
                q = q.add(1);
            }
            if q < tail {
                if tail.offset_from(q) > 8 {
                    let _ = out.write_str(" ...");
                    q = tail.sub(8);
                }
                while q < tail {
                    let _ = write!(out, " {:02x}", *q);
                    q = q.add(1);
                }
            }
            let _ = out.write_str("\n");
        }
        let _ = out.write_str("\n");
    }
    let f = TRACEBACK.load(Ordering::Acquire);
    if !f.is_null() {
        // SAFETY: only set_traceback_dumper stores non-null values.
        let f: TracebackDumper = unsafe { core::mem::transmute::<*mut (), TracebackDumper>(f) };
        f(2, p);
    } else {
        let _ = out.write_str("Enable tracemalloc to get the memory block allocation traceback\n\n");
    }
}

/// True if the `SST` bytes of the trailer at `tail` of the debug block whose
/// data starts at `p` can be read. The recorded size may be garbage (a
/// double free overwrites it), so the trailer is read only where that cannot
/// fault: on the header's own page, or in the header's own pymalloc pool
/// (pools are mapped whole), else where `mincore` says it is mapped. Only
/// the last costs a system call, so checking a pool block on every free
/// costs none.
fn trailer_readable(p: *const u8, tail: *const u8) -> bool {
    let page = crate::os::page_size();
    let (p, t) = (p.addr(), tail.addr());
    let Some(last) = t.checked_add(SST - 1) else {
        return false;
    };
    if t < p {
        return false;
    }
    if last / page == p / page {
        return true;
    }
    let pool_mask = !(crate::geometry::POOL_SIZE - 1);
    let block = p - 2 * SST;
    if crate::ownership::owns_live(ptr::without_provenance(block)) && last & pool_mask == block & pool_mask {
        return true;
    }
    readable(tail, SST)
}

/// True if `len` bytes from `p` lie in mapped memory (so reading them will
/// not fault, barring guard pages).
fn readable(p: *const u8, len: usize) -> bool {
    let page = crate::os::page_size();
    let start = p.addr() & !(page - 1);
    let Some(end) = p.addr().checked_add(len) else {
        return false;
    };
    #[cfg(not(miri))]
    {
        let mut vec = [0u8; 4];
        let span = end - start;
        if span > 4 * page {
            return false;
        }
        // SAFETY: mincore only inspects the mapping; `vec` has room for one
        // byte per page of the span.
        unsafe { libc::mincore(ptr::without_provenance_mut(start), span, vec.as_mut_ptr()) == 0 }
    }
    #[cfg(miri)]
    {
        let _ = (start, end);
        true
    }
}

/// `p` re-derived from the exposed provenance of the block it belongs to:
/// the data pointer a caller hands back may not cover the header.
fn launder(p: *mut u8) -> *mut u8 {
    ptr::with_exposed_provenance_mut(p.addr())
}

/// Ends the process through the fatal-error handler.
fn fatal(func: &str, msg: &[u8]) -> ! {
    let f = FATAL.load(Ordering::Acquire);
    if !f.is_null() {
        // SAFETY: only set_fatal_handler stores non-null values.
        let f: FatalHandler = unsafe { core::mem::transmute::<*mut (), FatalHandler>(f) };
        f(func, msg);
    }
    let mut out = Stderr;
    let _ = write!(out, "Fatal Python error: {}: ", func);
    out.raw(msg);
    let _ = out.write_str("\n");
    std::process::abort()
}

/// Unbuffered, allocation-free writes to file descriptor 2.
struct Stderr;

impl Stderr {
    fn raw(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            // SAFETY: writing our own initialised bytes.
            let n = unsafe { libc::write(2, b.as_ptr().cast(), b.len()) };
            if n <= 0 {
                return;
            }
            b = &b[n as usize..];
        }
    }
}

impl Write for Stderr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.raw(s.as_bytes());
        Ok(())
    }
}

/// A fixed buffer for one fatal-error message.
struct Msg {
    buf: [u8; 128],
    len: usize,
}

impl Msg {
    fn new() -> Msg {
        Msg { buf: [0; 128], len: 0 }
    }
    fn push(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| self.push(b));
        Ok(())
    }
}
