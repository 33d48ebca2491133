//! The clients: one request per connection, a kept-open connection, and UDP.
//!
//! All sockets here are non-blocking and every wait goes through `poll`, so
//! a timeout bounds each wait for progress (as a Python socket timeout
//! does), nothing blocks for ever, and sending and receiving interleave:
//! a large request never deadlocks against a server that streams its reply
//! while we are still sending.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::addr::{host_port_text, resolve, Purpose, SockAddr};
use crate::error::{Error, Result, ERR_PROTOCOL, ERR_SHORT_REPLY};
use crate::sys;

/// Largest UDP payload we can receive (the IPv6 limit; IPv4's is 65,507).
pub const MAX_DATAGRAM: usize = 65_535 - 8;

/// Size of one read while receiving a reply.
const CHUNK: usize = 64 * 1024;

/// How long each wait may take, and what to run while waiting.
#[derive(Clone, Copy, Default)]
pub struct Waits<'a> {
    /// Bound of each wait for progress; `None` waits for ever.
    pub timeout: Option<Duration>,
    /// Called at least every [`CHECK_EVERY`] while waiting (a Python
    /// binding checks for Ctrl-C here); an error ends the operation with it.
    pub check: Option<&'a dyn Fn() -> Result<()>>,
}

/// How often [`Waits::check`] runs during a long wait.
pub const CHECK_EVERY: Duration = Duration::from_millis(50);

impl<'a> Waits<'a> {
    /// Waits bounded by `timeout`, with no check.
    pub fn timeout(timeout: Option<Duration>) -> Waits<'a> {
        Waits { timeout, check: None }
    }
}

/// A moment that will not come (about thirty years from now).
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(1 << 30)).unwrap_or(now)
}

/// Waits until `fd` is ready for `events`, for at most `waits.timeout`,
/// running `waits.check` every [`CHECK_EVERY`]. Retries on EINTR with what
/// is left of the wait. Returns the `revents`; a timeout is `ETIMEDOUT`.
pub fn wait_fd(fd: RawFd, events: i16, waits: &Waits<'_>, what: &dyn Fn() -> String) -> Result<i16> {
    let start = Instant::now();
    loop {
        if let Some(check) = waits.check {
            check()?;
        }
        let left = waits.timeout.map(|t| t.saturating_sub(start.elapsed()));
        let slice = match (left, waits.check.is_some()) {
            (Some(l), true) => Some(l.min(CHECK_EVERY)),
            (None, true) => Some(CHECK_EVERY),
            (l, false) => l,
        };
        match sys::poll2((fd, events), None, sys::timeout_ms(slice)) {
            Ok((0, _)) => {
                if left.is_some_and(|l| l <= slice.unwrap_or_default()) {
                    let secs = waits.timeout.unwrap_or_default().as_secs_f64();
                    return Err(Error::timed_out(what(), format!("timed out after {secs:.3} s")));
                }
            }
            Ok((rev, _)) => return Ok(rev),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(Error::os(what(), e)),
        }
    }
}

/// Opens a TCP connection to `host:port`, trying every address the
/// resolver gives, in order, until one accepts. The socket stays
/// non-blocking. The error of the last address tried is returned.
pub fn connect_tcp(host: &str, port: u16, timeout: Option<Duration>) -> Result<(OwnedFd, SockAddr)> {
    connect_tcp_with(host, port, &Waits::timeout(timeout))
}

/// [`connect_tcp`] with a check run while waiting.
pub fn connect_tcp_with(host: &str, port: u16, waits: &Waits<'_>) -> Result<(OwnedFd, SockAddr)> {
    if port == 0 {
        return Err(Error::invalid(
            format!("connect to {}", host_port_text(host, port)),
            "port 0 is not a valid destination",
        ));
    }
    let addrs = resolve(host, port, libc::SOCK_STREAM, Purpose::Connect)?;
    let mut last = None;
    for addr in addrs {
        match connect_one(&addr, waits) {
            Ok(fd) => return Ok((fd, addr)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::resolve(format!("resolve {}", host_port_text(host, port)), libc::EAI_NONAME)))
}

/// `socket()` + non-blocking `connect()` + wait for the handshake.
fn connect_one(addr: &SockAddr, waits: &Waits<'_>) -> Result<OwnedFd> {
    let what = || format!("connect to {addr}");
    let fd = sys::socket(addr.family(), libc::SOCK_STREAM, true).map_err(|e| Error::os(what(), e))?;
    match sys::connect(fd.as_fd(), addr) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS) | Some(libc::EINTR)) => {
            // The handshake goes on in the kernel; writable means it ended,
            // and SO_ERROR says how.
            wait_fd(fd.as_raw_fd(), libc::POLLOUT, waits, &what)?;
            let err =
                sys::getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_ERROR).map_err(|e| Error::os(what(), e))?;
            if err != 0 {
                return Err(Error::errno(what(), err));
            }
        }
        Err(e) => return Err(Error::os(what(), e)),
    }
    // Small requests go out at once instead of waiting for Nagle's timer.
    let _ = sys::setsockopt_int(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
    Ok(fd)
}

/// Sends `data` and receives the reply on one connection, both at once.
/// With `half_close`, the write side is shut after the last byte and the
/// reply is read to end of stream; otherwise exactly `data.len()` bytes
/// are read. Returns the reply.
fn exchange(fd: &OwnedFd, peer: &SockAddr, data: &[u8], half_close: bool, waits: &Waits<'_>) -> Result<Vec<u8>> {
    let what = || format!("exchange with {peer}");
    let mut reply: Vec<u8> = Vec::with_capacity(data.len());
    let mut sent = 0usize;
    let mut shut = !half_close;
    if half_close && data.is_empty() {
        shut_write(fd, &what)?;
        shut = true;
    }
    loop {
        let want_more = if half_close { true } else { reply.len() < data.len() };
        if !want_more && sent == data.len() {
            return Ok(reply);
        }
        let mut events = libc::POLLIN;
        if sent < data.len() {
            events |= libc::POLLOUT;
        }
        let rev = wait_fd(fd.as_raw_fd(), events, waits, &what)?;
        if sent < data.len() && rev & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
            match sys::send(fd.as_fd(), &data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => {}
                Err(e) => return Err(Error::os(what(), e)),
            }
            if sent == data.len() && !shut {
                // Half-close: tells the server that the request is complete.
                shut_write(fd, &what)?;
                shut = true;
            }
        }
        if rev & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
            let old = reply.len();
            let room = if half_close { CHUNK } else { data.len() - old };
            if room == 0 {
                continue;
            }
            reply.resize(old + room, 0);
            let res = sys::recv(fd.as_fd(), &mut reply[old..]);
            match res {
                Ok(0) => {
                    reply.truncate(old);
                    if half_close && sent == data.len() {
                        if reply.len() != data.len() {
                            return Err(short_or_long(what(), reply.len(), data.len()));
                        }
                        return Ok(reply);
                    }
                    return Err(Error::own(
                        ERR_SHORT_REPLY,
                        what(),
                        format!("connection closed after {} of {} reply bytes", old, data.len()),
                    ));
                }
                Ok(n) => {
                    reply.truncate(old + n);
                    if half_close && reply.len() > data.len() {
                        return Err(short_or_long(what(), reply.len(), data.len()));
                    }
                }
                Err(e) => {
                    reply.truncate(old);
                    if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                        return Err(Error::os(what(), e));
                    }
                }
            }
        }
    }
}

/// `shutdown(SHUT_WR)`. A connection the peer has already torn down
/// answers `ENOTCONN`: that is the peer's reset, and is said so.
fn shut_write(fd: &OwnedFd, what: &dyn Fn() -> String) -> Result<()> {
    match sys::shutdown(fd.as_fd(), libc::SHUT_WR) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(Error::errno(what(), libc::ECONNRESET)),
        Err(e) => Err(Error::os(what(), e)),
    }
}

fn short_or_long(what: String, got: usize, sent: usize) -> Error {
    if got < sent {
        Error::own(ERR_SHORT_REPLY, what, format!("reply has {got} bytes, request had {sent}"))
    } else {
        Error::own(ERR_PROTOCOL, what, format!("reply has more bytes ({got}+) than the request ({sent})"))
    }
}

/// One TCP exchange: connect, send all of `data`, half-close, read the
/// reply to end of stream, close. `timeout` bounds each wait (connect, and
/// every wait for progress); `None` waits for ever.
///
/// ```no_run
/// let reply = upcase::client::tcp_request("localhost", 12000, b"hello", Some(std::time::Duration::from_secs(5)))?;
/// assert_eq!(reply, b"HELLO");
/// # Ok::<(), upcase::Error>(())
/// ```
pub fn tcp_request(host: &str, port: u16, data: &[u8], timeout: Option<Duration>) -> Result<Vec<u8>> {
    tcp_request_with(host, port, data, &Waits::timeout(timeout))
}

/// [`tcp_request`] with a check run while waiting.
pub fn tcp_request_with(host: &str, port: u16, data: &[u8], waits: &Waits<'_>) -> Result<Vec<u8>> {
    let (fd, peer) = connect_tcp_with(host, port, waits)?;
    exchange(&fd, &peer, data, true, waits)
}

/// A kept-open TCP connection: each `request` sends its bytes and returns
/// exactly as many bytes back, so many requests share one connection.
pub struct Connection {
    fd: OwnedFd,
    peer: SockAddr,
    timeout: Option<Duration>,
    /// Set by any failed request: what is in flight is unknown then, and a
    /// later request could read an earlier reply, so none is made.
    broken: bool,
}

impl Connection {
    /// Connects to `host:port` (every resolved address tried in turn).
    pub fn connect(host: &str, port: u16, timeout: Option<Duration>) -> Result<Connection> {
        Connection::connect_with(host, port, &Waits::timeout(timeout))
    }

    /// [`connect`](Self::connect) with a check run while waiting; the
    /// timeout is kept for the requests.
    pub fn connect_with(host: &str, port: u16, waits: &Waits<'_>) -> Result<Connection> {
        let (fd, peer) = connect_tcp_with(host, port, waits)?;
        Ok(Connection { fd, peer, timeout: waits.timeout, broken: false })
    }

    /// Sends `data`, returns the reply (always `data.len()` bytes).
    ///
    /// After a failed request (a timeout, a reset, an interruption) the
    /// connection is broken: every later request fails at once with
    /// `ENOTCONN` instead of reading what the earlier one left behind.
    pub fn request(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        self.run(data, &Waits::timeout(self.timeout))
    }

    /// [`request`](Self::request) with a check run while waiting.
    pub fn request_with(&mut self, data: &[u8], check: &dyn Fn() -> Result<()>) -> Result<Vec<u8>> {
        self.run(data, &Waits { timeout: self.timeout, check: Some(check) })
    }

    fn run(&mut self, data: &[u8], waits: &Waits<'_>) -> Result<Vec<u8>> {
        if self.broken {
            return Err(Error::errno(format!("request to {}", self.peer), libc::ENOTCONN)
                .within("an earlier request on this connection failed"));
        }
        let result = exchange(&self.fd, &self.peer, data, false, waits);
        self.broken = result.is_err();
        result
    }

    /// The descriptor (still owned by the connection).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// True once a request has failed (see [`request`](Self::request)).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Like [`request`](Self::request), writing the reply into `out`, which
    /// must hold at least `data.len()` bytes (else `ERR_BUFFER_TOO_SMALL`,
    /// before anything is sent); returns the reply length.
    pub fn request_into(&mut self, data: &[u8], out: &mut [u8]) -> Result<usize> {
        if out.len() < data.len() {
            return Err(Error::own(
                crate::error::ERR_BUFFER_TOO_SMALL,
                format!("request to {}", self.peer),
                format!("the reply will have {} bytes, the buffer holds {}", data.len(), out.len()),
            ));
        }
        let reply = self.request(data)?;
        out[..reply.len()].copy_from_slice(&reply);
        Ok(reply.len())
    }

    /// The server's address.
    pub fn peer(&self) -> &SockAddr {
        &self.peer
    }

    /// The local address of this end.
    pub fn local(&self) -> Result<SockAddr> {
        sys::getsockname(self.fd.as_fd()).map_err(|e| Error::os("getsockname", e))
    }

    /// The per-wait timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Closes the connection (half-close first, so the server sees a clean
    /// end of stream). Dropping the value closes it as well.
    pub fn close(self) {
        let _ = sys::shutdown(self.fd.as_fd(), libc::SHUT_WR);
    }
}

/// `shutdown(SHUT_RDWR)` on a descriptor that another thread owns and is
/// waiting on: the wait ends at once (the peer sees end of stream). Errors
/// (it was not connected, it is already shut) are of no interest here.
pub fn shutdown_raw(fd: RawFd) {
    // SAFETY: `fd` was handed out by `raw_fd` of a connection that is alive
    // (its owner holds it until the interrupted request returns); shutdown
    // does not close or invalidate the descriptor.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = sys::shutdown(fd, libc::SHUT_RDWR);
}

/// One UDP exchange: send `data` as one datagram to `host:port`, wait up to
/// `timeout` for the reply, send again up to `retries` more times. Replies
/// from any other address are ignored. Every resolved address is tried in
/// turn when one gets no answer.
pub fn udp_request(host: &str, port: u16, data: &[u8], timeout: Duration, retries: u32) -> Result<Vec<u8>> {
    udp_request_with(host, port, data, timeout, retries, None)
}

/// [`udp_request`] with a check run while waiting.
pub fn udp_request_with(
    host: &str,
    port: u16,
    data: &[u8],
    timeout: Duration,
    retries: u32,
    check: Option<&dyn Fn() -> Result<()>>,
) -> Result<Vec<u8>> {
    if port == 0 {
        return Err(Error::invalid(
            format!("send to {}", host_port_text(host, port)),
            "port 0 is not a valid destination",
        ));
    }
    if data.len() > MAX_DATAGRAM {
        return Err(Error::errno(format!("send to {}", host_port_text(host, port)), libc::EMSGSIZE)
            .within(format!("datagram of {} bytes", data.len())));
    }
    let addrs = resolve(host, port, libc::SOCK_DGRAM, Purpose::Connect)?;
    let mut last = None;
    for addr in addrs {
        match udp_one(&addr, data, timeout, retries, check) {
            Ok(reply) => return Ok(reply),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::resolve(format!("resolve {}", host_port_text(host, port)), libc::EAI_NONAME)))
}

fn udp_one(
    addr: &SockAddr,
    data: &[u8],
    timeout: Duration,
    retries: u32,
    check: Option<&dyn Fn() -> Result<()>>,
) -> Result<Vec<u8>> {
    let what = || format!("udp request to {addr}");
    let fd = sys::socket(addr.family(), libc::SOCK_DGRAM, true).map_err(|e| Error::os(what(), e))?;
    // Connecting a UDP socket only records the peer: the kernel then reports
    // "port unreachable" as ECONNREFUSED instead of letting us wait it out.
    sys::connect(fd.as_fd(), addr).map_err(|e| Error::os(what(), e))?;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    for _attempt in 0..=retries {
        // The socket is connected, so a plain send goes to `addr`.
        sys::send(fd.as_fd(), data).map_err(|e| Error::os(what(), e))?;
        // A timeout too large to add is as good as for ever.
        let deadline = Instant::now().checked_add(timeout).unwrap_or_else(far_future);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match wait_fd(fd.as_raw_fd(), libc::POLLIN, &Waits { timeout: Some(left), check }, &what) {
                Ok(_) => {}
                Err(e) if e.code() == -libc::ETIMEDOUT => break,
                Err(e) => return Err(e),
            }
            match sys::recvfrom(fd.as_fd(), &mut buf, libc::MSG_TRUNC) {
                Ok((n, from)) => {
                    if from != *addr {
                        continue; // not our server: ignore it
                    }
                    if n > buf.len() {
                        return Err(Error::errno(what(), libc::EMSGSIZE).within(format!("reply of {n} bytes")));
                    }
                    if n != data.len() {
                        return Err(short_or_long(what(), n, data.len()));
                    }
                    return Ok(buf[..n].to_vec());
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => continue,
                Err(e) => return Err(Error::os(what(), e)),
            }
        }
    }
    Err(Error::timed_out(
        what(),
        format!("timed out: no reply after {} attempt(s) of {:.3} s each", retries as u64 + 1, timeout.as_secs_f64()),
    ))
}
