//! The `gc` module's API on a [`Collector`] (CPython's `Modules/gcmodule.c`
//! module functions: `gc_collect_impl`, `gc_enable_impl`, `gc_disable_impl`,
//! `gc_isenabled_impl`, `gc_get_threshold`, `gc_set_threshold`,
//! `gc_get_count_impl`, `gc_get_stats_impl`, `gc_set_debug_impl`,
//! `gc_get_debug_impl`, `gc_freeze_impl`, `gc_unfreeze_impl`,
//! `gc_get_freeze_count_impl`, `gc_get_objects_impl`, `gc_get_referrers`,
//! `gc_get_referents`, `gc.garbage`, `gc.callbacks`), and the registration
//! of the free lists full collections empty (`clear_freelists`), as an
//! `impl Collector` block. [`gc`](crate::gc) offers the same for the
//! calling thread's collector, [`ffi`](crate::ffi) as C functions.

use core::ffi::{c_int, c_void};
use std::rc::Rc;

use crate::collect::traverse;
use crate::collector::{
    CallbackInfo, Collector, DebugSink, GenerationStats, InvalidGeneration, NoMutation, NUM_GENERATIONS,
};
use crate::freelist::FreeLists;
use crate::list;
use crate::object::{from_gc, is_gc, PyObject};

/// What `visit_referrers` looks for and whether it found it.
struct ReferrersCtx<'a> {
    targets: &'a [*mut PyObject],
    found: bool,
}

/// `referrersvisit`: stops the traversal at the first of the targets.
unsafe extern "C" fn visit_referrers(op: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: arg is the ReferrersCtx of get_referrers.
    let ctx = unsafe { &mut *arg.cast::<ReferrersCtx<'_>>() };
    if ctx.targets.contains(&op) {
        ctx.found = true;
        return 1;
    }
    0
}

/// Appends every reported object to the `Vec` behind `arg`.
unsafe extern "C" fn visit_collect(op: *mut PyObject, arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Vec of get_referents.
    unsafe { (*arg.cast::<Vec<*mut PyObject>>()).push(op) };
    0
}

impl Collector {
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
        [0, 1, 2].map(|i| self.gens.stats[i].get())
    }

    /// `gc.set_debug(flags)`.
    pub fn set_debug(&self, flags: u32) {
        self.module.debug.set(flags)
    }
    /// `gc.get_debug()`.
    pub fn debug(&self) -> u32 {
        self.module.debug.get()
    }

    /// Where debug output goes (default: standard error).
    pub fn set_debug_sink(&self, sink: Option<DebugSink>) {
        *self.module.debug_sink.borrow_mut() = sink;
    }

    /// `gc.freeze()`: moves every tracked object to the permanent
    /// generation, which collections ignore.
    pub fn freeze(&self) {
        for g in self.gens.iter() {
            // SAFETY: the generation lists are consistent outside the
            // traversal phases (which run no code that could call this).
            unsafe { list::merge(g.head(), self.gens.permanent.head()) };
        }
        self.gens[0].count.set(0);
    }

    /// `gc.unfreeze()`: moves the permanent generation into the oldest one.
    pub fn unfreeze(&self) {
        // SAFETY: the permanent and the oldest generation are consistent
        // lists outside the traversal phases (which run no code that could
        // call this).
        unsafe { list::merge(self.gens.permanent.head(), self.gens[NUM_GENERATIONS - 1].head()) };
    }

    /// `gc.get_freeze_count()`.
    pub fn freeze_count(&self) -> usize {
        // SAFETY: the permanent generation is a consistent list outside the
        // traversal phases (which run no code that could call this).
        unsafe { list::size(self.gens.permanent.head()) }
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
            // SAFETY: the generation lists are consistent outside the
            // traversal phases (which run no code that could call this).
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
        for gen in self.gens.iter() {
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
        self.module.garbage.borrow().clone()
    }

    /// Empties `gc.garbage`, releasing its references (`del gc.garbage[:]`).
    pub fn clear_garbage(&self) {
        let g = core::mem::take(&mut *self.module.garbage.borrow_mut());
        for op in g {
            // SAFETY: the list owned one reference to each object.
            unsafe { self.decref(op) };
        }
    }

    /// Appends a callback to `gc.callbacks`; returns its id.
    pub fn add_callback(&self, f: impl Fn(&CallbackInfo) + 'static) -> u64 {
        let id = self.module.next_callback_id.get();
        self.module.next_callback_id.set(id + 1);
        self.module.callbacks.borrow_mut().push((id, Rc::new(f)));
        id
    }

    /// Removes a callback; returns whether it was registered.
    pub fn remove_callback(&self, id: u64) -> bool {
        let mut cbs = self.module.callbacks.borrow_mut();
        let before = cbs.len();
        cbs.retain(|(i, _)| *i != id);
        cbs.len() != before
    }

    /// Registers free lists to be emptied by every full collection (CPython's
    /// `clear_freelists`).
    pub fn register_freelists(&self, fl: *mut FreeLists) {
        let mut v = self.module.freelists.borrow_mut();
        if !v.contains(&fl) {
            v.push(fl);
        }
    }

    /// Forgets registered free lists.
    pub fn unregister_freelists(&self, fl: *mut FreeLists) {
        self.module.freelists.borrow_mut().retain(|&f| f != fl);
    }

    /// `clear_freelists`: empties the registered free lists (every full
    /// collection does).
    pub(crate) fn clear_freelists(&self) {
        let v = self.module.freelists.borrow().clone();
        for fl in v {
            // SAFETY: registered free lists live until unregistered.
            unsafe { (*fl).clear_with(|b| self.memory.free(b)) };
        }
    }

    /// Frees one block of a free list of this collector's types (for
    /// `FreeLists::clear` on free lists filled by this collector).
    ///
    /// # Safety
    /// `b` is a block from this collector, not used again.
    pub unsafe fn free_block(&self, b: *mut u8) {
        // SAFETY: caller's contract.
        unsafe { self.memory.free(b) }
    }
}
