//! TLS between ours and programs nobody here wrote, on loopback: `openssl
//! s_client`, Python's `ssl` module, `ncat --ssl` and `socat OPENSSL:` as
//! clients of both servers, and our client against a server written with
//! Python's `ssl`; TLS 1.3 and 1.2, ECDSA P-256 and RSA-2048 certificates.
//! A wrong CA, a wrong name and an expired certificate are refused, each
//! with its reason, both ways.
//!
//! A missing tool skips its test with a message, except under CI (`CI`
//! set, as CI services set it), where it fails. Every child process is killed (by its PID)
//! when its time is up.

#![cfg(feature = "tls")]

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use upcase::error::ERR_TLS;
use upcase::server::{Config, Mode, Transport};
use upcase::tls::rustls;
use upcase::tls::{TlsClient, TlsServer};

/// The only name in the server's certificates.
const NAME: &str = "upcase.test";

/// How long one foreign program may run.
const LIMIT: Duration = Duration::from_secs(20);

/// Both TCP servers; io_uring never serves TLS.
const MODES: [Mode; 2] = [Mode::Concurrent, Mode::Iterative];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Key {
    Ecdsa,
    Rsa,
}

const KEYS: [Key; 2] = [Key::Ecdsa, Key::Rsa];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Version {
    Tls13,
    Tls12,
}

const VERSIONS: [Version; 2] = [Version::Tls13, Version::Tls12];

impl Version {
    fn rustls(self) -> &'static rustls::SupportedProtocolVersion {
        match self {
            Version::Tls13 => &rustls::version::TLS13,
            Version::Tls12 => &rustls::version::TLS12,
        }
    }

    /// The name OpenSSL and Python's `ssl` print.
    fn openssl(self) -> &'static str {
        match self {
            Version::Tls13 => "TLSv1.3",
            Version::Tls12 => "TLSv1.2",
        }
    }

    /// The member of Python's `ssl.TLSVersion`.
    fn python(self) -> &'static str {
        match self {
            Version::Tls13 => "TLSv1_3",
            Version::Tls12 => "TLSv1_2",
        }
    }
}

/// Whether `program` runs (`probe` are its arguments for a harmless run).
/// Missing: a skip with a message, or a failure under CI.
fn have(program: &str, probe: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(probe)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "{program} is missing, and this is CI: install it (.ci/run lists the packages)"
        );
        eprintln!("skipped: {program} is not installed (apt-get install openssl ncat socat python3)");
    }
    ok
}

/// A child process with its stdout and stderr collected by threads; killed
/// (by PID) on drop if still running.
struct Proc {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

/// How a child ended: `status` is `None` when it was killed at its time limit.
struct Done {
    status: Option<ExitStatus>,
    out: String,
    err: String,
}

impl Done {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status {:?}\n--- stdout:\n{}\n--- stderr:\n{}", self.status, self.out, self.err)
    }
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (out, err) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let mut readers = Vec::new();
        let stdout = child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>);
        for (pipe, sink) in [(stdout, out.clone()), (stderr, err.clone())] {
            let Some(mut pipe) = pipe else { continue };
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    sink.lock().expect("sink").extend_from_slice(&buf[..n]);
                }
            }));
        }
        let stdin = child.stdin.take();
        Proc { what, child, stdin, out, err, readers }
    }

    fn write(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(data).and_then(|()| stdin.flush()).unwrap_or_else(|e| panic!("{}: stdin: {e}", self.what));
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("stdout")).into_owned()
    }

    /// Waits until stdout holds `needle`, or the child ends, or `limit`.
    fn wait_stdout(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.stdout().contains(needle) {
                return true;
            }
            if Instant::now() > deadline || self.child.try_wait().ok().flatten().is_some() {
                return self.stdout().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Closes stdin and waits for the end, killing the child after `limit`.
    fn finish(mut self, limit: Duration) -> Done {
        self.close_stdin();
        let deadline = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    self.kill();
                    break None;
                }
            }
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let err = String::from_utf8_lossy(&self.err.lock().expect("stderr")).into_owned();
        Done { status, out: self.stdout(), err }
    }

    fn kill(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

/// A directory of PEM files, removed on drop, all of one key type: a CA
/// (`ca.pem`), a server certificate for [`NAME`] signed by it
/// (`server.pem`, `server.key`), an expired one with the same key
/// (`expired.pem`), and a second CA that signed nothing (`other-ca.pem`).
struct Pki {
    dir: PathBuf,
    key: Key,
}

impl Pki {
    fn new(key: Key) -> Pki {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("upcase-tls-interop-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pki = Pki { dir, key };
        let ca = pki.ca("ca");
        let server_key = pki.key_pair("server.key");
        pki.leaf("server.pem", &server_key, &ca, false);
        pki.leaf("expired.pem", &server_key, &ca, true);
        pki.ca("other-ca");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write PEM");
    }

    /// A new key of this PKI's type, written as `name` (PKCS#8). ring
    /// cannot make RSA keys, so the `openssl` command makes those.
    fn key_pair(&self, name: &str) -> KeyPair {
        match self.key {
            Key::Ecdsa => {
                let key = KeyPair::generate().expect("key");
                self.write(name, &key.serialize_pem());
                key
            }
            Key::Rsa => {
                let path = self.path(name);
                let out = Command::new("openssl")
                    .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
                    .arg(&path)
                    .output()
                    .expect("openssl genpkey");
                assert!(out.status.success(), "openssl genpkey: {}", String::from_utf8_lossy(&out.stderr));
                let pem = std::fs::read_to_string(&path).expect("read RSA key");
                KeyPair::from_pem(&pem).expect("RSA key")
            }
        }
    }

    /// A self-signed CA, written as `{name}.pem`.
    fn ca(&self, name: &str) -> Issuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, format!("upcase interop {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = self.key_pair(&format!("{name}.key"));
        let cert = params.self_signed(&key).expect("self-sign");
        self.write(&format!("{name}.pem"), &cert.pem());
        Issuer::new(params, key)
    }

    /// A certificate for [`NAME`] with `key`, signed by `issuer`, written
    /// as `name`; `expired`: valid only in 2020.
    fn leaf(&self, name: &str, key: &KeyPair, issuer: &Issuer<'_, KeyPair>, expired: bool) {
        let mut params = CertificateParams::new(vec![NAME.to_owned()]).expect("params");
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(key, issuer).expect("sign");
        self.write(name, &cert.pem());
    }

    /// Our server's TLS with certificate `cert` (`server.pem` or `expired.pem`).
    fn server(&self, cert: &str) -> Arc<TlsServer> {
        Arc::new(TlsServer::from_pem(self.path(cert), self.path("server.key"), None).expect("server TLS"))
    }

    /// Our server's TLS speaking `version` only, for clients that cannot
    /// be told which to offer.
    #[allow(deprecated)] // the ring provider, as the library uses
    fn server_version(&self, version: Version) -> Arc<TlsServer> {
        use rustls::pki_types::pem::PemObject;
        let chain = rustls::pki_types::CertificateDer::pem_file_iter(self.path("server.pem"))
            .expect("chain")
            .collect::<Result<Vec<_>, _>>()
            .expect("certs");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(self.path("server.key")).expect("key");
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_protocol_versions(&[version.rustls()])
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("config");
        Arc::new(TlsServer::with_config(Arc::new(config)))
    }

    /// Our client, trusting `ca` (a file of this PKI) and checking `name`.
    fn client(&self, ca: &str, name: &str) -> upcase::client::Options {
        let tls = TlsClient::new(Some(&self.path(ca)), Some(name.to_owned()), None).expect("client TLS");
        upcase::client::Options::new().timeout(T).tls(Some(Arc::new(tls)))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tls_config(mode: Mode, tls: Arc<TlsServer>) -> Config {
    Config { tls: Some(tls), io_uring: false, ..config("127.0.0.1", Transport::Tcp, mode) }
}

/// Every connection closed, none counted as an error: each client's end
/// was a close_notify our server took as a clean end.
fn all_closed_cleanly(s: &Running, what: &str) {
    assert!(eventually(Duration::from_secs(5), || s.stats().connections_active == 0), "{what}: {:?}", s.stats());
    assert_eq!(s.stats().errors, 0, "{what}: {:?}", s.stats());
}

/// `openssl s_client` to our server on `port`, for `version`, trusting `ca`
/// and checking `name`; started, not yet given a line.
fn s_client(pki: &Pki, port: u16, version: Version, ca: &str, name: &str) -> Proc {
    let flag = match version {
        Version::Tls13 => "-tls1_3",
        Version::Tls12 => "-tls1_2",
    };
    Proc::spawn(
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), flag, "-servername", NAME])
            .args(["-verify_hostname", name, "-verify_return_error", "-CAfile"])
            .arg(pki.path(ca)),
    )
}

#[test]
fn openssl_s_client_is_a_client_of_our_servers() {
    if !have("openssl", &["version"]) {
        return;
    }
    for key in KEYS {
        let pki = Pki::new(key);
        for mode in MODES {
            let s = start(tls_config(mode, pki.server("server.pem")));
            for version in VERSIONS {
                let what = format!("{key:?} {mode:?} {version:?}");
                let mut c = s_client(&pki, s.port, version, "ca.pem", NAME);
                c.write(b"hello from openssl, 123!\n");
                let answered = c.wait_stdout("HELLO FROM OPENSSL, 123!\n", LIMIT);
                // "Q" at the start of a line: s_client sends its close_notify and exits.
                if answered {
                    c.write(b"Q\n");
                }
                let done = c.finish(LIMIT);
                assert!(answered && done.ok(), "{what}: {done}");
                assert!(done.out.contains("Verify return code: 0 (ok)"), "{what}: {done}");
                assert!(done.out.contains(&format!("Protocol  : {}", version.openssl())), "{what}: {done}");
                let signature = if key == Key::Rsa { "RSA" } else { "ECDSA" };
                assert!(done.out.contains(&format!("Peer signature type: {signature}")), "{what}: {done}");
            }
            all_closed_cleanly(&s, &format!("{key:?} {mode:?}"));
        }
    }
}

/// Python's `ssl` (OpenSSL) over `MemoryBIO`: sends `size` bytes, then its
/// close_notify once the first reply bytes are in (the half-close), reads
/// the reply up to the server's close_notify. Prints `ok VERSION LENGTH`;
/// a refused certificate prints `refused CODE MESSAGE` and exits 3; a TCP
/// end without close_notify exits 4.
const PYTHON_CLIENT: &str = r#"
import select, socket, ssl, sys, time
port, cafile, version, name, size = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=cafile)
ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
data = (bytes(range(256)) * (size // 256 + 1))[:size]
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname=name)
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
sock.setblocking(False)
deadline = time.monotonic() + 15
handshaken, sent, notified, done = False, 0, False, False
pending, reply = b"", bytearray()
while not done:
    try:
        if not handshaken:
            tls.do_handshake()
            handshaken = True
        while sent < size and len(pending) + out.pending < 1 << 18:
            sent += tls.write(data[sent:sent + 65536])
        while True:
            chunk = tls.read(65536)
            if not chunk:
                done = True
                break
            reply += chunk
    except ssl.SSLWantReadError:
        pass
    except ssl.SSLZeroReturnError:
        done = True
    except ssl.SSLCertVerificationError as e:
        print("refused", e.verify_code, e.verify_message)
        sys.exit(3)
    except ssl.SSLEOFError:
        print("the server closed without close_notify after", len(reply), "bytes")
        sys.exit(4)
    if handshaken and sent == size and reply and not notified:
        notified = True
        try:
            tls.unwrap()
        except ssl.SSLWantReadError:
            pass
    pending += out.read()
    if done:
        break
    timeout = deadline - time.monotonic()
    if timeout <= 0:
        print("timed out: sent", sent, "got", len(reply))
        sys.exit(5)
    readable, writable, _ = select.select([sock], [sock] if pending else [], [], timeout)
    if writable:
        pending = pending[sock.send(pending):]
    if readable:
        got = sock.recv(65536)
        if got:
            inc.write(got)
        else:
            inc.write_eof()
assert notified, "the reply ended before the close_notify was sent"
assert reply == data.upper(), (len(reply), bytes(reply[:40]))
print("ok", tls.version(), len(reply))
"#;

fn python_client(port: u16, ca: PathBuf, version: Version, name: &str, size: usize) -> Done {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PYTHON_CLIENT, &port.to_string()]).arg(ca).args([version.python(), name, &size.to_string()]);
    Proc::spawn(&mut cmd).finish(LIMIT)
}

#[test]
fn python_ssl_half_closes_to_our_servers() {
    if !have("python3", &["-c", "import ssl"]) || !have("openssl", &["version"]) {
        return;
    }
    for key in KEYS {
        let pki = Pki::new(key);
        for mode in MODES {
            let s = start(tls_config(mode, pki.server("server.pem")));
            for version in VERSIONS {
                let size = 1 << 20;
                let done = python_client(s.port, pki.path("ca.pem"), version, NAME, size);
                let what = format!("{key:?} {mode:?} {version:?}");
                assert!(done.ok(), "{what}: {done}");
                assert_eq!(done.out.trim(), format!("ok {} {size}", version.openssl()), "{what}");
            }
            all_closed_cleanly(&s, &format!("{key:?} {mode:?}"));
        }
    }
}

#[test]
fn ncat_is_a_client_of_our_servers() {
    if !have("ncat", &["--version"]) || !have("openssl", &["version"]) {
        return;
    }
    for key in KEYS {
        let pki = Pki::new(key);
        for mode in MODES {
            for version in VERSIONS {
                // ncat has no switch for the version: the server offers one.
                let s = start(tls_config(mode, pki.server_version(version)));
                let what = format!("{key:?} {mode:?} {version:?}");
                let mut c = Proc::spawn(
                    Command::new("ncat")
                        .args(["--ssl", "--ssl-verify", "--ssl-servername", NAME, "--ssl-trustfile"])
                        .arg(pki.path("ca.pem"))
                        .args(["127.0.0.1", &s.port.to_string()]),
                );
                c.write(b"hello from ncat\n");
                let answered = c.wait_stdout("HELLO FROM NCAT\n", LIMIT);
                let done = c.finish(LIMIT);
                assert!(answered && done.ok(), "{what}: {done}");
                assert_eq!(done.out, "HELLO FROM NCAT\n", "{what}");
                // ncat ends with its input, closing TCP without a
                // close_notify: the server closes too, and counts an error.
                assert!(eventually(Duration::from_secs(5), || s.stats().connections_active == 0), "{what}");
                assert_eq!((s.stats().connections_accepted, s.stats().errors), (1, 1), "{what}");
            }
        }
    }
}

#[test]
fn socat_is_a_client_of_our_servers() {
    if !have("socat", &["-V"]) || !have("openssl", &["version"]) {
        return;
    }
    for key in KEYS {
        let pki = Pki::new(key);
        for mode in MODES {
            let s = start(tls_config(mode, pki.server("server.pem")));
            for version in VERSIONS {
                let what = format!("{key:?} {mode:?} {version:?}");
                let proto = match version {
                    Version::Tls13 => "openssl-min-proto-version=TLS1.3",
                    Version::Tls12 => "openssl-max-proto-version=TLS1.2",
                };
                let ca = pki.path("ca.pem");
                let address = format!(
                    "OPENSSL:127.0.0.1:{},cafile={},openssl-commonname={NAME},openssl-snihost={NAME},{proto}",
                    s.port,
                    ca.display()
                );
                // -t 5: after stdin's end, up to 5 s for the reply.
                let mut c = Proc::spawn(Command::new("socat").args(["-t", "5", "-", &address]));
                c.write(b"hello from socat\n");
                let done = c.finish(LIMIT);
                assert!(done.ok(), "{what}: {done}");
                assert_eq!(done.out, "HELLO FROM SOCAT\n", "{what}: {done}");
            }
            all_closed_cleanly(&s, &format!("{key:?} {mode:?}"));
        }
    }
}

/// A server written with Python's `ssl` (a blocking socket), for our
/// client: upper-cases until the client's close_notify, answers it with
/// its own, and prints `clean VERSION` per connection (`ragged` for a TCP
/// end without close_notify, `failed REASON` for a failed handshake).
const PYTHON_SERVER: &str = r#"
import socket, ssl, sys
cert, key, version = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
print(listener.getsockname()[1], flush=True)
while True:
    conn, _ = listener.accept()
    conn.settimeout(10)
    try:
        tls = ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False)
    except (ssl.SSLError, OSError) as e:
        print("failed", e, flush=True)
        conn.close()
        continue
    try:
        while True:
            data = tls.recv(65536)
            if not data:
                break
            tls.sendall(data.upper())
        version = tls.version()
        tls.unwrap()
        print("clean", version, flush=True)
    except ssl.SSLEOFError:
        print("ragged", flush=True)
    except (ssl.SSLError, OSError) as e:
        print("failed", e, flush=True)
    conn.close()
"#;

/// The Python server for `cert` (a file of `pki`), speaking `version`.
struct PythonServer {
    proc: Proc,
    port: u16,
    /// How much of its stdout has been read as lines.
    seen: usize,
}

impl PythonServer {
    fn start(pki: &Pki, cert: &str, version: Version) -> PythonServer {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", PYTHON_SERVER]).arg(pki.path(cert)).arg(pki.path("server.key")).arg(version.python());
        let mut server = PythonServer { proc: Proc::spawn(&mut cmd), port: 0, seen: 0 };
        let first = server.next_line();
        server.port = first.trim().parse().unwrap_or_else(|_| panic!("python3 server: {first:?}"));
        server
    }

    /// Its next line of output; a silent server fails the test after [`LIMIT`].
    fn next_line(&mut self) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let out = self.proc.stdout();
            if let Some(end) = out[self.seen..].find('\n') {
                let line = out[self.seen..self.seen + end].to_owned();
                self.seen += end + 1;
                return line;
            }
            let ended = self.proc.child.try_wait().ok().flatten().is_some();
            assert!(!ended && Instant::now() < deadline, "python3 server: {out}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn our_client_talks_to_a_python_ssl_server() {
    if !have("python3", &["-c", "import ssl"]) || !have("openssl", &["version"]) {
        return;
    }
    for key in KEYS {
        let pki = Pki::new(key);
        for version in VERSIONS {
            let what = format!("{key:?} {version:?}");
            let mut server = PythonServer::start(&pki, "server.pem", version);
            let port = server.port;
            let client = pki.client("ca.pem", NAME);
            let data = pattern(300_000);
            let reply = client.tcp_request("127.0.0.1", port, &data).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(reply == upper(&data), "{what}: reply differs");
            assert_eq!(server.next_line(), format!("clean {}", version.openssl()), "{what}");
            let mut conn = client.connect("127.0.0.1", port).unwrap_or_else(|e| panic!("{what}: {e}"));
            for i in 0..20 {
                let msg = format!("kept open {i} {}", "z".repeat(i * 501));
                let reply = conn.request(msg.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(reply, msg.to_ascii_uppercase().as_bytes(), "{what}");
            }
            conn.close();
            assert_eq!(server.next_line(), format!("clean {}", version.openssl()), "{what}: close sends close_notify");
        }
    }
}

#[test]
fn our_client_refuses_a_wrong_ca_a_wrong_name_and_an_expired_certificate() {
    if !have("python3", &["-c", "import ssl"]) || !have("openssl", &["version"]) {
        return;
    }
    for key in KEYS {
        let pki = Pki::new(key);
        let mut good = PythonServer::start(&pki, "server.pem", Version::Tls13);
        let mut expired = PythonServer::start(&pki, "expired.pem", Version::Tls12);
        let (port, expired_port) = (good.port, expired.port);
        for (ca, name, port, reason) in [
            ("other-ca.pem", NAME, port, "UnknownIssuer"),
            ("ca.pem", "other.test", port, "certificate not valid for name \"other.test\""),
            ("ca.pem", NAME, expired_port, "certificate expired"),
        ] {
            let err = pki.client(ca, name).tcp_request("127.0.0.1", port, b"refused").expect_err(reason);
            assert_eq!(err.code(), ERR_TLS, "{key:?} {reason}: {err}");
            assert!(err.to_string().contains(reason), "{key:?}: {err}");
            // Our alert tells the server why, rather than a bare end of stream.
            let told = if port == expired_port { expired.next_line() } else { good.next_line() };
            assert!(told.starts_with("failed") && told.contains("ALERT"), "{key:?} {reason}: the server saw {told:?}");
        }
        // The same server, trusted and named right, is served.
        assert_eq!(pki.client("ca.pem", NAME).tcp_request("127.0.0.1", port, b"ok").expect("request"), b"OK");
    }
}

#[test]
fn openssl_and_python_refuse_our_server_with_the_reason() {
    if !have("openssl", &["version"]) || !have("python3", &["-c", "import ssl"]) {
        return;
    }
    // OpenSSL's verify codes: 20 unable to get local issuer certificate,
    // 62 hostname mismatch, 10 certificate has expired.
    for key in KEYS {
        let pki = Pki::new(key);
        let good = start(tls_config(Mode::Concurrent, pki.server("server.pem")));
        let expired = start(tls_config(Mode::Iterative, pki.server("expired.pem")));
        for (ca, name, port, code, reason) in [
            ("other-ca.pem", NAME, good.port, 20, "unable to get local issuer certificate"),
            ("ca.pem", "other.test", good.port, 62, "hostname mismatch"),
            ("ca.pem", NAME, expired.port, 10, "certificate has expired"),
        ] {
            for version in VERSIONS {
                let what = format!("{key:?} {version:?} {reason}");
                let done = s_client(&pki, port, version, ca, name).finish(LIMIT);
                assert!(done.status.is_some_and(|s| !s.success()), "{what}: {done}");
                assert!(done.err.contains(&format!("verify error:num={code}:{reason}")), "{what}: {done}");
                let done = python_client(port, pki.path(ca), version, name, 10);
                assert_eq!(done.status.and_then(|s| s.code()), Some(3), "{what}: {done}");
                // Python's words: "Hostname mismatch, certificate is not valid for 'other.test'."
                let words = done.out.to_lowercase();
                assert!(words.starts_with(&format!("refused {code} {reason}")), "{what}: {done}");
            }
        }
        // Both servers go on serving.
        assert_eq!(pki.client("ca.pem", NAME).tcp_request("127.0.0.1", good.port, b"ok").expect("request"), b"OK");
        // The server closes its side just after the client has its reply.
        assert!(eventually(Duration::from_secs(5), || good.stats().connections_active == 0), "{:?}", good.stats());
    }
}
