"""End-to-end runs of the six Python examples (examples/python/) on their own:

  TCPServer.py, UDPServer.py, TCPClient.py, UDPClient.py   the slide programs
                                                            on upcase.socket
  rust_server.py, rust_client.py                            the loops in Rust:
                                                            upcase.Server,
                                                            upcase.tcp_request /
                                                            udp_request

and of `python -m upcase server|client`, the console scripts upcase-server /
upcase-client, and the Rust example server (target/release/examples/upcase-server).

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
from pathlib import Path

import pytest

import upcase
from e2e_support import (
    CLIENT_TIMEOUT,
    EXAMPLES,
    FAMILIES,
    LINE,
    LINE_TIMEOUT,
    PYTHON,
    RUST_SERVER,
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


# ---------------------------------------------------------------- command lines

# Every command-line program: id -> (client or server, its name in messages, has the C programs' options).
PROGRAMS = {
    "TCPClient.py": ("client", "TCPClient.py", False),
    "UDPClient.py": ("client", "UDPClient.py", False),
    "TCPServer.py": ("server", "TCPServer.py", False),
    "UDPServer.py": ("server", "UDPServer.py", False),
    "rust_client.py": ("client", "rust_client.py", True),
    "rust_server.py": ("server", "rust_server.py", True),
    "python -m upcase client": ("client", "python -m upcase client", True),
    "python -m upcase server": ("server", "python -m upcase server", True),
    "upcase-client": ("client", "upcase-client", True),
    "upcase-server": ("server", "upcase-server", True),
    "upcase-server (Rust)": ("server", "upcase-server", True),
}
ORDER = {"client": ("[HOST [PORT]]", "HOST comes first, then PORT"),
         "server": ("[PORT [HOST]]", "PORT comes first, then HOST")}
MODULE = [PYTHON, "-m", "upcase"]


def program(pid: str) -> list[str]:
    """The argv that starts program `pid`, before its arguments."""
    if pid.endswith(".py"):
        return example([pid])
    if pid.startswith("python -m upcase "):
        return [*MODULE, pid.split()[-1]]
    if pid == "upcase-server (Rust)":
        return [need_file(RUST_SERVER, "run `make` (cargo build --release --examples)")]
    # maturin develop (make python) installs the console scripts next to the interpreter.
    return [need_file(Path(PYTHON).parent / pid, "run `make python`")]


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


UNSHARE = ["unshare", "-n"] if _unshare_works() else []


def run_without_stdin(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=CLIENT_TIMEOUT, env=child_env())


def check_usage_error(r: subprocess.CompletedProcess, name: str, *named: str) -> None:
    """Exit 2, nothing on stdout, stderr says `NAME: ...` naming each of `named`, and gives the usage line."""
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, (r.returncode, r.stdout, err)
    assert r.stdout == b""
    assert f"{name}: " in err and "usage: " in err and "Traceback" not in err, err
    for word in named:
        assert word in err, (word, err)


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("pid", PROGRAMS)
def test_help(pid, flag):
    """Usage on stdout and exit 0, read before stdin (the line there is not sent)."""
    kind, name, _ = PROGRAMS[pid]
    r = run(program(pid) + [flag], b"a line that must not be sent\n")
    assert r.returncode == 0, r
    assert r.stderr == b""
    out = r.stdout.decode()
    usage, order = ORDER[kind]
    first = out.splitlines()[0]
    assert first.startswith(f"usage: {name} ") and first.endswith(usage), out
    assert order in out.replace("\n", " "), out


@pytest.mark.parametrize("pid", PROGRAMS)
def test_version(pid):
    r = run(program(pid) + ["--version"])
    name = PROGRAMS[pid][1]
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{name} (upcase) {upcase.__version__}\n".encode(), b"")


@pytest.mark.parametrize("pid", PROGRAMS)
def test_unknown_option_is_named(pid):
    check_usage_error(run(program(pid) + ["--bogus"]), PROGRAMS[pid][1], "--bogus")


@pytest.mark.parametrize("pid", PROGRAMS)
def test_digits_only_host_is_refused(pid):
    """A HOST of digits only is a port in the wrong place, not an IPv4 number:
    exit 2 naming it, and nothing sent (run without a network: unshare -n,
    where it works, else with stdin closed)."""
    kind, name, _ = PROGRAMS[pid]
    args = ["70000"] if kind == "client" else ["0", "70000"]
    argv = program(pid) + args
    if UNSHARE:
        r = run([*UNSHARE, *argv], b"must not leave the machine\n")
    else:
        r = run_without_stdin(argv)
    check_usage_error(r, name, "HOST", "'70000'", "only digits")


@pytest.mark.parametrize("port", ["70000", "abc"])
@pytest.mark.parametrize("pid", PROGRAMS)
def test_bad_port_is_named(pid, port):
    kind, name, _ = PROGRAMS[pid]
    args = ["localhost", port] if kind == "client" else [port]
    check_usage_error(run(program(pid) + args, b"hello\n"), name, "PORT", f"'{port}'")


@pytest.mark.parametrize("pid", [pid for pid, (_, _, full) in PROGRAMS.items() if full])
def test_bad_option_value_is_named(pid):
    kind, name, _ = PROGRAMS[pid]
    for option in (["--timeout", "--retries"] if kind == "client" else ["--threads", "--min-rate"]):
        args = [option, "abc"] + (["--udp"] if option == "--retries" else [])
        check_usage_error(run(program(pid) + args, b"hello\n"), name, option, "'abc'")
        check_usage_error(run(program(pid) + [option], b"hello\n"), name, option)  # no value at all


@pytest.mark.parametrize("pid,args,named", [
    ("python -m upcase server", ["--udp", "--defer-accept"], "--defer-accept"),
    ("python -m upcase server", ["--max-datagram", "100"], "--max-datagram"),
    ("python -m upcase client", ["--retries", "2"], "--retries"),
    ("rust_server.py", ["--udp", "--idle-timeout", "5"], "--idle-timeout"),
    ("upcase-server (Rust)", ["--udp", "--io-uring"], "--io-uring"),
    ("upcase-server (Rust)", ["--max-datagram", "100"], "--max-datagram"),
])
def test_option_of_the_other_protocol_is_refused(pid, args, named):
    """An option the chosen protocol has no use for is a usage error, not ignored."""
    check_usage_error(run(program(pid) + args, b"hello\n"), PROGRAMS[pid][1], named)


@pytest.mark.parametrize("args,status,words", [
    ([], 2, "server or client"),
    (["bogus"], 2, "'bogus'"),
    (["--help"], 0, "python -m upcase client [options] [HOST [PORT]]"),
    (["--version"], 0, f"(upcase) {upcase.__version__}"),
])
def test_module_commands(args, status, words):
    r = run(MODULE + args)
    assert r.returncode == status, r
    assert words in (r.stdout if status == 0 else r.stderr).decode(), r


# ---------------------------------------------------------------- python -m upcase, console scripts, Rust


def module_server(ex_servers_list: list, proto: str, *args: str, launcher: str = "module") -> ServerProc:
    argv = [*MODULE, "server"] if launcher == "module" else program("upcase-server")
    srv = ServerProc(argv + (["--udp"] if proto == "udp" else []) + list(args), proto, name=f"{launcher} server")
    ex_servers_list.append(srv)
    return srv


def module_client(proto: str, *args: str, data: bytes = b"", launcher: str = "module",
                  timeout: float = CLIENT_TIMEOUT) -> subprocess.CompletedProcess:
    argv = [*MODULE, "client"] if launcher == "module" else program("upcase-client")
    return run(argv + (["--udp"] if proto == "udp" else []) + list(args), data, timeout=timeout)


@pytest.fixture
def started():
    """Servers started by a test; killed (by PID) at the end if still running."""
    servers: list[ServerProc] = []
    yield servers
    for srv in servers:
        srv.kill()


@pytest.mark.parametrize("launcher", ["module", "scripts"])
@pytest.mark.parametrize("ip", FAMILIES)
@pytest.mark.parametrize("proto", PROTOS)
def test_module_server_and_client(started, proto, ip, launcher):
    """`python -m upcase server` / `client` (and upcase-server / upcase-client):
    every line of stdin is a request; TCP keeps one connection for all."""
    host = FAMILIES[ip]
    srv = module_server(started, proto, "0", host, launcher=launcher)
    data = b"first line\n\n" + LINE.encode() + b"\nno newline at the end"
    r = module_client(proto, host, str(srv.port), data=data, launcher=launcher)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    assert r.stdout == (b"From Server: FIRST LINE\nFrom Server: \n"
                        + f"From Server: {upper_ascii(LINE)}\n".encode() + b"From Server: NO NEWLINE AT THE END\n")
    if proto == "tcp":
        srv.out.wait_for(srv.client_pattern(host), LINE_TIMEOUT)
    else:
        srv.out.wait_for(srv.client_pattern(host), LINE_TIMEOUT, at_least=4)
    srv.stop()
    lines = srv.out.text().splitlines()
    assert lines[:2] == ["The server is ready to receive", f"listening on {fmt_addr(host, srv.port)}"]
    if proto == "tcp":
        assert len(lines) == 3, lines  # one connection for the four lines


@pytest.mark.parametrize("proto", PROTOS)
def test_module_client_message_option(started, proto):
    """-m TEXT is the request; stdin is not read; options may follow HOST PORT."""
    srv = module_server(started, proto, "--quiet", "0", "127.0.0.1")
    r = run_without_stdin([*MODULE, "client", "127.0.0.1", str(srv.port), "-m", "given with -m"]
                          + (["--udp"] if proto == "udp" else []))
    assert (r.returncode, r.stdout, r.stderr) == (0, b"From Server: GIVEN WITH -M\n", b"")
    srv.stop()
    assert srv.out.text().count(" from ") == 0  # --quiet


def test_module_client_reconnects_after_idle_timeout(started):
    """The server closes a kept connection that stays quiet past --idle-timeout;
    the client's next line goes on a new one."""
    srv = module_server(started, "tcp", "--idle-timeout", "1", "0", "127.0.0.1")
    p = subprocess.Popen([*MODULE, "client", "127.0.0.1", str(srv.port)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
    try:
        p.stdin.write(b"before\n")
        p.stdin.flush()
        assert p.stdout.readline() == b"From Server: BEFORE\n"
        srv.out.wait_for(srv.client_pattern("127.0.0.1"), LINE_TIMEOUT)
        time.sleep(2.5)  # past the idle timeout: the server has closed the connection
        out, err = p.communicate(b"after\n", timeout=CLIENT_TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=STOP_TIMEOUT)
    assert (p.returncode, out, err) == (0, b"From Server: AFTER\n", b"")
    srv.out.wait_for(srv.client_pattern("127.0.0.1"), LINE_TIMEOUT, at_least=2)
    srv.stop()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("proto", PROTOS)
def test_module_server_stops_on_signal(started, proto, sig):
    srv = module_server(started, proto, "0", "::1")
    t0 = time.monotonic()
    srv.stop(sig)  # exit 0, nothing on stderr
    assert time.monotonic() - t0 < 2.0
    assert srv.out.text() == f"The server is ready to receive\nlistening on [::1]:{srv.port}\n"


def test_module_client_failures():
    """Refused, no reply (--timeout 0.2 --retries 1: two sends), no input: exit 1, one line."""
    name = "python -m upcase client"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.bind(("127.0.0.1", 0))
        check_failure(module_client("tcp", "127.0.0.1", str(t.getsockname()[1]), data=b"x\n"), name, "refused")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", 0))
        t0 = time.monotonic()
        r = module_client("udp", "--timeout", "0.2", "--retries", "1", "127.0.0.1", str(u.getsockname()[1]),
                          data=b"hello?\n")
        elapsed = time.monotonic() - t0
        u.setblocking(False)
        got = 0
        try:
            while True:
                assert u.recv(100) == b"hello?"
                got += 1
        except BlockingIOError:
            pass
    check_failure(r, name, "timed out")
    assert got == 2 and elapsed < 3.0, (got, elapsed)
    check_failure(module_client("tcp", "127.0.0.1", "9", data=b""), name, "no input")


def test_module_server_bind_failure():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.bind(("127.0.0.1", 0))
        t.listen(1)
        r = run([*MODULE, "server", str(t.getsockname()[1]), "127.0.0.1"])
    assert r.returncode == 1 and r.stdout == b"", r
    err = r.stderr.decode()
    assert err.startswith("python -m upcase server: cannot bind") and "in use" in err, err


@pytest.mark.parametrize("proto", PROTOS)
def test_rust_example_server(started, proto):
    """The Rust example takes the same options: --quiet, --threads and, for
    UDP, --max-datagram (a longer datagram gets no answer)."""
    extra = ["--udp", "--max-datagram", "10"] if proto == "udp" else ["--idle-timeout", "5"]
    argv = [*program("upcase-server (Rust)"), "--quiet", "--threads", "1", *extra, "0", "127.0.0.1"]
    srv = ServerProc(argv, proto, name="upcase-server (Rust)")
    started.append(srv)
    r = module_client(proto, "127.0.0.1", str(srv.port), data=b"from rust\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"From Server: FROM RUST\n", b"")
    if proto == "udp":
        r = module_client(proto, "--timeout", "0.3", "--retries", "0", "127.0.0.1", str(srv.port),
                          data=b"eleven byte\n")
        check_failure(r, "python -m upcase client", "timed out")
    srv.stop()
    assert srv.out.text().count(" from ") == 0  # --quiet


def test_module_client_at_a_terminal(started):
    """At a terminal: a prompt before each line, and after Ctrl-D a newline, so the shell's prompt starts a line."""
    srv = module_server(started, "tcp", "--quiet", "0", "127.0.0.1")
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([*MODULE, "client", "127.0.0.1", str(srv.port)], stdin=slave,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())
        os.close(slave)
        slave = -1
        os.write(master, b"typed at a terminal\n\x04")  # a line, then Ctrl-D
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
    assert (p.returncode, err) == (0, b"")
    assert out == b"Input lowercase sentence: From Server: TYPED AT A TERMINAL\nInput lowercase sentence: \n"
    srv.stop()


@pytest.mark.parametrize("pid", ["python -m upcase server", "upcase-server (Rust)"])
def test_max_connections_per_address_option(started, pid):
    """The C server's --max-per-address: a second connection from
    127.0.0.1 is closed at once while the first is held."""
    argv = [*program(pid), "--quiet", "--max-per-address", "1", "0", "127.0.0.1"]
    srv = ServerProc(argv, "tcp", name=pid)
    started.append(srv)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5.0) as held:
        held.sendall(b"a")
        assert held.recv(16) == b"A"
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5.0) as extra:
            extra.sendall(b"x")
            try:
                assert extra.recv(16) == b""
            except ConnectionResetError:
                pass
    srv.stop()


# ---------------------------------------------------------------- TLS on the Rust example server

TLS_NAME = "upcase.test"


@pytest.fixture
def tls_files(tmp_path):
    """A throwaway CA and a P-256 certificate for upcase.test signed by it,
    made with the openssl command: (ca.pem, server.pem, server.key)."""
    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        assert not os.environ.get("CI"), "the openssl command is missing (.ci/run installs it)"
        pytest.skip("the openssl command is not installed")

    def openssl(*args: str) -> None:
        r = subprocess.run(["openssl", *args], capture_output=True, cwd=tmp_path, timeout=CLIENT_TIMEOUT)
        assert r.returncode == 0, r.stderr.decode()

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=upcase test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={TLS_NAME}")
    (tmp_path / "ext").write_text(f"subjectAltName=DNS:{TLS_NAME}\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "1", "-extfile", "ext")
    return tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"


@pytest.mark.parametrize("args,named", [
    (["--tls-cert", "server.pem"], ["--tls-cert", "--tls-key"]),
    (["--tls-key", "server.key"], ["--tls-key", "--tls-cert"]),
    (["--tls-client-ca", "ca.pem"], ["--tls-client-ca"]),
    (["--tls-handshake-timeout", "5"], ["--tls-handshake-timeout"]),
    (["--tls-cert", "server.pem", "--tls-key", "server.key", "--tls-handshake-timeout", "0"],
     ["--tls-handshake-timeout", "'0'"]),
    (["--tls-cert", "", "--tls-key", "server.key"], ["--tls-cert", "''"]),
    (["--udp", "--tls-cert", "server.pem", "--tls-key", "server.key"], ["not --udp"]),
    (["--io-uring", "--tls-cert", "server.pem", "--tls-key", "server.key"], ["--io-uring", "TLS"]),
])
def test_rust_server_tls_usage_errors(args, named):
    """TLS options without their partners, of the wrong protocol or loop, or
    with a bad value, are usage errors (read before any file is)."""
    check_usage_error(run(program("upcase-server (Rust)") + args), "upcase-server", *named)


def test_rust_server_names_a_bad_tls_file(tls_files):
    """A missing or mismatched file fails at start (exit 1), naming it."""
    ca, cert, key = tls_files
    for args, words in [([str(cert.parent / "missing.pem"), str(key)], "missing.pem"),
                        ([str(cert), str(ca)], "ca.pem")]:
        r = run(program("upcase-server (Rust)") + ["--tls-cert", args[0], "--tls-key", args[1], "0", "127.0.0.1"])
        err = r.stderr.decode()
        assert (r.returncode, r.stdout) == (1, b""), r
        assert err.startswith("upcase-server: ") and words in err, err


def test_rust_server_serves_tls(started, tls_files):
    """--tls-cert / --tls-key: Python's ssl module gets its line back
    upper-cased and the server's close_notify; --tls-handshake-timeout
    closes a client that never starts its handshake."""
    import ssl

    ca, cert, key = tls_files
    argv = [*program("upcase-server (Rust)"), "--quiet", "--tls-cert", str(cert), "--tls-key", str(key),
            "--tls-handshake-timeout", "1", "0", "127.0.0.1"]
    srv = ServerProc(argv, "tcp", name="upcase-server (Rust)")
    started.append(srv)
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=CLIENT_TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname=TLS_NAME) as tls:
            tls.sendall(b"from rust over tls")
            assert tls.recv(64) == b"FROM RUST OVER TLS"
            tls.unwrap()  # our close_notify, then the server's
    with socket.create_connection(("127.0.0.1", srv.port), timeout=CLIENT_TIMEOUT) as silent:
        started_at = time.monotonic()
        assert silent.recv(16) == b""
        assert 0.9 < time.monotonic() - started_at < 5
    srv.stop()
