//! Admission: a new TCP client is accepted, held to the connection cap,
//! counted, told about, and its first request served at once, before any
//! event loop is involved. Both concurrent loops (epoll and io_uring) admit
//! their clients here.
//!
//! A client usually sends right after connecting (with `TCP_DEFER_ACCEPT`
//! it has, by definition), so a short exchange (request, half-close) is
//! finished and closed here without ever being registered with a loop.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use super::conn::{Conn, Ctx, Outcome};
use super::{Counters, End, Shared};
use crate::addr::SockAddr;
use crate::sys;

/// What one [`accept_one`] came to.
pub(crate) enum Accepted {
    /// A client, its first request served, to be kept.
    Conn(Conn<OwnedFd>),
    /// A client dealt with at once (served and closed, refused, or a
    /// connection aborted before it was taken): try the next one.
    Next,
    /// Nobody waiting, or a failure worth no retry in this wake-up.
    Empty,
    /// Out of descriptors or memory: the client waits in the backlog; the
    /// caller stops accepting for [`FD_BACKOFF`](super::pace::FD_BACKOFF).
    Exhausted,
}

/// `accept4()` of one waiting client, then [`admit`].
pub(crate) fn accept_one(shared: &Shared, buf: &mut [u8], cx: &Ctx) -> Accepted {
    let (fd, peer) = match sys::accept4(shared.socket.as_fd(), true) {
        Ok(x) => x,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Accepted::Empty,
                Some(libc::EINTR) | Some(libc::ECONNABORTED) => Accepted::Next,
                Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
                    Counters::add(&cx.counters.errors, 1);
                    Accepted::Exhausted
                }
                _ => {
                    // Anything else (EPERM from a firewall, EPROTO...):
                    // count it and let the next wake-up try again, rather
                    // than hammering accept in this one.
                    Counters::add(&cx.counters.errors, 1);
                    Accepted::Empty
                }
            };
        }
    };
    admit(shared, fd, Some(peer), buf, cx)
}

/// A client just accepted: refused over the cap, else counted, told about,
/// and its first request served at once. `peer` is `None` when the accept
/// gave no address (io_uring's): it is then looked up if someone is to be
/// told.
pub(crate) fn admit(shared: &Shared, fd: OwnedFd, peer: Option<SockAddr>, buf: &mut [u8], cx: &Ctx) -> Accepted {
    let counters = cx.counters;
    let active = shared.active.fetch_add(1, Ordering::Relaxed);
    if active >= shared.config.max_connections as u64 {
        shared.ended(counters, End::Rejected);
        drop(fd); // closed at once: the client sees end of stream
        return Accepted::Next;
    }
    Counters::add(&counters.accepted, 1);
    if shared.config.on_client.is_some() {
        // Without an address (the client reset meanwhile), nobody is told;
        // the first read finds the reset.
        if let Some(peer) = peer.or_else(|| sys::getpeername(fd.as_fd()).ok()) {
            shared.tell(&peer);
        }
    }
    let mut conn = Conn::new(fd, cx.now, cx.limits);
    let end = match conn.first(buf, cx) {
        Outcome::Keep => return Accepted::Conn(conn),
        Outcome::Close => End::Done,
        Outcome::Fail => End::Failed,
    };
    shared.ended(counters, end);
    drop(conn);
    Accepted::Next
}
