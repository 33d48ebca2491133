"""Shared fixtures for the upcase Python tests.

Every fixture here is named ``api_*`` so that fixtures defined in other test
modules never collide with them. Servers bind loopback (127.0.0.1 or ::1)
on port 0 and are stopped when the test ends.
"""

from __future__ import annotations

import os
import socket as std_socket
import struct
import threading
import time
from typing import Callable, Iterator, Tuple

import pytest

import upcase


def _ipv6_loopback_works() -> bool:
    if not std_socket.has_ipv6:
        return False
    try:
        with std_socket.socket(std_socket.AF_INET6, std_socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAVE_IPV6 = _ipv6_loopback_works()

#: Use as a pytest mark on tests that need ::1.
needs_ipv6 = pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback (::1)")

LOOPBACKS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param("::1", id="ipv6", marks=needs_ipv6),
]


def fd_count() -> int:
    """Open descriptors of this process (/proc/self/fd)."""
    return len(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    """OS threads of this process (/proc/self/task), Rust threads included."""
    return len(os.listdir("/proc/self/task"))


def settle(baseline: Tuple[int, int], timeout: float = 3.0) -> Tuple[int, int]:
    """(fds, threads) once they are back at or below baseline, or whatever
    they are when timeout runs out (threads may take a moment to exit)."""
    deadline = time.monotonic() + timeout
    while True:
        now = (fd_count(), thread_count())
        if (now[0] <= baseline[0] and now[1] <= baseline[1]) or time.monotonic() > deadline:
            return now
        time.sleep(0.02)


@pytest.fixture
def api_counts() -> Callable[[], Tuple[int, int]]:
    """A function returning (open descriptors, OS threads) now."""
    return lambda: (fd_count(), thread_count())


@pytest.fixture
def api_settle() -> Callable[..., Tuple[int, int]]:
    """settle(baseline, timeout=3.0): waits for (fds, threads) to come back to baseline."""
    return settle


@pytest.fixture(
    params=[
        pytest.param(("tcp", "127.0.0.1"), id="tcp-ipv4"),
        pytest.param(("tcp", "::1"), id="tcp-ipv6", marks=needs_ipv6),
        pytest.param(("udp", "127.0.0.1"), id="udp-ipv4"),
        pytest.param(("udp", "::1"), id="udp-ipv6", marks=needs_ipv6),
    ]
)
def api_server(request) -> Iterator[upcase.Server]:
    """A running upcase.Server on a free port: every transport and loopback."""
    transport, host = request.param
    server = upcase.Server(host, 0, transport=transport)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_tcp_server() -> Iterator[upcase.Server]:
    """A running TCP upcase.Server on 127.0.0.1, free port."""
    server = upcase.Server("127.0.0.1", 0, transport="tcp")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_udp_server() -> Iterator[upcase.Server]:
    """A running UDP upcase.Server on 127.0.0.1, free port."""
    server = upcase.Server("127.0.0.1", 0, transport="udp")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just released)."""
    s = std_socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def api_silent_listener() -> Iterator[Tuple[str, int]]:
    """A stdlib TCP socket that listens but never accepts: connections
    complete in the kernel's backlog and then nothing is ever answered."""
    s = std_socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield s.getsockname()
    finally:
        s.close()


@pytest.fixture
def api_silent_udp() -> Iterator[std_socket.socket]:
    """A bound stdlib UDP socket that never answers (read it to see what came)."""
    s = std_socket.socket(std_socket.AF_INET, std_socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    try:
        yield s
    finally:
        s.close()


class ResetServer:
    """A stdlib server that accepts one connection (once .go is set) and
    closes it with SO_LINGER 0, so the kernel sends RST instead of FIN."""

    def __init__(self) -> None:
        self.sock = std_socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.address = self.sock.getsockname()
        self.go = threading.Event()
        self.reset = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if not self.go.wait(10):
            return
        self.sock.settimeout(10)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.setsockopt(std_socket.SOL_SOCKET, std_socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        self.reset.set()

    def close(self) -> None:
        self.go.set()
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def api_reset_server() -> Iterator[ResetServer]:
    """A stdlib server that, once .go is set, accepts one connection and
    resets it (RST); .address, and .reset is set once the RST has been sent."""
    srv = ResetServer()
    try:
        yield srv
    finally:
        srv.close()
