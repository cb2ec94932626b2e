//! Depth is not a danger: dropping or collecting chains, rings and trees of
//! 10^7 objects on a test thread's default 2 MiB stack. Nothing in the
//! collector or the drop path recurses with the depth of the graph: the
//! collection phases walk lists, and deallocation goes through the
//! trashcan (deallocations nested deeper than 50 are deferred).

use std::cell::{Cell, RefCell};

use pymalloc_gc::{gc, Cc, Trace};

#[cfg(not(miri))]
const N: usize = 10_000_000;
#[cfg(miri)]
const N: usize = 300;

thread_local!(static DROPS: Cell<usize> = const { Cell::new(0) });

#[derive(Trace)]
struct Link {
    next: RefCell<Option<Cc<Link>>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        DROPS.with(|d| d.set(d.get() + 1));
    }
}

fn drops() -> usize {
    DROPS.with(|d| d.get())
}

fn chain(n: usize) -> (Cc<Link>, Cc<Link>) {
    let tail = Cc::new(Link { next: RefCell::new(None) });
    let mut head = tail.clone();
    for _ in 1..n {
        head = Cc::new(Link { next: RefCell::new(Some(head)) });
    }
    (head, tail)
}

#[test]
fn dropping_a_long_chain() {
    let (head, tail) = chain(N);
    drop(tail);
    drop(head);
    assert_eq!(drops(), N);
    assert_eq!(gc::collector().live_blocks(), 0);
}

#[test]
fn collecting_a_long_ring() {
    let (head, tail) = chain(N);
    *tail.next.borrow_mut() = Some(head.clone());
    drop((head, tail));
    assert_eq!(drops(), 0);
    assert_eq!(gc::collect(), N);
    assert_eq!(drops(), N);
    assert_eq!(gc::collector().live_blocks(), 0);
}

#[test]
fn collecting_a_chain_hanging_from_a_small_cycle() {
    let (head, tail) = chain(N);
    let a = Cc::new(Link { next: RefCell::new(Some(head)) });
    // a -> head -> ... -> tail -> a
    *tail.next.borrow_mut() = Some(a.clone());
    drop((a, tail));
    assert_eq!(gc::collect(), N + 1);
    assert_eq!(drops(), N + 1);
}

#[derive(Trace)]
struct TreeNode {
    parent: RefCell<Option<Cc<TreeNode>>>,
    children: RefCell<Vec<Cc<TreeNode>>>,
}

thread_local!(static TREE_DROPS: Cell<usize> = const { Cell::new(0) });

impl Drop for TreeNode {
    fn drop(&mut self) {
        TREE_DROPS.with(|d| d.set(d.get() + 1));
    }
}

/// A tree with strong parent links (every edge is a cycle), built breadth
/// first with `fanout` children per node, plus a degenerate spine (a path of
/// parent links as deep as a tenth of the nodes).
fn tree(n: usize, fanout: usize) -> Cc<TreeNode> {
    let new = |parent: Option<Cc<TreeNode>>| {
        Cc::new(TreeNode { parent: RefCell::new(parent), children: RefCell::new(Vec::new()) })
    };
    let root = new(None);
    let mut made = 1;
    let mut spine = root.clone();
    while made < n / 10 {
        let c = new(Some(spine.clone()));
        spine.children.borrow_mut().push(c.clone());
        spine = c;
        made += 1;
    }
    let mut frontier = vec![root.clone()];
    'outer: while !frontier.is_empty() {
        let mut next = Vec::new();
        for p in frontier {
            for _ in 0..fanout {
                if made == n {
                    break 'outer;
                }
                let c = new(Some(p.clone()));
                p.children.borrow_mut().push(c.clone());
                next.push(c);
                made += 1;
            }
        }
        frontier = next;
    }
    root
}

#[test]
fn collecting_a_large_tree_with_parent_links() {
    let root = tree(N, 4);
    drop(root);
    assert_eq!(gc::collect(), N);
    assert_eq!(TREE_DROPS.with(|d| d.get()), N);
    assert_eq!(gc::collector().live_blocks(), 0);
}

#[test]
fn dropping_a_deep_acyclic_tree() {
    // Children only (no parent links): plain reference counting frees it
    // when the root goes, through a spine N/10 deep.
    let new = || Cc::new(TreeNode { parent: RefCell::new(None), children: RefCell::new(Vec::new()) });
    let root = new();
    let mut cur = root.clone();
    for _ in 1..N / 10 {
        let c = new();
        cur.children.borrow_mut().push(c.clone());
        cur = c;
    }
    drop(cur);
    drop(root);
    assert_eq!(TREE_DROPS.with(|d| d.get()), N / 10);
    assert_eq!(gc::collector().live_blocks(), 0);
}
