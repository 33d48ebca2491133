"""End-to-end runs of the C TCP programs with TLS (build/c/, from `make examples`).

tcp_server with --tls-cert / --tls-key and tcp_client with --tls, against
each other and against Python's `ssl` module on the other side. The CA and
the certificates are made for the run by the `openssl` command line in a
temporary directory; no key is committed. Servers listen on port 0 on
loopback and are stopped with SIGTERM, as in test_c_examples.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from test_c_examples import (  # noqa: F401 (procs: a fixture start_server uses)
    ROOT,
    check_usage_error,
    exchange,
    exe,
    procs,
    run_cli,
    start_server,
    upper_ascii,
)

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command to make certificates with"),
]

LINE = "hello inside tls"


class Pki:
    """The files of a throwaway CA: `ca`, the server certificate `server` (for
    localhost, 127.0.0.1 and ::1), `named` (for the name upcase.test only),
    `client` (a client certificate), each with its `.key`; and `other_ca`, a CA
    that signed none of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        for ca in ("ca", "other_ca"):
            self._openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                          "-subj", f"/CN=upcase test {ca}", "-addext", "basicConstraints=critical,CA:TRUE",
                          "-addext", "keyUsage=critical,keyCertSign")
        leaves = {
            "server": ("localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n"),
            "named": ("upcase.test", "subjectAltName=DNS:upcase.test\nextendedKeyUsage=serverAuth\n"),
            "client": ("upcase test client", "extendedKeyUsage=clientAuth\n"),
        }
        for serial, (name, (subject, ext)) in enumerate(leaves.items(), start=2):
            (root / f"{name}.ext").write_text(ext)
            self._openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={subject}")
            self._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial",
                          str(serial), "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")

    def _openssl(self, *args: str) -> None:
        r = subprocess.run(["openssl", *args], cwd=self.root, capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr.decode(errors="replace")

    def __getattr__(self, name: str) -> str:
        """`pki.ca` is the path of ca.pem, `pki.server_key` that of server.key."""
        path = self.root / (f"{name[:-4]}.key" if name.endswith("_key") else f"{name}.pem")
        if not path.is_file():
            raise AttributeError(name)
        return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def tls_server(start_server, pki: Pki, *args: str, cert: str = "server"):
    return start_server("tcp", "--tls-cert", getattr(pki, cert), "--tls-key", getattr(pki, f"{cert}_key"), *args)


def tls_client(*args: str, line: str = LINE, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([exe("tcp_client"), "--tls", *args], input=(line + "\n").encode(), capture_output=True,
                          timeout=15, env=env)


def served(r: subprocess.CompletedProcess, line: str = LINE) -> None:
    assert (r.returncode, r.stderr) == (0, b""), r.stderr.decode(errors="replace")
    assert r.stdout == f"From Server: {upper_ascii(line)}\n".encode()


def refused(r: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 1, nothing on stdout, and a message on stderr with each of `words`."""
    err = r.stderr.decode(errors="replace")
    assert (r.returncode, r.stdout) == (1, b""), (r.returncode, r.stdout, err)
    assert err.startswith("tcp_client: ") or err.startswith("tcp_server: "), err
    for word in words:
        assert word.lower() in err.lower(), (word, err)
    return err


# ---------------------------------------------------------------- C client <-> C server


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tls_client_server(start_server, pki, host):
    srv = tls_server(start_server, pki, "0", host)
    served(tls_client("--tls-ca", pki.ca, host, str(srv.port)))
    srv.client_line(host)
    if host == "127.0.0.1":  # localhost may not resolve to ::1
        served(tls_client("--tls-ca", pki.ca, "localhost", str(srv.port)))  # the name checked, not the address
    srv.stop()


def test_tls_iterative_and_long_line(start_server, pki):
    srv = tls_server(start_server, pki, "--iterative", "0", "127.0.0.1")
    line = "abcdefghij" * 30_000  # many TLS records each way
    served(tls_client("--tls-ca", pki.ca, "127.0.0.1", str(srv.port), line=line), line)
    srv.stop()


def test_tls_name_option(start_server, pki):
    """A certificate for upcase.test only: reached by address, the client needs --tls-name."""
    srv = tls_server(start_server, pki, "0", "127.0.0.1", cert="named")
    refused(tls_client("--tls-ca", pki.ca, "127.0.0.1", str(srv.port)), "certificate", "127.0.0.1")
    served(tls_client("--tls-ca", pki.ca, "--tls-name", "upcase.test", "127.0.0.1", str(srv.port)))
    refused(tls_client("--tls-ca", pki.ca, "--tls-name", "example.com", "127.0.0.1", str(srv.port)), "example.com")
    srv.stop()


def test_tls_wrong_ca_is_refused(start_server, pki):
    srv = tls_server(start_server, pki, "--quiet", "0", "127.0.0.1")
    t0 = time.monotonic()
    refused(tls_client("--tls-ca", pki.other_ca, "127.0.0.1", str(srv.port)), "certificate")
    assert time.monotonic() - t0 < 5
    served(tls_client("--tls-ca", pki.ca, "127.0.0.1", str(srv.port)))  # the server is none the worse
    srv.stop()


def test_tls_system_trust_store(start_server, pki):
    """Without --tls-ca the system's store is trusted: not our CA, unless
    SSL_CERT_FILE names it (as OpenSSL reads it)."""
    srv = tls_server(start_server, pki, "--quiet", "0", "127.0.0.1")
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    refused(tls_client("127.0.0.1", str(srv.port), env=env))
    served(tls_client("127.0.0.1", str(srv.port), env={**env, "SSL_CERT_FILE": pki.ca}))
    srv.stop()


def test_mutual_tls(start_server, pki):
    srv = tls_server(start_server, pki, "--tls-client-ca", pki.ca, "--quiet", "0", "127.0.0.1")
    refused(tls_client("--tls-ca", pki.ca, "127.0.0.1", str(srv.port)))
    served(tls_client("--tls-ca", pki.ca, "--tls-cert", pki.client, "--tls-key", pki.client_key, "127.0.0.1",
                      str(srv.port)))
    srv.stop()


def test_tls_handshake_timeout_option(start_server, pki):
    """A client that connects and never says hello is closed after --tls-handshake-timeout."""
    srv = tls_server(start_server, pki, "--quiet", "--tls-handshake-timeout", "0.3", "0", "127.0.0.1")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        t0 = time.monotonic()
        try:
            assert s.recv(64) == b""
        except ConnectionResetError:
            pass
        took = time.monotonic() - t0
    assert 0.2 <= took < 3, took
    srv.stop()


def test_plaintext_and_tls_mismatch_fail_fast(start_server, pki):
    """A plaintext client on a TLS port, and a TLS client on a plaintext
    port: each fails at once and says TLS; the servers serve on."""
    tls_srv = tls_server(start_server, pki, "--quiet", "0", "127.0.0.1")
    plain = start_server("tcp", "--quiet", "0", "127.0.0.1")
    t0 = time.monotonic()
    r = run_cli("tcp_client", "127.0.0.1", str(tls_srv.port), data=b"a line longer than an alert\n")
    refused(r, "TLS")
    refused(tls_client("--tls-ca", pki.ca, "127.0.0.1", str(plain.port)), "TLS")
    assert time.monotonic() - t0 < 5
    served(tls_client("--tls-ca", pki.ca, "127.0.0.1", str(tls_srv.port)))
    exchange("tcp", "127.0.0.1", plain.port, "plain still")
    tls_srv.stop()
    plain.stop()


# ---------------------------------------------------------------- Python's ssl module on the other side


def test_python_ssl_client_against_c_tls_server(start_server, pki):
    srv = tls_server(start_server, pki, "0", "127.0.0.1")
    ctx = ssl.create_default_context(cafile=pki.ca)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            for line in (b"first", b"second line, \xc3\xa9 too"):
                s.sendall(line)
                got = b""
                while len(got) < len(line):
                    chunk = s.recv(len(line) - len(got))
                    assert chunk, got
                    got += chunk
                assert got == bytes(c - 32 if 97 <= c <= 122 else c for c in line)
    srv.client_line("127.0.0.1")
    srv.stop()


def test_c_tls_client_against_python_ssl_server(pki):
    """The reply ends with the server's close_notify, after the client's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server, pki.server_key)
    errors: list[BaseException] = []

    def serve(listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(5)
            with ctx.wrap_socket(conn, server_side=True) as s:
                data = b""
                while chunk := s.recv(4096):  # b"" at the client's close_notify
                    data += chunk
                s.sendall(upper_ascii(data.decode()).encode())
                s.unwrap().close()  # our close_notify
        except BaseException as e:  # reported by the test thread
            errors.append(e)

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)
        t = threading.Thread(target=serve, args=(listener,), daemon=True)
        t.start()
        r = tls_client("--tls-ca", pki.ca, "--tls-name", "localhost", "127.0.0.1", str(listener.getsockname()[1]))
        t.join(timeout=10)
    assert not errors, errors
    served(r)


# ---------------------------------------------------------------- command lines


def test_help_lists_the_tls_options():
    server = run_cli("tcp_server", "--help").stdout.decode()
    for option in ("--tls-cert PEM", "--tls-key PEM", "--tls-client-ca PEM", "--tls-handshake-timeout SECONDS"):
        assert option in server, option
    client = run_cli("tcp_client", "--help").stdout.decode()
    for option in ("--tls ", "--tls-ca PEM", "--tls-name NAME", "--tls-cert PEM", "--tls-key PEM"):
        assert option in client, option


@pytest.mark.parametrize("prog,args,named", [
    ("tcp_server", ["--tls-cert", "a.pem"], "--tls-cert needs --tls-key"),
    ("tcp_server", ["--tls-key", "a.key"], "--tls-key needs --tls-cert"),
    ("tcp_server", ["--tls-client-ca", "ca.pem"], "--tls-client-ca is for TLS"),
    ("tcp_server", ["--tls-handshake-timeout", "5"], "--tls-handshake-timeout is for TLS"),
    ("tcp_server", ["--tls-cert", "a.pem", "--tls-key", "a.key", "--tls-handshake-timeout", "0"],
     "--tls-handshake-timeout '0'"),
    ("tcp_server", ["--tls-handshake-timeout", "x"], "--tls-handshake-timeout 'x'"),
    ("tcp_client", ["--tls-ca", "ca.pem"], "--tls-ca is for TLS: add --tls"),
    ("tcp_client", ["--tls-name", "localhost"], "--tls-name is for TLS"),
    ("tcp_client", ["--tls", "--tls-cert", "c.pem"], "--tls-cert needs --tls-key"),
    ("tcp_client", ["--tls", "--tls-key", "c.key"], "--tls-key needs --tls-cert"),
    ("udp_client", ["--tls"], "'--tls'"),
    ("udp_client", ["--tls-ca", "ca.pem"], "'--tls-ca'"),
    ("udp_server", ["--tls-cert", "a.pem", "--tls-key", "a.key"], "'--tls-cert'"),
])
def test_tls_usage_errors(prog, args, named):
    check_usage_error(run_cli(prog, *args, data=b"must not be sent\n"), prog, named)


def test_bad_certificate_files_are_named(pki, tmp_path):
    missing = str(tmp_path / "missing.pem")
    err = refused(run_cli("tcp_server", "--tls-cert", missing, "--tls-key", pki.server_key, "0", "127.0.0.1"),
                  "no such file")
    assert missing in err
    err = refused(run_cli("tcp_server", "--tls-cert", pki.server, "--tls-key", pki.other_ca_key, "0", "127.0.0.1"),
                  "does not match")
    assert pki.other_ca_key in err
    err = refused(run_cli("tcp_server", "--tls-cert", pki.server_key, "--tls-key", pki.server_key, "0", "127.0.0.1"),
                  "no certificate")
    assert pki.server_key in err
    # The client reads its files before stdin: nothing is waited for, nothing sent.
    err = refused(run_cli("tcp_client", "--tls", "--tls-ca", missing, "127.0.0.1", "1"), "no such file")
    assert missing in err


# ---------------------------------------------------------------- make demo


def test_demo_shows_a_tls_exchange():
    """tests/e2e/demo.sh (make demo): the plaintext exchanges, then one inside TLS."""
    r = subprocess.run(["bash", str(ROOT / "tests" / "e2e" / "demo.sh")], capture_output=True, timeout=60)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, (out, r.stderr.decode(errors="replace"))
    client = next(line for line in out.splitlines() if "tcp_client --tls --tls-ca " in line)
    assert client.startswith("== client: ")
    after = out.split(client + "\n", 1)[1].splitlines()
    assert after[:2] == ["    sent:     hello from the slides", "    received: From Server: HELLO FROM THE SLIDES"]
    assert "--tls-cert" in out and "stopped by SIGTERM: exit status 0" in out
