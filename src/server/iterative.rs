//! The iterative TCP server: the slides' loop, one client at a time.
//!
//! ```text
//! while 1:
//!     connectionSocket, addr = serverSocket.accept()
//!     sentence = connectionSocket.recv(1024)
//!     connectionSocket.send(sentence.upper())
//!     connectionSocket.close()
//! ```
//!
//! Done properly: the client is read until it half-closes (not once, and
//! not cut at 1024 bytes), each chunk is answered as it arrives, and every
//! wait also watches the waker, so `stop` is prompt, and the connection's
//! deadline (the idle timeout and the minimum rate, as in the concurrent
//! server), so one silent or trickling client cannot hold the others in
//! the backlog for ever. A TLS client (feature `tls`) is served by the
//! concurrent server's TLS state machine, driven here by the same waits.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::pace::{nanos, Deadline};
use super::{Counters, End, Shared};
use crate::error::{Error, Result};
use crate::sys;
use crate::upper::upper_in_place;

/// What a wait saw.
enum Ready {
    Yes,
    Stopped,
    TimedOut,
}

/// Waits for `events` on `fd`, or the waker, for at most `timeout`.
fn wait(shared: &Shared, fd: &OwnedFd, events: i16, timeout: Option<Duration>) -> std::io::Result<Ready> {
    let start = Instant::now();
    loop {
        if shared.is_stopped() {
            return Ok(Ready::Stopped);
        }
        let ms = sys::timeout_ms(timeout.map(|t| t.saturating_sub(start.elapsed())));
        let waker = (shared.waker.as_fd().as_raw_fd(), libc::POLLIN);
        match sys::poll2((fd.as_raw_fd(), events), Some(waker), ms) {
            Ok((_, w)) if w != 0 => return Ok(Ready::Stopped),
            Ok((0, _)) => return Ok(Ready::TimedOut),
            Ok(_) => return Ok(Ready::Yes),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

pub(super) fn run(shared: &Shared, index: usize) -> Result<()> {
    let counters = &shared.counters[index];
    let listener = &shared.socket;
    let mut buf = vec![0u8; super::chunk(&shared.config)];
    loop {
        match wait(shared, listener, libc::POLLIN, None).map_err(|e| Error::os("poll", e))? {
            Ready::Stopped => return Ok(()),
            Ready::TimedOut => continue,
            Ready::Yes => {}
        }
        // accept(): the next client in the backlog.
        let (conn, peer) = match sys::accept4(listener.as_fd(), true) {
            Ok(x) => x,
            Err(e) => {
                match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ECONNABORTED) => {}
                    Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
                        // Out of descriptors: wait a little (or for stop)
                        // rather than spin; the client waits in the backlog.
                        Counters::add(&counters.errors, 1);
                        let waker = (shared.waker.as_fd().as_raw_fd(), libc::POLLIN);
                        let _ = sys::poll2(waker, None, 50);
                    }
                    _ => Counters::add(&counters.errors, 1),
                }
                continue;
            }
        };
        Counters::add(&counters.accepted, 1);
        shared.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shared.tell(&peer);
        #[cfg(feature = "tls")]
        let (end, conn) = match &shared.config.tls {
            Some(tls) => serve_tls(shared, counters, conn, &mut buf, tls),
            None => (serve_one(shared, counters, &conn, &mut buf), conn),
        };
        #[cfg(not(feature = "tls"))]
        let end = serve_one(shared, counters, &conn, &mut buf);
        shared.ended(counters, end.unwrap_or(End::Done)); // counted, then closed
        drop(conn); // close(): this client is done; the welcoming socket stays
        if end.is_none() {
            return Ok(()); // stopped
        }
    }
}

/// Serves one client to the end; `None` when the server was stopped
/// meanwhile.
fn serve_one(shared: &Shared, counters: &Counters, conn: &OwnedFd, buf: &mut [u8]) -> Option<End> {
    let limits = shared.limits;
    let start = Instant::now();
    let now = || nanos(start.elapsed());
    let mut deadline = Deadline::start(0, &limits);
    // How long the next wait may last: until the connection's deadline.
    let left = |d: &Deadline| d.at(&limits).map(|at| Duration::from_nanos(at.saturating_sub(now())));
    loop {
        match wait(shared, conn, libc::POLLIN, left(&deadline)) {
            Ok(Ready::Yes) => {}
            Ok(Ready::Stopped) => return None,
            Ok(Ready::TimedOut) => return Some(End::Idle),
            Err(_) => return Some(End::Failed),
        }
        // recv(): whatever has arrived, up to one chunk.
        let n = match sys::recv(conn.as_fd(), buf) {
            Ok(0) => return Some(End::Done), // the client half-closed: all answered
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => continue,
            Err(_) => return Some(End::Failed),
        };
        deadline.progress(now(), n, &limits);
        Counters::add(&counters.bytes_in, n as u64);
        upper_in_place(&mut buf[..n]);
        // send(): all of it, waiting for room as the client reads. Bytes
        // that had to wait for the client earn credit when it takes them
        // (as in the concurrent server): meanwhile it cannot send.
        let mut sent = 0;
        let mut waited = false;
        while sent < n {
            match sys::send(conn.as_fd(), &buf[sent..n]) {
                Ok(k) => {
                    sent += k;
                    deadline.progress(now(), if waited { k } else { 0 }, &limits);
                    Counters::add(&counters.bytes_out, k as u64);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    waited = true;
                    match wait(shared, conn, libc::POLLOUT, left(&deadline)) {
                        Ok(Ready::Yes) => {}
                        Ok(Ready::Stopped) => return None,
                        Ok(Ready::TimedOut) => return Some(End::Idle),
                        Err(_) => return Some(End::Failed),
                    }
                }
                Err(_) => return Some(End::Failed),
            }
        }
    }
}

/// Serves one TLS client to the end, as `serve_one` does a plaintext one:
/// the connection state machine of the concurrent server (`tls_conn.rs`),
/// driven by waits. Gives the socket back for the caller to close.
#[cfg(feature = "tls")]
fn serve_tls(
    shared: &Shared,
    counters: &Counters,
    conn: OwnedFd,
    buf: &mut [u8],
    tls: &crate::tls::TlsServer,
) -> (Option<End>, OwnedFd) {
    use super::conn::{Ctx, Outcome};
    use super::tls_conn::TlsConn;

    let Ok(session) = tls.accept() else { return (Some(End::Failed), conn) };
    let limits = shared.limits;
    let start = Instant::now();
    let now = || nanos(start.elapsed());
    let mut c = TlsConn::new(conn, session, 0, &limits, shared.config.tls_handshake_timeout);
    let end = loop {
        let cx = Ctx { counters, now: now(), limits: &limits };
        match c.ready(buf, &cx) {
            Outcome::Keep => {}
            Outcome::Close => break Some(End::Done),
            Outcome::Fail => break Some(End::Failed),
        }
        let events = if c.wants_write() { libc::POLLOUT } else { libc::POLLIN };
        let left = c.deadline(&limits).map(|at| Duration::from_nanos(at.saturating_sub(now())));
        match wait(shared, c.sock(), events, left) {
            Ok(Ready::Yes) => {}
            Ok(Ready::Stopped) => break None,
            Ok(Ready::TimedOut) => break Some(End::Idle),
            Err(_) => break Some(End::Failed),
        }
    };
    (end, c.into_sock())
}
