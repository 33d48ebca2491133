//! TLS configuration (feature `tls`): what a server presents and a client
//! trusts, loaded from PEM files once and shared (`Arc`) by every
//! connection.
//!
//! The socket layer stays ours: `sys::recv` and `sys::send` move TLS
//! records, and rustls turns records into bytes and back. Its buffered API
//! (`read_tls`, `process_new_packets`, `reader`, `writer`, `write_tls`)
//! keeps the loops simple; they bound its buffers by sending every queued
//! record before they read more.
//!
//! The crypto provider is aws-lc-rs: its handshakes cost the server less
//! CPU than ring's (RSA signatures half as much), and on Linux x86-64 and
//! aarch64 it builds with a C compiler alone. Key exchange prefers the
//! post-quantum hybrid X25519MLKEM768 when the peer offers it, then
//! X25519 and P-256; P-384 comes last, for it costs several times more.

use std::fmt;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ServerSessionMemoryCache, UnbufferedServerConnection, WebPkiClientVerifier};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use crate::error::{Error, Result, ERR_TLS};
use crate::sys;

/// The rustls this crate is built with, for [`TlsServer::with_config`] and
/// [`TlsClient::with_config`].
pub use rustls;

/// Server sessions remembered for resumption by session id (TLS 1.2 and
/// stateful TLS 1.3); tickets need no memory on the server.
const SESSION_CACHE: usize = 1024;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{self, kx_group};
    let mut provider = aws_lc_rs::default_provider();
    provider.kx_groups = vec![kx_group::X25519MLKEM768, kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(provider)
}

/// What a TLS server presents, and which client certificates it requires.
///
/// ```no_run
/// let tls = upcase::tls::TlsServer::from_pem("server.pem", "server.key", None)?;
/// let config = upcase::server::Config { tls: Some(std::sync::Arc::new(tls)), ..Default::default() };
/// # Ok::<(), upcase::Error>(())
/// ```
#[derive(Clone)]
pub struct TlsServer {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

impl TlsServer {
    /// The certificate chain (leaf first) and its private key (PKCS#8,
    /// SEC1 or RSA), each from a PEM file. With `client_ca`, every client
    /// must present a certificate signed by a CA in that PEM file (mutual
    /// TLS). Session resumption by tickets and by session id is on. An
    /// error names the file and the reason.
    pub fn from_pem(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
        client_ca: Option<&Path>,
    ) -> Result<TlsServer> {
        let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
        let chain = load_certs(cert_path, "TLS certificate")?;
        let key = load_key(key_path)?;
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("TLS server config", e))?;
        let builder = match client_ca {
            Some(ca) => {
                let roots = Arc::new(load_roots(ca, "TLS client CA")?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| Error::invalid(format!("TLS client CA {}", ca.display()), e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            let what = format!("TLS key {} for certificate {}", key_path.display(), cert_path.display());
            match e {
                rustls::Error::InconsistentKeys(_) => Error::invalid(what, "the key does not match the certificate"),
                e => Error::invalid(what, e.to_string()),
            }
        })?;
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| tls_error("TLS ticketer", e))?;
        Ok(TlsServer { config: Arc::new(config) })
    }

    /// A server on a rustls configuration of the caller's (other protocol
    /// versions, ALPN, a certificate resolver).
    pub fn with_config(config: Arc<ServerConfig>) -> TlsServer {
        TlsServer { config }
    }

    /// A new server side of one connection.
    pub(crate) fn accept(&self) -> Result<UnbufferedServerConnection> {
        UnbufferedServerConnection::new(self.config.clone()).map_err(|e| tls_error("TLS accept", e))
    }
}

/// What a TLS client trusts, the name it checks, and the certificate it
/// presents if asked.
///
/// ```no_run
/// use std::sync::Arc;
/// use upcase::tls::TlsClient;
/// let tls = TlsClient::new(Some("ca.pem".as_ref()), None, None)?;
/// let options = upcase::client::Options::new().tls(Some(Arc::new(tls)));
/// let reply = options.tcp_request("localhost", 12000, b"hi")?;
/// # Ok::<(), upcase::Error>(())
/// ```
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts the CAs of the PEM file `ca`, or the system's trust store
    /// without one. The server's certificate must name `server_name`, or
    /// else the host connected to (needed when connecting by address to a
    /// server whose certificate has a name). `client_cert` is a certificate
    /// chain and key (PEM files) for a server that asks for one. TLS 1.3
    /// and 1.2; a session is resumed when this value connects again.
    pub fn new(
        ca: Option<&Path>,
        server_name: Option<String>,
        client_cert: Option<(&Path, &Path)>,
    ) -> Result<TlsClient> {
        let roots = match ca {
            Some(ca) => load_roots(ca, "TLS CA")?,
            None => native_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("TLS client config", e))?
            .with_root_certificates(roots);
        let config = match client_cert {
            Some((cert_path, key_path)) => {
                let chain = load_certs(cert_path, "TLS client certificate")?;
                let key = load_key(key_path)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    let what = format!("TLS key {} for certificate {}", key_path.display(), cert_path.display());
                    match e {
                        rustls::Error::InconsistentKeys(_) => {
                            Error::invalid(what, "the key does not match the certificate")
                        }
                        e => Error::invalid(what, e.to_string()),
                    }
                })?
            }
            None => builder.with_no_client_auth(),
        };
        if let Some(name) = &server_name {
            check_name(name)?;
        }
        Ok(TlsClient { config: Arc::new(config), server_name })
    }

    /// A client on a rustls configuration of the caller's (one protocol
    /// version, other roots).
    pub fn with_config(config: Arc<ClientConfig>, server_name: Option<String>) -> Result<TlsClient> {
        if let Some(name) = &server_name {
            check_name(name)?;
        }
        Ok(TlsClient { config, server_name })
    }

    /// A new client side of one connection to `host`.
    pub(crate) fn connect(&self, host: &str) -> Result<ClientConnection> {
        let name = check_name(self.server_name.as_deref().unwrap_or(host))?;
        ClientConnection::new(self.config.clone(), name).map_err(|e| tls_error("TLS connect", e))
    }
}

/// A DNS name or an IP address, as the server's certificate must name it.
fn check_name(name: &str) -> Result<ServerName<'static>> {
    // A bracketed IPv6 literal names the address inside.
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    ServerName::try_from(bare.to_owned())
        .map_err(|_| Error::invalid("TLS server name", format!("{name:?} is neither a DNS name nor an IP address")))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::os(format!("read {what} {}", path.display()), e))
}

/// Every certificate in a PEM file; none is an error.
fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("{what} {}", path.display()), format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::invalid(format!("{what} {}", path.display()), "no certificate in it"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or RSA) in a PEM file.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = read_file(path, "TLS key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let detail = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key (PKCS#8, SEC1 or RSA) in it".to_owned(),
            e => format!("bad PEM: {e}"),
        };
        Error::invalid(format!("TLS key {}", path.display()), detail)
    })
}

/// The CAs of a PEM file, each checked.
fn load_roots(path: &Path, what: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, what)? {
        roots
            .add(cert)
            .map_err(|e| Error::invalid(format!("{what} {}", path.display()), format!("bad CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The system's trust store (`SSL_CERT_FILE` and `SSL_CERT_DIR` as OpenSSL
/// reads them, else the distribution's bundle).
fn native_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let mut detail = "no CA certificate found in the system's trust store (give a CA file)".to_owned();
        if let Some(e) = found.errors.first() {
            detail.push_str(&format!(": {e}"));
        }
        return Err(Error::invalid("TLS client trust store", detail));
    }
    Ok(roots)
}

/// A rustls failure, as our error (`ERR_TLS`).
pub(crate) fn tls_error(context: impl Into<String>, e: rustls::Error) -> Error {
    Error::own(ERR_TLS, context, format!("TLS: {e}"))
}

/// Our socket as rustls's record transport: `read_tls` calls `recv`,
/// `write_tls` calls `send`. A non-blocking socket with nothing to move
/// answers `WouldBlock`.
pub(crate) struct FdIo<'a>(pub BorrowedFd<'a>);

impl io::Read for FdIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.0, buf)
    }
}

impl io::Write for FdIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.0, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsServer {
    /// The server side of one connection, for a caller that moves its
    /// records itself (a blocking socket of its own, as Python's
    /// `TLSContext.wrap_socket` has).
    pub fn new_connection(&self) -> Result<ServerConnection> {
        ServerConnection::new(self.config.clone()).map_err(|e| tls_error("TLS accept", e))
    }
}

impl TlsClient {
    /// The client side of one connection to `host` (the name checked
    /// unless this client was given one), for a caller that moves its
    /// records itself.
    pub fn new_connection(&self, host: &str) -> Result<ClientConnection> {
        self.connect(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::Connection;

    /// A CA and a server certificate for `upcase.test` in a temporary
    /// directory: (dir, ca.pem, server.pem, server.key).
    fn pki(tag: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("upcase-tls-unit-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("key");
        std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).expect("self-sign").pem()).expect("write");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["upcase.test".to_owned()]).expect("params");
        std::fs::write(dir.join("server.pem"), leaf.signed_by(&key, &issuer).expect("sign").pem()).expect("write");
        std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
        (dir.clone(), dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
    }

    /// Moves records between the two sides in memory until neither has
    /// any to send; the first rustls error of either side.
    fn pump(client: &mut Connection, server: &mut Connection) -> std::result::Result<(), rustls::Error> {
        while transfer(client, server)? | transfer(server, client)? {}
        Ok(())
    }

    /// The records `from` has queued, into `to`; false when there were none.
    fn transfer(from: &mut Connection, to: &mut Connection) -> std::result::Result<bool, rustls::Error> {
        let mut records = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut records).expect("write_tls to memory");
        }
        let mut rd = &records[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).expect("read_tls from memory");
            to.process_new_packets()?;
        }
        Ok(!records.is_empty())
    }

    #[test]
    fn new_connections_complete_a_handshake_and_carry_bytes() {
        let (dir, ca, cert, key) = pki("ok");
        let server = TlsServer::from_pem(&cert, &key, None).expect("server");
        let client = TlsClient::new(Some(&ca), None, None).expect("client");
        let mut s = Connection::from(server.new_connection().expect("server connection"));
        let mut c = Connection::from(client.new_connection("upcase.test").expect("client connection"));
        io::Write::write_all(&mut c.writer(), b"hello").expect("write");
        pump(&mut c, &mut s).expect("handshake");
        assert!(!c.is_handshaking() && !s.is_handshaking());
        let mut got = [0u8; 5];
        io::Read::read_exact(&mut s.reader(), &mut got).expect("read");
        assert_eq!(&got, b"hello");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_new_client_connection_checks_the_host_it_is_given() {
        let (dir, ca, cert, key) = pki("name");
        let server = TlsServer::from_pem(&cert, &key, None).expect("server");
        let client = TlsClient::new(Some(&ca), None, None).expect("client");
        let mut s = Connection::from(server.new_connection().expect("server connection"));
        let mut c = Connection::from(client.new_connection("other.test").expect("client connection"));
        let err = pump(&mut c, &mut s).expect_err("a certificate for another name");
        assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
        assert!(client.new_connection("not a name!").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
