//! Core errors as the standard Python exceptions.
//!
//! `OSError(errno, message)` is raised through the `OSError` type itself,
//! so CPython picks the subclass (`ConnectionRefusedError`,
//! `ConnectionResetError`, `TimeoutError`, ...) with `.errno` set. Resolver
//! failures raise the standard library's own `socket.gaierror`. TLS
//! failures raise `upcase.TLSError`, a subclass of the standard `ssl.SSLError`
//! (so `except ssl.SSLError` catches them); a certificate the client
//! refuses raises `upcase.TLSCertVerificationError`, which is also an
//! `ssl.SSLCertVerificationError`.

use pyo3::exceptions::{PyConnectionError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use upcase::error::{ERR_BUSY, ERR_PANIC, ERR_PROTOCOL, ERR_SHORT_REPLY, ERR_STOPPED, ERR_TLS};
use upcase::Error;

/// The error a signal check turns into inside the core; the Python
/// exception itself is kept aside and raised instead.
pub(crate) fn interrupted() -> Error {
    Error::errno("interrupted by a signal", libc::EINTR)
}

/// The Python exception for a core error.
pub(crate) fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let msg = e.to_string();
    if let Some(eai) = e.gai_error() {
        return match py.import("socket").and_then(|m| m.getattr("gaierror")) {
            // As the standard library raises it: the resolver's own words.
            Ok(cls) => match cls.call1((eai, e.detail().to_owned())) {
                Ok(inst) => PyErr::from_value(inst),
                Err(err) => err,
            },
            Err(err) => err,
        };
    }
    if e.is_invalid_argument() {
        return PyValueError::new_err(msg);
    }
    match e.code() {
        ERR_TLS => {
            // rustls's words for a certificate it refused.
            let verify = e.detail().contains("invalid peer certificate");
            return tls_error(py, msg, if verify { Tls::Verify } else { Tls::Other });
        }
        ERR_SHORT_REPLY | ERR_PROTOCOL => return PyConnectionError::new_err(msg),
        ERR_STOPPED | ERR_BUSY | ERR_PANIC => return PyRuntimeError::new_err(msg),
        _ => {}
    }
    match e.raw_os_error() {
        // A receive timeout arrives from the kernel as EAGAIN; either way
        // it is a TimeoutError for the caller.
        Some(libc::EAGAIN) | Some(libc::ETIMEDOUT) => PyOSError::new_err((libc::ETIMEDOUT, msg)),
        Some(errno) => PyOSError::new_err((errno, msg)),
        None => PyOSError::new_err(msg),
    }
}

/// `OSError(errno, message)` for a raw errno.
pub(crate) fn os_error(errno: i32, msg: impl Into<String>) -> PyErr {
    PyOSError::new_err((errno, msg.into()))
}

/// ssl's `SSL_ERROR_SSL` and `SSL_ERROR_EOF`: the `errno` of its exceptions.
const SSL_ERROR_SSL: i32 = 1;
const SSL_ERROR_EOF: i32 = 8;

static TLS_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TLS_VERIFY_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Which TLS exception.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tls {
    /// The peer's certificate was refused.
    Verify,
    /// The peer closed the connection without close_notify.
    Eof,
    Other,
}

/// Makes `TLSError` (base `ssl.SSLError`) and `TLSCertVerificationError`
/// (bases `TLSError` and `ssl.SSLCertVerificationError`) and adds them to
/// the module.
pub(crate) fn add_tls_errors(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let ssl = py.import("ssl")?;
    let base = ssl.getattr("SSLError")?.cast_into::<PyType>()?;
    let doc = c"A TLS failure: the handshake, a record, or a certificate. An ssl.SSLError.";
    let tls = PyErr::new_type(py, c"upcase.TLSError", Some(doc), Some(&base), None)?;
    let dict = PyDict::new(py);
    dict.set_item("__module__", "upcase")?;
    dict.set_item(
        "__doc__",
        "A peer certificate refused (wrong CA, wrong name, expired). An ssl.SSLCertVerificationError.",
    )?;
    let bases = PyTuple::new(py, [tls.bind(py).clone().into_any(), ssl.getattr("SSLCertVerificationError")?])?;
    let verify = py.get_type::<PyType>().call1(("TLSCertVerificationError", bases, dict))?.cast_into::<PyType>()?;
    m.add("TLSError", tls.bind(py))?;
    m.add("TLSCertVerificationError", &verify)?;
    let _ = TLS_ERROR.set(py, tls);
    let _ = TLS_VERIFY_ERROR.set(py, verify.unbind());
    Ok(())
}

/// A TLS exception with the library's message, `errno` as ssl's own have it.
pub(crate) fn tls_error(py: Python<'_>, msg: String, kind: Tls) -> PyErr {
    let cell = if kind == Tls::Verify { &TLS_VERIFY_ERROR } else { &TLS_ERROR };
    let Some(cls) = cell.get(py) else {
        return PyOSError::new_err(msg);
    };
    let errno = if kind == Tls::Eof { SSL_ERROR_EOF } else { SSL_ERROR_SSL };
    let made = cls.bind(py).call1((errno, msg.clone())).and_then(|inst| {
        if kind == Tls::Verify {
            // ssl.SSLCertVerificationError's reason (its verify_code is
            // OpenSSL's number, which rustls has none of).
            inst.setattr("verify_message", msg)?;
        }
        Ok(inst)
    });
    match made {
        Ok(inst) => PyErr::from_value(inst),
        Err(err) => err,
    }
}
