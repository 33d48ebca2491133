//! The concurrent TCP server on io_uring (`Config::io_uring`): the same
//! connections as [`super::concurrent`], served by completions instead of
//! readiness.
//!
//! Where the epoll loop makes a `recv` and a `send` system call per request
//! and an `epoll_wait` per wake-up, this loop makes one `io_uring_enter` per
//! wake-up: it submits every request queued since the last one and waits
//! for the next completions (0.16 calls per request under `loadgen
//! persistent`, against 2.1-2.7). Per connection, one request is in flight
//! at a time:
//! - *reading*: a `recv` into one of the loop's provided buffers
//!   ([`BufRing`]); while it waits for data the kernel puts the buffer back,
//!   so a connection waiting for input holds none (as in the epoll loop).
//!   When every buffer is out, a `recv` fails with `ENOBUFS` (one that
//!   would wait, too), and is queued again after the batch that gives
//!   one back;
//! - *replying*: the bytes received, upper-cased in that buffer, go back
//!   in a `send` with `MSG_DONTWAIT`. When the kernel takes them all, the
//!   buffer is given back and the next `recv` is queued. When it takes only
//!   part (the client does not read its replies), the rest is copied into
//!   the connection's own buffer ([`Conn::replied`]), the buffer is given
//!   back, and the connection waits for room to write (`POLLOUT`) in the
//!   writing state of [`Conn`], which sends it and reads no more before it
//!   has gone (back-pressure, as in the epoll loop);
//! - a read that fills the buffer is a client that streams: it is answered
//!   as the epoll loop answers it, with system calls in a row until its
//!   socket is empty ([`Conn::stream`]), then goes back to the ring. A
//!   trip through the ring per 64 KiB cost 1.13x the C reference's CPU
//!   per MiB, against 0.89x this way.
//!
//! Clients come from a multishot `accept` (the kernel accepts each one and
//! posts its descriptor: no `accept4`, no poll to arm again); each one's
//! first request is served at once by the epoll loop's own [`admit`] (the
//! reply and the FIN in one segment for a one-shot client). One that has
//! sent nothing yet waits in a `POLLIN` poll, and its first bytes are read
//! as the epoll loop reads them ([`Conn::ready`]), looking ahead for the
//! end of stream: through the ring, a one-shot client that connects before
//! it sends had its reply and FIN merged 5 to 19 times in 20, now 20. The time limits
//! are the same [`Conn`] clocks, swept the same way.
//!
//! A connection is closed at once (its descriptor, and its count); its slot
//! is kept until the request it had in flight has completed (cancelled), so
//! that the completion finds the slot and gives back any buffer it holds.
//! Stopping cancels the accept and waits for every cancelled request.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::conn::{Conn, Outcome, Pace};
use super::epoll_loop::{admit, Accepted, Timing};
use super::{Counters, End, Shared, CHUNK};
use crate::error::{Error, Result};
use crate::sys::uring::{BufRing, Cqe, Ring, Sqe};
use crate::upper::upper_in_place;

/// Submission queue entries; the queue is submitted early when full.
const ENTRIES: u32 = 256;
/// Completion queue entries: one request per connection is in flight, and
/// the kernel keeps any completion that does not fit (`NODROP`).
const CQ_ENTRIES: u32 = 4096;
/// Provided buffers per loop, of [`CHUNK`] bytes each (4 MiB reserved, a
/// page of it resident for each buffer a small request has used). A
/// connection holds one only from its data's arrival to the end of its
/// reply's `send`; when all are out, a `recv` fails with `ENOBUFS` and is
/// queued again after the batch of completions that gives one back.
const BUFFERS: u16 = 64;
/// How long stopping waits for cancelled requests to complete.
const DRAIN: Duration = Duration::from_secs(1);
/// The longest wait while connections wait for a buffer that has come
/// back (see [`Loop::feed_starved`]).
const STARVED_WAIT: Duration = Duration::from_millis(1);
/// At most this many passes over the completions left at a cut-short stop
/// (clients may go on arriving meanwhile).
const LEFTOVER_PASSES: usize = 16;

// What a completion is for: the kind in the top byte of `user_data`, the
// connection's slot in the low 32 bits.
const RECV: u64 = 1;
const SEND: u64 = 2;
const WRITABLE: u64 = 3;
const READABLE: u64 = 7;
const LISTENER: u64 = 4;
const WAKER: u64 = 5;
const CANCEL: u64 = 6;

fn user_data(kind: u64, index: usize) -> u64 {
    (kind << 56) | index as u64
}

/// The request a connection has in flight.
#[derive(Clone, Copy, Debug)]
enum Op {
    Recv,
    /// A reply of `len` bytes, from provided buffer `bid`.
    Send {
        bid: u16,
        len: usize,
    },
    /// Waiting for room to write (`POLLOUT`).
    Writable,
    /// A connection that has sent nothing yet, waiting for its first
    /// bytes (`POLLIN`): see [`Loop::resume`].
    Readable,
}

impl Op {
    fn kind(self) -> u64 {
        match self {
            Op::Recv => RECV,
            Op::Send { .. } => SEND,
            Op::Writable => WRITABLE,
            Op::Readable => READABLE,
        }
    }
}

/// A slot of the connection table: free when it has neither a connection
/// nor a request in flight.
#[derive(Default)]
struct Slot {
    conn: Option<Conn<OwnedFd>>,
    op: Option<Op>,
    /// The descriptor of a connection closed while a request was in
    /// flight, closed when that request completes: until then no new
    /// client can be given its number, which the request may name.
    lingering: Option<OwnedFd>,
}

/// A loop's ring and buffers, made before any loop starts (see
/// [`super::epoll_loop::prepare`]: once a loop accepts, the process may be
/// out of descriptors).
pub(super) struct Engine {
    ring: Ring,
    bufs: BufRing,
}

/// Every loop's ring, made before any loop starts.
pub(super) fn prepare(loops: usize) -> Result<Vec<Engine>> {
    (0..loops)
        .map(|_| {
            let ring = Ring::new(ENTRIES, CQ_ENTRIES).map_err(|e| Error::os("io_uring_setup", e))?;
            let bufs = BufRing::new(BUFFERS, CHUNK).map_err(|e| Error::os("mmap(provided buffers)", e))?;
            Ok(Engine { ring, bufs })
        })
        .collect()
}

struct Loop<'a> {
    shared: &'a Shared,
    counters: &'a Counters,
    /// Dropped before `bufs` (fields are dropped in order), after
    /// `close_all` has waited for every request that may write into the
    /// buffers (or leaked them).
    ring: Ring,
    bufs: BufRing,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Connections whose `recv` found no buffer, to be queued again.
    starved: VecDeque<usize>,
    /// For [`accept_one`] and the writing state, as in the epoll loop.
    buf: Vec<u8>,
    pace: Pace,
    time: Timing,
    /// A failure of the ring itself, which ends the loop.
    broken: Option<std::io::Error>,
    /// The multishot accept is in flight.
    accepting: bool,
    /// `recv`s that found no buffer (for the tests).
    starved_total: u64,
    /// `close_all` has run.
    closed: bool,
}

/// One loop, on a ring from [`prepare`]; returns when the server is stopped.
pub(super) fn run(shared: &Shared, index: usize, engine: Engine) -> Result<()> {
    serve(shared, index, engine).0
}

/// [`run`], and how many `recv`s found no buffer.
fn serve(shared: &Shared, index: usize, engine: Engine) -> (Result<()>, u64) {
    let mut lp = match Loop::new(shared, index, engine) {
        Ok(lp) => lp,
        Err(e) => return (Err(e), 0),
    };
    let result = lp.serve();
    lp.close_all();
    (result, lp.starved_total)
}

impl<'a> Loop<'a> {
    /// Loop `index` of `shared`, its ring enabled and its buffers given to
    /// the kernel; no request queued yet.
    fn new(shared: &'a Shared, index: usize, engine: Engine) -> Result<Loop<'a>> {
        // `bufs` first: a pattern's bindings are dropped last to first.
        let Engine { mut bufs, ring } = engine;
        ring.enable().map_err(|e| Error::os("io_uring_register(enable)", e))?;
        // SAFETY: `bufs` goes into the loop below with `ring`; the loop is
        // dropped after `close_all`, which waits for every request to end
        // and leaks `bufs` if one may not have. On an early return here
        // nothing was ever submitted.
        unsafe { bufs.register(&ring) }.map_err(|e| Error::os("io_uring_register(provided buffers)", e))?;
        Ok(Loop {
            shared,
            counters: &shared.counters[index],
            ring,
            bufs,
            slots: Vec::new(),
            free: Vec::new(),
            starved: VecDeque::new(),
            buf: vec![0u8; CHUNK],
            pace: shared.pace(),
            time: Timing::new(shared.config.idle_timeout),
            broken: None,
            accepting: false,
            starved_total: 0,
            closed: false,
        })
    }

    fn serve(&mut self) -> Result<()> {
        self.watch_waker();
        self.watch_listener();
        loop {
            if let Some(e) = self.broken.take() {
                return Err(Error::os("io_uring", e));
            }
            if self.shared.is_stopped() {
                return Ok(());
            }
            self.ring.submit_and_wait(self.wait()).map_err(|e| Error::os("io_uring_enter", e))?;
            self.time.tick();
            while let Some(cqe) = self.ring.next_cqe() {
                self.complete(cqe);
            }
            self.feed_starved();
            if self.time.pause_over() {
                self.watch_listener();
            }
            if self.time.sweep_due() {
                self.sweep();
            }
        }
    }

    /// How long the next wake-up may wait for a completion (`None`: for
    /// ever): until the next sweep or the end of an accept pause, and at
    /// most [`STARVED_WAIT`] while connections wait for a buffer that has
    /// come back. Fed connections that had nothing to read after all took
    /// none and complete nothing: the next are fed soon, even if nothing
    /// else completes.
    fn wait(&self) -> Option<Duration> {
        let wait = self.time.wait();
        if self.starved.is_empty() || self.bufs.free() == 0 {
            return wait;
        }
        Some(wait.map_or(STARVED_WAIT, |w| w.min(STARVED_WAIT)))
    }

    /// Queues a request; a ring that refuses it breaks the loop.
    fn queue(&mut self, sqe: Sqe) {
        // SAFETY: the only buffers a request of this loop names are its
        // provided buffers: a `send` names the one its reply is in, which
        // stays the loop's (not given back, `BufRing::give_back`) until
        // that send's completion, and the buffers outlive every request
        // (`close_all` waits for them all, or leaks the buffers).
        if let Err(e) = unsafe { self.ring.push(sqe) } {
            self.broken.get_or_insert(e);
        }
    }

    /// A poll of the waker: a stop.
    fn watch_waker(&mut self) {
        let waker = self.shared.waker.as_fd().as_raw_fd();
        self.queue(Sqe::poll(waker, libc::POLLIN as u32, user_data(WAKER, 0)));
    }

    /// One multishot `accept` on the listener: the kernel accepts each
    /// client as it arrives and posts its descriptor, with no `accept4`
    /// call and no poll to arm again. (The kernel wakes one waiting accept
    /// per client, so loops sharing the listener take turns, as the epoll
    /// loops do with `EPOLLEXCLUSIVE`.)
    fn watch_listener(&mut self) {
        let fd = self.shared.socket.as_raw_fd();
        self.queue(Sqe::accept_multishot(fd, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, user_data(LISTENER, 0)));
        self.accepting = true;
    }

    fn complete(&mut self, cqe: Cqe) {
        let kind = cqe.user_data >> 56;
        let index = (cqe.user_data & 0xFFFF_FFFF) as usize;
        match kind {
            // Only a stop writes to the waker; the loop sees the flag next.
            // Anything else (an error) is watched for again.
            WAKER if !self.shared.is_stopped() => self.watch_waker(),
            WAKER | CANCEL => {}
            LISTENER => self.accept(cqe),
            _ => self.on_conn(kind, index, cqe),
        }
    }

    /// A client accepted (or the accept failed): its first request is
    /// served at once, as in the epoll loop, and it gets a slot.
    fn accept(&mut self, cqe: Cqe) {
        if !cqe.more() {
            self.accepting = false;
        }
        // SAFETY: a LISTENER completion is one of the accept's.
        match unsafe { cqe.accepted() } {
            Some(fd) => {
                if let Accepted::Conn(conn) =
                    admit(self.shared, self.counters, fd, None, &mut self.buf, self.time.now, &self.pace)
                {
                    let index = self.free.pop().unwrap_or_else(|| {
                        self.slots.push(Slot::default());
                        self.slots.len() - 1
                    });
                    self.slots[index].conn = Some(conn);
                    self.resume(index);
                }
            }
            // Cancelled: by the stop, or else (the kernel's own reasons)
            // accepting starts again below.
            None if -cqe.res == libc::ECANCELED && self.shared.is_stopped() => return,
            None if -cqe.res == libc::ECANCELED => {}
            // Interrupted, or a client gone before it was accepted: no
            // error of the server's, and accepting starts again below.
            None if matches!(-cqe.res, libc::EINTR | libc::ECONNABORTED | libc::EAGAIN) => {}
            None => {
                // Out of descriptors or memory (the client waits in the
                // backlog), or anything else: counted, and accepting
                // pauses a moment rather than spin.
                Counters::add(&self.counters.errors, 1);
                if !self.accepting {
                    self.time.pause_accepting();
                }
                return;
            }
        }
        if !self.accepting && !self.time.accepting_paused() {
            self.watch_listener();
        }
    }

    /// A connection with nothing in flight: queues what its state needs,
    /// the rest of a reply to write or the next read.
    fn resume(&mut self, index: usize) {
        let Some(conn) = self.slots[index].conn.as_ref() else { return };
        let fd = conn.sock.as_raw_fd();
        let (sqe, op) = if conn.wants_write() {
            (Sqe::poll(fd, libc::POLLOUT as u32, user_data(WRITABLE, index)), Op::Writable)
        } else if conn.is_fresh() {
            // Nothing read yet (it connected before sending): its first
            // request is read as the epoll loop reads it, looking ahead for
            // the end of stream, so that a one-shot client's reply and FIN
            // still leave in one segment.
            (Sqe::poll(fd, libc::POLLIN as u32, user_data(READABLE, index)), Op::Readable)
        } else {
            // With no buffer left, tried at once it would be refused
            // (ENOBUFS) with or without data: it waits for data first.
            let poll_first = self.bufs.free() == 0;
            (Sqe::recv_select(fd, CHUNK as u32, user_data(RECV, index), poll_first), Op::Recv)
        };
        self.slots[index].op = Some(op);
        self.queue(sqe);
    }

    fn on_conn(&mut self, kind: u64, index: usize, cqe: Cqe) {
        let bid = cqe.buffer();
        if let Some(b) = bid {
            if !self.bufs.take(b) {
                // The kernel handed over a buffer it did not have: the
                // loop's books are wrong, and it stops rather than guess.
                self.broken.get_or_insert(std::io::Error::other("a provided buffer was handed over twice"));
                return;
            }
        }
        let Some(slot) = self.slots.get_mut(index) else {
            if let Some(b) = bid {
                self.give_back(b);
            }
            return;
        };
        let op = match slot.op {
            Some(op) if op.kind() == kind => op,
            _ => {
                // No such request in flight (which cannot happen): only
                // the buffer it names, if any, is given back.
                if let Some(b) = bid {
                    self.give_back(b);
                }
                return;
            }
        };
        slot.op = None;
        if slot.conn.is_none() {
            // Closed while this was in flight: the descriptor is closed and
            // the slot is free now, once whatever buffer the request held
            // is given back.
            slot.lingering = None;
            self.free.push(index);
            if let Some(b) = bid {
                self.give_back(b);
            }
            if let Op::Send { bid, .. } = op {
                self.give_back(bid);
            }
            return;
        }
        match op {
            Op::Recv => self.on_recv(index, cqe.res, bid),
            Op::Send { bid, len } => self.on_send(index, cqe.res, bid, len),
            Op::Writable => self.on_ready(index, false, true),
            Op::Readable => self.on_ready(index, true, false),
        }
    }

    /// A `recv` completed: the reply goes back from the same buffer.
    fn on_recv(&mut self, index: usize, res: i32, bid: Option<u16>) {
        if res <= 0 {
            if let Some(b) = bid {
                self.give_back(b);
            }
            match -res {
                // Half-close from the client: everything it sent before
                // has been answered.
                0 => self.close(index, End::Done),
                libc::ENOBUFS => {
                    self.starved_total += 1;
                    self.starved.push_back(index);
                }
                libc::EINTR | libc::EAGAIN => self.resume(index),
                _ => self.close(index, End::Failed),
            }
            return;
        }
        let Some(bid) = bid else {
            // Data with no buffer named: not what was asked for.
            self.close(index, End::Failed);
            return;
        };
        let n = res as usize;
        let (Some(conn), Some(data)) = (self.slots[index].conn.as_mut(), self.bufs.get(bid, n)) else {
            // (Cannot happen: `on_conn` found the connection, and the
            // buffer was just taken.)
            self.give_back(bid);
            self.close(index, End::Failed);
            return;
        };
        conn.received(n, self.counters, self.time.now, &self.pace);
        let fd = conn.sock.as_raw_fd();
        upper_in_place(data);
        if n == CHUNK {
            // A full buffer: the client streams (or sent a request of
            // exactly this size). Answered with system calls in a row, as
            // the epoll loop does, then back to the ring.
            let outcome = conn.stream(data, &mut self.buf, self.counters, self.time.now, &self.pace);
            self.give_back(bid);
            match outcome {
                Outcome::Keep => self.resume(index),
                Outcome::Close => self.close(index, End::Done),
                Outcome::Fail => self.close(index, End::Failed),
            }
            return;
        }
        let sqe = reply(fd, data, user_data(SEND, index));
        self.slots[index].op = Some(Op::Send { bid, len: n });
        self.queue(sqe);
    }

    /// A reply's `send` completed, whole or in part.
    fn on_send(&mut self, index: usize, res: i32, bid: u16, len: usize) {
        let result = if res >= 0 { Ok(res as usize) } else { Err(std::io::Error::from_raw_os_error(-res)) };
        let outcome = match (self.slots[index].conn.as_mut(), self.bufs.get(bid, len)) {
            (Some(conn), Some(chunk)) => conn.replied(chunk, result, self.counters),
            _ => Outcome::Fail, // (cannot happen, as in `on_recv`)
        };
        self.give_back(bid);
        match outcome {
            Outcome::Keep => self.resume(index),
            Outcome::Close => self.close(index, End::Done),
            Outcome::Fail => self.close(index, End::Failed),
        }
    }

    /// Room to write a held-back reply (the epoll loop's writing state), or
    /// a new connection's first bytes: served as the epoll loop serves
    /// them.
    fn on_ready(&mut self, index: usize, readable: bool, writable: bool) {
        let Some(conn) = self.slots[index].conn.as_mut() else { return };
        match conn.ready(readable, writable, &mut self.buf, self.counters, self.time.now, &self.pace) {
            Outcome::Keep => self.resume(index),
            Outcome::Close => self.close(index, End::Done),
            Outcome::Fail => self.close(index, End::Failed),
        }
    }

    /// Gives a buffer back to the kernel.
    fn give_back(&mut self, bid: u16) {
        self.bufs.give_back(bid);
    }

    /// Queues again the `recv` of connections that found no buffer, as
    /// many as the kernel has buffers now. Done after each batch of
    /// completions, once the batch has given back what it could: a
    /// connection starved after the last buffer came back would otherwise
    /// wait for the next one, which may never come. (One that finds none
    /// again, taken by another meanwhile, is starved again, and fed after
    /// the next batch.) A fed one that has nothing to read after all (its
    /// `recv` was refused for want of a buffer before it looked for data)
    /// takes no buffer and completes nothing: the loop then waits at most
    /// [`STARVED_WAIT`] before it feeds the next ones.
    fn feed_starved(&mut self) {
        if self.starved.is_empty() {
            return;
        }
        let mut free = self.bufs.free();
        while free > 0 {
            let Some(index) = self.starved.pop_front() else { break };
            // Skip a connection closed (or its slot reused) meanwhile.
            if self.slots.get(index).is_some_and(|s| s.conn.is_some() && s.op.is_none()) {
                self.resume(index);
                free -= 1;
            }
        }
    }

    /// Closes connections past their deadline, as the epoll loop does.
    fn sweep(&mut self) {
        for index in 0..self.slots.len() {
            let expired = self.slots[index].conn.as_ref().is_some_and(|c| c.clock.expired(self.time.now, &self.pace));
            if expired {
                self.close(index, End::Idle);
            }
        }
    }

    /// Closes a connection now: counted, and its descriptor closed, unless
    /// it has a request in flight: that is cancelled, and the descriptor is
    /// closed (and the slot freed) by its completion, so that no new client
    /// gets the number while a request may still name it.
    fn close(&mut self, index: usize, end: End) {
        let slot = &mut self.slots[index];
        let Some(conn) = slot.conn.take() else { return };
        self.shared.ended(self.counters, end);
        match slot.op {
            Some(op) => {
                let Conn { sock, .. } = conn;
                slot.lingering = Some(sock);
                self.queue(Sqe::cancel(user_data(op.kind(), index), user_data(CANCEL, index)));
            }
            None => {
                self.free.push(index);
                drop(conn);
            }
        }
    }

    /// A request of the loop's may still be in the kernel's hands.
    fn in_flight(&self) -> bool {
        self.accepting || self.slots.iter().any(|s| s.op.is_some())
    }

    /// Closes every connection, stops accepting, and waits (up to
    /// [`DRAIN`]) for the cancelled requests: no buffer is then still the
    /// kernel's when the memory goes, and no client accepted meanwhile is
    /// left open.
    fn close_all(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        for index in 0..self.slots.len() {
            self.close(index, End::Done);
        }
        if self.accepting {
            self.queue(Sqe::cancel(user_data(LISTENER, 0), user_data(CANCEL, 0)));
        }
        let until = Instant::now() + DRAIN;
        while self.in_flight() && self.broken.is_none() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.ring.submit_and_wait(Some(left)).is_err() {
                break;
            }
            while let Some(cqe) = self.ring.next_cqe() {
                match cqe.user_data >> 56 {
                    kind @ (RECV | SEND | WRITABLE | READABLE) => {
                        self.on_conn(kind, (cqe.user_data & 0xFFFF_FFFF) as usize, cqe)
                    }
                    LISTENER => {
                        self.accepting &= cqe.more();
                        // SAFETY: a LISTENER completion is one of the accept's.
                        drop(unsafe { cqe.accepted() }); // closed: the server is stopping
                    }
                    _ => {}
                }
            }
        }
        // Whatever completed since (the drain cut short): no accepted
        // descriptor is left open. Each pass enters first, waiting for
        // nothing: that moves to the queue completions the kernel had to
        // keep aside while the queue was full.
        for _ in 0..LEFTOVER_PASSES {
            let _ = self.ring.submit_and_wait(Some(Duration::ZERO));
            let mut any = false;
            while let Some(cqe) = self.ring.next_cqe() {
                any = true;
                if cqe.user_data >> 56 == LISTENER {
                    // SAFETY: a LISTENER completion is one of the accept's.
                    drop(unsafe { cqe.accepted() });
                }
            }
            if !any {
                break;
            }
        }
        if self.in_flight() {
            // Requests still in flight may write into the buffers after the
            // ring is closed: they stay mapped.
            self.bufs.leak();
        }
    }
}

/// A loop that ends by a panic closes its connections too (`close_all`
/// runs once: after it, there is nothing left to close).
impl Drop for Loop<'_> {
    fn drop(&mut self) {
        self.close_all();
    }
}

/// A reply: never waits (`MSG_DONTWAIT`: what the kernel cannot take now
/// comes back as a short count), never raises `SIGPIPE`.
fn reply(fd: i32, data: &[u8], user_data: u64) -> Sqe {
    Sqe::send(fd, data, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT, user_data)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::server::{Config, Server};
    use crate::sys::uring;

    /// A loop's ring, with `buffers` provided buffers of the usual size.
    fn engine(buffers: u16) -> Engine {
        Engine {
            ring: Ring::new(ENTRIES, CQ_ENTRIES).expect("ring"),
            bufs: BufRing::new(buffers, CHUNK).expect("bufs"),
        }
    }

    impl Loop<'_> {
        /// Gives `sock` a slot, as a client that has sent something (its
        /// next read is a `recv`), counted active as `admit` counts one.
        fn add(&mut self, sock: OwnedFd) {
            self.shared.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut conn = Conn::new(sock, 0, &self.pace);
            conn.received(1, self.counters, 0, &self.pace);
            self.slots.push(Slot { conn: Some(conn), ..Slot::default() });
        }
    }

    /// Among the connections that found no buffer, one with nothing to
    /// read (its `recv` was refused before it looked) is fed the only
    /// buffer that came back, and takes nothing: the one with data behind
    /// it must still be fed, though nothing completes meanwhile. And a
    /// connection whose `recv` is queued while no buffer is free waits for
    /// data, rather than joining those that found no buffer.
    #[test]
    fn a_starved_connection_behind_one_with_nothing_to_read_is_fed_soon() {
        if !uring::tests::io_uring_here() {
            return;
        }
        // No idle timeout, and so no sweep to wake the loop.
        let config = Config { port: 0, threads: 1, io_uring: true, idle_timeout: None, ..Config::default() };
        let server = Server::bind(config).expect("bind");
        let mut lp = Loop::new(&server.shared, 0, engine(1)).expect("loop");
        let (idle, _idle_client) = uring::tests::pair();
        let (talker, talker_client) = uring::tests::pair();
        let (later, _later_client) = uring::tests::pair();
        for sock in [idle, talker, later] {
            lp.add(sock);
        }
        lp.starved.extend([0, 1]);
        crate::sys::send(talker_client.as_fd(), b"hello").expect("send");

        lp.feed_starved();
        assert_eq!(lp.starved, [1], "one buffer: one connection fed");
        let wait = lp.wait().expect("a wait with a bound, though nothing else has one");
        assert!(wait <= STARVED_WAIT, "{wait:?}");
        lp.ring.submit_and_wait(Some(wait)).expect("enter");
        assert!(lp.ring.next_cqe().is_none(), "the idle connection's recv completed");

        // The next turn feeds the talker.
        lp.feed_starved();
        assert!(lp.starved.is_empty());
        lp.ring.submit_and_wait(Some(Duration::from_secs(5))).expect("enter");
        let cqe = lp.ring.next_cqe().expect("the talker's recv completed");
        lp.complete(cqe);
        // Its reply is queued, from the only buffer: none is free now
        // when the third connection's `recv` is queued.
        assert_eq!(lp.bufs.free(), 0);
        lp.resume(2);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < 5 && Instant::now() < deadline {
            lp.ring.submit_and_wait(Some(Duration::from_millis(10))).expect("enter");
            while let Some(cqe) = lp.ring.next_cqe() {
                lp.complete(cqe);
            }
            let mut buf = [0u8; 16];
            if let Ok(n) = crate::sys::recv(talker_client.as_fd(), &mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(got, b"HELLO");
        assert!(lp.broken.is_none());
        assert_eq!(lp.starved_total, 0, "a recv with nothing to read was refused for want of a buffer");
        assert!(lp.starved.is_empty());
    }

    /// A loop stopped while a request may still write into its buffers
    /// (here: the drain skipped, as when the loop broke) keeps them mapped;
    /// one whose requests all ended lets them go.
    #[test]
    fn buffers_stay_mapped_while_a_request_may_write_into_them() {
        if !uring::tests::io_uring_here() {
            return;
        }
        let config = Config { port: 0, threads: 1, io_uring: true, ..Config::default() };
        let server = Server::bind(config).expect("bind");
        for broken in [true, false] {
            let mut lp = Loop::new(&server.shared, 0, engine(1)).expect("loop");
            let (sock, _client) = uring::tests::pair();
            lp.add(sock);
            lp.resume(0);
            lp.ring.submit_and_wait(Some(Duration::ZERO)).expect("enter");
            assert!(lp.ring.next_cqe().is_none(), "the recv waits for data");
            if broken {
                lp.broken = Some(std::io::Error::other("broken, for the test"));
            }
            lp.close_all();
            assert_eq!(lp.bufs.is_leaked(), broken, "broken: {broken}");
        }
    }

    /// With two buffers for two dozen kept-open connections that send at
    /// once, `recv`s find none; each is queued again when a buffer comes
    /// back, and every client still gets its reply. No idle timeout: its
    /// sweep would wake a stalled loop every second and hide a stall.
    #[test]
    fn connections_that_find_no_buffer_are_served_when_one_comes_back() {
        if !uring::tests::io_uring_here() {
            return;
        }
        const CLIENTS: usize = 24;
        const ROUNDS: usize = 50;
        let config = Config { port: 0, threads: 1, io_uring: true, idle_timeout: None, ..Config::default() };
        let server = Server::bind(config).expect("bind");
        let port = server.port();
        let shared = Arc::clone(&server.shared);
        let engine = engine(2);
        let start = Instant::now();
        let serving = std::thread::spawn(move || serve(&shared, 0, engine));
        // Every connection is open and waiting in a `recv` before the bursts.
        let barrier = Arc::new(std::sync::Barrier::new(CLIENTS));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let mut conn = crate::client::Connection::connect("127.0.0.1", port, Some(Duration::from_secs(20)))
                    .expect("connect");
                assert_eq!(conn.request(b"hi").expect("first request"), b"HI");
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    for round in 0..ROUNDS {
                        let msg = format!("client {k} round {round} ").repeat(500).into_bytes();
                        barrier.wait();
                        let reply = conn.request(&msg).expect("request");
                        assert_eq!(reply, msg.to_ascii_uppercase(), "client {k} round {round}");
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().expect("a client failed");
        }
        server.stop();
        let (result, starved) = serving.join().expect("loop thread");
        result.expect("the loop ended cleanly");
        let stats = server.stats();
        assert_eq!((stats.connections_accepted, stats.errors, stats.connections_active), (CLIENTS as u64, 0, 0));
        assert_eq!(stats.bytes_in, stats.bytes_out);
        eprintln!("{starved} recvs found no buffer; {ROUNDS} rounds in {:?}", start.elapsed());
        assert!(starved > 0, "no recv ever found the two buffers taken: the test did not test it");
    }
}
