"""The TLS anchors of `make bench` (bench/servers/c-tls/tls_server.c and
bench/servers/py_tls_server.py) keep the upcase protocol inside TLS: every
byte back upper-cased, a large message under back-pressure, kept-open
requests, the client's close_notify as its half-close answered by the
server's own after every reply, session tickets, and exit 0 on SIGTERM.
A figure measured on a server that gets this wrong would be worth nothing.
The certificate is a throwaway, made by the openssl command line."""

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ROOT / "bench" / "servers"
CC = os.environ.get("CC", "cc")
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)\n")

pytestmark = pytest.mark.timeout(120)

# The expected reply, built independently of bytes.upper(): a-z to A-Z, all else as is.
UPPER_TABLE = bytes(b - 32 if 97 <= b <= 122 else b for b in range(256))
ALL_BYTES = bytes(range(256))


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed ECDSA P-256 certificate for localhost, and its key."""
    d = tmp_path_factory.mktemp("tls")
    pem, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(pem), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True, timeout=30)
    return str(pem), str(key)


@pytest.fixture(scope="module")
def ctx(cert):
    """The clients' context: verification and the name check on, as by default."""
    return ssl.create_default_context(cafile=cert[0])


@pytest.fixture(scope="module")
def c_server(tmp_path_factory):
    exe = tmp_path_factory.mktemp("c-tls") / "tls_server"
    subprocess.run([CC, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
                    str(SERVERS / "c-tls" / "tls_server.c"), "-lssl", "-lcrypto"], check=True, timeout=60)
    return [str(exe)]


@pytest.fixture(params=["c", "python"])
def server(request, cert, tmp_path):
    argv = request.getfixturevalue("c_server") if request.param == "c" else \
        [sys.executable, str(SERVERS / "py_tls_server.py")]
    log = tmp_path / "stderr"
    with open(log, "wb") as err:
        proc = subprocess.Popen([*argv, "0", *cert], stdout=subprocess.PIPE, stderr=err)
    try:
        line = [b""]
        reader = threading.Thread(target=lambda: line.__setitem__(0, proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(15)
        m = LISTENING.fullmatch(line[0])
        assert m and int(m.group(1)) != 0, (line[0], log.read_bytes())
        yield proc, int(m.group(1))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()


class Client:
    """A TLS client on a MemoryBIO pair, so that it can send its close_notify
    and go on reading: the half-close the protocol needs."""

    def __init__(self, port, ctx, session=None):
        self.sock = socket.socket()
        # A small receive buffer, so that a client slow to read holds the server's replies back soon.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        self.sock.settimeout(20)
        self.sock.connect(("127.0.0.1", port))
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost", session=session)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                self.receive()
        self.sock.sendall(self.outgoing.read())

    def receive(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("the server closed the TCP connection")
        self.incoming.write(data)

    def read(self, n):
        """n bytes of reply, exactly."""
        got = b""
        while len(got) < n:
            try:
                got += self.tls.read(n - len(got))
            except ssl.SSLWantReadError:
                self.receive()
        return got

    def send(self, data):
        self.tls.write(data)
        self.sock.sendall(self.outgoing.read())

    def exchange_and_close(self, data, wait=0.0):
        """Sends data and the close_notify (from a thread, while the replies
        are read, after `wait` seconds); returns every byte before the
        server's close_notify."""
        self.tls.write(data)
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:  # ours is sent, the server's is to come
            pass
        records = self.outgoing.read()
        errors = []

        def sender():
            try:
                self.sock.sendall(records)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=sender)
        t.start()
        time.sleep(wait)
        chunks = []
        try:
            while True:
                try:
                    chunk = self.tls.read(1 << 16)
                except ssl.SSLWantReadError:
                    self.receive()
                    continue
                except ssl.SSLZeroReturnError:  # the server's close_notify
                    break
                if not chunk:  # the same, in the words of some Python versions
                    break
                chunks.append(chunk)
        finally:
            t.join()
        assert not errors, errors
        assert self.sock.recv(1) == b"", "the server's close_notify is the last it sends"
        return b"".join(chunks)

    def close(self):
        self.sock.close()


def test_a_message_and_close_notify_get_the_reply_and_close_notify(server, ctx):
    _, port = server
    c = Client(port, ctx)
    try:
        msg = b"hello, World! \x00\xff\x80 az{`@[AZ xy\xc3\xa9\n"
        assert c.exchange_and_close(msg) == msg.translate(UPPER_TABLE)
    finally:
        c.close()


def test_a_large_message_comes_back_whole(server, ctx):
    # 8 MiB, all byte values, read only after a while: more than the socket
    # buffers hold, so the server must keep replies pending and stop reading.
    _, port = server
    msg = ALL_BYTES * (8 * 1024 * 1024 // 256)
    c = Client(port, ctx)
    try:
        assert c.exchange_and_close(msg, wait=0.5) == msg.translate(UPPER_TABLE)
    finally:
        c.close()


def test_kept_open_requests_and_resumption(server, ctx):
    _, port = server
    c = Client(port, ctx)
    try:
        for i in range(50):
            msg = f"request {i}: mixed Case ".encode() + ALL_BYTES[: i * 7 % 256]
            c.send(msg)
            assert c.read(len(msg)) == msg.translate(UPPER_TABLE)
        assert c.exchange_and_close(b"") == b""
        session = c.tls.session  # a ticket, read with the replies
    finally:
        c.close()
    again = Client(port, ctx, session=session)
    try:
        assert again.tls.session_reused
        assert again.exchange_and_close(b"resumed") == b"RESUMED"
    finally:
        again.close()


def test_a_client_cut_short_costs_nothing_and_sigterm_exits_0(server, ctx):
    proc, port = server
    # A plaintext client and a TCP end without close_notify: the server goes on.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"not a TLS record\r\n" * 10)
        s.settimeout(10)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    c = Client(port, ctx)
    c.send(b"abc")
    assert c.read(3) == b"ABC"
    c.close()
    c = Client(port, ctx)
    try:
        assert c.exchange_and_close(b"still here") == b"STILL HERE"
        idle = Client(port, ctx)  # still open at SIGTERM
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        idle.close()
    finally:
        c.close()
