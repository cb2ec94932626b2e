//! The tracer over the allocator domains, under random operations in
//! several threads: after every step, the traced bytes of each domain equal
//! the bytes the threads hold in it, and every live block has its trace.
//! A process of its own: the hooks and the traces are process-wide.
#![cfg(not(miri))] // Miri: no unwinder, and too slow for this many steps

use std::sync::{Barrier, Mutex};

use proptest::prelude::*;
use pymalloc::trace::{self, Source, DEFAULT_DOMAIN};
use pymalloc::Domain;

#[derive(Clone, Debug)]
enum Op {
    Alloc(usize, usize),
    Calloc(usize, usize),
    Realloc(usize, usize),
    Free(usize),
    Track(u32, usize),
    Untrack(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..3000usize).prop_map(|(d, n)| Op::Alloc(d, n)),
        (0..3usize, 0..600usize).prop_map(|(d, n)| Op::Calloc(d, n)),
        (any::<usize>(), 0..3000usize).prop_map(|(i, n)| Op::Realloc(i, n)),
        any::<usize>().prop_map(Op::Free),
        (1..4u32, 1..5000usize).prop_map(|(d, n)| Op::Track(d, n)),
        any::<usize>().prop_map(Op::Untrack),
    ]
}

const THREADS: usize = 3;

/// A thread's live blocks: (domain, address, size).
type Live = Vec<(Domain, usize, usize)>;
/// A thread's tracked blocks: (tracemalloc domain, address, size).
type Tracked = Vec<(u32, usize, usize)>;

fn step(op: &Op, live: &mut Live, tracked: &mut Tracked, next_fake: &mut usize) {
    match *op {
        Op::Alloc(d, n) => {
            let d = Domain::ALL[d];
            let p = d.malloc(n);
            assert!(!p.is_null());
            live.push((d, p as usize, n));
        }
        Op::Calloc(d, n) => {
            let d = Domain::ALL[d];
            let p = d.calloc(n, 3);
            assert!(!p.is_null());
            live.push((d, p as usize, 3 * n));
        }
        Op::Realloc(i, n) if !live.is_empty() => {
            let k = i % live.len();
            let (d, p, _) = live[k];
            // SAFETY: p is a live block of d.
            let q = unsafe { d.realloc(p as *mut u8, n) };
            assert!(!q.is_null());
            live[k] = (d, q as usize, n);
        }
        Op::Free(i) if !live.is_empty() => {
            let (d, p, _) = live.swap_remove(i % live.len());
            // SAFETY: p is a live block of d, freed once.
            unsafe { d.free(p as *mut u8) };
        }
        Op::Track(d, n) => {
            // Addresses of no block: tracking does not look at them.
            *next_fake += 64;
            trace::track(d, *next_fake, n).unwrap();
            tracked.push((d, *next_fake, n));
        }
        Op::Untrack(i) if !tracked.is_empty() => {
            let (d, p, _) = tracked.swap_remove(i % tracked.len());
            trace::untrack(d, p).unwrap();
        }
        _ => {}
    }
}

fn source(d: Domain) -> Source {
    [Source::Raw, Source::Mem, Source::Obj][d as usize]
}

/// The tracer against the threads' blocks after step `k`.
fn check(all: &[(Live, Tracked)], k: usize) -> Result<(), String> {
    for d in Domain::ALL {
        let want: usize = all.iter().flat_map(|x| &x.0).filter(|b| b.0 == d).map(|b| b.2).sum();
        let got = trace::traced_bytes(source(d));
        if got != want {
            return Err(format!("{d:?} after step {k}: traced {got}, live {want}"));
        }
    }
    let want: usize = all.iter().flat_map(|x| &x.1).map(|b| b.2).sum();
    let got = trace::traced_bytes(Source::Tracked);
    if got != want {
        return Err(format!("tracked after step {k}: traced {got}, live {want}"));
    }
    if let Some(&(_, p, _)) = all.iter().flat_map(|x| &x.0).find(|b| trace::traceback(DEFAULT_DOMAIN, b.1).is_none()) {
        return Err(format!("no trace for {p:#x} after step {k}"));
    }
    let blocks: usize = all.iter().map(|x| x.0.len() + x.1.len()).sum();
    if trace::heap_stats().curr_blocks != blocks {
        return Err(format!("{} traced blocks, {blocks} live, after step {k}", trace::heap_stats().curr_blocks));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn traced_bytes_per_domain_follow_the_live_bytes(ops in proptest::collection::vec(op(), THREADS * 60)) {
        // SAFETY: no other thread of this process uses the domains now.
        unsafe { trace::hook_domains() };
        trace::start(4).unwrap();
        let steps = ops.len() / THREADS;
        let barrier = Barrier::new(THREADS);
        let shared: Mutex<Vec<(Live, Tracked)>> = Mutex::new(vec![(Vec::new(), Vec::new()); THREADS]);
        let failure: Mutex<Option<String>> = Mutex::new(None);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (ops, barrier, shared, failure) = (&ops, &barrier, &shared, &failure);
                s.spawn(move || {
                    let mut live = Live::new();
                    let mut tracked = Tracked::new();
                    let mut fake = 0x7000_0000_0000 + t * 0x1_0000_0000;
                    for k in 0..steps {
                        step(&ops[k * THREADS + t], &mut live, &mut tracked, &mut fake);
                        shared.lock().unwrap()[t] = (live.clone(), tracked.clone());
                        barrier.wait();
                        if t == 0 && failure.lock().unwrap().is_none() {
                            if let Err(e) = check(&shared.lock().unwrap(), k) {
                                *failure.lock().unwrap() = Some(e);
                            }
                        }
                        barrier.wait();
                        if failure.lock().unwrap().is_some() {
                            break; // every thread stops at the same step
                        }
                    }
                    for (d, p, _) in live {
                        // SAFETY: live blocks, freed once.
                        unsafe { d.free(p as *mut u8) };
                    }
                    for (d, p, _) in tracked {
                        trace::untrack(d, p).unwrap();
                    }
                });
            }
        });
        let failure = failure.into_inner().unwrap();
        let left = trace::traced_memory().0;
        trace::stop();
        // SAFETY: as above.
        unsafe { trace::unhook_domains() };
        prop_assert!(failure.is_none(), "{}", failure.unwrap_or_default());
        prop_assert_eq!(left, 0);
        prop_assert!(!trace::is_hooked(Domain::Mem));
    }
}
