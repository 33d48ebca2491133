"""Helpers for the end-to-end tests of the Python examples and the interop
matrix: paths, child processes with bounded waits, the wire contract.

Every process is started with its output collected on threads, so every wait
is bounded; a server is stopped with a signal and must then exit 0 with
nothing on stderr; anything still running at teardown is killed by its PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]  # bindings/python/tests -> the repository
EXAMPLES = ROOT / "examples" / "python"
C_BUILD = ROOT / "build" / "c"
RUST_SERVER = ROOT / "target" / "release" / "examples" / "upcase-server"
PYTHON = sys.executable  # the interpreter running pytest: the one `upcase` is installed in

START_TIMEOUT = 10.0  # for a server's `listening on` line
STOP_TIMEOUT = 5.0  # for a server's exit after SIGTERM / SIGINT
LINE_TIMEOUT = 5.0  # for a server's line about a client
CLIENT_TIMEOUT = 15.0  # any client run (a UDP client gives up after ~4 s)

FAMILIES = {"v4": "127.0.0.1", "v6": "::1"}
CLIENT_WORD = {"tcp": "connection", "udp": "datagram"}  # what a server prints per client

# Mixed case, digits, punctuation and UTF-8: only the ASCII letters may change.
LINE = "héllo wörld 123 ß! Mixed CASE, ça va? ~{x:1}"


def upper_ascii(text: str) -> str:
    """The wire contract: ASCII a-z become A-Z, nothing else changes."""
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in text)


assert upper_ascii(LINE) == "HéLLO WöRLD 123 ß! MIXED CASE, çA VA? ~{X:1}"


def fmt_addr(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def child_env() -> dict[str, str]:
    """The environment for children: no PYTHONUNBUFFERED, so the examples'
    own flush=True is what gets each line out at once."""
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def need_file(path: Path, how: str = "run `make` first") -> str:
    assert path.is_file(), f"{path} is missing: {how}"
    return str(path)


def stdlib_copy(src: Path, dst_dir: Path) -> Path:
    """The example with `from upcase import *` replaced by `from socket import *`:
    the slide program on the standard library."""
    text, n = re.subn(r"^from upcase import \*", "from socket import *", src.read_text(), flags=re.M)
    assert n == 1, f"{src} has {n} `from upcase import *` lines, expected 1"
    dst = dst_dir / src.name
    dst.write_text(text)
    return dst


class Stream:
    """Collects a child's output lines on a thread, so that waits are bounded."""

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

    def count(self, pattern: str) -> int:
        rx = re.compile(pattern)
        with self.cond:
            return sum(1 for line in self.lines if rx.search(line))

    def wait_for(self, pattern: str, timeout: float, at_least: int = 1) -> re.Match[str]:
        """Waits at most `timeout` s for `at_least` lines matching `pattern`
        (a regex, searched); returns the last of them."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in map(rx.search, self.lines) if m]
                if len(found) >= at_least:
                    return found[at_least - 1]
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    raise AssertionError(
                        f"{len(found)} line(s) matching {pattern!r} within {timeout} s, wanted {at_least}; "
                        f"got {self.lines!r}"
                    )
                self.cond.wait(left)

    def text(self) -> str:
        self.thread.join(timeout=STOP_TIMEOUT)
        with self.cond:
            return "".join(line + "\n" for line in self.lines)


class ServerProc:
    """A server example, started with its argv, ready once it printed
    `The server is ready to receive` and `listening on HOST:PORT`."""

    def __init__(self, argv: list[str], proto: str, name: str = "") -> None:
        self.argv = argv
        self.proto = proto
        self.name = name or " ".join(argv)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(),
            cwd=ROOT,
        )
        self.out = Stream(self.proc.stdout)
        self.err = Stream(self.proc.stderr)
        try:
            self.out.wait_for(r"^The server is ready to receive$", START_TIMEOUT)
            m = self.out.wait_for(r"^listening on (\S+):(\d+)$", START_TIMEOUT)
        except AssertionError as e:
            self.kill()
            raise AssertionError(f"{self.name}: {e}; stderr: {self.err.text()!r}") from None
        self.bound_host = m.group(1)  # as printed: 127.0.0.1 or [::1]
        self.port = int(m.group(2))
        assert 0 < self.port < 65536

    def client_pattern(self, host: str, port: int | None = None) -> str:
        addr = re.escape(fmt_addr(host, ""))  # "127.0.0.1:" or "[::1]:"
        port_rx = str(port) if port is not None else r"(\d+)"
        return rf"^{CLIENT_WORD[self.proto]} from {addr}{port_rx}$"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server: it must exit 0 within STOP_TIMEOUT, with nothing
        (no traceback) on stderr."""
        assert self.proc.poll() is None, f"{self.name} exited early ({self.proc.returncode}): {self.err.text()!r}"
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not exit within {STOP_TIMEOUT} s of signal {signal.Signals(sig).name}")
        err = self.err.text()
        assert rc == 0, f"{self.name} exited {rc} on {signal.Signals(sig).name}; stderr: {err!r}"
        assert err == "", f"{self.name} wrote to stderr: {err!r}"

    def kill(self) -> None:
        """Kill this server (by its PID) if it still runs, and close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def run(argv: list[str], data: bytes = b"", timeout: float = CLIENT_TIMEOUT, **kw) -> subprocess.CompletedProcess:
    """Runs a client to the end with `data` on stdin (killed on timeout)."""
    return subprocess.run(argv, input=data, capture_output=True, timeout=timeout, env=child_env(), cwd=ROOT, **kw)
