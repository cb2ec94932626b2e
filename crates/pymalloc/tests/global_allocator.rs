//! pymalloc as this test binary's `#[global_allocator]`: every allocation of
//! the test harness and of the workload below goes through it, from several
//! threads, including blocks freed by a thread other than the one that made
//! them, and layouts of every alignment.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;

use pymalloc::{global_heap, owns, PyMalloc};

#[global_allocator]
static ALLOC: PyMalloc = PyMalloc;

#[test]
fn small_values_live_in_pools() {
    let s = String::from("pymalloc");
    assert!(owns(s.as_ptr()));
    let big = vec![0u8; 100_000];
    assert!(!owns(big.as_ptr()));
    let b = Box::new([7u64; 8]);
    assert!(owns(b.as_ptr().cast()));
}

#[test]
fn any_layout_is_honoured() {
    for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
        for size in [1usize, 7, 16, 100, 512, 513, 5000] {
            let l = Layout::from_size_align(size, align).unwrap();
            unsafe {
                let p = ALLOC.alloc(l);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                p.write_bytes(0xEE, size);
                let z = ALLOC.alloc_zeroed(l);
                assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                let q = ALLOC.realloc(p, l, size * 3);
                assert_eq!(q as usize % align, 0);
                assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 0xEE));
                ALLOC.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                ALLOC.dealloc(z, l);
            }
        }
    }
}

#[test]
fn allocator_api2_handles() {
    use allocator_api2::vec::Vec as AVec;
    let mut v = AVec::new_in(PyMalloc);
    v.extend(0..1000u32);
    assert_eq!(v.iter().sum::<u32>(), 499_500);
    let mut w = AVec::new_in(global_heap());
    w.push(1u8);
    assert!(owns(w.as_ptr()));
    let z: AVec<(), _> = AVec::with_capacity_in(10, PyMalloc);
    assert!(z.is_empty());
}

#[test]
fn threads_share_the_heap_and_free_each_others_blocks() {
    let (tx, rx) = mpsc::channel::<Vec<String>>();
    let producers: Vec<_> = (0..3)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let n = common::full_or_miri(20_000, 20);
                let mut map = HashMap::new();
                let mut tree = BTreeMap::new();
                for i in 0..n {
                    map.insert(i, format!("thread {t} value {i}"));
                    tree.insert(format!("{i:08}"), vec![i as u8; i % 700]);
                    if i % 100 == 99 {
                        // Hand a batch to the consumer, which frees it.
                        tx.send((0..10).map(|k| "x".repeat(k * 50 + t)).collect()).unwrap();
                    }
                }
                assert_eq!(map.len(), n);
                assert_eq!(tree.len(), n);
            })
        })
        .collect();
    drop(tx);
    let consumer = std::thread::spawn(move || rx.into_iter().map(|batch| batch.len()).sum::<usize>());
    for p in producers {
        p.join().unwrap();
    }
    let got = consumer.join().unwrap();
    assert_eq!(got, 3 * common::full_or_miri(200, 0) * 10);
    global_heap().lock().validate().unwrap();
}
