//! The collection: CPython 3.11's `gc_collect_main` and its phases
//! (`Modules/gcmodule.c`: `update_refs`, `subtract_refs`,
//! `move_unreachable`, `deduce_unreachable`, `move_legacy_finalizers`,
//! `move_legacy_finalizer_reachable`, `handle_weakrefs` (in
//! [`weakref`](crate::weakref)), `finalize_garbage`,
//! `handle_resurrected_objects`, `delete_garbage`,
//! `handle_legacy_finalizers`), the visitors they pass to `tp_traverse`,
//! and the entries that start a collection (`gc_collect_with_callback`,
//! `gc_collect_generations`), as an `impl Collector` block.
//!
//! [`Collector::collect_main`] reads as the list of phases. One
//! optimisation over CPython: `move_legacy_finalizers` also surveys the
//! unreachable set ([`Survey`]); when it holds no weak reference (to or
//! from it) and no finalizer still to run, `handle_weakrefs`,
//! `finalize_garbage` and the second `deduce_unreachable` of
//! `handle_resurrected_objects` are skipped: with no finalizer run nothing
//! can have been resurrected, so they would find the same set.

use core::ffi::{c_int, c_void};
use core::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::collector::{
    fatal, Callback, CallbackInfo, Collector, NoMutation, Phase, DEBUG_COLLECTABLE, DEBUG_SAVEALL, DEBUG_STATS,
    DEBUG_UNCOLLECTABLE, NUM_GENERATIONS,
};
use crate::list;
use crate::object::{
    as_gc, from_gc, is_gc, GcHead, PyObject, VisitProc, PREV_MASK_COLLECTING, PREV_MASK_FINALIZED, PREV_MASK_WEAKREFS,
};
use crate::weakref;

/// What `move_legacy_finalizers` found in the unreachable set.
#[derive(Default)]
pub(crate) struct Survey {
    /// Objects left in the unreachable set.
    count: usize,
    /// Whether one of them is a weak reference or weakly referenced.
    weakrefs: bool,
    /// Whether one of them has a `tp_finalize` that has not run yet.
    finalizers: bool,
}

/// Calls the type's traversal (none means: no references).
///
/// # Safety
/// `op` is a live GC object.
#[inline(always)]
pub(crate) unsafe fn traverse(op: *mut PyObject, visit: VisitProc, arg: *mut c_void) -> c_int {
    // SAFETY: op is live (caller's contract), so is its type.
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

impl Collector {
    // -----------------------------------------------------------------------
    // Starting a collection (gc_collect_generations, gc_collect_with_callback)

    /// `gc_collect_generations`: the automatic collection.
    fn collect_generations(&self) -> usize {
        for i in (0..NUM_GENERATIONS).rev() {
            let g = &self.gens[i];
            if g.count.get() > g.threshold.get() {
                // Avoid quadratic behaviour: a full collection only when the
                // objects that survived their last young collection exceed a
                // quarter of those that survived the last full one.
                if i == NUM_GENERATIONS - 1 && self.gens.long_lived_pending.get() < self.gens.long_lived_total.get() / 4
                {
                    continue;
                }
                return self.collect_with_callback(i);
            }
        }
        0
    }

    /// The automatic collection an allocation starts when generation 0's
    /// count exceeds its threshold (`_PyObject_GC_Link`'s call of
    /// `gc_collect_generations`), unless collection is disabled or running.
    #[cold]
    #[inline(never)]
    pub(crate) fn maybe_collect_on_alloc(&self) {
        if self.enabled.get() && self.gens[0].threshold.get() != 0 && !self.collecting.get() {
            self.collecting.set(true);
            self.collect_generations();
            self.collecting.set(false);
        }
    }

    /// `gc_collect_with_callback`.
    pub(crate) fn collect_with_callback(&self, generation: usize) -> usize {
        self.invoke_callbacks(CallbackInfo { phase: Phase::Start, generation, collected: 0, uncollectable: 0 });
        let (m, n) = self.collect_main(generation);
        self.invoke_callbacks(CallbackInfo { phase: Phase::Stop, generation, collected: m, uncollectable: n });
        m + n
    }

    /// `invoke_gc_callback`: calls each of `gc.callbacks`.
    fn invoke_callbacks(&self, info: CallbackInfo) {
        let cbs: Vec<Callback> = self.module.callbacks.borrow().iter().map(|(_, c)| c.clone()).collect();
        for c in cbs {
            // As CPython reports exceptions in callbacks as unraisable, a
            // panic is reported and the collection goes on.
            if catch_unwind(AssertUnwindSafe(|| c(&info))).is_err() {
                eprintln!("pymalloc-gc: panic ignored in a gc callback");
            }
        }
    }

    // -----------------------------------------------------------------------
    // gc_collect_main: the list of phases

    /// `gc_collect_main`: collects `generation` and the younger ones.
    /// Returns (collected, uncollectable).
    pub(crate) fn collect_main(&self, generation: usize) -> (usize, usize) {
        // The debug flags as the collection starts (callbacks it runs may
        // change them; `delete_garbage` reads `DEBUG_SAVEALL` as it goes).
        let debug = self.module.debug.get();
        let t0 = std::time::Instant::now();
        self.show_stats_each_generation(debug, generation);
        self.update_counts(generation);
        let mut heads = [GcHead::new(), GcHead::new(), GcHead::new()];
        let [unreachable, finalizers, final_unreachable] = heads.each_mut().map(|h| h as *mut GcHead);
        // SAFETY: the generation lists are consistent (no collection runs);
        // the local heads live until the end of this function, do not move,
        // and are only used through these pointers.
        let (collected, uncollectable) = unsafe {
            let (young, old) = self.merge_younger_generations(generation);
            self.deduce_unreachable(young, unreachable);
            self.move_reachable_to_older(generation, young, old);
            list::init(finalizers);
            let mut survey = Self::move_legacy_finalizers(unreachable, finalizers);
            if !list::is_empty(finalizers) {
                self.move_legacy_finalizer_reachable(finalizers);
                // Objects reachable from legacy finalizers left the list.
                survey.count = list::size(unreachable);
            }
            self.debug_list(debug & DEBUG_COLLECTABLE != 0, "collectable", unreachable);
            let mut collected = 0;
            if survey.weakrefs {
                collected += weakref::handle_weakrefs(self, unreachable, old);
            }
            if survey.finalizers {
                self.finalize_garbage(unreachable);
                self.handle_resurrected_objects(unreachable, final_unreachable, old);
            } else {
                Self::nothing_resurrected(unreachable, final_unreachable);
            }
            collected +=
                if survey.finalizers || survey.weakrefs { list::size(final_unreachable) } else { survey.count };
            self.delete_garbage(final_unreachable, old);
            let uncollectable = list::size(finalizers);
            self.debug_list(debug & DEBUG_UNCOLLECTABLE != 0, "uncollectable", finalizers);
            self.handle_legacy_finalizers(finalizers, old);
            (collected, uncollectable)
        };
        if generation == NUM_GENERATIONS - 1 {
            self.clear_freelists();
            self.memory.flush_cache();
        }
        self.show_stats_done(debug, collected, uncollectable, t0);
        self.record_stats(generation, collected, uncollectable);
        (collected, uncollectable)
    }

    // -----------------------------------------------------------------------
    // The phases, in the order collect_main calls them

    /// Updates the collection and allocation counters: one more collection
    /// of `generation` for the next one, and none pending for the collected
    /// ones.
    fn update_counts(&self, generation: usize) {
        if generation + 1 < NUM_GENERATIONS {
            let c = &self.gens[generation + 1].count;
            c.set(c.get() + 1);
        }
        for g in self.gens.up_to(generation) {
            g.count.set(0);
        }
    }

    /// Merges the younger generations into `generation`'s list; returns it
    /// (`young`) and the list survivors go to (`old`: the next generation,
    /// or `young` itself for the oldest).
    ///
    /// # Safety
    /// The generation lists are consistent.
    unsafe fn merge_younger_generations(&self, generation: usize) -> (*mut GcHead, *mut GcHead) {
        // SAFETY: caller's contract.
        unsafe {
            for i in 0..generation {
                list::merge(self.gens[i].head(), self.gens[generation].head());
            }
        }
        let young = self.gens[generation].head();
        let old = if generation < NUM_GENERATIONS - 1 { self.gens[generation + 1].head() } else { young };
        (young, old)
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
        // SAFETY: containers is a consistent list of live tracked objects
        // (singly linked, refs in prev: update_refs); traversals only call
        // visit_decref, which changes refs and nothing else.
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

    /// Moves the reachable objects to the next generation, keeping the
    /// counters of the long-lived rule.
    ///
    /// # Safety
    /// `young` and `old` are consistent generation lists.
    unsafe fn move_reachable_to_older(&self, generation: usize, young: *mut GcHead, old: *mut GcHead) {
        let gens = &self.gens;
        // SAFETY: caller's contract.
        unsafe {
            if young != old {
                if generation == NUM_GENERATIONS - 2 {
                    gens.long_lived_pending.set(gens.long_lived_pending.get() + list::size(young));
                }
                list::merge(young, old);
            } else {
                gens.long_lived_pending.set(0);
                gens.long_lived_total.set(list::size(young));
            }
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

    /// No finalizer ran, so nothing can have been resurrected (weak
    /// reference callbacks only reach reachable objects): CPython's second
    /// `deduce_unreachable` would find the same set, which moves as it is
    /// to `final_unreachable`.
    ///
    /// # Safety
    /// `unreachable` is a consistent list; `final_unreachable` a head.
    unsafe fn nothing_resurrected(unreachable: *mut GcHead, final_unreachable: *mut GcHead) {
        // SAFETY: caller's contract.
        unsafe {
            list::init(final_unreachable);
            list::merge(unreachable, final_unreachable);
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
                if self.module.debug.get() & DEBUG_SAVEALL != 0 {
                    Self::incref(op);
                    self.module.garbage.borrow_mut().push(op);
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
                if self.module.debug.get() & DEBUG_SAVEALL != 0 || (*(*op).ob_type).tp_del.is_some() {
                    Self::incref(op);
                    self.module.garbage.borrow_mut().push(op);
                }
                g = list::next(g);
            }
            list::merge(finalizers, old);
        }
    }

    /// Adds one collection of `generation` and its findings to the
    /// statistics.
    fn record_stats(&self, generation: usize, collected: usize, uncollectable: usize) {
        let st = &self.gens.stats[generation];
        let mut s = st.get();
        s.collections += 1;
        s.collected += collected;
        s.uncollectable += uncollectable;
        st.set(s);
    }

    // -----------------------------------------------------------------------
    // Debug output (DEBUG_STATS, DEBUG_COLLECTABLE, DEBUG_UNCOLLECTABLE)

    /// `DEBUG_STATS`: the header of a collection and the generation sizes
    /// (`show_stats_each_generations`).
    fn show_stats_each_generation(&self, debug: u32, generation: usize) {
        if debug & DEBUG_STATS == 0 {
            return;
        }
        self.debug_line(format_args!("gc: collecting generation {generation}...\n"));
        let sizes: Vec<String> = self
            .gens
            .iter()
            // SAFETY: generation lists are consistent between collections.
            .map(|g| unsafe { list::size(g.head()) }.to_string())
            .collect();
        // SAFETY: the permanent generation is consistent between collections.
        let perm = unsafe { list::size(self.gens.permanent.head()) };
        self.debug_line(format_args!(
            "gc: objects in each generation: {}\ngc: objects in permanent generation: {perm}\n",
            sizes.join(" ")
        ));
    }

    /// `DEBUG_STATS`: the last line of a collection.
    fn show_stats_done(&self, debug: u32, collected: usize, uncollectable: usize, t0: std::time::Instant) {
        if debug & DEBUG_STATS != 0 {
            self.debug_line(format_args!(
                "gc: done, {} unreachable, {} uncollectable, {:.4}s elapsed\n",
                uncollectable + collected,
                uncollectable,
                t0.elapsed().as_secs_f64()
            ));
        }
    }

    /// When `on`, one `debug_cycle` line per object of `list`.
    ///
    /// # Safety
    /// `list` is a consistent list of live objects.
    unsafe fn debug_list(&self, on: bool, msg: &str, list: *mut GcHead) {
        if !on {
            return;
        }
        // SAFETY: caller's contract.
        unsafe {
            let mut g = list::next(list);
            while g != list {
                self.debug_cycle(msg, from_gc(g));
                g = list::next(g);
            }
        }
    }

    /// `debug_cycle`: one line for an object found collectable or uncollectable.
    ///
    /// # Safety
    /// `op` is a live object.
    unsafe fn debug_cycle(&self, msg: &str, op: *mut PyObject) {
        // SAFETY: op is live.
        let name = unsafe { (*(*op).ob_type).name() };
        self.debug_line(format_args!("gc: {msg} <{name} {op:p}>\n"));
    }

    /// Writes debug output to the sink, or to standard error.
    fn debug_line(&self, args: fmt::Arguments<'_>) {
        let s = args.to_string();
        let mut sink = self.module.debug_sink.borrow_mut();
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
}
