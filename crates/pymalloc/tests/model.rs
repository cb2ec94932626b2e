//! Model-based test: random sequences of malloc/calloc/realloc/free across
//! the three domains, checked after every step against a shadow model.
//!
//! MEM and OBJ get a fresh pymalloc heap of their own (a locked heap, or in
//! a third of the cases the unlocked heap of the GIL mode, whose fast paths
//! are separate code), so its statistics can be compared exactly with the
//! model: live blocks per size class, including
//! where realloc keeps a block in its class and where it moves it. Half the
//! cases run with the debug hooks layered over every domain, which also
//! checks the guard bytes of every block on every free.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use pymalloc::config::{self, AllocatorName};
use pymalloc::geometry::{class_size, size_class, ALIGNMENT, NB_SMALL_SIZE_CLASSES};
use pymalloc::{debug, Domain, GilHeap, LockedHeap, MemAllocatorEx, PurgePolicy};

static HEAP: LockedHeap = LockedHeap::new();
/// Used only while `common::exclusive()` is held, which serialises its calls
/// as the GIL would.
static GIL_HEAP: GilHeap = GilHeap::new();

#[derive(Clone, Debug)]
enum Op {
    Malloc(Domain, usize),
    Calloc(Domain, usize, usize),
    Realloc(usize, usize),
    Free(usize),
    /// Give back everything that holds no block (free pages of pools in
    /// use included); live blocks must not change.
    Purge,
    /// A decay period passes (on the test's own clock): empty pools and
    /// free arenas unused since the previous sweep go back.
    Decay,
    /// `n` blocks of `size` bytes, then all but every `keep`-th of them
    /// freed: pools left sparse, whose free pages (their first too: the
    /// header is in the header table) a purge gives back.
    Sparse(Domain, usize, usize, usize),
}

fn domain() -> impl Strategy<Value = Domain> {
    prop_oneof![Just(Domain::Raw), Just(Domain::Mem), Just(Domain::Obj)]
}

/// Sizes 0..=4096, mostly small, plus a few huge ones that must fail.
fn size() -> impl Strategy<Value = usize> {
    let huge = if cfg!(miri) {
        // Miri treats an impossible C-heap request as an error, not NULL;
        // these are refused before reaching it.
        prop_oneof![Just(usize::MAX), Just(isize::MAX as usize + 1)].boxed()
    } else {
        prop_oneof![Just(usize::MAX), Just(isize::MAX as usize + 1), Just(isize::MAX as usize), Just(1usize << 45)]
            .boxed()
    };
    prop_oneof![8 => 0usize..=600, 3 => 0usize..=4096, 1 => huge]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (domain(), size()).prop_map(|(d, n)| Op::Malloc(d, n)),
        1 => (domain(), 0usize..40, 0usize..130).prop_map(|(d, n, s)| Op::Calloc(d, n, s)),
        1 => domain().prop_map(|d| Op::Calloc(d, usize::MAX / 3, 5)),
        3 => (any::<usize>(), size()).prop_map(|(i, n)| Op::Realloc(i, n)),
        3 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Purge),
        1 => Just(Op::Decay),
        1 => (
            prop_oneof![Just(Domain::Mem), Just(Domain::Obj)],
            1usize..=512,
            // (Miri has no arena region, so no header table: small bursts
            // keep its run short.)
            common::full_or_miri(200usize..900, 16usize..64),
            8usize..120
        )
            .prop_map(|(d, size, n, keep)| Op::Sparse(d, size, n, keep)),
    ]
}

#[derive(Debug)]
struct Live {
    ptr: *mut u8,
    domain: Domain,
    size: usize,
    /// Size class in HEAP, or None for a block of the raw allocator.
    class: Option<usize>,
    fill: u8,
}

struct Model {
    live: Vec<Live>,
    /// start -> end of every live block, to catch overlaps.
    spans: BTreeMap<usize, usize>,
    debug: bool,
    /// MEM and OBJ run on GIL_HEAP, not HEAP.
    gil: bool,
    next_fill: u8,
}

/// The decay policy's clock in these tests (milliseconds), far ahead of the
/// real one, so that only `Op::Decay` sweeps; it only moves forward, across
/// runs too, as the heaps are shared.
static CLOCK: AtomicU64 = AtomicU64::new(1 << 40);

/// Bytes the allocator under the hooks sees for a request of `n`.
fn under(debug: bool, n: usize) -> usize {
    if debug {
        n + debug::EXTRA_BYTES
    } else {
        n
    }
}

fn expect_fail(n: usize) -> bool {
    n >= isize::MAX as usize - 64 || n >= 1 << 45
}

impl Model {
    fn class_of_new(&self, d: Domain, n: usize) -> Option<usize> {
        if d == Domain::Raw {
            None
        } else {
            size_class(under(self.debug, n))
        }
    }

    fn add(&mut self, ptr: *mut u8, domain: Domain, size: usize, class: Option<usize>, zeroed: bool) {
        assert_eq!(ptr as usize % ALIGNMENT, 0, "misaligned block");
        assert_eq!(pymalloc::owns(ptr), class.is_some(), "block in the wrong allocator: {class:?}");
        let (start, end) = (ptr as usize, ptr as usize + size.max(1));
        if let Some((&s, &e)) = self.spans.range(..=start).next_back() {
            assert!(e <= start, "block {start:#x}..{end:#x} overlaps {s:#x}..{e:#x}");
        }
        if let Some((&s, &e)) = self.spans.range(start..).next() {
            assert!(s >= end, "block {start:#x}..{end:#x} overlaps {s:#x}..{e:#x}");
        }
        self.spans.insert(start, end);
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, size) };
        if zeroed {
            assert!(common::all_bytes(bytes, 0), "calloc memory not zeroed");
        }
        self.next_fill = self.next_fill.wrapping_add(1);
        bytes.fill(self.next_fill);
        self.live.push(Live { ptr, domain, size, class, fill: self.next_fill });
    }

    fn check_contents(b: &Live, upto: usize) {
        let bytes = unsafe { std::slice::from_raw_parts(b.ptr, upto.min(b.size)) };
        assert!(common::all_bytes(bytes, b.fill), "contents of {:p} changed", b.ptr);
    }

    fn remove(&mut self, i: usize) -> Live {
        let b = self.live.swap_remove(i);
        self.spans.remove(&(b.ptr as usize));
        b
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Malloc(d, n) => {
                let p = d.malloc(n);
                if expect_fail(n) {
                    assert!(p.is_null(), "malloc({n}) should fail");
                } else {
                    assert!(!p.is_null(), "malloc({n}) failed");
                    let c = self.class_of_new(d, n);
                    self.add(p, d, n, c, false);
                }
            }
            Op::Calloc(d, n, s) => {
                let p = d.calloc(n, s);
                if n.checked_mul(s).is_none_or(|t| t > isize::MAX as usize) {
                    assert!(p.is_null(), "calloc({n}, {s}) should fail");
                } else {
                    assert!(!p.is_null());
                    let bytes = if n == 0 || s == 0 { 0 } else { n * s };
                    // calloc(n, 0) behaves as calloc(1, 1) under the raw
                    // allocator, and as a 0-byte request under pymalloc.
                    let c = if d == Domain::Raw { None } else { size_class(under(self.debug, n * s)) };
                    self.add(p, d, bytes, c, true);
                }
            }
            Op::Realloc(i, n) => {
                if self.live.is_empty() {
                    return;
                }
                let i = i % self.live.len();
                let (p, d) = (self.live[i].ptr, self.live[i].domain);
                let q = unsafe { d.realloc(p, n) };
                if expect_fail(n) {
                    assert!(q.is_null(), "realloc to {n} should fail");
                    Self::check_contents(&self.live[i], usize::MAX);
                    return;
                }
                assert!(!q.is_null(), "realloc to {n} failed");
                let old = self.remove(i);
                // CPython's rule: a pool block stays while the new size fits
                // its class and is over 3/4 of it; raw blocks stay raw.
                let class = match old.class {
                    None => None,
                    Some(c) => {
                        let (size, m) = (class_size(c), under(self.debug, n));
                        if m <= size && 4 * m > 3 * size {
                            assert_eq!(q, p, "block should stay in place");
                            Some(c)
                        } else {
                            size_class(m)
                        }
                    }
                };
                let moved = Live { ptr: q, ..old };
                Self::check_contents(&moved, n);
                self.add(q, d, n, class, false);
            }
            Op::Free(i) => {
                if self.live.is_empty() {
                    return;
                }
                let i = i % self.live.len();
                let b = self.remove(i);
                Self::check_contents(&b, usize::MAX);
                unsafe { b.domain.free(b.ptr) };
            }
            Op::Sparse(d, size, n, keep) => {
                let first = self.live.len();
                for _ in 0..n {
                    self.step(&Op::Malloc(d, size));
                }
                // Free the new blocks but every keep-th, from the last down
                // (remove swaps the last live block into the hole).
                for k in (0..n).rev() {
                    if k % keep != keep - 1 {
                        let b = self.remove(first + k);
                        Self::check_contents(&b, usize::MAX);
                        unsafe { b.domain.free(b.ptr) };
                    }
                }
            }
            Op::Decay => {
                let now = CLOCK.fetch_add(1000, Ordering::Relaxed) + 1000;
                if self.gil {
                    GIL_HEAP.heap().decay_at(now);
                } else {
                    HEAP.lock().decay_at(now);
                }
                for b in &self.live {
                    Self::check_contents(b, usize::MAX);
                }
            }
            Op::Purge => {
                if self.gil {
                    // `exclusive` is held: this thread owns the GIL heap.
                    GIL_HEAP.heap().purge_shared();
                } else {
                    HEAP.purge();
                }
                for b in &self.live {
                    Self::check_contents(b, usize::MAX);
                }
            }
        }
    }

    fn stats(&self) -> pymalloc::stats::Stats {
        if self.gil {
            GIL_HEAP.heap().stats()
        } else {
            HEAP.stats()
        }
    }

    fn check_stats(&self) {
        let s = self.stats();
        let mut want = [0usize; NB_SMALL_SIZE_CLASSES];
        for b in &self.live {
            if let Some(c) = b.class {
                want[c] += 1;
            }
        }
        let got: Vec<usize> = s.classes.iter().map(|c| c.blocks_in_use).collect();
        assert_eq!(got, want.to_vec(), "live blocks per class differ from the model");
        assert_eq!(s.accounted_bytes(), s.arena_bytes);
        if self.gil {
            GIL_HEAP.heap().validate().unwrap();
        } else {
            HEAP.lock().validate().unwrap();
        }
    }
}

fn run(ops: Vec<Op>, debug_hooks: bool, gil: bool) {
    let _g = common::exclusive();
    unsafe {
        config::setup(AllocatorName::Pymalloc).unwrap();
        // SAFETY (GIL mode): `exclusive` serialises every call.
        let a = if gil { MemAllocatorEx::pymalloc_gil(&GIL_HEAP) } else { MemAllocatorEx::pymalloc(&HEAP) };
        Domain::Mem.set_allocator(a);
        Domain::Obj.set_allocator(a);
        if debug_hooks {
            debug::setup_debug_hooks();
        }
    }
    // The decay policy, on the test's clock (see CLOCK).
    let policy = PurgePolicy::Decay { ms: 1000 };
    HEAP.lock().set_purge_policy(policy);
    GIL_HEAP.set_purge_policy(policy);
    let now = CLOCK.load(Ordering::Relaxed);
    HEAP.lock().decay_at(now);
    GIL_HEAP.heap().decay_at(now);
    let mut m = Model { live: Vec::new(), spans: BTreeMap::new(), debug: debug_hooks, gil, next_fill: 0 };
    for op in &ops {
        m.step(op);
        m.check_stats();
    }
    for b in std::mem::take(&mut m.live) {
        Model::check_contents(&b, usize::MAX);
        unsafe { b.domain.free(b.ptr) };
    }
    m.spans.clear();
    m.check_stats();
    assert_eq!(m.stats().blocks_in_use(), 0);
}

fn config() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig { cases: 3, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig { cases: 256, ..ProptestConfig::default() }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn domains_match_the_model(
        ops in proptest::collection::vec(op(), 1..common::full_or_miri(200, 24)),
        debug_hooks in any::<bool>(),
        gil in proptest::bool::weighted(0.33),
    ) {
        run(ops, debug_hooks, gil);
    }
}

/// A long single run: enough blocks to need several arenas.
#[test]
#[cfg_attr(miri, ignore = "too slow under Miri; the proptest covers the same paths")]
fn long_run_matches_the_model() {
    let mut ops = Vec::new();
    let mut x: u64 = 88172645463325252;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as usize
    };
    for _ in 0..20_000 {
        let d = Domain::ALL[next() % 3];
        ops.push(match next() % 10 {
            0..=5 => Op::Malloc(d, next() % 513),
            6 => Op::Realloc(next(), next() % 1200),
            _ => Op::Free(next()),
        });
    }
    run(ops.clone(), false, false);
    run(ops, false, true);
}
