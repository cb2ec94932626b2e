//! Per-thread heaps: local and remote frees, thread exit, adoption of
//! abandoned heaps, statistics read from other threads, and giving memory
//! back to the OS.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};

use pymalloc::geometry::{num_blocks, size_class, POOL_SIZE};
use pymalloc::{thread, Heap, PurgePolicy};

/// The threaded functions are process-wide: tests that count heaps or purge
/// take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn blocks_freed_by_another_thread_come_back_to_their_heap() {
    let _g = serial();
    let count = common::full_or_miri(50_000, 300);
    let (tx, rx) = mpsc::channel::<Vec<usize>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let consumer = std::thread::spawn(move || {
        let mut freed = 0;
        for batch in rx {
            for a in batch {
                unsafe { thread::free(a as *mut u8) };
                freed += 1;
            }
        }
        // This thread's last frees (up to 31 blocks) wait in its outbox
        // until it sends them or exits; the producer is told only then.
        thread::send_pending_frees();
        done_tx.send(()).unwrap();
        freed
    });
    // The producer allocates, hands blocks over, and keeps allocating: its
    // heap drains the queue when it next needs a pool.
    let producer = std::thread::spawn(move || {
        // The thread's heap may be adopted from an exited thread, with that
        // thread's blocks still live in it (other tests leave some): count
        // them, so that what follows is about this test's blocks only.
        unsafe { thread::free(thread::malloc(16)) };
        let inherited = thread::current_stats().blocks_in_use();
        let mut batch = Vec::new();
        for i in 0..count {
            let p = thread::malloc(16 + (i % 16) * 16);
            assert!(!p.is_null());
            unsafe { p.write_bytes(0xAB, 16) };
            batch.push(p as usize);
            if batch.len() == 100 {
                tx.send(std::mem::take(&mut batch)).unwrap();
            }
        }
        tx.send(batch).unwrap();
        drop(tx);
        // Wait until the consumer has freed everything, then make the heap drain.
        done_rx.recv().unwrap();
        thread::validate_current().unwrap();
        let before = thread::current_stats().blocks_in_use();
        thread::purge();
        let after = thread::current_stats();
        thread::validate_current().unwrap();
        (inherited, before, after.blocks_in_use(), after.arenas_current)
    });
    let (inherited, before, after, arenas) = producer.join().unwrap();
    assert_eq!(consumer.join().unwrap(), count);
    assert!(before <= count + inherited);
    assert_eq!(after, inherited, "after draining, no block of the producer is in use");
    if inherited == 0 {
        assert_eq!(arenas, 0, "and purge gave every arena back");
    }
}

#[test]
fn exited_threads_heaps_are_adopted_not_multiplied() {
    let _g = serial();
    // Warm up: make sure at least one heap exists and is abandoned.
    std::thread::spawn(|| assert!(!thread::malloc(8).is_null())).join().unwrap(); // leaves a live block behind
    let heaps = thread::heap_count();
    for _ in 0..common::full_or_miri(20, 3) {
        std::thread::spawn(|| {
            let p = thread::malloc(64);
            unsafe { thread::free(p) };
        })
        .join()
        .unwrap();
    }
    assert_eq!(thread::heap_count(), heaps, "each new thread adopted an abandoned heap");
}

/// Set by [`Late`]'s destructor once it has freed its blocks.
static LATE_RAN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A thread-local value dropped after its thread's heap: it holds a block of
/// that heap, and a huge block of the every-size front.
struct Late(std::cell::Cell<usize>, std::cell::Cell<usize>);

impl Drop for Late {
    fn drop(&mut self) {
        // The thread's heap is gone (its guard was registered after this
        // value, so it was dropped first): requests go to the shared locked
        // heap, and the thread's frees find no heap of their own.
        let shared = thread::malloc(40);
        assert!(!shared.is_null());
        unsafe {
            thread::free(shared);
            // A block of the heap this thread just abandoned: to its queue.
            thread::free(self.0.get() as *mut u8);
            // A huge block, which no heap owns: its slot's owner is
            // NOT_THREAD_TAG too, so the front does not take it for this
            // heapless thread's own (it did, with a null owner, and made a
            // reference to the null heap's cache).
            pymalloc::every_size::free_with::<pymalloc::LibcFallback>(self.1.get() as *mut u8);
        }
        LATE_RAN.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

thread_local! {
    static LATE: Late = const { Late(std::cell::Cell::new(0), std::cell::Cell::new(0)) };
}

/// A thread without a heap reads a null heap and compares it with the
/// owner of the block it frees, with no test of its own for null
/// (`NOT_THREAD_TAG`): the shared heap's blocks, which once had a null
/// owner, go back to the shared heap, a thread heap's to its queue, and a
/// huge block (whose slot kept a null owner until a review found it) to its
/// slots.
#[test]
fn a_thread_past_its_heap_frees_shared_and_owned_blocks() {
    let _g = serial();
    let shared_before = pymalloc::global_heap().stats().blocks_in_use();
    let heaps_before = thread::stats().blocks_in_use();
    std::thread::spawn(|| {
        // Registered before the thread's heap exists, so dropped after it.
        LATE.with(|l| l.0.set(0));
        let own = thread::malloc(24);
        assert!(!own.is_null());
        let huge = pymalloc::every_size::malloc_with::<pymalloc::LibcFallback>(4 << 20);
        assert!(!huge.is_null());
        LATE.with(|l| {
            l.0.set(own as usize);
            l.1.set(huge as usize);
        });
    })
    .join()
    .unwrap();
    assert!(LATE_RAN.load(std::sync::atomic::Ordering::SeqCst), "the late destructor ran");
    // The shared heap's block came back to it: its count is as before.
    assert_eq!(pymalloc::global_heap().stats().blocks_in_use(), shared_before);
    pymalloc::global_heap().lock().validate().unwrap();
    // The abandoned heap's block waited in its queue; draining frees it.
    thread::purge();
    assert!(thread::stats().blocks_in_use() <= heaps_before, "{} > {heaps_before}", thread::stats().blocks_in_use());
}

#[test]
fn blocks_outliving_their_thread_are_freed_and_drained() {
    let _g = serial();
    let count = common::full_or_miri(20_000, 200);
    // A thread allocates and exits; its heap is abandoned with live blocks.
    let blocks: Vec<usize> =
        std::thread::spawn(move || (0..count).map(|i| thread::malloc(32 + i % 200) as usize).collect()).join().unwrap();
    let live = thread::stats().blocks_in_use();
    assert!(live >= count, "{live}");
    // Another thread frees them: they go to the abandoned heap's queue.
    for &a in &blocks {
        unsafe { thread::free(a as *mut u8) };
    }
    // Draining abandoned heaps frees them and gives their arenas back.
    thread::purge();
    let s = thread::stats();
    assert!(s.blocks_in_use() + count <= live, "{} + {count} > {live}", s.blocks_in_use());
}

#[test]
fn statistics_can_be_read_while_other_threads_allocate() {
    let _g = serial();
    let workers = 3;
    let rounds = common::full_or_miri(2_000, 30);
    let barrier = Arc::new(Barrier::new(workers + 1));
    let handles: Vec<_> = (0..workers)
        .map(|t| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                let mut keep = Vec::new();
                for i in 0..rounds {
                    keep.push(thread::malloc(8 + (i * 7 + t * 13) % 500));
                    if i % 3 == 0 {
                        let p = keep.swap_remove(i % keep.len());
                        unsafe { thread::free(p) };
                    }
                }
                thread::validate_current().unwrap();
                for p in keep {
                    unsafe { thread::free(p) };
                }
            })
        })
        .collect();
    barrier.wait();
    for _ in 0..common::full_or_miri(50, 3) {
        let s = thread::stats();
        assert_eq!(s.accounted_bytes(), s.arena_bytes);
        let _ = thread::arenas();
    }
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn threaded_domain_matches_a_simple_model() {
    let _g = serial();
    // All on this thread's heap: its statistics are exact. The heap may be
    // an adopted one with blocks of earlier threads: count from here.
    unsafe { thread::free(thread::malloc(1)) };
    let sizes: Vec<usize> = (0..common::full_or_miri(3000, 100)).map(|i| (i * 37) % 700).collect();
    let mut live = Vec::new();
    let base = thread::current_stats();
    for (i, &sz) in sizes.iter().enumerate() {
        let p = thread::malloc(sz);
        unsafe { p.write_bytes(i as u8, sz) };
        live.push((p, sz, i as u8));
        if i % 4 == 3 {
            let (p, sz, fill) = live.swap_remove(i % live.len());
            assert!(unsafe { std::slice::from_raw_parts(p, sz) }.iter().all(|&b| b == fill));
            let q = unsafe { thread::realloc(p, sz / 2 + 1) };
            assert!(unsafe { std::slice::from_raw_parts(q, sz / 2 + 1) }.iter().take(sz).all(|&b| b == fill));
            unsafe { thread::free(q) };
        }
    }
    let s = thread::current_stats();
    let pooled = live.iter().filter(|(_, sz, _)| size_class(*sz).is_some()).count();
    assert_eq!(s.blocks_in_use() - base.blocks_in_use(), pooled);
    thread::validate_current().unwrap();
    for (p, sz, fill) in live {
        assert!(unsafe { std::slice::from_raw_parts(p, sz) }.iter().all(|&b| b == fill));
        unsafe { thread::free(p) };
    }
    assert_eq!(thread::current_stats().blocks_in_use(), base.blocks_in_use());
}

/// Resident pages in `a..a+len`.
#[cfg(not(miri))]
fn resident(a: usize, len: usize) -> usize {
    let mut v = vec![0u8; len / 4096];
    assert_eq!(unsafe { libc::mincore(a as *mut libc::c_void, len, v.as_mut_ptr()) }, 0);
    v.iter().filter(|&&b| b & 1 != 0).count()
}

/// Allocates `pools` pools' worth of 512-byte blocks and frees all but one
/// block every `keep_every` pools. Returns the survivors.
fn survivors(heap: &mut Heap, pools: usize, keep_every: usize) -> Vec<*mut u8> {
    // The largest class: the fewest blocks a pool (Miri takes milliseconds a
    // call).
    let per = num_blocks(size_class(512).unwrap());
    let blocks: Vec<_> = (0..pools * per).map(|_| heap.malloc(512)).collect();
    let mut keep = Vec::new();
    for (i, p) in blocks.into_iter().enumerate() {
        if i % (per * keep_every) == 0 {
            keep.push(p);
        } else {
            unsafe { heap.free(p) };
        }
    }
    keep
}

#[test]
fn the_threshold_policy_gives_empty_pools_back() {
    let mut heap = Heap::new();
    assert_eq!(heap.purge_policy(), PurgePolicy::DEFAULT);
    heap.set_purge_policy(PurgePolicy::THRESHOLD);
    let pools = common::full_or_miri(640, 128);
    let keep = survivors(&mut heap, pools, 8);
    heap.validate().unwrap();
    let s = heap.stats();
    // Roughly one pool in eight holds a block; of the empty ones, at most
    // the policy's allowance keeps its pages.
    assert!(s.decommitted_pools > 0, "{s:?}");
    let committed_empty = s.unused_pools - s.decommitted_pools - untouched(&heap);
    let in_use: usize = s.classes.iter().map(|c| c.pools).sum();
    assert!(committed_empty <= (in_use / 4).max(64), "{committed_empty} empty pools kept pages");
    #[cfg(not(miri))]
    {
        let arenas: Vec<_> = {
            let mut v = Vec::new();
            heap.visit_arenas(|a| v.push(a.address));
            v
        };
        let pages: usize = arenas.iter().map(|&a| resident(a, pymalloc::geometry::ARENA_SIZE)).sum();
        let full = pools * POOL_SIZE / 4096;
        assert!(pages * 4 <= full, "resident pages {pages} of {full} at the peak");
    }
    // Decommitted pools are reused correctly.
    let again: Vec<_> = (0..pools * common::full_or_miri(20, 4)).map(|i| heap.malloc(16 + i % 400)).collect();
    heap.validate().unwrap();
    for (i, &p) in again.iter().enumerate() {
        unsafe { p.write_bytes(i as u8, 16) };
    }
    for p in again.into_iter().chain(keep) {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
}

fn untouched(heap: &Heap) -> usize {
    let mut n = 0;
    heap.visit_arenas(|a| {
        n += a.pools[..a.ntotalpools].iter().filter(|p| **p == pymalloc::PoolState::Untouched).count();
    });
    n
}

#[test]
fn never_keeps_pages_and_immediate_gives_each_back() {
    let pools = common::full_or_miri(200, 64);
    let mut never = Heap::new();
    never.set_purge_policy(PurgePolicy::Never);
    let keep = survivors(&mut never, pools, 8);
    assert_eq!(never.stats().decommitted_pools, 0, "CPython's behaviour: no pages given back");
    for p in keep {
        unsafe { never.free(p) };
    }
    let mut now = Heap::new();
    now.set_purge_policy(PurgePolicy::Immediate);
    let keep = survivors(&mut now, pools, 8);
    let s = now.stats();
    let in_use: usize = s.classes.iter().map(|c| c.pools).sum();
    assert_eq!(s.unused_pools - s.decommitted_pools - untouched(&now), 0, "every empty pool gave its pages back");
    assert!(in_use >= keep.len());
    now.validate().unwrap();
    for p in keep {
        unsafe { now.free(p) };
    }
    now.validate().unwrap();
}

#[test]
fn purge_gives_back_every_free_pool_and_the_spare() {
    let mut heap = Heap::new();
    heap.set_purge_policy(PurgePolicy::Never);
    let blocks: Vec<_> = (0..common::full_or_miri(20_000, 2_000)).map(|i| heap.malloc(1 + i % 512)).collect();
    let keep: Vec<_> = blocks.iter().step_by(500).copied().collect();
    for (i, p) in blocks.into_iter().enumerate() {
        if i % 500 != 0 {
            unsafe { heap.free(p) };
        }
    }
    let before = heap.stats();
    let given = heap.purge();
    let after = heap.stats();
    assert!(given >= (before.unused_pools - untouched(&heap)) * POOL_SIZE / 2, "{given}");
    assert_eq!(after.unused_pools - after.decommitted_pools, untouched(&heap));
    heap.validate().unwrap();
    for p in keep {
        unsafe { heap.free(p) };
    }
    assert!(heap.purge() > 0);
    let s = heap.stats();
    assert_eq!(s.arenas_current, 0, "the spare arena goes too");
    heap.validate().unwrap();
}

/// Blocks a thread frees for another thread's heap wait in its outbox and
/// reach the owner's queue 32 at a time, when a block of another owner
/// comes, when the thread sends them, or when it exits; never otherwise.
#[test]
fn remote_frees_reach_their_owner_in_batches_and_at_a_send_or_exit() {
    let _g = serial();
    // The owner's blocks in use once its queue is drained (purge drains it).
    fn owned_after_drain() -> usize {
        thread::purge();
        thread::validate_current().unwrap();
        thread::current_stats().blocks_in_use()
    }
    let (to_owner, owner_rx) = mpsc::channel::<usize>();
    let (to_freer, freer_rx) = mpsc::channel::<Vec<usize>>();
    let (freer_done, done_rx) = mpsc::channel::<()>();
    let other = thread::malloc(48) as usize; // a block of another heap (this thread's)
    assert!(other != 0);
    let owner = std::thread::spawn(move || {
        unsafe { thread::free(thread::malloc(16)) };
        let inherited = thread::current_stats().blocks_in_use();
        let blocks: Vec<usize> = (0..100).map(|_| thread::malloc(16) as usize).collect();
        assert!(blocks.iter().all(|&b| b != 0));
        let mut seen = Vec::new();
        to_freer.send(blocks).unwrap();
        // Each step of the freer, then what this heap holds after draining.
        for _ in 0..4 {
            owner_rx.recv().unwrap();
            seen.push(owned_after_drain() - inherited);
            to_freer.send(Vec::new()).unwrap();
        }
        done_rx.recv().unwrap();
        seen.push(owned_after_drain() - inherited);
        seen
    });
    let freer = std::thread::spawn(move || {
        let blocks = freer_rx.recv().unwrap();
        let step = |to_owner: &mpsc::Sender<usize>| {
            to_owner.send(0).unwrap();
            freer_rx.recv().unwrap();
        };
        // 40 frees: one batch of 32 sent, 8 waiting.
        for &b in &blocks[..40] {
            unsafe { thread::free(b as *mut u8) };
        }
        thread::validate_current().unwrap();
        step(&to_owner);
        // A block of another owner sends the 8 (and waits itself).
        unsafe { thread::free(other as *mut u8) };
        step(&to_owner);
        // 10 more wait until the thread sends them.
        for &b in &blocks[40..50] {
            unsafe { thread::free(b as *mut u8) };
        }
        step(&to_owner);
        thread::send_pending_frees();
        step(&to_owner);
        // The last 50 wait until the thread exits.
        for &b in &blocks[50..] {
            unsafe { thread::free(b as *mut u8) };
        }
        freer_done
    });
    let done = freer.join().unwrap();
    done.send(()).unwrap();
    let seen = owner.join().unwrap();
    assert_eq!(seen, vec![100 - 32, 100 - 40, 100 - 40, 100 - 50, 0]);
}

/// A thread that only frees takes a heap to batch its frees, but not the
/// heap of an exited thread that still holds blocks: that heap stays
/// abandoned, so frees into it are drained by `purge` (a review's case:
/// 20,000 blocks stayed in use while the free-only thread lived).
#[test]
fn a_free_only_thread_leaves_an_abandoned_heap_with_blocks_to_the_drain() {
    let _g = serial();
    let count = common::full_or_miri(20_000, 300);
    let mine = thread::malloc(16) as usize;
    assert!(mine != 0);
    let theirs: Vec<usize> =
        std::thread::spawn(move || (0..count).map(|_| thread::malloc(64) as usize).collect()).join().unwrap();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let idle = std::thread::spawn(move || {
        // Its first allocator call: a free of another heap's block.
        unsafe { thread::free(mine as *mut u8) };
        thread::send_pending_frees();
        ready_tx.send(()).unwrap();
        go_rx.recv().unwrap();
    });
    ready_rx.recv().unwrap();
    let before = thread::stats().blocks_in_use();
    for &p in &theirs {
        unsafe { thread::free(p as *mut u8) };
    }
    thread::purge();
    let after = thread::stats().blocks_in_use();
    go_tx.send(()).unwrap();
    idle.join().unwrap();
    assert!(after + count <= before, "{after} + {count} > {before}: the freed blocks were not drained");
}

/// Blocks handed from a pthread key's destructor: the key outlives the
/// thread's Rust thread-locals, so its destructor runs after the heap's
/// guard would have.
static KEY_BLOCKS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

extern "C" fn key_destructor_allocates(v: *mut libc::c_void) {
    // The thread's first allocator call, after its thread-local
    // destructors: a heap taken now is given up by the exit key.
    KEY_BLOCKS.lock().unwrap().push(thread::malloc(24) as usize);
    unsafe { thread::free(v.cast()) };
}

extern "C" fn key_destructor_frees(v: *mut libc::c_void) {
    // The thread's first allocator call: a free of another heap's block.
    unsafe { thread::free(v.cast()) };
}

/// Threads whose first allocator call comes from a pthread key destructor
/// (after the thread-local destructors, where the heap's guard can no
/// longer be registered to run) give their heap up all the same: the next
/// such thread takes it again instead of making one more (each made one,
/// with an arena, before the exit key).
#[test]
fn heaps_taken_in_pthread_key_destructors_are_given_up() {
    let _g = serial();
    for dtor in [key_destructor_allocates as extern "C" fn(*mut libc::c_void), key_destructor_frees] {
        let mut key: libc::pthread_key_t = 0;
        assert_eq!(unsafe { libc::pthread_key_create(&mut key, Some(dtor)) }, 0);
        // Warm up: one such thread leaves its heap behind.
        let run = |key: libc::pthread_key_t| {
            let b = thread::malloc(64) as usize;
            assert!(b != 0);
            std::thread::spawn(move || {
                assert_eq!(unsafe { libc::pthread_setspecific(key, b as *const libc::c_void) }, 0);
            })
            .join()
            .unwrap();
        };
        run(key);
        let heaps = thread::heap_count();
        for _ in 0..common::full_or_miri(16, 3) {
            run(key);
        }
        assert_eq!(thread::heap_count(), heaps, "each thread took the heap the one before gave up");
        unsafe { libc::pthread_key_delete(key) };
    }
    for b in KEY_BLOCKS.lock().unwrap().drain(..) {
        unsafe { thread::free(b as *mut u8) };
    }
    thread::purge();
}

/// A thread whose first call frees another heap's block takes a heap only
/// for its outbox; when it then allocates it trades that heap for one of its
/// own, and the empty one goes back for the next such thread: threads that
/// free first and then keep a block do not make a heap each (a review's
/// case: 50 threads made 50 heaps and 52 arenas).
#[test]
fn threads_that_free_first_then_allocate_do_not_multiply_heaps() {
    let _g = serial();
    let run = || {
        let b = thread::malloc(40) as usize;
        assert!(b != 0);
        std::thread::spawn(move || {
            unsafe { thread::free(b as *mut u8) };
            let kept = thread::malloc(64) as usize;
            assert!(kept != 0);
            thread::validate_current().unwrap();
            kept
        })
        .join()
        .unwrap()
    };
    let mut kept = vec![run(), run()];
    let heaps = thread::heap_count();
    for _ in 0..common::full_or_miri(30, 4) {
        kept.push(run());
    }
    assert_eq!(thread::heap_count(), heaps, "each thread took heaps the ones before gave up");
    for b in kept {
        unsafe { thread::free(b as *mut u8) };
    }
    thread::purge();
}
