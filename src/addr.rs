//! Address structures, made visible: the slides' second "hidden part".
//!
//! A socket address is a `sockaddr_storage` (big enough for any family)
//! plus the number of bytes that are meaningful. Encoding zeroes the storage,
//! sets the family, and writes the port and address in network order;
//! decoding checks the family first and only then reads the structure that
//! family implies. Host names go through `getaddrinfo`, whose list is always
//! freed.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use libc::{c_int, sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};

use crate::endian::{hton16, ntoh16};
use crate::error::{Error, Result};

/// An IP socket address (IPv4 or IPv6 plus a port) held exactly as the
/// kernel takes it: a `sockaddr_storage` and its length.
#[derive(Clone, Copy)]
pub struct SockAddr {
    storage: sockaddr_storage,
    len: socklen_t,
}

/// A decoded address: what a `SockAddr` holds, as plain values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpPort {
    /// IPv4: four address bytes in network order and a host-order port.
    V4([u8; 4], u16),
    /// IPv6: sixteen address bytes, a host-order port and the scope id.
    V6([u8; 16], u16, u32),
}

impl SockAddr {
    /// Builds a `sockaddr_in` for `ip:port`.
    pub fn v4(ip: [u8; 4], port: u16) -> SockAddr {
        // SAFETY: all-zero bytes are a valid sockaddr_storage (plain integers).
        let mut storage: sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: sockaddr_storage is larger than and aligned at least as
        // strictly as sockaddr_in, so viewing its start as one is sound.
        let sin = unsafe { &mut *(&mut storage as *mut sockaddr_storage).cast::<sockaddr_in>() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        // The port travels in network order: 12000 (0x2EE0) is stored 2E E0.
        sin.sin_port = hton16(port);
        // The address bytes are already in network order (most significant
        // first, 127 then 0 then 0 then 1): stored as they are, no swap.
        sin.sin_addr.s_addr = u32::from_ne_bytes(ip);
        SockAddr { storage, len: size_of::<sockaddr_in>() as socklen_t }
    }

    /// Builds a `sockaddr_in6` for `[ip]:port` with a scope id (0 unless a
    /// link-local address names an interface).
    pub fn v6(ip: [u8; 16], port: u16, scope_id: u32) -> SockAddr {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut storage: sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: sockaddr_storage is larger than and aligned at least as
        // strictly as sockaddr_in6.
        let sin6 = unsafe { &mut *(&mut storage as *mut sockaddr_storage).cast::<sockaddr_in6>() };
        sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        // Port in network order, as for IPv4.
        sin6.sin6_port = hton16(port);
        // Sixteen address bytes, network order already: copied as they are.
        sin6.sin6_addr.s6_addr = ip;
        // The scope id is a host-order interface index, not a wire field.
        sin6.sin6_scope_id = scope_id;
        SockAddr { storage, len: size_of::<sockaddr_in6>() as socklen_t }
    }

    /// Builds the address from decoded values.
    pub fn from_ip_port(ip: IpPort) -> SockAddr {
        match ip {
            IpPort::V4(a, p) => SockAddr::v4(a, p),
            IpPort::V6(a, p, s) => SockAddr::v6(a, p, s),
        }
    }

    /// Lets the kernel fill an address (`accept4`, `recvfrom`,
    /// `getsockname`, `getpeername`): `f` receives a pointer to zeroed
    /// storage and its size, and the result is checked before use.
    pub fn try_init<F>(f: F) -> io::Result<SockAddr>
    where
        F: FnOnce(*mut sockaddr, *mut socklen_t) -> io::Result<()>,
    {
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut storage: sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = size_of::<sockaddr_storage>() as socklen_t;
        f((&mut storage as *mut sockaddr_storage).cast::<sockaddr>(), &mut len)?;
        // The kernel reports the full length even when it had to cut the
        // address; ours is large enough for any family, so cap it anyway.
        let len = len.min(size_of::<sockaddr_storage>() as socklen_t);
        Ok(SockAddr { storage, len })
    }

    /// Copies `len` bytes of a kernel or resolver address into storage.
    ///
    /// # Safety
    /// `ptr` must point at `len` readable bytes of a socket address.
    pub unsafe fn from_raw(ptr: *const sockaddr, len: socklen_t) -> Option<SockAddr> {
        if ptr.is_null() || len as usize > size_of::<sockaddr_storage>() {
            return None;
        }
        // SAFETY: all-zero bytes are a valid sockaddr_storage.
        let mut storage: sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: the caller promises `len` readable bytes at `ptr`; the
        // destination has room for them (checked above) and cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                ptr.cast::<u8>(),
                (&mut storage as *mut sockaddr_storage).cast::<u8>(),
                len as usize,
            )
        };
        Some(SockAddr { storage, len })
    }

    /// The address family (`AF_INET`, `AF_INET6`, ...).
    pub fn family(&self) -> c_int {
        c_int::from(self.storage.ss_family)
    }

    /// Pointer for the kernel (`bind`, `connect`, `sendto`).
    pub fn as_ptr(&self) -> *const sockaddr {
        (&self.storage as *const sockaddr_storage).cast::<sockaddr>()
    }

    /// The number of meaningful bytes.
    pub fn len(&self) -> socklen_t {
        self.len
    }

    /// True when no byte is meaningful (never the case for an IP address).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw storage, for callers that want to look at the bytes.
    pub fn storage(&self) -> &sockaddr_storage {
        &self.storage
    }

    /// Decodes the address: the family is checked first, then the
    /// structure that family implies is read. `None` for a family that is
    /// neither IPv4 nor IPv6, or a length too short for its family.
    pub fn ip_port(&self) -> Option<IpPort> {
        match self.family() {
            libc::AF_INET if self.len as usize >= size_of::<sockaddr_in>() => {
                // SAFETY: the family says sockaddr_in, the length covers one,
                // and the storage is large and aligned enough to view as one.
                let sin = unsafe { &*(&self.storage as *const sockaddr_storage).cast::<sockaddr_in>() };
                // The address bytes are in network order: their memory order
                // is the dotted order, so no swap.
                let ip = sin.sin_addr.s_addr.to_ne_bytes();
                // The port is in network order: swap it to host order.
                Some(IpPort::V4(ip, ntoh16(sin.sin_port)))
            }
            libc::AF_INET6 => {
                let sin6 = self.as_in6()?;
                Some(IpPort::V6(sin6.sin6_addr.s6_addr, ntoh16(sin6.sin6_port), sin6.sin6_scope_id))
            }
            _ => None,
        }
    }

    /// The storage as a `sockaddr_in6`, when the family and length say it is one.
    fn as_in6(&self) -> Option<&sockaddr_in6> {
        if self.family() != libc::AF_INET6 || (self.len as usize) < size_of::<sockaddr_in6>() {
            return None;
        }
        // SAFETY: the family says sockaddr_in6, the length covers one, and
        // the storage is large and aligned enough to view as one.
        Some(unsafe { &*(&self.storage as *const sockaddr_storage).cast::<sockaddr_in6>() })
    }

    /// The port in host order, or 0 for a non-IP address.
    pub fn port(&self) -> u16 {
        match self.ip_port() {
            Some(IpPort::V4(_, p)) | Some(IpPort::V6(_, p, _)) => p,
            None => 0,
        }
    }

    /// The address as it is best shown to a person: an IPv4 peer that an
    /// IPv6 dual-stack socket reports as `::ffff:a.b.c.d` is shown as plain
    /// `a.b.c.d`.
    pub fn unmapped(&self) -> Option<IpPort> {
        match self.ip_port()? {
            IpPort::V6(ip, port, _) if is_v4_mapped(&ip) => Some(IpPort::V4([ip[12], ip[13], ip[14], ip[15]], port)),
            other => Some(other),
        }
    }

    /// The host part as text (no port): `127.0.0.1`, `::1`.
    pub fn host_string(&self) -> String {
        match self.unmapped() {
            Some(IpPort::V4(ip, _)) => Ipv4Addr::from(ip).to_string(),
            Some(IpPort::V6(ip, _, 0)) => Ipv6Addr::from(ip).to_string(),
            Some(IpPort::V6(ip, _, scope)) => format!("{}%{}", Ipv6Addr::from(ip), scope),
            None => format!("<family {}>", self.family()),
        }
    }
}

impl From<SocketAddrV4> for SockAddr {
    fn from(a: SocketAddrV4) -> SockAddr {
        SockAddr::v4(a.ip().octets(), a.port())
    }
}

impl From<SocketAddrV6> for SockAddr {
    /// Keeps the scope id, and the flow info as the standard library does:
    /// its value goes into `sin6_flowinfo` as it is.
    fn from(a: SocketAddrV6) -> SockAddr {
        let mut sa = SockAddr::v6(a.ip().octets(), a.port(), a.scope_id());
        // SAFETY: `v6` made a sockaddr_in6 in storage that is large and
        // aligned enough to view as one.
        let sin6 = unsafe { &mut *(&mut sa.storage as *mut sockaddr_storage).cast::<sockaddr_in6>() };
        sin6.sin6_flowinfo = a.flowinfo();
        sa
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> SockAddr {
        match a {
            SocketAddr::V4(v4) => v4.into(),
            SocketAddr::V6(v6) => v6.into(),
        }
    }
}

impl TryFrom<SockAddr> for SocketAddr {
    type Error = Error;

    /// The IPv4 or IPv6 address, with scope id and flow info; an
    /// IPv4-mapped IPv6 address stays IPv6. Another family fails with
    /// `EAFNOSUPPORT`.
    fn try_from(sa: SockAddr) -> Result<SocketAddr> {
        match sa.ip_port() {
            Some(IpPort::V4(ip, port)) => Ok(SocketAddr::V4(SocketAddrV4::new(ip.into(), port))),
            Some(IpPort::V6(ip, port, scope)) => {
                let flowinfo = sa.as_in6().map_or(0, |sin6| sin6.sin6_flowinfo);
                Ok(SocketAddr::V6(SocketAddrV6::new(ip.into(), port, flowinfo, scope)))
            }
            None => Err(Error::errno(format!("convert {sa} to a std::net::SocketAddr"), libc::EAFNOSUPPORT)),
        }
    }
}

/// `::ffff:a.b.c.d`: ten zero bytes, two 0xFF bytes, then the IPv4 address.
pub fn is_v4_mapped(ip: &[u8; 16]) -> bool {
    ip[..10].iter().all(|&b| b == 0) && ip[10] == 0xFF && ip[11] == 0xFF
}

impl fmt::Display for SockAddr {
    /// `127.0.0.1:12000` or `[::1]:12000` (IPv4-mapped shown as IPv4).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unmapped() {
            Some(IpPort::V4(_, port)) => write!(f, "{}:{}", self.host_string(), port),
            Some(IpPort::V6(_, port, _)) => write!(f, "[{}]:{}", self.host_string(), port),
            None => write!(f, "{}", self.host_string()),
        }
    }
}

impl fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq for SockAddr {
    /// Equal when family, address and port are equal (flow info ignored).
    fn eq(&self, other: &SockAddr) -> bool {
        self.ip_port().is_some() && self.ip_port() == other.ip_port()
    }
}

/// Shows `host:port` the way a person writes it (`[::1]:80` for IPv6).
pub fn host_port_text(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Which addresses `resolve` is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Addresses to connect or send to.
    Connect,
    /// Addresses to bind a server to (`AI_PASSIVE`).
    Bind,
}

/// Frees a `getaddrinfo` list when it goes out of scope, on every path.
struct AddrInfoList(*mut libc::addrinfo);

impl Drop for AddrInfoList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a successful getaddrinfo and is
            // freed exactly once, here.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// Resolves `host` (a name, or a numeric IPv4 / IPv6 address; `""` for
/// all interfaces when binding) and `port` into socket addresses for
/// `socktype` (`SOCK_STREAM` or `SOCK_DGRAM`), in the resolver's order.
///
/// A name that does not resolve fails with the resolver's own words
/// (`gai_strerror`), and its code in the resolver range of status codes.
pub fn resolve(host: &str, port: u16, socktype: c_int, purpose: Purpose) -> Result<Vec<SockAddr>> {
    let what = || format!("resolve {}", host_port_text(host, port));
    // Numeric addresses are decoded by our own code, no resolver involved.
    if let Some(ip) = parse_numeric(host) {
        return Ok(vec![SockAddr::from_ip_port(with_port(ip, port))]);
    }
    if host.is_empty() && purpose == Purpose::Connect {
        return Err(Error::invalid(what(), "empty host name"));
    }
    let c_host = CString::new(host).map_err(|_| Error::invalid(what(), "host name contains a NUL byte"))?;
    // SAFETY: all-zero bytes are a valid addrinfo hints struct.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = socktype;
    hints.ai_flags = libc::AI_ADDRCONFIG | if purpose == Purpose::Bind { libc::AI_PASSIVE } else { 0 };
    let node = if host.is_empty() { std::ptr::null() } else { c_host.as_ptr() };
    let mut res = MaybeUninit::<*mut libc::addrinfo>::new(std::ptr::null_mut());
    let rc = loop {
        // SAFETY: `node` is NULL or a NUL-terminated string that outlives
        // the call, the service a static string (the port is set by us
        // afterwards); hints and the result pointer are live locals.
        let rc = unsafe { libc::getaddrinfo(node, c"0".as_ptr(), &hints, res.as_mut_ptr()) };
        if rc == libc::EAI_SYSTEM && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break rc;
    };
    if rc != 0 {
        return Err(Error::resolve(what(), rc));
    }
    // SAFETY: getaddrinfo succeeded, so it wrote the list head.
    let list = AddrInfoList(unsafe { res.assume_init() });
    let mut out: Vec<SockAddr> = Vec::new();
    let mut cur = list.0;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the live list owned by `list`.
        let ai = unsafe { &*cur };
        // SAFETY: the resolver promises `ai_addrlen` bytes at `ai_addr`.
        if let Some(sa) = unsafe { SockAddr::from_raw(ai.ai_addr, ai.ai_addrlen) } {
            if let Some(ip) = sa.ip_port() {
                let sa = SockAddr::from_ip_port(with_port(ip, port));
                if !out.contains(&sa) {
                    out.push(sa);
                }
            }
        }
        cur = ai.ai_next;
    }
    if out.is_empty() {
        return Err(Error::resolve(what(), libc::EAI_NONAME));
    }
    Ok(out)
}

/// Replaces the port of a decoded address.
pub fn with_port(ip: IpPort, port: u16) -> IpPort {
    match ip {
        IpPort::V4(a, _) => IpPort::V4(a, port),
        IpPort::V6(a, _, s) => IpPort::V6(a, port, s),
    }
}

/// Decodes a numeric address: dotted IPv4 (`127.0.0.1`), or IPv6 (`::1`,
/// `[::1]`, `fe80::1%3` with a numeric scope). Anything else is `None`.
pub fn parse_numeric(host: &str) -> Option<IpPort> {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return Some(IpPort::V4(v4.octets(), 0));
    }
    let (ip, scope) = match host.split_once('%') {
        Some((ip, scope)) => (ip, scope.parse::<u32>().ok()?),
        None => (host, 0),
    };
    ip.parse::<Ipv6Addr>().ok().map(|v6| IpPort::V6(v6.octets(), 0, scope))
}

/// The resolver's message for an `EAI_*` code.
pub(crate) fn gai_message(code: c_int) -> String {
    // SAFETY: gai_strerror returns a pointer to a static NUL-terminated
    // string for any code (glibc returns "Unknown error" for unknown ones).
    let ptr = unsafe { libc::gai_strerror(code) };
    if ptr.is_null() {
        return format!("resolver error {code}");
    }
    // SAFETY: non-NULL and NUL-terminated, per the above.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(sa: &SockAddr) -> &[u8] {
        // SAFETY: the storage is a plain struct of `len` initialised bytes.
        unsafe { std::slice::from_raw_parts((sa.storage() as *const sockaddr_storage).cast::<u8>(), sa.len() as usize) }
    }

    /// An address of family AF_UNIX, which is not IP.
    fn unix_family() -> SockAddr {
        // SAFETY: zeroed storage is valid.
        let mut st: sockaddr_storage = unsafe { std::mem::zeroed() };
        st.ss_family = libc::AF_UNIX as libc::sa_family_t;
        // SAFETY: `st` is a live struct of the given size.
        unsafe {
            SockAddr::from_raw((&st as *const sockaddr_storage).cast(), size_of::<sockaddr_storage>() as socklen_t)
        }
        .expect("copy")
    }

    #[test]
    fn v4_bytes_on_the_wire() {
        let sa = SockAddr::v4([127, 0, 0, 1], 12000);
        let b = bytes(&sa);
        assert_eq!(sa.len() as usize, size_of::<sockaddr_in>());
        assert_eq!(sa.family(), libc::AF_INET);
        // sockaddr_in: family (2 bytes, host order), port (2), address (4).
        assert_eq!(&b[2..4], &[0x2E, 0xE0], "port 12000 in network order");
        assert_eq!(&b[4..8], &[0x7F, 0x00, 0x00, 0x01], "127.0.0.1 in network order");
        assert!(b[8..].iter().all(|&x| x == 0), "sin_zero is zero");
        assert_eq!(sa.ip_port(), Some(IpPort::V4([127, 0, 0, 1], 12000)));
        assert_eq!(sa.to_string(), "127.0.0.1:12000");
    }

    #[test]
    fn v6_bytes_on_the_wire() {
        let mut ip = [0u8; 16];
        ip[15] = 1;
        let sa = SockAddr::v6(ip, 443, 0);
        let b = bytes(&sa);
        assert_eq!(sa.len() as usize, size_of::<sockaddr_in6>());
        // sockaddr_in6: family (2), port (2), flowinfo (4), address (16), scope (4).
        assert_eq!(&b[2..4], &[0x01, 0xBB], "port 443 in network order");
        assert_eq!(&b[8..24], &ip);
        assert_eq!(sa.ip_port(), Some(IpPort::V6(ip, 443, 0)));
        assert_eq!(sa.to_string(), "[::1]:443");
    }

    #[test]
    fn v4_mapped_peer_is_shown_as_v4() {
        let ip = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 1, 2, 3];
        let sa = SockAddr::v6(ip, 5000, 0);
        assert!(is_v4_mapped(&ip));
        assert_eq!(sa.unmapped(), Some(IpPort::V4([10, 1, 2, 3], 5000)));
        assert_eq!(sa.to_string(), "10.1.2.3:5000");
        assert_eq!(sa.host_string(), "10.1.2.3");
    }

    #[test]
    fn round_trip_through_raw_storage() {
        for sa in [
            SockAddr::v4([192, 0, 2, 7], 1),
            SockAddr::v6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9], 65535, 3),
        ] {
            // SAFETY: `sa` is a live address of `len` bytes.
            let copy = unsafe { SockAddr::from_raw(sa.as_ptr(), sa.len()) }.expect("copy");
            assert_eq!(copy.ip_port(), sa.ip_port());
        }
    }

    #[test]
    fn unknown_family_is_not_decoded() {
        let sa = unix_family();
        assert_eq!(sa.ip_port(), None);
        assert_eq!(sa.port(), 0);
    }

    #[test]
    fn std_v4_addresses_convert_both_ways() {
        let std: SocketAddr = "192.0.2.7:12000".parse().expect("literal");
        let sa = SockAddr::from(std);
        assert_eq!(&bytes(&sa)[2..8], &[0x2E, 0xE0, 192, 0, 2, 7]);
        assert_eq!(SocketAddr::try_from(sa).expect("IP"), std);
    }

    #[test]
    fn std_v6_addresses_keep_scope_and_flow_info() {
        let ip: Ipv6Addr = "fe80::1".parse().expect("literal");
        let std = SocketAddrV6::new(ip, 443, 0x000A_BCDE, 3);
        let sa = SockAddr::from(SocketAddr::V6(std));
        assert_eq!(sa.ip_port(), Some(IpPort::V6(ip.octets(), 443, 3)));
        // sockaddr_in6: family (2), port (2), flowinfo (4), address (16), scope (4).
        assert_eq!(&bytes(&sa)[4..8], &0x000A_BCDE_u32.to_ne_bytes());
        assert_eq!(SocketAddr::try_from(sa).expect("IP"), SocketAddr::V6(std));
    }

    #[test]
    fn a_v4_mapped_address_stays_v6_in_std() {
        let std: SocketAddr = "[::ffff:10.1.2.3]:5000".parse().expect("literal");
        assert_eq!(SocketAddr::try_from(SockAddr::from(std)).expect("IP"), std);
    }

    #[test]
    fn a_non_ip_address_does_not_convert_to_std() {
        let sa = unix_family();
        let err = SocketAddr::try_from(sa).expect_err("not IP");
        assert_eq!(err.raw_os_error(), Some(libc::EAFNOSUPPORT));
    }

    #[test]
    fn numeric_hosts() {
        assert_eq!(parse_numeric("127.0.0.1"), Some(IpPort::V4([127, 0, 0, 1], 0)));
        assert!(matches!(parse_numeric("::1"), Some(IpPort::V6(_, 0, 0))));
        assert!(matches!(parse_numeric("[::1]"), Some(IpPort::V6(_, 0, 0))));
        assert!(matches!(parse_numeric("fe80::1%2"), Some(IpPort::V6(_, 0, 2))));
        assert_eq!(parse_numeric("localhost"), None);
        assert_eq!(parse_numeric("256.0.0.1"), None);
        assert_eq!(parse_numeric(""), None);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // getaddrinfo with flags: Miri cannot run it
    fn resolves_localhost_and_binds_all_interfaces() {
        let v = resolve("localhost", 80, libc::SOCK_STREAM, Purpose::Connect).expect("localhost");
        assert!(!v.is_empty());
        assert!(v.iter().all(|a| a.port() == 80));
        let any = resolve("", 7, libc::SOCK_DGRAM, Purpose::Bind).expect("wildcard");
        assert!(any.iter().all(|a| a.port() == 7));
    }

    #[test]
    #[cfg_attr(miri, ignore)] // getaddrinfo with flags: Miri cannot run it
    fn unknown_name_fails_with_the_resolvers_words() {
        let err = resolve("no-such-host.invalid", 1, libc::SOCK_STREAM, Purpose::Connect).expect_err("must fail");
        assert!(err.code() <= crate::error::EAI_BASE, "code {}", err.code());
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
    }
}
