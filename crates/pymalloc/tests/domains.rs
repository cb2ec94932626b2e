//! The design brief's semantics, in every domain and every configuration;
//! hooks over the previous allocator; configuration names; typed helpers and
//! the safe `Block`.

mod common;

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use pymalloc::config::{self, AllocatorName};
use pymalloc::{Block, Domain, MemAllocatorEx};

/// Runs `f` for every configuration and every domain.
fn each(mut f: impl FnMut(AllocatorName, Domain)) {
    let _g = common::exclusive();
    for cfg in common::CONFIGS {
        unsafe { config::setup(cfg).unwrap() };
        for d in Domain::ALL {
            f(cfg, d);
        }
    }
}

#[test]
fn malloc_zero_is_distinct_and_non_null() {
    each(|cfg, d| {
        let a = d.malloc(0);
        let b = d.malloc(0);
        assert!(!a.is_null() && !b.is_null() && a != b, "{cfg} {d:?}");
        unsafe {
            d.free(a);
            d.free(b);
        }
    });
}

#[test]
fn calloc_with_a_zero_is_calloc_one_one_and_overflow_fails() {
    each(|cfg, d| {
        for (n, s) in [(0, 8), (8, 0), (0, 0)] {
            let p = d.calloc(n, s);
            assert!(!p.is_null(), "{cfg} {d:?} calloc({n}, {s})");
            unsafe { d.free(p) };
        }
        assert!(d.calloc(usize::MAX, 2).is_null(), "{cfg} {d:?}");
        assert!(d.calloc(2, usize::MAX).is_null(), "{cfg} {d:?}");
        assert!(d.calloc(1 << 32, 1 << 31).is_null(), "{cfg} {d:?}");
        let p = d.calloc(13, 7);
        assert!(unsafe { std::slice::from_raw_parts(p, 91) }.iter().all(|&b| b == 0), "{cfg} {d:?}");
        unsafe { d.free(p) };
    });
}

#[test]
fn realloc_rules() {
    each(|cfg, d| unsafe {
        // realloc(NULL, n) is malloc(n).
        let p = d.realloc(std::ptr::null_mut(), 24);
        assert!(!p.is_null(), "{cfg} {d:?}");
        p.write_bytes(0x42, 24);
        // realloc(p, 0) resizes, returns non-NULL and does not free.
        let q = d.realloc(p, 0);
        assert!(!q.is_null(), "{cfg} {d:?}");
        let r = d.realloc(q, 100);
        assert!(!r.is_null());
        // A failed realloc returns NULL and leaves the block as it was.
        r.write_bytes(0x17, 100);
        assert!(d.realloc(r, usize::MAX).is_null(), "{cfg} {d:?}");
        assert!(d.realloc(r, isize::MAX as usize + 1).is_null(), "{cfg} {d:?}");
        if !cfg!(miri) {
            // Reaches the C library, which says no; Miri cannot model that.
            assert!(d.realloc(r, isize::MAX as usize - 64).is_null(), "{cfg} {d:?}");
        }
        assert!(std::slice::from_raw_parts(r, 100).iter().all(|&b| b == 0x17), "{cfg} {d:?}");
        // Contents survive a chain of growing and shrinking.
        let mut p = r;
        for (i, n) in [100usize, 512, 513, 4000, 300, 17, 1, 70_000, 64].windows(2).map(|w| (w[0], w[1])) {
            p = d.realloc(p, n);
            assert!(!p.is_null());
            let keep = i.min(n);
            assert!(std::slice::from_raw_parts(p, keep).iter().all(|&b| b == 0x17), "{cfg} {d:?} {i} -> {n}");
            p.write_bytes(0x17, n);
        }
        d.free(p);
        // free(NULL) does nothing.
        d.free(std::ptr::null_mut());
    });
}

#[test]
fn sizes_above_isize_max_fail_cleanly() {
    each(|cfg, d| {
        for n in [isize::MAX as usize + 1, usize::MAX, usize::MAX - 15] {
            assert!(d.malloc(n).is_null(), "{cfg} {d:?} malloc({n})");
            assert!(d.calloc(1, n).is_null(), "{cfg} {d:?} calloc(1, {n})");
            assert!(d.calloc(n, 1).is_null(), "{cfg} {d:?}");
        }
        // Just under the limit: refused by the OS, still NULL, no panic.
        // (Miri reports such a request as an error instead of NULL.)
        if !cfg!(miri) {
            assert!(d.malloc(isize::MAX as usize).is_null(), "{cfg} {d:?}");
        }
    });
}

#[test]
fn every_block_is_16_byte_aligned() {
    each(|cfg, d| {
        // Every size up to past the small-request threshold (under Miri,
        // every class boundary and its neighbours: interpreting 600 sizes
        // in 18 domain configurations takes minutes).
        let sizes: Vec<usize> = common::full_or_miri(
            (0..=600).chain([1000, 4096, 100_000, 1 << 20]).collect(),
            (0..=600).filter(|n| matches!(n % 16, 0 | 1 | 15)).chain([1000, 4096, 100_000]).collect(),
        );
        let ptrs: Vec<_> = sizes.into_iter().map(|n| (n, d.malloc(n))).collect();
        for &(n, p) in &ptrs {
            assert!(!p.is_null());
            assert_eq!(p as usize % pymalloc::geometry::ALIGNMENT, 0, "{cfg} {d:?} size {n}");
        }
        for (_, p) in ptrs {
            unsafe { d.free(p) };
        }
    });
}

#[test]
fn typed_helpers_check_for_overflow() {
    each(|cfg, d| unsafe {
        let p: *mut u64 = d.new_array(100);
        assert!(!p.is_null(), "{cfg} {d:?}");
        for i in 0..100 {
            p.add(i).write(i as u64 * 3);
        }
        let p = d.resize_array(p, 1000);
        assert!(!p.is_null());
        assert!((0..100).all(|i| p.add(i).read() == i as u64 * 3), "{cfg} {d:?}");
        // n * size_of::<u64>() overflows: NULL, and the block is untouched.
        assert!(d.resize_array(p, usize::MAX / 4).is_null(), "{cfg} {d:?}");
        assert!(d.resize_array(p, isize::MAX as usize / 8 + 1).is_null(), "{cfg} {d:?}");
        assert!((0..100).all(|i| p.add(i).read() == i as u64 * 3));
        d.del(p);
        assert!(d.new_array::<u64>(usize::MAX / 8 + 1).is_null(), "{cfg} {d:?}");
        assert!(d.new_array::<[u8; 3]>(isize::MAX as usize / 3 + 1).is_null(), "{cfg} {d:?}");
        // Zero-sized types and zero counts still give a pointer.
        let z: *mut () = d.new_array(usize::MAX);
        assert!(!z.is_null());
        d.del(z);
        let z: *mut u32 = d.new_array(0);
        assert!(!z.is_null());
        d.del(z);
    });
}

#[test]
fn the_safe_block_api() {
    each(|cfg, d| {
        let mut b = Block::from_slice(d, b"hello").unwrap();
        assert_eq!(b.domain(), d);
        b.resize(11).unwrap();
        b[5..].copy_from_slice(b" world");
        assert_eq!(&b[..], b"hello world", "{cfg}");
        assert_eq!(b.resize(usize::MAX), Err(pymalloc::AllocError));
        assert_eq!(&b[..], b"hello world", "a failed resize changes nothing");
        b.resize(2).unwrap();
        assert_eq!(&b[..], b"he");
        b.resize(4).unwrap();
        assert_eq!(&b[..], b"he\0\0", "growth is zeroed");
        assert!(Block::new(d, isize::MAX as usize + 1).is_err());
        let z = Block::new(d, 0).unwrap();
        assert!(z.is_empty());
    });
}

/// A hook that counts calls and forwards to the allocator it replaced.
struct Counting {
    prev: std::cell::UnsafeCell<MemAllocatorEx>,
    calls: [AtomicUsize; 4],
}
unsafe impl Sync for Counting {}

unsafe extern "C" fn c_malloc(ctx: *mut c_void, n: usize) -> *mut c_void {
    let c = &*(ctx as *const Counting);
    c.calls[0].fetch_add(1, Ordering::Relaxed);
    let p = *c.prev.get();
    (p.malloc)(p.ctx, n)
}
unsafe extern "C" fn c_calloc(ctx: *mut c_void, n: usize, s: usize) -> *mut c_void {
    let c = &*(ctx as *const Counting);
    c.calls[1].fetch_add(1, Ordering::Relaxed);
    let p = *c.prev.get();
    (p.calloc)(p.ctx, n, s)
}
unsafe extern "C" fn c_realloc(ctx: *mut c_void, q: *mut c_void, n: usize) -> *mut c_void {
    let c = &*(ctx as *const Counting);
    c.calls[2].fetch_add(1, Ordering::Relaxed);
    let p = *c.prev.get();
    (p.realloc)(p.ctx, q, n)
}
unsafe extern "C" fn c_free(ctx: *mut c_void, q: *mut c_void) {
    let c = &*(ctx as *const Counting);
    c.calls[3].fetch_add(1, Ordering::Relaxed);
    let p = *c.prev.get();
    (p.free)(p.ctx, q)
}

#[test]
fn a_hook_over_the_previous_allocator_counts_and_forwards() {
    each(|cfg, d| unsafe {
        let owned = Box::new(Counting { prev: std::cell::UnsafeCell::new(d.allocator()), calls: Default::default() });
        let hook: &Counting = &owned;
        // A block made before the hook is freed through it.
        let before = d.malloc(10);
        let old = d.set_allocator(MemAllocatorEx {
            ctx: hook as *const Counting as *mut c_void,
            malloc: c_malloc,
            calloc: c_calloc,
            realloc: c_realloc,
            free: c_free,
        });
        assert!(old.same_as(&*hook.prev.get()));
        assert_eq!(config::current(), None, "a hook is not a named configuration");
        let p = d.malloc(100);
        let q = d.calloc(3, 3);
        let p = d.realloc(p, 1000);
        d.free(p);
        d.free(q);
        d.free(before);
        // The domain's own checks run before the hook: it never sees these.
        assert!(d.malloc(usize::MAX).is_null());
        assert!(d.calloc(usize::MAX, 2).is_null());
        let counts: Vec<_> = hook.calls.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts, [1, 1, 1, 3], "{cfg} {d:?}");
        let removed = d.set_allocator(old);
        assert_eq!(removed.ctx, hook as *const Counting as *mut c_void);
        assert_eq!(config::current(), Some(cfg));
        drop(owned); // no longer installed
    });
}

#[test]
fn configuration_names() {
    for name in AllocatorName::ALL {
        assert_eq!(name.as_str().parse::<AllocatorName>(), Ok(name));
    }
    let err = "pymalloc-debug".parse::<AllocatorName>().unwrap_err().to_string();
    for name in AllocatorName::ALL {
        assert!(err.contains(name.as_str()), "{err}");
    }
    assert!(err.contains("'pymalloc-debug'"), "{err}");
    assert_eq!("".parse::<AllocatorName>(), Ok(AllocatorName::Default));
    assert!("PYMALLOC".parse::<AllocatorName>().is_err(), "names are case-sensitive, as in CPython");
}

#[test]
fn setup_installs_what_current_reports() {
    let _g = common::exclusive();
    let expect = [
        (AllocatorName::Default, AllocatorName::Pymalloc),
        (AllocatorName::Pymalloc, AllocatorName::Pymalloc),
        (AllocatorName::Malloc, AllocatorName::Malloc),
        (AllocatorName::Debug, AllocatorName::PymallocDebug),
        (AllocatorName::PymallocDebug, AllocatorName::PymallocDebug),
        (AllocatorName::PymallocAll, AllocatorName::PymallocAll),
        (AllocatorName::PymallocAllDebug, AllocatorName::PymallocAllDebug),
        (AllocatorName::MallocDebug, AllocatorName::MallocDebug),
    ];
    for (set, got) in expect {
        unsafe { config::setup(set).unwrap() };
        assert_eq!(config::current(), Some(got), "after setting {set}");
        for d in Domain::ALL {
            assert_eq!(pymalloc::debug::is_enabled(d), set.is_debug());
        }
        let p = Domain::Obj.malloc(10);
        // Debug blocks wrap blocks of the allocator underneath.
        let pools = matches!(got.base(), AllocatorName::Pymalloc | AllocatorName::PymallocAll);
        assert_eq!(pymalloc::owns(p), pools, "{set}");
        unsafe { Domain::Obj.free(p) };
    }
    let err = unsafe { config::setup_by_name("tcmalloc") }.unwrap_err();
    assert!(err
        .to_string()
        .contains("valid names are: default, debug, pymalloc, pymalloc_debug, malloc, malloc_debug"));
    assert_eq!(config::current(), Some(AllocatorName::MallocDebug), "a bad name changes nothing");
}

#[test]
fn the_default_configuration_is_pymalloc() {
    let _g = common::exclusive();
    assert_eq!(config::current(), Some(AllocatorName::Pymalloc));
    let p = Domain::Mem.malloc(64);
    let q = Domain::Obj.malloc(64);
    let r = Domain::Raw.malloc(64);
    assert!(pymalloc::owns(p) && pymalloc::owns(q) && !pymalloc::owns(r));
    unsafe {
        Domain::Mem.free(p);
        Domain::Obj.free(q);
        Domain::Raw.free(r);
    }
}

/// Installs a [`Counting`] hook over the RAW domain's allocator; the hook
/// (to be given back with `Box::from_raw` once uninstalled) and the
/// allocator it replaced.
unsafe fn count_raw() -> (*mut Counting, MemAllocatorEx) {
    let hook = Box::into_raw(Box::new(Counting {
        prev: std::cell::UnsafeCell::new(Domain::Raw.allocator()),
        calls: Default::default(),
    }));
    let old = Domain::Raw.set_allocator(MemAllocatorEx {
        ctx: hook.cast(),
        malloc: c_malloc,
        calloc: c_calloc,
        realloc: c_realloc,
        free: c_free,
    });
    (hook, old)
}

#[test]
fn pymalloc_all_serves_mem_and_obj_of_every_size_through_one_front() {
    use pymalloc::config::PymallocMode;
    use pymalloc::every_size;
    let _g = common::exclusive();
    unsafe { config::setup(AllocatorName::PymallocAll).unwrap() };
    assert_eq!(config::current(), Some(AllocatorName::PymallocAll));
    assert_eq!(config::active_pymalloc_mode(), Some(PymallocMode::Threaded));
    for d in [Domain::Mem, Domain::Obj] {
        assert!(d.allocator().is(&MemAllocatorEx::pymalloc_every_size_front()), "{d:?}");
    }
    unsafe {
        let (owned, old) = count_raw();
        let hook = &*owned;
        // Blocks above 512 bytes come from the thread heaps' spans without
        // the RAW domain's slot (it would count them); small ones from the
        // pools, as before.
        let small = Domain::Obj.malloc(100);
        let p = Domain::Obj.malloc(1000);
        let q = Domain::Mem.calloc(3, 700);
        let p = Domain::Obj.realloc(p, 5000);
        assert!(pymalloc::owns(small) && !small.is_null() && !p.is_null() && !q.is_null());
        assert!(std::slice::from_raw_parts(q.cast::<u8>(), 2100).iter().all(|&b| b == 0));
        let counts = |h: &Counting| h.calls.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>();
        if pymalloc::regions_reserved() {
            assert!(every_size::owns(p.cast()) && every_size::owns(q.cast()));
            assert_eq!(counts(hook), [0, 0, 0, 0]);
        } else {
            // No segment region: the spans serve nothing, RAW serves it all.
            assert!(!every_size::owns(p.cast()));
            assert_eq!(counts(hook)[..3], [1, 1, 1]);
        }
        // A block above 512 bytes counts as one of pymalloc's allocated
        // blocks (`sys.getallocatedblocks()`), from the spans or, without
        // them, from RAW, as when it passed through RAW's slot.
        let allocated = config::pymalloc_stats().allocated_blocks();
        let r = Domain::Obj.malloc(3000);
        assert_eq!(config::pymalloc_stats().allocated_blocks(), allocated + 1);
        Domain::Obj.free(r);
        assert_eq!(config::pymalloc_stats().allocated_blocks(), allocated);
        let before = counts(hook);
        Domain::Obj.free(p);
        Domain::Mem.free(q);
        Domain::Obj.free(small);
        let freed_by_raw = counts(hook)[3] - before[3];
        assert_eq!(freed_by_raw, if pymalloc::regions_reserved() { 0 } else { 2 });
        // What the thread heaps do not serve goes to RAW, as pymalloc
        // always sends it: here a request of 0 bytes.
        let allocated = config::pymalloc_stats().allocated_blocks();
        let z = Domain::Obj.malloc(0);
        assert!(!z.is_null());
        assert_eq!(counts(hook)[0], before[0] + 1, "0 bytes went to RAW");
        assert_eq!(config::pymalloc_stats().allocated_blocks(), allocated + 1, "and count as pymalloc's");
        Domain::Obj.free(z);
        assert_eq!(counts(hook)[3], before[3] + freed_by_raw + 1, "and came back to it");
        assert_eq!(config::pymalloc_stats().allocated_blocks(), allocated);
        Domain::Raw.set_allocator(old);
        drop(Box::from_raw(owned));
    }
    // The debug hooks over it: still pymalloc_all on the thread heaps.
    unsafe { config::setup(AllocatorName::PymallocAllDebug).unwrap() };
    assert_eq!(config::current(), Some(AllocatorName::PymallocAllDebug));
    assert_eq!(config::active_pymalloc_mode(), Some(PymallocMode::Threaded));
    // The locked mode's pools are not the thread heaps': there MEM and OBJ
    // keep pymalloc's allocator, which sends larger blocks to RAW.
    /// Puts the threaded mode back however the test ends.
    struct Threaded;
    impl Drop for Threaded {
        fn drop(&mut self) {
            // SAFETY: the test holds the domains (`common::exclusive`).
            unsafe { config::set_pymalloc_mode(PymallocMode::Threaded) };
        }
    }
    let _mode = Threaded;
    unsafe {
        config::set_pymalloc_mode(PymallocMode::Locked);
        config::setup(AllocatorName::PymallocAll).unwrap();
        assert_eq!(config::current(), Some(AllocatorName::PymallocAll));
        assert!(Domain::Obj.allocator().is(&config::pymalloc_allocator(PymallocMode::Locked)));
        let (owned, old) = count_raw();
        let p = Domain::Obj.malloc(1000);
        assert_eq!((*owned).calls[0].load(Ordering::Relaxed), 1);
        Domain::Obj.free(p);
        Domain::Raw.set_allocator(old);
        drop(Box::from_raw(owned));
    }
}
