"""The interop matrix: every server answers every client, over TCP and UDP,
IPv4 (127.0.0.1) and IPv6 (::1).

Servers (each a child process, on port 0, read back from its `listening on`
line):
  c                the C example: build/c/tcp_server / udp_server 0 HOST
  py-socket        examples/python/TCPServer.py / UDPServer.py on upcase.socket
  py-Server        examples/python/rust_server.py: upcase.Server, the loop in Rust
  rust             target/release/examples/upcase-server [--udp] 0 HOST
  slide-stdlib     the Python example with `from socket import *`: the slide's
                   server on the standard library

Clients:
  c                build/c/tcp_client / udp_client HOST PORT
  py-socket        examples/python/TCPClient.py / UDPClient.py HOST PORT
  upcase-request   upcase.tcp_request / udp_request, in this process
  stdlib           a plain standard-library socket, in this process
  nc               netcat-openbsd: `nc -N HOST PORT`, `nc -u -w2 HOST PORT`
  slide-stdlib     TCPClient.py with `from socket import *` (TCP only: the
                   slide's UDP client, `socket(socket.AF_INET, ...)`, needs upcase)

Every pairing is its own test, so a missing piece (a binary not built, `nc`
not installed, `upcase` not importable) fails its tests rather than skipping
them, and test_matrix_is_complete checks the count. Each server is started
once, on first use, and stopped by SIGTERM in test_server_exits_cleanly,
after the matrix (it must exit 0 with nothing on stderr). Every reply is
checked byte for byte, and the server must have printed a line for the
client's address.

Build first: `make` (library, C examples, Rust example server) and `make python`.
"""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import socket
import subprocess

import pytest

from e2e_support import (
    C_BUILD,
    CLIENT_TIMEOUT,
    EXAMPLES,
    FAMILIES,
    LINE,
    LINE_TIMEOUT,
    PYTHON,
    RUST_SERVER,
    ServerProc,
    fmt_addr,
    need_file,
    run,
    stdlib_copy,
    upper_ascii,
)

pytestmark = pytest.mark.timeout(60)

PROTOS = ["tcp", "udp"]
IPS = list(FAMILIES)  # v4, v6
SERVERS = ["c", "py-socket", "py-Server", "rust", "slide-stdlib"]
CLIENTS = ["c", "py-socket", "upcase-request", "stdlib", "nc", "slide-stdlib"]
SLIDE_FILES = {"tcp": ("TCPServer.py", "TCPClient.py"), "udp": ("UDPServer.py", "UDPClient.py")}


def client_applies(proto: str, client: str) -> bool:
    # The slide's UDP client is written `socket(socket.AF_INET, socket.SOCK_DGRAM)`,
    # which only upcase's socket class supports: no standard-library run of it.
    return not (proto == "udp" and client == "slide-stdlib")


MATRIX = [
    (proto, ip, server, client)
    for proto, ip, server, client in itertools.product(PROTOS, IPS, SERVERS, CLIENTS)
    if client_applies(proto, client)
]
SERVER_KEYS = [(proto, ip, server) for proto, ip, server in itertools.product(PROTOS, IPS, SERVERS)]


def test_matrix_is_complete():
    """5 servers x 6 clients over TCP, 5 x 5 over UDP, each over IPv4 and IPv6."""
    assert len(SERVERS) == 5 and len(CLIENTS) == 6
    assert len(MATRIX) == len(set(MATRIX)) == (5 * 6 + 5 * 5) * 2 == 110
    assert len(SERVER_KEYS) == 20
    assert {(p, i, s) for p, i, s, _ in MATRIX} == set(SERVER_KEYS)


# ---------------------------------------------------------------- servers


class ServerPool:
    """Servers started on first use, kept for the module, by (proto, ip, kind)."""

    def __init__(self, gen_dir) -> None:
        self.gen_dir = gen_dir
        self.running: dict[tuple[str, str, str], ServerProc] = {}
        self.stdlib_files: dict[str, str] = {}

    def stdlib(self, name: str) -> str:
        """The example `name` rewritten onto the standard library (made once)."""
        if name not in self.stdlib_files:
            self.stdlib_files[name] = str(stdlib_copy(EXAMPLES / name, self.gen_dir))
        return self.stdlib_files[name]

    def argv(self, proto: str, host: str, kind: str) -> list[str]:
        udp = ["--udp"] if proto == "udp" else []
        if kind == "c":
            return [need_file(C_BUILD / f"{proto}_server"), "0", host]
        if kind == "py-socket":
            return [PYTHON, need_file(EXAMPLES / SLIDE_FILES[proto][0]), "0", host]
        if kind == "py-Server":
            return [PYTHON, need_file(EXAMPLES / "rust_server.py"), *udp, "0", host]
        if kind == "rust":
            return [need_file(RUST_SERVER, "run `make` (cargo build --examples)"), *udp, "0", host]
        if kind == "slide-stdlib":
            return [PYTHON, self.stdlib(SLIDE_FILES[proto][0]), "0", host]
        raise AssertionError(f"unknown server {kind!r}")

    def get(self, key: tuple[str, str, str]) -> ServerProc:
        srv = self.running.get(key)
        if srv is None or srv.proc.poll() is not None:
            proto, ip, kind = key
            host = FAMILIES[ip]
            srv = ServerProc(self.argv(proto, host, kind), proto, name=f"{kind} {proto} server on {host}")
            self.running[key] = srv
            assert srv.bound_host == fmt_addr(host, 0)[:-2], f"{srv.name} printed listening on {srv.bound_host}"
        return srv

    def kill_all(self) -> None:
        for srv in self.running.values():
            srv.kill()


@pytest.fixture(scope="module")
def interop_servers(tmp_path_factory):
    pool = ServerPool(tmp_path_factory.mktemp("slide-stdlib"))
    try:
        yield pool
    finally:
        pool.kill_all()  # by PID, whatever a failed test left running


# ---------------------------------------------------------------- clients


def nc_path() -> str:
    """netcat-openbsd's `nc` (Debian: apt-get install netcat-openbsd). Missing: fail, not skip."""
    path = shutil.which("nc")
    assert path, "nc is missing: install netcat-openbsd (apt-get install -y netcat-openbsd)"
    return path


def client_subprocess(proto: str, client: str, host: str, port: int, pool: ServerPool) -> bytes:
    """Runs a client program with LINE on stdin; returns what the client must
    have printed, after checking it exited 0 with nothing on stderr."""
    data = (LINE + "\n").encode()
    expected = f"From Server: {upper_ascii(LINE)}\n".encode()
    if client == "c":
        argv = [need_file(C_BUILD / f"{proto}_client"), host, str(port)]
    elif client == "py-socket":
        argv = [PYTHON, need_file(EXAMPLES / SLIDE_FILES[proto][1]), host, str(port)]
    elif client == "slide-stdlib":
        argv = [PYTHON, pool.stdlib(SLIDE_FILES[proto][1]), host, str(port)]
    elif client == "nc":
        # nc sends the bytes as they are, newline included, and prints the reply as it is.
        argv = [nc_path(), "-N", host, str(port)] if proto == "tcp" else [nc_path(), "-u", "-w2", host, str(port)]
        expected = (upper_ascii(LINE) + "\n").encode()
    else:
        raise AssertionError(f"unknown client {client!r}")
    r = run(argv, data, timeout=CLIENT_TIMEOUT)
    assert r.returncode == 0, f"{argv} exited {r.returncode}; stderr: {r.stderr!r}"
    assert r.stdout == expected, f"{argv} printed {r.stdout!r}, expected {expected!r}"
    assert r.stderr == b""
    return r.stdout


def stdlib_client(proto: str, host: str, port: int) -> int:
    """The request over a plain standard-library socket; returns its local port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    data = LINE.encode()
    if proto == "tcp":
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect((host, port))
            local_port = s.getsockname()[1]
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        reply = b"".join(chunks)
    else:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(2.0)
            s.bind((host, 0))
            local_port = s.getsockname()[1]
            for attempt in range(3):  # loopback should not lose it, but UDP may
                s.sendto(data, (host, port))
                try:
                    reply, sender = s.recvfrom(65535)
                    break
                except TimeoutError:
                    if attempt == 2:
                        raise
            assert (sender[0], sender[1]) == (host, port), f"reply from {sender}"
    assert reply == upper_ascii(LINE).encode()
    return local_port


def upcase_client(proto: str, host: str, port: int) -> None:
    import upcase  # a failure to import fails this pairing

    if proto == "tcp":
        reply = upcase.tcp_request(host, port, LINE, timeout=5.0)
    else:
        reply = upcase.udp_request(host, port, LINE, timeout=1.0, retries=3)
    assert type(reply) is str  # str in, str out
    assert reply == upper_ascii(LINE)
    # and bytes in, bytes out: checked by test_api.py; here the str path is the one used.


# ---------------------------------------------------------------- the matrix


@pytest.mark.parametrize(
    "proto,ip,server,client",
    [pytest.param(*m, id=f"{m[0]}-{m[1]}-{m[2]}-server-{m[3]}-client") for m in MATRIX],
)
def test_interop(interop_servers, proto, ip, server, client):
    host = FAMILIES[ip]
    srv = interop_servers.get((proto, ip, server))
    pattern = srv.client_pattern(host)
    before = srv.out.count(pattern)

    if client == "stdlib":
        local_port = stdlib_client(proto, host, srv.port)
        # This one we know the port of: the server names exactly this client.
        srv.out.wait_for(srv.client_pattern(host, local_port), LINE_TIMEOUT)
    elif client == "upcase-request":
        upcase_client(proto, host, srv.port)
    else:
        client_subprocess(proto, client, host, srv.port, interop_servers)

    # One more `connection from HOST:PORT` / `datagram from HOST:PORT` line
    # (a UDP client may have had to send again, hence "at least").
    srv.out.wait_for(pattern, LINE_TIMEOUT, at_least=before + 1)
    if proto == "tcp":
        assert srv.out.count(pattern) == before + 1, srv.out.lines
    assert srv.proc.poll() is None, f"{srv.name} exited: {srv.err.text()!r}"
    assert srv.err.lines == [], f"{srv.name} wrote to stderr: {srv.err.lines!r}"


@pytest.mark.parametrize(
    "proto,ip,server",
    [pytest.param(*k, id=f"{k[0]}-{k[1]}-{k[2]}-server") for k in SERVER_KEYS],
)
def test_server_exits_cleanly(interop_servers, proto, ip, server):
    """After the matrix: SIGTERM, and the server exits 0 within 5 s, no traceback.
    (Run alone, it starts the server first.)"""
    srv = interop_servers.get((proto, ip, server))
    srv.stop(signal.SIGTERM)
    lines = srv.out.text().splitlines()
    assert lines[0] == "The server is ready to receive"
    assert lines[1] == f"listening on {fmt_addr(FAMILIES[ip], srv.port)}"
    # Nothing but one line per client after those two.
    for line in lines[2:]:
        assert re.match(srv.client_pattern(FAMILIES[ip]), line), line
