//! Property: build a random object graph, drop random roots, collect, and
//! exactly the objects unreachable from the remaining roots are freed (no
//! leak, no premature free); then drop everything and nothing is left.

use std::cell::RefCell;
use std::collections::BTreeSet;

use proptest::prelude::*;
use pymalloc_gc::{gc, Cc, Finalize, Trace, Weak};

thread_local! {
    static ALIVE: RefCell<BTreeSet<usize>> = const { RefCell::new(BTreeSet::new()) };
    static FINALIZED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

#[derive(Trace)]
struct Obj {
    edges: RefCell<Vec<Cc<Obj>>>,
    weak: RefCell<Vec<Weak<Obj>>>,
    #[trace(skip)]
    id: usize,
}

impl Drop for Obj {
    fn drop(&mut self) {
        ALIVE.with(|a| assert!(a.borrow_mut().remove(&self.id), "dropped twice"));
    }
}

impl Finalize for Obj {
    fn finalize(this: &Cc<Self>) {
        // Finalizers see an intact value, even inside a collected cycle.
        assert!(ALIVE.with(|a| a.borrow().contains(&this.id)));
        FINALIZED.with(|f| f.borrow_mut().push(this.id));
    }
}

fn alive() -> BTreeSet<usize> {
    ALIVE.with(|a| a.borrow().clone())
}

#[derive(Debug, Clone)]
struct Graph {
    n: usize,
    edges: Vec<(usize, usize)>,
    weak_edges: Vec<(usize, usize)>,
    roots: Vec<bool>,
    finalizable: Vec<bool>,
    generation: usize,
}

fn graph() -> impl Strategy<Value = Graph> {
    (1usize..40).prop_flat_map(|n| {
        (
            Just(n),
            prop::collection::vec((0..n, 0..n), 0..n * 3),
            prop::collection::vec((0..n, 0..n), 0..n),
            prop::collection::vec(prop::bool::weighted(0.2), n),
            prop::collection::vec(prop::bool::weighted(0.3), n),
            0usize..3,
        )
            .prop_map(|(n, edges, weak_edges, roots, finalizable, generation)| Graph {
                n,
                edges,
                weak_edges,
                roots,
                finalizable,
                generation,
            })
    })
}

fn reachable(g: &Graph) -> BTreeSet<usize> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<usize> = (0..g.n).filter(|&i| g.roots[i]).collect();
    while let Some(i) = stack.pop() {
        if seen.insert(i) {
            stack.extend(g.edges.iter().filter(|e| e.0 == i).map(|e| e.1));
        }
    }
    seen
}

fn check(g: &Graph) -> Result<(), TestCaseError> {
    gc::disable(); // only the explicit collections below
    let objs: Vec<Cc<Obj>> = (0..g.n)
        .map(|id| {
            ALIVE.with(|a| a.borrow_mut().insert(id));
            let value = Obj { edges: RefCell::new(Vec::new()), weak: RefCell::new(Vec::new()), id };
            if g.finalizable[id] {
                Cc::new_finalizable(value)
            } else {
                Cc::new(value)
            }
        })
        .collect();
    for &(a, b) in &g.edges {
        objs[a].edges.borrow_mut().push(objs[b].clone());
    }
    for &(a, b) in &g.weak_edges {
        objs[a].weak.borrow_mut().push(Cc::downgrade(&objs[b]));
    }
    // Age some objects first, then collect that generation: same result.
    if g.generation > 0 {
        gc::collect_generation(g.generation - 1).unwrap();
    }
    let roots: Vec<Cc<Obj>> = objs.iter().zip(&g.roots).filter(|(_, &r)| r).map(|(o, _)| o.clone()).collect();
    let weak_all: Vec<Weak<Obj>> = objs.iter().map(Cc::downgrade).collect();
    drop(objs);
    gc::collect();
    let expect = reachable(g);
    prop_assert_eq!(alive(), expect.clone());
    // Each dead finalizable object was finalized exactly once, no live one.
    let mut fin = FINALIZED.with(|f| f.borrow().clone());
    fin.sort_unstable();
    let want: Vec<usize> = (0..g.n).filter(|i| g.finalizable[*i] && !expect.contains(i)).collect();
    prop_assert_eq!(&fin, &want);
    for (i, w) in weak_all.iter().enumerate() {
        prop_assert_eq!(w.upgrade().is_some(), expect.contains(&i));
    }
    // Every surviving object's edges still lead to live values.
    for r in &roots {
        for e in r.edges.borrow().iter() {
            prop_assert!(Cc::try_get(e).is_some());
        }
    }
    drop(roots);
    gc::collect();
    prop_assert!(alive().is_empty());
    let fin = FINALIZED.with(|f| f.take());
    prop_assert_eq!(fin.len(), g.finalizable.iter().filter(|&&f| f).count());
    drop(weak_all);
    prop_assert_eq!(gc::collector().live_blocks(), 0);
    gc::enable();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 8 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn exactly_the_unreachable_objects_are_freed(g in graph()) {
        check(&g)?;
    }
}
