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
//! the backlog for ever.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::pace::{nanos, Deadline};
use super::{Counters, End, Shared};
use crate::error::{Error, Result};
use crate::sys;
use crate::upper::upper_in_place;
use crate::CHUNK;

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
    let mut buf = vec![0u8; CHUNK];
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
        let end = match &shared.config.tls {
            Some(tls) => serve_tls(shared, counters, &conn, &mut buf, tls),
            None => serve_one(shared, counters, &conn, &mut buf),
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

/// Serves one TLS client to the end: the handshake (within
/// `tls_handshake_timeout`), then as [`serve_one`], each record's bytes
/// answered before the next record is read. The client's `close_notify`
/// is its half-close: everything before it is answered, then ours is sent
/// and the connection closed. `None` when the server was stopped.
#[cfg(feature = "tls")]
fn serve_tls(
    shared: &Shared,
    counters: &Counters,
    conn: &OwnedFd,
    buf: &mut [u8],
    tls: &crate::tls::TlsServer,
) -> Option<End> {
    use std::io::{ErrorKind, Read, Write};

    use crate::tls::FdIo;

    let limits = shared.limits;
    let start = Instant::now();
    let now = || nanos(start.elapsed());
    let mut deadline = Deadline::start(0, &limits);
    let handshake_end = nanos(shared.config.tls_handshake_timeout);
    let Ok(mut session) = tls.accept() else { return Some(End::Failed) };
    // Until the next wait must end: the connection's deadline, and the
    // handshake's while it lasts.
    let left = |d: &Deadline, handshaking: bool| {
        let at = d.at(&limits);
        let at = if handshaking { Some(at.map_or(handshake_end, |a| a.min(handshake_end))) } else { at };
        at.map(|at| Duration::from_nanos(at.saturating_sub(now())))
    };
    let fd = conn.as_fd();
    let mut closing = false;
    loop {
        // Send every queued record first (handshake, reply, alert, our
        // close_notify): nothing more is read meanwhile (back-pressure).
        let mut waited = false;
        while session.wants_write() {
            match session.write_tls(&mut FdIo(fd)) {
                Ok(k) => deadline.progress(now(), if waited { k } else { 0 }, &limits),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    waited = true;
                    match wait(shared, conn, libc::POLLOUT, left(&deadline, session.is_handshaking())) {
                        Ok(Ready::Yes) => {}
                        Ok(Ready::Stopped) => return None,
                        Ok(Ready::TimedOut) => return Some(End::Idle),
                        Err(_) => return Some(End::Failed),
                    }
                }
                Err(_) => return Some(End::Failed),
            }
        }
        if closing {
            return Some(End::Done);
        }
        // The bytes rustls has decrypted, up to one chunk.
        match session.reader().read(buf) {
            Ok(0) => {
                // The client's close_notify, with everything before it answered.
                session.send_close_notify();
                closing = true;
                continue;
            }
            Ok(n) => {
                Counters::add(&counters.bytes_in, n as u64);
                upper_in_place(&mut buf[..n]);
                let mut put = 0;
                while put < n {
                    // The writer takes what fits under rustls's buffer limit.
                    match session.writer().write(&buf[put..n]) {
                        Ok(0) | Err(_) if !session.wants_write() => return Some(End::Failed),
                        Ok(k) => put += k,
                        Err(_) => {}
                    }
                    if put < n {
                        loop {
                            match session.write_tls(&mut FdIo(fd)) {
                                Ok(_) => break,
                                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                    match wait(shared, conn, libc::POLLOUT, left(&deadline, false)) {
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
                Counters::add(&counters.bytes_out, n as u64);
                continue;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            // The connection ended without close_notify: a cut-short request.
            Err(_) => return Some(End::Failed),
        }
        // recv(): the next records.
        match wait(shared, conn, libc::POLLIN, left(&deadline, session.is_handshaking())) {
            Ok(Ready::Yes) => {}
            Ok(Ready::Stopped) => return None,
            Ok(Ready::TimedOut) => return Some(End::Idle),
            Err(_) => return Some(End::Failed),
        }
        match session.read_tls(&mut FdIo(fd)) {
            Ok(n) => deadline.progress(now(), n, &limits),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => continue,
            Err(_) => return Some(End::Failed),
        }
        if session.process_new_packets().is_err() {
            // The alert rustls queued goes out; the client learns why.
            let _ = session.write_tls(&mut FdIo(fd));
            return Some(End::Failed);
        }
    }
}
