//! The server: `socket()`, `bind()`, `listen()` here; the loops that
//! `accept()`, `recv()` and `send()` each in a file named for it
//! (`iterative.rs`, `epoll_loop.rs`, `uring_loop.rs`, `udp_loop.rs`).
//! What the TCP loops share lives apart: the connection state machine
//! (`conn.rs`), admission (`admission.rs`), time limits (`pace.rs`).
//!
//! A [`Server`] is bound when it is made (so port 0 can be read back at
//! once), runs on the caller's thread (plus worker threads in concurrent
//! mode) until [`Server::stop`], which is safe from any thread and from a
//! signal handler. Once stopped, it stays stopped.

mod admission;
mod config;
mod conn;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod conn_sim;
mod epoll_loop;
mod iterative;
mod loopguard;
mod pace;
mod reclaim;
mod spread;
mod stats;
#[cfg(feature = "tls")]
mod tls_conn;
mod token;
mod udp_loop;
#[cfg(feature = "io-uring")]
mod uring_loop;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::addr::{host_port_text, parse_numeric, resolve, with_port, IpPort, Purpose, SockAddr};
use crate::error::{Error, Result, ERR_BUSY, ERR_STOPPED};
use crate::sys;

pub use crate::sys::waker::Waker;
pub use config::{ClientCallback, Config, Mode, Transport, MAX_MIN_RATE, MAX_THREADS};
pub use stats::Stats;
pub(crate) use stats::{Counters, End};

/// What the loops share.
pub(crate) struct Shared {
    /// The listening (TCP) or bound (UDP) socket.
    pub socket: OwnedFd,
    /// UDP in concurrent mode: one more socket on the same port per extra
    /// loop (`SO_REUSEPORT`), so each loop reads its own queue.
    pub extra: Vec<OwnedFd>,
    pub local: SockAddr,
    pub waker: Waker,
    pub stopped: AtomicBool,
    pub running: AtomicBool,
    pub config: Config,
    /// The time limits of a TCP connection, from `config`.
    pub limits: pace::Limits,
    /// Loop threads `run` starts (1 in iterative mode).
    pub threads: usize,
    /// Which loops serve, and the bells of those that stand by.
    pub spread: spread::Spread,
    /// UDP: how a standby loop opens its socket in the port's group.
    pub sibling: SocketOptions,
    /// Connections open now from each address, across loops.
    pub per_address: Arc<admission::PerAddress>,
    /// Connections open now, across loops (for `max_connections`).
    pub active: AtomicU64,
    /// One set of counters per loop.
    pub counters: Box<[Counters]>,
}

impl Shared {
    /// A connection counted in `active` is over; its owner closes it right
    /// after. In this order: no longer active, then its end counted, with
    /// Release, pairing with the acquiring loads in `Server::stats`, which
    /// reads the counters before `active`. So no snapshot shows an ended
    /// connection as active, and a client that has seen the close finds
    /// it counted.
    pub(crate) fn ended(&self, counters: &Counters, end: End) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        let counter = match end {
            End::Done => return,
            End::Failed => &counters.errors,
            End::Idle => &counters.idle,
            End::Rejected => &counters.rejected,
        };
        counter.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn tell(&self, peer: &SockAddr) {
        if let Some(cb) = &self.config.on_client {
            cb(peer);
        }
    }

    /// A UDP socket for a standby loop, in the port's `SO_REUSEPORT` group.
    pub(crate) fn open_sibling(&self) -> Result<OwnedFd> {
        open_bound(&self.local, &self.sibling)
    }

    /// The socket loop `index` reads.
    pub(crate) fn socket_for(&self, index: usize) -> &OwnedFd {
        if index == 0 {
            &self.socket
        } else {
            self.extra.get(index - 1).unwrap_or(&self.socket)
        }
    }
}

/// A bound server.
///
/// ```no_run
/// use upcase::server::{Config, Server};
/// let server = Server::bind(Config { port: 0, ..Config::default() })?;
/// println!("listening on {}", server.local_addr());
/// let stopper = server.stopper();
/// std::thread::spawn(move || { std::thread::sleep(std::time::Duration::from_secs(1)); stopper.stop(); });
/// server.run()?;
/// # Ok::<(), upcase::Error>(())
/// ```
pub struct Server {
    shared: Arc<Shared>,
}

/// A handle that stops a server from another thread.
#[derive(Clone)]
pub struct Stopper {
    shared: Arc<Shared>,
}

impl Stopper {
    /// Stops the server (see [`Server::stop`]).
    pub fn stop(&self) {
        stop(&self.shared);
    }
}

/// A TCP loop's read buffer: one chunk, or a TLS server's larger one,
/// which holds records both ways.
fn chunk(config: &Config) -> usize {
    #[cfg(feature = "tls")]
    if config.tls.is_some() {
        return tls_conn::CHUNK;
    }
    #[cfg(not(feature = "tls"))]
    let _ = config;
    crate::CHUNK
}

fn stop(shared: &Shared) {
    shared.stopped.store(true, Ordering::Release);
    shared.waker.wake();
}

impl Server {
    /// `socket()`, `bind()` and, for TCP, `listen()`: the server is
    /// reachable when this returns, and queues clients until `run`.
    pub fn bind(config: Config) -> Result<Server> {
        config.validate()?;
        let socktype = match config.transport {
            Transport::Tcp => libc::SOCK_STREAM,
            Transport::Udp => libc::SOCK_DGRAM,
        };
        let threads = match config.mode {
            Mode::Iterative => 1,
            Mode::Concurrent if config.threads > 0 => config.threads,
            Mode::Concurrent => std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS),
        };
        // `threads: 0`: one loop serves, the others wake as the load asks
        // (`spread.rs`). The io_uring loop keeps every loop serving.
        let standby = config.mode == Mode::Concurrent && config.threads == 0 && !config.io_uring && threads > 1;

        // UDP loops each get a socket of their own on the same port.
        let reuseport = config.transport == Transport::Udp && threads > 1;
        let candidates = bind_candidates(&config.host, config.port, socktype)?;
        let mut first: Option<Error> = None;
        let mut last = None;
        for (addr, dual_stack) in candidates {
            // TCP_DEFER_ACCEPT takes seconds: how long the kernel waits for data.
            let defer_secs = match (config.transport, config.defer_accept) {
                (Transport::Tcp, true) => config.idle_timeout.map_or(60, |t| t.as_secs().clamp(1, 3600) as i32),
                _ => 0,
            };
            let opts = SocketOptions { socktype, dual_stack, reuseport, backlog: config.backlog, defer_secs };
            // Standby UDP loops open their sockets when woken.
            match open_group(&addr, &opts, if standby { 1 } else { threads }) {
                Ok((socket, extra)) => {
                    let local = sys::getsockname(socket.as_fd()).map_err(|e| Error::os("getsockname", e))?;
                    let waker = Waker::new().map_err(|e| Error::os("eventfd", e))?;
                    let spread = spread::Spread::new(threads, standby).map_err(|e| Error::os("eventfd", e))?;
                    let counters = (0..threads).map(|_| Counters::default()).collect();
                    let shared = Shared {
                        socket,
                        extra,
                        local,
                        waker,
                        stopped: AtomicBool::new(false),
                        running: AtomicBool::new(false),
                        limits: pace::Limits::new(config.idle_timeout, config.min_rate),
                        spread,
                        sibling: opts,
                        per_address: admission::PerAddress::new(config.max_connections_per_address),
                        config,
                        threads,
                        active: AtomicU64::new(0),
                        counters,
                    };
                    return Ok(Server { shared: Arc::new(shared) });
                }
                Err(e) => {
                    if first.is_none() {
                        first = Some(e.clone());
                    }
                    last = Some(e);
                }
            }
        }
        // The first address's failure says most (`[::]` in use is the news,
        // not `0.0.0.0` in use after it), unless that family is missing here.
        let missing_family =
            |e: &Error| matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL));
        let chosen = match first {
            Some(f) if !missing_family(&f) => Some(f),
            _ => last,
        };
        Err(chosen.unwrap_or_else(|| {
            Error::invalid(format!("bind to {}", host_port_text(&config.host, config.port)), "no address to bind")
        }))
    }

    /// The bound address (with the port the kernel picked for port 0).
    pub fn local_addr(&self) -> SockAddr {
        self.shared.local
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.shared.local.port()
    }

    /// The configuration it was bound with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Serves clients until [`stop`](Self::stop). Concurrent mode runs
    /// `threads - 1` worker threads beside the caller's and joins them all
    /// before returning. Fails with `ERR_STOPPED` after a stop and
    /// `ERR_BUSY` while already running.
    pub fn run(&self) -> Result<()> {
        let shared = &self.shared;
        if shared.is_stopped() {
            return Err(Error::own(ERR_STOPPED, "run", "the server has been stopped"));
        }
        if shared.running.swap(true, Ordering::AcqRel) {
            return Err(Error::own(ERR_BUSY, "run", "the server is already running"));
        }
        let threads = shared.threads;
        let result = match (shared.config.transport, shared.config.mode) {
            (Transport::Tcp, Mode::Iterative) => contained(|| iterative::run(shared, 0)),
            #[cfg(feature = "io-uring")]
            (Transport::Tcp, Mode::Concurrent) if shared.config.io_uring => match uring_loop::prepare(threads) {
                Ok(engines) => on_threads(shared, engines, uring_loop::run),
                Err(e) => Err(e),
            },
            (Transport::Tcp, Mode::Concurrent) => match epoll_loop::prepare(shared, threads) {
                Ok(epolls) => on_threads(shared, epolls, epoll_loop::run),
                Err(e) => Err(e),
            },
            (Transport::Udp, _) => on_threads(shared, vec![(); threads], |s, i, ()| udp_loop::run(s, i)),
        };
        shared.running.store(false, Ordering::Release);
        result
    }

    /// Stops the server: sets the stop flag and wakes every loop, which
    /// close their connections and return. Safe from any thread and from a
    /// signal handler (an atomic store and one `write`).
    pub fn stop(&self) {
        stop(&self.shared);
    }

    /// True while [`run`](Self::run) is serving on some thread.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::Acquire)
    }

    /// True once [`stop`](Self::stop) has been called.
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stopped()
    }

    /// A handle for stopping the server from elsewhere.
    pub fn stopper(&self) -> Stopper {
        Stopper { shared: Arc::clone(&self.shared) }
    }

    /// The counters now. Not one atomic snapshot, but a consistent one for
    /// connections: one counted as rejected, timed out or failed is not
    /// also counted as active. And it is counted before the server closes
    /// it, so a client that has seen its connection closed finds it counted.
    pub fn stats(&self) -> Stats {
        // Acquire: pairs with `Shared::ended`, and keeps the load of
        // `active` below after the loads of the counters.
        let get = |a: &AtomicU64| a.load(Ordering::Acquire);
        let mut s = Stats::default();
        for c in self.shared.counters.iter() {
            s.connections_accepted += get(&c.accepted);
            s.connections_rejected += get(&c.rejected);
            s.bytes_in += get(&c.bytes_in);
            s.bytes_out += get(&c.bytes_out);
            s.datagrams_in += get(&c.dgrams_in);
            s.datagrams_out += get(&c.dgrams_out);
            s.datagrams_dropped += get(&c.dgrams_dropped);
            s.errors += get(&c.errors);
            s.idle_timeouts += get(&c.idle);
        }
        s.connections_active = get(&self.shared.active);
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A server dropped while a Stopper is alive must not keep loops
        // waiting on a socket nobody will use.
        stop(&self.shared);
    }
}

/// Runs a loop; a panic in it (a bug, or a panicking `on_client`
/// callback) becomes an error, so the caller stops the whole server instead
/// of serving on with a loop missing.
fn contained(f: impl FnOnce() -> Result<()>) -> Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(Error::own(crate::error::ERR_PANIC, "server loop", "panicked")))
}

/// Runs `f` once per item, on as many threads (the caller's and one more per
/// further item), and joins them;
/// the first failure stops the others and is returned.
fn on_threads<T: Send>(shared: &Arc<Shared>, items: Vec<T>, f: fn(&Shared, usize, T) -> Result<()>) -> Result<()> {
    let mut items = items.into_iter();
    let Some(first) = items.next() else { return Ok(()) };
    std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(items.len());
        for (i, item) in items.enumerate() {
            let i = i + 1;
            let spawned = std::thread::Builder::new().name(format!("upcase-loop-{i}")).spawn_scoped(scope, move || {
                let r = contained(|| f(shared, i, item));
                if r.is_err() {
                    stop(shared);
                }
                r
            });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop(shared);
                    return Err(Error::os("spawn a server thread", e));
                }
            }
        }
        let mut result = contained(|| f(shared, 0, first));
        if result.is_err() {
            stop(shared);
        }
        for h in handles {
            let r = h.join().unwrap_or_else(|_| Err(Error::own(crate::error::ERR_PANIC, "server thread", "panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// The addresses to try binding, and whether each is the dual-stack IPv6
/// wildcard. `""` means all interfaces: `[::]` dual-stack first (IPv4
/// clients then arrive as `::ffff:a.b.c.d`), `0.0.0.0` if IPv6 is missing.
fn bind_candidates(host: &str, port: u16, socktype: libc::c_int) -> Result<Vec<(SockAddr, bool)>> {
    if host.is_empty() {
        return Ok(vec![(SockAddr::v6([0; 16], port, 0), true), (SockAddr::v4([0; 4], port), false)]);
    }
    if let Some(IpPort::V6(ip, _, 0)) = parse_numeric(host) {
        if ip == [0; 16] {
            return Ok(vec![(SockAddr::v6(ip, port, 0), true)]);
        }
    }
    Ok(resolve(host, port, socktype, Purpose::Bind)?.into_iter().map(|a| (a, false)).collect())
}

/// How to open a server socket.
#[derive(Clone, Copy)]
pub(crate) struct SocketOptions {
    socktype: libc::c_int,
    dual_stack: bool,
    reuseport: bool,
    backlog: i32,
    /// TCP_DEFER_ACCEPT seconds; 0 leaves it off.
    defer_secs: i32,
}

/// The socket (and, with `SO_REUSEPORT`, one more per extra loop) for
/// `addr`. `SO_REUSEPORT` would let a second server bind a port that is in
/// use and silently share its traffic, so the address is first bound
/// without it: a port in use fails here with `EADDRINUSE`, as it should.
/// Then the group binds the port that probe got (later servers find the
/// group's sockets, not shareable to them, and fail the same way).
fn open_group(addr: &SockAddr, opts: &SocketOptions, threads: usize) -> Result<(OwnedFd, Vec<OwnedFd>)> {
    if !opts.reuseport {
        return Ok((open_bound(addr, opts)?, Vec::new()));
    }
    let probe = open_bound(addr, &SocketOptions { reuseport: false, ..*opts })?;
    let port = sys::getsockname(probe.as_fd()).map_err(|e| Error::os("getsockname", e))?.port();
    drop(probe);
    let Some(ip) = addr.ip_port() else {
        return Err(Error::invalid(format!("bind to {addr}"), "not an IP address"));
    };
    let again = SockAddr::from_ip_port(with_port(ip, port));
    let first = open_bound(&again, opts)?;
    let extra = (1..threads).map(|_| open_bound(&again, opts)).collect::<Result<Vec<_>>>()?;
    Ok((first, extra))
}

/// One candidate: socket, options, bind, listen.
fn open_bound(addr: &SockAddr, opts: &SocketOptions) -> Result<OwnedFd> {
    let what = || format!("bind to {addr}");
    let fd = sys::socket(addr.family(), opts.socktype, true).map_err(|e| Error::os(what(), e))?;
    let set =
        |level, name, value| sys::setsockopt_int(fd.as_fd(), level, name, value).map_err(|e| Error::os(what(), e));
    if opts.socktype == libc::SOCK_STREAM {
        // Rebind at once after a restart, despite old connections in TIME_WAIT.
        set(libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        // Each reply chunk goes out at once, not after Nagle's timer;
        // accepted sockets inherit this, which saves a call per connection.
        set(libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        if opts.defer_secs > 0 {
            set(libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, opts.defer_secs)?;
        }
    }
    if opts.reuseport {
        set(libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    if opts.socktype == libc::SOCK_DGRAM && udp_loop::is_wildcard(addr) {
        // Before the bind: every datagram then brings its destination.
        udp_loop::receive_destinations(&fd, addr.family())?;
    }
    if opts.dual_stack {
        // Said explicitly rather than left to the sysctl default: the IPv6
        // wildcard also takes IPv4 clients.
        set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
    }
    sys::bind(fd.as_fd(), addr).map_err(|e| Error::os(what(), e))?;
    if opts.socktype == libc::SOCK_STREAM {
        sys::listen(fd.as_fd(), opts.backlog).map_err(|e| Error::os(format!("listen on {addr}"), e))?;
    }
    Ok(fd)
}
