//! CPython's `gc` module for the calling thread's collector (the one behind
//! [`Cc`](crate::Cc)).
//!
//! ```
//! use pymalloc_gc::gc;
//! assert_eq!(gc::get_threshold(), [700, 10, 10]);
//! gc::disable();
//! assert!(!gc::isenabled());
//! gc::enable();
//! ```

use crate::cc::{local_collector, AnyCc};
pub use crate::collector::{
    CallbackInfo, DebugSink, GenerationStats, InvalidGeneration, Phase, DEBUG_COLLECTABLE, DEBUG_LEAK, DEBUG_SAVEALL,
    DEBUG_STATS, DEBUG_UNCOLLECTABLE, NUM_GENERATIONS,
};
use crate::object::PyObject;
use crate::Collector;

/// The calling thread's collector.
pub fn collector() -> &'static Collector {
    local_collector()
}

fn handles(v: Vec<*mut PyObject>) -> Vec<AnyCc> {
    // SAFETY: the pointers are live objects of this thread's collector,
    // and no user code ran since they were gathered.
    v.into_iter().map(|op| unsafe { AnyCc::new_ref(op) }).collect()
}

/// `gc.collect()`: a full collection; the number of unreachable objects found.
pub fn collect() -> usize {
    local_collector().collect(NUM_GENERATIONS - 1).unwrap_or(0)
}

/// `gc.collect(generation)`.
pub fn collect_generation(generation: usize) -> Result<usize, InvalidGeneration> {
    local_collector().collect(generation)
}

/// `gc.enable()`.
pub fn enable() {
    local_collector().enable()
}

/// `gc.disable()`.
pub fn disable() {
    local_collector().disable()
}

/// `gc.isenabled()`.
pub fn isenabled() -> bool {
    local_collector().is_enabled()
}

/// `gc.get_threshold()`.
pub fn get_threshold() -> [usize; NUM_GENERATIONS] {
    local_collector().threshold()
}

/// `gc.set_threshold(t0, t1, t2)`.
pub fn set_threshold(t0: usize, t1: usize, t2: usize) {
    local_collector().set_threshold([t0, t1, t2])
}

/// `gc.get_count()`.
pub fn get_count() -> [usize; NUM_GENERATIONS] {
    local_collector().count()
}

/// `gc.get_stats()`.
pub fn get_stats() -> [GenerationStats; NUM_GENERATIONS] {
    local_collector().stats()
}

/// `gc.set_debug(flags)`.
pub fn set_debug(flags: u32) {
    local_collector().set_debug(flags)
}

/// `gc.get_debug()`.
pub fn get_debug() -> u32 {
    local_collector().debug()
}

/// Sends the debug output (`DEBUG_STATS`, `DEBUG_COLLECTABLE`, ...) to
/// `sink` instead of standard error; `None` restores standard error.
pub fn set_debug_sink(sink: Option<DebugSink>) {
    local_collector().set_debug_sink(sink)
}

/// `gc.freeze()`.
pub fn freeze() {
    local_collector().freeze()
}

/// `gc.unfreeze()`.
pub fn unfreeze() {
    local_collector().unfreeze()
}

/// `gc.get_freeze_count()`.
pub fn get_freeze_count() -> usize {
    local_collector().freeze_count()
}

/// `gc.get_objects(generation)`: `None` for all generations.
pub fn get_objects(generation: Option<usize>) -> Result<Vec<AnyCc>, InvalidGeneration> {
    local_collector().objects(generation).map(handles)
}

/// `gc.get_referrers(*objs)`.
pub fn get_referrers(objs: &[&AnyCc]) -> Vec<AnyCc> {
    let ptrs: Vec<*mut PyObject> = objs.iter().map(|a| a.as_ptr()).collect();
    handles(local_collector().referrers(&ptrs))
}

/// `gc.get_referents(*objs)`.
pub fn get_referents(objs: &[&AnyCc]) -> Vec<AnyCc> {
    let ptrs: Vec<*mut PyObject> = objs.iter().map(|a| a.as_ptr()).collect();
    // SAFETY: the handles keep the objects alive.
    handles(unsafe { local_collector().referents(&ptrs) })
}

/// `gc.is_tracked(obj)`.
pub fn is_tracked(obj: &AnyCc) -> bool {
    // SAFETY: the handle keeps the object alive.
    unsafe { local_collector().is_tracked(obj.as_ptr()) }
}

/// `gc.is_finalized(obj)`.
pub fn is_finalized(obj: &AnyCc) -> bool {
    // SAFETY: the handle keeps the object alive.
    unsafe { local_collector().is_finalized(obj.as_ptr()) }
}

/// `gc.garbage`: the objects saved by `DEBUG_SAVEALL` or found
/// uncollectable.
pub fn garbage() -> Vec<AnyCc> {
    handles(local_collector().garbage())
}

/// `del gc.garbage[:]`.
pub fn clear_garbage() {
    local_collector().clear_garbage()
}

/// `gc.callbacks.append(f)`; returns an id for [`remove_callback`].
pub fn add_callback(f: impl Fn(&CallbackInfo) + 'static) -> u64 {
    local_collector().add_callback(f)
}

/// `gc.callbacks.remove(f)`.
pub fn remove_callback(id: u64) -> bool {
    local_collector().remove_callback(id)
}
