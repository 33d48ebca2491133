//! The UDP server: `recvfrom()` a datagram, upper-case it, `sendto()` it
//! back to the address it came from. In concurrent mode every loop thread
//! reads the same socket.
//!
//! A datagram is answered whole or not at all: `recvfrom` is called with
//! `MSG_TRUNC`, which returns the datagram's real length, so one larger
//! than `max_datagram` is seen, dropped and counted, never answered with a
//! cut copy. Not answered either: a datagram from port 0 (no one can
//! receive there) or one that claims to come from this very socket (a
//! forged source that would make us talk to ourselves).

use std::os::fd::{AsFd, AsRawFd};

use super::{Counters, Shared};
use crate::error::{Error, Result};
use crate::sys;
use crate::upper::upper_in_place;

/// Datagrams handled per wake-up before looking at the waker again.
const BATCH: usize = 64;

pub(super) fn run(shared: &Shared) -> Result<()> {
    let sock = &shared.socket;
    let c = &shared.counters;
    let max = shared.config.max_datagram;
    // One byte more than the largest answered datagram; with MSG_TRUNC the
    // real length tells a datagram that did not fit anyway.
    let mut buf = vec![0u8; max + 1];
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
        for _ in 0..BATCH {
            let (n, from) = match sys::recvfrom(sock.as_fd(), &mut buf) {
                Ok(x) => x,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    // An ICMP error from an earlier reply's destination:
                    // that client is gone; nothing to do for it.
                    Some(libc::ECONNREFUSED) | Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => {
                        Counters::add(&c.errors, 1);
                        continue;
                    }
                    _ => {
                        Counters::add(&c.errors, 1);
                        break;
                    }
                },
            };
            Counters::add(&c.dgrams_in, 1);
            Counters::add(&c.bytes_in, n.min(buf.len()) as u64);
            if n > max || from.port() == 0 || from == shared.local {
                Counters::add(&c.dgrams_dropped, 1);
                continue;
            }
            shared.tell(&from);
            let msg = &mut buf[..n];
            upper_in_place(msg);
            match sys::sendto(sock.as_fd(), msg, &from) {
                Ok(k) => {
                    Counters::add(&c.dgrams_out, 1);
                    Counters::add(&c.bytes_out, k as u64);
                }
                Err(_) => Counters::add(&c.dgrams_dropped, 1),
            }
        }
    }
}
