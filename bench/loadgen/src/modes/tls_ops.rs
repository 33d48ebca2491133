//! The TLS workloads of one operation at a time per connection:
//!
//! - handshake: `--clients` connections in flight; each connects, makes a
//!   full handshake (no resumption), sends `--size` (32) bytes, half-closes
//!   with close_notify, reads the reply and the server's close_notify, and
//!   closes. Latency is connect start to the server's close_notify.
//! - resumed: the same, resuming with the tickets of earlier connections
//!   (the first connection of each slot is a full handshake, each handshake
//!   is counted by the kind rustls reports).
//! - persistent over TLS: `--connections` kept-open connections, one
//!   `--size` (64) byte request outstanding on each; the handshake is not
//!   timed, requests are.
//!
//! The request is written into rustls before the handshake ends: rustls
//! sends it with the client's Finished, in the same segment.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use super::oneshot::describe;
use super::{drive, fatal, run_split, WorkerResult};
use crate::net::{self, Connector, Epoll, EV_ERR, EV_ET, EV_HUP, EV_IN, EV_OUT, EV_RDHUP};
use crate::stats::{Latency, Report, Stats, J};
use crate::tls::{self, negotiated, Fail, Got, TlsConn, TlsOpts};
use crate::verify::{chunk_ok, Pattern};
use crate::{Cfg, Mode};

const PERIOD: usize = 512;

struct Slot {
    conn: Option<TlsConn>,
    start: Instant,
    off: usize,
    got: usize,
    bad: bool,
    /// The handshake of this connection has been counted.
    counted: bool,
    /// close_notify queued (handshake modes).
    closing: bool,
}

impl Slot {
    fn empty() -> Slot {
        Slot { conn: None, start: Instant::now(), off: 0, got: 0, bad: false, counted: false, closing: false }
    }
}

struct Worker {
    ep: Epoll,
    conn: Connector,
    config: Arc<ClientConfig>,
    tls: TlsOpts,
    /// Kept-open connections (persistent) rather than one operation per connection.
    keep: bool,
    pat: Pattern,
    size: usize,
    slots: Vec<Slot>,
    idle: Vec<usize>,
    spare: Vec<usize>,
    next_off: usize,
    rbuf: Vec<u8>,
    st: Stats,
}

impl Worker {
    fn what(&self) -> &'static str {
        if self.keep {
            "persistent"
        } else {
            "handshake"
        }
    }

    /// Opens a connection in slot `i` and starts its first operation.
    fn open(&mut self, i: usize, now: Instant) {
        let fd = match self.conn.connect() {
            Ok((fd, _)) => fd,
            Err(e) => {
                self.st.error("connect", e);
                self.idle.push(i);
                return;
            }
        };
        // The client's flights are small and each one waits for the server's: no Nagle delay.
        if let Err(e) = net::set_int_opt(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1) {
            self.st.error("setsockopt(TCP_NODELAY)", e);
        }
        if let Err(e) = self.ep.add(&fd, EV_IN | EV_OUT | EV_RDHUP | EV_ET, i as u64) {
            self.st.error("epoll_ctl", e);
            self.idle.push(i);
            return;
        }
        match TlsConn::new(fd, &self.config, &self.tls.name) {
            Ok(c) => {
                let s = &mut self.slots[i];
                s.conn = Some(c);
                s.counted = false;
                s.closing = false;
                self.begin(i, now);
            }
            Err(f) => {
                tls::count(&mut self.st, "TLS client", f);
                self.idle.push(i);
            }
        }
    }

    /// Starts an operation on slot `i`'s open connection: the request goes into rustls.
    fn begin(&mut self, i: usize, now: Instant) {
        let off = self.next_off;
        self.next_off = (self.next_off + 37) % PERIOD;
        let s = &mut self.slots[i];
        s.start = now;
        s.off = off;
        s.got = 0;
        s.bad = false;
        let Some(c) = s.conn.as_mut() else { return };
        let req = self.pat.request(off, self.size);
        // Before the handshake ends rustls buffers at most 64 KiB of plaintext: a larger --size fails here.
        match std::io::Write::write(&mut c.tls.writer(), req) {
            Ok(n) if n == req.len() => self.flush(i),
            Ok(_) => self.fail(i, Fail::Sys("write (request larger than rustls buffers)", libc::EMSGSIZE)),
            Err(e) => self.fail(i, Fail::Sys("write", e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    fn fail(&mut self, i: usize, f: Fail) {
        let what = self.what();
        tls::count(&mut self.st, what, f);
        self.close(i);
        self.idle.push(i);
        if self.keep {
            self.st.reconnects += 1;
        }
    }

    fn close(&mut self, i: usize) {
        let s = &mut self.slots[i];
        s.conn = None;
    }

    fn flush(&mut self, i: usize) {
        let Some(c) = self.slots[i].conn.as_mut() else { return };
        if let Err(f) = c.flush() {
            self.fail(i, f);
        }
    }

    fn read(&mut self, i: usize) {
        let s = &mut self.slots[i];
        let Some(c) = s.conn.as_mut() else { return };
        let expected = self.pat.expected(s.off, self.size);
        let (mut got, mut bad) = (s.got, s.bad);
        let r = c.fill(&mut self.rbuf, |d| {
            bad |= !chunk_ok(expected, got, d);
            got += d.len();
        });
        s.got = got;
        s.bad = bad;
        if !s.counted && !c.tls.is_handshaking() {
            s.counted = true;
            self.st.kinds.count(&c.tls);
            if self.st.negotiated.is_none() {
                self.st.negotiated = Some(negotiated(&c.tls));
            }
        }
        // Handshake modes: the half-close, once the handshake is done and the request is out.
        if !self.keep && !s.closing && !c.tls.is_handshaking() {
            s.closing = true;
            c.tls.send_close_notify();
        }
        match r {
            Ok(Got::Pending) => {
                if self.keep && s.got >= self.size {
                    let now = Instant::now();
                    if s.bad || s.got > self.size {
                        let msg = describe(s.got, self.size, s.bad);
                        self.st.bad(&msg);
                        self.close(i);
                        self.idle.push(i);
                        self.st.reconnects += 1;
                        return;
                    }
                    self.st.ops += 1;
                    self.st.bytes += self.size as u64;
                    self.st.hist.record(now.duration_since(s.start).as_nanos() as u64);
                    self.begin(i, now);
                    return;
                }
                self.flush(i);
            }
            Ok(Got::Closed) => {
                let now = Instant::now();
                if self.keep {
                    self.st.closed("persistent");
                    self.close(i);
                    self.idle.push(i);
                    self.st.reconnects += 1;
                    return;
                }
                if !s.bad && s.got == self.size {
                    self.st.ops += 1;
                    self.st.bytes += self.size as u64;
                    self.st.hist.record(now.duration_since(s.start).as_nanos() as u64);
                } else {
                    let msg = describe(s.got, self.size, s.bad);
                    self.st.bad(&msg);
                }
                self.close(i);
                self.open(i, now);
            }
            Err(Fail::Cut) if s.got > 0 && s.got < self.size => {
                let msg = describe(s.got, self.size, s.bad);
                self.st.bad(&format!("{msg} (then TCP closed without close_notify)"));
                self.close(i);
                self.idle.push(i);
            }
            Err(f) => self.fail(i, f),
        }
    }

    fn event(&mut self, i: usize, bits: u32) {
        if i >= self.slots.len() || self.slots[i].conn.is_none() {
            return;
        }
        if bits & (EV_OUT | EV_ERR | EV_HUP) != 0 {
            self.flush(i);
        }
        if bits & (EV_IN | EV_RDHUP | EV_HUP | EV_ERR) != 0 {
            self.read(i);
        }
    }

    fn expire(&mut self, now: Instant, timeout: Duration) {
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.conn.is_some() && now.duration_since(s.start) > timeout {
                if s.got > 0 {
                    let msg = format!("{} of {} bytes, then nothing for {timeout:?}", s.got, self.size);
                    self.st.bad(&msg);
                } else {
                    let what = self.what();
                    self.st.timeout(what);
                }
                self.close(i);
                self.idle.push(i);
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

fn worker(cfg: &Cfg, tls: &TlsOpts, part: usize, parts: usize, n: usize, deadline: Instant) -> WorkerResult {
    let keep = cfg.mode == Mode::Persistent;
    let size = cfg.size(if keep { 64 } else { 32 });
    let timeout = cfg.timeout(5000);
    // A configuration per worker: resumed handshakes use the tickets its own connections got.
    let config = tls.config(cfg.mode == Mode::Resumed)?;
    let mut w = Worker {
        ep: Epoll::new().map_err(fatal("epoll_create1"))?,
        conn: cfg.connector(part, parts),
        config,
        tls: tls.clone(),
        keep,
        pat: Pattern::new(PERIOD, size),
        size,
        slots: (0..n).map(|_| Slot::empty()).collect(),
        idle: Vec::with_capacity(n),
        spare: Vec::with_capacity(n),
        next_off: (part * 101) % PERIOD,
        rbuf: vec![0; 16 * 1024],
        st: Stats::default(),
    };
    let now = Instant::now();
    for i in 0..n {
        if now < deadline {
            w.open(i, now);
        }
    }
    drive(&mut w, n, deadline, timeout)?;
    let end = Instant::now();
    w.st.src_retries = w.conn.src_retries;
    Ok((w.st, end))
}

pub fn run(cfg: &Cfg, tls: &TlsOpts) -> Result<Report, String> {
    let t0 = Instant::now();
    let deadline = t0 + cfg.duration();
    let total = if cfg.mode == Mode::Persistent { cfg.connections } else { cfg.clients };
    let (stats, seconds) =
        run_split(cfg.threads, total, t0, |part, parts, n| worker(cfg, tls, part, parts, n, deadline))?;
    let mode = match cfg.mode {
        Mode::Resumed => "resumed",
        Mode::Persistent => "persistent",
        _ => "handshake",
    };
    let k = stats.kinds;
    let extra = vec![
        ("tls", J::Bool(true)),
        ("negotiated", J::Str(stats.negotiated.clone().unwrap_or_default())),
        ("connections_in_flight", J::Int(total as u64)),
        ("size", J::Int(cfg.size(if cfg.mode == Mode::Persistent { 64 } else { 32 }) as u64)),
        ("threads", J::Int(cfg.threads.min(total) as u64)),
        ("handshakes_full", J::Int(k.full)),
        ("handshakes_hrr", J::Int(k.hrr)),
        ("handshakes_resumed", J::Int(k.resumed)),
        ("reconnects", J::Int(stats.reconnects)),
        ("src", J::Str(cfg.src_name().into())),
    ];
    Ok(Report { mode, seconds, stats, extra, latency: Latency::Hist })
}
