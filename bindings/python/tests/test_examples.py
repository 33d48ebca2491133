"""End-to-end runs of the six Python examples (examples/python/) on their own:

  TCPServer.py, UDPServer.py, TCPClient.py, UDPClient.py   the slide programs
                                                            on upcase.socket
  rust_server.py, rust_client.py                            the loops in Rust:
                                                            upcase.Server,
                                                            upcase.tcp_request /
                                                            udp_request

Their output formats (exactly), the command lines, Ctrl-C / SIGTERM (exit 0,
no traceback), and the clients' failures (refused, unknown host, UDP
timeout). Servers listen on port 0 on loopback; every wait is bounded; every
process is killed by its PID at the end if it is still running.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import subprocess
import time

import pytest

from e2e_support import (
    CLIENT_TIMEOUT,
    EXAMPLES,
    FAMILIES,
    LINE,
    LINE_TIMEOUT,
    PYTHON,
    STOP_TIMEOUT,
    ServerProc,
    child_env,
    fmt_addr,
    need_file,
    run,
    upper_ascii,
)

pytestmark = pytest.mark.timeout(60)

PROTOS = ["tcp", "udp"]
SLIDE_SERVER = {"tcp": "TCPServer.py", "udp": "UDPServer.py"}
SLIDE_CLIENT = {"tcp": "TCPClient.py", "udp": "UDPClient.py"}
# The two servers of each protocol, as (id, argv after the interpreter).
SERVERS = {
    "TCPServer.py": ("tcp", ["TCPServer.py"]),
    "UDPServer.py": ("udp", ["UDPServer.py"]),
    "rust_server.py-tcp": ("tcp", ["rust_server.py"]),
    "rust_server.py-udp": ("udp", ["rust_server.py", "--udp"]),
}
# The two clients of each protocol: (id, protocol, argv after the interpreter, name in messages).
CLIENTS = {
    "TCPClient.py": ("tcp", ["TCPClient.py"], "TCPClient.py"),
    "UDPClient.py": ("udp", ["UDPClient.py"], "UDPClient.py"),
    "rust_client.py-tcp": ("tcp", ["rust_client.py"], "rust_client.py"),
    "rust_client.py-udp": ("udp", ["rust_client.py", "--udp"], "rust_client.py"),
}


def example(args: list[str]) -> list[str]:
    """[python, examples/python/NAME, options...]"""
    return [PYTHON, need_file(EXAMPLES / args[0]), *args[1:]]


@pytest.fixture
def ex_servers():
    """start(argv_after_python, proto, *args) -> ServerProc; all killed (by PID) at the end."""
    started: list[ServerProc] = []

    def start(args: list[str], proto: str, *more: str) -> ServerProc:
        srv = ServerProc(example(args) + list(more), proto, name=" ".join([*args, *more]))
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.kill()


def client(args: list[str], *more: str, data: bytes, timeout: float = CLIENT_TIMEOUT) -> subprocess.CompletedProcess:
    return run(example(args) + list(more), data, timeout=timeout)


def check_reply(r: subprocess.CompletedProcess, line: str) -> None:
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stderr == b""
    assert r.stdout == f"From Server: {upper_ascii(line)}\n".encode()


def same_protocol_clients(proto: str) -> list[str]:
    return [cid for cid, (p, _, _) in CLIENTS.items() if p == proto]


# ---------------------------------------------------------------- output formats


@pytest.mark.parametrize("ip", FAMILIES)
@pytest.mark.parametrize("server", SERVERS)
def test_server_and_clients(ex_servers, server, ip):
    """Both clients of the protocol against the server; the server's whole
    output is exactly: ready, listening on HOST:PORT, one line per client
    (UDP: per datagram, so a client's retry adds one)."""
    proto, sargs = SERVERS[server]
    host = FAMILIES[ip]
    srv = ex_servers(sargs, proto, "0", host)
    for cid in same_protocol_clients(proto):
        check_reply(client(CLIENTS[cid][1], host, str(srv.port), data=(LINE + "\n").encode()), LINE)
    srv.out.wait_for(srv.client_pattern(host), LINE_TIMEOUT, at_least=2)
    srv.stop()
    lines = srv.out.text().splitlines()
    assert lines[:2] == ["The server is ready to receive", f"listening on {fmt_addr(host, srv.port)}"]
    if proto == "tcp":
        assert len(lines) == 4, lines
    else:
        # A client that heard nothing for a second (a stalled machine)
        # sends again, up to 3 times, and the server reports those too.
        assert 4 <= len(lines) <= 2 + 2 * 4, lines
    word = "connection" if proto == "tcp" else "datagram"
    for line in lines[2:]:
        m = re.fullmatch(rf"{word} from {re.escape(fmt_addr(host, ''))}(\d+)", line)
        assert m and 0 < int(m.group(1)) < 65536 and int(m.group(1)) != srv.port, line


@pytest.mark.parametrize("proto", PROTOS)
def test_rust_server_iterative(ex_servers, proto):
    """--iterative: the slide's one-client-at-a-time loop, in Rust; three clients in turn."""
    srv = ex_servers(["rust_server.py"] + (["--udp"] if proto == "udp" else []), proto, "--iterative", "0", "127.0.0.1")
    cargs = CLIENTS[f"rust_client.py-{proto}"][1]
    for i in range(3):
        line = f"iterative request {i}: One client at a time"
        check_reply(client(cargs, "127.0.0.1", str(srv.port), data=(line + "\n").encode()), line)
    srv.out.wait_for(srv.client_pattern("127.0.0.1"), LINE_TIMEOUT, at_least=3)
    srv.stop()


def test_slide_servers_default_host_is_ipv4_any(ex_servers):
    """No HOST: '' as in the slides, an AF_INET socket on every interface."""
    for server in ("TCPServer.py", "UDPServer.py"):
        proto, sargs = SERVERS[server]
        srv = ex_servers(sargs, proto, "0")
        assert srv.bound_host == "0.0.0.0"
        cid = same_protocol_clients(proto)[0]
        check_reply(client(CLIENTS[cid][1], "localhost", str(srv.port), data=b"via localhost\n"), "via localhost")
        srv.out.wait_for(srv.client_pattern("127.0.0.1"), LINE_TIMEOUT)
        srv.stop()


@pytest.mark.parametrize("proto", PROTOS)
def test_rust_server_default_host_is_dual_stack(ex_servers, proto):
    """No HOST: every interface through the library, IPv6 and IPv4 ([::], dual-stack)."""
    srv = ex_servers(SERVERS[f"rust_server.py-{proto}"][1], proto, "0")
    assert srv.bound_host == "[::]"
    cargs = CLIENTS[f"rust_client.py-{proto}"][1]
    for host in ("127.0.0.1", "::1"):
        check_reply(client(cargs, host, str(srv.port), data=b"dual stack\n"), "dual stack")
        srv.out.wait_for(srv.client_pattern(host), LINE_TIMEOUT)  # a mapped IPv4 peer shows as plain IPv4
    srv.stop()


@pytest.mark.parametrize("cid", CLIENTS)
def test_empty_line(ex_servers, cid):
    proto, cargs, _ = CLIENTS[cid]
    srv = ex_servers(SERVERS[SLIDE_SERVER[proto]][1], proto, "0", "127.0.0.1")
    r = client(cargs, "127.0.0.1", str(srv.port), data=b"\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"From Server: \n"
    srv.stop()


@pytest.mark.parametrize("cid", CLIENTS)
def test_only_the_first_line_no_newline_needed(ex_servers, cid):
    proto, cargs, _ = CLIENTS[cid]
    srv = ex_servers(SERVERS[SLIDE_SERVER[proto]][1], proto, "0", "127.0.0.1")
    r = client(cargs, "127.0.0.1", str(srv.port), data=b"first line\nsecond line\n")
    check_reply(r, "first line")
    r = client(cargs, "127.0.0.1", str(srv.port), data=b"no newline at the end")
    check_reply(r, "no newline at the end")
    srv.stop()


@pytest.mark.parametrize("cid", CLIENTS)
def test_prompt_only_on_a_terminal(ex_servers, cid):
    """stdin a terminal: `Input lowercase sentence: ` first (a pipe: no prompt, as everywhere else here)."""
    proto, cargs, _ = CLIENTS[cid]
    srv = ex_servers(SERVERS[SLIDE_SERVER[proto]][1], proto, "0", "127.0.0.1")
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(
            example(cargs) + ["127.0.0.1", str(srv.port)],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
        )
        os.close(slave)
        slave = -1
        os.write(master, b"typed at a terminal\n")
        try:
            out, err = p.communicate(timeout=CLIENT_TIMEOUT)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=STOP_TIMEOUT)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert p.returncode == 0, err
    assert out == b"Input lowercase sentence: From Server: TYPED AT A TERMINAL\n"
    srv.stop()


def test_long_line_tcp(ex_servers):
    """100 KB in one line: nothing cut at the slide's recv(1024), both ways."""
    unit = "the quick brown fox jumps over the lazy dog 0123456789 "
    line = (unit * (100_000 // len(unit) + 1))[:100_000]
    for server, cid in (("TCPServer.py", "TCPClient.py"), ("rust_server.py-tcp", "rust_client.py-tcp")):
        srv = ex_servers(SERVERS[server][1], "tcp", "0", "127.0.0.1")
        check_reply(client(CLIENTS[cid][1], "127.0.0.1", str(srv.port), data=(line + "\n").encode()), line)
        srv.stop()


def test_large_datagram_udp(ex_servers):
    """60,000 bytes in one datagram: nothing cut at the slide's recvfrom(2048)."""
    line = ("abcdefghij" * 6000)[:60_000]
    for server, cid in (("UDPServer.py", "UDPClient.py"), ("rust_server.py-udp", "rust_client.py-udp")):
        srv = ex_servers(SERVERS[server][1], "udp", "0", "127.0.0.1")
        check_reply(client(CLIENTS[cid][1], "127.0.0.1", str(srv.port), data=(line + "\n").encode()), line)
        srv.stop()


@pytest.mark.parametrize("server", ["TCPServer.py", "rust_server.py-tcp"])
def test_tcp_server_answers_each_chunk(ex_servers, server):
    """Streaming: each chunk is answered as it arrives, before the client half-closes."""
    srv = ex_servers(SERVERS[server][1], "tcp", "0", "127.0.0.1")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5.0) as s:
        for chunk in (b"first chunk, ", b"second chunk\n", b"x" * 5000):
            s.sendall(chunk)
            got = b""
            while len(got) < len(chunk):
                part = s.recv(65536)
                assert part, "the server closed early"
                got += part
            assert got == chunk.upper()
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""  # and then it closes
    srv.stop()


def test_tcp_server_reuseaddr_restart(ex_servers):
    """SO_REUSEADDR: stopped while a client is connected (so the server's side
    of that connection closed first and sits in TIME_WAIT), TCPServer.py can
    be started again at once on the same port."""
    srv = ex_servers(["TCPServer.py"], "tcp", "0", "127.0.0.1")
    port = srv.port
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as s:
        s.sendall(b"hold on")
        assert s.recv(100) == b"HOLD ON"
        srv.stop()  # SIGTERM while the connection is open: the server closes first
        assert s.recv(1) == b""
    srv2 = ex_servers(["TCPServer.py"], "tcp", str(port), "127.0.0.1")
    assert srv2.port == port
    check_reply(client(["TCPClient.py"], "127.0.0.1", str(port), data=b"again\n"), "again")
    srv2.stop()


# ---------------------------------------------------------------- stopping


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("server", SERVERS)
def test_server_stops_on_signal(ex_servers, server, sig):
    """Idle, waiting for a client: the signal ends it with 0, no traceback, promptly."""
    proto, sargs = SERVERS[server]
    srv = ex_servers(sargs, proto, "0", "::1")
    t0 = time.monotonic()
    srv.stop(sig)  # exit 0, nothing on stderr
    assert time.monotonic() - t0 < 2.0
    assert srv.out.text() == f"The server is ready to receive\nlistening on [::1]:{srv.port}\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("server", ["TCPServer.py", "rust_server.py-tcp"])
def test_tcp_server_stops_with_a_client_connected(ex_servers, server, sig):
    """A client is connected and silent (TCPServer.py is blocked in its recv):
    the signal still ends the server at once, with 0."""
    srv = ex_servers(SERVERS[server][1], "tcp", "0", "127.0.0.1")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5.0) as s:
        s.sendall(b"abc")
        assert s.recv(10) == b"ABC"
        t0 = time.monotonic()
        srv.stop(sig)
        assert time.monotonic() - t0 < 2.0


def test_server_bind_failure(ex_servers):
    """A port already taken: a one-line message, exit 1, no traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        t.bind(("127.0.0.1", 0))
        t.listen(1)
        u.bind(("127.0.0.1", 0))
        for server, (proto, sargs) in SERVERS.items():
            port = (t if proto == "tcp" else u).getsockname()[1]
            r = run(example(sargs) + [str(port), "127.0.0.1"], timeout=CLIENT_TIMEOUT)
            assert r.returncode == 1, (server, r)
            assert r.stdout == b""
            err = r.stderr.decode()
            assert err.startswith(f"{sargs[0]}: ") and err.count("\n") == 1, (server, err)
            assert "Address already in use" in err, (server, err)


@pytest.mark.parametrize("args", [["x"], ["70000"], ["-1"], ["1", "127.0.0.1", "extra"]], ids=repr)
@pytest.mark.parametrize("server", SERVERS)
def test_server_usage(server, args):
    r = run(example(SERVERS[server][1]) + args, timeout=CLIENT_TIMEOUT)
    assert r.returncode == 2
    assert r.stdout == b""
    assert r.stderr.startswith(b"usage: ")


@pytest.mark.parametrize("args", [["localhost", "x"], ["localhost", "0"], ["localhost", "70000"], ["a", "1", "b"]], ids=repr)
@pytest.mark.parametrize("cid", CLIENTS)
def test_client_usage(cid, args):
    r = run(example(CLIENTS[cid][1]) + args, b"hello\n", timeout=CLIENT_TIMEOUT)
    assert r.returncode == 2
    assert r.stdout == b""
    assert r.stderr.startswith(b"usage: ")


# ---------------------------------------------------------------- client failures


def check_failure(r: subprocess.CompletedProcess, name: str, words: str) -> str:
    """Exit 1, nothing on stdout, one line `NAME: ...` on stderr (no traceback)."""
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, (r.returncode, err)
    assert r.stdout == b""
    assert err.startswith(f"{name}: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(words, err, re.I), err
    return err


@pytest.mark.parametrize("ip", FAMILIES)
@pytest.mark.parametrize("cid", ["TCPClient.py", "rust_client.py-tcp"])
def test_tcp_client_refused(cid, ip):
    host = FAMILIES[ip]
    _, cargs, name = CLIENTS[cid]
    # Bound but not listening: connections are refused, and nothing else can take the port meanwhile.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        t0 = time.monotonic()
        r = client(cargs, host, str(s.getsockname()[1]), data=b"anyone there?\n")
    check_failure(r, name, r"refused")
    assert time.monotonic() - t0 < 5.0


@pytest.mark.parametrize("cid", CLIENTS)
def test_client_unknown_host(cid):
    _, cargs, name = CLIENTS[cid]
    r = client(cargs, "no-such-host.invalid", "12000", data=b"hello\n")
    check_failure(r, name, r"unknown host no-such-host\.invalid")


@pytest.mark.parametrize("cid", ["UDPClient.py", "rust_client.py-udp"])
def test_udp_client_times_out(cid):
    """A bound socket that never answers: 1 s per try, the first send and 3
    retries, then a message saying it timed out, and exit 1."""
    _, cargs, name = CLIENTS[cid]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        t0 = time.monotonic()
        r = client(cargs, "127.0.0.1", str(s.getsockname()[1]), data=b"hello?\n", timeout=12)
        elapsed = time.monotonic() - t0
        got = 0
        s.setblocking(False)
        try:
            while True:
                assert s.recv(2048) == b"hello?"
                got += 1
        except BlockingIOError:
            pass
    check_failure(r, name, r"timed out")
    assert 3.5 <= elapsed < 8.0, elapsed
    assert got == 4  # 1 + 3 retries


@pytest.mark.parametrize("cid", CLIENTS)
def test_client_no_input(cid):
    """EOF before any line: nothing is sent, exit 1 with a message."""
    _, cargs, name = CLIENTS[cid]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.bind(("127.0.0.1", 0))
        t.listen(1)  # the TCP slide client connects before it reads its line
        r = client(cargs, "127.0.0.1", str(t.getsockname()[1]), data=b"")
    check_failure(r, name, r"no input")
