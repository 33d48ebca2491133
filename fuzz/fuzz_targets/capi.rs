//! The C API's argument handling: the `extern "C"` `upcase_*` functions
//! called straight from Rust, as a C program would, with arguments taken
//! from the input: NULL or valid pointers, buffers of any stated length
//! (too small included), any integers for codes, modes, transports and
//! limits, strings with and without interior NUL bytes.
//!
//! Every call must return a status (never crash), write nothing past the
//! length it was given (each buffer is followed by guard bytes, and the
//! inputs are exact-size allocations that AddressSanitizer watches), write
//! an out-parameter only on success, and agree with what the header
//! documents. Descriptors must not leak: each server op counts them before
//! and after, and the count is watched across inputs too.
//!
//! Traffic stays on loopback, and no name is ever resolved:
//! - servers bind only `127.0.0.1`, `::1` (plain or bracketed) or the
//!   default (NULL, loopback), always on port 0;
//! - requests with an arbitrary host are made only when the library must
//!   refuse them before any traffic (port 0, or a reply buffer smaller than
//!   the request), and a numeric host that is not loopback is replaced by
//!   `127.0.0.1` even then;
//! - real requests go only to a server this target started on 127.0.0.1
//!   (or to `::1`, where nothing of ours listens), with short timeouts, and
//!   that server is stopped and freed before the op ends;
//! - `getaddrinfo` is replaced in this binary by a function that aborts: any
//!   attempt to resolve a name is a crash with the name in the report.
//!
//! The input is a list of ops, read with [`upcase_fuzz::Input`] (missing
//! bytes read as zero): an op byte (taken modulo the number of ops), then
//! the op's fields, in the order each `op_*` function reads them.

#![no_main]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use libc::{sockaddr, sockaddr_in, sockaddr_in6, socklen_t};
use libfuzzer_sys::fuzz_target;
use upcase::addr::{parse_numeric, IpPort};
use upcase::client::MAX_DATAGRAM;
use upcase::ffi::*;
use upcase::server::MAX_MIN_RATE;
use upcase_fuzz::{
    addr_text, decode, encode, fd_count, upper_ref, FdWatch, Guarded, GuardedBytes, Input, PATTERN, STORAGE_LEN,
};

/// Most ops run per input.
const MAX_OPS: usize = 32;

static FDS: Mutex<FdWatch> = Mutex::new(FdWatch::new(512, 32));

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut live_done = false;
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 12 {
            0 => op_ip4(&mut input),
            1 => op_ip6(&mut input),
            2 => op_addr_name(&mut input),
            3 => op_addr_port(&mut input),
            4 => op_codes(&mut input),
            5 => op_upper(&mut input),
            6 => op_endian(&mut input),
            7 => op_config_default(&mut input),
            8 => op_bind(&mut input),
            9 => {
                // One real exchange per input at most: each costs a server.
                let skip = live_done;
                live_done = true;
                op_live(&mut input, skip)
            }
            10 => op_refused_requests(&mut input),
            _ => op_nulls(&mut input),
        }
    }
    FDS.lock().unwrap_or_else(|e| e.into_inner()).tick();
});

/// Name resolution would send queries to the network: this binary has
/// none. Every path the target takes uses numeric hosts, which the library
/// decodes itself; reaching this is a bug in the target or the library.
///
/// # Safety
/// Called by C code with `getaddrinfo`'s arguments; only `node` is read,
/// and only when it is not NULL (a NUL-terminated string, per the contract).
#[no_mangle]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    _service: *const c_char,
    _hints: *const libc::addrinfo,
    _res: *mut *mut libc::addrinfo,
) -> c_int {
    let name = if node.is_null() {
        "(NULL)".to_owned()
    } else {
        // SAFETY: non-NULL, and getaddrinfo's contract says NUL-terminated.
        unsafe { CStr::from_ptr(node) }.to_string_lossy().into_owned()
    };
    eprintln!("capi fuzz target: getaddrinfo({name:?}) was called; no name may be resolved here");
    std::process::abort();
}

/// A C string for the library: `bytes` then a NUL, in an exact-size
/// allocation (the library reads up to the first NUL, which may be inside
/// `bytes`).
fn c_string(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.extend_from_slice(bytes);
    v.push(0);
    v
}

/// What the library sees of a C string: the bytes up to the first NUL, as
/// UTF-8 if they are.
fn c_view(bytes: &[u8]) -> Option<&str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).ok()
}

/// After a failing call that goes through the guard, the thread's message
/// is there and not empty.
fn check_last_error(rc: c_int, func: &str) {
    let p = upcase_last_error();
    assert!(!p.is_null(), "{func}: upcase_last_error is NULL");
    // SAFETY: documented as a valid NUL-terminated string, never NULL.
    let msg = unsafe { CStr::from_ptr(p) };
    if rc < 0 {
        assert!(!msg.to_bytes().is_empty(), "{func} failed with {rc} and left no message");
    }
}

/// The status must be one of `allowed`.
fn expect_in(rc: c_int, allowed: &[c_int], what: &str) {
    assert!(allowed.contains(&rc), "{what}: status {rc} ({}), expected one of {allowed:?}", name_of(rc));
}

fn name_of(rc: c_int) -> String {
    // SAFETY: upcase_errname returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(upcase_errname(rc)) }.to_string_lossy().into_owned()
}

// ---- addresses -------------------------------------------------------------

/// flags (bit 0: ip NULL, bit 1: out NULL), port, text.
fn op_ip4(input: &mut Input<'_>) {
    let flags = input.u8();
    let port = input.u16();
    let text = input.blob();
    let c = c_string(text);
    let ip = if flags & 1 != 0 { std::ptr::null() } else { c.as_ptr().cast::<c_char>() };
    let mut out = Guarded::<sockaddr_in>::new();
    let out_ptr = if flags & 2 != 0 { std::ptr::null_mut() } else { out.as_mut_ptr() };
    // SAFETY: ip is NULL or a NUL-terminated string; out is NULL or a
    // writable sockaddr_in.
    let rc = unsafe { upcase_ip4_addr(ip, port, out_ptr) };
    out.check_guard("upcase_ip4_addr");
    check_last_error(rc, "upcase_ip4_addr");
    let parsed = c_view(text).and_then(parse_numeric);
    match parsed {
        Some(IpPort::V4(a, _)) if !ip.is_null() && !out_ptr.is_null() => {
            assert_eq!(rc, UPCASE_OK, "upcase_ip4_addr({text:?})");
            assert_eq!(out.value_bytes(), &encode(IpPort::V4(a, port))[..], "sockaddr_in layout");
        }
        _ => {
            assert_eq!(rc, UPCASE_EINVAL, "upcase_ip4_addr({text:?}, NULL flags {flags:#x})");
            assert!(out.untouched(), "upcase_ip4_addr wrote its output on failure");
        }
    }
}

/// flags (bit 0: ip NULL, bit 1: out NULL), port, text.
fn op_ip6(input: &mut Input<'_>) {
    let flags = input.u8();
    let port = input.u16();
    let text = input.blob();
    let c = c_string(text);
    let ip = if flags & 1 != 0 { std::ptr::null() } else { c.as_ptr().cast::<c_char>() };
    let mut out = Guarded::<sockaddr_in6>::new();
    let out_ptr = if flags & 2 != 0 { std::ptr::null_mut() } else { out.as_mut_ptr() };
    // SAFETY: ip is NULL or a NUL-terminated string; out is NULL or a
    // writable sockaddr_in6.
    let rc = unsafe { upcase_ip6_addr(ip, port, out_ptr) };
    out.check_guard("upcase_ip6_addr");
    check_last_error(rc, "upcase_ip6_addr");
    let parsed = c_view(text).and_then(parse_numeric);
    match parsed {
        Some(IpPort::V6(a, _, scope)) if !ip.is_null() && !out_ptr.is_null() => {
            assert_eq!(rc, UPCASE_OK, "upcase_ip6_addr({text:?})");
            assert_eq!(out.value_bytes(), &encode(IpPort::V6(a, port, scope))[..], "sockaddr_in6 layout");
        }
        _ => {
            assert_eq!(rc, UPCASE_EINVAL, "upcase_ip6_addr({text:?}, NULL flags {flags:#x})");
            assert!(out.untouched(), "upcase_ip6_addr wrote its output on failure");
        }
    }
}

/// The address argument of `upcase_addr_name` / `upcase_addr_port`: the
/// bytes in an exact-size allocation and the length claimed for them
/// (never more than there are), or NULL with any length.
fn raw_addr(flags: u8, len_byte: u8, bytes: &[u8]) -> (Vec<u8>, bool, socklen_t, &[u8]) {
    let owned = bytes.to_vec();
    if flags & 1 != 0 {
        // NULL, with a length that may be anything.
        return (owned, true, socklen_t::from(len_byte) * 3, &[]);
    }
    let len = if flags & 2 != 0 { bytes.len() } else { usize::from(len_byte) % (bytes.len() + 1) };
    (owned, false, len as socklen_t, &bytes[..len])
}

/// flags (bit 0: addr NULL, bit 1: honest length, bit 2: buf NULL, bit 3:
/// a large capacity), length byte, capacity byte, address bytes.
fn op_addr_name(input: &mut Input<'_>) {
    let flags = input.u8();
    let len_byte = input.u8();
    let cap_byte = input.u8();
    let bytes = input.blob();
    let (owned, addr_null, len, meaningful) = raw_addr(flags, len_byte, bytes);
    let addr = if addr_null { std::ptr::null() } else { owned.as_ptr().cast::<sockaddr>() };
    let cap = if flags & 8 != 0 { usize::from(cap_byte) * 4 } else { usize::from(cap_byte) % 72 };
    let mut buf = GuardedBytes::new(cap);
    let buf_ptr = if flags & 4 != 0 { std::ptr::null_mut() } else { buf.as_mut_ptr().cast::<c_char>() };
    // SAFETY: addr is NULL or has `len` readable bytes; buf is NULL or has
    // `cap` writable bytes.
    let rc = unsafe { upcase_addr_name(addr, len, buf_ptr, cap) };
    buf.check_guard("upcase_addr_name");
    check_last_error(rc, "upcase_addr_name");
    let decoded = if addr_null || len as usize > STORAGE_LEN { None } else { decode(meaningful) };
    let Some(ip) = decoded else {
        assert_eq!(rc, UPCASE_EINVAL, "upcase_addr_name of {meaningful:?} (NULL: {addr_null})");
        assert!(buf.bytes().iter().all(|&b| b == PATTERN), "written on failure");
        return;
    };
    let text = addr_text(ip);
    assert!(text.len() < UPCASE_ADDRSTRLEN, "{text} does not fit UPCASE_ADDRSTRLEN");
    if buf_ptr.is_null() || cap == 0 {
        assert_eq!(rc, UPCASE_EINVAL, "upcase_addr_name into NULL / capacity 0");
    } else if text.len() + 1 > cap {
        assert_eq!(rc, UPCASE_ERR_BUFFER_TOO_SMALL, "upcase_addr_name of {text} into {cap} bytes");
        assert!(buf.bytes().iter().all(|&b| b == PATTERN), "written although too small");
    } else {
        assert_eq!(rc, UPCASE_OK, "upcase_addr_name of {text} into {cap} bytes");
        let b = buf.bytes();
        assert_eq!(&b[..text.len()], text.as_bytes());
        assert_eq!(b[text.len()], 0, "NUL-terminated");
        assert!(b[text.len() + 1..].iter().all(|&x| x == PATTERN), "nothing written after the NUL");
    }
}

/// flags (bit 0: addr NULL, bit 1: honest length, bit 2: port NULL),
/// length byte, address bytes.
fn op_addr_port(input: &mut Input<'_>) {
    let flags = input.u8();
    let len_byte = input.u8();
    let bytes = input.blob();
    let (owned, addr_null, len, meaningful) = raw_addr(flags, len_byte, bytes);
    let addr = if addr_null { std::ptr::null() } else { owned.as_ptr().cast::<sockaddr>() };
    let mut out = Guarded::<u16>::new();
    let out_ptr = if flags & 4 != 0 { std::ptr::null_mut() } else { out.as_mut_ptr() };
    // SAFETY: addr is NULL or has `len` readable bytes; out is NULL or a
    // writable u16.
    let rc = unsafe { upcase_addr_port(addr, len, out_ptr) };
    out.check_guard("upcase_addr_port");
    check_last_error(rc, "upcase_addr_port");
    let decoded = if addr_null || len as usize > STORAGE_LEN { None } else { decode(meaningful) };
    match decoded {
        Some(IpPort::V4(_, p)) | Some(IpPort::V6(_, p, _)) if !out_ptr.is_null() => {
            assert_eq!(rc, UPCASE_OK);
            // SAFETY: success: a u16 was written.
            assert_eq!(unsafe { out.read() }, p);
        }
        _ => {
            assert_eq!(rc, UPCASE_EINVAL, "upcase_addr_port of {meaningful:?}");
            assert!(out.untouched(), "written on failure");
        }
    }
}

// ---- codes, the transform, byte order ---------------------------------------

/// code.
fn op_codes(input: &mut Input<'_>) {
    let code = input.i32();
    for c in [code, code.wrapping_abs().wrapping_neg(), code % 5000, code & 0xFF] {
        let (s, n) = (upcase_strerror(c), upcase_errname(c));
        assert!(!s.is_null() && !n.is_null());
        assert_eq!(s, upcase_strerror(c), "static: the same pointer every time");
        assert_eq!(n, upcase_errname(c));
        // SAFETY: both are documented as static NUL-terminated strings.
        let (s, n) = unsafe { (CStr::from_ptr(s), CStr::from_ptr(n)) };
        let (s, n) = (s.to_str().expect("UTF-8"), n.to_str().expect("UTF-8"));
        assert!(!s.is_empty());
        assert!(n.starts_with("UPCASE_"), "{n}");
        assert_eq!(s == "unknown error", n == "UPCASE_UNKNOWN", "code {c}: {n} / {s}");
        if c > 0 {
            assert_eq!(n, "UPCASE_UNKNOWN", "status codes are never positive");
        }
    }
    // SAFETY: documented as a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(upcase_version()) };
    assert_eq!(version.to_str(), Ok(upcase::VERSION));
}

/// flags (bit 0: buf NULL, bit 1: honest length), length byte, length for
/// NULL, data.
fn op_upper(input: &mut Input<'_>) {
    let flags = input.u8();
    let len_byte = input.u8();
    let null_len = input.u16();
    let data = input.blob();
    if flags & 1 != 0 {
        let len = usize::from(null_len);
        // SAFETY: NULL is allowed for length 0 and refused otherwise.
        let rc = unsafe { upcase_upper(std::ptr::null_mut(), len) };
        check_last_error(rc, "upcase_upper");
        assert_eq!(rc, if len == 0 { UPCASE_OK } else { UPCASE_EINVAL }, "upcase_upper(NULL, {len})");
        return;
    }
    let len = if flags & 2 != 0 { data.len() } else { usize::from(len_byte) % (data.len() + 1) };
    let mut buf = GuardedBytes::with(data);
    // SAFETY: `buf` has data.len() >= len writable bytes.
    let rc = unsafe { upcase_upper(buf.as_mut_ptr(), len) };
    buf.check_guard("upcase_upper");
    assert_eq!(rc, UPCASE_OK);
    assert_eq!(&buf.bytes()[..len], &upper_ref(&data[..len])[..]);
    assert_eq!(&buf.bytes()[len..], &data[len..], "nothing past the length is touched");
}

/// a 16-bit and a 32-bit number.
fn op_endian(input: &mut Input<'_>) {
    let x16 = input.u16();
    let x32 = input.u32();
    assert_eq!(upcase_hton16(x16).to_ne_bytes(), x16.to_be_bytes());
    assert_eq!(upcase_hton32(x32).to_ne_bytes(), x32.to_be_bytes());
    assert_eq!(upcase_ntoh16(upcase_hton16(x16)), x16);
    assert_eq!(upcase_ntoh32(upcase_hton32(x32)), x32);
    assert_eq!(upcase_ntoh16(x16), u16::from_be_bytes(x16.to_ne_bytes()));
    assert_eq!(upcase_ntoh32(x32), u32::from_be_bytes(x32.to_ne_bytes()));
    let v = upcase_version_hex();
    assert_eq!(upcase_hton32(v), v.to_be());
}

// ---- servers ----------------------------------------------------------------

/// flags (bit 0: NULL).
fn op_config_default(input: &mut Input<'_>) {
    let flags = input.u8();
    if flags & 1 != 0 {
        // SAFETY: NULL is ignored.
        unsafe { upcase_server_config_default(std::ptr::null_mut()) };
        return;
    }
    let mut cfg = Guarded::<upcase_server_config>::new();
    // SAFETY: a writable config.
    unsafe { upcase_server_config_default(cfg.as_mut_ptr()) };
    cfg.check_guard("upcase_server_config_default");
    // SAFETY: the function wrote a whole config.
    let c = unsafe { cfg.read() };
    assert!(c.host.is_null());
    assert_eq!(
        (c.port, c.transport, c.mode, c.threads, c.max_connections, c.idle_timeout_ms),
        (12000, UPCASE_TRANSPORT_TCP, UPCASE_MODE_CONCURRENT, 0, 16384, 60000)
    );
    assert_eq!((c.backlog, c.max_datagram, c.defer_accept, c.min_rate), (1024, MAX_DATAGRAM as u32, 0, 1));
    assert!(c.on_client.is_none() && c.user.is_null());
}

/// The hosts a server may bind here: loopback, the default (NULL, which is
/// loopback), and strings the library must refuse without resolving.
const BIND_HOSTS: &[Option<&[u8]>] =
    &[None, Some(b"127.0.0.1"), Some(b"::1"), Some(b"[::1]"), Some(b"\xff\xfe"), Some(b"127.0.0.1\0::junk")];

/// Counts calls of the client callback; `user` points at one.
unsafe extern "C" fn count_clients(user: *mut c_void, host: *const c_char, port: u16) {
    assert!(!host.is_null() && port != 0);
    // SAFETY: the library passes a NUL-terminated string valid for the call.
    let host = unsafe { CStr::from_ptr(host) };
    assert!(matches!(host.to_bytes(), b"127.0.0.1" | b"::1"), "client from {host:?}");
    // SAFETY: `user` is the address of an AtomicUsize that outlives the server.
    unsafe { &*user.cast::<AtomicUsize>() }.fetch_add(1, Ordering::Relaxed);
}

/// Never called: the servers of `op_bind` never run with clients.
unsafe extern "C" fn never_called(_user: *mut c_void, _host: *const c_char, _port: u16) {
    panic!("on_client called for a server that never served anyone");
}

/// A raw pointer that crosses to the thread that runs the server.
struct SendPtr(*mut upcase_server);
// SAFETY: the server is documented as usable from any thread (run on one,
// stop from another); the pointer stays valid until after the join.
unsafe impl Send for SendPtr {}

/// flags, which fields to set, host index, then transport, mode, threads,
/// max_connections, idle_timeout_ms, backlog, max_datagram, defer_accept,
/// min_rate, the address buffer capacity, the user pointer.
///
/// flags: bit 0 cfg NULL, bit 1 out NULL, bit 2 start from the defaults
/// (else from zero), bit 3 a callback, bit 4 stop then run (must refuse),
/// bit 5 stop twice, bit 6 address into NULL, bit 7 stats into NULL.
fn op_bind(input: &mut Input<'_>) {
    let flags = input.u8();
    let fields = input.u8();
    let host = BIND_HOSTS[usize::from(input.u8()) % BIND_HOSTS.len()];
    let (transport, mode, threads) = (input.i32(), input.i32(), input.u32());
    let (max_connections, idle, backlog, max_datagram) = (input.u32(), input.u32(), input.u32(), input.u32());
    let (defer, min_rate) = (input.i32(), input.u32());
    let cap = usize::from(input.u8());
    let user = input.u32() as usize as *mut c_void;

    let host_c = host.map(c_string);
    let mut cfg = Guarded::<upcase_server_config>::new();
    if flags & 4 != 0 {
        // SAFETY: a writable config.
        unsafe { upcase_server_config_default(cfg.as_mut_ptr()) };
    } else {
        // SAFETY: all-zero bytes are a valid config (NULL pointers, no
        // callback, zero numbers), as the header describes.
        unsafe { cfg.as_mut_ptr().write(std::mem::zeroed()) };
    }
    {
        // SAFETY: initialised just above; no other reference to it exists.
        let c = unsafe { &mut *cfg.as_mut_ptr() };
        c.host = host_c.as_ref().map_or(std::ptr::null(), |h| h.as_ptr().cast::<c_char>());
        c.port = 0; // only ever a free port
        if fields & 1 != 0 {
            c.transport = transport;
            c.mode = mode;
        } else {
            c.transport = transport & 1;
            c.mode = mode & 1;
        }
        if fields & 2 != 0 {
            c.threads = threads;
        } else {
            c.threads = threads % 3;
        }
        if fields & 4 != 0 {
            c.max_connections = max_connections;
            c.idle_timeout_ms = idle;
        }
        if fields & 8 != 0 {
            c.backlog = backlog;
        }
        if fields & 16 != 0 {
            c.max_datagram = max_datagram;
        }
        if fields & 32 != 0 {
            c.defer_accept = defer;
        }
        if fields & 64 != 0 {
            c.min_rate = min_rate;
        }
        if flags & 8 != 0 {
            c.on_client = Some(never_called);
            c.user = user;
        }
    }
    // SAFETY: initialised above.
    let c = unsafe { &*cfg.as_mut_ptr() };
    let invalid = flags & 3 != 0
        || host.is_some_and(|h| c_view(h).is_none())
        || !matches!(c.transport, UPCASE_TRANSPORT_TCP | UPCASE_TRANSPORT_UDP)
        || !matches!(c.mode, UPCASE_MODE_CONCURRENT | UPCASE_MODE_ITERATIVE)
        || c.threads > 1024
        || c.max_datagram as usize > MAX_DATAGRAM
        || c.backlog > i32::MAX as u32
        || c.min_rate > MAX_MIN_RATE;
    // UDP in concurrent mode opens a socket per thread: leave room for them.
    let fds_before = fd_count();

    let mut out = Guarded::<*mut upcase_server>::new();
    let cfg_ptr = if flags & 1 != 0 { std::ptr::null() } else { cfg.as_mut_ptr().cast_const() };
    let out_ptr = if flags & 2 != 0 { std::ptr::null_mut() } else { out.as_mut_ptr() };
    // SAFETY: cfg is NULL or a valid config whose host is NULL or
    // NUL-terminated; out is NULL or writable.
    let rc = unsafe { upcase_server_bind(cfg_ptr, out_ptr) };
    out.check_guard("upcase_server_bind");
    check_last_error(rc, "upcase_server_bind");
    drop(host_c); // the config is not kept: the host may go now
    if invalid {
        assert_eq!(rc, UPCASE_EINVAL, "upcase_server_bind accepted an invalid config (flags {flags:#x})");
    }
    if rc != UPCASE_OK {
        expect_in(
            rc,
            &[UPCASE_EINVAL, UPCASE_EADDRNOTAVAIL, -libc::EAFNOSUPPORT, UPCASE_EMFILE, -libc::ENFILE, -libc::ENOMEM],
            "upcase_server_bind",
        );
        assert!(out.untouched(), "upcase_server_bind wrote its output on failure");
        assert_eq!(fd_count(), fds_before, "a failed bind leaked descriptors");
        return;
    }
    // SAFETY: success: a server pointer was written.
    let server = unsafe { out.read() };
    assert!(!server.is_null());

    // SAFETY: `server` is live until upcase_server_free below.
    let port = unsafe { upcase_server_port(server) };
    assert!((1..=65535).contains(&port), "port {port}");
    let want = match host.and_then(c_view) {
        None | Some("127.0.0.1") => format!("127.0.0.1:{port}"),
        Some(_) => format!("[::1]:{port}"),
    };
    let mut buf = GuardedBytes::new(cap);
    let buf_ptr = if flags & 64 != 0 { std::ptr::null_mut() } else { buf.as_mut_ptr().cast::<c_char>() };
    // SAFETY: live server; buf NULL or `cap` writable bytes.
    let rc = unsafe { upcase_server_address(server, buf_ptr, cap) };
    buf.check_guard("upcase_server_address");
    if buf_ptr.is_null() || cap == 0 {
        assert_eq!(rc, UPCASE_EINVAL);
    } else if want.len() + 1 > cap {
        assert_eq!(rc, UPCASE_ERR_BUFFER_TOO_SMALL);
        assert!(buf.bytes().iter().all(|&b| b == PATTERN));
    } else {
        assert_eq!(rc, UPCASE_OK);
        assert_eq!(&buf.bytes()[..want.len() + 1], c_string(want.as_bytes()).as_slice());
    }

    let mut stats = Guarded::<upcase_stats>::new();
    let stats_ptr = if flags & 128 != 0 { std::ptr::null_mut() } else { stats.as_mut_ptr() };
    // SAFETY: live server; stats NULL or writable.
    let rc = unsafe { upcase_server_stats(server, stats_ptr) };
    stats.check_guard("upcase_server_stats");
    if stats_ptr.is_null() {
        assert_eq!(rc, UPCASE_EINVAL);
        assert!(stats.untouched());
    } else {
        assert_eq!(rc, UPCASE_OK);
        assert!(stats.value_bytes().iter().all(|&b| b == 0), "a server that never ran has counted nothing");
    }

    if flags & 16 != 0 {
        // SAFETY: live server.
        assert_eq!(unsafe { upcase_server_stop(server) }, UPCASE_OK);
        if flags & 32 != 0 {
            // SAFETY: live server.
            assert_eq!(unsafe { upcase_server_stop(server) }, UPCASE_OK);
        }
        // SAFETY: live server; stopped, so run returns at once.
        assert_eq!(unsafe { upcase_server_run(server) }, UPCASE_ERR_STOPPED);
    }
    // SAFETY: from upcase_server_bind, not running, not used again.
    unsafe { upcase_server_free(server) };
    assert_eq!(fd_count(), fds_before, "a bound and freed server leaked descriptors");
}

/// The hosts of real requests: where our server listens, where nothing
/// of ours does, and the bracketed form.
const LIVE_HOSTS: &[&[u8]] = &[b"127.0.0.1", b"::1", b"[127.0.0.1]"];

/// flags, host index, timeout, retries, capacity shift, big length, data.
///
/// flags: bit 0 UDP, bit 1 iterative, bit 2 a kept-open connection (TCP),
/// bit 3 the reply into the request's own buffer, bit 4 reply_len NULL,
/// bit 5 port 0, bit 6 big data, bit 7 a client callback.
fn op_live(input: &mut Input<'_>, skip: bool) {
    let flags = input.u8();
    let host = LIVE_HOSTS[usize::from(input.u8()) % LIVE_HOSTS.len()];
    let timeout_raw = input.u16();
    let retries = u32::from(input.u8() % 2);
    let cap_shift = input.u8() % 8;
    let big = input.u16();
    let blob = input.blob();
    if skip {
        return;
    }
    let udp = flags & 1 != 0;
    let data: Vec<u8> = if flags & 64 != 0 {
        let n = 60_000 + usize::from(big) % 8_000; // around the datagram limit
        blob.iter().copied().chain(std::iter::repeat(b'x')).take(n).collect()
    } else {
        blob.to_vec()
    };
    let len = data.len();
    let cap = (len + usize::from(cap_shift)).saturating_sub(4);
    let timeout_ms = if udp { 1 + u32::from(timeout_raw) % 200 } else { 1 + u32::from(timeout_raw) % 1000 };

    let fds_before = fd_count();
    let clients = AtomicUsize::new(0);
    // SAFETY: all-zero bytes are a valid config; then every field we need.
    let mut cfg: upcase_server_config = unsafe { std::mem::zeroed() };
    // SAFETY: a writable config.
    unsafe { upcase_server_config_default(&mut cfg) };
    cfg.port = 0;
    cfg.transport = if udp { UPCASE_TRANSPORT_UDP } else { UPCASE_TRANSPORT_TCP };
    cfg.mode = if flags & 2 != 0 { UPCASE_MODE_ITERATIVE } else { UPCASE_MODE_CONCURRENT };
    cfg.threads = 1;
    cfg.idle_timeout_ms = 2000;
    if flags & 128 != 0 {
        cfg.on_client = Some(count_clients);
        cfg.user = (&clients as *const AtomicUsize).cast_mut().cast::<c_void>();
    }
    let mut server: *mut upcase_server = std::ptr::null_mut();
    // SAFETY: a valid config (host NULL: loopback) and a writable out.
    let rc = unsafe { upcase_server_bind(&cfg, &mut server) };
    if rc != UPCASE_OK {
        expect_in(rc, &[UPCASE_EMFILE, -libc::ENFILE], "bind a loopback server");
        return;
    }
    // SAFETY: live server.
    let port = u16::try_from(unsafe { upcase_server_port(server) }).expect("a port");
    let runner = {
        let s = SendPtr(server);
        std::thread::spawn(move || {
            let s = s;
            // SAFETY: live until after this thread is joined.
            unsafe { upcase_server_run(s.0) }
        })
    };

    let dest_port = if flags & 32 != 0 { 0 } else { port };
    // Whether a request with bytes in it was answered (and so its client
    // seen by the server).
    let mut served = false;
    let host_c = c_string(host);
    let ok_reply = |rc: c_int, reply: &GuardedBytes, reply_len: usize, what: &str| {
        if rc == UPCASE_OK {
            assert_eq!(reply_len, len, "{what}: reply length");
            assert_eq!(&reply.bytes()[..len], &upper_ref(&data)[..], "{what}: reply bytes");
        }
    };
    if flags & 4 != 0 && !udp {
        // A kept-open connection: two requests, the second with the
        // first's buffer sizes.
        let mut conn: *mut upcase_connection = std::ptr::null_mut();
        // SAFETY: NUL-terminated host, writable out.
        let rc = unsafe { upcase_connection_new(host_c.as_ptr().cast(), dest_port, timeout_ms, &mut conn) };
        check_last_error(rc, "upcase_connection_new");
        if rc == UPCASE_OK {
            assert!(!conn.is_null());
            for _ in 0..2 {
                let mut reply = GuardedBytes::new(cap);
                let mut reply_len = usize::MAX;
                let rl: *mut usize = if flags & 16 != 0 { std::ptr::null_mut() } else { &mut reply_len };
                // SAFETY: live connection; data has `len` bytes, reply `cap`.
                let rc = unsafe { upcase_connection_request(conn, data.as_ptr(), len, reply.as_mut_ptr(), cap, rl) };
                reply.check_guard("upcase_connection_request");
                check_last_error(rc, "upcase_connection_request");
                if rl.is_null() {
                    assert_eq!(rc, UPCASE_EINVAL);
                } else if cap < len {
                    assert_eq!((rc, reply_len), (UPCASE_ERR_BUFFER_TOO_SMALL, len));
                } else {
                    expect_in(rc, &[UPCASE_OK, UPCASE_ETIMEDOUT, -libc::ENOTCONN], "upcase_connection_request");
                    ok_reply(rc, &reply, reply_len, "upcase_connection_request");
                    served |= rc == UPCASE_OK && len > 0;
                }
            }
            // SAFETY: from upcase_connection_new, not used again.
            unsafe { upcase_connection_free(conn) };
        } else if dest_port == 0 {
            assert_eq!(rc, UPCASE_EINVAL);
            assert!(conn.is_null(), "written on failure");
        } else {
            expect_in(
                rc,
                &[UPCASE_ECONNREFUSED, UPCASE_ETIMEDOUT, UPCASE_EADDRNOTAVAIL, -libc::ENETUNREACH, -libc::EAFNOSUPPORT],
                "upcase_connection_new",
            );
        }
    } else {
        // One request; the reply may go into the request's own buffer.
        let same = flags & 8 != 0 && cap >= len;
        let mut reply = if same { GuardedBytes::with(&data) } else { GuardedBytes::new(cap) };
        let reply_cap = if same { len } else { cap };
        let mut reply_len = usize::MAX;
        let rl: *mut usize = if flags & 16 != 0 { std::ptr::null_mut() } else { &mut reply_len };
        let data_ptr = if same { reply.as_mut_ptr().cast_const() } else { data.as_ptr() };
        let rc = if udp {
            // SAFETY: NUL-terminated host; `len` bytes at data_ptr (which
            // may be the reply buffer: documented as allowed); reply_cap
            // bytes at the reply; rl NULL or writable.
            unsafe {
                upcase_udp_request(
                    host_c.as_ptr().cast(),
                    dest_port,
                    data_ptr,
                    len,
                    reply.as_mut_ptr(),
                    reply_cap,
                    rl,
                    timeout_ms,
                    retries,
                )
            }
        } else {
            // SAFETY: as above.
            unsafe {
                upcase_tcp_request(
                    host_c.as_ptr().cast(),
                    dest_port,
                    data_ptr,
                    len,
                    reply.as_mut_ptr(),
                    reply_cap,
                    rl,
                    timeout_ms,
                )
            }
        };
        let what = if udp { "upcase_udp_request" } else { "upcase_tcp_request" };
        reply.check_guard(what);
        check_last_error(rc, what);
        if rl.is_null() || dest_port == 0 {
            assert_eq!(rc, UPCASE_EINVAL, "{what}");
        } else if reply_cap < len {
            assert_eq!((rc, reply_len), (UPCASE_ERR_BUFFER_TOO_SMALL, len), "{what}");
        } else if udp && len > MAX_DATAGRAM {
            assert_eq!(rc, UPCASE_EMSGSIZE, "{what} of {len} bytes");
        } else if host == b"::1" {
            expect_in(
                rc,
                &[UPCASE_ECONNREFUSED, UPCASE_ETIMEDOUT, UPCASE_EADDRNOTAVAIL, -libc::ENETUNREACH, -libc::EAFNOSUPPORT],
                what,
            );
        } else {
            // Our own server answers everything it is sent, except a
            // datagram larger than IPv4 carries (65,507 bytes).
            let allowed: &[c_int] =
                if udp { &[UPCASE_OK, UPCASE_ETIMEDOUT, UPCASE_EMSGSIZE] } else { &[UPCASE_OK, UPCASE_ETIMEDOUT] };
            expect_in(rc, allowed, what);
            ok_reply(rc, &reply, reply_len, what);
            served |= rc == UPCASE_OK && len > 0;
            if rc == UPCASE_OK && !same {
                assert!(reply.bytes()[len..].iter().all(|&b| b == PATTERN), "{what}: written past the reply");
            }
        }
    }

    // SAFETY: live server; stop is safe from any thread.
    assert_eq!(unsafe { upcase_server_stop(server) }, UPCASE_OK);
    let ran = runner.join().expect("the server thread returns");
    expect_in(ran, &[UPCASE_OK, UPCASE_ERR_STOPPED], "upcase_server_run after a stop");
    if flags & 128 != 0 && served {
        assert!(clients.load(Ordering::Relaxed) >= 1, "on_client was not told about the client");
    }
    let mut stats = upcase_stats::default();
    // SAFETY: live server, writable out.
    assert_eq!(unsafe { upcase_server_stats(server, &mut stats) }, UPCASE_OK);
    assert!(
        stats.bytes_out <= stats.bytes_in,
        "more sent back than received: {} > {}",
        stats.bytes_out,
        stats.bytes_in
    );
    // SAFETY: from upcase_server_bind, no longer running, not used again.
    unsafe { upcase_server_free(server) };
    assert_eq!(fd_count(), fds_before, "a server that served a request leaked descriptors");
}

/// Replaces a numeric host that is not loopback by `127.0.0.1` (the bytes
/// after a NUL are kept: the library does not see them). The requests
/// these hosts go to are refused before any traffic anyway; this keeps
/// even a regression in that order on this machine.
fn loopback_only(host: &[u8]) -> Vec<u8> {
    let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
    let loopback = match c_view(host).and_then(parse_numeric) {
        None => true,
        Some(IpPort::V4(a, _)) => a[0] == 127,
        Some(IpPort::V6(a, _, _)) => {
            std::net::Ipv6Addr::from(a).is_loopback()
                || std::net::Ipv6Addr::from(a).to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    if loopback {
        return host.to_vec();
    }
    let mut v = b"127.0.0.1".to_vec();
    v.extend_from_slice(&host[end..]);
    v
}

/// flags, port, length byte, capacity byte, timeout, retries, host, data.
///
/// flags: bit 0 UDP, bit 1 a kept-open connection instead, bit 2 host
/// NULL, bit 3 data NULL, bit 4 reply NULL, bit 5 reply_len NULL, bit 6 a
/// large length. The port is 0 unless the reply buffer is too small: then
/// the library must refuse before sending anything.
fn op_refused_requests(input: &mut Input<'_>) {
    let flags = input.u8();
    let port_in = input.u16();
    let len_byte = input.u8();
    let cap_byte = input.u8();
    let timeout = input.u32();
    let retries = input.u32();
    let host_raw = input.blob();
    let data = input.blob();
    let host = c_string(&loopback_only(host_raw));
    let host_ptr = if flags & 4 != 0 { std::ptr::null() } else { host.as_ptr().cast::<c_char>() };
    let host_ok = !host_ptr.is_null() && c_view(&host).is_some();

    if flags & 2 != 0 {
        let mut conn = Guarded::<*mut upcase_connection>::new();
        let out = if flags & 16 != 0 { std::ptr::null_mut() } else { conn.as_mut_ptr() };
        // SAFETY: host NULL or NUL-terminated; out NULL or writable. Port 0:
        // refused before connecting.
        let rc = unsafe { upcase_connection_new(host_ptr, 0, timeout, out) };
        conn.check_guard("upcase_connection_new");
        check_last_error(rc, "upcase_connection_new");
        assert_eq!(rc, UPCASE_EINVAL, "upcase_connection_new to port 0");
        assert!(conn.untouched());
        return;
    }
    let big: Vec<u8>;
    let (len, data_ptr): (usize, *const u8) = if flags & 8 != 0 {
        (usize::from(len_byte) * 1000, std::ptr::null())
    } else if flags & 64 != 0 {
        // More than any datagram carries.
        big = vec![b'q'; MAX_DATAGRAM + 1 + usize::from(len_byte)];
        (big.len(), big.as_ptr())
    } else {
        (data.len(), data.as_ptr())
    };
    let cap = usize::from(cap_byte) % (len + 1); // at most len
    let port = if cap < len { port_in } else { 0 };
    let mut reply = GuardedBytes::new(cap);
    let reply_ptr = if flags & 16 != 0 { std::ptr::null_mut() } else { reply.as_mut_ptr() };
    let mut reply_len = Guarded::<usize>::new();
    let rl = if flags & 32 != 0 { std::ptr::null_mut() } else { reply_len.as_mut_ptr() };
    let udp = flags & 1 != 0;
    let rc = if udp {
        // SAFETY: host NULL or NUL-terminated; data NULL or `len` readable
        // bytes; reply NULL or `cap` writable bytes; rl NULL or writable.
        unsafe { upcase_udp_request(host_ptr, port, data_ptr, len, reply_ptr, cap, rl, timeout, retries) }
    } else {
        // SAFETY: as above.
        unsafe { upcase_tcp_request(host_ptr, port, data_ptr, len, reply_ptr, cap, rl, timeout) }
    };
    let what = if udp { "upcase_udp_request" } else { "upcase_tcp_request" };
    reply.check_guard(what);
    reply_len.check_guard(what);
    check_last_error(rc, what);
    assert!(reply.bytes().iter().all(|&b| b == PATTERN), "{what}: reply written without a request");
    let args_ok = host_ok && !(data_ptr.is_null() && len > 0) && !rl.is_null() && port != 0;
    if args_ok {
        assert!(cap < len);
        assert_eq!(rc, UPCASE_ERR_BUFFER_TOO_SMALL, "{what}");
        // SAFETY: reported written with the size needed.
        assert_eq!(unsafe { reply_len.read() }, len);
    } else {
        assert_eq!(rc, UPCASE_EINVAL, "{what}");
        assert!(reply_len.untouched());
    }
}

/// Every function that takes an object, given NULL.
fn op_nulls(input: &mut Input<'_>) {
    let cap = usize::from(input.u8());
    let mut buf = GuardedBytes::new(cap);
    let mut stats = Guarded::<upcase_stats>::new();
    let mut reply_len = 0usize;
    // SAFETY: NULL objects are refused; the buffers are writable.
    unsafe {
        assert_eq!(upcase_server_port(std::ptr::null()), UPCASE_EINVAL);
        assert_eq!(upcase_server_address(std::ptr::null(), buf.as_mut_ptr().cast(), cap), UPCASE_EINVAL);
        assert_eq!(upcase_server_run(std::ptr::null()), UPCASE_EINVAL);
        assert_eq!(upcase_server_stop(std::ptr::null()), UPCASE_EINVAL);
        assert_eq!(upcase_server_stats(std::ptr::null(), stats.as_mut_ptr()), UPCASE_EINVAL);
        upcase_server_free(std::ptr::null_mut());
        assert_eq!(upcase_server_bind(std::ptr::null(), std::ptr::null_mut()), UPCASE_EINVAL);
        let r =
            upcase_connection_request(std::ptr::null_mut(), b"x".as_ptr(), 1, buf.as_mut_ptr(), cap, &mut reply_len);
        assert_eq!(r, UPCASE_EINVAL);
        upcase_connection_free(std::ptr::null_mut());
        upcase_server_config_default(std::ptr::null_mut());
    }
    assert_eq!(reply_len, 0);
    buf.check_guard("NULL calls");
    assert!(buf.bytes().iter().all(|&b| b == PATTERN) && stats.untouched());
}
