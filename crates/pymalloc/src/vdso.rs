//! The kernel's `clock_gettime`, called in the vDSO without going through
//! the C library.
//!
//! glibc's `clock_gettime` only forwards to the vDSO, but it lies in a
//! 64 KiB window of glibc's text that a program which never reads the
//! clock leaves unmapped: the decay's clock cost such a program a window of
//! page cache in its resident set (64 KiB, measured on glibc-simple, mleak
//! and glibc-thread of the field's suite). The vDSO is already mapped and
//! resident in every process; its symbol is found once, by the dynamic
//! section the kernel's image carries, through `getauxval`, whose window the
//! allocator's `mmap` calls touch anyway. Where no vDSO or no symbol is
//! found (valgrind hides the vDSO), the clock is read by the system call.
//! Compiled for x86-64 and aarch64 Linux, whose vDSOs' names are known;
//! elsewhere `os::now_ms` calls the C library.
//!
//! How much this saves depends on where the C library is loaded: its
//! segments are aligned to 4 KiB only, so the 64 KiB windows fall
//! differently from run to run, and the window of `clock_gettime` often
//! also holds `__register_atfork`, which `pthread_atfork` calls in every
//! program (60 runs of a small C program: libc's text 929 KiB resident on
//! average before, 900 after, 822 under glibc's own malloc).

use core::sync::atomic::{AtomicUsize, Ordering};

type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

/// 0: not looked up yet; 1: looked up, none; else the function's address.
static CLOCK_GETTIME: AtomicUsize = AtomicUsize::new(0);
const NONE: usize = 1;

/// Reads `clock` into `t`, as `clock_gettime` does; returns 0 on success,
/// nonzero on failure (the vDSO returns a negative error number and leaves
/// `errno` alone; the system call returns -1).
pub fn clock_gettime(clock: libc::clockid_t, t: &mut libc::timespec) -> libc::c_int {
    let mut f = CLOCK_GETTIME.load(Ordering::Relaxed);
    if f == 0 {
        f = lookup_clock_gettime().map_or(NONE, |p| p as usize);
        CLOCK_GETTIME.store(f, Ordering::Relaxed);
    }
    if f != NONE {
        // SAFETY: `f` is the vDSO's `clock_gettime`, whose type is
        // `clock_gettime`'s; `t` is a valid timespec to write.
        return unsafe { core::mem::transmute::<usize, ClockGettime>(f)(clock, t) };
    }
    // SAFETY: the system call writes one timespec through `t`.
    unsafe { libc::syscall(libc::SYS_clock_gettime, clock, t as *mut libc::timespec) as libc::c_int }
}

/// The address of the vDSO's `clock_gettime` ([`CLOCK_GETTIME_NAME`]), if
/// the process has a vDSO that exports it.
pub(crate) fn lookup_clock_gettime() -> Option<*const u8> {
    // SAFETY: getauxval has no precondition.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    if base == 0 {
        return None;
    }
    // SAFETY: the kernel maps the whole vDSO image, an ELF shared object of
    // this machine's class, at `base`, readable for the life of the process;
    // `symbol` reads only inside the tables its headers name.
    unsafe { symbol(base as *const u8, CLOCK_GETTIME_NAME) }
}

/// The vDSO's name for `clock_gettime` (aarch64's kernel names its own).
#[cfg(not(target_arch = "aarch64"))]
const CLOCK_GETTIME_NAME: &[u8] = b"__vdso_clock_gettime";
#[cfg(target_arch = "aarch64")]
const CLOCK_GETTIME_NAME: &[u8] = b"__kernel_clock_gettime";

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: i64 = 0;
const DT_HASH: i64 = 4;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const STT_FUNC: u8 = 2;

/// An entry of a dynamic section (`Elf64_Dyn`).
#[repr(C)]
struct Dyn {
    tag: i64,
    val: u64,
}

/// Looks `name` up in the dynamic symbol table of the ELF image at `image`,
/// by its program headers and its `DT_HASH` table (which the kernel links
/// into every vDSO); None if the image is not a 64-bit ELF object of this
/// machine or lacks the symbol.
///
/// # Safety
/// `image` is 8-byte aligned and is the start of a loaded 64-bit ELF object
/// whose program headers, dynamic section, hash, symbol and string tables
/// are mapped readable (or at least 64 readable bytes that are not an ELF
/// header).
unsafe fn symbol(image: *const u8, name: &[u8]) -> Option<*const u8> {
    // SAFETY: every read is at an offset the caller's object defines
    // through its own headers (the whole function).
    unsafe {
        let ehdr = &*(image as *const libc::Elf64_Ehdr);
        if ehdr.e_ident[..4] != *b"\x7fELF" || ehdr.e_ident[4] != 2 || ehdr.e_machine != EM_THIS {
            return None;
        }
        let phdrs = core::slice::from_raw_parts(
            image.add(ehdr.e_phoff as usize) as *const libc::Elf64_Phdr,
            usize::from(ehdr.e_phnum),
        );
        // Where the image's virtual address 0 lies (its first load segment
        // says how far it was moved), and its dynamic section.
        let load = phdrs.iter().find(|p| p.p_type == PT_LOAD)?;
        let bias = (image as usize).wrapping_add(load.p_offset as usize).wrapping_sub(load.p_vaddr as usize);
        let dynamic = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC)?;
        let (mut hash, mut strtab, mut symtab) = (0usize, 0usize, 0usize);
        let mut d = image.add(dynamic.p_offset as usize) as *const Dyn;
        while (*d).tag != DT_NULL {
            let at = bias.wrapping_add((*d).val as usize);
            match (*d).tag {
                DT_HASH => hash = at,
                DT_STRTAB => strtab = at,
                DT_SYMTAB => symtab = at,
                _ => {}
            }
            d = d.add(1);
        }
        if hash == 0 || strtab == 0 || symtab == 0 {
            return None;
        }
        // DT_HASH: nbucket, nchain, ...; nchain is the number of symbols.
        let count = *(hash as *const u32).add(1) as usize;
        let syms = core::slice::from_raw_parts(symtab as *const libc::Elf64_Sym, count);
        syms.iter()
            .find(|s| {
                s.st_info & 0xf == STT_FUNC
                    && s.st_shndx != 0
                    && core::ffi::CStr::from_ptr((strtab + s.st_name as usize) as *const libc::c_char).to_bytes()
                        == name
            })
            .map(|s| bias.wrapping_add(s.st_value as usize) as *const u8)
    }
}

#[cfg(target_arch = "x86_64")]
const EM_THIS: u16 = 62;
#[cfg(target_arch = "aarch64")]
const EM_THIS: u16 = 183;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vdso_clock_is_found_and_agrees_with_the_c_library() {
        // This machine's kernel maps a vDSO that exports the clock.
        assert!(lookup_clock_gettime().is_some());
        // Clocks that never step back (the wall clock may be set between
        // the calls).
        for clock in [libc::CLOCK_MONOTONIC, libc::CLOCK_MONOTONIC_COARSE, libc::CLOCK_BOOTTIME] {
            let mut before = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            let mut ours = before;
            let mut after = before;
            // SAFETY: each call writes one timespec.
            unsafe { libc::clock_gettime(clock, &mut before) };
            assert_eq!(clock_gettime(clock, &mut ours), 0);
            // SAFETY: as above.
            unsafe { libc::clock_gettime(clock, &mut after) };
            let ns = |t: &libc::timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
            assert!(
                ns(&before) <= ns(&ours) && ns(&ours) <= ns(&after),
                "clock {clock}: {before:?} {ours:?} {after:?}"
            );
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_symbol_the_vdso_lacks_is_none() {
        // SAFETY: as in `lookup_clock_gettime`.
        let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as *const u8;
        assert!(!base.is_null(), "no vDSO in this process");
        // SAFETY: `base` is the vDSO, a loaded ELF object (as in
        // `lookup_clock_gettime`), for each look-up.
        let find = |name: &[u8]| unsafe { symbol(base, name) };
        assert!(find(b"__vdso_no_such_function").is_none());
        assert!(find(b"__vdso_clock_gettim").is_none());
        assert!(find(b"__vdso_gettimeofday").is_some());
    }

    #[test]
    fn an_image_that_is_not_elf_is_refused() {
        // u64s: the header is read in place, 8-byte aligned.
        let junk = [0u64; 32];
        // SAFETY: aligned, readable, and the header check fails before any
        // offset is followed.
        assert!(unsafe { symbol(junk.as_ptr().cast(), b"__vdso_clock_gettime") }.is_none());
    }
}
