//! The peers of the GC comparison, shared by `benches/gc_compare.rs` and
//! `examples/gc_peer.rs`: one module per implementation (pymalloc-gc,
//! gcmodule, rust-cc, dumpster, bacon_rajan_cc, and `std::rc::Rc` on the
//! system allocator), all with the same node (three optional strong edges
//! in `RefCell`s) and the same graph shapes.

#![allow(dead_code)]

/// xorshift64*: the same random graph for every implementation.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// One module per implementation, all with the same node (three optional
/// strong edges in `RefCell`s) and the same shapes.
macro_rules! shapes {
    ($modname:ident, $label:expr, $cc:ty, $new:expr, $collect:expr, [$($derive:path),*]) => {
        pub mod $modname {
            #![allow(dead_code)]
            use std::cell::RefCell;
            type Cc<T> = $cc;
            pub const LABEL: &str = $label;

            #[derive($($derive),*)]
            pub struct Node {
                pub a: RefCell<Option<Cc<Node>>>,
                pub b: RefCell<Option<Cc<Node>>>,
                pub c: RefCell<Option<Cc<Node>>>,
            }

            #[inline(always)]
            pub fn node() -> Cc<Node> {
                ($new)(Node {
                    a: RefCell::new(None),
                    b: RefCell::new(None),
                    c: RefCell::new(None),
                })
            }

            pub fn collect() {
                ($collect)()
            }

            pub fn ring(n: usize) -> Cc<Node> {
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

            /// Binary tree in breadth-first order; `parent_links` adds the
            /// strong child-to-parent edge (every edge becomes a cycle).
            pub fn tree(n: usize, parent_links: bool) -> Cc<Node> {
                let nodes: Vec<Cc<Node>> = (0..n).map(|_| node()).collect();
                for i in 1..n {
                    let p = &nodes[(i - 1) / 2];
                    let slot = if i % 2 == 1 { &p.b } else { &p.c };
                    *slot.borrow_mut() = Some(nodes[i].clone());
                    if parent_links {
                        *nodes[i].a.borrow_mut() = Some(p.clone());
                    }
                }
                nodes[0].clone()
            }

            /// Every node has two edges to random nodes.
            pub fn random(n: usize) -> Cc<Node> {
                let mut rng = super::Rng(0x9E37_79B9_7F4A_7C15);
                let nodes: Vec<Cc<Node>> = (0..n).map(|_| node()).collect();
                for x in &nodes {
                    *x.a.borrow_mut() = Some(nodes[rng.next(n)].clone());
                    *x.b.borrow_mut() = Some(nodes[rng.next(n)].clone());
                }
                nodes[0].clone()
            }
        }
    };
}

shapes!(
    ours,
    "pymalloc-gc",
    pymalloc_gc::Cc<T>,
    pymalloc_gc::Cc::new,
    || {
        pymalloc_gc::gc::collect();
    },
    [pymalloc_gc::Trace]
);
shapes!(
    with_gcmodule,
    "gcmodule",
    gcmodule::Cc<T>,
    gcmodule::Cc::new,
    || {
        gcmodule::collect_thread_cycles();
    },
    []
);
shapes!(
    with_rust_cc,
    "rust-cc",
    rust_cc::Cc<T>,
    rust_cc::Cc::new,
    rust_cc::collect_cycles,
    [rust_cc::Trace, rust_cc::Finalize]
);
shapes!(with_dumpster, "dumpster", dumpster::unsync::Gc<T>, dumpster::unsync::Gc::new, dumpster::unsync::collect, []);
shapes!(
    with_bacon,
    "bacon_rajan_cc",
    bacon_rajan_cc::Cc<T>,
    bacon_rajan_cc::Cc::new,
    bacon_rajan_cc::collect_cycles,
    []
);
shapes!(with_rc, "Rc (system allocator)", std::rc::Rc<T>, std::rc::Rc::new, || (), []);

impl bacon_rajan_cc::Trace for with_bacon::Node {
    fn trace(&self, t: &mut bacon_rajan_cc::Tracer) {
        self.a.trace(t);
        self.b.trace(t);
        self.c.trace(t);
    }
}

// gcmodule's derive recurses forever in `is_type_tracked` on a
// self-referential type, so its Trace is written by hand.
impl gcmodule::Trace for with_gcmodule::Node {
    fn trace(&self, t: &mut gcmodule::Tracer) {
        self.a.trace(t);
        self.b.trace(t);
        self.c.trace(t);
    }
    fn is_type_tracked() -> bool {
        true
    }
}

// SAFETY: visits the three fields, each of which owns at most one Gc.
unsafe impl dumpster::Trace for with_dumpster::Node {
    fn accept<V: dumpster::Visitor>(&self, v: &mut V) -> Result<(), ()> {
        self.a.accept(v)?;
        self.b.accept(v)?;
        self.c.accept(v)
    }
}
