//! `loadgen`: the load generator of `make bench`.
//!
//! Drives an upcase server (or any server keeping its wire protocol) over
//! loopback in one of five workloads and prints exactly one JSON object on
//! stdout at the end. It is built to be cheap per operation: one epoll loop
//! per thread (default one thread) over non-blocking sockets, buffers and
//! expected replies built once, no allocation per operation, latencies in a
//! fixed log-linear histogram.
//!
//! Exit status: 0 when the run completed (even with errors: they are in the
//! JSON), 2 on bad usage, 1 when the run could not be set up at all.

mod hist;
mod modes;
mod net;
mod stats;
mod tls;
mod verify;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use net::{Connector, SockAddr, SrcCycler, SrcMode};

const USAGE: &str = "\
usage: loadgen MODE --host H --port P [--duration SECS] [options]

modes:
  oneshot     --clients N (8) connections in flight; each: connect, send --size (32) bytes,
              half-close, read to EOF, verify, close; repeat until --duration ends
  persistent  --connections N (32) kept-open connections, one --size (64) byte request
              outstanding on each: send, read exactly size bytes, verify, repeat
  stream      one connection, --bytes N (1073741824) each way at once, every byte verified;
              --duration caps it (default 60 s) and the report says how far it got
  udp         --workers N (64) sockets, one --size (64) byte datagram outstanding on each;
              no reply within --timeout-ms (200) counts as lost
  hold        open --idle N (10000) connections and keep them idle, print `HOLDING n` on
              stderr, sleep --hold-secs (2), time --probes N (20) oneshot round trips one at
              a time, check the idle ones are still open, close all
  handshake   TLS (needs --tls-ca): --clients N (8) connections in flight; each: connect,
              full handshake (no resumption), send --size (32) bytes, close_notify, read the
              reply and the server's close_notify, verify, close
  resumed     as handshake, resuming with tickets of the worker's earlier connections

TLS: --tls-ca also runs persistent, stream and hold inside TLS (hold: no probes). The client
offers TLS 1.3, AES-128-GCM and an X25519 key share (P-256 as a fallback group, which
costs a HelloRetryRequest); the report counts handshakes by kind.

options:
  --host H            server address (default 127.0.0.1); an IPv4/IPv6 literal or a name
  --port P            server port (required)
  --duration SECS     run length of oneshot, persistent, udp (default 10)
  --threads N         event-loop threads for oneshot, persistent, udp (default 1)
  --size N            request size (oneshot 32, persistent 64, udp 64, hold probes 32)
  --timeout-ms MS     per-operation timeout (TCP default 5000; UDP reply timeout 200)
  --src MODE          source addresses of TCP clients: `cycle` binds each socket to the next
                      pair of 127.0.0.2-127.0.0.254 x --src-ports (SO_REUSEADDR), escaping
                      the kernel's ephemeral-port search; `kernel` lets connect() choose;
                      `auto` (default) is cycle for 127.x targets, kernel otherwise
  --src-ports LO-HI   source ports for --src cycle (default 10000-32767, below the
                      kernel's ephemeral range so that other programs are not starved)
  --no-idle-ping      hold: only complete the handshake of idle connections (by default
                      each one also does a 1-byte round trip, proving the server serves it)
  --connect-batch N   hold: handshakes in flight while establishing (default 256)
  --tls-ca PEM        TLS: trust the CA certificates of this file
  --tls-name NAME     TLS: the server name sent and checked (default localhost)
  -h, --help          this text

Output: one JSON object on stdout: mode, ops, seconds, ops_per_s, p50_us, p90_us, p99_us,
p999_us, max_us, mean_us, errors, bad_replies, lost, bytes, bytes_per_s, loadgen_cpu_s,
error_kinds{...} and the mode's own fields.";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Oneshot,
    Persistent,
    Stream,
    Udp,
    Hold,
    Handshake,
    Resumed,
}

#[derive(Clone, Debug)]
pub struct Cfg {
    pub mode: Mode,
    pub target: SocketAddr,
    pub duration: Option<f64>,
    pub threads: usize,
    pub clients: usize,
    pub connections: usize,
    pub size: Option<usize>,
    pub bytes: u64,
    pub workers: usize,
    pub timeout_ms: Option<u64>,
    pub idle: usize,
    pub probes: usize,
    pub hold_secs: f64,
    pub src: SrcMode,
    pub idle_ping: bool,
    pub connect_batch: usize,
    pub tls_ca: Option<std::path::PathBuf>,
    pub tls_name: String,
}

impl Cfg {
    /// The run length (or the cap, for stream).
    pub fn duration(&self) -> Duration {
        let d = self.duration.unwrap_or(if self.mode == Mode::Stream { 60.0 } else { 10.0 });
        Duration::from_secs_f64(d)
    }

    pub fn size(&self, default: usize) -> usize {
        self.size.unwrap_or(default)
    }

    pub fn timeout(&self, default_ms: u64) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(default_ms))
    }

    /// A connector for thread `part` of `parts` (disjoint source addresses per thread).
    pub fn connector(&self, part: usize, parts: usize) -> Connector {
        let src = match &self.src {
            SrcMode::Kernel => None,
            SrcMode::Cycle { ips, port_lo, port_hi } => Some(SrcCycler::new(ips, *port_lo, *port_hi, part, parts)),
        };
        Connector::new(SockAddr::new(self.target), src)
    }

    pub fn src_name(&self) -> &'static str {
        match self.src {
            SrcMode::Kernel => "kernel",
            SrcMode::Cycle { .. } => "cycle",
        }
    }
}

#[derive(Debug)]
enum CliError {
    Help,
    Bad(String),
}

fn num<T: std::str::FromStr>(opt: &str, v: &str) -> Result<T, CliError> {
    v.parse().map_err(|_| CliError::Bad(format!("{opt}: not a valid number: {v:?}")))
}

fn positive(opt: &str, v: &str) -> Result<usize, CliError> {
    match num::<usize>(opt, v)? {
        0 => Err(CliError::Bad(format!("{opt} must be at least 1"))),
        n => Ok(n),
    }
}

fn seconds(opt: &str, v: &str) -> Result<f64, CliError> {
    let s: f64 = num(opt, v)?;
    if !(s.is_finite() && (0.0..=86_400.0).contains(&s)) {
        return Err(CliError::Bad(format!("{opt} must be between 0 and 86400 seconds")));
    }
    Ok(s)
}

fn parse_args(args: &[String]) -> Result<Cfg, CliError> {
    let mut mode = None;
    let mut host = "127.0.0.1".to_string();
    let mut port: Option<u16> = None;
    let mut cfg = Cfg {
        mode: Mode::Oneshot,
        target: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        duration: None,
        threads: 1,
        clients: 8,
        connections: 32,
        size: None,
        bytes: 1 << 30,
        workers: 64,
        timeout_ms: None,
        idle: 10_000,
        probes: 20,
        hold_secs: 2.0,
        src: SrcMode::Kernel,
        idle_ping: true,
        connect_batch: 256,
        tls_ca: None,
        tls_name: "localhost".to_string(),
    };
    let mut src = "auto".to_string();
    let (mut port_lo, mut port_hi) = (10_000u16, 32_767u16);
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        i += 1;
        if a == "-h" || a == "--help" {
            return Err(CliError::Help);
        }
        if !a.starts_with("--") {
            if mode.is_some() {
                return Err(CliError::Bad(format!("unexpected argument {a:?}")));
            }
            mode = Some(match a {
                "oneshot" => Mode::Oneshot,
                "persistent" => Mode::Persistent,
                "stream" => Mode::Stream,
                "udp" => Mode::Udp,
                "hold" => Mode::Hold,
                "handshake" => Mode::Handshake,
                "resumed" => Mode::Resumed,
                _ => return Err(CliError::Bad(format!("unknown mode {a:?}"))),
            });
            continue;
        }
        // --opt=value or --opt value
        let (opt, inline) = match a.split_once('=') {
            Some((o, v)) => (o, Some(v.to_string())),
            None => (a, None),
        };
        if opt == "--no-idle-ping" {
            cfg.idle_ping = false;
            continue;
        }
        let val = match inline {
            Some(v) => v,
            None => {
                let v = args.get(i).cloned().ok_or_else(|| CliError::Bad(format!("{opt} needs a value")))?;
                i += 1;
                v
            }
        };
        let v = val.as_str();
        match opt {
            "--host" => host = val.clone(),
            "--port" => port = Some(num(opt, v)?),
            "--duration" => cfg.duration = Some(seconds(opt, v)?),
            "--threads" => cfg.threads = positive(opt, v)?.min(64),
            "--clients" => cfg.clients = positive(opt, v)?,
            "--connections" => cfg.connections = positive(opt, v)?,
            "--size" => cfg.size = Some(positive(opt, v)?),
            "--bytes" => cfg.bytes = num(opt, v)?,
            "--workers" => cfg.workers = positive(opt, v)?,
            "--timeout-ms" => cfg.timeout_ms = Some(positive(opt, v)? as u64),
            "--idle" => cfg.idle = num(opt, v)?,
            "--probes" => cfg.probes = num(opt, v)?,
            "--hold-secs" => cfg.hold_secs = seconds(opt, v)?,
            "--connect-batch" => cfg.connect_batch = positive(opt, v)?,
            "--src" => src = val.clone(),
            "--tls-ca" => cfg.tls_ca = Some(val.clone().into()),
            "--tls-name" => cfg.tls_name = val.clone(),
            "--src-ports" => {
                let (lo, hi) = v.split_once('-').ok_or_else(|| CliError::Bad(format!("{opt}: want LO-HI")))?;
                port_lo = num(opt, lo)?;
                port_hi = num(opt, hi)?;
                if port_lo == 0 || port_lo > port_hi {
                    return Err(CliError::Bad(format!("{opt}: want 1 <= LO <= HI <= 65535")));
                }
            }
            _ => return Err(CliError::Bad(format!("unknown option {opt}"))),
        }
    }
    cfg.mode = mode.ok_or_else(|| CliError::Bad("no MODE given".into()))?;
    let port = port.ok_or_else(|| CliError::Bad("--port is required".into()))?;
    if port == 0 {
        return Err(CliError::Bad("--port must be 1-65535".into()));
    }
    cfg.target = resolve(&host, port)?;
    match (cfg.mode, cfg.tls_ca.is_some()) {
        (Mode::Handshake | Mode::Resumed, false) => {
            return Err(CliError::Bad("handshake and resumed are TLS modes: give --tls-ca".into()))
        }
        (Mode::Oneshot | Mode::Udp, true) => {
            return Err(CliError::Bad("--tls-ca: oneshot over TLS is `handshake`; udp has no TLS".into()))
        }
        _ => {}
    }
    if cfg.mode == Mode::Udp && !(verify::SEQ_LEN..=65_507).contains(&cfg.size(64)) {
        return Err(CliError::Bad(format!("udp --size must be {}-65507", verify::SEQ_LEN)));
    }
    if cfg.size(32) > 1 << 20 {
        return Err(CliError::Bad("--size is at most 1 MiB".into()));
    }
    let loopback_v4 = matches!(cfg.target.ip(), IpAddr::V4(a) if a.is_loopback());
    cfg.src = match src.as_str() {
        "kernel" => SrcMode::Kernel,
        "auto" if !loopback_v4 => SrcMode::Kernel,
        "auto" | "cycle" => {
            if !loopback_v4 {
                return Err(CliError::Bad("--src cycle needs an IPv4 loopback (127.x) target".into()));
            }
            let ips = (2..=254u8).map(|d| Ipv4Addr::new(127, 0, 0, d)).collect();
            SrcMode::Cycle { ips, port_lo, port_hi }
        }
        _ => return Err(CliError::Bad(format!("--src: want auto, kernel or cycle, not {src:?}"))),
    };
    Ok(cfg)
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, CliError> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs =
        (h, port).to_socket_addrs().map_err(|e| CliError::Bad(format!("--host {host:?} does not resolve: {e}")))?;
    addrs.next().ok_or_else(|| CliError::Bad(format!("--host {host:?} has no address")))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(c) => c,
        Err(CliError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(CliError::Bad(msg)) => {
            eprintln!("loadgen: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let tls = match &cfg.tls_ca {
        Some(ca) => match tls::TlsOpts::load(ca, &cfg.tls_name) {
            Ok(t) => Some(t),
            Err(msg) => {
                eprintln!("loadgen: {msg}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let cpu0 = net::cpu_seconds();
    let report = run(&cfg, tls.as_ref());
    let report = match report {
        Ok(r) => r,
        Err(msg) => {
            eprintln!("loadgen: {msg}");
            return ExitCode::from(1);
        }
    };
    let cpu = net::cpu_seconds() - cpu0;
    for m in &report.stats.first_errors {
        eprintln!("loadgen: {m}");
    }
    println!("{}", report.to_json(cpu));
    ExitCode::SUCCESS
}

/// Runs the workload `cfg` asks for, inside TLS when `tls` is given.
fn run(cfg: &Cfg, tls: Option<&tls::TlsOpts>) -> Result<stats::Report, String> {
    match (cfg.mode, tls) {
        (Mode::Oneshot, _) => modes::oneshot(cfg),
        (Mode::Persistent, None) => modes::persistent(cfg),
        (Mode::Stream, None) => modes::stream(cfg),
        (Mode::Udp, _) => modes::udp(cfg),
        (Mode::Hold, None) => modes::hold(cfg),
        (Mode::Handshake | Mode::Resumed | Mode::Persistent, Some(t)) => modes::tls_ops(cfg, t),
        (Mode::Stream, Some(t)) => modes::tls_stream(cfg, t),
        (Mode::Hold, Some(t)) => modes::tls_hold(cfg, t),
        (Mode::Handshake | Mode::Resumed, None) => Err("TLS modes need --tls-ca".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Cfg, CliError> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse_args(&v)
    }

    #[test]
    fn cli_defaults_and_options() {
        let c = parse("oneshot --host 127.0.0.1 --port 9000").unwrap();
        assert_eq!(c.mode, Mode::Oneshot);
        assert_eq!(c.target, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.clients, 8);
        assert_eq!(c.duration(), Duration::from_secs(10));
        assert_eq!(c.src_name(), "cycle");
        let c = parse("stream --port=9000 --host ::1 --bytes 1000").unwrap();
        assert_eq!(c.target, "[::1]:9000".parse().unwrap());
        assert_eq!(c.src_name(), "kernel", "auto is kernel for IPv6");
        assert_eq!(c.duration(), Duration::from_secs(60));
        assert_eq!(c.bytes, 1000);
        let c = parse("udp --port 1 --workers 3 --timeout-ms 50 --duration 0.5").unwrap();
        assert_eq!((c.workers, c.timeout(200)), (3, Duration::from_millis(50)));
        let c = parse("hold --port 1 --idle 5 --probes 2 --hold-secs 0 --no-idle-ping --src kernel").unwrap();
        assert_eq!((c.idle, c.probes, c.hold_secs, c.idle_ping, c.src_name()), (5, 2, 0.0, false, "kernel"));
        let c = parse("resumed --port 1 --tls-ca ca.pem").unwrap();
        assert_eq!(
            (c.mode, c.tls_ca.as_deref(), c.tls_name.as_str()),
            (Mode::Resumed, Some("ca.pem".as_ref()), "localhost")
        );
        let c = parse("persistent --port 1 --tls-ca ca.pem --tls-name example.test").unwrap();
        assert_eq!(c.tls_name, "example.test");
    }

    #[test]
    fn cli_rejects_bad_usage() {
        for bad in [
            "",
            "--port 1",
            "fly --port 1",
            "oneshot",
            "oneshot --port 0",
            "oneshot --port 70000",
            "oneshot --port 1 --clients 0",
            "oneshot --port 1 --clients x",
            "oneshot --port 1 --bogus 3",
            "oneshot --port 1 --duration",
            "oneshot --port 1 --duration -1",
            "udp --port 1 --size 8",
            "oneshot --port 1 --host ::1 --src cycle",
            "oneshot --port 1 --src-ports 5-3",
            "oneshot --port 1 oneshot",
            "handshake --port 1",
            "resumed --port 1",
            "oneshot --port 1 --tls-ca ca.pem",
            "udp --port 1 --tls-ca ca.pem",
        ] {
            assert!(matches!(parse(bad), Err(CliError::Bad(_))), "{bad:?} should be rejected");
        }
        assert!(matches!(parse("oneshot --help"), Err(CliError::Help)));
    }
}
