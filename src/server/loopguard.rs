//! Cutting reply loops: what stops two echo-like servers from answering
//! each other for ever after one forged datagram.
//!
//! An upper-cased reply upper-cases to itself. So a datagram sent to server
//! A with server B's address forged as its source makes A answer B, B
//! answer A with the same bytes, and so on: a loop that runs at full speed
//! with no one sending anything more. The UDP loop's port rules
//! (`udp_loop.rs`) stop it when B is on port 0, below 1024 or on A's own
//! port; this is the rule for every other port.
//!
//! **The rule.** A datagram from source S is an *echo* when it is, byte for
//! byte, a reply we sent to S at most [`WINDOW_MS`] before. Echoes from S
//! are counted (whatever their payloads), and the count starts again when
//! an echo comes more than `WINDOW_MS` after the previous one from S. The
//! echo that takes the count past [`ECHOES_ALLOWED`] is dropped, not
//! answered, and the count goes back to 0.
//!
//! **Why that cuts a loop.** In a loop every datagram after the first is an
//! echo, arriving one round trip after the reply it repeats, so each
//! forged datagram costs each server at most about `ECHOES_ALLOWED`
//! replies: when one is dropped, nothing comes back. Several loops through
//! the same pair (one forged datagram each, different payloads) are
//! counted together, and each drop ends one of them.
//!
//! **What it costs.** Only a datagram without `a`-`z` can be an echo
//! (every reply is upper case), so the UDP loop hands only those to
//! [`LoopGuard::admit`], and only their replies are remembered: a request
//! with a lower-case letter costs nothing here. (So the first reply of a
//! loop started by a lower-case datagram goes unremembered; the loop is
//! counted from its second round.) A client that sends us back our own
//! replies, one after the other, each within a second of the last answer,
//! loses one datagram in `ECHOES_ALLOWED + 1` (UDP allows loss; it
//! retries). A client that sends varying payloads, or repeats one less
//! often than once a second, loses none.
//!
//! **What it does not see.** A loop through a service that changes the
//! bytes it returns (lower-cases them, adds a timestamp): its datagrams are
//! never byte for byte our replies. And loops slower than `WINDOW_MS` a
//! round trip, which are not a flood.
//!
//! **State.** Two tables per loop thread, allocated once, fixed in size: the
//! replies sent (one slot per source and payload) and the echo counts (one
//! slot per source). A slot is chosen by a keyed hash ([`RandomState`]: an
//! attacker cannot aim two loops at one slot) and holds that hash, to
//! confirm it, and a time. Two entries that share a slot overwrite each
//! other; two loops that happen to do so would hide each other's echoes, so
//! the keys change every [`EPOCH_MS`] and no such collision outlasts that.
//! No allocation per datagram, and nothing that grows with the number of
//! clients.

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use crate::addr::IpPort;

/// Echoes from one source answered in a row; the next is dropped. A loop
/// then costs each server about this many replies per forged datagram,
/// while a client that does repeat our replies back to us loses only one
/// datagram in 65, which UDP clients retry anyway. A power of two only by
/// taste.
const ECHOES_ALLOWED: u32 = 64;

/// How soon after our reply a datagram must come back to count as its
/// echo, and how close two echoes must be to be counted together. Longer
/// than any real round trip (a loop across the world, or via a
/// geostationary satellite, takes well under a second), so every loop is
/// seen; short enough that a client repeating itself less often than once
/// a second is never counted.
const WINDOW_MS: u64 = 1000;

/// Replies remembered per loop thread (16 bytes each: 64 KiB). Far more
/// than the datagrams that can be on their way to one socket at once (its
/// receive buffer holds a few hundred small ones), so loops running side
/// by side seldom overwrite each other's entries. A power of two: the slot
/// is the hash's low bits.
const REPLY_SLOTS: usize = 4096;

/// Sources whose echoes are counted per loop thread (24 bytes each:
/// 24 KiB). Only sources that echo take one, and a loop is cut after 65
/// round trips (milliseconds on one network), so loops with many servers
/// at once still seldom share a slot.
const SOURCE_SLOTS: usize = 1024;

/// How long the hash keys last: 2^17 ms, about 131 s. They change so that
/// two loops whose entries share a slot (1 in 4096 for two loops through
/// one pair), and so hide each other's echoes, are seen in the next
/// period. Longer than `ECHOES_ALLOWED` echoes at one per `WINDOW_MS`
/// (65 s), so even the slowest loop that counts is cut within two periods.
const EPOCH_MS: u64 = 1 << 17;

/// One reply we sent: to whom and what (one keyed hash of both), and when.
#[derive(Clone, Copy, Default)]
struct Reply {
    /// 0: empty (a real tag is never 0).
    tag: u64,
    sent_ms: u64,
}

/// The echoes counted from one source.
#[derive(Clone, Copy, Default)]
struct Source {
    /// 0: empty (a real tag is never 0).
    tag: u64,
    /// When the last echo came.
    last_ms: u64,
    echoes: u32,
}

/// The state of the rule for one loop thread.
pub(super) struct LoopGuard {
    keys: RandomState,
    start: Instant,
    replies: Box<[Reply]>,
    sources: Box<[Source]>,
}

impl LoopGuard {
    pub(super) fn new() -> LoopGuard {
        LoopGuard {
            keys: RandomState::new(),
            start: Instant::now(),
            replies: vec![Reply::default(); REPLY_SLOTS].into_boxed_slice(),
            sources: vec![Source::default(); SOURCE_SLOTS].into_boxed_slice(),
        }
    }

    /// Milliseconds since the guard was made: the clock `admit` takes.
    /// Read it once per batch of datagrams.
    pub(super) fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// May the datagram `reply` from `from`, received at `now_ms`, be
    /// answered? Only for a datagram that upper-casing left unchanged (so
    /// `reply` is both what came and what would go back). `true`: answer
    /// it; the reply is remembered as sent. `false`: drop it, it is the echo
    /// that took `from` past [`ECHOES_ALLOWED`].
    pub(super) fn admit(&mut self, from: &IpPort, reply: &[u8], now_ms: u64) -> bool {
        let source = self.source_hasher(from, now_ms / EPOCH_MS);
        let reply_tag = tag_of(&source, Some(payload_hash(reply)));
        let slot = reply_tag as usize & (REPLY_SLOTS - 1);
        let seen = self.replies[slot];
        // `now_ms` never goes back (one monotonic clock); saturating anyway.
        let echo = seen.tag == reply_tag && now_ms.saturating_sub(seen.sent_ms) <= WINDOW_MS;
        if echo {
            let source_tag = tag_of(&source, None);
            let count = &mut self.sources[source_tag as usize & (SOURCE_SLOTS - 1)];
            if count.tag == source_tag && now_ms.saturating_sub(count.last_ms) <= WINDOW_MS {
                count.echoes += 1;
            } else {
                *count = Source { tag: source_tag, last_ms: now_ms, echoes: 1 };
            }
            count.last_ms = now_ms;
            if count.echoes > ECHOES_ALLOWED {
                count.echoes = 0;
                return false;
            }
        }
        self.replies[slot] = Reply { tag: reply_tag, sent_ms: now_ms };
        true
    }

    /// The keyed hash of `from` in `epoch`, ready to take more.
    fn source_hasher(&self, from: &IpPort, epoch: u64) -> DefaultHasher {
        let mut h = self.keys.build_hasher();
        h.write_u64(epoch);
        match *from {
            IpPort::V4(ip, port) => {
                h.write_u8(4);
                h.write(&ip);
                h.write_u16(port);
            }
            IpPort::V6(ip, port, scope) => {
                h.write_u8(6);
                h.write(&ip);
                h.write_u16(port);
                h.write_u32(scope);
            }
        }
        h
    }
}

/// The tag of a source (`payload: None`) or of a reply to it: the keyed
/// hash, never 0 (0 marks an empty slot).
fn tag_of(source: &DefaultHasher, payload: Option<u64>) -> u64 {
    let mut h = source.clone();
    match payload {
        Some(p) => {
            h.write_u8(1);
            h.write_u64(p);
        }
        None => h.write_u8(0),
    }
    h.finish().max(1)
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;

/// One step: mix 8 bytes into an accumulator (multiply, rotate, multiply).
#[inline(always)]
fn round(acc: u64, word: u64) -> u64 {
    acc.wrapping_add(word.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1)
}

/// Eight bytes as a number (`bytes` is 8 long; any shorter is padded with 0).
#[inline(always)]
fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or_default())
}

/// A fast 64-bit hash of a whole payload and its length, for telling
/// whether a datagram is one we sent. Not keyed and not for security: it
/// only compares (the keyed hash above places the result). Four
/// independent lanes over 32-byte blocks, so that the multiplications
/// overlap: a 64-byte datagram takes a few nanoseconds.
fn payload_hash(bytes: &[u8]) -> u64 {
    let len = bytes.len() as u64;
    let mut lanes = [P1.wrapping_add(P2), P2, 0, P1.wrapping_neg()];
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            *lane = round(*lane, word(w));
        }
    }
    let mut h = lanes[0].rotate_left(1)
        ^ lanes[1].rotate_left(7)
        ^ lanes[2].rotate_left(12)
        ^ lanes[3].rotate_left(18)
        ^ len.wrapping_mul(P3);
    let mut words = blocks.remainder().chunks_exact(8);
    for w in &mut words {
        h = round(h, word(w));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut last = [0u8; 8];
        last[..tail.len()].copy_from_slice(tail);
        h = round(h, u64::from_le_bytes(last));
    }
    // Spread every input bit over the result.
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;

    fn from(port: u16) -> IpPort {
        IpPort::V4([127, 0, 0, 1], port)
    }

    /// Runs loops from `source`: each turn, each payload still looping
    /// comes back 1 ms after the last datagram (as in a loop, where every
    /// datagram repeats our reply). A dropped one ends its loop. Returns the
    /// datagrams answered before every loop ended, or `None` if some still
    /// ran after `limit` datagrams.
    fn run_loops(g: &mut LoopGuard, source: &IpPort, payloads: &[Vec<u8>], t: &mut u64, limit: u64) -> Option<u64> {
        let mut live: Vec<&Vec<u8>> = payloads.iter().collect();
        let mut answered = 0;
        while !live.is_empty() {
            live.retain(|p| {
                *t += 1;
                let ok = g.admit(source, p, *t);
                answered += u64::from(ok);
                ok
            });
            if answered > limit {
                return None;
            }
        }
        Some(answered)
    }

    #[test]
    fn a_loop_is_cut_after_the_echoes_allowed() {
        let mut g = LoopGuard::new();
        let mut t = 0;
        // The first datagram is not an echo; the next ECHOES_ALLOWED are
        // answered, the one after is dropped.
        let answered = run_loops(&mut g, &from(40_000), &[b"PING".to_vec()], &mut t, 1000);
        assert_eq!(answered, Some(u64::from(ECHOES_ALLOWED) + 1));
    }

    #[test]
    fn the_count_starts_again_after_a_drop() {
        let mut g = LoopGuard::new();
        let s = from(40_000);
        let mut drops = Vec::new();
        for t in 1..=1000 {
            if !g.admit(&s, b"SAME AGAIN", t) {
                drops.push(t);
            }
        }
        // Dropped: the 66th, then every 65th (the drop answers nothing, and
        // the reply it would have repeated is still fresh).
        let every = u64::from(ECHOES_ALLOWED) + 1;
        let want: Vec<u64> = (1..).map(|k| 1 + k * every).take_while(|&t| t <= 1000).collect();
        assert_eq!(drops, want);
    }

    #[test]
    fn interleaved_loops_through_one_pair_are_all_cut() {
        // One forged datagram per loop, each with its own payload: between
        // two echoes of one loop come the others', so no datagram repeats
        // the reply sent just before it. Each is still an echo of its own.
        let mut g = LoopGuard::new();
        let mut t = 0;
        let two = [b"LOOP ONE".to_vec(), b"LOOP TWO".to_vec()];
        let answered = run_loops(&mut g, &from(40_000), &two, &mut t, 10_000).expect("two loops cut");
        assert!(answered <= 2 * (u64::from(ECHOES_ALLOWED) + 2), "{answered}");
        // Many at once: every drop ends one. Random slot collisions between
        // them last at most one period of the keys: allow three.
        let many: Vec<Vec<u8>> = (0..200).map(|i| format!("LOOP {i}").into_bytes()).collect();
        let mut t = 0;
        let mut g = LoopGuard::new();
        let limit = 3 * EPOCH_MS;
        assert!(run_loops(&mut g, &from(40_000), &many, &mut t, limit).is_some(), "loops still running");
    }

    #[test]
    fn a_client_sending_varying_payloads_is_never_cut() {
        let mut g = LoopGuard::new();
        let s = from(40_000);
        for i in 0..20_000u64 {
            // Already upper case, so each could be an echo; none repeats.
            let msg = format!("REQUEST {i:06}");
            assert!(g.admit(&s, msg.as_bytes(), i), "{msg}");
        }
        // Nor is a client repeating itself with a pause longer than the window.
        for i in 0..1000 {
            assert!(g.admit(&s, b"STATUS?", 100_000 + i * (WINDOW_MS + 1)));
        }
    }

    #[test]
    fn an_echo_after_the_window_does_not_count() {
        let mut g = LoopGuard::new();
        let s = from(40_000);
        let mut t = 0;
        // Echo after echo, but every fourth one late: the count never
        // builds up past three.
        for i in 0..2000u64 {
            t += if i % 4 == 0 { WINDOW_MS + 1 } else { 1 };
            assert!(g.admit(&s, b"PONG", t), "datagram {i}");
        }
        // Exactly at the window it still counts.
        let mut g = LoopGuard::new();
        let dropped = (1..=100u64).filter(|&i| !g.admit(&s, b"PONG", i * WINDOW_MS)).count();
        assert_eq!(dropped, 1);
    }

    #[test]
    fn sources_are_counted_apart() {
        // A loop through one source does not cost another source anything,
        // even with the same payload.
        let mut g = LoopGuard::new();
        let (a, b) = (from(40_000), from(40_001));
        let mut t = 0;
        for i in 0..ECHOES_ALLOWED {
            t += 1;
            assert!(g.admit(&a, b"SAME", t), "{i}");
            assert!(g.admit(&b, b"SAME", t), "{i}");
        }
        t += 1;
        assert!(g.admit(&a, b"SAME", t), "a's 64th echo");
        assert!(!g.admit(&a, b"SAME", t), "a's 65th echo");
        assert!(g.admit(&b, b"SAME", t), "b's 64th echo");
        let v6 = IpPort::V6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 40_000, 0);
        assert!(g.admit(&v6, b"SAME", t), "another family, another source");
    }

    /// The slot `payload`'s reply to `s` takes at time `t`.
    fn reply_slot(g: &LoopGuard, s: &IpPort, payload: &[u8], t: u64) -> usize {
        tag_of(&g.source_hasher(s, t / EPOCH_MS), Some(payload_hash(payload))) as usize & (REPLY_SLOTS - 1)
    }

    /// The slot `s`'s echo count takes at time `t`.
    fn source_slot(g: &LoopGuard, s: &IpPort, t: u64) -> usize {
        tag_of(&g.source_hasher(s, t / EPOCH_MS), None) as usize & (SOURCE_SLOTS - 1)
    }

    #[test]
    fn collisions_overwrite_hide_for_one_period_at_most_and_memory_stays_fixed() {
        let mut g = LoopGuard::new();
        let s = from(40_000);
        // Two payloads whose replies share a slot now, but not in the
        // next period of the keys.
        let first = b"LOOP 0".to_vec();
        let next = EPOCH_MS;
        let second = (1..)
            .map(|i| format!("LOOP {i}").into_bytes())
            .find(|p| {
                reply_slot(&g, &s, p, 0) == reply_slot(&g, &s, &first, 0)
                    && reply_slot(&g, &s, p, next) != reply_slot(&g, &s, &first, next)
            })
            .expect("a colliding payload");
        // Interleaved, they overwrite each other's entries: no echo is seen
        // and nothing is dropped, for the rest of the period...
        let pair = [first, second];
        let mut t = 0;
        assert_eq!(run_loops(&mut g, &s, &pair, &mut t, 10_000), None);
        // ...and the next period cuts both.
        let mut t = next;
        assert!(run_loops(&mut g, &s, &pair, &mut t, 500).is_some());

        // The same for two sources whose echo counts share a slot.
        let mut g = LoopGuard::new();
        let one = from(40_000);
        let other = (40_001..=u16::MAX)
            .map(from)
            .find(|o| {
                source_slot(&g, o, 0) == source_slot(&g, &one, 0)
                    && source_slot(&g, o, next) != source_slot(&g, &one, next)
                    && reply_slot(&g, o, b"Y", next) != reply_slot(&g, &one, b"X", next)
            })
            .expect("a colliding source");
        let both = |g: &mut LoopGuard, t0: u64, turns: u64| {
            (0..turns).all(|i| g.admit(&one, b"X", t0 + i) && g.admit(&other, b"Y", t0 + i))
        };
        assert!(both(&mut g, 0, 10_000), "hidden for the period");
        assert!(!both(&mut g, next, 500), "cut in the next");

        // Many sources and payloads: slots are overwritten, nothing grows.
        let mut g = LoopGuard::new();
        for i in 0..200_000u32 {
            let s = IpPort::V4([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 1024 + (i % 50_000) as u16);
            assert!(g.admit(&s, format!("PAYLOAD {i}").as_bytes(), u64::from(i) / 100));
        }
        assert_eq!(g.replies.len(), REPLY_SLOTS);
        assert_eq!(g.sources.len(), SOURCE_SLOTS);
        assert_eq!(size_of::<Reply>(), 16);
        assert_eq!(size_of::<Source>(), 24);
    }

    #[test]
    fn the_payload_hash_sees_every_byte_and_the_length() {
        let base: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        for len in 0..base.len() {
            let h = payload_hash(&base[..len]);
            assert_ne!(h, payload_hash(&base[..len + 1]), "length {len}");
            for i in 0..len {
                let mut other = base[..len].to_vec();
                other[i] ^= 1;
                assert_ne!(h, payload_hash(&other), "length {len}, byte {i}");
            }
        }
        // Trailing zero bytes are not lost in the padding.
        assert_ne!(payload_hash(b"A"), payload_hash(b"A\0"));
        assert_ne!(payload_hash(&[]), payload_hash(&[0]));
    }
}
