//! Admission: a new TCP client is accepted, held to the connection cap,
//! counted, told about, and its first request served at once, before any
//! event loop is involved. Both concurrent loops (epoll and io_uring) admit
//! their clients here.
//!
//! A client usually sends right after connecting (with `TCP_DEFER_ACCEPT`
//! it has, by definition), so a short exchange (request, half-close) is
//! finished and closed here without ever being registered with a loop.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::conn::{Conn, Ctx, Io, Outcome};
use super::{Counters, End, Shared};
use crate::addr::{IpPort, SockAddr};
use crate::sys;

/// Where a client comes from, as the per-address limit counts it: an IPv4
/// address, or an IPv6 /64 (one site's subnet, which one host may fill
/// with addresses of its own). A link-local IPv6 address (`fe80::/10`,
/// whose /64 every link shares) counts whole. An IPv4-mapped IPv6 address
/// is its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Origin {
    V4([u8; 4]),
    V6([u8; 8]),
    LinkLocal([u8; 16]),
}

impl Origin {
    fn of(peer: &SockAddr) -> Option<Origin> {
        match peer.unmapped()? {
            IpPort::V4(ip, _) => Some(Origin::V4(ip)),
            IpPort::V6(ip, _, _) if ip[0] == 0xFE && ip[1] & 0xC0 == 0x80 => Some(Origin::LinkLocal(ip)),
            IpPort::V6(ip, _, _) => {
                let mut net = [0u8; 8];
                net.copy_from_slice(&ip[..8]);
                Some(Origin::V6(net))
            }
        }
    }
}

/// The connections open now from each origin, for
/// `max_connections_per_address`. Shared by every loop of a server.
pub(crate) struct PerAddress {
    limit: usize,
    open: Mutex<HashMap<Origin, usize>>,
}

impl PerAddress {
    /// At most `limit` connections from one origin; 0: no limit.
    pub(crate) fn new(limit: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress { limit, open: Mutex::new(HashMap::new()) })
    }

    fn open(&self) -> MutexGuard<'_, HashMap<Origin, usize>> {
        // A panic while the lock was held leaves the counts as they were.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ticket for one more connection from `origin`, or `None` when that
    /// origin is at the limit.
    fn admit(table: &Arc<PerAddress>, origin: Origin) -> Option<Ticket> {
        let mut open = table.open();
        let n = open.entry(origin).or_insert(0);
        if *n >= table.limit {
            return None;
        }
        *n += 1;
        Some(Ticket { table: Arc::clone(table), origin })
    }
}

/// One connection counted against its origin, until the ticket is dropped.
pub(crate) struct Ticket {
    table: Arc<PerAddress>,
    origin: Origin,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.table.open();
        if let Some(n) = open.get_mut(&self.origin) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.origin);
            }
        }
    }
}

/// An accepted client's socket, with its place under the per-address
/// limit: the place is given back when the socket is closed.
pub(crate) struct Client {
    fd: OwnedFd,
    _ticket: Option<Ticket>,
}

impl Client {
    /// `fd`, counted against its address if `ticket` is given.
    pub(super) fn new(fd: OwnedFd, ticket: Option<Ticket>) -> Client {
        Client { fd, _ticket: ticket }
    }
}

impl AsRawFd for Client {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Io for Client {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd.recv(buf)
    }
    fn send(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
        self.fd.send(buf, more)
    }
    fn finish(&mut self) -> io::Result<()> {
        self.fd.finish()
    }
    fn segment_size(&mut self) -> Option<u16> {
        self.fd.segment_size()
    }
}

/// What one [`accept_one`] came to.
pub(crate) enum Accepted {
    /// A client, its first request served, to be kept.
    Conn(Conn<Client>),
    /// A TLS client to register (feature `tls`).
    #[cfg(feature = "tls")]
    Tls(super::tls_conn::TlsConn<Client>),
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

/// A client just accepted: refused over the cap or over its address's
/// limit, else counted, told about, and its first request served at once.
/// `peer` is `None` when the accept gave no address (io_uring's): it is
/// then looked up.
pub(crate) fn admit(shared: &Shared, fd: OwnedFd, peer: Option<SockAddr>, buf: &mut [u8], cx: &Ctx) -> Accepted {
    let counters = cx.counters;
    let active = shared.active.fetch_add(1, Ordering::Relaxed);
    if active >= shared.config.max_connections as u64 {
        shared.ended(counters, End::Rejected);
        drop(fd); // closed at once: the client sees end of stream
        return Accepted::Next;
    }
    let wants_peer = shared.config.on_client.is_some() || shared.per_address.limit > 0;
    let peer = if wants_peer { peer.or_else(|| sys::getpeername(fd.as_fd()).ok()) } else { None };
    let ticket = match (shared.per_address.limit, peer.as_ref().and_then(Origin::of)) {
        (0, _) | (_, None) => None,
        (_, Some(origin)) => match PerAddress::admit(&shared.per_address, origin) {
            Some(ticket) => Some(ticket),
            None => {
                shared.ended(counters, End::Rejected);
                drop(fd);
                return Accepted::Next;
            }
        },
    };
    Counters::add(&counters.accepted, 1);
    // Without an address (the client reset meanwhile), nobody is told;
    // the first read finds the reset.
    if let Some(peer) = peer {
        shared.tell(&peer);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.config.tls {
        return admit_tls(shared, Client::new(fd, ticket), tls, buf, cx);
    }
    let mut conn = Conn::new(Client::new(fd, ticket), cx.now, cx.limits);
    let end = match conn.first(buf, cx) {
        Outcome::Keep => return Accepted::Conn(conn),
        Outcome::Close => End::Done,
        Outcome::Fail => End::Failed,
    };
    shared.ended(counters, end);
    drop(conn);
    Accepted::Next
}

/// A TLS client: its handshake starts at once if its first records are
/// here already.
#[cfg(feature = "tls")]
fn admit_tls(shared: &Shared, client: Client, tls: &crate::tls::TlsServer, buf: &mut [u8], cx: &Ctx) -> Accepted {
    let Ok(session) = tls.accept() else {
        shared.ended(cx.counters, End::Failed);
        drop(client);
        return Accepted::Next;
    };
    let handshake = shared.config.tls_handshake_timeout;
    let mut conn = super::tls_conn::TlsConn::new(client, session, cx.now, cx.limits, handshake);
    let end = match conn.ready(buf, cx) {
        Outcome::Keep => return Accepted::Tls(conn),
        Outcome::Close => End::Done,
        Outcome::Fail => End::Failed,
    };
    shared.ended(cx.counters, end);
    drop(conn);
    Accepted::Next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_origin_holds_at_most_the_limit() {
        let table = PerAddress::new(2);
        let a = Origin::of(&SockAddr::v4([127, 0, 0, 2], 1000)).expect("ip");
        let b = Origin::of(&SockAddr::v4([127, 0, 0, 3], 1000)).expect("ip");
        let t1 = PerAddress::admit(&table, a).expect("first");
        let t2 = PerAddress::admit(&table, a).expect("second");
        assert!(PerAddress::admit(&table, a).is_none(), "a third from the same address");
        assert!(PerAddress::admit(&table, b).is_some(), "another address is not held back");
        drop(t1);
        let t3 = PerAddress::admit(&table, a).expect("a place given back is taken again");
        drop((t2, t3));
        assert!(table.open().is_empty(), "counts left for closed connections");
    }

    #[test]
    fn an_origin_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let v4 = Origin::of(&SockAddr::v4([192, 0, 2, 1], 1));
        let mut mapped = [0u8; 16];
        mapped[10..].copy_from_slice(&[0xFF, 0xFF, 192, 0, 2, 1]);
        assert_eq!(Origin::of(&SockAddr::v6(mapped, 2, 0)), v4);
        let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        let one = Origin::of(&SockAddr::v6(a, 1, 0));
        a[15] = 2;
        a[9] = 7;
        assert_eq!(Origin::of(&SockAddr::v6(a, 1, 0)), one, "same /64");
        a[7] = 2;
        assert_ne!(Origin::of(&SockAddr::v6(a, 1, 0)), one, "another /64");
        let mut ll = [0u8; 16];
        ll[..2].copy_from_slice(&[0xFE, 0x80]);
        ll[15] = 1;
        let first = Origin::of(&SockAddr::v6(ll, 1, 2));
        ll[15] = 2;
        assert_ne!(Origin::of(&SockAddr::v6(ll, 1, 2)), first, "link-local addresses count one by one");
    }
}
