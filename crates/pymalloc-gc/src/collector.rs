//! The collector: generations, object allocation with GC headers, tracking,
//! the trashcan, and CPython 3.11's cycle detection (`Modules/gcmodule.c`).
//!
//! # Invariants of a [`Collector`]
//!
//! * It never moves (it is boxed or static): list heads point to themselves.
//! * Every tracked object is in exactly one list: a generation, the permanent
//!   generation, or a list local to the running collection.
//! * A tracked object's reference count is positive (deallocation untracks
//!   first), and its type's traversal reports only references the object
//!   actually holds (if it reports fewer, objects are kept; if more, the
//!   Rust front turns the error into a panic on access, never into a free of
//!   memory still referenced, because memory is freed only at count zero).
//! * `collecting` is set while a collection runs; no second one starts.
//! * `forbid_mutation` is set while traversals run with `gc_refs` in
//!   `prev` (update/subtract/move). Tracking, untracking or allocating then
//!   would corrupt the lists, so it aborts the process instead.
//! * `live_blocks` counts the blocks handed out by the backing and not yet
//!   freed; blocks in the heap's own block cache
//!   ([`pymalloc::Heap::new_retaining`]) are free as far as it is concerned.
//! * The collector is not `Sync`: all access is from one thread, or under
//!   the embedder's lock (CPython's GIL) for the process-wide collector of
//!   the C ABI. Every method takes `&self` and all state is in `Cell`s, so
//!   callbacks (finalizers, weak-reference callbacks, `tp_clear`,
//!   deallocators) may re-enter it.

use core::cell::{Cell, RefCell, UnsafeCell};
use core::ffi::{c_int, c_void};
use core::fmt;
use core::ptr;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use crate::freelist::FreeLists;
use crate::list;
use crate::object::{
    as_gc, from_gc, is_gc, var_size, GcHead, PyObject, PyVarObject, TypeObject, VisitProc, GC_HEAD_SIZE,
    PREV_MASK_COLLECTING, PREV_MASK_FINALIZED, PREV_MASK_WEAKREFS,
};
use crate::weakref::{self, WeakRefObject};

/// Number of generations (CPython's `NUM_GENERATIONS`).
pub const NUM_GENERATIONS: usize = 3;
/// Default thresholds (CPython's `_PyGC_Initialize`).
pub const DEFAULT_THRESHOLDS: [usize; NUM_GENERATIONS] = [700, 10, 10];

/// `gc.DEBUG_STATS`: print statistics during collection.
pub const DEBUG_STATS: u32 = 1 << 0;
/// `gc.DEBUG_COLLECTABLE`: print collectable objects found.
pub const DEBUG_COLLECTABLE: u32 = 1 << 1;
/// `gc.DEBUG_UNCOLLECTABLE`: print uncollectable objects found.
pub const DEBUG_UNCOLLECTABLE: u32 = 1 << 2;
/// `gc.DEBUG_SAVEALL`: keep every unreachable object in `garbage` instead of freeing it.
pub const DEBUG_SAVEALL: u32 = 1 << 5;
/// `gc.DEBUG_LEAK`: `DEBUG_COLLECTABLE | DEBUG_UNCOLLECTABLE | DEBUG_SAVEALL`.
pub const DEBUG_LEAK: u32 = DEBUG_COLLECTABLE | DEBUG_UNCOLLECTABLE | DEBUG_SAVEALL;

/// Deallocations nested deeper than this are deferred (CPython's trashcan,
/// `_PyTrash_UNWIND_LEVEL`).
pub const TRASHCAN_LIMIT: u32 = 50;

/// Per-generation statistics (one dict of `gc.get_stats()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GenerationStats {
    /// Collections of this generation.
    pub collections: usize,
    /// Objects collected by them.
    pub collected: usize,
    /// Objects found uncollectable by them.
    pub uncollectable: usize,
}

/// The phase a collection callback is called in (`"start"` or `"stop"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the collection.
    Start,
    /// After the collection.
    Stop,
}

/// What a callback of `gc.callbacks` receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallbackInfo {
    /// Start or stop.
    pub phase: Phase,
    /// The oldest generation being collected.
    pub generation: usize,
    /// Objects collected (0 at start).
    pub collected: usize,
    /// Objects found uncollectable (0 at start).
    pub uncollectable: usize,
}

/// A generation number outside `0..NUM_GENERATIONS` (CPython's `ValueError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidGeneration(pub usize);

impl fmt::Display for InvalidGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid generation {} (there are {NUM_GENERATIONS})", self.0)
    }
}

impl std::error::Error for InvalidGeneration {}

/// Where a collector's objects come from. (The heap is inline: a collector
/// is made once per thread, and every allocation saves an indirection.)
#[allow(clippy::large_enum_variant)]
enum Backing {
    /// The OBJ domain (CPython's `PyObject_Malloc`); for the process-wide
    /// collector of the C ABI.
    ObjDomain,
    /// A pymalloc heap owned by the collector (thread-local collectors),
    /// made by [`pymalloc::Heap::new_retaining`]: its per-class block cache
    /// serves the Rust front's allocate-and-drop loops, and full collections
    /// flush it ([`pymalloc::Heap::flush_cache`]).
    Heap(UnsafeCell<pymalloc::Heap>),
}

struct Generation {
    head: UnsafeCell<GcHead>,
    threshold: Cell<usize>,
    count: Cell<usize>,
}

impl Generation {
    fn new(threshold: usize) -> Generation {
        Generation { head: UnsafeCell::new(GcHead::new()), threshold: Cell::new(threshold), count: Cell::new(0) }
    }
    #[inline(always)]
    fn head(&self) -> *mut GcHead {
        self.head.get()
    }
}

type Callback = Rc<dyn Fn(&CallbackInfo)>;

/// Where the debug output (`DEBUG_STATS`, ...) goes instead of standard error.
pub type DebugSink = Box<dyn FnMut(&str)>;

/// A generational cycle collector with CPython 3.11's semantics, and the
/// object allocator in front of it. See the module documentation for its
/// invariants.
pub struct Collector {
    gens: [Generation; NUM_GENERATIONS],
    permanent: Generation,
    enabled: Cell<bool>,
    collecting: Cell<bool>,
    forbid_mutation: Cell<bool>,
    debug: Cell<u32>,
    long_lived_total: Cell<usize>,
    long_lived_pending: Cell<usize>,
    stats: [Cell<GenerationStats>; NUM_GENERATIONS],
    /// `gc.garbage`: each entry owns one reference.
    garbage: RefCell<Vec<*mut PyObject>>,
    callbacks: RefCell<Vec<(u64, Callback)>>,
    next_callback_id: Cell<u64>,
    debug_sink: RefCell<Option<DebugSink>>,
    /// Referent address -> first weak reference to it.
    pub(crate) weak_table: RefCell<HashMap<usize, *mut WeakRefObject>>,
    freelists: RefCell<Vec<*mut FreeLists>>,
    backing: Backing,
    trash_depth: Cell<u32>,
    trash_head: Cell<*mut PyObject>,
    /// Blocks handed out and not yet freed (objects, plus free-list blocks).
    live_blocks: Cell<usize>,
}

/// What `move_legacy_finalizers` found in the unreachable set.
#[derive(Default)]
struct Survey {
    count: usize,
    weakrefs: bool,
    finalizers: bool,
}

/// Aborts the process if dropped during a panic: collector phases that must
/// not unwind (their lists are inconsistent) hold one.
struct AbortOnUnwind(&'static str);

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("pymalloc-gc: fatal: panic during {}", self.0);
            std::process::abort();
        }
    }
}

/// Sets `forbid_mutation` for a scope (with an abort-on-unwind guard).
struct NoMutation<'a> {
    c: &'a Collector,
    old: bool,
    _abort: AbortOnUnwind,
}

impl<'a> NoMutation<'a> {
    fn new(c: &'a Collector, what: &'static str) -> NoMutation<'a> {
        let old = c.forbid_mutation.replace(true);
        NoMutation { c, old, _abort: AbortOnUnwind(what) }
    }
}

impl Drop for NoMutation<'_> {
    fn drop(&mut self) {
        self.c.forbid_mutation.set(self.old);
    }
}

#[cold]
#[inline(never)]
fn fatal(msg: &str) -> ! {
    eprintln!("pymalloc-gc: fatal: {msg}");
    std::process::abort()
}

/// Calls the type's traversal (none means: no references).
///
/// # Safety
/// `op` is a live GC object.
#[inline(always)]
unsafe fn traverse(op: *mut PyObject, visit: crate::object::VisitProc, arg: *mut c_void) -> c_int {
    // SAFETY: op is live, so is its type.
    match unsafe { (*(*op).ob_type).tp_traverse } {
        // SAFETY: the traversal contract of TypeObject::tp_traverse.
        Some(t) => unsafe { t(op, visit, arg) },
        None => 0,
    }
}

// ---------------------------------------------------------------------------
// Visitors used by the collection phases. `arg` is a list head or a context.

/// The visitors the collection phases pass, read from statics on both
/// sides (here and in `Tracer`), so that comparing them with the visitor a
/// traversal received is reliable even if the compiler duplicates the
/// functions.
pub(crate) static VISIT_DECREF: VisitProc = visit_decref;
/// See [`VISIT_DECREF`].
pub(crate) static VISIT_REACHABLE: VisitProc = visit_reachable;

/// `visit_decref` (subtract_refs).
unsafe extern "C" fn visit_decref(op: *mut PyObject, _arg: *mut c_void) -> c_int {
    // SAFETY: traversals report live objects.
    unsafe {
        if is_gc(op) {
            decref_gc(op);
        }
    }
    0
}

/// The body of `visit_decref` for an object known to be a GC object (the
/// Rust front calls it inline).
///
/// # Safety
/// `op` is a live GC object, visited by `subtract_refs`.
#[inline(always)]
pub(crate) unsafe fn decref_gc(op: *mut PyObject) {
    let g = as_gc(op);
    // SAFETY: caller's contract.
    unsafe {
        if list::is_collecting(g) {
            list::decref(g);
        }
    }
}

/// `visit_reachable` (move_unreachable); `arg` is the young list.
unsafe extern "C" fn visit_reachable(op: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: traversals report live objects.
    unsafe {
        if is_gc(op) {
            reachable_gc(op, arg);
        }
    }
    0
}

/// The body of `visit_reachable` for an object known to be a GC object.
///
/// # Safety
/// `op` is a live GC object visited by `move_unreachable`, `arg` its young
/// list.
#[inline(always)]
pub(crate) unsafe fn reachable_gc(op: *mut PyObject, arg: *mut c_void) {
    let reachable = arg.cast::<GcHead>();
    // SAFETY: caller's contract; the lists are in move_unreachable's state.
    unsafe {
        let g = as_gc(op);
        // Objects of other generations, and the ones already scanned, have
        // no collecting flag.
        if !list::is_collecting(g) {
            return;
        }
        if list::is_unreachable_marked(g) {
            // Tentatively unreachable but reachable after all: unlink by hand
            // (the list functions do not know the mask) and move back.
            let p = list::prev(g);
            let n = list::next_unmasked(g);
            (*p).next = (*g).next; // keeps the mask
            list::set_prev(n, p);
            list::append(g, reachable);
            list::set_refs(g, 1);
        } else if list::get_refs(g) == 0 {
            list::set_refs(g, 1);
        }
    }
}

/// `visit_move` (move_legacy_finalizer_reachable); `arg` is the target list.
unsafe extern "C" fn visit_move(op: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: traversals report live objects; lists are consistent here.
    unsafe {
        if is_gc(op) {
            let g = as_gc(op);
            if list::is_collecting(g) {
                list::move_to(g, arg.cast());
                list::clear_flags(g, PREV_MASK_COLLECTING);
            }
        }
    }
    0
}

struct ReferrersCtx<'a> {
    targets: &'a [*mut PyObject],
    found: bool,
}

unsafe extern "C" fn visit_referrers(op: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: arg is the ReferrersCtx of get_referrers.
    let ctx = unsafe { &mut *arg.cast::<ReferrersCtx<'_>>() };
    if ctx.targets.contains(&op) {
        ctx.found = true;
        return 1;
    }
    0
}

unsafe extern "C" fn visit_collect(op: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Vec of get_referents.
    unsafe { (*arg.cast::<Vec<*mut PyObject>>()).push(op) };
    0
}

impl Collector {
    /// Allocates a collector and links its list heads to themselves. The
    /// heads are initialised through a shared reference derived from the raw
    /// pointer, which stays the collector's only owner (see `destroy`).
    fn new_raw(backing: Backing) -> *mut Collector {
        let raw = Box::into_raw(Box::new(Collector {
            gens: [
                Generation::new(DEFAULT_THRESHOLDS[0]),
                Generation::new(DEFAULT_THRESHOLDS[1]),
                Generation::new(DEFAULT_THRESHOLDS[2]),
            ],
            permanent: Generation::new(0),
            enabled: Cell::new(true),
            collecting: Cell::new(false),
            forbid_mutation: Cell::new(false),
            debug: Cell::new(0),
            long_lived_total: Cell::new(0),
            long_lived_pending: Cell::new(0),
            stats: Default::default(),
            garbage: RefCell::new(Vec::new()),
            callbacks: RefCell::new(Vec::new()),
            next_callback_id: Cell::new(1),
            debug_sink: RefCell::new(None),
            weak_table: RefCell::new(HashMap::new()),
            freelists: RefCell::new(Vec::new()),
            backing,
            trash_depth: Cell::new(0),
            trash_head: Cell::new(ptr::null_mut()),
            live_blocks: Cell::new(0),
        }));
        // SAFETY: raw is a valid, initialised Collector.
        let c = unsafe { &*raw };
        for g in c.gens.iter().chain(core::iter::once(&c.permanent)) {
            // SAFETY: the head is a live GcHead inside the boxed collector,
            // which never moves again.
            unsafe { list::init(g.head()) };
        }
        raw
    }

    /// A collector whose objects come from the OBJ domain
    /// (`pymalloc::Domain::Obj`, CPython's `PyObject_Malloc`).
    /// It lives for the rest of the process.
    pub fn leak_obj_domain() -> &'static Collector {
        // SAFETY: new_raw returns a valid collector that is never freed.
        unsafe { &*Collector::new_raw(Backing::ObjDomain) }
    }

    /// A collector with its own pymalloc heap (for one thread).
    /// It lives for the rest of the process.
    pub fn leak_with_heap() -> &'static Collector {
        // SAFETY: new_raw returns a valid collector that is never freed.
        unsafe { &*Collector::new_raw_with_heap() }
    }

    /// A collector with its own heap, owned through the returned pointer
    /// (free it with [`destroy`](Self::destroy)).
    pub(crate) fn new_raw_with_heap() -> *mut Collector {
        Collector::new_raw(Backing::Heap(UnsafeCell::new(pymalloc::Heap::new_retaining())))
    }

    /// Frees a collector made by `new_raw_with_heap`.
    ///
    /// # Safety
    /// `raw` is the pointer `new_raw_with_heap` returned; no reference to the
    /// collector and none of its objects is used afterwards.
    pub(crate) unsafe fn destroy(raw: *mut Collector) {
        // SAFETY: caller's contract; raw is the Box's own pointer.
        drop(unsafe { Box::from_raw(raw) })
    }

    // -----------------------------------------------------------------------
    // Memory

    #[inline(always)]
    fn mem_alloc(&self, n: usize) -> *mut u8 {
        let p = match &self.backing {
            Backing::ObjDomain => pymalloc::Domain::Obj.malloc(n),
            // SAFETY: the heap is used only by this collector, and malloc
            // does not call back into it, so this is the only live &mut.
            Backing::Heap(h) => unsafe { (*h.get()).malloc(n) },
        };
        if !p.is_null() {
            self.live_blocks.set(self.live_blocks.get() + 1);
        }
        p
    }

    /// # Safety
    /// `p` came from `mem_alloc` of this collector and is not used again.
    #[inline(always)]
    unsafe fn mem_free(&self, p: *mut u8) {
        self.live_blocks.set(self.live_blocks.get() - 1);
        match &self.backing {
            // SAFETY: by the caller's contract.
            Backing::ObjDomain => unsafe { pymalloc::Domain::Obj.free(p) },
            // SAFETY: as in mem_alloc; p is a block of this heap.
            Backing::Heap(h) => unsafe { (*h.get()).free(p) },
        }
    }

    /// Gives the blocks cached by the collector's own heap back to their
    /// pools (full collections do this, as CPython's empty its free lists).
    fn flush_block_cache(&self) {
        if let Backing::Heap(h) = &self.backing {
            // SAFETY: as in mem_alloc: flush_cache does not call back into
            // the collector, so this is the only live &mut.
            unsafe { (*h.get()).flush_cache() };
        }
    }

    /// # Safety
    /// `p` came from `mem_alloc` of this collector.
    unsafe fn mem_realloc(&self, p: *mut u8, n: usize) -> *mut u8 {
        match &self.backing {
            // SAFETY: by the caller's contract.
            Backing::ObjDomain => unsafe { pymalloc::Domain::Obj.realloc(p, n) },
            // SAFETY: as in mem_alloc.
            Backing::Heap(h) => unsafe { (*h.get()).realloc(p, n) },
        }
    }

    /// Blocks allocated by this collector and not yet freed (objects, free
    /// list blocks and weak references).
    pub fn live_blocks(&self) -> usize {
        self.live_blocks.get()
    }

    /// The statistics of the collector's own heap, if it has one.
    pub fn heap_stats(&self) -> Option<pymalloc::Stats> {
        match &self.backing {
            Backing::ObjDomain => None,
            // SAFETY: stats() only reads; no other reference is live.
            Backing::Heap(h) => Some(unsafe { (*h.get()).stats() }),
        }
    }

    // -----------------------------------------------------------------------
    // Object allocation (CPython's Objects/object.c and gcmodule.c)

    /// `gc_alloc` + `_PyObject_GC_Link`: allocates `basicsize` bytes with a
    /// zeroed GC header in front, counts the allocation in generation 0 and,
    /// when the count exceeds the threshold, collects (before the new object
    /// is tracked). Returns the object pointer, or null when out of memory or
    /// when the size is too large.
    #[inline]
    pub fn gc_alloc(&self, basicsize: usize) -> *mut PyObject {
        if basicsize > isize::MAX as usize - GC_HEAD_SIZE {
            return ptr::null_mut();
        }
        let mem = self.mem_alloc(GC_HEAD_SIZE + basicsize);
        if mem.is_null() {
            return ptr::null_mut();
        }
        let g = mem.cast::<GcHead>();
        // SAFETY: mem is a fresh block of at least GC_HEAD_SIZE bytes,
        // 16-aligned (pymalloc's alignment).
        unsafe { g.write(GcHead::new()) };
        self.link();
        from_gc(g)
    }

    /// `_PyObject_GC_Link`'s accounting: count the new object and collect
    /// the generations whose thresholds are exceeded.
    #[inline(always)]
    fn link(&self) {
        if self.forbid_mutation.get() {
            fatal("object allocated while the collector traverses objects");
        }
        let g0 = &self.gens[0];
        let count = g0.count.get() + 1;
        g0.count.set(count);
        if count > g0.threshold.get() {
            self.maybe_collect_on_alloc();
        }
    }

    #[cold]
    #[inline(never)]
    fn maybe_collect_on_alloc(&self) {
        if self.enabled.get() && self.gens[0].threshold.get() != 0 && !self.collecting.get() {
            self.collecting.set(true);
            self.collect_generations();
            self.collecting.set(false);
        }
    }

    /// Takes a block for a type with free lists, or allocates one.
    fn alloc_for(&self, tp: *const TypeObject, index: usize, size: usize) -> *mut PyObject {
        // SAFETY: tp is a live type descriptor (callers' contract).
        let fl = unsafe { (*tp).tp_freelist };
        if !fl.is_null() {
            // SAFETY: the free lists of a type are used only by its collector.
            let b = unsafe { (*fl).pop(index) };
            if !b.is_null() {
                // CPython's free-list paths neither count nor collect.
                let g = b.cast::<GcHead>();
                // SAFETY: a free-list block is a whole object block.
                unsafe { g.write(GcHead::new()) };
                return from_gc(g);
            }
        }
        self.gc_alloc(size)
    }

    /// `_PyObject_GC_New`: a fixed-size container object (reference count 1,
    /// untracked). Null when out of memory.
    ///
    /// # Safety
    /// `tp` points to a live type descriptor of a GC type, with
    /// `tp_basicsize >= size_of::<PyObject>()`.
    pub unsafe fn gc_new(&self, tp: *const TypeObject) -> *mut PyObject {
        // SAFETY: caller's contract.
        let Some(size) = var_size(unsafe { &*tp }, 0) else {
            return ptr::null_mut();
        };
        let op = self.alloc_for(tp, 0, size);
        if !op.is_null() {
            // SAFETY: op is a fresh block of `size` bytes.
            unsafe { op.write(PyObject { ob_refcnt: 1, ob_type: tp }) };
        }
        op
    }

    /// `_PyObject_GC_NewVar`: a variable-size container object with `nitems`
    /// items. Null when out of memory, when `nitems` is negative, or when the
    /// size overflows.
    ///
    /// # Safety
    /// As [`gc_new`](Self::gc_new), with
    /// `tp_basicsize >= size_of::<PyVarObject>()`.
    pub unsafe fn gc_new_var(&self, tp: *const TypeObject, nitems: isize) -> *mut PyVarObject {
        let Ok(n) = usize::try_from(nitems) else {
            return ptr::null_mut();
        };
        // SAFETY: caller's contract.
        let Some(size) = var_size(unsafe { &*tp }, n) else {
            return ptr::null_mut();
        };
        let op = self.alloc_for(tp, n, size).cast::<PyVarObject>();
        if !op.is_null() {
            // SAFETY: op is a fresh block of `size` bytes.
            unsafe { op.write(PyVarObject { ob_base: PyObject { ob_refcnt: 1, ob_type: tp }, ob_size: nitems }) };
        }
        op
    }

    /// `_PyObject_GC_Resize`: resizes an untracked variable-size object to
    /// `nitems` items. Returns the (possibly moved) object, or null when out
    /// of memory, in which case `op` is unchanged.
    ///
    /// # Safety
    /// `op` is a live, untracked variable-size GC object of this collector.
    pub unsafe fn gc_resize(&self, op: *mut PyVarObject, nitems: isize) -> *mut PyVarObject {
        // SAFETY: caller's contract.
        unsafe {
            if list::is_tracked(as_gc(op.cast())) {
                fatal("_PyObject_GC_Resize of a tracked object");
            }
            let Ok(n) = usize::try_from(nitems) else {
                return ptr::null_mut();
            };
            let Some(size) = var_size(&*(*op).ob_base.ob_type, n) else {
                return ptr::null_mut();
            };
            let g = self.mem_realloc(as_gc(op.cast()).cast(), GC_HEAD_SIZE + size);
            if g.is_null() {
                return ptr::null_mut();
            }
            let op = from_gc(g.cast()).cast::<PyVarObject>();
            (*op).ob_size = nitems;
            op
        }
    }

    /// `PyObject_GC_Del`: untracks if needed, forgets weak references,
    /// uncounts the object from generation 0 and frees it (or keeps it in its
    /// type's free list).
    ///
    /// # Safety
    /// `op` is a GC object of this collector, not used again.
    pub unsafe fn gc_del(&self, op: *mut PyObject) {
        let g = as_gc(op);
        // SAFETY: caller's contract.
        unsafe {
            if list::is_tracked(g) {
                self.untrack(op);
            }
            if list::flags(g) & PREV_MASK_WEAKREFS != 0 {
                // A deallocator that did not clear its weak references:
                // clear them without callbacks, the table must not keep
                // the address.
                weakref::forget_all(self, op);
            }
            let tp = (*op).ob_type;
            let fl = (*tp).tp_freelist;
            if !fl.is_null() {
                let index = if (*tp).tp_itemsize != 0 { (*op.cast::<PyVarObject>()).ob_size as usize } else { 0 };
                if (*fl).push(index, g.cast()) {
                    return;
                }
            }
            let c0 = &self.gens[0].count;
            if c0.get() > 0 {
                c0.set(c0.get() - 1);
            }
            self.mem_free(g.cast());
        }
    }

    /// Frees a GC block: `gc_del` for the Rust front, whose objects have no
    /// type free list and no weak references left when they are freed.
    ///
    /// # Safety
    /// `op` is an untracked GC object of this collector without weak
    /// references; it is not used again.
    #[inline(always)]
    pub(crate) unsafe fn gc_free_untracked(&self, op: *mut PyObject) {
        let c0 = &self.gens[0].count;
        let c = c0.get();
        c0.set(c.saturating_sub(1));
        // SAFETY: caller's contract.
        unsafe { self.mem_free(as_gc(op).cast()) }
    }

    /// `_PyObject_New`: a plain (non-GC) object, reference count 1.
    ///
    /// # Safety
    /// `tp` is a live descriptor with `tp_basicsize >= size_of::<PyObject>()`.
    pub unsafe fn new_object(&self, tp: *const TypeObject) -> *mut PyObject {
        // SAFETY: caller's contract.
        let Some(size) = var_size(unsafe { &*tp }, 0) else {
            return ptr::null_mut();
        };
        let op = self.mem_alloc(size).cast::<PyObject>();
        if !op.is_null() {
            // SAFETY: fresh block of `size` bytes, 16-aligned.
            unsafe { op.write(PyObject { ob_refcnt: 1, ob_type: tp }) };
        }
        op
    }

    /// `_PyObject_NewVar`: a plain variable-size object.
    ///
    /// # Safety
    /// As [`new_object`](Self::new_object), `tp_basicsize >= size_of::<PyVarObject>()`.
    pub unsafe fn new_var_object(&self, tp: *const TypeObject, nitems: isize) -> *mut PyVarObject {
        let Ok(n) = usize::try_from(nitems) else {
            return ptr::null_mut();
        };
        // SAFETY: caller's contract.
        let Some(size) = var_size(unsafe { &*tp }, n) else {
            return ptr::null_mut();
        };
        let op = self.mem_alloc(size).cast::<PyVarObject>();
        if !op.is_null() {
            // SAFETY: fresh block of `size` bytes.
            unsafe { op.write(PyVarObject { ob_base: PyObject { ob_refcnt: 1, ob_type: tp }, ob_size: nitems }) };
        }
        op
    }

    /// `PyObject_Del` (`PyObject_Free` of a plain object).
    ///
    /// # Safety
    /// `op` is a plain object of this collector, not used again.
    pub unsafe fn del(&self, op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe { self.mem_free(op.cast()) }
    }

    /// `PyObject_GC_Track`: links the object at the end of generation 0.
    /// Tracking a tracked object is a fatal error, as in CPython.
    ///
    /// # Safety
    /// `op` is a live GC object of this collector whose traversal is ready to run.
    #[inline(always)]
    pub unsafe fn track(&self, op: *mut PyObject) {
        if self.forbid_mutation.get() {
            fatal("object tracked while the collector traverses objects");
        }
        let g = as_gc(op);
        // SAFETY: caller's contract; generation 0's head is live.
        unsafe {
            if list::is_tracked(g) {
                fatal("object already tracked by the garbage collector");
            }
            list::append(g, self.gens[0].head());
        }
    }

    /// `PyObject_GC_UnTrack`: unlinks the object if it is tracked.
    ///
    /// # Safety
    /// `op` is a live GC object of this collector.
    #[inline(always)]
    pub unsafe fn untrack(&self, op: *mut PyObject) {
        let g = as_gc(op);
        // SAFETY: caller's contract.
        unsafe {
            if list::is_tracked(g) {
                if self.forbid_mutation.get() {
                    fatal("object untracked while the collector traverses objects");
                }
                list::remove(g);
                list::clear_flags(g, PREV_MASK_COLLECTING);
            }
        }
    }

    /// `PyObject_GC_IsTracked` / `gc.is_tracked`.
    ///
    /// # Safety
    /// `op` is a live object.
    pub unsafe fn is_tracked(&self, op: *mut PyObject) -> bool {
        // SAFETY: caller's contract.
        unsafe { is_gc(op) && list::is_tracked(as_gc(op)) }
    }

    /// `PyObject_GC_IsFinalized` / `gc.is_finalized`.
    ///
    /// # Safety
    /// `op` is a live object.
    pub unsafe fn is_finalized(&self, op: *mut PyObject) -> bool {
        // SAFETY: caller's contract.
        unsafe { is_gc(op) && list::flags(as_gc(op)) & PREV_MASK_FINALIZED != 0 }
    }

    /// Marks a GC object finalized (PEP 442: the finalizer will not run again).
    ///
    /// # Safety
    /// `op` is a live GC object.
    pub(crate) unsafe fn set_finalized(&self, op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe { list::set_flags(as_gc(op), PREV_MASK_FINALIZED) }
    }

    // -----------------------------------------------------------------------
    // Reference counting for the generic object layer

    /// `Py_INCREF`.
    ///
    /// # Safety
    /// `op` is a live object.
    #[inline(always)]
    pub unsafe fn incref(op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe { (*op).ob_refcnt += 1 }
    }

    /// `Py_DECREF`: at zero, calls the type's `tp_dealloc` (or the default
    /// deallocation of this collector).
    ///
    /// # Safety
    /// `op` is a live object of this collector and the caller owns one reference.
    #[inline]
    pub unsafe fn decref(&self, op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe {
            (*op).ob_refcnt -= 1;
            if (*op).ob_refcnt == 0 {
                self.dealloc(op);
            }
        }
    }

    /// `_Py_Dealloc`.
    ///
    /// # Safety
    /// `op` is a live object of this collector with reference count zero.
    pub unsafe fn dealloc(&self, op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe {
            match (*(*op).ob_type).tp_dealloc {
                Some(d) => d(op),
                None => self.default_dealloc(op),
            }
        }
    }

    /// The deallocation of a type without `tp_dealloc`: untrack, clear weak
    /// references (running callbacks), call `tp_clear` to drop the object's
    /// references, and free, inside the trashcan.
    ///
    /// # Safety
    /// As [`dealloc`](Self::dealloc).
    pub unsafe fn default_dealloc(&self, op: *mut PyObject) {
        // SAFETY: caller's contract.
        unsafe {
            let tp = (*op).ob_type;
            if !(*tp).is_gc() {
                self.del(op);
                return;
            }
            self.untrack(op);
            if !self.trash_begin(op) {
                return;
            }
            weakref::clear_weakrefs(self, op);
            if let Some(clear) = (*tp).tp_clear {
                clear(op);
            }
            self.gc_del(op);
            self.trash_end();
        }
    }

    // -----------------------------------------------------------------------
    // The trashcan (CPython's Py_TRASHCAN_BEGIN / Py_TRASHCAN_END)

    /// Enters a deallocation. Returns `false` when deallocations are nested
    /// deeper than [`TRASHCAN_LIMIT`]: the object (refcount zero, untracked)
    /// has then been deposited, its `tp_dealloc` will run again when the
    /// outermost deallocation ends, and the caller must return at once.
    /// Otherwise the caller must call [`trash_end`](Self::trash_end) when done.
    ///
    /// # Safety
    /// `op` is an untracked GC object of this collector being deallocated.
    #[inline(always)]
    pub unsafe fn trash_begin(&self, op: *mut PyObject) -> bool {
        let d = self.trash_depth.get();
        if d >= TRASHCAN_LIMIT {
            // SAFETY: op is untracked, so its prev word is free for the link.
            unsafe { self.trash_deposit(op) };
            return false;
        }
        self.trash_depth.set(d + 1);
        true
    }

    #[cold]
    unsafe fn trash_deposit(&self, op: *mut PyObject) {
        let g = as_gc(op);
        let head = self.trash_head.get();
        let link = if head.is_null() { ptr::null_mut() } else { as_gc(head) };
        // SAFETY: op is untracked (caller's contract of trash_begin).
        unsafe { list::set_prev(g, link) };
        self.trash_head.set(op);
    }

    /// Leaves a deallocation; the outermost one destroys deposited objects.
    #[inline(always)]
    pub fn trash_end(&self) {
        let d = self.trash_depth.get() - 1;
        self.trash_depth.set(d);
        if d == 0 && !self.trash_head.get().is_null() {
            self.trash_destroy_chain();
        }
    }

    #[cold]
    #[inline(never)]
    fn trash_destroy_chain(&self) {
        loop {
            let op = self.trash_head.get();
            if op.is_null() {
                break;
            }
            let g = as_gc(op);
            // SAFETY: deposited objects are untracked with the next link in
            // prev (trash_deposit).
            unsafe {
                let n = list::prev(g);
                self.trash_head.set(if n.is_null() { ptr::null_mut() } else { from_gc(n) });
                list::set_prev(g, ptr::null_mut());
                self.trash_depth.set(self.trash_depth.get() + 1);
                self.dealloc(op);
                self.trash_depth.set(self.trash_depth.get() - 1);
            }
        }
    }

    // -----------------------------------------------------------------------
    // Collection (gcmodule.c)

    /// `update_refs`.
    unsafe fn update_refs(containers: *mut GcHead) {
        // SAFETY: containers is a consistent list of live tracked objects.
        unsafe {
            let mut g = list::next(containers);
            while g != containers {
                let op = from_gc(g);
                let rc = (*op).ob_refcnt;
                if rc <= 0 {
                    fatal("tracked object with reference count <= 0");
                }
                list::reset_refs(g, rc as usize);
                g = list::next(g);
            }
        }
    }

    /// `subtract_refs`.
    unsafe fn subtract_refs(containers: *mut GcHead) {
        // SAFETY: as update_refs; traversals only call visit_decref.
        unsafe {
            let mut g = list::next(containers);
            while g != containers {
                traverse(from_gc(g), VISIT_DECREF, containers.cast());
                g = list::next(g);
            }
        }
    }

    /// `move_unreachable`: see gcmodule.c; restores the prev links of `young`.
    unsafe fn move_unreachable(young: *mut GcHead, unreachable: *mut GcHead) {
        // SAFETY: young is singly linked with refs in prev (update_refs);
        // unreachable is an initialised list.
        unsafe {
            let mut prev = young;
            let mut g = list::next(young);
            while g != young {
                if list::get_refs(g) != 0 {
                    traverse(from_gc(g), VISIT_REACHABLE, young.cast());
                    list::set_prev(g, prev);
                    list::clear_flags(g, PREV_MASK_COLLECTING);
                    prev = g;
                } else {
                    // Move to unreachable (singly linked, masked next).
                    (*prev).next = (*g).next;
                    let last = list::prev(unreachable);
                    list::set_next_masked(last, g);
                    list::set_prev(g, last);
                    list::set_next_masked(g, unreachable);
                    list::set_prev(unreachable, g);
                }
                g = (*prev).next;
            }
            list::set_prev(young, prev);
            (*unreachable).next = list::next_unmasked(unreachable);
        }
    }

    /// `deduce_unreachable`.
    unsafe fn deduce_unreachable(&self, base: *mut GcHead, unreachable: *mut GcHead) {
        let _guard = NoMutation::new(self, "a traversal by the collector");
        // SAFETY: base is a consistent list of tracked objects.
        unsafe {
            Self::update_refs(base);
            Self::subtract_refs(base);
            list::init(unreachable);
            Self::move_unreachable(base, unreachable);
        }
    }

    /// `move_legacy_finalizers` (also clears the unreachable masks). Also
    /// surveys what the later phases have to do: how many objects stay in
    /// `unreachable`, whether any has weak references or is one, and whether
    /// any has a finalizer still to run.
    unsafe fn move_legacy_finalizers(unreachable: *mut GcHead, finalizers: *mut GcHead) -> Survey {
        let mut survey = Survey::default();
        // SAFETY: unreachable is the list built by move_unreachable.
        unsafe {
            let mut g = list::next_unmasked(unreachable);
            while g != unreachable {
                (*g).next = list::next_unmasked(g);
                let next = list::next(g);
                let op = from_gc(g);
                let tp = &*(*op).ob_type;
                if tp.tp_del.is_some() {
                    list::clear_flags(g, PREV_MASK_COLLECTING);
                    list::move_to(g, finalizers);
                } else {
                    survey.count += 1;
                    let f = list::flags(g);
                    survey.weakrefs |= f & PREV_MASK_WEAKREFS != 0 || weakref::is_weakref(op);
                    survey.finalizers |= f & PREV_MASK_FINALIZED == 0 && tp.tp_finalize.is_some();
                }
                g = next;
            }
        }
        survey
    }

    /// `move_legacy_finalizer_reachable`.
    unsafe fn move_legacy_finalizer_reachable(&self, finalizers: *mut GcHead) {
        let _guard = NoMutation::new(self, "a traversal by the collector");
        // SAFETY: finalizers is a consistent list (the walk sees objects
        // appended during it, as CPython's does).
        unsafe {
            let mut g = list::next(finalizers);
            while g != finalizers {
                traverse(from_gc(g), visit_move, finalizers.cast());
                g = list::next(g);
            }
        }
    }

    /// `finalize_garbage`: runs `tp_finalize` once per object.
    unsafe fn finalize_garbage(&self, collectable: *mut GcHead) {
        let mut seen = GcHead::new();
        let seen: *mut GcHead = &mut seen;
        // SAFETY: collectable is consistent; finalizers may free or untrack
        // objects in it, so the loop always takes the first element.
        unsafe {
            list::init(seen);
            while !list::is_empty(collectable) {
                let g = list::next(collectable);
                let op = from_gc(g);
                list::move_to(g, seen);
                if list::flags(g) & PREV_MASK_FINALIZED == 0 {
                    if let Some(fin) = (*(*op).ob_type).tp_finalize {
                        list::set_flags(g, PREV_MASK_FINALIZED);
                        Self::incref(op);
                        fin(op);
                        self.decref(op);
                    }
                }
            }
            list::merge(seen, collectable);
        }
    }

    /// `handle_resurrected_objects`.
    unsafe fn handle_resurrected_objects(
        &self,
        unreachable: *mut GcHead,
        still_unreachable: *mut GcHead,
        old: *mut GcHead,
    ) {
        // SAFETY: unreachable is consistent.
        unsafe {
            list::clear_collecting_all(unreachable);
            self.deduce_unreachable(unreachable, still_unreachable);
            list::clear_unreachable_mask(still_unreachable);
            list::merge(unreachable, old);
        }
    }

    /// `delete_garbage`: breaks the cycles with `tp_clear` (or saves the
    /// objects under `DEBUG_SAVEALL`).
    unsafe fn delete_garbage(&self, collectable: *mut GcHead, old: *mut GcHead) {
        // SAFETY: collectable is consistent; clear functions may free any of
        // its objects, so the loop always takes the first element.
        unsafe {
            while !list::is_empty(collectable) {
                let g = list::next(collectable);
                let op = from_gc(g);
                if self.debug.get() & DEBUG_SAVEALL != 0 {
                    Self::incref(op);
                    self.garbage.borrow_mut().push(op);
                } else if let Some(clear) = (*(*op).ob_type).tp_clear {
                    Self::incref(op);
                    clear(op);
                    self.decref(op);
                }
                if list::next(collectable) == g {
                    // Still alive: it may die later.
                    list::clear_flags(g, PREV_MASK_COLLECTING);
                    list::move_to(g, old);
                }
            }
        }
    }

    /// `handle_legacy_finalizers`.
    unsafe fn handle_legacy_finalizers(&self, finalizers: *mut GcHead, old: *mut GcHead) {
        // SAFETY: finalizers is consistent.
        unsafe {
            let mut g = list::next(finalizers);
            while g != finalizers {
                let op = from_gc(g);
                if self.debug.get() & DEBUG_SAVEALL != 0 || (*(*op).ob_type).tp_del.is_some() {
                    Self::incref(op);
                    self.garbage.borrow_mut().push(op);
                }
                g = list::next(g);
            }
            list::merge(finalizers, old);
        }
    }

    fn debug_line(&self, args: fmt::Arguments<'_>) {
        let s = args.to_string();
        let mut sink = self.debug_sink.borrow_mut();
        match sink.as_mut() {
            Some(f) => {
                // A panicking sink must not unwind through a collection.
                if catch_unwind(AssertUnwindSafe(|| f(&s))).is_err() {
                    eprintln!("pymalloc-gc: panic ignored in the debug sink");
                }
            }
            None => eprint!("{s}"),
        }
    }

    unsafe fn debug_cycle(&self, msg: &str, op: *mut PyObject) {
        // SAFETY: op is live.
        let name = unsafe { (*(*op).ob_type).name() };
        self.debug_line(format_args!("gc: {msg} <{name} {op:p}>\n"));
    }

    /// `gc_collect_main`: collects `generation` and the younger ones.
    /// Returns (collected, uncollectable).
    fn collect_main(&self, generation: usize) -> (usize, usize) {
        let debug = self.debug.get();
        let t0 = std::time::Instant::now();
        if debug & DEBUG_STATS != 0 {
            self.debug_line(format_args!("gc: collecting generation {generation}...\n"));
            let sizes: Vec<String> = self
                .gens
                .iter()
                // SAFETY: generation lists are consistent between collections.
                .map(|g| unsafe { list::size(g.head()) }.to_string())
                .collect();
            // SAFETY: as above.
            let perm = unsafe { list::size(self.permanent.head()) };
            self.debug_line(format_args!(
                "gc: objects in each generation: {}\ngc: objects in permanent generation: {perm}\n",
                sizes.join(" ")
            ));
        }
        if generation + 1 < NUM_GENERATIONS {
            let c = &self.gens[generation + 1].count;
            c.set(c.get() + 1);
        }
        for g in &self.gens[..=generation] {
            g.count.set(0);
        }
        let mut unreachable = GcHead::new();
        let mut finalizers = GcHead::new();
        let mut final_unreachable = GcHead::new();
        let unreachable: *mut GcHead = &mut unreachable;
        let finalizers: *mut GcHead = &mut finalizers;
        let final_unreachable: *mut GcHead = &mut final_unreachable;
        let (m, n);
        // SAFETY: the generation lists are consistent (no collection runs);
        // the local heads live until the end of this block and are only used
        // through these pointers.
        unsafe {
            for i in 0..generation {
                list::merge(self.gens[i].head(), self.gens[generation].head());
            }
            let young = self.gens[generation].head();
            let old = if generation < NUM_GENERATIONS - 1 { self.gens[generation + 1].head() } else { young };
            self.deduce_unreachable(young, unreachable);
            if young != old {
                if generation == NUM_GENERATIONS - 2 {
                    self.long_lived_pending.set(self.long_lived_pending.get() + list::size(young));
                }
                list::merge(young, old);
            } else {
                self.long_lived_pending.set(0);
                self.long_lived_total.set(list::size(young));
            }
            list::init(finalizers);
            let mut survey = Self::move_legacy_finalizers(unreachable, finalizers);
            if !list::is_empty(finalizers) {
                self.move_legacy_finalizer_reachable(finalizers);
                // Objects reachable from legacy finalizers left the list.
                survey.count = list::size(unreachable);
            }
            if debug & DEBUG_COLLECTABLE != 0 {
                let mut g = list::next(unreachable);
                while g != unreachable {
                    self.debug_cycle("collectable", from_gc(g));
                    g = list::next(g);
                }
            }
            let mut collected = 0;
            if survey.weakrefs {
                collected += weakref::handle_weakrefs(self, unreachable, old);
            }
            if survey.finalizers {
                self.finalize_garbage(unreachable);
                self.handle_resurrected_objects(unreachable, final_unreachable, old);
                collected += list::size(final_unreachable);
            } else {
                // No finalizer ran, so nothing can have been resurrected
                // (weak-reference callbacks only reach reachable objects):
                // CPython's second deduce_unreachable would find the same set.
                list::init(final_unreachable);
                list::merge(unreachable, final_unreachable);
                collected += if survey.weakrefs { list::size(final_unreachable) } else { survey.count };
            }
            self.delete_garbage(final_unreachable, old);
            let mut uncollectable = 0;
            let mut g = list::next(finalizers);
            while g != finalizers {
                uncollectable += 1;
                if debug & DEBUG_UNCOLLECTABLE != 0 {
                    self.debug_cycle("uncollectable", from_gc(g));
                }
                g = list::next(g);
            }
            self.handle_legacy_finalizers(finalizers, old);
            m = collected;
            n = uncollectable;
        }
        if generation == NUM_GENERATIONS - 1 {
            self.clear_freelists();
            self.flush_block_cache();
        }
        if debug & DEBUG_STATS != 0 {
            self.debug_line(format_args!(
                "gc: done, {} unreachable, {} uncollectable, {:.4}s elapsed\n",
                n + m,
                n,
                t0.elapsed().as_secs_f64()
            ));
        }
        let st = &self.stats[generation];
        let mut s = st.get();
        s.collections += 1;
        s.collected += m;
        s.uncollectable += n;
        st.set(s);
        (m, n)
    }

    fn invoke_callbacks(&self, info: CallbackInfo) {
        let cbs: Vec<Callback> = self.callbacks.borrow().iter().map(|(_, c)| c.clone()).collect();
        for c in cbs {
            // As CPython reports exceptions in callbacks as unraisable, a
            // panic is reported and the collection goes on.
            if catch_unwind(AssertUnwindSafe(|| c(&info))).is_err() {
                eprintln!("pymalloc-gc: panic ignored in a gc callback");
            }
        }
    }

    /// `gc_collect_with_callback`.
    fn collect_with_callback(&self, generation: usize) -> usize {
        self.invoke_callbacks(CallbackInfo { phase: Phase::Start, generation, collected: 0, uncollectable: 0 });
        let (m, n) = self.collect_main(generation);
        self.invoke_callbacks(CallbackInfo { phase: Phase::Stop, generation, collected: m, uncollectable: n });
        m + n
    }

    /// `gc_collect_generations`: the automatic collection.
    fn collect_generations(&self) -> usize {
        for i in (0..NUM_GENERATIONS).rev() {
            let g = &self.gens[i];
            if g.count.get() > g.threshold.get() {
                // Avoid quadratic behaviour: a full collection only when the
                // objects that survived their last young collection exceed a
                // quarter of those that survived the last full one.
                if i == NUM_GENERATIONS - 1 && self.long_lived_pending.get() < self.long_lived_total.get() / 4 {
                    continue;
                }
                return self.collect_with_callback(i);
            }
        }
        0
    }

    // -----------------------------------------------------------------------
    // The gc module

    /// `gc.collect(generation)`: collects `generation` and the younger ones,
    /// even when automatic collection is disabled. Returns the number of
    /// unreachable objects found (collected plus uncollectable); 0 when a
    /// collection is already running.
    pub fn collect(&self, generation: usize) -> Result<usize, InvalidGeneration> {
        if generation >= NUM_GENERATIONS {
            return Err(InvalidGeneration(generation));
        }
        if self.collecting.get() {
            return Ok(0);
        }
        self.collecting.set(true);
        let n = self.collect_with_callback(generation);
        self.collecting.set(false);
        Ok(n)
    }

    /// `gc.enable()`.
    pub fn enable(&self) {
        self.enabled.set(true)
    }
    /// `gc.disable()`.
    pub fn disable(&self) {
        self.enabled.set(false)
    }
    /// `gc.isenabled()`.
    pub fn is_enabled(&self) -> bool {
        self.enabled.get()
    }
    /// Whether a collection is running.
    pub fn is_collecting(&self) -> bool {
        self.collecting.get()
    }

    /// `gc.get_threshold()`.
    pub fn threshold(&self) -> [usize; NUM_GENERATIONS] {
        [0, 1, 2].map(|i| self.gens[i].threshold.get())
    }

    /// `gc.set_threshold(t0, t1, t2)`; a threshold of 0 for generation 0
    /// disables automatic collection.
    pub fn set_threshold(&self, t: [usize; NUM_GENERATIONS]) {
        for (g, t) in self.gens.iter().zip(t) {
            g.threshold.set(t);
        }
    }

    /// `gc.get_count()`: allocations minus deallocations since the last
    /// collection of generation 0; collections of generation 0 and 1 since
    /// the last collection of the next one.
    pub fn count(&self) -> [usize; NUM_GENERATIONS] {
        [0, 1, 2].map(|i| self.gens[i].count.get())
    }

    /// `gc.get_stats()`.
    pub fn stats(&self) -> [GenerationStats; NUM_GENERATIONS] {
        [0, 1, 2].map(|i| self.stats[i].get())
    }

    /// `gc.set_debug(flags)`.
    pub fn set_debug(&self, flags: u32) {
        self.debug.set(flags)
    }
    /// `gc.get_debug()`.
    pub fn debug(&self) -> u32 {
        self.debug.get()
    }

    /// Where debug output goes (default: standard error).
    pub fn set_debug_sink(&self, sink: Option<DebugSink>) {
        *self.debug_sink.borrow_mut() = sink;
    }

    /// `gc.freeze()`: moves every tracked object to the permanent
    /// generation, which collections ignore.
    pub fn freeze(&self) {
        for g in &self.gens {
            // SAFETY: lists are consistent outside the traversal phases.
            unsafe { list::merge(g.head(), self.permanent.head()) };
        }
        self.gens[0].count.set(0);
    }

    /// `gc.unfreeze()`: moves the permanent generation into the oldest one.
    pub fn unfreeze(&self) {
        // SAFETY: as freeze.
        unsafe { list::merge(self.permanent.head(), self.gens[NUM_GENERATIONS - 1].head()) };
    }

    /// `gc.get_freeze_count()`.
    pub fn freeze_count(&self) -> usize {
        // SAFETY: as freeze.
        unsafe { list::size(self.permanent.head()) }
    }

    /// `gc.get_objects(generation)`: the tracked objects of one generation,
    /// or of all (not the permanent one). Borrowed pointers, valid until the
    /// next call into user code.
    pub fn objects(&self, generation: Option<usize>) -> Result<Vec<*mut PyObject>, InvalidGeneration> {
        let range = match generation {
            Some(g) if g >= NUM_GENERATIONS => return Err(InvalidGeneration(g)),
            Some(g) => g..g + 1,
            None => 0..NUM_GENERATIONS,
        };
        let mut v = Vec::new();
        for i in range {
            let h = self.gens[i].head();
            // SAFETY: as freeze.
            unsafe {
                let mut g = list::next(h);
                while g != h {
                    v.push(from_gc(g));
                    g = list::next(g);
                }
            }
        }
        Ok(v)
    }

    /// `gc.get_referrers(*objs)`: the tracked objects (in the generations,
    /// not the permanent one) whose traversal reports one of `objs`.
    pub fn referrers(&self, objs: &[*mut PyObject]) -> Vec<*mut PyObject> {
        let _guard = NoMutation::new(self, "gc.get_referrers");
        let mut out = Vec::new();
        for gen in &self.gens {
            let h = gen.head();
            // SAFETY: lists are consistent; traversal may not mutate them
            // (forbidden above).
            unsafe {
                let mut g = list::next(h);
                while g != h {
                    let op = from_gc(g);
                    let mut ctx = ReferrersCtx { targets: objs, found: false };
                    traverse(op, visit_referrers, (&mut ctx as *mut ReferrersCtx<'_>).cast());
                    if ctx.found {
                        out.push(op);
                    }
                    g = list::next(g);
                }
            }
        }
        out
    }

    /// `gc.get_referents(*objs)`: what the traversals of the GC objects in
    /// `objs` report, in order.
    ///
    /// # Safety
    /// Every pointer in `objs` is a live object.
    pub unsafe fn referents(&self, objs: &[*mut PyObject]) -> Vec<*mut PyObject> {
        let _guard = NoMutation::new(self, "gc.get_referents");
        let mut out: Vec<*mut PyObject> = Vec::new();
        for &op in objs {
            // SAFETY: caller's contract.
            unsafe {
                if is_gc(op) {
                    traverse(op, visit_collect, (&mut out as *mut Vec<_>).cast());
                }
            }
        }
        out
    }

    /// `gc.garbage`: the saved objects (borrowed; the list owns them).
    pub fn garbage(&self) -> Vec<*mut PyObject> {
        self.garbage.borrow().clone()
    }

    /// Empties `gc.garbage`, releasing its references (`del gc.garbage[:]`).
    pub fn clear_garbage(&self) {
        let g = core::mem::take(&mut *self.garbage.borrow_mut());
        for op in g {
            // SAFETY: the list owned one reference to each object.
            unsafe { self.decref(op) };
        }
    }

    /// Appends a callback to `gc.callbacks`; returns its id.
    pub fn add_callback(&self, f: impl Fn(&CallbackInfo) + 'static) -> u64 {
        let id = self.next_callback_id.get();
        self.next_callback_id.set(id + 1);
        self.callbacks.borrow_mut().push((id, Rc::new(f)));
        id
    }

    /// Removes a callback; returns whether it was registered.
    pub fn remove_callback(&self, id: u64) -> bool {
        let mut cbs = self.callbacks.borrow_mut();
        let before = cbs.len();
        cbs.retain(|(i, _)| *i != id);
        cbs.len() != before
    }

    /// Registers free lists to be emptied by every full collection (CPython's
    /// `clear_freelists`).
    pub fn register_freelists(&self, fl: *mut FreeLists) {
        let mut v = self.freelists.borrow_mut();
        if !v.contains(&fl) {
            v.push(fl);
        }
    }

    /// Forgets registered free lists.
    pub fn unregister_freelists(&self, fl: *mut FreeLists) {
        self.freelists.borrow_mut().retain(|&f| f != fl);
    }

    fn clear_freelists(&self) {
        let v = self.freelists.borrow().clone();
        for fl in v {
            // SAFETY: registered free lists live until unregistered.
            unsafe { (*fl).clear_with(|b| self.mem_free(b)) };
        }
    }

    /// Frees one block of a free list of this collector's types (for
    /// `FreeLists::clear` on free lists filled by this collector).
    ///
    /// # Safety
    /// `b` is a block from this collector, not used again.
    pub unsafe fn free_block(&self, b: *mut u8) {
        // SAFETY: caller's contract.
        unsafe { self.mem_free(b) }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.clear_garbage();
    }
}
