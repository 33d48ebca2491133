//! stream: one connection, `--bytes` each way at the same time. One thread,
//! edge-triggered epoll: every wake-up writes until the socket is full and
//! reads until it is empty, so the server is never blocked on us reading.
//! The payload is the pattern with a prime period (65,521 bytes, every byte
//! value in it); every received byte is compared with the upper-cased
//! pattern at its stream offset. Throughput counts echoed bytes once.
//! `bad_replies` counts the reads whose bytes were wrong (plus one if the echo
//! came back shorter or longer than what was sent).

use std::time::Instant;

use super::{fatal, wait_ms};
use crate::net::{self, empty_event, Epoll, EV_ET, EV_IN, EV_OUT, EV_RDHUP};
use crate::stats::{Latency, Report, Stats, J};
use crate::verify::Pattern;
use crate::Cfg;

const PERIOD: usize = 65_521;
const CHUNK: usize = 256 * 1024;

pub fn run(cfg: &Cfg) -> Result<Report, String> {
    let total = cfg.bytes;
    let pat = Pattern::new(PERIOD, CHUNK);
    let ep = Epoll::new().map_err(fatal("epoll_create1"))?;
    let mut st = Stats::default();
    let mut conn = cfg.connector(0, 1);
    let mut rbuf = vec![0u8; CHUNK];
    let (mut tx, mut rx) = (0u64, 0u64);
    let (mut shut, mut eof, mut complete, mut capped) = (false, false, false, false);
    let mut first_bad: Option<u64> = None;
    let mut bad_chunks = 0u64;
    let mut first_byte_s: Option<f64> = None;

    let t0 = Instant::now();
    let deadline = t0 + cfg.duration();
    let mut end = t0;
    let fd = match conn.connect() {
        Ok((fd, _)) => Some(fd),
        Err(e) => {
            st.error("connect", e);
            None
        }
    };
    if let Some(fd) = &fd {
        ep.add(fd, EV_IN | EV_OUT | EV_RDHUP | EV_ET, 0).map_err(fatal("epoll_ctl"))?;
    }
    let mut events = [empty_event(); 4];
    'run: while let Some(fd) = &fd {
        let now = Instant::now();
        end = now;
        if now >= deadline {
            capped = true;
            break;
        }
        // Write until the socket is full, then half-close once all is sent.
        while !shut {
            if tx == total {
                if let Err(e) = net::shutdown_wr(fd) {
                    st.error("shutdown", e);
                    break 'run;
                }
                shut = true;
                break;
            }
            let len = (total - tx).min(CHUNK as u64) as usize;
            match net::send(fd, pat.request((tx % PERIOD as u64) as usize, len)) {
                Ok(n) => tx += n as u64,
                Err(libc::EAGAIN) => break,
                Err(libc::EINPROGRESS | libc::ENOTCONN) => break,
                Err(e) => {
                    st.error("send", e);
                    break 'run;
                }
            }
        }
        // Read until the socket is empty, checking every byte.
        loop {
            match net::recv(fd, &mut rbuf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    if first_byte_s.is_none() {
                        first_byte_s = Some(t0.elapsed().as_secs_f64());
                    }
                    let chunk = &rbuf[..n];
                    let in_range = rx + n as u64 <= tx;
                    if !in_range || pat.expected((rx % PERIOD as u64) as usize, n) != chunk {
                        bad_chunks += 1;
                        if first_bad.is_none() {
                            let at = if in_range {
                                rx + first_diff(pat.expected((rx % PERIOD as u64) as usize, n), chunk)
                            } else {
                                tx
                            };
                            first_bad = Some(at);
                        }
                    }
                    rx += n as u64;
                }
                Err(libc::EAGAIN | libc::ENOTCONN) => break,
                Err(e) => {
                    st.error("recv", e);
                    break 'run;
                }
            }
        }
        if eof {
            end = Instant::now();
            if rx == total && shut {
                complete = true;
            } else {
                st.bad(&format!("stream ended after {rx} of {total} bytes"));
            }
            break;
        }
        let now = Instant::now();
        ep.wait(&mut events, wait_ms(now, deadline, 100)).map_err(fatal("epoll_wait"))?;
    }
    drop(fd);
    if capped {
        st.note(|| format!("stream: --duration reached after {rx} of {total} bytes echoed"));
    }
    if let Some(at) = first_bad {
        st.bad_replies += bad_chunks;
        st.note(|| {
            format!("bad reply: {bad_chunks} received reads differ from the upper-cased pattern; first at byte {at}")
        });
    }
    // One operation: the whole stream, echoed in full and every byte right.
    let verified = complete && first_bad.is_none();
    st.ops = u64::from(verified);
    st.bytes = rx;
    st.src_retries = conn.src_retries;
    let seconds = end.duration_since(t0).as_secs_f64();
    let extra = vec![
        ("complete", J::Bool(complete)),
        ("verified", J::Bool(verified)),
        ("capped_by_duration", J::Bool(capped)),
        ("target_bytes", J::Int(total)),
        ("sent_bytes", J::Int(tx)),
        ("received_bytes", J::Int(rx)),
        ("first_byte_s", J::Num(first_byte_s)),
        ("first_bad_offset", first_bad.map_or(J::Num(None), J::Int)),
        ("src", J::Str(cfg.src_name().into())),
    ];
    Ok(Report { mode: "stream", seconds, stats: st, extra, latency: Latency::None })
}

fn first_diff(a: &[u8], b: &[u8]) -> u64 {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len())) as u64
}
