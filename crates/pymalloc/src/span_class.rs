//! The size classes of medium blocks (513 bytes to 32 KiB): eight per
//! doubling up to 2 KiB (576, 640, ..., 1024, 1152, ..., 2048), sixteen per
//! doubling above (2176, 2304, ..., 4096, 4352, ..., 32768). Sizes above
//! `2^b` are `(S + 1..=2S) << (b - log2 S)` for S steps, so no block wastes
//! more than a ninth of itself below 2 KiB and a seventeenth above.
//!
//! Why two grains, measured (docs/every-size.md):
//! * Four per doubling (mimalloc's bins) waste up to a fifth: Python's heaps
//!   of 0.5–8 KB strings and bytes peaked 9% above glibc's, which rounds to
//!   16 bytes. Most of such a heap's bytes are in its larger blocks, which
//!   sixteen steps bring to about 2% above.
//! * Every class a heap touches holds a partly carved page in its current
//!   span. With sixteen steps below 2 KiB too, where C programs' medium
//!   requests cluster, larson's and mstress's peaks stood 0.3–1.5 MiB
//!   higher than with eight in each of three runs (the two-grain table was
//!   level with eight there); Python's heaps gain little from that range.

use crate::geometry::MIN_PAGE;

/// The largest medium block.
pub const MEDIUM_MAX: usize = 32 * 1024;

/// Where the fine grain starts: the classes above serve `> FINE_FROM` bytes.
const FINE_FROM: usize = 2048;
/// log2 of the classes per doubling up to `FINE_FROM`, and above it.
const COARSE_BITS: u32 = 3;
const FINE_BITS: u32 = 4;
/// The coarse classes (two doublings: 512 to 2048).
const NB_COARSE: usize = 2 << COARSE_BITS;

/// Number of medium size classes: two doublings of eight and four of
/// sixteen.
pub const NB_MEDIUM_CLASSES: usize = NB_COARSE + (4 << FINE_BITS);

/// The smallest medium block.
const FIRST: usize = medium_size(0);

/// The medium class serving `n` bytes (`n <= MEDIUM_MAX`; anything up to
/// the first class's size is class 0): one byte of [`CLASS_OF_64`], since
/// every class's size is a multiple of 64.
#[inline(always)]
pub const fn medium_class(n: usize) -> usize {
    debug_assert!(n <= MEDIUM_MAX);
    CLASS_OF_64[n.saturating_sub(1) >> 6] as usize
}

/// [`medium_class`] of every `n` from `64 * i + 1` to `64 * (i + 1)`
/// (a `const`: each crate that indexes it gets a local copy, read without
/// the GOT of a shared library).
const CLASS_OF_64: [u8; MEDIUM_MAX / 64] = {
    let mut t = [0u8; MEDIUM_MAX / 64];
    let mut i = 0;
    while i < MEDIUM_MAX / 64 {
        t[i] = medium_class_computed(64 * (i + 1)) as u8;
        i += 1;
    }
    t
};

/// [`medium_class`] by arithmetic (builds the table).
const fn medium_class_computed(n: usize) -> usize {
    debug_assert!(n <= MEDIUM_MAX);
    if n <= FIRST {
        return 0;
    }
    let m = n - 1;
    // m lies in [2^b, 2^(b+1)) with b from 9 to 14; the class's step within
    // that doubling is the `bits` bits below the top one.
    let b = (usize::BITS - 1 - m.leading_zeros()) as usize;
    if n <= FINE_FROM {
        (b - 9) * (1 << COARSE_BITS) + ((m >> (b - COARSE_BITS as usize)) & ((1 << COARSE_BITS) - 1))
    } else {
        NB_COARSE + (b - 11) * (1 << FINE_BITS) + ((m >> (b - FINE_BITS as usize)) & ((1 << FINE_BITS) - 1))
    }
}

/// The block size of medium class `c`.
#[inline]
pub const fn medium_size(c: usize) -> usize {
    let (bits, d, base) =
        if c < NB_COARSE { (COARSE_BITS as usize, c, 9) } else { (FINE_BITS as usize, c - NB_COARSE, 11) };
    // Step `d % steps` of doubling `d / steps` above 2^base.
    let steps = 1 << bits;
    (steps + 1 + d % steps) << (d / steps + base - bits)
}

/// The alignment every block of class `c` has: the largest power of two
/// dividing its size, up to 16 KiB (spans start on 16 KiB boundaries).
#[inline]
pub const fn medium_align(c: usize) -> usize {
    let s = medium_size(c);
    let a = s & s.wrapping_neg();
    if a < 16 * 1024 {
        a
    } else {
        16 * 1024
    }
}

/// The alignment of the blocks of every class (all sizes are multiples of
/// 64): a request aligned to no more needs no look at its class's.
pub const MIN_MEDIUM_ALIGN: usize = {
    let mut a = usize::MAX;
    let mut c = 0;
    while c < NB_MEDIUM_CLASSES {
        if medium_align(c) < a {
            a = medium_align(c);
        }
        c += 1;
    }
    a
};
const _: () = assert!(MIN_MEDIUM_ALIGN == 64);

/// The smallest class from `c` up whose blocks are aligned to `align`, or
/// None past the last class. Within a doubling the alignment is highest at
/// its last class, so a search from `c` ends within one doubling.
#[inline]
pub const fn aligned_class(mut c: usize, align: usize) -> Option<usize> {
    while c < NB_MEDIUM_CLASSES {
        if medium_align(c) >= align {
            return Some(c);
        }
        c += 1;
    }
    None
}

/// Units (16 KiB) of a span of class `c`: at least 64 KiB and room for
/// eight blocks, at most 16 units and 128 blocks (`span_pages.rs`'s
/// bitmaps), and within that the fewest whose tail (the bytes after the
/// last block) wastes at most 1/128 of the span in a page a block touches.
///
/// A span's tail inside a touched page is resident for as long as the span
/// lives: with 64 KiB spans for every class, heaps of 0.5–8 KB strings held
/// 2% more than their blocks in such tails.
#[inline]
pub const fn span_units(c: usize, unit: usize) -> usize {
    let size = medium_size(c);
    let least = (8 * size).div_ceil(unit);
    let least = if least > 4 { least } else { 4 };
    let (mut k, mut best, mut best_waste) = (least, least, usize::MAX);
    while k <= 16 && (k * unit) / size <= 128 {
        let tail = (k * unit - (k * unit) / size * size) % MIN_PAGE;
        if tail * 128 <= k * unit {
            return k;
        }
        // Otherwise the smallest waste per byte of span (tail / (k * unit),
        // compared across multiplication).
        if best_waste == usize::MAX || tail * best < best_waste * k {
            (best, best_waste) = (k, tail);
        }
        k += 1;
    }
    best
}

/// The sizes 1 to [`MEDIUM_MAX`] a test of a size table checks, the table
/// having an entry per `entry` bytes: every size natively; under Miri,
/// which interprets each check in milliseconds, both ends of each entry
/// (every entry still read).
#[cfg(test)]
pub(crate) fn table_test_sizes(entry: usize) -> Vec<usize> {
    if cfg!(miri) {
        (0..MEDIUM_MAX / entry).flat_map(|i| [entry * i + 1, entry * i + entry]).collect()
    } else {
        (1..=MEDIUM_MAX).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_maps_to_the_smallest_class_that_holds_it() {
        let mut prev = 512;
        for c in 0..NB_MEDIUM_CLASSES {
            let s = medium_size(c);
            let steps = if s <= FINE_FROM { 8 } else { 16 };
            assert!(s > prev && (s - prev) * (steps + 1) <= s, "class {c}: {s} after {prev}");
            assert_eq!(medium_class(s), c);
            assert_eq!(medium_class(prev + 1), c, "{}", prev + 1);
            assert!(medium_align(c) >= 16 && s % medium_align(c) == 0);
            prev = s;
        }
        assert_eq!(prev, MEDIUM_MAX);
        assert_eq!(medium_class(1), 0);
        assert_eq!(medium_class(0), 0);
        for n in table_test_sizes(64) {
            assert_eq!(medium_class(n), medium_class_computed(n), "{n}");
        }
        assert_eq!(span_units(0, 16384), 4);
        assert_eq!(span_units(NB_MEDIUM_CLASSES - 1, 16384), 16);
    }

    #[test]
    fn an_aligned_request_takes_the_first_class_aligned_enough() {
        // 600 bytes: the first class of at least 600 bytes that is a
        // multiple of the alignment.
        let size = |align| medium_size(aligned_class(medium_class(600), align).unwrap());
        assert_eq!(size(64), 640);
        assert_eq!(size(128), 640);
        assert_eq!(size(256), 768);
        assert_eq!(size(1024), 1024);
        assert_eq!(aligned_class(NB_MEDIUM_CLASSES - 1, 32 * 1024), None);
        for c in 0..NB_MEDIUM_CLASSES {
            for shift in 4..=14 {
                if let Some(d) = aligned_class(c, 1 << shift) {
                    assert!(d >= c && medium_align(d) >= 1 << shift);
                    assert!((c..d).all(|e| medium_align(e) < 1 << shift));
                }
            }
        }
    }

    #[test]
    fn spans_hold_at_least_eight_blocks_and_at_most_the_bitmap() {
        for c in 0..NB_MEDIUM_CLASSES {
            let k = span_units(c, 16384);
            assert!((4..=16).contains(&k), "class {c}: {k} units");
            let tail = (k * 16384) % medium_size(c) % 4096;
            assert!(tail * 100 <= k * 16384, "class {c}: {tail} bytes of tail in {k} units");
            let blocks = k * 16384 / medium_size(c);
            // span_pages.rs keeps a bitmap of 128 blocks.
            assert!((8..=128).contains(&blocks), "class {c}: {blocks} blocks");
        }
    }
}
