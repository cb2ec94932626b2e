//! Which CPython builds the launcher can serve. `build.rs` includes this
//! file too and stops the build with the reason.

/// Why the launcher cannot serve CPython `major.minor`, if it cannot
/// (`build.rs` stops the build with this text).
pub fn refusal(major: u8, minor: u8, free_threaded: bool) -> Option<String> {
    if (major, minor) < (3, 9) {
        return Some(format!("CPython {major}.{minor} is older than 3.9, the oldest the launcher supports"));
    }
    if free_threaded {
        return Some(
            "it is a free-threaded build (Py_GIL_DISABLED). Without the GIL, CPython requires its own mimalloc \
             in every domain and accepts no other allocator (PyMem_SetAllocator may only wrap its allocators), \
             so pymalloc-rs cannot serve its domains. Use a GIL build of the same version."
                .to_owned(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_why() {
        assert_eq!(refusal(3, 9, false), None);
        assert_eq!(refusal(3, 13, false), None);
        assert!(refusal(3, 8, false).unwrap().contains("older than 3.9"));
        let ft = refusal(3, 13, true).unwrap();
        assert!(ft.contains("free-threaded") && ft.contains("mimalloc"), "{ft}");
    }
}
