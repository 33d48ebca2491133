//! One connection of the concurrent TCP server, as a state machine apart
//! from `epoll`, so that it can be driven by a test or a fuzzer through any
//! [`Io`] (a real socket in the server, a scripted fake in [`sim`]).
//!
//! A connection is in one of two states:
//! - *reading* (interest `IN`): a chunk is read into the loop's one buffer,
//!   upper-cased in place and sent straight back. No buffer belongs to the
//!   connection.
//! - *writing* (interest `OUT`): the kernel took only part of a reply; the
//!   rest is copied into a buffer of the connection's own and nothing more
//!   is read until it is sent (back-pressure: a client that does not read
//!   its replies is not read from, so at most one chunk is held for it).
//!   When it has gone, the buffer is freed and reading resumes at once.
//!
//! End of stream from the client (half-close) is seen only in the reading
//! state, so everything received before it has been answered when the
//! connection is closed.
//!
//! How long a connection may live without doing its share is [`Pace`]'s
//! business: the idle timeout, and the minimum rate that stops a client
//! sending one byte just before each idle timeout (slowloris).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::Counters;
use crate::sys;
use crate::upper::upper_in_place;

/// Reads per connection per wake-up, so one busy client cannot starve others.
pub(crate) const READ_BUDGET: usize = 16;

/// The two calls a connection makes on its socket.
pub(crate) trait Io {
    /// `recv()`: `Ok(0)` is the peer's end of stream.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// `send()`: may take only part of `buf`. With `more` (`MSG_MORE`) the
    /// kernel may hold the bytes back to go out with what follows: here
    /// always our end of stream ([`Io::finish`]), or, after a partial send,
    /// the rest of the reply sent without it, which pushes them out.
    fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize>;
    /// `shutdown(SHUT_WR)`: our end of stream, which pushes out anything
    /// held back by `MSG_MORE` in the same segment as the FIN. Done on the
    /// socket itself, so it happens even while another copy of the
    /// descriptor lives on (a `fork()`ed child of the host program), where
    /// a `close()` alone would send nothing.
    fn finish(&mut self) -> io::Result<()>;
    /// The connection's segment size (`TCP_MAXSEG`: the MSS the kernel
    /// sends with now), `None` if it cannot say.
    fn segment_size(&mut self) -> Option<u16>;
}

impl Io for OwnedFd {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.as_fd(), buf)
    }
    fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
        sys::send_flags(self.as_fd(), buf, if more { libc::MSG_MORE } else { 0 })
    }
    fn finish(&mut self) -> io::Result<()> {
        sys::shutdown(self.as_fd(), libc::SHUT_WR)
    }
    fn segment_size(&mut self) -> Option<u16> {
        segment_size(self.as_fd())
    }
}

/// `TCP_MAXSEG` of a connected socket: the segment size it sends with now.
/// `None` on an error or a value that is no MSS (0, or past 16 bits).
fn segment_size(fd: BorrowedFd<'_>) -> Option<u16> {
    let mss = sys::getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG).ok()?;
    u16::try_from(mss).ok().filter(|&m| m > 0)
}

/// How much of a `cap`-byte buffer to read into, for a connection whose
/// segment size is `mss` (0: not known): the most whole segments that fit,
/// so that a reply to a full read leaves in full segments only. With the
/// whole 64 KiB, a reply would be one full segment and a tail (53 bytes on
/// loopback, whose MSS is 65,483), which goes out at once on its own
/// (`TCP_NODELAY`): one more packet to send, deliver and acknowledge per
/// 64 KiB. The whole buffer when no segment fits in it or `mss` is unknown.
fn read_len(cap: usize, mss: u16) -> usize {
    let mss = usize::from(mss);
    if mss == 0 || mss > cap {
        cap
    } else {
        cap - cap % mss
    }
}

/// What the loop does with a connection after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Keep it, watching for [`Conn::wants_write`].
    Keep,
    /// Done: the client half-closed and everything was answered.
    Close,
    /// Broken: reset, or a send failed. Counted as an error.
    Fail,
}

/// The time limits of a connection, in nanoseconds.
///
/// - **Idle timeout**: a connection that moved no byte, in or out, for
///   `idle` is closed.
/// - **Minimum rate**: each byte the client moves earns it `1 / min_rate`
///   seconds of life, on top of one idle period granted at accept; the
///   credit never runs more than one idle period ahead of now (a burst buys
///   no more than an idle period of silence). A byte moves when it is
///   received from the client, or when a reply held back because the client
///   was not reading is sent at last (the client takes it out of our hands;
///   while a reply waits, nothing is read, so a client that reads at the
///   rate keeps its connection). A client that keeps sending one byte just
///   before each idle timeout runs out of credit after about one idle
///   period and is closed like an idle one. Off with `min_rate` 0, or
///   without an idle timeout (the idle period is the window the rate is
///   measured over).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pace {
    idle: Option<u64>,
    /// Bytes per second; 0 = no minimum rate.
    rate: u64,
}

impl Pace {
    /// From the idle timeout (ns) and the minimum rate (bytes per second).
    pub(crate) fn new(idle_ns: Option<u64>, min_rate: u32) -> Pace {
        let rate = if idle_ns.is_some() { u64::from(min_rate) } else { 0 };
        Pace { idle: idle_ns, rate }
    }

    /// The credit `bytes` earn, in nanoseconds (rounded down, saturated).
    fn earned(&self, bytes: usize) -> u64 {
        match self.rate {
            0 => 0,
            // A chunk is at most 64 KiB, far from overflowing; saturated
            // all the same.
            rate => (bytes as u64).saturating_mul(1_000_000_000) / rate,
        }
    }
}

/// When a connection made progress, and how far its rate credit reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Clock {
    last: u64,
    credit: u64,
}

impl Clock {
    /// A connection accepted at `now`.
    pub(crate) fn start(now: u64, pace: &Pace) -> Clock {
        Clock { last: now, credit: now.saturating_add(pace.idle.unwrap_or(0)) }
    }

    /// Progress at `now`: `moved` bytes earn credit (0 for progress that
    /// earns none, such as a reply sent straight after its request).
    pub(crate) fn progress(&mut self, now: u64, moved: usize, pace: &Pace) {
        self.last = now;
        if pace.rate > 0 && moved > 0 {
            let cap = now.saturating_add(pace.idle.unwrap_or(0));
            self.credit = self.credit.saturating_add(pace.earned(moved)).min(cap);
        }
    }

    /// The time at which the connection is to be closed, if any.
    pub(crate) fn deadline(&self, pace: &Pace) -> Option<u64> {
        let idle = self.last.saturating_add(pace.idle?);
        Some(if pace.rate > 0 { idle.min(self.credit) } else { idle })
    }

    /// Is the connection past its deadline at `now`?
    pub(crate) fn expired(&self, now: u64, pace: &Pace) -> bool {
        self.deadline(pace).is_some_and(|d| now >= d)
    }
}

/// Bytes of a reply the kernel has not taken yet.
struct Pending {
    buf: Vec<u8>,
    sent: usize,
}

/// One client.
pub(crate) struct Conn<S> {
    pub(crate) sock: S,
    /// `Some` only in the writing state.
    pending: Option<Box<Pending>>,
    pub(crate) clock: Clock,
    /// Nothing has been read yet: the first request may come with the end
    /// of stream (a one-shot client), worth looking ahead for.
    fresh: bool,
    /// The segment size the reads of a streaming client are cut to
    /// ([`read_len`]); 0 until it has been seen to stream.
    mss: u16,
}

impl<S: Io> Conn<S> {
    /// A connection accepted at `now`.
    pub(crate) fn new(sock: S, now: u64, pace: &Pace) -> Conn<S> {
        Conn { sock, pending: None, clock: Clock::start(now, pace), fresh: true, mss: 0 }
    }

    /// Nothing has been read from the client yet.
    #[cfg(any(feature = "io-uring", test, fuzzing))]
    pub(crate) fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// In the writing state: watch for room to write rather than for input.
    pub(crate) fn wants_write(&self) -> bool {
        self.pending.is_some()
    }

    /// Bytes held for the client (the part of a reply not yet sent).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn held(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.buf.len() - p.sent)
    }

    #[cfg(any(feature = "io-uring", test, fuzzing))]
    /// `n` bytes received by a completion loop's own `recv` (what
    /// [`Conn::read`] does for a byte received: progress, credit, count).
    pub(crate) fn received(&mut self, n: usize, c: &Counters, now: u64, pace: &Pace) {
        self.fresh = false;
        self.clock.progress(now, n, pace);
        Counters::add(&c.bytes_in, n as u64);
    }

    #[cfg(any(feature = "io-uring", test, fuzzing))]
    /// A completion loop's `send` of `chunk` (a reply) completed with
    /// `result`. What the kernel did not take (all of it on `EAGAIN` or
    /// `EINTR`) is kept in the connection's own buffer, the writing state,
    /// from which [`Conn::ready`] sends it once the socket is writable (as
    /// after a partial send in [`Conn::pump`]). `Fail` on any other error.
    pub(crate) fn replied(&mut self, chunk: &[u8], result: io::Result<usize>, c: &Counters) -> Outcome {
        let sent = match result {
            Ok(k) => k.min(chunk.len()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => 0,
            Err(_) => return Outcome::Fail,
        };
        Counters::add(&c.bytes_out, sent as u64);
        self.hold(&chunk[sent..]);
        Outcome::Keep
    }

    /// Keeps `rest` (if any) for the writing state.
    fn hold(&mut self, rest: &[u8]) {
        if !rest.is_empty() {
            self.pending = Some(Box::new(Pending { buf: rest.to_vec(), sent: 0 }));
        }
    }

    #[cfg(any(feature = "io-uring", test, fuzzing))]
    /// A completion loop's full read (`chunk`, received into a buffer of
    /// its own, counted by [`Conn::received`] and upper-cased): the client
    /// streams, so it is answered as the epoll loop answers it, with
    /// system calls in a row rather than a trip through the ring per
    /// chunk. The chunk is sent now (what the kernel does not take is
    /// held, as after a partial send in [`Conn::pump`]); then, unless some
    /// is held, reading goes on as after two full reads in a row (cut to
    /// whole segments) until the socket is empty, the budget is spent or
    /// a reply is held back.
    pub(crate) fn stream(&mut self, chunk: &[u8], buf: &mut [u8], c: &Counters, now: u64, pace: &Pace) -> Outcome {
        match self.reply(chunk, false, c) {
            Outcome::Keep if self.pending.is_none() => self.pump(buf, c, now, pace, false, true),
            other => other,
        }
    }

    /// Sends a reply (with `MSG_MORE` if `more`) as far as the kernel takes
    /// it; the rest is held, the writing state. `Keep` either way, `Fail` on
    /// a fatal error.
    fn reply(&mut self, chunk: &[u8], more: bool, c: &Counters) -> Outcome {
        let mut sent = 0;
        while sent < chunk.len() {
            match self.sock.send(&chunk[sent..], more) {
                Ok(k) => sent += k.min(chunk.len() - sent),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    _ => return Outcome::Fail,
                },
            }
        }
        Counters::add(&c.bytes_out, sent as u64);
        self.hold(&chunk[sent..]);
        Outcome::Keep
    }

    /// Just accepted: serve what is there already. A short exchange
    /// (request, half-close) is finished here, before the connection is
    /// ever registered with epoll.
    pub(crate) fn first(&mut self, buf: &mut [u8], c: &Counters, now: u64, pace: &Pace) -> Outcome {
        self.pump(buf, c, now, pace, true, false)
    }

    /// The socket is readable (`readable`) and/or writable (`writable`);
    /// errors and hang-ups count as both, as the kernel wants them seen.
    pub(crate) fn ready(
        &mut self,
        readable: bool,
        writable: bool,
        buf: &mut [u8],
        c: &Counters,
        now: u64,
        pace: &Pace,
    ) -> Outcome {
        if self.pending.is_some() {
            if !writable {
                return Outcome::Keep;
            }
            match self.flush(c, now, pace) {
                Outcome::Keep if self.pending.is_none() => {}
                other => return other,
            }
            // All sent: more input has most likely arrived meanwhile (a
            // stream's client writes while it reads). Reading it now, not
            // after a trip through epoll, saves two epoll_ctl calls and a
            // wait per round. A client that outran its replies sends in
            // bulk: its reads are cut to whole segments from the first
            // (once its segment size is known).
            return self.pump(buf, c, now, pace, false, true);
        }
        if readable {
            self.pump(buf, c, now, pace, self.fresh, false)
        } else {
            Outcome::Keep
        }
    }

    /// Sends what is pending. `Keep` with nothing pending when it has all
    /// gone.
    fn flush(&mut self, c: &Counters, now: u64, pace: &Pace) -> Outcome {
        let Some(p) = self.pending.as_mut() else { return Outcome::Keep };
        while p.sent < p.buf.len() {
            match self.sock.send(&p.buf[p.sent..], false) {
                Ok(k) => {
                    p.sent += k;
                    // A reply held back is taken at last: that earns credit.
                    self.clock.progress(now, k, pace);
                    Counters::add(&c.bytes_out, k as u64);
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Outcome::Keep,
                    Some(libc::EINTR) => continue,
                    _ => return Outcome::Fail,
                },
            }
        }
        self.pending = None; // nothing in flight: the buffer is freed
        Outcome::Keep
    }

    /// `recv()`, upper-case, `send()`, for up to `READ_BUDGET` reads. When
    /// the kernel takes only part of a reply, the rest is kept in the
    /// connection's own buffer and reading stops (back-pressure).
    ///
    /// With `drain` (a connection just accepted, or reading its first
    /// request), a short read is not answered before the rest of the buffer
    /// is offered to one more read: a one-shot exchange's end of stream is
    /// most likely there already. Then the reply goes out with `MSG_MORE`
    /// and is followed at once by our end of stream, so the kernel sends
    /// the reply and the FIN in one segment: one packet fewer for both
    /// ends, and the client sees its reply and its end of stream in one
    /// wake-up. (A kept-open connection pays for the look-ahead, one
    /// `EAGAIN`, once in its life. Once a look-ahead has found more data,
    /// the rest of the call keeps looking ahead, until the socket is empty
    /// or the budget is spent.)
    ///
    /// A read that follows a full one in the same call (`streaming`; or
    /// the first, when a held-back reply has just gone) is cut to whole
    /// segments of the size last asked ([`read_len`]; the whole buffer
    /// while none is), so that a streaming client's replies leave as full
    /// segments, not a full one and a small tail of their own. The size is
    /// asked at each full read that follows a full one. The first read of
    /// a wake-up is not cut: it may be a whole request of exactly a
    /// buffer's size that its client waits to see answered, which cut
    /// would take two reads and two sends.
    fn pump(&mut self, whole: &mut [u8], c: &Counters, now: u64, pace: &Pace, drain: bool, streaming: bool) -> Outcome {
        let mut reads = 0;
        let mut streaming = streaming;
        while reads < READ_BUDGET {
            let len = if streaming { read_len(whole.len(), self.mss) } else { whole.len() };
            let buf = &mut whole[..len];
            let mut n = match self.read(buf, &mut reads, c, now, pace) {
                Read::Data(n) => n,
                Read::Eof => return Outcome::Close,
                Read::Empty => return Outcome::Keep,
                Read::Fail => return Outcome::Fail,
            };
            // Two full reads in a row (or one, after a held-back reply
            // went): the client streams.
            let streams = streaming && n == buf.len();
            // After the look-ahead: the client half-closed / its socket is empty.
            let (mut eof, mut empty) = (false, false);
            if drain && n < buf.len() && reads < READ_BUDGET {
                match self.read(&mut buf[n..], &mut reads, c, now, pace) {
                    Read::Data(m) => n += m,
                    Read::Eof => eof = true,
                    Read::Empty => empty = true,
                    Read::Fail => return Outcome::Fail,
                }
            }
            if streams {
                // The segment size the next reads are cut to is asked again
                // at each such read, for it grows as the connection starts
                // (the kernel caps it at half the largest window the peer
                // has offered: on loopback 32,768, then 47,616, then 65,483
                // bytes over the first MiB) and may shrink (path MTU). One
                // `getsockopt` per buffer streamed; a client that sends a
                // request at a time never pays it.
                self.mss = self.sock.segment_size().unwrap_or(0);
            }
            streaming = n == buf.len();
            let chunk = &mut buf[..n];
            upper_in_place(chunk);
            if self.reply(chunk, eof, c) == Outcome::Fail {
                return Outcome::Fail;
            }
            if self.pending.is_some() {
                // The client is not reading fast enough: the rest is kept
                // and nothing is read until it has gone (back-pressure).
                // Sending it later, without `MSG_MORE`, pushes out anything
                // the kernel held back; the end of stream is read again then.
                return Outcome::Keep;
            }
            if eof {
                // Reply and FIN leave now, in one segment. Should the
                // shutdown fail (the client reset meanwhile), the close
                // that follows is all there is left to do anyway.
                let _ = self.sock.finish();
                return Outcome::Close;
            }
            if empty || (n < buf.len() && !drain) {
                // A short read: the socket is most likely drained. Level-
                // triggered epoll reports it again if more has arrived.
                return Outcome::Keep;
            }
        }
        Outcome::Keep
    }

    /// One `recv()` into `buf` (not empty), counted in `reads`; `EINTR` is
    /// retried while the budget lasts.
    fn read(&mut self, buf: &mut [u8], reads: &mut usize, c: &Counters, now: u64, pace: &Pace) -> Read {
        while *reads < READ_BUDGET {
            *reads += 1;
            match self.sock.recv(buf) {
                // Half-close from the client: everything it sent before has
                // been read.
                Ok(0) => return Read::Eof,
                Ok(n) => {
                    let n = n.min(buf.len());
                    self.fresh = false;
                    self.clock.progress(now, n, pace);
                    Counters::add(&c.bytes_in, n as u64);
                    return Read::Data(n);
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Read::Empty,
                    Some(libc::EINTR) => continue,
                    _ => return Read::Fail,
                },
            }
        }
        // Out of budget: level-triggered epoll reports the socket again.
        Read::Empty
    }
}

/// What one [`Conn::read`] found.
enum Read {
    Data(usize),
    Eof,
    Empty,
    Fail,
}

/// A simulated client and kernel that drive a [`Conn`] through arbitrary
/// sequences of reads, writes, partial reads and writes, errors, spurious
/// wake-ups and the passing of time, and check after every step what the
/// server promises. Used by the unit tests and by the `conn` fuzz target
/// (`fuzz/fuzz_targets/conn.rs`). It panics when a promise is broken.
///
/// The promises:
/// - every byte sent back is the upper-cased byte received at the same
///   position of the stream: nothing lost, added, reordered or changed;
/// - at most one buffer's worth is held for a client (back-pressure): the
///   connection never reads while a reply is pending;
/// - one wake-up reads at most `READ_BUDGET` times (fairness);
/// - `Close` only after the client's end of stream, with everything
///   answered; `Fail` only after a fatal error from the socket;
/// - once the script ends, a client that half-closes and reads everything
///   gets its whole reply and the connection closes;
/// - the connection expires exactly when the idle timeout and the minimum
///   rate, computed here independently, say so;
/// - the first read of a wake-up is offered the whole buffer (a request
///   of exactly that size is answered in one send), unless the wake-up
///   began by sending a reply held back (the client streams);
/// - the segment size is asked for after two full reads in a row in one
///   wake-up (or one, after a held-back reply went), and only then; a read
///   that follows a full one (or such a reply) is offered whole segments of
///   the size last told ([`read_len`]; the whole buffer while none is).
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod sim {
    use std::collections::VecDeque;
    use std::io;

    use super::{read_len, Conn, Counters, Io, Outcome, Pace, READ_BUDGET};
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
            let mut n = self.inbound.len().min(buf.len());
            if self.recv_max > 0 {
                n = n.min(self.recv_max);
            }
            for (slot, byte) in buf.iter_mut().zip(self.inbound.drain(..n)) {
                *slot = byte;
            }
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
    fn ring_completion(
        conn: &mut Conn<FakeSocket>,
        buf: &mut [u8],
        c: &Counters,
        now: u64,
        pace: &Pace,
        r: &mut Report,
    ) -> Outcome {
        r.ring_wakeups += 1;
        let mut ring_buf = vec![0u8; buf.len()];
        let n = match conn.sock.recv(&mut ring_buf) {
            Ok(0) => return Outcome::Close,
            Ok(n) => n.min(ring_buf.len()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => return Outcome::Keep,
            Err(_) => return Outcome::Fail,
        };
        conn.received(n, c, now, pace);
        let chunk = &mut ring_buf[..n];
        upper_in_place(chunk);
        if n == buf.len() {
            r.ring_streams += 1;
            // The system calls that follow are a wake-up of their own, that
            // begins after one full read.
            conn.sock.wake(true);
            return conn.stream(chunk, buf, c, now, pace);
        }
        let result = conn.sock.send(chunk, false);
        conn.replied(chunk, result, c)
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
        let pace = Pace::new(idle, min_rate);
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
        let mut conn = Conn::new(sock, now, &pace);
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
                    assert_eq!(conn.clock.deadline(&pace), deadline, "deadline differs from the model");
                    assert_eq!(conn.clock.expired(now, &pace), expect);
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
                conn.first(&mut buf, &counters, now, &pace)
            } else if ring && !at_end && !conn.wants_write() && !conn.is_fresh() {
                // (A connection that has sent nothing yet is polled, and
                // served by `ready`, as on epoll.)
                ring_completion(&mut conn, &mut buf, &counters, now, &pace, &mut report)
            } else {
                if conn.wants_write() {
                    report.writing_wakeups += 1;
                }
                conn.ready(readable, writable, &mut buf, &counters, now, &pace)
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
                    assert_eq!(
                        conn.sock.received_by_client.len(),
                        sent_by_client.len(),
                        "closed with bytes unanswered"
                    );
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
                    let outcome = conn.ready(true, true, &mut buf, &counters, now, &pace);
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
}

#[cfg(test)]
mod tests {
    use super::sim::{run, Report};
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

    #[test]
    fn slowloris_runs_out_of_credit() {
        // Idle timeout 1 s, at least 100 bytes/s: one byte every 0.9 s
        // never trips the idle timeout but earns only 10 ms a byte.
        let s = 1_000_000_000u64;
        let pace = Pace::new(Some(s), 100);
        let mut clock = Clock::start(0, &pace);
        let mut t = 0;
        let mut bytes = 0;
        while !clock.expired(t, &pace) {
            t += 900_000_000;
            if clock.expired(t, &pace) {
                break;
            }
            clock.progress(t, 1, &pace);
            bytes += 1;
            assert!(bytes < 20, "a slow client lived for ever");
        }
        assert!(t <= 2 * s, "closed at {t} ns, after {bytes} bytes");
        // Without the minimum rate, the same client lives on.
        let idle_only = Pace::new(Some(s), 0);
        let mut clock = Clock::start(0, &idle_only);
        for i in 1..100u64 {
            assert!(!clock.expired(i * 900_000_000, &idle_only));
            clock.progress(i * 900_000_000, 1, &idle_only);
        }
    }

    #[test]
    fn a_client_above_the_rate_lives_on() {
        let s = 1_000_000_000u64;
        let pace = Pace::new(Some(s), 100);
        let mut clock = Clock::start(0, &pace);
        // 200 bytes/s in 20-byte lines every 100 ms.
        for i in 1..1000u64 {
            let t = i * 100_000_000;
            assert!(!clock.expired(t, &pace), "closed at {t}");
            clock.progress(t, 20, &pace);
        }
        // A burst buys at most one idle period.
        clock.progress(100 * s, 1_000_000, &pace);
        assert!(clock.expired(101 * s, &pace));
    }

    #[test]
    fn read_len_cuts_to_whole_segments() {
        assert_eq!(read_len(65536, 0), 65536, "unknown: the whole buffer");
        assert_eq!(read_len(65536, 65483), 65483, "loopback: one segment, no 53-byte tail");
        assert_eq!(read_len(65536, 47616), 47616);
        assert_eq!(read_len(65536, 32768), 65536, "two segments fit exactly");
        assert_eq!(read_len(65536, 1448), 45 * 1448, "Ethernet");
        assert_eq!(read_len(65536, 536), 122 * 536);
        assert_eq!(read_len(65536, 1), 65536);
        assert_eq!(read_len(10, 11), 10, "no segment fits: the whole buffer");
        assert_eq!(read_len(10, 10), 10);
        assert_eq!(read_len(10, 3), 9);
        assert_eq!(read_len(0, 5), 0);
        for cap in 0..200 {
            for mss in 0..=200u16 {
                let n = read_len(cap, mss);
                assert!(n <= cap);
                let m = usize::from(mss);
                if m > 0 && m <= cap {
                    assert!(n % m == 0 && cap - n < m, "cap {cap}, mss {mss}: {n}");
                } else {
                    assert_eq!(n, cap);
                }
            }
        }
    }

    /// A socket that records the reads it was offered and the segment sizes
    /// asked, around a real one.
    struct Recorder {
        fd: OwnedFd,
        /// The wake-up under way, counted by the test.
        wake: usize,
        /// (wake-up, bytes offered, bytes read) of each `recv` that
        /// returned data.
        reads: Vec<(usize, usize, usize)>,
        /// The wake-ups that began by sending a held-back reply.
        flushing: Vec<usize>,
        asked: Vec<u16>,
    }

    impl Io for Recorder {
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.fd.recv(buf)?;
            self.reads.push((self.wake, buf.len(), n));
            Ok(n)
        }
        fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
            self.fd.send(buf, more)
        }
        fn finish(&mut self) -> io::Result<()> {
            self.fd.finish()
        }
        fn segment_size(&mut self) -> Option<u16> {
            let mss = self.fd.segment_size();
            self.asked.extend(mss);
            mss
        }
    }

    #[test]
    fn replies_to_full_reads_are_whole_segments_of_the_kernels_mss() {
        use crate::addr::SockAddr;
        use std::os::fd::AsRawFd;
        use std::time::{Duration, Instant};
        // A real loopback connection whose segment size the listener caps
        // at 1000 bytes (the accepted socket inherits TCP_MAXSEG), with
        // room for a few buffers' worth of input waiting.
        let tcp = |fd: &OwnedFd, name, value| sys::setsockopt_int(fd.as_fd(), libc::IPPROTO_TCP, name, value);
        let sol = |fd: &OwnedFd, name, value| sys::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, name, value);
        let listener = sys::socket(libc::AF_INET, libc::SOCK_STREAM, false).expect("socket");
        tcp(&listener, libc::TCP_MAXSEG, 1000).expect("TCP_MAXSEG");
        sol(&listener, libc::SO_RCVBUF, 1 << 20).expect("SO_RCVBUF");
        sys::bind(listener.as_fd(), &SockAddr::v4([127, 0, 0, 1], 0)).expect("bind");
        sys::listen(listener.as_fd(), 1).expect("listen");
        let port = sys::getsockname(listener.as_fd()).expect("getsockname").port();
        let client = sys::socket(libc::AF_INET, libc::SOCK_STREAM, false).expect("socket");
        sol(&client, libc::SO_SNDBUF, 1 << 20).expect("SO_SNDBUF");
        sys::connect(client.as_fd(), &SockAddr::v4([127, 0, 0, 1], port)).expect("connect");
        sys::set_nonblocking(client.as_fd(), true).expect("O_NONBLOCK");
        let (server, _) = sys::accept4(listener.as_fd(), true).expect("accept");
        let mss = segment_size(server.as_fd()).expect("TCP_MAXSEG of a connected socket");
        assert!((500..=1000).contains(&mss), "mss {mss}");
        assert_eq!(segment_size(listener.as_fd()), Some(1000), "a listener's is what was set");

        let pace = Pace::new(None, 0);
        let counters = Counters::default();
        let rec = Recorder { fd: server, wake: 0, reads: Vec::new(), flushing: Vec::new(), asked: Vec::new() };
        let mut conn = Conn::new(rec, 0, &pace);
        let mut buf = vec![0u8; super::super::CHUNK];
        // 1 MiB: the client sends what the kernel takes, the server is
        // woken when at least a buffer's worth waits, or when the client
        // could send nothing (where `rmem_max` caps the server's receive
        // buffer below a chunk's worth, a chunk never waits whole), and the
        // client reads what came back, until all of it has.
        let data: Vec<u8> = (0..1usize << 20).map(|i| b"abcdefgh"[i % 8]).collect();
        let (mut sent, mut back) = (0, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut reply = vec![0u8; 1 << 16];
        let mut closed = false;
        while back.len() < data.len() {
            assert!(Instant::now() < deadline, "stuck at {} of {} bytes back", back.len(), data.len());
            let before = sent;
            while sent < data.len() {
                match sys::send(client.as_fd(), &data[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
                    Err(e) => panic!("send: {e}"),
                }
            }
            if sent == data.len() {
                let _ = sys::shutdown(client.as_fd(), libc::SHUT_WR);
            }
            let mut waiting: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int into `waiting`.
            let rc = unsafe { libc::ioctl(conn.sock.fd.as_raw_fd(), libc::FIONREAD, &mut waiting) };
            assert_eq!(rc, 0, "FIONREAD");
            if !closed && (waiting as usize >= buf.len() || sent == before || sent == data.len()) {
                conn.sock.wake += 1;
                if conn.wants_write() {
                    let wake = conn.sock.wake;
                    conn.sock.flushing.push(wake);
                }
                match conn.ready(true, true, &mut buf, &counters, 0, &pace) {
                    Outcome::Keep => {}
                    Outcome::Close => closed = true,
                    Outcome::Fail => panic!("the connection failed"),
                }
            }
            match sys::recv(client.as_fd(), &mut reply) {
                Ok(n) => back.extend_from_slice(&reply[..n]),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    let _ = sys::poll2((client.as_raw_fd(), libc::POLLIN), None, 1);
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        assert!(back == data.to_ascii_uppercase(), "the reply differs");
        let rec = &conn.sock;
        // Within a wake-up, a read that follows a full one is offered whole
        // segments only (once the size is known), and a full one is
        // answered in whole segments (the reply is what was read). The
        // first read of a wake-up takes the whole buffer, unless the
        // wake-up began by sending a held-back reply.
        let cut = read_len(buf.len(), mss);
        assert!(cut % usize::from(mss) == 0 && cut < buf.len(), "cut {cut}");
        assert!(!rec.asked.is_empty() && rec.asked.iter().all(|&m| m == mss), "asked {:?}", rec.asked);
        let mut told = false;
        for (i, &(wake, offered, got)) in rec.reads.iter().enumerate() {
            let prev = i.checked_sub(1).map(|p| rec.reads[p]).filter(|&(w, _, _)| w == wake);
            match prev {
                None if !rec.flushing.contains(&wake) => assert_eq!(offered, buf.len(), "read {i}"),
                Some((_, o, g)) if g == o && told => assert!(offered <= cut, "read {i}: {offered} bytes, past {cut}"),
                _ => {}
            }
            // The size is first asked at the second full read in a row.
            told |= prev.is_some_and(|(_, o, g)| g == o) && got == offered;
        }
        let whole = rec.reads.iter().filter(|&&(_, offered, got)| got == cut && offered == cut).count();
        assert!(whole >= 3, "{whole} full reads cut to {cut}: {:?}", rec.reads);
    }

    #[test]
    fn no_idle_timeout_no_deadline() {
        let pace = Pace::new(None, 100);
        let clock = Clock::start(0, &pace);
        assert_eq!(clock.deadline(&pace), None);
        assert!(!clock.expired(u64::MAX, &pace));
    }
}
