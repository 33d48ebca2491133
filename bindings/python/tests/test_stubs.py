"""The type stubs match the built module (mypy's stubtest), and typed code
that uses the module checks clean."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

PKG = Path(__file__).resolve().parents[1] / "python" / "upcase"


def test_stub_files_ship_with_the_package():
    assert (PKG / "__init__.pyi").is_file()
    assert (PKG / "py.typed").is_file()


def test_stubtest_finds_no_difference():
    run = subprocess.run([sys.executable, "-m", "mypy.stubtest", "upcase"], capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout + run.stderr


def test_typed_usage_checks_clean(tmp_path):
    prog = tmp_path / "use_upcase.py"
    prog.write_text(textwrap.dedent("""
        import ssl
        import upcase
        from upcase import *

        b: bytes = upcase.upper(b"abc")
        s: str = upcase.upper("abc")
        r: bytes = upcase.tcp_request("127.0.0.1", 1, b"x", timeout=None)
        t: str = upcase.udp_request("127.0.0.1", 1, "x", timeout=0.5, retries=1)
        with upcase.Server(port=0, transport="udp") as srv:
            p: int = srv.port
            st: dict[str, int] = srv.stats()
        sock = socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(b"x", ("127.0.0.1", 9))
        data, addr = sock.recvfrom(2048)
        n: int = upcase.htons(12000)
        u: str = upcase.tcp_request("127.0.0.1", 1, "x", tls=True, cafile="ca.pem", server_hostname="localhost")
        tls_server = upcase.Server(port=0, certfile="s.pem", keyfile="s.key", client_cafile=None)
        ctx = upcase.TLSContext(upcase.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations("ca.pem")
        tsock: upcase.TLSSocket = ctx.wrap_socket(socket(AF_INET, SOCK_STREAM), server_hostname="localhost")
        plain: upcase.socket = tsock
        version: str | None = tsock.version()
        err: ssl.SSLError = upcase.TLSError(1, "x")
    """))
    run = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(prog)],
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout + run.stderr
