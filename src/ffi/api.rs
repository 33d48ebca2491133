//! Status codes, messages, version, byte order, addresses, the transform.

use std::ffi::c_char;

use libc::{c_int, sockaddr, sockaddr_in, sockaddr_in6, socklen_t};

use super::{bytes_out, guard, last_error_ptr, str_arg, write_text};
use crate::addr::{parse_numeric, IpPort, SockAddr};
use crate::endian;
use crate::error::{self, Error};

/// Success.
pub const UPCASE_OK: c_int = 0;
/// Invalid argument: a NULL pointer, an out-of-range number, a bad name.
pub const UPCASE_EINVAL: c_int = -22;
/// Connection refused: nothing listens on that port.
pub const UPCASE_ECONNREFUSED: c_int = -111;
/// A wait ran out of time.
pub const UPCASE_ETIMEDOUT: c_int = -110;
/// The peer reset the connection.
pub const UPCASE_ECONNRESET: c_int = -104;
/// The address is already in use.
pub const UPCASE_EADDRINUSE: c_int = -98;
/// The address is not available on this host.
pub const UPCASE_EADDRNOTAVAIL: c_int = -99;
/// A datagram is larger than the protocol allows.
pub const UPCASE_EMSGSIZE: c_int = -90;
/// Too many open files in this process.
pub const UPCASE_EMFILE: c_int = -24;
/// Base of the resolver range: status = `UPCASE_EAI_BASE + EAI_*`.
pub const UPCASE_EAI_BASE: c_int = -3000;
/// The name does not resolve (`UPCASE_EAI_BASE + EAI_NONAME`).
pub const UPCASE_EAI_NONAME: c_int = -3002;
/// Temporary resolver failure (`UPCASE_EAI_BASE + EAI_AGAIN`).
pub const UPCASE_EAI_AGAIN: c_int = -3003;
/// Base of the library's own codes.
pub const UPCASE_ERR_BASE: c_int = -4000;
/// The reply buffer is too small; the size needed is reported.
pub const UPCASE_ERR_BUFFER_TOO_SMALL: c_int = -4001;
/// The peer closed before the whole reply arrived.
pub const UPCASE_ERR_SHORT_REPLY: c_int = -4002;
/// The server has been stopped and cannot run again.
pub const UPCASE_ERR_STOPPED: c_int = -4003;
/// The server is already running.
pub const UPCASE_ERR_BUSY: c_int = -4004;
/// Internal error: a Rust panic caught at the boundary.
pub const UPCASE_ERR_PANIC: c_int = -4005;
/// The peer broke the protocol (a reply longer than the request).
pub const UPCASE_ERR_PROTOCOL: c_int = -4006;
/// TLS failed (an untrusted certificate, a wrong name, a refused
/// handshake, a peer that does not speak TLS); the message says which.
pub const UPCASE_ERR_TLS: c_int = -4007;
/// Room for any address text from `upcase_addr_name`, NUL included.
pub const UPCASE_ADDRSTRLEN: usize = 64;

/// The static message for a status code, e.g. `"connection refused"`.
/// Never NULL; `"unknown error"` for a code it does not know.
#[no_mangle]
pub extern "C" fn upcase_strerror(code: c_int) -> *const c_char {
    error::strerror(code).as_ptr()
}

/// The static name of a status code, e.g. `"UPCASE_ECONNREFUSED"`.
/// Never NULL; `"UPCASE_UNKNOWN"` for a code it does not know.
#[no_mangle]
pub extern "C" fn upcase_errname(code: c_int) -> *const c_char {
    error::errname(code).as_ptr()
}

/// This thread's detailed message of its last failure: what was being done,
/// to which address, and the system's words, e.g.
/// `"connect to 127.0.0.1:12000: Connection refused"`.
/// Empty before any failure. Owned by the library: valid until the next
/// failing `upcase_*` call on this thread. Never NULL.
#[no_mangle]
pub extern "C" fn upcase_last_error() -> *const c_char {
    last_error_ptr()
}

/// The library version, e.g. `"0.2.0"` (static; never NULL). Compare with
/// `UPCASE_VERSION_STRING` to check the header matches the library.
#[no_mangle]
pub extern "C" fn upcase_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast::<c_char>()
}

/// The library version as one number: `major << 16 | minor << 8 | patch`,
/// the same as `UPCASE_VERSION_HEX`.
#[no_mangle]
pub extern "C" fn upcase_version_hex() -> u32 {
    let part = |s: &str| s.parse::<u32>().unwrap_or(0);
    (part(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
        | (part(env!("CARGO_PKG_VERSION_MINOR")) << 8)
        | part(env!("CARGO_PKG_VERSION_PATCH"))
}

/// Host to network byte order, 16 bits (like `htons`): port 12000 (0x2EE0)
/// is stored with 0x2E first.
#[no_mangle]
pub extern "C" fn upcase_hton16(host: u16) -> u16 {
    endian::hton16(host)
}

/// Network to host byte order, 16 bits (like `ntohs`).
#[no_mangle]
pub extern "C" fn upcase_ntoh16(net: u16) -> u16 {
    endian::ntoh16(net)
}

/// Host to network byte order, 32 bits (like `htonl`).
#[no_mangle]
pub extern "C" fn upcase_hton32(host: u32) -> u32 {
    endian::hton32(host)
}

/// Network to host byte order, 32 bits (like `ntohl`).
#[no_mangle]
pub extern "C" fn upcase_ntoh32(net: u32) -> u32 {
    endian::ntoh32(net)
}

/// Upper-cases `len` bytes at `buf` in place: ASCII `a`-`z` become `A`-`Z`,
/// every other byte is left as it is. `buf` may be NULL when `len` is 0.
///
/// # Safety
/// `buf` must point at `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn upcase_upper(buf: *mut u8, len: usize) -> c_int {
    guard("upcase_upper", || {
        // SAFETY: the caller promises `len` writable bytes at `buf`.
        let data = unsafe { bytes_out(buf, len, "upcase_upper", "buf") }?;
        crate::upper::upper_in_place(data);
        Ok(0)
    })
}

/// Fills `*out` with an IPv4 address: `ip` in dotted form
/// (`"127.0.0.1"`), `port` in host order; both are stored in network
/// order, as the kernel wants them. `*out` is written only on success.
///
/// # Safety
/// `ip` must be NULL or a NUL-terminated string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn upcase_ip4_addr(ip: *const c_char, port: u16, out: *mut sockaddr_in) -> c_int {
    guard("upcase_ip4_addr", || {
        const F: &str = "upcase_ip4_addr";
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let text = unsafe { str_arg(ip, F, "ip") }?;
        if out.is_null() {
            return Err(Error::invalid(F, "out is NULL"));
        }
        let Some(IpPort::V4(a, _)) = parse_numeric(text) else {
            return Err(Error::invalid(F, format!("{text:?} is not a dotted IPv4 address")));
        };
        let sa = SockAddr::v4(a, port);
        // SAFETY: `sa` holds a sockaddr_in (built just above); `out` is
        // non-NULL and the caller promises it is writable.
        unsafe { *out = *sa.as_ptr().cast::<sockaddr_in>() };
        Ok(0)
    })
}

/// Fills `*out` with an IPv6 address (`"::1"`, `"fe80::1%2"` with a
/// numeric scope id). Port in host order. `*out` written only on success.
///
/// # Safety
/// `ip` must be NULL or a NUL-terminated string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn upcase_ip6_addr(ip: *const c_char, port: u16, out: *mut sockaddr_in6) -> c_int {
    guard("upcase_ip6_addr", || {
        const F: &str = "upcase_ip6_addr";
        // SAFETY: the caller promises a NUL-terminated string or NULL.
        let text = unsafe { str_arg(ip, F, "ip") }?;
        if out.is_null() {
            return Err(Error::invalid(F, "out is NULL"));
        }
        let Some(IpPort::V6(a, _, scope)) = parse_numeric(text) else {
            return Err(Error::invalid(F, format!("{text:?} is not an IPv6 address")));
        };
        let sa = SockAddr::v6(a, port, scope);
        // SAFETY: `sa` holds a sockaddr_in6; `out` is non-NULL and writable.
        unsafe { *out = *sa.as_ptr().cast::<sockaddr_in6>() };
        Ok(0)
    })
}

/// Decodes `addr` (an IPv4 or IPv6 socket address of `len` bytes) into
/// text `"127.0.0.1:12000"` or `"[::1]:12000"` in `buf` (capacity `cap`;
/// `UPCASE_ADDRSTRLEN` is always enough). An IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`) is written as plain IPv4.
///
/// # Safety
/// `addr` must point at `len` readable bytes; `buf` at `cap` writable ones.
#[no_mangle]
pub unsafe extern "C" fn upcase_addr_name(
    addr: *const sockaddr,
    len: socklen_t,
    buf: *mut c_char,
    cap: usize,
) -> c_int {
    guard("upcase_addr_name", || {
        const F: &str = "upcase_addr_name";
        // SAFETY: the caller promises `len` readable bytes at `addr`.
        let sa =
            unsafe { SockAddr::from_raw(addr, len) }.ok_or_else(|| Error::invalid(F, "addr is NULL or too long"))?;
        if sa.ip_port().is_none() {
            return Err(Error::invalid(F, format!("address family {} is not IPv4 or IPv6", sa.family())));
        }
        // SAFETY: the caller promises `cap` writable bytes at `buf`.
        unsafe { write_text(&sa.to_string(), buf, cap, F) }
    })
}

/// The port of `addr` (IPv4 or IPv6, `len` bytes) in host order, in
/// `*port`, written only on success.
///
/// # Safety
/// `addr` must point at `len` readable bytes; `port` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn upcase_addr_port(addr: *const sockaddr, len: socklen_t, port: *mut u16) -> c_int {
    guard("upcase_addr_port", || {
        const F: &str = "upcase_addr_port";
        // SAFETY: the caller promises `len` readable bytes at `addr`.
        let sa =
            unsafe { SockAddr::from_raw(addr, len) }.ok_or_else(|| Error::invalid(F, "addr is NULL or too long"))?;
        let p = match sa.ip_port() {
            Some(IpPort::V4(_, p)) | Some(IpPort::V6(_, p, _)) => p,
            None => return Err(Error::invalid(F, format!("address family {} is not IPv4 or IPv6", sa.family()))),
        };
        if port.is_null() {
            return Err(Error::invalid(F, "port is NULL"));
        }
        // SAFETY: non-NULL, and the caller promises it is writable.
        unsafe { *port = p };
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_codes_match_the_system() {
        assert_eq!(UPCASE_EINVAL, -libc::EINVAL);
        assert_eq!(UPCASE_ECONNREFUSED, -libc::ECONNREFUSED);
        assert_eq!(UPCASE_ETIMEDOUT, -libc::ETIMEDOUT);
        assert_eq!(UPCASE_ECONNRESET, -libc::ECONNRESET);
        assert_eq!(UPCASE_EADDRINUSE, -libc::EADDRINUSE);
        assert_eq!(UPCASE_EADDRNOTAVAIL, -libc::EADDRNOTAVAIL);
        assert_eq!(UPCASE_EMSGSIZE, -libc::EMSGSIZE);
        assert_eq!(UPCASE_EMFILE, -libc::EMFILE);
        assert_eq!(UPCASE_EAI_BASE, error::EAI_BASE);
        assert_eq!(UPCASE_EAI_NONAME, error::EAI_BASE + libc::EAI_NONAME);
        assert_eq!(UPCASE_EAI_AGAIN, error::EAI_BASE + libc::EAI_AGAIN);
        assert_eq!(UPCASE_ERR_BASE, error::ERR_BASE);
        assert_eq!(UPCASE_ERR_BUFFER_TOO_SMALL, error::ERR_BUFFER_TOO_SMALL);
        assert_eq!(UPCASE_ERR_SHORT_REPLY, error::ERR_SHORT_REPLY);
        assert_eq!(UPCASE_ERR_STOPPED, error::ERR_STOPPED);
        assert_eq!(UPCASE_ERR_BUSY, error::ERR_BUSY);
        assert_eq!(UPCASE_ERR_PANIC, error::ERR_PANIC);
        assert_eq!(UPCASE_ERR_PROTOCOL, error::ERR_PROTOCOL);
        assert_eq!(UPCASE_ERR_TLS, error::ERR_TLS);
        let longest = SockAddr::v6([0xFF; 16], 65535, u32::MAX).to_string();
        assert_eq!(longest, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535");
        assert!(UPCASE_ADDRSTRLEN > longest.len());
    }

    #[test]
    fn version_hex_matches_the_crate() {
        let v = upcase_version_hex();
        let text = format!("{}.{}.{}", v >> 16, (v >> 8) & 0xFF, v & 0xFF);
        assert_eq!(text, env!("CARGO_PKG_VERSION"));
    }
}
