//! TLS on the TCP servers (epoll and iterative) and the TCP clients, end
//! to end, on loopback, with throwaway certificates made for each test.

#![cfg(feature = "tls")]

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use upcase::client::{tcp_request, Options};
use upcase::error::{ERR_SHORT_REPLY, ERR_TLS};
use upcase::server::{Config, Mode, Server, Transport};
use upcase::tls::rustls;
use upcase::tls::{TlsClient, TlsServer};

/// The only name in the server's certificate: connecting by address needs
/// it given explicitly.
const NAME: &str = "upcase.test";

/// A directory of PEM files, removed on drop: a CA, a server certificate
/// for [`NAME`] signed by it, a client certificate signed by it, and a
/// second CA that signed nothing here.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("upcase-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pki = Pki { dir };
        let (ca, ca_key) = pki.ca("ca");
        let issuer = Issuer::new(ca, ca_key);
        pki.leaf("server", vec![NAME.into()], &issuer);
        pki.leaf("client", vec!["client.upcase.test".into()], &issuer);
        pki.ca("other-ca");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write PEM");
    }

    /// A self-signed CA, written as `{name}.pem`.
    fn ca(&self, name: &str) -> (CertificateParams, KeyPair) {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, format!("upcase test {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-sign");
        self.write(&format!("{name}.pem"), &cert.pem());
        (params, key)
    }

    /// A certificate for `names` signed by `issuer`: `{name}.pem` and
    /// `{name}.key` (PKCS#8).
    fn leaf(&self, name: &str, names: Vec<String>, issuer: &Issuer<'_, KeyPair>) {
        let params = CertificateParams::new(names).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, issuer).expect("sign");
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}.key"), &key.serialize_pem());
    }

    fn server(&self) -> Arc<TlsServer> {
        Arc::new(TlsServer::from_pem(self.path("server.pem"), self.path("server.key"), None).expect("server TLS"))
    }

    fn client(&self) -> Arc<TlsClient> {
        Arc::new(TlsClient::new(Some(&self.path("ca.pem")), Some(NAME.into()), None).expect("client TLS"))
    }

    /// A client that speaks only `version`.
    fn client_version(&self, version: &'static rustls::SupportedProtocolVersion) -> Arc<TlsClient> {
        Arc::new(TlsClient::with_config(rustls_client(self, &[version]), Some(NAME.into())).expect("client TLS"))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Both TCP servers; io_uring never serves TLS.
const MODES: [Mode; 2] = [Mode::Concurrent, Mode::Iterative];

fn tls_config(host: &str, mode: Mode, tls: Arc<TlsServer>) -> Config {
    Config { tls: Some(tls), io_uring: false, ..config(host, Transport::Tcp, mode) }
}

fn options(tls: Arc<TlsClient>) -> Options {
    Options::new().timeout(T).tls(Some(tls))
}

#[test]
fn a_request_round_trip_in_tls_1_3_and_1_2_over_ipv4_and_ipv6() {
    let pki = Pki::new();
    for (host, mode) in [("127.0.0.1", MODES[0]), ("::1", MODES[0]), ("127.0.0.1", MODES[1]), ("::1", MODES[1])] {
        let s = start(tls_config(host, mode, pki.server()));
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client = options(pki.client_version(version));
            let reply = client.tcp_request(host, s.port, b"hello, tls! 123").expect("request");
            assert_eq!(reply, b"HELLO, TLS! 123", "{host} {mode:?} {version:?}");
            // An empty request: the close_notify alone, answered by ours.
            assert_eq!(client.tcp_request(host, s.port, b"").expect("empty request"), b"");
        }
        assert!(eventually(Duration::from_secs(5), || s.stats().connections_active == 0));
        let st = s.stats();
        assert_eq!(st.connections_accepted, 4, "{mode:?}");
        assert_eq!((st.bytes_in, st.bytes_out, st.errors), (30, 30, 0), "{mode:?}");
    }
}

#[test]
fn a_1_mib_request_streams_back_whole() {
    let pki = Pki::new();
    for mode in MODES {
        let s = start(tls_config("127.0.0.1", mode, pki.server()));
        let data = pattern(1 << 20);
        let reply = options(pki.client()).tcp_request("127.0.0.1", s.port, &data).expect("request");
        assert_eq!(reply.len(), data.len());
        assert!(reply == upper(&data), "{mode:?}: reply differs");
        assert_eq!(s.stats().bytes_out, data.len() as u64);
    }
}

#[test]
fn a_kept_open_tls_connection_answers_many_requests() {
    let pki = Pki::new();
    for mode in MODES {
        let s = start(tls_config("::1", mode, pki.server()));
        let mut conn = options(pki.client()).connect("::1", s.port).expect("connect");
        for i in 0..200usize {
            let msg = format!("request {i} {}", "x".repeat(i * 37 % 1000));
            assert_eq!(conn.request(msg.as_bytes()).expect("request"), msg.to_ascii_uppercase().as_bytes());
        }
        let big = pattern(300_000);
        assert!(conn.request(&big).expect("big request") == upper(&big));
        conn.close();
        assert!(eventually(Duration::from_secs(5), || s.stats().connections_active == 0));
        assert_eq!(s.stats().errors, 0, "{mode:?}: the close_notify is a clean end");
    }
}

#[test]
fn a_server_signed_by_another_ca_is_refused_with_the_reason() {
    let pki = Pki::new();
    let s = start(tls_config("127.0.0.1", Mode::Concurrent, pki.server()));
    let other = TlsClient::new(Some(&pki.path("other-ca.pem")), Some(NAME.into()), None).expect("client TLS");
    let err = options(Arc::new(other)).tcp_request("127.0.0.1", s.port, b"hi").expect_err("wrong CA");
    assert_eq!(err.code(), ERR_TLS, "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    // The server goes on serving.
    assert_eq!(options(pki.client()).tcp_request("127.0.0.1", s.port, b"ok").expect("request"), b"OK");
}

#[test]
fn the_name_is_checked_and_can_be_given_when_connecting_by_address() {
    let pki = Pki::new();
    let s = start(tls_config("127.0.0.1", Mode::Iterative, pki.server()));
    let ca = pki.path("ca.pem");
    // By address: the certificate does not name 127.0.0.1.
    let by_address = Arc::new(TlsClient::new(Some(&ca), None, None).expect("client TLS"));
    let err = options(by_address).tcp_request("127.0.0.1", s.port, b"hi").expect_err("wrong name");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    let wrong = Arc::new(TlsClient::new(Some(&ca), Some("other.test".into()), None).expect("client TLS"));
    let err = options(wrong).tcp_request("127.0.0.1", s.port, b"hi").expect_err("wrong name");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    let named = Arc::new(TlsClient::new(Some(&ca), Some(NAME.into()), None).expect("client TLS"));
    assert_eq!(options(named).tcp_request("127.0.0.1", s.port, b"hi").expect("request"), b"HI");
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem");
    let server = TlsServer::from_pem(pki.path("server.pem"), pki.path("server.key"), Some(&ca)).expect("server TLS");
    let server = Arc::new(server);
    let (other, other_key) = pki.ca("stranger-ca");
    pki.leaf("stranger", vec!["stranger.test".into()], &Issuer::new(other, other_key));
    for mode in MODES {
        let s = start(tls_config("127.0.0.1", mode, server.clone()));
        let with_cert =
            TlsClient::new(Some(&ca), Some(NAME.into()), Some((&pki.path("client.pem"), &pki.path("client.key"))))
                .expect("client TLS");
        assert_eq!(options(Arc::new(with_cert)).tcp_request("127.0.0.1", s.port, b"mtls").expect("request"), b"MTLS");
        let err = options(pki.client()).tcp_request("127.0.0.1", s.port, b"anonymous").expect_err("no certificate");
        assert!(err.to_string().contains("CertificateRequired"), "{err}");
        // A client certificate from another CA: the server's certificate
        // from the same CA as before, the client's own signed by other-ca.
        let stranger =
            TlsClient::new(Some(&ca), Some(NAME.into()), Some((&pki.path("stranger.pem"), &pki.path("stranger.key"))))
                .expect("client TLS");
        let err = options(Arc::new(stranger)).tcp_request("127.0.0.1", s.port, b"x").expect_err("unknown client CA");
        // The server's alert, or, when the server closed with the client's
        // last handshake bytes unread, the reset that close sends instead.
        assert!(err.code() == ERR_TLS || err.raw_os_error() == Some(libc::ECONNRESET), "{err}");
        assert!(eventually(Duration::from_secs(5), || s.stats().errors == 2), "{mode:?} {:?}", s.stats());
    }
}

#[test]
fn bad_certificate_and_key_files_fail_naming_the_file() {
    let pki = Pki::new();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let missing = pki.path("missing.pem");
    let err = TlsServer::from_pem(&missing, &key, None).expect_err("missing certificate");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let err = TlsServer::from_pem(&cert, &missing, None).expect_err("missing key");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    // A key where the certificate should be, and the other way round.
    let err = TlsServer::from_pem(&key, &key, None).expect_err("no certificate");
    assert!(err.to_string().contains("server.key") && err.detail().contains("no certificate"), "{err}");
    let err = TlsServer::from_pem(&cert, &cert, None).expect_err("no key");
    assert!(err.to_string().contains("server.pem") && err.detail().contains("no private key"), "{err}");
    // The client's key with the server's certificate.
    let err = TlsServer::from_pem(&cert, pki.path("client.key"), None).expect_err("mismatched key");
    assert!(err.to_string().contains("client.key") && err.detail().contains("does not match"), "{err}");
    pki.write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n");
    let err = TlsServer::from_pem(pki.path("garbage.pem"), &key, None).expect_err("garbage");
    assert!(err.to_string().contains("garbage.pem"), "{err}");
    let err = TlsServer::from_pem(&cert, &key, Some(&pki.path("server.key"))).expect_err("CA file without a CA");
    assert!(err.to_string().contains("server.key"), "{err}");
    let err = TlsClient::new(Some(&missing), None, None).expect_err("missing CA");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    assert!(TlsClient::new(Some(&pki.path("ca.pem")), Some("not a name!".into()), None).is_err());
}

#[test]
fn bind_refuses_tls_where_it_is_not_served() {
    let pki = Pki::new();
    let uring = Config { io_uring: true, ..tls_config("127.0.0.1", Mode::Concurrent, pki.server()) };
    let err = Server::bind(uring).err().expect("TLS on io_uring refused");
    assert!(err.detail().contains("TLS is not served on io_uring"), "{err}");
    let udp = Config { tls: Some(pki.server()), ..config("127.0.0.1", Transport::Udp, Mode::Iterative) };
    assert!(Server::bind(udp).is_err());
    let zero =
        Config { tls_handshake_timeout: Duration::ZERO, ..tls_config("127.0.0.1", Mode::Iterative, pki.server()) };
    assert!(Server::bind(zero).is_err());
}

#[test]
fn a_plaintext_client_on_the_tls_port_fails_fast_and_the_server_goes_on() {
    let pki = Pki::new();
    for mode in MODES {
        let s = start(tls_config("127.0.0.1", mode, pki.server()));
        let t = Instant::now();
        let err = tcp_request("127.0.0.1", s.port, b"hello in the clear", T).expect_err("plaintext refused");
        assert!(t.elapsed() < Duration::from_secs(2), "{err} after {:?}", t.elapsed());
        assert_eq!(err.code(), ERR_SHORT_REPLY, "{err}");
        assert!(err.detail().contains("the server speaks TLS"), "{err}");
        // A request shorter than the alert: the reply is longer, and said so.
        let err = tcp_request("127.0.0.1", s.port, b"hello", T).expect_err("plaintext refused");
        assert!(err.detail().contains("the server speaks TLS"), "{err}");
        assert!(eventually(Duration::from_secs(5), || s.stats().errors == 2), "{:?}", s.stats());
        assert_eq!(options(pki.client()).tcp_request("127.0.0.1", s.port, b"next").expect("request"), b"NEXT");
    }
}

#[test]
fn a_tls_client_on_a_plaintext_port_fails_fast_with_a_clear_error() {
    let pki = Pki::new();
    let s = start(config("127.0.0.1", Transport::Tcp, Mode::Iterative));
    let t = Instant::now();
    let err = options(pki.client()).tcp_request("127.0.0.1", s.port, b"hi").expect_err("no TLS there");
    assert!(t.elapsed() < Duration::from_secs(2), "{err} after {:?}", t.elapsed());
    assert!(err.to_string().contains("TLS"), "{err}");
    assert_eq!(tcp_request("127.0.0.1", s.port, b"plain", T).expect("request"), b"PLAIN");
}

#[test]
fn a_handshake_that_never_starts_or_stalls_is_closed_after_the_handshake_timeout() {
    let pki = Pki::new();
    let timeout = Duration::from_millis(300);
    for mode in MODES {
        // No idle timeout: the handshake's alone closes these clients.
        let config = tls_config("127.0.0.1", mode, pki.server());
        let s = start(Config { tls_handshake_timeout: timeout, idle_timeout: None, ..config });
        // One client sends nothing; the other the start of a ClientHello
        // record (type 22, TLS 1.0, 80 bytes announced, 3 sent).
        let stalled_start: &[u8] = &[22, 3, 1, 0, 80, 1, 0, 0];
        for (what, first) in [("silent", &[][..]), ("stalled", stalled_start)] {
            let t = Instant::now();
            let client = raw_connect("127.0.0.1", s.port);
            send_all(&client, first);
            assert!(closed_within(&client, Duration::from_secs(5)), "{mode:?} {what}: still open");
            let waited = t.elapsed();
            assert!(waited >= timeout - Duration::from_millis(20), "{what}: closed after {waited:?}");
            assert!(waited < Duration::from_secs(3), "{what}: closed after {waited:?}");
        }
        assert_eq!(s.stats().idle_timeouts, 2, "{mode:?}");
        assert_eq!(options(pki.client()).tcp_request("127.0.0.1", s.port, b"next").expect("request"), b"NEXT");
    }
}

#[test]
fn stop_is_prompt_with_tls_clients_connected() {
    let pki = Pki::new();
    for mode in MODES {
        let mut s = start(tls_config("127.0.0.1", mode, pki.server()));
        let mut conn = options(pki.client()).connect("127.0.0.1", s.port).expect("connect");
        assert_eq!(conn.request(b"before stop").expect("request"), b"BEFORE STOP");
        let took = s.stop();
        assert!(took < Duration::from_secs(2), "{mode:?}: stop took {took:?}");
        assert!(conn.request(b"after").is_err(), "{mode:?}: served after stop");
    }
}

#[test]
fn a_reply_cut_short_without_close_notify_is_an_error() {
    let pki = Pki::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tls = pki.server_rustls();
    // A TLS server that answers the whole request, then closes the TCP
    // connection without its close_notify: the client cannot tell this
    // from a reply cut short by an attacker's FIN.
    let fake = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut session = rustls::ServerConnection::new(tls).expect("session");
        let mut got = Vec::new();
        while got.len() < 64 {
            session.complete_io(&mut tcp).expect("io");
            let mut buf = [0u8; 64];
            match session.reader().read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        session.writer().write_all(&got.to_ascii_uppercase()).expect("write");
        while session.wants_write() {
            session.write_tls(&mut tcp).expect("write_tls");
        }
        drop(tcp);
    });
    let err = options(pki.client()).tcp_request("127.0.0.1", port, &[b'a'; 64]).expect_err("cut short");
    assert_eq!(err.code(), ERR_SHORT_REPLY, "{err}");
    assert!(err.detail().contains("close_notify"), "{err}");
    fake.join().expect("fake server");
}

impl Pki {
    /// The server's rustls configuration, for a server of the test's own.
    fn server_rustls(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let chain = rustls::pki_types::CertificateDer::pem_file_iter(self.path("server.pem"))
            .expect("chain")
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(self.path("server.key")).expect("key");
        #[allow(deprecated)] // the ring provider, as the library uses
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("config");
        Arc::new(config)
    }
}

#[test]
fn the_epoll_server_serves_many_tls_clients_at_once() {
    let pki = Pki::new();
    let s = start(tls_config("127.0.0.1", Mode::Concurrent, pki.server()));
    let client = options(pki.client());
    let port = s.port;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut conn = client.connect("127.0.0.1", port).expect("connect");
                for i in 0..20usize {
                    let one = format!("thread {t} one-shot {i}");
                    assert_eq!(
                        client.tcp_request("127.0.0.1", port, one.as_bytes()).expect("one-shot"),
                        upper(one.as_bytes())
                    );
                    let kept = pattern(1000 * (i + 1));
                    assert!(conn.request(&kept).expect("kept") == upper(&kept), "thread {t} request {i}");
                }
                conn.close();
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert!(eventually(Duration::from_secs(5), || s.stats().connections_active == 0));
    assert_eq!(s.stats().errors, 0);
}

#[test]
fn a_tls_client_that_does_not_read_is_not_read_from_and_holds_no_one_up() {
    let pki = Pki::new();
    let s = start(tls_config("127.0.0.1", Mode::Concurrent, pki.server()));
    let tls_config = rustls_client(&pki, rustls::DEFAULT_VERSIONS);
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    let name = rustls::pki_types::ServerName::try_from(NAME).expect("name");
    let mut session = rustls::ClientConnection::new(tls_config, name).expect("session");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    while session.is_handshaking() {
        session.complete_io(&mut tcp).expect("handshake");
    }
    // Requests, never reading a reply, until the socket takes no more
    // for a while: the server has stopped reading.
    tcp.set_nonblocking(true).expect("non-blocking");
    let chunk = vec![b'x'; 64 * 1024];
    let limit = 64 << 20;
    let mut handed = 0usize;
    let mut stalled_since: Option<Instant> = None;
    while handed < limit {
        if !session.wants_write() {
            session.writer().write_all(&chunk).expect("write");
            handed += chunk.len();
        }
        match session.write_tls(&mut tcp) {
            Ok(_) => stalled_since = None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write_tls: {e}"),
        }
    }
    assert!(handed < limit, "the server read {handed} bytes from a client that reads nothing");
    // Another client is served meanwhile.
    let t = Instant::now();
    assert_eq!(options(pki.client()).tcp_request("127.0.0.1", s.port, b"next").expect("request"), b"NEXT");
    assert!(t.elapsed() < Duration::from_secs(2));
    let st = s.stats();
    assert!(st.bytes_in < handed as u64, "{st:?}");
    // The other client's connection ends just after its reply; ours stays.
    assert!(eventually(Duration::from_secs(5), || s.stats().connections_active == 1), "{:?}", s.stats());
}

/// A rustls client configuration trusting the test CA, for `versions`.
#[allow(deprecated)] // the ring provider, as the library uses
fn rustls_client(pki: &Pki, versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.path("ca.pem")).expect("CA") {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[test]
fn a_second_connection_resumes_the_session_in_tls_1_3_and_1_2() {
    let pki = Pki::new();
    for mode in MODES {
        let s = start(tls_config("127.0.0.1", mode, pki.server()));
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let config = rustls_client(&pki, &[version]);
            let (reply, first) = raw_exchange(&config, s.port, b"first");
            assert_eq!((reply.as_slice(), first), (&b"FIRST"[..], Some(rustls::HandshakeKind::Full)));
            let (reply, second) = raw_exchange(&config, s.port, b"second");
            assert_eq!(reply, b"SECOND");
            assert_eq!(second, Some(rustls::HandshakeKind::Resumed), "{mode:?} {version:?}");
        }
    }
}

/// One exchange by a plain rustls client over a blocking socket: the
/// request, our close_notify, the reply up to the server's close_notify.
fn raw_exchange(
    config: &Arc<rustls::ClientConfig>,
    port: u16,
    data: &[u8],
) -> (Vec<u8>, Option<rustls::HandshakeKind>) {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let name = rustls::pki_types::ServerName::try_from(NAME).expect("name");
    let mut session = rustls::ClientConnection::new(config.clone(), name).expect("session");
    while session.is_handshaking() {
        while session.wants_write() {
            session.write_tls(&mut tcp).expect("write_tls");
        }
        if session.is_handshaking() {
            session.read_tls(&mut tcp).expect("read_tls");
            session.process_new_packets().expect("handshake");
        }
    }
    session.writer().write_all(data).expect("write");
    session.send_close_notify();
    let mut reply = Vec::new();
    loop {
        while session.wants_write() {
            session.write_tls(&mut tcp).expect("write_tls");
        }
        match session.reader().read_to_end(&mut reply) {
            Ok(_) => return (reply, session.handshake_kind()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read: {e}"),
        }
        session.read_tls(&mut tcp).expect("read_tls");
        session.process_new_packets().expect("TLS");
    }
}

/// Python's `ssl` module (OpenSSL) as a client of both servers, in TLS 1.3
/// and 1.2; skipped where no `python3` runs.
#[test]
fn python_ssl_is_a_client_of_our_servers() {
    let script = r#"
import socket, ssl, sys
port, cafile, version = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
data = b"python says hello " * 1000
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    s = ctx.wrap_socket(raw, server_hostname="upcase.test")
    s.sendall(data)
    reply = b""
    while len(reply) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
    version = s.version()
    s.unwrap()  # our close_notify, then the server's
assert reply == data.upper(), (len(reply), reply[:40])
print("ok", version)
"#;
    if std::process::Command::new("python3").arg("-c").arg("import ssl").output().map_or(true, |o| !o.status.success())
    {
        eprintln!("skipped: no python3 with ssl");
        return;
    }
    let pki = Pki::new();
    for mode in MODES {
        let s = start(tls_config("127.0.0.1", mode, pki.server()));
        for (version, expect) in [("TLSv1_3", "TLSv1.3"), ("TLSv1_2", "TLSv1.2")] {
            let out = std::process::Command::new("python3")
                .args(["-c", script, &s.port.to_string()])
                .arg(pki.path("ca.pem"))
                .arg(version)
                .output()
                .expect("python3");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{mode:?} {version}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(stdout.trim(), format!("ok {expect}"));
        }
        assert!(eventually(Duration::from_secs(5), || s.stats().connections_active == 0));
        assert_eq!(s.stats().errors, 0, "{mode:?}: Python's close_notify is a clean end");
    }
}
