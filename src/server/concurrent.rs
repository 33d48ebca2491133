//! The concurrent TCP server: one `epoll` loop per thread, all sharing the
//! listening socket (`EPOLLEXCLUSIVE`, so a new client wakes one loop).
//!
//! Each connection is in one of two states:
//! - *reading* (interest `IN`): a chunk is read into the loop's one buffer,
//!   upper-cased in place and sent straight back. No buffer belongs to the
//!   connection.
//! - *writing* (interest `OUT`): the kernel took only part of a reply; the
//!   rest is copied into a buffer of the connection's own and nothing more
//!   is read until it is sent (back-pressure: a client that does not read
//!   its replies is not read from, so at most one chunk is held for it).
//!   When it has gone, the buffer is freed and the connection reads again.
//!
//! End of stream from the client (half-close) is seen only in the reading
//! state, so everything received before it has been answered when the
//! connection is closed.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::epoll::{Epoll, ERR, EXCLUSIVE, HUP, IN, OUT};
use super::{Counters, Shared, CHUNK};
use crate::error::{Error, Result};
use crate::sys;
use crate::upper::upper_in_place;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Reads per connection per wake-up, so one busy client cannot starve others.
const READ_BUDGET: usize = 16;
/// Connections accepted per wake-up.
const ACCEPT_BUDGET: usize = 64;
/// How long to stop accepting when the process is out of descriptors.
const FD_BACKOFF: Duration = Duration::from_millis(50);

const LISTENER: u64 = u64::MAX;
const WAKER: u64 = u64::MAX - 1;

/// Bytes of a reply the kernel has not taken yet.
struct Pending {
    buf: Vec<u8>,
    sent: usize,
}

/// One client.
struct Conn {
    fd: OwnedFd,
    /// `Some` only in the writing state.
    pending: Option<Box<Pending>>,
    /// Milliseconds since the loop started, at the last progress.
    last: u64,
}

/// A slot of the connection table. `gen` changes each time the slot is
/// reused, so an event for a closed connection is never applied to the
/// next one in the same slot.
struct Slot {
    gen: u32,
    conn: Option<Conn>,
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
    start: Instant,
    now: u64,
    /// Accepting paused until this time (out of descriptors).
    accept_paused_until: Option<u64>,
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
        start: Instant::now(),
        now: 0,
        accept_paused_until: None,
    };
    let result = lp.serve();
    lp.close_all();
    result
}

impl Loop<'_> {
    fn serve(&mut self) -> Result<()> {
        let idle = self.shared.config.idle_timeout;
        // Idle connections are looked for a few times per timeout period.
        let sweep_every = idle.map(|t| (t / 4).clamp(Duration::from_millis(5), Duration::from_secs(1)));
        let mut next_sweep = sweep_every.map(ms_up);
        let mut ready: Vec<(u64, u32)> = Vec::with_capacity(EVENTS);
        loop {
            if self.shared.is_stopped() {
                return Ok(());
            }
            let mut wait_ms: Option<u64> = next_sweep.map(|t| t.saturating_sub(self.now));
            if let Some(until) = self.accept_paused_until {
                let left = until.saturating_sub(self.now);
                wait_ms = Some(wait_ms.map_or(left, |w| w.min(left)));
            }
            ready.clear();
            ready.extend(self.epoll.wait(wait_ms.map(Duration::from_millis)).map_err(|e| Error::os("epoll_wait", e))?);
            self.now = self.start.elapsed().as_millis() as u64;
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
            if let Some(until) = self.accept_paused_until {
                if self.now >= until {
                    self.accept_paused_until = None;
                    let fd = self.shared.socket.as_raw_fd();
                    if self.epoll.add(fd, IN | EXCLUSIVE, LISTENER).is_err() {
                        Counters::add(&self.counters.errors, 1);
                        self.accept_paused_until = Some(self.now + FD_BACKOFF.as_millis() as u64);
                    }
                }
            }
            if let (Some(at), Some(every), Some(idle)) = (next_sweep, sweep_every, idle) {
                if self.now >= at {
                    self.sweep(ms_up(idle));
                    next_sweep = Some(self.now.saturating_add(ms_up(every)));
                }
            }
        }
    }

    /// `accept()`: takes the waiting clients, up to a budget.
    fn accept_batch(&mut self) {
        let counters = self.counters;
        for _ in 0..ACCEPT_BUDGET {
            let (fd, peer) = match sys::accept4(self.shared.socket.as_fd(), true) {
                Ok(x) => x,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                    Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
                        // Out of descriptors or memory: the client waits in
                        // the backlog. Stop watching the listener for a
                        // moment instead of spinning on it.
                        Counters::add(&counters.errors, 1);
                        if self.epoll.delete(self.shared.socket.as_raw_fd()).is_ok() {
                            self.accept_paused_until = Some(self.now + FD_BACKOFF.as_millis() as u64);
                        }
                        return;
                    }
                    _ => {
                        // Anything else (EPERM from a firewall, EPROTO...):
                        // count it and let the next wake-up try again,
                        // rather than hammering accept in this one.
                        Counters::add(&counters.errors, 1);
                        return;
                    }
                },
            };
            let active = self.shared.active.fetch_add(1, Ordering::Relaxed);
            if active >= self.shared.config.max_connections as u64 {
                self.shared.active.fetch_sub(1, Ordering::Relaxed);
                Counters::add(&counters.rejected, 1);
                drop(fd); // closed at once: the client sees end of stream
                continue;
            }
            Counters::add(&counters.accepted, 1);
            self.shared.tell(&peer);
            // A client usually sends right after connecting (and with
            // TCP_DEFER_ACCEPT it has, by definition), so serve what is here
            // now, before involving epoll at all. A short exchange (request,
            // half-close) is finished and closed without ever being
            // registered: no epoll_ctl, no extra epoll_wait round trip.
            let mut conn = Conn { fd, pending: None, last: self.now };
            match pump(&mut conn, &mut self.buf, counters, self.now, true) {
                Outcome::Keep => {}
                Outcome::Close => {
                    self.retire(conn, false);
                    continue;
                }
                Outcome::Fail => {
                    self.retire(conn, true);
                    continue;
                }
            }
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
            let interest = if conn.pending.is_some() { OUT } else { IN };
            if self.epoll.add(conn.fd.as_raw_fd(), interest, tok).is_err() {
                self.free.push(index);
                self.retire(conn, true);
                continue;
            }
            slot.conn = Some(conn);
        }
    }

    fn on_event(&mut self, tok: u64, flags: u32) {
        let index = (tok & 0xFFFF_FFFF) as usize;
        let gen = (tok >> 32) as u32;
        match self.slots.get(index) {
            Some(slot) if slot.gen == gen && slot.conn.is_some() => {}
            _ => return, // stale: the connection was closed in this batch
        }
        let writing = self.slots[index].conn.as_ref().is_some_and(|c| c.pending.is_some());
        let outcome = if writing {
            if flags & (OUT | ERR | HUP) != 0 {
                self.flush(index, tok)
            } else {
                Outcome::Keep
            }
        } else if flags & (IN | ERR | HUP) != 0 {
            self.read(index, tok)
        } else {
            Outcome::Keep
        };
        match outcome {
            Outcome::Keep => {}
            Outcome::Close => self.close(index, false),
            Outcome::Fail => self.close(index, true),
        }
    }

    /// A registered connection is readable: serve it, and watch for room
    /// to write instead if a reply is now pending.
    fn read(&mut self, index: usize, tok: u64) -> Outcome {
        let Some(conn) = self.slots[index].conn.as_mut() else { return Outcome::Keep };
        let outcome = pump(conn, &mut self.buf, self.counters, self.now, false);
        if matches!(outcome, Outcome::Keep)
            && conn.pending.is_some()
            && self.epoll.modify(conn.fd.as_raw_fd(), OUT, tok).is_err()
        {
            return Outcome::Fail;
        }
        outcome
    }

    /// Sends what is pending; back to reading when it has all gone.
    fn flush(&mut self, index: usize, tok: u64) -> Outcome {
        let counters = self.counters;
        let Some(conn) = self.slots[index].conn.as_mut() else { return Outcome::Keep };
        let Some(p) = conn.pending.as_mut() else { return Outcome::Keep };
        while p.sent < p.buf.len() {
            match sys::send(conn.fd.as_fd(), &p.buf[p.sent..]) {
                Ok(k) => {
                    p.sent += k;
                    conn.last = self.now;
                    Counters::add(&counters.bytes_out, k as u64);
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Outcome::Keep,
                    Some(libc::EINTR) => continue,
                    _ => return Outcome::Fail,
                },
            }
        }
        conn.pending = None; // nothing in flight: the buffer is freed
        if self.epoll.modify(conn.fd.as_raw_fd(), IN, tok).is_err() {
            return Outcome::Fail;
        }
        Outcome::Keep
    }

    /// Closes connections with no progress for `idle_ms`.
    fn sweep(&mut self, idle_ms: u64) {
        for index in 0..self.slots.len() {
            let expired = self.slots[index].conn.as_ref().is_some_and(|c| self.now.saturating_sub(c.last) >= idle_ms);
            if expired {
                Counters::add(&self.counters.idle, 1);
                self.close(index, false);
            }
        }
    }

    /// `close()` of a registered connection. It is taken out of epoll
    /// first: closing alone would leave it registered while any copy of the
    /// descriptor lives on (a `fork()`ed child of the host program), and
    /// its events would keep waking this loop for a slot that is gone.
    fn close(&mut self, index: usize, failed: bool) {
        if let Some(conn) = self.slots[index].conn.take() {
            let _ = self.epoll.delete(conn.fd.as_raw_fd());
            self.free.push(index);
            self.retire(conn, failed);
        }
    }

    /// The end of an accepted connection, registered or not.
    fn retire(&self, conn: Conn, failed: bool) {
        if failed {
            Counters::add(&self.counters.errors, 1);
        }
        drop(conn);
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
    }

    fn close_all(&mut self) {
        for index in 0..self.slots.len() {
            self.close(index, false);
        }
    }
}

/// `recv()`, upper-case, `send()`, for up to `READ_BUDGET` chunks. When
/// the kernel takes only part of a reply, the rest is kept in the
/// connection's own buffer and reading stops (back-pressure); the caller
/// then waits for room to write. With `drain`, a short read does not end
/// the round: the next read may well find the client's end of stream,
/// which finishes the exchange here and now.
fn pump(conn: &mut Conn, buf: &mut [u8], counters: &Counters, now: u64, drain: bool) -> Outcome {
    for _ in 0..READ_BUDGET {
        let n = match sys::recv(conn.fd.as_fd(), buf) {
            // Half-close from the client, and everything it sent has been
            // answered: the whole exchange is complete.
            Ok(0) => return Outcome::Close,
            Ok(n) => n,
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) => return Outcome::Keep,
                Some(libc::EINTR) => continue,
                _ => return Outcome::Fail,
            },
        };
        conn.last = now;
        Counters::add(&counters.bytes_in, n as u64);
        let chunk = &mut buf[..n];
        upper_in_place(chunk);
        let mut sent = 0;
        while sent < n {
            match sys::send(conn.fd.as_fd(), &chunk[sent..]) {
                Ok(k) => sent += k,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    _ => return Outcome::Fail,
                },
            }
        }
        Counters::add(&counters.bytes_out, sent as u64);
        if sent < n {
            // The client is not reading fast enough: keep the rest and stop
            // reading until it has gone (back-pressure).
            conn.pending = Some(Box::new(Pending { buf: chunk[sent..].to_vec(), sent: 0 }));
            return Outcome::Keep;
        }
        if n < buf.len() && !drain {
            // A short read: the socket is most likely drained. Level-
            // triggered epoll reports it again if more has arrived.
            return Outcome::Keep;
        }
    }
    Outcome::Keep
}

/// Whole milliseconds, rounded up (0.4 ms is 1, not 0) and saturated.
fn ms_up(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

enum Outcome {
    Keep,
    Close,
    Fail,
}
