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
//!   the wildcard included) or another server on the same port.

use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use libc::{iovec, mmsghdr, sockaddr_storage, socklen_t};

use super::{Counters, Shared};
use crate::addr::SockAddr;
use crate::error::{Error, Result};
use crate::sys;
use crate::upper::upper_in_place;

/// Datagrams moved per system call.
pub const BATCH: usize = 32;
/// Batches per wake-up before looking at the waker again.
const ROUNDS: usize = 8;

/// The buffers of one batch. The headers point into the other fields, so
/// they are filled again right before each call, never kept.
struct Batch {
    /// `BATCH` slots of `slot` bytes each.
    bufs: Vec<u8>,
    slot: usize,
    names: Vec<sockaddr_storage>,
    iovs: Vec<iovec>,
    msgs: Vec<mmsghdr>,
    /// For each reply in `msgs`, the slot it came from.
    reply_of: Vec<usize>,
}

impl Batch {
    fn new(slot: usize) -> Batch {
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
            iovs: vec![iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH],
            msgs: vec![zero_msg; BATCH],
            reply_of: Vec::with_capacity(BATCH),
        }
    }

    /// Points every header at its slot and name storage, for `recvmmsg`.
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
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
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

pub(super) fn run(shared: &Shared, index: usize) -> Result<()> {
    let sock = shared.socket_for(index);
    let c = &shared.counters[index];
    let max = shared.config.max_datagram;
    // One byte more than the largest answered datagram: a datagram that
    // fills the slot is too large even if the kernel did not flag it.
    let mut batch = Batch::new(max + 1);
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
            match serve_batch(shared, sock, c, &mut batch, max) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One `recvmmsg` and one `sendmmsg` (or more, if the kernel took only part).
/// `Ok(false)` when nothing was waiting.
fn serve_batch(shared: &Shared, sock: &OwnedFd, c: &Counters, batch: &mut Batch, max: usize) -> Result<bool> {
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
    batch.reply_of.clear();
    for i in 0..n {
        let len = batch.msgs[i].msg_len as usize;
        let truncated = batch.msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        bytes_in += len as u64;
        let namelen = batch.msgs[i].msg_hdr.msg_namelen.min(size_of::<sockaddr_storage>() as socklen_t);
        // SAFETY: the kernel wrote `namelen` bytes of address into names[i].
        let from = unsafe { SockAddr::from_raw((&batch.names[i] as *const sockaddr_storage).cast(), namelen) };
        let Some(from) = from.filter(|f| f.ip_port().is_some()) else {
            dropped += 1;
            continue;
        };
        if truncated || len > max || !answerable(&from, shared.local.port()) {
            dropped += 1;
            continue;
        }
        shared.tell(&from);
        let start = i * batch.slot;
        upper_in_place(&mut batch.bufs[start..start + len]);
        batch.reply_of.push(i);
    }
    Counters::add(&c.dgrams_in, n as u64);
    Counters::add(&c.bytes_in, bytes_in);
    // The replies: header k answers datagram reply_of[k], from the same
    // slot and back to the same name.
    let replies = batch.reply_of.len();
    let base = batch.bufs.as_mut_ptr();
    for (k, &i) in batch.reply_of.iter().enumerate() {
        let len = batch.msgs[i].msg_len as usize;
        let namelen = batch.msgs[i].msg_hdr.msg_namelen;
        // SAFETY: slot `i` lies within `bufs`.
        batch.iovs[k] = iovec { iov_base: unsafe { base.add(i * batch.slot) }.cast(), iov_len: len };
        let name = (&mut batch.names[i] as *mut sockaddr_storage).cast();
        let hdr = &mut batch.msgs[k].msg_hdr;
        hdr.msg_name = name;
        hdr.msg_namelen = namelen;
        hdr.msg_iov = &mut batch.iovs[k];
        hdr.msg_iovlen = 1;
        hdr.msg_flags = 0;
    }
    // `k <= i` always (replies keep their order), so rewriting header k
    // never loses a length or name still to be read: those were read above.
    let (mut sent, mut delivered, mut bytes_out) = (0usize, 0u64, 0u64);
    while sent < replies {
        // SAFETY: headers [sent, replies) point at live slots and names.
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
