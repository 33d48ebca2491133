//! `upcase._upcase`: the native part of `import upcase`.
//!
//! Every function converts its arguments to Rust values first, then
//! releases the interpreter (`Python::detach`) around the blocking call, and
//! comes back every 50 ms to run `check_signals`, so Ctrl-C raises
//! `KeyboardInterrupt` promptly and other Python threads keep running.

mod errors;
mod server;
mod socket;
mod tls;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyString};

use errors::{interrupted, to_py};
use upcase::client::{Options, ShutdownHandle};

/// Data as the caller gave it: remembered so the reply has the same type.
pub(crate) enum Data {
    Bytes(Vec<u8>),
    Text(String),
}

impl Data {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Data::Bytes(b) => b,
            Data::Text(s) => s.as_bytes(),
        }
    }

    /// The reply, as `bytes` or (for a `str` request) `str`.
    pub(crate) fn reply<'py>(&self, py: Python<'py>, reply: Vec<u8>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Data::Bytes(_) => Ok(PyBytes::new(py, &reply).into_any()),
            // Only ASCII bytes changed, so valid UTF-8 stays valid; a
            // misbehaving server could still send something else.
            Data::Text(_) => match String::from_utf8(reply) {
                Ok(s) => Ok(PyString::new(py, &s).into_any()),
                Err(e) => Err(PyValueError::new_err(format!("the reply is not valid UTF-8: {e}"))),
            },
        }
    }
}

/// `str`, `bytes`, `bytearray` or `memoryview` (or another buffer through
/// `memoryview`), else `TypeError`.
pub(crate) fn data_arg(obj: &Bound<'_, PyAny>, text_ok: bool) -> PyResult<Data> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Data::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        if text_ok {
            return Ok(Data::Text(s.to_cow()?.into_owned()));
        }
    } else if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Data::Bytes(b.to_vec()));
    } else if let Ok(m) = PyMemoryView::from(obj) {
        // memoryview itself, or any other object with the buffer protocol.
        let b = m.call_method0("tobytes")?;
        return Ok(Data::Bytes(b.cast::<PyBytes>()?.as_bytes().to_vec()));
    }
    let want = if text_ok { "a bytes-like object or str" } else { "a bytes-like object" };
    Err(PyTypeError::new_err(format!("{want} is required, not '{}'", obj.get_type().name()?)))
}

/// A port number: 0-65535, else `OverflowError` (as the standard library).
pub(crate) fn port_arg(port: i64) -> PyResult<u16> {
    u16::try_from(port).map_err(|_| PyOverflowError::new_err(format!("port must be 0-65535, not {port}")))
}

/// A timeout in seconds: `None` (wait for ever) or a finite number >= 0.
pub(crate) fn timeout_arg(timeout: Option<f64>, name: &str) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => Duration::try_from_secs_f64(t)
            .map(Some)
            .map_err(|_| PyValueError::new_err(format!("{name} is out of range: {t}"))),
        Some(t) => Err(PyValueError::new_err(format!("{name} must be a finite number >= 0 or None, not {t}"))),
    }
}

thread_local! {
    /// The exception a signal handler raised during this thread's last
    /// interrupt check, kept for `blocking` to raise.
    static SIGNAL: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// The interrupt check of every blocking call: runs Python's signal
/// handlers (Ctrl-C); the exception one raises is kept in `SIGNAL`.
fn check_signals() -> upcase::Result<()> {
    Python::attach(|py| py.check_signals()).map_err(|e| {
        SIGNAL.with(|s| *s.borrow_mut() = Some(e));
        interrupted()
    })
}

/// Client options: `timeout` for each wait, and signals checked while waiting.
pub(crate) fn options(timeout: Option<Duration>) -> Options {
    Options::new().timeout(timeout).interrupt(check_signals)
}

/// Runs `f` with the interpreter released. The exception of a signal
/// caught by `f`'s interrupt check wins over `f`'s error.
pub(crate) fn blocking<T: Send>(py: Python<'_>, f: impl FnOnce() -> upcase::Result<T> + Send) -> PyResult<T> {
    SIGNAL.with(|s| s.borrow_mut().take());
    // `detach` runs `f` on this thread, so `f`'s checks fill this thread's slot.
    let result = py.detach(f);
    if let Some(e) = SIGNAL.with(|s| s.borrow_mut().take()) {
        return Err(e);
    }
    result.map_err(|e| to_py(py, e))
}

/// upper(data) -> bytes
///
/// ASCII a-z become A-Z; every other byte is left as it is. Bytes-like in,
/// bytes out; str in, str out.
#[pyfunction]
fn upper<'py>(py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let d = data_arg(data, true)?;
    let out = upcase::upper::upper(d.bytes());
    d.reply(py, out)
}

/// tcp_request(host, port, data, *, timeout=5.0, tls=False, cafile=None, server_hostname=None, certfile=None, keyfile=None)
///
/// Connects, sends all of data, half-closes, reads the reply to the end.
/// timeout bounds each wait (None: for ever). tls=True: inside TLS, the
/// server verified against the CAs of cafile (else the system's), under
/// the name server_hostname (else host); certfile and keyfile are a client
/// certificate for a server that asks for one.
#[pyfunction]
#[pyo3(signature = (host, port, data, *, timeout = Some(5.0), tls = false, cafile = None, server_hostname = None,
                    certfile = None, keyfile = None),
       text_signature = "(host, port, data, *, timeout=5.0, tls=False, cafile=None, server_hostname=None, certfile=None, keyfile=None)")]
#[allow(clippy::too_many_arguments)]
fn tcp_request<'py>(
    py: Python<'py>,
    host: &str,
    port: i64,
    data: &Bound<'py, PyAny>,
    timeout: Option<f64>,
    tls: bool,
    cafile: Option<PathBuf>,
    server_hostname: Option<String>,
    certfile: Option<PathBuf>,
    keyfile: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    let port = port_arg(port)?;
    let d = data_arg(data, true)?;
    let timeout = timeout_arg(timeout, "timeout")?;
    let tls = tls::client_arg(py, tls, cafile, server_hostname, certfile, keyfile)?;
    let bytes = d.bytes();
    let reply = blocking(py, || options(timeout).tls(tls).tcp_request(host, port, bytes))?;
    d.reply(py, reply)
}

/// udp_request(host, port, data, *, timeout=1.0, retries=3)
///
/// Sends data as one datagram and waits up to timeout for the reply,
/// sending again up to retries more times.
#[pyfunction]
#[pyo3(signature = (host, port, data, *, timeout = 1.0, retries = 3))]
fn udp_request<'py>(
    py: Python<'py>,
    host: &str,
    port: i64,
    data: &Bound<'py, PyAny>,
    timeout: f64,
    retries: i64,
) -> PyResult<Bound<'py, PyAny>> {
    let port = port_arg(port)?;
    let d = data_arg(data, true)?;
    let timeout = match timeout_arg(Some(timeout), "timeout")? {
        Some(t) if !t.is_zero() => t,
        _ => return Err(PyValueError::new_err("timeout must be positive")),
    };
    let retries = u32::try_from(retries)
        .map_err(|_| PyValueError::new_err(format!("retries must be 0 or more, not {retries}")))?;
    let bytes = d.bytes();
    let reply = blocking(py, || options(Some(timeout)).retries(retries).udp_request(host, port, bytes))?;
    d.reply(py, reply.data)
}

/// Connection(host, port, *, timeout=5.0, tls=False, cafile=None, server_hostname=None, certfile=None, keyfile=None)
///
/// A kept-open TCP connection: each request(data) returns exactly as many
/// bytes (or characters) as it sent. The TLS keywords are tcp_request's.
#[pyclass(module = "upcase._upcase")]
struct Connection {
    /// Held (without the interpreter) for the length of a request.
    inner: Mutex<Option<upcase::client::Connection>>,
    /// Lets close() interrupt a request in progress.
    shutdown: ShutdownHandle,
    closed: std::sync::atomic::AtomicBool,
    peer: String,
}

#[pymethods]
impl Connection {
    #[new]
    #[pyo3(signature = (host, port, *, timeout = Some(5.0), tls = false, cafile = None, server_hostname = None,
                        certfile = None, keyfile = None),
           text_signature = "(host, port, *, timeout=5.0, tls=False, cafile=None, server_hostname=None, certfile=None, keyfile=None)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: &str,
        port: i64,
        timeout: Option<f64>,
        tls: bool,
        cafile: Option<PathBuf>,
        server_hostname: Option<String>,
        certfile: Option<PathBuf>,
        keyfile: Option<PathBuf>,
    ) -> PyResult<Connection> {
        let port = port_arg(port)?;
        let timeout = timeout_arg(timeout, "timeout")?;
        let tls = tls::client_arg(py, tls, cafile, server_hostname, certfile, keyfile)?;
        let conn = blocking(py, || options(timeout).tls(tls).connect(host, port))?;
        let peer = conn.peer().to_string();
        let shutdown = conn.shutdown_handle();
        Ok(Connection { inner: Mutex::new(Some(conn)), shutdown, closed: false.into(), peer })
    }

    /// request(data): sends data, returns the reply of the same length.
    fn request<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let d = data_arg(data, true)?;
        let bytes = d.bytes();
        let reply = blocking(py, || {
            let mut guard =
                self.inner.lock().map_err(|_| upcase::Error::invalid("request", "connection lock poisoned"))?;
            let conn =
                guard.as_mut().ok_or_else(|| upcase::Error::errno("request on a closed connection", libc::EBADF))?;
            if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                return Err(upcase::Error::errno("request on a closed connection", libc::EBADF));
            }
            conn.request(bytes)
        })?;
        d.reply(py, reply)
    }

    /// close(): closes the connection (again: nothing happens). A request
    /// in progress on another thread is cut short (it raises).
    fn close(&self, py: Python<'_>) {
        if self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        match self.inner.try_lock() {
            Ok(mut guard) => {
                if let Some(conn) = guard.take() {
                    conn.close();
                }
            }
            Err(_) => {
                // A request holds the connection: wake it by shutting the
                // socket down, then wait for it to end.
                self.shutdown.shutdown();
                py.detach(|| {
                    if let Ok(mut guard) = self.inner.lock() {
                        guard.take();
                    }
                });
            }
        }
    }

    /// True once closed.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed" } else { "open" };
        format!("<upcase.Connection to {} ({state})>", self.peer)
    }
}

/// htons(x): host to network byte order, 16 bits (our own code).
#[pyfunction]
fn htons(x: i64) -> PyResult<u16> {
    Ok(upcase::endian::hton16(u16_arg(x, "htons")?))
}

/// ntohs(x): network to host byte order, 16 bits.
#[pyfunction]
fn ntohs(x: i64) -> PyResult<u16> {
    Ok(upcase::endian::ntoh16(u16_arg(x, "ntohs")?))
}

/// htonl(x): host to network byte order, 32 bits.
#[pyfunction]
fn htonl(x: i64) -> PyResult<u32> {
    Ok(upcase::endian::hton32(u32_arg(x, "htonl")?))
}

/// ntohl(x): network to host byte order, 32 bits.
#[pyfunction]
fn ntohl(x: i64) -> PyResult<u32> {
    Ok(upcase::endian::ntoh32(u32_arg(x, "ntohl")?))
}

fn u16_arg(x: i64, f: &str) -> PyResult<u16> {
    u16::try_from(x).map_err(|_| {
        PyOverflowError::new_err(format!("{f}: Python int too large to convert to 16-bit unsigned integer"))
    })
}

fn u32_arg(x: i64, f: &str) -> PyResult<u32> {
    u32::try_from(x).map_err(|_| PyOverflowError::new_err(format!("{f}: int larger than 32 bits")))
}

#[pymodule]
fn _upcase(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(upper, m)?)?;
    m.add_function(wrap_pyfunction!(tcp_request, m)?)?;
    m.add_function(wrap_pyfunction!(udp_request, m)?)?;
    m.add_function(wrap_pyfunction!(htons, m)?)?;
    m.add_function(wrap_pyfunction!(ntohs, m)?)?;
    m.add_function(wrap_pyfunction!(htonl, m)?)?;
    m.add_function(wrap_pyfunction!(ntohl, m)?)?;
    m.add_class::<Connection>()?;
    m.add_class::<server::Server>()?;
    m.add_class::<socket::Socket>()?;
    m.add_class::<tls::TlsContext>()?;
    m.add_class::<tls::TlsSocket>()?;
    errors::add_tls_errors(m)?;
    for (name, value) in tls::CONSTANTS {
        m.add(*name, *value)?;
    }
    // The constants at module level and on the socket class, so that the
    // slide's `socket(socket.AF_INET, socket.SOCK_DGRAM)` works after
    // `from upcase import *`.
    let class = m.getattr("socket")?;
    for (name, value) in socket::CONSTANTS {
        m.add(*name, *value)?;
        class.setattr(*name, *value)?;
    }
    m.add("__version__", upcase::VERSION)?;
    Ok(())
}
