//! hold: open `--idle` connections and keep them idle; once all are established
//! print `HOLDING n` on stderr (the orchestrator samples the server's memory
//! then), sleep `--hold-secs`, time `--probes` fresh oneshot round trips one at
//! a time, check the idle connections are all still open, close everything.
//!
//! Establishing runs `--connect-batch` handshakes at a time (a burst of 10,000
//! SYNs would overflow the listen backlog and turn into 1 s retransmits). By
//! default each idle connection also makes one 1-byte round trip, which proves
//! the server accepted it and serves it (a connection still waiting in the
//! backlog would not show in the server's memory).

use std::io::Write;
use std::time::{Duration, Instant};

use super::fatal;
use crate::net::{self, empty_event, Connector, Epoll, Fd, EV_ERR, EV_ET, EV_HUP, EV_IN, EV_OUT, EV_RDHUP};
use crate::stats::{Latency, Report, Stats, J};
use crate::verify::{chunk_ok, Pattern};
use crate::Cfg;

#[derive(PartialEq)]
enum St {
    Connecting,
    Pinging,
}

struct Pending {
    fd: Fd,
    st: St,
    start: Instant,
}

const PING: &[u8] = b"q";
const PONG: &[u8] = b"Q";

/// Opens `cfg.idle` connections; returns the established ones.
fn establish(cfg: &Cfg, conn: &mut Connector, st: &mut Stats) -> Result<Vec<Fd>, String> {
    let ep = Epoll::new().map_err(fatal("epoll_create1"))?;
    let timeout = cfg.timeout(5000);
    let batch = cfg.connect_batch.min(cfg.idle.max(1));
    let mut slots: Vec<Option<Pending>> = (0..batch).map(|_| None).collect();
    let mut held = Vec::with_capacity(cfg.idle);
    let mut started = 0usize;
    let mut events = vec![empty_event(); batch.max(1)];
    // A generous bound for the whole phase: every connection could take the full timeout, batch by batch.
    let phase_deadline = Instant::now() + timeout * (cfg.idle.div_ceil(batch.max(1)).min(1000) as u32 + 1);
    let mut buf = [0u8; 8];
    loop {
        let now = Instant::now();
        for (k, slot) in slots.iter_mut().enumerate() {
            if slot.is_none() && started < cfg.idle {
                started += 1;
                match conn.connect() {
                    Ok((fd, _)) => match ep.add(&fd, EV_IN | EV_OUT | EV_RDHUP | EV_ET, k as u64) {
                        Ok(()) => *slot = Some(Pending { fd, st: St::Connecting, start: now }),
                        Err(e) => st.error("epoll_ctl", e),
                    },
                    Err(e) => st.error("connect", e),
                }
            }
        }
        if started >= cfg.idle && slots.iter().all(Option::is_none) {
            break;
        }
        if now >= phase_deadline {
            for slot in slots.iter_mut().filter(|s| s.is_some()) {
                st.timeout("hold: establishing");
                *slot = None;
            }
            break;
        }
        // Nothing in flight (every connect of this pass failed at once): just go round again soon.
        let wait = if slots.iter().any(Option::is_some) { 50 } else { 1 };
        let n = ep.wait(&mut events, wait).map_err(fatal("epoll_wait"))?;
        for ev in &events[..n] {
            let (k, bits) = (ev.u64 as usize, ev.events);
            let Some(p) = slots.get_mut(k).and_then(Option::as_mut) else { continue };
            let mut done = false;
            if p.st == St::Connecting && bits & (EV_OUT | EV_ERR | EV_HUP) != 0 {
                match net::so_error(&p.fd) {
                    0 if !cfg.idle_ping => done = true,
                    0 => match net::send(&p.fd, PING) {
                        Ok(1) => p.st = St::Pinging,
                        Ok(_) | Err(libc::EAGAIN) => {}
                        Err(e) => {
                            st.error("hold: ping send", e);
                            slots[k] = None;
                            continue;
                        }
                    },
                    e => {
                        st.error("hold: connect", e);
                        slots[k] = None;
                        continue;
                    }
                }
            }
            if p.st == St::Pinging && bits & (EV_IN | EV_RDHUP | EV_HUP | EV_ERR) != 0 {
                match net::recv(&p.fd, &mut buf) {
                    Ok(0) => {
                        st.closed("hold: ping");
                        slots[k] = None;
                        continue;
                    }
                    Ok(n) if buf[..n] == *PONG => done = true,
                    Ok(n) => {
                        st.bad(&format!("hold: ping {PING:?} answered with {:?}", &buf[..n]));
                        slots[k] = None;
                        continue;
                    }
                    Err(libc::EAGAIN) => {}
                    Err(e) => {
                        st.error("hold: ping recv", e);
                        slots[k] = None;
                        continue;
                    }
                }
            }
            if done {
                if let Some(p) = slots[k].take() {
                    // Out of this epoll set, so a later event on it cannot be taken for the slot's next user.
                    if let Err(e) = ep.del(&p.fd) {
                        st.error("epoll_ctl(DEL)", e);
                    }
                    held.push(p.fd);
                }
            }
        }
        let now = Instant::now();
        for slot in slots.iter_mut() {
            if slot.as_ref().is_some_and(|p| now.duration_since(p.start) > timeout) {
                st.timeout("hold: establishing");
                *slot = None;
            }
        }
    }
    Ok(held)
}

enum ProbeErr {
    Sys(&'static str, i32),
    Timeout,
    Bad(String),
}

/// One oneshot round trip, on its own (poll-based); returns its latency in ns.
fn probe(conn: &mut Connector, pat: &Pattern, off: usize, size: usize, timeout: Duration) -> Result<u64, ProbeErr> {
    let t = Instant::now();
    let deadline = t + timeout;
    let left = |now: Instant| deadline.saturating_duration_since(now).as_millis().min(i32::MAX as u128) as i32;
    let wait = |fd: &Fd, ev: i16| -> Result<(), ProbeErr> {
        let now = Instant::now();
        if now >= deadline {
            return Err(ProbeErr::Timeout);
        }
        match net::poll_one(fd, ev, left(now).max(1)) {
            Ok(0) => Err(ProbeErr::Timeout),
            Ok(_) => Ok(()),
            Err(libc::EINTR) => Ok(()),
            Err(e) => Err(ProbeErr::Sys("poll", e)),
        }
    };
    let (fd, _) = conn.connect().map_err(|e| ProbeErr::Sys("connect", e))?;
    let req = pat.request(off, size);
    let mut sent = 0;
    while sent < size {
        match net::send(&fd, &req[sent..]) {
            Ok(n) => sent += n,
            Err(libc::EAGAIN) => wait(&fd, libc::POLLOUT)?,
            Err(e) => return Err(ProbeErr::Sys("send", e)),
        }
    }
    net::shutdown_wr(&fd).map_err(|e| ProbeErr::Sys("shutdown", e))?;
    let expected = pat.expected(off, size);
    let (mut got, mut bad) = (0usize, false);
    let mut buf = [0u8; 4096];
    loop {
        match net::recv(&fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                bad |= !chunk_ok(expected, got, &buf[..n]);
                got += n;
                if got > size + (1 << 16) {
                    break;
                }
            }
            Err(libc::EAGAIN) => wait(&fd, libc::POLLIN)?,
            Err(e) => return Err(ProbeErr::Sys("recv", e)),
        }
    }
    let ns = t.elapsed().as_nanos() as u64;
    if bad || got != size {
        return Err(ProbeErr::Bad(super::oneshot::describe(got, size, bad)));
    }
    Ok(ns)
}

pub fn run(cfg: &Cfg) -> Result<Report, String> {
    let t0 = Instant::now();
    let nofile = net::raise_nofile();
    if (cfg.idle as u64) + 64 > nofile {
        eprintln!("loadgen: hold: --idle {} is close to or above the descriptor limit {nofile}", cfg.idle);
    }
    let mut st = Stats::default();
    let mut conn = cfg.connector(0, 1);
    let held = establish(cfg, &mut conn, &mut st)?;
    let setup_s = t0.elapsed().as_secs_f64();
    {
        let mut err = std::io::stderr().lock();
        // If stderr is gone there is nobody to tell; the JSON still says how many were held.
        let _ = writeln!(err, "HOLDING {}", held.len());
        let _ = err.flush();
    }
    std::thread::sleep(Duration::from_secs_f64(cfg.hold_secs));

    let size = cfg.size(32);
    let pat = Pattern::new(512, size);
    let timeout = cfg.timeout(5000);
    let mut samples = Vec::with_capacity(cfg.probes);
    for p in 0..cfg.probes {
        match probe(&mut conn, &pat, p * 37 % 512, size, timeout) {
            Ok(ns) => samples.push(ns),
            Err(ProbeErr::Sys(what, e)) => st.error(what, e),
            Err(ProbeErr::Timeout) => st.timeout("hold: probe"),
            Err(ProbeErr::Bad(m)) => st.bad(&m),
        }
    }

    // Still open? A peek that would block means nothing arrived: no EOF, no reset.
    let (mut alive, mut dropped) = (0u64, 0u64);
    let mut b = [0u8; 1];
    for fd in &held {
        match net::recv_flags(fd, &mut b, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Err(libc::EAGAIN) => alive += 1,
            _ => dropped += 1,
        }
    }
    if dropped > 0 {
        st.note(|| format!("hold: {dropped} idle connections were closed or reset while held"));
    }
    let held_n = held.len() as u64;
    drop(held);
    st.ops = samples.len() as u64;
    st.bytes = st.ops * size as u64;
    st.src_retries = conn.src_retries;
    let seconds = t0.elapsed().as_secs_f64();
    let extra = vec![
        ("idle_requested", J::Int(cfg.idle as u64)),
        ("idle_established", J::Int(held_n)),
        ("idle_alive_after_probes", J::Int(alive)),
        ("idle_dropped", J::Int(dropped)),
        ("idle_ping", J::Bool(cfg.idle_ping)),
        ("setup_s", J::Num(Some(setup_s))),
        ("hold_secs", J::Num(Some(cfg.hold_secs))),
        ("probes", J::Int(cfg.probes as u64)),
        ("nofile_limit", J::Int(nofile)),
        ("src", J::Str(cfg.src_name().into())),
    ];
    Ok(Report { mode: "hold", seconds, stats: st, extra, latency: Latency::Exact(samples) })
}
