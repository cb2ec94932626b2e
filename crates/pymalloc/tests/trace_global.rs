//! The tracer under the Rust global allocator (`Traced(PyMalloc)`): blocks
//! are traced with the program's own line (not the allocation machinery's),
//! and a thread's heap figures make assertions between two points of a
//! test, as dhat's `HeapStats` do.
#![cfg(not(miri))] // Miri: no unwinder

use pymalloc::trace::{self, Traced, DEFAULT_DOMAIN};
use pymalloc::PyMalloc;
use std::hint::black_box;

#[global_allocator]
static ALLOC: Traced<PyMalloc> = Traced(PyMalloc);

#[test]
fn rust_allocations_are_traced_at_the_programs_line_and_counted_per_thread() {
    trace::start(1).unwrap();
    // Warm the symbol cache and the tables: their own first allocations are
    // the tracer's, untraced, but the figures below start after them.
    drop(vec![0u8; 10]);

    let before = trace::thread_heap_stats();
    // black_box: an optimised build may otherwise move or drop allocations
    // whose contents it can see through.
    let v: Vec<u64> = black_box(Vec::with_capacity(1000));
    let line = line!() - 1;
    let s = black_box(String::from("a string of some length"));
    let mid = trace::thread_heap_stats().since(&before);
    assert_eq!((mid.allocated_blocks, mid.allocated_bytes), (2, 8000 + s.len() as u64));
    assert_eq!(mid.net_blocks(), 2);

    let frames = trace::traceback(DEFAULT_DOMAIN, v.as_ptr() as usize).expect("the Vec's buffer is traced");
    assert_eq!(frames.len(), 1);
    assert!(frames[0].filename.ends_with("trace_global.rs"), "{:?}", frames[0]);
    assert_eq!(frames[0].lineno, line, "{:?}", frames[0]);

    drop(v);
    drop(s);
    let after = trace::thread_heap_stats().since(&before);
    assert_eq!((after.freed_blocks, after.net_bytes()), (2, 0));
    assert!(after.max_bytes >= 8000);

    // Growing a Vec is a realloc: the trace follows the block.
    let mut w: Vec<u8> = Vec::with_capacity(16);
    w.extend_from_slice(&[1; 5000]);
    let t = trace::traceback(DEFAULT_DOMAIN, w.as_ptr() as usize).expect("traced after realloc");
    assert!(t[0].filename.ends_with("trace_global.rs"), "the program's line, not the Vec's: {:?}", t[0]);
    drop(w);

    // A function inlined into its caller is a frame of its own, at its own
    // line, as it would be without inlining.
    trace::start(2).unwrap();
    let (y, inner_line) = inlined_buffer();
    let outer_line = line!() - 1;
    let t = trace::traceback(DEFAULT_DOMAIN, y.as_ptr() as usize).expect("traced");
    assert_eq!(t.iter().map(|f| f.lineno).collect::<Vec<_>>(), [outer_line, inner_line], "{t:?}");
    assert!(t[1].function.ends_with("inlined_buffer"), "{:?}", t[1]);
    drop(y);

    trace::stop();
    let x: Vec<u8> = std::iter::repeat_n(1u8, 100).collect();
    assert!(trace::traceback(DEFAULT_DOMAIN, x.as_ptr() as usize).is_none(), "not tracing");
}

/// A buffer allocated in a function that is always inlined; its line.
#[inline(always)]
fn inlined_buffer() -> (Vec<u8>, u32) {
    (black_box(vec![7u8; 300]), line!())
}
