//! persistent: `--connections` kept-open connections, one `--size`-byte request
//! outstanding on each: send it, read exactly size bytes back, check, repeat.
//! Latency is first send to last reply byte. A connection that fails is counted
//! and opened again; a reply that is cut short or wrong is a bad reply.
//!
//! Per request: one send, one recv (usually), a share of epoll_wait. After the
//! reply completes the next request is sent at once and we go back to
//! epoll_wait without a speculative recv: edge-triggered epoll reports the
//! reply when it lands.

use std::time::{Duration, Instant};

use super::oneshot::describe;
use super::{drive, fatal, run_split, WorkerResult};
use crate::net::{self, Connector, Epoll, Fd, EV_ERR, EV_ET, EV_HUP, EV_IN, EV_OUT, EV_RDHUP};
use crate::stats::{Latency, Report, Stats, J};
use crate::verify::{chunk_ok, Pattern};
use crate::Cfg;

const PERIOD: usize = 512;

#[derive(Clone, Copy, PartialEq, Debug)]
enum St {
    Idle,
    Sending,
    Reading,
}

struct Conn {
    fd: Option<Fd>,
    st: St,
    /// When the current request (or the connect) started.
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
    conns: Vec<Conn>,
    idle: Vec<usize>,
    spare: Vec<usize>,
    next_off: usize,
    rbuf: Vec<u8>,
    st: Stats,
}

impl Worker {
    fn open(&mut self, i: usize, now: Instant) {
        let fd = match self.conn.connect() {
            Ok((fd, _)) => fd,
            Err(e) => {
                self.st.error("connect", e);
                self.idle.push(i);
                return;
            }
        };
        // One small request at a time: no Nagle delay on any of them.
        if let Err(e) = net::set_int_opt(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1) {
            self.st.error("setsockopt(TCP_NODELAY)", e);
        }
        if let Err(e) = self.ep.add(&fd, EV_IN | EV_OUT | EV_RDHUP | EV_ET, i as u64) {
            self.st.error("epoll_ctl", e);
            self.idle.push(i);
            return;
        }
        self.conns[i].fd = Some(fd);
        self.begin(i, now);
    }

    fn begin(&mut self, i: usize, now: Instant) {
        let off = self.next_off;
        self.next_off = (self.next_off + 37) % PERIOD;
        let c = &mut self.conns[i];
        c.st = St::Sending;
        c.start = now;
        c.off = off;
        c.sent = 0;
        c.got = 0;
        c.bad = false;
        self.send(i);
    }

    fn drop_conn(&mut self, i: usize) {
        self.conns[i].fd = None;
        self.conns[i].st = St::Idle;
        self.idle.push(i);
        self.st.reconnects += 1;
    }

    fn send(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(fd) = c.fd.as_ref() else { return };
        match net::send(fd, self.pat.request(c.off + c.sent, self.size - c.sent)) {
            Ok(n) => {
                c.sent += n;
                if c.sent == self.size {
                    c.st = St::Reading;
                }
            }
            Err(libc::EAGAIN) => {}
            Err(e) => {
                self.st.error("send", e);
                self.drop_conn(i);
            }
        }
    }

    fn read(&mut self, i: usize) {
        loop {
            let c = &mut self.conns[i];
            let Some(fd) = c.fd.as_ref() else { return };
            // Never read past this reply: extra bytes would be the next reply's start and fail it.
            let want = (self.size - c.got).min(self.rbuf.len());
            match net::recv(fd, &mut self.rbuf[..want]) {
                Ok(0) => {
                    if c.got > 0 {
                        let msg = describe(c.got, self.size, c.bad);
                        self.st.bad(&format!("{msg} (then the server closed)"));
                    } else {
                        self.st.closed("persistent");
                    }
                    self.drop_conn(i);
                    return;
                }
                Ok(n) => {
                    if !chunk_ok(self.pat.expected(c.off, self.size), c.got, &self.rbuf[..n]) {
                        c.bad = true;
                    }
                    c.got += n;
                    if c.got == self.size {
                        let now = Instant::now();
                        if c.bad {
                            self.st.bad(&describe(self.size, self.size, true));
                            // The byte stream may be out of step (a reply with extra bytes): start afresh.
                            self.drop_conn(i);
                            return;
                        } else {
                            self.st.ops += 1;
                            self.st.bytes += self.size as u64;
                            self.st.hist.record(now.duration_since(c.start).as_nanos() as u64);
                        }
                        self.begin(i, now);
                        return;
                    }
                }
                Err(libc::EAGAIN) => return,
                Err(e) => {
                    self.st.error("recv", e);
                    self.drop_conn(i);
                    return;
                }
            }
        }
    }

    fn event(&mut self, i: usize, bits: u32) {
        if i >= self.conns.len() {
            return;
        }
        if self.conns[i].st == St::Sending && bits & (EV_OUT | EV_ERR | EV_HUP) != 0 {
            self.send(i);
        }
        if self.conns[i].st == St::Reading && bits & (EV_IN | EV_RDHUP | EV_HUP | EV_ERR) != 0 {
            self.read(i);
        }
    }

    fn expire(&mut self, now: Instant, timeout: Duration) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.fd.is_some() && now.duration_since(c.start) > timeout {
                // Part of a reply and then nothing: a cut reply, not a slow server.
                if c.got > 0 {
                    let msg = format!("{} of {} bytes, then nothing for {timeout:?}", c.got, self.size);
                    self.st.bad(&msg);
                } else {
                    self.st.timeout("persistent");
                }
                self.drop_conn(i);
            }
        }
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
        Worker::open(self, i, now)
    }
    fn event(&mut self, i: usize, bits: u32) {
        Worker::event(self, i, bits)
    }
    fn expire(&mut self, now: Instant, timeout: Duration) {
        Worker::expire(self, now, timeout)
    }
}

fn worker(cfg: &Cfg, part: usize, parts: usize, n: usize, deadline: Instant) -> WorkerResult {
    let size = cfg.size(64);
    let timeout = cfg.timeout(5000);
    let mut w = Worker {
        ep: Epoll::new().map_err(fatal("epoll_create1"))?,
        conn: cfg.connector(part, parts),
        pat: Pattern::new(PERIOD, size),
        size,
        conns: (0..n)
            .map(|_| Conn { fd: None, st: St::Idle, start: Instant::now(), off: 0, sent: 0, got: 0, bad: false })
            .collect(),
        idle: Vec::with_capacity(n),
        spare: Vec::with_capacity(n),
        next_off: (part * 101) % PERIOD,
        rbuf: vec![0; size.clamp(1, 1 << 16)],
        st: Stats::default(),
    };
    let now = Instant::now();
    for i in 0..n {
        w.open(i, now);
    }
    drive(&mut w, n, deadline, timeout)?;
    let end = Instant::now();
    w.st.src_retries = w.conn.src_retries;
    Ok((w.st, end))
}

pub fn run(cfg: &Cfg) -> Result<Report, String> {
    let t0 = Instant::now();
    let deadline = t0 + cfg.duration();
    let (stats, seconds) =
        run_split(cfg.threads, cfg.connections, t0, |part, parts, n| worker(cfg, part, parts, n, deadline))?;
    let extra = vec![
        ("connections", J::Int(cfg.connections as u64)),
        ("size", J::Int(cfg.size(64) as u64)),
        ("threads", J::Int(cfg.threads.min(cfg.connections) as u64)),
        ("reconnects", J::Int(stats.reconnects)),
        ("src", J::Str(cfg.src_name().into())),
    ];
    Ok(Report { mode: "persistent", seconds, stats, extra, latency: Latency::Hist })
}
