//! The clients: one request per connection, a kept-open connection, and UDP.
//!
//! All sockets here are non-blocking and every wait goes through `poll`, so
//! a timeout bounds each wait for progress (as a Python socket timeout
//! does), nothing blocks for ever, and sending and receiving interleave:
//! a large request never deadlocks against a server that streams its reply
//! while we are still sending.
//!
//! A UDP client takes for its reply only the upper-cased request, from the
//! server's address: any other datagram is ignored, and counted.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::addr::{host_port_text, resolve, Purpose, SockAddr};
#[cfg(feature = "tls")]
use crate::error::ERR_TLS;
use crate::error::{Error, Result, ERR_PROTOCOL, ERR_SHORT_REPLY};
use crate::{sys, CHUNK};

pub use crate::MAX_DATAGRAM;

/// How often the interrupt check runs during a long wait.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// A check run while a client waits; an error ends the operation with it.
type Interrupt = dyn Fn() -> Result<()> + Send + Sync;

/// How a client call waits, and the calls themselves.
///
/// The plain functions ([`tcp_request`], [`udp_request`],
/// [`Connection::connect`]) are these calls with a timeout set. The
/// options add UDP retries, and an interrupt check that runs at least every
/// 50 ms while waiting (a Python binding runs its signal handlers there).
///
/// ```no_run
/// # use std::time::Duration;
/// let options = upcase::client::Options::new().timeout(Some(Duration::from_secs(1))).retries(3);
/// let reply = options.udp_request("localhost", 12000, b"hi")?;
/// assert_eq!(reply.data, b"HI");
/// # Ok::<(), upcase::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Options {
    timeout: Option<Duration>,
    retries: u32,
    interrupt: Option<Arc<Interrupt>>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<crate::tls::TlsClient>>,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("Options");
        f.field("timeout", &self.timeout).field("retries", &self.retries).field("interrupt", &self.interrupt.is_some());
        #[cfg(feature = "tls")]
        f.field("tls", &self.tls);
        f.finish()
    }
}

impl Options {
    /// No timeout, no retries, no interrupt check.
    pub fn new() -> Options {
        Options::default()
    }

    /// Bounds each wait for progress (for UDP: each attempt); `None` waits
    /// for ever.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Options {
        self.timeout = timeout;
        self
    }

    /// How many times UDP sends again when an attempt gets no reply.
    pub fn retries(mut self, retries: u32) -> Options {
        self.retries = retries;
        self
    }

    /// Runs `check` at least every 50 ms while waiting; its error ends the
    /// operation, and is what the operation returns.
    pub fn interrupt(mut self, check: impl Fn() -> Result<()> + Send + Sync + 'static) -> Options {
        self.interrupt = Some(Arc::new(check));
        self
    }

    /// TCP over TLS as `tls` says (feature `tls`); `None`: plaintext.
    /// The timeout bounds the whole handshake.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: Option<Arc<crate::tls::TlsClient>>) -> Options {
        self.tls = tls;
        self
    }

    /// Opens a TCP connection, as [`connect_tcp`].
    pub fn connect_tcp(&self, host: &str, port: u16) -> Result<(OwnedFd, SockAddr)> {
        if port == 0 {
            return Err(Error::invalid(
                format!("connect to {}", host_port_text(host, port)),
                "port 0 is not a valid destination",
            ));
        }
        let addrs = resolve(host, port, libc::SOCK_STREAM, Purpose::Connect)?;
        let mut last = None;
        for addr in addrs {
            match connect_one(&addr, self) {
                Ok(fd) => return Ok((fd, addr)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| no_address(host, port)))
    }

    /// One TCP exchange, as [`tcp_request`].
    pub fn tcp_request(&self, host: &str, port: u16, data: &[u8]) -> Result<Vec<u8>> {
        let (fd, peer) = self.connect_tcp(host, port)?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            let mut session = tls.connect(host)?;
            tls_handshake(&fd, &peer, &mut session, self)?;
            return exchange_tls(&fd, &peer, &mut session, data, true, self);
        }
        exchange(&fd, &peer, data, true, self)
    }

    /// A kept-open connection, as [`Connection::connect`]; its requests
    /// wait as these options say.
    pub fn connect(&self, host: &str, port: u16) -> Result<Connection> {
        let (fd, peer) = self.connect_tcp(host, port)?;
        #[cfg(feature = "tls")]
        let tls = match &self.tls {
            Some(tls) => {
                let mut session = tls.connect(host)?;
                tls_handshake(&fd, &peer, &mut session, self)?;
                Some(Box::new(session))
            }
            None => None,
        };
        Ok(Connection {
            fd: Arc::new(fd),
            peer,
            options: self.clone(),
            broken: false,
            #[cfg(feature = "tls")]
            tls,
        })
    }

    /// One UDP exchange, as [`udp_request`], the timeout bounding each
    /// attempt. The result also counts the datagrams that were ignored.
    pub fn udp_request(&self, host: &str, port: u16, data: &[u8]) -> Result<UdpReply> {
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
            match udp_one(&addr, data, self) {
                Ok(reply) => return Ok(reply),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| no_address(host, port)))
    }

    /// Waits until `fd` is ready for `events` (`libc::POLLIN`,
    /// `libc::POLLOUT`) for at most the timeout, running the interrupt
    /// check. Returns the `revents`; running out of time is an error with
    /// code `-ETIMEDOUT`.
    pub fn wait_ready(&self, fd: BorrowedFd<'_>, events: i16) -> Result<i16> {
        self.wait_fd(fd, events, self.timeout, &|| format!("poll descriptor {}", fd.as_raw_fd()))
    }

    /// [`wait_ready`](Self::wait_ready) for at most `timeout`. Retries on
    /// EINTR with what is left of the wait.
    fn wait_fd(
        &self,
        fd: BorrowedFd<'_>,
        events: i16,
        timeout: Option<Duration>,
        what: &dyn Fn() -> String,
    ) -> Result<i16> {
        let start = Instant::now();
        loop {
            if let Some(check) = &self.interrupt {
                check()?;
            }
            let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
            let slice = match (left, self.interrupt.is_some()) {
                (Some(l), true) => Some(l.min(CHECK_EVERY)),
                (None, true) => Some(CHECK_EVERY),
                (l, false) => l,
            };
            match sys::poll2((fd.as_raw_fd(), events), None, sys::timeout_ms(slice)) {
                Ok((0, _)) => {
                    if left.is_some_and(|l| l <= slice.unwrap_or_default()) {
                        let secs = timeout.unwrap_or_default().as_secs_f64();
                        return Err(Error::timed_out(what(), format!("timed out after {secs:.3} s")));
                    }
                }
                Ok((rev, _)) => return Ok(rev),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(Error::os(what(), e)),
            }
        }
    }
}

/// A UDP reply, and what was ignored while waiting for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpReply {
    /// The reply: the request, upper-cased.
    pub data: Vec<u8>,
    /// Datagrams that reached the client and could not be the reply (from
    /// another address, of another length, or other bytes), over all
    /// attempts.
    pub ignored: u64,
}

/// A moment that will not come (about thirty years from now).
fn far_future() -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_secs(1 << 30)).unwrap_or(now)
}

/// The failure of a name that resolved to no address at all.
fn no_address(host: &str, port: u16) -> Error {
    Error::resolve(format!("resolve {}", host_port_text(host, port)), libc::EAI_NONAME)
}

/// Opens a TCP connection to `host:port`, trying every address the
/// resolver gives, in order, until one accepts. The socket stays
/// non-blocking. The error of the last address tried is returned.
pub fn connect_tcp(host: &str, port: u16, timeout: Option<Duration>) -> Result<(OwnedFd, SockAddr)> {
    Options::new().timeout(timeout).connect_tcp(host, port)
}

/// `socket()` + non-blocking `connect()` + wait for the handshake.
fn connect_one(addr: &SockAddr, options: &Options) -> Result<OwnedFd> {
    let what = || format!("connect to {addr}");
    let fd = sys::socket(addr.family(), libc::SOCK_STREAM, true).map_err(|e| Error::os(what(), e))?;
    match sys::connect(fd.as_fd(), addr) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS) | Some(libc::EINTR)) => {
            // The handshake goes on in the kernel; writable means it ended,
            // and SO_ERROR says how.
            options.wait_fd(fd.as_fd(), libc::POLLOUT, options.timeout, &what)?;
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
fn exchange(fd: &OwnedFd, peer: &SockAddr, data: &[u8], half_close: bool, options: &Options) -> Result<Vec<u8>> {
    let what = || format!("exchange with {peer}");
    let mut reply = Reply::new(data.len(), half_close);
    let mut sent = 0usize;
    let mut shut = !half_close;
    if half_close && data.is_empty() {
        shut_write(fd, &what)?;
        shut = true;
    }
    loop {
        let want_more = if half_close { true } else { reply.bytes.len() < data.len() };
        if !want_more && sent == data.len() {
            return Ok(reply.bytes);
        }
        let mut events = libc::POLLIN;
        if sent < data.len() {
            events |= libc::POLLOUT;
        }
        let rev = options.wait_fd(fd.as_fd(), events, options.timeout, &what)?;
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
            match reply.read(&what, |room| sys::recv(fd.as_fd(), room))? {
                Took::Full | Took::Got => {}
                Took::Ended => return reply.end(sent == data.len(), what(), "connection closed"),
                Took::Failed(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => {}
                Took::Failed(e) => return Err(Error::os(what(), e)),
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

/// A reply as it comes in, to a request of `want` bytes: read to the end
/// of stream with `half_close`, else exactly `want` bytes.
struct Reply {
    bytes: Vec<u8>,
    want: usize,
    half_close: bool,
}

/// What one read of a reply did.
enum Took {
    /// The reply has all the bytes it can take: nothing was read.
    Full,
    /// Bytes came.
    Got,
    /// The end of the stream.
    Ended,
    /// The read failed; the caller says what the error means.
    Failed(io::Error),
}

impl Reply {
    fn new(want: usize, half_close: bool) -> Reply {
        Reply { bytes: Vec::with_capacity(want), want, half_close }
    }

    /// One `read` into the room after the bytes so far. With
    /// `half_close`, more bytes than the request had are an error.
    fn read(&mut self, what: &dyn Fn() -> String, read: impl FnOnce(&mut [u8]) -> io::Result<usize>) -> Result<Took> {
        let old = self.bytes.len();
        let room = if self.half_close { CHUNK } else { self.want - old };
        if room == 0 {
            return Ok(Took::Full);
        }
        self.bytes.resize(old + room, 0);
        let res = read(&mut self.bytes[old..]);
        self.bytes.truncate(old + *res.as_ref().unwrap_or(&0));
        match res {
            Ok(0) => Ok(Took::Ended),
            Ok(_) if self.half_close && self.bytes.len() > self.want => {
                Err(short_or_long(what(), &self.bytes, self.want))
            }
            Ok(_) => Ok(Took::Got),
            Err(e) => Ok(Took::Failed(e)),
        }
    }

    /// The server ended its stream (`ended` says how): the reply, if the
    /// whole request was sent and it has as many bytes.
    fn end(self, all_sent: bool, what: String, ended: &str) -> Result<Vec<u8>> {
        if !(self.half_close && all_sent) {
            let detail = format!("{ended} after {} of {} reply bytes", self.bytes.len(), self.want);
            return Err(Error::own(ERR_SHORT_REPLY, what, detail));
        }
        if self.bytes.len() != self.want {
            return Err(short_or_long(what, &self.bytes, self.want));
        }
        Ok(self.bytes)
    }
}

fn short_or_long(what: String, reply: &[u8], sent: usize) -> Error {
    let got = reply.len();
    // A TLS server answers a plaintext request with an alert record:
    // type 21, version 3.x.
    let hint = if reply.starts_with(&[21, 3]) { " (a TLS alert: the server speaks TLS)" } else { "" };
    if got < sent {
        Error::own(ERR_SHORT_REPLY, what, format!("reply has {got} bytes, request had {sent}{hint}"))
    } else {
        Error::own(ERR_PROTOCOL, what, format!("reply has more bytes ({got}+) than the request ({sent}){hint}"))
    }
}

/// Runs the TLS handshake on a connected socket, within the options'
/// timeout. The client's last handshake record may still be queued.
#[cfg(feature = "tls")]
fn tls_handshake(
    fd: &OwnedFd,
    peer: &SockAddr,
    session: &mut rustls::ClientConnection,
    options: &Options,
) -> Result<()> {
    use crate::tls::{tls_error, FdIo};
    use std::io::ErrorKind;

    let what = || format!("TLS handshake with {peer}");
    let start = Instant::now();
    while session.is_handshaking() {
        let events = if session.wants_write() { libc::POLLOUT } else { libc::POLLIN };
        let left = options.timeout.map(|t| t.saturating_sub(start.elapsed()));
        if left.is_some_and(|l| l.is_zero()) {
            let secs = options.timeout.unwrap_or_default().as_secs_f64();
            return Err(Error::timed_out(what(), format!("not done after {secs:.3} s")));
        }
        let rev = options.wait_fd(fd.as_fd(), events, left, &what)?;
        if events == libc::POLLOUT {
            match session.write_tls(&mut FdIo(fd.as_fd())) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(Error::os(what(), e)),
            }
            continue;
        }
        if rev & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) == 0 {
            continue;
        }
        match session.read_tls(&mut FdIo(fd.as_fd())) {
            Ok(0) => return Err(Error::own(ERR_TLS, what(), "the server closed the connection during the handshake")),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => continue,
            Err(e) => return Err(Error::os(what(), e)),
        }
        if let Err(e) = session.process_new_packets() {
            // The alert rustls queued tells the server why.
            send_queued(session, fd.as_fd());
            return Err(match e {
                rustls::Error::InvalidMessage(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. } => {
                    Error::own(ERR_TLS, what(), format!("TLS: {e} (is the server speaking TLS on this port?)"))
                }
                e => tls_error(what(), e),
            });
        }
    }
    Ok(())
}

/// Sends every record rustls has queued, as far as the socket takes them
/// now: an alert, or our `close_notify`, on the way out.
#[cfg(feature = "tls")]
fn send_queued(session: &mut rustls::ClientConnection, fd: std::os::fd::BorrowedFd) {
    while session.wants_write() {
        if session.write_tls(&mut crate::tls::FdIo(fd)).is_err() {
            break;
        }
    }
}

/// [`exchange`] inside TLS, after [`tls_handshake`]: the request is handed
/// to rustls a chunk at a time, as its records leave, and the half-close
/// is our `close_notify`. A reply ended without the server's
/// `close_notify` is cut short: an error, whatever its length.
#[cfg(feature = "tls")]
fn exchange_tls(
    fd: &OwnedFd,
    peer: &SockAddr,
    session: &mut rustls::ClientConnection,
    data: &[u8],
    half_close: bool,
    options: &Options,
) -> Result<Vec<u8>> {
    use crate::tls::{tls_error, FdIo};
    use std::io::{ErrorKind, Read, Write};

    let what = || format!("TLS exchange with {peer}");
    let mut reply = Reply::new(data.len(), half_close);
    let mut put = 0usize;
    let mut closed = !half_close;
    let mut eof = false;
    loop {
        // More of the request, once the records before it have left.
        if put < data.len() && !session.wants_write() {
            let end = data.len().min(put + CHUNK);
            put += session.writer().write(&data[put..end]).map_err(|e| Error::os(what(), e))?;
        }
        if put == data.len() && !closed {
            session.send_close_notify();
            closed = true;
        }
        // The reply bytes rustls has decrypted.
        loop {
            match reply.read(&what, |room| session.reader().read(room))? {
                Took::Got => {}
                Took::Full => break,
                // The server's close_notify.
                Took::Ended => return reply.end(put == data.len(), what(), "server ended TLS"),
                Took::Failed(e) if e.kind() == ErrorKind::WouldBlock => break,
                Took::Failed(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    return reply.end(false, what(), "connection closed without TLS close_notify")
                }
                Took::Failed(e) => return Err(Error::os(what(), e)),
            }
        }
        if !half_close && reply.bytes.len() == data.len() && put == data.len() && !session.wants_write() {
            return Ok(reply.bytes);
        }
        if eof {
            return Err(Error::own(ERR_SHORT_REPLY, what(), "connection closed without TLS close_notify"));
        }
        let mut events = libc::POLLIN;
        if session.wants_write() {
            events |= libc::POLLOUT;
        }
        let rev = options.wait_fd(fd.as_fd(), events, options.timeout, &what)?;
        if session.wants_write() && rev & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
            match session.write_tls(&mut FdIo(fd.as_fd())) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(Error::os(what(), e)),
            }
        }
        if rev & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
            match session.read_tls(&mut FdIo(fd.as_fd())) {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => continue,
                Err(e) => return Err(Error::os(what(), e)),
            }
            if let Err(e) = session.process_new_packets() {
                send_queued(session, fd.as_fd());
                return Err(tls_error(what(), e));
            }
        }
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
    Options::new().timeout(timeout).tcp_request(host, port, data)
}

/// A kept-open TCP connection: each `request` sends its bytes and returns
/// exactly as many bytes back, so many requests share one connection.
pub struct Connection {
    /// Shared only with [`ShutdownHandle`]s, which hold it weakly.
    fd: Arc<OwnedFd>,
    peer: SockAddr,
    options: Options,
    /// Set by any failed request: what is in flight is unknown then, and a
    /// later request could read an earlier reply, so none is made.
    broken: bool,
    /// The TLS session, when the options asked for TLS.
    #[cfg(feature = "tls")]
    tls: Option<Box<rustls::ClientConnection>>,
}

impl Connection {
    /// Connects to `host:port` (every resolved address tried in turn).
    /// `timeout` bounds each wait, now and in every request.
    pub fn connect(host: &str, port: u16, timeout: Option<Duration>) -> Result<Connection> {
        Options::new().timeout(timeout).connect(host, port)
    }

    /// Sends `data`, returns the reply (always `data.len()` bytes).
    ///
    /// After a failed request (a timeout, a reset, an interruption) the
    /// connection is broken: every later request fails at once with
    /// `ENOTCONN` instead of reading what the earlier one left behind.
    pub fn request(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        if self.broken {
            return Err(Error::errno(format!("request to {}", self.peer), libc::ENOTCONN)
                .within("an earlier request on this connection failed"));
        }
        #[cfg(feature = "tls")]
        if let Some(session) = &mut self.tls {
            let result = exchange_tls(&self.fd, &self.peer, session, data, false, &self.options);
            self.broken = result.is_err();
            return result;
        }
        let result = exchange(&self.fd, &self.peer, data, false, &self.options);
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
        self.options.timeout
    }

    /// A handle that shuts this connection down from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { fd: Arc::downgrade(&self.fd) }
    }

    /// Closes the connection (half-close first, so the server sees a clean
    /// end of stream). Dropping the value closes it as well.
    pub fn close(self) {
        #[cfg(feature = "tls")]
        if let Some(mut session) = self.tls {
            // TLS's half-close first, as far as the socket takes it now.
            session.send_close_notify();
            send_queued(&mut session, self.fd.as_fd());
        }
        let _ = sys::shutdown(self.fd.as_fd(), libc::SHUT_WR);
    }
}

/// Shuts a [`Connection`] down from another thread: a request waiting on
/// it ends at once, and the server sees end of stream. Once the connection
/// is dropped the handle does nothing.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    fd: Weak<OwnedFd>,
}

impl ShutdownHandle {
    /// `shutdown(SHUT_RDWR)`. The descriptor stays open, and owned by the
    /// connection. Errors (it is already shut) are of no interest here.
    pub fn shutdown(&self) {
        if let Some(fd) = self.fd.upgrade() {
            let _ = sys::shutdown(fd.as_fd(), libc::SHUT_RDWR);
        }
    }
}

/// One UDP exchange: send `data` as one datagram to `host:port`, wait up to
/// `timeout` for the reply, send again up to `retries` more times. A
/// datagram that cannot be the reply (from another address, of another
/// length, or not the upper-cased request) is ignored, and the wait goes
/// on. Every resolved address is tried in turn when one gets no answer.
pub fn udp_request(host: &str, port: u16, data: &[u8], timeout: Duration, retries: u32) -> Result<Vec<u8>> {
    Ok(Options::new().timeout(Some(timeout)).retries(retries).udp_request(host, port, data)?.data)
}

fn udp_one(addr: &SockAddr, data: &[u8], options: &Options) -> Result<UdpReply> {
    let what = || format!("udp request to {addr}");
    let fd = sys::socket(addr.family(), libc::SOCK_DGRAM, true).map_err(|e| Error::os(what(), e))?;
    // Connecting a UDP socket records the peer: the kernel then reports
    // "port unreachable" as ECONNREFUSED instead of letting us wait it out,
    // and drops datagrams from other addresses.
    sys::connect(fd.as_fd(), addr).map_err(|e| Error::os(what(), e))?;
    let expected = crate::upper::upper(data);
    // One byte more than the reply, so that a longer datagram cannot match
    // (MSG_TRUNC reports its real length as well).
    let mut buf = vec![0u8; data.len() + 1];
    let mut ignored = 0u64;
    for _attempt in 0..=options.retries {
        // The socket is connected, so a plain send goes to `addr`.
        sys::send(fd.as_fd(), data).map_err(|e| Error::os(what(), e))?;
        // A timeout too large to add is as good as for ever.
        let deadline = match options.timeout {
            Some(t) => Instant::now().checked_add(t).unwrap_or_else(far_future),
            None => far_future(),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match options.wait_fd(fd.as_fd(), libc::POLLIN, Some(left), &what) {
                Ok(_) => {}
                Err(e) if e.code() == -libc::ETIMEDOUT => break,
                Err(e) => return Err(e),
            }
            match sys::recvfrom(fd.as_fd(), &mut buf, libc::MSG_TRUNC) {
                Ok((n, from)) => {
                    // The sender is checked here too, so that the rule does
                    // not rest on the kernel's filter alone.
                    if from == *addr && n == expected.len() && buf[..n] == expected[..] {
                        return Ok(UdpReply { data: expected, ignored });
                    }
                    ignored += 1;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => continue,
                Err(e) => return Err(Error::os(what(), e)),
            }
        }
    }
    let secs = options.timeout.unwrap_or_default().as_secs_f64();
    let attempts = u64::from(options.retries) + 1;
    let mut detail = format!("timed out: no reply after {attempts} attempt(s) of {secs:.3} s each");
    if ignored > 0 {
        detail.push_str(&format!(", {ignored} datagram(s) that could not be the reply ignored"));
    }
    Err(Error::timed_out(what(), detail))
}
