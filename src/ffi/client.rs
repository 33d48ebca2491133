//! The clients from C: one-shot TCP and UDP requests, and a kept-open
//! connection.

use std::ffi::c_char;
use std::time::Duration;

use libc::c_int;

use super::{bytes_arg, bytes_out, guard, str_arg};
use crate::client::{self, Connection, Options};
use crate::error::{Error, Result, ERR_BUFFER_TOO_SMALL};

/// A kept-open TCP connection (opaque), plaintext or TLS. Made by
/// `upcase_connection_new` or `upcase_tls_connection_new`, released by
/// `upcase_connection_free`.
pub struct upcase_connection {
    inner: Connection,
}

/// Copies `reply` into the caller's buffer, or reports the size needed.
///
/// # Safety
/// `out` must be NULL or point at `cap` writable bytes; `out_len` NULL or
/// writable.
unsafe fn deliver(reply: &[u8], out: *mut u8, cap: usize, out_len: *mut usize, func: &str) -> Result<c_int> {
    if reply.len() > cap {
        if !out_len.is_null() {
            // SAFETY: non-NULL, and the caller promises it is writable.
            unsafe { *out_len = reply.len() };
        }
        return Err(Error::own(
            ERR_BUFFER_TOO_SMALL,
            func,
            format!("the reply has {} bytes, the buffer holds {cap}", reply.len()),
        ));
    }
    // SAFETY: the caller promises `cap` writable bytes at `out`; no other
    // reference to them is alive now.
    let dst = unsafe { bytes_out(out, cap, func, "reply") }?;
    dst[..reply.len()].copy_from_slice(reply);
    // SAFETY: checked non-NULL by the caller of `deliver`, and writable.
    unsafe { *out_len = reply.len() };
    Ok(0)
}

fn timeout_arg(ms: u32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
}

/// Checks the common request arguments, before anything is sent.
fn check_request(port: u16, len: usize, cap: usize, out_len: *mut usize, func: &str) -> Result<()> {
    if out_len.is_null() {
        return Err(Error::invalid(func, "reply_len is NULL"));
    }
    if port == 0 {
        return Err(Error::invalid(func, "port 0 is not a valid destination"));
    }
    if cap < len {
        // The reply is as long as the request: say so before any traffic.
        // SAFETY: checked non-NULL above; the caller promises it is writable.
        unsafe { *out_len = len };
        return Err(Error::own(
            ERR_BUFFER_TOO_SMALL,
            func,
            format!("the reply will have {len} bytes, the buffer holds {cap}"),
        ));
    }
    Ok(())
}

/// One TCP exchange with `host:port`: connect (every address of `host` is
/// tried in turn), send the `len` bytes at `data`, half-close, read the
/// reply to the end, close. The reply (as long as the request) goes to
/// `reply` (capacity `reply_cap`) and its length to `*reply_len`.
///
/// `timeout_ms` bounds each wait (connecting, and every wait for progress);
/// 0 waits for ever. `reply` may be the same buffer as `data`.
///
/// Returns 0, or: `UPCASE_EINVAL` (NULL pointer, port 0),
/// `UPCASE_ERR_BUFFER_TOO_SMALL` (then `*reply_len` is the size needed),
/// `UPCASE_ECONNREFUSED`, `UPCASE_ETIMEDOUT`, a resolver code such as
/// `UPCASE_EAI_NONAME`, `UPCASE_ERR_SHORT_REPLY` (the server closed early),
/// `UPCASE_ERR_PROTOCOL` (it sent more than it was sent).
///
/// # Safety
/// `host` must be a NUL-terminated string; `data` must point at `len`
/// readable bytes and `reply` at `reply_cap` writable ones (either may be
/// NULL when its size is 0); `reply_len` must be writable.
#[no_mangle]
pub unsafe extern "C" fn upcase_tcp_request(
    host: *const c_char,
    port: u16,
    data: *const u8,
    len: usize,
    reply: *mut u8,
    reply_cap: usize,
    reply_len: *mut usize,
    timeout_ms: u32,
) -> c_int {
    const F: &str = "upcase_tcp_request";
    // SAFETY: per the function's contract.
    guard(F, || unsafe {
        tcp_request(F, || Ok(Options::new()), host, port, data, len, reply, reply_cap, reply_len, timeout_ms)
    })
}

/// The body of `upcase_tcp_request` and `upcase_tls_tcp_request`:
/// `options` gives the plaintext or TLS options, once the arguments are
/// checked.
///
/// # Safety
/// As for `upcase_tcp_request`.
#[allow(clippy::too_many_arguments)] // the C function's own arguments
pub(super) unsafe fn tcp_request(
    func: &str,
    options: impl FnOnce() -> Result<Options>,
    host: *const c_char,
    port: u16,
    data: *const u8,
    len: usize,
    reply: *mut u8,
    reply_cap: usize,
    reply_len: *mut usize,
    timeout_ms: u32,
) -> Result<c_int> {
    // SAFETY: per the function's contract.
    let host = unsafe { str_arg(host, func, "host") }?;
    // SAFETY: per the function's contract.
    let data = unsafe { bytes_arg(data, len, func, "data") }?;
    check_request(port, len, reply_cap, reply_len, func)?;
    let answer = options()?.timeout(timeout_arg(timeout_ms)).tcp_request(host, port, data)?;
    // SAFETY: per the function's contract; `data` is no longer used.
    unsafe { deliver(&answer, reply, reply_cap, reply_len, func) }
}

/// One UDP exchange with `host:port`: send the `len` bytes at `data` as
/// one datagram, wait up to `timeout_ms` (must be > 0) for the reply, send
/// again up to `retries` more times. A datagram that cannot be the reply
/// (from another address, of another length, or not the upper-cased
/// request) is ignored, and the wait goes on. Arguments and results as for
/// `upcase_tcp_request`; a request larger than a datagram can be gives
/// `UPCASE_EMSGSIZE`, no reply `UPCASE_ETIMEDOUT`.
///
/// # Safety
/// As for `upcase_tcp_request`.
#[no_mangle]
pub unsafe extern "C" fn upcase_udp_request(
    host: *const c_char,
    port: u16,
    data: *const u8,
    len: usize,
    reply: *mut u8,
    reply_cap: usize,
    reply_len: *mut usize,
    timeout_ms: u32,
    retries: u32,
) -> c_int {
    const F: &str = "upcase_udp_request";
    guard(F, || {
        // SAFETY: per the function's contract.
        let host = unsafe { str_arg(host, F, "host") }?;
        // SAFETY: per the function's contract.
        let data = unsafe { bytes_arg(data, len, F, "data") }?;
        check_request(port, len, reply_cap, reply_len, F)?;
        if timeout_ms == 0 {
            return Err(Error::invalid(F, "timeout_ms must be positive"));
        }
        let answer = client::udp_request(host, port, data, Duration::from_millis(u64::from(timeout_ms)), retries)?;
        // SAFETY: per the function's contract; `data` is no longer used.
        unsafe { deliver(&answer, reply, reply_cap, reply_len, F) }
    })
}

/// Opens a kept-open TCP connection to `host:port` (every address tried in
/// turn). `timeout_ms` bounds each wait, now and in every request; 0 waits
/// for ever. On success `*out` receives the connection, which the caller
/// owns and releases with `upcase_connection_free`.
///
/// # Safety
/// `host` must be a NUL-terminated string; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn upcase_connection_new(
    host: *const c_char,
    port: u16,
    timeout_ms: u32,
    out: *mut *mut upcase_connection,
) -> c_int {
    const F: &str = "upcase_connection_new";
    // SAFETY: per the function's contract.
    guard(F, || unsafe { connection_new(F, || Ok(Options::new()), host, port, timeout_ms, out) })
}

/// The body of `upcase_connection_new` and `upcase_tls_connection_new`.
///
/// # Safety
/// As for `upcase_connection_new`.
pub(super) unsafe fn connection_new(
    func: &str,
    options: impl FnOnce() -> Result<Options>,
    host: *const c_char,
    port: u16,
    timeout_ms: u32,
    out: *mut *mut upcase_connection,
) -> Result<c_int> {
    // SAFETY: per the function's contract.
    let host = unsafe { str_arg(host, func, "host") }?;
    if out.is_null() {
        return Err(Error::invalid(func, "out is NULL"));
    }
    if port == 0 {
        return Err(Error::invalid(func, "port 0 is not a valid destination"));
    }
    let inner = options()?.timeout(timeout_arg(timeout_ms)).connect(host, port)?;
    let boxed = Box::into_raw(Box::new(upcase_connection { inner }));
    // SAFETY: non-NULL and writable per the contract.
    unsafe { *out = boxed };
    Ok(0)
}

/// Sends the `len` bytes at `data` on the connection and reads exactly
/// `len` bytes back into `reply` (capacity `reply_cap`, at least `len`);
/// `*reply_len` receives the length. Arguments and results as for
/// `upcase_tcp_request`, or `upcase_tls_tcp_request` on a TLS connection.
/// After a failure the connection's state is unknown: free it and open a
/// new one.
///
/// # Safety
/// `conn` must come from `upcase_connection_new` or
/// `upcase_tls_connection_new` and not be freed; the
/// buffers as for `upcase_tcp_request`. Not for two threads at once.
#[no_mangle]
pub unsafe extern "C" fn upcase_connection_request(
    conn: *mut upcase_connection,
    data: *const u8,
    len: usize,
    reply: *mut u8,
    reply_cap: usize,
    reply_len: *mut usize,
) -> c_int {
    const F: &str = "upcase_connection_request";
    guard(F, || {
        if conn.is_null() {
            return Err(Error::invalid(F, "conn is NULL"));
        }
        // SAFETY: non-NULL, from a `_new` call, used by one thread.
        let conn = unsafe { &mut *conn };
        // SAFETY: per the function's contract.
        let data = unsafe { bytes_arg(data, len, F, "data") }?;
        if reply_len.is_null() {
            return Err(Error::invalid(F, "reply_len is NULL"));
        }
        check_request(conn.inner.peer().port(), len, reply_cap, reply_len, F)?;
        let answer = conn.inner.request(data)?;
        // SAFETY: per the function's contract; `data` is no longer used.
        unsafe { deliver(&answer, reply, reply_cap, reply_len, F) }
    })
}

/// Closes the connection (a TLS one sends its `close_notify` first) and
/// frees it. NULL is ignored.
///
/// # Safety
/// `conn` must be NULL or come from `upcase_connection_new` or
/// `upcase_tls_connection_new`, and is not to be used again.
#[no_mangle]
pub unsafe extern "C" fn upcase_connection_free(conn: *mut upcase_connection) {
    if conn.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: from Box::into_raw in upcase_connection_new, freed once.
        let boxed = unsafe { Box::from_raw(conn) };
        boxed.inner.close();
    }));
}
