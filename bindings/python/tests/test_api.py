"""The module-level API: upper, tcp_request, udp_request, Connection, Server,
the byte-order helpers and the exceptions every failure raises."""

from __future__ import annotations

import array
import errno
import math
import os
import random
import socket as std_socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import upcase
from conftest import LOOPBACKS

pytestmark = pytest.mark.timeout(60)

LOWER = bytes(range(ord("a"), ord("z") + 1))
UPPER = bytes(range(ord("A"), ord("Z") + 1))
TABLE = bytes.maketrans(LOWER, UPPER)


def expected(data: bytes) -> bytes:
    """The wire contract: ASCII a-z to A-Z, every other byte unchanged."""
    return bytes(data).translate(TABLE)


def stats_reach(server: upcase.Server, want: dict, base: dict, timeout: float = 5.0) -> dict:
    """The server's stats once every counter in want has moved by that much
    from base (the loops publish their counters just after replying, so a
    snapshot taken right after a reply may still lag), or the last snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        now = server.stats()
        if all(now[k] - base[k] >= v for k, v in want.items()) or time.monotonic() > deadline:
            return now
        time.sleep(0.01)


def request(server: upcase.Server, data, **kw):
    host = server.address[0]
    if server.transport == "tcp":
        return upcase.tcp_request(host, server.port, data, **kw)
    return upcase.udp_request(host, server.port, data, **kw)


# --------------------------------------------------------------- upper()


def test_upper_all_256_byte_values():
    data = bytes(range(256))
    out = upcase.upper(data)
    assert type(out) is bytes
    assert out == expected(data)
    for b in range(256):
        one = upcase.upper(bytes([b]))
        want = b - 32 if ord("a") <= b <= ord("z") else b
        assert one == bytes([want]), b


@pytest.mark.parametrize(
    "make",
    [bytes, bytearray, memoryview, lambda b: array.array("B", b)],
    ids=["bytes", "bytearray", "memoryview", "array"],
)
def test_upper_bytes_like_gives_bytes(make):
    out = upcase.upper(make(b"Hello, World! 123 \x00\xff"))
    assert type(out) is bytes
    assert out == b"HELLO, WORLD! 123 \x00\xff"


def test_upper_non_contiguous_memoryview():
    view = memoryview(b"aXbYcZ")[::2]
    assert upcase.upper(view) == b"ABC"


def test_upper_str_gives_str_and_keeps_non_ascii():
    out = upcase.upper("héllo wörld ß ﬁ ä")
    assert type(out) is str
    # Only ASCII letters change: UTF-8 passes through unharmed.
    assert out == "HéLLO WöRLD ß ﬁ ä"


def test_upper_empty():
    assert upcase.upper(b"") == b""
    assert upcase.upper("") == ""
    assert upcase.upper(bytearray()) == b""


def test_upper_does_not_modify_its_argument():
    buf = bytearray(b"abc")
    assert upcase.upper(buf) == b"ABC"
    assert buf == bytearray(b"abc")


@pytest.mark.parametrize("bad", [1, 1.5, None, [1, 2], object()])
def test_upper_type_error(bad):
    with pytest.raises(TypeError):
        upcase.upper(bad)


# ------------------------------------------------ tcp_request / udp_request


@pytest.mark.parametrize(
    "data, want",
    [
        (b"hello", b"HELLO"),
        (bytearray(b"hello"), b"HELLO"),
        (memoryview(b"hello"), b"HELLO"),
        ("hello", "HELLO"),
        ("héllo → wörld", "HéLLO → WöRLD"),
        (b"", b""),
        ("", ""),
    ],
    ids=["bytes", "bytearray", "memoryview", "str", "str-utf8", "empty-bytes", "empty-str"],
)
def test_request_type_round_trip(api_server, data, want):
    got = request(api_server, data)
    assert type(got) is type(want)
    assert got == want


def test_request_all_byte_values(api_server):
    data = bytes(range(256)) * 4
    assert request(api_server, data) == expected(data)


def test_tcp_request_one_mebibyte(api_tcp_server):
    data = random.Random(1).randbytes(1 << 20)
    got = upcase.tcp_request("127.0.0.1", api_tcp_server.port, data)
    assert len(got) == len(data)
    assert got == expected(data)


def test_udp_request_largest_ipv4_datagram(api_udp_server):
    data = random.Random(2).randbytes(65507)
    got = upcase.udp_request("127.0.0.1", api_udp_server.port, data)
    assert len(got) == 65507
    assert got == expected(data)


def test_udp_request_too_large_for_ipv4(api_udp_server):
    # The kernel refuses it: an OSError, never a cut datagram.
    with pytest.raises(OSError) as ei:
        upcase.udp_request("127.0.0.1", api_udp_server.port, b"a" * 65508)
    assert ei.value.errno == errno.EMSGSIZE


def in_threads(count, work):
    """Runs work(0) ... work(count - 1) on as many threads at once; returns
    what they raised."""
    errors = []

    def run(n):
        try:
            work(n)
        except BaseException as e:  # noqa: BLE001 - returned to the caller
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def test_requests_from_many_threads(api_server):
    def worker(n):
        for i in range(20):
            msg = f"thread {n} message {i}"
            assert request(api_server, msg) == msg.upper()

    assert not in_threads(8, worker)


# ----------------------------------------------------------- Connection


def test_connection_thousand_requests(api_tcp_server):
    rng = random.Random(3)
    with upcase.Connection("127.0.0.1", api_tcp_server.port) as conn:
        for i in range(1000):
            data = rng.randbytes(rng.randrange(0, 200))
            assert conn.request(data) == expected(data), i
        assert conn.request("mixed Types ok") == "MIXED TYPES OK"
    stats = api_tcp_server.stats()
    assert stats["connections_accepted"] >= 1


def test_connection_large_request(api_tcp_server):
    data = random.Random(4).randbytes(1 << 20)
    with upcase.Connection("127.0.0.1", api_tcp_server.port) as conn:
        assert conn.request(data) == expected(data)
        assert conn.request(b"after") == b"AFTER"


@pytest.mark.parametrize("host", LOOPBACKS)
def test_connection_types(host):
    with upcase.Server(host, 0) as server:
        with upcase.Connection(host, server.port, timeout=5.0) as conn:
            assert conn.request(b"abc") == b"ABC"
            assert conn.request(bytearray(b"abc")) == b"ABC"
            assert conn.request(memoryview(b"abc")) == b"ABC"
            assert conn.request("abc") == "ABC"
            assert conn.request(b"") == b""
            with pytest.raises(TypeError):
                conn.request(42)


def test_connection_closed_behaviour(api_tcp_server):
    conn = upcase.Connection("127.0.0.1", api_tcp_server.port)
    assert conn.closed is False
    assert "open" in repr(conn)
    with conn as same:
        assert same is conn
        assert conn.request(b"x") == b"X"
    assert conn.closed is True
    assert "closed" in repr(conn)
    conn.close()  # again: nothing happens
    assert conn.closed is True
    with pytest.raises(OSError) as ei:
        conn.request(b"x")
    assert ei.value.errno == errno.EBADF


def test_connection_context_manager_closes_on_exception(api_tcp_server):
    with pytest.raises(RuntimeError):
        with upcase.Connection("127.0.0.1", api_tcp_server.port) as conn:
            raise RuntimeError("boom")
    assert conn.closed


def test_connection_does_not_leak_descriptors(api_tcp_server, api_counts, api_settle):
    # The server's loop threads set themselves up after start() returns:
    # let them, and count from there.
    for _ in range(5):
        upcase.tcp_request("127.0.0.1", api_tcp_server.port, b"warm up")
    time.sleep(0.2)
    base = api_counts()
    for _ in range(50):
        with upcase.Connection("127.0.0.1", api_tcp_server.port) as conn:
            conn.request(b"a")
    assert api_settle(base)[0] <= base[0]


# --------------------------------------------------------------- Server


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest.mark.parametrize("mode", ["concurrent", "iterative"])
@pytest.mark.parametrize("host", LOOPBACKS)
def test_server_properties(host, transport, mode):
    server = upcase.Server(host, 0, transport=transport, mode=mode)
    try:
        assert isinstance(server.port, int) and 0 < server.port < 65536
        assert server.address == (host, server.port)
        assert server.transport == transport
        assert server.mode == mode
        assert server.running is False
        assert transport in repr(server) and mode in repr(server)
        server.start()
        assert server.running is True
        assert "running" in repr(server)
        assert request(server, b"props") == b"PROPS"
    finally:
        server.stop()
    assert server.running is False


def test_server_defaults():
    server = upcase.Server(port=0)
    assert server.address[0] == "127.0.0.1"
    assert server.transport == "tcp"
    assert server.mode == "concurrent"


def test_server_reachable_once_constructed():
    # Binds (and listens) on construction: a client queues until start().
    server = upcase.Server("127.0.0.1", 0)
    result = []
    t = threading.Thread(target=lambda: result.append(upcase.tcp_request("127.0.0.1", server.port, b"early")))
    t.start()
    time.sleep(0.2)
    assert not result
    server.start()
    t.join(10)
    server.stop()
    assert result == [b"EARLY"]


def test_server_stats_tcp(api_tcp_server):
    before = api_tcp_server.stats()
    assert set(before) >= {
        "connections_accepted",
        "connections_active",
        "connections_rejected",
        "bytes_in",
        "bytes_out",
        "datagrams_in",
        "datagrams_out",
        "datagrams_dropped",
        "errors",
        "idle_timeouts",
    }
    assert all(isinstance(v, int) for v in before.values())
    for _ in range(3):
        upcase.tcp_request("127.0.0.1", api_tcp_server.port, b"0123456789")
    with upcase.Connection("127.0.0.1", api_tcp_server.port) as conn:
        conn.request(b"abc")
        during = api_tcp_server.stats()
        assert during["connections_active"] >= 1
    after = stats_reach(api_tcp_server, {"connections_accepted": 4, "bytes_in": 33, "bytes_out": 33}, before)
    assert after["connections_accepted"] - before["connections_accepted"] == 4
    assert after["bytes_in"] - before["bytes_in"] == 33
    assert after["bytes_out"] - before["bytes_out"] == 33
    assert after["datagrams_in"] == before["datagrams_in"]
    deadline = time.monotonic() + 5
    while api_tcp_server.stats()["connections_active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert api_tcp_server.stats()["connections_active"] == 0


def test_server_stats_udp(api_udp_server):
    before = api_udp_server.stats()
    for _ in range(5):
        # One try, waited for long: a retry would be counted as well.
        upcase.udp_request("127.0.0.1", api_udp_server.port, b"abcd", timeout=5.0, retries=0)
    want = {"datagrams_in": 5, "datagrams_out": 5, "bytes_in": 20, "bytes_out": 20}
    after = stats_reach(api_udp_server, want, before)
    assert after["datagrams_in"] - before["datagrams_in"] == 5
    assert after["datagrams_out"] - before["datagrams_out"] == 5
    assert after["bytes_in"] - before["bytes_in"] == 20
    assert after["bytes_out"] - before["bytes_out"] == 20
    assert after["connections_accepted"] == 0


def test_server_udp_drops_datagram_above_max_datagram():
    with upcase.Server("127.0.0.1", 0, transport="udp", max_datagram=100) as server:
        assert upcase.udp_request("127.0.0.1", server.port, b"a" * 100) == b"A" * 100
        with pytest.raises(TimeoutError):
            upcase.udp_request("127.0.0.1", server.port, b"a" * 101, timeout=0.2, retries=0)
        zero = dict.fromkeys(server.stats(), 0)
        assert stats_reach(server, {"datagrams_dropped": 1}, zero)["datagrams_dropped"] >= 1


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_server_context_manager(transport):
    server = upcase.Server("127.0.0.1", 0, transport=transport)
    assert not server.running
    with server as same:
        assert same is server
        assert server.running
        assert request(server, "ctx") == "CTX"
    assert not server.running


def test_server_context_manager_stops_on_exception():
    server = upcase.Server("127.0.0.1", 0)
    with pytest.raises(KeyError):
        with server:
            raise KeyError("boom")
    assert not server.running


def test_server_context_manager_releases_port():
    # After the with block the server is done: new clients are refused and
    # the port can be bound again, as with the standard socketserver.
    with upcase.Server("127.0.0.1", 0) as server:
        port = server.port
        assert upcase.tcp_request("127.0.0.1", port, b"a") == b"A"
    with pytest.raises(ConnectionRefusedError):
        upcase.tcp_request("127.0.0.1", port, b"a", timeout=1.0)


def test_server_start_twice_is_an_error(api_tcp_server):
    with pytest.raises(RuntimeError):
        api_tcp_server.start()
    assert api_tcp_server.running


def test_server_stop_when_not_running():
    server = upcase.Server("127.0.0.1", 0)
    server.stop()
    server.stop()
    assert not server.running


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_server_start_stop_50_times_same_object(transport, api_counts, api_settle):
    server = upcase.Server("127.0.0.1", 0, transport=transport)
    port = server.port
    server.start()
    server.stop()
    base = api_counts()
    for i in range(50):
        server.start()
        assert server.running
        if i % 10 == 0:
            assert request(server, b"again") == b"AGAIN"
        server.stop()
        assert not server.running
        assert server.port == port
    fds, threads = api_settle(base)
    assert fds <= base[0], f"descriptors: {base[0]} before, {fds} after 50 start/stop"
    assert threads <= base[1], f"threads: {base[1]} before, {threads} after 50 start/stop"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest.mark.parametrize("mode", ["concurrent", "iterative"])
def test_server_50_new_objects_no_leak(transport, mode, api_counts, api_settle):
    def once(i):
        server = upcase.Server("127.0.0.1", 0, transport=transport, mode=mode)
        server.start()
        if i % 10 == 0:
            assert request(server, b"fresh") == b"FRESH"
        server.stop()

    once(0)  # warm up anything created once per process
    base = api_counts()
    for i in range(50):
        once(i)
    fds, threads = api_settle(base)
    assert fds <= base[0], f"descriptors: {base[0]} before, {fds} after"
    assert threads <= base[1], f"threads: {base[1]} before, {threads} after"


def test_server_context_manager_50_new_objects_no_leak(api_counts, api_settle):
    with upcase.Server("127.0.0.1", 0):
        pass
    base = api_counts()
    for _ in range(50):
        with upcase.Server("127.0.0.1", 0, transport="tcp") as s:
            assert s.running
        del s
    fds, threads = api_settle(base)
    assert fds <= base[0], f"descriptors: {base[0]} before, {fds} after"
    assert threads <= base[1], f"threads: {base[1]} before, {threads} after"


def test_server_threads_argument():
    with upcase.Server("127.0.0.1", 0, threads=3) as server:
        assert upcase.tcp_request("127.0.0.1", server.port, b"t3") == b"T3"


def test_server_serving_threads_visible_and_gone(api_counts, api_settle):
    base = api_counts()
    server = upcase.Server("127.0.0.1", 0, threads=4)
    server.start()
    upcase.tcp_request("127.0.0.1", server.port, b"x")
    assert api_counts()[1] >= base[1] + 1
    server.stop()
    del server
    fds, threads = api_settle(base)
    assert threads <= base[1]
    assert fds <= base[0]


def test_server_dropped_while_running_does_not_leak(api_counts, api_settle):
    server = upcase.Server("127.0.0.1", 0)
    server.start()
    server.stop()
    del server
    base = api_counts()
    for _ in range(20):
        server = upcase.Server("127.0.0.1", 0)
        server.start()
        assert upcase.tcp_request("127.0.0.1", server.port, b"x") == b"X"
        del server  # never stopped: dropping it stops it
    fds, threads = api_settle(base)
    assert fds <= base[0], f"descriptors: {base[0]} before, {fds} after"
    assert threads <= base[1], f"threads: {base[1]} before, {threads} after"


def trickle_until_closed(port, every, limit):
    """Sends one byte every `every` seconds, reading each reply, for at most
    `limit` seconds: how long until the server closed (None: it did not)."""
    conn = upcase.Connection("127.0.0.1", port)
    t = time.monotonic()
    try:
        while time.monotonic() - t < limit:
            try:
                assert conn.request(b"z") == b"Z"
            except (ConnectionError, OSError):
                return time.monotonic() - t
            time.sleep(every)
        return None
    finally:
        conn.close()


def test_server_min_rate_closes_a_trickling_client():
    # Idle timeout 1 s, at least 100 bytes/s: one byte every 0.3 s is
    # never idle for long, but runs out of credit after about a second.
    with upcase.Server("127.0.0.1", 0, idle_timeout=1.0, min_rate=100) as server:
        closed = trickle_until_closed(server.port, 0.3, 5)
        assert closed is not None and closed >= 0.9, closed
        assert server.stats()["idle_timeouts"] == 1
    # Off, the same client lives on (idle timeout 3 s here: a stall of the
    # test's thread is not the server's).
    with upcase.Server("127.0.0.1", 0, idle_timeout=3.0, min_rate=0) as server:
        assert trickle_until_closed(server.port, 0.3, 2.5) is None
        assert server.stats()["idle_timeouts"] == 0


def io_uring_built():
    """Was this module built with the io-uring feature? (The default
    wheel is not: asking for io_uring then fails at bind.)"""
    try:
        upcase.Server("127.0.0.1", 0, io_uring=True).stop()
        return True
    except ValueError as e:
        assert "feature io-uring" in str(e), e
        return False


def test_server_io_uring_not_built_says_so():
    if io_uring_built():
        pytest.skip("this module has the io_uring loop")
    with pytest.raises(ValueError, match="cargo feature io-uring"):
        upcase.Server("127.0.0.1", 0, io_uring=True)


@pytest.mark.parametrize("host", LOOPBACKS)
def test_server_on_io_uring_serves_and_counts(host):
    if not io_uring_built():
        pytest.skip("built without the io-uring feature (the Rust and C suites run it)")
    with upcase.Server(host, 0, io_uring=True) as server:
        data = bytes(range(256)) * 4096  # 1 MiB, every byte value
        assert upcase.tcp_request(host, server.port, data) == expected(data)
        with upcase.Connection(host, server.port) as conn:
            for i in range(1000):
                msg = f"request {i} of a kept-open connection".encode()
                assert conn.request(msg) == expected(msg)
        # Many at once, from threads: every reply is the right one.
        def client(k):
            for j in range(20):
                msg = f"client {k} message {j}".encode() * 50
                assert upcase.tcp_request(host, server.port, msg) == expected(msg), (k, j)

        assert in_threads(16, client) == []
        stats = stats_reach(server, {"connections_accepted": 322}, {k: 0 for k in server.stats()})
        assert stats["connections_accepted"] == 322
        assert stats["errors"] == 0


@pytest.mark.parametrize("kwargs", [{"transport": "udp"}, {"mode": "iterative"}], ids=["udp", "iterative"])
def test_server_io_uring_is_for_the_concurrent_tcp_server_only(kwargs):
    with pytest.raises(ValueError, match="io_uring"):
        upcase.Server("127.0.0.1", 0, io_uring=True, **kwargs)


def test_server_idle_timeout():
    with upcase.Server("127.0.0.1", 0, idle_timeout=0.3) as server:
        conn = upcase.Connection("127.0.0.1", server.port)
        assert conn.request(b"a") == b"A"
        deadline = time.monotonic() + 5
        while server.stats()["idle_timeouts"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.stats()["idle_timeouts"] == 1
        with pytest.raises(ConnectionError):
            conn.request(b"b")
        conn.close()


def test_server_max_connections():
    with upcase.Server("127.0.0.1", 0, max_connections=1) as server:
        with upcase.Connection("127.0.0.1", server.port) as first:
            assert first.request(b"one") == b"ONE"
            with pytest.raises(ConnectionError):
                with upcase.Connection("127.0.0.1", server.port) as second:
                    second.request(b"two")
            zero = dict.fromkeys(server.stats(), 0)
            assert stats_reach(server, {"connections_rejected": 1}, zero)["connections_rejected"] >= 1
            assert first.request(b"still") == b"STILL"
        # The server sees the first client go asynchronously.
        deadline = time.monotonic() + 5
        while server.stats()["connections_active"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert upcase.tcp_request("127.0.0.1", server.port, b"later") == b"LATER"


@pytest.mark.parametrize("threads", [1, 8])
def test_stop_from_on_client_callback(threads):
    # stop() "from any thread" includes the server's own loop threads,
    # inside on_client: it must stop the server, not panic (joining its own
    # thread) or deadlock (joining the thread that waits for it). Run in a
    # child so that a Rust panic or a hang cannot take the test run down.
    code = textwrap.dedent(
        """
        import os, sys, time, upcase
        def nthreads():
            return len(os.listdir("/proc/self/task"))
        base = nthreads()
        reported = []
        sys.unraisablehook = lambda u: reported.append(repr(u.exc_value))
        holder = {}
        def on_client(host, port):
            holder["server"].stop()
        server = upcase.Server("127.0.0.1", 0, on_client=on_client, threads=THREADS)
        holder["server"] = server
        server.start()
        try:
            upcase.tcp_request("127.0.0.1", server.port, b"x", timeout=2)
        except OSError:
            pass  # whether this client is served is not specified
        deadline = time.monotonic() + 3
        while (server.running or nthreads() > base) and time.monotonic() < deadline:
            time.sleep(0.01)
        print("running", server.running, "threads", nthreads() - base, "reported", reported, flush=True)
        server.stop()
        """
    ).replace("THREADS", str(threads))
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("stop() from on_client hung the process")
    assert "panicked" not in proc.stderr, proc.stderr[-1500:]
    assert "PanicException" not in proc.stderr + proc.stdout, proc.stderr[-1500:]
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "running False threads 0 reported []" in proc.stdout, proc.stdout


@pytest.mark.parametrize("bad", ["sctp", "", "TCPX", "raw"])
def test_server_bad_transport(bad):
    with pytest.raises(ValueError):
        upcase.Server("127.0.0.1", 0, transport=bad)


@pytest.mark.parametrize("bad", ["parallel", "", "threaded"])
def test_server_bad_mode(bad):
    with pytest.raises(ValueError):
        upcase.Server("127.0.0.1", 0, mode=bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threads": 0},
        {"threads": -2},
        {"max_connections": 0},
        {"backlog": 0},
        {"max_datagram": 0},
        {"max_datagram": 70000},
        {"idle_timeout": 0},
        {"idle_timeout": -1.0},
        {"idle_timeout": math.nan},
        {"min_rate": -1},
        {"min_rate": 1_000_000_001},
    ],
    ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()),
)
def test_server_bad_config_value(kwargs):
    with pytest.raises(ValueError):
        upcase.Server("127.0.0.1", 0, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"transport": 1},
        {"mode": None},
        {"port": "80"},
        {"host": 127},
        {"on_client": 42},
        {"threads": "2"},
    ],
    ids=lambda kw: "-".join(kw),
)
def test_server_bad_argument_type(kwargs):
    args = {"host": "127.0.0.1", "port": 0, **kwargs}
    with pytest.raises(TypeError):
        upcase.Server(**args)


@pytest.mark.parametrize("port", [-1, 65536, 2**31])
def test_server_port_out_of_range(port):
    with pytest.raises((OverflowError, ValueError)):
        upcase.Server("127.0.0.1", port)


def test_server_on_client_tcp():
    seen = []
    got = threading.Event()

    def on_client(host, port):
        seen.append((host, port))
        got.set()

    with upcase.Server("127.0.0.1", 0, on_client=on_client) as server:
        with std_socket.create_connection(("127.0.0.1", server.port)) as c:
            me = c.getsockname()
            c.sendall(b"hi")
            assert c.recv(10) == b"HI"
            assert got.wait(5)
    assert seen[0] == ("127.0.0.1", me[1])
    assert isinstance(seen[0][0], str) and isinstance(seen[0][1], int)


@pytest.mark.parametrize("host", LOOPBACKS)
def test_server_on_client_udp(host):
    seen = []

    def on_client(h, p):
        seen.append((h, p))

    family = std_socket.AF_INET6 if ":" in host else std_socket.AF_INET
    with upcase.Server(host, 0, transport="udp", on_client=on_client) as server:
        with std_socket.socket(family, std_socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            c.sendto(b"dgram", (host, server.port))
            data, _ = c.recvfrom(100)
            assert data == b"DGRAM"
            me = c.getsockname()
    assert seen and seen[0] == (host, me[1])


def test_server_on_client_that_raises_does_not_kill_server(monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))
    calls = []

    def on_client(host, port):
        calls.append(port)
        raise ValueError("callback failure")

    with upcase.Server("127.0.0.1", 0, on_client=on_client) as server:
        for i in range(5):
            assert upcase.tcp_request("127.0.0.1", server.port, f"still {i}") == f"STILL {i}"
        assert server.running
    assert len(calls) == 5
    assert reported and all(isinstance(e, ValueError) for e in reported)


def test_server_on_client_that_raises_udp(monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", lambda u: None)

    def on_client(host, port):
        raise RuntimeError("nope")

    with upcase.Server("127.0.0.1", 0, transport="udp", on_client=on_client) as server:
        for _ in range(3):
            assert upcase.udp_request("127.0.0.1", server.port, b"ok") == b"OK"


def test_server_iterative_serves_one_client_at_a_time():
    with upcase.Server("127.0.0.1", 0, mode="iterative") as server:
        first = upcase.Connection("127.0.0.1", server.port)
        assert first.request(b"first") == b"FIRST"
        result = []
        t = threading.Thread(target=lambda: result.append(upcase.tcp_request("127.0.0.1", server.port, b"second")))
        t.start()
        time.sleep(0.3)
        assert not result, "the iterative server answered a second client while the first was connected"
        first.close()
        t.join(10)
        assert result == [b"SECOND"]
        for i in range(10):
            assert upcase.tcp_request("127.0.0.1", server.port, b"seq") == b"SEQ"


def test_server_iterative_large_reply():
    data = random.Random(5).randbytes(1 << 20)
    with upcase.Server("127.0.0.1", 0, mode="iterative") as server:
        assert upcase.tcp_request("127.0.0.1", server.port, data) == expected(data)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_stop_from_another_thread_ends_serve_forever(transport):
    server = upcase.Server("127.0.0.1", 0, transport=transport)
    started = threading.Event()

    def stopper():
        started.wait(5)
        # serve from here too, while serve_forever blocks the main thread
        assert request(server, b"via serve_forever") == b"VIA SERVE_FOREVER"
        server.stop()

    t = threading.Thread(target=stopper)
    t.start()
    t0 = time.monotonic()
    started.set()
    server.serve_forever()  # returns normally once stopped
    elapsed = time.monotonic() - t0
    t.join(5)
    assert not server.running
    assert elapsed < 10


def test_serve_forever_in_a_thread_stopped_from_main():
    server = upcase.Server("127.0.0.1", 0)
    errors = []

    def run():
        try:
            server.serve_forever()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 5
    while not server.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.running
    assert upcase.tcp_request("127.0.0.1", server.port, b"bg") == b"BG"
    t0 = time.monotonic()
    server.stop()
    t.join(5)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 2
    assert not errors


# --------------------------------------------------- htons, ntohs, htonl, ntohl


@pytest.mark.parametrize("name", ["htons", "ntohs"])
def test_16_bit_byte_order_matches_stdlib(name):
    ours, theirs = getattr(upcase, name), getattr(std_socket, name)
    values = [0, 1, 0x00FF, 0xFF00, 0x1234, 12000, 0x7FFF, 0x8000, 0xFFFF]
    values += random.Random(6).sample(range(0x10000), 200)
    for v in values:
        assert ours(v) == theirs(v), v
        assert type(ours(v)) is int


@pytest.mark.parametrize("name", ["htonl", "ntohl"])
def test_32_bit_byte_order_matches_stdlib(name):
    ours, theirs = getattr(upcase, name), getattr(std_socket, name)
    values = [0, 1, 0xFF, 0x12345678, 0x7F000001, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
    values += [random.Random(7).randrange(2**32) for _ in range(200)]
    for v in values:
        assert ours(v) == theirs(v), v


def test_byte_order_round_trips():
    for v in (0, 0x1234, 0xFFFF):
        assert upcase.ntohs(upcase.htons(v)) == v
    for v in (0, 0x12345678, 0xFFFFFFFF):
        assert upcase.ntohl(upcase.htonl(v)) == v


@pytest.mark.parametrize("name, bad", [(n, b) for n in ("htons", "ntohs") for b in (-1, 65536, 2**40, 2**80)])
def test_16_bit_out_of_range(name, bad):
    with pytest.raises(OverflowError):
        getattr(upcase, name)(bad)


@pytest.mark.parametrize("name, bad", [(n, b) for n in ("htonl", "ntohl") for b in (-1, 2**32, 2**80)])
def test_32_bit_out_of_range(name, bad):
    with pytest.raises(OverflowError):
        getattr(upcase, name)(bad)


@pytest.mark.parametrize("name", ["htons", "ntohs", "htonl", "ntohl"])
@pytest.mark.parametrize("bad", ["1", 1.0, None, b"\x01"])
def test_byte_order_type_error(name, bad):
    with pytest.raises(TypeError):
        getattr(upcase, name)(bad)


# ----------------------------------------------------------- exceptions


def test_tcp_request_connection_refused(api_closed_port):
    with pytest.raises(ConnectionRefusedError) as ei:
        upcase.tcp_request("127.0.0.1", api_closed_port, b"x")
    assert ei.value.errno == errno.ECONNREFUSED


def test_connection_refused(api_closed_port):
    with pytest.raises(ConnectionRefusedError) as ei:
        upcase.Connection("127.0.0.1", api_closed_port)
    assert ei.value.errno == errno.ECONNREFUSED


def test_udp_request_connection_refused(api_closed_port):
    # ICMP port unreachable comes back on loopback.
    with pytest.raises(ConnectionRefusedError) as ei:
        upcase.udp_request("127.0.0.1", api_closed_port, b"x", timeout=0.5, retries=0)
    assert ei.value.errno == errno.ECONNREFUSED


def test_connection_reset(api_reset_server):
    conn = upcase.Connection(*api_reset_server.address)
    api_reset_server.go.set()
    assert api_reset_server.reset.wait(5)
    time.sleep(0.05)
    with pytest.raises(ConnectionResetError) as ei:
        conn.request(b"hello")
    assert ei.value.errno == errno.ECONNRESET
    conn.close()


def test_tcp_request_timeout(api_silent_listener):
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as ei:
        upcase.tcp_request(*api_silent_listener, b"nobody answers", timeout=0.2)
    elapsed = time.monotonic() - t0
    assert ei.value.errno == errno.ETIMEDOUT
    assert 0.15 <= elapsed < 2.0


def test_connection_request_timeout(api_silent_listener):
    with upcase.Connection(*api_silent_listener, timeout=0.2) as conn:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as ei:
            conn.request(b"anyone?")
        assert 0.15 <= time.monotonic() - t0 < 2.0
    assert ei.value.errno == errno.ETIMEDOUT


def test_udp_request_timeout_and_retries(api_silent_udp):
    host, port = api_silent_udp.getsockname()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as ei:
        upcase.udp_request(host, port, b"hello?", timeout=0.2, retries=2)
    elapsed = time.monotonic() - t0
    assert ei.value.errno == errno.ETIMEDOUT
    assert 0.5 <= elapsed < 3.0  # three attempts of 0.2 s
    api_silent_udp.settimeout(1)
    got = [api_silent_udp.recv(100) for _ in range(3)]
    assert got == [b"hello?"] * 3
    api_silent_udp.setblocking(False)
    with pytest.raises(BlockingIOError):
        api_silent_udp.recv(100)


def test_udp_request_no_retries(api_silent_udp):
    host, port = api_silent_udp.getsockname()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        upcase.udp_request(host, port, b"once", timeout=0.2, retries=0)
    assert time.monotonic() - t0 < 2.0
    # One datagram sent, no retry.
    api_silent_udp.setblocking(False)
    assert api_silent_udp.recv(100) == b"once"
    with pytest.raises(BlockingIOError):
        api_silent_udp.recv(100)


@pytest.mark.parametrize(
    "call",
    [
        lambda: upcase.tcp_request("no-such-host.invalid", 80, b"x"),
        lambda: upcase.udp_request("no-such-host.invalid", 80, b"x"),
        lambda: upcase.Connection("no-such-host.invalid", 80),
        lambda: upcase.Server("no-such-host.invalid", 0),
    ],
    ids=["tcp_request", "udp_request", "Connection", "Server"],
)
def test_unknown_name_is_gaierror(call):
    with pytest.raises(std_socket.gaierror) as ei:
        call()
    assert type(ei.value) is std_socket.gaierror
    assert upcase.gaierror is std_socket.gaierror
    eai = {std_socket.EAI_NONAME, std_socket.EAI_AGAIN, getattr(std_socket, "EAI_NODATA", std_socket.EAI_NONAME)}
    assert ei.value.errno in eai


def test_address_in_use_is_oserror_with_errno(api_tcp_server):
    with pytest.raises(OSError) as ei:
        upcase.Server("127.0.0.1", api_tcp_server.port)
    assert ei.value.errno == errno.EADDRINUSE
    assert type(ei.value) is OSError


def test_address_not_available_is_oserror_with_errno():
    # 192.0.2.1 (TEST-NET-1) is not an address of this host.
    with pytest.raises(OSError) as ei:
        upcase.Server("192.0.2.1", 0)
    assert ei.value.errno == errno.EADDRNOTAVAIL


def test_error_aliases():
    assert upcase.error is OSError
    assert upcase.timeout is TimeoutError


@pytest.mark.parametrize("port", [-1, 65536, 10**6, 2**70])
@pytest.mark.parametrize(
    "call",
    [
        lambda p: upcase.tcp_request("127.0.0.1", p, b"x"),
        lambda p: upcase.udp_request("127.0.0.1", p, b"x"),
        lambda p: upcase.Connection("127.0.0.1", p),
    ],
    ids=["tcp_request", "udp_request", "Connection"],
)
def test_port_out_of_range(call, port):
    with pytest.raises((OverflowError, ValueError)):
        call(port)


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan, math.inf])
@pytest.mark.parametrize(
    "call",
    [
        lambda t: upcase.tcp_request("127.0.0.1", 9, b"x", timeout=t),
        lambda t: upcase.udp_request("127.0.0.1", 9, b"x", timeout=t),
        lambda t: upcase.Connection("127.0.0.1", 9, timeout=t),
    ],
    ids=["tcp_request", "udp_request", "Connection"],
)
def test_bad_timeout_is_value_error(call, timeout):
    with pytest.raises(ValueError):
        call(timeout)


def test_udp_bad_timeout_and_retries():
    with pytest.raises(ValueError):
        upcase.udp_request("127.0.0.1", 9, b"x", timeout=0)
    with pytest.raises(ValueError):
        upcase.udp_request("127.0.0.1", 9, b"x", retries=-1)


@pytest.mark.parametrize(
    "call",
    [
        lambda: upcase.tcp_request(b"127.0.0.1", 9, b"x"),
        lambda: upcase.tcp_request(None, 9, b"x"),
        lambda: upcase.tcp_request("127.0.0.1", "9", b"x"),
        lambda: upcase.tcp_request("127.0.0.1", 9.0, b"x"),
        lambda: upcase.tcp_request("127.0.0.1", 9, 123),
        lambda: upcase.tcp_request("127.0.0.1", 9, None),
        lambda: upcase.tcp_request("127.0.0.1", 9, b"x", timeout="1"),
        lambda: upcase.tcp_request("127.0.0.1", 9, b"x", 1.0),
        lambda: upcase.udp_request(1, 9, b"x"),
        lambda: upcase.udp_request("127.0.0.1", 9, [1]),
        lambda: upcase.udp_request("127.0.0.1", 9, b"x", retries="3"),
        lambda: upcase.udp_request("127.0.0.1", 9, b"x", timeout=None),
        lambda: upcase.Connection(1, 9),
        lambda: upcase.Connection("127.0.0.1", "9"),
        lambda: upcase.Connection("127.0.0.1", 9, 5.0),
    ],
)
def test_wrong_argument_types_are_type_errors(call):
    with pytest.raises(TypeError):
        call()


def test_module_surface():
    for name in upcase.__all__:
        assert hasattr(upcase, name), name
    for name in ("upper", "tcp_request", "udp_request", "Connection", "Server", "socket",
                 "htons", "ntohs", "htonl", "ntohl", "gaierror", "error", "timeout"):
        assert name in upcase.__all__, name
    assert isinstance(upcase.__version__, str)
    stubs = os.path.join(os.path.dirname(upcase.__file__), "py.typed")
    assert os.path.exists(stubs)


def test_server_limits_the_connections_of_one_address():
    with upcase.Server("127.0.0.1", 0, max_connections_per_address=2) as server:
        held = [std_socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(3)]
        try:
            zero = {k: 0 for k in server.stats()}
            stats = stats_reach(server, {"connections_active": 2, "connections_rejected": 1}, zero)
            assert (stats["connections_active"], stats["connections_rejected"]) == (2, 1), stats
            # The one past the limit is closed at once; the others are served.
            closed = 0
            for s in held:
                s.settimeout(0.5)
                try:
                    s.sendall(b"hi")
                    reply = s.recv(2)
                except (TimeoutError, OSError):
                    reply = b""
                closed += reply == b""
            assert closed == 1
        finally:
            for s in held:
                s.close()
        # From another address, a client is served all the same.
        other = std_socket.socket()
        other.bind(("127.0.0.3", 0))
        other.connect(("127.0.0.1", server.port))
        other.sendall(b"me too")
        other.shutdown(std_socket.SHUT_WR)
        assert other.recv(16) == b"ME TOO"
        other.close()


def test_server_max_connections_per_address_must_not_be_negative():
    with pytest.raises(ValueError, match="max_connections_per_address"):
        upcase.Server("127.0.0.1", 0, max_connections_per_address=-1)
