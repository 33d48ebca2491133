//! The server from Rust: `upcase-server [--udp] [--iterative] [PORT [HOST]]`.
//!
//! Prints `The server is ready to receive`, the bound address, then one line
//! per client, like the C and Python examples. Stops on SIGINT / SIGTERM.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use upcase::server::{Config, Mode, Server, Transport};

/// The running server, for the signal handler.
static SERVER: AtomicPtr<Server> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_signal(_: libc::c_int) {
    let p = SERVER.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: `p` points at the Server in `main`, which outlives the
        // handler's installation; `stop` is async-signal-safe.
        unsafe { &*p }.stop();
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = Config { host: String::new(), ..Config::default() };
    args.retain(|a| match a.as_str() {
        "--udp" => {
            config.transport = Transport::Udp;
            false
        }
        "--iterative" => {
            config.mode = Mode::Iterative;
            false
        }
        _ => true,
    });
    if args.len() > 2 {
        eprintln!("usage: upcase-server [--udp] [--iterative] [PORT [HOST]]");
        std::process::exit(2);
    }
    if let Some(port) = args.first() {
        config.port = match port.parse() {
            Ok(p) => p,
            Err(_) => {
                eprintln!("upcase-server: bad port {port:?}");
                std::process::exit(2);
            }
        };
    }
    if let Some(host) = args.get(1) {
        config.host = host.clone();
    }
    let what = if config.transport == Transport::Udp { "datagram" } else { "connection" };
    config.on_client = Some(Arc::new(move |peer| println!("{what} from {peer}")));
    let server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("upcase-server: {e}");
            std::process::exit(1);
        }
    };
    println!("The server is ready to receive");
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
            eprintln!("upcase-server: {e}");
            std::process::exit(1);
        }
    }
}
