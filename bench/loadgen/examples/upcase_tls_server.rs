//! upcase-tls-server: the upcase concurrent TCP server with TLS, for
//! `make bench` when build/c/tcp_server does not take `--tls-cert`.
//!
//! usage: upcase-tls-server [--quiet] [--threads N] --tls-cert PEM --tls-key PEM PORT HOST
//!
//! Prints `listening on ADDR`, serves until SIGINT or SIGTERM.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use upcase::server::{Config, Server};
use upcase::tls::TlsServer;

static SERVER: AtomicPtr<Server> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_signal(_: libc::c_int) {
    let p = SERVER.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: `p` points at the Server in `main`, which outlives the
        // handler's installation; `stop` is async-signal-safe.
        unsafe { &*p }.stop();
    }
}

fn usage(why: &str) -> ! {
    eprintln!("upcase-tls-server: {why}\nusage: upcase-tls-server [--quiet] [--threads N] --tls-cert PEM --tls-key PEM PORT HOST");
    std::process::exit(2);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut cert, mut key, mut threads, mut positional) = (None, None, 0usize, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quiet" => {}
            "--tls-cert" => cert = args.next(),
            "--tls-key" => key = args.next(),
            "--threads" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => threads = n,
                None => usage("--threads needs a number"),
            },
            _ if a.starts_with('-') => usage(&format!("unknown option {a}")),
            _ => positional.push(a),
        }
    }
    let (Some(cert), Some(key)) = (cert, key) else { usage("--tls-cert and --tls-key are required") };
    let [port, host] = positional.as_slice() else { usage("want PORT HOST") };
    let Ok(port) = port.parse() else { usage("PORT is a number") };
    let tls = match TlsServer::from_pem(&cert, &key, None) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("upcase-tls-server: {e}");
            std::process::exit(1);
        }
    };
    let config = Config { host: host.clone(), port, threads, tls: Some(Arc::new(tls)), ..Config::default() };
    let server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("upcase-tls-server: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", server.local_addr());
    SERVER.store(&server as *const Server as *mut Server, Ordering::Release);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installing a handler that only calls async-signal-safe code.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let result = server.run();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: restoring the default disposition before `server` goes away.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    SERVER.store(std::ptr::null_mut(), Ordering::Release);
    if let Err(e) = result {
        if e.code() != upcase::error::ERR_STOPPED {
            eprintln!("upcase-tls-server: {e}");
            std::process::exit(1);
        }
    }
}
