//! The [`Collector`]: its state, grouped by concept, its construction and
//! destruction, and the types and constants the `gc` module shows
//! (CPython's `struct _gc_runtime_state` and `_PyGC_Init` in
//! `Modules/gcmodule.c`).
//!
//! The collector is split by concept: the parts of its state with their own
//! invariants are types of their own modules (`Memory`, `Trashcan`,
//! `WeakTable`), and its behaviour is in `impl Collector` blocks of the
//! modules above this one:
//!
//! | module | concept | CPython |
//! |---|---|---|
//! | `memory` | the memory backing (a `Memory` field) | `PyObject_Malloc`, `PyObject_Free` |
//! | `trashcan` | deferred deep deallocation (a `Trashcan` field) | `Py_TRASHCAN_*` |
//! | `weakref` | weak references (a `WeakTable` field) | `PyObject_ClearWeakRefs`, `handle_weakrefs` |
//! | `alloc` | the object allocator: allocation, tracking, reference counts, deallocation | `_PyObject_GC_New`, `PyObject_GC_Track`, `_Py_Dealloc` |
//! | `collect` | the collection and its phases | `gc_collect_main`, `update_refs`, ... |
//! | `gcmodule` | the `gc` module's API | `gc.collect`, `gc.get_threshold`, ... |
//!
//! # Invariants of a [`Collector`]
//!
//! * It never moves (it is boxed): list heads point to themselves, and its
//!   weak table points back to it.
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
//! * The invariants of the parts: `Generations` here, `Memory`, `Trashcan`
//!   and `WeakTable` in their modules.
//! * The collector is not `Sync`: all access is from one thread, or under
//!   the embedder's lock (CPython's GIL) for the process-wide collector of
//!   the C ABI. Every method takes `&self` and all state is in `Cell`s, so
//!   callbacks (finalizers, weak-reference callbacks, `tp_clear`,
//!   deallocators) may re-enter it.

use core::cell::{Cell, RefCell, UnsafeCell};
use core::fmt;
use core::ops::Index;
use std::rc::Rc;

use crate::freelist::FreeLists;
use crate::list;
use crate::memory::Memory;
use crate::object::{GcHead, PyObject, TypeObject};
use crate::trashcan::Trashcan;
pub use crate::trashcan::TRASHCAN_LIMIT;
use crate::weakref::{WeakRefOwner, WeakTable, WEAKREF_TYPE};

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

/// One generation (CPython's `struct gc_generation`): a list head, a
/// threshold and a count.
pub(crate) struct Generation {
    head: UnsafeCell<GcHead>,
    pub(crate) threshold: Cell<usize>,
    pub(crate) count: Cell<usize>,
}

impl Generation {
    fn new(threshold: usize) -> Generation {
        Generation { head: UnsafeCell::new(GcHead::new()), threshold: Cell::new(threshold), count: Cell::new(0) }
    }
    #[inline(always)]
    pub(crate) fn head(&self) -> *mut GcHead {
        self.head.get()
    }
}

/// The generations and the counters of the generational policy.
///
/// # Invariants
///
/// * Between collections, every tracked object is in one of the lists of
///   `each` (generations 0, 1, 2) or of `permanent`
///   (`gc.freeze`), which collections never look at.
/// * `self[0].count` is the number of GC allocations minus deallocations
///   since generation 0 was last collected; `self[i].count` for `i > 0` is
///   the number of collections of generation `i - 1` since generation `i`
///   was last collected. A generation is due when its count exceeds its
///   threshold; a threshold of 0 for generation 0 turns automatic
///   collection off.
/// * `long_lived_total` is the size of the oldest generation after the
///   last full collection, `long_lived_pending` the number of objects that
///   middle collections have moved into it since: a full collection runs
///   only when the pending ones exceed a quarter of the total.
/// * `stats[i]` sums the collections of generation `i` (as the oldest one
///   collected) and what they found.
pub(crate) struct Generations {
    each: [Generation; NUM_GENERATIONS],
    pub(crate) permanent: Generation,
    pub(crate) long_lived_total: Cell<usize>,
    pub(crate) long_lived_pending: Cell<usize>,
    pub(crate) stats: [Cell<GenerationStats>; NUM_GENERATIONS],
}

impl Generations {
    fn new() -> Generations {
        Generations {
            each: DEFAULT_THRESHOLDS.map(Generation::new),
            permanent: Generation::new(0),
            long_lived_total: Cell::new(0),
            long_lived_pending: Cell::new(0),
            stats: Default::default(),
        }
    }

    /// Generations 0, 1 and 2, in that order.
    #[inline(always)]
    pub(crate) fn iter(&self) -> core::slice::Iter<'_, Generation> {
        self.each.iter()
    }

    /// Generations `0..=last`.
    pub(crate) fn up_to(&self, last: usize) -> &[Generation] {
        &self.each[..=last]
    }
}

impl Index<usize> for Generations {
    type Output = Generation;
    #[inline(always)]
    fn index(&self, i: usize) -> &Generation {
        &self.each[i]
    }
}

/// A callback of `gc.callbacks`.
pub(crate) type Callback = Rc<dyn Fn(&CallbackInfo)>;

/// Where the debug output (`DEBUG_STATS`, ...) goes instead of standard error.
pub type DebugSink = Box<dyn FnMut(&str)>;

/// What the user of the `gc` module sets and reads: debug flags and sink,
/// `gc.garbage`, `gc.callbacks`, and the free lists full collections empty.
///
/// # Invariants
///
/// * Each entry of `garbage` owns one reference to its object.
/// * Callback ids are unique: `next_callback_id` is above every id given.
/// * Registered free lists stay live until unregistered.
pub(crate) struct ModuleState {
    pub(crate) debug: Cell<u32>,
    pub(crate) debug_sink: RefCell<Option<DebugSink>>,
    pub(crate) garbage: RefCell<Vec<*mut PyObject>>,
    pub(crate) callbacks: RefCell<Vec<(u64, Callback)>>,
    pub(crate) next_callback_id: Cell<u64>,
    pub(crate) freelists: RefCell<Vec<*mut FreeLists>>,
}

impl ModuleState {
    fn new() -> ModuleState {
        ModuleState {
            debug: Cell::new(0),
            debug_sink: RefCell::new(None),
            garbage: RefCell::new(Vec::new()),
            callbacks: RefCell::new(Vec::new()),
            next_callback_id: Cell::new(1),
            freelists: RefCell::new(Vec::new()),
        }
    }
}

/// A generational cycle collector with CPython 3.11's semantics, and the
/// object allocator in front of it. See the module documentation for its
/// invariants.
pub struct Collector {
    pub(crate) gens: Generations,
    pub(crate) enabled: Cell<bool>,
    pub(crate) collecting: Cell<bool>,
    pub(crate) forbid_mutation: Cell<bool>,
    pub(crate) module: ModuleState,
    pub(crate) weak_table: WeakTable,
    pub(crate) memory: Memory,
    pub(crate) trash: Trashcan,
}

impl Collector {
    /// Allocates a collector, links its list heads to themselves and makes
    /// its weak table point back to it. This is done through a shared
    /// reference derived from the raw pointer, which stays the collector's
    /// only owner (see `destroy`).
    fn new_raw(memory: Memory) -> *mut Collector {
        let raw = Box::into_raw(Box::new(Collector {
            gens: Generations::new(),
            enabled: Cell::new(true),
            collecting: Cell::new(false),
            forbid_mutation: Cell::new(false),
            module: ModuleState::new(),
            weak_table: WeakTable::new(),
            memory,
            trash: Trashcan::new(),
        }));
        // SAFETY: raw is a valid, initialised Collector.
        let c = unsafe { &*raw };
        for g in c.gens.iter().chain(core::iter::once(&c.gens.permanent)) {
            // SAFETY: the head is a live GcHead inside the boxed collector,
            // which never moves again.
            unsafe { list::init(g.head()) };
        }
        // SAFETY: the collector holds the table, never moves, and is freed
        // (destroy) only when none of its objects, weak references
        // included, is left.
        unsafe { c.weak_table.set_owner(raw.cast_const()) };
        raw
    }

    /// A collector whose objects come from the OBJ domain
    /// (`pymalloc::Domain::Obj`, CPython's `PyObject_Malloc`).
    /// It lives for the rest of the process.
    pub fn leak_obj_domain() -> &'static Collector {
        // SAFETY: new_raw returns a valid collector that is never freed.
        unsafe { &*Collector::new_raw(Memory::obj_domain()) }
    }

    /// A collector with its own pymalloc heap (for one thread).
    /// It lives for the rest of the process.
    pub fn leak_with_heap() -> &'static Collector {
        // SAFETY: new_raw_with_heap returns a valid collector, and this one
        // is never freed.
        unsafe { &*Collector::new_raw_with_heap() }
    }

    /// A collector with its own heap, owned through the returned pointer
    /// (free it with [`destroy`](Self::destroy)).
    pub(crate) fn new_raw_with_heap() -> *mut Collector {
        Collector::new_raw(Memory::own_heap())
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

    /// Blocks allocated by this collector and not yet freed (objects, free
    /// list blocks and weak references).
    pub fn live_blocks(&self) -> usize {
        self.memory.live_blocks()
    }

    /// The statistics of the collector's own heap, if it has one.
    pub fn heap_stats(&self) -> Option<pymalloc::Stats> {
        self.memory.heap_stats()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.clear_garbage();
    }
}

impl WeakRefOwner for Collector {
    #[inline(always)]
    fn weak_table(&self) -> &WeakTable {
        &self.weak_table
    }
    fn gc_new_weakref(&self) -> *mut PyObject {
        let tp: *const TypeObject = &WEAKREF_TYPE;
        // SAFETY: WEAKREF_TYPE is a GC type with a WeakRefObject-sized basicsize.
        unsafe { Collector::gc_new(self, tp) }
    }
    unsafe fn track(&self, op: *mut PyObject) {
        // SAFETY: the trait method's contract is the inherent one's.
        unsafe { Collector::track(self, op) }
    }
    unsafe fn untrack(&self, op: *mut PyObject) {
        // SAFETY: the trait method's contract is the inherent one's.
        unsafe { Collector::untrack(self, op) }
    }
    unsafe fn decref(&self, op: *mut PyObject) {
        // SAFETY: the trait method's contract is the inherent one's.
        unsafe { Collector::decref(self, op) }
    }
    unsafe fn gc_del(&self, op: *mut PyObject) {
        // SAFETY: the trait method's contract is the inherent one's.
        unsafe { Collector::gc_del(self, op) }
    }
}

/// Aborts the process if dropped during a panic: collector phases that must
/// not unwind (their lists are inconsistent) hold one.
pub(crate) struct AbortOnUnwind(pub(crate) &'static str);

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("pymalloc-gc: fatal: panic during {}", self.0);
            std::process::abort();
        }
    }
}

/// Sets `forbid_mutation` for a scope (with an abort-on-unwind guard).
pub(crate) struct NoMutation<'a> {
    c: &'a Collector,
    old: bool,
    _abort: AbortOnUnwind,
}

impl<'a> NoMutation<'a> {
    pub(crate) fn new(c: &'a Collector, what: &'static str) -> NoMutation<'a> {
        let old = c.forbid_mutation.replace(true);
        NoMutation { c, old, _abort: AbortOnUnwind(what) }
    }
}

impl Drop for NoMutation<'_> {
    fn drop(&mut self) {
        self.c.forbid_mutation.set(self.old);
    }
}

/// Reports a broken invariant and aborts (CPython's `Py_FatalError`).
#[cold]
#[inline(never)]
pub(crate) fn fatal(msg: &str) -> ! {
    eprintln!("pymalloc-gc: fatal: {msg}");
    std::process::abort()
}
