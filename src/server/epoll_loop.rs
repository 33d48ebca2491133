//! The concurrent TCP server on epoll: one loop per thread, all sharing the
//! listening socket (`EPOLLEXCLUSIVE`, so a new client wakes one loop).
//!
//! This file is the loop around the connection state machine (`conn.rs`):
//! `epoll_wait`, the connection table, the interest each connection's state
//! needs, and the sweep for connections past their deadline. Clients come
//! in through `admission.rs`. The loop makes no system call of its own
//! except through `sys` and the connection's socket.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use super::admission::{accept_one, Accepted, Client};
use super::conn::{Conn, Ctx, Outcome};
use super::pace::LoopClock;
use super::reclaim::Reclaim;
use super::spread::Busy;
#[cfg(feature = "tls")]
use super::tls_conn::TlsConn;
use super::token::Token;
use super::{Counters, End, Shared};
use crate::error::{Error, Result};
use crate::sys::epoll::{Epoll, ERR, EXCLUSIVE, HUP, IN, OUT};

/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// A slot of the connection table. `generation` changes each time the slot
/// is reused (see [`Token::Conn`]).
struct Slot {
    generation: u32,
    entry: Entry,
}

/// What a slot holds: one kind of connection or none, so that a slot is
/// as small as the larger kind.
enum Entry {
    Free,
    Plain(Conn<Client>),
    /// In a server with TLS, every connection is one.
    #[cfg(feature = "tls")]
    Tls(TlsConn<Client>),
}

impl Entry {
    /// The connection's socket and whether it waits to write; `None` for
    /// a free slot.
    fn state(&self) -> Option<(RawFd, bool)> {
        match self {
            Entry::Free => None,
            Entry::Plain(conn) => Some((conn.sock.as_raw_fd(), conn.wants_write())),
            #[cfg(feature = "tls")]
            Entry::Tls(conn) => Some((conn.sock().as_raw_fd(), conn.wants_write())),
        }
    }

    fn expired(&self, now: u64, limits: &super::pace::Limits) -> bool {
        match self {
            Entry::Free => false,
            Entry::Plain(conn) => conn.expired(now, limits),
            #[cfg(feature = "tls")]
            Entry::Tls(conn) => conn.expired(now, limits),
        }
    }
}

struct Loop<'a> {
    shared: &'a Shared,
    counters: &'a Counters,
    epoll: Epoll,
    slots: Vec<Slot>,
    free: Vec<usize>,
    buf: Vec<u8>,
    clock: LoopClock,
    reclaim: Reclaim,
    /// Watched while loops stand by, to wake one when this one is busy.
    busy: Busy,
}

/// Every loop's epoll instance, made (with the listener and the waker
/// registered) before any loop starts: once the first loop accepts, the
/// process may run out of descriptors, and a loop that had still to make
/// its epoll would fail and take the server down.
pub(super) fn prepare(shared: &Shared, loops: usize) -> Result<Vec<Epoll>> {
    (0..loops)
        .map(|index| {
            let epoll = Epoll::new(EVENTS).map_err(|e| Error::os("epoll_create1", e))?;
            // A standby loop watches the listener once woken.
            if !shared.spread.stands_by(index) {
                watch_listener(shared, &epoll)?;
            }
            epoll
                .add(shared.waker.as_fd().as_raw_fd(), IN, Token::Waker.to_u64())
                .map_err(|e| Error::os("epoll_ctl(waker)", e))?;
            Ok(epoll)
        })
        .collect()
}

/// Adds the listening socket to a loop's epoll.
fn watch_listener(shared: &Shared, epoll: &Epoll) -> Result<()> {
    let listener = shared.socket.as_raw_fd();
    epoll.add(listener, IN | EXCLUSIVE, Token::Listener.to_u64()).map_err(|e| Error::os("epoll_ctl(listener)", e))
}

/// One loop, on an epoll instance from [`prepare`]; returns when the
/// server is stopped. A standby loop first waits for its turn.
pub(super) fn run(shared: &Shared, index: usize, epoll: Epoll) -> Result<()> {
    if shared.spread.stands_by(index) {
        if !shared.spread.wait_turn(shared, index) {
            return Ok(());
        }
        if watch_listener(shared, &epoll).is_err() {
            // The loops that serve go on; no more wake.
            Counters::add(&shared.counters[index].errors, 1);
            shared.spread.stop_waking();
            return Ok(());
        }
    }
    let mut lp = Loop {
        shared,
        counters: &shared.counters[index],
        epoll,
        slots: Vec::new(),
        free: Vec::new(),
        buf: vec![0u8; super::chunk(&shared.config)],
        clock: LoopClock::new(sweep_period(&shared.config)),
        reclaim: Reclaim::default(),
        busy: Busy::new(),
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
            let watch = self.shared.spread.has_standby();
            let waiting = watch.then(Instant::now);
            ready.extend(self.epoll.wait(self.clock.wait()).map_err(|e| Error::os("epoll_wait", e))?);
            if let Some(t) = waiting {
                self.busy.waited(t.elapsed());
            }
            self.clock.tick();
            for &(token, flags) in &ready {
                match Token::from_u64(token) {
                    Token::Waker if self.shared.is_stopped() => return Ok(()),
                    Token::Waker => {}
                    Token::Listener => self.accept(),
                    Token::Conn { index, generation } => self.on_event(index as usize, generation, flags),
                }
            }
            if self.clock.pause_over() {
                let fd = self.shared.socket.as_raw_fd();
                if self.epoll.add(fd, IN | EXCLUSIVE, Token::Listener.to_u64()).is_err() {
                    Counters::add(&self.counters.errors, 1);
                    self.clock.pause_accepting();
                }
            }
            let swept = self.clock.sweep_due();
            if swept {
                self.sweep();
            }
            let all_free = self.free.len() == self.slots.len();
            self.reclaim.after_wakeup(|| swept || all_free);
            if watch && self.busy.wants_help() {
                self.shared.spread.wake_next();
            }
        }
    }

    /// `accept()`: takes one waiting client. One per wake-up: level-
    /// triggered epoll reports the listener again at once if more wait,
    /// in the same `epoll_wait` as the other connections' events, where a
    /// second `accept4` in a row would mostly find the queue empty.
    fn accept(&mut self) {
        let cx = Ctx { counters: self.counters, now: self.clock.now(), limits: &self.shared.limits };
        let entry = match accept_one(self.shared, &mut self.buf, &cx) {
            Accepted::Conn(conn) => Entry::Plain(conn),
            #[cfg(feature = "tls")]
            Accepted::Tls(conn) => Entry::Tls(conn),
            Accepted::Next | Accepted::Empty => return,
            Accepted::Exhausted => {
                // Stop watching the listener for a moment instead of
                // spinning on it.
                if self.epoll.delete(self.shared.socket.as_raw_fd()).is_ok() {
                    self.clock.pause_accepting();
                }
                return;
            }
        };
        self.register(entry);
    }

    /// Puts an accepted connection in a slot and watches it; one that
    /// epoll refuses is counted as failed and closed.
    fn register(&mut self, entry: Entry) {
        let Some((fd, wants_write)) = entry.state() else { return };
        let index = self.take_slot();
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1);
        let token = Token::Conn { index: index as u32, generation: slot.generation };
        if self.epoll.add(fd, interest(wants_write), token.to_u64()).is_err() {
            self.free.push(index);
            self.shared.ended(self.counters, End::Failed);
            return; // the socket is closed with `entry`, after its count
        }
        slot.entry = entry;
    }

    /// A free slot of the table, a new one if none is.
    fn take_slot(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot { generation: 0, entry: Entry::Free });
            self.slots.len() - 1
        })
    }

    fn on_event(&mut self, index: usize, generation: u32, flags: u32) {
        // A stale event (the connection was closed in this batch) finds
        // another generation or a free slot.
        let Some(slot) = self.slots.get_mut(index).filter(|s| s.generation == generation) else {
            return;
        };
        let Some((fd, wanted_write)) = slot.entry.state() else {
            return;
        };
        let cx = Ctx { counters: self.counters, now: self.clock.now(), limits: &self.shared.limits };
        let mut outcome = match &mut slot.entry {
            Entry::Free => return,
            Entry::Plain(conn) => {
                let readable = flags & (IN | ERR | HUP) != 0;
                let writable = flags & (OUT | ERR | HUP) != 0;
                conn.ready(readable, writable, &mut self.buf, &cx)
            }
            #[cfg(feature = "tls")]
            Entry::Tls(conn) => conn.ready(&mut self.buf, &cx),
        };
        // Watch for input or for room to write, whichever the state now
        // needs; unchanged, epoll is left alone.
        let wants_write = slot.entry.state().is_some_and(|(_, w)| w);
        let token = Token::Conn { index: index as u32, generation };
        if outcome == Outcome::Keep
            && wants_write != wanted_write
            && self.epoll.modify(fd, interest(wants_write), token.to_u64()).is_err()
        {
            outcome = Outcome::Fail;
        }
        match outcome {
            Outcome::Keep => {}
            Outcome::Close => self.close(index, End::Done),
            Outcome::Fail => self.close(index, End::Failed),
        }
    }

    /// Closes connections past their deadline.
    fn sweep(&mut self) {
        let now = self.clock.now();
        for index in 0..self.slots.len() {
            if self.slots[index].entry.expired(now, &self.shared.limits) {
                self.close(index, End::Idle);
            }
        }
    }

    /// `close()` of a registered connection. It is taken out of epoll
    /// first: closing alone would leave it registered while any copy of the
    /// descriptor lives on (a `fork()`ed child of the host program), and
    /// its events would keep waking this loop for a slot that is gone.
    fn close(&mut self, index: usize, end: End) {
        let Some((fd, wants_write)) = self.slots[index].entry.state() else {
            return;
        };
        let _ = self.epoll.delete(fd);
        if wants_write {
            self.reclaim.released();
        }
        self.free.push(index);
        self.shared.ended(self.counters, end);
        // The socket is closed here, after its count.
        self.slots[index].entry = Entry::Free;
    }

    fn close_all(&mut self) {
        for index in 0..self.slots.len() {
            self.close(index, End::Done);
        }
    }
}

/// How often the loop looks for connections past their deadline: a few
/// times per idle timeout, and per TLS handshake timeout in a TLS server.
fn sweep_period(config: &super::Config) -> Option<std::time::Duration> {
    #[cfg(feature = "tls")]
    if config.tls.is_some() {
        let handshake = config.tls_handshake_timeout;
        return Some(config.idle_timeout.map_or(handshake, |idle| idle.min(handshake)));
    }
    config.idle_timeout
}

/// The epoll interest a connection's state needs: room to write while
/// it has bytes waiting to go, else input.
fn interest(wants_write: bool) -> u32 {
    if wants_write {
        OUT
    } else {
        IN
    }
}
