"""Corner cases a demanding user hits: huge arguments, a connection used
after a failure, close() and .closed while another thread is in a request,
recvfrom on a stream socket."""

import socket as std
import threading
import time

import pytest

import upcase

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server():
    with upcase.Server("127.0.0.1", 0) as s:
        yield s


@pytest.fixture
def silent_listener():
    # Accepts (in the kernel) but never answers.
    s = std.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s
    s.close()


def test_recvfrom_on_a_stream_socket_keeps_the_bytes(server):
    with upcase.socket(upcase.AF_INET, upcase.SOCK_STREAM) as c:
        c.connect(("127.0.0.1", server.port))
        c.sendall(b"hello")
        c.shutdown(upcase.SHUT_WR)
        data, addr = c.recvfrom(1024)
        assert data == b"HELLO"


def test_huge_buffer_sizes_are_fine(server):
    with upcase.socket() as c:
        c.connect(("127.0.0.1", server.port))
        c.sendall(b"abc")
        c.shutdown(upcase.SHUT_WR)
        assert c.recv(2**40) == b"ABC"


def test_absurd_values_raise_instead_of_aborting(server):
    with pytest.raises(ValueError):
        upcase.Server("127.0.0.1", 0, threads=10**12)
    with pytest.raises((ValueError, OverflowError)):
        upcase.Server("127.0.0.1", 0, threads=2**70)
    # A timeout too large to add to the clock means "for ever": the reply
    # comes at once anyway.
    with upcase.Server("127.0.0.1", 0, transport="udp") as u:
        assert upcase.udp_request("127.0.0.1", u.port, b"x", timeout=1e19) == b"X"
    assert upcase.tcp_request("127.0.0.1", server.port, b"y", timeout=1e19) == b"Y"


def test_a_connection_is_not_reused_after_a_failed_request(silent_listener):
    port = silent_listener.getsockname()[1]
    conn = upcase.Connection("127.0.0.1", port, timeout=1.0)
    with pytest.raises(TimeoutError):
        conn.request(b"first")
    t = time.monotonic()
    with pytest.raises(OSError) as e:
        conn.request(b"second")
    assert time.monotonic() - t < 0.5  # at once, not after the 1 s timeout
    assert "earlier request" in str(e.value)
    conn.close()


def test_closed_and_close_while_another_thread_is_in_a_request(silent_listener):
    port = silent_listener.getsockname()[1]
    conn = upcase.Connection("127.0.0.1", port, timeout=None)
    errors = []

    def request():
        try:
            conn.request(b"waits for ever")
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=request)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert conn.closed is False  # must not wait for the request
    assert "open" in repr(conn)
    assert time.monotonic() - t0 < 2.0  # the request waits for ever
    conn.close()  # cuts the request short
    t.join(timeout=5)
    assert not t.is_alive(), "close() did not end the request"
    assert errors, "the interrupted request must raise"
    assert conn.closed is True


def test_one_servers_callback_may_stop_another_server():
    b = upcase.Server("127.0.0.1", 0)
    b.start()

    def on_client(host, port):
        b.stop()  # from a's server thread: b must be fully stopped and joined

    with upcase.Server("127.0.0.1", 0, on_client=on_client) as a:
        assert upcase.tcp_request("127.0.0.1", a.port, b"x") == b"X"
    assert b.running is False
    with pytest.raises(ConnectionRefusedError):
        upcase.tcp_request("127.0.0.1", b.port, b"y", timeout=1.0)
