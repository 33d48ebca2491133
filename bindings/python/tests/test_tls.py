"""TLS from Python: upcase.Server(certfile=..., keyfile=...), tcp_request and
Connection(tls=True, ...), TLSContext.wrap_socket over upcase.socket, the
TLS example programs (examples/python/TLSServer.py, TLSClient.py) and the
command lines' TLS flags; Python's own ssl module at the other end, both
ways, TLS 1.2 and 1.3, ECDSA and RSA certificates.

The certificates are made when the tests run, with the openssl command line,
in a temporary directory: a CA; server certificates for localhost and
upcase.test (no IP address), one ECDSA P-256 and one RSA; a client
certificate; and a second CA with a client certificate of its own. Servers
listen on 127.0.0.1, port 0; every wait is bounded.
"""

from __future__ import annotations

import difflib
import re
import signal
import socket as std_socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, List, Optional

import pytest

import upcase
from e2e_support import EXAMPLES, LINE, PYTHON, ServerProc, need_file, run, upper_ascii

pytestmark = pytest.mark.timeout(60)

VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
BIG = bytes(range(256)) * 4096  # 1 MiB, every byte value


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> SimpleNamespace:
    """PEM files made with openssl: .ca, .server / .server_key (ECDSA),
    .rsa / .rsa_key, .client / .client_key, .other_ca, .stranger /
    .stranger_key (signed by other_ca), each a str path."""
    d = tmp_path_factory.mktemp("pki")

    def ca(name: str) -> None:
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=upcase test {name}",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=d)

    def leaf(name: str, issuer: str, names: str, usage: str, key: List[str]) -> None:
        openssl("req", "-newkey", *key, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text(f"subjectAltName={names}\nbasicConstraints=critical,CA:FALSE\n"
                                       f"extendedKeyUsage={usage}\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey", f"{issuer}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)

    ec = ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    ca("ca")
    ca("other_ca")
    leaf("server", "ca", "DNS:localhost,DNS:upcase.test", "serverAuth", ec)
    leaf("rsa", "ca", "DNS:localhost,DNS:upcase.test", "serverAuth", ["rsa:2048"])
    leaf("client", "ca", "DNS:client.upcase.test", "clientAuth", ec)
    leaf("stranger", "other_ca", "DNS:stranger.upcase.test", "clientAuth", ec)
    names = ["ca", "other_ca", "server", "rsa", "client", "stranger"]
    paths = {n: str(d / f"{n}.pem") for n in names}
    paths.update({f"{n}_key": str(d / f"{n}.key") for n in names})
    return SimpleNamespace(dir=d, **paths)


@pytest.fixture
def tls_server(pki) -> Iterator[Callable[..., upcase.Server]]:
    """start(**kw) -> a running TLS upcase.Server on 127.0.0.1 (the ECDSA
    certificate unless kw says otherwise); all stopped at the end."""
    started: List[upcase.Server] = []

    def start(**kw) -> upcase.Server:
        kw.setdefault("certfile", pki.server)
        kw.setdefault("keyfile", pki.server_key)
        srv = upcase.Server("127.0.0.1", 0, **kw)
        srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def client_context(pki, cafile: Optional[str] = None) -> upcase.TLSContext:
    ctx = upcase.TLSContext(upcase.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile or pki.ca)
    return ctx


def read_to_end(sock) -> bytes:
    got = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return got
        got += chunk


def tls_socket_request(ctx: upcase.TLSContext, port: int, data: bytes, name: str = "localhost") -> tuple:
    """The slide exchange on a TLSSocket: (reply, TLS version)."""
    with ctx.wrap_socket(upcase.socket(upcase.AF_INET, upcase.SOCK_STREAM), server_hostname=name) as s:
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(data)
        s.shutdown(upcase.SHUT_WR)
        return read_to_end(s), s.version()


# ---------------------------------------------------------------- upcase.Server, tcp_request, Connection


def test_a_tls_round_trip_in_tls_1_3(pki, tls_server):
    srv = tls_server()
    assert srv.tls
    assert upcase.tcp_request("127.0.0.1", srv.port, LINE, tls=True, cafile=pki.ca,
                              server_hostname="localhost") == upper_ascii(LINE)
    assert upcase.tcp_request("localhost", srv.port, BIG, tls=True, cafile=pki.ca, timeout=10) == BIG.upper()
    with upcase.Connection("127.0.0.1", srv.port, tls=True, cafile=pki.ca, server_hostname="localhost") as conn:
        assert conn.request("abc") == "ABC"
        assert conn.request(BIG) == BIG.upper()
    reply, version = tls_socket_request(client_context(pki), srv.port, b"tls one three")
    assert (reply, version) == (b"TLS ONE THREE", "TLSv1.3")
    assert srv.stats()["bytes_in"] >= 2 * len(BIG)  # counted as plaintext


def test_the_server_refuses_bad_tls_arguments_at_construction(pki, tmp_path):
    missing = tmp_path / "missing.pem"
    with pytest.raises(FileNotFoundError, match="missing.pem"):
        upcase.Server("127.0.0.1", 0, certfile=missing, keyfile=pki.server_key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="garbage.pem.*no certificate"):
        upcase.Server("127.0.0.1", 0, certfile=garbage, keyfile=pki.server_key)
    with pytest.raises(ValueError, match="garbage.pem.*no private key"):
        upcase.Server("127.0.0.1", 0, certfile=pki.server, keyfile=garbage)
    with pytest.raises(ValueError, match="client.key.*does not match"):
        upcase.Server("127.0.0.1", 0, certfile=pki.server, keyfile=pki.client_key)
    with pytest.raises(FileNotFoundError, match="missing.pem"):
        upcase.Server("127.0.0.1", 0, certfile=pki.server, keyfile=pki.server_key, client_cafile=missing)
    with pytest.raises(ValueError, match="keyfile"):
        upcase.Server("127.0.0.1", 0, certfile=pki.server)
    with pytest.raises(ValueError, match="certfile"):
        upcase.Server("127.0.0.1", 0, keyfile=pki.server_key)
    with pytest.raises(ValueError, match="client_cafile needs certfile"):
        upcase.Server("127.0.0.1", 0, client_cafile=pki.ca)
    with pytest.raises(ValueError, match="udp"):
        upcase.Server("127.0.0.1", 0, transport="udp", certfile=pki.server, keyfile=pki.server_key)
    with pytest.raises(ValueError, match="io_uring"):
        upcase.Server("127.0.0.1", 0, io_uring=True, certfile=pki.server, keyfile=pki.server_key)
    with pytest.raises(ValueError, match="tls_handshake_timeout"):
        upcase.Server("127.0.0.1", 0, certfile=pki.server, keyfile=pki.server_key, tls_handshake_timeout=0)


def test_tls_keywords_without_tls_true_are_an_error(pki, tls_server):
    srv = tls_server()
    with pytest.raises(ValueError, match="cafile given without tls=True"):
        upcase.tcp_request("127.0.0.1", srv.port, "x", cafile=pki.ca)
    with pytest.raises(ValueError, match="server_hostname, certfile, keyfile given without tls=True"):
        upcase.Connection("127.0.0.1", srv.port, server_hostname="localhost", certfile=pki.client,
                          keyfile=pki.client_key)
    with pytest.raises(ValueError, match="certfile needs keyfile"):
        upcase.tcp_request("127.0.0.1", srv.port, "x", tls=True, cafile=pki.ca, certfile=pki.client)
    with pytest.raises(FileNotFoundError, match="nowhere.pem"):
        upcase.tcp_request("127.0.0.1", srv.port, "x", tls=True, cafile=str(pki.dir / "nowhere.pem"))


@pytest.mark.parametrize("how", ["tcp_request", "Connection", "TLSSocket"])
def test_a_wrong_ca_or_a_wrong_name_raises_an_ssl_error_with_the_reason(pki, tls_server, how):
    srv = tls_server()

    def attempt(cafile: str, name: str) -> None:
        if how == "tcp_request":
            upcase.tcp_request("127.0.0.1", srv.port, "x", tls=True, cafile=cafile, server_hostname=name)
        elif how == "Connection":
            upcase.Connection("127.0.0.1", srv.port, tls=True, cafile=cafile, server_hostname=name).close()
        else:
            tls_socket_request(client_context(pki, cafile), srv.port, b"x", name)

    with pytest.raises(ssl.SSLCertVerificationError) as wrong_ca:
        attempt(pki.other_ca, "localhost")
    assert isinstance(wrong_ca.value, upcase.TLSCertVerificationError)
    assert isinstance(wrong_ca.value, upcase.TLSError)
    assert "invalid peer certificate: UnknownIssuer" in str(wrong_ca.value)
    assert wrong_ca.value.verify_message == str(wrong_ca.value)
    with pytest.raises(ssl.SSLError) as wrong_name:
        attempt(pki.ca, "nope.test")
    assert isinstance(wrong_name.value, ssl.SSLCertVerificationError)
    assert re.search(r'not valid for name "nope\.test"', str(wrong_name.value)), str(wrong_name.value)
    assert wrong_name.value.errno == ssl.SSL_ERROR_SSL


def test_server_hostname_names_the_certificate_when_connecting_by_address(pki, tls_server):
    srv = tls_server()
    with pytest.raises(ssl.SSLCertVerificationError, match='not valid for name "127.0.0.1"'):
        upcase.tcp_request("127.0.0.1", srv.port, "x", tls=True, cafile=pki.ca)
    assert upcase.tcp_request("127.0.0.1", srv.port, "by address", tls=True, cafile=pki.ca,
                              server_hostname="upcase.test") == "BY ADDRESS"
    assert upcase.tcp_request("localhost", srv.port, "by name", tls=True, cafile=pki.ca) == "BY NAME"


def test_mutual_tls(pki, tls_server):
    srv = tls_server(client_cafile=pki.ca)
    common = dict(tls=True, cafile=pki.ca, server_hostname="localhost")
    assert upcase.tcp_request("127.0.0.1", srv.port, "with a certificate", certfile=pki.client,
                              keyfile=pki.client_key, **common) == "WITH A CERTIFICATE"
    with pytest.raises(ssl.SSLError, match="CertificateRequired|no certificate|alert"):
        upcase.tcp_request("127.0.0.1", srv.port, "without", **common)
    with pytest.raises(ssl.SSLError, match="alert"):
        upcase.tcp_request("127.0.0.1", srv.port, "another CA's", certfile=pki.stranger,
                           keyfile=pki.stranger_key, **common)
    # The same with TLSContext at both ends.
    ctx = client_context(pki)
    ctx.load_cert_chain(pki.client, pki.client_key)
    assert tls_socket_request(ctx, srv.port, b"mutual")[0] == b"MUTUAL"
    sctx = upcase.TLSContext(upcase.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki.server, pki.server_key)
    sctx.verify_mode = upcase.CERT_REQUIRED
    sctx.load_verify_locations(pki.ca)
    with TlsSocketServer(sctx) as server:
        assert upcase.tcp_request("127.0.0.1", server.port, "both ends", certfile=pki.client,
                                  keyfile=pki.client_key, **common) == "BOTH ENDS"
        with pytest.raises(ssl.SSLError):
            upcase.tcp_request("127.0.0.1", server.port, "no certificate", **common)


def test_a_handshake_that_never_starts_is_closed_after_tls_handshake_timeout(tls_server):
    srv = tls_server(tls_handshake_timeout=0.5)
    with std_socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        start = time.monotonic()
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        assert 0.4 <= time.monotonic() - start < 5


def test_plaintext_and_tls_on_the_wrong_port_fail_fast(pki, tls_server):
    srv = tls_server()
    start = time.monotonic()
    with pytest.raises(OSError) as plain:
        upcase.tcp_request("127.0.0.1", srv.port, "plaintext", timeout=5)
    assert not isinstance(plain.value, TimeoutError)
    plain_srv = upcase.Server("127.0.0.1", 0)
    with plain_srv:
        with pytest.raises(ssl.SSLError, match="speaking TLS"):
            upcase.tcp_request("127.0.0.1", plain_srv.port, "tls", tls=True, cafile=pki.ca,
                               server_hostname="localhost", timeout=5)
        with pytest.raises(ssl.SSLError, match="speaking TLS"):
            tls_socket_request(client_context(pki), plain_srv.port, b"tls")
    assert time.monotonic() - start < 5


# ---------------------------------------------------------------- Python's ssl module at the other end


@pytest.mark.parametrize("key", ["ecdsa", "rsa"])
@pytest.mark.parametrize("version", VERSIONS)
def test_python_ssl_as_a_client_of_upcase_server(pki, tls_server, version, key):
    certfile, keyfile = (pki.server, pki.server_key) if key == "ecdsa" else (pki.rsa, pki.rsa_key)
    srv = tls_server(certfile=certfile, keyfile=keyfile)
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    data = LINE.encode() * 1000
    with std_socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() == version
            s.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = s.recv(65536)
                assert chunk, f"the server closed after {len(got)} of {len(data)} bytes"
                got += chunk
            assert got == upper_ascii(LINE).encode() * 1000


class StdlibTlsServer:
    """A server on Python's ssl module, one connection at a time: it answers
    each chunk as it comes, and after the client's close_notify sends its
    own (unwrap). .versions: the TLS version of each connection."""

    def __init__(self, pki, version: str) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.server, pki.server_key)
        self.ctx.maximum_version = VERSIONS[version]
        self.sock = std_socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.versions: List[Optional[str]] = []
        self.errors: List[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            raw.settimeout(10)
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as conn:
                    self.versions.append(conn.version())
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            break
                        conn.sendall(data.upper())
                    conn.unwrap().close()
            except OSError as e:
                self.errors.append(e)

    def __enter__(self) -> "StdlibTlsServer":
        return self

    def __exit__(self, *_args: object) -> None:
        self.sock.close()
        self.thread.join(10)


@pytest.mark.parametrize("version", VERSIONS)
def test_upcase_clients_against_a_python_ssl_server(pki, version):
    with StdlibTlsServer(pki, version) as server:
        common = dict(tls=True, cafile=pki.ca, server_hostname="localhost", timeout=10)
        assert upcase.tcp_request("127.0.0.1", server.port, LINE, **common) == upper_ascii(LINE)
        assert upcase.tcp_request("127.0.0.1", server.port, BIG, **common) == BIG.upper()
        with upcase.Connection("127.0.0.1", server.port, **common) as conn:
            assert conn.request("kept open") == "KEPT OPEN"
            assert conn.request(b"again") == b"AGAIN"
        reply, got_version = tls_socket_request(client_context(pki), server.port, BIG)
        assert (reply, got_version) == (BIG.upper(), version)
        deadline = time.monotonic() + 5
        while len(server.versions) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.versions == [version] * 4


def test_a_tls_socket_reports_a_peer_that_closes_without_close_notify(pki):
    """A Python ssl server that shuts TCP down without close_notify: the
    data before it arrives, then recv raises, never taken as a whole reply."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki.server, pki.server_key)
    with std_socket.create_server(("127.0.0.1", 0)) as lst:
        lst.settimeout(10)

        def serve() -> None:
            raw, _ = lst.accept()
            with sctx.wrap_socket(raw, server_side=True) as conn:
                conn.sendall(b"part")
                conn.shutdown(std_socket.SHUT_RDWR)  # ssl's shutdown: TCP only

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with client_context(pki).wrap_socket(upcase.socket(), server_hostname="localhost") as s:
            s.settimeout(10)
            s.connect(lst.getsockname())
            assert s.recv(100) == b"part"
            with pytest.raises(ssl.SSLError, match="without TLS close_notify") as cut:
                s.recv(100)
            assert cut.value.errno == ssl.SSL_ERROR_EOF
        t.join(10)


def test_a_tls_socket_that_refuses_the_certificate_tells_the_server_why(pki):
    """The alert goes out before the socket closes: Python's ssl server
    reports the unknown CA, not an end of stream."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki.server, pki.server_key)
    seen: List[BaseException] = []
    with std_socket.create_server(("127.0.0.1", 0)) as lst:
        lst.settimeout(10)

        def serve() -> None:
            raw, _ = lst.accept()
            raw.settimeout(10)
            try:
                sctx.wrap_socket(raw, server_side=True).close()
            except OSError as e:
                seen.append(e)

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_socket_request(client_context(pki, pki.other_ca), lst.getsockname()[1], b"x")
        t.join(10)
    assert len(seen) == 1 and "UNKNOWN_CA" in str(seen[0]), seen


# ---------------------------------------------------------------- TLSContext.wrap_socket


class TlsSocketServer:
    """The slide server loop on a TLSSocket (the listening socket wrapped),
    on a thread: each accepted connection is answered until close_notify."""

    def __init__(self, ctx: upcase.TLSContext) -> None:
        lst = upcase.socket(upcase.AF_INET, upcase.SOCK_STREAM)
        lst.bind(("127.0.0.1", 0))
        lst.listen(8)
        self.port = lst.getsockname()[1]
        self.sock = ctx.wrap_socket(lst, server_side=True)
        assert lst.fileno() == -1  # wrap_socket took its descriptor, as ssl's does
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.served: List[str] = []
        self.ciphers: List[Any] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, ssl.SSLError):
                continue
            with conn:
                conn.settimeout(10)
                try:
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            break
                        conn.sendall(data.upper())
                    self.served.append(conn.version() or "")
                    self.ciphers.append(conn.cipher())
                except OSError:
                    pass

    def __enter__(self) -> "TlsSocketServer":
        return self

    def __exit__(self, *_args: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.sock.close()


def test_wrap_socket_makes_tls_programs_of_the_slide_programs(pki):
    sctx = upcase.TLSContext(upcase.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki.server, pki.server_key)
    with TlsSocketServer(sctx) as server:
        ctx = client_context(pki)
        reply, version = tls_socket_request(ctx, server.port, BIG)
        assert (reply, version) == (BIG.upper(), "TLSv1.3")
        sock = upcase.socket(upcase.AF_INET, upcase.SOCK_STREAM)
        wrapped = ctx.wrap_socket(sock, server_hostname="localhost")
        assert isinstance(wrapped, upcase.socket) and sock.fileno() == -1
        assert (wrapped.context, wrapped.server_side, wrapped.server_hostname) == (ctx, False, "localhost")
        assert wrapped.version() is None
        wrapped.settimeout(10)
        wrapped.connect(("127.0.0.1", server.port))
        wrapped.send(b"send and ")
        wrapped.sendall(bytearray(b"sendall"))
        wrapped.shutdown(upcase.SHUT_WR)
        with pytest.raises(BrokenPipeError):
            wrapped.send(b"after the close_notify")
        assert read_to_end(wrapped) == b"SEND AND SENDALL"
        wrapped.close()
        assert wrapped.fileno() == -1
        assert wrapped.cipher() is None
        # Python's ssl as the client of a TLSSocket server, TLS 1.2 and 1.3.
        python_ciphers = []
        for version, v in VERSIONS.items():
            sslctx = ssl.create_default_context(cafile=pki.ca)
            sslctx.maximum_version = v
            with std_socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
                with sslctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(b"from python's ssl")
                    assert s.recv(100) == b"FROM PYTHON'S SSL"
                    assert s.version() == version
                    python_ciphers.append(s.cipher())
                    s.unwrap()
        deadline = time.monotonic() + 5
        while len(server.served) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.served == ["TLSv1.3", "TLSv1.3", "TLSv1.2", "TLSv1.3"]
        # The same suite as Python's ssl saw: the same name for TLS 1.3
        # (TLS 1.2's are IANA's here, OpenSSL's there), version and bits.
        ours = server.ciphers[2:]
        assert [(c[1], c[2]) for c in ours] == [(c[1], c[2]) for c in python_ciphers]
        for mine, theirs in zip(ours, python_ciphers):
            if mine[1] == "TLSv1.3":
                assert mine[0] == theirs[0]
            else:
                # TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 is OpenSSL's
                # ECDHE-ECDSA-AES256-GCM-SHA384 (its ChaCha20 name has no hash).
                iana = re.sub("[_-]", "", mine[0].removeprefix("TLS_").replace("WITH_", ""))
                assert iana.startswith(theirs[0].replace("-", "")), (mine, theirs)


def test_wrap_socket_wraps_an_accepted_connection_as_the_ssl_docs_do(pki):
    """accept() on a plain socket, then wrap_socket(conn, server_side=True):
    the handshake runs in wrap_socket."""
    sctx = upcase.TLSContext(upcase.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki.server, pki.server_key)
    versions: List[Optional[str]] = []
    with upcase.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        lst.settimeout(10)

        def serve() -> None:
            raw, _ = lst.accept()
            raw.settimeout(10)
            with sctx.wrap_socket(raw, server_side=True) as conn:
                versions.append(conn.version())
                conn.sendall(read_to_end(conn).upper())

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        assert tls_socket_request(client_context(pki), lst.getsockname()[1], b"as the docs do") == \
            (b"AS THE DOCS DO", "TLSv1.3")
        t.join(10)
    assert versions == ["TLSv1.3"]


def test_a_non_blocking_tls_socket_sends_each_byte_once(pki):
    """send() on a non-blocking TLSSocket: a byte rustls took is counted
    even when the socket could not take its record yet, so BlockingIOError
    never makes the caller send it twice. A Python ssl server that starts
    reading late counts what arrives."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki.server, pki.server_key)
    received: List[int] = []
    with std_socket.create_server(("127.0.0.1", 0)) as lst:
        lst.settimeout(10)

        def serve() -> None:
            raw, _ = lst.accept()
            raw.settimeout(10)
            with sctx.wrap_socket(raw, server_side=True) as conn:
                time.sleep(0.5)  # the client's buffers fill meanwhile
                total = 0
                while True:
                    data = conn.recv(1 << 20)
                    if not data:
                        break
                    total += len(data)
                received.append(total)
                conn.unwrap()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with client_context(pki).wrap_socket(upcase.socket(), server_hostname="localhost") as s:
            s.settimeout(10)
            s.connect(lst.getsockname())
            s.setblocking(False)
            chunk = b"x" * 65536
            sent, would_block = 0, 0
            deadline = time.monotonic() + 5
            while (would_block < 20 or sent < (4 << 20)) and time.monotonic() < deadline:
                try:
                    sent += s.send(chunk)
                except BlockingIOError:
                    would_block += 1
                    time.sleep(0.005)
            assert would_block > 0
            s.settimeout(10)
            s.shutdown(upcase.SHUT_WR)  # sends what is still queued, then close_notify
            assert read_to_end(s) == b""
        t.join(10)
    assert received == [sent]


def test_tls_context_refuses_what_it_cannot_honour(pki, tmp_path):
    ctx = upcase.TLSContext(upcase.PROTOCOL_TLS_CLIENT)
    assert (ctx.verify_mode, ctx.check_hostname) == (upcase.CERT_REQUIRED, True)
    with pytest.raises(ValueError, match="always verifies"):
        ctx.verify_mode = upcase.CERT_NONE
    with pytest.raises(ValueError, match="always checks"):
        ctx.check_hostname = False
    with pytest.raises(ValueError, match="server_hostname"):
        ctx.wrap_socket(upcase.socket())
    with pytest.raises(ValueError, match="PROTOCOL_TLS_CLIENT"):
        ctx.wrap_socket(upcase.socket(), server_side=True)
    with pytest.raises(NotImplementedError, match="stream"):
        ctx.wrap_socket(upcase.socket(upcase.AF_INET, upcase.SOCK_DGRAM), server_hostname="localhost")
    with pytest.raises(FileNotFoundError, match="nowhere.pem"):
        ctx.load_verify_locations(tmp_path / "nowhere.pem")
    with pytest.raises(ValueError):
        upcase.TLSContext(99)
    server = upcase.TLSContext(upcase.PROTOCOL_TLS_SERVER)
    assert (server.verify_mode, server.check_hostname) == (upcase.CERT_NONE, False)
    with pytest.raises(ValueError, match="load_cert_chain"):
        server.wrap_socket(upcase.socket(), server_side=True)
    with pytest.raises(ValueError, match="client.key.*does not match"):
        server.load_cert_chain(pki.server, pki.client_key)
    server.load_cert_chain(pki.server, pki.server_key)
    server.verify_mode = upcase.CERT_REQUIRED
    with pytest.raises(ValueError, match="load_verify_locations"):
        server.wrap_socket(upcase.socket(), server_side=True)
    with pytest.raises(ValueError, match="CERT_OPTIONAL"):
        server.verify_mode = upcase.CERT_OPTIONAL
    ctx.load_verify_locations(pki.ca)
    wrapped = ctx.wrap_socket(upcase.socket(), server_hostname="localhost")
    with pytest.raises(ValueError, match="already"):
        ctx.wrap_socket(wrapped, server_hostname="localhost")
    with pytest.raises(ValueError, match="sendto"):
        wrapped.sendto(b"x", ("127.0.0.1", 9))
    wrapped.close()


# ---------------------------------------------------------------- the example programs and command lines


def tls_example(name: str) -> str:
    return need_file(EXAMPLES / name)


@pytest.fixture
def procs() -> Iterator[Callable[..., ServerProc]]:
    started: List[ServerProc] = []

    def start(argv: List[str]) -> ServerProc:
        srv = ServerProc(argv, "tcp")
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.kill()


def check_reply(r: subprocess.CompletedProcess, line: str = LINE) -> None:
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stderr == b""
    assert r.stdout == f"From Server: {upper_ascii(line)}\n".encode()


def test_the_tls_example_programs_run_end_to_end(pki, procs):
    cert = ["--tls-cert", pki.server, "--tls-key", pki.server_key]
    servers = {
        "TLSServer.py": procs([PYTHON, tls_example("TLSServer.py"), *cert, "0", "127.0.0.1"]),
        "rust_server.py": procs([PYTHON, tls_example("rust_server.py"), *cert, "0", "127.0.0.1"]),
        "python -m upcase": procs([PYTHON, "-m", "upcase", "server", *cert, "0", "127.0.0.1"]),
    }
    trust = ["--tls-ca", pki.ca, "--tls-name", "localhost"]
    for name, srv in servers.items():
        for client in ([PYTHON, tls_example("TLSClient.py"), *trust],
                       [PYTHON, tls_example("rust_client.py"), "--tls", *trust],
                       [PYTHON, "-m", "upcase", "client", "--tls", *trust]):
            check_reply(run([*client, "127.0.0.1", str(srv.port)], (LINE + "\n").encode()), LINE)
        srv.out.wait_for(srv.client_pattern("127.0.0.1"), 5, at_least=3)
    # A wrong CA: the reason, and exit 1.
    r = run([PYTHON, tls_example("TLSClient.py"), "--tls-ca", pki.other_ca, "--tls-name", "localhost",
             "127.0.0.1", str(servers["TLSServer.py"].port)], b"x\n")
    assert r.returncode == 1 and b"invalid peer certificate: UnknownIssuer" in r.stderr, r.stderr
    for srv in servers.values():
        srv.proc.send_signal(signal.SIGINT)
    for name, srv in servers.items():
        assert srv.proc.wait(10) == 0, name
    err = servers["TLSServer.py"].err.text()
    assert re.search(r"^TLSServer.py: 127.0.0.1:\d+: .*received fatal alert: UnknownCA", err, re.M), err


def test_the_tls_example_programs_do_mutual_tls(pki, procs):
    srv = procs([PYTHON, tls_example("TLSServer.py"), "--tls-cert", pki.server, "--tls-key", pki.server_key,
                 "--tls-client-ca", pki.ca, "0", "127.0.0.1"])
    trust = ["--tls-ca", pki.ca, "--tls-name", "upcase.test", "127.0.0.1", str(srv.port)]
    mine = ["--tls-cert", pki.client, "--tls-key", pki.client_key]
    check_reply(run([PYTHON, tls_example("TLSClient.py"), *mine, *trust], (LINE + "\n").encode()))
    check_reply(run([PYTHON, "-m", "upcase", "client", "--tls", *mine, *trust], (LINE + "\n").encode()))
    r = run([PYTHON, tls_example("TLSClient.py"), *trust], b"x\n")
    assert r.returncode == 1 and b"TLS" in r.stderr, r.stderr
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(10) == 0
    assert re.search(r"^TLSServer.py: 127.0.0.1:\d+: TLS ", srv.err.text(), re.M), srv.err.text()


def test_the_tls_programs_differ_from_the_tcp_ones_only_in_tls_lines():
    """Every line of TLSServer.py / TLSClient.py past its docstring that
    TCPServer.py / TCPClient.py lacks is about TLS."""
    for tcp, tls in [("TCPServer.py", "TLSServer.py"), ("TCPClient.py", "TLSClient.py")]:
        def code(name: str) -> List[str]:
            text = (EXAMPLES / name).read_text().replace(tcp, tls)
            return text.split('"""', 2)[2].splitlines()

        added = [line for line in difflib.ndiff(code(tcp), code(tls)) if line.startswith("+ ")]
        assert added, tls
        for line in added:
            assert re.search(r"tls|context", line, re.I), f"{tls}: {line!r} is not about TLS"


def test_the_tls_server_program_runs_on_pythons_ssl_module_too(pki, procs, tmp_path):
    """TLSServer.py with `from socket import *` and `from ssl import *` in
    place of `from upcase import *`, and SSLContext for TLSContext: the
    same program on the standard library answers TLSClient.py. (The client
    cannot run on ssl: ssl's shutdown(SHUT_WR) sends no close_notify.)"""
    text = (EXAMPLES / "TLSServer.py").read_text()
    text, n = re.subn(r"^from upcase import \*", "from socket import *\nfrom ssl import *", text, flags=re.M)
    assert n == 1
    copy = tmp_path / "TLSServer.py"
    copy.write_text(text.replace("TLSContext(", "SSLContext("))
    srv = procs([PYTHON, str(copy), "--tls-cert", pki.server, "--tls-key", pki.server_key, "0", "127.0.0.1"])
    r = run([PYTHON, tls_example("TLSClient.py"), "--tls-ca", pki.ca, "--tls-name", "localhost",
             "127.0.0.1", str(srv.port)], (LINE + "\n").encode())
    check_reply(r)
    srv.stop()


@pytest.mark.parametrize("argv, why", [
    (["server", "--tls-cert", "c.pem"], "--tls-cert needs --tls-key"),
    (["server", "--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
    (["server", "--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert and --tls-key"),
    (["server", "--tls-handshake-timeout", "3"], "--tls-handshake-timeout needs --tls-cert and --tls-key"),
    (["server", "--tls-cert", "c", "--tls-key", "k", "--tls-handshake-timeout", "0"], "--tls-handshake-timeout"),
    (["server", "--udp", "--tls-cert", "c", "--tls-key", "k"], "--tls-cert is for TCP"),
    (["server", "--io-uring", "--tls-cert", "c", "--tls-key", "k"], "--tls-cert: the io_uring loop"),
    (["client", "--tls-ca", "ca.pem"], "--tls-ca needs --tls"),
    (["client", "--tls-name", "x"], "--tls-name needs --tls"),
    (["client", "--tls", "--tls-cert", "c.pem"], "--tls-cert needs --tls-key"),
    (["client", "--udp", "--tls"], "--tls is for TCP"),
])
def test_tls_usage_errors_exit_2_naming_the_argument(argv, why):
    r = run([PYTHON, "-m", "upcase", *argv], b"")
    assert r.returncode == 2, r.stderr
    assert why in r.stderr.decode(), r.stderr


def test_the_console_scripts_and_the_example_usage_take_the_tls_flags(pki, procs):
    scripts = Path(PYTHON).parent
    server, client = scripts / "upcase-server", scripts / "upcase-client"
    srv = procs([str(need_file(server, "run `make python`")), "--tls-cert", pki.server, "--tls-key", pki.server_key,
                 "--tls-handshake-timeout", "2.5", "0", "127.0.0.1"])
    r = run([str(client), "--tls", "--tls-ca", pki.ca, "--tls-name", "localhost", "-m", LINE,
             "127.0.0.1", str(srv.port)])
    check_reply(r)
    for prog in ([PYTHON, tls_example("TLSServer.py")], [PYTHON, tls_example("TLSClient.py")]):
        r = run([*prog, "--help"])
        assert r.returncode == 0 and b"--tls-cert" in r.stdout
    r = run([PYTHON, tls_example("TLSServer.py"), "0"])
    assert r.returncode == 2 and b"--tls-cert and --tls-key are needed" in r.stderr
    r = run([str(server), "--tls-cert", str(pki.dir / "nowhere.pem"), "--tls-key", pki.server_key, "0"])
    assert r.returncode == 1 and b"nowhere.pem" in r.stderr, r.stderr
    srv.stop()
