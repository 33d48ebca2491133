//! How many loops serve. With `threads: 0` (the default) a concurrent
//! server has one loop per CPU, but only the first serves at the start; the
//! others stand by, asleep. A serving loop that stays busy while the machine
//! has an idle core wakes the next one. So where client and server share
//! the cores (a student's laptop, this project's benchmark) one loop serves,
//! which costs least per request; where cores are free, loops join until the
//! load is met. A loop once woken serves until the server stops.
//!
//! A standby TCP loop joins by watching the listener; a standby UDP loop by
//! opening its own socket in the port's `SO_REUSEPORT` group. Clients
//! already connected stay with the loop that took them.
//!
//! The idle cores are the machine's (`/proc/stat`, scaled to the CPUs this
//! process may use): in a container with a CPU quota, or pinned to some
//! CPUs of a busy machine, the estimate is rough.
//!
//! This must never cost a serving loop more than two clock reads per
//! wake-up, nor anything once every loop serves.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Shared;
use crate::sys;
use crate::sys::waker::Waker;

/// How long a loop is watched before it may wake another.
const WINDOW: Duration = Duration::from_millis(100);
/// The share of a window a loop must spend serving (not waiting) to count
/// as busy.
const BUSY: f64 = 0.9;
/// The idle cores the machine must have had over the window for another
/// loop to be worth waking.
const IDLE_CORES: f64 = 0.5;

/// The standby loops of a server and the bells that wake them.
pub(crate) struct Spread {
    /// One bell per loop; loop 0's is never rung.
    bells: Vec<Waker>,
    /// The next loop to wake; loops below it serve.
    next: AtomicUsize,
}

impl Spread {
    /// For `loops` loops; with `standby`, all but the first stand by.
    pub(crate) fn new(loops: usize, standby: bool) -> std::io::Result<Spread> {
        let bells = if standby { (0..loops).map(|_| Waker::new()).collect::<Result<_, _>>()? } else { Vec::new() };
        let next = if standby { 1 } else { loops };
        Ok(Spread { bells, next: AtomicUsize::new(next) })
    }

    /// Does loop `index` stand by at the start?
    pub(crate) fn stands_by(&self, index: usize) -> bool {
        index > 0 && index < self.bells.len()
    }

    /// Are there loops left to wake?
    pub(crate) fn has_standby(&self) -> bool {
        self.next.load(Ordering::Relaxed) < self.bells.len()
    }

    /// No more loops are to be woken (one could not join).
    pub(crate) fn stop_waking(&self) {
        self.next.store(self.bells.len(), Ordering::Release);
    }

    /// Wakes the next standby loop, if any.
    pub(crate) fn wake_next(&self) {
        let next = self.next.fetch_add(1, Ordering::AcqRel);
        match self.bells.get(next) {
            Some(bell) => bell.wake(),
            None => {
                self.next.store(self.bells.len(), Ordering::Release);
            }
        }
    }

    /// Loop `index` waits for its turn: true once woken, false if the
    /// server stopped first.
    pub(crate) fn wait_turn(&self, shared: &Shared, index: usize) -> bool {
        let Some(bell) = self.bells.get(index) else { return true };
        loop {
            if shared.is_stopped() {
                return false;
            }
            let stop = (shared.waker.as_fd().as_raw_fd(), libc::POLLIN);
            match sys::poll2((bell.as_fd().as_raw_fd(), libc::POLLIN), Some(stop), -1) {
                Ok((_, s)) if s != 0 => return false,
                Ok((b, _)) if b != 0 => return !shared.is_stopped(),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(_) => return false,
            }
        }
    }
}

/// A serving loop's watch on itself: how much of each window it spent
/// waiting, and the machine's idle time over the same window.
pub(crate) struct Busy {
    start: Instant,
    waited: Duration,
    cpu: Option<sys::CpuTimes>,
    /// No window has ended yet: the first sets the baseline.
    first: bool,
    cores: f64,
}

impl Busy {
    pub(crate) fn new() -> Busy {
        // `/proc/stat` (and the cgroup files behind the CPU count) are
        // read only once a window ends while loops stand by: a server with
        // every loop serving opens none of them.
        Busy { start: Instant::now(), waited: Duration::ZERO, cpu: None, first: true, cores: 1.0 }
    }

    /// The loop waited `d` for events.
    pub(crate) fn waited(&mut self, d: Duration) {
        self.waited += d;
    }

    /// At the end of a wake-up: is it time to wake another loop?
    pub(crate) fn wants_help(&mut self) -> bool {
        let elapsed = self.start.elapsed();
        if elapsed < WINDOW {
            return false;
        }
        let busy = 1.0 - self.waited.as_secs_f64() / elapsed.as_secs_f64();
        if self.first {
            self.cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        }
        let now = sys::cpu_times().ok();
        // Without the machine's figures, a busy loop gets help.
        let idle = match (self.cpu, now) {
            (Some(a), Some(b)) => idle_cores(a, b, self.cores),
            _ => self.cores,
        };
        self.start = Instant::now();
        self.waited = Duration::ZERO;
        self.cpu = now;
        !std::mem::take(&mut self.first) && decide(busy, idle)
    }
}

/// The rule: a busy loop, and a core idle enough to take another.
fn decide(busy: f64, idle_cores: f64) -> bool {
    busy >= BUSY && idle_cores >= IDLE_CORES
}

/// How many cores sat idle on average between two readings.
fn idle_cores(a: sys::CpuTimes, b: sys::CpuTimes, cores: f64) -> f64 {
    let total = b.total.saturating_sub(a.total);
    if total == 0 {
        return 0.0;
    }
    cores * b.idle.saturating_sub(a.idle) as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_loop_wakes_another_only_when_a_core_is_idle() {
        assert!(decide(0.95, 1.0));
        assert!(!decide(0.95, 0.2), "no idle core: another loop would only take the client's");
        assert!(!decide(0.5, 1.5), "the loop keeps up");
    }

    #[test]
    fn idle_cores_are_the_idle_share_of_every_core() {
        let a = sys::CpuTimes { idle: 100, total: 1000 };
        let b = sys::CpuTimes { idle: 200, total: 1200 };
        assert!((idle_cores(a, b, 2.0) - 1.0).abs() < 1e-9);
        assert_eq!(idle_cores(a, a, 2.0), 0.0);
    }

    #[test]
    fn loops_are_woken_one_at_a_time_and_never_past_the_last() {
        let s = Spread::new(3, true).expect("eventfds");
        assert!(!s.stands_by(0) && s.stands_by(1) && s.stands_by(2));
        assert!(s.has_standby());
        s.wake_next();
        s.wake_next();
        assert!(!s.has_standby());
        s.wake_next();
        assert!(!s.has_standby());
        let all = Spread::new(3, false).expect("none");
        assert!(!all.stands_by(1) && !all.has_standby());
    }

    /// With `threads: 0` and two or more CPUs, the standby loop serves
    /// nothing until it is woken, and then takes its share: of the TCP
    /// clients that come while the first loop is busy, and of UDP senders
    /// (its own socket in the port's group).
    #[test]
    fn a_standby_loop_serves_once_woken() {
        use crate::server::{Config, Server, Transport};
        use std::sync::atomic::Ordering::Relaxed;
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return; // one CPU: one loop, nothing stands by
        }
        for transport in [Transport::Tcp, Transport::Udp] {
            let config = Config { port: 0, transport, ..Config::default() };
            let server = Server::bind(config).expect("bind");
            let shared = std::sync::Arc::clone(&server.shared);
            let port = server.port();
            let stopper = server.stopper();
            let running = std::thread::spawn(move || server.run());
            let ask = |n: usize| {
                for i in 0..n {
                    let msg = format!("request {i}");
                    let reply = match transport {
                        Transport::Tcp => crate::client::tcp_request("127.0.0.1", port, msg.as_bytes(), None),
                        Transport::Udp => {
                            crate::client::udp_request("127.0.0.1", port, msg.as_bytes(), Duration::from_secs(2), 3)
                        }
                    };
                    assert_eq!(reply.expect("served"), msg.to_ascii_uppercase().into_bytes());
                }
            };
            let served_by = |i: usize| {
                let c = &shared.counters[i];
                c.accepted.load(Relaxed) + c.dgrams_in.load(Relaxed)
            };
            ask(50);
            assert_eq!(served_by(1), 0, "{transport:?}: a standby loop served");
            shared.spread.wake_next();
            // The listener wakes the first loop that waits: the woken loop
            // takes clients that come while the first is busy, so clients
            // come from several threads at once.
            let deadline = Instant::now() + Duration::from_secs(20);
            while served_by(1) == 0 && Instant::now() < deadline {
                std::thread::scope(|s| {
                    for _ in 0..8 {
                        s.spawn(|| ask(20));
                    }
                });
            }
            assert!(served_by(1) > 0, "{transport:?}: the woken loop served nothing");
            stopper.stop();
            running.join().expect("server thread").expect("ran cleanly");
        }
    }
}
