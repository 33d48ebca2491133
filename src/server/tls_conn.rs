//! One TLS connection (feature `tls`), as a state machine over the same
//! [`Io`] as a plaintext one (`conn.rs`), driven by the epoll loop and by
//! the iterative server alike.
//!
//! rustls's unbuffered API lets the loop own every buffer. The loop's
//! chunk is cut in three: received records, one record's plaintext, and
//! the records going out. A connection keeps bytes of its own only while
//! it must: a record not yet whole, or records the client has not taken.
//! An idle connection holds no buffer at all.
//!
//! Records go to rustls one at a time, so that each record's bytes are
//! upper-cased and encrypted before the next one is decrypted.
//!
//! The rules of the plaintext connection hold:
//! - *Back-pressure.* Once the client stops taking records, the record
//!   being answered is finished and nothing more is read until they have
//!   gone, so memory stays bounded.
//! - *Half-close.* The client's `close_notify` comes after every byte
//!   before it has been answered; ours follows, then `shutdown`. A
//!   connection that ends without `close_notify` failed.
//! - *Time.* The handshake must be done `tls_handshake_timeout` after the
//!   accept; after it, the connection's [`Deadline`] rules alone.
//!
//! This module makes no system call other than through [`Io`].

use std::time::Duration;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};

use super::conn::{Ctx, Io, Outcome, READ_BUDGET};
use super::pace::{nanos, Deadline, Limits};
use super::Counters;
use crate::upper::upper_into;

/// The loop's chunk for a TLS server: room for several records each
/// way, so that one `recv` and one `send` move several.
pub(crate) const CHUNK: usize = 2 * IN_ROOM + PLAIN_ROOM + MAX_RECORD;
/// Room in the loop's chunk for received records: the most one turn
/// reads, and so about the most a client that does not read makes the
/// connection hold.
pub(crate) const IN_ROOM: usize = 96 * 1024;
/// Room for one record's plaintext.
const PLAIN_ROOM: usize = 16 * 1024;
/// Record header: content type, version, length.
const HEADER: usize = 5;
/// The largest record on the wire (TLS 1.2's limit; 1.3's is lower).
pub(crate) const MAX_RECORD: usize = HEADER + 16 * 1024 + 2048;
/// The least chunk a connection works with: room for whole records in
/// and out.
const MIN_CHUNK: usize = IN_ROOM + PLAIN_ROOM + MAX_RECORD;
/// The records of one handshake message stay undiscarded until the whole
/// message has come; a client that sends more than this is refused.
const MAX_WAITING: usize = 4 * 64 * 1024;

/// How one turn of the record loop ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flow {
    /// Every whole record is answered: read more.
    More,
    /// The client does not take our records: wait for it.
    Blocked,
    /// Our `close_notify` is queued after the last reply.
    Closing,
    /// The peer broke TLS, or the socket failed.
    Fail,
}

/// What one `recv()` found.
enum Got {
    Data(usize),
    /// Nothing yet (`EAGAIN`).
    Nothing,
    /// The client's end of stream.
    End,
}

/// How a turn ends once the client's end of stream was read: every whole
/// record handled and still no `close_notify` is a request cut short.
fn ended(got: Result<Got, ()>, flow: Flow) -> Flow {
    match (got, flow) {
        (Ok(Got::End), Flow::More) => Flow::Fail,
        (_, flow) => flow,
    }
}

/// What the record loop does after a state.
enum Next {
    /// Ask rustls again.
    Go,
    /// Hand rustls the next whole record, if there is one.
    Feed,
    /// Send the alert of a failure, then stop.
    Alert,
    Stop(Flow),
}

/// One TLS client.
pub(crate) struct TlsConn<S> {
    session: Box<UnbufferedServerConnection>,
    wire: Wire<S>,
    /// Received bytes rustls has not discarded: a record not yet whole,
    /// or the records of a handshake message still coming.
    waiting: Vec<u8>,
    /// How many bytes of `waiting` rustls has seen.
    fed: usize,
    /// When the handshake must be done.
    handshake_by: u64,
    /// The client's `close_notify` has come.
    peer_closed: bool,
    /// Our `close_notify` is queued: the connection ends once it is sent.
    closing: bool,
}

/// The socket's side of a connection: what goes out, and the pace.
struct Wire<S> {
    sock: S,
    /// Records the socket has not taken yet.
    unsent: Vec<u8>,
    deadline: Deadline,
    /// A send waited for the client: the records it then takes earn credit.
    waited: bool,
    /// A send or a read failed for good: the socket is not used again.
    broken: bool,
}

/// Records made in one turn, in the loop's room until it is sent.
struct Out<'a> {
    room: &'a mut [u8],
    len: usize,
}

impl<S: Io> TlsConn<S> {
    /// A client accepted at `now`.
    pub(crate) fn new(
        sock: S,
        session: UnbufferedServerConnection,
        now: u64,
        limits: &Limits,
        handshake: Duration,
    ) -> Self {
        TlsConn {
            session: Box::new(session),
            wire: Wire {
                sock,
                unsent: Vec::new(),
                deadline: Deadline::start(now, limits),
                waited: false,
                broken: false,
            },
            waiting: Vec::new(),
            fed: 0,
            handshake_by: now.saturating_add(nanos(handshake)),
            peer_closed: false,
            closing: false,
        }
    }

    /// The client's socket.
    pub(crate) fn sock(&self) -> &S {
        &self.wire.sock
    }

    /// The client's socket, for a simulation to drive.
    #[cfg(any(test, fuzzing))]
    pub(crate) fn sock_mut(&mut self) -> &mut S {
        &mut self.wire.sock
    }

    /// Gives the socket back, for the caller to close.
    pub(crate) fn into_sock(self) -> S {
        self.wire.sock
    }

    /// Records are queued: the connection waits for room to send them.
    pub(crate) fn wants_write(&self) -> bool {
        !self.wire.unsent.is_empty()
    }

    /// Bytes the connection holds of its own (records waiting either way).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.waiting.capacity() + self.wire.unsent.capacity()
    }

    /// When the connection is to be closed: its deadline, or the end of
    /// the handshake's time while it lasts.
    pub(crate) fn deadline(&self, limits: &Limits) -> Option<u64> {
        let at = self.wire.deadline.at(limits);
        if self.session.is_handshaking() {
            Some(at.map_or(self.handshake_by, |a| a.min(self.handshake_by)))
        } else {
            at
        }
    }

    pub(crate) fn expired(&self, now: u64, limits: &Limits) -> bool {
        self.deadline(limits).is_some_and(|d| now >= d)
    }

    /// Moves what the socket allows: queued records out, then new records
    /// in, each answered as it is decrypted. At most `READ_BUDGET` reads,
    /// so one busy client cannot starve the others. `buf` is the loop's
    /// chunk, [`CHUNK`] bytes.
    pub(crate) fn ready(&mut self, buf: &mut [u8], cx: &Ctx) -> Outcome {
        if buf.len() < MIN_CHUNK {
            return Outcome::Fail;
        }
        let (inbuf, rest) = buf.split_at_mut(IN_ROOM);
        let (plain, room) = rest.split_at_mut(PLAIN_ROOM);
        if !self.wire.send_unsent(cx) {
            return Outcome::Fail;
        }
        if self.wants_write() {
            return Outcome::Keep;
        }
        if self.closing {
            let _ = self.wire.sock.finish();
            return Outcome::Close;
        }
        // The bytes still waiting lie at the front of `inbuf` during the
        // turns, and go back to the connection after them.
        let mut kept = 0;
        if self.waiting.len() + MAX_RECORD <= IN_ROOM {
            kept = self.waiting.len();
            inbuf[..kept].copy_from_slice(&self.waiting);
            self.waiting = Vec::new();
        }
        let outcome = self.turns(inbuf, &mut kept, plain, room, cx);
        if kept > 0 && outcome == Outcome::Keep {
            self.waiting = inbuf[..kept].to_vec();
        }
        outcome
    }

    /// Up to `READ_BUDGET` turns of a read and the records it completes.
    fn turns(&mut self, inbuf: &mut [u8], kept: &mut usize, plain: &mut [u8], room: &mut [u8], cx: &Ctx) -> Outcome {
        for _ in 0..READ_BUDGET {
            let mut out = Out { room: &mut *room, len: 0 };
            if *kept + MAX_RECORD > IN_ROOM {
                // A handshake message outgrew the loop's room.
                self.waiting = inbuf[..*kept].to_vec();
                *kept = 0;
            }
            let (flow, drained) = if self.waiting.is_empty() {
                self.turn_in(inbuf, kept, plain, &mut out, cx)
            } else {
                self.turn_own(plain, &mut out, cx)
            };
            let flow = match (flow, self.wire.flush(&mut out, cx)) {
                (_, false) => Flow::Fail,
                (Flow::More, true) if self.wants_write() => Flow::Blocked,
                (flow, true) => flow,
            };
            match flow {
                Flow::Fail => return self.fail(plain),
                Flow::Blocked => return Outcome::Keep,
                Flow::Closing if self.wants_write() => return Outcome::Keep,
                Flow::Closing => {
                    let _ = self.wire.sock.finish();
                    return Outcome::Close;
                }
                Flow::More if drained => return Outcome::Keep,
                Flow::More => {}
            }
        }
        Outcome::Keep
    }

    /// One read into the loop's room, after the `kept` bytes still waiting
    /// there, and the records it completes; what rustls is not done with
    /// moves to the front. Also says whether the socket looked drained (a
    /// short read).
    fn turn_in(
        &mut self,
        inbuf: &mut [u8],
        kept: &mut usize,
        plain: &mut [u8],
        out: &mut Out,
        cx: &Ctx,
    ) -> (Flow, bool) {
        let got = self.wire.recv(&mut inbuf[*kept..], cx);
        let (filled, drained) = match got {
            Ok(Got::Data(n)) => (*kept + n, *kept + n < inbuf.len()),
            Ok(_) => (*kept, true),
            Err(()) => return (Flow::Fail, true),
        };
        let (flow, start) = self.records(&mut inbuf[..filled], plain, out, cx);
        inbuf.copy_within(start..filled, 0);
        *kept = filled - start;
        (ended(got, flow), drained)
    }

    /// As [`turn_in`](Self::turn_in), in the connection's own bytes: a
    /// handshake message that outgrew the loop's room.
    fn turn_own(&mut self, plain: &mut [u8], out: &mut Out, cx: &Ctx) -> (Flow, bool) {
        let mut own = std::mem::take(&mut self.waiting);
        let kept = own.len();
        own.resize(kept + MAX_RECORD, 0);
        let got = self.wire.recv(&mut own[kept..], cx);
        let (filled, drained) = match got {
            Ok(Got::Data(n)) => (kept + n, n < MAX_RECORD),
            Ok(_) => (kept, true),
            Err(()) => return (Flow::Fail, true),
        };
        let (flow, start) = self.records(&mut own[..filled], plain, out, cx);
        own.truncate(filled);
        own.drain(..start);
        if own.len() > MAX_WAITING {
            return (Flow::Fail, true);
        }
        // An emptied buffer is freed, not kept by an idle connection.
        self.waiting = if own.is_empty() { Vec::new() } else { own };
        (ended(got, flow), drained)
    }

    /// Hands the whole records of `data` to rustls, one at a time, and
    /// does what it asks: handshake records out, each record of bytes
    /// answered. Returns how the turn ended and how many bytes of `data`
    /// rustls is done with.
    fn records(&mut self, data: &mut [u8], plain: &mut [u8], out: &mut Out, cx: &Ctx) -> (Flow, usize) {
        let TlsConn { session, wire, peer_closed, closing, fed: seen, .. } = self;
        // `data[..start]` is discarded; `data[..fed]` is rustls's to see,
        // never less than it saw last: its handshake state points into it.
        let (mut start, mut fed) = (0, (*seen).min(data.len()));
        // Bytes a record asks to discard beyond the state's own.
        let mut extra = 0;
        let mut have = 0; // plaintext bytes in `plain`
        loop {
            let status = session.process_tls_records(&mut data[start..fed]);
            let discard = status.discard;
            let next = match status.state {
                Err(_) => Next::Alert,
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    match wire.put(out, cx, |dst| encode.encode(dst).map_err(encode_room)) {
                        true => Next::Go,
                        false => Next::Stop(Flow::Fail),
                    }
                }
                // The records go out with the turn's others, in one send,
                // before the connection waits for anything.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Next::Go
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut next = Next::Go;
                    while let Some(record) = traffic.next_record() {
                        extra += record.as_ref().map_or(0, |r| r.discard);
                        // Records come one at a time: the plaintext fits.
                        let room = match record {
                            Ok(record) => plain.get_mut(have..have + record.payload.len()).map(|room| (room, record)),
                            Err(_) => None,
                        };
                        let Some((room, record)) = room else {
                            next = Next::Stop(Flow::Fail);
                            break;
                        };
                        upper_into(record.payload, room);
                        have += record.payload.len();
                    }
                    next
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let mut ok = true;
                    if have > 0 {
                        Counters::add(&cx.counters.bytes_in, have as u64);
                        let bytes = &plain[..have];
                        ok = wire.put(out, cx, |dst| traffic.encrypt(bytes, dst).map_err(encrypt_room));
                        if ok {
                            Counters::add(&cx.counters.bytes_out, have as u64);
                        }
                        have = 0;
                    }
                    if ok && *peer_closed && !*closing {
                        *closing = true;
                        ok = wire.put(out, cx, |dst| traffic.queue_close_notify(dst).map_err(encrypt_room));
                    }
                    if !ok {
                        Next::Stop(Flow::Fail)
                    } else if *closing {
                        Next::Stop(Flow::Closing)
                    } else if !wire.unsent.is_empty() {
                        Next::Stop(Flow::Blocked)
                    } else {
                        Next::Feed
                    }
                }
                // A close_notify before the handshake's end fails it.
                Ok(ConnectionState::BlockedHandshake) if *peer_closed => Next::Stop(Flow::Fail),
                Ok(ConnectionState::BlockedHandshake) => Next::Feed,
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    Next::Go
                }
                Ok(ConnectionState::Closed) => {
                    *closing = true;
                    Next::Stop(Flow::Closing)
                }
                // Early data is not offered; a state yet to come is not known.
                Ok(_) => Next::Stop(Flow::Fail),
            };
            start += discard + std::mem::take(&mut extra);
            fed = fed.max(start);
            *seen = fed - start;
            match next {
                Next::Go => {}
                Next::Feed if next_record(data, &mut fed) => *seen = fed - start,
                Next::Feed => return (Flow::More, start),
                Next::Stop(flow) => return (flow, start),
                Next::Alert => {
                    // rustls failed, and queued the alert that tells the
                    // client why. It is asked for that alone: asked for
                    // more, rustls would read the failed record again.
                    while session.wants_write() {
                        let status = session.process_tls_records(&mut data[start..fed]);
                        let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state else { break };
                        if !wire.put(out, cx, |dst| encode.encode(dst).map_err(encode_room)) {
                            break;
                        }
                    }
                    return (Flow::Fail, start);
                }
            }
        }
    }

    /// The connection failed; the alert rustls queued is on its way.
    /// What the client sent after the failed record is read and dropped:
    /// a close with it unread would send a reset, which can reach the
    /// client before the alert.
    fn fail(&mut self, sink: &mut [u8]) -> Outcome {
        if self.wire.broken {
            return Outcome::Fail;
        }
        for _ in 0..READ_BUDGET {
            if !matches!(self.wire.sock.recv(sink), Ok(n) if n > 0) {
                break;
            }
        }
        Outcome::Fail
    }
}

impl<S: Io> Wire<S> {
    /// One `recv()` into `buf` (not empty).
    fn recv(&mut self, buf: &mut [u8], cx: &Ctx) -> Result<Got, ()> {
        loop {
            match self.sock.recv(buf) {
                Ok(0) => return Ok(Got::End),
                Ok(n) => {
                    let n = n.min(buf.len());
                    self.deadline.progress(cx.now, n, cx.limits);
                    return Ok(Got::Data(n));
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(Got::Nothing),
                    Some(libc::EINTR) => continue,
                    _ => {
                        self.broken = true;
                        return Err(());
                    }
                },
            }
        }
    }

    /// Sends what the client did not take before; `false` on failure.
    fn send_unsent(&mut self, cx: &Ctx) -> bool {
        let mut sent = 0;
        let ok = loop {
            if sent == self.unsent.len() {
                break true;
            }
            match self.sock.send(&self.unsent[sent..], false) {
                Ok(k) => {
                    sent += k;
                    self.deadline.progress(cx.now, if self.waited { k } else { 0 }, cx.limits);
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break true,
                    Some(libc::EINTR) => {}
                    _ => {
                        self.broken = true;
                        break false;
                    }
                },
            }
        };
        if sent == self.unsent.len() {
            self.unsent = Vec::new(); // nothing in flight: the buffer is freed
            self.waited = false;
        } else {
            self.unsent.drain(..sent);
            self.waited = true;
        }
        ok
    }

    /// Sends the turn's records; what the socket does not take is kept.
    fn flush(&mut self, out: &mut Out, cx: &Ctx) -> bool {
        let bytes = &out.room[..out.len];
        out.len = 0;
        if !self.unsent.is_empty() {
            self.unsent.extend_from_slice(bytes);
            return true;
        }
        let mut sent = 0;
        while sent < bytes.len() {
            match self.sock.send(&bytes[sent..], false) {
                Ok(k) => {
                    sent += k;
                    self.deadline.progress(cx.now, 0, cx.limits);
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        self.unsent = bytes[sent..].to_vec();
                        self.waited = true;
                        return true;
                    }
                    Some(libc::EINTR) => {}
                    _ => {
                        self.broken = true;
                        return false;
                    }
                },
            }
        }
        true
    }

    /// Has `write` make records: in the turn's room while it lasts and the
    /// client takes what is sent, else after the records kept for it.
    /// `write` answers `Err(Some(n))` when it needs `n` bytes of room,
    /// `Err(None)` when it cannot write at all.
    fn put(
        &mut self,
        out: &mut Out,
        cx: &Ctx,
        mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
    ) -> bool {
        let need = if self.unsent.is_empty() {
            match write(&mut out.room[out.len..]) {
                Ok(k) => {
                    out.len += k;
                    return true;
                }
                Err(None) => return false,
                Err(Some(need)) => need,
            }
        } else {
            0
        };
        if !self.flush(out, cx) {
            return false;
        }
        if self.unsent.is_empty() && need <= out.room.len() {
            return match write(&mut out.room[..]) {
                Ok(k) => {
                    out.len = k;
                    true
                }
                Err(_) => false,
            };
        }
        let at = self.unsent.len();
        let mut need = need;
        for _ in 0..2 {
            self.unsent.resize(at + need, 0);
            match write(&mut self.unsent[at..]) {
                Ok(k) => {
                    self.unsent.truncate(at + k);
                    return true;
                }
                Err(Some(more)) if more > need => need = more,
                Err(_) => break,
            }
        }
        self.unsent.truncate(at);
        false
    }
}

/// Moves `fed` past the next whole record of `data`; `false` when no
/// whole record follows. A header no record can have (not TLS, or too
/// long) is handed over at once, for rustls to refuse.
fn next_record(data: &[u8], fed: &mut usize) -> bool {
    let rest = &data[*fed..];
    if rest.len() < HEADER {
        return false;
    }
    let len = HEADER + usize::from(u16::from_be_bytes([rest[3], rest[4]]));
    if !(20..=24).contains(&rest[0]) || len > MAX_RECORD {
        *fed = data.len();
        return true;
    }
    if rest.len() < len {
        return false;
    }
    *fed += len;
    true
}

fn encrypt_room(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => Some(required_size),
        _ => None,
    }
}

fn encode_room(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => Some(required_size),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read, Write};
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

    use super::*;
    use crate::server::Counters;

    /// The server's end of a connection in memory: what the client wrote,
    /// and what the server sent, up to `room` bytes at a time.
    #[derive(Default)]
    struct Pipe {
        from_client: Vec<u8>,
        to_client: Vec<u8>,
        client_done: bool,
        room: usize,
        finished: bool,
    }

    impl Io for Pipe {
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.from_client.is_empty() {
                return if self.client_done { Ok(0) } else { Err(io::Error::from_raw_os_error(libc::EAGAIN)) };
            }
            let n = buf.len().min(self.from_client.len());
            buf[..n].copy_from_slice(&self.from_client[..n]);
            self.from_client.drain(..n);
            Ok(n)
        }

        fn send(&mut self, buf: &[u8], _more: bool) -> io::Result<usize> {
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::EAGAIN));
            }
            self.room -= n;
            self.to_client.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn finish(&mut self) -> io::Result<()> {
            self.finished = true;
            Ok(())
        }

        fn segment_size(&mut self) -> Option<u16> {
            None
        }
    }

    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["upcase.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let der = CertificateDer::from(cert.der().to_vec());
        let provider = crate::tls::provider();
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
            .expect("server config");
        let mut roots = RootCertStore::empty();
        roots.add(der).expect("root");
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A connection accepted at `at`, and a client of it.
    fn pair(limits: &Limits, at: u64, handshake: Duration) -> (TlsConn<Pipe>, ClientConnection) {
        let (server, client_config) = configs();
        let session = UnbufferedServerConnection::new(server).expect("server session");
        let conn = TlsConn::new(Pipe::default(), session, at, limits, handshake);
        let name = ServerName::try_from("upcase.test").expect("name");
        let mut client = ClientConnection::new(client_config, name).expect("client");
        client.set_buffer_limit(None);
        (conn, client)
    }

    /// Moves records both ways until neither side has anything to move;
    /// the reply's bytes go to `got`.
    fn run(
        conn: &mut TlsConn<Pipe>,
        client: &mut ClientConnection,
        buf: &mut [u8],
        cx: &Ctx,
        got: &mut Vec<u8>,
    ) -> Outcome {
        let mut outcome = Outcome::Keep;
        for _ in 0..64 {
            while client.wants_write() {
                client.write_tls(&mut conn.wire.sock.from_client).expect("client write");
            }
            conn.wire.sock.room = usize::MAX;
            if outcome == Outcome::Keep {
                outcome = conn.ready(buf, cx);
            }
            let bytes = std::mem::take(&mut conn.wire.sock.to_client);
            if bytes.is_empty() && !client.wants_write() {
                break;
            }
            take(client, &bytes, got);
        }
        outcome
    }

    /// The client takes `bytes` from the server; what it decrypts goes to
    /// `got`.
    fn take(client: &mut ClientConnection, bytes: &[u8], got: &mut Vec<u8>) {
        let mut at = bytes;
        while !at.is_empty() {
            client.read_tls(&mut at).expect("client read");
            client.process_new_packets().expect("client TLS");
            let mut chunk = [0u8; 16384];
            loop {
                match client.reader().read(&mut chunk) {
                    Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client: {e}"),
                }
            }
        }
    }

    #[test]
    fn an_idle_connection_holds_no_buffer_and_a_slow_client_a_bounded_one() {
        let counters = Counters::default();
        let limits = Limits::new(None, 0);
        let cx = Ctx { counters: &counters, now: 0, limits: &limits };
        let (mut conn, mut client) = pair(&limits, 0, Duration::from_secs(10));
        let mut buf = vec![0u8; CHUNK];

        client.writer().write_all(b"hello").expect("write");
        let mut got = Vec::new();
        assert_eq!(run(&mut conn, &mut client, &mut buf, &cx, &mut got), Outcome::Keep);
        assert_eq!(got, b"HELLO");
        assert!(!conn.session.is_handshaking());
        assert_eq!(conn.held(), 0, "an idle connection keeps a buffer");

        // A client that takes nothing: one megabyte sent, the server holds
        // at most its records in flight and reads no further.
        let big = vec![b'a'; 1 << 20];
        client.writer().write_all(&big).expect("write");
        while client.wants_write() {
            client.write_tls(&mut conn.wire.sock.from_client).expect("client write");
        }
        conn.wire.sock.room = 0;
        for _ in 0..8 {
            assert_eq!(conn.ready(&mut buf, &cx), Outcome::Keep);
        }
        assert!(conn.wants_write());
        assert!(conn.held() <= 4 * MIN_CHUNK, "{} bytes held for a client that does not read", conn.held());
        assert!(conn.wire.sock.from_client.len() > big.len() / 2, "read on while the client did not take replies");

        // Then it reads, half-closes, and gets all of it, and our close_notify.
        client.send_close_notify();
        let mut got = Vec::new();
        let mut outcome = Outcome::Keep;
        for _ in 0..10_000 {
            outcome = run(&mut conn, &mut client, &mut buf, &cx, &mut got);
            if outcome != Outcome::Keep {
                break;
            }
        }
        assert_eq!(outcome, Outcome::Close);
        assert!(conn.wire.sock.finished);
        assert_eq!(got.len(), big.len());
        assert!(got.iter().all(|&b| b == b'A'));
        assert!(matches!(client.reader().read(&mut [0u8; 1]), Ok(0)), "no close_notify from the server");
    }

    /// The client sends everything, its close_notify and its end of
    /// stream at once, and reads slowly: the records read before the end
    /// of stream are all answered, then ours closes.
    #[test]
    fn records_read_before_the_end_of_stream_are_all_answered() {
        let counters = Counters::default();
        let limits = Limits::new(None, 0);
        let cx = Ctx { counters: &counters, now: 0, limits: &limits };
        let (mut conn, mut client) = pair(&limits, 0, Duration::from_secs(10));
        let mut buf = vec![0u8; CHUNK];
        let mut got = Vec::new();
        client.writer().write_all(b"hi").expect("write");
        assert_eq!(run(&mut conn, &mut client, &mut buf, &cx, &mut got), Outcome::Keep);

        let big = vec![b'q'; 200 * 1024];
        client.writer().write_all(&big).expect("write");
        client.send_close_notify();
        while client.wants_write() {
            client.write_tls(&mut conn.wire.sock.from_client).expect("client write");
        }
        conn.wire.sock.client_done = true;
        let mut outcome = Outcome::Keep;
        for _ in 0..10_000 {
            // The client takes a few kilobytes per wake-up.
            conn.wire.sock.room = 7000;
            outcome = conn.ready(&mut buf, &cx);
            let bytes = std::mem::take(&mut conn.wire.sock.to_client);
            take(&mut client, &bytes, &mut got);
            if outcome != Outcome::Keep {
                break;
            }
        }
        assert_eq!(outcome, Outcome::Close, "{} of {} bytes answered", got.len(), 2 + big.len());
        assert_eq!(got.len(), 2 + big.len());
        assert!(got[2..].iter().all(|&b| b == b'Q'));
    }

    #[test]
    fn garbage_is_refused_with_an_alert() {
        let counters = Counters::default();
        let limits = Limits::new(None, 0);
        let cx = Ctx { counters: &counters, now: 0, limits: &limits };
        let (mut conn, _) = pair(&limits, 0, Duration::from_secs(1));
        conn.wire.sock.room = usize::MAX;
        conn.wire.sock.from_client.extend_from_slice(b"HELLO, are you TLS?\n");
        let mut buf = vec![0u8; CHUNK];
        assert_eq!(conn.ready(&mut buf, &cx), Outcome::Fail);
        let sent = &conn.wire.sock.to_client;
        assert_eq!(sent.first(), Some(&21), "no alert record: {sent:?}");
        assert!(conn.wire.sock.from_client.is_empty(), "the client's bytes left unread");
    }

    #[test]
    fn the_handshake_has_a_deadline_and_then_the_idle_timeout_rules() {
        let limits = Limits::new(None, 0);
        let (conn, _) = pair(&limits, 5, Duration::from_nanos(100));
        assert_eq!(conn.deadline(&limits), Some(105));
        assert!(!conn.expired(104, &limits));
        assert!(conn.expired(105, &limits));
    }
}
