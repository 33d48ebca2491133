//! Fault tests: a server out of descriptors, ten thousand idle
//! connections, and a stop with clients mid-transfer.
//!
//! The first two run the C example server (`build/c/tcp_server`, built by
//! `make`) in a child process, so that its descriptor limit can be set and
//! its CPU time, memory and descriptors read from `/proc` on their own.
//! The third runs a server in this process and counts this process's
//! threads and descriptors, so the tests take a lock each and never
//! overlap: they also load the machine more than the other tests do.

#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use upcase::client::tcp_request;
use upcase::server::{Config, Mode, Transport};

static SERIAL: Mutex<()> = Mutex::new(());

/// One fault test at a time (a failed one does not block the others).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `build/c/tcp_server` (`build/c-io-uring/tcp_server`, on the library
/// with the io_uring loop, when the io_uring loop is tested), or a failure
/// that says how to get it.
fn tcp_server_binary() -> PathBuf {
    let build = if io_uring_asked() { "build/c-io-uring/tcp_server" } else { "build/c/tcp_server" };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(build);
    assert!(path.is_file(), "{} is missing: run make first (the fault tests run the C example server)", path.display());
    path
}

/// Sets this process's descriptor limit (soft and hard) to `n`.
fn limit_nofile(n: libc::rlim_t) -> std::io::Result<()> {
    let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
    // SAFETY: `lim` is a valid rlimit that lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raises this process's soft descriptor limit to its hard limit (capped
/// at 65,536); returns the soft limit now in force.
fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is writable and lives across the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0, "getrlimit");
    let want = lim.rlim_max.min(65_536);
    if lim.rlim_cur < want {
        let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max };
        // SAFETY: `raised` is a valid rlimit that lives across the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return want;
        }
    }
    lim.rlim_cur
}

/// The example TCP server in a child process, listening on 127.0.0.1.
/// Killed (SIGKILL) on drop if the test did not end it itself.
struct ChildServer {
    child: std::process::Child,
    port: u16,
    /// Reads the child's stdout to its end, so the child never blocks on it.
    reader: Option<JoinHandle<()>>,
}

impl ChildServer {
    /// Starts `tcp_server --quiet ARGS 0 127.0.0.1`, with at most `nofile`
    /// descriptors if given, and waits for its `listening on` line.
    fn spawn(args: &[&str], nofile: Option<libc::rlim_t>) -> ChildServer {
        let mut cmd = Command::new(tcp_server_binary());
        cmd.arg("--quiet").args(args);
        if io_uring_asked() {
            cmd.arg("--io-uring");
        }
        cmd.args(["0", "127.0.0.1"]);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        if let Some(n) = nofile {
            // SAFETY: the closure runs in the child between fork and exec;
            // it makes one system call (setrlimit, async-signal-safe) and
            // neither allocates nor takes a lock.
            unsafe {
                cmd.pre_exec(move || limit_nofile(n));
            }
        }
        let mut child = cmd.spawn().expect("spawn build/c/tcp_server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let mut server = ChildServer { child, port: 0, reader: Some(reader) };
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(a) => a,
            Err(_) => panic!("tcp_server printed no `listening on` line: {:?}", server.child.try_wait()),
        };
        server.port = addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in `listening on` line");
        assert_ne!(server.port, 0, "{addr}");
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn proc_file(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.pid())).expect("read /proc/PID")
    }

    /// User plus system CPU time so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = self.proc_file("stat");
        // The fields after the command name, which is in parentheses and may
        // hold spaces: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').expect("stat") + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        ticks as f64 / per_second as f64
    }

    /// Resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = self.proc_file("status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
    }

    /// Descriptors open in the child.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("read /proc/PID/fd").count()
    }

    /// The child's `epoll` instances (io_uring instances, with
    /// `UPCASE_TEST_IO_URING=1`): one per loop once every loop runs.
    fn epolls(&self) -> usize {
        let kind = if io_uring_asked() { "anon_inode:[io_uring]" } else { "anon_inode:[eventpoll]" };
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else { return 0 };
        dir.filter_map(|e| e.ok()).filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == kind)).count()
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGTERM, then waits (at most 5 s) for the child to exit.
    fn terminate(mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill only sends a signal, to our own child, not yet waited for.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill");
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "tcp_server did not exit within 5 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Tries a request until one is answered; returns how long that took.
fn answered_within(port: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match tcp_request("127.0.0.1", port, b"are you there?", Some(Duration::from_secs(1))) {
            Ok(reply) => {
                assert_eq!(reply, b"ARE YOU THERE?");
                return start.elapsed();
            }
            Err(e) => {
                assert!(start.elapsed() < limit, "no answer within {limit:?}: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Out of descriptors, the server stops accepting for a moment instead of
/// spinning on `accept`, and serves again once descriptors are free.
#[test]
fn out_of_descriptors_the_server_waits_without_spinning_and_recovers() {
    let _serial = serial();
    const LIMIT: usize = 64;
    let mut server = ChildServer::spawn(&["--threads", "2"], Some(LIMIT as libc::rlim_t));
    let port = server.port;
    // This test is about a server already running (the flood at start is
    // the next test's).
    assert!(eventually(Duration::from_secs(5), || server.epolls() == 2), "the server's 2 loops did not start");
    assert_eq!(tcp_request("127.0.0.1", port, b"before", T).expect("request before"), b"BEFORE");

    // More silent clients than the server has descriptors: it takes what
    // it can, the rest wait in the backlog.
    let held: Vec<OwnedFd> = (0..100).map(|_| raw_connect("127.0.0.1", port)).collect();
    assert!(
        eventually(Duration::from_secs(5), || server.fds() >= LIMIT),
        "the server never used all its {LIMIT} descriptors: {} open",
        server.fds()
    );

    let before = server.cpu_seconds();
    std::thread::sleep(Duration::from_secs(1));
    let spent = server.cpu_seconds() - before;
    assert!(spent < 0.2, "out of descriptors, the server used {spent:.2} s of CPU in 1 s: it spins");
    assert!(server.is_running(), "the server died out of descriptors");

    drop(held);
    let took = answered_within(port, Duration::from_secs(3));
    eprintln!("out of descriptors: {spent:.3} s CPU in 1 s held; answered {took:?} after the clients left");
    assert!(took < Duration::from_secs(2), "took {took:?} to serve again");

    let status = server.terminate();
    assert!(status.success(), "tcp_server exited with {status}");
}

/// A flood that takes every descriptor the moment the server starts does
/// not stop it: every loop's epoll instance exists before any loop accepts.
#[test]
fn a_flood_at_start_does_not_stop_the_server() {
    let _serial = serial();
    for _ in 0..10 {
        let mut server = ChildServer::spawn(&["--threads", "2"], Some(64));
        let port = server.port;
        let held: Vec<OwnedFd> = (0..100).map(|_| raw_connect("127.0.0.1", port)).collect();
        std::thread::sleep(Duration::from_millis(100));
        assert!(server.is_running(), "the server stopped under a flood at start");
        drop(held);
        let took = answered_within(port, Duration::from_secs(3));
        assert!(took < Duration::from_secs(2), "took {took:?} to serve again");
        let status = server.terminate();
        assert!(status.success(), "tcp_server exited with {status}");
    }
}

/// How many of `clients` can read (an end of stream, a reset): none
/// should, while the server holds them idle.
fn hung_up(clients: &[OwnedFd]) -> usize {
    use std::os::fd::AsRawFd;
    let mut fds: Vec<libc::pollfd> =
        clients.iter().map(|c| libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let n = libc::nfds_t::try_from(fds.len()).expect("nfds");
    // SAFETY: `fds` is a writable array of `n` pollfds that lives across
    // the call; a timeout of 0 only looks.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), n, 0) };
    assert!(ready >= 0, "poll: {}", std::io::Error::last_os_error());
    fds.iter().filter(|p| p.revents != 0).count()
}

/// Ten thousand idle connections neither slow a new request down nor cost
/// the server more than a few bytes each.
#[test]
fn ten_thousand_idle_connections_cost_little_and_slow_nothing() {
    let _serial = serial();
    const IDLE: usize = 10_000;
    let limit = raise_nofile();
    if limit < IDLE as libc::rlim_t + 100 {
        eprintln!("skipped: the descriptor limit ({limit}) is below {}", IDLE + 100);
        return;
    }
    // The child inherits the raised limit; its max_connections (16,384)
    // is above IDLE already.
    let mut server = ChildServer::spawn(&["--threads", "2"], None);
    let port = server.port;
    // Every loop running (each holds an epoll descriptor, counted below).
    assert!(eventually(Duration::from_secs(5), || server.epolls() == 2), "the server's 2 loops did not start");
    // The listener, the loops and the standard streams: no client yet.
    let fds_before = server.fds();
    // Warm up: the loops' buffers and the code paths are resident now.
    for _ in 0..4 {
        assert_eq!(tcp_request("127.0.0.1", port, b"warm", T).expect("warm-up"), b"WARM");
    }
    // The client sees the server's FIN (its shutdown) a moment before the
    // server closes the descriptor: wait for the last warm-up one to go, or
    // it would be counted as one of the idle connections' (a CI run failed
    // with "9999 of 10000" so).
    assert!(
        eventually(Duration::from_secs(5), || server.fds() == fds_before),
        "the server holds {} descriptors after the warm-up (had {fds_before})",
        server.fds()
    );
    let rss_before = server.rss_kib();

    let start = Instant::now();
    // From ten addresses, each within the default per-address limit.
    let idle: Vec<OwnedFd> = (0..IDLE).map(|i| connect_from([127, 0, 0, 10 + (i / 1000) as u8], port)).collect();
    let connected = start.elapsed();
    assert!(
        eventually(Duration::from_secs(10), || server.fds() >= fds_before + IDLE),
        "the server took {} of {IDLE} connections ({} of them hung up on)",
        server.fds().saturating_sub(fds_before),
        hung_up(&idle)
    );
    assert_eq!(hung_up(&idle), 0, "idle clients the server hung up on");

    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(tcp_request("127.0.0.1", port, b"fresh", T).expect("request"), b"FRESH");
            t.elapsed()
        })
        .collect();
    times.sort();
    let rss_after = server.rss_kib();
    let per_conn = rss_after.saturating_sub(rss_before) as f64 * 1024.0 / IDLE as f64;
    eprintln!(
        "{IDLE} idle connections: opened in {connected:?}; requests best {:?}, median {:?}; \
         VmRSS {rss_before} -> {rss_after} KiB ({per_conn:.0} bytes per connection)",
        times[0], times[2]
    );
    assert!(times[2] < Duration::from_millis(100), "median request took {:?} ({times:?})", times[2]);
    assert!(per_conn < 1024.0, "{per_conn:.0} bytes of VmRSS per idle connection");
    assert!(server.is_running(), "the server died");

    drop(idle);
    assert!(
        eventually(Duration::from_secs(10), || server.fds() <= fds_before),
        "the server still holds {} descriptors after the clients left (had {fds_before})",
        server.fds()
    );
    let status = server.terminate();
    assert!(status.success(), "tcp_server exited with {status}");
}

/// Threads of this process named `upcase-...`: the server's loops
/// (`upcase-loop-N`) and the thread `start` runs it on (`upcase-run`).
/// Counting the process's threads instead would count the test harness's
/// too, which start and end with the other tests.
fn server_threads(prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
    dir.filter_map(|t| t.ok())
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix)))
        .count()
}

/// Stopping a 4-thread server with 50 clients mid-transfer is prompt,
/// closes every connection, and leaves no thread and no descriptor behind.
#[test]
fn stop_with_fifty_clients_mid_transfer_is_prompt_and_leaves_no_thread() {
    let _serial = serial();
    const CLIENTS: usize = 50;
    assert_eq!(server_threads("upcase-"), 0, "a server thread left by an earlier test");
    let fds_before = open_fds();

    let mut s = start(Config { threads: 4, ..config("127.0.0.1", Transport::Tcp, Mode::Concurrent) });
    // The caller's thread (the one `start` spawned) and 3 more loops.
    assert!(
        eventually(Duration::from_secs(5), || server_threads("upcase-") == 4 && server_threads("upcase-loop") == 3),
        "expected 4 threads, 3 of them upcase-loop-N: {} threads, {} loops",
        server_threads("upcase-"),
        server_threads("upcase-loop")
    );

    // Each client sends as much as the kernel takes and reads nothing, so
    // replies back up: the server holds pending chunks and has stopped
    // reading some clients when it is told to stop.
    let data = pattern(512 * 1024);
    let clients: Vec<OwnedFd> = (0..CLIENTS).map(|_| raw_connect("127.0.0.1", s.port)).collect();
    let mut sent = 0;
    for c in &clients {
        sent += send_some(c, &data);
    }
    assert!(
        eventually(Duration::from_secs(5), || {
            let st = s.stats();
            st.connections_active == CLIENTS as u64 && st.bytes_in > 0
        }),
        "the server is not serving the clients: {:?}",
        s.stats()
    );
    std::thread::sleep(Duration::from_millis(50));
    let st = s.stats();
    eprintln!("stop mid-transfer: clients sent {sent} bytes; server in {} out {}", st.bytes_in, st.bytes_out);

    let took = s.stop();
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    for c in &clients {
        assert!(closed_within(c, Duration::from_secs(2)), "a client was left open after stop");
    }
    drop(clients);
    drop(s);

    assert!(
        eventually(Duration::from_secs(2), || server_threads("upcase-") == 0),
        "threads left behind: {} ({} loops)",
        server_threads("upcase-"),
        server_threads("upcase-loop")
    );
    assert_eq!(open_fds(), fds_before, "descriptors left behind");
    eprintln!("stop mid-transfer: stopped in {took:?}");
}

/// A client that reads nothing: a small receive buffer, so that the
/// server's replies soon wait in the server.
fn non_reader(port: u16) -> OwnedFd {
    use std::os::fd::AsFd;
    use upcase::{addr::SockAddr, sys};
    let fd = sys::socket(libc::AF_INET, libc::SOCK_STREAM, false).expect("socket");
    sys::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4096).expect("SO_RCVBUF");
    sys::connect(fd.as_fd(), &SockAddr::v4([127, 0, 0, 1], port)).expect("connect");
    sys::set_nonblocking(fd.as_fd(), true).expect("O_NONBLOCK");
    fd
}

/// After a burst of clients that send but never read has left, the
/// server's memory goes back to within 2 MiB of what it was before, with
/// one loop and with several.
#[test]
fn memory_goes_back_after_a_burst_of_clients_that_do_not_read() {
    let _serial = serial();
    const CLIENTS: usize = 1000;
    if raise_nofile() < CLIENTS as libc::rlim_t + 100 {
        eprintln!("skipped: the descriptor limit is below {}", CLIENTS + 100);
        return;
    }
    for args in [&["--threads", "2"][..], &["--threads", "1"][..]] {
        let server = ChildServer::spawn(args, None);
        let port = server.port;
        for _ in 0..4 {
            assert_eq!(tcp_request("127.0.0.1", port, b"warm", T).expect("warm-up"), b"WARM");
        }
        std::thread::sleep(Duration::from_millis(300));
        let idle = server.rss_kib();
        let clients: Vec<OwnedFd> = (0..CLIENTS).map(|_| non_reader(port)).collect();
        let data = vec![b'x'; 256 * 1024];
        for _ in 0..6 {
            for fd in &clients {
                let _ = upcase::sys::send(std::os::fd::AsFd::as_fd(fd), &data);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let during = server.rss_kib();
        assert!(during > idle + 20 * 1024, "{args:?}: the burst held little ({idle} KiB, then {during} KiB)");
        drop(clients);
        let back = eventually(Duration::from_secs(5), || server.rss_kib() <= idle + 2048);
        assert!(back, "{args:?}: {idle} KiB idle, {during} KiB during the burst, {} KiB after", server.rss_kib());
        eprintln!("{args:?}: RSS {idle} KiB idle, {during} KiB during the burst, {} KiB after", server.rss_kib());
    }
}
