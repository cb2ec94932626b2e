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
//! Invariant: the first `LEN` entries of `MODULES` are modules mapped so,
//! each with the bounds of its tables checked against its mapping; only a
//! caller holding `trace_frames`' symbol lock reads or adds them.

use core::cell::UnsafeCell;
use core::ffi::CStr;

/// A mapped module: its load address, its file's bytes, and where its
/// symbol table and their names lie in them.
#[derive(Clone, Copy)]
struct Module {
    base: usize,
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
    all: UnsafeCell<[Option<Module>; MAX_MODULES]>,
}

// SAFETY: read and written only under the symbol lock (the invariant).
unsafe impl Sync for Modules {}

static MODULES: Modules = Modules { len: UnsafeCell::new(0), all: UnsafeCell::new([None; MAX_MODULES]) };

/// Calls `f` with the (mangled) name of the function whose code holds
/// `addr`, by its module's symbol table; None if the module has none or no
/// function symbol covers `addr`.
///
/// # Safety
/// The caller holds the symbol lock (`trace_frames::RESOLVING`).
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

/// The mapped module holding `addr`, mapped now if it is new; None if the
/// loader knows no module there or its file has no symbol table.
///
/// # Safety
/// The caller holds the symbol lock.
unsafe fn module_of(addr: usize) -> Option<Module> {
    // SAFETY: all zeroes is a valid Dl_info (null pointers).
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables and fills `info`.
    let found =
        crate::trace_unwind::with_loader(|| unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) }) != 0;
    if !found || info.dli_fbase.is_null() {
        return None;
    }
    let base = info.dli_fbase as usize;
    // SAFETY: the symbol lock is held (the contract, and the invariant).
    let (len, all) = unsafe { (&mut *MODULES.len.get(), &mut *MODULES.all.get()) };
    if let Some(m) = all[..*len].iter().flatten().find(|m| m.base == base) {
        return Some(*m);
    }
    if *len == MAX_MODULES {
        return None;
    }
    // The program itself: its name in the loader's list may be empty.
    // SAFETY: getauxval has no precondition.
    let entry = unsafe { libc::getauxval(libc::AT_ENTRY) } as usize;
    let is_program = crate::trace_frames::module_base(entry) == base;
    let path: &CStr = if is_program || info.dli_fname.is_null() {
        c"/proc/self/exe"
    } else {
        // SAFETY: dli_fname is the module's NUL-terminated file name.
        unsafe { CStr::from_ptr(info.dli_fname) }
    };
    let m = map(path, base);
    // A module without a symbol table is remembered too, as such.
    all[*len] = m;
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
        // The mapping is never unmapped: 'static.
        core::slice::from_raw_parts(p.cast::<u8>(), len)
    };
    let parsed = parse(bytes, base);
    if parsed.is_none() {
        // SAFETY: the mapping made above, not referred to by anything else.
        unsafe { libc::munmap(bytes.as_ptr().cast_mut().cast(), bytes.len()) };
    }
    parsed
}

const SYM_SIZE: usize = 24;
const STT_FUNC: u8 = 2;
const SHT_SYMTAB: u32 = 2;
const ET_DYN: u16 = 3;

/// The symbol table of an ELF file's bytes, every bound checked.
fn parse(bytes: &'static [u8], base: usize) -> Option<Module> {
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let kind = u16_at(bytes.get(16..18)?, 0);
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
    let bias = if kind == ET_DYN { base } else { 0 };
    Some(Module { base, bias, bytes, syms: (off, size / SYM_SIZE), names: (names, names_len) })
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

    #[inline(never)]
    fn probe_function_for_the_symbol_table(x: usize) -> usize {
        std::hint::black_box(x) * 3
    }

    #[test]
    fn the_symbol_table_names_a_function_of_the_program_and_nothing_for_data() {
        assert_eq!(probe_function_for_the_symbol_table(2), 6);
        let _g = crate::trace_frames::RESOLVING.lock();
        let f = probe_function_for_the_symbol_table as *const () as usize;
        // SAFETY: the symbol lock is held.
        let name = unsafe { with_function_name(f + 1, |n| format!("{:#}", backtrace::SymbolName::new(n))) };
        let name = name.expect("the test binary has a symbol table");
        assert!(name.ends_with("probe_function_for_the_symbol_table"), "{name}");
        static DATA: [u8; 64] = [0; 64];
        // SAFETY: as above.
        assert_eq!(unsafe { with_function_name(DATA.as_ptr() as usize + 8, |_| ()) }, None);
    }

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
