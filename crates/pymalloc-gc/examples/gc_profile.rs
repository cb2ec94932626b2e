//! A fixed workload for profiling (`valgrind --tool=callgrind`): build a
//! ring or an acyclic tree, then drop and collect it.
//!
//! `cargo run --release -p pymalloc-gc --example gc_profile -- ring 100000`
//! (shapes: `ring`, `acyclic`, `acyclic-nogc`, `alloc-drop`, and `acyclic-rc` with
//! `std::rc::Rc` on the system allocator)

use std::cell::RefCell;

use pymalloc_gc::{gc, Cc, Trace};

#[derive(Trace)]
struct Node {
    a: RefCell<Option<Cc<Node>>>,
    b: RefCell<Option<Cc<Node>>>,
    c: RefCell<Option<Cc<Node>>>,
}

fn node() -> Cc<Node> {
    Cc::new(Node { a: RefCell::new(None), b: RefCell::new(None), c: RefCell::new(None) })
}

#[inline(never)]
fn build_ring(n: usize) -> Cc<Node> {
    let first = node();
    let mut last = first.clone();
    for _ in 1..n {
        let x = node();
        *last.a.borrow_mut() = Some(x.clone());
        last = x;
    }
    *last.a.borrow_mut() = Some(first.clone());
    first
}

#[inline(never)]
fn drop_and_collect(root: Cc<Node>) -> usize {
    drop(root);
    gc::collect()
}

#[inline(never)]
fn acyclic_tree(n: usize) {
    let nodes: Vec<Cc<Node>> = (0..n).map(|_| node()).collect();
    for i in 1..n {
        let p = &nodes[(i - 1) / 2];
        let slot = if i % 2 == 1 { &p.b } else { &p.c };
        *slot.borrow_mut() = Some(nodes[i].clone());
    }
    drop(nodes);
}

mod rc {
    use std::cell::RefCell;
    use std::rc::Rc;
    /// The same node as the Cc one (the unused edge keeps the size equal).
    pub struct Node {
        pub b: RefCell<Option<Rc<Node>>>,
        pub c: RefCell<Option<Rc<Node>>>,
        #[allow(dead_code)]
        pub a: RefCell<Option<Rc<Node>>>,
    }
    #[inline(never)]
    pub fn acyclic_tree(n: usize) {
        let nodes: Vec<Rc<Node>> = (0..n)
            .map(|_| Rc::new(Node { a: RefCell::new(None), b: RefCell::new(None), c: RefCell::new(None) }))
            .collect();
        for i in 1..n {
            let p = &nodes[(i - 1) / 2];
            let slot = if i % 2 == 1 { &p.b } else { &p.c };
            *slot.borrow_mut() = Some(nodes[i].clone());
        }
        drop(nodes);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shape = args.get(1).map(String::as_str).unwrap_or("ring");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    match shape {
        "ring" => {
            let r = build_ring(n);
            let found = drop_and_collect(r);
            assert_eq!(found, n);
        }
        "acyclic" => acyclic_tree(n),
        "acyclic-nogc" => {
            gc::disable();
            acyclic_tree(n)
        }
        "acyclic-rc" => rc::acyclic_tree(n),
        "alloc-drop" => {
            for _ in 0..n {
                drop(std::hint::black_box(node()));
            }
        }
        _ => panic!("shape: ring, acyclic, acyclic-nogc, acyclic-rc or alloc-drop"),
    }
}
