//! Each thread's memo of the one-frame tracebacks it interned last, so that
//! a traced allocation from a call site seen before takes neither the
//! tracebacks' lock nor their hash probe.
//!
//! One frame is the traceback limit CPython starts tracemalloc with, and
//! what most traced programs use. A memo entry is a return address, its
//! traceback id and the clear count the id was interned under
//! ([`table::CLEARS`]): it answers only while no clear has happened since,
//! so it never hands out an id of a cleared table (a clear that comes
//! after the look is the race every traced allocation has with a clear:
//! the trace then has no traceback, see `Tracebacks`).

use core::cell::Cell;
use core::sync::atomic::Ordering;

use crate::trace_table as table;

/// Entries per thread, direct-mapped by return address.
const ENTRIES: usize = 64;

/// An entry: `ip == 0` is empty (no return address is 0).
#[derive(Clone, Copy)]
struct Entry {
    ip: usize,
    id: u32,
    clears: u32,
}

const EMPTY: Entry = Entry { ip: 0, id: 0, clears: 0 };

std::thread_local! {
    static MEMO: [Cell<Entry>; ENTRIES] = const { [const { Cell::new(EMPTY) }; ENTRIES] };
}

/// The slot of return address `ip`: code addresses are spread by their
/// low bits above the instruction alignment.
fn slot(ip: usize) -> usize {
    (ip ^ (ip >> 6)) % ENTRIES
}

/// The id of traceback `frames`, as [`table::intern`] gives it, from this
/// thread's memo when `frames` is one frame it has interned since the last
/// clear.
#[inline]
pub(crate) fn intern(frames: &[usize]) -> Option<u32> {
    let [ip] = *frames else { return table::intern(frames) };
    let clears = table::CLEARS.load(Ordering::Acquire);
    let hit = MEMO.try_with(|m| {
        let e = m[slot(ip)].get();
        (e.ip == ip && e.clears == clears).then_some(e.id)
    });
    match hit {
        Ok(Some(id)) => Some(id),
        Ok(None) => {
            // `clears` was read before the interning: if a clear comes in
            // between, the entry is stale from the start and never answers.
            let id = table::intern(frames)?;
            let _ = MEMO.try_with(|m| m[slot(ip)].set(Entry { ip, id, clears }));
            Some(id)
        }
        // Thread-local storage is gone (thread exit): no memo.
        Err(_) => table::intern(frames),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_frame_tracebacks_come_from_the_memo_until_a_clear() {
        let _g = table::global_tables();
        let ips: Vec<usize> = (0..3 * ENTRIES).map(|i| 0x40_0000 + 0x1234 * i).collect();
        let ids: Vec<u32> = ips.iter().map(|&ip| intern(&[ip]).unwrap()).collect();
        for (ip, id) in ips.iter().zip(&ids) {
            assert_eq!(intern(&[*ip]), Some(*id), "memo or table, one id per traceback");
            assert_eq!(table::intern(&[*ip]), Some(*id));
            assert_eq!(table::with_frames(*id, <[usize]>::to_vec), Some(vec![*ip]));
        }
        // Longer tracebacks go straight to the table.
        let two = intern(&[1, 2]).unwrap();
        assert_eq!(table::with_frames(two, <[usize]>::to_vec), Some(vec![1, 2]));

        table::clear();
        for ip in &ips {
            let id = intern(&[*ip]).unwrap();
            assert_eq!(
                table::with_frames(id, <[usize]>::to_vec),
                Some(vec![*ip]),
                "after a clear the memo hands out no id of the old table"
            );
        }
        table::clear();
    }
}
