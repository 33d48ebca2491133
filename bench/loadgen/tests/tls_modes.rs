//! The TLS modes of the load generator against an in-process upcase TLS
//! server, and against a tiny rustls server that breaks the protocol in one
//! way each: every mode must count good operations as good and bad ones as
//! bad. Certificates are made fresh by each test (rcgen).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use upcase::server::{Config, Server};
use upcase::tls::rustls;
use upcase::tls::TlsServer;

/// A CA (`ca.pem`) and a `localhost` certificate it signed (`server.pem`, `server.key`).
fn pki() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loadgen-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name.push(DnType::CommonName, "loadgen test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).expect("self-sign").pem()).expect("write");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert =
        CertificateParams::new(vec!["localhost".into()]).expect("params").signed_by(&key, &issuer).expect("sign");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
    dir
}

/// The upcase TLS server on a free port, running on a thread of its own.
fn upcase_server(dir: &Path) -> (Arc<Server>, std::thread::JoinHandle<()>) {
    let tls = TlsServer::from_pem(dir.join("server.pem"), dir.join("server.key"), None).expect("TLS config");
    let config =
        Config { host: "127.0.0.1".into(), port: 0, threads: 1, tls: Some(Arc::new(tls)), ..Config::default() };
    let server = Arc::new(Server::bind(config).expect("bind"));
    let s = server.clone();
    let t = std::thread::spawn(move || {
        let _ = s.run();
    });
    (server, t)
}

/// Runs the load generator and returns its JSON line.
fn loadgen(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).output().expect("run loadgen");
    assert!(out.status.success(), "loadgen {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The integer field `key` of the report.
fn int(json: &str, key: &str) -> u64 {
    let at = json.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = &json[at + key.len() + 3..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().unwrap_or_else(|_| panic!("{key} is not an integer in {json}"))
}

fn run(mode: &str, port: u16, dir: &Path, extra: &[&str]) -> String {
    let ca = dir.join("ca.pem");
    let port = port.to_string();
    let mut args = vec![mode, "--port", &port, "--tls-ca", ca.to_str().expect("path"), "--timeout-ms", "3000"];
    args.extend_from_slice(extra);
    loadgen(&args)
}

#[test]
fn every_tls_mode_against_the_upcase_tls_server() {
    let dir = pki();
    let (server, t) = upcase_server(&dir);
    let port = server.port();

    let j = run("handshake", port, &dir, &["--duration", "0.5", "--threads", "2", "--clients", "4"]);
    assert!(int(&j, "ops") > 0, "{j}");
    assert_eq!((int(&j, "errors"), int(&j, "bad_replies")), (0, 0), "{j}");
    assert_eq!(int(&j, "handshakes_resumed"), 0, "full handshakes only: {j}");
    assert!(int(&j, "handshakes_full") >= int(&j, "ops"), "{j}");
    assert!(j.contains("\"negotiated\":\"TLSv1_3 / TLS13_AES_128_GCM_SHA256 / X25519\""), "{j}");

    let j = run("resumed", port, &dir, &["--duration", "0.5", "--clients", "2"]);
    assert!(int(&j, "ops") > 4, "{j}");
    assert_eq!((int(&j, "errors"), int(&j, "bad_replies")), (0, 0), "{j}");
    assert!(int(&j, "handshakes_full") <= 2, "only each slot's first is full: {j}");
    assert!(int(&j, "handshakes_resumed") >= int(&j, "ops") - 2, "{j}");

    let j = run("persistent", port, &dir, &["--duration", "0.5", "--connections", "4"]);
    assert!(int(&j, "ops") > int(&j, "connections_in_flight"), "{j}");
    assert_eq!((int(&j, "errors"), int(&j, "bad_replies"), int(&j, "reconnects")), (0, 0, 0), "{j}");

    let j = run("stream", port, &dir, &["--bytes", "3000000", "--duration", "20"]);
    assert!(j.contains("\"verified\":true"), "{j}");
    assert_eq!(int(&j, "received_bytes"), 3_000_000, "{j}");

    let j = run("hold", port, &dir, &["--idle", "20", "--hold-secs", "0.1"]);
    assert_eq!((int(&j, "idle_established"), int(&j, "idle_alive_after_probes")), (20, 20), "{j}");
    assert_eq!(int(&j, "errors"), 0, "{j}");

    server.stop();
    t.join().expect("server thread");
}

/// How the tiny server breaks the protocol.
#[derive(Clone, Copy)]
enum Fault {
    /// Echoes without upper-casing.
    NoUpper,
    /// Answers, then closes TCP without its close_notify.
    NoCloseNotify,
}

/// A rustls server answering one connection at a time, with `fault`.
fn faulty_server(dir: &Path, fault: Fault) -> u16 {
    let chain = rustls::pki_types::pem::PemObject::pem_file_iter(dir.join("server.pem"))
        .expect("read")
        .collect::<Result<Vec<rustls::pki_types::CertificateDer<'static>>, _>>()
        .expect("certs");
    let key: rustls::pki_types::PrivateKeyDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_file(dir.join("server.key")).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else { continue };
            let mut s = rustls::StreamOwned::new(conn, sock);
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !matches!(fault, Fault::NoUpper) {
                            buf[..n].make_ascii_uppercase();
                        }
                        if s.write_all(&buf[..n]).and_then(|()| s.flush()).is_err() {
                            break;
                        }
                    }
                }
            }
            if !matches!(fault, Fault::NoCloseNotify) {
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        }
    });
    port
}

#[test]
fn a_reply_not_upper_cased_is_a_bad_reply() {
    let dir = pki();
    let port = faulty_server(&dir, Fault::NoUpper);
    let j = run("handshake", port, &dir, &["--duration", "0.3", "--clients", "1"]);
    assert_eq!(int(&j, "ops"), 0, "{j}");
    assert!(int(&j, "bad_replies") > 0, "{j}");
}

#[test]
fn a_reply_without_close_notify_is_a_tls_error() {
    let dir = pki();
    let port = faulty_server(&dir, Fault::NoCloseNotify);
    let j = run("handshake", port, &dir, &["--duration", "0.3", "--clients", "1"]);
    assert_eq!(int(&j, "ops"), 0, "{j}");
    assert!(int(&j, "tls") > 0, "{j}");
}

#[test]
fn a_server_outside_the_trusted_ca_is_refused() {
    let (dir, other) = (pki(), pki());
    let port = faulty_server(&other, Fault::NoUpper);
    let j = run("handshake", port, &dir, &["--duration", "0.3", "--clients", "1"]);
    assert_eq!(int(&j, "ops"), 0, "{j}");
    assert!(int(&j, "tls") > 0, "{j}");
}
