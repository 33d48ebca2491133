//! A small `epoll` wrapper: the interest list and a reusable event buffer.
//! Tokens live in `epoll_event.u64`; timeouts are whole milliseconds,
//! rounded up so a short wait never turns into a busy loop.

use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::sys;

/// Readable.
pub const IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub const OUT: u32 = libc::EPOLLOUT as u32;
/// Error condition (always reported).
pub const ERR: u32 = libc::EPOLLERR as u32;
/// Hang-up (always reported).
pub const HUP: u32 = libc::EPOLLHUP as u32;
/// Wake only one of the loops sharing a descriptor (the listener).
pub const EXCLUSIVE: u32 = libc::EPOLLEXCLUSIVE as u32;

/// One epoll instance and its event buffer.
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    /// A new instance whose buffer holds `capacity` events per wait.
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        let fd = sys::epoll_create()?;
        Ok(Epoll { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)] })
    }

    /// Adds `fd` with `interest`, tagged with `token`.
    pub fn add(&self, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        sys::epoll_ctl(self.fd.as_fd(), libc::EPOLL_CTL_ADD, fd, interest, token)
    }

    /// Changes the interest of `fd`.
    pub fn modify(&self, fd: RawFd, interest: u32, token: u64) -> io::Result<()> {
        sys::epoll_ctl(self.fd.as_fd(), libc::EPOLL_CTL_MOD, fd, interest, token)
    }

    /// Removes `fd` (closing it removes it too).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        sys::epoll_ctl(self.fd.as_fd(), libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout` (`None`: for ever). `EINTR` is a wait that
    /// returned nothing. Returns the ready events as (token, flags).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<impl Iterator<Item = (u64, u32)> + '_> {
        let n = match sys::epoll_wait(self.fd.as_fd(), &mut self.events, sys::timeout_ms(timeout)) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => 0,
            Err(e) => return Err(e),
        };
        Ok(self.events[..n].iter().map(|e| {
            // Copy out of the (packed on x86-64) struct before use.
            let (token, flags) = (e.u64, e.events);
            (token, flags)
        }))
    }
}
