//! Thin wrappers over the `libc` socket and epoll calls the load generator uses.
//!
//! Every call returns `Result<_, i32>` with the errno on failure: the callers
//! count failures, they never panic on them. Sockets are non-blocking and
//! close-on-exec; `Fd` closes on drop (which also removes it from any epoll set).

use std::mem;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// The OS's words for an errno value.
pub fn strerror(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// An owned file descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(i32);

impl Fd {
    pub fn raw(&self) -> i32 {
        self.0
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a descriptor this value owns; it is closed exactly once, here.
        unsafe {
            libc::close(self.0);
        }
    }
}

/// A socket address in the kernel's own layout (`sockaddr_in` / `sockaddr_in6`
/// inside a `sockaddr_storage`), built once and passed by pointer.
#[derive(Clone, Copy)]
pub struct SockAddr {
    ss: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    pub fn new(a: SocketAddr) -> SockAddr {
        // SAFETY: sockaddr_storage is plain old data, for which all-zero bytes are a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let len = match a {
            SocketAddr::V4(v4) => {
                // SAFETY: as above, all-zero is a valid sockaddr_in.
                let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
                // SAFETY: sockaddr_storage is at least as large and as aligned as sockaddr_in;
                // the pointer comes from a live local and the write stays inside it.
                unsafe { std::ptr::write(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in, sin) };
                mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above, all-zero is a valid sockaddr_in6.
                let mut sin6: libc::sockaddr_in6 = unsafe { mem::zeroed() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_flowinfo = v6.flowinfo().to_be();
                sin6.sin6_addr.s6_addr = v6.ip().octets();
                sin6.sin6_scope_id = v6.scope_id();
                // SAFETY: sockaddr_storage is at least as large and as aligned as sockaddr_in6.
                unsafe { std::ptr::write(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6, sin6) };
                mem::size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr { ss, len: len as libc::socklen_t }
    }

    pub fn family(&self) -> i32 {
        i32::from(self.ss.ss_family)
    }

    fn ptr(&self) -> *const libc::sockaddr {
        &self.ss as *const libc::sockaddr_storage as *const libc::sockaddr
    }
}

/// A new non-blocking, close-on-exec socket.
pub fn socket(family: i32, ty: i32) -> Result<Fd, i32> {
    // SAFETY: socket() takes no pointers; a negative return is an error, anything else a new descriptor we own.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(Fd(fd))
    }
}

pub fn set_int_opt(fd: &Fd, level: i32, name: i32, val: i32) -> Result<(), i32> {
    // SAFETY: the option value points to a live i32 whose size is passed alongside it.
    let r = unsafe {
        libc::setsockopt(
            fd.raw(),
            level,
            name,
            &val as *const i32 as *const libc::c_void,
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

pub fn bind(fd: &Fd, a: &SockAddr) -> Result<(), i32> {
    // SAFETY: `a` holds a valid sockaddr of `a.len` bytes for the duration of the call.
    if unsafe { libc::bind(fd.raw(), a.ptr(), a.len) } < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Non-blocking connect: `Ok(true)` connected at once, `Ok(false)` in progress.
pub fn connect(fd: &Fd, a: &SockAddr) -> Result<bool, i32> {
    // SAFETY: `a` holds a valid sockaddr of `a.len` bytes for the duration of the call.
    if unsafe { libc::connect(fd.raw(), a.ptr(), a.len) } == 0 {
        return Ok(true);
    }
    match errno() {
        libc::EINPROGRESS => Ok(false),
        e => Err(e),
    }
}

/// send() without SIGPIPE; `Err(EAGAIN)` when the socket buffer is full.
pub fn send(fd: &Fd, buf: &[u8]) -> Result<usize, i32> {
    send_flags(fd, buf, 0)
}

/// [`send`] with `MSG_MORE`: the kernel may hold the bytes back for what
/// follows. Only for bytes that a `shutdown(SHUT_WR)` follows at once,
/// which then leaves with them, FIN and data in one segment.
pub fn send_more(fd: &Fd, buf: &[u8]) -> Result<usize, i32> {
    send_flags(fd, buf, libc::MSG_MORE)
}

fn send_flags(fd: &Fd, buf: &[u8], flags: libc::c_int) -> Result<usize, i32> {
    // SAFETY: the pointer and length describe the live slice `buf`.
    let n = unsafe { libc::send(fd.raw(), buf.as_ptr() as *const libc::c_void, buf.len(), flags | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// sendmsg() of several buffers at once, without SIGPIPE.
pub fn sendv(fd: &Fd, bufs: &[std::io::IoSlice<'_>]) -> Result<usize, i32> {
    // SAFETY: all-zero is a valid msghdr (no address, no control data).
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // IoSlice is guaranteed to be ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(1024) as _;
    // SAFETY: `msg` points at `bufs`, live for the call, whose iovecs describe live slices.
    let n = unsafe { libc::sendmsg(fd.raw(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// recv(); `Ok(0)` is end of stream, `Err(EAGAIN)` nothing there yet.
pub fn recv(fd: &Fd, buf: &mut [u8]) -> Result<usize, i32> {
    recv_flags(fd, buf, 0)
}

pub fn recv_flags(fd: &Fd, buf: &mut [u8], flags: i32) -> Result<usize, i32> {
    // SAFETY: the pointer and length describe the live, writable slice `buf`.
    let n = unsafe { libc::recv(fd.raw(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), flags) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

pub fn shutdown_wr(fd: &Fd) -> Result<(), i32> {
    // SAFETY: shutdown() takes no pointers.
    if unsafe { libc::shutdown(fd.raw(), libc::SHUT_WR) } < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// The pending error of a socket (SO_ERROR), 0 if none.
pub fn so_error(fd: &Fd) -> i32 {
    let mut v: i32 = 0;
    let mut len = mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live locals; `len` holds the size of `v`.
    let r = unsafe {
        libc::getsockopt(fd.raw(), libc::SOL_SOCKET, libc::SO_ERROR, &mut v as *mut i32 as *mut libc::c_void, &mut len)
    };
    if r < 0 {
        errno()
    } else {
        v
    }
}

/// poll() on one descriptor; returns the revents (0 on timeout).
pub fn poll_one(fd: &Fd, events: i16, timeout_ms: i32) -> Result<i16, i32> {
    let mut p = libc::pollfd { fd: fd.raw(), events, revents: 0 };
    // SAFETY: `p` is one live pollfd and we pass a count of 1.
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(p.revents)
    }
}

pub const EV_IN: u32 = libc::EPOLLIN as u32;
pub const EV_OUT: u32 = libc::EPOLLOUT as u32;
pub const EV_ERR: u32 = libc::EPOLLERR as u32;
pub const EV_HUP: u32 = libc::EPOLLHUP as u32;
pub const EV_RDHUP: u32 = libc::EPOLLRDHUP as u32;
pub const EV_ET: u32 = libc::EPOLLET as u32;

/// An epoll instance; the token of each registration is a u64 (the slot index).
pub struct Epoll {
    fd: Fd,
}

pub fn empty_event() -> libc::epoll_event {
    libc::epoll_event { events: 0, u64: 0 }
}

impl Epoll {
    pub fn new() -> Result<Epoll, i32> {
        // SAFETY: epoll_create1() takes no pointers; a non-negative return is a descriptor we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            Err(errno())
        } else {
            Ok(Epoll { fd: Fd(fd) })
        }
    }

    fn ctl(&self, op: i32, fd: &Fd, events: u32, token: u64) -> Result<(), i32> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live epoll_event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.fd.raw(), op, fd.raw(), &mut ev) } < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }

    pub fn add(&self, fd: &Fd, events: u32, token: u64) -> Result<(), i32> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    pub fn del(&self, fd: &Fd) -> Result<(), i32> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits up to `timeout_ms`; returns how many entries of `events` were filled (0 on EINTR).
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> Result<usize, i32> {
        let max = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: `events` is a live, writable array of at least `max` entries.
        let n = unsafe { libc::epoll_wait(self.fd.raw(), events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            match errno() {
                libc::EINTR => Ok(0),
                e => Err(e),
            }
        } else {
            Ok(n as usize)
        }
    }
}

/// User plus system CPU seconds this process has used so far (all threads).
pub fn cpu_seconds() -> f64 {
    // SAFETY: all-zero is a valid rusage; getrusage fills the live local.
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: `ru` is a live, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } < 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    // SAFETY: all-zero is a valid rlimit.
    let mut rl: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: `rl` is a live, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } < 0 {
        return 0;
    }
    if rl.rlim_cur < rl.rlim_max {
        let want = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
        // SAFETY: `want` is a live rlimit read by the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur as u64;
        }
    }
    rl.rlim_cur as u64
}

/// Where client sockets take their source address from.
#[derive(Clone, Debug, PartialEq)]
pub enum SrcMode {
    /// The kernel picks an ephemeral port (the usual connect() without bind()).
    Kernel,
    /// Each socket is bound explicitly to the next (address, port) pair of a
    /// cycle over `ips` x `ports`, with SO_REUSEADDR; see `SrcCycler`.
    Cycle { ips: Vec<Ipv4Addr>, port_lo: u16, port_hi: u16 },
}

/// Cycles through source (address, port) pairs, address fastest, so that
/// the clients come from many addresses (a server's per-address limit sees
/// few from each) and a pair comes back only after `ips.len() * ports`
/// connections: with the defaults
/// (253 addresses x 22,768 ports = 5.7 million pairs) a pair is not reused for
/// minutes even at 50k connections/s, longer than TIME_WAIT (60 s). A pair
/// the kernel refuses (port held by a wildcard listener, 4-tuple still in an
/// unreusable TIME_WAIT) is skipped and counted in `src_retries`.
pub struct SrcCycler {
    ips: Vec<Ipv4Addr>,
    port_lo: u16,
    port_hi: u16,
    ip_i: usize,
    port: u16,
}

impl SrcCycler {
    /// `part` of `parts`: a thread's disjoint share of the addresses.
    pub fn new(ips: &[Ipv4Addr], port_lo: u16, port_hi: u16, part: usize, parts: usize) -> SrcCycler {
        let parts = parts.max(1);
        let mut mine: Vec<Ipv4Addr> =
            ips.iter().enumerate().filter(|(i, _)| i % parts == part).map(|(_, a)| *a).collect();
        if mine.is_empty() {
            mine = ips.to_vec();
        }
        // Start somewhere different each run, so that a run right after another
        // does not walk the pairs the previous one left in TIME_WAIT.
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
            ^ (u64::from(std::process::id()) << 20);
        let span = u64::from(port_hi - port_lo) + 1;
        let port = port_lo + (seed % span) as u16;
        let ip_i = ((seed >> 32) % mine.len().max(1) as u64) as usize;
        SrcCycler { ips: mine, port_lo, port_hi, ip_i, port }
    }

    pub fn next_addr(&mut self) -> SockAddr {
        let a = SocketAddr::new(self.ips[self.ip_i].into(), self.port);
        self.ip_i += 1;
        if self.ip_i == self.ips.len() {
            self.ip_i = 0;
            self.port = if self.port >= self.port_hi { self.port_lo } else { self.port + 1 };
        }
        SockAddr::new(a)
    }
}

/// Opens TCP client connections to one target, from the chosen source addresses.
pub struct Connector {
    target: SockAddr,
    src: Option<SrcCycler>,
    pub src_retries: u64,
}

impl Connector {
    pub fn new(target: SockAddr, src: Option<SrcCycler>) -> Connector {
        Connector { target, src, src_retries: 0 }
    }

    /// A new non-blocking socket with its connect() started: `(fd, connected_now)`.
    pub fn connect(&mut self) -> Result<(Fd, bool), i32> {
        let family = self.target.family();
        let Some(src) = self.src.as_mut() else {
            let fd = socket(family, libc::SOCK_STREAM)?;
            let now = connect(&fd, &self.target)?;
            return Ok((fd, now));
        };
        let mut last = libc::EADDRNOTAVAIL;
        for _ in 0..64 {
            let fd = socket(family, libc::SOCK_STREAM)?;
            set_int_opt(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
            // A failed bind() leaves the socket unbound: try the next pair on it.
            let mut bound = false;
            for _ in 0..64 {
                match bind(&fd, &src.next_addr()) {
                    Ok(()) => {
                        bound = true;
                        break;
                    }
                    Err(e @ (libc::EADDRINUSE | libc::EADDRNOTAVAIL)) => {
                        last = e;
                        self.src_retries += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !bound {
                return Err(last);
            }
            match connect(&fd, &self.target) {
                Ok(now) => return Ok((fd, now)),
                // The 4-tuple is taken (a TIME_WAIT the kernel will not reuse yet): next pair.
                Err(e @ (libc::EADDRINUSE | libc::EADDRNOTAVAIL)) => {
                    last = e;
                    self.src_retries += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consecutive clients come from different addresses, and every pair
    /// comes once per cycle of addresses x ports.
    #[test]
    fn the_source_cycle_spreads_clients_over_the_addresses() {
        let ips: Vec<Ipv4Addr> = (2..=5u8).map(|d| Ipv4Addr::new(127, 0, 0, d)).collect();
        let mut c = SrcCycler::new(&ips, 1000, 1002, 0, 1);
        let mut next = || {
            let pair = (c.ips[c.ip_i], c.port);
            c.next_addr();
            pair
        };
        let pairs: Vec<(Ipv4Addr, u16)> = (0..12).map(|_| next()).collect();
        let mut unique = pairs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 12, "a pair came twice within one cycle: {pairs:?}");
        assert!(pairs.windows(2).all(|w| w[0].0 != w[1].0), "one address twice in a row: {pairs:?}");
        assert_eq!(next(), pairs[0], "the cycle starts again");
    }
}
