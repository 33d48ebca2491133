//! tokio-server: the benchmark's "what a Rust user would write instead" reference.
//!
//! Multi-threaded tokio runtime, one task per TCP connection, a 64 KiB buffer,
//! read -> upper-case -> write_all until EOF, then shut the write half down.
//! With `--udp`: one recv_from/send_to task per runtime worker, all sharing
//! one socket. With `--tls-cert PEM --tls-key PEM`: the same over
//! tokio-rustls (aws-lc-rs provider and stateless tickets, as upcase's TLS
//! server); the client's close_notify is its EOF, and the shutdown sends
//! ours.
//!
//! usage: tokio-server [--udp | --tls-cert PEM --tls-key PEM] PORT HOST   (PORT may be 0)

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

const BUF_SIZE: usize = 64 * 1024;

fn upper(data: &mut [u8]) {
    data.make_ascii_uppercase();
}

fn announce(addr: SocketAddr) {
    // SocketAddr's Display already writes IPv6 as [h]:p.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {addr}");
    let _ = out.flush();
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        upper(&mut buf[..n]);
        stream.write_all(&buf[..n]).await?;
        stream.flush().await?;
    }
    stream.shutdown().await
}

/// The server side of TLS from a PEM chain and key, with the aws-lc-rs provider.
#[allow(deprecated)] // ring: no post-quantum key exchange, as upcase's provider
fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| format!("TLS config: {e}"))?;
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("TLS ticketer: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve_tcp(host: &str, port: u16, tls: Option<TlsAcceptor>) -> std::io::Result<()> {
    let listener = TcpListener::bind((host, port)).await?;
    announce(listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(s) => serve_connection(s).await,
                            Err(e) => Err(e),
                        },
                        None => serve_connection(stream).await,
                    };
                });
            }
            // e.g. EMFILE: keep serving the connections we have.
            Err(e) => eprintln!("tokio-server: accept: {e}"),
        }
    }
}

async fn serve_udp(host: &str, port: u16) -> std::io::Result<()> {
    let socket = Arc::new(UdpSocket::bind((host, port)).await?);
    announce(socket.local_addr()?);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let socket = Arc::clone(&socket);
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; BUF_SIZE];
            loop {
                // An error here is an ICMP report about an earlier reply: ignore it.
                if let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                    upper(&mut buf[..n]);
                    let _ = socket.send_to(&buf[..n], peer).await;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let udp = args.first().is_some_and(|a| a == "--udp");
    if udp {
        args.remove(0);
    }
    let mut tls = None;
    if args.first().is_some_and(|a| a == "--tls-cert")
        && args.get(2).is_some_and(|a| a == "--tls-key")
        && args.len() >= 4
    {
        match tls_acceptor(&args[1], &args[3]) {
            Ok(t) => tls = Some(t),
            Err(e) => {
                eprintln!("tokio-server: {e}");
                return ExitCode::FAILURE;
            }
        }
        args.drain(..4);
    }
    let port = match (args.len(), args.first().map(|p| p.parse::<u16>())) {
        (2, Some(Ok(port))) => port,
        _ => {
            eprintln!("usage: tokio-server [--udp | --tls-cert PEM --tls-key PEM] PORT HOST");
            return ExitCode::from(2);
        }
    };
    let host = args[1].clone();

    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            eprintln!("tokio-server: cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let serve = async {
        if udp {
            serve_udp(&host, port).await
        } else {
            serve_tcp(&host, port, tls).await
        }
    };
    tokio::select! {
        result = serve => {
            if let Err(e) = result {
                eprintln!("tokio-server: {host}:{port}: {e}");
            }
            ExitCode::FAILURE
        }
        _ = term.recv() => ExitCode::SUCCESS,
        _ = int.recv() => ExitCode::SUCCESS,
    }
}
