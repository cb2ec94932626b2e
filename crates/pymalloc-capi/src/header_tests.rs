//! The header against the Rust definitions: a C program compiled with
//! `include/pymalloc.h` prints the size and offset of every struct member and
//! the value of every constant; each must equal its Rust counterpart.
//! (The header against CPython's own headers is `tests/c_programs.rs`.)

use core::mem::{offset_of, size_of};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::allocators::{PyMemAllocatorEx, PyObjectArenaAllocator};
use crate::extras::*;
use crate::tracemalloc::TRACING_DISABLED;

const PROBE: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include "pymalloc.h"
#define SIZE(T) printf("sizeof %s %zu\n", #T, sizeof(T))
#define OFF(T, m) printf("offsetof %s.%s %zu\nsizeof %s.%s %zu\n", #T, #m, offsetof(T, m), \
                         #T, #m, sizeof(((T *)0)->m))
#define SIGNED(T, m) printf("signed %s.%s %d\n", #T, #m, \
    !((__typeof__(((T *)0)->m))-1 > (__typeof__(((T *)0)->m))0))
#define VAL(c) printf("value %s %lld\n", #c, (long long)(c))
int main(void) {
    SIZE(PyMemAllocatorEx);
    OFF(PyMemAllocatorEx, ctx); OFF(PyMemAllocatorEx, malloc);
    OFF(PyMemAllocatorEx, calloc); OFF(PyMemAllocatorEx, realloc);
    OFF(PyMemAllocatorEx, free);
    SIZE(PyObjectArenaAllocator);
    OFF(PyObjectArenaAllocator, ctx); OFF(PyObjectArenaAllocator, alloc);
    OFF(PyObjectArenaAllocator, free);
    SIZE(PyMalloc_ClassStats);
    OFF(PyMalloc_ClassStats, size); OFF(PyMalloc_ClassStats, pools);
    OFF(PyMalloc_ClassStats, blocks_in_use); OFF(PyMalloc_ClassStats, avail_blocks);
    SIZE(PyMalloc_Stats);
    OFF(PyMalloc_Stats, struct_size); OFF(PyMalloc_Stats, version);
    OFF(PyMalloc_Stats, nclasses); OFF(PyMalloc_Stats, alignment);
    OFF(PyMalloc_Stats, small_request_threshold); OFF(PyMalloc_Stats, pool_size);
    OFF(PyMalloc_Stats, pool_overhead); OFF(PyMalloc_Stats, arena_size);
    OFF(PyMalloc_Stats, arenas_allocated_total); OFF(PyMalloc_Stats, arenas_reclaimed);
    OFF(PyMalloc_Stats, arenas_highwater); OFF(PyMalloc_Stats, arenas_current);
    OFF(PyMalloc_Stats, arena_bytes); OFF(PyMalloc_Stats, allocated_bytes);
    OFF(PyMalloc_Stats, available_bytes); OFF(PyMalloc_Stats, unused_pools);
    OFF(PyMalloc_Stats, unused_pool_bytes); OFF(PyMalloc_Stats, pool_header_bytes);
    OFF(PyMalloc_Stats, quantization_bytes); OFF(PyMalloc_Stats, arena_alignment_bytes);
    OFF(PyMalloc_Stats, blocks_in_use); OFF(PyMalloc_Stats, raw_allocated_blocks);
    OFF(PyMalloc_Stats, allocated_blocks); OFF(PyMalloc_Stats, map_mid_nodes);
    OFF(PyMalloc_Stats, map_bot_nodes); OFF(PyMalloc_Stats, map_root_bytes);
    OFF(PyMalloc_Stats, map_mid_node_bytes); OFF(PyMalloc_Stats, map_bot_node_bytes);
    OFF(PyMalloc_Stats, classes);
    SIGNED(PyMalloc_Stats, struct_size); SIGNED(PyMalloc_Stats, version);
    SIGNED(PyMalloc_Stats, nclasses); SIGNED(PyMalloc_Stats, arena_bytes);
    SIGNED(PyMalloc_Stats, blocks_in_use); SIGNED(PyMalloc_Stats, raw_allocated_blocks);
    SIGNED(PyMalloc_Stats, allocated_blocks); SIGNED(PyMalloc_ClassStats, size);
    SIZE(PyMemAllocatorDomain);
    VAL(PYMEM_DOMAIN_RAW); VAL(PYMEM_DOMAIN_MEM); VAL(PYMEM_DOMAIN_OBJ);
    VAL(PY_SSIZE_T_MAX); SIZE(Py_ssize_t);
    VAL(PYMALLOC_OK); VAL(PYMALLOC_ERR_UNKNOWN_NAME);
    VAL(PYMALLOC_ERR_INVALID_ARGUMENT); VAL(PYMALLOC_ERR_IO);
    VAL(PYMALLOC_STATS_VERSION); VAL(PYMALLOC_MAX_SIZE_CLASSES);
    VAL(PYMALLOC_VERSION_MAJOR); VAL(PYMALLOC_VERSION_MINOR); VAL(PYMALLOC_VERSION_PATCH);
    return 0;
}
"#;

/// Compiles and runs the probe; returns its `kind name -> number` lines.
fn probe() -> BTreeMap<String, i128> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = std::env::temp_dir().join(format!("pymalloc-capi-probe-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let src = out_dir.join("probe.c");
    let exe = out_dir.join("probe");
    std::fs::write(&src, PROBE).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic-errors", "-I"])
        .arg(dir.join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(st.success(), "{cc} failed on the probe");
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    std::fs::remove_dir_all(&out_dir).unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut w = l.split(' ');
            let (kind, name, v) = (w.next().unwrap(), w.next().unwrap(), w.next().unwrap());
            (format!("{kind} {name}"), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn header_layouts_and_constants_match_the_rust_definitions() {
    let p = probe();
    let mut want: BTreeMap<String, i128> = BTreeMap::new();
    let mut size = |name: &str, v: usize| want.insert(format!("sizeof {name}"), v as i128);
    size("PyMemAllocatorEx", size_of::<PyMemAllocatorEx>());
    size("PyObjectArenaAllocator", size_of::<PyObjectArenaAllocator>());
    size("PyMalloc_ClassStats", size_of::<PyMallocClassStats>());
    size("PyMalloc_Stats", size_of::<PyMallocStats>());
    size("PyMemAllocatorDomain", size_of::<core::ffi::c_int>());
    size("Py_ssize_t", size_of::<isize>());
    // Member sizes come from a zeroed value: every struct here is valid
    // all-zero (null pointers, `None` functions, zero counts).
    macro_rules! off {
        ($c:literal, $t:ty, $($f:ident),*) => {
            // SAFETY: see above.
            let zero: $t = unsafe { core::mem::zeroed() };
            $(
                want.insert(format!("offsetof {}.{}", $c, stringify!($f)), offset_of!($t, $f) as i128);
                want.insert(
                    format!("sizeof {}.{}", $c, stringify!($f)),
                    core::mem::size_of_val(&zero.$f) as i128,
                );
            )*
        };
    }
    off!("PyMemAllocatorEx", PyMemAllocatorEx, ctx, malloc, calloc, realloc, free);
    off!("PyObjectArenaAllocator", PyObjectArenaAllocator, ctx, alloc, free);
    off!("PyMalloc_ClassStats", PyMallocClassStats, size, pools, blocks_in_use, avail_blocks);
    off!(
        "PyMalloc_Stats",
        PyMallocStats,
        struct_size,
        version,
        nclasses,
        alignment,
        small_request_threshold,
        pool_size,
        pool_overhead,
        arena_size,
        arenas_allocated_total,
        arenas_reclaimed,
        arenas_highwater,
        arenas_current,
        arena_bytes,
        allocated_bytes,
        available_bytes,
        unused_pools,
        unused_pool_bytes,
        pool_header_bytes,
        quantization_bytes,
        arena_alignment_bytes,
        blocks_in_use,
        raw_allocated_blocks,
        allocated_blocks,
        map_mid_nodes,
        map_bot_nodes,
        map_root_bytes,
        map_mid_node_bytes,
        map_bot_node_bytes,
        classes
    );
    let mut signed = |name: &str, v: bool| want.insert(format!("signed {name}"), v.into());
    // The unsigned counters are usize/c_uint, the two block counts isize.
    signed("PyMalloc_Stats.struct_size", false);
    signed("PyMalloc_Stats.version", false);
    signed("PyMalloc_Stats.nclasses", false);
    signed("PyMalloc_Stats.arena_bytes", false);
    signed("PyMalloc_Stats.blocks_in_use", false);
    signed("PyMalloc_Stats.raw_allocated_blocks", true);
    signed("PyMalloc_Stats.allocated_blocks", true);
    signed("PyMalloc_ClassStats.size", false);
    let mut val = |name: &str, v: i128| want.insert(format!("value {name}"), v);
    val("PYMEM_DOMAIN_RAW", pymalloc_core::Domain::Raw as i128);
    val("PYMEM_DOMAIN_MEM", pymalloc_core::Domain::Mem as i128);
    val("PYMEM_DOMAIN_OBJ", pymalloc_core::Domain::Obj as i128);
    val("PY_SSIZE_T_MAX", isize::MAX as i128);
    val("PYMALLOC_OK", PYMALLOC_OK.into());
    val("PYMALLOC_ERR_UNKNOWN_NAME", PYMALLOC_ERR_UNKNOWN_NAME.into());
    val("PYMALLOC_ERR_INVALID_ARGUMENT", PYMALLOC_ERR_INVALID_ARGUMENT.into());
    val("PYMALLOC_ERR_IO", PYMALLOC_ERR_IO.into());
    val("PYMALLOC_STATS_VERSION", PYMALLOC_STATS_VERSION.into());
    val("PYMALLOC_MAX_SIZE_CLASSES", PYMALLOC_MAX_SIZE_CLASSES as i128);
    let version = |v: &str| v.parse::<i128>().unwrap();
    val("PYMALLOC_VERSION_MAJOR", version(env!("CARGO_PKG_VERSION_MAJOR")));
    val("PYMALLOC_VERSION_MINOR", version(env!("CARGO_PKG_VERSION_MINOR")));
    val("PYMALLOC_VERSION_PATCH", version(env!("CARGO_PKG_VERSION_PATCH")));
    let keys: std::collections::BTreeSet<&String> = p.keys().chain(want.keys()).collect();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| p.get(*k) != want.get(*k))
        .map(|k| format!("{k}: header {:?}, Rust {:?}", p.get(k), want.get(k)))
        .collect();
    assert!(diff.is_empty(), "header and Rust disagree:\n{}", diff.join("\n"));
    // The tracing answer is CPython's "disabled".
    assert_eq!(TRACING_DISABLED, -2);
}
