//! A Python-shaped allocation workload pushed through the three domains,
//! then the statistics table that `sys._debugmallocstats()` would print.
//!
//! The shapes follow CPython 3.11 on 64-bit: objects (ints, floats, tuples,
//! dicts, strings, list headers) come from the OBJ domain; list item arrays
//! and dict key tables from MEM, grown with CPython's over-allocation rules;
//! I/O buffers from RAW. Most objects die young; some survive to the end, as
//! module-level state does.
//!
//! ```text
//! cargo run --release -p pymalloc --example python_workload
//! PYTHONMALLOC=malloc cargo run --release -p pymalloc --example python_workload
//! PYTHONMALLOCSTATS=1 cargo run --release -p pymalloc --example python_workload
//! ```

use std::process::ExitCode;
use std::time::Instant;

use pymalloc::{config, global_heap, Domain};

/// xorshift64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

/// A live allocation of the simulated interpreter.
struct Obj {
    domain: Domain,
    ptr: *mut u8,
    size: usize,
}

/// CPython's list over-allocation (`list_resize` in listobject.c).
fn list_capacity(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n + (n >> 3) + 6) & !3
    }
}

struct Interp {
    rng: Rng,
    young: Vec<Obj>,
    old: Vec<Obj>,
    allocations: u64,
}

impl Interp {
    fn alloc(&mut self, domain: Domain, size: usize, survives: bool) {
        let ptr = domain.malloc(size);
        assert!(!ptr.is_null(), "out of memory");
        // Touch the memory as an initialiser would.
        unsafe { ptr.write_bytes(0x5A, size.min(64)) };
        self.allocations += 1;
        let o = Obj { domain, ptr, size };
        if survives {
            self.old.push(o);
        } else {
            self.young.push(o);
        }
    }

    /// One object of a random Python type, with its side buffers.
    fn make_object(&mut self, survives: bool) {
        match self.rng.below(100) {
            // int (28 bytes -> 32) and float (24)
            0..=29 => {
                let size = if self.rng.below(3) == 0 { 24 } else { 28 + 4 * self.rng.below(3) };
                self.alloc(Domain::Obj, size, survives)
            }
            // str: header 40-56 plus the characters
            30..=54 => {
                let len = [1, 3, 8, 12, 20, 40, 90, 300][self.rng.below(8)];
                self.alloc(Domain::Obj, 49 + len, survives)
            }
            // tuple of 1..8 items (GC header included)
            55..=74 => {
                let n = 1 + self.rng.below(8);
                self.alloc(Domain::Obj, 40 + 8 * n, survives)
            }
            // list: header, then an item array grown by append via realloc
            75..=86 => {
                self.alloc(Domain::Obj, 56, survives);
                let items = self.rng.below(60);
                let mut cap = 0;
                let mut arr: *mut u8 = std::ptr::null_mut();
                for n in 1..=items {
                    if n > cap {
                        cap = list_capacity(n);
                        arr = unsafe { Domain::Mem.realloc(arr, cap * 8) };
                        assert!(!arr.is_null());
                        self.allocations += 1;
                    }
                }
                if !arr.is_null() {
                    let o = Obj { domain: Domain::Mem, ptr: arr, size: cap * 8 };
                    if survives {
                        self.old.push(o)
                    } else {
                        self.young.push(o)
                    }
                }
            }
            // dict: object plus a keys table (PyDictKeysObject) in MEM
            87..=96 => {
                self.alloc(Domain::Obj, 64, survives);
                let log2 = 3 + self.rng.below(4);
                let keys = 40 + (1 << log2) + (2 << log2) / 3 * 24;
                self.alloc(Domain::Mem, keys, survives)
            }
            // an I/O or bytecode buffer from RAW
            _ => {
                let size = [600, 4096, 8192, 65536][self.rng.below(4)];
                self.alloc(Domain::Raw, size, survives)
            }
        }
    }

    /// Frees the young objects that die (most of them), keeping a few.
    fn collect_young(&mut self) {
        let young = std::mem::take(&mut self.young);
        for o in young {
            if self.rng.below(20) == 0 {
                self.old.push(o);
            } else {
                unsafe { o.domain.free(o.ptr) };
            }
        }
    }
}

fn main() -> ExitCode {
    // Honour PYTHONMALLOC / PYTHONMALLOCSTATS as python3 does.
    let name = match unsafe { config::init_from_env() } {
        Ok(name) => name,
        Err(e) => {
            eprintln!("python_workload: {e}");
            return ExitCode::from(1);
        }
    };
    let mut it = Interp { rng: Rng(0x9E3779B97F4A7C15), young: Vec::new(), old: Vec::new(), allocations: 0 };
    let t = Instant::now();

    // "import": module objects, most of which live until exit.
    for _ in 0..150_000 {
        it.make_object(true);
    }
    // "run": a loop creating temporaries, a minor collection every 700.
    for i in 0..2_000_000u32 {
        it.make_object(false);
        if i % 700 == 699 {
            it.collect_young();
        }
    }
    it.collect_young();
    // "teardown": half of the long-lived objects go away.
    let mut keep = Vec::new();
    for (i, o) in std::mem::take(&mut it.old).into_iter().enumerate() {
        if i % 2 == 0 {
            unsafe { o.domain.free(o.ptr) };
        } else {
            keep.push(o);
        }
    }
    let elapsed = t.elapsed();

    let stats = global_heap().stats();
    println!("{stats}");
    let live_bytes: usize = keep.iter().map(|o| o.size).sum();
    println!(
        "configuration {name}: {} allocations in {:.2?}; {} blocks ({} bytes) live at the end, {} of them in pools",
        it.allocations,
        elapsed,
        keep.len(),
        live_bytes,
        stats.blocks_in_use(),
    );
    if name.base() == config::AllocatorName::Malloc {
        println!("(PYTHONMALLOC=malloc: the pymalloc heap was not used)");
    }
    for o in keep {
        unsafe { o.domain.free(o.ptr) };
    }
    ExitCode::SUCCESS
}
