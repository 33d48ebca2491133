//! stream over TLS: one connection, `--bytes` each way at once, every byte
//! checked; close_notify once all is sent, then the reply to the server's
//! close_notify. The handshake is inside the timed run (once per GiB, it is
//! noise). Throughput counts echoed bytes once.

use std::io::Write;
use std::time::Instant;

use super::{fatal, wait_ms};
use crate::net::{empty_event, Epoll, EV_ET, EV_IN, EV_OUT, EV_RDHUP};
use crate::stats::{Latency, Report, Stats, J};
use crate::tls::{self, negotiated, Got, TlsConn, TlsOpts};
use crate::verify::Pattern;
use crate::Cfg;

const PERIOD: usize = 65_521;
/// Plaintext handed to rustls at once: a few full records.
const CHUNK: usize = 64 * 1024;

pub fn run(cfg: &Cfg, opts: &TlsOpts) -> Result<Report, String> {
    let total = cfg.bytes;
    let pat = Pattern::new(PERIOD, CHUNK);
    let ep = Epoll::new().map_err(fatal("epoll_create1"))?;
    let config = opts.config(false)?;
    let mut st = Stats::default();
    let mut conn = cfg.connector(0, 1);
    let mut rbuf = vec![0u8; CHUNK];
    let (mut tx, mut rx) = (0u64, 0u64);
    let (mut closing, mut complete, mut capped) = (false, false, false);
    let mut first_bad: Option<u64> = None;
    let mut bad_chunks = 0u64;

    let t0 = Instant::now();
    let deadline = t0 + cfg.duration();
    let mut end = t0;
    let mut c = match conn.connect() {
        Ok((fd, _)) => match TlsConn::new(fd, &config, &opts.name) {
            Ok(c) => Some(c),
            Err(f) => {
                tls::count(&mut st, "stream", f);
                None
            }
        },
        Err(e) => {
            st.error("connect", e);
            None
        }
    };
    if let Some(c) = &mut c {
        c.tls.set_buffer_limit(Some(4 * CHUNK));
        ep.add(&c.fd, EV_IN | EV_OUT | EV_RDHUP | EV_ET, 0).map_err(fatal("epoll_ctl"))?;
    }
    let mut events = [empty_event(); 4];
    'run: while let Some(c) = &mut c {
        let now = Instant::now();
        end = now;
        if now >= deadline {
            capped = true;
            break;
        }
        // Write until rustls's buffer or the socket is full; close_notify once all is sent.
        loop {
            match c.flush() {
                Ok(true) => {}
                Ok(false) => break,
                Err(f) => {
                    tls::count(&mut st, "stream", f);
                    break 'run;
                }
            }
            if c.tls.is_handshaking() {
                break;
            }
            if tx == total {
                if !closing {
                    closing = true;
                    c.tls.send_close_notify();
                    continue;
                }
                break;
            }
            let len = (total - tx).min(CHUNK as u64) as usize;
            match c.tls.writer().write(pat.request((tx % PERIOD as u64) as usize, len)) {
                Ok(0) => break,
                Ok(n) => tx += n as u64,
                Err(e) => {
                    st.error("write", e.raw_os_error().unwrap_or(libc::EIO));
                    break 'run;
                }
            }
        }
        // Read until the socket is empty, checking every byte.
        let r = c.fill(&mut rbuf, |chunk| {
            let n = chunk.len();
            let in_range = rx + n as u64 <= tx;
            if !in_range || pat.expected((rx % PERIOD as u64) as usize, n) != chunk {
                bad_chunks += 1;
                first_bad.get_or_insert(rx);
            }
            rx += n as u64;
        });
        if st.negotiated.is_none() && !c.tls.is_handshaking() {
            st.negotiated = Some(negotiated(&c.tls));
            st.kinds.count(&c.tls);
        }
        match r {
            Ok(Got::Pending) => {}
            Ok(Got::Closed) => {
                end = Instant::now();
                if rx == total && closing {
                    complete = true;
                } else {
                    st.bad(&format!("stream ended after {rx} of {total} bytes"));
                }
                break;
            }
            Err(f) => {
                tls::count(&mut st, "stream", f);
                break;
            }
        }
        let now = Instant::now();
        ep.wait(&mut events, wait_ms(now, deadline, 100)).map_err(fatal("epoll_wait"))?;
    }
    drop(c);
    if capped {
        st.note(|| format!("stream: --duration reached after {rx} of {total} bytes echoed"));
    }
    if let Some(at) = first_bad {
        st.bad_replies += bad_chunks;
        st.note(|| format!("bad reply: {bad_chunks} reads differ from the upper-cased pattern; first at byte {at}"));
    }
    let verified = complete && first_bad.is_none();
    st.ops = u64::from(verified);
    st.bytes = rx;
    st.src_retries = conn.src_retries;
    let seconds = end.duration_since(t0).as_secs_f64();
    let extra = vec![
        ("tls", J::Bool(true)),
        ("negotiated", J::Str(st.negotiated.clone().unwrap_or_default())),
        ("complete", J::Bool(complete)),
        ("verified", J::Bool(verified)),
        ("capped_by_duration", J::Bool(capped)),
        ("target_bytes", J::Int(total)),
        ("sent_bytes", J::Int(tx)),
        ("received_bytes", J::Int(rx)),
        ("handshakes_hrr", J::Int(st.kinds.hrr)),
        ("src", J::Str(cfg.src_name().into())),
    ];
    Ok(Report { mode: "stream", seconds, stats: st, extra, latency: Latency::None })
}
