//! TLS from C: configuration objects built once from PEM files, in the
//! manner of rustls-ffi, and the TLS variants of the TCP client calls.
//!
//! A configuration object is immutable and shared: a server or connection
//! made from it keeps its own reference, so the caller may free it as soon
//! as `upcase_server_bind` or the client call has returned. In a build
//! without the cargo feature `tls` every call here fails with
//! `UPCASE_EINVAL` and a message that names the feature.

use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
#[cfg(feature = "tls")]
use std::sync::Arc;

use libc::c_int;

use super::client::{connection_new, tcp_request, upcase_connection};
use super::{guard, str_arg};
use crate::client::Options;
use crate::error::{Error, Result};

/// What a TLS server presents, and which client certificates it requires
/// (opaque). Made by `upcase_tls_server_config_new`, released by
/// `upcase_tls_server_config_free`; used by `upcase_server_config.tls`.
pub struct upcase_tls_server_config {
    #[cfg(feature = "tls")]
    pub(super) inner: Arc<crate::tls::TlsServer>,
}

/// What a TLS client trusts, the name it checks, and the certificate it
/// presents if asked (opaque). Made by `upcase_tls_client_config_new`,
/// released by `upcase_tls_client_config_free`; used by
/// `upcase_tls_tcp_request` and `upcase_tls_connection_new`.
pub struct upcase_tls_client_config {
    #[cfg(feature = "tls")]
    inner: Arc<crate::tls::TlsClient>,
}

/// What a TLS call says in a build without TLS.
#[cfg(not(feature = "tls"))]
pub(super) const NO_TLS: &str =
    "TLS was asked for, but this build of upcase has no TLS (build it with the cargo feature tls)";

/// A file name argument: NULL is `None`; any bytes but NUL, as Linux
/// allows in paths.
///
/// # Safety
/// `p` must be NULL or point at a NUL-terminated string that stays valid
/// for `'a`.
unsafe fn path_arg<'a>(p: *const c_char, func: &str, name: &str) -> Result<Option<&'a Path>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid(func, format!("{name} is empty")));
    }
    Ok(Some(Path::new(OsStr::from_bytes(bytes))))
}

/// A file name argument that must be given.
///
/// # Safety
/// As for `path_arg`.
unsafe fn required_path<'a>(p: *const c_char, func: &str, name: &str) -> Result<&'a Path> {
    // SAFETY: forwarded from the caller.
    unsafe { path_arg(p, func, name) }?.ok_or_else(|| Error::invalid(func, format!("{name} is NULL")))
}

/// Loads a server's certificate chain (`cert_chain_pem_path`: PEM, leaf
/// first) and its private key (`key_pem_path`: PEM, PKCS#8, SEC1 or RSA).
/// With `client_ca_pem_path` (PEM CA certificates), every client must
/// present a certificate signed by one of them (mutual TLS); NULL asks for
/// none. TLS 1.3 and 1.2, session resumption on. On success `*out`
/// receives the config, which the caller owns and releases with
/// `upcase_tls_server_config_free`.
///
/// Returns 0, or: `UPCASE_EINVAL` (NULL or empty path, a file that holds
/// no certificate or key, bad PEM, a key that does not match the
/// certificate), `-ENOENT`, `-EACCES` and other OS codes for a file that
/// cannot be read. `upcase_last_error()` names the file and the reason.
///
/// # Safety
/// Each path must be NULL or a NUL-terminated string; `out` must be
/// writable.
#[no_mangle]
pub unsafe extern "C" fn upcase_tls_server_config_new(
    cert_chain_pem_path: *const c_char,
    key_pem_path: *const c_char,
    client_ca_pem_path: *const c_char,
    out: *mut *mut upcase_tls_server_config,
) -> c_int {
    const F: &str = "upcase_tls_server_config_new";
    guard(F, || {
        // SAFETY: per the function's contract.
        let cert = unsafe { required_path(cert_chain_pem_path, F, "cert_chain_pem_path") }?;
        // SAFETY: per the function's contract.
        let key = unsafe { required_path(key_pem_path, F, "key_pem_path") }?;
        // SAFETY: per the function's contract.
        let client_ca = unsafe { path_arg(client_ca_pem_path, F, "client_ca_pem_path") }?;
        if out.is_null() {
            return Err(Error::invalid(F, "out is NULL"));
        }
        let config = server_config(cert, key, client_ca, F)?;
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *out = Box::into_raw(Box::new(config)) };
        Ok(0)
    })
}

/// Frees a server TLS config. A server bound with it keeps its own
/// reference, so this may come right after `upcase_server_bind`. NULL is
/// ignored.
///
/// # Safety
/// `config` must be NULL or come from `upcase_tls_server_config_new`, and
/// is not to be used again.
#[no_mangle]
pub unsafe extern "C" fn upcase_tls_server_config_free(config: *mut upcase_tls_server_config) {
    if config.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: from Box::into_raw in upcase_tls_server_config_new, freed
        // once.
        drop(unsafe { Box::from_raw(config) });
    }));
}

/// Builds what a TLS client trusts and presents. `ca_pem_path`: the CA
/// certificates (PEM) the server's certificate must chain to; NULL: the
/// system's trust store (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else the
/// distribution's bundle). `server_name`: the DNS name or IP address the
/// server's certificate must name, sent as SNI; NULL: the host connected
/// to. `cert_pem_path` and `key_pem_path`: a certificate chain and its key
/// (PEM) presented to a server that asks for one; both NULL or both set.
/// On success `*out` receives the config, which the caller owns and
/// releases with `upcase_tls_client_config_free`. A session is resumed
/// when a later call with the same config reaches the same server.
///
/// Returns 0, or: `UPCASE_EINVAL` (one of cert and key without the other,
/// a bad server name, a file that holds no certificate or key, bad PEM, no
/// CA in the system's store), `-ENOENT`, `-EACCES` and other OS codes for
/// a file that cannot be read. `upcase_last_error()` names the file and
/// the reason.
///
/// # Safety
/// Each string must be NULL or NUL-terminated; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn upcase_tls_client_config_new(
    ca_pem_path: *const c_char,
    server_name: *const c_char,
    cert_pem_path: *const c_char,
    key_pem_path: *const c_char,
    out: *mut *mut upcase_tls_client_config,
) -> c_int {
    const F: &str = "upcase_tls_client_config_new";
    guard(F, || {
        // SAFETY: per the function's contract.
        let ca = unsafe { path_arg(ca_pem_path, F, "ca_pem_path") }?;
        let name = match server_name.is_null() {
            true => None,
            // SAFETY: non-NULL, and the contract promises a NUL-terminated string.
            false => Some(unsafe { str_arg(server_name, F, "server_name") }?.to_owned()),
        };
        // SAFETY: per the function's contract.
        let cert = unsafe { path_arg(cert_pem_path, F, "cert_pem_path") }?;
        // SAFETY: per the function's contract.
        let key = unsafe { path_arg(key_pem_path, F, "key_pem_path") }?;
        let client_cert = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => return Err(Error::invalid(F, "cert_pem_path is set but key_pem_path is NULL")),
            (None, Some(_)) => return Err(Error::invalid(F, "key_pem_path is set but cert_pem_path is NULL")),
        };
        if out.is_null() {
            return Err(Error::invalid(F, "out is NULL"));
        }
        let config = client_config(ca, name, client_cert, F)?;
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *out = Box::into_raw(Box::new(config)) };
        Ok(0)
    })
}

/// Frees a client TLS config. Connections opened with it keep their own
/// reference. NULL is ignored.
///
/// # Safety
/// `config` must be NULL or come from `upcase_tls_client_config_new`, and
/// is not to be used again.
#[no_mangle]
pub unsafe extern "C" fn upcase_tls_client_config_free(config: *mut upcase_tls_client_config) {
    if config.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: from Box::into_raw in upcase_tls_client_config_new, freed
        // once.
        drop(unsafe { Box::from_raw(config) });
    }));
}

/// The client options for TLS as `tls` says.
///
/// # Safety
/// `tls` must be NULL or a live config from `upcase_tls_client_config_new`.
#[cfg(feature = "tls")]
unsafe fn tls_options(tls: *const upcase_tls_client_config, func: &str) -> Result<Options> {
    if tls.is_null() {
        return Err(Error::invalid(func, "tls is NULL"));
    }
    // SAFETY: non-NULL and live per the contract.
    let tls = unsafe { &*tls };
    Ok(Options::new().tls(Some(tls.inner.clone())))
}

/// Without TLS: refused, naming the feature.
///
/// # Safety
/// As in the TLS build.
#[cfg(not(feature = "tls"))]
unsafe fn tls_options(tls: *const upcase_tls_client_config, func: &str) -> Result<Options> {
    if tls.is_null() {
        return Err(Error::invalid(func, "tls is NULL"));
    }
    Err(Error::invalid(func, NO_TLS))
}

#[cfg(feature = "tls")]
fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>, _: &str) -> Result<upcase_tls_server_config> {
    Ok(upcase_tls_server_config { inner: Arc::new(crate::tls::TlsServer::from_pem(cert, key, client_ca)?) })
}

#[cfg(not(feature = "tls"))]
fn server_config(_: &Path, _: &Path, _: Option<&Path>, func: &str) -> Result<upcase_tls_server_config> {
    Err(Error::invalid(func, NO_TLS))
}

#[cfg(feature = "tls")]
fn client_config(
    ca: Option<&Path>,
    name: Option<String>,
    client_cert: Option<(&Path, &Path)>,
    _: &str,
) -> Result<upcase_tls_client_config> {
    Ok(upcase_tls_client_config { inner: Arc::new(crate::tls::TlsClient::new(ca, name, client_cert)?) })
}

#[cfg(not(feature = "tls"))]
fn client_config(
    _: Option<&Path>,
    _: Option<String>,
    _: Option<(&Path, &Path)>,
    func: &str,
) -> Result<upcase_tls_client_config> {
    Err(Error::invalid(func, NO_TLS))
}

/// `upcase_tcp_request` inside TLS, as `tls` says: connect, handshake
/// (the server's certificate checked), send the `len` bytes at `data`,
/// send `close_notify`, read the reply to the server's `close_notify`,
/// close. Arguments and results as for `upcase_tcp_request`; `timeout_ms`
/// also bounds the whole handshake. Also `UPCASE_ERR_TLS`: a certificate
/// not trusted or not for this name, a handshake refused, a server that
/// does not speak TLS; `upcase_last_error()` says which.
///
/// # Safety
/// `tls` must be NULL or a live config from `upcase_tls_client_config_new`;
/// the rest as for `upcase_tcp_request`.
#[no_mangle]
pub unsafe extern "C" fn upcase_tls_tcp_request(
    tls: *const upcase_tls_client_config,
    host: *const c_char,
    port: u16,
    data: *const u8,
    len: usize,
    reply: *mut u8,
    reply_cap: usize,
    reply_len: *mut usize,
    timeout_ms: u32,
) -> c_int {
    const F: &str = "upcase_tls_tcp_request";
    guard(F, || {
        // SAFETY: per the function's contract.
        let options = || unsafe { tls_options(tls, F) };
        // SAFETY: per the function's contract.
        unsafe { tcp_request(F, options, host, port, data, len, reply, reply_cap, reply_len, timeout_ms) }
    })
}

/// `upcase_connection_new` inside TLS, as `tls` says: connects and
/// completes the handshake before it returns. Requests go through
/// `upcase_connection_request` and `upcase_connection_free` closes, as on
/// a plaintext connection. Results as for `upcase_tls_tcp_request`.
///
/// # Safety
/// `tls` must be NULL or a live config from `upcase_tls_client_config_new`;
/// the rest as for `upcase_connection_new`.
#[no_mangle]
pub unsafe extern "C" fn upcase_tls_connection_new(
    tls: *const upcase_tls_client_config,
    host: *const c_char,
    port: u16,
    timeout_ms: u32,
    out: *mut *mut upcase_connection,
) -> c_int {
    const F: &str = "upcase_tls_connection_new";
    guard(F, || {
        // SAFETY: per the function's contract.
        let options = || unsafe { tls_options(tls, F) };
        // SAFETY: per the function's contract.
        unsafe { connection_new(F, options, host, port, timeout_ms, out) }
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    use super::*;
    use crate::ffi::{upcase_last_error, UPCASE_EINVAL};

    fn last_error() -> String {
        // SAFETY: upcase_last_error never returns NULL, and the text stays
        // valid until the next failing call on this thread.
        unsafe { CStr::from_ptr(upcase_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn one_of_cert_and_key_is_refused_before_any_file_is_read() {
        let mut out: *mut upcase_tls_client_config = std::ptr::null_mut();
        // SAFETY: NUL-terminated strings, NULLs, and a writable out.
        let rc = unsafe {
            upcase_tls_client_config_new(
                std::ptr::null(),
                std::ptr::null(),
                c"c.pem".as_ptr(),
                std::ptr::null(),
                &mut out,
            )
        };
        assert_eq!(rc, UPCASE_EINVAL);
        assert!(last_error().contains("key_pem_path is NULL"), "{}", last_error());
        assert!(out.is_null());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_missing_file_is_named() {
        let mut out: *mut upcase_tls_server_config = std::ptr::null_mut();
        // SAFETY: NUL-terminated strings, a NULL, and a writable out.
        let rc = unsafe {
            upcase_tls_server_config_new(c"/nonexistent/c.pem".as_ptr(), c"k.pem".as_ptr(), std::ptr::null(), &mut out)
        };
        assert_eq!(rc, -libc::ENOENT);
        assert!(last_error().contains("/nonexistent/c.pem"), "{}", last_error());
        assert!(out.is_null());
    }

    /// Without the feature, every TLS call fails and names it; a server
    /// config that asks for TLS does too.
    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_tls_every_call_names_the_feature() {
        let mut server: *mut upcase_tls_server_config = std::ptr::null_mut();
        let mut client: *mut upcase_tls_client_config = std::ptr::null_mut();
        // SAFETY: NUL-terminated strings, NULLs, and writable outs.
        let rc = unsafe {
            upcase_tls_server_config_new(c"c.pem".as_ptr(), c"k.pem".as_ptr(), std::ptr::null(), &mut server)
        };
        assert_eq!((rc, server.is_null()), (UPCASE_EINVAL, true));
        assert!(last_error().contains("cargo feature tls"), "{}", last_error());
        // SAFETY: as above.
        let rc = unsafe {
            upcase_tls_client_config_new(
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                std::ptr::null(),
                &mut client,
            )
        };
        assert_eq!((rc, client.is_null()), (UPCASE_EINVAL, true));
        assert!(last_error().contains("cargo feature tls"), "{}", last_error());

        let fake = std::ptr::NonNull::<upcase_tls_server_config>::dangling().as_ptr();
        let mut cfg = std::mem::MaybeUninit::uninit();
        // SAFETY: a writable config.
        unsafe { crate::ffi::upcase_server_config_default(cfg.as_mut_ptr()) };
        // SAFETY: written just above.
        let mut cfg = unsafe { cfg.assume_init() };
        cfg.tls = fake;
        let mut srv = std::ptr::null_mut();
        // SAFETY: a valid config; its tls pointer is refused before it is read.
        let rc = unsafe { crate::ffi::upcase_server_bind(&cfg, &mut srv) };
        assert_eq!((rc, srv.is_null()), (UPCASE_EINVAL, true));
        assert!(last_error().contains("cargo feature tls"), "{}", last_error());
    }
}
