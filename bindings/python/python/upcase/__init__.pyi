"""Type stubs for upcase (the native part is upcase._upcase)."""

import ssl
from os import PathLike
from socket import gaierror as gaierror
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union, final, overload

from typing_extensions import Buffer, Self, disjoint_base

__version__: str
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

AF_INET: int
AF_INET6: int
AF_UNSPEC: int
SOCK_STREAM: int
SOCK_DGRAM: int
SOL_SOCKET: int
SO_REUSEADDR: int
SO_REUSEPORT: int
SO_KEEPALIVE: int
SO_BROADCAST: int
SO_RCVBUF: int
SO_SNDBUF: int
SO_ERROR: int
SO_TYPE: int
IPPROTO_TCP: int
IPPROTO_UDP: int
IPPROTO_IPV6: int
TCP_NODELAY: int
IPV6_V6ONLY: int
SHUT_RD: int
SHUT_WR: int
SHUT_RDWR: int
SOMAXCONN: int
PROTOCOL_TLS_CLIENT: int
PROTOCOL_TLS_SERVER: int
CERT_NONE: int
CERT_OPTIONAL: int
CERT_REQUIRED: int

error = OSError
timeout = TimeoutError

_Data = TypeVar("_Data", bytes, str)
_Path = Union[str, PathLike[str]]

class TLSError(ssl.SSLError): ...
class TLSCertVerificationError(TLSError, ssl.SSLCertVerificationError): ...

@overload
def upper(data: str) -> str: ...
@overload
def upper(data: Buffer) -> bytes: ...
@overload
def tcp_request(
    host: str,
    port: int,
    data: str,
    *,
    timeout: Optional[float] = 5.0,
    tls: bool = False,
    cafile: Optional[_Path] = None,
    server_hostname: Optional[str] = None,
    certfile: Optional[_Path] = None,
    keyfile: Optional[_Path] = None,
) -> str: ...
@overload
def tcp_request(
    host: str,
    port: int,
    data: Buffer,
    *,
    timeout: Optional[float] = 5.0,
    tls: bool = False,
    cafile: Optional[_Path] = None,
    server_hostname: Optional[str] = None,
    certfile: Optional[_Path] = None,
    keyfile: Optional[_Path] = None,
) -> bytes: ...
@overload
def udp_request(host: str, port: int, data: str, *, timeout: float = 1.0, retries: int = 3) -> str: ...
@overload
def udp_request(host: str, port: int, data: Buffer, *, timeout: float = 1.0, retries: int = 3) -> bytes: ...
def htons(x: int) -> int: ...
def ntohs(x: int) -> int: ...
def htonl(x: int) -> int: ...
def ntohl(x: int) -> int: ...

@final
class Connection:
    def __new__(
        cls,
        host: str,
        port: int,
        *,
        timeout: Optional[float] = 5.0,
        tls: bool = False,
        cafile: Optional[_Path] = None,
        server_hostname: Optional[str] = None,
        certfile: Optional[_Path] = None,
        keyfile: Optional[_Path] = None,
    ) -> Self: ...
    @overload
    def request(self, data: str) -> str: ...
    @overload
    def request(self, data: Buffer) -> bytes: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *_args: object) -> bool: ...

@final
class Server:
    def __new__(
        cls,
        host: str = "127.0.0.1",
        port: int = 12000,
        *,
        transport: str = "tcp",
        mode: str = "concurrent",
        threads: Optional[int] = None,
        max_connections: int = 16384,
        idle_timeout: Optional[float] = 60.0,
        backlog: int = 1024,
        max_datagram: int = 65527,
        on_client: Optional[Callable[[str, int], Any]] = None,
        defer_accept: bool = False,
        min_rate: int = 1,
        io_uring: bool = False,
        max_connections_per_address: int = 1024,
        certfile: Optional[_Path] = None,
        keyfile: Optional[_Path] = None,
        client_cafile: Optional[_Path] = None,
        tls_handshake_timeout: float = 10.0,
    ) -> Self: ...
    @property
    def port(self) -> int: ...
    @property
    def address(self) -> Tuple[str, int]: ...
    @property
    def transport(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def tls(self) -> bool: ...
    @property
    def running(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def serve_forever(self) -> None: ...
    def stats(self) -> Dict[str, int]: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *_args: object) -> bool: ...

_Address = Union[Tuple[str, int], Tuple[str, int, int], Tuple[str, int, int, int]]

@disjoint_base
class socket:
    AF_INET: int
    AF_INET6: int
    AF_UNSPEC: int
    SOCK_STREAM: int
    SOCK_DGRAM: int
    SOL_SOCKET: int
    SO_REUSEADDR: int
    SO_REUSEPORT: int
    SO_KEEPALIVE: int
    SO_BROADCAST: int
    SO_RCVBUF: int
    SO_SNDBUF: int
    SO_ERROR: int
    SO_TYPE: int
    IPPROTO_TCP: int
    IPPROTO_UDP: int
    IPPROTO_IPV6: int
    TCP_NODELAY: int
    IPV6_V6ONLY: int
    SHUT_RD: int
    SHUT_WR: int
    SHUT_RDWR: int
    SOMAXCONN: int
    def __new__(cls, family: int = ..., type: int = ..., proto: int = 0) -> Self: ...
    @property
    def family(self) -> int: ...
    @property
    def type(self) -> int: ...
    @property
    def proto(self) -> int: ...
    def bind(self, address: _Address) -> None: ...
    def listen(self, backlog: int = 128) -> None: ...
    def accept(self) -> Tuple[socket, Any]: ...
    def connect(self, address: _Address) -> None: ...
    def send(self, data: Buffer) -> int: ...
    def sendall(self, data: Buffer) -> None: ...
    def recv(self, bufsize: int, flags: int = 0) -> bytes: ...
    def sendto(self, data: Buffer, *args: Any) -> int: ...
    def recvfrom(self, bufsize: int, flags: int = 0) -> Tuple[bytes, Any]: ...
    def shutdown(self, how: int) -> None: ...
    def close(self) -> None: ...
    def settimeout(self, value: Optional[float]) -> None: ...
    def gettimeout(self) -> Optional[float]: ...
    def setblocking(self, flag: bool) -> None: ...
    def getblocking(self) -> bool: ...
    def setsockopt(self, level: int, option: int, value: Union[int, bool]) -> None: ...
    def getsockopt(self, level: int, option: int) -> int: ...
    def getsockname(self) -> Any: ...
    def getpeername(self) -> Any: ...
    def fileno(self) -> int: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *_args: object) -> bool: ...

@final
class TLSContext:
    def __new__(cls, protocol: int) -> Self: ...
    @property
    def protocol(self) -> int: ...
    def load_cert_chain(self, certfile: _Path, keyfile: Optional[_Path] = None) -> None: ...
    def load_verify_locations(self, cafile: _Path) -> None: ...
    @property
    def verify_mode(self) -> int: ...
    @verify_mode.setter
    def verify_mode(self, value: int) -> None: ...
    @property
    def check_hostname(self) -> bool: ...
    @check_hostname.setter
    def check_hostname(self, value: bool) -> None: ...
    def wrap_socket(
        self,
        sock: socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        server_hostname: Optional[str] = None,
    ) -> TLSSocket: ...

@final
class TLSSocket(socket):
    @property
    def context(self) -> TLSContext: ...
    @property
    def server_side(self) -> bool: ...
    @property
    def server_hostname(self) -> Optional[str]: ...
    def do_handshake(self) -> None: ...
    def version(self) -> Optional[str]: ...
    def cipher(self) -> Optional[Tuple[str, str, int]]: ...
    def accept(self) -> Tuple[TLSSocket, Any]: ...
    def connect(self, address: _Address) -> None: ...
    def send(self, data: Buffer) -> int: ...
    def sendall(self, data: Buffer) -> None: ...
    def recv(self, bufsize: int, flags: int = 0) -> bytes: ...
    def sendto(self, data: Buffer, *args: Any) -> int: ...
    def recvfrom(self, bufsize: int, flags: int = 0) -> Tuple[bytes, Any]: ...
    def shutdown(self, how: int) -> None: ...
    def unwrap(self) -> socket: ...
    def close(self) -> None: ...
    def __exit__(self, *_args: object) -> bool: ...
