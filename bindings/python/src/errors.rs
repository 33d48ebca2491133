//! Core errors as the standard Python exceptions.
//!
//! `OSError(errno, message)` is raised through the `OSError` type itself,
//! so CPython picks the subclass (`ConnectionRefusedError`,
//! `ConnectionResetError`, `TimeoutError`, ...) with `.errno` set. Resolver
//! failures raise the standard library's own `socket.gaierror`.

use pyo3::exceptions::{PyConnectionError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use upcase::error::{ERR_BUSY, ERR_PANIC, ERR_PROTOCOL, ERR_SHORT_REPLY, ERR_STOPPED};
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
