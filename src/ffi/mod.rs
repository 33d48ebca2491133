//! The C boundary: every `upcase_*` function of `include/upcase.h`.
//!
//! Conventions, the same for every function:
//! - the body runs inside `guard`: a Rust panic is caught here and becomes
//!   `UPCASE_ERR_PANIC` instead of unwinding into C (which would abort the
//!   host program);
//! - status `0` is success, failures are negative (`-errno`, the resolver
//!   range from `UPCASE_EAI_BASE`, our own from `UPCASE_ERR_BASE`), and the
//!   detailed message goes to this thread's `upcase_last_error()`;
//! - NULL pointers and out-of-range integers are rejected with `UPCASE_EINVAL`;
//! - out-parameters are written only on success (the one exception, stated
//!   where it applies: the size needed with `UPCASE_ERR_BUFFER_TOO_SMALL`);
//! - integers, never Rust enums, come in from C, and are checked.

#![allow(non_camel_case_types)] // C names: upcase_server, upcase_connection, ...

mod api;
mod client;
mod server;
mod tls;

pub use api::*;
pub use client::*;
pub use server::*;
pub use tls::*;

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use libc::c_int;

use crate::error::{Error, Result, ERR_PANIC};

thread_local! {
    /// This thread's detailed message of its last failure.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `msg` as this thread's last error.
fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    // try_with: during thread exit the slot may be gone already; then the
    // message is lost rather than the process aborted.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut s) = slot.try_borrow_mut() {
            *s = c;
        }
    });
}

/// The pointer to this thread's last error message.
fn last_error_ptr() -> *const c_char {
    LAST_ERROR.try_with(|slot| slot.try_borrow().map(|s| s.as_ptr()).unwrap_or(c"".as_ptr())).unwrap_or(c"".as_ptr())
}

/// Runs an exported function's body: a failure is recorded and returned as
/// its status; a panic is caught and reported.
fn guard<F: FnOnce() -> Result<c_int>>(name: &str, f: F) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            e.code()
        }
        Err(_) => {
            set_last_error(&format!("{name}: internal error (a Rust panic was caught at the C boundary)"));
            ERR_PANIC
        }
    }
}

/// A NUL-terminated C string argument as UTF-8, or an `EINVAL` failure.
///
/// # Safety
/// `p` must be NULL or point at a NUL-terminated string that stays valid
/// for `'a`.
unsafe fn str_arg<'a>(p: *const c_char, func: &str, name: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::invalid(func, format!("{name} is NULL")));
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|_| Error::invalid(func, format!("{name} is not valid UTF-8")))
}

/// A `(pointer, length)` argument as a slice; NULL is fine for length 0.
///
/// # Safety
/// When `len > 0`, `p` must point at `len` readable bytes valid for `'a`.
unsafe fn bytes_arg<'a>(p: *const u8, len: usize, func: &str, name: &str) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::invalid(func, format!("{name} is NULL with length {len}")));
    }
    // SAFETY: non-NULL, and the caller promises `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A writable `(pointer, capacity)` argument; NULL is fine for capacity 0.
///
/// # Safety
/// When `cap > 0`, `p` must point at `cap` writable bytes valid for `'a`,
/// not aliased by any other live reference.
unsafe fn bytes_out<'a>(p: *mut u8, cap: usize, func: &str, name: &str) -> Result<&'a mut [u8]> {
    if cap == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Error::invalid(func, format!("{name} is NULL with capacity {cap}")));
    }
    // SAFETY: non-NULL, and the caller promises `cap` writable bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, cap) })
}

/// Writes `text` and a NUL into a caller's `(buf, cap)`.
///
/// # Safety
/// `buf` must be NULL or point at `cap` writable bytes.
unsafe fn write_text(text: &str, buf: *mut c_char, cap: usize, func: &str) -> Result<c_int> {
    // SAFETY: forwarded from the caller.
    let out = unsafe { bytes_out(buf.cast::<u8>(), cap, func, "buf") }?;
    if out.is_empty() && !buf.is_null() {
        return Err(Error::invalid(func, "capacity is 0"));
    }
    if buf.is_null() {
        return Err(Error::invalid(func, "buf is NULL"));
    }
    if text.len() + 1 > out.len() {
        return Err(Error::own(
            crate::error::ERR_BUFFER_TOO_SMALL,
            func,
            format!("{} bytes needed, {} given", text.len() + 1, out.len()),
        ));
    }
    out[..text.len()].copy_from_slice(text.as_bytes());
    out[text.len()] = 0;
    Ok(0)
}
