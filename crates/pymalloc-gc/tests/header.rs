//! The header fragment declares exactly the functions of `src/ffi.rs`, and
//! compiles as C.

use std::collections::BTreeSet;
use std::mem::{offset_of, size_of};

use pymalloc_gc::object::{PyVarObject, TypeObject};
use std::process::Command;

const HEADER: &str = include_str!("../../pymalloc-capi/include/pymalloc_gc.h");
const FFI: &str = include_str!("../src/ffi.rs");

fn ffi_functions() -> BTreeSet<String> {
    FFI.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest =
                l.strip_prefix("pub unsafe extern \"C\" fn ").or_else(|| l.strip_prefix("pub extern \"C\" fn "))?;
            Some(rest.split('(').next().unwrap().to_string())
        })
        .collect()
}

fn header_functions() -> BTreeSet<String> {
    HEADER
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("typedef") && l.contains('('))
        .filter_map(|l| {
            let before = l.split('(').next()?;
            let name = before.rsplit([' ', '*']).next()?;
            (!name.is_empty() && !l.trim_start().starts_with('/')).then(|| name.to_string())
        })
        .collect()
}

#[test]
fn header_declares_every_ffi_function() {
    let ffi = ffi_functions();
    let header = header_functions();
    assert!(ffi.len() > 40, "{ffi:?}");
    assert_eq!(ffi, header);
}

#[test]
fn header_compiles_as_c() {
    let dir = std::env::temp_dir().join(format!("pymalloc_gc_h_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join("t.c");
    std::fs::write(
        &c,
        format!(
            "#include \"{}\"\n#include <stddef.h>\n\
             _Static_assert(sizeof(PyMemGc_TypeObject) == {}, \"type size\");\n\
             _Static_assert(offsetof(PyMemGc_TypeObject, tp_freelist) == {}, \"slots\");\n\
             _Static_assert(sizeof(PyVarObject) == {}, \"var object\");\n\
             _Static_assert(sizeof(PyMemGc_CallbackInfo) == {}, \"info\");\n\
             int main(void) {{ return 0; }}\n",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../pymalloc-capi/include/pymalloc_gc.h"),
            size_of::<TypeObject>(),
            offset_of!(TypeObject, tp_freelist),
            size_of::<PyVarObject>(),
            size_of::<pymalloc_gc::ffi::PyMemGc_CallbackInfo>(),
        ),
    )
    .unwrap();
    let out = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-fsyntax-only"])
        .arg(&c)
        .output()
        .expect("a C compiler (cc) is needed for this test");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}
