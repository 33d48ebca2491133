"""The experiments behind BENCHMARKS.md's notes (bench/experiments/), and the
reference servers of `make bench`, through the protocol checks of
bench/servers/check_servers.py: a figure measured on a server that gets the
protocol wrong would be worth nothing."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXP = ROOT / "bench" / "experiments"
CC = os.environ.get("CC", "cc")

pytestmark = pytest.mark.timeout(180)


def build(tmp_path, name, *libs):
    out = tmp_path / name
    subprocess.run([CC, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(EXP / f"{name}.c"), *libs],
                   check=True, timeout=120)
    return str(out)


def io_uring_usable():
    """Why io_uring cannot be used here, or None. CI installs liburing-dev
    (.ci/run) and runs where io_uring is allowed, so there it must be."""
    if not Path("/usr/include/liburing.h").exists():
        return "liburing-dev is not installed (make experiments installs it)"
    disabled = Path("/proc/sys/kernel/io_uring_disabled")
    if disabled.exists() and disabled.read_text().strip() != "0":
        return "io_uring is disabled on this machine (kernel.io_uring_disabled)"
    return None


def test_syscall_cost_measures_one_call(tmp_path):
    exe = build(tmp_path, "syscall_cost")
    out = subprocess.run([exe, "20000"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    m = re.fullmatch(r"(\d+\.\d) ns per system call \(20000 calls\)\n", out.stdout)
    assert m and 1.0 < float(m.group(1)) < 1e6, out.stdout
    for bad in (["0"], ["-5"], ["1", "2"]):
        out = subprocess.run([exe, *bad], capture_output=True, text=True, timeout=10)
        assert out.returncode == 2 and "usage" in out.stderr


def test_the_servers_measured_keep_the_protocol(tmp_path):
    why = io_uring_usable()
    if why and os.environ.get("CI"):
        pytest.fail(f"CI must run the io_uring experiment: {why}")
    names = ["epoll", "slide", "threading", "asyncio", "upcase_py", "udp_floor", "udp_floor_1"]
    args = ["--udp-floor-bin", build(tmp_path, "udp_floor")]
    if why is None:
        args += ["--uring-bin", build(tmp_path, "uring_server", "-luring")]
        names += ["uring", "uring_link", "uring_fixed", "uring_buf_ring"]
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "servers" / "check_servers.py"), *args,
                          "--only", *names], capture_output=True, text=True, timeout=170)
    want = 2 * 5 + 2 + (4 if why is None else 0)
    assert out.returncode == 0 and f"{want} passed, 0 failed" in out.stdout, out.stdout + out.stderr
    if why:
        pytest.skip(f"checked the reference servers only: {why}")


def test_udp_floor_refuses_what_it_cannot_do(tmp_path):
    exe = build(tmp_path, "udp_floor")
    for bad, say in [(["0"], "usage"), (["--batch", "0", "0", "127.0.0.1"], "usage"),
                     (["--batch", "1025", "0", "127.0.0.1"], "usage"), (["--nope", "8", "0", "127.0.0.1"], "usage"),
                     (["70000", "127.0.0.1"], "usage"), (["0", "not an address"], "not an address")]:
        out = subprocess.run([exe, *bad], capture_output=True, text=True, timeout=10)
        assert out.returncode == 2 and say in out.stderr, (bad, out.stderr)


def test_uring_server_refuses_what_it_cannot_do(tmp_path):
    why = io_uring_usable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the io_uring experiment: {why}")
        pytest.skip(why)
    exe = build(tmp_path, "uring_server", "-luring")
    for bad, say in [(["--link", "--buf-ring", "0", "127.0.0.1"], "do not go together"),
                     (["0"], "usage"), (["--nope", "0", "127.0.0.1"], "usage"),
                     (["0", "not an address"], "not an address")]:
        out = subprocess.run([exe, *bad], capture_output=True, text=True, timeout=10)
        assert out.returncode == 2 and say in out.stderr, (bad, out.stderr)
