//! The debug hooks: layout, fill patterns, serial numbers and realloc in
//! process; and every fault kind in every domain in a child process (faults
//! end the process), with the report checked against CPython 3.11's text.

mod common;

use std::ffi::c_void;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use pymalloc::config::{self, AllocatorName};
use pymalloc::debug::{self, CLEANBYTE, DEADBYTE, EXTRA_BYTES, FORBIDDENBYTE};
use pymalloc::{Domain, MemAllocatorEx};

const SST: usize = std::mem::size_of::<usize>();

fn bytes<'a>(p: *const u8, n: usize) -> &'a [u8] {
    unsafe { std::slice::from_raw_parts(p, n) }
}

#[test]
fn layout_and_fill_patterns() {
    let _g = common::exclusive();
    for cfg in [AllocatorName::PymallocDebug, AllocatorName::MallocDebug] {
        unsafe { config::setup(cfg).unwrap() };
        for d in Domain::ALL {
            let before = debug::serial_number();
            let p = d.malloc(20);
            let info = unsafe { debug::block_info(p) };
            assert_eq!(info.size, 20);
            assert_eq!(info.api_id, d.api_id());
            assert_eq!(info.serial, before + 1);
            // Size big-endian, API id, SST-1 forbidden bytes, data, SST forbidden bytes.
            let head = bytes(unsafe { p.sub(2 * SST) }, 2 * SST);
            assert_eq!(&head[..SST], &20usize.to_be_bytes());
            assert_eq!(head[SST], d.api_id());
            assert!(head[SST + 1..].iter().all(|&b| b == FORBIDDENBYTE));
            assert!(bytes(p, 20).iter().all(|&b| b == CLEANBYTE), "fresh memory is 0xCD");
            assert!(bytes(unsafe { p.add(20) }, SST).iter().all(|&b| b == FORBIDDENBYTE));
            assert_eq!(bytes(unsafe { p.add(20 + SST) }, SST), &info.serial.to_be_bytes());

            let z = d.calloc(5, 4);
            assert!(bytes(z, 20).iter().all(|&b| b == 0), "calloc memory is zero");
            assert_eq!(unsafe { debug::block_info(z) }.size, 20);

            // Realloc keeps the contents and the decorations, fills growth with 0xCD.
            unsafe { p.write_bytes(0x11, 20) };
            let q = unsafe { d.realloc(p, 300) };
            let info = unsafe { debug::block_info(q) };
            assert_eq!((info.size, info.api_id), (300, d.api_id()));
            assert!(bytes(q, 20).iter().all(|&b| b == 0x11));
            assert!(bytes(unsafe { q.add(20) }, 280).iter().all(|&b| b == CLEANBYTE));
            assert!(bytes(unsafe { q.add(300) }, SST).iter().all(|&b| b == FORBIDDENBYTE));
            let r = unsafe { d.realloc(q, 10) };
            assert_eq!(unsafe { debug::block_info(r) }.size, 10);
            assert!(bytes(r, 10).iter().all(|&b| b == 0x11));
            // A failed realloc restores the old block's decorations.
            assert!(unsafe { d.realloc(r, isize::MAX as usize - 8) }.is_null());
            assert_eq!(unsafe { debug::block_info(r) }.size, 10);
            assert!(bytes(r, 10).iter().all(|&b| b == 0x11));
            assert!(bytes(unsafe { r.add(10) }, SST).iter().all(|&b| b == FORBIDDENBYTE));
            // Big blocks: only the ends are erased and restored around realloc.
            let big = unsafe { d.realloc(r, 5000) };
            for i in 0..5000 {
                unsafe { *big.add(i) = (i % 251) as u8 };
            }
            let big2 = unsafe { d.realloc(big, 9000) };
            assert!((0..5000).all(|i| unsafe { *big2.add(i) } == (i % 251) as u8), "{cfg} {d:?}");
            let small = unsafe { d.realloc(big2, 100) };
            assert!((0..100).all(|i| unsafe { *small.add(i) } == (i % 251) as u8));
            unsafe {
                d.free(small);
                d.free(z);
            }
        }
    }
}

/// An allocator that never really frees, so freed memory can be inspected.
unsafe extern "C" fn keep_malloc(_: *mut c_void, n: usize) -> *mut c_void {
    pymalloc::raw::malloc(n).cast()
}
unsafe extern "C" fn keep_calloc(_: *mut c_void, n: usize, s: usize) -> *mut c_void {
    pymalloc::raw::calloc(n, s).cast()
}
unsafe extern "C" fn keep_realloc(_: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    // Always move, and keep the old block: a stale pointer stays readable.
    let q = pymalloc::raw::malloc(n);
    if !q.is_null() && !p.is_null() {
        std::ptr::copy_nonoverlapping(p.cast::<u8>(), q, n.min(64));
    }
    q.cast()
}
unsafe extern "C" fn keep_free(_: *mut c_void, _: *mut c_void) {}

#[test]
fn freed_and_moved_memory_is_dead() {
    let _g = common::exclusive();
    unsafe {
        Domain::Mem.set_allocator(MemAllocatorEx {
            ctx: std::ptr::null_mut(),
            malloc: keep_malloc,
            calloc: keep_calloc,
            realloc: keep_realloc,
            free: keep_free,
        });
        debug::setup_domain(Domain::Mem);
    }
    let p = Domain::Mem.malloc(40);
    unsafe { Domain::Mem.free(p) };
    let whole = bytes(unsafe { p.sub(2 * SST) }, 40 + EXTRA_BYTES);
    assert!(whole.iter().all(|&b| b == DEADBYTE), "freed block, header and trailer are 0xDD");

    let moved = Domain::Mem.malloc(40);
    let q = unsafe { Domain::Mem.realloc(moved, 60) };
    assert_ne!(moved, q);
    let old = bytes(unsafe { moved.sub(2 * SST) }, 40 + EXTRA_BYTES);
    assert!(old.iter().all(|&b| b == DEADBYTE), "the block realloc moved away from is 0xDD");
    unsafe { Domain::Mem.free(q) };
    // The keeping allocator never freed anything: release the blocks now.
    for data in [p, moved, q] {
        unsafe { pymalloc::raw::free(data.sub(2 * SST)) };
    }
}

#[test]
fn setup_is_idempotent_and_current_sees_through_it() {
    let _g = common::exclusive();
    unsafe {
        config::setup(AllocatorName::Pymalloc).unwrap();
        debug::setup_debug_hooks();
        let once = Domain::ALL.map(Domain::allocator);
        debug::setup_debug_hooks();
        let twice = Domain::ALL.map(Domain::allocator);
        assert!(once.iter().zip(&twice).all(|(a, b)| a.same_as(b)));
    }
    assert_eq!(config::current(), Some(AllocatorName::PymallocDebug));
    let under = debug::hooked_allocators().unwrap();
    assert!(under[0].is(&MemAllocatorEx::malloc()));
    assert!(under[1].is(&MemAllocatorEx::pymalloc_threaded()), "the default pymalloc mode is per-thread heaps");
}

#[test]
fn the_lock_check_passes_when_the_lock_is_held() {
    let _g = common::exclusive();
    unsafe { config::setup(AllocatorName::Debug).unwrap() };
    debug::set_lock_check(Some(|| true));
    for d in Domain::ALL {
        let p = d.malloc(8);
        let p = unsafe { d.realloc(p, 16) };
        unsafe { d.free(p) };
        unsafe { d.free(d.calloc(2, 2)) };
    }
}

// ---------------------------------------------------------------------------
// Faults, in child processes.

const CHILD_ENV: &str = "PYMALLOC_DEBUG_FAULT";

fn domain(c: char) -> Domain {
    match c {
        'r' => Domain::Raw,
        'm' => Domain::Mem,
        _ => Domain::Obj,
    }
}

/// The child: set up, commit the fault named by `spec`, and (not) survive.
fn child(spec: &str) -> ! {
    let parts: Vec<&str> = spec.split(':').collect();
    let (kind, cfg, serial) = (parts[0], parts[1], parts[2] == "serial");
    debug::set_report_serial(serial);
    unsafe { config::setup(cfg.parse().unwrap()).unwrap() };
    let d = domain(parts[3].chars().next().unwrap());
    unsafe {
        match kind {
            "overflow" => {
                let p = d.malloc(16);
                *p.add(16) = b'x';
                d.free(p);
            }
            "underflow" => {
                let p = d.malloc(16);
                *p.sub(1) = b'x';
                *p.sub(3) = b'y';
                d.free(p);
            }
            "realloc_overflow" => {
                let p = d.malloc(10);
                *p.add(12) = b'x';
                d.realloc(p, 100);
            }
            "misuse" => {
                let p = d.malloc(16);
                domain(parts[4].chars().next().unwrap()).free(p);
            }
            "double_free" => {
                let p = d.malloc(16);
                d.free(p);
                d.free(p);
            }
            "gil" => {
                debug::set_lock_check(Some(|| false));
                match parts[4] {
                    "malloc" => drop(d.malloc(8)),
                    "calloc" => drop(d.calloc(1, 8)),
                    "realloc" => drop(d.realloc(std::ptr::null_mut(), 8)),
                    _ => d.free(std::ptr::null_mut()),
                }
            }
            "hooks" => {
                debug::set_traceback_dumper(Some(|fd, p| {
                    let msg = format!("TRACEBACK OF {p:p}\n");
                    libc::write(fd, msg.as_ptr().cast(), msg.len());
                }));
                debug::set_fatal_handler(Some(|func, msg| {
                    eprintln!("HANDLER {func}: {}", String::from_utf8_lossy(msg));
                    std::process::exit(3)
                }));
                let p = d.malloc(4);
                *p.add(4) = 0;
                d.free(p);
            }
            _ => panic!("unknown fault {kind}"),
        }
    }
    eprintln!("the fault was not detected");
    std::process::exit(0)
}

/// Runs fault `spec` in a child process; returns its raw stderr and status.
fn fault_bytes(spec: &str) -> (Vec<u8>, std::process::ExitStatus) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "fault_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .output()
        .unwrap();
    (out.stderr, out.status)
}

/// Runs fault `spec` in a child process; returns its stderr and status.
fn fault(spec: &str) -> (String, std::process::ExitStatus) {
    let (err, status) = fault_bytes(spec);
    (String::from_utf8_lossy(&err).into_owned(), status)
}

/// The entry point the children run; does nothing in the parent.
#[test]
fn fault_child() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
    }
}

/// Replaces `0x<hex>` addresses with `ADDR`.
fn scrub(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("0x") {
        out.push_str(&rest[..i]);
        let hex = rest[i + 2..].bytes().take_while(u8::is_ascii_hexdigit).count();
        // Keep byte values ("0x78", "0xfd"): two hex digits.
        if hex == 2 {
            out.push_str(&rest[i..i + 4]);
        } else {
            out.push_str("ADDR");
        }
        rest = &rest[i + 2 + hex..];
    }
    out.push_str(rest);
    out
}

fn aborted(status: &std::process::ExitStatus) -> bool {
    status.signal() == Some(libc::SIGABRT)
}

/// The reference report for `pymem_buffer_overflow`, up to and including the
/// fatal-error line (what follows is the interpreter's).
fn reference(case: &str) -> String {
    let text = include_str!("data/cpython-3.11/debug-hooks-reports.txt");
    let start = text.find(&format!("=== {case}\n")).unwrap() + case.len() + 5;
    let body = &text[start..];
    let end = body.find("Python runtime state").unwrap();
    body[..end].to_string()
}

#[test]
#[cfg_attr(miri, ignore = "spawns processes")]
fn overflow_report_is_cpythons_byte_for_byte() {
    let (err, status) = fault("overflow:pymalloc_debug:noserial:m");
    assert!(aborted(&status), "{status:?}\n{err}");
    assert_eq!(scrub(&err), scrub(&reference("pymem_buffer_overflow")));
}

#[test]
#[cfg_attr(miri, ignore = "spawns processes")]
fn api_misuse_report_is_cpythons_byte_for_byte() {
    let (err, status) = fault("misuse:pymalloc_debug:noserial:m:r");
    assert!(aborted(&status));
    assert_eq!(scrub(&err), scrub(&reference("pymem_api_misuse")));
}

#[test]
#[cfg_attr(miri, ignore = "spawns processes")]
fn every_fault_in_every_domain() {
    for cfg in ["pymalloc_debug", "malloc_debug"] {
        for d in ['r', 'm', 'o'] {
            // Overflow, with the serial number line CPython's regex allows.
            let (err, st) = fault(&format!("overflow:{cfg}:serial:{d}"));
            assert!(aborted(&st), "{cfg} {d}: {st:?}\n{err}");
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(scrub(lines[0]), format!("Debug memory block at address p=ADDR: API '{d}'"));
            assert_eq!(lines[1], "    16 bytes originally requested");
            assert_eq!(lines[2], "    The 7 pad bytes at p-7 are FORBIDDENBYTE, as expected.");
            assert_eq!(scrub(lines[3]), "    The 8 pad bytes at tail=ADDR are not all FORBIDDENBYTE (0xfd):");
            assert_eq!(lines[4], "        at tail+0: 0x78 *** OUCH");
            assert_eq!(lines[11], "        at tail+7: 0xfd");
            assert!(lines[12].starts_with("    The block was made by call #"), "{}", lines[12]);
            assert!(lines[12].ends_with(" to debug malloc/realloc."));
            assert_eq!(lines[13], "    Data at p: cd cd cd cd cd cd cd cd cd cd cd cd cd cd cd cd");
            assert_eq!(lines[15], "Enable tracemalloc to get the memory block allocation traceback");
            assert_eq!(lines[17], "Fatal Python error: _PyMem_DebugRawFree: bad trailing pad byte");

            // Underflow: the leading pad bytes.
            let (err, st) = fault(&format!("underflow:{cfg}:noserial:{d}"));
            assert!(aborted(&st), "{cfg} {d}: {err}");
            let want = "    16 bytes originally requested\n\
                 \x20   The 7 pad bytes at p-7 are not all FORBIDDENBYTE (0xfd):\n\
                 \x20       at p-7: 0xfd\n        at p-6: 0xfd\n        at p-5: 0xfd\n        at p-4: 0xfd\n\
                 \x20       at p-3: 0x79 *** OUCH\n        at p-2: 0xfd\n        at p-1: 0x78 *** OUCH\n\
                 \x20   Because memory is corrupted at the start, the count of bytes requested\n\
                 \x20      may be bogus, and checking the trailing pad bytes may segfault.\n\
                 \x20   The 8 pad bytes at tail=ADDR are FORBIDDENBYTE, as expected.\n\
                 \x20   Data at p: cd cd cd cd cd cd cd cd cd cd cd cd cd cd cd cd\n\n\
                 Enable tracemalloc to get the memory block allocation traceback\n\n\
                 Fatal Python error: _PyMem_DebugRawFree: bad leading pad byte\n";
            assert!(scrub(&err).ends_with(want), "{cfg} {d}:\n{err}");

            // Realloc finds the trailing guard broken.
            let (err, st) = fault(&format!("realloc_overflow:{cfg}:noserial:{d}"));
            assert!(aborted(&st));
            assert!(err.contains("        at tail+2: 0x78 *** OUCH\n"), "{err}");
            assert!(err.contains("    Data at p: cd cd cd cd cd cd cd cd cd cd\n"), "{err}");
            assert!(err.ends_with("Fatal Python error: _PyMem_DebugRawRealloc: bad trailing pad byte\n"), "{err}");

            // Freed with another domain's API.
            for other in ['r', 'm', 'o'].into_iter().filter(|&o| o != d) {
                let (err, st) = fault(&format!("misuse:{cfg}:noserial:{d}:{other}"));
                assert!(aborted(&st));
                assert!(err.starts_with("Debug memory block at address p=0x"));
                assert!(err.ends_with(&format!(
                    "Fatal Python error: _PyMem_DebugRawFree: bad ID: Allocated using API '{d}', verified using API '{other}'\n"
                )), "{err}");
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "spawns processes")]
fn a_double_free_is_caught_without_crashing_the_report() {
    // The id byte of a freed block is 0xDD: CPython prints it raw.
    let (raw, st) = fault_bytes("double_free:pymalloc_debug:noserial:o");
    let err = String::from_utf8_lossy(&raw);
    assert!(aborted(&st), "{st:?}\n{err}");
    assert!(raw.starts_with(b"Debug memory block at address p=0x"), "{err}");
    assert!(
        err.contains("    The 7 pad bytes at p-7 are not all FORBIDDENBYTE (0xfd):\n        at p-7: 0xdd *** OUCH\n"),
        "{err}"
    );
    let want = b"Fatal Python error: _PyMem_DebugRawFree: bad ID: Allocated using API '\xdd', verified using API 'o'\n";
    assert!(raw.ends_with(want), "{err}");
}

#[test]
#[cfg_attr(miri, ignore = "spawns processes")]
fn calls_without_the_lock_are_fatal_in_mem_and_obj() {
    for d in ['m', 'o'] {
        for (op, func) in [
            ("malloc", "_PyMem_DebugMalloc"),
            ("calloc", "_PyMem_DebugCalloc"),
            ("realloc", "_PyMem_DebugRealloc"),
            ("free", "_PyMem_DebugFree"),
        ] {
            let (err, st) = fault(&format!("gil:pymalloc_debug:noserial:{d}:{op}"));
            assert!(aborted(&st), "{d} {op}: {err}");
            assert_eq!(
                err,
                format!("Fatal Python error: {func}: Python memory allocator called without holding the GIL\n")
            );
        }
    }
    // RAW needs no lock.
    let (err, st) = fault("gil:pymalloc_debug:noserial:r:malloc");
    assert_eq!(st.code(), Some(0), "{err}");
    assert_eq!(err, "the fault was not detected\n");
}

#[test]
#[cfg_attr(miri, ignore = "spawns processes")]
fn embedder_traceback_and_fatal_handlers_are_used() {
    let (err, st) = fault("hooks:malloc_debug:noserial:m");
    assert_eq!(st.code(), Some(3), "{err}");
    assert!(!err.contains("Enable tracemalloc"), "{err}");
    let tb = err.lines().find(|l| l.starts_with("TRACEBACK OF 0x")).expect(&err);
    assert!(err.starts_with(&format!("Debug memory block at address p={}:", &tb[13..])), "{err}");
    assert!(err.ends_with("HANDLER _PyMem_DebugRawFree: bad trailing pad byte\n"), "{err}");
}
