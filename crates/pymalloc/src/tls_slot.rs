//! The calling thread's heap pointer: one pointer-sized thread-local slot,
//! read and written with one instruction each wherever the crate is linked.
//!
//! Rust's `thread_local!` follows the code model it is compiled for. Linked
//! into an executable (a Rust program, `libpymalloc.a`) the linker turns its
//! accesses into a `%fs`-relative load. In a shared object (`libpymalloc.so`)
//! it stays general-dynamic: every access calls `__tls_get_addr`, which cost a
//! C program linked with `-lpymalloc` about 5 ns on every `PyObject_Malloc`
//! and `PyObject_Free`. Stable Rust has no `-Z tls-model`, so on x86-64 Linux
//! the slot is declared in assembly with the *initial-exec* model, as glibc,
//! jemalloc and mimalloc do for their own thread state: the library asks for
//! 8 bytes of the static TLS block (`DF_STATIC_TLS`; glibc keeps spare room
//! for libraries opened with `dlopen`), and the linker relaxes the access to
//! local-exec in an executable.
//!
//! Elsewhere (other targets, Miri) the slot is a plain `thread_local!`.
//!
//! Invariant: the slot starts null in every thread; only `thread.rs` writes
//! it, with the thread's own heap or null.

/// The symbol of an initial-exec block named `$name`: global (the crate's
/// code generation units reach it from several object files) but hidden
/// (never exported, never interposed), and suffixed with the crate's
/// version so that two versions of the crate in one program keep two
/// blocks.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
macro_rules! tls_symbol {
    ($name:literal) => {
        concat!($name, env!("CARGO_PKG_VERSION_MAJOR"), "_", env!("CARGO_PKG_VERSION_MINOR"))
    };
}

/// Declares the block `tls_symbol!($name)`: `$size` zeroed bytes of
/// thread-local storage (`.tbss`) aligned to `2^$align_log2`, for an
/// initial-exec access (`sym@gottpoff(%rip)` and `%fs`).
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
macro_rules! initial_exec_block {
    ($name:literal, $size:expr, $align_log2:expr) => {
        core::arch::global_asm!(
            concat!(".pushsection .tbss.", $crate::tls_slot::tls_symbol!($name), ",\"awT\",@nobits"),
            ".p2align {align}",
            concat!(".globl ", $crate::tls_slot::tls_symbol!($name)),
            concat!(".hidden ", $crate::tls_slot::tls_symbol!($name)),
            concat!(".type ", $crate::tls_slot::tls_symbol!($name), ", @object"),
            concat!(".size ", $crate::tls_slot::tls_symbol!($name), ", {size}"),
            concat!($crate::tls_slot::tls_symbol!($name), ":"),
            ".zero {size}",
            ".popsection",
            size = const $size,
            align = const $align_log2,
        );
    };
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
pub(crate) use {initial_exec_block, tls_symbol};

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
mod imp {
    macro_rules! slot {
        () => {
            crate::tls_slot::tls_symbol!("pymalloc_rs_current_heap_")
        };
    }

    // The slot itself: 8 zeroed bytes of thread-local storage.
    crate::tls_slot::initial_exec_block!("pymalloc_rs_current_heap_", 8, 3);

    /// The slot's value.
    #[inline(always)]
    pub fn get() -> *const () {
        let v: *const ();
        // SAFETY: the first instruction loads the slot's offset from the
        // thread pointer (a GOT entry the dynamic linker fills, or an
        // immediate after relaxation); the second reads the calling thread's
        // 8 bytes at that offset, which exist from the thread's start.
        unsafe {
            core::arch::asm!(
                concat!("movq ", slot!(), "@gottpoff(%rip), {v}"),
                "movq %fs:({v}), {v}",
                v = out(reg) v,
                options(att_syntax, nostack, readonly, preserves_flags, pure),
            );
        }
        v
    }

    /// Stores `p` in the calling thread's slot.
    #[inline(always)]
    pub fn set(p: *const ()) {
        // SAFETY: as in get; the store writes only the calling thread's 8
        // bytes of the slot.
        unsafe {
            core::arch::asm!(
                concat!("movq ", slot!(), "@gottpoff(%rip), {t}"),
                "movq {p}, %fs:({t})",
                t = out(reg) _,
                p = in(reg) p,
                options(att_syntax, nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri))))]
mod imp {
    use core::cell::Cell;

    thread_local! {
        static SLOT: Cell<*const ()> = const { Cell::new(core::ptr::null()) };
    }

    /// The slot's value.
    #[inline(always)]
    pub fn get() -> *const () {
        SLOT.with(Cell::get)
    }

    /// Stores `p` in the calling thread's slot.
    #[inline(always)]
    pub fn set(p: *const ()) {
        SLOT.with(|s| s.set(p))
    }
}

pub(crate) use imp::{get, set};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_has_its_own_slot_starting_null() {
        static MINE: u8 = 1;
        static THEIRS: u8 = 2;
        let before = get();
        let mine = (&raw const MINE).cast::<()>();
        set(mine);
        assert_eq!(get(), mine);
        std::thread::spawn(|| {
            assert!(get().is_null(), "a new thread's slot starts null");
            let theirs = (&raw const THEIRS).cast::<()>();
            set(theirs);
            assert_eq!(get(), theirs);
        })
        .join()
        .unwrap();
        assert_eq!(get(), mine, "another thread's store does not reach this one");
        set(before);
    }
}
