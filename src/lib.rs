//! # upcase
//!
//! The textbook socket example done properly: a client sends a line, the
//! server sends it back in upper case, over TCP and UDP, on raw `libc`
//! socket calls with byte order and address structures handled by our own
//! code.
//!
//! Where each step of the slides lives:
//!
//! | slide step   | here |
//! |--------------|------|
//! | `socket()`   | [`sys::socket`] |
//! | `bind()`     | [`sys::bind`], called by [`server::Server::bind`] |
//! | `listen()`   | [`sys::listen`] |
//! | `accept()`   | [`sys::accept4`] |
//! | `connect()`  | [`sys::connect`], called by [`client::connect_tcp`] |
//! | `recv()`     | [`sys::recv`] |
//! | `send()`     | [`sys::send`] |
//! | `sendto()`   | [`sys::sendmmsg`] in the UDP server (a batch of `sendto`s); [`sys::sendto`] in the Python `socket` |
//! | `recvfrom()` | [`sys::recvmmsg`] in the UDP server (a batch of `recvfrom`s); [`sys::recvfrom`] in the client and the Python `socket` |
//! | `close()`    | dropping the [`std::os::fd::OwnedFd`] |
//! | `htons()`    | [`endian::hton16`] |
//!
//! A server on a free port of 127.0.0.1, one request, and a clean stop:
//!
//! ```
//! use std::time::Duration;
//! use upcase::server::{Config, Server};
//!
//! let server = Server::bind(Config { host: "127.0.0.1".into(), port: 0, ..Config::default() })?;
//! let port = server.port();
//! let stopper = server.stopper();
//! let running = std::thread::spawn(move || server.run());
//! let reply = upcase::client::tcp_request("127.0.0.1", port, b"hello", Some(Duration::from_secs(5)))?;
//! assert_eq!(reply, b"HELLO");
//! stopper.stop();
//! running.join().expect("server thread")?;
//! # Ok::<(), upcase::Error>(())
//! ```

#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::missing_safety_doc)]

pub mod addr;
pub mod client;
pub mod endian;
pub mod error;
pub mod server;
pub mod sys;
#[cfg(feature = "tls")]
pub mod tls;
pub mod upper;

#[cfg(feature = "capi")]
pub mod ffi;

pub use error::{Error, Result};

/// The largest UDP payload: 65,535 bytes less the 8-byte UDP header (the
/// IPv6 limit; IPv4's is 65,507). Clients refuse to send more and servers
/// to accept more.
pub const MAX_DATAGRAM: usize = 65_535 - 8;

/// The size of one read from a TCP stream.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The crate version, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
