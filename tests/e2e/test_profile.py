"""bench/profile.sh, the tool behind BENCHMARKS.md's "where the server's time
goes", run for real on the upcase C example server in stream mode: its
figures are there, and on the wire a streaming client's replies leave in
full segments, with few small tail segments beside them (the reads cut to
whole segments, src/server/conn.rs `read_len`: without them, up to half
the 64 KiB replies left a 53-byte segment of their own on loopback)."""

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
    m = re.search(r"^packets on lo per operation, by payload past a bare ACK \(full: (\d+) bytes\):\n"
                  r"  no data \(ACK, FIN\) +([\d.]+)\n"
                  r"  full +([\d.]+)\n"
                  r"  tail \(1-1023 bytes\) +([\d.]+)\n"
                  r"  other +([\d.]+)\n"
                  r"  tails by size \(bytes x packets\): (.*)\n", text, re.M)
    assert m, text
    mss, full, tails = int(m.group(1)), float(m.group(3)), float(m.group(4))
    # 64 MiB each way on loopback (MSS 65,483 with lo's MTU of 65,536).
    assert mss > 16384, text
    assert full >= 2 * (64 << 20) // mss * 0.5, text
    by_size = {}
    if m.group(6) != "none":
        for item in m.group(6).split(", "):
            size, count = item.split(" x ")
            by_size[int(size)] = int(count)
    assert sum(by_size.values()) <= tails, text
    # A 64 KiB write cut into segments of `mss` leaves a tail of this size.
    # Before the reads were cut to whole segments there were 0.06-0.49 of
    # them per full segment (five runs; from run to run, as the replies'
    # tails merged with the next reply or not); now 0.01-0.08 (five runs):
    # the first read of a wake-up is not cut, and the load generator's
    # writes leave one when the kernel takes 64 KiB of 256 KiB. A guard
    # against the tails coming back in bulk; the unit tests of
    # src/server/conn.rs check the cut itself.
    write_tail = (64 << 10) % mss
    assert by_size.get(write_tail, 0) < 0.25 * full, text
