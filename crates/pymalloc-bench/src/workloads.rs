//! The allocation workloads, in Rust, through the global allocator of the
//! binary that includes this module (one binary per allocator). They mirror
//! `csrc/workloads.c`, plus two real Rust programs (serde_json, BTreeMap).
//!
//! Each run prints one JSON object on stdout: time per operation and
//! resident memory (base, peak during the workload, at its end).

use std::alloc::{alloc, dealloc, Layout};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Instant;

/// kB of a `/proc/self/status` line ("VmRSS", "VmHWM").
pub fn status_kib(key: &str) -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key) && l.as_bytes().get(key.len()) == Some(&b':'))
                .and_then(|l| l[key.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(-1)
}

/// `BENCH_SCALE=k` divides the iteration counts (profiling and smoke runs).
fn scaled(n: u64) -> u64 {
    let k: u64 = std::env::var("BENCH_SCALE").ok().and_then(|v| v.parse().ok()).filter(|&k| k > 0).unwrap_or(1);
    (n / k).max(1)
}

/// Resets the peak resident size to the current one.
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const NSIZES: usize = 1 << 20;

fn sizes(lo: usize, hi: usize, large_percent: u64) -> Vec<usize> {
    let mut r = Rng(0x9E3779B97F4A7C15);
    (0..NSIZES)
        .map(|_| {
            if large_percent > 0 && r.next() % 100 < large_percent {
                513 + (r.next() % (8192 - 513)) as usize
            } else {
                lo + (r.next() % (hi - lo + 1) as u64) as usize
            }
        })
        .collect()
}

#[inline(always)]
fn a(size: usize) -> *mut u8 {
    // SAFETY: size > 0; align 8 is valid.
    let p = unsafe { alloc(Layout::from_size_align_unchecked(size, 8)) };
    assert!(!p.is_null());
    // Write the first and last bytes, as an initialiser would.
    // SAFETY: p holds size bytes.
    unsafe {
        p.write_volatile(size as u8);
        if size > 8 {
            p.add(size - 1).write_volatile(1);
        }
    }
    p
}

#[inline(always)]
fn f(p: *mut u8, size: usize) {
    // SAFETY: p came from `a(size)`.
    unsafe { dealloc(p, Layout::from_size_align_unchecked(size, 8)) }
}

fn fastpath() -> (f64, u64) {
    let n = scaled(20_000_000);
    let t = Instant::now();
    for _ in 0..n {
        let p = a(64);
        f(black_box(p), 64);
    }
    (t.elapsed().as_secs_f64(), n)
}

fn ring(large_percent: u64) -> (f64, u64) {
    ring_of(1, 512, large_percent, 10_000, 10_000_000)
}

/// A ring of `r` live blocks of `lo..=hi` bytes (as the C workload): each
/// step frees the oldest and allocates a new one.
fn ring_of(lo: usize, hi: usize, large_percent: u64, r: usize, steps: u64) -> (f64, u64) {
    let n = scaled(steps);
    let s = sizes(lo, hi, large_percent);
    let mut slot: Vec<(*mut u8, usize)> = (0..r).map(|i| (a(s[i]), s[i])).collect();
    let t = Instant::now();
    // The slot index wraps by comparison, as in the C workload (a division
    // per step made the C ring's time depend on code layout).
    let mut k = 0;
    for i in 0..n as usize {
        let sz = s[i & (NSIZES - 1)];
        let (p, old) = slot[k];
        f(p, old);
        slot[k] = (a(sz), sz);
        k += 1;
        if k == r {
            k = 0;
        }
    }
    let dt = t.elapsed().as_secs_f64();
    for (p, sz) in slot {
        f(p, sz);
    }
    (dt, n)
}

/// Five rounds of 1M blocks of 1..512 bytes freed in random order (as the C
/// workload).
fn random_order() -> (f64, u64) {
    const ROUNDS: usize = 5;
    let n = scaled(1_000_000) as usize;
    let s = sizes(1, 512, 0);
    let mut r = Rng(12345);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (r.next() % (i as u64 + 1)) as usize);
    }
    let mut blocks = Vec::with_capacity(n);
    let t = Instant::now();
    for _ in 0..ROUNDS {
        blocks.clear();
        for &sz in &s[..n] {
            blocks.push(a(sz));
        }
        for &i in &order {
            f(blocks[i], s[i]);
        }
    }
    (t.elapsed().as_secs_f64(), (n * ROUNDS) as u64)
}

fn survivors() -> (f64, u64, i64, i64) {
    let n = scaled(2_000_000) as usize;
    let s = sizes(16, 256, 0);
    let mut blocks = Vec::with_capacity(n);
    let t = Instant::now();
    for i in 0..n {
        blocks.push(a(s[i & (NSIZES - 1)]));
    }
    let peak = status_kib("VmRSS");
    for (i, &p) in blocks.iter().enumerate() {
        if i % 1000 != 0 {
            f(p, s[i & (NSIZES - 1)]);
        }
    }
    let dt = t.elapsed().as_secs_f64();
    // Resident memory once the allocator's own delay has passed (2.5 s
    // idle): allocators that keep freed memory for a while (pymalloc-rs's
    // decay, mimalloc's purge delay, jemalloc's decay) have had their chance
    // to give it back.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let kept = status_kib("VmRSS");
    for i in (0..n).step_by(1000) {
        f(blocks[i], s[i & (NSIZES - 1)]);
    }
    (dt, n as u64, peak, kept)
}

fn prodcons() -> (f64, u64) {
    const Q: usize = 4096;
    let n = scaled(5_000_000) as usize;
    let s = std::sync::Arc::new(sizes(16, 256, 0));
    let queue: std::sync::Arc<Vec<AtomicPtr<u8>>> =
        std::sync::Arc::new((0..Q).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect());
    let t = Instant::now();
    let (q2, s2) = (queue.clone(), s.clone());
    let consumer = std::thread::spawn(move || {
        for i in 0..n {
            let slot = &q2[i % Q];
            let p = loop {
                let p = slot.load(Ordering::Acquire);
                if !p.is_null() {
                    break p;
                }
                std::hint::spin_loop();
            };
            slot.store(std::ptr::null_mut(), Ordering::Relaxed);
            f(p, s2[i & (NSIZES - 1)]);
        }
    });
    for i in 0..n {
        let p = a(s[i & (NSIZES - 1)]);
        let slot = &queue[i % Q];
        while !slot.load(Ordering::Relaxed).is_null() {
            std::hint::spin_loop();
        }
        slot.store(p, Ordering::Release);
    }
    consumer.join().unwrap();
    (t.elapsed().as_secs_f64(), n as u64)
}

/// serde_json: build a large document, serialise it, parse it back, drop.
fn json() -> (f64, u64) {
    let rounds = 5u64;
    let items = scaled(100_000);
    let t = Instant::now();
    for round in 0..rounds {
        let doc: Vec<serde_json::Value> = (0..items)
            .map(|i| {
                serde_json::json!({
                    "id": i + round,
                    "name": format!("item-{i}"),
                    "tags": ["a", "bb", "ccc"],
                    "score": i as f64 / 7.0,
                    "nested": {"x": i, "y": [i, i + 1, i + 2]},
                })
            })
            .collect();
        let text = serde_json::to_string(&doc).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back.as_array().unwrap().len(), items as usize);
        black_box(back);
    }
    (t.elapsed().as_secs_f64(), rounds * items)
}

/// A BTreeMap of strings: insert, look up, remove half, drop.
fn btree() -> (f64, u64) {
    let n = scaled(500_000);
    let t = Instant::now();
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..n {
        m.insert(format!("key-{:08}", (i * 2654435761) % n), format!("value {i}"));
    }
    let mut hits = 0;
    for i in 0..n {
        hits += m.contains_key(&format!("key-{:08}", i)) as u64;
    }
    for i in (0..n).step_by(2) {
        m.remove(&format!("key-{:08}", i));
    }
    black_box(hits);
    drop(m);
    (t.elapsed().as_secs_f64(), n)
}

/// Runs the workload named by argv[1]; argv[2] labels the allocator.
pub fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: {} fastpath|ring|mixed|random|survivors|prodcons|json|btree LABEL", args[0]);
        std::process::exit(2);
    }
    // Warm up: let the allocator set itself up.
    drop(black_box(Box::new(0u64)));
    let base = status_kib("VmRSS");
    reset_peak();
    let (mut peak, mut fin) = (0, 0);
    let (secs, ops) = match args[1].as_str() {
        "fastpath" => fastpath(),
        "ring" => ring(0),
        "mixed" => ring(10),
        "medium" => ring_of(513, 32 << 10, 0, 2000, 2_000_000),
        "large" => ring_of((32 << 10) + 1, 1 << 20, 0, 64, 200_000),
        "random" => random_order(),
        "prodcons" => prodcons(),
        "json" => json(),
        "btree" => btree(),
        "survivors" => {
            let (s, o, p, k) = survivors();
            (peak, fin) = (p, k);
            (s, o)
        }
        w => {
            eprintln!("unknown workload {w}");
            std::process::exit(2);
        }
    };
    if args[1] != "survivors" {
        (peak, fin) = (status_kib("VmHWM"), status_kib("VmRSS"));
    }
    println!(
        "{{\"workload\":\"{}\",\"allocator\":\"{}\",\"ops\":{ops},\"seconds\":{secs:.6},\"ns_per_op\":{:.3},\"base_rss_kib\":{base},\"peak_rss_kib\":{peak},\"final_rss_kib\":{fin}}}",
        args[1],
        args[2],
        secs * 1e9 / ops as f64
    );
}
