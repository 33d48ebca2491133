//! tokio-server: the benchmark's "what a Rust user would write instead" reference.
//!
//! Multi-threaded tokio runtime, one task per TCP connection, a 64 KiB buffer,
//! read -> upper-case -> write_all until EOF, then shut the write half down.
//! With `--udp`: one recv_from/send_to task per runtime worker, all sharing
//! one socket.
//!
//! usage: tokio-server [--udp] PORT HOST   (PORT may be 0)

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::signal::unix::{signal, SignalKind};

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

async fn serve_connection(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        upper(&mut buf[..n]);
        stream.write_all(&buf[..n]).await?;
    }
    stream.shutdown().await
}

async fn serve_tcp(host: &str, port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind((host, port)).await?;
    announce(listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = serve_connection(stream).await;
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
    let port = match (args.len(), args.first().map(|p| p.parse::<u16>())) {
        (2, Some(Ok(port))) => port,
        _ => {
            eprintln!("usage: tokio-server [--udp] PORT HOST");
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
            serve_tcp(&host, port).await
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
