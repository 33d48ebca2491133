//! hold over TLS: open `--idle` connections, each making a full handshake
//! and a 1-byte round trip (`q` -> `Q`, proving the server serves it), then
//! keep them idle; once all are established print `HOLDING n` on stderr (the
//! orchestrator samples the server's memory then), sleep `--hold-secs`,
//! check the idle ones are all still open, close everything. No probes:
//! the figure of this mode is the server's memory per connection.

use std::io::Write as _;
use std::time::{Duration, Instant};

use super::fatal;
use crate::net::{self, empty_event, Epoll, EV_ERR, EV_ET, EV_HUP, EV_IN, EV_OUT, EV_RDHUP};
use crate::stats::{Latency, Report, Stats, J};
use crate::tls::{self, negotiated, Got, TlsConn, TlsOpts};
use crate::Cfg;

struct Pending {
    c: TlsConn,
    start: Instant,
    reply: Vec<u8>,
}

pub fn run(cfg: &Cfg, opts: &TlsOpts) -> Result<Report, String> {
    let t0 = Instant::now();
    let nofile = net::raise_nofile();
    if (cfg.idle as u64) + 64 > nofile {
        eprintln!("loadgen: hold: --idle {} is close to or above the descriptor limit {nofile}", cfg.idle);
    }
    let config = opts.config(false)?;
    let mut st = Stats::default();
    let mut conn = cfg.connector(0, 1);
    let ep = Epoll::new().map_err(fatal("epoll_create1"))?;
    let timeout = cfg.timeout(5000);
    let batch = cfg.connect_batch.min(cfg.idle.max(1));
    let mut slots: Vec<Option<Pending>> = (0..batch).map(|_| None).collect();
    let mut held: Vec<TlsConn> = Vec::with_capacity(cfg.idle);
    let mut started = 0usize;
    let mut events = vec![empty_event(); batch.max(1)];
    let phase_deadline = t0 + timeout * (cfg.idle.div_ceil(batch.max(1)).min(1000) as u32 + 1);
    let mut buf = vec![0u8; 4096];
    loop {
        let now = Instant::now();
        for (k, slot) in slots.iter_mut().enumerate() {
            if slot.is_some() || started >= cfg.idle {
                continue;
            }
            started += 1;
            let fd = match conn.connect() {
                Ok((fd, _)) => fd,
                Err(e) => {
                    st.error("connect", e);
                    continue;
                }
            };
            if let Err(e) = ep.add(&fd, EV_IN | EV_OUT | EV_RDHUP | EV_ET, k as u64) {
                st.error("epoll_ctl", e);
                continue;
            }
            let mut c = match TlsConn::new(fd, &config, &opts.name) {
                Ok(c) => c,
                Err(f) => {
                    tls::count(&mut st, "hold", f);
                    continue;
                }
            };
            if cfg.idle_ping && c.tls.writer().write_all(b"q").is_err() {
                st.error("hold: ping write", libc::EIO);
                continue;
            }
            match c.flush() {
                Ok(_) => *slot = Some(Pending { c, start: now, reply: Vec::new() }),
                Err(f) => tls::count(&mut st, "hold", f),
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
        let wait = if slots.iter().any(Option::is_some) { 50 } else { 1 };
        let n = ep.wait(&mut events, wait).map_err(fatal("epoll_wait"))?;
        for ev in &events[..n] {
            let (k, bits) = (ev.u64 as usize, ev.events);
            let Some(p) = slots.get_mut(k).and_then(Option::as_mut) else { continue };
            if bits & (EV_OUT | EV_ERR | EV_HUP) != 0 {
                if let Err(f) = p.c.flush() {
                    tls::count(&mut st, "hold", f);
                    slots[k] = None;
                    continue;
                }
            }
            let reply = &mut p.reply;
            let r = p.c.fill(&mut buf, |d| reply.extend_from_slice(d));
            let r = r.and_then(|g| p.c.flush().map(|_| g));
            let done = match r {
                Ok(Got::Pending) if p.c.tls.is_handshaking() => false,
                Ok(Got::Pending) if !cfg.idle_ping => true,
                Ok(Got::Pending) if p.reply.is_empty() => false,
                Ok(Got::Pending) if p.reply == b"Q" => true,
                Ok(Got::Pending) => {
                    st.bad(&format!("hold: ping \"q\" answered with {:?}", p.reply));
                    slots[k] = None;
                    continue;
                }
                Ok(Got::Closed) => {
                    st.closed("hold: ping");
                    slots[k] = None;
                    continue;
                }
                Err(f) => {
                    tls::count(&mut st, "hold", f);
                    slots[k] = None;
                    continue;
                }
            };
            if done {
                if let Some(p) = slots[k].take() {
                    st.kinds.count(&p.c.tls);
                    if st.negotiated.is_none() {
                        st.negotiated = Some(negotiated(&p.c.tls));
                    }
                    if let Err(e) = ep.del(&p.c.fd) {
                        st.error("epoll_ctl(DEL)", e);
                    }
                    held.push(p.c);
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
    let setup_s = t0.elapsed().as_secs_f64();
    {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "HOLDING {}", held.len());
        let _ = err.flush();
    }
    std::thread::sleep(Duration::from_secs_f64(cfg.hold_secs));

    // Still open? Whatever arrived meanwhile (session tickets) is read; an EOF or a close_notify is not open.
    let (mut alive, mut dropped) = (0u64, 0u64);
    for c in &mut held {
        match c.fill(&mut buf, |_| {}) {
            Ok(Got::Pending) => alive += 1,
            _ => dropped += 1,
        }
    }
    if dropped > 0 {
        st.note(|| format!("hold: {dropped} idle connections were closed or reset while held"));
    }
    let held_n = held.len() as u64;
    drop(held);
    st.ops = held_n;
    st.src_retries = conn.src_retries;
    let seconds = t0.elapsed().as_secs_f64();
    let extra = vec![
        ("tls", J::Bool(true)),
        ("negotiated", J::Str(st.negotiated.clone().unwrap_or_default())),
        ("idle_requested", J::Int(cfg.idle as u64)),
        ("idle_established", J::Int(held_n)),
        ("idle_alive_after_probes", J::Int(alive)),
        ("idle_dropped", J::Int(dropped)),
        ("idle_ping", J::Bool(cfg.idle_ping)),
        ("setup_s", J::Num(Some(setup_s))),
        ("hold_secs", J::Num(Some(cfg.hold_secs))),
        ("handshakes_hrr", J::Int(st.kinds.hrr)),
        ("nofile_limit", J::Int(nofile)),
        ("src", J::Str(cfg.src_name().into())),
    ];
    Ok(Report { mode: "hold", seconds, stats: st, extra, latency: Latency::Exact(Vec::new()) })
}
