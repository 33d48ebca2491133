//! Time in the TCP loops: how long a connection may live without doing its
//! share ([`Limits`], [`Deadline`]), and a loop's own clock ([`LoopClock`]).
//!
//! All times are nanoseconds on the loop's clock, which starts at 0 when
//! the loop starts. Nothing here reads a clock except [`LoopClock::tick`],
//! so the connection's rules can be tested and simulated with made-up times.
//!
//! Two rules close a connection:
//! - **idle timeout**: it moved no byte, in or out, for the idle period;
//! - **minimum rate**: each byte it moves earns `1 / min_rate` seconds of
//!   life, on top of one idle period granted at accept. Credit never runs
//!   more than one idle period ahead of now. A client that sends one byte
//!   just before each idle timeout (slowloris) runs out of credit after
//!   about one idle period.
//!
//! A byte moves when it is received, or when a reply held back because the
//! client was not reading is sent at last. The minimum rate is off at 0 and
//! without an idle timeout (the idle period is the window it is measured
//! over).

use std::time::{Duration, Instant};

/// How long a loop stops accepting when the process is out of descriptors.
pub(crate) const FD_BACKOFF: Duration = Duration::from_millis(50);

/// A server's time limits for its TCP connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    idle: Option<u64>,
    /// Bytes per second; 0 = no minimum rate.
    rate: u64,
}

impl Limits {
    /// From the idle timeout and the minimum rate (bytes per second).
    pub(crate) fn new(idle: Option<Duration>, min_rate: u32) -> Limits {
        let idle = idle.map(nanos);
        let rate = if idle.is_some() { u64::from(min_rate) } else { 0 };
        Limits { idle, rate }
    }

    /// The credit `bytes` earn, in nanoseconds (rounded down, saturated).
    fn earned(&self, bytes: usize) -> u64 {
        match self.rate {
            0 => 0,
            rate => (bytes as u64).saturating_mul(1_000_000_000) / rate,
        }
    }
}

/// When one connection is to be closed: when it last made progress, and
/// how far its rate credit reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline {
    last: u64,
    credit: u64,
}

impl Deadline {
    /// A connection accepted at `now`.
    pub(crate) fn start(now: u64, limits: &Limits) -> Deadline {
        Deadline { last: now, credit: now.saturating_add(limits.idle.unwrap_or(0)) }
    }

    /// Progress at `now`: `moved` bytes earn credit (0 for progress that
    /// earns none, such as a reply sent straight after its request).
    pub(crate) fn progress(&mut self, now: u64, moved: usize, limits: &Limits) {
        self.last = now;
        if limits.rate > 0 && moved > 0 {
            let cap = now.saturating_add(limits.idle.unwrap_or(0));
            self.credit = self.credit.saturating_add(limits.earned(moved)).min(cap);
        }
    }

    /// The time at which the connection is to be closed, if any.
    pub(crate) fn at(&self, limits: &Limits) -> Option<u64> {
        let idle = self.last.saturating_add(limits.idle?);
        Some(if limits.rate > 0 { idle.min(self.credit) } else { idle })
    }

    /// Is the connection past its deadline at `now`?
    pub(crate) fn passed(&self, now: u64, limits: &Limits) -> bool {
        self.at(limits).is_some_and(|d| now >= d)
    }
}

/// A loop's clock: now (as of the last wake-up), when connections past
/// their deadline are next looked for (a few times per idle period), and a
/// pause in accepting (out of descriptors).
pub(crate) struct LoopClock {
    start: Instant,
    now: u64,
    sweep_every: Option<u64>,
    next_sweep: Option<u64>,
    paused_until: Option<u64>,
}

impl LoopClock {
    /// For connections closed after `idle` without progress (`None`: never).
    pub(crate) fn new(idle: Option<Duration>) -> LoopClock {
        let sweep_every = idle.map(|t| nanos((t / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))));
        LoopClock { start: Instant::now(), now: 0, sweep_every, next_sweep: sweep_every, paused_until: None }
    }

    /// Now, as of the last [`tick`](Self::tick).
    pub(crate) fn now(&self) -> u64 {
        self.now
    }

    /// How long the loop may wait for events: until the next sweep or the
    /// end of a pause in accepting, whichever comes first (`None`: for ever).
    pub(crate) fn wait(&self) -> Option<Duration> {
        let left = |t: u64| t.saturating_sub(self.now);
        let wait = match (self.next_sweep.map(left), self.paused_until.map(left)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        wait.map(Duration::from_nanos)
    }

    /// A wake-up: reads the clock.
    pub(crate) fn tick(&mut self) {
        self.now = nanos(self.start.elapsed());
    }

    /// Stops accepting for [`FD_BACKOFF`].
    pub(crate) fn pause_accepting(&mut self) {
        self.paused_until = Some(self.now.saturating_add(nanos(FD_BACKOFF)));
    }

    /// Accepting is paused.
    #[cfg(feature = "io-uring")]
    pub(crate) fn accepting_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// True once, when a pause in accepting is over.
    pub(crate) fn pause_over(&mut self) -> bool {
        let over = self.paused_until.is_some_and(|until| self.now >= until);
        if over {
            self.paused_until = None;
        }
        over
    }

    /// True once per sweep period: time to look for connections past their
    /// deadline.
    pub(crate) fn sweep_due(&mut self) -> bool {
        match (self.next_sweep, self.sweep_every) {
            (Some(at), Some(every)) if self.now >= at => {
                self.next_sweep = Some(self.now.saturating_add(every));
                true
            }
            _ => false,
        }
    }
}

/// A duration in whole nanoseconds, saturated.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn limits(idle_s: u64, rate: u32) -> Limits {
        Limits::new(Some(Duration::from_secs(idle_s)), rate)
    }

    #[test]
    fn slowloris_runs_out_of_credit() {
        // Idle timeout 1 s, at least 100 bytes/s: one byte every 0.9 s
        // never trips the idle timeout but earns only 10 ms a byte.
        let lim = limits(1, 100);
        let mut d = Deadline::start(0, &lim);
        let mut t = 0;
        let mut bytes = 0;
        while !d.passed(t, &lim) {
            t += 900_000_000;
            if d.passed(t, &lim) {
                break;
            }
            d.progress(t, 1, &lim);
            bytes += 1;
            assert!(bytes < 20, "a slow client lived for ever");
        }
        assert!(t <= 2 * S, "closed at {t} ns, after {bytes} bytes");
        // Without the minimum rate, the same client lives on.
        let idle_only = limits(1, 0);
        let mut d = Deadline::start(0, &idle_only);
        for i in 1..100u64 {
            assert!(!d.passed(i * 900_000_000, &idle_only));
            d.progress(i * 900_000_000, 1, &idle_only);
        }
    }

    #[test]
    fn a_client_above_the_rate_lives_on() {
        let lim = limits(1, 100);
        let mut d = Deadline::start(0, &lim);
        // 200 bytes/s in 20-byte lines every 100 ms.
        for i in 1..1000u64 {
            let t = i * 100_000_000;
            assert!(!d.passed(t, &lim), "closed at {t}");
            d.progress(t, 20, &lim);
        }
        // A burst buys at most one idle period.
        d.progress(100 * S, 1_000_000, &lim);
        assert!(d.passed(101 * S, &lim));
    }

    #[test]
    fn no_idle_timeout_no_deadline() {
        let lim = Limits::new(None, 100);
        let d = Deadline::start(0, &lim);
        assert_eq!(d.at(&lim), None);
        assert!(!d.passed(u64::MAX, &lim));
    }

    #[test]
    fn the_loop_sweeps_a_few_times_per_idle_period() {
        let mut clock = LoopClock::new(Some(Duration::from_secs(2)));
        assert_eq!(clock.wait(), Some(Duration::from_millis(500)));
        assert!(!clock.sweep_due());
        clock.now = S / 2;
        assert!(clock.sweep_due());
        assert!(!clock.sweep_due(), "once per period");
        clock.pause_accepting();
        assert_eq!(clock.wait(), Some(FD_BACKOFF));
        clock.now += nanos(FD_BACKOFF);
        assert!(clock.pause_over());
        assert!(!clock.pause_over(), "once per pause");
        assert_eq!(LoopClock::new(None).wait(), None);
    }
}
