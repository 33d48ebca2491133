//! Errors and status codes.
//!
//! Every failure carries a status code and a detailed message. The code is
//! what crosses the C boundary: `0` is success; an OS failure is its `errno`
//! negated (`-ECONNREFUSED`); a resolver failure has a range of its own
//! (`EAI_BASE + EAI_*`, since glibc's `EAI_NONAME` is `-2`, the same
//! number as `-ENOENT`); failures of our own sit in the `-4000` range. One
//! table gives each code its name and a static message. The detailed message
//! says what was being done, to which address, and the OS's own words:
//! `connect to 127.0.0.1:12000: Connection refused`.

use std::ffi::CStr;
use std::fmt;
use std::io;

use libc::c_int;

use crate::addr::gai_message;

/// Base of the resolver range: status = `EAI_BASE + EAI_*`, and glibc's
/// `EAI_*` codes are small negative numbers.
pub const EAI_BASE: c_int = -3000;
/// Base of our own codes.
pub const ERR_BASE: c_int = -4000;
/// The caller's buffer is too small for the reply; the size needed is reported.
pub const ERR_BUFFER_TOO_SMALL: c_int = ERR_BASE - 1;
/// The peer closed the connection before the whole reply arrived.
pub const ERR_SHORT_REPLY: c_int = ERR_BASE - 2;
/// The server has been stopped: it cannot run again.
pub const ERR_STOPPED: c_int = ERR_BASE - 3;
/// The server is already running on another thread.
pub const ERR_BUSY: c_int = ERR_BASE - 4;
/// A bug inside the library was caught at the C boundary (a Rust panic).
pub const ERR_PANIC: c_int = ERR_BASE - 5;
/// The peer broke the protocol: a reply longer than the request.
pub const ERR_PROTOCOL: c_int = ERR_BASE - 6;
/// TLS failed: a certificate not trusted or not for this name, a
/// handshake refused, a peer that does not speak TLS, a bad record.
pub const ERR_TLS: c_int = ERR_BASE - 7;

/// A failure: a status code and the detailed message.
#[derive(Clone)]
pub struct Error {
    code: c_int,
    context: String,
    detail: String,
    /// A bad argument found by our own checks (not an OS `EINVAL`).
    argument: bool,
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An OS failure while doing `context` (e.g. `connect to 127.0.0.1:80`).
    pub fn os(context: impl Into<String>, err: io::Error) -> Error {
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        // The OS's words alone: "Connection refused", not "... (os error 111)".
        let text = err.to_string();
        let detail = match text.rfind(" (os error ") {
            Some(at) if err.raw_os_error().is_some() => text[..at].to_owned(),
            _ => text,
        };
        Error { code: -errno, context: context.into(), detail, argument: false }
    }

    /// An OS failure from a bare `errno`.
    pub fn errno(context: impl Into<String>, errno: c_int) -> Error {
        Error::os(context, io::Error::from_raw_os_error(errno))
    }

    /// A resolver failure (`EAI_*` code), in the resolver's own words.
    pub fn resolve(context: impl Into<String>, eai: c_int) -> Error {
        let mut detail = gai_message(eai);
        if eai == libc::EAI_SYSTEM {
            detail = format!("{detail}: {}", io::Error::last_os_error());
        }
        Error { code: EAI_BASE + eai, context: context.into(), detail, argument: false }
    }

    /// A bad argument (`-EINVAL`).
    pub fn invalid(context: impl Into<String>, detail: impl Into<String>) -> Error {
        Error { code: -libc::EINVAL, context: context.into(), detail: detail.into(), argument: true }
    }

    /// A failure of our own (one of the `ERR_*` codes).
    pub(crate) fn own(code: c_int, context: impl Into<String>, detail: impl Into<String>) -> Error {
        Error { code, context: context.into(), detail: detail.into(), argument: false }
    }

    /// A wait that ran out of time (`-ETIMEDOUT`).
    pub(crate) fn timed_out(context: impl Into<String>, detail: impl Into<String>) -> Error {
        Error { code: -libc::ETIMEDOUT, context: context.into(), detail: detail.into(), argument: false }
    }

    /// The status code (negative).
    pub fn code(&self) -> c_int {
        self.code
    }

    /// The `errno` for an OS failure, `None` otherwise.
    pub fn raw_os_error(&self) -> Option<c_int> {
        if (-2999..=-1).contains(&self.code) {
            Some(-self.code)
        } else {
            None
        }
    }

    /// True for a bad argument found by the library's own checks (a port 0
    /// destination, an empty host, a bad limit), as opposed to an `EINVAL`
    /// from the OS.
    pub fn is_invalid_argument(&self) -> bool {
        self.argument
    }

    /// The `EAI_*` code for a resolver failure, `None` otherwise.
    pub fn gai_error(&self) -> Option<c_int> {
        if self.code <= EAI_BASE && self.code > EAI_BASE - 100 {
            Some(self.code - EAI_BASE)
        } else {
            None
        }
    }

    /// What was being done.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The words of the failure itself (the OS's or the resolver's).
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Adds what was being done, in front of an existing context.
    pub fn within(mut self, outer: impl fmt::Display) -> Error {
        self.context = if self.context.is_empty() { outer.to_string() } else { format!("{outer}: {}", self.context) };
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.context.is_empty() {
            f.write_str(&self.detail)
        } else {
            write!(f, "{}: {}", self.context, self.detail)
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({}, {:?})", self.code, self.to_string())
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    /// An OS failure becomes `io::Error::from_raw_os_error`, so that
    /// `raw_os_error()` and `kind()` are the OS's; that type has no room for
    /// the context, which is dropped. Any other failure keeps the whole
    /// [`Error`] as its inner error.
    fn from(e: Error) -> io::Error {
        if e.argument {
            return io::Error::new(io::ErrorKind::InvalidInput, e);
        }
        match e.raw_os_error() {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::other(e),
        }
    }
}

/// One row of the table: code, name, static message.
struct Entry(c_int, &'static CStr, &'static CStr);

macro_rules! errno_rows {
    ($( $name:ident => $msg:literal ),* $(,)?) => {
        &[ $( Entry(-libc::$name, c_str(concat!("UPCASE_", stringify!($name), "\0")), c_str(concat!($msg, "\0"))) ),* ]
    };
}

/// A `&'static CStr` from a literal that ends in one NUL byte.
const fn c_str(s: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("table string must end in one NUL"),
    }
}

static ERRNO_TABLE: &[Entry] = errno_rows![
    EPERM => "operation not permitted",
    ENOENT => "no such file or directory",
    EINTR => "interrupted system call",
    EIO => "i/o error",
    EBADF => "bad file descriptor",
    EAGAIN => "resource temporarily unavailable",
    ENOMEM => "not enough memory",
    EACCES => "permission denied",
    EFAULT => "bad address in system call argument",
    EBUSY => "resource busy",
    EEXIST => "file exists",
    EINVAL => "invalid argument",
    ENFILE => "file table overflow",
    EMFILE => "too many open files",
    ENOSPC => "no space left on device",
    EPIPE => "broken pipe",
    ERANGE => "result too large",
    ENOSYS => "function not implemented",
    ENOTSOCK => "socket operation on non-socket",
    EDESTADDRREQ => "destination address required",
    EMSGSIZE => "message too long",
    EPROTOTYPE => "protocol wrong type for socket",
    ENOPROTOOPT => "protocol not available",
    EPROTONOSUPPORT => "protocol not supported",
    EOPNOTSUPP => "operation not supported on socket",
    EAFNOSUPPORT => "address family not supported",
    EADDRINUSE => "address already in use",
    EADDRNOTAVAIL => "address not available",
    ENETDOWN => "network is down",
    ENETUNREACH => "network is unreachable",
    ECONNABORTED => "connection aborted",
    ECONNRESET => "connection reset by peer",
    ENOBUFS => "no buffer space available",
    EISCONN => "socket is already connected",
    ENOTCONN => "socket is not connected",
    ETIMEDOUT => "connection timed out",
    ECONNREFUSED => "connection refused",
    EHOSTUNREACH => "host is unreachable",
    EALREADY => "connection already in progress",
    EINPROGRESS => "operation in progress",
    ECANCELED => "operation canceled",
    EHOSTDOWN => "host is down",
    ENETRESET => "connection reset by network",
    ESHUTDOWN => "cannot send after socket shutdown",
    EPROTO => "protocol error",
    ESOCKTNOSUPPORT => "socket type not supported",
    EPFNOSUPPORT => "protocol family not supported",
    ETOOMANYREFS => "too many references",
    ENONET => "machine is not on the network",
    ENODEV => "no such device",
    ENXIO => "no such device or address",
    EOVERFLOW => "value too large for its type",
    ENOTTY => "inappropriate ioctl for device",
    ENAMETOOLONG => "file name too long",
    ELOOP => "too many levels of symbolic links",
    ENOTDIR => "not a directory",
    EROFS => "read-only file system",
    ENOTEMPTY => "directory not empty",
    ESRCH => "no such process",
];

macro_rules! eai_rows {
    ($( $name:ident => $msg:literal ),* $(,)?) => {
        &[ $( Entry(EAI_BASE + libc::$name, c_str(concat!("UPCASE_", stringify!($name), "\0")), c_str(concat!($msg, "\0"))) ),* ]
    };
}

static EAI_TABLE: &[Entry] = eai_rows![
    EAI_BADFLAGS => "invalid value for resolver flags",
    EAI_NONAME => "name or service not known",
    EAI_AGAIN => "temporary failure in name resolution",
    EAI_FAIL => "non-recoverable failure in name resolution",
    EAI_NODATA => "no address associated with host name",
    EAI_FAMILY => "address family not supported by the resolver",
    EAI_SOCKTYPE => "socket type not supported by the resolver",
    EAI_SERVICE => "service not supported for socket type",
    EAI_MEMORY => "memory allocation failure in the resolver",
    EAI_SYSTEM => "system error in the resolver",
    EAI_OVERFLOW => "resolver argument buffer overflow",
];

/// glibc's `EAI_ADDRFAMILY` (the host has no address of the family asked
/// for), which the `libc` crate does not name.
pub const EAI_ADDRFAMILY: c_int = -9;

static EAI_GLIBC: &[Entry] =
    &[Entry(EAI_BASE + EAI_ADDRFAMILY, c"UPCASE_EAI_ADDRFAMILY", c"host has no address in the family asked for")];

static OWN_TABLE: &[Entry] = &[
    Entry(0, c"UPCASE_OK", c"success"),
    Entry(ERR_BUFFER_TOO_SMALL, c"UPCASE_ERR_BUFFER_TOO_SMALL", c"buffer too small for the reply"),
    Entry(ERR_SHORT_REPLY, c"UPCASE_ERR_SHORT_REPLY", c"peer closed before the whole reply arrived"),
    Entry(ERR_STOPPED, c"UPCASE_ERR_STOPPED", c"server has been stopped"),
    Entry(ERR_BUSY, c"UPCASE_ERR_BUSY", c"server is already running"),
    Entry(ERR_PANIC, c"UPCASE_ERR_PANIC", c"internal error (caught panic)"),
    Entry(ERR_PROTOCOL, c"UPCASE_ERR_PROTOCOL", c"peer broke the protocol"),
    Entry(ERR_TLS, c"UPCASE_ERR_TLS", c"TLS failed"),
];

fn lookup(code: c_int) -> Option<&'static Entry> {
    OWN_TABLE.iter().chain(ERRNO_TABLE).chain(EAI_TABLE).chain(EAI_GLIBC).find(|e| e.0 == code)
}

/// The static message for a status code; `"unknown error"` for a code
/// outside the table.
pub fn strerror(code: c_int) -> &'static CStr {
    lookup(code).map_or(c"unknown error", |e| e.2)
}

/// The static name of a status code (`"UPCASE_ECONNREFUSED"`), or
/// `"UPCASE_UNKNOWN"`.
pub fn errname(code: c_int) -> &'static CStr {
    lookup(code).map_or(c"UPCASE_UNKNOWN", |e| e.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_negative_and_named() {
        assert_eq!(strerror(0).to_str(), Ok("success"));
        assert_eq!(errname(-libc::ECONNREFUSED).to_str(), Ok("UPCASE_ECONNREFUSED"));
        assert_eq!(strerror(-libc::ECONNREFUSED).to_str(), Ok("connection refused"));
        assert_eq!(errname(EAI_BASE + libc::EAI_NONAME).to_str(), Ok("UPCASE_EAI_NONAME"));
        assert_eq!(strerror(12345).to_str(), Ok("unknown error"));
        for e in OWN_TABLE.iter().chain(ERRNO_TABLE).chain(EAI_TABLE).chain(EAI_GLIBC) {
            assert!(e.0 <= 0);
            assert_eq!(lookup(e.0).map(|x| x.1), Some(e.1), "codes are unique: {:?}", e.1);
        }
    }

    /// Every error that the calls made here (socket(2), bind(2), listen(2),
    /// accept(2), connect(2), send(2), recv(2), shutdown(2), setsockopt(2),
    /// getsockname(2), epoll_*(2), close(2)) document for network sockets
    /// (not those of file systems or STREAMS, such as EDQUOT or ENOSR), and
    /// every resolver code, has a name and a message of its own.
    #[test]
    fn every_error_of_the_socket_calls_is_named() {
        let errnos = [
            libc::EACCES,
            libc::EADDRINUSE,
            libc::EADDRNOTAVAIL,
            libc::EAFNOSUPPORT,
            libc::EAGAIN,
            libc::EALREADY,
            libc::EBADF,
            libc::ECONNABORTED,
            libc::ECONNREFUSED,
            libc::ECONNRESET,
            libc::EDESTADDRREQ,
            libc::EEXIST,
            libc::EFAULT,
            libc::EHOSTDOWN,
            libc::EHOSTUNREACH,
            libc::EINPROGRESS,
            libc::EINTR,
            libc::EINVAL,
            libc::EIO,
            libc::EISCONN,
            libc::ELOOP,
            libc::EMFILE,
            libc::EMSGSIZE,
            libc::ENAMETOOLONG,
            libc::ENETDOWN,
            libc::ENETRESET,
            libc::ENETUNREACH,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOENT,
            libc::ENOMEM,
            libc::ENONET,
            libc::ENOPROTOOPT,
            libc::ENOSPC,
            libc::ENOTCONN,
            libc::ENOTDIR,
            libc::ENOTSOCK,
            libc::EOPNOTSUPP,
            libc::EPERM,
            libc::EPIPE,
            libc::EPROTO,
            libc::EPROTONOSUPPORT,
            libc::EPROTOTYPE,
            libc::EROFS,
            libc::ESHUTDOWN,
            libc::ESOCKTNOSUPPORT,
            libc::ETIMEDOUT,
        ];
        let eai = [
            libc::EAI_AGAIN,
            libc::EAI_BADFLAGS,
            libc::EAI_FAIL,
            libc::EAI_FAMILY,
            libc::EAI_MEMORY,
            libc::EAI_NODATA,
            libc::EAI_NONAME,
            libc::EAI_OVERFLOW,
            libc::EAI_SERVICE,
            libc::EAI_SOCKTYPE,
            libc::EAI_SYSTEM,
            EAI_ADDRFAMILY,
        ];
        let codes = errnos.iter().map(|e| -e).chain(eai.iter().map(|e| EAI_BASE + e));
        for code in codes {
            assert_ne!(errname(code).to_str(), Ok("UPCASE_UNKNOWN"), "code {code} has no name");
            assert_ne!(strerror(code).to_str(), Ok("unknown error"), "code {code} has no message");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // gai_strerror is a foreign function: Miri cannot call it
    fn resolver_range_does_not_collide_with_errno() {
        assert_ne!(EAI_BASE + libc::EAI_NONAME, -libc::ENOENT);
        let e = Error::resolve("resolve x:1", libc::EAI_NONAME);
        assert_eq!(e.gai_error(), Some(libc::EAI_NONAME));
        assert_eq!(e.raw_os_error(), None);
        let o = Error::errno("connect to 127.0.0.1:1", libc::ECONNREFUSED);
        assert_eq!(o.raw_os_error(), Some(libc::ECONNREFUSED));
        assert_eq!(o.gai_error(), None);
        assert_eq!(o.to_string(), "connect to 127.0.0.1:1: Connection refused");
        let own = Error::own(ERR_SHORT_REPLY, "x", "y");
        assert_eq!(own.raw_os_error(), None);
        assert_eq!(own.gai_error(), None);
    }

    #[test]
    fn io_error_keeps_the_os_error_code() {
        let io = io::Error::from(Error::errno("connect to 127.0.0.1:1", libc::ECONNREFUSED));
        assert_eq!(io.raw_os_error(), Some(libc::ECONNREFUSED));
        assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
        let io = io::Error::from(Error::timed_out("recv", "timed out after 1 s"));
        assert_eq!(io.raw_os_error(), Some(libc::ETIMEDOUT));
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn io_error_keeps_our_own_failures_whole() {
        let io = io::Error::from(Error::own(ERR_SHORT_REPLY, "exchange with x", "closed early"));
        assert_eq!(io.raw_os_error(), None);
        let inner = io.get_ref().and_then(|e| e.downcast_ref::<Error>()).expect("the Error inside");
        assert_eq!(inner.code(), ERR_SHORT_REPLY);
        let io = io::Error::from(Error::invalid("connect to x:0", "port 0 is not a valid destination"));
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(io.to_string(), "connect to x:0: port 0 is not a valid destination");
    }
}
