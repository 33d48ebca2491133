//! The simulator of the TCP connection state machine (`conn.rs`): a
//! simulated client and kernel that drive a [`Conn`] through arbitrary
//! sequences of reads, writes, partial reads and writes, errors, spurious
//! wake-ups and the passing of time, and check after every step what the
//! server promises. It panics when a promise is broken.
//!
//! Compiled only for the unit tests and the `conn` fuzz target
//! (`fuzz/fuzz_targets/conn.rs`), never into the library. Its TLS
//! counterpart, for `tls_conn.rs`, is the submodule `tls`.
//!
//! The promises:
//! - every byte sent back is the upper-cased byte received at the same
//!   position of the stream: nothing lost, added, reordered or changed;
//! - at most one buffer's worth is held for a client (back-pressure): the
//!   connection never reads while a reply is pending;
//! - one wake-up reads at most `READ_BUDGET` times (fairness);
//! - `Close` only after the client's end of stream, with everything
//!   answered; `Fail` only after a fatal error from the socket;
//! - once the script ends, a client that half-closes and reads everything
//!   gets its whole reply and the connection closes;
//! - the connection expires exactly when the idle timeout and the minimum
//!   rate, computed here independently, say so;
//! - the first read of a wake-up is offered the whole buffer (a request
//!   of exactly that size is answered in one send), unless the wake-up
//!   began by sending a reply held back (the client streams);
//! - the segment size is asked for after two full reads in a row in one
//!   wake-up (or one, after a held-back reply went), and only then; a read
//!   that follows a full one (or such a reply) is offered whole segments of
//!   the size last told ([`read_len`]; the whole buffer while none is).

#[cfg(feature = "tls")]
pub mod tls;

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use super::conn::{read_len, Conn, Ctx, Io, Outcome, READ_BUDGET};
use super::pace::Limits;
use super::Counters;
use crate::upper::upper_in_place;

/// The kernel's side of the connection, as the server sees it.
#[derive(Default)]
struct FakeSocket {
    /// Sent by the client, not yet read by the server.
    inbound: VecDeque<u8>,
    /// The client has half-closed.
    eof: bool,
    /// Sent by the server, not yet read by the client.
    outbound: usize,
    /// Room the send buffer has in all.
    send_capacity: usize,
    /// Most bytes one `recv` returns (a partial read), 0 = no limit.
    recv_max: usize,
    /// Errors the next calls return, in order.
    recv_errors: VecDeque<i32>,
    send_errors: VecDeque<i32>,
    /// Everything the server has sent, for checking.
    received_by_client: Vec<u8>,
    /// A fatal error has been returned.
    failed: bool,
    /// Calls made during the current wake-up.
    recvs: usize,
    /// Bytes read by the server and bytes sent by it, in all.
    read_total: usize,
    /// Set while a reply is pending: a read then breaks back-pressure.
    must_not_read: bool,
    /// The last send had `MSG_MORE`: the kernel may be holding its
    /// bytes until a send without it, or the close, pushes them.
    corked: bool,
    corked_sends: usize,
    /// The server has shut down its side of the connection.
    finished: bool,
    /// What `segment_size` answers (0: it fails).
    mss: u16,
    /// The server's whole buffer, and what `segment_size` last told
    /// the server.
    buf_len: usize,
    told: Option<u16>,
    /// Reads in this wake-up that returned data.
    data_reads: usize,
    /// Full reads in a row, up to the last one that returned data in
    /// this wake-up; a wake-up that began by sending a held-back reply
    /// starts at one.
    full_run: usize,
    /// `segment_size` was called since the last read that returned data.
    asked: bool,
    /// Reads offered less than the whole buffer, cut to segments.
    cut_reads: usize,
}

impl FakeSocket {
    /// A new wake-up; `flushing`: it begins by sending a held-back reply.
    fn wake(&mut self, flushing: bool) {
        self.recvs = 0;
        self.data_reads = 0;
        self.full_run = usize::from(flushing);
    }
}

fn fatal(code: i32) -> bool {
    !matches!(code, libc::EAGAIN | libc::EINTR)
}

/// What one `recv` takes from the bytes the kernel holds: as many as fit
/// in `buf`, and at most `recv_max` (0: no limit).
fn take_inbound(inbound: &mut VecDeque<u8>, buf: &mut [u8], recv_max: usize) -> usize {
    let mut n = inbound.len().min(buf.len());
    if recv_max > 0 {
        n = n.min(recv_max);
    }
    for (slot, byte) in buf.iter_mut().zip(inbound.drain(..n)) {
        *slot = byte;
    }
    n
}

impl Io for FakeSocket {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        assert!(!self.must_not_read, "read while a reply was pending (back-pressure broken)");
        assert!(!self.failed, "used after a fatal error");
        self.recvs += 1;
        if self.data_reads == 0 && self.full_run == 0 {
            assert_eq!(buf.len(), self.buf_len, "the first read of a wake-up cut short");
        }
        if self.full_run >= 2 {
            assert!(self.asked, "a client seen to stream, not asked its segment size");
        }
        if self.full_run > 0 {
            let cut = read_len(self.buf_len, self.told.unwrap_or(0));
            assert_eq!(buf.len(), cut, "a read after a full one not cut to the segments last told");
            self.cut_reads += usize::from(cut < self.buf_len);
        }
        if let Some(code) = self.recv_errors.pop_front() {
            self.failed |= fatal(code);
            return Err(io::Error::from_raw_os_error(code));
        }
        if self.inbound.is_empty() {
            return if self.eof { Ok(0) } else { Err(io::Error::from_raw_os_error(libc::EAGAIN)) };
        }
        let n = take_inbound(&mut self.inbound, buf, self.recv_max);
        self.read_total += n;
        self.data_reads += 1;
        self.asked = false;
        self.full_run = if n == buf.len() { self.full_run + 1 } else { 0 };
        Ok(n)
    }

    fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
        assert!(!self.failed, "used after a fatal error");
        assert!(!buf.is_empty(), "an empty send");
        assert!(!self.finished, "a send after our end of stream");
        if more {
            assert!(self.eof && self.inbound.is_empty(), "MSG_MORE before the end of stream was read");
        }
        if let Some(code) = self.send_errors.pop_front() {
            self.failed |= fatal(code);
            return Err(io::Error::from_raw_os_error(code));
        }
        let room = self.send_capacity.saturating_sub(self.outbound);
        if room == 0 {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let n = room.min(buf.len());
        self.corked = more;
        self.corked_sends += usize::from(more);
        self.outbound += n;
        self.received_by_client.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn finish(&mut self) -> io::Result<()> {
        assert!(!self.failed, "used after a fatal error");
        assert!(self.eof && self.inbound.is_empty(), "our end of stream before the client's was read");
        self.corked = false;
        self.finished = true;
        Ok(())
    }

    fn segment_size(&mut self) -> Option<u16> {
        assert!(self.full_run >= 2, "the segment size asked for before the client was seen to stream");
        self.told = Some(self.mss);
        self.asked = true;
        (self.mss > 0).then_some(self.mss)
    }
}

/// Reads script bytes, 0 once they run out.
struct Script<'a> {
    data: &'a [u8],
    at: usize,
}

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// What one run did, for the tests to check that scripts reach every
/// corner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Bytes the client sent.
    pub sent: usize,
    /// The connection closed normally, failed, or expired.
    pub closed: bool,
    /// Failed after an injected fatal error.
    pub failed: bool,
    /// Expired (idle timeout or minimum rate).
    pub expired: bool,
    /// Wake-ups that found a reply pending (back-pressure engaged).
    pub writing_wakeups: usize,
    /// Replies sent with `MSG_MORE` (the end of stream read ahead).
    pub corked_sends: usize,
    /// Reads cut to whole segments, short of the whole buffer.
    pub cut_reads: usize,
    /// Wake-ups served as the io_uring loop serves them.
    pub ring_wakeups: usize,
    /// ... whose read was full (a stream, [`Conn::stream`]).
    pub ring_streams: usize,
}

/// What the io_uring loop does with a connection in the reading state
/// (`completions.rs`): a `recv` of its own into a provided buffer (here
/// `ring_buf`, the size of the loop's); a full read goes on as a
/// stream ([`Conn::stream`]), a short one gets its reply in a `send`
/// whose result [`Conn::replied`] takes. End of stream closes, an
/// `EAGAIN` or `EINTR` keeps, any other error fails, as there.
fn ring_completion(conn: &mut Conn<FakeSocket>, buf: &mut [u8], cx: &Ctx, r: &mut Report) -> Outcome {
    r.ring_wakeups += 1;
    let mut ring_buf = vec![0u8; buf.len()];
    let n = match conn.sock.recv(&mut ring_buf) {
        Ok(0) => return Outcome::Close,
        Ok(n) => n.min(ring_buf.len()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => return Outcome::Keep,
        Err(_) => return Outcome::Fail,
    };
    conn.received(n, cx);
    let chunk = &mut ring_buf[..n];
    upper_in_place(chunk);
    if n == buf.len() {
        r.ring_streams += 1;
        // The system calls that follow are a wake-up of their own, that
        // begins after one full read.
        conn.sock.wake(true);
        return conn.stream(chunk, buf, cx);
    }
    let result = conn.sock.send(chunk, false);
    conn.replied(chunk, result, cx.counters)
}

/// The reference transform, one byte at a time.
fn upper(b: u8) -> u8 {
    if b.is_ascii_lowercase() {
        b - 32
    } else {
        b
    }
}

/// Runs the script `data`; panics if a promise is broken.
pub fn run(data: &[u8]) -> Report {
    let (mut report, sock) = play(data);
    report.corked_sends = sock.corked_sends;
    report.cut_reads = sock.cut_reads;
    report
}

/// [`run`], handing back the fake socket too, for what it counted.
fn play(data: &[u8]) -> (Report, FakeSocket) {
    let mut s = Script { data, at: 0 };
    // The server's buffer: 1 to 64 bytes, so that the stream crosses
    // many chunk boundaries with few script bytes.
    let buf_len = usize::from(s.byte() % 64) + 1;
    let idle_ms = u64::from(s.byte() % 16) * 50; // 0 = no idle timeout
                                                 // Bytes per second; each divides 10^9, so the model's credit is exact.
    let min_rate = [0, 10, 20, 40, 50, 80, 100, 1000][usize::from(s.byte() % 8)];
    let idle = (idle_ms > 0).then_some(idle_ms * 1_000_000);
    let limits = Limits::new(idle.map(Duration::from_nanos), min_rate);
    let counters = Counters::default();
    let mut buf = vec![0u8; buf_len];
    let mut sock = FakeSocket { send_capacity: usize::from(s.byte()), buf_len, ..FakeSocket::default() };
    // One byte, two knobs: the longest read, and the segment size
    // (0: unknown; mostly smaller than the buffer, so reads are cut).
    let b = s.byte();
    sock.recv_max = usize::from(b % 8);
    sock.mss = u16::from(b / 8 % 32);
    let mut sent_by_client: Vec<u8> = Vec::new();
    let mut now: u64 = 1_000_000_000;
    // The reference model of the deadline.
    let mut last = now;
    let mut credit = now + idle.unwrap_or(0);
    let mut conn = Conn::new(sock, now, &limits);
    let mut report = Report::default();
    let mut first = true;

    // `failed`: a connection that just failed may have read bytes it
    // will never answer; only what it did send is checked.
    let check = |conn: &Conn<FakeSocket>, sent_by_client: &[u8], buf_len: usize, failed: bool| {
        let out = &conn.sock.received_by_client;
        assert!(out.len() <= sent_by_client.len(), "more bytes back than sent");
        for (i, (&got, &was)) in out.iter().zip(sent_by_client).enumerate() {
            assert_eq!(got, upper(was), "byte {i} of the reply is wrong");
        }
        if failed {
            return;
        }
        let held = conn.sock.read_total - out.len();
        assert_eq!(held, conn.held(), "bytes read but neither sent nor held");
        assert!(held <= buf_len, "more than one buffer held for the client");
    };

    loop {
        let at_end = s.done();
        let op = if at_end { 255 } else { s.byte() };
        let mut wake = false;
        let mut spurious = false;
        // Served as the io_uring loop serves a completed `recv`.
        let mut ring = false;
        match op % 12 {
            0 | 1 => {
                // The client sends some bytes (unless it half-closed).
                let len = usize::from(s.byte() % 48) + 1;
                if !conn.sock.eof {
                    for _ in 0..len {
                        let b = s.byte();
                        conn.sock.inbound.push_back(b);
                        sent_by_client.push(b);
                    }
                    report.sent += len;
                }
            }
            2 => conn.sock.eof = true,
            3 => {
                // The client reads some of its reply.
                let n = usize::from(s.byte());
                conn.sock.outbound = conn.sock.outbound.saturating_sub(n);
            }
            4 => conn.sock.send_capacity = usize::from(s.byte()),
            5 => {
                // As above; a new segment size is the path's MTU changing.
                let b = s.byte();
                conn.sock.recv_max = usize::from(b % 8);
                conn.sock.mss = u16::from(b / 8 % 32);
            }
            6 => {
                let code = [libc::EINTR, libc::EAGAIN, libc::ECONNRESET, libc::ENOTCONN][usize::from(s.byte() % 4)];
                conn.sock.recv_errors.push_back(code);
            }
            7 => {
                let code = [libc::EINTR, libc::EAGAIN, libc::EPIPE, libc::ECONNRESET][usize::from(s.byte() % 4)];
                conn.sock.send_errors.push_back(code);
            }
            8 => {
                // Time passes; the loop's sweep looks at the connection.
                now += u64::from(s.byte()) * 5_000_000;
                let deadline = idle.map(|i| if min_rate > 0 { (last + i).min(credit) } else { last + i });
                let expect = deadline.is_some_and(|d| now >= d);
                assert_eq!(conn.deadline(&limits), deadline, "deadline differs from the model");
                assert_eq!(conn.expired(now, &limits), expect);
                if expect {
                    report.closed = true;
                    report.expired = true;
                    return (report, conn.sock);
                }
            }
            9 => spurious = true,
            10 => wake = true,
            _ => {
                wake = true;
                ring = true;
            }
        }
        if at_end {
            // The end of the script: the client half-closes and reads
            // everything; the connection must finish cleanly.
            conn.sock.eof = true;
            conn.sock.send_capacity = usize::MAX;
            conn.sock.recv_errors.retain(|&c| !fatal(c));
            conn.sock.send_errors.retain(|&c| !fatal(c));
            wake = true;
        }
        if !(wake || spurious) {
            continue;
        }
        // A wake-up, as level-triggered epoll gives it: readable when
        // there is input, an end of stream or an error to read;
        // writable when there is room or an error. A spurious one says
        // both while neither holds.
        let sock = &conn.sock;
        let readable = spurious || !sock.inbound.is_empty() || sock.eof || !sock.recv_errors.is_empty();
        let writable = spurious || sock.outbound < sock.send_capacity || !sock.send_errors.is_empty();
        if !first && !(if conn.wants_write() { writable } else { readable }) {
            continue;
        }
        conn.sock.wake(conn.wants_write() && writable);
        conn.sock.must_not_read = conn.wants_write() && !(writable && would_drain(&conn.sock, conn.held()));
        let before_read = conn.sock.read_total;
        let before_out = conn.sock.received_by_client.len();
        let held_before = conn.held();
        let outcome = if first {
            first = false;
            conn.first(&mut buf, &Ctx { counters: &counters, now, limits: &limits })
        } else if ring && !at_end && !conn.wants_write() && !conn.is_fresh() {
            // (A connection that has sent nothing yet is polled, and
            // served by `ready`, as on epoll.)
            ring_completion(&mut conn, &mut buf, &Ctx { counters: &counters, now, limits: &limits }, &mut report)
        } else {
            if conn.wants_write() {
                report.writing_wakeups += 1;
            }
            conn.ready(readable, writable, &mut buf, &Ctx { counters: &counters, now, limits: &limits })
        };
        conn.sock.must_not_read = false;
        assert!(conn.sock.recvs <= READ_BUDGET, "{} reads in one wake-up", conn.sock.recvs);
        // The model: progress when a byte moved; credit for bytes read
        // and for held bytes flushed (sent first, before any new reply).
        let read = conn.sock.read_total - before_read;
        let out = conn.sock.received_by_client.len() - before_out;
        if read > 0 || out > 0 {
            last = now;
        }
        let earning = (read + out.min(held_before)) as u64;
        if min_rate > 0 && earning > 0 {
            credit = (credit + earning * 1_000_000_000 / u64::from(min_rate)).min(now + idle.unwrap_or(0));
        }
        check(&conn, &sent_by_client, buf_len, outcome == Outcome::Fail);
        check_cork(&conn, outcome);
        match outcome {
            Outcome::Keep => {}
            Outcome::Close => {
                assert!(conn.sock.eof, "closed before the client's end of stream");
                assert!(conn.sock.inbound.is_empty(), "closed with input unread");
                assert_eq!(conn.held(), 0, "closed with a reply pending");
                assert_eq!(conn.sock.received_by_client.len(), sent_by_client.len(), "closed with bytes unanswered");
                report.closed = true;
                return (report, conn.sock);
            }
            Outcome::Fail => {
                assert!(conn.sock.failed, "failed without a fatal error");
                report.closed = true;
                report.failed = true;
                return (report, conn.sock);
            }
        }
        if at_end {
            // Everything is there and there is room: the loop is woken
            // until done; it must not take more wake-ups than bytes.
            let most = sent_by_client.len() + conn.sock.recv_errors.len() + conn.sock.send_errors.len() + 4;
            for _ in 0..most {
                conn.sock.wake(conn.wants_write());
                let outcome = conn.ready(true, true, &mut buf, &Ctx { counters: &counters, now, limits: &limits });
                check(&conn, &sent_by_client, buf_len, outcome == Outcome::Fail);
                check_cork(&conn, outcome);
                match outcome {
                    Outcome::Close => {
                        assert_eq!(conn.sock.received_by_client.len(), sent_by_client.len());
                        report.closed = true;
                        return (report, conn.sock);
                    }
                    Outcome::Fail => panic!("failed with no fatal error left"),
                    Outcome::Keep => {}
                }
            }
            panic!("no end in sight after the client half-closed");
        }
    }
}

/// Bytes held back by `MSG_MORE` are never left there: a connection
/// that is kept must have a reply pending (whose sending pushes them),
/// and one that is closed must have finished (the FIN pushes them).
fn check_cork(conn: &Conn<FakeSocket>, outcome: Outcome) {
    match outcome {
        Outcome::Keep => {
            assert!(
                conn.wants_write() || !conn.sock.corked,
                "bytes sent with MSG_MORE, then neither finished nor pushed"
            )
        }
        Outcome::Close => assert!(!conn.sock.corked, "closed with bytes held back by MSG_MORE"),
        Outcome::Fail => {}
    }
}

/// Will the pending reply go out whole on this wake-up (so the
/// connection may read again within it)?
fn would_drain(sock: &FakeSocket, held: usize) -> bool {
    sock.send_errors.iter().all(|&c| c == libc::EINTR) && sock.send_capacity.saturating_sub(sock.outbound) >= held
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a reproducible stream of script bytes.
    fn scripts(seed: u64, count: usize, len: usize) -> impl Iterator<Item = Vec<u8>> {
        let mut x = seed;
        (0..count).map(move |_| {
            (0..len)
                .map(|_| {
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
                })
                .collect()
        })
    }

    #[test]
    fn random_scripts_keep_every_promise() {
        random_scripts(0x5EED, if cfg!(miri) { 20 } else { 20_000 });
    }

    /// The same, longer, with a seed of the caller's (`UPCASE_SIM_SEED`):
    /// `cargo test --release --lib random_scripts_long -- --ignored`.
    #[test]
    #[ignore = "long: run by hand"]
    fn random_scripts_long() {
        let seed = std::env::var("UPCASE_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xC0FFEE);
        random_scripts(seed, 2_000_000);
    }

    fn random_scripts(seed: u64, count: usize) {
        let mut total = Report::default();
        let mut closed = 0;
        for (i, script) in scripts(seed, count, 200).enumerate() {
            let r = std::panic::catch_unwind(|| run(&script))
                .unwrap_or_else(|_| panic!("script {i} broke a promise: {script:?}"));
            total.sent += r.sent;
            total.failed |= r.failed;
            total.expired |= r.expired;
            total.writing_wakeups += r.writing_wakeups;
            total.corked_sends += r.corked_sends;
            total.cut_reads += r.cut_reads;
            total.ring_wakeups += r.ring_wakeups;
            total.ring_streams += r.ring_streams;
            closed += usize::from(r.closed);
        }
        // Enough scripts reach every corner: failures, expiries,
        // back-pressure (a handful, as under Miri, may not).
        if count >= 10_000 {
            assert!(total.failed && total.expired, "{total:?}");
            assert!(total.writing_wakeups > 100, "{total:?}");
            assert!(total.corked_sends > 100, "{total:?}");
            assert!(total.cut_reads > 100, "{total:?}");
            assert!(total.ring_wakeups > 1000 && total.ring_streams > 100, "{total:?}");
        }
        assert_eq!(closed, count);
    }

    #[test]
    fn empty_and_tiny_scripts() {
        assert!(run(&[]).closed);
        for b in 0..=255u8 {
            run(&[b]);
            run(&[b, b, b, b, b, b, b]);
        }
    }
}
