//! The TLS client of the TLS modes: rustls over our non-blocking sockets.
//!
//! The offer is narrowed so that rustls and OpenSSL servers negotiate the
//! same thing: TLS 1.3 only, AES-128-GCM only, an X25519 key share. P-256 is
//! listed as a second group without a key share, so that a server with
//! P-256 only (socat 1.7) answers with a HelloRetryRequest, which is counted.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore};

use crate::net::{self, Fd};

/// What the TLS modes need to open a connection: the trusted CA and the name checked.
#[derive(Clone, Debug)]
pub struct TlsOpts {
    pub roots: Arc<RootCertStore>,
    pub name: ServerName<'static>,
}

impl TlsOpts {
    /// Loads the CA certificates of a PEM file; `name` is the server name sent and checked.
    pub fn load(ca: &Path, name: &str) -> Result<TlsOpts, String> {
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("--tls-ca {}: no CA certificate in it", ca.display()));
        }
        let name = ServerName::try_from(name.to_string()).map_err(|e| format!("--tls-name {name:?}: {e}"))?;
        Ok(TlsOpts { roots: Arc::new(roots), name })
    }

    /// A client configuration; with `resume`, it keeps tickets for the next connections.
    pub fn config(&self, resume: bool) -> Result<Arc<ClientConfig>, String> {
        let base = aws_lc_rs::default_provider();
        let provider = CryptoProvider {
            cipher_suites: vec![aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256],
            kx_groups: vec![aws_lc_rs::kx_group::X25519, aws_lc_rs::kx_group::SECP256R1],
            ..base
        };
        let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS client config: {e}"))?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        cfg.resumption = if resume { Resumption::in_memory_sessions(1024) } else { Resumption::disabled() };
        Ok(Arc::new(cfg))
    }
}

/// Why a TLS connection failed.
#[derive(Debug)]
pub enum Fail {
    /// A system call failed with this errno.
    Sys(&'static str, i32),
    /// rustls refused what the server sent.
    Tls(rustls::Error),
    /// The server closed TCP without close_notify.
    Cut,
}

/// What a read from the connection brought.
#[derive(Debug, PartialEq)]
pub enum Got {
    /// Nothing more until the socket is readable again.
    Pending,
    /// The server's close_notify has arrived; everything before it was delivered.
    Closed,
}

/// How one handshake went, by rustls's own account.
#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct Kinds {
    pub full: u64,
    pub resumed: u64,
    pub hrr: u64,
}

impl Kinds {
    pub fn count(&mut self, c: &ClientConnection) {
        match c.handshake_kind() {
            Some(HandshakeKind::Resumed) => self.resumed += 1,
            Some(HandshakeKind::FullWithHelloRetryRequest) => self.hrr += 1,
            Some(HandshakeKind::Full) => self.full += 1,
            None => {}
        }
    }

    pub fn merge(&mut self, o: &Kinds) {
        self.full += o.full;
        self.resumed += o.resumed;
        self.hrr += o.hrr;
    }
}

/// What was negotiated, in words: `TLS 1.3 / AES_128_GCM_SHA256 / X25519`.
pub fn negotiated(c: &ClientConnection) -> String {
    let v = c.protocol_version().map_or("?".to_string(), |v| format!("{v:?}"));
    let s = c.negotiated_cipher_suite().map_or("?".to_string(), |s| format!("{:?}", s.suite()));
    let g = c.negotiated_key_exchange_group().map_or("?".to_string(), |g| format!("{:?}", g.name()));
    format!("{v} / {s} / {g}")
}

/// A socket as rustls's byte source and sink; `EAGAIN` is `WouldBlock`.
struct SockIo<'a>(&'a Fd);

fn io_err(e: i32) -> io::Error {
    match e {
        // A connect still in progress: the same as a full buffer, EPOLLOUT will come.
        libc::EAGAIN | libc::ENOTCONN => io::ErrorKind::WouldBlock.into(),
        e => io::Error::from_raw_os_error(e),
    }
}

impl Read for SockIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        net::recv(self.0, buf).map_err(io_err)
    }
}

impl Write for SockIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        net::send(self.0, buf).map_err(io_err)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        net::sendv(self.0, bufs).map_err(io_err)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn sys(what: &'static str, e: &io::Error) -> Fail {
    Fail::Sys(what, e.raw_os_error().unwrap_or(libc::EIO))
}

/// One client connection: the socket and its rustls state.
pub struct TlsConn {
    pub fd: Fd,
    pub tls: ClientConnection,
}

impl TlsConn {
    pub fn new(fd: Fd, config: &Arc<ClientConfig>, name: &ServerName<'static>) -> Result<TlsConn, Fail> {
        let tls = ClientConnection::new(config.clone(), name.clone()).map_err(Fail::Tls)?;
        Ok(TlsConn { fd, tls })
    }

    /// Sends queued records until none is left (`true`) or the socket is full (`false`).
    pub fn flush(&mut self) -> Result<bool, Fail> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut SockIo(&self.fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(sys("send", &e)),
            }
        }
        Ok(true)
    }

    /// Reads everything the socket holds, hands each piece of plaintext to
    /// `data`, and says whether the server's close_notify has come.
    pub fn fill(&mut self, buf: &mut [u8], mut data: impl FnMut(&[u8])) -> Result<Got, Fail> {
        loop {
            // Plaintext first: rustls refuses to read more while its plaintext buffer is full.
            loop {
                match self.tls.reader().read(buf) {
                    Ok(0) => return Ok(Got::Closed),
                    Ok(n) => data(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(Fail::Cut),
                    Err(e) => return Err(sys("read", &e)),
                }
            }
            match self.tls.read_tls(&mut SockIo(&self.fd)) {
                // At TCP EOF the reader above ends the loop: Ok(0) after a
                // close_notify, UnexpectedEof without one.
                Ok(_) => {
                    self.tls.process_new_packets().map_err(Fail::Tls)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Got::Pending),
                Err(e) => return Err(sys("recv", &e)),
            }
        }
    }
}

/// Counts a failure in `st`: a system call's errno, or a TLS failure.
pub fn count(st: &mut crate::stats::Stats, what: &str, f: Fail) {
    match f {
        Fail::Sys(call, e) => st.error(&format!("{what}: {call}"), e),
        Fail::Tls(e) => st.tls(what, &e),
        Fail::Cut => st.tls(what, &"the server closed TCP without close_notify"),
    }
}
