//! Request payloads and the replies they must get back.
//!
//! Payloads come from one deterministic pattern: even positions are lower-case
//! letters (so every request of two bytes or more has letters to upper-case),
//! odd positions run through all 256 byte values (NUL, digits, punctuation,
//! upper case, bytes >= 0x80: all must come back unchanged). The pattern and
//! its upper-cased copy are built once; a request is a window into the first,
//! the expected reply the same window into the second, so verifying a reply is
//! one slice comparison and no allocation.

/// The protocol's transform of one byte: ASCII `a`-`z` to `A`-`Z`, nothing else.
pub const fn upper_byte(b: u8) -> u8 {
    if b.is_ascii_lowercase() {
        b - (b'a' - b'A')
    } else {
        b
    }
}

/// Byte `i` of the (infinite) pattern.
pub fn pattern_byte(i: usize) -> u8 {
    if i % 2 == 0 {
        b'a' + ((i / 2) % 26) as u8
    } else {
        // 97 is odd, so this is a permutation of 0..=255 over any 256 consecutive odd positions.
        ((i / 2).wrapping_mul(97).wrapping_add(31) % 256) as u8
    }
}

/// A pattern of period `period`, stored with `window` extra bytes so that any
/// window of up to `window` bytes starting anywhere in the period is contiguous.
pub struct Pattern {
    plain: Vec<u8>,
    upper: Vec<u8>,
    period: usize,
}

impl Pattern {
    pub fn new(period: usize, window: usize) -> Pattern {
        let period = period.max(1);
        let plain: Vec<u8> = (0..period + window).map(|i| pattern_byte(i % period)).collect();
        let upper = plain.iter().map(|&b| upper_byte(b)).collect();
        Pattern { plain, upper, period }
    }

    /// The request bytes at stream offset `off` (taken modulo the period).
    pub fn request(&self, off: usize, len: usize) -> &[u8] {
        let o = off % self.period;
        &self.plain[o..o + len]
    }

    /// The reply those bytes must get.
    pub fn expected(&self, off: usize, len: usize) -> &[u8] {
        let o = off % self.period;
        &self.upper[o..o + len]
    }

    /// The longest window available.
    #[cfg(test)]
    pub fn window(&self) -> usize {
        self.plain.len() - self.period
    }
}

/// Checks a piece of a reply: `got` bytes of the reply have already arrived,
/// `chunk` is what arrived now, `expected` the whole expected reply. Returns
/// false if the piece is wrong or runs past the expected length.
pub fn chunk_ok(expected: &[u8], got: usize, chunk: &[u8]) -> bool {
    match expected.get(got..got + chunk.len()) {
        Some(want) => want == chunk,
        None => false,
    }
}

/// UDP datagrams carry their sequence number in the first `SEQ_LEN` bytes as
/// upper-case hex digits: the transform leaves them unchanged, and a server that
/// lower-cases would turn `A`-`F` into something that no longer parses.
pub const SEQ_LEN: usize = 16;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

pub fn put_seq(buf: &mut [u8], seq: u64) {
    for (i, b) in buf[..SEQ_LEN].iter_mut().enumerate() {
        *b = HEX[((seq >> (4 * (SEQ_LEN - 1 - i))) & 0xf) as usize];
    }
}

pub fn parse_seq(buf: &[u8]) -> Option<u64> {
    let digits = buf.get(..SEQ_LEN)?;
    let mut v: u64 = 0;
    for &d in digits {
        let x = match d {
            b'0'..=b'9' => d - b'0',
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(x);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_only_touches_ascii_lowercase() {
        for b in 0..=255u8 {
            let u = upper_byte(b);
            if b.is_ascii_lowercase() {
                assert_eq!(u, b.to_ascii_uppercase());
            } else {
                assert_eq!(u, b, "byte {b:#x} must pass unchanged");
            }
        }
    }

    #[test]
    fn pattern_covers_every_byte_value_and_has_letters_everywhere() {
        let p = Pattern::new(512, 64);
        let mut seen = [false; 256];
        for &b in p.request(0, 512.min(p.window() + 448)) {
            seen[b as usize] = true;
        }
        let mut all = [false; 256];
        for i in 0..512 {
            all[pattern_byte(i) as usize] = true;
        }
        assert!(all.iter().all(|&s| s), "every byte value appears in one period");
        // Any two consecutive bytes hold a lower-case letter.
        for off in 0..512 {
            assert!(p.request(off, 2).iter().any(|b| b.is_ascii_lowercase()));
        }
        assert!(seen.iter().filter(|&&s| s).count() > 100);
    }

    #[test]
    fn windows_wrap_around_the_period() {
        let p = Pattern::new(512, 32);
        for off in [0usize, 1, 500, 511, 512, 1000, 1023] {
            let r = p.request(off, 32);
            for (k, &b) in r.iter().enumerate() {
                assert_eq!(b, pattern_byte((off + k) % 512));
            }
            let e = p.expected(off, 32);
            assert!(r.iter().zip(e).all(|(&a, &b)| upper_byte(a) == b));
        }
        // An odd (prime) period, as the stream mode uses.
        let q = Pattern::new(65521, 1024);
        assert_eq!(q.request(65521 * 3 + 7, 10), q.request(7, 10));
    }

    #[test]
    fn chunk_checks() {
        let exp = b"HELLO, WORLD";
        assert!(chunk_ok(exp, 0, b"HELLO"));
        assert!(chunk_ok(exp, 5, b", WORLD"));
        assert!(!chunk_ok(exp, 5, b", world"), "lower-cased reply is wrong");
        assert!(!chunk_ok(exp, 10, b"LD!"), "longer than the request is wrong");
        assert!(!chunk_ok(exp, 0, b"hELLO"));
        assert!(chunk_ok(exp, 12, b""));
        let p = Pattern::new(512, 64);
        let req = p.request(37, 64).to_vec();
        let reply: Vec<u8> = req.iter().map(|b| b.to_ascii_uppercase()).collect();
        assert!(chunk_ok(p.expected(37, 64), 0, &reply));
        let lowered: Vec<u8> = reply.iter().map(|b| b.to_ascii_lowercase()).collect();
        assert!(!chunk_ok(p.expected(37, 64), 0, &lowered));
    }

    #[test]
    fn seq_round_trip() {
        let mut b = [0u8; 20];
        for s in [0u64, 1, 0xabcdef, u64::MAX, 1234567890123] {
            put_seq(&mut b, s);
            assert_eq!(parse_seq(&b), Some(s));
            // Upper-casing leaves the digits alone.
            let up: Vec<u8> = b.iter().map(|&x| upper_byte(x)).collect();
            assert_eq!(parse_seq(&up), Some(s));
        }
        put_seq(&mut b, 0xABC);
        let low: Vec<u8> = b.iter().map(|x| x.to_ascii_lowercase()).collect();
        assert_eq!(parse_seq(&low), None, "lower-cased hex does not parse");
        assert_eq!(parse_seq(b"12"), None, "too short");
    }
}
