//! The concurrent TCP server: one `epoll` loop per thread, all sharing the
//! listening socket (`EPOLLEXCLUSIVE`, so a new client wakes one loop).
//!
//! What happens to one connection (reading, writing, back-pressure, its
//! time limits) is the state machine in [`super::conn`]; this file is the
//! loop around it: `accept4`, `epoll`, the connection table, the sweep for
//! connections past their deadline.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::conn::{Conn, Outcome, Pace};
use super::{Counters, End, Shared, CHUNK};
use crate::addr::SockAddr;
use crate::error::{Error, Result};
use crate::sys;
use crate::sys::epoll::{Epoll, ERR, EXCLUSIVE, HUP, IN, OUT};

/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Connections accepted per wake-up. One: a second `accept4` straight
/// after a successful one mostly finds the queue empty (under `loadgen
/// oneshot`, 0.82 calls per connection came back `EAGAIN`, and server CPU
/// per connection fell from 43 to 34 µs without them), while level-
/// triggered epoll reports the listener again at once if more are waiting,
/// in the same `epoll_wait` that brings the other connections' events.
const ACCEPT_BUDGET: usize = 1;
/// How long to stop accepting when the process is out of descriptors.
pub(super) const FD_BACKOFF: Duration = Duration::from_millis(50);

const LISTENER: u64 = u64::MAX;
const WAKER: u64 = u64::MAX - 1;

/// A slot of the connection table. `gen` changes each time the slot is
/// reused, so an event for a closed connection is never applied to the
/// next one in the same slot.
struct Slot {
    gen: u32,
    conn: Option<Conn<OwnedFd>>,
}

fn token(index: usize, gen: u32) -> u64 {
    ((gen as u64) << 32) | index as u64
}

struct Loop<'a> {
    shared: &'a Shared,
    counters: &'a Counters,
    epoll: Epoll,
    slots: Vec<Slot>,
    free: Vec<usize>,
    buf: Vec<u8>,
    pace: Pace,
    time: Timing,
}

/// One loop; returns when the server is stopped.
/// Every loop's epoll instance, made (with the listener and the waker
/// registered) before any loop starts: once the first loop accepts, the
/// process may run out of descriptors, and a loop that had still to make its
/// epoll would fail and take the server down.
pub(super) fn prepare(shared: &Shared, loops: usize) -> Result<Vec<Epoll>> {
    (0..loops)
        .map(|_| {
            let epoll = Epoll::new(EVENTS).map_err(|e| Error::os("epoll_create1", e))?;
            let listener = shared.socket.as_raw_fd();
            epoll.add(listener, IN | EXCLUSIVE, LISTENER).map_err(|e| Error::os("epoll_ctl(listener)", e))?;
            epoll.add(shared.waker.as_fd().as_raw_fd(), IN, WAKER).map_err(|e| Error::os("epoll_ctl(waker)", e))?;
            Ok(epoll)
        })
        .collect()
}

/// One loop, on an epoll instance from [`prepare`].
pub(super) fn run(shared: &Shared, index: usize, epoll: Epoll) -> Result<()> {
    let mut lp = Loop {
        shared,
        counters: &shared.counters[index],
        epoll,
        slots: Vec::new(),
        free: Vec::new(),
        buf: vec![0u8; CHUNK],
        pace: shared.pace(),
        time: Timing::new(shared.config.idle_timeout),
    };
    let result = lp.serve();
    lp.close_all();
    result
}

impl Loop<'_> {
    fn serve(&mut self) -> Result<()> {
        let mut ready: Vec<(u64, u32)> = Vec::with_capacity(EVENTS);
        loop {
            if self.shared.is_stopped() {
                return Ok(());
            }
            ready.clear();
            ready.extend(self.epoll.wait(self.time.wait()).map_err(|e| Error::os("epoll_wait", e))?);
            self.time.tick();
            for &(tok, flags) in &ready {
                match tok {
                    WAKER => {
                        if self.shared.is_stopped() {
                            return Ok(());
                        }
                    }
                    LISTENER => self.accept_batch(),
                    _ => self.on_event(tok, flags),
                }
            }
            if self.time.pause_over() {
                let fd = self.shared.socket.as_raw_fd();
                if self.epoll.add(fd, IN | EXCLUSIVE, LISTENER).is_err() {
                    Counters::add(&self.counters.errors, 1);
                    self.time.pause_accepting();
                }
            }
            if self.time.sweep_due() {
                self.sweep();
            }
        }
    }

    /// `accept()`: takes the waiting clients, up to a budget.
    fn accept_batch(&mut self) {
        for _ in 0..ACCEPT_BUDGET {
            let conn = match accept_one(self.shared, self.counters, &mut self.buf, self.time.now, &self.pace) {
                Accepted::Conn(conn) => conn,
                Accepted::Next => continue,
                Accepted::Empty => return,
                Accepted::Exhausted => {
                    // Stop watching the listener for a moment instead of
                    // spinning on it.
                    if self.epoll.delete(self.shared.socket.as_raw_fd()).is_ok() {
                        self.time.pause_accepting();
                    }
                    return;
                }
            };
            let index = match self.free.pop() {
                Some(i) => i,
                None => {
                    self.slots.push(Slot { gen: 0, conn: None });
                    self.slots.len() - 1
                }
            };
            let slot = &mut self.slots[index];
            slot.gen = slot.gen.wrapping_add(1);
            let tok = token(index, slot.gen);
            if self.epoll.add(conn.sock.as_raw_fd(), interest(&conn), tok).is_err() {
                self.free.push(index);
                self.retire(conn, End::Failed);
                continue;
            }
            slot.conn = Some(conn);
        }
    }

    fn on_event(&mut self, tok: u64, flags: u32) {
        let index = (tok & 0xFFFF_FFFF) as usize;
        let gen = (tok >> 32) as u32;
        let Some(conn) = self.slots.get_mut(index).filter(|s| s.gen == gen).and_then(|s| s.conn.as_mut()) else {
            return; // stale: the connection was closed in this batch
        };
        let before = interest(conn);
        let readable = flags & (IN | ERR | HUP) != 0;
        let writable = flags & (OUT | ERR | HUP) != 0;
        let mut outcome = conn.ready(readable, writable, &mut self.buf, self.counters, self.time.now, &self.pace);
        // Watch for input or for room to write, whichever the state now
        // needs; unchanged, epoll is left alone.
        if outcome == Outcome::Keep
            && interest(conn) != before
            && self.epoll.modify(conn.sock.as_raw_fd(), interest(conn), tok).is_err()
        {
            outcome = Outcome::Fail;
        }
        match outcome {
            Outcome::Keep => {}
            Outcome::Close => self.close(index, End::Done),
            Outcome::Fail => self.close(index, End::Failed),
        }
    }

    /// Closes connections past their deadline: idle for the idle timeout,
    /// or out of credit under the minimum rate.
    fn sweep(&mut self) {
        for index in 0..self.slots.len() {
            let expired = self.slots[index].conn.as_ref().is_some_and(|c| c.clock.expired(self.time.now, &self.pace));
            if expired {
                self.close(index, End::Idle);
            }
        }
    }

    /// `close()` of a registered connection. It is taken out of epoll
    /// first: closing alone would leave it registered while any copy of the
    /// descriptor lives on (a `fork()`ed child of the host program), and
    /// its events would keep waking this loop for a slot that is gone.
    fn close(&mut self, index: usize, end: End) {
        if let Some(conn) = self.slots[index].conn.take() {
            let _ = self.epoll.delete(conn.sock.as_raw_fd());
            self.free.push(index);
            self.retire(conn, end);
        }
    }

    /// The end of an accepted connection, registered or not: counted
    /// (see [`Shared::ended`]), then closed.
    fn retire(&self, conn: Conn<OwnedFd>, end: End) {
        self.shared.ended(self.counters, end);
        drop(conn);
    }

    fn close_all(&mut self) {
        for index in 0..self.slots.len() {
            self.close(index, End::Done);
        }
    }
}

/// What one [`accept_one`] came to.
pub(super) enum Accepted {
    /// A client, its first request served, to be kept.
    Conn(Conn<OwnedFd>),
    /// A client dealt with at once (served and closed, refused, or a
    /// connection aborted before it was taken): try the next one.
    Next,
    /// Nobody waiting, or a failure worth no retry in this wake-up.
    Empty,
    /// Out of descriptors or memory: the client waits in the backlog; the
    /// caller stops accepting for [`FD_BACKOFF`].
    Exhausted,
}

/// `accept4()` of one waiting client, counted and told about, and its first
/// request served at once, before any event loop is involved: a client
/// usually sends right after connecting (and with `TCP_DEFER_ACCEPT` it
/// has, by definition), and a short exchange (request, half-close) is
/// finished and closed without ever being registered.
pub(super) fn accept_one(shared: &Shared, counters: &Counters, buf: &mut [u8], now: u64, pace: &Pace) -> Accepted {
    let (fd, peer) = match sys::accept4(shared.socket.as_fd(), true) {
        Ok(x) => x,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Accepted::Empty,
                Some(libc::EINTR) | Some(libc::ECONNABORTED) => Accepted::Next,
                Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
                    Counters::add(&counters.errors, 1);
                    Accepted::Exhausted
                }
                _ => {
                    // Anything else (EPERM from a firewall, EPROTO...):
                    // count it and let the next wake-up try again, rather
                    // than hammering accept in this one.
                    Counters::add(&counters.errors, 1);
                    Accepted::Empty
                }
            };
        }
    };
    admit(shared, counters, fd, Some(peer), buf, now, pace)
}

/// A client just accepted (by [`accept_one`], or by a completion loop's
/// own `accept`, which gives no address: `peer` is then looked up if
/// someone is to be told): refused over the cap, else counted, told about,
/// and its first request served at once.
pub(super) fn admit(
    shared: &Shared,
    counters: &Counters,
    fd: OwnedFd,
    peer: Option<SockAddr>,
    buf: &mut [u8],
    now: u64,
    pace: &Pace,
) -> Accepted {
    let active = shared.active.fetch_add(1, Ordering::Relaxed);
    if active >= shared.config.max_connections as u64 {
        shared.ended(counters, End::Rejected);
        drop(fd); // closed at once: the client sees end of stream
        return Accepted::Next;
    }
    Counters::add(&counters.accepted, 1);
    if shared.config.on_client.is_some() {
        // Without an address (the client reset meanwhile), nobody is told;
        // the first read finds the reset.
        if let Some(peer) = peer.or_else(|| sys::getpeername(fd.as_fd()).ok()) {
            shared.tell(&peer);
        }
    }
    let mut conn = Conn::new(fd, now, pace);
    let end = match conn.first(buf, counters, now, pace) {
        Outcome::Keep => return Accepted::Conn(conn),
        Outcome::Close => End::Done,
        Outcome::Fail => End::Failed,
    };
    shared.ended(counters, end);
    drop(conn);
    Accepted::Next
}

/// The epoll interest a connection's state needs.
fn interest(conn: &Conn<OwnedFd>) -> u32 {
    if conn.wants_write() {
        OUT
    } else {
        IN
    }
}

/// A loop's clock: now (nanoseconds since the loop started, as of the last
/// wake-up), when connections past their deadline are next looked for (a
/// few times per idle period), and a pause in accepting (out of
/// descriptors). Both loops keep theirs the same way.
pub(super) struct Timing {
    start: Instant,
    pub(super) now: u64,
    sweep_every: Option<u64>,
    next_sweep: Option<u64>,
    paused_until: Option<u64>,
}

impl Timing {
    /// For connections closed after `idle` without progress (`None`: never).
    pub(super) fn new(idle: Option<Duration>) -> Timing {
        let sweep_every = idle.map(|t| nanos((t / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))));
        Timing { start: Instant::now(), now: 0, sweep_every, next_sweep: sweep_every, paused_until: None }
    }

    /// How long the loop may wait for events: until the next sweep or the
    /// end of a pause in accepting, whichever comes first (`None`: for ever).
    pub(super) fn wait(&self) -> Option<Duration> {
        let left = |t: u64| t.saturating_sub(self.now);
        let wait = match (self.next_sweep.map(left), self.paused_until.map(left)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        wait.map(Duration::from_nanos)
    }

    /// A wake-up: reads the clock.
    pub(super) fn tick(&mut self) {
        self.now = nanos(self.start.elapsed());
    }

    /// Stops accepting for [`FD_BACKOFF`].
    pub(super) fn pause_accepting(&mut self) {
        self.paused_until = Some(self.now.saturating_add(nanos(FD_BACKOFF)));
    }

    /// Accepting is paused.
    #[cfg(feature = "io-uring")]
    pub(super) fn accepting_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// True once, when a pause in accepting is over.
    pub(super) fn pause_over(&mut self) -> bool {
        let over = self.paused_until.is_some_and(|until| self.now >= until);
        if over {
            self.paused_until = None;
        }
        over
    }

    /// True once per sweep period: time to look for connections past their
    /// deadline.
    pub(super) fn sweep_due(&mut self) -> bool {
        match (self.next_sweep, self.sweep_every) {
            (Some(at), Some(every)) if self.now >= at => {
                self.next_sweep = Some(self.now.saturating_add(every));
                true
            }
            _ => false,
        }
    }
}

/// A duration in whole nanoseconds, saturated (the loop's clock).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
