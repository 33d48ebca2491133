//! The address and host parsing, the address structures, byte order and the
//! transform, on arbitrary bytes. Every input is used every way at once:
//!
//! - as text (lossy UTF-8): `parse_numeric` never panics, and what it
//!   accepts round-trips (formatted, with or without brackets, then parsed
//!   again to the same value); `host_port_text` writes `host:port` or
//!   `[host]:port` and the parts come back out;
//! - as address bytes and numbers: `SockAddr::v4` / `v6` store exactly the
//!   layout the kernel documents, and `ip_port`, `unmapped`, `host_string`,
//!   `Display` and `is_v4_mapped` agree with a reference decoder;
//! - as a raw `sockaddr` of the input's length (and shorter claimed
//!   lengths): `SockAddr::from_raw` copies exactly the claimed bytes (the
//!   input is an exact-size allocation, so AddressSanitizer sees any read
//!   past it), rejects lengths past `sockaddr_storage`, and decodes only an
//!   IPv4 / IPv6 family of sufficient length;
//! - as what a kernel writes through `SockAddr::try_init` (`accept4`,
//!   `recvfrom`): the reported length may exceed the storage, and is capped;
//! - as numbers for `hton16` / `ntoh16` / `hton32` / `ntoh32`, against the
//!   byte layout;
//! - as data for `upper_in_place`, against a per-byte reference.

#![no_main]

use std::io;
use std::mem::size_of;

use libc::{sockaddr, sockaddr_storage, socklen_t};
use libfuzzer_sys::fuzz_target;
use upcase::addr::{host_port_text, is_v4_mapped, parse_numeric, with_port, IpPort, SockAddr};
use upcase::endian::{hton16, hton32, ntoh16, ntoh32};
use upcase::upper::{upper, upper_in_place};
use upcase_fuzz::{addr_text, byte, decode, encode, host_text, is_mapped, upper_ref, STORAGE_LEN};

fuzz_target!(|data: &[u8]| {
    text(data);
    build(data);
    raw(data);
    kernel_fill(data);
    endian(data);
    transform(data);
});

/// The bytes of the whole storage of `sa`.
fn storage_bytes(sa: &SockAddr) -> &[u8] {
    // SAFETY: sockaddr_storage is a plain struct, fully initialised (zeroed
    // and then written) by every SockAddr constructor.
    unsafe { std::slice::from_raw_parts((sa.storage() as *const sockaddr_storage).cast::<u8>(), STORAGE_LEN) }
}

/// `ip` written as `parse_numeric` takes it back (IPv4-mapped kept IPv6).
fn numeric_text(ip: IpPort) -> String {
    match ip {
        IpPort::V4(a, _) => std::net::Ipv4Addr::from(a).to_string(),
        IpPort::V6(a, _, 0) => std::net::Ipv6Addr::from(a).to_string(),
        IpPort::V6(a, _, s) => format!("{}%{s}", std::net::Ipv6Addr::from(a)),
    }
}

/// Everything a decoded address must agree on: with the reference decoder
/// of its bytes, and its text with `parse_numeric`.
fn check_decoded(sa: &SockAddr) {
    let len = sa.len() as usize;
    assert!(len <= STORAGE_LEN);
    let want = decode(&storage_bytes(sa)[..len]);
    assert_eq!(sa.ip_port(), want, "ip_port of {:?}", &storage_bytes(sa)[..len]);
    let Some(ip) = want else {
        assert_eq!(sa.port(), 0);
        assert_eq!(sa.unmapped(), None);
        assert!(sa.host_string().starts_with("<family "), "{}", sa.host_string());
        return;
    };
    let unmapped = match ip {
        IpPort::V6(a, p, _) if is_mapped(&a) => IpPort::V4([a[12], a[13], a[14], a[15]], p),
        other => other,
    };
    assert_eq!(sa.unmapped(), Some(unmapped));
    assert_eq!(sa.host_string(), host_text(ip));
    let shown = sa.to_string();
    assert_eq!(shown, addr_text(ip));
    // The text parses back to the address it shows.
    let (host, port) = shown.rsplit_once(':').expect("host:port");
    assert_eq!(port.parse::<u16>().ok(), Some(sa.port()));
    assert_eq!(parse_numeric(host), Some(with_port(unmapped, 0)), "{shown}");
    // And the structure survives a copy through raw pointers.
    // SAFETY: `sa` holds `len` initialised bytes at `as_ptr()`.
    let copy = unsafe { SockAddr::from_raw(sa.as_ptr(), sa.len()) }.expect("a copy of a valid length");
    assert_eq!(copy.ip_port(), Some(ip));
    assert!(copy == *sa);
}

fn text(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let port = u16::from_le_bytes([byte(data, 0), byte(data, 1)]);
    // host_port_text: brackets exactly when the host has a colon.
    let hp = host_port_text(&s, port);
    let (host_part, port_part) = hp.rsplit_once(':').expect("a colon before the port");
    assert_eq!(port_part, port.to_string());
    if s.contains(':') {
        assert_eq!(host_part.strip_prefix('[').and_then(|h| h.strip_suffix(']')), Some(&*s));
    } else {
        assert_eq!(host_part, s);
    }
    let Some(ip) = parse_numeric(&s) else {
        return;
    };
    // A numeric host is decoded with port 0; the scope only for IPv6.
    assert!(matches!(ip, IpPort::V4(_, 0) | IpPort::V6(_, 0, _)), "{ip:?}");
    let again = numeric_text(ip);
    assert_eq!(parse_numeric(&again), Some(ip), "{s:?} -> {again:?}");
    assert_eq!(parse_numeric(&format!("[{again}]")), Some(ip), "{s:?} -> [{again}]");
    // host_port_text of the canonical text, split again, parses back.
    let hp = host_port_text(&again, port);
    let host = hp.rsplit_once(':').expect("host:port").0;
    assert_eq!(parse_numeric(host), Some(ip), "{hp}");
    // And the address built from it decodes to it, with the port.
    let sa = SockAddr::from_ip_port(with_port(ip, port));
    assert_eq!(sa.ip_port(), Some(with_port(ip, port)));
    check_decoded(&sa);
}

fn build(data: &[u8]) {
    let mut ip6 = [0u8; 16];
    for (i, b) in ip6.iter_mut().enumerate() {
        *b = byte(data, i);
    }
    let ip4 = [ip6[0], ip6[1], ip6[2], ip6[3]];
    let port = u16::from_le_bytes([byte(data, 16), byte(data, 17)]);
    let scope = u32::from_le_bytes([byte(data, 18), byte(data, 19), byte(data, 20), byte(data, 21)]);

    let v4 = SockAddr::v4(ip4, port);
    assert_eq!(v4.family(), libc::AF_INET);
    assert_eq!(v4.len() as usize, size_of::<libc::sockaddr_in>());
    assert!(!v4.is_empty());
    assert_eq!(v4.ip_port(), Some(IpPort::V4(ip4, port)));
    assert_eq!(v4.port(), port);
    let stored = storage_bytes(&v4);
    assert_eq!(&stored[..v4.len() as usize], &encode(IpPort::V4(ip4, port))[..], "sockaddr_in layout");
    assert!(stored[v4.len() as usize..].iter().all(|&b| b == 0), "the rest of the storage is zero");
    check_decoded(&v4);

    let v6 = SockAddr::v6(ip6, port, scope);
    assert_eq!(v6.family(), libc::AF_INET6);
    assert_eq!(v6.len() as usize, size_of::<libc::sockaddr_in6>());
    assert_eq!(v6.ip_port(), Some(IpPort::V6(ip6, port, scope)));
    assert_eq!(v6.port(), port);
    let stored = storage_bytes(&v6);
    assert_eq!(&stored[..v6.len() as usize], &encode(IpPort::V6(ip6, port, scope))[..], "sockaddr_in6 layout");
    assert!(stored[v6.len() as usize..].iter().all(|&b| b == 0), "the rest of the storage is zero");
    check_decoded(&v6);
    assert!(v4 != v6);

    assert_eq!(is_v4_mapped(&ip6), is_mapped(&ip6));
    // The same IPv4 address, as a dual-stack socket reports it.
    let mut mapped = [0u8; 16];
    mapped[10] = 0xFF;
    mapped[11] = 0xFF;
    mapped[12..].copy_from_slice(&ip4);
    assert!(is_v4_mapped(&mapped));
    let m = SockAddr::v6(mapped, port, scope);
    assert_eq!(m.unmapped(), Some(IpPort::V4(ip4, port)));
    assert_eq!(m.to_string(), v4.to_string());
    check_decoded(&m);
}

fn raw(data: &[u8]) {
    // SAFETY: a NULL pointer is refused before anything is read.
    assert!(unsafe { SockAddr::from_raw(std::ptr::null(), 16) }.is_none());
    let full = data.len();
    let l = usize::from(byte(data, 0));
    for claimed in [full, 0, 1, 2, 15, 16, 27, 28, STORAGE_LEN, l, full.saturating_sub(1)] {
        if claimed > full {
            continue; // we never claim bytes that are not there
        }
        let Ok(len) = socklen_t::try_from(claimed) else {
            continue;
        };
        // SAFETY: `data` has at least `claimed` readable bytes.
        let got = unsafe { SockAddr::from_raw(data.as_ptr().cast::<sockaddr>(), len) };
        if claimed > STORAGE_LEN {
            assert!(got.is_none(), "a length of {claimed} is more than any address");
            continue;
        }
        let sa = got.expect("any length up to sockaddr_storage is copied");
        assert_eq!(sa.len() as usize, claimed);
        let stored = storage_bytes(&sa);
        assert_eq!(&stored[..claimed], &data[..claimed], "exactly the claimed bytes are copied");
        assert!(stored[claimed..].iter().all(|&b| b == 0), "nothing past the claimed length");
        check_decoded(&sa);
    }
}

fn kernel_fill(data: &[u8]) {
    // A kernel writes what fits and reports the full length, which can be
    // more than it wrote (a cut address) or than the storage holds.
    let written = data.len().min(STORAGE_LEN);
    let reported = data.len().saturating_add(usize::from(byte(data, 1) % 4) * 64);
    let fail = byte(data, 2) == 0xEE;
    let got = SockAddr::try_init(|ptr, len| {
        assert!(!ptr.is_null() && !len.is_null());
        // SAFETY: try_init passes a live socklen_t.
        let room = unsafe { *len } as usize;
        assert_eq!(room, STORAGE_LEN, "the whole storage is offered");
        if fail {
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        // SAFETY: `ptr` has `room` writable bytes and `written <= room`;
        // `len` is a live socklen_t.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), ptr.cast::<u8>(), written);
            *len = socklen_t::try_from(reported).unwrap_or(socklen_t::MAX);
        }
        Ok(())
    });
    if fail {
        assert_eq!(got.err().and_then(|e| e.raw_os_error()), Some(libc::EAGAIN));
        return;
    }
    let sa = got.expect("the closure succeeded");
    let capped = reported.min(STORAGE_LEN);
    assert_eq!(sa.len() as usize, capped, "the length is capped at the storage");
    let mut want = vec![0u8; capped];
    let n = written.min(capped);
    want[..n].copy_from_slice(&data[..n]);
    assert_eq!(&storage_bytes(&sa)[..capped], &want[..]);
    assert_eq!(sa.ip_port(), decode(&want));
    check_decoded(&sa);
}

fn endian(data: &[u8]) {
    for chunk in data.chunks(4).take(64) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        let x16 = u16::from_ne_bytes([b[0], b[1]]);
        let x32 = u32::from_ne_bytes(b);
        // Network order is most significant byte first in memory.
        assert_eq!(hton16(x16).to_ne_bytes(), x16.to_be_bytes());
        assert_eq!(hton32(x32).to_ne_bytes(), x32.to_be_bytes());
        assert_eq!(ntoh16(u16::from_ne_bytes([b[0], b[1]])), u16::from_be_bytes([b[0], b[1]]));
        assert_eq!(ntoh32(u32::from_ne_bytes(b)), u32::from_be_bytes(b));
        assert_eq!(ntoh16(hton16(x16)), x16);
        assert_eq!(hton16(ntoh16(x16)), x16);
        assert_eq!(ntoh32(hton32(x32)), x32);
        assert_eq!(hton32(ntoh32(x32)), x32);
        assert_eq!(hton16(x16), x16.to_be());
        assert_eq!(hton32(x32), x32.to_be());
    }
}

fn transform(data: &[u8]) {
    let want = upper_ref(data);
    let got = upper(data);
    assert_eq!(got, want);
    // In place, from an arbitrary (unaligned) start.
    let skip = usize::from(byte(data, 0) % 64).min(data.len());
    let mut buf = data.to_vec();
    upper_in_place(&mut buf[skip..]);
    assert_eq!(&buf[..skip], &data[..skip], "bytes before the slice are not touched");
    assert_eq!(&buf[skip..], &want[skip..]);
    // Upper case is its own upper case.
    let mut twice = got.clone();
    upper_in_place(&mut twice);
    assert_eq!(twice, got);
}
