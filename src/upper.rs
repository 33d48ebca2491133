//! The transform: ASCII `a`-`z` to `A`-`Z`, every other byte untouched.
//!
//! Written without branches so that the compiler turns the loop into SIMD
//! (16 or 32 bytes a step): a byte is lower case when `b - 'a'` (wrapping)
//! is below 26, and then bit 0x20 is cleared. Bytes >= 0x80 are never
//! touched, so UTF-8 passes through unharmed.

/// Upper-cases `buf` in place.
///
/// ```
/// let mut line = *b"hello, world! 123 \xc3\xa9";
/// upcase::upper::upper_in_place(&mut line);
/// assert_eq!(&line, b"HELLO, WORLD! 123 \xc3\xa9");
/// ```
#[inline]
pub fn upper_in_place(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        *b = upper_byte(*b);
    }
}

/// Upper-cases `buf` in place, as [`upper_in_place`], and says whether
/// any byte changed: `false` means `buf` was already its own reply (no
/// `a`-`z` in it). Same single branch-free pass: OR-ing together each
/// byte's change vectorises with it and costs next to nothing.
#[inline]
pub(crate) fn upper_in_place_changed(buf: &mut [u8]) -> bool {
    let mut changed = 0u8;
    for b in buf.iter_mut() {
        let up = upper_byte(*b);
        changed |= *b ^ up;
        *b = up;
    }
    changed != 0
}

/// Upper-cases `src` into a new vector of the same length.
pub fn upper(src: &[u8]) -> Vec<u8> {
    let mut out = src.to_vec();
    upper_in_place(&mut out);
    out
}

/// One byte: clear bit 0x20 when the byte is `a`..=`z`, branch-free.
#[inline(always)]
pub const fn upper_byte(b: u8) -> u8 {
    let is_lower = b.wrapping_sub(b'a') < 26;
    b ^ ((is_lower as u8) << 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_256_byte_values() {
        let all: Vec<u8> = (0..=255u8).collect();
        let got = upper(&all);
        assert_eq!(got.len(), 256);
        for (i, (&b, &u)) in all.iter().zip(&got).enumerate() {
            let want = if b.is_ascii_lowercase() { b - 32 } else { b };
            assert_eq!(u, want, "byte {i:#04x}");
        }
    }

    #[test]
    fn changed_says_whether_there_was_anything_to_upper_case() {
        for n in 0..200 {
            let src: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let mut buf = src.clone();
            let changed = upper_in_place_changed(&mut buf);
            assert_eq!(buf, src.to_ascii_uppercase());
            assert_eq!(changed, src.iter().any(u8::is_ascii_lowercase), "length {n}");
            // Upper case is its own upper case: nothing changes the second time.
            assert!(!upper_in_place_changed(&mut buf));
        }
        let mut one = *b"HELLO, 123 z";
        assert!(upper_in_place_changed(&mut one));
        assert!(!upper_in_place_changed(&mut []));
    }

    #[test]
    fn lengths_around_vector_widths() {
        // Miri is slow: lengths below 80 still cover 16, 32 and 64-byte steps with tails.
        let lengths = if cfg!(miri) { 80 } else { 200 };
        for n in 0..lengths {
            let src: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let got = upper(&src);
            assert_eq!(got, src.to_ascii_uppercase());
        }
    }
}
