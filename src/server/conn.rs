//! One connection of the concurrent TCP server, as a state machine apart
//! from its loop, so that it can be driven by a test or a fuzzer through
//! any [`Io`] (a real socket in the server, a scripted fake in the
//! simulator).
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
//! How long a connection may live without doing its share is its
//! [`Deadline`]'s business (see `pace.rs`).
//!
//! This module must never make a system call other than through [`Io`], so
//! that the simulator in `conn_sim.rs` sees every one.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::pace::{Deadline, Limits};
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
/// segment size is `mss` (0: not known): the most whole segments that fit.
/// A reply to a full read then leaves in full segments only, not a full
/// one and a small tail that `TCP_NODELAY` sends on its own. The whole
/// buffer when no segment fits in it or `mss` is unknown.
pub(super) fn read_len(cap: usize, mss: u16) -> usize {
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

/// What a connection needs from its loop at each event: the loop's
/// counters, the time of the wake-up and the server's time limits.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) counters: &'a Counters,
    pub(crate) now: u64,
    pub(crate) limits: &'a Limits,
}

impl Ctx<'_> {
    /// `n` bytes received: progress that earns credit, counted.
    fn received(&self, deadline: &mut Deadline, n: usize) {
        deadline.progress(self.now, n, self.limits);
        Counters::add(&self.counters.bytes_in, n as u64);
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
    deadline: Deadline,
    /// Nothing has been read yet: the first request may come with the end
    /// of stream (a one-shot client), worth looking ahead for.
    fresh: bool,
    /// The segment size the reads of a streaming client are cut to
    /// ([`read_len`]); 0 until it has been seen to stream.
    mss: u16,
}

impl<S: Io> Conn<S> {
    /// A connection accepted at `now`.
    pub(crate) fn new(sock: S, now: u64, limits: &Limits) -> Conn<S> {
        Conn { sock, pending: None, deadline: Deadline::start(now, limits), fresh: true, mss: 0 }
    }

    /// Is the connection past its deadline at `now`?
    pub(crate) fn expired(&self, now: u64, limits: &Limits) -> bool {
        self.deadline.passed(now, limits)
    }

    /// When the connection is to be closed, if ever.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn deadline(&self, limits: &Limits) -> Option<u64> {
        self.deadline.at(limits)
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

    /// `n` bytes received by a completion loop's own `recv`.
    #[cfg(any(feature = "io-uring", test, fuzzing))]
    pub(crate) fn received(&mut self, n: usize, cx: &Ctx) {
        self.fresh = false;
        cx.received(&mut self.deadline, n);
    }

    /// A completion loop's `send` of `chunk` (a reply) completed with
    /// `result`. What the kernel did not take (all of it on `EAGAIN` or
    /// `EINTR`) is held: the writing state. `Fail` on any other error.
    #[cfg(any(feature = "io-uring", test, fuzzing))]
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

    /// A completion loop's full read (`chunk`, counted by
    /// [`Conn::received`] and upper-cased): the client streams. The chunk
    /// is sent now, and reading goes on with system calls in a row, as
    /// [`Conn::ready`] does after a held-back reply went.
    #[cfg(any(feature = "io-uring", test, fuzzing))]
    pub(crate) fn stream(&mut self, chunk: &[u8], buf: &mut [u8], cx: &Ctx) -> Outcome {
        match self.reply(chunk, false, cx.counters) {
            Outcome::Keep if self.pending.is_none() => self.pump(buf, cx, true),
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
    pub(crate) fn first(&mut self, buf: &mut [u8], cx: &Ctx) -> Outcome {
        self.pump(buf, cx, false)
    }

    /// The socket is readable (`readable`) and/or writable (`writable`);
    /// errors and hang-ups count as both, as the kernel wants them seen.
    pub(crate) fn ready(&mut self, readable: bool, writable: bool, buf: &mut [u8], cx: &Ctx) -> Outcome {
        if self.pending.is_some() {
            if !writable {
                return Outcome::Keep;
            }
            match self.flush(cx) {
                Outcome::Keep if self.pending.is_none() => {}
                other => return other,
            }
            // All sent: more input has most likely arrived meanwhile (a
            // stream's client writes while it reads). Reading it now, not
            // after a trip through epoll, saves two epoll_ctl calls and a
            // wait per round. A client that outran its replies sends in
            // bulk: its reads are cut to whole segments from the first
            // (once its segment size is known).
            return self.pump(buf, cx, true);
        }
        if readable {
            self.pump(buf, cx, false)
        } else {
            Outcome::Keep
        }
    }

    /// Sends what is pending. `Keep` with nothing pending when it has all
    /// gone.
    fn flush(&mut self, cx: &Ctx) -> Outcome {
        let Some(p) = self.pending.as_mut() else { return Outcome::Keep };
        while p.sent < p.buf.len() {
            match self.sock.send(&p.buf[p.sent..], false) {
                Ok(k) => {
                    p.sent += k;
                    // A reply held back is taken at last: that earns credit.
                    self.deadline.progress(cx.now, k, cx.limits);
                    Counters::add(&cx.counters.bytes_out, k as u64);
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

    /// `recv()`, upper-case, `send()`, for up to `READ_BUDGET` reads.
    /// What the kernel does not take is held, and reading stops
    /// (back-pressure).
    ///
    /// A fresh connection looks ahead: a short read is offered one more
    /// read before it is answered, for a one-shot client's end of stream
    /// is most likely there. The reply then goes out with `MSG_MORE` and
    /// our FIN follows, in one segment ([`Io::send`]).
    ///
    /// `streaming`: the client was seen to stream. A read that follows a
    /// full one is cut to whole segments ([`read_len`]); the first read of
    /// a wake-up is not, for it may be one whole request.
    fn pump(&mut self, whole: &mut [u8], cx: &Ctx, streaming: bool) -> Outcome {
        let drain = self.fresh;
        let mut reads = 0;
        let mut streaming = streaming;
        while reads < READ_BUDGET {
            let len = if streaming { read_len(whole.len(), self.mss) } else { whole.len() };
            let buf = &mut whole[..len];
            let mut n = match self.read(buf, &mut reads, cx) {
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
                match self.read(&mut buf[n..], &mut reads, cx) {
                    Read::Data(m) => n += m,
                    Read::Eof => eof = true,
                    Read::Empty => empty = true,
                    Read::Fail => return Outcome::Fail,
                }
            }
            if streams {
                // The segment size is asked again at each such read: it
                // grows as the connection starts (the kernel caps it at half
                // the largest window the peer has offered) and may shrink
                // (path MTU). A client that sends a request at a time never
                // pays for the `getsockopt`.
                self.mss = self.sock.segment_size().unwrap_or(0);
            }
            streaming = n == buf.len();
            let chunk = &mut buf[..n];
            upper_in_place(chunk);
            if self.reply(chunk, eof, cx.counters) == Outcome::Fail {
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
    fn read(&mut self, buf: &mut [u8], reads: &mut usize, cx: &Ctx) -> Read {
        while *reads < READ_BUDGET {
            *reads += 1;
            match self.sock.recv(buf) {
                // Half-close from the client: everything it sent before has
                // been read.
                Ok(0) => return Read::Eof,
                Ok(n) => {
                    let n = n.min(buf.len());
                    self.fresh = false;
                    cx.received(&mut self.deadline, n);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::pace::Limits;

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

        let limits = Limits::new(None, 0);
        let counters = Counters::default();
        let rec = Recorder { fd: server, wake: 0, reads: Vec::new(), flushing: Vec::new(), asked: Vec::new() };
        let mut conn = Conn::new(rec, 0, &limits);
        let mut buf = vec![0u8; crate::CHUNK];
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
            let waiting = sys::bytes_waiting(conn.sock.fd.as_fd()).expect("FIONREAD");
            if !closed && (waiting >= buf.len() || sent == before || sent == data.len()) {
                conn.sock.wake += 1;
                if conn.wants_write() {
                    let wake = conn.sock.wake;
                    conn.sock.flushing.push(wake);
                }
                match conn.ready(true, true, &mut buf, &Ctx { counters: &counters, now: 0, limits: &limits }) {
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
}
