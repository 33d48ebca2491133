"""End-to-end runs of the four C example programs (build/c/, from `make examples`).

The C servers and clients talk to each other over TCP and UDP, IPv4 and
IPv6; plain Python stdlib sockets stand in as independent peers on both
sides. Servers listen on port 0 (a free port, read back from their
`listening on HOST:PORT` line) on loopback, and are stopped with SIGTERM or
SIGINT, after which they must exit 0 within 5 s. Every process a test
starts is killed (by its own PID) at teardown if it is still running.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "c"

PROTOS = ["tcp", "udp"]
FAMILIES = {"v4": ("127.0.0.1", socket.AF_INET), "v6": ("::1", socket.AF_INET6)}
# What each server prints for each client: one line per TCP connection or UDP datagram.
CLIENT_LINE = {"tcp": "connection from", "udp": "datagram from"}
UDP_CLIENT_TRIES = 4  # the C UDP client: one send and up to 3 more, 1 s apart

START_TIMEOUT = 10.0  # for the `listening on` line
STOP_TIMEOUT = 5.0  # for the exit after SIGTERM / SIGINT
CLIENT_TIMEOUT = 15.0  # any client run; the UDP client gives up after ~4 s


def exe(name: str) -> str:
    path = BUILD / name
    assert path.is_file() and os.access(path, os.X_OK), f"{path} is missing: run `make examples` first"
    return str(path)


def upper_ascii(text: str) -> str:
    """The wire contract: only ASCII a-z change."""
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in text)


def fmt_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Stream:
    """Collects a child's output lines on a thread, so waits can be bounded."""

    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self.thread.start()

    def _pump(self, pipe) -> None:
        for raw in iter(pipe.readline, b""):
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line matching `pattern` (a regex, searched), within `timeout` s."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout} s; got {self.lines!r}")
                self.cond.wait(left)

    def wait_count(self, pattern: str, count: int, timeout: float, at_most: int | None = None) -> None:
        """Waits at most `timeout` s until `count` lines match `pattern`;
        more than `at_most` (by default `count`) fails."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        most = count if at_most is None else at_most
        with self.cond:
            while True:
                n = sum(1 for line in self.lines if rx.search(line))
                assert n <= most, f"{n} lines match {pattern!r}, expected {count} to {most}: {self.lines!r}"
                if n >= count:
                    return
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    raise AssertionError(f"{n} lines match {pattern!r}, expected {count}: {self.lines!r}")
                self.cond.wait(left)

    def text(self) -> str:
        self.thread.join(timeout=STOP_TIMEOUT)
        with self.cond:
            return "\n".join(self.lines)


class Server:
    def __init__(self, proc: subprocess.Popen, proto: str) -> None:
        self.proc = proc
        self.proto = proto
        self.out = Stream(proc.stdout)
        self.err = Stream(proc.stderr)
        self.out.wait_for(r"^The server is ready to receive$", START_TIMEOUT)
        m = self.out.wait_for(r"^listening on (\S+):(\d+)$", START_TIMEOUT)
        self.bound_host = m.group(1)
        self.port = int(m.group(2))
        assert 0 < self.port < 65536

    def client_line(self, host: str) -> re.Match[str]:
        """The line the server printed for a client from `host` (any port)."""
        addr = re.escape(f"[{host}]" if ":" in host else host)
        m = self.out.wait_for(rf"^{CLIENT_LINE[self.proto]} {addr}:(\d+)$", 5.0)
        assert 0 < int(m.group(1)) < 65536
        return m

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server; it must exit 0 promptly, having printed nothing on stderr."""
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.proto}_server did not exit within {STOP_TIMEOUT} s of signal {sig}")
        assert rc == 0, f"{self.proto}_server exited {rc}; stderr: {self.err.text()!r}"
        assert self.err.text() == ""


@pytest.fixture
def procs():
    """Every process started through this fixture; the survivors are killed by PID."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (p.stdin, p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def start_server(procs):
    def start(proto: str, *args: str) -> Server:
        p = subprocess.Popen(
            [exe(f"{proto}_server"), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(p)
        return Server(p, proto)

    return start


def run_client(proto: str, *args: str, data: bytes, timeout: float = CLIENT_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [exe(f"{proto}_client"), *args],
        input=data,
        capture_output=True,
        timeout=timeout,
    )


def exchange(proto: str, host: str, port: int, line: str) -> None:
    """Send `line` with the C client; the reply must be exactly the contract's."""
    r = run_client(proto, host, str(port), data=(line + "\n").encode())
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stdout == f"From Server: {upper_ascii(line)}\n".encode()
    assert r.stderr == b""


# ---------------------------------------------------------------- C client <-> C server


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("proto", PROTOS)
def test_client_server(start_server, proto, family):
    host, _ = FAMILIES[family]
    srv = start_server(proto, "0", host)
    assert srv.bound_host == fmt_addr(host, 0).rsplit(":", 1)[0]
    exchange(proto, host, srv.port, "hello from the slides")
    srv.client_line(host)
    srv.stop()


@pytest.mark.parametrize("proto", PROTOS)
def test_iterative(start_server, proto):
    srv = start_server(proto, "--iterative", "0", "127.0.0.1")
    for i in range(3):
        exchange(proto, "127.0.0.1", srv.port, f"iterative request {i}: One client at a time")
    # UDP: a client that heard nothing for a second sends again (up to 3
    # times), and that datagram is reported too.
    tries = UDP_CLIENT_TRIES if proto == "udp" else 1
    srv.out.wait_count(rf"^{CLIENT_LINE[proto]} 127\.0\.0\.1:\d+$", 3, 5.0, at_most=3 * tries)
    srv.stop()


@pytest.mark.parametrize("proto", PROTOS)
def test_iterative_v6_sigint(start_server, proto):
    srv = start_server(proto, "--iterative", "0", "::1")
    exchange(proto, "::1", srv.port, "ctrl-c stops me")
    srv.client_line("::1")
    srv.stop(signal.SIGINT)


@pytest.mark.parametrize("proto", PROTOS)
def test_default_host_is_dual_stack(start_server, proto):
    """No HOST: every interface, and both IPv4 and IPv6 clients are served."""
    srv = start_server(proto, "0")
    assert srv.bound_host == "[::]"
    exchange(proto, "127.0.0.1", srv.port, "over ipv4")
    srv.client_line("127.0.0.1")  # an IPv4-mapped peer is shown as plain IPv4
    exchange(proto, "::1", srv.port, "over ipv6")
    srv.client_line("::1")
    srv.stop()


@pytest.mark.parametrize("proto", PROTOS)
def test_client_default_host_localhost(start_server, proto):
    """HOST defaults to localhost; with a dual-stack server either address answers."""
    srv = start_server(proto, "0")
    r = run_client(proto, "localhost", str(srv.port), data=b"via localhost\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"From Server: VIA LOCALHOST\n"
    srv.stop()


@pytest.mark.parametrize("proto", PROTOS)
def test_non_ascii_passes_through(start_server, proto):
    srv = start_server(proto, "0", "127.0.0.1")
    line = "héllo wörld ß, ça va? ünïcödé ÿ 123"
    r = run_client(proto, "127.0.0.1", str(srv.port), data=(line + "\n").encode())
    assert r.returncode == 0, r.stderr
    assert r.stdout == "From Server: HéLLO WöRLD ß, çA VA? üNïCöDé ÿ 123\n".encode()
    assert r.stdout.decode("utf-8") == f"From Server: {upper_ascii(line)}\n"
    srv.stop()


@pytest.mark.parametrize("proto", PROTOS)
def test_empty_line(start_server, proto):
    srv = start_server(proto, "0", "127.0.0.1")
    r = run_client(proto, "127.0.0.1", str(srv.port), data=b"\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"From Server: \n"
    srv.stop()


@pytest.mark.parametrize("proto", PROTOS)
def test_no_input_line(proto):
    """EOF before any line: nothing is sent, exit 1 with a message."""
    r = run_client(proto, "127.0.0.1", "9", data=b"")
    assert r.returncode == 1
    assert r.stdout == b""
    assert b"no input" in r.stderr


@pytest.mark.parametrize("proto", PROTOS)
def test_last_line_without_newline(start_server, proto):
    srv = start_server(proto, "0", "127.0.0.1")
    r = run_client(proto, "127.0.0.1", str(srv.port), data=b"no newline at end")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"From Server: NO NEWLINE AT END\n"
    srv.stop()


def test_only_first_line_is_sent(start_server):
    srv = start_server("tcp", "0", "127.0.0.1")
    r = run_client("tcp", "127.0.0.1", str(srv.port), data=b"first line\nsecond line\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"From Server: FIRST LINE\n"
    srv.stop()


def test_long_line_tcp(start_server):
    """100 KB in one line: nothing is cut at the slide's recv(1024)."""
    srv = start_server("tcp", "0", "127.0.0.1")
    unit = "the quick brown fox jumps over the lazy dog 0123456789 "
    line = (unit * (100_000 // len(unit) + 1))[:100_000]
    exchange("tcp", "127.0.0.1", srv.port, line)
    srv.stop()


def test_large_datagram_udp(start_server):
    """A 60,000-byte line fits one datagram and comes back whole."""
    srv = start_server("udp", "0", "127.0.0.1")
    line = ("abcdefghij" * 6000)[:60_000]
    exchange("udp", "127.0.0.1", srv.port, line)
    srv.stop()


def test_too_large_datagram_udp():
    """A line larger than any datagram fails before sending, with a message."""
    r = run_client("udp", "127.0.0.1", "9", data=b"x" * 70_000 + b"\n")
    assert r.returncode == 1
    assert r.stdout == b""
    assert b"udp_client: " in r.stderr


@pytest.mark.parametrize("proto", PROTOS)
def test_concurrent_clients(start_server, proto):
    srv = start_server(proto, "0", "127.0.0.1")
    clients = [
        subprocess.Popen(
            [exe(f"{proto}_client"), "127.0.0.1", str(srv.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    try:
        for i, c in enumerate(clients):
            out, err = c.communicate(f"client number {i}\n".encode(), timeout=CLIENT_TIMEOUT)
            assert c.returncode == 0, err
            assert out == f"From Server: CLIENT NUMBER {i}\n".encode()
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait(timeout=STOP_TIMEOUT)
    srv.stop()


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("family", FAMILIES)
def test_tcp_client_refused(family):
    host, af = FAMILIES[family]
    # A bound TCP socket that does not listen: a connect to it is refused, and
    # no other process can take the port while we hold it.
    with socket.socket(af, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
        t0 = time.monotonic()
        r = run_client("tcp", host, str(port), data=b"anyone there?\n")
    assert r.returncode != 0
    assert r.stdout == b""
    assert b"refused" in r.stderr.lower()
    assert r.stderr.startswith(b"tcp_client: ")
    assert time.monotonic() - t0 < 6


@pytest.mark.parametrize("family", FAMILIES)
def test_udp_client_refused_or_timed_out(family):
    host, af = FAMILIES[family]
    with socket.socket(af, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    # The port is now most likely closed: the ICMP error gives "refused"; if
    # anything took it meanwhile, the client gives up after 1 + 3 tries ("no reply").
    t0 = time.monotonic()
    r = run_client("udp", host, str(port), data=b"anyone there?\n")
    assert r.returncode != 0
    assert r.stdout == b""
    err = r.stderr.lower()
    assert r.stderr.startswith(b"udp_client: ")
    assert b"refused" in err or b"timed out" in err or b"no reply" in err, err
    assert time.monotonic() - t0 < 8


def test_udp_client_timed_out():
    """A peer that reads nothing: 1 s per try, 1 + 3 tries, then "timed out"."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        t0 = time.monotonic()
        r = run_client("udp", "127.0.0.1", str(port), data=b"hello?\n", timeout=12)
        elapsed = time.monotonic() - t0
        got = 0
        s.setblocking(False)
        try:
            while True:
                assert s.recv(2048) == b"hello?"
                got += 1
        except BlockingIOError:
            pass
    assert r.returncode != 0
    # The library says "no reply after 4 attempt(s) of 1.000 s" (UPCASE_ETIMEDOUT).
    assert re.search(rb"timed out|no reply", r.stderr, re.I), r.stderr
    assert 3 <= elapsed < 8
    assert got == 4  # the first send and three retries


@pytest.mark.parametrize("proto", PROTOS)
def test_unknown_host(proto):
    r = run_client(proto, "no-such-host.invalid", "12000", data=b"hello\n")
    assert r.returncode == 1
    assert r.stdout == b""
    err = r.stderr.decode(errors="replace")
    assert err.startswith(f"{proto}_client: ")
    assert "no-such-host.invalid" in err
    # The resolver's own words (glibc: "Name or service not known", or a
    # temporary failure when there is no DNS at all).
    assert re.search(r"resolve|not known|name resolution|no address", err, re.I), err


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("args", [["abc"], ["70000"], ["65536"], ["-1"], ["12a"], [""], ["+80"], [" 80"],
                                  ["--iterative", "x"], ["--bogus"], ["0", "127.0.0.1", "extra"]])
def test_server_bad_arguments(proto, args):
    r = subprocess.run([exe(f"{proto}_server"), *args], capture_output=True, timeout=CLIENT_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert b"usage:" in r.stderr
    assert r.stdout == b""


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("args", [["localhost", "0"], ["localhost", "abc"], ["localhost", "99999"],
                                  ["localhost", "1", "extra"]])
def test_client_bad_arguments(proto, args):
    r = run_client(proto, *args, data=b"hello\n")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert b"usage:" in r.stderr
    assert r.stdout == b""


def test_server_port_in_use(start_server):
    srv = start_server("tcp", "0", "127.0.0.1")
    r = subprocess.run([exe("tcp_server"), str(srv.port), "127.0.0.1"], capture_output=True,
                       timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert b"in use" in r.stderr.lower(), r.stderr
    srv.stop()


def test_server_unknown_host():
    r = subprocess.run([exe("udp_server"), "0", "no-such-host.invalid"], capture_output=True,
                       timeout=CLIENT_TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert b"no-such-host.invalid" in r.stderr


# ---------------------------------------------------------------- Python stdlib peers


@pytest.mark.parametrize("family", FAMILIES)
def test_python_socket_client_tcp(start_server, family):
    """The slide TCPClient in Python 3, stdlib socket, against the C server."""
    host, af = FAMILIES[family]
    srv = start_server("tcp", "0", host)
    with socket.socket(af, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect((host, srv.port))
        me = s.getsockname()[1]
        s.send(b"hello from python")
        assert s.recv(1024) == b"HELLO FROM PYTHON"
    srv.out.wait_for(rf"^connection from {re.escape(fmt_addr(host, me))}$", 5.0)

    # Streaming: each chunk is answered as it arrives, before any EOF.
    with socket.create_connection((host, srv.port), timeout=5) as s:
        for chunk in (b"one ", b"two\x00\xff ", "drei ß".encode()):
            s.sendall(chunk)
            got = b""
            while len(got) < len(chunk):
                part = s.recv(4096)
                assert part, "server closed early"
                got += part
            assert got == chunk.upper()  # bytes.upper() changes ASCII a-z only, as the server does
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1024) == b""  # the server closes after our EOF
    srv.stop()


@pytest.mark.parametrize("family", FAMILIES)
def test_python_socket_client_udp(start_server, family):
    """The slide UDPClient in Python 3, stdlib socket, against the C server."""
    host, af = FAMILIES[family]
    srv = start_server("udp", "0", host)
    with socket.socket(af, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"hello from python", (host, srv.port))
        reply, addr = s.recvfrom(2048)
        me = s.getsockname()[1]
    assert reply == b"HELLO FROM PYTHON"
    assert addr[1] == srv.port
    srv.out.wait_for(rf"^datagram from {re.escape(fmt_addr(host, me))}$", 5.0)
    srv.stop()


def _slide_tcp_server(sock: socket.socket) -> None:
    """The slide TCPServer loop (Python 3), serving one connection."""
    conn, _ = sock.accept()
    with conn:
        conn.settimeout(5)
        sentence = conn.recv(1024)
        conn.send(sentence.upper())


def _slide_udp_server(sock: socket.socket) -> None:
    """The slide UDPServer loop (Python 3), answering one datagram."""
    message, client = sock.recvfrom(2048)
    sock.sendto(message.upper(), client)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("proto", PROTOS)
def test_c_client_against_python_slide_server(proto, family):
    host, af = FAMILIES[family]
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(af, kind) as sock:
        sock.settimeout(10)
        sock.bind((host, 0))
        if proto == "tcp":
            sock.listen(1)
        port = sock.getsockname()[1]
        t = threading.Thread(target=_slide_tcp_server if proto == "tcp" else _slide_udp_server, args=(sock,),
                             daemon=True)
        t.start()
        r = run_client(proto, host, str(port), data=b"python serves\n")
        t.join(timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"From Server: PYTHON SERVES\n"


# ---------------------------------------------------------------- server options


@pytest.mark.parametrize("proto", PROTOS)
def test_quiet_and_threads_options(start_server, proto):
    server = start_server(proto, "--quiet", "--threads", "1", "0", "127.0.0.1")
    exchange(proto, "127.0.0.1", server.port, "quiet please")
    server.stop()
    assert CLIENT_LINE[proto] not in server.out.text()


def test_max_connections_and_idle_timeout_options(start_server):
    # An idle timeout of 3 s: the second connection must come while the
    # first is still held, even on a loaded machine.
    server = start_server("tcp", "--max-connections", "1", "--idle-timeout", "3", "0", "127.0.0.1")
    held = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    server.client_line("127.0.0.1")
    # The second connection is over the limit: closed at once, no reply.
    extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    extra.sendall(b"x")
    try:
        assert extra.recv(16) == b""
    except ConnectionResetError:
        pass
    extra.close()
    # The silent one goes after about 3 s, then there is room again.
    t = time.monotonic()
    assert held.recv(16) == b""
    assert time.monotonic() - t < 6
    held.close()
    exchange("tcp", "127.0.0.1", server.port, "room again")
    server.stop()


def test_min_rate_option_closes_a_trickling_client(start_server):
    server = start_server("tcp", "--quiet", "--idle-timeout", "1", "--min-rate", "100", "0", "127.0.0.1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
        t = time.monotonic()
        closed = None
        while time.monotonic() - t < 5:
            try:
                s.sendall(b"z")
                if s.recv(16) != b"Z":
                    closed = time.monotonic() - t
                    break
            except OSError:
                closed = time.monotonic() - t
                break
            time.sleep(0.3)
        assert closed is not None and closed >= 0.9, closed
    exchange("tcp", "127.0.0.1", server.port, "still serving")
    server.stop()


def test_defer_accept_option_serves_clients(start_server):
    server = start_server("tcp", "--defer-accept", "0", "127.0.0.1")
    exchange("tcp", "127.0.0.1", server.port, "deferred")
    server.stop()


def test_udp_max_datagram_option(start_server):
    server = start_server("udp", "--max-datagram", "10", "0", "127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(b"x" * 11, ("127.0.0.1", server.port))
        with pytest.raises(TimeoutError):
            s.recvfrom(100)
        s.settimeout(5)
        s.sendto(b"y" * 10, ("127.0.0.1", server.port))
        assert s.recvfrom(100)[0] == b"Y" * 10
    server.stop()


@pytest.mark.parametrize("args", [["--bogus"], ["--threads"], ["--threads", "x"], ["--max-connections", "0"],
                                  ["--idle-timeout", "-1"], ["--min-rate", "x"], ["--min-rate", "1000000001"]])
def test_bad_options_exit_2(args):
    r = subprocess.run([exe("tcp_server"), *args], capture_output=True, timeout=10)
    assert r.returncode == 2, r
    assert b"usage:" in r.stderr


# ---------------------------------------------------------------- command lines

PROGRAMS = ["tcp_client", "udp_client", "tcp_server", "udp_server"]
# Each program's positional order, as its usage line and help say it.
ORDER = {"client": ("[HOST [PORT]]", "HOST comes first, then PORT"),
         "server": ("[PORT [HOST]]", "PORT comes first, then HOST")}
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)


def kind(prog: str) -> str:
    return prog.split("_")[1]


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


UNSHARE = ["unshare", "-n"] if _unshare_works() else []


def run_cli(prog: str, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    """One run with stdin closed (EOF), or `data` on it."""
    return subprocess.run([exe(prog), *args], input=data, stdin=subprocess.DEVNULL if data is None else None,
                          capture_output=True, timeout=CLIENT_TIMEOUT)


def check_usage_error(r: subprocess.CompletedProcess, prog: str, *named: str) -> None:
    """Exit 2, nothing on stdout; stderr gives the reason, naming each of `named`, then the usage line."""
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, (r.returncode, r.stdout, err)
    assert r.stdout == b""
    assert err.startswith(f"{prog}: ") and f"\nusage: {prog} " in err, err
    for word in named:
        assert word in err.splitlines()[0], (word, err)


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("prog", PROGRAMS)
def test_help(prog, flag):
    """Usage on stdout and exit 0, read before stdin (a line waiting there is left alone)."""
    r = run_cli(prog, flag, data=b"a line that must not be sent\n")
    assert r.returncode == 0, r
    assert r.stderr == b""
    out = r.stdout.decode()
    usage, order = ORDER[kind(prog)]
    assert out.startswith(f"usage: {prog} [OPTIONS] {usage}"), out
    assert order in out, out
    assert "--version" in out


@pytest.mark.parametrize("prog", PROGRAMS)
def test_version(prog):
    r = run_cli(prog, "--version")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{prog} (upcase) {VERSION}\n".encode(), b"")


@pytest.mark.parametrize("prog", PROGRAMS)
def test_unknown_option_is_named(prog):
    check_usage_error(run_cli(prog, "--bogus", data=b"hello\n"), prog, "'--bogus'")
    check_usage_error(run_cli(prog, "-x"), prog, "'-x'")


@pytest.mark.parametrize("prog", PROGRAMS)
def test_missing_option_value_is_named(prog):
    option = "--timeout" if kind(prog) == "client" else "--threads"
    check_usage_error(run_cli(prog, option), prog, f"'{option}'", "needs a value")


@pytest.mark.parametrize("prog", PROGRAMS)
def test_digits_only_host_is_refused(prog):
    """`tcp_client 70000` is a port in the wrong place, not IPv4 0.1.17.112:
    exit 2 naming it, and nothing sent (no network at all here: unshare -n,
    where it works; stdin closed otherwise)."""
    args = ["70000"] if kind(prog) == "client" else ["0", "70000"]
    data = b"must not leave the machine\n" if UNSHARE else None
    r = subprocess.run([*UNSHARE, exe(prog), *args], input=data, stdin=None if UNSHARE else subprocess.DEVNULL,
                       capture_output=True, timeout=CLIENT_TIMEOUT)
    check_usage_error(r, prog, "HOST '70000'", "only digits")


@pytest.mark.parametrize("port", ["70000", "abc"])
@pytest.mark.parametrize("prog", PROGRAMS)
def test_bad_port_is_named(prog, port):
    args = ["localhost", port] if kind(prog) == "client" else [port]
    check_usage_error(run_cli(prog, *args), prog, f"PORT '{port}'")


@pytest.mark.parametrize("prog,args,named", [
    ("tcp_server", ["--threads", "abc"], "--threads 'abc'"),
    ("tcp_server", ["--min-rate", "1000000001"], "--min-rate '1000000001'"),
    ("udp_server", ["--max-datagram", "65528"], "--max-datagram '65528'"),
    ("tcp_client", ["--timeout", "x"], "--timeout 'x'"),
    ("tcp_client", ["--timeout", "0"], "--timeout '0'"),
    ("udp_client", ["--retries", "-1"], "--retries '-1'"),
    ("tcp_client", ["--retries", "1"], "'--retries'"),  # UDP only
    ("tcp_server", ["0", "127.0.0.1", "extra"], "'extra'"),
])
def test_bad_value_is_named(prog, args, named):
    check_usage_error(run_cli(prog, *args), prog, named)


@pytest.mark.parametrize("proto", PROTOS)
def test_client_message_option(start_server, proto):
    """-m TEXT: sent instead of a line of stdin; options may follow HOST PORT."""
    srv = start_server(proto, "0", "127.0.0.1")
    r = run_cli(f"{proto}_client", "127.0.0.1", str(srv.port), "-m", "given with -m")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"From Server: GIVEN WITH -M\n", b"")
    srv.stop()


def test_udp_client_timeout_and_retries_options():
    """--timeout 0.2 --retries 1: two sends, 0.2 s apart, then "timed out"."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        t0 = time.monotonic()
        r = run_cli("udp_client", "--timeout", "0.2", "--retries", "1", "-m", "hello?", "127.0.0.1",
                    str(s.getsockname()[1]))
        elapsed = time.monotonic() - t0
        s.setblocking(False)
        got = 0
        try:
            while True:
                assert s.recv(2048) == b"hello?"
                got += 1
        except BlockingIOError:
            pass
    assert r.returncode == 1 and re.search(rb"timed out|no reply", r.stderr, re.I), r
    assert got == 2
    assert 0.35 <= elapsed < 1.5, elapsed


def test_tcp_client_timeout_option():
    """A server that accepts (the kernel's backlog) but never answers: --timeout 0.3 gives up in time."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        t0 = time.monotonic()
        r = run_cli("tcp_client", "--timeout", "0.3", "127.0.0.1", str(s.getsockname()[1]), data=b"anyone?\n")
        elapsed = time.monotonic() - t0
    assert r.returncode == 1 and b"timed out" in r.stderr.lower(), r
    assert elapsed < 3.0, elapsed


def test_max_connections_per_address_option(start_server):
    """--max-per-address 1: a second connection from 127.0.0.1 is
    closed at once while the first is held; 0 lifts the limit."""
    server = start_server("tcp", "--quiet", "--max-per-address", "1", "0", "127.0.0.1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as held:
        held.sendall(b"a")
        assert held.recv(16) == b"A"
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as extra:
            extra.sendall(b"x")
            try:
                assert extra.recv(16) == b""
            except ConnectionResetError:
                pass
    server.stop()
    server = start_server("tcp", "--quiet", "--max-per-address", "0", "0", "127.0.0.1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as held:
        held.sendall(b"a")
        assert held.recv(16) == b"A"
        exchange("tcp", "127.0.0.1", server.port, "no limit")
    server.stop()
