//! The transform: ASCII `a`-`z` to `A`-`Z`, every other byte untouched.
//!
//! Written without branches so that the compiler turns the loop into SIMD
//! (16 or 32 bytes a step): a byte is lower case when `b - 'a'` (wrapping)
//! is below 26, and then bit 0x20 is cleared. Bytes >= 0x80 are never
//! touched, so UTF-8 passes through unharmed.
//!
//! The x86-64 baseline has 16-byte vectors (SSE2). On a CPU with AVX2,
//! found at run time, buffers of `WIDE` bytes or more take the same loop
//! compiled for 32-byte vectors (`cargo bench --bench upper` measures it).

/// From this length on, the AVX2 loop is worth the check that picks it.
#[cfg(target_arch = "x86_64")]
const WIDE: usize = 256;

/// Upper-cases `buf` in place.
///
/// ```
/// let mut line = *b"hello, world! 123 \xc3\xa9";
/// upcase::upper::upper_in_place(&mut line);
/// assert_eq!(&line, b"HELLO, WORLD! 123 \xc3\xa9");
/// ```
#[inline]
pub fn upper_in_place(buf: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if buf.len() >= WIDE && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above (the result is
        // cached by std: one load per call).
        unsafe { upper_avx2(buf) };
        return;
    }
    upper_loop(buf);
}

/// The loop, inlined into each caller so that it is vectorised for the
/// caller's target features.
#[inline(always)]
fn upper_loop(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        *b = upper_byte(*b);
    }
}

/// [`upper_loop`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn upper_avx2(buf: &mut [u8]) {
    upper_loop(buf);
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

/// Upper-cases `src` into `dst`, which is as long: one pass where `src`
/// cannot be changed (a TLS record's plaintext, owned by rustls).
#[cfg(feature = "tls")]
#[inline]
pub(crate) fn upper_into(src: &[u8], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if src.len() >= WIDE && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { upper_into_avx2(src, dst) };
        return;
    }
    upper_into_loop(src, dst);
}

#[cfg(feature = "tls")]
#[inline(always)]
fn upper_into_loop(src: &[u8], dst: &mut [u8]) {
    for (d, &b) in dst.iter_mut().zip(src) {
        *d = upper_byte(b);
    }
}

/// [`upper_into_loop`] compiled for AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(all(feature = "tls", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
unsafe fn upper_into_avx2(src: &[u8], dst: &mut [u8]) {
    upper_into_loop(src, dst);
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

    #[cfg(feature = "tls")]
    #[test]
    fn upper_into_leaves_the_source_and_fills_the_destination() {
        for n in [0, 1, 31, 32, 33, 100, 1000] {
            let src: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let mut dst = vec![0u8; n];
            upper_into(&src, &mut dst);
            assert_eq!(dst, src.to_ascii_uppercase(), "length {n}");
        }
    }

    /// Both loops, whichever `upper_in_place` picks on this CPU.
    #[test]
    fn the_baseline_and_the_avx2_loop_agree_with_the_reference() {
        let lengths = if cfg!(miri) { 80 } else { 600 };
        let all: Vec<u8> = (0..lengths).map(|i| (i * 37 % 256) as u8).collect();
        for n in 0..lengths {
            let src = &all[..n];
            let mut plain = src.to_vec();
            upper_loop(&mut plain);
            assert_eq!(plain, src.to_ascii_uppercase(), "baseline, length {n}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut wide = src.to_vec();
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe { upper_avx2(&mut wide) };
                assert_eq!(wide, plain, "AVX2, length {n}");
            }
        }
    }

    #[test]
    fn lengths_around_vector_widths() {
        // Miri is slow: lengths below 80 still cover 16, 32 and 64-byte steps with tails.
        let lengths = if cfg!(miri) { 80 } else { 600 };
        for n in 0..lengths {
            let src: Vec<u8> = (0..n).map(|i| (i * 37 % 256) as u8).collect();
            let got = upper(&src);
            assert_eq!(got, src.to_ascii_uppercase());
        }
    }
}
