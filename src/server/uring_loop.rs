//! The concurrent TCP server on io_uring (`Config::io_uring`, cargo
//! feature `io-uring`): the same connections as the epoll loop, served by
//! completions instead of readiness. One `io_uring_enter` per wake-up
//! submits every request queued since the last one and waits for the next
//! completions.
//!
//! Per connection, one request is in flight at a time:
//! - *reading*: a `recv` into one of the loop's provided buffers. While it
//!   waits for data the buffer stays the kernel's, so a connection waiting
//!   for input holds none. When every buffer is out, a `recv` fails with
//!   `ENOBUFS` and is queued again once a buffer comes back;
//! - *replying*: the bytes, upper-cased in that buffer, go back in a
//!   `send` with `MSG_DONTWAIT`. What the kernel does not take is held by
//!   the connection ([`Conn::replied`]), which then waits for room to
//!   write (`POLLOUT`) in the state machine's writing state;
//! - a read that fills the buffer is a client that streams: it is answered
//!   with system calls in a row until its socket is empty
//!   ([`Conn::stream`]), then goes back to the ring.
//!
//! Clients come from a multishot `accept` and are admitted as on epoll
//! (`admission.rs`). One that has sent nothing yet waits in a `POLLIN`
//! poll and is read as on epoll, looking ahead for its end of stream.
//!
//! A closed connection's descriptor stays open until the request it had in
//! flight completes (cancelled), so that no new client gets its number
//! while a request may name it. This file has no `unsafe`: the ring and its
//! buffers are `sys::uring::Uring`.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use super::admission::{admit, Accepted, Client};
use super::conn::{Conn, Ctx, Outcome};
use super::pace::LoopClock;
use super::reclaim::Reclaim;
use super::token::{Kind, Tag};
use super::{Counters, End, Shared};
use crate::error::{Error, Result};
use crate::sys::uring::{Completion, Uring};
use crate::upper::upper_in_place;
use crate::CHUNK;

/// Submission queue entries; the queue is submitted early when full.
const ENTRIES: u32 = 256;
/// Completion queue entries: one request per connection is in flight, and
/// the kernel keeps any completion that does not fit (`NODROP`).
const CQ_ENTRIES: u32 = 4096;
/// Provided buffers per loop, of [`CHUNK`] bytes each. The memory is only
/// reserved: a page becomes resident when a request first uses it.
const BUFFERS: u16 = 64;
/// How long stopping waits for cancelled requests to complete.
const DRAIN: Duration = Duration::from_secs(1);
/// The longest wait while connections wait for a buffer that has come
/// back (see [`Loop::feed_starved`]).
const STARVED_WAIT: Duration = Duration::from_millis(1);
/// At most this many passes over the completions left at a cut-short stop
/// (clients may go on arriving meanwhile).
const LEFTOVER_PASSES: usize = 16;

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
    fn kind(self) -> Kind {
        match self {
            Op::Recv => Kind::Recv,
            Op::Send { .. } => Kind::Send,
            Op::Writable => Kind::Writable,
            Op::Readable => Kind::Readable,
        }
    }
}

/// A slot of the connection table: free when it has neither a connection
/// nor a request in flight.
#[derive(Default)]
struct Slot {
    conn: Option<Conn<Client>>,
    op: Option<Op>,
    /// The descriptor of a connection closed while a request was in
    /// flight, closed when that request completes: until then no new
    /// client can be given its number, which the request may name.
    lingering: Option<Client>,
}

/// Every loop's ring, made before any loop starts: once a loop accepts,
/// the process may be out of descriptors.
pub(super) fn prepare(loops: usize) -> Result<Vec<Uring>> {
    (0..loops)
        .map(|_| Uring::new(ENTRIES, CQ_ENTRIES, BUFFERS, CHUNK).map_err(|e| Error::os("io_uring_setup", e)))
        .collect()
}

struct Loop<'a> {
    shared: &'a Shared,
    counters: &'a Counters,
    uring: Uring,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Connections whose `recv` found no buffer, to be queued again.
    starved: VecDeque<usize>,
    /// For admission and the writing state, as in the epoll loop.
    buf: Vec<u8>,
    clock: LoopClock,
    reclaim: Reclaim,
    /// A failure of the ring itself, which ends the loop.
    broken: Option<std::io::Error>,
    /// The multishot accept is in flight.
    accepting: bool,
    /// `close_all` has run.
    closed: bool,
}

/// One loop, on a ring from [`prepare`]; returns when the server is stopped.
pub(super) fn run(shared: &Shared, index: usize, uring: Uring) -> Result<()> {
    let mut lp = Loop::new(shared, index, uring)?;
    let result = lp.serve();
    lp.close_all();
    result
}

impl<'a> Loop<'a> {
    /// Loop `index` of `shared`, its ring started; no request queued yet.
    fn new(shared: &'a Shared, index: usize, mut uring: Uring) -> Result<Loop<'a>> {
        uring.start().map_err(|e| Error::os("io_uring_register", e))?;
        Ok(Loop {
            shared,
            counters: &shared.counters[index],
            uring,
            slots: Vec::new(),
            free: Vec::new(),
            starved: VecDeque::new(),
            buf: vec![0u8; CHUNK],
            clock: LoopClock::new(shared.config.idle_timeout),
            reclaim: Reclaim::default(),
            broken: None,
            accepting: false,
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
            self.turn()?;
        }
    }

    /// One wake-up: submit, wait, handle what completed. Returns how many
    /// `recv`s found no buffer.
    fn turn(&mut self) -> Result<usize> {
        self.uring.submit_and_wait(self.wait()).map_err(|e| Error::os("io_uring_enter", e))?;
        self.clock.tick();
        while let Some(done) = self.uring.next() {
            self.complete(done);
        }
        let starved = self.starved.len();
        self.feed_starved();
        if self.clock.pause_over() {
            self.watch_listener();
        }
        let swept = self.clock.sweep_due();
        if swept {
            self.sweep();
        }
        let slots = &self.slots;
        if self.reclaim.after_wakeup(|| swept || slots.iter().all(|s| s.conn.is_none())) {
            // The provided buffers' pages too, if no request may pick one.
            self.uring.discard_idle_buffers();
        }
        Ok(starved)
    }

    /// What a connection's state machine needs at this wake-up.
    fn ctx(&self) -> Ctx<'a> {
        let shared: &'a Shared = self.shared;
        Ctx { counters: self.counters, now: self.clock.now(), limits: &shared.limits }
    }

    /// How long the next wake-up may wait for a completion (`None`: for
    /// ever): until the next sweep or the end of an accept pause, and at
    /// most [`STARVED_WAIT`] while connections wait for a buffer that has
    /// come back. A fed connection that had nothing to read after all
    /// takes no buffer and completes nothing: the next are fed soon, even
    /// if nothing else completes.
    fn wait(&self) -> Option<Duration> {
        let wait = self.clock.wait();
        if self.starved.is_empty() || self.uring.free() == 0 {
            return wait;
        }
        Some(wait.map_or(STARVED_WAIT, |w| w.min(STARVED_WAIT)))
    }

    /// Records a failure to queue a request: the ring is unusable.
    fn queued(&mut self, result: std::io::Result<()>) {
        if let Err(e) = result {
            self.broken.get_or_insert(e);
        }
    }

    /// A poll of the waker: a stop.
    fn watch_waker(&mut self) {
        let waker = self.shared.waker.as_fd().as_raw_fd();
        let r = self.uring.poll(waker, libc::POLLIN as u32, Tag::new(Kind::Waker, 0).to_u64());
        self.queued(r);
    }

    /// One multishot `accept` on the listener: the kernel accepts each
    /// client as it arrives and posts its descriptor. The kernel wakes one
    /// waiting accept per client, so loops sharing the listener take turns.
    fn watch_listener(&mut self) {
        let fd = self.shared.socket.as_raw_fd();
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let r = self.uring.accept_multishot(fd, flags, Tag::new(Kind::Listener, 0).to_u64());
        self.queued(r);
        self.accepting = true;
    }

    fn complete(&mut self, done: Completion) {
        let Some(tag) = Tag::from_u64(done.user_data()) else { return };
        match tag.kind {
            // Only a stop writes to the waker; the loop sees the flag next.
            // Anything else (an error) is watched for again.
            Kind::Waker if !self.shared.is_stopped() => self.watch_waker(),
            Kind::Waker | Kind::Cancel => {}
            Kind::Listener => self.accept(done),
            kind => self.on_conn(kind, tag.index as usize, done),
        }
    }

    /// A client accepted (or the accept failed): admitted as on epoll, and
    /// given a slot if it is to be kept.
    fn accept(&mut self, done: Completion) {
        if !done.more() {
            self.accepting = false;
        }
        let res = done.res();
        match done.accepted() {
            Some(fd) => {
                let cx = self.ctx();
                if let Accepted::Conn(conn) = admit(self.shared, fd, None, &mut self.buf, &cx) {
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
            None if -res == libc::ECANCELED && self.shared.is_stopped() => return,
            None if -res == libc::ECANCELED => {}
            // Interrupted, or a client gone before it was accepted: no
            // error of the server's, and accepting starts again below.
            None if matches!(-res, libc::EINTR | libc::ECONNABORTED | libc::EAGAIN) => {}
            None => {
                // Out of descriptors or memory (the client waits in the
                // backlog), or anything else: counted, and accepting
                // pauses a moment rather than spin.
                Counters::add(&self.counters.errors, 1);
                if !self.accepting {
                    self.clock.pause_accepting();
                }
                return;
            }
        }
        if !self.accepting && !self.clock.accepting_paused() {
            self.watch_listener();
        }
    }

    /// A connection with nothing in flight: queues what its state needs,
    /// the rest of a reply to write or the next read.
    fn resume(&mut self, index: usize) {
        let Some(conn) = self.slots[index].conn.as_ref() else { return };
        let fd = conn.sock.as_raw_fd();
        let (op, result) = if conn.wants_write() {
            let tag = Tag::new(Kind::Writable, index).to_u64();
            (Op::Writable, self.uring.poll(fd, libc::POLLOUT as u32, tag))
        } else if conn.is_fresh() {
            // Nothing read yet (it connected before sending): its first
            // request is read as on epoll, looking ahead for the end of
            // stream, so that a one-shot client's reply and FIN still
            // leave in one segment.
            let tag = Tag::new(Kind::Readable, index).to_u64();
            (Op::Readable, self.uring.poll(fd, libc::POLLIN as u32, tag))
        } else {
            // With no buffer left, tried at once it would be refused
            // (ENOBUFS) with or without data: it waits for data first.
            let poll_first = self.uring.free() == 0;
            (Op::Recv, self.uring.recv(fd, Tag::new(Kind::Recv, index).to_u64(), poll_first))
        };
        self.slots[index].op = Some(op);
        self.queued(result);
    }

    fn on_conn(&mut self, kind: Kind, index: usize, done: Completion) {
        let bid = done.buffer();
        if let Some(e) = self.uring.fault() {
            // The kernel handed over a buffer it did not have: the books
            // are wrong, and the loop stops rather than guess.
            self.broken.get_or_insert(e);
            return;
        }
        let in_flight = self.slots.get(index).and_then(|s| s.op).filter(|op| op.kind() == kind);
        let Some(op) = in_flight else {
            // No such request in flight (which cannot happen): only the
            // buffer it names, if any, is given back.
            if let Some(b) = bid {
                self.uring.give_back(b);
            }
            return;
        };
        let slot = &mut self.slots[index];
        slot.op = None;
        if slot.conn.is_none() {
            // Closed while this was in flight: the descriptor is closed and
            // the slot is free now, once whatever buffer the request held
            // is given back.
            slot.lingering = None;
            self.free.push(index);
            if let Some(b) = bid {
                self.uring.give_back(b);
            }
            if let Op::Send { bid, .. } = op {
                self.uring.give_back(bid);
            }
            return;
        }
        match op {
            Op::Recv => self.on_recv(index, done.res(), bid),
            Op::Send { bid, len } => self.on_send(index, done.res(), bid, len),
            Op::Writable => self.on_ready(index, false, true),
            Op::Readable => self.on_ready(index, true, false),
        }
    }

    /// A `recv` completed: the reply goes back from the same buffer.
    fn on_recv(&mut self, index: usize, res: i32, bid: Option<u16>) {
        if res <= 0 {
            if let Some(b) = bid {
                self.uring.give_back(b);
            }
            match -res {
                // Half-close from the client: everything it sent before
                // has been answered.
                0 => self.close(index, End::Done),
                libc::ENOBUFS => self.starved.push_back(index),
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
        let cx = self.ctx();
        let (Some(conn), Some(data)) = (self.slots[index].conn.as_mut(), self.uring.buffer(bid, n)) else {
            // (Cannot happen: `on_conn` found the connection, and the
            // buffer was just taken.)
            self.uring.give_back(bid);
            self.close(index, End::Failed);
            return;
        };
        conn.received(n, &cx);
        let fd = conn.sock.as_raw_fd();
        upper_in_place(data);
        if n == CHUNK {
            // A full buffer: the client streams (or sent a request of
            // exactly this size).
            let outcome = conn.stream(data, &mut self.buf, &cx);
            self.uring.give_back(bid);
            self.settle(index, outcome);
            return;
        }
        // A reply never waits (`MSG_DONTWAIT`: what the kernel cannot take
        // now comes back as a short count) and never raises `SIGPIPE`.
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        self.slots[index].op = Some(Op::Send { bid, len: n });
        let r = self.uring.send(fd, bid, n, flags, Tag::new(Kind::Send, index).to_u64());
        self.queued(r);
    }

    /// A reply's `send` completed, whole or in part.
    fn on_send(&mut self, index: usize, res: i32, bid: u16, len: usize) {
        let result = if res >= 0 { Ok(res as usize) } else { Err(std::io::Error::from_raw_os_error(-res)) };
        let outcome = match (self.slots[index].conn.as_mut(), self.uring.buffer(bid, len)) {
            (Some(conn), Some(chunk)) => conn.replied(chunk, result, self.counters),
            _ => Outcome::Fail, // (cannot happen, as in `on_recv`)
        };
        self.uring.give_back(bid);
        self.settle(index, outcome);
    }

    /// Room to write a held-back reply (the writing state), or a new
    /// connection's first bytes: served as on epoll.
    fn on_ready(&mut self, index: usize, readable: bool, writable: bool) {
        let cx = self.ctx();
        let Some(conn) = self.slots[index].conn.as_mut() else { return };
        let outcome = conn.ready(readable, writable, &mut self.buf, &cx);
        self.settle(index, outcome);
    }

    /// What follows an event: the next request, or the close.
    fn settle(&mut self, index: usize, outcome: Outcome) {
        match outcome {
            Outcome::Keep => self.resume(index),
            Outcome::Close => self.close(index, End::Done),
            Outcome::Fail => self.close(index, End::Failed),
        }
    }

    /// Queues again the `recv` of connections that found no buffer, as
    /// many as the kernel has buffers now, once the batch of completions
    /// has given back what it could. One that finds none again is starved
    /// again, and fed after the next batch. One that has nothing to read
    /// after all takes no buffer and completes nothing: the loop then
    /// waits at most [`STARVED_WAIT`] before it feeds the next ones.
    fn feed_starved(&mut self) {
        let mut free = self.uring.free();
        while free > 0 {
            let Some(index) = self.starved.pop_front() else { break };
            // Skip a connection closed (or its slot reused) meanwhile.
            if self.slots.get(index).is_some_and(|s| s.conn.is_some() && s.op.is_none()) {
                self.resume(index);
                free -= 1;
            }
        }
    }

    /// Closes connections past their deadline.
    fn sweep(&mut self) {
        let now = self.clock.now();
        for index in 0..self.slots.len() {
            if self.slots[index].conn.as_ref().is_some_and(|c| c.expired(now, &self.shared.limits)) {
                self.close(index, End::Idle);
            }
        }
    }

    /// Closes a connection now: counted, and its descriptor closed, unless
    /// it has a request in flight: that is cancelled, and the descriptor is
    /// closed (and the slot freed) by its completion.
    fn close(&mut self, index: usize, end: End) {
        let slot = &mut self.slots[index];
        let Some(conn) = slot.conn.take() else { return };
        if conn.wants_write() {
            self.reclaim.released();
        }
        self.shared.ended(self.counters, end);
        if slot.op.is_none() {
            self.free.push(index);
            return;
        }
        let fd = conn.sock.as_raw_fd();
        slot.lingering = Some(conn.sock);
        let r = self.uring.cancel_fd(fd, Tag::new(Kind::Cancel, index).to_u64());
        self.queued(r);
    }

    /// A request of the loop's may still be in the kernel's hands.
    fn in_flight(&self) -> bool {
        self.accepting || self.slots.iter().any(|s| s.op.is_some())
    }

    /// Closes every connection, stops accepting, and waits (up to
    /// [`DRAIN`]) for the cancelled requests: no client accepted meanwhile
    /// is left open, and the buffers go with the ring (`Uring` keeps them
    /// mapped if a request may still touch them).
    fn close_all(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        for index in 0..self.slots.len() {
            self.close(index, End::Done);
        }
        if self.accepting {
            let listener = self.shared.socket.as_raw_fd();
            let r = self.uring.cancel_fd(listener, Tag::new(Kind::Cancel, 0).to_u64());
            self.queued(r);
        }
        let until = Instant::now() + DRAIN;
        while self.in_flight() && self.broken.is_none() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.uring.submit_and_wait(Some(left)).is_err() {
                break;
            }
            while let Some(done) = self.uring.next() {
                match Tag::from_u64(done.user_data()) {
                    Some(Tag { kind: Kind::Listener, .. }) => {
                        self.accepting &= done.more();
                        drop(done.accepted()); // closed: the server is stopping
                    }
                    Some(Tag { kind: kind @ (Kind::Recv | Kind::Send | Kind::Writable | Kind::Readable), index }) => {
                        self.on_conn(kind, index as usize, done)
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
            let _ = self.uring.submit_and_wait(Some(Duration::ZERO));
            let mut any = false;
            while let Some(done) = self.uring.next() {
                any = true;
                drop(done.accepted());
            }
            if !any {
                break;
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::server::{Config, Server};
    use crate::sys::uring;

    /// A loop's ring, with `buffers` provided buffers of the usual size.
    fn engine(buffers: u16) -> Uring {
        Uring::new(ENTRIES, CQ_ENTRIES, buffers, CHUNK).expect("ring")
    }

    impl Loop<'_> {
        /// Gives `sock` a slot, as a client that has sent something (its
        /// next read is a `recv`), counted active as `admit` counts one.
        fn add(&mut self, sock: std::os::fd::OwnedFd) {
            self.shared.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut conn = Conn::new(Client::new(sock, None), 0, &self.shared.limits);
            conn.received(1, &self.ctx());
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
        lp.uring.submit_and_wait(Some(wait)).expect("enter");
        assert!(lp.uring.next().is_none(), "the idle connection's recv completed");

        // The next turn feeds the talker.
        lp.feed_starved();
        assert!(lp.starved.is_empty());
        lp.uring.submit_and_wait(Some(Duration::from_secs(5))).expect("enter");
        let done = lp.uring.next().expect("the talker's recv completed");
        lp.complete(done);
        // Its reply is queued, from the only buffer: none is free now
        // when the third connection's `recv` is queued.
        assert_eq!(lp.uring.free(), 0);
        lp.resume(2);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < 5 && Instant::now() < deadline {
            lp.uring.submit_and_wait(Some(Duration::from_millis(10))).expect("enter");
            while let Some(done) = lp.uring.next() {
                lp.complete(done);
                assert!(lp.starved.is_empty(), "a recv with nothing to read was refused for want of a buffer");
            }
            let mut buf = [0u8; 16];
            if let Ok(n) = crate::sys::recv(talker_client.as_fd(), &mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(got, b"HELLO");
        assert!(lp.broken.is_none());
        assert!(lp.starved.is_empty());
    }

    /// A loop stopped with a `recv` waiting for data ends it before the
    /// ring goes, even when the drain is skipped (the loop broke): no
    /// request is left that may write into the buffers.
    #[test]
    fn a_stopped_loop_leaves_no_request_on_its_buffers() {
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
            lp.uring.submit_and_wait(Some(Duration::ZERO)).expect("enter");
            assert!(lp.uring.next().is_none(), "the recv waits for data");
            assert!(lp.uring.busy());
            if broken {
                lp.broken = Some(std::io::Error::other("broken, for the test"));
            }
            lp.close_all();
            assert!(!lp.uring.busy(), "broken: {broken}: a recv is left in flight");
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
        // The loop, turn by turn, counting the `recv`s that found no buffer.
        let serving = std::thread::spawn(move || {
            let mut lp = Loop::new(&shared, 0, engine)?;
            lp.watch_waker();
            lp.watch_listener();
            let mut starved = 0;
            while !shared.is_stopped() {
                starved += lp.turn()?;
            }
            lp.close_all();
            Ok::<usize, Error>(starved)
        });
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
        let starved = serving.join().expect("loop thread").expect("the loop ended cleanly");
        let stats = server.stats();
        assert_eq!((stats.connections_accepted, stats.errors, stats.connections_active), (CLIENTS as u64, 0, 0));
        assert_eq!(stats.bytes_in, stats.bytes_out);
        eprintln!("{starved} recvs found no buffer; {ROUNDS} rounds in {:?}", start.elapsed());
        assert!(starved > 0, "no recv ever found the two buffers taken: the test did not test it");
    }
}
