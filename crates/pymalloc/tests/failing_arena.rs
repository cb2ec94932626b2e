//! Out of memory is an answer: with an arena allocator that fails after N
//! arenas (and a RAW domain that can fail too), every call returns NULL
//! cleanly, the heap stays consistent, allocation works again when memory
//! comes back, and nothing leaks.

mod common;

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

use pymalloc::geometry::{num_blocks, size_class, ALIGNMENT, NB_SMALL_SIZE_CLASSES, SMALL_REQUEST_THRESHOLD};
use pymalloc::{owns, ArenaAllocator, Domain, Heap, MemAllocatorEx};

static ARENA_LIMIT: AtomicUsize = AtomicUsize::new(0);
static ARENAS_LIVE: AtomicUsize = AtomicUsize::new(0);
static ARENAS_MADE: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn limited_alloc(_: *mut c_void, size: usize) -> *mut c_void {
    if ARENAS_LIVE.load(Ordering::SeqCst) >= ARENA_LIMIT.load(Ordering::SeqCst) {
        return std::ptr::null_mut();
    }
    let os = ArenaAllocator::os();
    let p = (os.alloc)(os.ctx, size);
    if !p.is_null() {
        ARENAS_LIVE.fetch_add(1, Ordering::SeqCst);
        ARENAS_MADE.fetch_add(1, Ordering::SeqCst);
    }
    p
}

unsafe extern "C" fn limited_free(_: *mut c_void, p: *mut c_void, size: usize) {
    ARENAS_LIVE.fetch_sub(1, Ordering::SeqCst);
    let os = ArenaAllocator::os();
    (os.free)(os.ctx, p, size)
}

static RAW_FAILS: AtomicBool = AtomicBool::new(false);
static RAW_LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe extern "C" fn raw_malloc(_: *mut c_void, n: usize) -> *mut c_void {
    if RAW_FAILS.load(Ordering::SeqCst) {
        return std::ptr::null_mut();
    }
    RAW_LIVE.fetch_add(1, Ordering::SeqCst);
    pymalloc::raw::malloc(n).cast()
}
unsafe extern "C" fn raw_calloc(_: *mut c_void, n: usize, s: usize) -> *mut c_void {
    if RAW_FAILS.load(Ordering::SeqCst) {
        return std::ptr::null_mut();
    }
    RAW_LIVE.fetch_add(1, Ordering::SeqCst);
    pymalloc::raw::calloc(n, s).cast()
}
unsafe extern "C" fn raw_realloc(_: *mut c_void, p: *mut c_void, n: usize) -> *mut c_void {
    if RAW_FAILS.load(Ordering::SeqCst) {
        return std::ptr::null_mut();
    }
    if p.is_null() {
        RAW_LIVE.fetch_add(1, Ordering::SeqCst);
    }
    pymalloc::raw::realloc(p.cast(), n).cast()
}
unsafe extern "C" fn raw_free(_: *mut c_void, p: *mut c_void) {
    if !p.is_null() {
        RAW_LIVE.fetch_sub(1, Ordering::SeqCst);
    }
    pymalloc::raw::free(p.cast())
}

#[test]
fn out_of_arenas_is_null_consistency_and_recovery() {
    let _g = common::exclusive();
    let old_raw = unsafe {
        Domain::Raw.set_allocator(MemAllocatorEx {
            ctx: std::ptr::null_mut(),
            malloc: raw_malloc,
            calloc: raw_calloc,
            realloc: raw_realloc,
            free: raw_free,
        })
    };
    // (One arena under Miri, which takes milliseconds a call.)
    let limit = common::full_or_miri(2, 1);
    ARENA_LIMIT.store(limit, Ordering::SeqCst);
    let mut heap = Heap::new();
    // CPython's rule: free arenas go back at once (but a spare).
    heap.set_purge_policy(pymalloc::PurgePolicy::Never);
    let limited = ArenaAllocator { ctx: std::ptr::null_mut(), alloc: limited_alloc, free: limited_free };
    unsafe { heap.set_arena_allocator(limited) };
    assert!(heap.arena_allocator().same_as(&limited));

    // Fill the arenas with 512-byte blocks; the raw allocator fails too.
    RAW_FAILS.store(true, Ordering::SeqCst);
    let mut blocks = Vec::new();
    loop {
        let p = heap.malloc(SMALL_REQUEST_THRESHOLD);
        if p.is_null() {
            break;
        }
        blocks.push(p);
    }
    let s = heap.stats();
    assert_eq!(s.arenas_current, limit);
    assert_eq!(s.unused_pools, 0);
    assert_eq!(s.blocks_in_use(), blocks.len());
    heap.validate().unwrap();

    // Every call that needs memory now fails cleanly.
    // (Under Miri, each class's first and last size.)
    for n in (1..=SMALL_REQUEST_THRESHOLD).filter(|n| !cfg!(miri) || n % ALIGNMENT <= 1) {
        assert!(heap.malloc(n).is_null(), "malloc({n})");
    }
    assert!(heap.malloc(0).is_null());
    assert!(heap.malloc(100_000).is_null());
    assert!(heap.calloc(4, 4).is_null());
    assert!(heap.calloc(0, 0).is_null());
    let victim = blocks[0];
    unsafe { victim.write_bytes(0x3C, 512) };
    assert!(unsafe { heap.realloc(victim, 16) }.is_null(), "moving to another class needs a pool");
    assert!(unsafe { heap.realloc(victim, 4096) }.is_null(), "moving to raw needs raw memory");
    assert!(unsafe { std::slice::from_raw_parts(victim, 512) }.iter().all(|&b| b == 0x3C));
    assert_eq!(unsafe { heap.realloc(victim, 500) }, victim, "in place needs nothing");
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!(s.blocks_in_use(), blocks.len(), "failures changed nothing");
    assert_eq!(s.raw_allocated_blocks, 0);
    assert_eq!(ARENAS_LIVE.load(Ordering::SeqCst), limit);

    // Freeing one pool's worth makes room for any class again.
    let per_pool = num_blocks(size_class(SMALL_REQUEST_THRESHOLD).unwrap());
    let base = |p: *mut u8| p as usize & !pymalloc::geometry::POOL_SIZE_MASK;
    let target = base(blocks[0]);
    let (pool, rest): (Vec<_>, Vec<_>) = blocks.into_iter().partition(|&p| base(p) == target);
    assert_eq!(pool.len(), per_pool);
    blocks = rest;
    for p in pool {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
    let small = heap.malloc(16);
    assert!(!small.is_null() && base(small) == target);
    blocks.push(small);

    // Raw memory back: small requests without a pool fall back to it, as
    // CPython's _PyObject_Malloc does.
    RAW_FAILS.store(false, Ordering::SeqCst);
    let fallback = heap.malloc(48);
    assert!(!fallback.is_null() && !owns(fallback));
    assert_eq!(heap.stats().raw_allocated_blocks, 1);
    blocks.push(fallback);

    // Arenas back: a new arena is made and small requests use pools again.
    ARENA_LIMIT.store(usize::MAX, Ordering::SeqCst);
    for _ in 0..NB_SMALL_SIZE_CLASSES * 4 {
        let p = heap.malloc(48);
        assert!(owns(p));
        blocks.push(p);
    }
    assert_eq!(heap.stats().arenas_current, limit + 1);
    heap.validate().unwrap();

    // Nothing leaks: all blocks freed, arenas back to the allocator.
    for p in blocks {
        unsafe { heap.free(p) };
    }
    heap.validate().unwrap();
    let s = heap.stats();
    assert_eq!((s.blocks_in_use(), s.raw_allocated_blocks, s.arenas_current), (0, 0, 1));
    assert_eq!(RAW_LIVE.load(Ordering::SeqCst), 0, "raw blocks leaked");
    drop(heap);
    assert_eq!(ARENAS_LIVE.load(Ordering::SeqCst), 0, "arenas leaked");
    assert_eq!(ARENAS_MADE.load(Ordering::SeqCst), limit + 1);
    unsafe { Domain::Raw.set_allocator(old_raw) };
}

#[test]
fn arena_failure_through_the_domains_falls_back_then_fails() {
    // Through PyObject_Malloc with no arenas at all: the RAW domain serves
    // small requests; when it fails too, NULL.
    let _g = common::exclusive();
    static HEAP: pymalloc::LockedHeap = pymalloc::LockedHeap::new();
    unsafe {
        HEAP.lock().set_arena_allocator(ArenaAllocator { ctx: std::ptr::null_mut(), alloc: never, free: limited_free });
        Domain::Obj.set_allocator(MemAllocatorEx::pymalloc(&HEAP));
    }
    unsafe extern "C" fn never(_: *mut c_void, _: usize) -> *mut c_void {
        std::ptr::null_mut()
    }
    let p = Domain::Obj.malloc(32);
    assert!(!p.is_null() && !owns(p));
    assert_eq!(HEAP.stats().raw_allocated_blocks, 1);
    unsafe { Domain::Obj.free(p) };
    assert_eq!(HEAP.stats().raw_allocated_blocks, 0);
    assert_eq!(HEAP.stats().arenas_allocated_total, 0);
    HEAP.lock().validate().unwrap();
}
