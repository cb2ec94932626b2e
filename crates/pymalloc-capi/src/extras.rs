//! What the library offers beyond CPython's API, under the `PyMalloc_`
//! prefix: statistics (as a struct, or as the table `sys._debugmallocstats()`
//! prints), configurations selected by their `PYTHONMALLOC` names, and a
//! switch for one line of the debug hooks' reports.
//!
//! Error codes are small negative `int`s (`PYMALLOC_ERR_*` in the header);
//! success is 0.

use core::ffi::{c_char, c_int, c_uint, CStr};
use core::mem::size_of;

use pymalloc_core::config::{self, AllocatorName};
use pymalloc_core::geometry::{
    ALIGNMENT, ARENA_SIZE, NB_SMALL_SIZE_CLASSES, POOL_OVERHEAD, POOL_SIZE, SMALL_REQUEST_THRESHOLD,
};
use pymalloc_core::Stats;

/// Success (`PYMALLOC_OK`).
pub const PYMALLOC_OK: c_int = 0;
/// The name is not a `PYTHONMALLOC` configuration (`PYMALLOC_ERR_UNKNOWN_NAME`).
pub const PYMALLOC_ERR_UNKNOWN_NAME: c_int = -1;
/// A NULL pointer or a struct too small (`PYMALLOC_ERR_INVALID_ARGUMENT`).
pub const PYMALLOC_ERR_INVALID_ARGUMENT: c_int = -2;
/// Writing to the `FILE *` failed (`PYMALLOC_ERR_IO`).
pub const PYMALLOC_ERR_IO: c_int = -3;

/// The version of [`PyMallocStats`] this library fills
/// (`PYMALLOC_STATS_VERSION`).
pub const PYMALLOC_STATS_VERSION: c_uint = 1;
/// Room for size classes in [`PyMallocStats::classes`]
/// (`PYMALLOC_MAX_SIZE_CLASSES`): enough for every geometry the core builds
/// (32 classes by default, 64 with `legacy-geometry`).
pub const PYMALLOC_MAX_SIZE_CLASSES: usize = 64;
const _: () = assert!(NB_SMALL_SIZE_CLASSES <= PYMALLOC_MAX_SIZE_CLASSES);

/// One size class (`PyMalloc_ClassStats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyMallocClassStats {
    /// Block size of the class in bytes.
    pub size: usize,
    /// Pools holding blocks of this class.
    pub pools: usize,
    /// Blocks handed out.
    pub blocks_in_use: usize,
    /// Free blocks in those pools.
    pub avail_blocks: usize,
}

/// A snapshot of the process heap that MEM and OBJ use by default
/// (`PyMalloc_Stats`), version 1.
///
/// Growth rule: later versions only append fields, so the version-1 prefix
/// never moves. The caller sets `struct_size` to the size of the struct it
/// was compiled with; the library fills as much of it as both know and
/// reports its own `version`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PyMallocStats {
    /// In: `sizeof(PyMalloc_Stats)` as the caller knows it. Left unchanged.
    pub struct_size: usize,
    /// Out: the version of the struct the library filled.
    pub version: c_uint,
    /// Size classes in use: the valid prefix of `classes`.
    pub nclasses: c_uint,
    /// Block alignment and class step in bytes (16).
    pub alignment: usize,
    /// Largest request served from pools (512).
    pub small_request_threshold: usize,
    /// Bytes per pool (16 KiB).
    pub pool_size: usize,
    /// Bytes of each pool's header, rounded to the alignment (48).
    pub pool_overhead: usize,
    /// Bytes per arena (1 MiB).
    pub arena_size: usize,
    /// Arenas ever allocated.
    pub arenas_allocated_total: usize,
    /// Arenas given back to the arena allocator.
    pub arenas_reclaimed: usize,
    /// Most arenas live at once.
    pub arenas_highwater: usize,
    /// Arenas live now.
    pub arenas_current: usize,
    /// `arenas_current * arena_size`.
    pub arena_bytes: usize,
    /// Bytes in blocks handed out (whole class sizes).
    pub allocated_bytes: usize,
    /// Bytes in free blocks of pools in use.
    pub available_bytes: usize,
    /// Pools free or never used, in live arenas.
    pub unused_pools: usize,
    /// `unused_pools * pool_size`.
    pub unused_pool_bytes: usize,
    /// Bytes of the headers of pools in use.
    pub pool_header_bytes: usize,
    /// Bytes at the ends of pools too small for a block.
    pub quantization_bytes: usize,
    /// Bytes lost because an arena did not start on a pool boundary.
    pub arena_alignment_bytes: usize,
    /// Pool blocks in use, all classes.
    pub blocks_in_use: usize,
    /// Live blocks the heap handed to the raw allocator.
    pub raw_allocated_blocks: isize,
    /// `blocks_in_use + raw_allocated_blocks` (`sys.getallocatedblocks()`).
    pub allocated_blocks: isize,
    /// Mid nodes of the arena map.
    pub map_mid_nodes: usize,
    /// Bottom nodes of the arena map.
    pub map_bot_nodes: usize,
    /// Bytes of the map's root.
    pub map_root_bytes: usize,
    /// Bytes of one mid node.
    pub map_mid_node_bytes: usize,
    /// Bytes of one bottom node.
    pub map_bot_node_bytes: usize,
    /// Per size class, `nclasses` valid entries, the rest zero.
    pub classes: [PyMallocClassStats; PYMALLOC_MAX_SIZE_CLASSES],
}

/// Size of version 1: the smallest `struct_size` accepted, now and later.
pub const PYMALLOC_STATS_V1_SIZE: usize = size_of::<PyMallocStats>();

impl PyMallocStats {
    /// The C view of a core snapshot.
    pub fn from_core(s: &Stats) -> PyMallocStats {
        let mut classes = [PyMallocClassStats::default(); PYMALLOC_MAX_SIZE_CLASSES];
        for (out, c) in classes.iter_mut().zip(s.classes.iter()) {
            *out = PyMallocClassStats {
                size: c.size,
                pools: c.pools,
                blocks_in_use: c.blocks_in_use,
                avail_blocks: c.avail_blocks,
            };
        }
        PyMallocStats {
            struct_size: size_of::<PyMallocStats>(),
            version: PYMALLOC_STATS_VERSION,
            nclasses: NB_SMALL_SIZE_CLASSES as c_uint,
            alignment: ALIGNMENT,
            small_request_threshold: SMALL_REQUEST_THRESHOLD,
            pool_size: POOL_SIZE,
            pool_overhead: POOL_OVERHEAD,
            arena_size: ARENA_SIZE,
            arenas_allocated_total: s.arenas_allocated_total,
            arenas_reclaimed: s.arenas_reclaimed,
            arenas_highwater: s.arenas_highwater,
            arenas_current: s.arenas_current,
            arena_bytes: s.arena_bytes,
            allocated_bytes: s.allocated_bytes,
            available_bytes: s.available_bytes,
            unused_pools: s.unused_pools,
            unused_pool_bytes: s.unused_pool_bytes,
            pool_header_bytes: s.pool_header_bytes,
            quantization_bytes: s.quantization_bytes,
            arena_alignment_bytes: s.arena_alignment_bytes,
            blocks_in_use: s.blocks_in_use(),
            raw_allocated_blocks: s.raw_allocated_blocks,
            allocated_blocks: s.allocated_blocks(),
            map_mid_nodes: s.map.mid_nodes,
            map_bot_nodes: s.map.bot_nodes,
            map_root_bytes: s.map.root_bytes,
            map_mid_node_bytes: s.map.mid_node_bytes,
            map_bot_node_bytes: s.map.bot_node_bytes,
            classes,
        }
    }
}

/// `int PyMalloc_GetStats(PyMalloc_Stats *stats)`: fills `*stats` with a
/// snapshot of the default pymalloc heap. The caller sets
/// `stats->struct_size = sizeof(PyMalloc_Stats)` first; the library writes
/// at most that many bytes, leaves `struct_size` as it was and sets
/// `version`. Returns 0, or `PYMALLOC_ERR_INVALID_ARGUMENT` if `stats` is
/// NULL or `struct_size` is smaller than version 1 (nothing is written).
///
/// # Safety
/// `stats` is NULL or points to `stats->struct_size` writable bytes whose
/// first `size_t` is readable.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_GetStats(stats: *mut PyMallocStats) -> c_int {
    if stats.is_null() {
        return PYMALLOC_ERR_INVALID_ARGUMENT;
    }
    // SAFETY: the first size_t is readable (caller's contract).
    let caller_size = unsafe { stats.cast::<usize>().read_unaligned() };
    if caller_size < PYMALLOC_STATS_V1_SIZE {
        return PYMALLOC_ERR_INVALID_ARGUMENT;
    }
    let mut snapshot = PyMallocStats::from_core(&pymalloc_core::config::pymalloc_stats());
    snapshot.struct_size = caller_size;
    let n = caller_size.min(size_of::<PyMallocStats>());
    // SAFETY: the caller provides caller_size >= n writable bytes; the source
    // is our own initialised struct of at least n bytes; they cannot overlap.
    unsafe { core::ptr::copy_nonoverlapping((&snapshot as *const PyMallocStats).cast::<u8>(), stats.cast::<u8>(), n) };
    PYMALLOC_OK
}

/// `int PyMalloc_PrintStats(FILE *out)`: writes the statistics table of the
/// default pymalloc heap to `out`, laid out exactly as CPython 3.11's
/// `sys._debugmallocstats()` prints its allocator part. Returns 0,
/// `PYMALLOC_ERR_INVALID_ARGUMENT` for a NULL `out`, or `PYMALLOC_ERR_IO` if
/// the write fell short. Does not flush `out`.
///
/// # Safety
/// `out` is NULL or an open `FILE *` that is writable.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_PrintStats(out: *mut libc::FILE) -> c_int {
    if out.is_null() {
        return PYMALLOC_ERR_INVALID_ARGUMENT;
    }
    let text = pymalloc_core::config::pymalloc_stats().to_string();
    // SAFETY: out is an open stream (caller's contract); the bytes are ours.
    let written = unsafe { libc::fwrite(text.as_ptr().cast(), 1, text.len(), out) };
    if written == text.len() {
        PYMALLOC_OK
    } else {
        PYMALLOC_ERR_IO
    }
}

/// `int PyMalloc_SetupByName(const char *name)`: installs the configuration
/// `PYTHONMALLOC=name` would select in all three domains: `default` or
/// `pymalloc`, `malloc`, `debug` or `pymalloc_debug`, `malloc_debug`. NULL
/// and `""` mean `default` (as an unset or empty `PYTHONMALLOC`). Returns 0,
/// or `PYMALLOC_ERR_UNKNOWN_NAME` for any other name, leaving the
/// configuration unchanged.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string. As for `PyMem_SetAllocator` on
/// all three domains: no other thread may use them during the call, and no
/// block allocated before may be resized or freed afterwards unless its
/// domain's allocator is the same in both configurations (and, for a MEM or
/// OBJ block above 512 bytes, which pymalloc hands to RAW, RAW's too).
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_SetupByName(name: *const c_char) -> c_int {
    let name = if name.is_null() {
        ""
    } else {
        // SAFETY: a NUL-terminated string (caller's contract).
        match unsafe { CStr::from_ptr(name) }.to_str() {
            Ok(s) => s,
            Err(_) => return PYMALLOC_ERR_UNKNOWN_NAME,
        }
    };
    // SAFETY: exclusive use of the domains is the caller's contract.
    match unsafe { config::setup_by_name(name) } {
        Ok(_) => PYMALLOC_OK,
        Err(_) => PYMALLOC_ERR_UNKNOWN_NAME,
    }
}

/// `int PyMalloc_InitFromEnv(void)`: applies the environment as CPython does
/// at start-up: the configuration named by `PYTHONMALLOC` (unset or empty:
/// `default`), and, if `PYTHONMALLOCSTATS` is set and non-empty, the
/// statistics table on stderr each time a new arena is allocated and at
/// exit; then the purge policy `PYMALLOC_PURGE` names (see
/// [`PyMalloc_SetPurgePolicy`]; unset or empty: the default decay, with its
/// background thread). Returns 0, or `PYMALLOC_ERR_UNKNOWN_NAME` for an
/// unknown name in either variable (configuration unchanged, nothing else
/// done; an unknown `PYMALLOC_PURGE` is also reported on stderr with the
/// valid names). Then tracing, as CPython starts tracemalloc:
/// `PYTHONTRACEMALLOC=N` traces the three domains with up to `N` frames per
/// traceback, and `PYMALLOC_TRACE_DUMP=path` writes a snapshot there at
/// exit; a bad `N` is reported on stderr and returns
/// `PYMALLOC_ERR_INVALID_ARGUMENT` (the configuration is applied, tracing is
/// not). Call it once, first thing.
///
/// # Safety
/// As for [`PyMalloc_SetupByName`]; no thread may be changing the
/// environment.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_InitFromEnv() -> c_int {
    // SAFETY: called once, first thing, with nobody changing the
    // environment (our contract), which is init_from_env's.
    if let Err(e) = unsafe { config::init_from_env() } {
        report_unknown(&e);
        return PYMALLOC_ERR_UNKNOWN_NAME;
    }
    // SAFETY: as above: nothing else uses the domains yet.
    match unsafe { crate::tracemalloc::start_from_env() } {
        Ok(()) => PYMALLOC_OK,
        Err(e) => {
            eprintln!("pymalloc: {}", e.0);
            PYMALLOC_ERR_INVALID_ARGUMENT
        }
    }
}

/// An unknown `PYMALLOC_PURGE` has no return code of its own: say which
/// names are valid on stderr, as the launcher does.
fn report_unknown(e: &config::ConfigError) {
    if let config::ConfigError::UnknownPurge(_) = e {
        eprintln!("pymalloc: {e}");
    }
}

/// The NUL-terminated `PYTHONMALLOC` spelling of a configuration.
fn c_name(n: AllocatorName) -> &'static CStr {
    match n {
        AllocatorName::Default => c"default",
        AllocatorName::Debug => c"debug",
        AllocatorName::Pymalloc => c"pymalloc",
        AllocatorName::PymallocDebug => c"pymalloc_debug",
        AllocatorName::Malloc => c"malloc",
        AllocatorName::MallocDebug => c"malloc_debug",
        AllocatorName::PymallocAll => c"pymalloc_all",
        AllocatorName::PymallocAllDebug => c"pymalloc_all_debug",
    }
}

/// `const char *PyMalloc_GetAllocatorName(void)`: the configuration the
/// domains are in (CPython's `_PyMem_GetCurrentAllocatorName`): `"pymalloc"`,
/// `"malloc"`, `"pymalloc_debug"` or `"malloc_debug"`, or NULL if any domain
/// has another allocator (a hook, a custom allocator). The string is static.
///
/// # Safety
/// No thread may be replacing allocators meanwhile.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_GetAllocatorName() -> *const c_char {
    config::current().map_or(core::ptr::null(), |n| c_name(n).as_ptr())
}

/// `int PyMalloc_SetMode(const char *mode)`: how pymalloc serves MEM and OBJ
/// from the next setup on: `"threaded"` (default), `"locked"`, or `"single"`
/// (no lock: the caller serialises MEM and OBJ itself). Returns 0 or
/// `PYMALLOC_ERR_UNKNOWN_NAME`.
///
/// # Safety
/// `mode` is NULL or a NUL-terminated string; with `"single"`, every later
/// call into MEM and OBJ is serialised by the caller.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_SetMode(mode: *const c_char) -> c_int {
    use pymalloc_core::config::PymallocMode;
    if mode.is_null() {
        return PYMALLOC_ERR_UNKNOWN_NAME;
    }
    // SAFETY: a NUL-terminated string (caller's contract).
    let m = match unsafe { CStr::from_ptr(mode) }.to_bytes() {
        b"threaded" => PymallocMode::Threaded,
        b"locked" => PymallocMode::Locked,
        b"single" => PymallocMode::Gil,
        _ => return PYMALLOC_ERR_UNKNOWN_NAME,
    };
    // SAFETY: for "single", the caller serialises MEM and OBJ (contract).
    unsafe { config::set_pymalloc_mode(m) };
    PYMALLOC_OK
}

/// `size_t PyMalloc_Purge(void)`: gives back to the OS what pymalloc holds
/// no block in (the calling thread's heap, the heaps of exited threads and
/// the shared heap, in the default threaded mode); returns the bytes.
///
/// # Safety
/// None beyond the domains' own rules.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_Purge() -> usize {
    // SAFETY: in the "single" mode the caller serialises MEM and OBJ, and so
    // this call too (PyMalloc_SetMode's contract).
    unsafe { config::pymalloc_purge() }
}

/// `int PyMalloc_SetPurgePolicy(const char *name)`: when every pymalloc
/// heap gives memory back: `"default"` or `"decay"` (keep what was freed for
/// about a second while it is reused, then give it back), `"decay:MS"`,
/// `"never"` (CPython's rule), `"immediate"`, `"threshold"` or
/// `"threshold:MIN_POOLS:DIVISOR"`. A decay policy also starts the
/// background decay thread, which gives back what an idle process freed.
/// Returns 0, or `PYMALLOC_ERR_UNKNOWN_NAME` (policy unchanged) for NULL or
/// an unknown name.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_SetPurgePolicy(name: *const c_char) -> c_int {
    if name.is_null() {
        return PYMALLOC_ERR_UNKNOWN_NAME;
    }
    // SAFETY: a NUL-terminated string (caller's contract).
    let Ok(name) = unsafe { CStr::from_ptr(name) }.to_str() else {
        return PYMALLOC_ERR_UNKNOWN_NAME;
    };
    match config::set_purge_policy_by_name(name) {
        Ok(_) => PYMALLOC_OK,
        Err(_) => PYMALLOC_ERR_UNKNOWN_NAME,
    }
}

/// `const char *PyMalloc_PurgePolicyNames(void)`: the names
/// `PyMalloc_SetPurgePolicy` accepts, as one static string for error
/// messages.
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_PurgePolicyNames() -> *const c_char {
    PURGE_NAMES.as_ptr()
}

static PURGE_NAMES: &CStr = c"default, decay, decay:MS, never, immediate, threshold, threshold:MIN_POOLS:DIVISOR";

/// `size_t PyMalloc_Decay(void)`: sweeps every heap as the decay policy
/// does, if a sweep is due: what has gone unused for a period goes back.
/// Returns the bytes. For programs that keep their own idle loop instead of
/// the background thread.
///
/// # Safety
/// None: a sweep takes only the heaps' bookkeeping locks.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_Decay() -> usize {
    config::pymalloc_decay()
}

/// `int PyMalloc_StartBackgroundDecay(void)`: starts the thread that gives
/// back what the decay policy has let go cold while the program makes no
/// calls (call it again in the child after `fork`). Returns 0, or -1 if no
/// thread could be made.
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_StartBackgroundDecay() -> c_int {
    if config::start_background_decay() {
        PYMALLOC_OK
    } else {
        -1
    }
}

/// The valid names, comma separated, in CPython's order.
static NAMES: &CStr =
    c"default, debug, pymalloc, pymalloc_debug, malloc, malloc_debug, pymalloc_all, pymalloc_all_debug";

/// `const char *PyMalloc_AllocatorNames(void)`: the names
/// `PyMalloc_SetupByName` accepts, as one static string for error messages:
/// `"default, debug, pymalloc, pymalloc_debug, malloc, malloc_debug, pymalloc_all, pymalloc_all_debug"`.
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_AllocatorNames() -> *const c_char {
    NAMES.as_ptr()
}

/// `void PyMalloc_SetDebugReportSerial(int on)`: whether the debug hooks'
/// reports include the line `The block was made by call #N to debug
/// malloc/realloc.` (on by default, as CPython builds with
/// `PYMEM_DEBUG_SERIALNO` print it; release builds of CPython 3.11 do not).
///
/// # Safety
/// None.
#[no_mangle]
pub unsafe extern "C" fn PyMalloc_SetDebugReportSerial(on: c_int) {
    pymalloc_core::debug::set_report_serial(on != 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_its_c_spelling() {
        for n in AllocatorName::ALL {
            assert_eq!(c_name(n).to_str().unwrap(), n.as_str());
        }
        let listed: Vec<&str> = NAMES.to_str().unwrap().split(", ").collect();
        let all: Vec<&str> = AllocatorName::ALL.iter().map(|n| n.as_str()).collect();
        assert_eq!(listed, all);
    }

    #[test]
    fn snapshot_conversion_keeps_every_number() {
        let mut s = Stats::new();
        s.arenas_allocated_total = 7;
        s.arenas_reclaimed = 3;
        s.arenas_highwater = 5;
        s.arenas_current = 4;
        s.arena_bytes = 4 * ARENA_SIZE;
        s.allocated_bytes = 11;
        s.available_bytes = 12;
        s.unused_pools = 13;
        s.unused_pool_bytes = 14;
        s.pool_header_bytes = 15;
        s.quantization_bytes = 16;
        s.arena_alignment_bytes = 17;
        s.raw_allocated_blocks = -2;
        s.classes[3].pools = 2;
        s.classes[3].blocks_in_use = 9;
        s.classes[3].avail_blocks = 1;
        s.map.mid_nodes = 1;
        s.map.bot_nodes = 2;
        s.map.root_bytes = 3;
        s.map.mid_node_bytes = 4;
        s.map.bot_node_bytes = 5;
        let c = PyMallocStats::from_core(&s);
        assert_eq!(c.version, PYMALLOC_STATS_VERSION);
        assert_eq!(c.nclasses as usize, NB_SMALL_SIZE_CLASSES);
        assert_eq!((c.arenas_allocated_total, c.arenas_reclaimed, c.arenas_highwater), (7, 3, 5));
        assert_eq!((c.arenas_current, c.arena_bytes), (4, 4 * ARENA_SIZE));
        assert_eq!(
            (
                c.allocated_bytes,
                c.available_bytes,
                c.unused_pools,
                c.unused_pool_bytes,
                c.pool_header_bytes,
                c.quantization_bytes,
                c.arena_alignment_bytes
            ),
            (11, 12, 13, 14, 15, 16, 17)
        );
        assert_eq!((c.blocks_in_use, c.raw_allocated_blocks), (9, -2));
        assert_eq!(c.allocated_blocks, 7);
        assert_eq!(
            (c.map_mid_nodes, c.map_bot_nodes, c.map_root_bytes, c.map_mid_node_bytes, c.map_bot_node_bytes),
            (1, 2, 3, 4, 5)
        );
        for (i, cl) in c.classes.iter().enumerate() {
            if i < NB_SMALL_SIZE_CLASSES {
                assert_eq!(cl.size, (i + 1) * ALIGNMENT);
            } else {
                assert_eq!(*cl, PyMallocClassStats::default());
            }
        }
        assert_eq!(
            c.classes[3],
            PyMallocClassStats { size: 4 * ALIGNMENT, pools: 2, blocks_in_use: 9, avail_blocks: 1 }
        );
    }

    #[test]
    fn get_stats_rejects_null_and_short_structs_without_writing() {
        // SAFETY: NULL is accepted and rejected.
        assert_eq!(unsafe { PyMalloc_GetStats(core::ptr::null_mut()) }, PYMALLOC_ERR_INVALID_ARGUMENT);
        let mut buf = [0xABu8; PYMALLOC_STATS_V1_SIZE];
        buf[..size_of::<usize>()].copy_from_slice(&(PYMALLOC_STATS_V1_SIZE - 1).to_ne_bytes());
        // SAFETY: buf holds struct_size (and more) bytes.
        let r = unsafe { PyMalloc_GetStats(buf.as_mut_ptr().cast()) };
        assert_eq!(r, PYMALLOC_ERR_INVALID_ARGUMENT);
        assert!(buf[size_of::<usize>()..].iter().all(|&b| b == 0xAB));
    }

    #[test]
    fn get_stats_fills_only_the_callers_size() {
        // A caller from the future, with a bigger struct: the tail is left.
        let big = PYMALLOC_STATS_V1_SIZE + 64;
        let mut buf = vec![0xABu8; big];
        buf[..size_of::<usize>()].copy_from_slice(&big.to_ne_bytes());
        // SAFETY: buf holds `big` bytes.
        let r = unsafe { PyMalloc_GetStats(buf.as_mut_ptr().cast()) };
        assert_eq!(r, PYMALLOC_OK);
        assert!(buf[PYMALLOC_STATS_V1_SIZE..].iter().all(|&b| b == 0xAB));
        // SAFETY: the prefix is an initialised PyMallocStats.
        let s = unsafe { buf.as_ptr().cast::<PyMallocStats>().read_unaligned() };
        assert_eq!(s.struct_size, big);
        assert_eq!(s.version, PYMALLOC_STATS_VERSION);
        assert_eq!(s.arena_size, ARENA_SIZE);
        assert_eq!(s.classes[0].size, ALIGNMENT);
    }
}
