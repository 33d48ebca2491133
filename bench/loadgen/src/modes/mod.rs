//! The five workloads. Each returns a `Report`, or `Err` when the run could not
//! be set up at all (no epoll instance, ...): failures of the server under test
//! are counted in the report, never returned as `Err`.

mod hold;
mod oneshot;
mod persistent;
mod stream;
mod udp;

pub use hold::run as hold;
pub use oneshot::run as oneshot;
pub use persistent::run as persistent;
pub use stream::run as stream;
pub use udp::run as udp;

use std::time::Instant;

use crate::net::strerror;
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
