//! The system calls, one thin wrapper each.
//!
//! This module is public as the teaching layer: each step of the slides
//! (`socket()`, `bind()`, `accept()`, ...) is one function here, to read
//! and to call. The clients and servers are built on it.
//!
//! Every wrapper is one line around one `libc` call: a `-1` return becomes
//! `io::Error::last_os_error()` (the `errno` the kernel left), anything else
//! is returned as it is. Retrying on `EINTR` is the caller's business: the
//! loops decide it, so nothing is hidden here. Every descriptor that a
//! wrapper creates comes back as an [`OwnedFd`], opened with `CLOEXEC`, so it
//! is closed on drop and on every error path, and never leaks into a child
//! process.

pub(crate) mod epoll;
pub(crate) mod mmsg;
#[cfg(feature = "io-uring")]
pub(crate) mod uring;
pub(crate) mod waker;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use libc::{c_int, c_void, socklen_t};

use crate::addr::SockAddr;

/// Turns a C-style `-1`-on-failure return into an `io::Result`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the arguments are checked by each caller's own SAFETY note;
        // the call itself has no other precondition.
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Wraps a descriptor that a successful system call just returned.
fn owned(fd: c_int) -> OwnedFd {
    // SAFETY: `fd` was returned by a successful socket/accept4/epoll_create1/
    // eventfd call a moment ago, so it is open and nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `socket(2)`: a new socket, always close-on-exec.
pub fn socket(family: c_int, ty: c_int, nonblocking: bool) -> io::Result<OwnedFd> {
    let flags = libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    syscall!(socket(family, ty | flags, 0)).map(owned)
}

/// `bind(2)`: give the socket its local address.
pub fn bind(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    // SAFETY: `addr.as_ptr()` points at a sockaddr_storage of which
    // `addr.len()` bytes are initialised; the kernel only reads them.
    syscall!(bind(fd.as_raw_fd(), addr.as_ptr(), addr.len())).map(drop)
}

/// `listen(2)`: make a bound stream socket a welcoming socket.
pub fn listen(fd: BorrowedFd<'_>, backlog: c_int) -> io::Result<()> {
    syscall!(listen(fd.as_raw_fd(), backlog)).map(drop)
}

/// `accept4(2)`: the next connection and its peer address, close-on-exec
/// (and non-blocking when asked) from birth.
pub fn accept4(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<(OwnedFd, SockAddr)> {
    let flags = libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    let mut new_fd = -1;
    let peer = SockAddr::try_init(|storage, len| {
        // SAFETY: `storage` and `len` describe a writable sockaddr_storage
        // and its size, as accept4 expects.
        new_fd = syscall!(accept4(fd.as_raw_fd(), storage, len, flags))?;
        Ok(())
    });
    // The descriptor is owned before the address is looked at, so it is
    // closed even if decoding failed.
    let new_fd = if new_fd >= 0 { Some(owned(new_fd)) } else { None };
    let peer = peer?;
    match new_fd {
        Some(fd) => Ok((fd, peer)),
        None => Err(io::Error::from_raw_os_error(libc::EBADF)),
    }
}

/// `connect(2)`.
pub fn connect(fd: BorrowedFd<'_>, addr: &SockAddr) -> io::Result<()> {
    // SAFETY: as in `bind`, the kernel reads `addr.len()` initialised bytes.
    syscall!(connect(fd.as_raw_fd(), addr.as_ptr(), addr.len())).map(drop)
}

/// `send(2)`, always with `MSG_NOSIGNAL`: a peer that has gone away gives
/// `EPIPE` here instead of killing the whole process with `SIGPIPE`.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    send_flags(fd, buf, 0)
}

/// [`send`] with more flags (`MSG_MORE`, ...); `MSG_NOSIGNAL` is always added.
pub fn send_flags(fd: BorrowedFd<'_>, buf: &[u8], flags: c_int) -> io::Result<usize> {
    // SAFETY: `buf` is a valid slice; the kernel reads at most `buf.len()` bytes.
    syscall!(send(fd.as_raw_fd(), buf.as_ptr().cast::<c_void>(), buf.len(), flags | libc::MSG_NOSIGNAL))
        .map(|n| n as usize)
}

/// `recv(2)`: `Ok(0)` is the peer's end of stream.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes.
    syscall!(recv(fd.as_raw_fd(), buf.as_mut_ptr().cast::<c_void>(), buf.len(), 0)).map(|n| n as usize)
}

/// `sendto(2)` with `MSG_NOSIGNAL`: one datagram to `addr`.
pub fn sendto(fd: BorrowedFd<'_>, buf: &[u8], addr: &SockAddr) -> io::Result<usize> {
    // SAFETY: `buf` is a valid slice and `addr` an initialised address of
    // `addr.len()` bytes; the kernel only reads both.
    syscall!(sendto(
        fd.as_raw_fd(),
        buf.as_ptr().cast::<c_void>(),
        buf.len(),
        libc::MSG_NOSIGNAL,
        addr.as_ptr(),
        addr.len(),
    ))
    .map(|n| n as usize)
}

/// `recvfrom(2)`: one datagram (or some stream bytes) and the sender.
/// With `libc::MSG_TRUNC` in `flags` on a datagram socket, the length
/// returned is the datagram's *real* length, which is larger than
/// `buf.len()` when the datagram did not fit and was cut. (Never pass
/// `MSG_TRUNC` on a stream socket: Linux then discards the bytes.)
pub fn recvfrom(fd: BorrowedFd<'_>, buf: &mut [u8], flags: c_int) -> io::Result<(usize, SockAddr)> {
    let mut n = 0usize;
    let from = SockAddr::try_init(|storage, len| {
        // SAFETY: `buf` is a valid writable slice; `storage`/`len` describe a
        // writable sockaddr_storage and its size.
        let res =
            syscall!(recvfrom(fd.as_raw_fd(), buf.as_mut_ptr().cast::<c_void>(), buf.len(), flags, storage, len,))?;
        n = res as usize;
        Ok(())
    })?;
    Ok((n, from))
}

/// `shutdown(2)`: `libc::SHUT_RD`, `SHUT_WR` or `SHUT_RDWR`.
pub fn shutdown(fd: BorrowedFd<'_>, how: c_int) -> io::Result<()> {
    syscall!(shutdown(fd.as_raw_fd(), how)).map(drop)
}

/// The machine's CPU time so far, in clock ticks, summed over every CPU
/// (the first line of `/proc/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Idle, and waiting for I/O.
    pub idle: u64,
    /// All of it.
    pub total: u64,
}

/// Reads [`CpuTimes`] from `/proc/stat`.
pub fn cpu_times() -> io::Result<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().filter(|l| l.starts_with("cpu ")).ok_or(io::ErrorKind::InvalidData)?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    let total = fields.iter().take(8).sum();
    Ok(CpuTimes { idle, total })
}

/// `malloc_trim(0)`: asks the C allocator to return the free memory of
/// every arena to the system (glibc; elsewhere, nothing).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no precondition; it only walks the
    // allocator's own structures, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `ioctl(FIONREAD)`: how many bytes wait to be read on a socket.
pub fn bytes_waiting(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut waiting: c_int = 0;
    // SAFETY: FIONREAD writes one int into `waiting`, which lives across
    // the call.
    syscall!(ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut waiting as *mut c_int))?;
    Ok(usize::try_from(waiting).unwrap_or(0))
}

/// `setsockopt(2)` for the common case of an `int` option.
pub fn setsockopt_int(fd: BorrowedFd<'_>, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: we pass a pointer to a live `c_int` and its exact size.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        (&value as *const c_int).cast::<c_void>(),
        std::mem::size_of::<c_int>() as socklen_t,
    ))
    .map(drop)
}

/// `getsockopt(2)` for an `int` option.
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: c_int, name: c_int) -> io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: `value` and `len` are live locals; the kernel writes at most
    // `len` bytes into `value` and updates `len`.
    syscall!(getsockopt(fd.as_raw_fd(), level, name, (&mut value as *mut c_int).cast::<c_void>(), &mut len,))?;
    Ok(value)
}

/// `getsockname(2)`: the local address (the port the kernel picked for port 0).
pub fn getsockname(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    SockAddr::try_init(|storage, len| {
        // SAFETY: `storage`/`len` describe a writable sockaddr_storage.
        syscall!(getsockname(fd.as_raw_fd(), storage, len)).map(drop)
    })
}

/// `getpeername(2)`: the address of the connected peer.
pub fn getpeername(fd: BorrowedFd<'_>) -> io::Result<SockAddr> {
    SockAddr::try_init(|storage, len| {
        // SAFETY: `storage`/`len` describe a writable sockaddr_storage.
        syscall!(getpeername(fd.as_raw_fd(), storage, len)).map(drop)
    })
}

/// `fcntl(F_SETFL)`: switch `O_NONBLOCK` on or off.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = syscall!(fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
    let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    syscall!(fcntl(fd.as_raw_fd(), libc::F_SETFL, flags)).map(drop)
}

/// A `poll` / `epoll_wait` timeout in milliseconds: rounded up, so a wait
/// of 0.4 ms is one millisecond, not a busy loop; saturated; `None` (for
/// ever) is -1.
pub fn timeout_ms(timeout: Option<std::time::Duration>) -> c_int {
    match timeout {
        None => -1,
        Some(d) => c_int::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(c_int::MAX),
    }
}

/// `poll(2)` on one descriptor (plus an optional second one, the waker):
/// returns the `revents` of each. `timeout_ms < 0` waits for ever.
pub fn poll2(a: (RawFd, i16), b: Option<(RawFd, i16)>, timeout_ms: c_int) -> io::Result<(i16, i16)> {
    let mut fds = [
        libc::pollfd { fd: a.0, events: a.1, revents: 0 },
        libc::pollfd { fd: b.map_or(-1, |b| b.0), events: b.map_or(0, |b| b.1), revents: 0 },
    ];
    let nfds: libc::nfds_t = if b.is_some() { 2 } else { 1 };
    // SAFETY: `fds` is a live array of at least `nfds` pollfd structs.
    syscall!(poll(fds.as_mut_ptr(), nfds, timeout_ms))?;
    Ok((fds[0].revents, fds[1].revents))
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn epoll_create() -> io::Result<OwnedFd> {
    syscall!(epoll_create1(libc::EPOLL_CLOEXEC)).map(owned)
}

/// `epoll_ctl(2)`: add, modify or delete `fd` with interest `events`, and
/// `token` in the event's `u64` so the loop knows whose event it is.
pub fn epoll_ctl(epfd: BorrowedFd<'_>, op: c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a live epoll_event; the kernel reads it (and ignores it
    // for EPOLL_CTL_DEL).
    syscall!(epoll_ctl(epfd.as_raw_fd(), op, fd, &mut ev)).map(drop)
}

/// `epoll_wait(2)`: fills `events` from the start; returns how many are ready.
pub fn epoll_wait(epfd: BorrowedFd<'_>, events: &mut [libc::epoll_event], timeout_ms: c_int) -> io::Result<usize> {
    let max = c_int::try_from(events.len()).unwrap_or(c_int::MAX);
    // SAFETY: `events` is a writable array of at least `max` entries.
    syscall!(epoll_wait(epfd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms)).map(|n| n as usize)
}

/// `eventfd(2)`, non-blocking and close-on-exec: the loops' waker.
pub fn eventfd() -> io::Result<OwnedFd> {
    syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)).map(owned)
}

/// `write(2)` of one 8-byte counter increment to an eventfd. Only a raw
/// descriptor and a stack buffer are touched, which keeps it
/// async-signal-safe.
pub fn eventfd_signal(fd: RawFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: `one` is a live 8-byte value, the size an eventfd write needs.
    syscall!(write(fd, (&one as *const u64).cast::<c_void>(), 8)).map(drop)
}

/// `recvmmsg(2)` with `MSG_DONTWAIT`: up to `msgs.len()` datagrams in one
/// call; returns how many arrived (each `msg_len` set, `MSG_TRUNC` in
/// `msg_hdr.msg_flags` for one that did not fit).
///
/// # Safety
/// Every header in `msgs` must point at live, writable buffers of the sizes
/// it states (iovecs, name storage, control buffer if any, aligned for
/// `cmsghdr`), and nothing else may use them during the call.
pub unsafe fn recvmmsg(fd: BorrowedFd<'_>, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let n = libc::c_uint::try_from(msgs.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: the caller promises the headers describe valid buffers; the
    // array itself holds `n` headers.
    syscall!(recvmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n, libc::MSG_DONTWAIT, std::ptr::null_mut()))
        .map(|n| n as usize)
}

/// `sendmmsg(2)` with `MSG_NOSIGNAL | MSG_DONTWAIT`: sends up to
/// `msgs.len()` datagrams, each to its own address; returns how many went.
///
/// # Safety
/// Every header in `msgs` must point at live buffers, addresses and control
/// messages (if any) of the sizes it states.
pub unsafe fn sendmmsg(fd: BorrowedFd<'_>, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let n = libc::c_uint::try_from(msgs.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: the caller promises the headers describe valid buffers; the
    // array itself holds `n` headers.
    syscall!(sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT))
        .map(|n| n as usize)
}
