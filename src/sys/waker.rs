//! The waker: an `eventfd` registered in every loop. Stopping the server
//! writes 8 bytes to it; it is never read, so it stays readable and every
//! loop that waits on it wakes up and sees the stop flag. A `write` on a
//! descriptor is async-signal-safe, so a signal handler may stop a server.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::sys;

/// An eventfd that wakes every loop waiting on it.
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// A new, unsignalled waker.
    pub fn new() -> io::Result<Waker> {
        Ok(Waker { fd: sys::eventfd()? })
    }

    /// Wakes every loop. Async-signal-safe: one `write`, no allocation, no
    /// lock. A full counter (`EAGAIN`) means it is signalled already.
    pub fn wake(&self) {
        let _ = sys::eventfd_signal(self.fd.as_raw_fd());
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
