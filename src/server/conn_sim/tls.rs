//! The simulator of the TLS connection state machine (`tls_conn.rs`): a
//! real rustls client and a simulated kernel between it and a [`TlsConn`].
//! A script decides where the records are split in each direction, what
//! garbage or corruption gets in, when the client sends its `close_notify`
//! or just ends its stream, when it stops reading, what it sends and how
//! much, which calls fail, and how time passes. After every step the
//! simulator checks what the server promises, and panics when a promise is
//! broken.
//!
//! Compiled only for the unit tests and the `tls_conn` fuzz target
//! (`fuzz/fuzz_targets/tls_conn.rs`), never into the library.
//!
//! The promises:
//! - every byte the client decrypts is the upper-cased byte it sent at the
//!   same position of the stream;
//! - the server's `close_notify` reaches the client only after the
//!   client's own, with every byte before it answered: a reply is never
//!   taken as complete when it is not;
//! - `Close` only after the client's `close_notify` was read, with our
//!   end of stream sent; `Fail` only after a fatal socket error, garbage or
//!   corruption, or an end of stream without `close_notify`, and always
//!   after a fatal socket error; nothing is sent after a fatal error, and
//!   nothing is called on the socket after our end of stream (a read
//!   after a fatal error gets the error again);
//! - a client that does not read is not read from: what the server holds
//!   for it stays under [`HELD_MAX`] however much it sends;
//! - a handshake not finished `tls_handshake_timeout` after the accept
//!   expires; a connection that moved no byte for the idle timeout
//!   expires; without a minimum rate, one that received a byte less than
//!   the idle timeout ago and is past its handshake (or within its time)
//!   does not;
//! - a clean schedule (no fault) ends with `Close` once the client sends
//!   its `close_notify`, every byte answered.
//!
//! The certificate is Ed25519: its signatures have one length, so the
//! records have the same sizes from run to run and a script splits them
//! at the same places. rustls draws its randoms and keys; no check here
//! depends on them.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

use super::{fatal, take_inbound, upper, Script};
use crate::server::conn::{Ctx, Io, Outcome};
use crate::server::pace::Limits;
use crate::server::tls_conn::{self, TlsConn};
use crate::server::Counters;
use crate::tls::TlsServer;

/// The name in the fixture's certificate.
pub const NAME: &str = "upcase.test";

/// Most plaintext a client sends in one run: 1,024 buffers of the
/// server's, up to 256 KiB (so that a run stays short).
const CLIENT_MAX: usize = 256 * 1024;

/// Most plaintext the server may hold for a client that does not read,
/// as the simulator measures it: one turn's read and the replies it
/// makes, a record not yet whole, and what the measure over-counts (the
/// record the client has begun to read). A server that reads on while
/// its replies wait passes it well before the client's [`CLIENT_MAX`].
pub(crate) const HELD_MAX: usize = tls_conn::IN_ROOM + 2 * tls_conn::MAX_RECORD;

/// What every run shares: the server's configuration (as
/// `TlsServer::from_pem` makes it) and a client configuration for TLS 1.3
/// and one for TLS 1.2, both trusting the server's self-signed
/// certificate and neither resuming sessions (a run must not depend on
/// the runs before it).
pub struct Fixture {
    server: TlsServer,
    tls13: Arc<ClientConfig>,
    tls12: Arc<ClientConfig>,
}

/// The provider `tls.rs` chooses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    crate::tls::provider()
}

impl Fixture {
    /// From a self-signed certificate for [`NAME`] (DER; Ed25519 keeps
    /// runs reproducible) and its PKCS#8 key (DER).
    pub fn new(cert: &[u8], key: &[u8]) -> Fixture {
        let cert = CertificateDer::from(cert.to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("server versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .expect("server certificate");
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(64);
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer");
        let mut roots = RootCertStore::empty();
        roots.add(cert).expect("root");
        let client = |version: &'static rustls::SupportedProtocolVersion| {
            let mut c = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[version])
                .expect("client version")
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.resumption = rustls::client::Resumption::disabled();
            Arc::new(c)
        };
        Fixture {
            server: TlsServer::with_config(Arc::new(config)),
            tls13: client(&rustls::version::TLS13),
            tls12: client(&rustls::version::TLS12),
        }
    }
}

/// The kernel's side of the connection, as the server sees it.
#[derive(Default)]
struct Wire {
    /// Sent to the server (by the client, or garbage), not yet read.
    inbound: VecDeque<u8>,
    /// Bytes ever put into `inbound`.
    pushed: usize,
    /// The client has ended its stream (FIN).
    eof: bool,
    /// Most bytes one `recv` returns, 0 = no limit.
    recv_max: usize,
    recv_errors: VecDeque<i32>,
    send_errors: VecDeque<i32>,
    /// Sent by the server, not yet read by the client.
    outbound: VecDeque<u8>,
    /// Room the send buffer has in all.
    send_capacity: usize,
    /// Bytes the server read and sent, in all; `recv`s that saw the end
    /// of stream.
    read_total: usize,
    sent_total: usize,
    eof_reads: usize,
    /// Sends refused for want of room.
    full_sends: usize,
    /// A fatal error has been returned; `recv`s since.
    failed: bool,
    reads_after_fatal: usize,
    /// The server has ended its stream.
    finished: bool,
    /// Offset in `inbound`'s stream just past the client's `close_notify`
    /// and its handshake's last message, once transmitted.
    close_notify_at: Option<usize>,
    handshake_at: Option<usize>,
}

impl Io for Wire {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        assert!(!self.finished, "read after our end of stream");
        if self.failed {
            // A broken connection stays broken; reading it is harmless.
            self.reads_after_fatal += 1;
            return Err(io::Error::from_raw_os_error(libc::ECONNRESET));
        }
        if let Some(code) = self.recv_errors.pop_front() {
            self.failed |= fatal(code);
            return Err(io::Error::from_raw_os_error(code));
        }
        if self.inbound.is_empty() {
            self.eof_reads += usize::from(self.eof);
            return if self.eof { Ok(0) } else { Err(io::Error::from_raw_os_error(libc::EAGAIN)) };
        }
        let n = take_inbound(&mut self.inbound, buf, self.recv_max);
        self.read_total += n;
        Ok(n)
    }

    fn send(&mut self, buf: &[u8], _more: bool) -> io::Result<usize> {
        assert!(!self.failed, "a send after a fatal error");
        assert!(!self.finished, "a send after our end of stream");
        assert!(!buf.is_empty(), "an empty send");
        if let Some(code) = self.send_errors.pop_front() {
            self.failed |= fatal(code);
            return Err(io::Error::from_raw_os_error(code));
        }
        let room = self.send_capacity.saturating_sub(self.outbound.len());
        if room == 0 {
            self.full_sends += 1;
            return Err(io::Error::from_raw_os_error(libc::EAGAIN));
        }
        let n = room.min(buf.len());
        self.outbound.extend(&buf[..n]);
        self.sent_total += n;
        Ok(n)
    }

    fn finish(&mut self) -> io::Result<()> {
        assert!(!self.failed, "used after a fatal error");
        assert!(
            self.close_notify_at.is_some_and(|at| self.read_total >= at),
            "our end of stream before the client's close_notify was read"
        );
        self.finished = true;
        Ok(())
    }

    fn segment_size(&mut self) -> Option<u16> {
        None
    }
}

/// The client: a rustls client connection and what it sent and got.
struct Client {
    tls: ClientConnection,
    /// Records written, not yet transmitted (the client's send buffer).
    wire: VecDeque<u8>,
    /// Bytes ever written to `wire` and ever transmitted.
    written: usize,
    transmitted: usize,
    /// (end of a flush in `wire`'s stream, plaintext encrypted by then).
    flushes: Vec<(usize, usize)>,
    /// Plaintext accepted by the client, and decrypted by it; the most
    /// it sends.
    sent: Vec<u8>,
    most: usize,
    got: Vec<u8>,
    /// Offsets in `wire`'s stream just past its `close_notify`, and past
    /// its handshake's last message (its Finished).
    close_notify_end: Option<usize>,
    handshake_end: Option<usize>,
    /// The client is to send its close_notify: once its handshake is
    /// done (rustls would send the plaintext written before it after it).
    closing: bool,
    /// Plaintext encrypted before its close_notify.
    sent_at_close: usize,
    /// It sent its close_notify in the middle of its handshake.
    early_close: bool,
    /// The server's `close_notify` was decrypted.
    closed_by_server: bool,
    /// The client's TLS failed (an alert is on its way).
    failed: bool,
    /// The client ended its stream.
    ended: bool,
}

impl Client {
    fn can_write(&self) -> bool {
        !self.failed && !self.ended && !self.closing && self.sent.len() < self.most
    }

    /// Moves what rustls has to send into `wire`.
    fn flush(&mut self) {
        let start = self.written;
        let mut out = Vec::new();
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if out.is_empty() {
            return;
        }
        if self.handshake_end.is_none() && start > 0 {
            self.handshake_end = finished_end(&out).map(|end| start + end);
        }
        self.written += out.len();
        self.wire.extend(out);
        let encrypted = if self.tls.is_handshaking() { 0 } else { self.sent.len() };
        self.flushes.push((self.written, encrypted));
    }

    fn write(&mut self, data: &[u8]) {
        if !self.can_write() || data.is_empty() {
            return;
        }
        let n = self.tls.writer().write(data).unwrap_or(0);
        self.sent.extend_from_slice(&data[..n]);
        self.flush();
    }

    /// The client's close_notify, now if `abort` or once the handshake is
    /// done.
    fn close_notify(&mut self, abort: bool) {
        self.closing = true;
        if self.failed || self.ended || self.close_notify_end.is_some() {
            return;
        }
        let handshaking = self.tls.is_handshaking();
        if handshaking && !abort {
            return;
        }
        self.early_close = handshaking;
        self.sent_at_close = if handshaking { 0 } else { self.sent.len() };
        self.tls.send_close_notify();
        self.flush();
        self.close_notify_end = Some(self.written);
    }

    /// Plaintext encrypted into the first `offset` bytes of `wire`'s
    /// stream, or more (never less): within a flush, a byte of plaintext
    /// for each byte of its records.
    fn encrypted_by(&self, offset: usize) -> usize {
        let i = self.flushes.partition_point(|&(end, _)| end < offset);
        let (start, before) = i.checked_sub(1).map_or((0, 0), |p| self.flushes[p]);
        match self.flushes.get(i) {
            Some(&(_, by_end)) => before + (by_end - before).min(offset - start),
            None => before,
        }
    }

    /// Takes `data` (from the server, `None`: its end of stream), then
    /// reads what it decrypts and checks it.
    fn receive(&mut self, data: Option<&[u8]>) {
        if self.failed {
            return;
        }
        let mut rest = data.unwrap_or(&[]);
        loop {
            if self.tls.read_tls(&mut rest).is_err() {
                self.failed = true;
                break;
            }
            if self.tls.process_new_packets().is_err() {
                self.failed = true;
                break;
            }
            let mut buf = [0u8; 4096];
            loop {
                match self.tls.reader().read(&mut buf) {
                    Ok(0) => {
                        self.closed_by_server = true;
                        break;
                    }
                    Ok(n) => self.got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        // The server's end of stream without close_notify.
                        self.failed = true;
                        break;
                    }
                }
            }
            if rest.is_empty() {
                break;
            }
        }
        self.flush();
        if self.closing {
            self.close_notify(false);
        }
        self.check();
    }

    /// Every byte back is the upper-cased byte sent; the server's
    /// close_notify only after the client's, with everything answered.
    fn check(&self) {
        assert!(self.got.len() <= self.sent.len(), "more bytes back than sent");
        for (i, (&got, &was)) in self.got.iter().zip(&self.sent).enumerate() {
            assert_eq!(got, upper(was), "byte {i} of the reply is wrong");
        }
        if self.closed_by_server {
            assert!(self.close_notify_end.is_some(), "the server's close_notify before the client's");
            assert_eq!(self.got.len(), self.sent_at_close, "the server's close_notify with bytes unanswered");
        }
    }
}

/// In a client's flight of `records` after its first: the end of its
/// handshake's last message, the record after a ChangeCipherSpec (TLS 1.2,
/// and TLS 1.3 in middlebox mode), else the first encrypted record (TLS
/// 1.3). `None` if neither is there.
fn finished_end(records: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut after_ccs = false;
    while at + 5 <= records.len() {
        let kind = records[at];
        let end = at + 5 + usize::from(u16::from_be_bytes([records[at + 3], records[at + 4]]));
        if end > records.len() {
            return None;
        }
        if after_ccs || kind == 0x17 {
            return Some(end);
        }
        after_ccs = kind == 0x14;
        at = end;
    }
    None
}

/// What one run did, for the tests to check that scripts reach every
/// corner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// TLS 1.2 (else 1.3).
    pub tls12: bool,
    /// Plaintext bytes the client sent, and got back.
    pub sent: usize,
    pub answered: usize,
    /// The client finished its handshake.
    pub handshaken: bool,
    /// How the connection ended: `Close`, `Fail`, expired.
    pub closed: bool,
    pub failed: bool,
    pub expired: bool,
    /// ... expired with its handshake not finished.
    pub handshake_expired: bool,
    /// The client saw the server's close_notify.
    pub clean_end: bool,
    /// Sends refused for want of room (back-pressure).
    pub full_sends: usize,
    /// The most the server held for the client, as measured here.
    pub held_most: usize,
    /// Reads after a fatal socket error.
    pub reads_after_fatal: usize,
    /// The script had a fault: garbage, corruption, a fatal error, an
    /// end of stream without close_notify.
    pub faulty: bool,
}

/// Runs the script `data` with the certificates of `fixture`; panics if a
/// promise is broken.
pub fn run(fixture: &Fixture, data: &[u8]) -> Report {
    Sim::new(fixture, data).play()
}

struct Sim<'a> {
    s: Script<'a>,
    conn: TlsConn<Wire>,
    client: Client,
    buf: Vec<u8>,
    limits: Limits,
    min_rate: u32,
    idle: Option<u64>,
    counters: Counters,
    now: u64,
    handshake_by: u64,
    /// When a byte last moved (in, out, or the end of stream read), and
    /// when a byte last came in.
    last_moved: u64,
    last_read: u64,
    /// Faults: bytes the client did not write got in; the server's bytes
    /// were corrupted.
    garbage: bool,
    corrupted_out: bool,
    report: Report,
}

const MS: u64 = 1_000_000;

impl<'a> Sim<'a> {
    fn new(fixture: &Fixture, data: &'a [u8]) -> Sim<'a> {
        let mut s = Script { data, at: 0 };
        let b = s.byte();
        let tls12 = b & 1 == 1;
        let buf_len = [1, 5, 64, 100, 1000, 4096, 16384, 65536][usize::from(b >> 1 & 7)];
        let b = s.byte();
        let idle = (b % 16 > 0).then(|| u64::from(b % 16) * 50 * MS);
        let min_rate = [0, 0, 100, 10_000][usize::from(b >> 4 & 3)];
        let handshake_ms = u64::from(s.byte() % 16 + 1) * 50;
        let mut wire = Wire { send_capacity: usize::from(s.byte()) * 64, ..Wire::default() };
        wire.recv_max = usize::from(s.byte());
        let limits = Limits::new(idle.map(Duration::from_nanos), min_rate);
        let now = 1_000_000_000;
        let session = fixture.server.accept().expect("a server session");
        let conn = TlsConn::new(wire, session, now, &limits, Duration::from_millis(handshake_ms));
        let config = if tls12 { &fixture.tls12 } else { &fixture.tls13 };
        let name = ServerName::try_from(NAME).expect("name");
        let mut tls = ClientConnection::new(config.clone(), name).expect("a client session");
        tls.set_buffer_limit(None);
        let mut client = Client {
            tls,
            wire: VecDeque::new(),
            written: 0,
            transmitted: 0,
            flushes: Vec::new(),
            sent: Vec::new(),
            most: (buf_len * 1024).min(CLIENT_MAX),
            got: Vec::new(),
            close_notify_end: None,
            handshake_end: None,
            closing: false,
            sent_at_close: 0,
            early_close: false,
            closed_by_server: false,
            failed: false,
            ended: false,
        };
        client.flush();
        Sim {
            s,
            conn,
            client,
            buf: vec![0u8; crate::server::tls_conn::CHUNK],
            limits,
            min_rate,
            idle,
            counters: Counters::default(),
            now,
            handshake_by: now + handshake_ms * MS,
            last_moved: now,
            last_read: now,
            garbage: false,
            corrupted_out: false,
            report: Report { tls12, ..Report::default() },
        }
    }

    /// A length from one script byte: 1 to 127 bytes, or 256 to 32,512
    /// in steps of 256; 0 is everything.
    fn amount(&mut self) -> usize {
        match self.s.byte() {
            0 => usize::MAX,
            b @ 1..=127 => usize::from(b),
            b => usize::from(b - 127) * 256,
        }
    }

    /// Moves `n` bytes of the client's records onto the wire.
    fn transmit(&mut self, n: usize) {
        let sock = self.conn.sock_mut();
        if sock.eof {
            return;
        }
        let n = n.min(self.client.wire.len());
        let (before, after, pushed) = (self.client.transmitted, self.client.transmitted + n, sock.pushed);
        let at = |end: usize| (before < end && end <= after).then(|| pushed + (end - before));
        if let Some(end) = self.client.close_notify_end.and_then(at) {
            sock.close_notify_at = Some(end);
        }
        if let Some(end) = self.client.handshake_end.and_then(at) {
            sock.handshake_at = Some(end);
        }
        sock.inbound.extend(self.client.wire.drain(..n));
        sock.pushed += n;
        self.client.transmitted = after;
    }

    /// The client reads `n` bytes of what the server sent.
    fn client_reads(&mut self, n: usize) {
        let n = n.min(self.conn.sock_mut().outbound.len());
        if n == 0 {
            return;
        }
        let data: Vec<u8> = self.conn.sock_mut().outbound.drain(..n).collect();
        if !self.deaf() {
            self.client.receive(Some(&data));
        }
    }

    /// The client has sent its close_notify and a fault may make what it
    /// reads fail: it reads nothing more, for rustls's debug build asserts
    /// that no alert follows a close_notify, and a failure sends one.
    fn deaf(&self) -> bool {
        self.client.close_notify_end.is_some() && (self.garbage || self.corrupted_out)
    }

    /// An end of stream without the client's close_notify read whole.
    fn cut_short(&self) -> bool {
        self.conn.sock().eof && self.conn.sock().close_notify_at.is_none()
    }

    fn faulty(&self) -> bool {
        self.garbage
            || self.corrupted_out
            || self.conn.sock().failed
            || self.client.failed
            || self.client.early_close
            || self.cut_short()
    }

    /// What the server holds for the client, or more: the plaintext in
    /// what it read, less what the client got and what waits for it.
    fn held(&self) -> usize {
        let read = self.client.encrypted_by(self.conn.sock().read_total);
        read.saturating_sub(self.client.got.len() + self.conn.sock().outbound.len())
    }

    /// One wake-up of the server; `None` while the connection lives.
    fn wake(&mut self) -> Option<Outcome> {
        let (read, sent, eofs) =
            (self.conn.sock_mut().read_total, self.conn.sock_mut().sent_total, self.conn.sock_mut().eof_reads);
        let cx = Ctx { counters: &self.counters, now: self.now, limits: &self.limits };
        let outcome = self.conn.ready(&mut self.buf, &cx);
        let sock = self.conn.sock();
        if sock.read_total > read {
            self.last_read = self.now;
        }
        if sock.read_total > read || sock.sent_total > sent || sock.eof_reads > eofs {
            self.last_moved = self.now;
        }
        // (A client that failed, or stopped reading, decrypts no more. A
        // failed connection holds nothing: what it reads after the failure
        // is dropped.)
        if outcome != Outcome::Fail && !self.client.failed && !self.deaf() {
            let held = self.held();
            self.report.held_most = self.report.held_most.max(held);
            assert!(held <= HELD_MAX, "{held} bytes held for a client that does not read");
        }
        if sock.failed {
            assert_eq!(outcome, Outcome::Fail, "kept after a fatal socket error");
        }
        match outcome {
            Outcome::Keep => None,
            Outcome::Close => {
                assert!(sock.finished, "closed without our end of stream");
                Some(outcome)
            }
            Outcome::Fail => {
                assert!(self.faulty(), "failed without a fault");
                Some(outcome)
            }
        }
    }

    /// Time passes to `self.now`; the loop's sweep looks at the
    /// connection. True if it expired.
    fn sweep(&mut self) -> bool {
        let expired = self.conn.expired(self.now, &self.limits);
        let deadline = self.conn.deadline(&self.limits);
        assert_eq!(expired, deadline.is_some_and(|d| self.now >= d), "expired() and deadline() disagree");
        let sock = self.conn.sock();
        // The server cannot have finished its handshake before reading
        // the client's last handshake message.
        let handshaking = sock.handshake_at.is_none_or(|at| sock.read_total < at);
        if handshaking && self.now >= self.handshake_by {
            assert!(expired, "the handshake outlived its timeout");
        }
        if self.idle.is_some_and(|i| self.now >= self.last_moved + i) {
            assert!(expired, "idle for the idle timeout, not expired");
        }
        // A byte answered: the handshake is over.
        let handshaken = !self.client.got.is_empty();
        let idle_ok = self.idle.is_none_or(|i| self.now < self.last_read + i);
        if self.min_rate == 0 && idle_ok && (handshaken || self.now < self.handshake_by) {
            assert!(!expired, "expired within its time");
        }
        if expired {
            self.report.expired = true;
            self.report.handshake_expired = handshaking;
        }
        expired
    }

    fn play(mut self) -> Report {
        let mut end = self.wake();
        let mut expired = false;
        while end.is_none() && !expired && !self.s.done() {
            let op = self.s.byte();
            let mut wake = false;
            match op % 16 {
                0 => {
                    let len = usize::from(self.s.byte() % 64) + 1;
                    let bytes: Vec<u8> = (0..len).map(|_| self.s.byte()).collect();
                    self.client.write(&bytes);
                }
                1 => {
                    let len = (usize::from(self.s.byte()) + 1) * 64;
                    let from = self.s.byte();
                    let bytes: Vec<u8> = (0..len).map(|i| b"aZ9 q-x\xc3\xa9"[(i + usize::from(from)) % 9]).collect();
                    self.client.write(&bytes);
                }
                2 => {
                    let n = self.amount();
                    self.transmit(n);
                }
                3 => {
                    let n = self.amount();
                    self.client_reads(n);
                }
                4 => self.conn.sock_mut().send_capacity = usize::from(self.s.byte()) * 64,
                5 => self.conn.sock_mut().recv_max = usize::from(self.s.byte()),
                6 => {
                    let len = usize::from(self.s.byte() % 16) + 1;
                    let bytes: Vec<u8> = (0..len).map(|_| self.s.byte()).collect();
                    if !self.conn.sock_mut().eof {
                        self.conn.sock_mut().inbound.extend(&bytes);
                        self.conn.sock_mut().pushed += len;
                        self.garbage = true;
                    }
                }
                7 => {
                    // A byte of the client's, on the wire or about to be.
                    let at = usize::from(self.s.byte()) | usize::from(self.s.byte()) << 8;
                    let flip = self.s.byte() | 1;
                    let sock = self.conn.sock_mut();
                    let on_wire = sock.inbound.len();
                    let total = on_wire + self.client.wire.len();
                    if total > 0 && !sock.eof {
                        let at = at % total;
                        match sock.inbound.get_mut(at) {
                            Some(b) => *b ^= flip,
                            None => self.client.wire[at - on_wire] ^= flip,
                        }
                        self.garbage = true;
                    }
                }
                8 => {
                    // A byte of the server's, on its way to the client.
                    let at = usize::from(self.s.byte()) | usize::from(self.s.byte()) << 8;
                    let flip = self.s.byte() | 1;
                    let out = &mut self.conn.sock_mut().outbound;
                    if !out.is_empty() {
                        let at = at % out.len();
                        out[at] ^= flip;
                        self.corrupted_out = true;
                    }
                }
                // close_notify, or (128 and up) an abort: now, even in
                // the middle of the handshake.
                9 => self.client.close_notify(op >= 128),
                10 => {
                    // The client's end of stream; what it had not
                    // transmitted is lost.
                    self.conn.sock_mut().eof = true;
                    self.client.ended = true;
                    self.client.wire.clear();
                }
                11 => {
                    let code = [libc::EINTR, libc::EAGAIN, libc::ECONNRESET][usize::from(self.s.byte() % 3)];
                    self.conn.sock_mut().recv_errors.push_back(code);
                }
                12 => {
                    let code = [libc::EINTR, libc::EAGAIN, libc::EPIPE][usize::from(self.s.byte() % 3)];
                    self.conn.sock_mut().send_errors.push_back(code);
                }
                13 => {
                    self.now += u64::from(self.s.byte()) * 5 * MS;
                    expired = self.sweep();
                }
                14 => {
                    // As level-triggered epoll reports it.
                    let sock = self.conn.sock();
                    let readable = !sock.inbound.is_empty() || sock.eof || !sock.recv_errors.is_empty();
                    let writable = sock.outbound.len() < sock.send_capacity || !sock.send_errors.is_empty();
                    wake = if self.conn.wants_write() { writable } else { readable };
                }
                _ => wake = true, // spurious
            }
            if wake {
                end = self.wake();
            }
        }
        if end.is_none() && !expired {
            end = Some(self.finish_script());
        }
        // The connection is closed: the client reads what is left, then
        // the end of stream.
        let rest = self.conn.sock_mut().outbound.len();
        self.client_reads(rest);
        if !self.deaf() {
            self.client.receive(None);
        }
        // (The client fails at the end of a stream without close_notify.)
        let faulty = self.garbage
            || self.corrupted_out
            || self.conn.sock_mut().failed
            || self.client.early_close
            || self.cut_short();
        let r = &mut self.report;
        r.sent = self.client.sent.len();
        r.answered = self.client.got.len();
        r.handshaken = self.client.handshake_end.is_some();
        r.clean_end = self.client.closed_by_server;
        r.full_sends = self.conn.sock_mut().full_sends;
        r.reads_after_fatal = self.conn.sock_mut().reads_after_fatal;
        r.faulty = faulty;
        r.closed = end == Some(Outcome::Close);
        r.failed = end == Some(Outcome::Fail);
        if r.closed && !self.corrupted_out && !self.deaf() {
            assert!(self.client.closed_by_server, "closed, and the client did not get our close_notify");
        }
        self.report
    }

    /// The end of the script: the client sends its close_notify (if it
    /// still can), reads everything and the server may send everything;
    /// the connection must end, with `Close` unless there was a fault.
    fn finish_script(&mut self) -> Outcome {
        self.client.close_notify(false);
        let sock = self.conn.sock_mut();
        sock.recv_errors.retain(|&c| !fatal(c));
        sock.send_errors.retain(|&c| !fatal(c));
        sock.send_capacity = usize::MAX;
        sock.recv_max = 0;
        // Each EINTR or EAGAIN still queued may cost a wake-up.
        let errors = sock.recv_errors.len() + sock.send_errors.len();
        let rounds = sock.pushed / 1024 + self.client.wire.len() / 1024 + errors + 64;
        for round in 0..rounds {
            if round == 16 && self.faulty() {
                // A client that sees no end gives up.
                self.conn.sock_mut().eof = true;
                self.client.ended = true;
            }
            self.transmit(usize::MAX);
            let end = self.wake();
            let rest = self.conn.sock_mut().outbound.len();
            self.client_reads(rest);
            match end {
                Some(Outcome::Fail) => {
                    assert!(self.faulty(), "failed without a fault");
                    return Outcome::Fail;
                }
                Some(outcome) => return outcome,
                None => {}
            }
        }
        panic!("no end in sight after the client's close_notify");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    fn fixture() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
            let cert = rcgen::CertificateParams::new(vec![NAME.to_owned()])
                .expect("params")
                .self_signed(&key)
                .expect("certificate");
            Fixture::new(cert.der(), &key.serialize_der())
        })
    }

    /// xorshift64*: reproducible numbers.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u8 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        }
        fn below(&mut self, n: u8) -> u8 {
            self.next() % n
        }
    }

    /// A script of `ops` steps drawn from `ops`, each op followed by the
    /// random bytes it reads (the ops read at most 64 + 1).
    fn schedule(rng: &mut Rng, header: [u8; 5], ops: &[u8], steps: usize) -> Vec<u8> {
        let mut script = header.to_vec();
        for _ in 0..steps {
            let op = ops[usize::from(rng.below(ops.len() as u8))];
            script.push(op);
            let n = match op % 16 {
                0 => {
                    let len = rng.below(64);
                    script.push(len);
                    usize::from(len) + 1
                }
                1 => 2,
                6 => {
                    let len = rng.below(16);
                    script.push(len);
                    usize::from(len) + 1
                }
                7 | 8 => 3,
                9 | 10 | 14 | 15 => 0,
                _ => 1,
            };
            script.extend((0..n).map(|_| rng.next()));
        }
        script
    }

    /// Ops with no fault: writes, transmits and reads of any size,
    /// send-buffer sizes, partial reads, close_notify, EINTR and EAGAIN,
    /// wake-ups.
    const CLEAN: &[u8] = &[0, 0, 1, 2, 2, 2, 3, 3, 3, 4, 5, 14, 14, 14, 15];

    #[test]
    fn clean_schedules_end_with_every_byte_answered() {
        let mut rng = Rng(0x7153);
        let mut total = Report::default();
        for i in 0..200 {
            let header = [rng.next(), 0, 255, rng.next() | 1, rng.next()];
            let mut ops = CLEAN.to_vec();
            if i % 4 == 0 {
                ops.push(9); // close_notify at any point
            }
            let script = schedule(&mut rng, header, &ops, 60);
            let r = std::panic::catch_unwind(|| run(fixture(), &script))
                .unwrap_or_else(|_| panic!("script {i} broke a promise: {script:?}"));
            assert!(r.closed && r.clean_end && r.answered == r.sent, "script {i}: {r:?}: {script:?}");
            total.tls12 |= r.tls12;
            total.sent += r.sent;
            total.full_sends += r.full_sends;
            total.held_most = total.held_most.max(r.held_most);
        }
        // Some schedules fill the send buffer: back-pressure is exercised.
        assert!(total.tls12 && total.sent > 100_000 && total.full_sends > 10, "{total:?}");
    }

    #[test]
    fn faulty_schedules_keep_every_promise() {
        let mut rng = Rng(0xFA17);
        // Every op, and the abort (a close_notify in the handshake).
        let all: Vec<u8> = (0..16).chain([137]).collect();
        let (mut closed, mut failed, mut expired, mut handshake_expired, mut clean) = (0, 0, 0, 0, 0);
        for i in 0..300 {
            let header = [rng.next(), rng.next(), rng.next(), rng.next(), rng.next()];
            let mut ops = CLEAN.to_vec();
            ops.push(all[usize::from(rng.below(17))]);
            ops.push(all[usize::from(rng.below(17))]);
            let script = schedule(&mut rng, header, &ops, 60);
            let r = std::panic::catch_unwind(|| run(fixture(), &script))
                .unwrap_or_else(|_| panic!("script {i} broke a promise: {script:?}"));
            closed += usize::from(r.closed);
            failed += usize::from(r.failed);
            expired += usize::from(r.expired);
            handshake_expired += usize::from(r.handshake_expired);
            clean += usize::from(r.closed && r.clean_end);
            if !r.faulty && !r.expired {
                assert!(r.closed, "script {i}: no fault, not closed: {r:?}");
            }
        }
        assert!(closed > 30 && failed > 30 && expired > 10 && handshake_expired > 3, "{closed} {failed} {expired}");
        assert!(clean > 30, "{clean}");
    }

    /// A client that sends 256 KiB and reads nothing: the server takes in
    /// no more than it can hold, then waits; once the client reads, all
    /// of it comes back.
    #[test]
    fn a_client_that_does_not_read_is_not_read_from() {
        for header in [[10u8, 0, 255, 4, 0], [11, 0, 255, 4, 0], [12, 0, 255, 255, 0], [15, 0, 255, 0, 0]] {
            // Handshake first, with room to send it.
            let mut script = header.to_vec();
            script.extend([4, 255, 2, 0, 14, 3, 0, 2, 0, 14, 3, 0, 2, 0, 14, 3, 0]);
            script.extend([4, header[3]]);
            for _ in 0..16 {
                // 16 KiB written, transmitted, and a wake-up.
                script.extend([1, 255, 0, 2, 0, 14, 15]);
            }
            let r = run(fixture(), &script);
            assert!(r.sent == CLIENT_MAX && r.answered == r.sent && r.closed && r.clean_end, "{r:?}");
            assert!(r.full_sends > 0 && r.held_most > 0, "{header:?} {r:?}");
        }
    }

    /// close_notify, and a plain end of stream, after every step of a
    /// short exchange: the first is a complete exchange once the client's
    /// handshake is done (it waits for that), the second never is.
    #[test]
    fn close_notify_or_end_of_stream_at_every_point() {
        let steps: &[&[u8]] = &[
            &[2, 3],
            &[14],
            &[3, 0],
            &[2, 0],
            &[14],
            &[3, 0], // the TLS 1.3 client's handshake is done
            &[0, 4, b'a', b'b', b'c', b'd', b'e'],
            &[2, 0],
            &[14],
            &[3, 0], // the TLS 1.2 client's handshake is done
            &[0, 2, b'x', b'Y', b'z'],
        ];
        for tls12 in [false, true] {
            let done = if tls12 { 10 } else { 6 };
            for cut in 0..=steps.len() {
                for last in [&[9u8, 2, 0, 10][..], &[10], &[9, 10], &[137, 2, 0, 10]] {
                    let mut script = vec![4 | u8::from(tls12), 0, 255, 255, 0];
                    for step in &steps[..cut] {
                        script.extend(*step);
                    }
                    script.extend(last);
                    script.extend([14, 3, 0, 14, 3, 0]);
                    let r = run(fixture(), &script);
                    let what = format!("TLS 1.{}, {cut} steps, then {last:?}: {r:?}", if tls12 { 2 } else { 3 });
                    if last == [9, 2, 0, 10] && cut >= done {
                        assert!(r.closed && r.clean_end && r.answered == r.sent, "{what}");
                    } else if last == [137, 2, 0, 10] {
                        // (What the client wrote in its handshake was never sent.)
                        assert!(r.closed || r.failed, "{what}");
                    } else {
                        assert!(r.failed && !r.clean_end, "{what}");
                    }
                }
            }
        }
    }

    /// The committed seeds of the fuzz target, and a script of the
    /// caller's (`UPCASE_TLS_SCRIPT=path`, a fuzz target's input).
    #[test]
    fn seeds_and_a_given_script_keep_every_promise() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/tls_conn");
        let mut paths: Vec<_> = std::fs::read_dir(&dir).expect("seeds").map(|e| e.expect("seed").path()).collect();
        paths.extend(std::env::var_os("UPCASE_TLS_SCRIPT").map(Into::into));
        assert!(paths.len() > 10, "{} seeds in {}", paths.len(), dir.display());
        for path in paths {
            let script = std::fs::read(&path).expect("script");
            let r = std::panic::catch_unwind(|| run(fixture(), &script))
                .unwrap_or_else(|_| panic!("{} broke a promise", path.display()));
            eprintln!("{}: {r:?}", path.display());
        }
    }

    #[test]
    fn empty_and_tiny_scripts() {
        assert!(run(fixture(), &[]).closed);
        for b in 0..=255u8 {
            run(fixture(), &[b]);
            run(fixture(), &[b, b, b, b, b, b, b]);
        }
    }
}
