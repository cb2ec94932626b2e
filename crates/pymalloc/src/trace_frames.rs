//! Capturing the call stack of an allocation: return addresses only, most
//! recent call first; symbols are resolved when a report is made
//! (`snapshot.rs`).
//!
//! The walker is `trace_unwind`'s caching one, from the traced entry
//! point's registers ([`Mark`]); where it gives up (a rule it cannot
//! express, another target, Miri) the system's (`_Unwind_Backtrace`,
//! through the `backtrace` crate, which does not allocate while it walks).
//! Frames of the tracer itself are told apart by their stack address: the
//! entry point passes the address of one of its locals (`above`), and every
//! frame whose stack pointer is at or below it is the tracer's. Above that
//! come the entry point's own frame and the allocation machinery (the Rust
//! global allocator's shims and `alloc::` internals, this library's C entry
//! points), recognised by symbol name the first time an address is seen
//! there and then by a cache of addresses, so that `nframe` frames of the
//! *program* are kept. Reports trim the machinery again
//! ([`program_frames`]) for frames captured before an address was known.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::SpinLock;

/// Addresses known to be allocation machinery (`+1`, so 0 is empty), or
/// known not to be (`| NOT`): a direct-mapped cache in front of symbol
/// resolution.
const CACHE: usize = 4096;
const NOT: usize = 1 << 63;
static KNOWN: [AtomicUsize; CACHE] = [const { AtomicUsize::new(0) }; CACHE];

/// Symbol prefixes of frames between a program and the allocator.
const MACHINERY: &[&str] = &[
    "__rustc::",
    "__rust_alloc",
    "__rust_dealloc",
    "__rust_realloc",
    "__rdl_",
    "__rg_",
    "alloc::",
    "<alloc::",
    "core::alloc::",
    "std::alloc::",
    "<pymalloc::trace::Traced",
    "pymalloc::trace::",
    // The Rust global allocator's gated paths (`Traced<PyMalloc>`), which
    // reach the traced path inlined into the program's function.
    "pymalloc::global::",
    "<pymalloc::global::",
    "pymalloc::domain::",
    "pymalloc_capi::",
    "pymalloc_preload::",
    "pymalloc_preload_trace::",
    "PyMem_",
    "PyObject_Malloc",
    "PyObject_Calloc",
    "PyObject_Realloc",
    "PyObject_Free",
    "PyTraceMalloc_",
];

/// What the cache knows of the frame at `ip`: Some(true) machinery,
/// Some(false) the program's, None unknown.
fn known(ip: usize) -> Option<bool> {
    let k = KNOWN[(ip >> 2) % CACHE].load(Ordering::Relaxed);
    if k == ip + 1 {
        Some(true)
    } else if k == (ip | NOT) {
        Some(false)
    } else {
        None
    }
}

fn remember(ip: usize, machinery: bool) {
    KNOWN[(ip >> 2) % CACHE].store(if machinery { ip + 1 } else { ip | NOT }, Ordering::Relaxed);
}

/// Resolves the function at `ip` and remembers whether it is machinery
/// (the first time an address is seen next to the allocator; afterwards the
/// cache answers).
fn classify(ip: usize) -> bool {
    let mut machinery = in_this_library(ip);
    #[cfg(not(miri))]
    if !machinery {
        if let Some(m) = by_exported_symbol(ip) {
            remember(ip, m);
            return m;
        }
        // The loader lock first, as the fork handler takes them: the symbol
        // table's look-up asks the loader which module holds `ip`.
        machinery = crate::trace_unwind::with_loader(|| {
            let _g = RESOLVING.lock();
            by_symbol_table(ip).unwrap_or_else(|| by_debug_info(ip))
        });
    }
    remember(ip, machinery);
    machinery
}

/// Whether the frame at return address `ip` is machinery, by the outermost
/// function the debug information puts its call in (the last one
/// `backtrace::resolve` reports); false if it names none. The caller holds
/// [`RESOLVING`].
#[cfg(not(miri))]
fn by_debug_info(ip: usize) -> bool {
    let mut machinery = false;
    backtrace::resolve((ip.saturating_sub(1)) as *mut core::ffi::c_void, |sym| {
        if let Some(name) = sym.name() {
            machinery = is_machinery_name(&format!("{name:#}"));
        }
    });
    machinery
}

/// Held around every symbol lookup (`backtrace::resolve`, which takes a
/// lock of its own inside): `trace_fork` takes it before a fork, so that a
/// child never inherits the symbolizer's lock from a thread that was
/// classifying a new frame, and then waits on it for ever in its first
/// report (`trace_fork.rs`'s test saw that once in CI, in round 17 of 40).
pub(crate) static RESOLVING: SpinLock = SpinLock::new();

/// Takes the symbol-lookup lock (before `fork`).
pub(crate) fn fork_acquire() {
    RESOLVING.acquire();
}

/// Gives back what [`fork_acquire`] took.
///
/// # Safety
/// The calling thread ran [`fork_acquire`] and has not released since.
pub(crate) unsafe fn fork_release() {
    // SAFETY: taken by fork_acquire on this thread (our contract).
    unsafe { RESOLVING.release() };
}

/// True if `ip` is code of this crate's own shared library (the preload
/// library, the C library), whose every function is allocation machinery:
/// no symbol to look up. Looking one up meant reading, and for the preload
/// library decompressing, the library's whole debug information: about
/// 200M instructions and 30 MB at a traced C program's first allocations.
/// False in an executable, where the program's code sits beside ours.
#[cfg(all(target_os = "linux", not(miri)))]
fn in_this_library(ip: usize) -> bool {
    use core::sync::atomic::AtomicUsize;
    /// The base of this library's module, 1 when this code is in the
    /// program itself, 0 before the first look.
    static OURS: AtomicUsize = AtomicUsize::new(0);
    let mut ours = OURS.load(Ordering::Relaxed);
    if ours == 0 {
        let mine = module_base(in_this_library as *const () as usize);
        // SAFETY: getauxval has no precondition.
        let program = module_base(unsafe { libc::getauxval(libc::AT_ENTRY) } as usize);
        ours = if mine == 0 || mine == program { 1 } else { mine };
        OURS.store(ours, Ordering::Relaxed);
    }
    ours != 1 && module_base(ip.saturating_sub(1)) == ours
}

/// The load address of the module (executable or shared object) holding
/// `addr`, 0 if none does.
#[cfg(all(target_os = "linux", not(miri)))]
fn module_base(addr: usize) -> usize {
    crate::trace_symtab::loaded_module(addr).map_or(0, |(base, _)| base)
}

#[cfg(not(all(target_os = "linux", not(miri))))]
fn in_this_library(_ip: usize) -> bool {
    false
}

/// Whether the frame at return address `ip` is machinery, by the exported
/// symbol whose code holds its call (`dladdr1`, with the symbol's size),
/// if there is one. The C library's functions are found so: by name
/// through the debug information they cost, where it is installed (libc6-dbg
/// here), reading and decompressing all of glibc's.
///
/// A frame of the C library that no exported symbol covers is one of its
/// internal functions (`_IO_file_doallocate` under `printf`, `fopen`'s
/// helpers), which are never allocation machinery: the program's frame,
/// with no look at the debug information either. (Looking cost a traced
/// C program that opened a file or printed 224M instructions of
/// decompression at its first such allocation.)
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64", not(miri)))]
fn by_exported_symbol(ip: usize) -> Option<bool> {
    /// `dladdr1`'s request for the symbol table entry (glibc's
    /// `RTLD_DL_SYMENT`).
    const RTLD_DL_SYMENT: libc::c_int = 1;
    let call = ip.checked_sub(1)?;
    // SAFETY: all zeroes is a valid Dl_info (null pointers).
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    let mut sym: *const libc::Elf64_Sym = core::ptr::null();
    // SAFETY: dladdr1 only reads the loader's tables and fills `info` and
    // `sym` (a pointer to a symbol table entry of a loaded object).
    let found = crate::trace_unwind::with_loader(|| unsafe {
        libc::dladdr1(call as *const libc::c_void, &mut info, (&raw mut sym).cast(), RTLD_DL_SYMENT)
    }) != 0;
    if !found {
        return None;
    }
    let internal_to_libc = || (info.dli_fbase as usize == c_library_base()).then_some(false);
    if sym.is_null() || info.dli_sname.is_null() {
        return internal_to_libc();
    }
    // SAFETY: sym points into the object's loaded symbol table.
    let size = unsafe { (*sym).st_size } as usize;
    let start = info.dli_saddr as usize;
    if !(start..start.saturating_add(size)).contains(&call) {
        // The nearest symbol below is not this code's.
        return internal_to_libc();
    }
    // SAFETY: dli_sname is the symbol's NUL-terminated name in the
    // object's string table.
    let name = unsafe { core::ffi::CStr::from_ptr(info.dli_sname) }.to_bytes();
    Some(is_machinery_name(&format!("{:#}", backtrace::SymbolName::new(name))))
}

/// Whether the frame at return address `ip` is machinery, by the name of
/// the function its call lies in in its module's symbol table
/// (`trace_symtab.rs`), if there is one: the debug information
/// `backtrace::resolve` reads costs a parse of the whole compilation unit.
/// The caller holds [`RESOLVING`], inside the loader lock.
#[cfg(all(target_os = "linux", not(miri)))]
fn by_symbol_table(ip: usize) -> Option<bool> {
    // SAFETY: the caller holds RESOLVING inside the loader lock (our
    // contract).
    unsafe {
        crate::trace_symtab::with_function_name(ip.checked_sub(1)?, |name| {
            is_machinery_name(&format!("{:#}", backtrace::SymbolName::new(name)))
        })
    }
}

#[cfg(not(all(target_os = "linux", not(miri))))]
fn by_symbol_table(_ip: usize) -> Option<bool> {
    None
}

/// The load address of the C library (1 if it cannot be found), found once.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64", not(miri)))]
fn c_library_base() -> usize {
    use core::sync::atomic::AtomicUsize;
    static BASE: AtomicUsize = AtomicUsize::new(0);
    let mut base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        // A function of the C library that no allocator interposes.
        base = module_base(libc::getpid as *const () as usize).max(1);
        BASE.store(base, Ordering::Relaxed);
    }
    base
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64", not(miri))))]
fn by_exported_symbol(_ip: usize) -> Option<bool> {
    None
}

/// The C allocation API and C++'s operators, as the preload library and
/// libstdc++ export them: frames of these names are the allocator's.
const MACHINERY_EXACT: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "free",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
];

fn is_machinery_name(function: &str) -> bool {
    // `<T as path::Trait>::method`: an implementation of the allocation
    // machinery's trait for a program's type (`<u8 as
    // alloc::vec::spec_from_elem::SpecFromElem>::from_elem`) is machinery.
    let as_trait = function.strip_prefix('<').and_then(|f| f.split_once(" as ")).map(|(_, t)| t);
    MACHINERY.iter().any(|m| function.starts_with(m) || as_trait.is_some_and(|t| t.starts_with(m)))
        || MACHINERY_EXACT.contains(&function)
        || function.starts_with("operator new")
        || function.starts_with("operator delete")
}

/// The program's frames of a captured traceback (`ips`, most recent
/// first), oldest first as reports show them: resolved (through `memo`),
/// each return address giving its inlined frames too, the machinery next
/// to the allocator trimmed off, the `limit` most recent kept.
pub(crate) fn program_frames(
    ips: &[usize],
    limit: usize,
    memo: &mut std::collections::HashMap<usize, Vec<Frame>>,
) -> Vec<Frame> {
    let mut out = Vec::new();
    'walk: for &ip in ips {
        let frames = memo.entry(ip).or_insert_with(|| resolve(ip));
        // The physical frame is the machinery's if its own function (the
        // outermost of the inlined ones) is.
        remember(ip, frames.last().is_some_and(|f| is_machinery_name(&f.function)));
        for f in frames.iter() {
            if out.is_empty() && is_machinery_name(&f.function) {
                continue;
            }
            out.push(f.clone());
            if out.len() == limit {
                break 'walk;
            }
        }
    }
    out.reverse();
    out
}

/// A frame of a traceback, its symbol resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    /// The source file, or `<unknown>`.
    pub filename: String,
    /// The line in it (0 if unknown).
    pub lineno: u32,
    /// The function, demangled, or the address in hex.
    pub function: String,
    /// The return address.
    pub addr: usize,
}

impl core::fmt::Display for Frame {
    /// `filename:lineno`, as tracemalloc prints a frame.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{}", self.filename, self.lineno)
    }
}

/// The frames at return address `ip`, innermost first: the call's file,
/// line and function, then, where it was inlined, each function it was
/// inlined into at its own line, out to the function the address lies in.
/// An optimised build inlines a program's own functions into one another,
/// so the line a person wants is often an inlined frame's.
pub(crate) fn resolve(ip: usize) -> Vec<Frame> {
    let unknown = || Frame { filename: "<unknown>".into(), lineno: 0, function: format!("{ip:#x}"), addr: ip };
    let mut frames = Vec::new();
    #[cfg(not(miri))]
    let _g = RESOLVING.lock();
    #[cfg(not(miri))]
    backtrace::resolve((ip.saturating_sub(1)) as *mut core::ffi::c_void, |sym| {
        let mut frame = unknown();
        if let Some(name) = sym.name() {
            frame.function = format!("{name:#}");
        }
        if let Some(file) = sym.filename() {
            frame.filename = file.display().to_string();
            frame.lineno = sym.lineno().unwrap_or(0);
        }
        frames.push(frame);
    });
    if frames.is_empty() {
        frames.push(unknown());
    }
    frames
}

/// Where a traced entry point stands: the address of one of its locals
/// (every frame whose stack pointer is at or below it is the tracer's) and,
/// where the fast walker runs, the entry point's registers, from which the
/// walk starts (the tracer's own frames below it are not walked at all).
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    above: usize,
    regs: crate::trace_unwind::Regs,
}

impl Mark {
    /// The mark of the function this is inlined into, given a local of it.
    #[inline(always)]
    pub(crate) fn here(local: &u8) -> Mark {
        Mark { above: core::hint::black_box(local as *const u8 as usize), regs: crate::trace_unwind::Regs::here() }
    }
}

/// Fills `out` with the return addresses of the frames that called the
/// traced entry point `mark` was taken in, most recent first, skipping
/// frames known to be allocation machinery; stops when `out` is full or
/// `limit` frames known to be the program's are in. Returns how many.
///
/// The walk is `trace_unwind`'s where it can (x86-64 Linux), else, or when
/// a frame's rule is beyond it, the system unwinder's.
#[inline(never)]
pub(crate) fn capture(out: &mut [usize], limit: usize, mark: Mark) -> usize {
    capture_fast(out, limit, mark).unwrap_or_else(|| capture_system(out, limit, mark))
}

/// [`capture`] by the caching walker; None where it gives up.
fn capture_fast(out: &mut [usize], limit: usize, mark: Mark) -> Option<usize> {
    let top = stack_top();
    let mut k = Keep { out, n: 0, program: 0, limit, above: mark.above };
    (top != 0 && crate::trace_unwind::walk(mark.regs, top, |ip, sp| k.frame(ip as usize, sp as usize))).then_some(k.n)
}

/// [`capture`] by the system unwinder, inside the loader lock: libgcc's
/// `_Unwind_Find_FDE` calls `dl_iterate_phdr` for every frame, and a fork
/// while another thread was in there would leave the child's loader lock
/// held for ever (see `trace_unwind`'s `LOADER`).
fn capture_system(out: &mut [usize], limit: usize, mark: Mark) -> usize {
    let mut k = Keep { out, n: 0, program: 0, limit, above: mark.above };
    #[cfg(not(miri))]
    crate::trace_unwind::with_loader(|| {
        // SAFETY: trace_unsynchronized is not reentrant with other uses of
        // the backtrace crate's tracing on this thread: the tracer's guard
        // keeps tracing from recursing, and nothing else here traces.
        unsafe { backtrace::trace_unsynchronized(|f| k.frame(f.ip() as usize, f.sp() as usize)) }
    });
    k.n
}

/// The frames a capture keeps: `out[..n]`, of which `program` are known
/// to be the program's.
struct Keep<'a> {
    out: &'a mut [usize],
    n: usize,
    program: usize,
    limit: usize,
    above: usize,
}

impl Keep<'_> {
    /// Takes the frame at return address `ip` whose stack pointer is `sp`,
    /// from either walker; false ends the walk.
    #[inline(always)]
    fn frame(&mut self, ip: usize, sp: usize) -> bool {
        if self.out.is_empty() {
            return false;
        }
        if sp != 0 && sp <= self.above {
            return true; // the tracer's own frames
        }
        if ip == 0 {
            return false;
        }
        if self.program == 0 && known(ip).unwrap_or_else(|| classify(ip)) {
            return true; // allocation machinery before the program
        }
        self.program += 1;
        self.out[self.n] = ip;
        self.n += 1;
        self.n < self.out.len() && self.program < self.limit
    }
}

/// The top of this thread's stack (0: unknown), found once per thread and
/// kept plus one in its block (`trace_thread.rs`; 0 there: not looked up).
fn stack_top() -> u64 {
    crate::trace_thread::with(|t| {
        if t.stack_top_plus_one.get() == 0 {
            t.stack_top_plus_one.set(crate::trace_unwind::stack_top().wrapping_add(1));
        }
        t.stack_top_plus_one.get().wrapping_sub(1)
    })
}

#[cfg(test)]
mod tests {
    use super::is_machinery_name;

    /// The system walker runs inside the loader lock: it nests in a hold
    /// of the calling thread's own (its frames are classified with
    /// `dladdr`, which takes the lock again), and it waits while another
    /// thread holds the lock (so a fork, whose handler takes it, never
    /// finds a thread inside libgcc's `dl_iterate_phdr` calls).
    #[cfg(not(miri))]
    #[test]
    fn the_system_walker_runs_inside_the_loader_lock() {
        use crate::trace_unwind::{holds_loader, with_loader};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let walk = || {
            let local = 0u8;
            let mut out = [0usize; 8];
            super::capture_system(&mut out, 8, super::Mark::here(&local))
        };
        assert!(with_loader(walk) > 0);
        assert!(!holds_loader());
        assert!(walk() > 0);

        // The same walk from a thread of its own, twice: the first, with
        // the lock free, classifies every frame it meets (the cache then
        // answers without the loader), so the second, started while this
        // thread holds the lock, waits for nothing but the walk's own hold.
        let spawn_walk = |flag: Arc<AtomicBool>| {
            std::thread::spawn(move || {
                let n = walk();
                flag.store(true, Ordering::SeqCst);
                n
            })
        };
        assert!(spawn_walk(Arc::new(AtomicBool::new(false))).join().unwrap() > 0);
        let done = Arc::new(AtomicBool::new(false));
        let walker = with_loader(|| {
            let t = spawn_walk(done.clone());
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert!(!done.load(Ordering::SeqCst), "the system walk ran while another thread held the loader lock");
            t
        });
        assert!(walker.join().unwrap() > 0);
        assert!(done.load(Ordering::SeqCst));
    }

    #[test]
    fn machinery_is_known_by_path_by_trait_and_by_c_name() {
        for m in [
            "alloc::vec::from_elem",
            "<alloc::vec::Vec<u8> as core::clone::Clone>::clone",
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "<pymalloc::trace::Traced<pymalloc::PyMalloc> as core::alloc::global::GlobalAlloc>::alloc",
            "pymalloc::global::alloc_gated",
            "<pymalloc::global::PyMalloc as pymalloc::trace::TraceGate>::alloc_or",
            "__rust_alloc",
            "malloc",
            "operator new(unsigned long)",
            "PyMem_RawMalloc",
            "pymalloc_preload_trace::api::malloc_traced",
        ] {
            assert!(is_machinery_name(m), "{m}");
        }
        for p in [
            "myprog::main",
            "<myprog::Parser as core::iter::Iterator>::next",
            "<myprog::Thing as myprog::Alloc>::make",
            "mallocx_wrapper",
            "core::ops::function::FnOnce::call_once",
        ] {
            assert!(!is_machinery_name(p), "{p}");
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64", not(miri)))]
    #[test]
    fn the_c_librarys_frames_are_classified_by_their_exported_symbol() {
        use super::{by_exported_symbol, in_this_library};
        // A return address is just after a call: one byte into a function
        // stands for a call made from its start.
        let after_call_in = |f: usize| f + 1;
        assert_eq!(by_exported_symbol(after_call_in(libc::malloc as *const () as usize)), Some(true));
        assert_eq!(by_exported_symbol(after_call_in(libc::fopen as *const () as usize)), Some(false));
        // This test's own code is not exported: left to the debug
        // information. And in an executable our code is the program's.
        let here = after_call_in(the_c_librarys_frames_are_classified_by_their_exported_symbol as *const () as usize);
        assert_eq!(by_exported_symbol(here), None);
        assert!(!in_this_library(here));
    }

    /// The symbol table gives the debug information's answer for code of
    /// the program and of the allocation machinery compiled into it
    /// (`Vec`'s, in debug and optimised builds alike), and
    /// no answer where no function is.
    #[cfg(all(target_os = "linux", not(miri)))]
    #[test]
    fn the_symbol_table_classifies_frames_as_the_debug_information_does() {
        use super::{by_debug_info, by_symbol_table, RESOLVING};
        let program = the_symbol_table_classifies_frames_as_the_debug_information_does as *const () as usize;
        let with_capacity = Vec::<u64>::with_capacity as fn(usize) -> Vec<u64>;
        let grow = Vec::<u32>::reserve as fn(&mut Vec<u32>, usize);
        // The locks in classify's order: the loader's, then the symbols'.
        crate::trace_unwind::with_loader(|| {
            let _g = RESOLVING.lock();
            // The symbol table names the function at an address.
            // SAFETY: the symbol lock is held, inside the loader lock.
            let name = unsafe {
                crate::trace_symtab::with_function_name(program + 4, |n| format!("{:#}", backtrace::SymbolName::new(n)))
            };
            let name = name.expect("the test binary has a symbol table");
            assert!(name.ends_with("the_symbol_table_classifies_frames_as_the_debug_information_does"), "{name}");
            for (f, machinery) in [
                (program, false),
                (super::is_machinery_name as *const () as usize, false),
                (with_capacity as *const () as usize, true),
                (grow as *const () as usize, true),
            ] {
                // A return address a few bytes into the function (the debug
                // information's lookup steps back two bytes from it).
                let ip = f + 4;
                assert_eq!(by_symbol_table(ip), Some(machinery), "{f:#x}");
                assert_eq!(by_debug_info(ip), machinery, "{f:#x}");
            }
            static NOT_CODE: [u8; 64] = [0; 64];
            assert_eq!(by_symbol_table(NOT_CODE.as_ptr() as usize + 8), None);
            // A module is looked at once, with a symbol table or without
            // one (the C library here, stripped): many of its addresses do
            // not use up the table of modules, and the program's are still
            // found.
            let libc_code = libc::getpid as *const () as usize;
            for i in 0..40 {
                // SAFETY: as above.
                let _ = unsafe { crate::trace_symtab::with_function_name(libc_code + 16 * i, |_| ()) };
            }
            assert_eq!(by_symbol_table(program + 4), Some(false));
        });
    }

    /// Captures from a mark taken here, by both walkers.
    #[inline(never)]
    fn both_captures(limit: usize) -> (Option<Vec<usize>>, Vec<usize>) {
        let marker = 0u8;
        let mark = super::Mark::here(&marker);
        let mut fast = [0usize; 64];
        let mut system = [0usize; 64];
        let nf = super::capture_fast(&mut fast[..limit], limit, mark);
        let ns = super::capture_system(&mut system[..limit], limit, mark);
        (nf.map(|n| fast[..n].to_vec()), system[..ns].to_vec())
    }

    #[inline(never)]
    fn program_calls(depth: u32, limit: usize) -> (Option<Vec<usize>>, Vec<usize>) {
        if depth == 0 {
            return both_captures(limit);
        }
        let r = program_calls(core::hint::black_box(depth - 1), limit);
        core::hint::black_box(&r);
        r
    }

    #[test]
    #[cfg_attr(miri, ignore = "no unwinder under Miri")]
    fn both_walkers_capture_the_same_frames() {
        for limit in [1, 3, 16, 64] {
            let (fast, system) = program_calls(5, limit);
            let fast = fast.expect("the caching walker walks a test's stack");
            assert!(!system.is_empty());
            assert_eq!(fast, system, "limit {limit}");
        }
    }
}
