//! oneshot: `--clients` connections in flight; each connects, sends `--size`
//! bytes, half-closes, reads to EOF, checks the reply, closes, and starts over.
//! Latency is connect start to EOF.
//!
//! Per operation: socket, [setsockopt + bind], connect, epoll_ctl(ADD), send,
//! shutdown, recv until EOF (usually 2), close, plus a share of epoll_wait.
//! The request goes with `MSG_MORE`, so that the shutdown that follows it
//! adds the FIN to the same segment: one packet less to make and deliver
//! per connection, the same for every server (each still sees a request
//! and then the end of stream, in one wake-up or two).
//! The send is tried right after connect() even when it said EINPROGRESS: on
//! loopback the handshake has usually completed by the time connect returns,
//! which saves waiting for the EPOLLOUT wake-up.

use std::time::{Duration, Instant};

use super::{drive, fatal, run_split, WorkerResult};
use crate::net::{self, Connector, Epoll, Fd, EV_ERR, EV_ET, EV_HUP, EV_IN, EV_OUT, EV_RDHUP};
use crate::stats::{Latency, Report, Stats, J};
use crate::verify::{chunk_ok, Pattern};
use crate::Cfg;

const PERIOD: usize = 512;
/// A reply this much longer than the request is given up on (bad reply) rather than read forever.
const MAX_EXTRA: usize = 1 << 16;

#[derive(Clone, Copy, PartialEq, Debug)]
enum St {
    Idle,
    Sending,
    Reading,
}

struct Slot {
    fd: Option<Fd>,
    st: St,
    start: Instant,
    off: usize,
    sent: usize,
    got: usize,
    bad: bool,
}

struct Worker {
    ep: Epoll,
    conn: Connector,
    pat: Pattern,
    size: usize,
    slots: Vec<Slot>,
    /// Slots whose last start failed, restarted on the next loop turn.
    idle: Vec<usize>,
    spare: Vec<usize>,
    next_off: usize,
    rbuf: Vec<u8>,
    st: Stats,
}

impl Worker {
    fn start(&mut self, i: usize, now: Instant) {
        let off = self.next_off;
        self.next_off = (self.next_off + 37) % PERIOD;
        let fd = match self.conn.connect() {
            Ok((fd, _)) => fd,
            Err(e) => {
                self.st.error("connect", e);
                self.idle.push(i);
                return;
            }
        };
        if let Err(e) = self.ep.add(&fd, EV_IN | EV_OUT | EV_RDHUP | EV_ET, i as u64) {
            self.st.error("epoll_ctl", e);
            self.idle.push(i);
            return;
        }
        self.slots[i] = Slot { fd: Some(fd), st: St::Sending, start: now, off, sent: 0, got: 0, bad: false };
        self.send(i);
    }

    /// Ends slot `i`'s operation (closing its socket) and starts the next one.
    fn restart(&mut self, i: usize, now: Instant) {
        self.slots[i].fd = None;
        self.slots[i].st = St::Idle;
        self.start(i, now);
    }

    fn fail(&mut self, i: usize, what: &str, e: i32) {
        self.st.error(what, e);
        self.slots[i].fd = None;
        self.slots[i].st = St::Idle;
        self.idle.push(i);
    }

    fn send(&mut self, i: usize) {
        let s = &mut self.slots[i];
        let Some(fd) = s.fd.as_ref() else { return };
        // MSG_MORE: the shutdown below follows as soon as all is sent.
        let r = net::send_more(fd, self.pat.request(s.off + s.sent, self.size - s.sent));
        match r {
            Ok(n) => {
                s.sent += n;
                if s.sent == self.size {
                    match net::shutdown_wr(fd) {
                        Ok(()) => s.st = St::Reading,
                        Err(e) => self.fail(i, "shutdown", e),
                    }
                }
            }
            // Handshake not finished yet (or buffer full): EPOLLOUT will call us again.
            Err(libc::EAGAIN) => {}
            Err(e) => self.fail(i, "send", e),
        }
    }

    fn read(&mut self, i: usize) {
        loop {
            let s = &mut self.slots[i];
            let Some(fd) = s.fd.as_ref() else { return };
            match net::recv(fd, &mut self.rbuf) {
                Ok(0) => {
                    let now = Instant::now();
                    if !s.bad && s.got == self.size {
                        self.st.ops += 1;
                        self.st.bytes += self.size as u64;
                        self.st.hist.record(now.duration_since(s.start).as_nanos() as u64);
                    } else {
                        let (got, size, bad) = (s.got, self.size, s.bad);
                        self.st.bad(&describe(got, size, bad));
                    }
                    self.restart(i, now);
                    return;
                }
                Ok(n) => {
                    if !chunk_ok(self.pat.expected(s.off, self.size), s.got, &self.rbuf[..n]) {
                        s.bad = true;
                    }
                    s.got += n;
                    if s.got > self.size + MAX_EXTRA {
                        let got = s.got;
                        self.st.bad(&format!("{got}+ bytes back for a {}-byte request", self.size));
                        self.restart(i, Instant::now());
                        return;
                    }
                }
                Err(libc::EAGAIN) => return,
                Err(e) => {
                    self.fail(i, "recv", e);
                    return;
                }
            }
        }
    }

    fn event(&mut self, i: usize, bits: u32) {
        if i >= self.slots.len() {
            return;
        }
        if self.slots[i].st == St::Sending && bits & (EV_OUT | EV_ERR | EV_HUP) != 0 {
            self.send(i);
        }
        if self.slots[i].st == St::Reading && bits & (EV_IN | EV_RDHUP | EV_HUP | EV_ERR) != 0 {
            self.read(i);
        }
    }

    fn expire(&mut self, now: Instant, timeout: Duration) {
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.fd.is_some() && now.duration_since(s.start) > timeout {
                // Part of a reply and then nothing: a cut reply, not a slow server.
                if s.got > 0 {
                    let msg = format!("{} of {} bytes, then nothing for {timeout:?}", s.got, self.size);
                    self.st.bad(&msg);
                } else {
                    self.st.timeout("oneshot");
                }
                self.slots[i].fd = None;
                self.slots[i].st = St::Idle;
                self.idle.push(i);
            }
        }
    }
}

pub(crate) fn describe(got: usize, size: usize, wrong_bytes: bool) -> String {
    if got != size {
        format!("{got} bytes back for a {size}-byte request")
    } else if wrong_bytes {
        format!("{size} bytes back, but not the upper-cased request")
    } else {
        "unexpected".to_string()
    }
}

impl super::Slots for Worker {
    fn epoll(&self) -> &Epoll {
        &self.ep
    }
    fn queues(&mut self) -> (&mut Vec<usize>, &mut Vec<usize>) {
        (&mut self.idle, &mut self.spare)
    }
    fn start(&mut self, i: usize, now: Instant) {
        Worker::start(self, i, now)
    }
    fn event(&mut self, i: usize, bits: u32) {
        Worker::event(self, i, bits)
    }
    fn expire(&mut self, now: Instant, timeout: Duration) {
        Worker::expire(self, now, timeout)
    }
}

fn worker(cfg: &Cfg, part: usize, parts: usize, clients: usize, deadline: Instant) -> WorkerResult {
    let size = cfg.size(32);
    let timeout = cfg.timeout(5000);
    let mut w = Worker {
        ep: Epoll::new().map_err(fatal("epoll_create1"))?,
        conn: cfg.connector(part, parts),
        pat: Pattern::new(PERIOD, size),
        size,
        slots: (0..clients)
            .map(|_| Slot { fd: None, st: St::Idle, start: Instant::now(), off: 0, sent: 0, got: 0, bad: false })
            .collect(),
        idle: Vec::with_capacity(clients),
        spare: Vec::with_capacity(clients),
        next_off: (part * 101) % PERIOD,
        rbuf: vec![0; 4096],
        st: Stats::default(),
    };
    let now = Instant::now();
    for i in 0..clients {
        if now < deadline {
            w.start(i, now);
        }
    }
    drive(&mut w, clients, deadline, timeout)?;
    let end = Instant::now();
    w.st.src_retries = w.conn.src_retries;
    Ok((w.st, end))
}

pub fn run(cfg: &Cfg) -> Result<Report, String> {
    let t0 = Instant::now();
    let deadline = t0 + cfg.duration();
    let (stats, seconds) =
        run_split(cfg.threads, cfg.clients, t0, |part, parts, n| worker(cfg, part, parts, n, deadline))?;
    let extra = vec![
        ("clients", J::Int(cfg.clients as u64)),
        ("size", J::Int(cfg.size(32) as u64)),
        ("threads", J::Int(cfg.threads.min(cfg.clients) as u64)),
        ("src", J::Str(cfg.src_name().into())),
        ("src_retries", J::Int(stats.src_retries)),
    ];
    Ok(Report { mode: "oneshot", seconds, stats, extra, latency: Latency::Hist })
}
