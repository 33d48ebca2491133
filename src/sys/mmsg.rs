//! Batches of datagrams for `recvmmsg` and `sendmmsg`, with the control
//! messages that say where each datagram was sent.
//!
//! A [`DatagramBatch`] owns every buffer the kernel reads or writes: the
//! payload slots, the senders' addresses, the control buffers, and the
//! headers that point at them. The headers are filled right before each
//! call, so no pointer in them outlives the call. Callers see safe methods
//! only: receive a batch, look at each datagram, mark the ones to answer,
//! send the answers.
//!
//! The receive side and the send side have headers and control buffers of
//! their own. What [`DatagramBatch::recv`] reported therefore stays as the
//! kernel left it until the next receive, whatever was sent meanwhile.

use std::io;
use std::mem::size_of;
use std::os::fd::BorrowedFd;

use libc::{c_uint, c_void, cmsghdr, in6_pktinfo, in_pktinfo, iovec, mmsghdr, msghdr, sockaddr_storage, socklen_t};

use crate::addr::{is_v4_mapped, SockAddr};

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

impl Control {
    const EMPTY: Control = Control { _align: [], bytes: [0; CONTROL_LEN] };
}

/// The address a reply is sent from: the one its request was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// For `IP_PKTINFO`'s `ipi_spec_dst`, in network byte order.
    V4([u8; 4]),
    /// For `IPV6_PKTINFO`: the address (network byte order; `::ffff:a.b.c.d`
    /// for IPv4 on a dual-stack socket), and the interface index for a
    /// link-local address (0 otherwise: the route decides).
    V6([u8; 16], u32),
}

/// What one [`DatagramBatch::send`] did with the marked replies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Replies the kernel took.
    pub datagrams: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Replies lost: no room to send them, or refused by the kernel.
    pub dropped: u64,
}

/// The buffers of one batch of datagrams, received and answered in place.
pub(crate) struct DatagramBatch {
    /// One slot of `slot` bytes per datagram.
    bufs: Vec<u8>,
    slot: usize,
    names: Vec<sockaddr_storage>,
    /// One control buffer per slot for a socket that reports destinations;
    /// empty otherwise (no control messages at all).
    controls: Vec<Control>,
    iovs: Vec<iovec>,
    msgs: Vec<mmsghdr>,
    /// How many headers of `msgs` the last receive filled.
    received: usize,
    /// The replies to send: the slot each answers, and the address it goes
    /// out from (`None`: the kernel picks, as for a bound address).
    replies: Vec<(usize, Option<Source>)>,
    send_controls: Vec<Control>,
    send_iovs: Vec<iovec>,
    send_msgs: Vec<mmsghdr>,
}

impl DatagramBatch {
    /// Room for `count` datagrams of up to `slot` bytes each.
    /// `with_destinations`: give each datagram a control buffer, for a
    /// socket that reports where its datagrams were sent (`IP_PKTINFO`,
    /// `IPV6_RECVPKTINFO`).
    pub(crate) fn new(count: usize, slot: usize, with_destinations: bool) -> DatagramBatch {
        // SAFETY: all-zero bytes are valid for these plain C structs.
        let zero_name: sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the pointers in it are null until filled.
        let zero_msg: mmsghdr = unsafe { std::mem::zeroed() };
        let zero_iov = iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        DatagramBatch {
            // Zeroed allocation: pages only become resident when touched,
            // so room for large datagrams costs nothing until one comes.
            bufs: vec![0u8; slot * count],
            slot,
            names: vec![zero_name; count],
            controls: if with_destinations { vec![Control::EMPTY; count] } else { Vec::new() },
            iovs: vec![zero_iov; count],
            msgs: vec![zero_msg; count],
            received: 0,
            replies: Vec::with_capacity(count),
            send_controls: vec![Control::EMPTY; count],
            send_iovs: vec![zero_iov; count],
            send_msgs: vec![zero_msg; count],
        }
    }

    /// `recvmmsg` without waiting: fills the batch with the datagrams that
    /// are queued and returns how many. Forgets the replies marked before.
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.received = 0;
        self.replies.clear();
        self.arm_for_receive();
        // SAFETY: `arm_for_receive` pointed every header at live buffers of
        // the stated sizes inside `self`, which nothing else touches during
        // the call (`&mut self`).
        let n = unsafe { super::recvmmsg(fd, &mut self.msgs) }?;
        self.received = n.min(self.msgs.len());
        Ok(self.received)
    }

    /// How many datagrams the last receive brought.
    pub(crate) fn received(&self) -> usize {
        self.received
    }

    /// The length of datagram `i` as received: at most the slot size.
    pub(crate) fn datagram_len(&self, i: usize) -> usize {
        self.received_msg(i).map_or(0, |m| (m.msg_len as usize).min(self.slot))
    }

    /// Did datagram `i` not fit in its slot (`MSG_TRUNC`)? Its payload is
    /// then only the part that fitted.
    pub(crate) fn truncated(&self, i: usize) -> bool {
        self.received_msg(i).is_some_and(|m| m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
    }

    /// The address datagram `i` came from; `None` when the kernel gave none
    /// that can be decoded.
    pub(crate) fn sender(&self, i: usize) -> Option<SockAddr> {
        let m = self.received_msg(i)?;
        let len = m.msg_hdr.msg_namelen.min(size_of::<sockaddr_storage>() as socklen_t);
        // SAFETY: names[i] is a live sockaddr_storage of which the kernel
        // wrote `len` bytes (capped at its size).
        unsafe { SockAddr::from_raw((&self.names[i] as *const sockaddr_storage).cast(), len) }
    }

    /// The payload of datagram `i`, to be read and rewritten in place: a
    /// reply sends these bytes back.
    pub(crate) fn payload_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.datagram_len(i);
        let start = i * self.slot;
        self.bufs.get_mut(start..start + len).unwrap_or_default()
    }

    /// The address datagram `i` was sent to, as a reply's source, read from
    /// its control messages. `None` when there is none to use: the kernel
    /// then picks, as it would without them.
    pub(crate) fn destination(&self, i: usize) -> Option<Source> {
        let m = self.received_msg(i)?;
        // (`as _`: the field is a size_t with glibc, a socklen_t with musl.)
        let written: usize = m.msg_hdr.msg_controllen as _;
        read_source(self.controls.get(i)?, written)
    }

    /// Marks datagram `i` to be answered with its payload, back to its
    /// sender, from `source` (`None`: the kernel picks). Replies leave in
    /// the order they were marked.
    pub(crate) fn reply(&mut self, i: usize, source: Option<Source>) {
        if i < self.received && self.replies.len() < self.send_msgs.len() {
            self.replies.push((i, source));
        }
    }

    /// `sendmmsg` of the marked replies, again after a partial send. A reply
    /// the kernel refuses is skipped; when there is no room to send
    /// (`EAGAIN`, `ENOBUFS`) the rest are lost, as UDP allows. The marks are
    /// cleared.
    pub(crate) fn send(&mut self, fd: BorrowedFd<'_>) -> Sent {
        let replies = self.arm_for_send();
        self.replies.clear();
        let mut out = Sent::default();
        let mut sent = 0;
        while sent < replies {
            // SAFETY: `arm_for_send` pointed headers [0, replies) at live
            // slots, names and control buffers inside `self`, which nothing
            // else touches during the call.
            match unsafe { super::sendmmsg(fd, &mut self.send_msgs[sent..replies]) } {
                Ok(m) => {
                    let m = m.min(replies - sent);
                    out.bytes += self.send_msgs[sent..sent + m].iter().map(|h| u64::from(h.msg_len)).sum::<u64>();
                    out.datagrams += m as u64;
                    sent += m;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)) => {
                    out.dropped += (replies - sent) as u64;
                    break;
                }
                Err(_) => {
                    // The first remaining reply failed (a bad destination).
                    out.dropped += 1;
                    sent += 1;
                }
            }
        }
        out
    }

    /// The header the last receive filled for datagram `i`.
    fn received_msg(&self, i: usize) -> Option<&mmsghdr> {
        self.msgs[..self.received].get(i)
    }

    /// Points every receive header at its slot, name storage and control
    /// buffer (if any).
    ///
    /// Each buffer's pointer is taken once (`as_mut_ptr`) and offset from,
    /// so that arming one header never invalidates another one's pointers.
    fn arm_for_receive(&mut self) {
        let (bufs, slot) = (self.bufs.as_mut_ptr(), self.slot);
        for (i, iov) in self.iovs.iter_mut().enumerate() {
            *iov = iovec { iov_base: bufs.wrapping_add(i * slot).cast(), iov_len: slot };
        }
        let (names, iovs, controls) = (self.names.as_mut_ptr(), self.iovs.as_mut_ptr(), self.controls.as_mut_ptr());
        let with_controls = !self.controls.is_empty();
        for (i, msg) in self.msgs.iter_mut().enumerate() {
            let hdr = &mut msg.msg_hdr;
            hdr.msg_name = names.wrapping_add(i).cast();
            hdr.msg_namelen = size_of::<sockaddr_storage>() as socklen_t;
            hdr.msg_iov = iovs.wrapping_add(i);
            hdr.msg_iovlen = 1;
            if with_controls {
                hdr.msg_control = controls.wrapping_add(i).cast();
                hdr.msg_controllen = CONTROL_LEN as _;
            } else {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
            hdr.msg_flags = 0;
            msg.msg_len = 0;
        }
    }

    /// Points send header `k` at the slot, length and sender of the `k`th
    /// marked reply, with a control message naming its source if it has
    /// one. Returns how many headers are ready.
    fn arm_for_send(&mut self) -> usize {
        let (bufs, names, slot) = (self.bufs.as_mut_ptr(), self.names.as_mut_ptr(), self.slot);
        let received = &self.msgs[..self.received];
        let headers = self.send_msgs.iter_mut().zip(self.send_iovs.iter_mut()).zip(self.send_controls.iter_mut());
        for (((msg, iov), control), &(i, source)) in headers.zip(&self.replies) {
            // `reply` only marks received datagrams: `got` is always there.
            let got = received.get(i);
            let len = got.map_or(0, |m| (m.msg_len as usize).min(slot));
            let namelen = got.map_or(0, |m| m.msg_hdr.msg_namelen.min(size_of::<sockaddr_storage>() as socklen_t));
            *iov = iovec { iov_base: bufs.wrapping_add(i * slot).cast(), iov_len: len };
            let hdr = &mut msg.msg_hdr;
            hdr.msg_name = names.wrapping_add(i).cast();
            hdr.msg_namelen = namelen;
            hdr.msg_iov = iov;
            hdr.msg_iovlen = 1;
            hdr.msg_flags = 0;
            match source {
                Some(src) => {
                    hdr.msg_controllen = write_source(control, src) as _;
                    hdr.msg_control = (control as *mut Control).cast();
                }
                None => {
                    hdr.msg_control = std::ptr::null_mut();
                    hdr.msg_controllen = 0;
                }
            }
            msg.msg_len = 0;
        }
        self.replies.len()
    }
}

/// Can an IPv4 address be a reply's source? Not `0.0.0.0`, not multicast
/// or above (`224.0.0.0/3`, which holds the broadcast `255.255.255.255`).
fn v4_source_ok(ip: [u8; 4]) -> bool {
    ip != [0; 4] && ip[0] < 224
}

/// A header over the first `len` bytes of `control`, for the `CMSG_*`
/// macros.
fn header_over(control: *mut Control, len: usize) -> msghdr {
    // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero sizes).
    let mut hdr: msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_control = control.cast::<c_void>();
    hdr.msg_controllen = len.min(CONTROL_LEN) as _;
    hdr
}

/// The source for a reply, read from the first `written` bytes of a
/// control buffer that the kernel filled.
///
/// `IP_PKTINFO` is preferred when both arrive (IPv4 on a dual-stack
/// socket): its `ipi_spec_dst` is the destination for a unicast datagram
/// and the receiving interface's address for a broadcast or multicast one.
/// It is `0.0.0.0` for a datagram queued before `IP_PKTINFO` was switched
/// on; then the datagram's own destination (`ipi_addr`) serves if it can.
fn read_source(control: &Control, written: usize) -> Option<Source> {
    // The macros take a mutable pointer; nothing here writes through it.
    let hdr = header_over((control as *const Control).cast_mut(), written);
    let written: usize = hdr.msg_controllen as _;
    let end = control as *const Control as usize + written;
    let mut v6 = None;
    // SAFETY: `hdr` describes the first `msg_controllen` bytes of a live,
    // aligned control buffer; CMSG_FIRSTHDR only reads those two fields.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR / CMSG_NXTHDR return only aligned headers
        // that lie whole within the `msg_controllen` bytes.
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
        cmsg = unsafe { libc::CMSG_NXTHDR(&hdr, cmsg) };
    }
    v6
}

/// Writes into `control` the message that sends a reply from `src`;
/// returns the control bytes it takes.
fn write_source(control: &mut Control, src: Source) -> usize {
    let (level, kind, size) = match src {
        Source::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO, size_of::<in_pktinfo>()),
        Source::V6(..) => (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, size_of::<in6_pktinfo>()),
    };
    // SAFETY: CMSG_SPACE is plain arithmetic; the result (at most
    // CONTROL_LEN) is the room one message of `size` bytes takes.
    let space = unsafe { libc::CMSG_SPACE(size as c_uint) } as usize;
    let hdr = header_over(control, space);
    // SAFETY: the buffer holds `msg_controllen` bytes, enough for a header,
    // so CMSG_FIRSTHDR returns its start, aligned for a cmsghdr.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
    // SAFETY: `cmsg` is the aligned start of `control`, borrowed mutably
    // here, with room for the header and, after it (CMSG_DATA), `size`
    // bytes of payload; write_unaligned needs no alignment for the payload.
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
    space
}

#[cfg(test)]
mod tests {
    //! Control messages and headers, with no system call: Miri runs these.

    use super::*;

    /// Writes the message that sends from `src`, then reads it back as if
    /// the kernel had delivered it.
    fn round_trip(src: Source) -> Option<Source> {
        let mut control = Control::EMPTY;
        let written = write_source(&mut control, src);
        read_source(&control, written)
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
        let mut control = Control::EMPTY;
        write_source(&mut control, Source::V4([127, 0, 0, 2]));
        assert_eq!(read_source(&control, 0), None);
        // A message cut short by the written length is not read either.
        assert_eq!(read_source(&control, size_of::<cmsghdr>()), None);
    }

    #[test]
    fn the_control_buffer_is_aligned_for_cmsghdr() {
        assert_eq!(std::mem::align_of::<Control>(), std::mem::align_of::<cmsghdr>());
        assert!(CONTROL_LEN <= size_of::<Control>());
    }

    /// Does to receive header `i` what `recvmmsg` would for a datagram of
    /// `payload` (of which `len` bytes arrived) from `from`, through the
    /// pointers the header holds.
    fn deliver(b: &mut DatagramBatch, i: usize, payload: &[u8], from: &SockAddr, dst: Option<Source>) {
        let m = &mut b.msgs[i];
        // SAFETY: `arm_for_receive` pointed the header at slot i's iovec,
        // name and control buffer, all live inside `b`; the writes stay
        // within the sizes the header states, as the kernel's would.
        unsafe {
            let iov = &*m.msg_hdr.msg_iov;
            let fits = payload.len().min(iov.iov_len);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), iov.iov_base.cast::<u8>(), fits);
            if fits < payload.len() {
                m.msg_hdr.msg_flags |= libc::MSG_TRUNC;
            }
            m.msg_len = fits as c_uint;
            let name = from.len().min(m.msg_hdr.msg_namelen);
            std::ptr::copy_nonoverlapping(from.as_ptr().cast::<u8>(), m.msg_hdr.msg_name.cast::<u8>(), name as usize);
            m.msg_hdr.msg_namelen = name;
            m.msg_hdr.msg_controllen = match dst {
                Some(src) => write_source(&mut *m.msg_hdr.msg_control.cast::<Control>(), src) as _,
                None => 0,
            };
        }
    }

    /// Reads send header `k` as `sendmmsg` would: payload, destination,
    /// and the source its control message names.
    fn outgoing(b: &DatagramBatch, k: usize) -> (Vec<u8>, Option<SockAddr>, Option<Source>) {
        let hdr = &b.send_msgs[k].msg_hdr;
        assert_eq!(hdr.msg_iovlen, 1);
        // SAFETY: `arm_for_send` pointed the header at an iovec, a slot, a
        // name and (if any) a control buffer inside `b`, of the stated sizes.
        unsafe {
            let iov = &*hdr.msg_iov;
            let payload = std::slice::from_raw_parts(iov.iov_base.cast::<u8>(), iov.iov_len).to_vec();
            let to = SockAddr::from_raw(hdr.msg_name.cast(), hdr.msg_namelen);
            let written: usize = hdr.msg_controllen as _;
            let source = if hdr.msg_control.is_null() {
                None
            } else {
                read_source(&*hdr.msg_control.cast::<Control>(), written)
            };
            (payload, to, source)
        }
    }

    #[test]
    fn replies_go_back_from_their_slots_to_their_senders() {
        let mut b = DatagramBatch::new(4, 8, true);
        b.arm_for_receive();
        let (one, two) = (SockAddr::v4([127, 0, 0, 9], 40_001), SockAddr::v6([0xFE; 16], 40_002, 3));
        let here = Source::V4([127, 0, 0, 2]);
        deliver(&mut b, 0, b"first", &one, Some(here));
        deliver(&mut b, 1, b"far too long", &two, None);
        deliver(&mut b, 2, b"third", &two, None);
        b.received = 3;

        assert_eq!((b.datagram_len(0), b.truncated(0)), (5, false));
        assert_eq!((b.datagram_len(1), b.truncated(1)), (8, true));
        assert_eq!(b.payload_mut(1), b"far too ");
        assert_eq!(b.sender(0), Some(one));
        assert_eq!(b.sender(2), Some(two));
        assert_eq!((b.destination(0), b.destination(2)), (Some(here), None));
        // Past what arrived there is nothing.
        assert_eq!((b.datagram_len(3), b.sender(3), b.payload_mut(3).len()), (0, None, 0));

        b.payload_mut(2).make_ascii_uppercase();
        b.reply(2, None);
        b.reply(0, Some(here));
        b.reply(3, None); // not received: ignored
        assert_eq!(b.arm_for_send(), 2);
        assert_eq!(outgoing(&b, 0), (b"THIRD".to_vec(), Some(two), None));
        assert_eq!(outgoing(&b, 1), (b"first".to_vec(), Some(one), Some(here)));
        // The receive side is still as it arrived.
        assert_eq!(b.destination(0), Some(here));
    }
}

#[cfg(all(test, not(miri)))]
mod socket_tests {
    //! The batch through real system calls, on loopback.

    use std::os::fd::{AsFd, AsRawFd, OwnedFd};

    use super::*;
    use crate::sys;

    /// The next datagram on `fd` and its sender, waiting at most 5 s.
    fn next(fd: &OwnedFd) -> (Vec<u8>, SockAddr) {
        let ready = sys::poll2((fd.as_raw_fd(), libc::POLLIN), None, 5000).expect("poll");
        assert_ne!(ready.0, 0, "no datagram");
        let mut buf = [0u8; 64];
        let (n, from) = sys::recvfrom(fd.as_fd(), &mut buf, 0).expect("recvfrom");
        (buf[..n].to_vec(), from)
    }

    fn udp_socket(ip: [u8; 4]) -> (OwnedFd, SockAddr) {
        let fd = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, false).expect("socket");
        sys::bind(fd.as_fd(), &SockAddr::v4(ip, 0)).expect("bind");
        let at = sys::getsockname(fd.as_fd()).expect("getsockname");
        (fd, at)
    }

    /// Receives into `b` until `want` datagrams are in (loopback delivers
    /// at once, but give it a moment).
    fn recv_all(b: &mut DatagramBatch, fd: &OwnedFd, want: usize) {
        for _ in 0..500 {
            match b.recv(fd.as_fd()) {
                Ok(n) if n >= want => return,
                Ok(_) => panic!("a batch of {} datagrams arrived in parts", want),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                Err(e) => panic!("recvmmsg: {e}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("nothing arrived");
    }

    #[test]
    fn a_batch_is_received_and_the_marked_replies_sent() {
        let (server, at) = udp_socket([127, 0, 0, 1]);
        let (client, client_at) = udp_socket([127, 0, 0, 1]);
        for msg in [&b"one"[..], b"too long", b"three"] {
            sys::sendto(client.as_fd(), msg, &at).expect("sendto");
        }
        let mut b = DatagramBatch::new(4, 5, false);
        recv_all(&mut b, &server, 3);
        assert_eq!(b.received(), 3);
        assert!(!b.truncated(0) && b.truncated(1) && !b.truncated(2));
        assert_eq!(b.sender(2), Some(client_at));
        assert_eq!(b.destination(0), None, "no control buffers asked for");
        b.payload_mut(2).make_ascii_uppercase();
        b.reply(2, None);
        b.reply(0, None);
        assert_eq!(b.send(server.as_fd()), Sent { datagrams: 2, bytes: 8, dropped: 0 });
        assert_eq!(next(&client), (b"THREE".to_vec(), at));
        assert_eq!(next(&client), (b"one".to_vec(), at));
        // The marks went with the send.
        assert_eq!(b.send(server.as_fd()), Sent::default());
    }

    #[test]
    fn a_wildcard_socket_learns_each_destination_and_replies_from_it() {
        let fd = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, false).expect("socket");
        sys::bind(fd.as_fd(), &SockAddr::v4([0; 4], 0)).expect("bind");
        sys::setsockopt_int(fd.as_fd(), libc::IPPROTO_IP, libc::IP_PKTINFO, 1).expect("IP_PKTINFO");
        let port = sys::getsockname(fd.as_fd()).expect("getsockname").port();
        let (client, _) = udp_socket([127, 0, 0, 1]);
        let to = SockAddr::v4([127, 0, 0, 2], port);
        sys::sendto(client.as_fd(), b"hi", &to).expect("sendto");
        let mut b = DatagramBatch::new(2, 16, true);
        recv_all(&mut b, &fd, 1);
        let here = b.destination(0);
        assert_eq!(here, Some(Source::V4([127, 0, 0, 2])));
        b.reply(0, here);
        assert_eq!(b.send(fd.as_fd()).datagrams, 1);
        assert_eq!(next(&client), (b"hi".to_vec(), to));
    }
}
