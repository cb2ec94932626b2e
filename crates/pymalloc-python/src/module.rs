//! The built-in module `_pymalloc`, and what it replaces in `sys`.
//!
//! * `stats()`: the statistics snapshot as a dict;
//! * `debugmallocstats()`: the `sys._debugmallocstats()` table, to stderr;
//! * `allocator()`: the configuration in force (`pymalloc`, `malloc`,
//!   `pymalloc_debug`, `malloc_debug`), or None if something else was
//!   installed through pymalloc-rs's domains;
//! * `arenas()`: every arena and the state of each of its pools;
//! * `arena_map()`: the same as text, one character per pool;
//! * `arena_map_svg(path=None)`: the same as an SVG picture;
//! * `owns(address)`: is this address inside a pymalloc arena?
//! * `validate()`: check every invariant of the heap;
//! * `purge()`: give back to the OS what holds no block;
//! * `floor()`: the bytes that hold live blocks (pool pages, C heap);
//! * `pinning()`, `pinning_report()`: per size class, the pages live blocks
//!   hold and how much the sparsely used pools pin;
//! * `pinning_by_line(limit)`: the source lines (tracemalloc's) whose blocks
//!   pin the most pages of sparse pools;
//! * `purge_policy()`: the purge policy and whether the decay thread runs;
//! * `mode()`: `gil`, `threaded` or `locked` (see `PYMALLOC_MODE`);
//! * `getallocatedblocks()`: live blocks, as `sys.getallocatedblocks()`.
//!
//! `sys._debugmallocstats()` and `sys.getallocatedblocks()` are replaced by
//! versions that report pymalloc-rs's heap (CPython's would report its own
//! obmalloc, which is not in use).

use std::fmt::Write as _;

use pymalloc::geometry::{
    class_size, num_blocks, ARENA_SIZE, NB_SMALL_SIZE_CLASSES, POOL_OVERHEAD, POOL_SIZE, SMALL_REQUEST_THRESHOLD,
};
use pymalloc::{ArenaInfo, PoolState, PurgePolicy};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// Adds `_pymalloc` to the built-in modules (before initialisation).
pub fn register() {
    pyo3::append_to_inittab!(_pymalloc);
}

/// Where `_pymalloc` keeps CPython's own `sys._debugmallocstats`. With our
/// allocators installed, it prints only the free-list lines (its pymalloc
/// table needs CPython's pymalloc in use), in every version's own layout.
const CPYTHON_DEBUGMALLOCSTATS: &str = "_cpython_debugmallocstats";

/// Replaces `sys._debugmallocstats` and `sys.getallocatedblocks` (after
/// initialisation, with the GIL held by this thread). Unless `purge` is
/// `never`, appends `_pymalloc._after_collection` to `gc.callbacks`, so that
/// full collections give memory back. Under a decay policy, starts the
/// background decay thread, and again in the child after `os.fork()`.
pub fn install_sys_overrides(purge: PurgePolicy) {
    Python::attach(|py| -> PyResult<()> {
        let sys = py.import("sys")?;
        let m = py.import("_pymalloc")?;
        m.setattr(CPYTHON_DEBUGMALLOCSTATS, sys.getattr("_debugmallocstats")?)?;
        sys.setattr("_debugmallocstats", m.getattr("_sys_debugmallocstats")?)?;
        sys.setattr("getallocatedblocks", m.getattr("getallocatedblocks")?)?;
        if purge != PurgePolicy::Never {
            let callbacks = py.import("gc")?.getattr("callbacks")?;
            callbacks.call_method1("append", (m.getattr("_after_collection")?,))?;
        }
        if matches!(purge, PurgePolicy::Decay { .. }) {
            pymalloc::config::start_background_decay();
            // The child starts its own thread; 3.12+ also keep it out of
            // the parent's thread count at fork (fork.rs).
            crate::fork::record_forking_threads();
            let kw = PyDict::new(py);
            kw.set_item("after_in_child", m.getattr("_fork_after_in_child")?)?;
            if crate::version::FORK_COUNTS_THREADS {
                kw.set_item("before", m.getattr("_fork_before")?)?;
                kw.set_item("after_in_parent", m.getattr("_fork_after_in_parent")?)?;
            }
            py.import("os")?.call_method("register_at_fork", (), Some(&kw))?;
        }
        Ok(())
    })
    .expect("installing the _pymalloc overrides in sys");
}

/// One pool as a character: ' ' untouched, '_' given back to the OS, '.'
/// empty, '1'..'9' used (tenths of its blocks in use, rounded up), '#' full.
fn pool_char(p: PoolState) -> char {
    match p {
        PoolState::Untouched => ' ',
        PoolState::Decommitted => '_',
        PoolState::Empty => '.',
        PoolState::Full { .. } => '#',
        PoolState::Used { class, blocks } => {
            let total = num_blocks(class as usize);
            let tenths = (blocks as usize * 10).div_ceil(total).clamp(1, 9);
            char::from(b'0' + tenths as u8)
        }
    }
}

/// Fill fraction of a pool, for colours.
fn pool_fill(p: PoolState) -> Option<f64> {
    match p {
        PoolState::Untouched | PoolState::Decommitted => None,
        PoolState::Empty => Some(0.0),
        PoolState::Full { .. } => Some(1.0),
        PoolState::Used { class, blocks } => Some(blocks as f64 / num_blocks(class as usize) as f64),
    }
}

/// Who pins the pool pages, as text: one line per size class in use, then
/// the totals.
fn pinning_text(p: &[pymalloc::ClassPinning]) -> String {
    let page = pymalloc::page_bytes();
    let mib = |pages: usize| (pages * page) as f64 / (1024.0 * 1024.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Who pins pymalloc's pool pages (pages of {page} bytes; sparse: at most 1/8 of a pool's blocks in use)"
    );
    let _ = writeln!(
        out,
        "class  size   pools     blocks  live pages  header pages  sparse pools  sparse blocks  freed if they went"
    );
    let (mut live, mut headers, mut sparse, mut sblocks) = (0, 0, 0, 0);
    for (c, x) in p.iter().enumerate().filter(|(_, x)| x.pools > 0) {
        let _ = writeln!(
            out,
            "{c:>5} {:>5} {:>7} {:>10} {:>11} {:>13} {:>13} {:>14} {:>14.2} MiB",
            class_size(c),
            x.pools,
            x.blocks,
            x.live_pages,
            x.header_pages,
            x.sparse_pools,
            x.sparse_blocks,
            mib(x.sparse_pages)
        );
        live += x.live_pages;
        headers += x.header_pages;
        sparse += x.sparse_pages;
        sblocks += x.sparse_blocks;
    }
    let _ = writeln!(
        out,
        "total: {:.2} MiB of live pages, {:.2} MiB held for headers alone; sparse pools hold {:.2} MiB with {sblocks} blocks",
        mib(live),
        mib(headers),
        mib(sparse)
    );
    out
}

fn text_map(arenas: &[ArenaInfo]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} arenas of {} KiB, one character per {} KiB pool: ' ' untouched, '_' given back, '.' empty, 1-9 tenths in use, '#' full",
        arenas.len(),
        ARENA_SIZE / 1024,
        POOL_SIZE / 1024
    );
    for a in arenas {
        let row: String = a.pools[..a.ntotalpools].iter().map(|&p| pool_char(p)).collect();
        let _ = writeln!(s, "{:#014x} |{row}| {:2} free", a.address, a.nfreepools);
    }
    s
}

/// The arenas as SVG; pools in `labels` (by address: the sparse pools and
/// the lines that pin them) get a red outline and the label as a tooltip.
fn svg_map(arenas: &[ArenaInfo], labels: &std::collections::HashMap<usize, String>) -> String {
    const CELL: usize = 10;
    let cols = arenas.iter().map(|a| a.ntotalpools).max().unwrap_or(0);
    let (w, h) = (cols * CELL + 160, arenas.len() * CELL + 30);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="monospace" font-size="9">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="2" y="12">pymalloc-rs arenas: one cell per pool; white untouched, grey empty, blue by fill, black full; red outline: sparse pool (hover: who pins it)</text>"#
    );
    for (row, a) in arenas.iter().enumerate() {
        let y = 20 + row * CELL;
        let _ = writeln!(s, r#"<text x="2" y="{}">{:#014x}</text>"#, y + CELL - 2, a.address);
        let first_pool = a.address.next_multiple_of(POOL_SIZE);
        for (col, &p) in a.pools[..a.ntotalpools].iter().enumerate() {
            let fill = match pool_fill(p) {
                None => "#ffffff".to_owned(),
                Some(f) if f >= 1.0 => "#000000".to_owned(),
                Some(0.0) => "#cccccc".to_owned(),
                Some(f) => {
                    let v = (220.0 - 180.0 * f) as u8;
                    format!("#{v:02x}{v:02x}ff")
                }
            };
            let (x, side) = (150 + col * CELL, CELL - 1);
            let (stroke, width, title) = match labels.get(&(first_pool + col * POOL_SIZE)) {
                Some(label) => ("#d00", "1.5", format!("<title>{}</title>", xml_escape(label))),
                None => ("#999", "0.5", String::new()),
            };
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="{y}" width="{side}" height="{side}" fill="{fill}" stroke="{stroke}" stroke-width="{width}">{title}</rect>"#
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Whether tracemalloc is tracing.
fn tracing(py: Python<'_>) -> PyResult<bool> {
    py.import("tracemalloc")?.call_method0("is_tracing")?.extract()
}

/// `_pymalloc._after_collection(phase, info)`, a `gc.callbacks` entry
/// (installed at start-up unless `PYMALLOC_PURGE=never`): at the end of a
/// full collection, gives memory back if enough lies free
/// (`pymalloc::config::pymalloc_release_after_collection`).
///
/// It runs at every collection of every run, so it is written against the
/// C API: a `#[pyfunction]` with two arguments brought pyo3's argument
/// extraction (3 KB of code, 0.2 of it executed) into the launcher's first
/// text window (`build.rs`), which the code a run executes fills.
mod gc_hook {
    use core::cell::UnsafeCell;
    use pyo3_ffi as ffi;
    use std::ffi::c_int;

    /// The method definition; CPython keeps a pointer to it in the function
    /// object, and never writes through it.
    struct Def(UnsafeCell<ffi::PyMethodDef>);
    // SAFETY: written by no one after its initialisation; CPython reads it
    // with the GIL held.
    unsafe impl Sync for Def {}

    static DEF: Def = Def(UnsafeCell::new(ffi::PyMethodDef {
        ml_name: c"_after_collection".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: after_collection },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"_after_collection(phase, info)\n--\n\nA gc.callbacks entry: at the end of a full collection, \
gives memory back if enough lies free."
            .as_ptr(),
    }));

    /// A new reference to the function object, bound to `module` (its
    /// `__self__`, whose name is its `__module__`, as a `#[pyfunction]`'s),
    /// or null with an exception set.
    ///
    /// # Safety
    /// The GIL is held; `module` is a live module object.
    pub(super) unsafe fn new_function(module: *mut ffi::PyObject) -> *mut ffi::PyObject {
        // SAFETY: the contract; DEF is a valid definition for the life of
        // the process; the function takes references of its own to the
        // module and its name, and ours to the name is dropped.
        unsafe {
            let name = ffi::PyModule_GetNameObject(module);
            if name.is_null() {
                return core::ptr::null_mut();
            }
            let f = ffi::PyCFunction_NewEx(DEF.0.get(), module, name);
            ffi::Py_DecRef(name);
            f
        }
    }

    /// Sets a TypeError and returns null.
    ///
    /// # Safety
    /// The GIL is held.
    #[cold]
    #[inline(never)]
    unsafe fn type_error(msg: &core::ffi::CStr) -> *mut ffi::PyObject {
        // SAFETY: the contract; msg is NUL-terminated.
        unsafe { ffi::PyErr_SetString(ffi::PyExc_TypeError, msg.as_ptr()) };
        core::ptr::null_mut()
    }

    /// `after_collection(phase: str, info: dict)`: purges when `phase` is
    /// "stop" and `info["generation"]` is 2.
    unsafe extern "C" fn after_collection(
        _module: *mut ffi::PyObject,
        args: *mut *mut ffi::PyObject,
        nargs: ffi::Py_ssize_t,
    ) -> *mut ffi::PyObject {
        // SAFETY: CPython calls this with the GIL held and `nargs`
        // borrowed references in `args`.
        unsafe {
            if nargs != 2 {
                return type_error(c"_after_collection() takes 2 arguments (phase, info)");
            }
            let (phase, info) = (*args, *args.add(1));
            if ffi::PyUnicode_Check(phase) == 0 || ffi::PyDict_Check(info) == 0 {
                return type_error(c"_after_collection() takes a str and a dict");
            }
            let stop: c_int = ffi::PyUnicode_CompareWithASCIIString(phase, c"stop".as_ptr());
            if stop == 0 {
                // A borrowed reference, or null without an exception.
                let generation = ffi::PyDict_GetItemString(info, c"generation".as_ptr());
                if !generation.is_null() && ffi::PyLong_Check(generation) != 0 && ffi::PyLong_AsSsize_t(generation) == 2
                {
                    // The GIL serialises MEM and OBJ in the GIL mode.
                    pymalloc::config::pymalloc_release_after_collection();
                }
                if !ffi::PyErr_Occurred().is_null() {
                    return core::ptr::null_mut();
                }
            }
            let none = ffi::Py_None();
            ffi::Py_IncRef(none);
            none
        }
    }
}

#[pymodule]
pub mod _pymalloc {
    use super::*;

    /// The statistics snapshot of the pymalloc heap, as a dict.
    #[pyfunction]
    fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let s = pymalloc::config::pymalloc_stats();
        let d = PyDict::new(py);
        d.set_item("small_request_threshold", SMALL_REQUEST_THRESHOLD)?;
        d.set_item("size_classes", NB_SMALL_SIZE_CLASSES)?;
        d.set_item("pool_size", POOL_SIZE)?;
        d.set_item("arena_size", ARENA_SIZE)?;
        d.set_item("pool_overhead", POOL_OVERHEAD)?;
        let classes = PyList::empty(py);
        for (i, c) in s.classes.iter().enumerate() {
            let cd = PyDict::new(py);
            cd.set_item("index", i)?;
            cd.set_item("size", c.size)?;
            cd.set_item("pools", c.pools)?;
            cd.set_item("blocks_in_use", c.blocks_in_use)?;
            cd.set_item("avail_blocks", c.avail_blocks)?;
            classes.append(cd)?;
        }
        d.set_item("classes", classes)?;
        for (k, v) in [
            ("arenas_allocated_total", s.arenas_allocated_total),
            ("arenas_reclaimed", s.arenas_reclaimed),
            ("arenas_highwater", s.arenas_highwater),
            ("arenas_current", s.arenas_current),
            ("arena_bytes", s.arena_bytes),
            ("allocated_bytes", s.allocated_bytes),
            ("available_bytes", s.available_bytes),
            ("unused_pools", s.unused_pools),
            ("decommitted_pools", s.decommitted_pools),
            ("pages_out", s.pages_out),
            ("header_table_bytes", s.header_table_bytes),
            ("unused_pool_bytes", s.unused_pool_bytes),
            ("pool_header_bytes", s.pool_header_bytes),
            ("quantization_bytes", s.quantization_bytes),
            ("arena_alignment_bytes", s.arena_alignment_bytes),
            ("blocks_in_use", s.blocks_in_use()),
        ] {
            d.set_item(k, v)?;
        }
        d.set_item("raw_allocated_blocks", s.raw_allocated_blocks)?;
        let m = PyDict::new(py);
        m.set_item("mid_nodes", s.map.mid_nodes)?;
        m.set_item("bot_nodes", s.map.bot_nodes)?;
        m.set_item("root_bytes", s.map.root_bytes)?;
        m.set_item("mid_bytes", s.map.mid_nodes * s.map.mid_node_bytes)?;
        m.set_item("bot_bytes", s.map.bot_nodes * s.map.bot_node_bytes)?;
        d.set_item("arena_map", m)?;
        // Blocks above 512 bytes in our own heaps (the `pymalloc_all`
        // configurations; zeroes otherwise).
        let e = pymalloc::every_size::stats();
        let sp = PyDict::new(py);
        for (k, v) in [
            ("segments", e.segments),
            ("medium_blocks", e.medium_blocks),
            ("medium_bytes", e.medium_bytes),
            ("large_blocks", e.large_blocks),
            ("large_bytes", e.large_bytes),
            ("huge_blocks", e.huge_blocks),
            ("huge_bytes", e.huge_bytes),
            ("dirty_bytes", e.dirty_bytes),
            ("pages_out_bytes", e.pages_out_bytes),
            ("huge_kept_bytes", e.huge_kept_bytes),
        ] {
            sp.set_item(k, v)?;
        }
        d.set_item("spans", sp)?;
        Ok(d)
    }

    /// Prints the statistics table of `sys._debugmallocstats()` to stderr.
    #[pyfunction]
    fn debugmallocstats() {
        pymalloc::stats::print_to_stderr(&pymalloc::config::pymalloc_stats());
    }

    /// `sys._debugmallocstats()`: our table and a blank line, then what
    /// CPython's own function prints when its allocators are not in use:
    /// the free-list statistics, whichever this version has.
    #[pyfunction]
    fn _sys_debugmallocstats(py: Python<'_>) -> PyResult<()> {
        let s = pymalloc::config::pymalloc_stats();
        // Only when pymalloc serves the domains (`pymalloc_all` too), as
        // CPython prints its table only when its pymalloc is in use.
        use pymalloc::config::AllocatorName;
        if pymalloc::config::current()
            .is_some_and(|c| matches!(c.base(), AllocatorName::Pymalloc | AllocatorName::PymallocAll))
        {
            pymalloc::stats::print_to_stderr(&s);
            // SAFETY: writing one byte to fd 2.
            unsafe { libc::write(2, b"\n".as_ptr().cast(), 1) };
        }
        py.import("_pymalloc")?.getattr(CPYTHON_DEBUGMALLOCSTATS)?.call0()?;
        Ok(())
    }

    /// The configuration in force: `pymalloc`, `malloc`, `pymalloc_debug`,
    /// `malloc_debug`, or None for anything else.
    #[pyfunction]
    fn allocator() -> Option<&'static str> {
        pymalloc::config::current().map(|n| n.as_str())
    }

    /// Every arena: a dict with its address, free pools and a list of its
    /// pools as `(state, size_class, blocks_in_use)`, state being one of
    /// `untouched`, `empty`, `used`, `full`.
    #[pyfunction]
    fn arenas(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
        let out = PyList::empty(py);
        for a in pymalloc::config::pymalloc_arenas() {
            let d = PyDict::new(py);
            d.set_item("address", a.address)?;
            d.set_item("first_pool_offset", a.first_pool_offset)?;
            d.set_item("ntotalpools", a.ntotalpools)?;
            d.set_item("nfreepools", a.nfreepools)?;
            let pools = PyList::empty(py);
            for &p in &a.pools[..a.ntotalpools] {
                let t: (&str, Option<usize>, usize) = match p {
                    PoolState::Untouched => ("untouched", None, 0),
                    PoolState::Decommitted => ("decommitted", None, 0),
                    PoolState::Empty => ("empty", None, 0),
                    PoolState::Used { class, blocks } => ("used", Some(class as usize), blocks as usize),
                    PoolState::Full { class } => ("full", Some(class as usize), num_blocks(class as usize)),
                };
                pools.append(t)?;
            }
            d.set_item("pools", pools)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// The arenas as text, one character per pool.
    #[pyfunction]
    fn arena_map() -> String {
        text_map(&pymalloc::config::pymalloc_arenas())
    }

    /// The arenas as an SVG picture; written to `path` if given.
    #[pyfunction]
    #[pyo3(signature = (path=None))]
    fn arena_map_svg(py: Python<'_>, path: Option<std::path::PathBuf>) -> PyResult<String> {
        let labels = crate::pins::Pins::take(py).pool_labels();
        let svg = svg_map(&pymalloc::config::pymalloc_arenas(), &labels);
        if let Some(p) = path {
            std::fs::write(p, &svg)?;
        }
        Ok(svg)
    }

    /// True if `address` lies inside a pymalloc arena.
    #[pyfunction]
    fn owns(address: usize) -> bool {
        pymalloc::owns(std::ptr::without_provenance(address))
    }

    /// Size of the block pymalloc would use for a request of `n` bytes, or
    /// None if it would go to the raw allocator.
    #[pyfunction]
    fn block_size(n: usize) -> Option<usize> {
        pymalloc::geometry::size_class(n).map(class_size)
    }

    /// Checks every invariant of the heap in use (the calling thread's, in
    /// the threaded mode); raises AssertionError on a broken one.
    #[pyfunction]
    fn validate() -> PyResult<()> {
        // SAFETY: the GIL is held, which serialises MEM and OBJ in the GIL
        // mode: the GIL heap is ours to walk.
        let r = unsafe { pymalloc::config::pymalloc_validate() };
        r.map_err(|e| pyo3::exceptions::PyAssertionError::new_err(e.to_string()))
    }

    /// Gives back to the OS the memory pymalloc holds no block in: the free
    /// pages of pools in use, the pages of empty pools and wholly free
    /// arenas; then trims the C library's heap. Returns the bytes pymalloc
    /// gave back.
    #[pyfunction]
    fn purge() -> usize {
        // SAFETY: called with the GIL held, which serialises MEM and OBJ in
        // the GIL mode.
        unsafe { pymalloc::config::pymalloc_purge() }
    }

    /// `os.register_at_fork` hooks for the background decay thread (see
    /// `fork.rs`).
    #[pyfunction]
    fn _fork_before() {
        crate::fork::before_fork();
    }

    #[pyfunction]
    fn _fork_after_in_parent() {
        crate::fork::after_fork_in_parent();
    }

    #[pyfunction]
    fn _fork_after_in_child() {
        crate::fork::after_fork_in_child();
    }

    /// The purge policy's name (`PYMALLOC_PURGE`'s spelling) and whether
    /// the background decay thread runs in this process.
    #[pyfunction]
    fn purge_policy() -> (String, bool) {
        (pymalloc::gil_heap().heap().purge_policy().name(), pymalloc::background::is_running())
    }

    /// Adds `_after_collection` ([`super::gc_hook`]), which is written
    /// against the C API rather than as a `#[pyfunction]`.
    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        // SAFETY: the GIL is held during module initialisation, and `m` is
        // a live module; the definition is a static that outlives the
        // function object.
        let f = unsafe { Bound::from_owned_ptr_or_err(m.py(), super::gc_hook::new_function(m.as_ptr()))? };
        m.add("_after_collection", f)
    }

    /// Who pins the pool pages, per size class in use: a list of dicts with
    /// `size`, `pools`, `blocks`, `live_pages` (pages holding a block in
    /// use), `header_pages` (pools whose first page holds their header and
    /// no block in use: pools outside the arena region, which keep CPython's
    /// layout; the region's keep their headers in the header table),
    /// `sparse_pools` (at most 1/8 of their blocks in use), `sparse_blocks`,
    /// `sparse_bytes` (what would come back if the sparse pools' blocks were
    /// gone, their header pages included).
    #[pyfunction]
    fn pinning(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
        // SAFETY: called with the GIL held, which serialises MEM and OBJ in
        // the GIL mode: the heap is ours to walk.
        let p = unsafe { pymalloc::config::pymalloc_pinning() };
        let page = pymalloc::page_bytes();
        let out = PyList::empty(py);
        for (c, x) in p.iter().enumerate().filter(|(_, x)| x.pools > 0) {
            let d = PyDict::new(py);
            d.set_item("size", class_size(c))?;
            d.set_item("pools", x.pools)?;
            d.set_item("blocks", x.blocks)?;
            d.set_item("live_pages", x.live_pages)?;
            d.set_item("header_pages", x.header_pages)?;
            d.set_item("sparse_pools", x.sparse_pools)?;
            d.set_item("sparse_blocks", x.sparse_blocks)?;
            d.set_item("sparse_bytes", x.sparse_pages * page)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// The source lines whose blocks pin the most pages of sparse pools, as
    /// tracemalloc saw them allocated: a list of dicts with `filename` and
    /// `lineno` (None for blocks tracemalloc did not trace), `blocks` and
    /// `pinned_bytes` (their share of the pools' live pages), most first.
    #[pyfunction]
    #[pyo3(signature = (limit=10))]
    fn pinning_by_line(py: Python<'_>, limit: usize) -> PyResult<Bound<'_, PyList>> {
        let out = PyList::empty(py);
        for l in crate::pins::Pins::take(py).by_line(limit) {
            let d = PyDict::new(py);
            let (file, line) = l.site.map_or((None, None), |(f, n)| (Some(f), Some(n)));
            d.set_item("filename", file)?;
            d.set_item("lineno", line)?;
            d.set_item("blocks", l.blocks)?;
            d.set_item("pinned_bytes", l.pinned_bytes)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// [`pinning`] as text for people, then the source lines that pin the
    /// most (when tracemalloc is tracing).
    #[pyfunction]
    fn pinning_report(py: Python<'_>) -> PyResult<String> {
        // SAFETY: as in pinning.
        let mut text = pinning_text(&unsafe { pymalloc::config::pymalloc_pinning() });
        text.push_str(&crate::pins::text(&crate::pins::Pins::take(py).by_line(10), tracing(py)?));
        Ok(text)
    }

    /// What no allocator that never moves a block could give back now, as a
    /// dict: `pool_pages` (bytes of pymalloc's pool pages holding a live
    /// block), `span_pages` (bytes of our own heaps' pages holding part of a
    /// live block above 512 bytes: the `pymalloc_all` configurations; see
    /// `every_size::live_page_bytes`) and `malloc_in_use` (bytes the C
    /// library has handed out and not had back, None where it cannot tell).
    /// Beside them, not part of the floor: `header_pages`, the bytes of the
    /// pages our heaps hold for their metadata alone: the header table's
    /// entries for the live arenas (pools of the arena region keep their
    /// headers there), the first pages, holding no live block, of pools
    /// that keep their header in the pool (arenas outside the region), and
    /// the calling thread's segments' header pages.
    #[pyfunction]
    fn floor(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        let d = PyDict::new(py);
        // SAFETY: called with the GIL held, which serialises MEM and OBJ in
        // the GIL mode: the heap is ours to walk.
        let (pool_pages, pool_headers) = unsafe { pymalloc::config::pymalloc_page_bytes() };
        d.set_item("pool_pages", pool_pages)?;
        d.set_item("span_pages", pymalloc::every_size::live_page_bytes())?;
        d.set_item("malloc_in_use", pymalloc::raw::in_use())?;
        d.set_item("header_pages", pool_headers + pymalloc::every_size::current_header_page_bytes())?;
        Ok(d)
    }

    /// How pymalloc serves MEM and OBJ: "gil" (one heap, the GIL as its
    /// lock), "threaded" (one heap per thread) or "locked" (one heap, a
    /// mutex); None when pymalloc is not in use.
    #[pyfunction]
    fn mode() -> Option<&'static str> {
        pymalloc::config::active_pymalloc_mode().map(pymalloc::config::PymallocMode::as_str)
    }

    /// Live blocks of the heap: pool blocks plus blocks it handed to the raw
    /// allocator (`sys.getallocatedblocks()`).
    #[pyfunction]
    fn getallocatedblocks() -> isize {
        pymalloc::config::pymalloc_stats().allocated_blocks()
    }
}
