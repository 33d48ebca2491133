//! Helpers shared by the integration tests: a server on a free port, run
//! on a thread, stopped (and joined) when the guard drops.

#![allow(dead_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use upcase::addr::SockAddr;
use upcase::server::{Config, Mode, Server, Stats, Stopper, Transport};
use upcase::sys;

/// A running server.
pub struct Running {
    pub port: u16,
    pub host: String,
    pub stopper: Stopper,
    pub server: Arc<Server>,
    pub thread: Option<JoinHandle<upcase::Result<()>>>,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Running {
    pub fn stats(&self) -> Stats {
        self.server.stats()
    }

    /// Stops and joins; returns how long the stop took.
    pub fn stop(&mut self) -> Duration {
        let t = Instant::now();
        self.stopper.stop();
        if let Some(h) = self.thread.take() {
            match h.join().expect("server thread") {
                Ok(()) => {}
                // Stopped before `run` began: it refuses to start, as documented.
                Err(e) => assert_eq!(e.code(), upcase::error::ERR_STOPPED, "{e}"),
            }
        }
        t.elapsed()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stopper.stop();
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// A server config for the tests: port 0, two loops. With
/// `UPCASE_TEST_IO_URING=1` in the environment, the concurrent TCP server
/// runs on io_uring (`make test` runs the TCP tests both ways).
pub fn config(host: &str, transport: Transport, mode: Mode) -> Config {
    let io_uring = transport == Transport::Tcp && mode == Mode::Concurrent && io_uring_asked();
    Config { host: host.into(), port: 0, transport, mode, threads: 2, io_uring, ..Config::default() }
}

/// `UPCASE_TEST_IO_URING=1`: test the io_uring loop.
pub fn io_uring_asked() -> bool {
    std::env::var_os("UPCASE_TEST_IO_URING").is_some_and(|v| v == "1")
}

/// Binds `config` (port 0 unless set) and runs it on a thread.
pub fn start(mut config: Config) -> Running {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    config.on_client = Some(Arc::new(move |peer: &SockAddr| {
        if let Ok(mut v) = seen2.lock() {
            v.push(peer.to_string());
        }
    }));
    let host = config.host.clone();
    let server = Arc::new(Server::bind(config).expect("bind"));
    let port = server.port();
    assert_ne!(port, 0);
    let stopper = server.stopper();
    let s2 = Arc::clone(&server);
    // Named, so a test can count the server's threads apart from the test
    // harness's own (which come and go as other tests start and end).
    let thread = std::thread::Builder::new().name("upcase-run".into()).spawn(move || s2.run()).expect("spawn");
    Running { port, host, stopper, server, thread: Some(thread), seen }
}

pub fn tcp(host: &str) -> Running {
    start(config(host, Transport::Tcp, Mode::Concurrent))
}

pub const T: Option<Duration> = Some(Duration::from_secs(10));

/// Connects a raw, non-blocking socket with our own client code.
pub fn raw_connect(host: &str, port: u16) -> OwnedFd {
    upcase::client::connect_tcp(host, port, T).expect("connect").0
}

/// A blocking TCP connection to `port` on 127.0.0.1 from `source`, made
/// non-blocking once connected.
pub fn connect_from(source: [u8; 4], port: u16) -> OwnedFd {
    let fd = upcase::sys::socket(libc::AF_INET, libc::SOCK_STREAM, false).expect("socket");
    upcase::sys::bind(fd.as_fd(), &upcase::addr::SockAddr::v4(source, 0)).expect("bind the client's address");
    upcase::sys::connect(fd.as_fd(), &upcase::addr::SockAddr::v4([127, 0, 0, 1], port)).expect("connect");
    upcase::sys::set_nonblocking(fd.as_fd(), true).expect("O_NONBLOCK");
    fd
}

/// Sends all of `data` on a non-blocking socket, waiting for room.
pub fn send_all(fd: &OwnedFd, data: &[u8]) {
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent < data.len() {
        match sys::send(fd.as_fd(), &data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                assert!(Instant::now() < deadline, "send timed out");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("send: {e}"),
        }
    }
}

/// Sends as much as the kernel takes right now; returns how much.
pub fn send_some(fd: &OwnedFd, data: &[u8]) -> usize {
    let mut sent = 0;
    while sent < data.len() {
        match sys::send(fd.as_fd(), &data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) => panic!("send: {e}"),
        }
    }
    sent
}

/// Reads exactly `n` bytes (or to EOF), bounded by `timeout`.
pub fn recv_n(fd: &OwnedFd, n: usize, timeout: Duration) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + timeout;
    while out.len() < n {
        let want = (n - out.len()).min(buf.len());
        match sys::recv(fd.as_fd(), &mut buf[..want]) {
            Ok(0) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                if Instant::now() > deadline {
                    break;
                }
                let _ = sys::poll2((std::os::fd::AsRawFd::as_raw_fd(fd), libc::POLLIN), None, 10);
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    out
}

/// True when the peer has closed (EOF or reset) within `timeout`.
pub fn closed_within(fd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    loop {
        match sys::recv(fd.as_fd(), &mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                if Instant::now() > deadline {
                    return false;
                }
                let _ = sys::poll2((std::os::fd::AsRawFd::as_raw_fd(fd), libc::POLLIN), None, 10);
            }
            Err(_) => return true,
        }
    }
}

/// Deterministic test bytes covering all 256 values.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + i / 256) % 256) as u8).collect()
}

pub fn upper(v: &[u8]) -> Vec<u8> {
    v.to_ascii_uppercase()
}

/// Waits until `cond` holds, up to `timeout`.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Descriptors open in this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}
