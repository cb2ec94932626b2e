//! Load and exit.
//!
//! At load (an ELF constructor, before the program's `main`; `malloc` works
//! before it runs, with the default policy):
//!
//! * `PYMALLOC_PURGE` names the purge policy of the thread heaps and of
//!   the segment region's freed slots (`pymalloc::PurgePolicy::parse`;
//!   unset: decay of one second, driven by
//!   the program's own frees: no thread is started in a program that did
//!   not ask for one). A name that is not a policy is reported with the
//!   valid ones, and the program exits with status 2 before it starts.
//! * `PYTHONTRACEMALLOC=N` traces every block of the C allocation API with
//!   up to `N` frames (`pymalloc::trace`; in `libpymalloc_preload_trace.so`
//!   only, see `traced.rs`); `PYMALLOC_TRACE_DUMP=path` and
//!   `PYMALLOC_TRACE_PEAK_DUMP=path` write the snapshot and the peak's at
//!   exit (`pymalloc::snapshot::trace_from_env`). A bad `N` ends the
//!   program as a bad policy name does.
//! * The `fork` handlers are registered (`pymalloc::fork`).
//!
//! At exit, `PYMALLOC_PRELOAD_STATS=1` prints the statistics table of the
//! thread heaps to stderr, as `PYTHONMALLOCSTATS` does for CPython;
//! `PYMALLOC_PRELOAD_STATS=/a/path` appends it to that file instead (many
//! programs, `ls` and `git` among them, close stderr before the handlers
//! registered at load run).

use std::ffi::CStr;

use pymalloc::PurgePolicy;

/// The variable `name`, read with libc's `getenv` (not `std::env`, whose
/// code would be one more page of text in every program).
pub(crate) fn env(name: &CStr) -> Option<String> {
    // SAFETY: getenv with a NUL-terminated name; the result is null or a
    // NUL-terminated string we copy at once (no one changes the
    // environment while constructors run).
    let v = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: v is non-null and NUL-terminated.
    (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
}

extern "C" fn on_load() {
    if let Some(name) = env(c"PYMALLOC_PURGE") {
        match PurgePolicy::parse(&name) {
            Ok(p) => pymalloc::config::set_purge_policy(p),
            Err(e) => exit_with(format_args!("PYMALLOC_PURGE: {e}")),
        }
    }
    if let Err(e) = crate::traced::start_from_env() {
        exit_with(format_args!("{e}"));
    }
    if !pymalloc::fork::install() {
        eprintln!("libpymalloc_preload: pthread_atfork failed; fork() in a program with threads may hang");
    }
    if env(c"PYMALLOC_PRELOAD_STATS").is_some_and(|v| !v.is_empty() && v != "0") {
        // SAFETY: print_stats is a plain function that lives as long as the
        // program.
        unsafe { libc::atexit(print_stats) };
    }
}

/// Says what is wrong with the environment and ends the program (status
/// 2), out of line from the start-up, which runs in every program.
#[cold]
#[inline(never)]
fn exit_with(msg: core::fmt::Arguments) -> ! {
    eprintln!("libpymalloc_preload: {msg}");
    // SAFETY: _exit has no precondition.
    unsafe { libc::_exit(2) }
}

extern "C" fn print_stats() {
    let to = env(c"PYMALLOC_PRELOAD_STATS").unwrap_or_default();
    if !to.starts_with('/') {
        write_stats(2);
        return;
    }
    let Ok(path) = std::ffi::CString::new(to) else { return };
    // SAFETY: open with a NUL-terminated path; the descriptor is ours.
    let fd =
        unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC, 0o644) };
    if fd >= 0 {
        write_stats(fd);
        // SAFETY: fd is open and ours.
        unsafe { libc::close(fd) };
    }
}

/// CPython's table of the small blocks, then a line on the larger ones
/// (also `malloc_stats`, `introspect.rs`).
pub(crate) fn write_stats(fd: i32) {
    pymalloc::stats::write_to_fd(&pymalloc::thread::stats(), fd);
    let s = pymalloc::every_size::stats();
    pymalloc::stats::write_fmt_to_fd(
        fd,
        format_args!(
            "# blocks above 512 bytes: {} medium ({} bytes), {} large ({} bytes), {} huge ({} bytes); \
             {} segments of 1 MiB, {} bytes free but resident, {} bytes of freed huge blocks kept\n",
            s.medium_blocks,
            s.medium_bytes,
            s.large_blocks,
            s.large_bytes,
            s.huge_blocks,
            s.huge_bytes,
            s.segments,
            s.dirty_bytes,
            s.huge_kept_bytes
        ),
    );
}

/// Runs [`on_load`] when the library is loaded.
#[used]
#[link_section = ".init_array"]
static ON_LOAD: extern "C" fn() = on_load;
