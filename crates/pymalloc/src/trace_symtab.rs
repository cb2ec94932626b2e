//! The function that holds a code address, by the ELF symbol table
//! (`.symtab`) of the module the address lies in, read from the module's
//! file: what the tracer needs to tell the allocation machinery from the
//! program (`trace_frames.rs`), without the debug information.
//!
//! Looking an address up in the debug information, as `backtrace::resolve`
//! does, parses the whole compilation unit that holds it: with one unit per
//! crate graph (fat LTO) that was 41M instructions at a traced Rust
//! program's first allocations, 2.6% of all the tracer's work on the json
//! workload. The symbol table answers in a scan of its entries (about 1,400
//! in the benchmark driver). It names the function the code was compiled
//! into, which is the outermost of an inlined chain: the frame the
//! classification goes by. A module without a symbol table (stripped), or
//! an address no symbol covers, gets no answer here; the caller falls back
//! to the debug information.
//!
//! Each module's file is mapped once, read-only, and stays mapped: only the
//! pages of its headers and tables are ever read.
//!
//! The file is the module's only if its ELF header is the one the loader
//! mapped at the module's base; a module whose file cannot be read, is not
//! that one, or has no symbol table is remembered as having none.
//!
//! Invariant: the first `len` entries of `MODULES` are the modules looked
//! at so far, by load address, each with its mapping (tables' bounds
//! checked) or none; only a caller holding the tracer's symbol lock (and,
//! before it, the loader lock) reads or adds them.

use core::cell::UnsafeCell;
use core::ffi::CStr;

use crate::trace_unwind::with_loader;

/// A mapped module: its file's bytes, and where its symbol table and
/// their names lie in them.
#[derive(Clone, Copy)]
struct Module {
    /// What to subtract from an address to get the symbols' values: the
    /// load address for a position-independent module, 0 for a fixed one.
    bias: usize,
    bytes: &'static [u8],
    /// Offset and count of the 24-byte `Elf64_Sym` entries.
    syms: (usize, usize),
    /// Offset and size of the names.
    names: (usize, usize),
}

/// Modules mapped so far (a program has a handful next to its allocator).
const MAX_MODULES: usize = 16;

struct Modules {
    len: UnsafeCell<usize>,
    /// A module's load address, and its symbol table if it has one.
    all: UnsafeCell<[(usize, Option<Module>); MAX_MODULES]>,
}

// SAFETY: read and written only under the symbol lock (the invariant).
unsafe impl Sync for Modules {}

static MODULES: Modules = Modules { len: UnsafeCell::new(0), all: UnsafeCell::new([(0, None); MAX_MODULES]) };

/// Calls `f` with the (mangled) name of the function whose code holds
/// `addr`, by its module's symbol table; None if the module has none or no
/// function symbol covers `addr`.
///
/// # Safety
/// The caller holds the tracer's symbol lock, taken inside the loader lock
/// ([`with_loader`]).
pub(crate) unsafe fn with_function_name<R>(addr: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    // SAFETY: the lock is held (the contract).
    let m = unsafe { module_of(addr)? };
    let rel = addr.checked_sub(m.bias)? as u64;
    let (off, count) = m.syms;
    let name = (0..count).find_map(|i| {
        let e = &m.bytes[off + i * SYM_SIZE..off + (i + 1) * SYM_SIZE];
        let (name, info, shndx) = (u32_at(e, 0) as usize, e[4], u16_at(e, 6));
        let (value, size) = (u64_at(e, 8), u64_at(e, 16));
        let is_function = info & 0xf == STT_FUNC && shndx != 0;
        (is_function && value <= rel && rel < value.saturating_add(size)).then_some(name)
    })?;
    let (names, len) = m.names;
    let tail = m.bytes.get(names + name..names + len)?;
    let end = tail.iter().position(|&b| b == 0)?;
    Some(f(&tail[..end]))
}

/// The load address of the module (executable or shared object) holding
/// `addr` and its file name as the loader knows it (null or empty for the
/// program itself, on some systems); None if no module holds it.
pub(crate) fn loaded_module(addr: usize) -> Option<(usize, *const libc::c_char)> {
    // SAFETY: all zeroes is a valid Dl_info (null pointers).
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables and fills `info`.
    let found = with_loader(|| unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) }) != 0;
    (found && !info.dli_fbase.is_null()).then_some((info.dli_fbase as usize, info.dli_fname))
}

/// The mapped module holding `addr`, mapped now if it is new; None if the
/// loader knows no module there or it has no symbol table to read.
///
/// # Safety
/// The caller holds the symbol lock.
unsafe fn module_of(addr: usize) -> Option<Module> {
    let (base, name) = loaded_module(addr)?;
    // SAFETY: the symbol lock is held (the contract, and the invariant).
    let (len, all) = unsafe { (&mut *MODULES.len.get(), &mut *MODULES.all.get()) };
    if let Some((_, m)) = all[..*len].iter().find(|(b, _)| *b == base) {
        return *m;
    }
    if *len == MAX_MODULES {
        return None;
    }
    // The program itself: its name in the loader's list may be empty.
    // SAFETY: getauxval has no precondition.
    let entry = unsafe { libc::getauxval(libc::AT_ENTRY) } as usize;
    let is_program = loaded_module(entry).is_some_and(|(b, _)| b == base);
    let path: &CStr = if is_program || name.is_null() {
        c"/proc/self/exe"
    } else {
        // SAFETY: dli_fname is the module's NUL-terminated file name.
        unsafe { CStr::from_ptr(name) }
    };
    let m = map(path, base);
    all[*len] = (base, m);
    *len += 1;
    m
}

/// Maps the file at `path` and finds its symbol table; None if it cannot
/// be read or is not a 64-bit little-endian ELF file with one.
fn map(path: &CStr, base: usize) -> Option<Module> {
    // SAFETY: path is NUL-terminated; open, fstat, mmap and close have no
    // other precondition, and the mapping is only read.
    let bytes: &'static [u8] = unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let mut st: libc::stat = core::mem::zeroed();
        let len = if libc::fstat(fd, &mut st) == 0 { st.st_size as usize } else { 0 };
        let p = if len == 0 {
            libc::MAP_FAILED
        } else {
            libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, fd, 0)
        };
        libc::close(fd);
        if p == libc::MAP_FAILED {
            return None;
        }
        // The mapping is never unmapped: 'static. (A file truncated in
        // place under it would make a read of the lost pages fault, as it
        // would for any reader of a mapped file.)
        core::slice::from_raw_parts(p.cast::<u8>(), len)
    };
    // SAFETY: a loaded module's first page, at its base, holds its ELF
    // header (the loader maps the first segment from the file's start).
    let loaded = unsafe { core::slice::from_raw_parts(base as *const u8, EHDR_SIZE) };
    let parsed = if bytes.get(..EHDR_SIZE) == Some(loaded) { parse(bytes, base) } else { None };
    if parsed.is_none() {
        // SAFETY: the mapping made above, not referred to by anything else.
        unsafe { libc::munmap(bytes.as_ptr().cast_mut().cast(), bytes.len()) };
    }
    parsed
}

const EHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;
const PT_LOAD: u32 = 1;
const STT_FUNC: u8 = 2;
const SHT_SYMTAB: u32 = 2;

/// The symbol table of an ELF file's bytes, every bound checked.
fn parse(bytes: &'static [u8], base: usize) -> Option<Module> {
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = u64_at(bytes.get(0x28..0x30)?, 0) as usize;
    let shentsize = u16_at(bytes.get(0x3a..0x3c)?, 0) as usize;
    let shnum = u16_at(bytes.get(0x3c..0x3e)?, 0) as usize;
    if shentsize < 64 {
        return None;
    }
    let section = |i: usize| bytes.get(shoff.checked_add(i.checked_mul(shentsize)?)?..)?.get(..64);
    let (symtab, link) = (0..shnum).find_map(|i| {
        let s = section(i)?;
        (u32_at(s, 4) == SHT_SYMTAB).then(|| (s, u32_at(s, 40) as usize))
    })?;
    let strtab = section(link)?;
    let (off, size, entsize) = (u64_at(symtab, 24) as usize, u64_at(symtab, 32) as usize, u64_at(symtab, 56));
    let (names, names_len) = (u64_at(strtab, 24) as usize, u64_at(strtab, 32) as usize);
    if entsize != SYM_SIZE as u64 {
        return None;
    }
    bytes.get(off..off.checked_add(size)?)?;
    bytes.get(names..names.checked_add(names_len)?)?;
    let bias = base.checked_sub(first_load_address(bytes)?)?;
    Some(Module { bias, bytes, syms: (off, size / SYM_SIZE), names: (names, names_len) })
}

/// The address the file's first loaded segment (the one holding its start)
/// asks for: the module's base less its load bias, 0 for a
/// position-independent module, the fixed address of an executable.
fn first_load_address(bytes: &[u8]) -> Option<usize> {
    let phoff = u64_at(bytes.get(0x20..0x28)?, 0) as usize;
    let phentsize = u16_at(bytes.get(0x36..0x38)?, 0) as usize;
    let phnum = u16_at(bytes.get(0x38..0x3a)?, 0) as usize;
    if phentsize < 56 {
        return None;
    }
    (0..phnum).find_map(|i| {
        let h = bytes.get(phoff.checked_add(i.checked_mul(phentsize)?)?..)?.get(..56)?;
        (u32_at(h, 0) == PT_LOAD && u64_at(h, 8) == 0).then(|| u64_at(h, 16) as usize)
    })
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("four bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("eight bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_elf_or_has_no_symbol_table_gives_no_module() {
        let junk: &'static [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        assert!(parse(junk, 0).is_none());
        let mut header = vec![0u8; 4096];
        header[..6].copy_from_slice(b"\x7fELF\x02\x01");
        // Section headers past the end of the file.
        header[0x28..0x30].copy_from_slice(&1_000_000u64.to_le_bytes());
        header[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        header[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        assert!(parse(Box::leak(header.into_boxed_slice()), 0).is_none());
    }
}
