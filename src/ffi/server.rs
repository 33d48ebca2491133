//! The server from C: an opaque `upcase_server`, its config and stats.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;
use std::time::Duration;

use libc::c_int;

use super::{guard, str_arg, upcase_tls_server_config, write_text};
use crate::client::MAX_DATAGRAM;
use crate::error::{Error, Result};
use crate::server::{Config, Mode, Server, Transport};

/// `upcase_server_config.transport`: a byte stream.
pub const UPCASE_TRANSPORT_TCP: c_int = 0;
/// `upcase_server_config.transport`: datagrams.
pub const UPCASE_TRANSPORT_UDP: c_int = 1;
/// `upcase_server_config.mode`: many clients at once on epoll loops.
pub const UPCASE_MODE_CONCURRENT: c_int = 0;
/// `upcase_server_config.mode`: one client at a time, as in the slides.
pub const UPCASE_MODE_ITERATIVE: c_int = 1;

/// The largest `upcase_server_config.min_rate`, in bytes per second.
pub const UPCASE_MAX_MIN_RATE: u32 = 1_000_000_000;

/// The most loop threads `upcase_server_config.threads` may ask for.
pub const UPCASE_MAX_THREADS: usize = 1024;

/// Told about each client: `host` (text such as `"127.0.0.1"` or `"::1"`,
/// valid only during the call) and `port`, per TCP connection or per UDP
/// datagram, on a server thread. Keep it short; it must not call
/// `upcase_server_free`.
pub type upcase_client_cb = Option<unsafe extern "C" fn(user: *mut c_void, host: *const c_char, port: u16)>;

/// How to run a server. Fill it with `upcase_server_config_default`, then
/// change what you need. In a zeroed config, `threads`, `max_connections`,
/// `backlog` and `max_datagram` take their defaults, `port` 0 picks a free
/// port, `transport` / `mode` 0 are TCP / concurrent, and
/// `idle_timeout_ms` 0 means no idle timeout (the default is 60000),
/// `min_rate` 0 no minimum rate (the default is 1 byte/s), `tls` NULL is
/// plaintext and `tls_handshake_timeout_ms` 0 the default, 10000.
#[repr(C)]
pub struct upcase_server_config {
    /// Address to bind (copied by `upcase_server_bind`): a name, a numeric
    /// address, or `""`, `"0.0.0.0"`, `"::"` for all interfaces (`""` and
    /// `"::"` take IPv4 and IPv6). NULL means `"127.0.0.1"`, loopback only.
    pub host: *const c_char,
    /// Port in host order; 0 picks a free one (read it back with
    /// `upcase_server_port`). Default 12000.
    pub port: u16,
    /// `UPCASE_TRANSPORT_TCP` (default) or `UPCASE_TRANSPORT_UDP`.
    pub transport: c_int,
    /// `UPCASE_MODE_CONCURRENT` (default) or `UPCASE_MODE_ITERATIVE`.
    pub mode: c_int,
    /// Loop threads in concurrent mode; 0: one per CPU, of which one
    /// serves at first and the others wake as the load asks (a serving loop
    /// busy while a core is idle). N: N loops, all serving. At most
    /// `UPCASE_MAX_THREADS` (1024).
    pub threads: u32,
    /// Most TCP connections open at once; more are closed at once and
    /// counted as rejected. 0: the default, 16384.
    pub max_connections: u32,
    /// Close a TCP connection after this long without progress; 0: never.
    /// Default 60000.
    pub idle_timeout_ms: u32,
    /// `listen()` backlog; 0: the default, 1024.
    pub backlog: u32,
    /// Largest UDP datagram answered (larger ones are dropped and counted);
    /// 0: the default, 65527, the largest IP carries.
    pub max_datagram: u32,
    /// TCP: non-zero lets the kernel hold a new connection until its first
    /// bytes arrive (`TCP_DEFER_ACCEPT`): a connection that sends nothing is
    /// not seen until it does. Default 0 (off).
    pub defer_accept: c_int,
    /// Called for each client, if not NULL.
    pub on_client: upcase_client_cb,
    /// Passed to `on_client` as it is.
    pub user: *mut c_void,
    /// TCP: the least a client must send, in bytes per second on average
    /// over an idle period, to keep its connection (against slowloris: one
    /// byte just before each idle timeout). Each byte received (or sent
    /// from a reply held back while the client was not reading) earns
    /// 1/min_rate s; a connection out of credit is closed like an idle one.
    /// (Added in 0.2.0, at the end of the struct: rebuild C programs built
    /// against 0.1.)
    /// 0: off (also off without an idle timeout). Default 1. At most
    /// `UPCASE_MAX_MIN_RATE`.
    pub min_rate: u32,
    /// TCP, concurrent mode: non-zero serves on io_uring instead of epoll
    /// (one `io_uring_enter` per wake-up for every connection's `recv` and
    /// `send`). Needs Linux 6.1 or later and a process allowed to use
    /// io_uring (Docker's default seccomp profile refuses it): otherwise
    /// `upcase_server_bind` fails with the kernel's reason. Without the
    /// io-uring cargo feature (the default build), non-zero fails with
    /// `UPCASE_EINVAL` and a message that names the feature. Default 0.
    /// (Added in 0.3.0, at the end of the struct: rebuild C programs built
    /// against 0.2.)
    pub io_uring: c_int,
    /// Most TCP connections open at once from one client address (an IPv4
    /// address, or an IPv6 /64); more from it are closed at once and
    /// counted as rejected. 0: the default, 1024. `UINT32_MAX`: no limit.
    /// (Added in 0.3.0, at the end of the struct: rebuild C programs built
    /// against 0.2.)
    pub max_connections_per_address: u32,
    /// TCP: serve TLS with this config (from
    /// `upcase_tls_server_config_new`); NULL: plaintext. The server keeps
    /// its own reference: the config may be freed after
    /// `upcase_server_bind`. Not with UDP nor io_uring (`UPCASE_EINVAL`).
    /// Default NULL. (Added in 0.3.0, at the end of the struct: rebuild C
    /// programs built against 0.2.)
    pub tls: *const upcase_tls_server_config,
    /// TLS: a client that has not finished its handshake this long after
    /// it was accepted is closed (and counted in `idle_timeouts`); 0: the
    /// default, 10000. (Added in 0.3.0, at the end of the struct: rebuild
    /// C programs built against 0.2.)
    pub tls_handshake_timeout_ms: u32,
}

/// A snapshot of a server's counters.
#[repr(C)]
#[derive(Default)]
pub struct upcase_stats {
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// TCP connections open now.
    pub connections_active: u64,
    /// TCP connections refused because `max_connections` was reached.
    pub connections_rejected: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent back.
    pub bytes_out: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams answered.
    pub datagrams_out: u64,
    /// Datagrams not answered: too large; from a multicast, broadcast or
    /// unspecified address, or from port 0, a port below 1024 or our own
    /// port; an echo cut by the reply-loop rule; or a reply the kernel
    /// could not send.
    pub datagrams_dropped: u64,
    /// Failures: resets, send and accept errors.
    pub errors: u64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: u64,
}

/// A bound server (opaque). Made by `upcase_server_bind`, released by
/// `upcase_server_free`.
pub struct upcase_server {
    inner: Server,
}

/// The defaults: `"127.0.0.1"`, port 12000, TCP, concurrent, one thread per
/// CPU, 16384 connections, 60 s idle timeout, a minimum rate of 1 byte/s,
/// backlog 1024, datagrams up to 65527 bytes, no callback, plaintext (a
/// TLS handshake timeout of 10 s). NULL is ignored.
///
/// # Safety
/// `cfg` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn upcase_server_config_default(cfg: *mut upcase_server_config) {
    if cfg.is_null() {
        return;
    }
    let d = Config::default();
    // Without TLS the field means nothing; 0 is its default.
    #[cfg(feature = "tls")]
    let handshake_ms = d.tls_handshake_timeout.as_millis() as u32;
    #[cfg(not(feature = "tls"))]
    let handshake_ms = 0;
    let value = upcase_server_config {
        host: std::ptr::null(),
        port: d.port,
        transport: UPCASE_TRANSPORT_TCP,
        mode: UPCASE_MODE_CONCURRENT,
        threads: 0,
        max_connections: d.max_connections as u32,
        idle_timeout_ms: d.idle_timeout.map_or(0, |t| t.as_millis() as u32),
        backlog: d.backlog as u32,
        max_datagram: d.max_datagram as u32,
        defer_accept: 0,
        on_client: None,
        user: std::ptr::null_mut(),
        min_rate: d.min_rate,
        io_uring: 0,
        max_connections_per_address: d.max_connections_per_address as u32,
        tls: std::ptr::null(),
        tls_handshake_timeout_ms: handshake_ms,
    };
    // SAFETY: non-NULL, and the caller promises it is writable.
    unsafe { cfg.write(value) };
}

/// The user pointer, carried to the server threads.
struct UserPtr(*mut c_void);
// SAFETY: the pointer is only handed back to the caller's own callback; the
// caller is told the callback runs on server threads.
unsafe impl Send for UserPtr {}
// SAFETY: as above; we never dereference it.
unsafe impl Sync for UserPtr {}

/// Turns the C config into ours, checking every field.
///
/// # Safety
/// `c.host` must be NULL or a NUL-terminated string; `c.tls` NULL or a
/// live config from `upcase_tls_server_config_new`.
unsafe fn config_from_c(c: &upcase_server_config) -> Result<Config> {
    const F: &str = "upcase_server_bind";
    let d = Config::default();
    let host = if c.host.is_null() {
        d.host.clone()
    } else {
        // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
        unsafe { str_arg(c.host, F, "config.host") }?.to_owned()
    };
    let transport = match c.transport {
        UPCASE_TRANSPORT_TCP => Transport::Tcp,
        UPCASE_TRANSPORT_UDP => Transport::Udp,
        other => return Err(Error::invalid(F, format!("unknown transport {other} (0: TCP, 1: UDP)"))),
    };
    let mode = match c.mode {
        UPCASE_MODE_CONCURRENT => Mode::Concurrent,
        UPCASE_MODE_ITERATIVE => Mode::Iterative,
        other => return Err(Error::invalid(F, format!("unknown mode {other} (0: concurrent, 1: iterative)"))),
    };
    if c.threads > 1024 {
        return Err(Error::invalid(F, format!("threads {} is more than 1024", c.threads)));
    }
    if c.max_datagram as usize > MAX_DATAGRAM {
        return Err(Error::invalid(F, format!("max_datagram {} is more than {MAX_DATAGRAM}", c.max_datagram)));
    }
    let backlog = match c.backlog {
        0 => d.backlog,
        b => i32::try_from(b).map_err(|_| Error::invalid(F, "backlog is too large"))?,
    };
    #[cfg(feature = "tls")]
    // SAFETY: NULL or a live config, per the caller's promise.
    let tls = unsafe { c.tls.as_ref() }.map(|t| t.inner.clone());
    #[cfg(not(feature = "tls"))]
    if !c.tls.is_null() {
        return Err(Error::invalid(F, super::tls::NO_TLS));
    }
    let on_client = c.on_client.map(|cb| {
        let user = UserPtr(c.user);
        Arc::new(move |peer: &crate::addr::SockAddr| {
            let host = CString::new(peer.host_string()).unwrap_or_default();
            let user = &user;
            // SAFETY: the caller's callback, given a NUL-terminated string
            // valid for the call and the caller's own user pointer.
            unsafe { cb(user.0, host.as_ptr(), peer.port()) };
        }) as crate::server::ClientCallback
    });
    Ok(Config {
        host,
        port: c.port,
        transport,
        mode,
        threads: c.threads as usize,
        max_connections: if c.max_connections == 0 { d.max_connections } else { c.max_connections as usize },
        idle_timeout: (c.idle_timeout_ms > 0).then(|| Duration::from_millis(u64::from(c.idle_timeout_ms))),
        min_rate: c.min_rate,
        backlog,
        max_datagram: if c.max_datagram == 0 { d.max_datagram } else { c.max_datagram as usize },
        defer_accept: c.defer_accept != 0,
        io_uring: c.io_uring != 0,
        max_connections_per_address: match c.max_connections_per_address {
            0 => d.max_connections_per_address,
            u32::MAX => 0,
            n => n as usize,
        },
        on_client,
        #[cfg(feature = "tls")]
        tls,
        #[cfg(feature = "tls")]
        tls_handshake_timeout: match c.tls_handshake_timeout_ms {
            0 => d.tls_handshake_timeout,
            ms => Duration::from_millis(u64::from(ms)),
        },
    })
}

/// Creates the socket, binds it and (TCP) listens, as `cfg` says; clients
/// queue from now on, and are served once `upcase_server_run` is called.
/// On success `*out` receives the server, which the caller owns and
/// releases with `upcase_server_free`. `cfg` is not kept.
///
/// Returns 0, `UPCASE_EINVAL` (NULL, unknown transport or mode, bad
/// limits, TLS with UDP or io_uring), `UPCASE_EADDRINUSE`, a resolver code
/// for a host that does not resolve, or another OS failure.
///
/// # Safety
/// `cfg` must be NULL or a valid config whose `host` is NULL or a
/// NUL-terminated string and whose `tls` is NULL or a live config;
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn upcase_server_bind(cfg: *const upcase_server_config, out: *mut *mut upcase_server) -> c_int {
    const F: &str = "upcase_server_bind";
    guard(F, || {
        if cfg.is_null() {
            return Err(Error::invalid(F, "cfg is NULL"));
        }
        if out.is_null() {
            return Err(Error::invalid(F, "out is NULL"));
        }
        // SAFETY: non-NULL; the caller promises a valid config.
        let config = unsafe { config_from_c(&*cfg) }?;
        let inner = Server::bind(config)?;
        let boxed = Box::into_raw(Box::new(upcase_server { inner }));
        // SAFETY: non-NULL and writable per the contract.
        unsafe { *out = boxed };
        Ok(0)
    })
}

/// The bound port in host order (the one the kernel picked, for port 0), or
/// `UPCASE_EINVAL` for NULL.
///
/// # Safety
/// `server` must be NULL or a live server from `upcase_server_bind`.
#[no_mangle]
pub unsafe extern "C" fn upcase_server_port(server: *const upcase_server) -> c_int {
    guard("upcase_server_port", || {
        if server.is_null() {
            return Err(Error::invalid("upcase_server_port", "server is NULL"));
        }
        // SAFETY: non-NULL and live per the contract.
        Ok(c_int::from(unsafe { &*server }.inner.port()))
    })
}

/// The bound address as text, e.g. `"127.0.0.1:40123"` or `"[::]:12000"`,
/// into `buf` (capacity `cap`; `UPCASE_ADDRSTRLEN` is enough).
///
/// # Safety
/// `server` must be NULL or live; `buf` must point at `cap` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn upcase_server_address(server: *const upcase_server, buf: *mut c_char, cap: usize) -> c_int {
    const F: &str = "upcase_server_address";
    guard(F, || {
        if server.is_null() {
            return Err(Error::invalid(F, "server is NULL"));
        }
        // SAFETY: non-NULL and live per the contract.
        let text = unsafe { &*server }.inner.local_addr().to_string();
        // SAFETY: per the contract.
        unsafe { write_text(&text, buf, cap, F) }
    })
}

/// Serves clients on this thread (and, in concurrent mode, on `threads - 1`
/// more that it starts and joins) until `upcase_server_stop`. Returns 0
/// after a stop; `UPCASE_ERR_STOPPED` if stopped before it started,
/// `UPCASE_ERR_BUSY` if another thread is running it already.
///
/// # Safety
/// `server` must be NULL or live, and not freed while this runs.
#[no_mangle]
pub unsafe extern "C" fn upcase_server_run(server: *const upcase_server) -> c_int {
    const F: &str = "upcase_server_run";
    guard(F, || {
        if server.is_null() {
            return Err(Error::invalid(F, "server is NULL"));
        }
        // SAFETY: non-NULL and live per the contract.
        unsafe { &*server }.inner.run()?;
        Ok(0)
    })
}

/// Stops the server: `upcase_server_run` returns promptly, having closed
/// every connection. Safe from any thread and from a signal handler (it
/// only stores a flag and writes to an eventfd, and does not touch
/// `upcase_last_error`). A stopped server cannot run again. Returns 0, or
/// `UPCASE_EINVAL` for NULL.
///
/// # Safety
/// `server` must be NULL or live.
#[no_mangle]
pub unsafe extern "C" fn upcase_server_stop(server: *const upcase_server) -> c_int {
    if server.is_null() {
        return super::api::UPCASE_EINVAL;
    }
    // SAFETY: non-NULL and live per the contract. `stop` cannot panic: an
    // atomic store and a write(2) whose result is ignored.
    unsafe { &*server }.inner.stop();
    0
}

/// Copies the server's counters into `*out` (written only on success).
/// They are read one by one while the server runs, but a connection counted
/// as rejected or timed out is never also counted in `connections_active`,
/// and it is counted before the server closes it: a client that has seen
/// its connection closed finds it counted.
///
/// # Safety
/// `server` must be NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn upcase_server_stats(server: *const upcase_server, out: *mut upcase_stats) -> c_int {
    const F: &str = "upcase_server_stats";
    guard(F, || {
        if server.is_null() || out.is_null() {
            return Err(Error::invalid(F, "server or out is NULL"));
        }
        // SAFETY: non-NULL and live per the contract.
        let s = unsafe { &*server }.inner.stats();
        let value = upcase_stats {
            connections_accepted: s.connections_accepted,
            connections_active: s.connections_active,
            connections_rejected: s.connections_rejected,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            datagrams_in: s.datagrams_in,
            datagrams_out: s.datagrams_out,
            datagrams_dropped: s.datagrams_dropped,
            errors: s.errors,
            idle_timeouts: s.idle_timeouts,
        };
        // SAFETY: non-NULL and writable per the contract.
        unsafe { out.write(value) };
        Ok(0)
    })
}

/// Stops the server if needed, closes its socket and frees it. NULL is
/// ignored. Call it only after `upcase_server_run` has returned.
///
/// # Safety
/// `server` must be NULL or come from `upcase_server_bind`, not running,
/// and is not to be used again.
#[no_mangle]
pub unsafe extern "C" fn upcase_server_free(server: *mut upcase_server) {
    if server.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: from Box::into_raw in upcase_server_bind, freed once.
        drop(unsafe { Box::from_raw(server) });
    }));
}
