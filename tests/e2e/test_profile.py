"""bench/profile.sh, the tool behind BENCHMARKS.md's "where the server's time
goes", run for real on the upcase C example server in stream mode: its
figures are there, and on the wire a streaming client's replies leave in
full segments, with hardly a small tail segment beside them (the reads cut
to whole segments, src/server/conn.rs `read_len`: without them, about one
64 KiB reply in five left a 53-byte segment of its own on loopback)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(900)


def perf_usable():
    """Why perf cannot record here, or None."""
    if not shutil.which("perf"):
        return "perf is not installed (Debian: linux-perf)"
    probe = subprocess.run(["perf", "stat", "-e", "cpu-clock", "true"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"perf cannot count here: {probe.stderr.strip()[:200]}"
    return None


def test_profile_sh_stream_replies_are_full_segments():
    why = perf_usable()
    if why:
        pytest.skip(why)
    subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "upcase-loadgen"], cwd=ROOT, check=True,
                   timeout=600)
    server = ROOT / "build" / "c" / "tcp_server"
    assert server.exists(), "make builds the C examples first"
    out = subprocess.run(["bash", str(ROOT / "bench" / "profile.sh"), "stream", "--bytes", str(64 << 20), "--",
                          str(server), "--quiet", "0", "127.0.0.1"],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "LC_ALL": "C"})
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert re.search(r"^server CPU: \d+\.\d+ s", text, re.M), text
    assert re.search(r"^  recvfrom +\d", text, re.M) and re.search(r"^  sendto +\d", text, re.M), text
    assert re.search(r"^samples in the kernel: [\d.]+ %", text, re.M), text
    m = re.search(r"^packets on lo per operation, by payload \(full: (\d+) bytes\):\n"
                  r"  no data \(ACK, SYN, FIN\) +([\d.]+)\n"
                  r"  full +([\d.]+)\n"
                  r"  tail \(1-1023 bytes\) +([\d.]+)\n"
                  r"  other +([\d.]+)\n", text, re.M)
    assert m, text
    mss, full, tails = int(m.group(1)), float(m.group(3)), float(m.group(4))
    # 64 MiB each way on loopback (MSS 65,483 with lo's MTU of 65,536).
    assert mss > 16384, text
    assert full >= 2 * (64 << 20) // mss * 0.5, text
    # The load generator's own 256 KiB writes leave a tail now and then;
    # the server's replies should add almost none.
    assert tails < 0.08 * full, text
