//! The server from Rust: `upcase-server [OPTIONS] [PORT [HOST]]`, with the
//! options of the C servers (build/c/tcp_server, udp_server), `--udp`, and
//! TLS with `--tls-cert PEM --tls-key PEM`.
//!
//! Prints `The server is ready to receive`, the bound address, then one line
//! per client, like the C and Python examples. Stops on SIGINT / SIGTERM.
//! A usage error names the argument at fault and exits 2.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;
use std::time::Duration;

use upcase::server::{Config, Mode, Server, Transport, MAX_MIN_RATE, MAX_THREADS};

const USAGE: &str = "usage: upcase-server [OPTIONS] [PORT [HOST]]";
const HELP: &str = "\
The upper-case server, from Rust: TCP, or UDP with --udp. Prints one line
per client; Ctrl-C (SIGINT) or SIGTERM stops it.

PORT comes first, then HOST, the order python -m http.server takes them
(default: 12000 on every interface, IPv4 and IPv6; PORT 0 picks a free port).
A HOST of digits only is refused: it would be read as an IPv4 number.

options:
  -h, --help                   print this help and exit
      --version                print the library's version and exit
      --udp                    UDP instead of TCP
      --iterative              one client at a time, as the slides' loop
      --quiet                  no line per client
      --threads N              event loops: 0 (one per CPU, the default) to 1024
      --max-connections N      TCP: clients at once, 1 to 4294967295; default 16384
      --max-per-address N      TCP: clients at once from one address (IPv6: one /64),
                               0 (no limit) to 4294967295; default 1024
      --idle-timeout SECONDS   TCP: close a silent client, 0 (never) to 4294967; default 60
      --min-rate BYTES         TCP: least bytes/s a client must send, 0 (off) to
                               1000000000; default 1
      --defer-accept           TCP: accept a connection once its first bytes arrive
      --io-uring               TCP: serve on io_uring instead of epoll (Linux 6.1+)
      --max-datagram BYTES     UDP: largest datagram answered, 1 to 65527 (the default)
      --tls-cert PEM           TCP: serve TLS, with this certificate chain (leaf first)
      --tls-key PEM            TLS: the certificate's private key (PKCS#8, SEC1 or RSA)
      --tls-client-ca PEM      TLS: require client certificates signed by a CA in this file
      --tls-handshake-timeout SECONDS
                               TLS: close a client whose handshake is not done by then,
                               1 to 4294967; default 10";

/// What the command line asks for.
enum Command {
    Help,
    Version,
    Serve { config: Config, quiet: bool, tls: Option<Box<Tls>> },
}

/// The TLS options: PEM files, loaded once the command line is read.
#[cfg_attr(not(feature = "tls"), allow(dead_code))] // refused by `parse` in a build without TLS
struct Tls {
    cert: String,
    key: String,
    client_ca: Option<String>,
    handshake_timeout: Option<Duration>,
}

/// The options without a value, and those with one (`--name VALUE` or `--name=VALUE`).
const FLAGS: &[&str] =
    &["-h", "--help", "--version", "--udp", "--iterative", "--quiet", "--defer-accept", "--io-uring"];
const VALUED: &[&str] = &[
    "--threads",
    "--max-connections",
    "--max-per-address",
    "--idle-timeout",
    "--min-rate",
    "--max-datagram",
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
    "--tls-handshake-timeout",
];

/// A whole number of digits only, from `low` to `high`.
fn number(option: &str, text: &str, low: u64, high: u64, what: &str) -> Result<u64, String> {
    let digits = !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u64>() {
        Ok(n) if digits && (low..=high).contains(&n) => Ok(n),
        _ => Err(format!("{option} '{text}': give {what}")),
    }
}

/// Reads the options, then `[PORT [HOST]]`; `Err` is the usage error's message.
fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut config = Config { host: String::new(), ..Config::default() };
    let mut quiet = false;
    let (mut cert, mut key, mut client_ca, mut handshake_timeout) = (None, None, None, None);
    let mut positional = Vec::new();
    // Options of one protocol only, as given: checked once --udp is known.
    let (mut tcp_only, mut udp_only) = (None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            positional.extend(args.by_ref());
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            positional.push(arg);
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let value = if VALUED.contains(&name.as_str()) {
            inline.or_else(|| args.next()).ok_or_else(|| format!("option '{name}' needs a value"))?
        } else if !FLAGS.contains(&name.as_str()) {
            return Err(format!("unknown option '{arg}'"));
        } else if inline.is_some() {
            return Err(format!("option '{name}' takes no value"));
        } else {
            String::new()
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--version" => return Ok(Command::Version),
            "--udp" => config.transport = Transport::Udp,
            "--iterative" => config.mode = Mode::Iterative,
            "--quiet" => quiet = true,
            "--threads" => {
                let max = MAX_THREADS as u64;
                config.threads = number(&name, &value, 0, max, "a number from 0 (one per CPU) to 1024")? as usize;
            }
            "--max-connections" => {
                let n = number(&name, &value, 1, u32::MAX.into(), "a number from 1 to 4294967295")?;
                config.max_connections = n as usize;
                tcp_only = Some(name);
            }
            "--max-per-address" => {
                let n = number(&name, &value, 0, u32::MAX.into(), "a number from 0 (no limit) to 4294967295")?;
                config.max_connections_per_address = n as usize;
                tcp_only = Some(name);
            }
            "--idle-timeout" => {
                let secs = number(&name, &value, 0, 4_294_967, "seconds, 0 (never) to 4294967")?;
                config.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs));
                tcp_only = Some(name);
            }
            "--min-rate" => {
                let max = MAX_MIN_RATE.into();
                config.min_rate = number(&name, &value, 0, max, "bytes per second, 0 (off) to 1000000000")? as u32;
                tcp_only = Some(name);
            }
            "--defer-accept" => {
                config.defer_accept = true;
                tcp_only = Some(name);
            }
            "--io-uring" => {
                config.io_uring = true;
                tcp_only = Some(name);
            }
            "--max-datagram" => {
                config.max_datagram = number(&name, &value, 1, 65_527, "bytes, 1 to 65527")? as usize;
                udp_only = Some(name);
            }
            "--tls-cert" | "--tls-key" | "--tls-client-ca" => {
                if value.is_empty() {
                    return Err(format!("{name} '': give a PEM file"));
                }
                let slot = match name.as_str() {
                    "--tls-cert" => &mut cert,
                    "--tls-key" => &mut key,
                    _ => &mut client_ca,
                };
                *slot = Some(value);
                tcp_only = Some(name);
            }
            "--tls-handshake-timeout" => {
                let secs = number(&name, &value, 1, 4_294_967, "seconds, 1 to 4294967")?;
                handshake_timeout = Some(Duration::from_secs(secs));
                tcp_only = Some(name);
            }
            _ => return Err(format!("unknown option '{arg}'")),
        }
    }
    match (config.transport, tcp_only, udp_only) {
        (Transport::Udp, Some(option), _) => return Err(format!("{option} is for TCP, not --udp")),
        (Transport::Tcp, _, Some(option)) => return Err(format!("{option} is for UDP (add --udp)")),
        _ => {}
    }
    let mut positional = positional.into_iter();
    if let Some(port) = positional.next() {
        config.port = number("PORT", &port, 0, 65_535, "a number from 0 to 65535")
            .map_err(|_| format!("PORT '{port}' is not a number from 0 to 65535"))? as u16;
    }
    if let Some(host) = positional.next() {
        if !host.is_empty() && host.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "HOST '{host}' is only digits: give a name or an address such as 127.0.0.1 (PORT comes before HOST)"
            ));
        }
        config.host = host;
    }
    if let Some(extra) = positional.next() {
        return Err(format!("too many arguments: '{extra}'"));
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(Box::new(Tls { cert, key, client_ca, handshake_timeout })),
        (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
        (None, None) if client_ca.is_some() => return Err("--tls-client-ca needs --tls-cert and --tls-key".into()),
        (None, None) if handshake_timeout.is_some() => {
            return Err("--tls-handshake-timeout needs --tls-cert and --tls-key".into())
        }
        (None, None) => None,
    };
    if tls.is_some() && config.io_uring {
        return Err("--io-uring serves no TLS: drop --io-uring or --tls-cert".into());
    }
    if tls.is_some() && !cfg!(feature = "tls") {
        return Err("--tls-cert: this build has no TLS (cargo feature tls)".into());
    }
    Ok(Command::Serve { config, quiet, tls })
}

/// Loads the PEM files into `config`; an error names the file and the reason.
#[cfg(feature = "tls")]
fn load_tls(config: &mut Config, tls: &Tls) -> upcase::Result<()> {
    let client_ca = tls.client_ca.as_deref().map(std::path::Path::new);
    let server = upcase::tls::TlsServer::from_pem(&tls.cert, &tls.key, client_ca)?;
    config.tls = Some(Arc::new(server));
    if let Some(timeout) = tls.handshake_timeout {
        config.tls_handshake_timeout = timeout;
    }
    Ok(())
}

/// Never called: `parse` refuses the TLS options without the feature.
#[cfg(not(feature = "tls"))]
fn load_tls(_: &mut Config, _: &Tls) -> upcase::Result<()> {
    Ok(())
}

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
    let (mut config, quiet, tls) = match parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            println!("{USAGE}\n{HELP}");
            return;
        }
        Ok(Command::Version) => {
            println!("upcase-server (upcase) {}", upcase::VERSION);
            return;
        }
        Ok(Command::Serve { config, quiet, tls }) => (config, quiet, tls),
        Err(why) => {
            eprintln!("upcase-server: {why}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Some(tls) = tls {
        if let Err(e) = load_tls(&mut config, &tls) {
            eprintln!("upcase-server: {e}");
            std::process::exit(1);
        }
    }
    if !quiet {
        let what = if config.transport == Transport::Udp { "datagram" } else { "connection" };
        config.on_client = Some(Arc::new(move |peer| println!("{what} from {peer}")));
    }
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
