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
use crate::trace_thread::{self, MEMO_ENTRIES};

/// Entries per thread (in its block, `trace_thread.rs`): sets of two, by
/// return address.
const ENTRIES: usize = MEMO_ENTRIES;
const WAYS: usize = 2;
const SETS: usize = ENTRIES / WAYS;
// `set` and `remembered` take two ways and a power of two of sets, and
// `set` shifts by the bits of a 64-bit address above log2(SETS).
const _: () = assert!(WAYS == 2 && SETS > 1 && SETS.is_power_of_two() && SETS * WAYS == ENTRIES);
const _: () = assert!(usize::BITS == 64);

/// An entry: `ip == 0` is empty (no return address is 0), as the block's
/// zeroed words start.
#[derive(Clone, Copy)]
struct Entry {
    ip: usize,
    id: u32,
    clears: u32,
}

impl Entry {
    fn load(c: &Cell<(usize, u32, u32)>) -> Entry {
        let (ip, id, clears) = c.get();
        Entry { ip, id, clears }
    }

    fn store(self, c: &Cell<(usize, u32, u32)>) {
        c.set((self.ip, self.id, self.clears));
    }
}

/// The first entry of return address `ip`'s set: a multiplicative hash,
/// whose top bits mix every bit of the address. (Direct-mapped by the low
/// bits above the instruction alignment, folded once, the memo sent 225,047
/// of serde_json's 775,164 traced allocations to the table; these sets
/// send 75,067.)
fn set(ip: usize) -> usize {
    WAYS * (ip.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (usize::BITS - SETS.trailing_zeros()))
}

/// The id of traceback `frames`, as [`table::intern`] gives it, from this
/// thread's memo when `frames` is one frame it has interned since the last
/// clear.
#[inline]
pub(crate) fn intern(frames: &[usize]) -> Option<u32> {
    let [ip] = *frames else { return table::intern(frames) };
    let clears = table::CLEARS.load(Ordering::Acquire);
    let s = set(ip);
    match remembered(ip, s, clears) {
        Some(id) => Some(id),
        None => {
            // `clears` was read before the interning: if a clear comes in
            // between, the entry is stale from the start and never answers.
            let id = table::intern(frames)?;
            // The newest first, the older one kept second.
            trace_thread::with(|t| {
                let m = &t.memo;
                m[s + 1].set(m[s].get());
                Entry { ip, id, clears }.store(&m[s]);
            });
            Some(id)
        }
    }
}

/// The id this thread's memo holds for `ip` (whose set starts at `s`)
/// interned under clear count `clears`, if any.
#[inline(always)]
fn remembered(ip: usize, s: usize, clears: u32) -> Option<u32> {
    trace_thread::with(|t| {
        let m = &t.memo;
        let valid = |e: Entry| (e.ip == ip && e.clears == clears).then_some(e.id);
        valid(Entry::load(&m[s])).or_else(|| valid(Entry::load(&m[s + 1])))
    })
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
        // In the other order: the new table's ids then differ from the old
        // ones, so an entry of before the clear would show.
        for ip in ips.iter().rev() {
            let id = intern(&[*ip]).unwrap();
            assert_eq!(
                table::with_frames(id, <[usize]>::to_vec),
                Some(vec![*ip]),
                "after a clear the memo hands out no id of the old table"
            );
        }
        table::clear();
    }

    /// Call sites of one megabyte of code spread over the sets (a hash
    /// that sends them to a few would keep two ways of each busy).
    #[test]
    fn call_sites_spread_over_the_sets() {
        let mut used = [false; SETS];
        let mut x = 1u64;
        for _ in 0..SETS * 2 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let ip = 0x5555_5550_0000 + (x >> 44) as usize; // within 1 MiB
            used[set(ip) / WAYS] = true;
        }
        let n = used.iter().filter(|&&u| u).count();
        assert!(n >= SETS / 2, "{n} of {SETS} sets");
    }

    /// Two call sites of one set are both remembered: the memo was
    /// direct-mapped, and two sites whose addresses met in a slot took the
    /// table's lock in turn on every allocation (a third of serde_json's).
    #[test]
    fn two_call_sites_of_one_set_are_both_remembered() {
        let _g = table::global_tables();
        let a = 0x40_0000usize;
        let b = (a + 16..).step_by(16).find(|&ip| set(ip) == set(a)).unwrap();
        let c = (b + 16..).step_by(16).find(|&ip| set(ip) == set(a)).unwrap();
        let (ia, ib) = (intern(&[a]).unwrap(), intern(&[b]).unwrap());
        let clears = table::CLEARS.load(Ordering::Acquire);
        assert_eq!(remembered(a, set(a), clears), Some(ia));
        assert_eq!(remembered(b, set(b), clears), Some(ib));
        // A third one takes the place of the older.
        let ic = intern(&[c]).unwrap();
        assert_eq!(remembered(c, set(c), clears), Some(ic));
        assert_eq!(remembered(b, set(b), clears), Some(ib));
        assert_eq!(remembered(a, set(a), clears), None);
        assert_eq!(intern(&[a]), Some(ia), "the table still knows it");
        table::clear();
    }
}
