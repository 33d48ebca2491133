//! The workloads, plaintext and TLS. Each returns a `Report`, or `Err` when the run could not
//! be set up at all (no epoll instance, ...): failures of the server under test
//! are counted in the report, never returned as `Err`.

mod hold;
mod oneshot;
mod persistent;
mod stream;
mod tls_hold;
mod tls_ops;
mod tls_stream;
mod udp;

pub use hold::run as hold;
pub use oneshot::run as oneshot;
pub use persistent::run as persistent;
pub use stream::run as stream;
pub use tls_hold::run as tls_hold;
pub use tls_ops::run as tls_ops;
pub use tls_stream::run as tls_stream;
pub use udp::run as udp;

use std::mem;
use std::time::{Duration, Instant};

use crate::net::{strerror, Epoll};
use crate::stats::Stats;

/// What a worker thread hands back: its counters and when it stopped.
pub(crate) type WorkerResult = Result<(Stats, Instant), String>;

/// Runs `work(part, parts, share)` on up to `threads` threads, `total` units
/// (clients, connections, workers) split between them, and merges the results.
/// Returns the merged stats and the seconds from `t0` to the last stop.
pub(crate) fn run_split<F>(threads: usize, total: usize, t0: Instant, work: F) -> Result<(Stats, f64), String>
where
    F: Fn(usize, usize, usize) -> WorkerResult + Sync,
{
    let parts = threads.clamp(1, total.max(1));
    let share = |p: usize| total / parts + usize::from(p < total % parts);
    let results: Vec<WorkerResult> = if parts == 1 {
        vec![work(0, 1, total)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..parts)
                .map(|p| {
                    let w = &work;
                    s.spawn(move || w(p, parts, share(p)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("worker thread panicked".to_string())))
                .collect()
        })
    };
    let mut st = Stats::default();
    let mut end = t0;
    for r in results {
        let (s, e) = r?;
        st.merge(&s);
        end = end.max(e);
    }
    Ok((st, end.duration_since(t0).as_secs_f64()))
}

/// Turns a failed setup call into the fatal error message.
pub(crate) fn fatal(what: &str) -> impl Fn(i32) -> String + '_ {
    move |e| format!("{what}: {}", strerror(e))
}

/// Milliseconds to wait in epoll_wait: at most `cap`, and not past `deadline`.
pub(crate) fn wait_ms(now: Instant, deadline: Instant, cap: u64) -> i32 {
    let left = deadline.saturating_duration_since(now).as_millis() as u64;
    (left + 1).min(cap) as i32
}

/// A TCP worker that the shared epoll loop ([`drive`]) runs: slots that
/// (re)start their next operation, events by slot, and a scan for
/// operations that took too long.
pub(crate) trait Slots {
    /// The worker's epoll instance.
    fn epoll(&self) -> &Epoll;
    /// Slots waiting to start again, and the spare list swapped with it.
    fn queues(&mut self) -> (&mut Vec<usize>, &mut Vec<usize>);
    /// Starts slot `i`'s next operation (or puts it back on the idle list).
    fn start(&mut self, i: usize, now: Instant);
    /// An epoll event for slot `i`.
    fn event(&mut self, i: usize, bits: u32);
    /// Fails the operations older than `timeout`.
    fn expire(&mut self, now: Instant, timeout: Duration);
}

/// The epoll loop of the oneshot and persistent workers, until `deadline`.
pub(crate) fn drive<W: Slots>(w: &mut W, slots: usize, deadline: Instant, timeout: Duration) -> Result<(), String> {
    let mut events = vec![crate::net::empty_event(); slots.clamp(1, 1024)];
    let mut last_scan = Instant::now();
    // Look for expired operations a few times per timeout, at most every 100 ms.
    let scan_every = (timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        // Slots whose start failed: try again (at most once per turn, so a dead
        // server costs one connect per slot per millisecond, not a spin).
        let (idle, spare) = w.queues();
        let mut todo = mem::take(spare);
        mem::swap(&mut todo, idle);
        for &i in &todo {
            w.start(i, now);
        }
        todo.clear();
        let (idle, spare) = w.queues();
        *spare = todo;
        let cap = if idle.is_empty() { scan_every.as_millis().clamp(1, 50) as u64 } else { 1 };
        let n = w.epoll().wait(&mut events, wait_ms(now, deadline, cap)).map_err(fatal("epoll_wait"))?;
        for ev in &events[..n] {
            let (token, bits) = (ev.u64, ev.events);
            w.event(token as usize, bits);
        }
        if now.duration_since(last_scan) >= scan_every {
            last_scan = now;
            w.expire(now, timeout);
        }
    }
}
