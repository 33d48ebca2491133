//! One TLS connection (feature `tls`), as a state machine over the same
//! [`Io`] as a plaintext one (`conn.rs`), driven by the epoll loop and by
//! the iterative server alike.
//!
//! rustls's buffered API sits between the socket and the transform:
//! `read_tls` takes records from `Io::recv`, `process_new_packets` decrypts
//! them, `reader` yields the bytes, which are upper-cased and go back
//! through `writer`, and `write_tls` hands the records to `Io::send`.
//!
//! The rules of the plaintext connection hold:
//! - *Back-pressure.* Every queued record is sent before anything more is
//!   read, so a client that does not read holds at most one chunk of
//!   reply, encrypted.
//! - *Half-close.* The client's `close_notify` is seen only once every
//!   byte before it has been answered; ours follows, then `shutdown`. A
//!   connection that ends without `close_notify` failed.
//! - *Time.* The handshake must be done `tls_handshake_timeout` after the
//!   accept; after it, the connection's [`Deadline`] rules alone.
//!
//! This module makes no system call other than through [`Io`].

use std::io::{self, ErrorKind, Read, Write};
use std::time::Duration;

use rustls::ServerConnection;

use super::conn::{Ctx, Io, Outcome, READ_BUDGET};
use super::pace::{nanos, Deadline, Limits};
use super::Counters;
use crate::upper::upper_in_place;

/// A connection's [`Io`] as rustls's record transport.
struct Records<'a, S>(&'a mut S);

impl<S: Io> Read for Records<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
}

impl<S: Io> Write for Records<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf, false)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One TLS client.
pub(crate) struct TlsConn<S> {
    pub(crate) sock: S,
    session: Box<ServerConnection>,
    deadline: Deadline,
    /// When the handshake must be done.
    handshake_by: u64,
    /// A send waited for the client: the records it then takes earn credit.
    waited: bool,
    /// Our `close_notify` is queued: the connection ends once it is sent.
    closing: bool,
}

impl<S: Io> TlsConn<S> {
    /// A client accepted at `now`.
    pub(crate) fn new(sock: S, session: ServerConnection, now: u64, limits: &Limits, handshake: Duration) -> Self {
        let mut session = Box::new(session);
        // The bound is ours: nothing is read while a reply is queued.
        session.set_buffer_limit(None);
        TlsConn {
            sock,
            session,
            deadline: Deadline::start(now, limits),
            handshake_by: now.saturating_add(nanos(handshake)),
            waited: false,
            closing: false,
        }
    }

    /// Records are queued: the connection waits for room to send them.
    pub(crate) fn wants_write(&self) -> bool {
        self.session.wants_write()
    }

    /// When the connection is to be closed: its deadline, or the end of
    /// the handshake's time while it lasts.
    pub(crate) fn deadline(&self, limits: &Limits) -> Option<u64> {
        let at = self.deadline.at(limits);
        if self.session.is_handshaking() {
            Some(at.map_or(self.handshake_by, |a| a.min(self.handshake_by)))
        } else {
            at
        }
    }

    pub(crate) fn expired(&self, now: u64, limits: &Limits) -> bool {
        self.deadline(limits).is_some_and(|d| now >= d)
    }

    /// Moves what the socket allows: queued records out, then new records
    /// in, each chunk of bytes answered as it is decrypted. At most
    /// `READ_BUDGET` reads, so one busy client cannot starve the others.
    pub(crate) fn ready(&mut self, buf: &mut [u8], cx: &Ctx) -> Outcome {
        let mut reads = 0;
        loop {
            while self.session.wants_write() {
                match self.session.write_tls(&mut Records(&mut self.sock)) {
                    Ok(k) => self.deadline.progress(cx.now, if self.waited { k } else { 0 }, cx.limits),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.waited = true;
                        return Outcome::Keep;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return Outcome::Fail,
                }
            }
            self.waited = false;
            if self.closing {
                let _ = self.sock.finish();
                return Outcome::Close;
            }
            match self.session.reader().read(buf) {
                Ok(0) => {
                    // The client's close_notify, everything before it answered.
                    self.session.send_close_notify();
                    self.closing = true;
                    continue;
                }
                Ok(n) => {
                    Counters::add(&cx.counters.bytes_in, n as u64);
                    upper_in_place(&mut buf[..n]);
                    if self.session.writer().write_all(&buf[..n]).is_err() {
                        return Outcome::Fail;
                    }
                    Counters::add(&cx.counters.bytes_out, n as u64);
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // End of stream without close_notify: a request cut short.
                Err(_) => return Outcome::Fail,
            }
            if reads == READ_BUDGET {
                return Outcome::Keep;
            }
            reads += 1;
            match self.session.read_tls(&mut Records(&mut self.sock)) {
                Ok(n) => self.deadline.progress(cx.now, n, cx.limits),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Outcome::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Outcome::Fail,
            }
            if self.session.process_new_packets().is_err() {
                // The alert rustls queued tells the client why. What the
                // client sent after the failed record is read and dropped:
                // a close with it unread would send a reset, which can
                // reach the client before the alert.
                let _ = self.session.write_tls(&mut Records(&mut self.sock));
                let mut sink = [0u8; 4096];
                for _ in 0..READ_BUDGET {
                    if !matches!(self.sock.recv(&mut sink), Ok(n) if n > 0) {
                        break;
                    }
                }
                return Outcome::Fail;
            }
        }
    }
}
