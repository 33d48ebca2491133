//! udp: `--workers` sockets, each connect()ed to the server and with one
//! `--size`-byte datagram outstanding. A datagram starts with its sequence
//! number in upper-case hex (unchanged by the transform), then a window of the
//! pattern. A reply is good when it carries the worker's current sequence
//! number and the rest is the upper-cased window; one with an older number is
//! `late` (its request was already given up); anything else is a bad reply.
//! No reply within `--timeout-ms` (200) counts as lost and the next datagram goes.
//!
//! Level-triggered epoll and one recv per readiness report: one send, one recv
//! and a share of epoll_wait per operation.

use std::mem;
use std::time::{Duration, Instant};

use super::{fatal, run_split, wait_ms, WorkerResult};
use crate::net::{self, empty_event, Epoll, Fd, SockAddr, EV_IN};
use crate::stats::{Latency, Report, Stats, J};
use crate::verify::{parse_seq, put_seq, Pattern, SEQ_LEN};
use crate::Cfg;

const PERIOD: usize = 512;

struct W {
    fd: Fd,
    seq: u64,
    sent_at: Instant,
    off: usize,
    waiting: bool,
    req: Vec<u8>,
}

struct Worker {
    ep: Epoll,
    pat: Pattern,
    size: usize,
    ws: Vec<W>,
    /// Workers whose send failed, tried again on the next loop turn.
    idle: Vec<usize>,
    spare: Vec<usize>,
    rbuf: Vec<u8>,
    st: Stats,
}

impl Worker {
    fn send_next(&mut self, i: usize, now: Instant) {
        let w = &mut self.ws[i];
        w.seq += 1;
        w.off = ((w.seq as usize).wrapping_mul(37) + i * 13) % PERIOD;
        put_seq(&mut w.req, w.seq);
        w.req[SEQ_LEN..].copy_from_slice(self.pat.request(w.off, self.size - SEQ_LEN));
        match net::send(&w.fd, &w.req) {
            Ok(n) if n == self.size => {
                w.sent_at = now;
                w.waiting = true;
            }
            Ok(n) => {
                w.waiting = false;
                self.st.note(|| format!("udp send: sent {n} of {} bytes", self.size));
                self.st.errors.other += 1;
                self.idle.push(i);
            }
            Err(e) => {
                w.waiting = false;
                self.st.error("udp send", e);
                self.idle.push(i);
            }
        }
    }

    fn readable(&mut self, i: usize) {
        let w = &mut self.ws[i];
        let n = match net::recv(&w.fd, &mut self.rbuf) {
            Ok(n) => n,
            Err(libc::EAGAIN) => return,
            Err(e) => {
                // ECONNREFUSED: the ICMP port-unreachable for our datagram; it will not be answered.
                self.st.error("udp recv", e);
                if w.waiting {
                    self.send_next(i, Instant::now());
                }
                return;
            }
        };
        let now = Instant::now();
        let reply = &self.rbuf[..n];
        let seq = parse_seq(reply);
        match seq {
            Some(s) if s < w.seq || (s == w.seq && !w.waiting) => {
                self.st.late += 1;
                return;
            }
            Some(s) if s == w.seq && n == self.size && reply[SEQ_LEN..] == *self.pat.expected(w.off, n - SEQ_LEN) => {
                self.st.ops += 1;
                self.st.bytes += n as u64;
                self.st.hist.record(now.duration_since(w.sent_at).as_nanos() as u64);
            }
            _ => {
                let size = self.size;
                let what = match seq {
                    None => format!("{n}-byte datagram without the sequence number we sent"),
                    Some(s) if s != w.seq => format!("sequence {s} while {} was outstanding", w.seq),
                    Some(_) if n != size => format!("{n}-byte reply to a {size}-byte datagram"),
                    Some(_) => format!("{n} bytes back, but not the upper-cased request"),
                };
                self.st.bad(&what);
                if !w.waiting {
                    return;
                }
            }
        }
        self.send_next(i, now);
    }

    fn expire(&mut self, now: Instant, timeout: Duration) {
        for i in 0..self.ws.len() {
            let w = &self.ws[i];
            if w.waiting && now.duration_since(w.sent_at) >= timeout {
                self.st.lost += 1;
                self.send_next(i, now);
            }
        }
    }
}

fn worker(cfg: &Cfg, n: usize, part: usize, deadline: Instant) -> WorkerResult {
    let size = cfg.size(64);
    let timeout = cfg.timeout(200);
    let target = SockAddr::new(cfg.target);
    let ep = Epoll::new().map_err(fatal("epoll_create1"))?;
    let mut st = Stats::default();
    let mut ws = Vec::with_capacity(n);
    for i in 0..n {
        let fd = net::socket(target.family(), libc::SOCK_DGRAM).map_err(fatal("socket"))?;
        // connect(): the kernel then delivers only the server's datagrams, and send() needs no address.
        if let Err(e) = net::connect(&fd, &target) {
            st.error("udp connect", e);
            continue;
        }
        ep.add(&fd, EV_IN, i as u64).map_err(fatal("epoll_ctl"))?;
        // Start the sequence numbers apart per thread, so that no two workers ever share one.
        let seq = (part as u64) << 48 | (i as u64) << 32;
        ws.push(W { fd, seq, sent_at: Instant::now(), off: 0, waiting: false, req: vec![0; size] });
    }
    let mut w = Worker {
        ep,
        pat: Pattern::new(PERIOD, size),
        size,
        idle: Vec::with_capacity(ws.len()),
        spare: Vec::with_capacity(ws.len()),
        ws,
        rbuf: vec![0; 65_536],
        st,
    };
    let mut events = vec![empty_event(); w.ws.len().clamp(1, 1024)];
    let now = Instant::now();
    for i in 0..w.ws.len() {
        w.send_next(i, now);
    }
    let mut last_scan = now;
    let scan_every = (timeout / 20).clamp(Duration::from_millis(1), Duration::from_millis(10));
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let mut todo = mem::take(&mut w.spare);
        mem::swap(&mut todo, &mut w.idle);
        for &i in &todo {
            w.send_next(i, now);
        }
        todo.clear();
        w.spare = todo;
        let cap = if w.idle.is_empty() { scan_every.as_millis().max(1) as u64 } else { 1 };
        let k = w.ep.wait(&mut events, wait_ms(now, deadline, cap)).map_err(fatal("epoll_wait"))?;
        for ev in &events[..k] {
            let token = ev.u64 as usize;
            if token < w.ws.len() {
                w.readable(token);
            }
        }
        let now = Instant::now();
        if now.duration_since(last_scan) >= scan_every {
            last_scan = now;
            w.expire(now, timeout);
        }
    }
    Ok((w.st, Instant::now()))
}

pub fn run(cfg: &Cfg) -> Result<Report, String> {
    let t0 = Instant::now();
    let deadline = t0 + cfg.duration();
    let (stats, seconds) = run_split(cfg.threads, cfg.workers, t0, |part, _parts, n| worker(cfg, n, part, deadline))?;
    let extra = vec![
        ("workers", J::Int(cfg.workers as u64)),
        ("size", J::Int(cfg.size(64) as u64)),
        ("threads", J::Int(cfg.threads.min(cfg.workers) as u64)),
        ("timeout_ms", J::Int(cfg.timeout(200).as_millis() as u64)),
        ("late", J::Int(stats.late)),
    ];
    Ok(Report { mode: "udp", seconds, stats, extra, latency: Latency::Hist })
}
