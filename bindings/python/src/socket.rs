//! `upcase.socket`: the subset of the standard `socket.socket` API that the
//! slide programs use, every call going through the core's own wrappers
//! (`upcase::sys`), not Python's `socket` module.
//!
//! The descriptor is always non-blocking underneath; blocking behaviour
//! and timeouts are made with `poll`, with the interpreter released and
//! signals checked every 50 ms. As in Python: timeout `None` blocks,
//! `0.0` never waits (`BlockingIOError`), a positive timeout raises
//! `TimeoutError` when it runs out.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use upcase::addr::{resolve, IpPort, Purpose, SockAddr};
use upcase::error::EAI_ADDRFAMILY;
use upcase::sys;

use crate::errors::{os_error, to_py};
use crate::{blocking, data_arg, options, port_arg, timeout_arg};

/// The constants, at module level and on the class.
pub(crate) const CONSTANTS: &[(&str, i32)] = &[
    ("AF_INET", libc::AF_INET),
    ("AF_INET6", libc::AF_INET6),
    ("AF_UNSPEC", libc::AF_UNSPEC),
    ("SOCK_STREAM", libc::SOCK_STREAM),
    ("SOCK_DGRAM", libc::SOCK_DGRAM),
    ("SOL_SOCKET", libc::SOL_SOCKET),
    ("SO_REUSEADDR", libc::SO_REUSEADDR),
    ("SO_REUSEPORT", libc::SO_REUSEPORT),
    ("SO_KEEPALIVE", libc::SO_KEEPALIVE),
    ("SO_BROADCAST", libc::SO_BROADCAST),
    ("SO_RCVBUF", libc::SO_RCVBUF),
    ("SO_SNDBUF", libc::SO_SNDBUF),
    ("SO_ERROR", libc::SO_ERROR),
    ("SO_TYPE", libc::SO_TYPE),
    ("IPPROTO_TCP", libc::IPPROTO_TCP),
    ("IPPROTO_UDP", libc::IPPROTO_UDP),
    ("IPPROTO_IPV6", libc::IPPROTO_IPV6),
    ("TCP_NODELAY", libc::TCP_NODELAY),
    ("IPV6_V6ONLY", libc::IPV6_V6ONLY),
    ("SHUT_RD", libc::SHUT_RD),
    ("SHUT_WR", libc::SHUT_WR),
    ("SHUT_RDWR", libc::SHUT_RDWR),
    ("SOMAXCONN", libc::SOMAXCONN),
];

/// socket(family=AF_INET, type=SOCK_STREAM, proto=0)
///
/// A socket whose every call goes through upcase's own Rust wrappers.
#[pyclass(module = "upcase._upcase", name = "socket", subclass)]
pub(crate) struct Socket {
    fd: Mutex<Option<Arc<OwnedFd>>>,
    family: i32,
    ty: i32,
    timeout: Mutex<Option<Duration>>,
}

fn ebadf() -> PyErr {
    os_error(libc::EBADF, "Bad file descriptor")
}

fn io_err(e: std::io::Error, what: &str) -> upcase::Error {
    upcase::Error::os(what, e)
}

impl Socket {
    fn wrap(fd: OwnedFd, family: i32, ty: i32, timeout: Option<Duration>) -> Socket {
        Socket { fd: Mutex::new(Some(Arc::new(fd))), family, ty, timeout: Mutex::new(timeout) }
    }

    /// The descriptor, kept open for the length of one call even if
    /// another thread closes the socket meanwhile.
    pub(crate) fn fd(&self) -> PyResult<Arc<OwnedFd>> {
        self.fd.lock().ok().and_then(|g| g.clone()).ok_or_else(ebadf)
    }

    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout.lock().map(|t| *t).unwrap_or(None)
    }

    /// This socket's descriptor and timeout, moved into a new value; this
    /// one is closed after (as `ssl.wrap_socket` detaches the socket).
    pub(crate) fn take(&self) -> PyResult<Socket> {
        let fd = self.fd.lock().ok().and_then(|mut g| g.take()).ok_or_else(ebadf)?;
        Ok(Socket { fd: Mutex::new(Some(fd)), family: self.family, ty: self.ty, timeout: Mutex::new(self.timeout()) })
    }

    /// The socket type.
    pub(crate) fn kind(&self) -> i32 {
        self.ty
    }

    /// A Python address for this family: `(host, port)` or
    /// `(host, port, flowinfo, scope_id)`.
    fn py_addr<'py>(&self, py: Python<'py>, addr: &SockAddr) -> PyResult<Bound<'py, PyTuple>> {
        match addr.ip_port() {
            Some(IpPort::V4(ip, port)) => PyTuple::new(
                py,
                [
                    std::net::Ipv4Addr::from(ip).to_string().into_pyobject(py)?.into_any(),
                    port.into_pyobject(py)?.into_any(),
                ],
            ),
            Some(IpPort::V6(ip, port, scope)) => {
                let host = std::net::Ipv6Addr::from(ip).to_string();
                (host, port, 0u32, scope).into_pyobject(py)
            }
            None => Err(PyOSError::new_err(format!("unsupported address family {}", addr.family()))),
        }
    }

    /// A socket address from a Python address tuple, for this family.
    /// `''` means all interfaces when binding.
    fn sock_addr(&self, py: Python<'_>, address: &Bound<'_, PyAny>, purpose: Purpose) -> PyResult<SockAddr> {
        let tuple = address.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{} address must be a tuple (host, port{}), not {}",
                family_name(self.family),
                if self.family == libc::AF_INET6 { "[, flowinfo, scope_id]" } else { "" },
                address.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
        })?;
        let want = if self.family == libc::AF_INET6 { 2..=4 } else { 2..=2 };
        if !want.contains(&tuple.len()) {
            return Err(PyTypeError::new_err(format!(
                "{} address must be a tuple of {} items, not {}",
                family_name(self.family),
                if self.family == libc::AF_INET6 { "2 to 4" } else { "2" },
                tuple.len()
            )));
        }
        let host_obj = tuple.get_item(0)?;
        let host: String = if let Ok(s) = host_obj.cast::<PyString>() {
            s.to_cow()?.into_owned()
        } else if let Ok(b) = host_obj.cast::<PyBytes>() {
            String::from_utf8(b.as_bytes().to_vec()).map_err(|_| PyValueError::new_err("host is not valid UTF-8"))?
        } else {
            return Err(PyTypeError::new_err("host must be str or bytes"));
        };
        let port_any = tuple.get_item(1)?;
        let port: i64 = port_any.extract().map_err(|_| PyTypeError::new_err("port must be an int"))?;
        let port = port_arg(port)?;
        let scope: u32 = if tuple.len() == 4 {
            tuple.get_item(3)?.extract().map_err(|_| PyOverflowError::new_err("scope_id must be 0-4294967295"))?
        } else {
            0
        };
        // '' is the wildcard address, as in Python (for a datagram's
        // destination the kernel takes it to mean this host).
        if host.is_empty() && (purpose == Purpose::Bind || self.ty == libc::SOCK_DGRAM) {
            return Ok(match self.family {
                libc::AF_INET6 => SockAddr::v6([0; 16], port, 0),
                _ => SockAddr::v4([0; 4], port),
            });
        }
        let host = if host == "<broadcast>" { "255.255.255.255".to_owned() } else { host };
        let family = self.family;
        let ty = self.ty;
        let found = py.detach(|| resolve(&host, port, ty, purpose)).map_err(|e| to_py(py, e))?;
        let mut addr = found.into_iter().find(|a| a.family() == family).ok_or_else(|| {
            to_py(py, upcase::Error::resolve(format!("resolve {host} for {}", family_name(family)), EAI_ADDRFAMILY))
        })?;
        if scope != 0 {
            if let Some(IpPort::V6(ip, p, _)) = addr.ip_port() {
                addr = SockAddr::v6(ip, p, scope);
            }
        }
        Ok(addr)
    }

    /// Waits for `events` per this socket's timeout; 0 means "do not wait".
    pub(crate) fn ready(&self, py: Python<'_>, fd: &OwnedFd, events: i16, what: &str) -> PyResult<()> {
        let timeout = self.timeout();
        if timeout == Some(Duration::ZERO) {
            return Ok(());
        }
        let fd = fd.as_fd();
        let waited = blocking(py, || match options(timeout).wait_ready(fd, events) {
            Ok(_) => Ok(true),
            Err(e) if e.code() == -libc::ETIMEDOUT => Ok(false),
            Err(e) => Err(e.within(what)),
        })?;
        if waited {
            Ok(())
        } else {
            // What Python's own sockets raise when their timeout runs out.
            Err(pyo3::exceptions::PyTimeoutError::new_err("timed out"))
        }
    }

    /// Runs a non-blocking call, waiting for readiness and retrying on
    /// EAGAIN / EINTR as the timeout allows.
    fn io<T>(
        &self,
        py: Python<'_>,
        events: i16,
        what: &str,
        mut call: impl FnMut(&OwnedFd) -> std::io::Result<T>,
    ) -> PyResult<T> {
        let fd = self.fd()?;
        loop {
            match call(&fd) {
                Ok(v) => return Ok(v),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => py.check_signals()?,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    if self.timeout() == Some(Duration::ZERO) {
                        return Err(os_error(libc::EAGAIN, "Resource temporarily unavailable"));
                    }
                    self.ready(py, &fd, events, what)?;
                }
                Err(e) => return Err(to_py(py, io_err(e, what))),
            }
        }
    }
}

/// A receive buffer for "up to `n` bytes". One call never returns more
/// than a stream chunk or one datagram, so a huge `n` (`recv(2**40)`)
/// needs no huge buffer: capped at 1 MiB (a datagram is at most 64 KiB).
fn alloc(n: usize) -> PyResult<Vec<u8>> {
    Ok(vec![0u8; n.min(1 << 20)])
}

fn family_name(family: i32) -> &'static str {
    match family {
        libc::AF_INET => "AF_INET",
        libc::AF_INET6 => "AF_INET6",
        _ => "this family",
    }
}

#[pymethods]
impl Socket {
    #[new]
    #[pyo3(signature = (family = libc::AF_INET, r#type = libc::SOCK_STREAM, proto = 0))]
    fn new(py: Python<'_>, family: i32, r#type: i32, proto: i32) -> PyResult<Socket> {
        if family != libc::AF_INET && family != libc::AF_INET6 {
            return Err(os_error(
                libc::EAFNOSUPPORT,
                format!("address family {family} is not supported (AF_INET or AF_INET6)"),
            ));
        }
        if r#type != libc::SOCK_STREAM && r#type != libc::SOCK_DGRAM {
            return Err(os_error(
                libc::EINVAL,
                format!("socket type {} is not supported (SOCK_STREAM or SOCK_DGRAM)", r#type),
            ));
        }
        if proto != 0 {
            return Err(os_error(libc::EPROTONOSUPPORT, format!("protocol {proto} is not supported (0)")));
        }
        // socket(): non-blocking underneath, close-on-exec.
        let fd = sys::socket(family, r#type, true).map_err(|e| to_py(py, upcase::Error::os("socket", e)))?;
        Ok(Socket::wrap(fd, family, r#type, None))
    }

    /// The address family.
    #[getter]
    fn family(&self) -> i32 {
        self.family
    }

    /// The socket type.
    #[getter]
    fn r#type(&self) -> i32 {
        self.ty
    }

    /// The protocol (always 0: the family's default).
    #[getter]
    fn proto(&self) -> i32 {
        0
    }

    /// bind(address): give the socket its local address; '' is all interfaces.
    fn bind(&self, py: Python<'_>, address: &Bound<'_, PyAny>) -> PyResult<()> {
        let addr = self.sock_addr(py, address, Purpose::Bind)?;
        let fd = self.fd()?;
        sys::bind(fd.as_fd(), &addr).map_err(|e| to_py(py, io_err(e, &format!("bind to {addr}"))))
    }

    /// listen(backlog=128): make this a welcoming socket.
    #[pyo3(signature = (backlog = 128))]
    fn listen(&self, py: Python<'_>, backlog: i32) -> PyResult<()> {
        let fd = self.fd()?;
        sys::listen(fd.as_fd(), backlog.max(0)).map_err(|e| to_py(py, io_err(e, "listen")))
    }

    /// accept() -> (socket, address): the next connection.
    pub(crate) fn accept<'py>(&self, py: Python<'py>) -> PyResult<(Socket, Bound<'py, PyTuple>)> {
        let (fd, peer) = self.io(py, libc::POLLIN, "accept", |fd| sys::accept4(fd.as_fd(), true))?;
        let addr = self.py_addr(py, &peer)?;
        Ok((Socket::wrap(fd, self.family, self.ty, None), addr))
    }

    /// connect(address): connect to a remote socket.
    pub(crate) fn connect(&self, py: Python<'_>, address: &Bound<'_, PyAny>) -> PyResult<()> {
        let addr = self.sock_addr(py, address, Purpose::Connect)?;
        let fd = self.fd()?;
        let what = format!("connect to {addr}");
        match sys::connect(fd.as_fd(), &addr) {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS) | Some(libc::EINTR)) => {}
            Err(e) => return Err(to_py(py, io_err(e, &what))),
        }
        if self.timeout() == Some(Duration::ZERO) {
            return Err(os_error(libc::EINPROGRESS, "Operation now in progress"));
        }
        self.ready(py, &fd, libc::POLLOUT, &what)?;
        // The handshake ended: SO_ERROR says how.
        match sys::getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_ERROR) {
            Ok(0) => Ok(()),
            Ok(errno) => Err(to_py(py, upcase::Error::errno(what, errno))),
            Err(e) => Err(to_py(py, io_err(e, &what))),
        }
    }

    /// send(data) -> int: sends what the kernel takes now; returns how much.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let d = data_arg(data, false)?;
        let bytes = d.bytes();
        self.io(py, libc::POLLOUT, "send", |fd| sys::send(fd.as_fd(), bytes))
    }

    /// sendall(data): sends all of data.
    fn sendall(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let d = data_arg(data, false)?;
        let bytes = d.bytes();
        let mut sent = 0;
        while sent < bytes.len() {
            sent += self.io(py, libc::POLLOUT, "send", |fd| sys::send(fd.as_fd(), &bytes[sent..]))?;
        }
        Ok(())
    }

    /// recv(bufsize) -> bytes: up to bufsize bytes; b'' at end of stream.
    #[pyo3(signature = (bufsize, flags = 0))]
    fn recv<'py>(&self, py: Python<'py>, bufsize: i64, flags: i32) -> PyResult<Bound<'py, PyBytes>> {
        let n = usize::try_from(bufsize).map_err(|_| PyValueError::new_err("negative buffersize in recv"))?;
        if flags != 0 {
            return Err(PyValueError::new_err("recv flags are not supported (0 only)"));
        }
        let mut buf = alloc(n)?;
        let got = self.io(py, libc::POLLIN, "recv", |fd| sys::recv(fd.as_fd(), &mut buf))?;
        Ok(PyBytes::new(py, &buf[..got]))
    }

    /// sendto(data, address) -> int: one datagram to address.
    #[pyo3(signature = (data, *args))]
    fn sendto(&self, py: Python<'_>, data: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<usize> {
        // sendto(data, address) or sendto(data, flags, address), as in Python.
        let address = match args.len() {
            1 => args.get_item(0)?,
            2 => {
                let flags: i32 = args.get_item(0)?.extract()?;
                if flags != 0 {
                    return Err(PyValueError::new_err("sendto flags are not supported (0 only)"));
                }
                args.get_item(1)?
            }
            n => return Err(PyTypeError::new_err(format!("sendto() takes 2 or 3 arguments ({} given)", n + 1))),
        };
        let d = data_arg(data, false)?;
        let addr = self.sock_addr(py, &address, Purpose::Connect)?;
        let bytes = d.bytes();
        self.io(py, libc::POLLOUT, "sendto", |fd| sys::sendto(fd.as_fd(), bytes, &addr))
    }

    /// recvfrom(bufsize) -> (bytes, address): one datagram, cut to bufsize
    /// as in Python.
    #[pyo3(signature = (bufsize, flags = 0))]
    fn recvfrom<'py>(
        &self,
        py: Python<'py>,
        bufsize: i64,
        flags: i32,
    ) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyAny>)> {
        let n = usize::try_from(bufsize).map_err(|_| PyValueError::new_err("negative buffersize in recvfrom"))?;
        if flags != 0 {
            return Err(PyValueError::new_err("recvfrom flags are not supported (0 only)"));
        }
        let mut buf = alloc(n)?;
        // MSG_TRUNC only for datagrams: it would make Linux throw stream bytes away.
        let flags = if self.ty == libc::SOCK_DGRAM { libc::MSG_TRUNC } else { 0 };
        let (got, from) = self.io(py, libc::POLLIN, "recvfrom", |fd| sys::recvfrom(fd.as_fd(), &mut buf, flags))?;
        let data = PyBytes::new(py, &buf[..got.min(n)]);
        // An unconnected stream socket reports no address.
        let addr = if from.is_empty() || from.ip_port().is_none() {
            py.None().into_bound(py)
        } else {
            self.py_addr(py, &from)?.into_any()
        };
        Ok((data, addr))
    }

    /// shutdown(how): SHUT_RD, SHUT_WR or SHUT_RDWR.
    pub(crate) fn shutdown(&self, py: Python<'_>, how: i32) -> PyResult<()> {
        let fd = self.fd()?;
        sys::shutdown(fd.as_fd(), how).map_err(|e| to_py(py, io_err(e, "shutdown")))
    }

    /// close(): release the descriptor (again: nothing happens).
    pub(crate) fn close(&self) {
        if let Ok(mut g) = self.fd.lock() {
            g.take();
        }
    }

    /// settimeout(value): None blocks, 0.0 never waits, > 0 raises
    /// TimeoutError after that many seconds.
    fn settimeout(&self, value: Option<f64>) -> PyResult<()> {
        let t = timeout_arg(value, "timeout").map_err(|_| PyValueError::new_err("Timeout value out of range"))?;
        if let Ok(mut g) = self.timeout.lock() {
            *g = t;
        }
        Ok(())
    }

    /// gettimeout() -> float | None.
    fn gettimeout(&self) -> Option<f64> {
        self.timeout().map(|d| d.as_secs_f64())
    }

    /// setblocking(flag): True is settimeout(None), False is settimeout(0.0).
    fn setblocking(&self, flag: bool) -> PyResult<()> {
        self.settimeout(if flag { None } else { Some(0.0) })
    }

    /// getblocking() -> bool.
    fn getblocking(&self) -> bool {
        self.timeout() != Some(Duration::ZERO)
    }

    /// setsockopt(level, option, value): an int option.
    fn setsockopt(&self, py: Python<'_>, level: i32, option: i32, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let v: i32 = if let Ok(b) = value.extract::<bool>() {
            i32::from(b)
        } else {
            value.extract().map_err(|_| PyTypeError::new_err("setsockopt value must be an int"))?
        };
        let fd = self.fd()?;
        sys::setsockopt_int(fd.as_fd(), level, option, v).map_err(|e| to_py(py, io_err(e, "setsockopt")))
    }

    /// getsockopt(level, option) -> int.
    fn getsockopt(&self, py: Python<'_>, level: i32, option: i32) -> PyResult<i32> {
        let fd = self.fd()?;
        sys::getsockopt_int(fd.as_fd(), level, option).map_err(|e| to_py(py, io_err(e, "getsockopt")))
    }

    /// getsockname() -> address.
    fn getsockname<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let fd = self.fd()?;
        let a = sys::getsockname(fd.as_fd()).map_err(|e| to_py(py, io_err(e, "getsockname")))?;
        self.py_addr(py, &a)
    }

    /// getpeername() -> address.
    fn getpeername<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let fd = self.fd()?;
        let a = sys::getpeername(fd.as_fd()).map_err(|e| to_py(py, io_err(e, "getpeername")))?;
        self.py_addr(py, &a)
    }

    /// fileno() -> int: the descriptor, or -1 once closed.
    pub(crate) fn fileno(&self) -> i32 {
        self.fd.lock().ok().and_then(|g| g.as_ref().map(|fd| fd.as_raw_fd())).unwrap_or(-1)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "<upcase.socket fd={}, family={}, type={}>",
            self.fileno(),
            family_name(self.family),
            if self.ty == libc::SOCK_STREAM { "SOCK_STREAM" } else { "SOCK_DGRAM" }
        )
    }
}
