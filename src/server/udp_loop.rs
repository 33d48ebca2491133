//! The UDP server: `recvfrom()` a datagram, upper-case it, `sendto()` it
//! back to the address it came from. In concurrent mode each loop thread
//! has a socket of its own on the same port (`SO_REUSEPORT`: the kernel
//! spreads senders over them). Datagrams move in batches of up to [`BATCH`]:
//! one `recvmmsg` takes them, one `sendmmsg` answers them. The batch and its
//! pointers are [`DatagramBatch`]'s business; this file holds the rules.
//!
//! A datagram is answered whole or not at all: a datagram larger than
//! `max_datagram` is seen (`MSG_TRUNC`, or a length past the limit), dropped
//! and counted, never answered with a cut copy. Not answered either, and
//! counted as dropped:
//! - from a multicast address (`224.0.0.0/4`, `ff00::/8`), the limited
//!   broadcast `255.255.255.255` or an unspecified address (`0.0.0.0`,
//!   `::`), in IPv6 or IPv4-mapped form: no host sends from these, so the
//!   source is forged, and a reply would go to a group or back to this host
//!   (RFC 1122 section 4.1.3.6);
//! - from port 0: no one can receive there;
//! - from a port below 1024: that is a server's port (echo, chargen, DNS,
//!   ...), not a client's, and answering it is how reflection loops start;
//! - from our own port: our own socket (whatever address it is bound to,
//!   the wildcard included) or another server on the same port;
//! - an echo that [`loopguard`] cuts: a datagram that is, byte for byte, a
//!   reply we just sent that source, once too often in a row. Two servers
//!   that one forged datagram set answering each other send nothing else,
//!   so their exchange ends; a client that sends us our own replies back
//!   loses one now and then, as UDP allows.
//!
//! A reply leaves from the address its request was sent to. On a socket
//! bound to one address that is automatic. On a wildcard socket (`0.0.0.0`,
//! or `[::]`, which takes IPv4 too) the kernel would pick a source of its
//! own: a request to 127.0.0.2 would be answered from 127.0.0.1, and a
//! client that connected its socket (as ours does) never sees the reply.
//! So there each datagram comes with its destination (`IP_PKTINFO`,
//! `IPV6_RECVPKTINFO`), and each reply carries it back as its source.
//!
//! [`DatagramBatch`]: crate::sys::mmsg::DatagramBatch

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use super::loopguard::LoopGuard;
use super::spread::Busy;
use super::{Counters, Shared};
use crate::addr::{is_v4_mapped, IpPort, SockAddr};
use crate::error::{Error, Result};
use crate::sys;
use crate::sys::mmsg::DatagramBatch;
use crate::upper::upper_in_place_changed;

/// Datagrams moved per system call.
pub const BATCH: usize = 32;
/// Batches per wake-up before looking at the waker again.
const ROUNDS: usize = 8;

/// The address rules above: may a datagram from `from` be answered? (The
/// loop guard is the last rule; it needs the payload.)
fn answerable(from: &IpPort, own_port: u16) -> bool {
    let (ip_ok, port) = match *from {
        IpPort::V4(ip, port) => (v4_answerable(ip), port),
        IpPort::V6(ip, port, _) if is_v4_mapped(&ip) => (v4_answerable([ip[12], ip[13], ip[14], ip[15]]), port),
        // Not `::`, not `ff00::/8`.
        IpPort::V6(ip, port, _) => (ip != [0; 16] && ip[0] != 0xFF, port),
    };
    ip_ok && port >= 1024 && port != own_port
}

/// May an IPv4 source be answered? Not `0.0.0.0`, not multicast
/// (`224.0.0.0/4`), not the limited broadcast `255.255.255.255`.
fn v4_answerable(ip: [u8; 4]) -> bool {
    ip != [0; 4] && ip[0] & 0xF0 != 0xE0 && ip != [255; 4]
}

/// Is the socket bound to a wildcard address (`0.0.0.0`, `::`)?
pub(super) fn is_wildcard(local: &SockAddr) -> bool {
    match local.ip_port() {
        Some(IpPort::V4(ip, _)) => ip == [0; 4],
        Some(IpPort::V6(ip, _, _)) => ip == [0; 16],
        None => false,
    }
}

/// Asks the kernel to report each datagram's destination address.
pub(super) fn receive_destinations(sock: &OwnedFd, family: libc::c_int) -> Result<()> {
    let on = |level, name, what: &str| {
        sys::setsockopt_int(sock.as_fd(), level, name, 1).map_err(|e| Error::os(format!("setsockopt {what}"), e))
    };
    if family == libc::AF_INET6 {
        // IPv6 datagrams, and IPv4 ones as `::ffff:a.b.c.d`.
        on(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO")?;
        // IPv4 datagrams on the dual-stack socket also get an `IP_PKTINFO`,
        // whose `ipi_spec_dst` is a usable source even for a broadcast.
        // Only a refinement: without it the mapped address above serves.
        let _ = on(libc::IPPROTO_IP, libc::IP_PKTINFO, "IP_PKTINFO");
        Ok(())
    } else {
        on(libc::IPPROTO_IP, libc::IP_PKTINFO, "IP_PKTINFO")
    }
}

/// Serves the datagrams of loop thread `index` until the server stops.
pub(super) fn run(shared: &Shared, index: usize) -> Result<()> {
    // A standby loop waits for its turn, then joins the port's group with a
    // socket of its own; one that cannot is counted and bows out.
    let own;
    let sock = if shared.spread.stands_by(index) {
        if !shared.spread.wait_turn(shared, index) {
            return Ok(());
        }
        match shared.open_sibling() {
            Ok(fd) => {
                own = fd;
                &own
            }
            Err(_) => {
                // (A process that dropped its privileges after bind may not
                // join the group.) The loops that serve go on; no more wake.
                Counters::add(&shared.counters[index].errors, 1);
                shared.spread.stop_waking();
                return Ok(());
            }
        }
    } else {
        shared.socket_for(index)
    };
    // A wildcard socket asked for each datagram's destination before its
    // bind (`open_bound`), so no datagram comes without it.
    let wildcard = is_wildcard(&shared.local);
    let mut lp = UdpLoop {
        shared,
        sock,
        c: &shared.counters[index],
        max: shared.config.max_datagram,
        // One byte more than the largest answered datagram: a datagram that
        // fills the slot is too large even if the kernel did not flag it.
        batch: DatagramBatch::new(BATCH, shared.config.max_datagram + 1, wildcard),
        guard: LoopGuard::new(),
    };
    let mut busy = Busy::new();
    loop {
        if shared.is_stopped() {
            return Ok(());
        }
        let watch = shared.spread.has_standby();
        let waiting = watch.then(Instant::now);
        let waker = (shared.waker.as_fd().as_raw_fd(), libc::POLLIN);
        match sys::poll2((sock.as_raw_fd(), libc::POLLIN), Some(waker), -1) {
            Ok((_, w)) if w != 0 => return Ok(()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(Error::os("poll", e)),
        }
        if let Some(t) = waiting {
            busy.waited(t.elapsed());
        }
        for _ in 0..ROUNDS {
            if !lp.serve_batch() {
                break;
            }
        }
        if watch && busy.wants_help() {
            shared.spread.wake_next();
        }
    }
}

/// One loop thread's socket, counters, batch and guard.
struct UdpLoop<'a> {
    shared: &'a Shared,
    sock: &'a OwnedFd,
    c: &'a Counters,
    /// The largest datagram answered.
    max: usize,
    batch: DatagramBatch,
    guard: LoopGuard,
}

impl UdpLoop<'_> {
    /// One receive and one send. `false` when nothing more is waiting.
    fn serve_batch(&mut self) -> bool {
        let n = match self.batch.recv(self.sock.as_fd()) {
            Ok(n) => n,
            Err(e) => return self.receive_failed(&e),
        };
        let (bytes_in, mut dropped) = self.choose_replies();
        Counters::add(&self.c.dgrams_in, n as u64);
        Counters::add(&self.c.bytes_in, bytes_in);
        let sent = self.batch.send(self.sock.as_fd());
        dropped += sent.dropped;
        Counters::add(&self.c.dgrams_out, sent.datagrams);
        Counters::add(&self.c.bytes_out, sent.bytes);
        Counters::add(&self.c.dgrams_dropped, dropped);
        n == BATCH
    }

    /// Counts a failed receive; `true` to try again at once.
    fn receive_failed(&self, e: &io::Error) -> bool {
        match e.raw_os_error() {
            Some(libc::EAGAIN) => false,
            Some(libc::EINTR) => true,
            // An ICMP error from an earlier reply's destination: that
            // client is gone; nothing to do for it.
            Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH) => {
                Counters::add(&self.c.errors, 1);
                true
            }
            _ => {
                Counters::add(&self.c.errors, 1);
                false
            }
        }
    }

    /// Upper-cases each datagram received and marks its reply, or drops
    /// it. Returns the bytes received and the datagrams dropped.
    fn choose_replies(&mut self) -> (u64, u64) {
        let (mut bytes_in, mut dropped) = (0u64, 0u64);
        // The loop guard's clock, read at most once per batch, and only
        // when a datagram needs it.
        let mut now_ms = None;
        for i in 0..self.batch.received() {
            bytes_in += self.batch.datagram_len(i) as u64;
            match self.admit(i, &mut now_ms) {
                Some(from) => {
                    self.shared.tell(&from);
                    let source = self.batch.destination(i);
                    self.batch.reply(i, source);
                }
                None => dropped += 1,
            }
        }
        (bytes_in, dropped)
    }

    /// Applies every rule to datagram `i`, upper-casing it on the way.
    /// Returns its sender if it is to be answered.
    fn admit(&mut self, i: usize, now_ms: &mut Option<u64>) -> Option<SockAddr> {
        let from = self.batch.sender(i)?;
        let peer = from.ip_port()?;
        let too_large = self.batch.truncated(i) || self.batch.datagram_len(i) > self.max;
        if too_large || !answerable(&peer, self.shared.local.port()) {
            return None;
        }
        let reply = self.batch.payload_mut(i);
        // Only a datagram with nothing to upper-case can be an echo of one
        // of our replies; any other costs the guard nothing.
        if !upper_in_place_changed(reply) {
            let now = *now_ms.get_or_insert_with(|| self.guard.now_ms());
            if !self.guard.admit(&peer, reply, now) {
                return None;
            }
        }
        Some(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: u16 = 5000;

    fn v4(ip: [u8; 4]) -> IpPort {
        IpPort::V4(ip, 40_000)
    }

    fn v6(ip: [u8; 16]) -> IpPort {
        IpPort::V6(ip, 40_000, 0)
    }

    /// `::ffff:a.b.c.d`, as a dual-stack socket reports an IPv4 sender.
    fn mapped_ip(ip: [u8; 4]) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[10..].copy_from_slice(&[0xFF, 0xFF, ip[0], ip[1], ip[2], ip[3]]);
        m
    }

    fn mapped(ip: [u8; 4]) -> IpPort {
        v6(mapped_ip(ip))
    }

    #[test]
    fn clients_are_answered() {
        for ip in [[127, 0, 0, 1], [10, 1, 2, 3], [192, 0, 2, 255], [223, 255, 255, 255], [240, 0, 0, 1]] {
            assert!(answerable(&v4(ip), OWN), "{ip:?}");
            assert!(answerable(&mapped(ip), OWN), "mapped {ip:?}");
        }
        let mut loopback = [0u8; 16];
        loopback[15] = 1;
        let mut link_local = [0u8; 16];
        link_local[..2].copy_from_slice(&[0xFE, 0x80]);
        link_local[15] = 9;
        assert!(answerable(&v6(loopback), OWN));
        assert!(answerable(&IpPort::V6(link_local, 40_000, 2), OWN));
    }

    #[test]
    fn multicast_broadcast_and_unspecified_sources_are_not_answered() {
        for ip in [[224, 0, 0, 1], [239, 255, 255, 250], [255, 255, 255, 255], [0, 0, 0, 0]] {
            assert!(!answerable(&v4(ip), OWN), "{ip:?}");
            assert!(!answerable(&mapped(ip), OWN), "mapped {ip:?}");
        }
        let mut multicast = [0u8; 16];
        multicast[..2].copy_from_slice(&[0xFF, 0x02]);
        multicast[15] = 1;
        assert!(!answerable(&v6(multicast), OWN));
        assert!(!answerable(&v6([0xFF; 16]), OWN));
        assert!(!answerable(&v6([0; 16]), OWN));
    }

    #[test]
    fn server_ports_and_our_own_are_not_answered() {
        let ip = [127, 0, 0, 1];
        for port in [0, 53, 1023, OWN] {
            assert!(!answerable(&IpPort::V4(ip, port), OWN), "port {port}");
            assert!(!answerable(&IpPort::V6(mapped_ip(ip), port, 0), OWN), "port {port}");
        }
        assert!(answerable(&IpPort::V4(ip, 1024), OWN));
    }
}
