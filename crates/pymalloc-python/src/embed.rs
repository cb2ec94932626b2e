//! What the debug hooks need from the interpreter: the GIL check, CPython's
//! fatal-error path, and the allocation traceback from tracemalloc.

use std::ffi::{c_char, c_int, c_uint, CStr};

use pymalloc::{debug, MemAllocatorEx};
use pyo3_ffi as ffi;

extern "C" {
    /// CPython's `PyMem_SetAllocator`, declared with pymalloc's struct, whose
    /// layout is CPython's `PyMemAllocatorEx`.
    pub fn PyMem_SetAllocator(domain: c_int, allocator: *mut MemAllocatorEx);
    fn PyGILState_Check() -> c_int;
    fn _Py_FatalErrorFunc(func: *const c_char, msg: *const c_char) -> !;
    fn _PyTraceMalloc_GetTraceback(domain: c_uint, ptr: usize) -> *mut ffi::PyObject;
}

/// Where tracemalloc saw the block at `ptr` allocated: the most recent
/// frame's file and line, or None if it is not traced. The debug hooks hand
/// out `ptr + HEADER_BYTES`, so that address is tried too.
pub fn allocation_site(py: pyo3::Python<'_>, ptr: usize) -> Option<(String, i64)> {
    use pyo3::prelude::*;
    use pyo3::types::PyTuple;
    [ptr, ptr + debug::HEADER_BYTES].into_iter().find_map(|p| {
        // SAFETY: the GIL is held (`py`); the result is a new reference to
        // a tuple of (str, int) tuples, None, or NULL with an error set.
        let tb = unsafe { Bound::from_owned_ptr_or_opt(py, _PyTraceMalloc_GetTraceback(0, p)) };
        let Some(tb) = tb else {
            // SAFETY: the GIL is held.
            unsafe { ffi::PyErr_Clear() };
            return None;
        };
        let frame = tb.cast::<PyTuple>().ok()?.get_item(0).ok()?;
        frame.extract::<(String, i64)>().ok()
    })
}

/// Installs the embedder callbacks of the debug hooks.
pub fn install_debug_callbacks() {
    debug::set_lock_check(Some(gil_held));
    debug::set_fatal_handler(Some(fatal));
    debug::set_traceback_dumper(Some(dump_traceback));
}

fn gil_held() -> bool {
    // SAFETY: PyGILState_Check may be called at any time, even before the
    // interpreter exists (it then answers 1).
    unsafe { PyGILState_Check() != 0 }
}

/// A NUL-terminated copy of `s` in a stack buffer (cut at 255 bytes).
fn c_buf(s: &[u8]) -> [u8; 256] {
    let mut b = [0u8; 256];
    let n = s.len().min(255);
    b[..n].copy_from_slice(&s[..n]);
    b
}

/// CPython's own fatal-error path: it prints the `Fatal Python error:` line,
/// the runtime state, the Python traceback of every thread and the extension
/// modules, then aborts.
fn fatal(func: &str, msg: &[u8]) -> ! {
    let (f, m) = (c_buf(func.as_bytes()), c_buf(msg));
    // SAFETY: both buffers are NUL-terminated; _Py_FatalErrorFunc (3.9 and
    // later) never returns.
    unsafe { _Py_FatalErrorFunc(f.as_ptr().cast(), m.as_ptr().cast()) }
}

fn write_fd(fd: i32, b: &[u8]) {
    let mut b = b;
    while !b.is_empty() {
        // SAFETY: writing our own initialised bytes.
        let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
        if n <= 0 {
            return;
        }
        b = &b[n as usize..];
    }
}

/// CPython's `_PyMem_DumpTraceback`: where the block at `p` was allocated,
/// if tracemalloc traced it.
fn dump_traceback(fd: i32, p: *const u8) {
    if !crate::version::tracemalloc_is_tracing(gil_held()) {
        write_fd(fd, b"Enable tracemalloc to get the memory block allocation traceback\n\n");
        return;
    }
    // The traceback is a Python object: without the GIL it cannot be read.
    if !gil_held() {
        return;
    }
    // SAFETY: the GIL is held; the object is a tuple of (str, int) tuples or
    // None, as _PyTraceMalloc_GetTraceback documents.
    unsafe {
        let tb = _PyTraceMalloc_GetTraceback(0, p.addr());
        if tb.is_null() {
            ffi::PyErr_Clear();
            return;
        }
        if ffi::PyTuple_Check(tb) == 0 {
            ffi::Py_DecRef(tb);
            return;
        }
        write_fd(fd, b"Memory block allocated at (most recent call first):\n");
        for i in 0..ffi::PyTuple_Size(tb) {
            let frame = ffi::PyTuple_GetItem(tb, i);
            let file = ffi::PyTuple_GetItem(frame, 0);
            let line = ffi::PyLong_AsSsize_t(ffi::PyTuple_GetItem(frame, 1));
            write_fd(fd, b"  File \"");
            write_ascii(fd, file);
            write_fd(fd, format!("\", line {line}\n").as_bytes());
        }
        write_fd(fd, b"\n");
        ffi::Py_DecRef(tb);
    }
}

/// CPython's `_Py_DumpASCII`: the string with non-ASCII characters escaped.
unsafe fn write_ascii(fd: i32, s: *mut ffi::PyObject) {
    // SAFETY: s is a str object and the GIL is held.
    let text = unsafe { ffi::PyUnicode_AsUTF8(s) };
    if text.is_null() {
        // SAFETY: the GIL is held.
        unsafe { ffi::PyErr_Clear() };
        write_fd(fd, b"???");
        return;
    }
    // SAFETY: PyUnicode_AsUTF8 returns a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let mut out = String::new();
    for ch in text.chars() {
        match ch as u32 {
            0x20..=0x7e => out.push(ch),
            c if c < 0x100 => out.push_str(&format!("\\x{c:02x}")),
            c if c < 0x10000 => out.push_str(&format!("\\u{c:04x}")),
            c => out.push_str(&format!("\\U{c:08x}")),
        }
    }
    write_fd(fd, out.as_bytes());
}
