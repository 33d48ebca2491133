//! TLS in the binding: the keywords of `Server`, `tcp_request` and
//! `Connection`, and `upcase.TLSContext`, whose `wrap_socket` turns an
//! `upcase.socket` into an `upcase.TLSSocket`, in the words of the
//! standard `ssl` module's `SSLContext` and `SSLSocket`.
//!
//! A TLSSocket moves rustls's records over its descriptor with the core's
//! `send` and `recv`, and waits as its socket does (its timeout, signals
//! checked). The rustls side is locked while records move, never while
//! waiting, so one thread can send while another waits in `recv`.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use pyo3::PyClassInitializer;

use upcase::server::Transport;
use upcase::sys;
use upcase::tls::rustls::{self, Connection, ProtocolVersion};
use upcase::tls::{TlsClient, TlsServer};

use crate::data_arg;
use crate::errors::{os_error, tls_error, to_py, Tls};
use crate::socket::Socket;

const PROTOCOL_TLS_CLIENT: i32 = 16;
const PROTOCOL_TLS_SERVER: i32 = 17;
const CERT_NONE: i32 = 0;
const CERT_OPTIONAL: i32 = 1;
const CERT_REQUIRED: i32 = 2;

/// The constants, with the standard `ssl` module's names and values.
pub(crate) const CONSTANTS: &[(&str, i32)] = &[
    ("PROTOCOL_TLS_CLIENT", PROTOCOL_TLS_CLIENT),
    ("PROTOCOL_TLS_SERVER", PROTOCOL_TLS_SERVER),
    ("CERT_NONE", CERT_NONE),
    ("CERT_OPTIONAL", CERT_OPTIONAL),
    ("CERT_REQUIRED", CERT_REQUIRED),
];

/// A certificate chain and its key: both or neither.
fn cert_and_key(certfile: Option<PathBuf>, keyfile: Option<PathBuf>) -> PyResult<Option<(PathBuf, PathBuf)>> {
    match (certfile, keyfile) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(PyValueError::new_err("certfile needs keyfile: the certificate's private key (PEM)")),
        (None, Some(_)) => Err(PyValueError::new_err("keyfile needs certfile: the certificate chain (PEM)")),
    }
}

/// The TLS of `tcp_request` and `Connection`; any TLS keyword without
/// `tls=True` is an error, so nothing meant for TLS goes in plaintext.
pub(crate) fn client_arg(
    py: Python<'_>,
    tls: bool,
    cafile: Option<PathBuf>,
    server_hostname: Option<String>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
) -> PyResult<Option<Arc<TlsClient>>> {
    if !tls {
        let given: Vec<&str> = [
            ("cafile", cafile.is_some()),
            ("server_hostname", server_hostname.is_some()),
            ("certfile", certfile.is_some()),
            ("keyfile", keyfile.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if !given.is_empty() {
            return Err(PyValueError::new_err(format!("{} given without tls=True", given.join(", "))));
        }
        return Ok(None);
    }
    let cert = cert_and_key(certfile, keyfile)?;
    let client = py
        .detach(|| {
            let cert = cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            TlsClient::new(cafile.as_deref(), server_hostname, cert)
        })
        .map_err(|e| to_py(py, e))?;
    Ok(Some(Arc::new(client)))
}

/// The TLS of `Server`: certfile and keyfile turn it on, for TCP on epoll.
/// A bad file fails here, naming it.
pub(crate) fn server_arg(
    py: Python<'_>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
    client_cafile: Option<PathBuf>,
    transport: Transport,
    io_uring: bool,
) -> PyResult<Option<Arc<TlsServer>>> {
    let Some((cert, key)) = cert_and_key(certfile, keyfile)? else {
        if client_cafile.is_some() {
            return Err(PyValueError::new_err("client_cafile needs certfile and keyfile (TLS)"));
        }
        return Ok(None);
    };
    if transport != Transport::Tcp {
        return Err(PyValueError::new_err("certfile: TLS is served over TCP only, not transport='udp'"));
    }
    if io_uring {
        return Err(PyValueError::new_err("certfile: the io_uring loop does not serve TLS (io_uring=False)"));
    }
    let tls = py.detach(|| TlsServer::from_pem(&cert, &key, client_cafile.as_deref())).map_err(|e| to_py(py, e))?;
    Ok(Some(Arc::new(tls)))
}

/// A context's configuration, built once for all its sockets (so that
/// sessions resume).
#[derive(Clone)]
enum Side {
    Server(Arc<TlsServer>),
    Client(Arc<TlsClient>),
}

#[derive(Default)]
struct Loaded {
    chain: Option<(PathBuf, PathBuf)>,
    cafile: Option<PathBuf>,
    /// A server's verify_mode CERT_REQUIRED.
    require_client_cert: bool,
    built: Option<Side>,
}

/// TLSContext(protocol)
///
/// What TLS sockets share, as ssl.SSLContext: PROTOCOL_TLS_CLIENT or
/// PROTOCOL_TLS_SERVER. A client verifies the server's certificate against
/// the CAs of load_verify_locations(cafile), or the system's trust store
/// without one, and checks its name; there is no way to turn that off. A
/// server presents load_cert_chain(certfile, keyfile), and with
/// verify_mode = CERT_REQUIRED requires client certificates signed by the
/// CAs of load_verify_locations(cafile). TLS 1.3 and 1.2.
#[pyclass(module = "upcase._upcase", name = "TLSContext", frozen)]
pub(crate) struct TlsContext {
    server: bool,
    loaded: Mutex<Loaded>,
}

impl TlsContext {
    fn lock(&self) -> PyResult<MutexGuard<'_, Loaded>> {
        self.loaded.lock().map_err(|_| PyRuntimeError::new_err("TLS context lock poisoned"))
    }

    /// The configuration, built on first use after a change.
    fn side(&self, py: Python<'_>) -> PyResult<Side> {
        let (chain, cafile, require) = {
            let st = self.lock()?;
            if let Some(side) = &st.built {
                return Ok(side.clone());
            }
            (st.chain.clone(), st.cafile.clone(), st.require_client_cert)
        };
        let side = if self.server {
            let (cert, key) = chain.ok_or_else(|| {
                PyValueError::new_err("a server context needs load_cert_chain(certfile, keyfile) first")
            })?;
            let client_ca =
                match (require, cafile) {
                    (false, _) => None,
                    (true, Some(ca)) => Some(ca),
                    (true, None) => return Err(PyValueError::new_err(
                        "verify_mode CERT_REQUIRED needs load_verify_locations(cafile): the CAs of client certificates",
                    )),
                };
            let tls = py.detach(|| TlsServer::from_pem(&cert, &key, client_ca.as_deref()));
            Side::Server(Arc::new(tls.map_err(|e| to_py(py, e))?))
        } else {
            let tls = py.detach(|| {
                let cert = chain.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
                TlsClient::new(cafile.as_deref(), None, cert)
            });
            Side::Client(Arc::new(tls.map_err(|e| to_py(py, e))?))
        };
        self.lock()?.built = Some(side.clone());
        Ok(side)
    }
}

#[pymethods]
impl TlsContext {
    #[new]
    fn new(protocol: i32) -> PyResult<TlsContext> {
        let server = match protocol {
            PROTOCOL_TLS_CLIENT => false,
            PROTOCOL_TLS_SERVER => true,
            other => {
                return Err(PyValueError::new_err(format!(
                    "protocol must be PROTOCOL_TLS_CLIENT or PROTOCOL_TLS_SERVER, not {other}"
                )))
            }
        };
        Ok(TlsContext { server, loaded: Mutex::new(Loaded::default()) })
    }

    /// PROTOCOL_TLS_CLIENT or PROTOCOL_TLS_SERVER.
    #[getter]
    fn protocol(&self) -> i32 {
        if self.server {
            PROTOCOL_TLS_SERVER
        } else {
            PROTOCOL_TLS_CLIENT
        }
    }

    /// load_cert_chain(certfile, keyfile=None): the certificate chain
    /// (leaf first) and its private key, PEM files (the key in certfile
    /// when keyfile is None). A server presents it; a client presents it
    /// to a server that asks. A bad file fails here, naming it.
    #[pyo3(signature = (certfile, keyfile = None))]
    fn load_cert_chain(&self, py: Python<'_>, certfile: PathBuf, keyfile: Option<PathBuf>) -> PyResult<()> {
        let keyfile = keyfile.unwrap_or_else(|| certfile.clone());
        // Loaded once now, so that a bad file fails here and not at the first peer.
        py.detach(|| TlsServer::from_pem(&certfile, &keyfile, None)).map_err(|e| to_py(py, e))?;
        let mut st = self.lock()?;
        st.chain = Some((certfile, keyfile));
        st.built = None;
        Ok(())
    }

    /// load_verify_locations(cafile): the CAs (a PEM file) that sign the
    /// peer's certificate: the server's, or a client's (CERT_REQUIRED).
    fn load_verify_locations(&self, py: Python<'_>, cafile: PathBuf) -> PyResult<()> {
        py.detach(|| TlsClient::new(Some(&cafile), None, None)).map_err(|e| to_py(py, e))?;
        let mut st = self.lock()?;
        st.cafile = Some(cafile);
        st.built = None;
        Ok(())
    }

    /// CERT_REQUIRED for a client (always); CERT_NONE or CERT_REQUIRED
    /// for a server.
    #[getter]
    fn get_verify_mode(&self) -> PyResult<i32> {
        Ok(if !self.server || self.lock()?.require_client_cert { CERT_REQUIRED } else { CERT_NONE })
    }

    #[setter]
    fn set_verify_mode(&self, value: i32) -> PyResult<()> {
        let require = match (self.server, value) {
            (_, CERT_REQUIRED) => true,
            (true, CERT_NONE) => false,
            (false, CERT_NONE | CERT_OPTIONAL) => {
                return Err(PyValueError::new_err(
                    "a client always verifies the server's certificate (load_verify_locations gives its CA)",
                ))
            }
            (true, CERT_OPTIONAL) => {
                return Err(PyValueError::new_err("CERT_OPTIONAL is not supported: CERT_NONE or CERT_REQUIRED"))
            }
            (_, other) => return Err(PyValueError::new_err(format!("invalid value for verify_mode: {other}"))),
        };
        let mut st = self.lock()?;
        if st.require_client_cert != require {
            st.require_client_cert = require;
            st.built = None;
        }
        Ok(())
    }

    /// True for a client, which always checks the server's name; False
    /// for a server.
    #[getter]
    fn get_check_hostname(&self) -> bool {
        !self.server
    }

    #[setter]
    fn set_check_hostname(&self, value: bool) -> PyResult<()> {
        match (self.server, value) {
            (false, true) | (true, false) => Ok(()),
            (false, false) => Err(PyValueError::new_err(
                "a client always checks the server's name (give wrap_socket the server_hostname to check)",
            )),
            (true, true) => Err(PyValueError::new_err("a server checks no name: check_hostname is for clients")),
        }
    }

    /// wrap_socket(sock, server_side=False, do_handshake_on_connect=True, server_hostname=None) -> TLSSocket
    ///
    /// sock (an upcase.socket, SOCK_STREAM) inside TLS; sock itself is
    /// closed after, its descriptor moved into the TLSSocket. A client
    /// needs server_hostname, the name the server's certificate must
    /// have. The handshake runs on connect() and on each accept()ed
    /// socket, or now if sock is connected; with do_handshake_on_connect
    /// False it runs on first use instead (or do_handshake()).
    #[pyo3(signature = (sock, server_side = false, do_handshake_on_connect = true, server_hostname = None))]
    fn wrap_socket<'py>(
        slf: &Bound<'py, Self>,
        sock: &Bound<'py, Socket>,
        server_side: bool,
        do_handshake_on_connect: bool,
        server_hostname: Option<String>,
    ) -> PyResult<Bound<'py, TlsSocket>> {
        let py = slf.py();
        let ctx = slf.get();
        if sock.is_instance_of::<TlsSocket>() {
            return Err(PyValueError::new_err("the socket is already wrapped in TLS"));
        }
        if server_side != ctx.server {
            return Err(PyValueError::new_err(if server_side {
                "Cannot create a server socket with a PROTOCOL_TLS_CLIENT context"
            } else {
                "Cannot create a client socket with a PROTOCOL_TLS_SERVER context"
            }));
        }
        if server_side && server_hostname.is_some() {
            return Err(PyValueError::new_err("server_hostname can only be specified in client mode"));
        }
        let base = sock.borrow();
        if base.kind() != libc::SOCK_STREAM {
            return Err(PyNotImplementedError::new_err("only stream sockets are supported"));
        }
        let side = ctx.side(py)?;
        let connected = sys::getpeername(base.fd()?.as_fd()).is_ok();
        let session = match &side {
            Side::Client(client) => {
                let name = server_hostname
                    .as_deref()
                    .ok_or_else(|| PyValueError::new_err("check_hostname requires server_hostname"))?;
                Some(Connection::from(client.new_connection(name).map_err(|e| to_py(py, e))?))
            }
            Side::Server(server) if connected => {
                Some(Connection::from(server.new_connection().map_err(|e| to_py(py, e))?))
            }
            Side::Server(_) => None,
        };
        let inner = base.take()?;
        drop(base);
        let tls = TlsSocket {
            context: slf.clone().unbind(),
            side,
            session: Mutex::new(session),
            server_hostname,
            do_handshake_on_connect,
            shut: AtomicBool::new(false),
        };
        let wrapped = Bound::new(py, PyClassInitializer::from(inner).add_subclass(tls))?;
        if connected && do_handshake_on_connect {
            TlsSocket::do_handshake(wrapped.borrow())?;
        }
        Ok(wrapped)
    }

    fn __repr__(&self) -> String {
        format!("<upcase.TLSContext {}>", if self.server { "PROTOCOL_TLS_SERVER" } else { "PROTOCOL_TLS_CLIENT" })
    }
}

/// What a TLS operation needs next.
enum Step<T> {
    Done(T),
    /// The socket to be ready for these poll events.
    Wait(i16),
}

/// Why a TLS operation failed.
enum Fail {
    Io(io::Error),
    Tls(rustls::Error),
    /// The peer closed the connection where it must not have.
    Eof(&'static str),
    NotConnected,
}

/// Our socket as rustls's record transport.
struct Fd<'a>(BorrowedFd<'a>);

impl Read for Fd<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.0, buf)
    }
}

impl Write for Fd<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.0, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Sends the records rustls has queued; `Some(POLLOUT)` when the socket
/// takes no more now.
fn flush(conn: &mut Connection, fd: BorrowedFd<'_>) -> Result<Option<i16>, Fail> {
    while conn.wants_write() {
        match conn.write_tls(&mut Fd(fd)) {
            Ok(_) => {}
            Err(e) if would_block(&e) => return Ok(Some(libc::POLLOUT)),
            Err(e) => return Err(Fail::Io(e)),
        }
    }
    Ok(None)
}

/// Reads what the socket has into rustls (0 at end of stream).
fn receive(conn: &mut Connection, fd: BorrowedFd<'_>) -> Result<Option<usize>, Fail> {
    match conn.read_tls(&mut Fd(fd)) {
        Ok(n) => {
            if let Err(e) = conn.process_new_packets() {
                // The alert rustls queued tells the peer why. One write_tls
                // sends one queued record (a compatibility ChangeCipherSpec
                // may come first): flush sends them all.
                let _ = flush(conn, fd);
                return Err(Fail::Tls(e));
            }
            Ok(Some(n))
        }
        Err(e) if would_block(&e) => Ok(None),
        Err(e) => Err(Fail::Io(e)),
    }
}

fn handshake_step(conn: &mut Connection, fd: BorrowedFd<'_>) -> Result<Step<()>, Fail> {
    loop {
        if let Some(events) = flush(conn, fd)? {
            return Ok(Step::Wait(events));
        }
        if !conn.is_handshaking() {
            return Ok(Step::Done(()));
        }
        match receive(conn, fd)? {
            Some(0) => return Err(Fail::Eof("the peer closed the connection during the TLS handshake")),
            Some(_) => {}
            None => return Ok(Step::Wait(libc::POLLIN)),
        }
    }
}

/// The handshake first, when it has not run yet.
fn handshaken(conn: &mut Connection, fd: BorrowedFd<'_>) -> Result<Option<i16>, Fail> {
    if conn.is_handshaking() {
        if let Step::Wait(events) = handshake_step(conn, fd)? {
            return Ok(Some(events));
        }
    }
    Ok(None)
}

/// Up to `buf.len()` bytes; 0 once the peer's close_notify came.
fn read_step(conn: &mut Connection, fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Step<usize>, Fail> {
    if let Some(events) = handshaken(conn, fd)? {
        return Ok(Step::Wait(events));
    }
    loop {
        match conn.reader().read(buf) {
            Ok(n) => return Ok(Step::Done(n)),
            Err(e) if would_block(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(Fail::Eof(
                    "the peer closed the connection without TLS close_notify: the data may be cut short",
                ))
            }
            Err(e) => return Err(Fail::Io(e)),
        }
        if let Some(events) = flush(conn, fd)? {
            return Ok(Step::Wait(events));
        }
        // At end of stream the reader says how the peer closed.
        if receive(conn, fd)?.is_none() {
            return Ok(Step::Wait(libc::POLLIN));
        }
    }
}

/// Hands rustls what it takes of `data` (once: `taken`), then sends it.
/// `eager` (a non-blocking socket): done once rustls took the bytes, so a
/// caller told "try again" never sends them twice; the next call sends
/// what is still queued.
fn write_step(
    conn: &mut Connection,
    fd: BorrowedFd<'_>,
    data: &[u8],
    taken: &mut Option<usize>,
    eager: bool,
) -> Result<Step<usize>, Fail> {
    if let Some(events) = handshaken(conn, fd)? {
        return Ok(Step::Wait(events));
    }
    loop {
        if taken.is_none() {
            let n = conn.writer().write(data).map_err(Fail::Io)?;
            if n > 0 || data.is_empty() {
                *taken = Some(n);
            } else if !conn.wants_write() {
                return Err(Fail::Io(io::Error::from(io::ErrorKind::BrokenPipe)));
            }
        }
        match (flush(conn, fd)?, *taken) {
            (Some(_), Some(n)) if eager => return Ok(Step::Done(n)),
            (Some(events), _) => return Ok(Step::Wait(events)),
            (None, Some(n)) => return Ok(Step::Done(n)),
            (None, None) => {}
        }
    }
}

fn close_notify_step(conn: &mut Connection, fd: BorrowedFd<'_>) -> Result<Step<()>, Fail> {
    if let Some(events) = handshaken(conn, fd)? {
        return Ok(Step::Wait(events));
    }
    // Queued once: rustls sends no second close_notify.
    conn.send_close_notify();
    Ok(match flush(conn, fd)? {
        Some(events) => Step::Wait(events),
        None => Step::Done(()),
    })
}

/// An upcase.socket inside TLS, made by TLSContext.wrap_socket (as
/// ssl.SSLSocket): send, sendall and recv carry bytes inside TLS;
/// shutdown(SHUT_WR) sends close_notify, TLS's end of data, then
/// half-closes; unwrap() sends it and gives the plain socket back; close()
/// sends it if it has not been sent, as far as the socket takes it at
/// once. recv returns b'' after the peer's close_notify, and raises
/// TLSError if the peer closed without one.
#[pyclass(module = "upcase._upcase", name = "TLSSocket", extends = Socket)]
pub(crate) struct TlsSocket {
    context: Py<TlsContext>,
    side: Side,
    /// None on a listening socket.
    session: Mutex<Option<Connection>>,
    server_hostname: Option<String>,
    do_handshake_on_connect: bool,
    /// shutdown(SHUT_WR) done: nothing more may be sent.
    shut: AtomicBool,
}

impl TlsSocket {
    /// Runs `step` until it is done, waiting between steps as the socket's
    /// timeout allows, with the interpreter released.
    fn drive<T: Send>(
        &self,
        base: &Socket,
        py: Python<'_>,
        what: &str,
        mut step: impl FnMut(&mut Connection, BorrowedFd<'_>) -> Result<Step<T>, Fail> + Send,
    ) -> PyResult<T> {
        let fd = base.fd()?;
        loop {
            let result = py.detach(|| {
                let mut guard = self.session.lock().map_err(|_| Fail::Eof("TLS state lock poisoned"))?;
                let conn = guard.as_mut().ok_or(Fail::NotConnected)?;
                step(conn, fd.as_fd())
            });
            match result {
                Ok(Step::Done(v)) => return Ok(v),
                Ok(Step::Wait(events)) => {
                    if base.timeout() == Some(Duration::ZERO) {
                        return Err(os_error(libc::EAGAIN, "Resource temporarily unavailable"));
                    }
                    base.ready(py, &fd, events, what)?;
                }
                Err(Fail::Io(e)) if e.kind() == io::ErrorKind::Interrupted => py.check_signals()?,
                Err(fail) => return Err(self.error(py, &fd, what, fail)),
            }
        }
    }

    fn error(&self, py: Python<'_>, fd: &std::os::fd::OwnedFd, what: &str, fail: Fail) -> PyErr {
        let context = match sys::getpeername(fd.as_fd()) {
            Ok(peer) => format!("{what} with {peer}"),
            Err(_) => what.to_owned(),
        };
        match fail {
            Fail::Io(e) => to_py(py, upcase::Error::os(context, e)),
            Fail::Tls(e) => {
                let kind = if matches!(e, rustls::Error::InvalidCertificate(_)) { Tls::Verify } else { Tls::Other };
                let hint = match e {
                    rustls::Error::InvalidMessage(_)
                    | rustls::Error::InappropriateMessage { .. }
                    | rustls::Error::InappropriateHandshakeMessage { .. } => {
                        " (is the peer speaking TLS on this port?)"
                    }
                    _ => "",
                };
                tls_error(py, format!("{context}: TLS: {e}{hint}"), kind)
            }
            Fail::Eof(why) => tls_error(py, format!("{context}: {why}"), Tls::Eof),
            Fail::NotConnected => os_error(libc::ENOTCONN, format!("{what}: the socket is not connected")),
        }
    }

    fn has_session(&self) -> bool {
        self.session.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    /// A new TLSSocket for an accepted connection, with its server side.
    fn accepted(&self, py: Python<'_>, sock: Socket) -> PyResult<PyClassInitializer<TlsSocket>> {
        let Side::Server(server) = &self.side else {
            return Err(PyValueError::new_err("accept() needs a server-side TLS socket"));
        };
        let session = Connection::from(server.new_connection().map_err(|e| to_py(py, e))?);
        Ok(PyClassInitializer::from(sock).add_subclass(TlsSocket {
            context: self.context.clone_ref(py),
            side: self.side.clone(),
            session: Mutex::new(Some(session)),
            server_hostname: None,
            do_handshake_on_connect: self.do_handshake_on_connect,
            shut: AtomicBool::new(false),
        }))
    }
}

#[pymethods]
impl TlsSocket {
    /// The TLSContext that made this socket.
    #[getter]
    fn context(&self, py: Python<'_>) -> Py<TlsContext> {
        self.context.clone_ref(py)
    }

    /// True for the server's end.
    #[getter]
    fn server_side(&self) -> bool {
        matches!(self.side, Side::Server(_))
    }

    /// The name the server's certificate must have (a client's end).
    #[getter]
    fn server_hostname(&self) -> Option<String> {
        self.server_hostname.clone()
    }

    /// do_handshake(): runs the TLS handshake now, if it has not run.
    fn do_handshake(slf: PyRef<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        slf.drive(slf.as_super(), py, "TLS handshake", handshake_step)
    }

    /// version() -> 'TLSv1.3', 'TLSv1.2', or None before the handshake.
    fn version(&self) -> Option<&'static str> {
        let guard = self.session.lock().ok()?;
        let conn = guard.as_ref().filter(|c| !c.is_handshaking())?;
        match conn.protocol_version()? {
            ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            _ => None,
        }
    }

    /// cipher() -> (name, version, secret bits) of the cipher suite in
    /// use, or None before the handshake. The name is IANA's, which for
    /// TLS 1.3 is also the one the ssl module gives.
    fn cipher(&self) -> Option<(String, &'static str, u32)> {
        let version = self.version()?;
        let guard = self.session.lock().ok()?;
        let name = guard.as_ref()?.negotiated_cipher_suite()?.suite().as_str()?;
        let name = match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name.to_string(),
        };
        let bits = if name.contains("AES_128") { 128 } else { 256 };
        Some((name, version, bits))
    }

    /// accept() -> (TLSSocket, address): the next connection, its
    /// handshake done unless do_handshake_on_connect was False.
    fn accept<'py>(slf: PyRef<'py, Self>) -> PyResult<(Bound<'py, TlsSocket>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        if !slf.server_side() {
            return Err(PyValueError::new_err("accept() needs a server-side TLS socket"));
        }
        let (sock, addr) = slf.as_super().accept(py)?;
        let conn = Bound::new(py, slf.accepted(py, sock)?)?;
        if slf.do_handshake_on_connect {
            TlsSocket::do_handshake(conn.borrow())?;
        }
        Ok((conn, addr))
    }

    /// connect(address): connects, then runs the handshake unless
    /// do_handshake_on_connect was False.
    fn connect(slf: PyRef<'_, Self>, address: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        slf.as_super().connect(py, address)?;
        if slf.do_handshake_on_connect {
            TlsSocket::do_handshake(slf)?;
        }
        Ok(())
    }

    /// send(data) -> int: sends what TLS takes at once (a record's worth
    /// or more); returns how much.
    fn send(slf: PyRef<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let py = slf.py();
        let d = data_arg(data, false)?;
        if slf.shut.load(Ordering::Acquire) {
            return Err(os_error(libc::EPIPE, "send after shutdown: TLS close_notify was sent"));
        }
        let bytes = d.bytes();
        let mut taken = None;
        let eager = slf.as_super().timeout() == Some(Duration::ZERO);
        slf.drive(slf.as_super(), py, "TLS send", |conn, fd| write_step(conn, fd, bytes, &mut taken, eager))
    }

    /// sendall(data): sends all of data.
    fn sendall(slf: PyRef<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let d = data_arg(data, false)?;
        if slf.shut.load(Ordering::Acquire) {
            return Err(os_error(libc::EPIPE, "send after shutdown: TLS close_notify was sent"));
        }
        let bytes = d.bytes();
        let eager = slf.as_super().timeout() == Some(Duration::ZERO);
        let mut sent = 0;
        while sent < bytes.len() {
            let mut taken = None;
            let rest = &bytes[sent..];
            sent +=
                slf.drive(slf.as_super(), py, "TLS send", |conn, fd| write_step(conn, fd, rest, &mut taken, eager))?;
        }
        Ok(())
    }

    /// recv(bufsize) -> bytes: up to bufsize bytes; b'' after the peer's
    /// close_notify.
    #[pyo3(signature = (bufsize, flags = 0))]
    fn recv<'py>(slf: PyRef<'py, Self>, bufsize: i64, flags: i32) -> PyResult<Bound<'py, PyBytes>> {
        let py = slf.py();
        let n = usize::try_from(bufsize).map_err(|_| PyValueError::new_err("negative buffersize in recv"))?;
        if flags != 0 {
            return Err(PyValueError::new_err("non-zero flags not allowed in calls to recv() on TLSSocket"));
        }
        // One TLS record holds at most 16 KiB: a larger buffer is never filled.
        let mut buf = vec![0u8; n.min(1 << 16)];
        let got = slf.drive(slf.as_super(), py, "TLS recv", |conn, fd| read_step(conn, fd, &mut buf))?;
        Ok(PyBytes::new(py, &buf[..got]))
    }

    /// Not on a TLS socket (raises ValueError).
    #[pyo3(signature = (data, *args))]
    fn sendto(&self, data: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<usize> {
        let _ = (data, args);
        Err(PyValueError::new_err("sendto not allowed on instances of TLSSocket"))
    }

    /// Not on a TLS socket (raises ValueError).
    #[pyo3(signature = (bufsize, flags = 0))]
    fn recvfrom(&self, bufsize: i64, flags: i32) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let _ = (bufsize, flags);
        Err(PyValueError::new_err("recvfrom not allowed on instances of TLSSocket"))
    }

    /// shutdown(how): SHUT_WR and SHUT_RDWR first send close_notify (the
    /// peer's recv then returns b''), then shut the socket down.
    fn shutdown(slf: PyRef<'_, Self>, how: i32) -> PyResult<()> {
        let py = slf.py();
        if (how == libc::SHUT_WR || how == libc::SHUT_RDWR) && slf.has_session() {
            slf.drive(slf.as_super(), py, "TLS close_notify", close_notify_step)?;
            slf.shut.store(true, Ordering::Release);
        }
        slf.as_super().shutdown(py, how)
    }

    /// unwrap() -> socket: sends close_notify (ssl's words for ending TLS
    /// and keeping the connection), and returns the plain upcase.socket;
    /// this TLSSocket is closed after. The peer's close_notify is not
    /// waited for.
    fn unwrap(slf: PyRef<'_, Self>) -> PyResult<Socket> {
        let py = slf.py();
        slf.drive(slf.as_super(), py, "TLS close_notify", close_notify_step)?;
        if let Ok(mut guard) = slf.session.lock() {
            *guard = None;
        }
        slf.as_super().take()
    }

    /// close(): sends close_notify if the handshake is done and none was
    /// sent (as far as the socket takes it at once), then closes.
    fn close(slf: PyRef<'_, Self>) {
        if let Ok(mut guard) = slf.session.lock() {
            if let (Some(conn), Ok(fd)) = (guard.as_mut(), slf.as_super().fd()) {
                if !conn.is_handshaking() {
                    conn.send_close_notify();
                    let _ = flush(conn, fd.as_fd());
                }
            }
            *guard = None;
        }
        slf.as_super().close();
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(slf: PyRef<'_, Self>, _args: &Bound<'_, PyTuple>) -> bool {
        TlsSocket::close(slf);
        false
    }

    fn __repr__(slf: PyRef<'_, Self>) -> String {
        let side = if slf.server_side() { "server" } else { "client" };
        let version = slf.version().unwrap_or("no handshake yet");
        format!("<upcase.TLSSocket fd={}, {side} side, {version}>", slf.as_super().fileno())
    }
}
