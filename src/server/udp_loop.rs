//! The UDP server: `recvfrom()` a datagram, upper-case it, `sendto()` it
//! back to the address it came from. In concurrent mode each loop thread
//! has a socket of its own on the same port (`SO_REUSEPORT`: the kernel
//! spreads senders over them), and moves datagrams in batches: one
//! `recvmmsg` takes up to [`BATCH`] of them, one `sendmmsg` answers them.
//!
//! A datagram is answered whole or not at all: a datagram larger than
//! `max_datagram` is seen (`MSG_TRUNC`, or a length past the limit), dropped
//! and counted, never answered with a cut copy. Not answered either, so
//! that one forged datagram cannot start an endless exchange (an
//! upper-cased reply upper-cases to itself):
//! - from port 0: no one can receive there;
//! - from a port below 1024: that is a server's port (echo, chargen, DNS,
//!   ...), not a client's, and answering it is how reflection loops start;
//! - from our own port: our own socket (whatever address it is bound to,
//!   the wildcard included) or another server on the same port;
//! - that would be the 65th *echo* in a row from its source: a datagram
//!   that is, byte for byte, a reply we sent that source at most a second
//!   before (the count starts again after a second without an echo). Two
//!   servers on other ports that one forged datagram set answering each
//!   other send nothing but such echoes, so the loop ends after about 65
//!   replies each way; a client that sends us our own replies back, one
//!   after the other, loses one datagram in 65. [`loopguard`] has the
//!   rule, its constants and its limits.
//!
//! A reply leaves from the address its request was sent to. On a socket
//! bound to one address that is automatic. On a wildcard socket (`0.0.0.0`,
//! or `[::]`, which takes IPv4 too) the kernel would pick a source of its
//! own: a request to 127.0.0.2 would be answered from 127.0.0.1, and a
//! client that connected its socket (as ours does) never sees the reply.
//! So there each datagram comes with its destination (`IP_PKTINFO`,
//! `IPV6_RECVPKTINFO`), and each reply carries it back as its source in a
//! control message (`IP_PKTINFO`'s `ipi_spec_dst`, `IPV6_PKTINFO`'s
//! `ipi6_addr`).

use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use libc::{c_uint, cmsghdr, in6_pktinfo, in_pktinfo, iovec, mmsghdr, msghdr, sockaddr_storage, socklen_t};

use super::loopguard::LoopGuard;
use super::{Counters, Shared};
use crate::addr::{is_v4_mapped, IpPort, SockAddr};
use crate::error::{Error, Result};
use crate::sys;
use crate::upper::upper_in_place_changed;

/// Datagrams moved per system call.
pub const BATCH: usize = 32;
/// Batches per wake-up before looking at the waker again.
const ROUNDS: usize = 8;

/// Control bytes for one datagram: on a dual-stack socket an IPv4 datagram
/// brings both an `IPV6_PKTINFO` and an `IP_PKTINFO` message.
// SAFETY: CMSG_SPACE is plain arithmetic on its argument.
const CONTROL_LEN: usize = unsafe {
    libc::CMSG_SPACE(size_of::<in6_pktinfo>() as c_uint) + libc::CMSG_SPACE(size_of::<in_pktinfo>() as c_uint)
} as usize;

/// One datagram's control buffer, aligned for `cmsghdr` as the `CMSG_*`
/// macros expect.
#[derive(Clone, Copy)]
#[repr(C)]
struct Control {
    _align: [cmsghdr; 0],
    bytes: [u8; CONTROL_LEN],
}

/// The address a reply is sent from: the one its request was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// For `IP_PKTINFO`'s `ipi_spec_dst`, in network byte order.
    V4([u8; 4]),
    /// For `IPV6_PKTINFO`: the address (network byte order; `::ffff:a.b.c.d`
    /// for IPv4 on a dual-stack socket), and the interface index for a
    /// link-local address (0 otherwise: the route decides).
    V6([u8; 16], u32),
}

/// The buffers of one batch. The headers point into the other fields, so
/// they are filled again right before each call, never kept.
struct Batch {
    /// `BATCH` slots of `slot` bytes each.
    bufs: Vec<u8>,
    slot: usize,
    names: Vec<sockaddr_storage>,
    /// One control buffer per slot on a wildcard socket; empty otherwise
    /// (no control messages at all).
    controls: Vec<Control>,
    iovs: Vec<iovec>,
    msgs: Vec<mmsghdr>,
    /// For each reply in `msgs`, the slot it came from and the address it
    /// goes out from (`None`: the kernel picks, as for a bound address).
    reply_of: Vec<(usize, Option<Source>)>,
}

impl Batch {
    /// `with_destinations`: give each datagram a control buffer, for a
    /// socket that reports where its datagrams were sent (a wildcard one).
    fn new(slot: usize, with_destinations: bool) -> Batch {
        // SAFETY: all-zero bytes are valid for these plain C structs.
        let zero_name: sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the pointers in it are null until filled.
        let zero_msg: mmsghdr = unsafe { std::mem::zeroed() };
        Batch {
            // Zeroed allocation: pages only become resident when touched,
            // so room for large datagrams costs nothing until one comes.
            bufs: vec![0u8; slot * BATCH],
            slot,
            names: vec![zero_name; BATCH],
            controls: if with_destinations {
                vec![Control { _align: [], bytes: [0; CONTROL_LEN] }; BATCH]
            } else {
                Vec::new()
            },
            iovs: vec![iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH],
            msgs: vec![zero_msg; BATCH],
            reply_of: Vec::with_capacity(BATCH),
        }
    }

    /// Points every header at its slot, name storage and control buffer (if
    /// any), for `recvmmsg`.
    fn arm_for_receive(&mut self) {
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: slot `i` lies within `bufs` (BATCH * slot bytes).
            self.iovs[i] = iovec { iov_base: unsafe { base.add(i * self.slot) }.cast(), iov_len: self.slot };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.names[i] as *mut sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<sockaddr_storage>() as socklen_t;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            match self.controls.get_mut(i) {
                Some(control) => {
                    hdr.msg_control = (control as *mut Control).cast();
                    hdr.msg_controllen = CONTROL_LEN as _;
                }
                None => {
                    hdr.msg_control = std::ptr::null_mut();
                    hdr.msg_controllen = 0;
                }
            }
            hdr.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
    }
}

/// The rule above: may a datagram from `from` be answered?
fn answerable(from: &SockAddr, own_port: u16) -> bool {
    let port = from.port();
    port >= 1024 && port != own_port
}

/// Is the socket bound to a wildcard address (`0.0.0.0`, `::`)?
fn is_wildcard(local: &SockAddr) -> bool {
    match local.ip_port() {
        Some(IpPort::V4(ip, _)) => ip == [0; 4],
        Some(IpPort::V6(ip, _, _)) => ip == [0; 16],
        None => false,
    }
}

/// Asks the kernel to report each datagram's destination address.
fn receive_destinations(sock: &OwnedFd, family: libc::c_int) -> Result<()> {
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

/// Can an IPv4 address be a reply's source? Not `0.0.0.0`, not multicast
/// or above (`224.0.0.0/3`, which holds the broadcast `255.255.255.255`).
fn v4_source_ok(ip: [u8; 4]) -> bool {
    ip != [0; 4] && ip[0] < 224
}

/// The source for the reply to the datagram that `hdr` received, read from
/// its control messages. `None` when there is none to use: the kernel then
/// picks, as it would without them.
///
/// `IP_PKTINFO` is preferred when both arrive (IPv4 on a dual-stack
/// socket): its `ipi_spec_dst` is the destination for a unicast datagram
/// and the receiving interface's address for a broadcast or multicast one.
/// It is `0.0.0.0` for a datagram queued before `IP_PKTINFO` was switched
/// on; then the datagram's own destination (`ipi_addr`) serves if it can.
///
/// # Safety
/// `hdr` must be a header that `recvmmsg` just filled: `msg_control` points
/// at a live, `cmsghdr`-aligned buffer of which the first `msg_controllen`
/// bytes were written by the kernel (or `msg_controllen` is 0).
unsafe fn reply_source(hdr: &msghdr) -> Option<Source> {
    // (`as _`: the field is a size_t with glibc, a socklen_t with musl.)
    let written: usize = hdr.msg_controllen as _;
    let end = hdr.msg_control as usize + written;
    let mut v6 = None;
    // SAFETY: `hdr` describes a valid control buffer (the caller's promise);
    // CMSG_FIRSTHDR only reads `msg_control` and `msg_controllen`.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR / CMSG_NXTHDR return only aligned headers
        // that lie whole within the `msg_controllen` bytes the kernel wrote.
        let (level, kind, len) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len as usize) };
        // SAFETY: as above; CMSG_DATA is pointer arithmetic within the message.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        // The payload must lie within this message and the written bytes.
        let fits = |size: usize| {
            // SAFETY: CMSG_LEN is plain arithmetic on its argument.
            let need = unsafe { libc::CMSG_LEN(size as c_uint) } as usize;
            len >= need && (cmsg as usize) + need <= end
        };
        if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO && fits(size_of::<in_pktinfo>()) {
            // SAFETY: `fits` checked that a whole in_pktinfo lies at `data`;
            // read_unaligned needs no alignment.
            let info = unsafe { data.cast::<in_pktinfo>().read_unaligned() };
            // `s_addr` holds the address in network byte order, so its bytes
            // in memory are the address bytes as written (127, 0, 0, 2).
            let spec_dst = info.ipi_spec_dst.s_addr.to_ne_bytes();
            let dst = info.ipi_addr.s_addr.to_ne_bytes();
            let ip = if spec_dst != [0; 4] { spec_dst } else { dst };
            return if v4_source_ok(ip) { Some(Source::V4(ip)) } else { None };
        }
        if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO && fits(size_of::<in6_pktinfo>()) {
            // SAFETY: as above, for a whole in6_pktinfo.
            let info = unsafe { data.cast::<in6_pktinfo>().read_unaligned() };
            // `s6_addr` is the address's 16 bytes in network byte order.
            let ip = info.ipi6_addr.s6_addr;
            let link_local = ip[0] == 0xFE && ip[1] & 0xC0 == 0x80;
            let usable = if is_v4_mapped(&ip) {
                v4_source_ok([ip[12], ip[13], ip[14], ip[15]])
            } else {
                ip != [0; 16] && ip[0] != 0xFF // not unspecified, not multicast
            };
            v6 = usable.then_some(Source::V6(ip, if link_local { info.ipi6_ifindex } else { 0 }));
        }
        // SAFETY: `cmsg` is a header within `hdr`'s buffer; CMSG_NXTHDR
        // returns the next one that fits whole, or null.
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    v6
}

/// Writes the control message that sends a reply from `src` into the
/// buffer `hdr.msg_control` points at, and sets `msg_controllen`.
///
/// # Safety
/// `hdr.msg_control` must point at a live, `cmsghdr`-aligned buffer of
/// [`CONTROL_LEN`] bytes that nothing else uses meanwhile.
unsafe fn write_source(hdr: &mut msghdr, src: Source) {
    let (level, kind, size) = match src {
        Source::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO, size_of::<in_pktinfo>()),
        Source::V6(..) => (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, size_of::<in6_pktinfo>()),
    };
    // SAFETY: CMSG_SPACE is plain arithmetic; the result (at most
    // CONTROL_LEN) is the room one message of `size` bytes takes.
    hdr.msg_controllen = unsafe { libc::CMSG_SPACE(size as c_uint) } as _;
    // SAFETY: the buffer holds `msg_controllen` bytes (at most CONTROL_LEN),
    // so CMSG_FIRSTHDR returns its start, aligned for a cmsghdr.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    // SAFETY: `cmsg` is the aligned start of the buffer, which has room for
    // the header and, after it (CMSG_DATA), `size` bytes of payload;
    // write_unaligned needs no alignment for the payload.
    unsafe {
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size as c_uint) as _;
        let data = libc::CMSG_DATA(cmsg);
        match src {
            Source::V4(ip) => {
                // SAFETY: all-zero bytes are a valid in_pktinfo.
                let mut info: in_pktinfo = std::mem::zeroed();
                // `ip` is the address bytes as written (127, 0, 0, 2):
                // from_ne_bytes keeps them in that order in memory, the
                // network byte order `s_addr` holds. Interface 0: the route
                // decides where the reply leaves.
                info.ipi_spec_dst.s_addr = u32::from_ne_bytes(ip);
                data.cast::<in_pktinfo>().write_unaligned(info);
            }
            Source::V6(ip, ifindex) => {
                // SAFETY: all-zero bytes are a valid in6_pktinfo.
                let mut info: in6_pktinfo = std::mem::zeroed();
                info.ipi6_addr.s6_addr = ip;
                info.ipi6_ifindex = ifindex as _;
                data.cast::<in6_pktinfo>().write_unaligned(info);
            }
        }
    }
}

pub(super) fn run(shared: &Shared, index: usize) -> Result<()> {
    let sock = shared.socket_for(index);
    let c = &shared.counters[index];
    let max = shared.config.max_datagram;
    let wildcard = is_wildcard(&shared.local);
    if wildcard {
        receive_destinations(sock, shared.local.family())?;
    }
    // One byte more than the largest answered datagram: a datagram that
    // fills the slot is too large even if the kernel did not flag it.
    let mut batch = Batch::new(max + 1, wildcard);
    let mut guard = LoopGuard::new();
    loop {
        if shared.is_stopped() {
            return Ok(());
        }
        let waker = (shared.waker.as_fd().as_raw_fd(), libc::POLLIN);
        match sys::poll2((sock.as_raw_fd(), libc::POLLIN), Some(waker), -1) {
            Ok((_, w)) if w != 0 => return Ok(()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(Error::os("poll", e)),
        }
        for _ in 0..ROUNDS {
            match serve_batch(shared, sock, c, &mut batch, &mut guard, max) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One `recvmmsg` and one `sendmmsg` (or more, if the kernel took only part).
/// `Ok(false)` when nothing was waiting.
fn serve_batch(
    shared: &Shared,
    sock: &OwnedFd,
    c: &Counters,
    batch: &mut Batch,
    guard: &mut LoopGuard,
    max: usize,
) -> Result<bool> {
    batch.arm_for_receive();
    // SAFETY: `arm_for_receive` pointed every header at live buffers of the
    // stated sizes inside `batch`, which nothing else touches meanwhile.
    let n = match unsafe { sys::recvmmsg(sock.as_fd(), &mut batch.msgs) } {
        Ok(n) => n,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(false),
                Some(libc::EINTR) => Ok(true),
                // An ICMP error from an earlier reply's destination: that
                // client is gone; nothing to do for it.
                Some(libc::ECONNREFUSED) | Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => {
                    Counters::add(&c.errors, 1);
                    Ok(true)
                }
                _ => {
                    Counters::add(&c.errors, 1);
                    Ok(false)
                }
            };
        }
    };
    let (mut bytes_in, mut dropped) = (0u64, 0u64);
    // The loop guard's clock, read at most once per batch, and only when a
    // datagram needs it.
    let mut now_ms = None;
    batch.reply_of.clear();
    for i in 0..n {
        let len = batch.msgs[i].msg_len as usize;
        let truncated = batch.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        bytes_in += len as u64;
        let namelen = batch.msgs[i].msg_hdr.msg_namelen.min(size_of::<sockaddr_storage>() as socklen_t);
        // SAFETY: the kernel wrote `namelen` bytes of address into names[i].
        let from = unsafe { SockAddr::from_raw((&batch.names[i] as *const sockaddr_storage).cast(), namelen) };
        let Some((from, peer)) = from.and_then(|f| Some((f, f.ip_port()?))) else {
            dropped += 1;
            continue;
        };
        if truncated || len > max || !answerable(&from, shared.local.port()) {
            dropped += 1;
            continue;
        }
        let start = i * batch.slot;
        let reply = &mut batch.bufs[start..start + len];
        // Only a datagram with nothing to upper-case can be an echo of one
        // of our replies; any other costs the guard nothing.
        if !upper_in_place_changed(reply) {
            let now = *now_ms.get_or_insert_with(|| guard.now_ms());
            if !guard.admit(&peer, reply, now) {
                dropped += 1;
                continue;
            }
        }
        shared.tell(&from);
        let source = if batch.controls.is_empty() {
            None
        } else {
            // SAFETY: recvmmsg just filled header i, whose msg_control points
            // at controls[i] (aligned, CONTROL_LEN bytes) and whose
            // msg_controllen says how much of it the kernel wrote.
            unsafe { reply_source(&batch.msgs[i].msg_hdr) }
        };
        batch.reply_of.push((i, source));
    }
    Counters::add(&c.dgrams_in, n as u64);
    Counters::add(&c.bytes_in, bytes_in);
    // The replies: header k answers datagram reply_of[k], from the same
    // slot, back to the same name, with the slot's control buffer (if any)
    // now saying which address to send from.
    let replies = batch.reply_of.len();
    let base = batch.bufs.as_mut_ptr();
    for (k, &(i, source)) in batch.reply_of.iter().enumerate() {
        let len = batch.msgs[i].msg_len as usize;
        let namelen = batch.msgs[i].msg_hdr.msg_namelen;
        // SAFETY: slot `i` lies within `bufs`.
        batch.iovs[k] = iovec { iov_base: unsafe { base.add(i * batch.slot) }.cast(), iov_len: len };
        let name = (&mut batch.names[i] as *mut sockaddr_storage).cast();
        let control = batch.controls.get_mut(i).map(|c| (c as *mut Control).cast());
        let hdr = &mut batch.msgs[k].msg_hdr;
        hdr.msg_name = name;
        hdr.msg_namelen = namelen;
        hdr.msg_iov = &mut batch.iovs[k];
        hdr.msg_iovlen = 1;
        hdr.msg_flags = 0;
        match (source, control) {
            (Some(src), Some(control)) => {
                hdr.msg_control = control;
                // SAFETY: `control` is controls[i]: live, aligned for
                // cmsghdr, CONTROL_LEN bytes, and its received messages
                // were read above (into `source`); only header k uses it now.
                unsafe { write_source(hdr, src) };
            }
            _ => {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
        }
    }
    // `k <= i` always (replies keep their order), so rewriting header k
    // never loses a length, name or destination still to be read: those
    // were read above.
    let (mut sent, mut delivered, mut bytes_out) = (0usize, 0u64, 0u64);
    while sent < replies {
        // SAFETY: headers [sent, replies) point at live slots, names and
        // control buffers (or none).
        match unsafe { sys::sendmmsg(sock.as_fd(), &mut batch.msgs[sent..replies]) } {
            Ok(m) => {
                for k in sent..sent + m {
                    bytes_out += batch.msgs[k].msg_len as u64;
                }
                sent += m;
                delivered += m as u64;
            }
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) || e.raw_os_error() == Some(libc::ENOBUFS) => {
                // No room to send now: these replies are lost, as UDP allows.
                dropped += (replies - sent) as u64;
                break;
            }
            Err(_) => {
                // The first remaining reply failed (a bad destination): skip it.
                dropped += 1;
                sent += 1;
            }
        }
    }
    Counters::add(&c.dgrams_out, delivered);
    Counters::add(&c.bytes_out, bytes_out);
    Counters::add(&c.dgrams_dropped, dropped);
    Ok(n == BATCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header over `control` as `recvmmsg` would leave it after writing
    /// `len` bytes.
    fn header(control: &mut Control, len: usize) -> msghdr {
        // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero sizes).
        let mut hdr: msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_control = (control as *mut Control).cast();
        hdr.msg_controllen = len as _;
        hdr
    }

    /// Writes the message that sends from `src`, then reads it back as if
    /// the kernel had delivered it.
    fn round_trip(src: Source) -> Option<Source> {
        let mut control = Control { _align: [], bytes: [0; CONTROL_LEN] };
        let mut hdr = header(&mut control, CONTROL_LEN);
        // SAFETY: `hdr` points at `control`: aligned, CONTROL_LEN bytes.
        unsafe { write_source(&mut hdr, src) };
        // SAFETY: write_source wrote `msg_controllen` bytes into `control`.
        unsafe { reply_source(&hdr) }
    }

    #[test]
    fn sources_round_trip_through_control_messages() {
        let v4 = Source::V4([127, 0, 0, 2]);
        assert_eq!(round_trip(v4), Some(v4));
        let mut mapped = [0u8; 16];
        mapped[10..].copy_from_slice(&[0xFF, 0xFF, 127, 0, 0, 3]);
        assert_eq!(round_trip(Source::V6(mapped, 0)), Some(Source::V6(mapped, 0)));
        let mut loopback = [0u8; 16];
        loopback[15] = 1;
        // Only a link-local address keeps its interface.
        assert_eq!(round_trip(Source::V6(loopback, 7)), Some(Source::V6(loopback, 0)));
        let mut link_local = [0u8; 16];
        link_local[..2].copy_from_slice(&[0xFE, 0x80]);
        link_local[15] = 9;
        assert_eq!(round_trip(Source::V6(link_local, 7)), Some(Source::V6(link_local, 7)));
    }

    #[test]
    fn addresses_that_cannot_be_a_source_are_left_to_the_kernel() {
        assert_eq!(round_trip(Source::V4([255, 255, 255, 255])), None);
        assert_eq!(round_trip(Source::V4([224, 0, 0, 1])), None);
        assert_eq!(round_trip(Source::V4([0, 0, 0, 0])), None);
        let mut multicast = [0u8; 16];
        multicast[..2].copy_from_slice(&[0xFF, 0x02]);
        multicast[15] = 1;
        assert_eq!(round_trip(Source::V6(multicast, 1)), None);
        assert_eq!(round_trip(Source::V6([0; 16], 1)), None);
        let mut mapped_broadcast = [0xFFu8; 16];
        mapped_broadcast[..10].fill(0);
        assert_eq!(round_trip(Source::V6(mapped_broadcast, 0)), None);
    }

    #[test]
    fn no_control_bytes_no_source() {
        let mut control = Control { _align: [], bytes: [0; CONTROL_LEN] };
        let hdr = header(&mut control, 0);
        // SAFETY: `hdr` says no bytes were written.
        assert_eq!(unsafe { reply_source(&hdr) }, None);
    }

    #[test]
    fn the_control_buffer_is_aligned_for_cmsghdr() {
        assert_eq!(std::mem::align_of::<Control>(), std::mem::align_of::<cmsghdr>());
        assert!(CONTROL_LEN <= size_of::<Control>());
    }
}
