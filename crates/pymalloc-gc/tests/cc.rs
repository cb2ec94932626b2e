//! The safe front (`Cc`, `Weak`, `Finalize`, the `gc` module) against the
//! semantics of CPython 3.11's collector. Each test runs on its own thread,
//! so it has a fresh collector.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use pymalloc_gc::gc::{self, CallbackInfo, Phase};
use pymalloc_gc::{AnyCc, Cc, Finalize, Trace, Weak};

thread_local! {
    static DROPS: Cell<usize> = const { Cell::new(0) };
}

fn drops() -> usize {
    DROPS.with(|d| d.get())
}

#[derive(Trace)]
struct Node {
    next: RefCell<Option<Cc<Node>>>,
    #[trace(skip)]
    id: usize,
}

impl Drop for Node {
    fn drop(&mut self) {
        DROPS.with(|d| d.set(d.get() + 1));
    }
}

fn node(id: usize) -> Cc<Node> {
    Cc::new(Node { next: RefCell::new(None), id })
}

fn ring(n: usize) -> Cc<Node> {
    let first = node(0);
    let mut last = first.clone();
    for i in 1..n {
        let x = node(i);
        *last.next.borrow_mut() = Some(x.clone());
        last = x;
    }
    *last.next.borrow_mut() = Some(first.clone());
    first
}

#[test]
fn acyclic_objects_die_by_reference_count() {
    let a = node(1);
    let b = node(2);
    *a.next.borrow_mut() = Some(b.clone());
    drop(b);
    assert_eq!(drops(), 0);
    assert_eq!(Cc::strong_count(&a.next.borrow().clone().unwrap()), 2);
    drop(a);
    assert_eq!(drops(), 2);
    assert_eq!(gc::collect(), 0);
}

#[test]
fn self_cycle_is_collected() {
    let a = node(1);
    *a.next.borrow_mut() = Some(a.clone());
    drop(a);
    assert_eq!(drops(), 0);
    assert_eq!(gc::collect(), 1);
    assert_eq!(drops(), 1);
    assert_eq!(gc::collect(), 0);
}

#[test]
fn ring_is_collected_and_reported() {
    let r = ring(100);
    drop(r);
    assert_eq!(drops(), 0);
    assert_eq!(gc::collect(), 100);
    assert_eq!(drops(), 100);
    assert_eq!(gc::collector().live_blocks(), 0);
}

#[test]
fn reachable_cycle_is_kept() {
    let r = ring(10);
    assert_eq!(gc::collect(), 0);
    assert_eq!(drops(), 0);
    // Walk the ring: every value is alive.
    let mut cur = r.clone();
    for i in 0..10 {
        assert_eq!(cur.id, i);
        let n = cur.next.borrow().clone().unwrap();
        cur = n;
    }
    assert!(Cc::ptr_eq(&cur, &r));
    drop((cur, r));
    assert_eq!(gc::collect(), 10);
}

#[test]
fn cycle_kept_alive_from_outside_through_one_member() {
    let r = ring(5);
    let third = r.next.borrow().clone().unwrap().next.borrow().clone().unwrap();
    drop(r);
    assert_eq!(gc::collect(), 0, "one external reference keeps the ring");
    drop(third);
    assert_eq!(gc::collect(), 5);
}

#[derive(Trace)]
struct Dict {
    map: RefCell<HashMap<u32, Cc<Dict>>>,
    list: RefCell<Vec<AnyCc>>,
}

#[test]
fn cycles_through_containers() {
    // test_gc.test_dict / test_list: a container holding itself, and a
    // cycle through a map and a list of erased handles.
    let d = Cc::new(Dict { map: RefCell::new(HashMap::new()), list: RefCell::new(Vec::new()) });
    d.map.borrow_mut().insert(1, d.clone());
    let e = Cc::new(Dict { map: RefCell::new(HashMap::new()), list: RefCell::new(vec![Cc::to_any(&d)]) });
    d.list.borrow_mut().push(Cc::to_any(&e));
    drop((d, e));
    assert_eq!(gc::collect(), 2);
}

#[derive(Trace)]
enum Shape {
    Leaf,
    Pair(RefCell<Option<Cc<Shape>>>, RefCell<Option<Cc<Shape>>>),
    Named {
        inner: RefCell<Option<Cc<Shape>>>,
        #[trace(skip)]
        _name: String,
    },
}

#[test]
fn derive_on_enums_traces_every_variant() {
    let leaf = Cc::new(Shape::Leaf);
    let pair = Cc::new(Shape::Pair(RefCell::new(Some(leaf.clone())), RefCell::new(None)));
    let named = Cc::new(Shape::Named { inner: RefCell::new(Some(pair.clone())), _name: "n".into() });
    if let Shape::Pair(_, b) = &*pair {
        *b.borrow_mut() = Some(named.clone());
    }
    assert_eq!(Cc::to_any(&named).type_name(), "Shape");
    drop((leaf, pair, named));
    // The leaf is unreachable too (only the cycle refers to it): CPython
    // counts every unreachable tracked object.
    assert_eq!(gc::collect(), 3);
}

// --- finalizers (PEP 442) ---------------------------------------------------

thread_local! {
    static FINALIZED: Cell<usize> = const { Cell::new(0) };
    static SAVED: RefCell<Vec<Cc<Fin>>> = const { RefCell::new(Vec::new()) };
    static RESURRECT: Cell<bool> = const { Cell::new(false) };
}

#[derive(Trace)]
struct Fin {
    other: RefCell<Option<Cc<Fin>>>,
}

impl Finalize for Fin {
    fn finalize(this: &Cc<Self>) {
        FINALIZED.with(|f| f.set(f.get() + 1));
        if RESURRECT.with(|r| r.get()) {
            SAVED.with(|s| s.borrow_mut().push(this.clone()));
        }
    }
}

fn fin() -> Cc<Fin> {
    Cc::new_finalizable(Fin { other: RefCell::new(None) })
}

#[test]
fn finalizer_runs_once_on_reference_count_death() {
    let a = fin();
    assert!(!Cc::is_finalized(&a));
    drop(a);
    assert_eq!(FINALIZED.with(|f| f.get()), 1);
}

#[test]
fn finalizer_runs_once_in_a_collected_cycle() {
    let a = fin();
    let b = fin();
    *a.other.borrow_mut() = Some(b.clone());
    *b.other.borrow_mut() = Some(a.clone());
    drop((a, b));
    assert_eq!(gc::collect(), 2);
    assert_eq!(FINALIZED.with(|f| f.get()), 2);
}

#[test]
fn resurrection_by_a_finalizer_keeps_the_cycle_and_finalizes_once() {
    RESURRECT.with(|r| r.set(true));
    let a = fin();
    let b = fin();
    *a.other.borrow_mut() = Some(b.clone());
    *b.other.borrow_mut() = Some(a.clone());
    drop((a, b));
    // Both finalizers run; both objects resurrect: nothing is freed (as
    // CPython 3.11: resurrected objects are not counted).
    assert_eq!(gc::collect(), 0);
    assert_eq!(FINALIZED.with(|f| f.get()), 2);
    let saved = SAVED.with(|s| s.borrow().clone());
    assert_eq!(saved.len(), 2);
    for s in &saved {
        assert!(Cc::is_finalized(s));
        assert!(Cc::try_get(s).is_some(), "resurrected values are intact");
    }
    RESURRECT.with(|r| r.set(false));
    drop(saved);
    SAVED.with(|s| s.borrow_mut().clear());
    // Unreachable again: collected this time, finalizers not rerun.
    assert_eq!(gc::collect(), 2);
    assert_eq!(FINALIZED.with(|f| f.get()), 2);
}

#[test]
fn resurrection_on_reference_count_death() {
    RESURRECT.with(|r| r.set(true));
    drop(fin());
    let saved = SAVED.with(|s| s.borrow_mut().pop().unwrap());
    assert_eq!(Cc::strong_count(&saved), 1);
    RESURRECT.with(|r| r.set(false));
    drop(saved); // finalized already: dies now
    assert_eq!(FINALIZED.with(|f| f.get()), 1);
    assert_eq!(gc::collector().live_blocks(), 0);
}

// --- weak references ----------------------------------------------------------

#[test]
fn weak_reference_cleared_by_reference_count_death() {
    let a = node(1);
    let w = Cc::downgrade(&a);
    assert!(Cc::ptr_eq(&w.upgrade().unwrap(), &a));
    drop(a);
    assert!(w.upgrade().is_none());
}

#[test]
fn weak_reference_to_cycle_cleared_by_collection_and_callback_runs() {
    let hits = Rc::new(Cell::new(0));
    let r = ring(3);
    let h = hits.clone();
    let w = Cc::downgrade_with_callback(&r, move |dead: Weak<Node>| {
        assert!(dead.upgrade().is_none(), "cleared before the callback");
        h.set(h.get() + 1);
    });
    drop(r);
    assert!(w.upgrade().is_some());
    assert_eq!(gc::collect(), 3);
    assert!(w.upgrade().is_none());
    assert_eq!(hits.get(), 1, "the weak reference survived, so its callback ran");
    assert_eq!(drops(), 3);
}

#[derive(Trace)]
struct Holder {
    weak: RefCell<Option<Weak<Holder>>>,
    strong: RefCell<Option<Cc<Holder>>>,
}

#[test]
fn weak_reference_inside_the_garbage_does_not_call_back() {
    // test_gc.test_callback_in_cycle: the weak reference is part of the
    // trash, so its callback must not run.
    let hits = Rc::new(Cell::new(0));
    let a = Cc::new(Holder { weak: RefCell::new(None), strong: RefCell::new(None) });
    let b = Cc::new(Holder { weak: RefCell::new(None), strong: RefCell::new(Some(a.clone())) });
    *a.strong.borrow_mut() = Some(b.clone());
    let h = hits.clone();
    let w = Cc::downgrade_with_callback(&b, move |_| h.set(h.get() + 1));
    *a.weak.borrow_mut() = Some(w);
    drop((a, b));
    // a, b and the weak reference object are unreachable.
    assert_eq!(gc::collect(), 3);
    assert_eq!(hits.get(), 0);
}

#[test]
fn weak_callback_on_reference_count_death() {
    let hits = Rc::new(Cell::new(0));
    let a = node(1);
    let h = hits.clone();
    let w = Cc::downgrade_with_callback(&a, move |_| h.set(h.get() + 1));
    drop(a);
    assert_eq!(hits.get(), 1);
    assert!(w.is_dead());
}

#[test]
fn weak_reference_dropped_first_never_calls_back() {
    let hits = Rc::new(Cell::new(0));
    let a = node(1);
    let h = hits.clone();
    drop(Cc::downgrade_with_callback(&a, move |_| h.set(h.get() + 1)));
    drop(a);
    assert_eq!(hits.get(), 0);
    assert_eq!(gc::collector().live_blocks(), 0);
}

// --- introspection ----------------------------------------------------------

#[test]
fn get_referrers_and_referents() {
    let a = node(1);
    let b = node(2);
    let c = node(3);
    *a.next.borrow_mut() = Some(c.clone());
    *b.next.borrow_mut() = Some(c.clone());
    let ca = Cc::to_any(&c);
    let refs = gc::get_referrers(&[&ca]);
    assert_eq!(refs.len(), 2);
    assert!(refs.iter().any(|r| r.is(&a)));
    assert!(refs.iter().any(|r| r.is(&b)));
    let aa = Cc::to_any(&a);
    let ba = Cc::to_any(&b);
    let ents = gc::get_referents(&[&aa, &ba]);
    assert_eq!(ents.len(), 2);
    assert!(ents.iter().all(|e| e.is(&c)));
    assert!(gc::get_referents(&[&ca]).is_empty());
}

#[test]
fn is_tracked_and_get_objects() {
    let a = node(1);
    let any = Cc::to_any(&a);
    assert!(gc::is_tracked(&any));
    assert!(Cc::is_tracked(&a));
    let all = gc::get_objects(None).unwrap();
    assert!(all.iter().any(|o| o.is(&a)));
    assert!(gc::get_objects(Some(0)).unwrap().iter().any(|o| o.is(&a)));
    assert!(gc::get_objects(Some(1)).unwrap().is_empty());
    assert_eq!(gc::get_objects(Some(3)).unwrap_err().0, 3);
    assert!(!gc::is_finalized(&any));
}

#[test]
fn generation_promotion() {
    let a = node(1);
    let in_gen = |g: usize| gc::get_objects(Some(g)).unwrap().iter().any(|o| o.is(&a));
    assert!(in_gen(0));
    assert_eq!(gc::collect_generation(0).unwrap(), 0);
    assert!(in_gen(1) && !in_gen(0), "survivors of generation 0 move to 1");
    assert_eq!(gc::collect_generation(1).unwrap(), 0);
    assert!(in_gen(2) && !in_gen(1), "survivors of generation 1 move to 2");
    assert_eq!(gc::collect_generation(2).unwrap(), 0);
    assert!(in_gen(2), "the oldest generation keeps its survivors");
    assert!(gc::collect_generation(3).is_err());
}

#[test]
fn collecting_a_generation_collects_the_younger_ones() {
    gc::disable();
    let r = ring(4);
    gc::collect_generation(0).unwrap(); // ring now in generation 1
    drop(r);
    let young = ring(3);
    drop(young); // in generation 0
    assert_eq!(gc::collect_generation(0).unwrap(), 3);
    assert_eq!(gc::collect_generation(1).unwrap(), 4);
    let s = gc::get_stats();
    assert_eq!(s[0].collections, 2);
    assert_eq!(s[0].collected, 3);
    assert_eq!(s[1].collections, 1);
    assert_eq!(s[1].collected, 4);
}

#[test]
fn counts_follow_allocations_and_collections() {
    gc::disable();
    gc::collect();
    assert_eq!(gc::get_count(), [0, 0, 0]);
    let mut v: Vec<_> = (0..5).map(node).collect();
    assert_eq!(gc::get_count()[0], 5);
    v.truncate(3);
    assert_eq!(gc::get_count()[0], 3, "deallocations decrement the count");
    gc::collect_generation(0).unwrap();
    assert_eq!(gc::get_count(), [0, 1, 0]);
    gc::collect_generation(1).unwrap();
    assert_eq!(gc::get_count(), [0, 0, 1]);
    gc::collect();
    assert_eq!(gc::get_count(), [0, 0, 0]);
}

#[test]
fn thresholds_trigger_collections_by_allocation_count() {
    assert_eq!(gc::get_threshold(), [700, 10, 10]);
    gc::set_threshold(10, 2, 2);
    assert_eq!(gc::get_threshold(), [10, 2, 2]);
    for _ in 0..5 {
        drop(ring(3)); // 15 unreachable objects
    }
    let s = gc::get_stats();
    assert!(s[0].collections >= 1, "{s:?}");
    assert!(drops() >= 9, "automatic collections freed rings: {}", drops());
    // A threshold of 0 disables automatic collection.
    gc::set_threshold(0, 2, 2);
    let before = gc::get_stats()[0].collections;
    for _ in 0..100 {
        drop(ring(3));
    }
    assert_eq!(gc::get_stats()[0].collections, before);
}

#[test]
fn disable_stops_automatic_collection_but_not_collect() {
    gc::set_threshold(10, 10, 10);
    gc::disable();
    assert!(!gc::isenabled());
    for _ in 0..20 {
        drop(ring(3));
    }
    assert_eq!(gc::get_stats()[0].collections, 0);
    assert_eq!(drops(), 0);
    assert_eq!(gc::collect(), 60);
    gc::enable();
    assert!(gc::isenabled());
    for _ in 0..20 {
        drop(ring(3));
    }
    assert!(gc::get_stats()[0].collections > 0);
}

#[test]
fn long_lived_pending_rule_delays_full_collections() {
    // CPython's numbers scaled down under Miri.
    let k = if cfg!(miri) { 1000 } else { 4000 };
    gc::disable();
    let keep: Vec<_> = (0..k).map(node).collect();
    gc::collect(); // long_lived_total = k
    let full = gc::get_stats()[2].collections;
    gc::set_threshold(10, 1, 1);
    gc::enable();
    // Few survivors: generation 2's count exceeds its threshold, but the
    // survivors pending (< k / 4) keep the full collection from running.
    let mut survivors = Vec::new();
    for i in 0..k * 3 / 20 {
        survivors.push(node(i));
    }
    assert!(gc::get_count()[2] > 1, "generation 2 is over its threshold");
    assert_eq!(gc::get_stats()[2].collections, full, "full collection delayed");
    // Many survivors: pending reaches a quarter of the long-lived total.
    for i in 0..k * 3 / 4 {
        survivors.push(node(i));
    }
    assert!(gc::get_stats()[2].collections > full, "full collection ran");
    drop((keep, survivors));
}

#[test]
fn freeze_moves_everything_to_the_permanent_generation() {
    let r = ring(5);
    let other = node(9);
    gc::freeze();
    assert_eq!(gc::get_freeze_count(), 6);
    assert!(gc::get_objects(None).unwrap().is_empty());
    assert_eq!(gc::get_count()[0], 0);
    drop(r);
    assert_eq!(gc::collect(), 0, "frozen objects are not collected");
    gc::unfreeze();
    assert_eq!(gc::get_freeze_count(), 0);
    assert!(gc::get_objects(Some(2)).unwrap().iter().any(|o| o.is(&other)));
    assert_eq!(gc::collect(), 5);
}

#[test]
fn debug_saveall_keeps_garbage() {
    gc::set_debug(gc::DEBUG_SAVEALL);
    assert_eq!(gc::get_debug(), gc::DEBUG_SAVEALL);
    drop(ring(3));
    assert_eq!(gc::collect(), 3);
    assert_eq!(drops(), 0, "saved, not freed");
    let g = gc::garbage();
    assert_eq!(g.len(), 3);
    assert!(g.iter().all(|o| o.type_name() == "Node"));
    drop(g);
    gc::set_debug(0);
    gc::clear_garbage();
    assert!(gc::garbage().is_empty());
    assert_eq!(gc::collect(), 3);
    assert_eq!(drops(), 3);
}

#[test]
fn debug_output() {
    let out = Rc::new(RefCell::new(String::new()));
    let o = out.clone();
    gc::set_debug_sink(Some(Box::new(move |s| o.borrow_mut().push_str(s))));
    gc::set_debug(gc::DEBUG_STATS | gc::DEBUG_COLLECTABLE);
    let keep = node(7);
    drop(ring(2));
    gc::collect();
    gc::set_debug(0);
    gc::set_debug_sink(None);
    let text = out.borrow().clone();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "gc: collecting generation 2...");
    assert_eq!(lines[1], "gc: objects in each generation: 3 0 0");
    assert_eq!(lines[2], "gc: objects in permanent generation: 0");
    assert_eq!(lines.iter().filter(|l| l.starts_with("gc: collectable <Node 0x")).count(), 2);
    assert!(lines.last().unwrap().starts_with("gc: done, 2 unreachable, 0 uncollectable, "));
    assert!(lines.last().unwrap().ends_with("s elapsed"));
    drop(keep);
}

#[test]
fn callbacks_at_start_and_stop() {
    let log: Rc<RefCell<Vec<CallbackInfo>>> = Rc::default();
    let l = log.clone();
    let id = gc::add_callback(move |info| l.borrow_mut().push(*info));
    drop(ring(4));
    assert_eq!(gc::collect_generation(1).unwrap(), 4);
    let got = log.borrow().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].phase, Phase::Start);
    assert_eq!((got[0].generation, got[0].collected), (1, 0));
    assert_eq!(got[1].phase, Phase::Stop);
    assert_eq!((got[1].generation, got[1].collected, got[1].uncollectable), (1, 4, 0));
    assert!(gc::remove_callback(id));
    assert!(!gc::remove_callback(id));
    gc::collect();
    assert_eq!(log.borrow().len(), 2);
}

#[test]
fn collect_inside_a_collection_does_nothing() {
    let inner = Rc::new(Cell::new(usize::MAX));
    let i = inner.clone();
    gc::add_callback(move |info| {
        if info.phase == Phase::Start {
            i.set(gc::collect());
        }
    });
    // CPython sets `collecting` around gc_collect_with_callback, callbacks
    // included, so a collection asked for from a callback does nothing.
    drop(ring(2));
    assert_eq!(gc::collect(), 2);
    assert_eq!(inner.get(), 0);
}

// --- destruction order and zombies ---------------------------------------------

thread_local! {
    static SAW_ZOMBIE: Cell<usize> = const { Cell::new(0) };
    static SAW_ALIVE: Cell<usize> = const { Cell::new(0) };
}

#[derive(Trace)]
struct Peek {
    other: RefCell<Option<Cc<Peek>>>,
}

impl Drop for Peek {
    fn drop(&mut self) {
        if let Some(o) = self.other.borrow().as_ref() {
            match Cc::try_get(o) {
                Some(_) => SAW_ALIVE.with(|s| s.set(s.get() + 1)),
                None => SAW_ZOMBIE.with(|s| s.set(s.get() + 1)),
            }
        }
    }
}

#[test]
fn drop_of_a_cycle_member_sees_collected_neighbours_as_zombies() {
    let a = Cc::new(Peek { other: RefCell::new(None) });
    let b = Cc::new(Peek { other: RefCell::new(Some(a.clone())) });
    *a.other.borrow_mut() = Some(b.clone());
    drop((a, b));
    assert_eq!(gc::collect(), 2);
    assert_eq!(SAW_ALIVE.with(|s| s.get()), 1);
    assert_eq!(SAW_ZOMBIE.with(|s| s.get()), 1);
    assert_eq!(gc::collector().live_blocks(), 0);
}

#[derive(Trace)]
struct Panicky {
    other: RefCell<Option<Cc<Panicky>>>,
}

impl Drop for Panicky {
    fn drop(&mut self) {
        if let Some(o) = self.other.borrow().as_ref() {
            let _ = &**o; // panics when `o` was collected first
        }
    }
}

#[test]
fn panics_in_drop_during_collection_are_reported_and_collection_goes_on() {
    let a = Cc::new(Panicky { other: RefCell::new(None) });
    let b = Cc::new(Panicky { other: RefCell::new(Some(a.clone())) });
    *a.other.borrow_mut() = Some(b.clone());
    drop((a, b));
    assert_eq!(gc::collect(), 2);
    assert_eq!(gc::collector().live_blocks(), 0, "both freed despite the panic");
    assert_eq!(gc::collect(), 0);
}

#[test]
#[should_panic(expected = "value accessed after its cycle was collected")]
fn zombie_dereference_panics() {
    // A handle kept by a Drop impl outlives the collection of its value.
    thread_local!(static KEEP: RefCell<Option<Cc<Keeper>>> = const { RefCell::new(None) });
    #[derive(Trace)]
    struct Keeper {
        other: RefCell<Option<Cc<Keeper>>>,
    }
    impl Drop for Keeper {
        fn drop(&mut self) {
            if let Some(o) = self.other.borrow().clone() {
                KEEP.with(|k| *k.borrow_mut() = Some(o));
            }
        }
    }
    let a = Cc::new(Keeper { other: RefCell::new(None) });
    let b = Cc::new(Keeper { other: RefCell::new(Some(a.clone())) });
    *a.other.borrow_mut() = Some(b.clone());
    drop((a, b));
    gc::collect();
    let kept = KEEP.with(|k| k.borrow_mut().take()).unwrap();
    assert!(Cc::is_zombie(&kept));
    let _ = &kept.other; // panics
}

#[test]
fn objects_stay_on_their_thread_and_threads_have_their_own_collector() {
    drop(ring(3));
    let other = std::thread::spawn(|| {
        let r = ring(2);
        drop(r);
        (gc::collect(), gc::get_count())
    })
    .join()
    .unwrap();
    assert_eq!(other.0, 2);
    assert_eq!(gc::collect(), 3);
}

#[test]
fn mutably_borrowed_cells_are_skipped_safely() {
    // A collection triggered while a RefCell is mutably borrowed must not
    // free anything reachable through it.
    gc::set_threshold(1, 1, 1);
    let a = node(1);
    {
        let mut slot = a.next.borrow_mut();
        let b = node(2);
        *b.next.borrow_mut() = Some(node(3));
        for _ in 0..10 {
            drop(ring(2)); // allocations trigger collections
        }
        *slot = Some(b);
    }
    gc::collect();
    let b = a.next.borrow().clone().unwrap();
    assert_eq!(b.id, 2);
    assert_eq!(b.next.borrow().as_ref().unwrap().id, 3);
}

#[derive(Trace)]
struct Counted {
    other: RefCell<Option<Cc<Counted>>>,
    #[trace(skip)]
    drops: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn thread_exit_collects_the_threads_cycles() {
    let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let d = drops.clone();
    std::thread::spawn(move || {
        let a = Cc::new(Counted { other: RefCell::new(None), drops: d.clone() });
        let b = Cc::new(Counted { other: RefCell::new(Some(a.clone())), drops: d });
        *a.other.borrow_mut() = Some(b);
        // The thread ends with the cycle uncollected.
    })
    .join()
    .unwrap();
    assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[test]
fn panicking_gc_callbacks_are_reported_and_collection_goes_on() {
    let id = gc::add_callback(|info| {
        if info.phase == Phase::Start {
            panic!("callback panics");
        }
    });
    drop(ring(3));
    assert_eq!(gc::collect(), 3);
    assert!(gc::remove_callback(id));
    drop(ring(2));
    assert_eq!(gc::collect(), 2, "the collector is not left `collecting`");
}

#[derive(Trace)]
struct Generic<T: Trace + 'static> {
    slot: RefCell<Option<Cc<Generic<T>>>>,
    payload: T,
}

#[derive(Trace)]
struct Tuple(RefCell<Vec<Cc<Tuple>>>, #[trace(skip)] u8);

#[derive(Trace)]
struct Unit;

#[test]
fn derive_on_generic_tuple_and_unit_structs() {
    let g = Cc::new(Generic { slot: RefCell::new(None), payload: vec![Cc::new(Unit)] });
    *g.slot.borrow_mut() = Some(g.clone());
    let t = Cc::new(Tuple(RefCell::new(Vec::new()), 7));
    t.0.borrow_mut().push(t.clone());
    assert_eq!(Cc::to_any(&t).type_name(), "Tuple");
    assert_eq!(Cc::to_any(&g).type_name(), "Generic");
    assert_eq!(t.1, 7);
    drop((g, t));
    // Generic + its Unit payload (reachable only from the cycle) + Tuple.
    assert_eq!(gc::collect(), 3);
}
