//! The size classes of medium blocks (513 bytes to 32 KiB): four per
//! doubling, as mimalloc's bins and jemalloc's size classes space them, so
//! no block wastes more than a fifth of itself: 640, 768, 896, 1024, 1280,
//! ..., 28672, 32768.

/// The largest medium block.
pub const MEDIUM_MAX: usize = 32 * 1024;

/// Number of medium size classes (six doublings above 512, four each).
pub const NB_MEDIUM_CLASSES: usize = 24;

/// The medium class serving `n` bytes (`n <= MEDIUM_MAX`; anything up to
/// 640 bytes is class 0).
#[inline]
pub const fn medium_class(n: usize) -> usize {
    debug_assert!(n <= MEDIUM_MAX);
    if n <= 640 {
        return 0;
    }
    let m = n - 1;
    // m lies in [2^b, 2^(b+1)) with b from 9 to 14; the class's quarter of
    // that doubling is the two bits below the top one.
    let b = usize::BITS - 1 - m.leading_zeros();
    ((b - 9) * 4) as usize + ((m >> (b - 2)) & 3)
}

/// The block size of medium class `c`.
#[inline]
pub const fn medium_size(c: usize) -> usize {
    (5 + c % 4) << (c / 4 + 7)
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

/// Units (16 KiB) of a span of class `c`: 64 KiB, or room for eight blocks
/// when those are larger than 8 KiB.
#[inline]
pub const fn span_units(c: usize, unit: usize) -> usize {
    let eight = (8 * medium_size(c)).div_ceil(unit);
    if eight > 4 {
        eight
    } else {
        4
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
            assert!(s > prev && s <= prev * 5 / 4 + 128, "class {c}: {s} after {prev}");
            assert_eq!(medium_class(s), c);
            assert_eq!(medium_class(prev + 1), c, "{}", prev + 1);
            assert!(medium_align(c) >= 128 && s % medium_align(c) == 0);
            prev = s;
        }
        assert_eq!(prev, MEDIUM_MAX);
        assert_eq!(medium_class(1), 0);
        assert_eq!(span_units(0, 16384), 4);
        assert_eq!(span_units(NB_MEDIUM_CLASSES - 1, 16384), 16);
    }
}
