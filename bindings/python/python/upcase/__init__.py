"""upcase: the textbook upper-case TCP/UDP client and server, on raw libc
sockets in Rust.

    >>> import upcase
    >>> upcase.upper(b"hello")
    b'HELLO'

The slide programs run with ``from upcase import *`` in place of
``from socket import *``: ``socket`` is then upcase's own socket class,
whose every call goes through Rust, with the usual constants (also as
attributes of the class, so ``socket(socket.AF_INET, socket.SOCK_DGRAM)``
works too).

TLS, in the standard ssl module's words: ``upcase.Server(..., certfile=...,
keyfile=...)``, ``upcase.tcp_request(..., tls=True, cafile=...)``, and
``TLSContext(PROTOCOL_TLS_CLIENT).wrap_socket(sock, server_hostname=...)``
over upcase's socket. TLS failures raise ``TLSError``, an ``ssl.SSLError``.
"""

from socket import gaierror

from ._upcase import (
    AF_INET,
    CERT_NONE,
    CERT_OPTIONAL,
    CERT_REQUIRED,
    PROTOCOL_TLS_CLIENT,
    PROTOCOL_TLS_SERVER,
    AF_INET6,
    AF_UNSPEC,
    IPPROTO_IPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_V6ONLY,
    SHUT_RD,
    SHUT_RDWR,
    SHUT_WR,
    SO_BROADCAST,
    SO_ERROR,
    SO_KEEPALIVE,
    SO_RCVBUF,
    SO_REUSEADDR,
    SO_REUSEPORT,
    SO_SNDBUF,
    SO_TYPE,
    SOCK_DGRAM,
    SOCK_STREAM,
    SOL_SOCKET,
    SOMAXCONN,
    TCP_NODELAY,
    Connection,
    Server,
    TLSCertVerificationError,
    TLSContext,
    TLSError,
    TLSSocket,
    __version__,
    htonl,
    htons,
    ntohl,
    ntohs,
    socket,
    tcp_request,
    udp_request,
    upper,
)

#: The standard library's names for the exceptions raised here.
error = OSError
timeout = TimeoutError

__all__ = [
    "AF_INET",
    "CERT_NONE",
    "CERT_OPTIONAL",
    "CERT_REQUIRED",
    "PROTOCOL_TLS_CLIENT",
    "PROTOCOL_TLS_SERVER",
    "AF_INET6",
    "AF_UNSPEC",
    "IPPROTO_IPV6",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "IPV6_V6ONLY",
    "SHUT_RD",
    "SHUT_RDWR",
    "SHUT_WR",
    "SO_BROADCAST",
    "SO_ERROR",
    "SO_KEEPALIVE",
    "SO_RCVBUF",
    "SO_REUSEADDR",
    "SO_REUSEPORT",
    "SO_SNDBUF",
    "SO_TYPE",
    "SOCK_DGRAM",
    "SOCK_STREAM",
    "SOL_SOCKET",
    "SOMAXCONN",
    "TCP_NODELAY",
    "Connection",
    "Server",
    "TLSCertVerificationError",
    "TLSContext",
    "TLSError",
    "TLSSocket",
    "error",
    "gaierror",
    "htonl",
    "htons",
    "ntohl",
    "ntohs",
    "socket",
    "tcp_request",
    "timeout",
    "udp_request",
    "upper",
]
