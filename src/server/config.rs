//! How to run a server: [`Config`], its defaults, and the checks `bind`
//! makes before it opens a socket.

use std::sync::Arc;
use std::time::Duration;

use crate::addr::SockAddr;
use crate::error::{Error, Result};
use crate::MAX_DATAGRAM;

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A byte stream: every byte comes back, in order, upper-cased.
    Tcp,
    /// Datagrams: one in, one back to the sender.
    Udp,
}

/// How clients are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Many clients at once: one `epoll` loop per thread.
    Concurrent,
    /// The slides' server: one client at a time.
    Iterative,
}

/// The most loop threads a server runs. The C header has it as
/// `UPCASE_MAX_THREADS`.
pub const MAX_THREADS: usize = 1024;

/// The largest `min_rate` (bytes per second): one byte then earns 1 ns.
/// The C header has it as `UPCASE_MAX_MIN_RATE`.
pub const MAX_MIN_RATE: u32 = 1_000_000_000;

#[cfg(all(test, feature = "capi"))]
#[test]
fn the_c_limits_are_the_rust_ones() {
    assert_eq!(crate::ffi::UPCASE_MAX_MIN_RATE, MAX_MIN_RATE);
    assert_eq!(crate::ffi::UPCASE_MAX_THREADS, MAX_THREADS);
}

/// Called with each client's address: per connection (TCP) or per datagram
/// (UDP), on the loop's thread. Keep it short.
pub type ClientCallback = Arc<dyn Fn(&SockAddr) + Send + Sync>;

/// What `bind` says when io_uring is asked for in a build without it.
#[cfg(not(feature = "io-uring"))]
const NO_IO_URING: &str =
    "io_uring was asked for, but this build of upcase has no io_uring loop (build it with the cargo feature io-uring)";

/// What `bind` says when TLS is asked of the io_uring loop.
#[cfg(feature = "tls")]
const NO_TLS_URING: &str = "TLS is not served on io_uring: turn io_uring off (the epoll loop serves TLS)";

/// How to run a server.
#[derive(Clone)]
pub struct Config {
    /// Address to bind: a name, a numeric address, or `""`, `"0.0.0.0"`,
    /// `"::"` for all interfaces (`""` and `"::"` are dual-stack where IPv6
    /// exists). Default `127.0.0.1`: the library binds loopback unless told
    /// otherwise.
    pub host: String,
    /// Port; 0 lets the kernel pick a free one. Default 12000.
    pub port: u16,
    /// TCP (default) or UDP.
    pub transport: Transport,
    /// Concurrent (default) or iterative.
    pub mode: Mode,
    /// Loop threads in concurrent mode. 0 (the default): one per CPU, of
    /// which one serves at first and the others wake when a serving loop is
    /// busy while the machine has an idle core. A number: that many loops,
    /// all serving from the start.
    pub threads: usize,
    /// Most TCP connections open at once; more are accepted and closed at
    /// once, and counted as rejected. Default 16,384 (the descriptor limit,
    /// not this, is usually what bounds a process).
    pub max_connections: usize,
    /// Most TCP connections open at once from one client address (an IPv4
    /// address, or an IPv6 /64); more from it are accepted and closed at
    /// once, and counted as rejected, while other addresses are served.
    /// 0: no limit. Default 1,024: a sixteenth of the default cap, room for
    /// many users behind one NAT (see SECURITY.md).
    pub max_connections_per_address: usize,
    /// A TCP connection with no progress for this long is closed. `None`
    /// never closes one. Default 60 s.
    pub idle_timeout: Option<Duration>,
    /// TCP: the least a client must send, in bytes per second on average,
    /// to keep its connection (slowloris: one byte just before each idle
    /// timeout would otherwise hold it for ever). Each byte received (or
    /// sent from a reply held back while the client was not reading) earns
    /// `1 / min_rate` seconds, on top of one idle period granted at accept,
    /// and credit never runs more than one idle period ahead; a connection
    /// out of credit is closed like an idle one. Measured against the idle
    /// timeout, so off without one; 0 turns it off. Default 1 byte/s: a
    /// typed line of 30 characters buys 30 s.
    pub min_rate: u32,
    /// `listen()` backlog. Default 1024 (the kernel caps it at somaxconn).
    pub backlog: i32,
    /// Largest UDP datagram answered; a larger one is dropped and counted.
    /// Default 65,527 (the largest any IP version carries).
    pub max_datagram: usize,
    /// TCP: let the kernel hold a new connection until its first bytes
    /// arrive (`TCP_DEFER_ACCEPT`), so `accept` always finds a request to
    /// serve at once. A client that connects and sends nothing is then not
    /// seen (not accepted, counted, or told about) until it sends, or until
    /// the kernel gives up waiting (after about the idle timeout). Default
    /// off.
    pub defer_accept: bool,
    /// TCP, concurrent mode: serve on io_uring instead of epoll (one
    /// `io_uring_enter` per wake-up for every connection's `recv` and
    /// `send`, where epoll makes a system call for each). Needs Linux 6.1
    /// or later and a process allowed to use io_uring (Docker's default
    /// seccomp profile refuses it): otherwise `bind` fails and says so.
    /// The loop is built only with the cargo feature `io-uring`; without
    /// it, `bind` refuses `io_uring` with a message that says so.
    /// Default off.
    pub io_uring: bool,
    /// Told about each client, if set.
    pub on_client: Option<ClientCallback>,
    /// TCP: serve TLS with this certificate (feature `tls`), on epoll or
    /// iteratively; the io_uring loop refuses it. Default none: plaintext.
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<crate::tls::TlsServer>>,
    /// TLS: a client that has not finished its handshake this long after
    /// it was accepted is closed (and counted as idle). Default 10 s.
    #[cfg(feature = "tls")]
    pub tls_handshake_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            host: "127.0.0.1".into(),
            port: 12000,
            transport: Transport::Tcp,
            mode: Mode::Concurrent,
            threads: 0,
            max_connections: 16_384,
            max_connections_per_address: 1024,
            idle_timeout: Some(Duration::from_secs(60)),
            min_rate: 1,
            backlog: 1024,
            max_datagram: MAX_DATAGRAM,
            defer_accept: false,
            io_uring: false,
            on_client: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("Config");
        f.field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("mode", &self.mode)
            .field("threads", &self.threads)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_address", &self.max_connections_per_address)
            .field("idle_timeout", &self.idle_timeout)
            .field("min_rate", &self.min_rate)
            .field("backlog", &self.backlog)
            .field("max_datagram", &self.max_datagram)
            .field("defer_accept", &self.defer_accept)
            .field("io_uring", &self.io_uring)
            .field("on_client", &self.on_client.is_some());
        #[cfg(feature = "tls")]
        f.field("tls", &self.tls).field("tls_handshake_timeout", &self.tls_handshake_timeout);
        f.finish()
    }
}

impl Config {
    /// Refuses a configuration no server can run with, saying which field
    /// is wrong and why.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.threads > MAX_THREADS {
            return Err(Error::invalid("server config", format!("threads must be at most {MAX_THREADS}")));
        }
        if self.max_connections == 0 {
            return Err(Error::invalid("server config", "max_connections must be at least 1"));
        }
        if self.max_datagram == 0 || self.max_datagram > MAX_DATAGRAM {
            return Err(Error::invalid("server config", format!("max_datagram must be 1 to {MAX_DATAGRAM}")));
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return Err(Error::invalid("server config", "idle_timeout must be positive (or none)"));
        }
        if self.min_rate > MAX_MIN_RATE {
            return Err(Error::invalid("server config", format!("min_rate must be at most {MAX_MIN_RATE} bytes/s")));
        }
        if self.backlog < 1 {
            return Err(Error::invalid("server config", "backlog must be at least 1"));
        }
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            if self.transport != Transport::Tcp {
                return Err(Error::invalid("server config", "TLS serves only TCP"));
            }
            if self.io_uring {
                return Err(Error::invalid("server config", NO_TLS_URING));
            }
            if self.tls_handshake_timeout.is_zero() {
                return Err(Error::invalid("server config", "tls_handshake_timeout must be positive"));
            }
        }
        if self.io_uring {
            if self.transport != Transport::Tcp || self.mode != Mode::Concurrent {
                return Err(Error::invalid("server config", "io_uring serves only the concurrent TCP server"));
            }
            #[cfg(feature = "io-uring")]
            crate::sys::uring::probe().map_err(|e| Error::os("io_uring_setup (io_uring was asked for)", e))?;
            #[cfg(not(feature = "io-uring"))]
            return Err(Error::invalid("server config", NO_IO_URING));
        }
        Ok(())
    }
}
