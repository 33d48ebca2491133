#!/usr/bin/env python3
"""`make bench`: upcase against the servers people would pick instead.

Runs the load generator (target/release/loadgen) against each server in each
mode, one after another, on loopback, and measures for every run:
operations/s, p50/p99 latency (from the load generator), server CPU time per
operation (utime + stime from /proc/PID/stat, all threads) and server RSS
(/proc/PID/status). Every reply is verified byte for byte by the load
generator; wrong or missing bytes are reported, never ignored, and fail the
run. After each mode's rounds, the reference and the two upcase servers the
targets name (in oneshot also the servers of the Python target) are
measured again in paired slices (see paired()): the targets table comes
from there.

Writes bench/results/latest.json, latest.md (the table), chart.png and
latest-run.log (what it printed), and puts the table and chart into
BENCHMARKS.md. All claims are ratios to the C
epoll reference within the same run: the machine has 2 cores shared by the
load generator and the server, and absolute figures are noisy.

usage: bench/run.py [--quick] [--only NAME,...] [--modes MODE,...] [--rounds N]
                    [--cycles N | --no-paired] [--tls | --tls-only] [--tls-... (see --help)]

With --tls, the TLS section follows (bench/tls_bench.py); --tls-only runs
it alone.
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PY = str(ROOT / ".venv" / "bin" / "python")
LOADGEN = str(ROOT / "target" / "release" / "loadgen")
EPOLL_BIN = str(ROOT / "build" / "bench" / "epoll_server")
TICK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"

REFERENCE = "C epoll reference"
# name -> (tcp command, udp command, modes); "{port}" is filled with 0.
S = str(ROOT / "bench" / "servers")
SERVERS = {
    "C epoll reference": ([EPOLL_BIN, "0", HOST], [EPOLL_BIN, "--udp", "0", HOST],
                          ["oneshot", "persistent", "stream", "udp", "hold"]),
    "upcase (C example)": ([str(ROOT / "build/c/tcp_server"), "--quiet", "0", HOST],
                           [str(ROOT / "build/c/udp_server"), "--quiet", "0", HOST],
                           ["oneshot", "persistent", "stream", "udp", "hold"]),
    "upcase (1 loop + defer-accept)": ([str(ROOT / "build/c/tcp_server"), "--quiet", "--threads", "1", "--defer-accept", "0", HOST],
                                      [str(ROOT / "build/c/udp_server"), "--quiet", "--threads", "1", "0", HOST],
                                      ["oneshot", "persistent", "stream", "udp", "hold"]),
    # The concurrent TCP server on io_uring (UDP has no io_uring loop: the
    # 1-loop UDP server, so it is left out of udp).
    "upcase (1 loop + defer-accept + io_uring)": (
        [str(ROOT / "build/c-io-uring/tcp_server"), "--quiet", "--threads", "1", "--defer-accept", "--io-uring", "0", HOST],
        [str(ROOT / "build/c/udp_server"), "--quiet", "--threads", "1", "0", HOST],
        ["oneshot", "persistent", "stream", "hold"]),
    "upcase.Server (Python)": ([PY, f"{S}/upcase_py_server.py", "0", HOST],
                               [PY, f"{S}/upcase_py_server.py", "--udp", "0", HOST],
                               ["oneshot", "persistent", "stream", "udp"]),
    "upcase.Server (Python, 1 loop + defer-accept)": (
        [PY, f"{S}/upcase_py_server.py", "--threads", "1", "--defer-accept", "0", HOST],
        [PY, f"{S}/upcase_py_server.py", "--udp", "--threads", "1", "0", HOST],
        ["oneshot", "persistent", "stream", "udp"]),
    "upcase iterative": ([str(ROOT / "build/c/tcp_server"), "--iterative", "--quiet", "0", HOST],
                         [str(ROOT / "build/c/udp_server"), "--iterative", "--quiet", "0", HOST],
                         ["oneshot", "stream", "udp"]),
    "tokio": ([str(ROOT / "target/release/tokio-server"), "0", HOST],
              [str(ROOT / "target/release/tokio-server"), "--udp", "0", HOST],
              ["oneshot", "persistent", "stream", "udp", "hold"]),
    "asyncio": ([PY, f"{S}/asyncio_server.py", "0", HOST], [PY, f"{S}/asyncio_server.py", "--udp", "0", HOST],
                ["oneshot", "persistent", "stream", "udp"]),
    "ThreadingTCPServer": ([PY, f"{S}/threading_server.py", "0", HOST], [PY, f"{S}/threading_server.py", "--udp", "0", HOST],
                           ["oneshot", "persistent", "stream", "udp"]),
    "slide server (Python)": ([PY, f"{S}/slide_tcp_server.py", "0", HOST], [PY, f"{S}/slide_udp_server.py", "0", HOST],
                              ["oneshot", "stream", "udp"]),
    # The reference again, last in each round: how far one server moves
    # between two places in the same round (the noise gauge of the run).
    "C epoll reference (again)": ([EPOLL_BIN, "0", HOST], [EPOLL_BIN, "--udp", "0", HOST],
                                  ["oneshot", "persistent", "stream", "udp"]),
}
MODES = ["oneshot", "persistent", "stream", "udp", "hold"]
ROUNDS = 3
# The servers whose CPU per operation the targets compare: after a mode's
# rounds, these and the reference run again in paired slices (see paired()).
PAIRED = ["upcase (C example)", "upcase (1 loop + defer-accept)", "upcase (1 loop + defer-accept + io_uring)",
          f"{REFERENCE} (again)"]
# The upcase configurations of the targets table, one column each.
CONFIGS = ["upcase (C example)", "upcase (1 loop + defer-accept)", "upcase (1 loop + defer-accept + io_uring)"]
# ... and, in oneshot, the servers of the Python target (upcase.Server >= 5x ThreadingTCPServer).
PAIRED_EXTRA = {"oneshot": ["upcase.Server (Python)", "upcase.Server (Python, 1 loop + defer-accept)",
                            "ThreadingTCPServer"]}
PAIRED_CYCLES = 12
PAIRED_SECONDS = 0.5
UNIT = {"oneshot": "conn", "persistent": "req", "stream": "MiB", "udp": "dgram", "hold": "probe"}


def python_client_bench(quick):
    """upcase.tcp_request / udp_request in a loop against the stdlib, both
    against the upcase C example servers."""
    started = []
    try:
        tcp = Server(SERVERS["upcase (C example)"][0])
        started.append(tcp)
        udp = Server(SERVERS["upcase (C example)"][1])
        started.append(udp)
        out = subprocess.run([PY, str(ROOT / "bench" / "py_client_bench.py"), str(tcp.port), str(udp.port),
                              "2" if quick else "4"], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            print(f"python client bench failed: {out.stderr[-500:]}")
            return None
        return json.loads(out.stdout)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
        # Reported (the run then fails), but the figures measured so far are still written.
        print(f"python client bench failed: {e}")
        return None
    finally:
        for srv in started:
            srv.stop()


def targets(rows, pyclient, slices=None):
    """The issue's targets, each as the measured ratio in this run."""
    slices = slices or {}

    def get(server, mode, key):
        r = next((x for x in rows if x["server"] == server and x["mode"] == mode), None)
        return r.get(key) if r else None

    lines = ["### Targets (ratios within this run)", "",
             "Throughput and server CPU per op: the median of the ratios of the paired slices",
             "(each server's slice against the reference's slice of the same cycle; for the",
             "Python row, against ThreadingTCPServer's), in brackets their quartiles. Where a",
             "mode had no slices: the ratio of the medians of the rounds, in brackets the",
             "lowest and highest of the ratios paired by round. \"met\" is yes when any",
             "configuration meets the goal (io_uring serves TCP only: no udp figure).", "",
             "| target | goal | " + " | ".join(CONFIGS) + " | met |", "|---|---|" + "---:|" * len(CONFIGS) + "---|"]
    blank = " |" * (len(CONFIGS) - 1)

    def by_round(server, mode, key):
        """The median ratio, and the range of the per-round ratios."""
        mid = ratio(get(server, mode, key), get(REFERENCE, mode, key))
        per = [ratio(a, b) for a, b in zip(get(server, mode, "rounds_" + key) or [],
                                            get(REFERENCE, mode, "rounds_" + key) or [])]
        per = [p for p in per if p is not None]
        text = f"{fmt(mid, 2)}x" + (f" ({min(per):.2f}-{max(per):.2f})" if len(per) > 1 else "")
        return mid, text

    def sliced(server, mode, key, base=REFERENCE):
        """The paired slices' median ratio (to `base`) and quartiles, or None."""
        got, ref = slices.get(mode, {}).get(server), slices.get(mode, {}).get(base)
        if not got or not ref:
            return None
        st = ratio_stats(got[key]["per_cycle"], ref[key]["per_cycle"])
        return st["ratio"], f"{st['ratio']:.2f}x ({st['q1']:.2f}-{st['q3']:.2f})"

    def add(label, goal, mode, key, better, bound):
        vals = [sliced(server, mode, "cpu" if key == "cpu_us_per_op" else "rate") or by_round(server, mode, key)
                for server in CONFIGS]
        ok = any(v is not None and (v >= bound if better == "ge" else v <= bound) for v, _ in vals)
        cells = " | ".join(text if v is not None else "-" for v, text in vals)
        lines.append(f"| {label} | {goal} | {cells} | {'yes' if ok else 'no'} |")

    for mode in ["oneshot", "persistent", "stream", "udp"]:
        add(f"throughput, {mode}", ">= 1.0x C reference", mode, "rate", "ge", 1.0)
    for mode, bound in [("oneshot", 0.8), ("persistent", 1.0), ("stream", 0.9), ("udp", 0.6)]:
        add(f"server CPU per op, {mode}", f"<= {bound}x C reference", mode, "cpu_us_per_op", "le", bound)
    per_conn = [get(s, "hold", "rss_per_idle_conn_bytes") for s in CONFIGS]
    ok = any(v is not None and v <= 1024 for v in per_conn)
    cells = " | ".join(f"{fmt(v)} B" if v is not None else "-" for v in per_conn)
    lines.append(f"| RSS per idle connection | <= 1 KiB | {cells} | {'yes' if ok else 'no'} |")
    p99 = [get(s, "hold", "max_us") for s in CONFIGS]
    ok = any(v is not None and v < 100_000 for v in p99)
    cells = " | ".join(f"{fmt(v)} µs" if v is not None else "-" for v in p99)
    lines.append(f"| new client while 10,000 idle are held (max of 20) | < 100 ms | {cells} | {'yes' if ok else 'no'} |")
    threading_rate = get("ThreadingTCPServer", "oneshot", "rate")

    def python_row(server):
        """The slices' ratio to ThreadingTCPServer, or else the rounds'."""
        got = sliced(server, "oneshot", "rate", base="ThreadingTCPServer")
        if got:
            return got
        v = ratio(get(server, "oneshot", "rate"), threading_rate)
        return v, f"{fmt(v, 2)}x"

    r = [python_row(s) for s in ["upcase.Server (Python)", "upcase.Server (Python, 1 loop + defer-accept)"]]
    ok = any(v is not None and v >= 5 for v, _ in r)
    lines.append(f"| upcase.Server vs ThreadingTCPServer, oneshot conn/s | >= 5x | {r[0][1]} | {r[1][1]} | | "
                 f"{'yes' if ok else 'no'} |")
    if pyclient:
        r = pyclient["tcp_ratio"]
        lines.append(f"| upcase.tcp_request vs the stdlib socket, in a loop | >= 1.0x | {fmt(r, 2)}x |{blank} "
                     f"{'yes' if r >= 1.0 else 'no'} |")
        lines.append(f"| upcase.udp_request vs the stdlib socket, in a loop (a socket per request, "
                     f"as udp_request) | (no goal) | {fmt(pyclient['udp_ratio'], 2)}x |{blank} |")
        kept = pyclient.get("udp_ratio_kept_socket")
        if kept is not None:
            lines.append(f"| upcase.udp_request vs the stdlib keeping one socket for all requests | (no goal) | "
                         f"{fmt(kept, 2)}x |{blank} |")
    lines.append("")
    again = f"{REFERENCE} (again)"
    if any(r["server"] == again for r in rows):
        lines += ["### Noise gauge: the C reference against itself", "",
                  "The same reference binary, run a second time at the end of each round and as one",
                  "more server in the paired slices. A ratio away from 1.00x here is the machine,",
                  "not a server; read the targets with it.", "",
                  "| mode | throughput (rounds) | server CPU per op (rounds) | throughput (slices) | "
                  "server CPU per op (slices) |",
                  "|---|---:|---:|---:|---:|"]
        for mode in ["oneshot", "persistent", "stream", "udp"]:
            if get(again, mode, "rate") is not None:
                cut = [sliced(again, mode, key) for key in ("rate", "cpu")]
                lines.append(f"| {mode} | {by_round(again, mode, 'rate')[1]} | {by_round(again, mode, 'cpu_us_per_op')[1]} | "
                             + " | ".join(c[1] if c else "-" for c in cut) + " |")
        lines.append("")
    return "\n".join(lines)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Server:
    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        deadline = time.monotonic() + 20
        self.port = None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("listening on "):
                self.port = int(line.rsplit(":", 1)[1])
                break
        if self.port is None:
            self.stop()
            raise RuntimeError(f"{cmd[0]}: no 'listening on' line: {self.proc.stderr.read()[-500:]}")
        # Keep reading what it prints (one line per client) so it never blocks on a full pipe.
        self.sink = subprocess.Popen(["cat"], stdin=self.proc.stdout, stdout=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "sink"):
            self.sink.wait(timeout=10)


def loadgen(mode, port, seconds, extra=(), on_holding=None):
    cmd = [LOADGEN, mode, "--host", HOST, "--port", str(port), "--duration", str(seconds), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if on_holding:
        for line in proc.stderr:
            if line.startswith("HOLDING"):
                on_holding(int(line.split()[1]))
                break
    try:
        out, err = proc.communicate(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"loadgen {mode}: still running {seconds + 120} s after its own limit") from None
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"loadgen {mode}: exit {proc.returncode}: {err[-500:]}")
    return json.loads(out.strip().splitlines()[-1])


# The load of each mode, in the rounds and in the paired slices alike
# (stream's size differs: see run_one() and SLICE_LOAD).
LOAD = {
    # Two load-generator threads (4 clients each). On loopback connect()
    # runs both ends of the handshake, so one thread would cap every server
    # near the same rate, whatever the server spends; with both cores, what
    # a server saves goes to the load.
    "oneshot": ["--clients", "8", "--size", "32", "--threads", "2"],
    "persistent": ["--connections", "32", "--size", "64"],
    "udp": ["--workers", "64", "--size", "64"],
}


def run_one(name, mode, quick):
    tcp_cmd, udp_cmd, _ = SERVERS[name]
    srv = Server(udp_cmd if mode == "udp" else tcp_cmd)
    try:
        time.sleep(0.2)
        pid = srv.proc.pid
        rss0 = rss_kib(pid)
        cpu0 = cpu_seconds(pid)
        held = {}
        # The targets come from the paired slices; the rounds fill the
        # tables, and 1 s of load is thousands of operations (tens of
        # thousands for all but the slowest servers).
        secs = 1
        if mode in LOAD:
            r = loadgen(mode, srv.port, secs, LOAD[mode])
        elif mode == "stream":
            size = (256 if quick else 1024) << 20
            r = loadgen("stream", srv.port, 60, ["--bytes", str(size)])
        else:
            idle = 2000 if quick else 10000

            def at_hold(n):
                time.sleep(0.5)
                held["rss"] = rss_kib(pid)
                held["n"] = n

            r = loadgen("hold", srv.port, 60, ["--idle", str(idle), "--hold-secs", "1", "--probes", "20"],
                        on_holding=at_hold)
        time.sleep(0.05)  # the server's work on the last connections, as in paired()
        cpu = cpu_seconds(pid) - cpu0
        rss = rss_kib(pid)
    finally:
        srv.stop()
    ops = r.get("ops", 0)
    if mode == "stream":
        ops = r.get("bytes", 0) / (1 << 20)
        rate = r.get("bytes_per_s", 0) / (1 << 20)
    else:
        rate = r.get("ops_per_s", 0)
    row = {
        "server": name, "mode": mode, "rate": rate, "unit": UNIT[mode], "ops": ops,
        "p50_us": r.get("p50_us"), "p99_us": r.get("p99_us"), "max_us": r.get("max_us"),
        "server_cpu_s": cpu, "cpu_us_per_op": (cpu * 1e6 / ops) if ops else None,
        "rss_kib": rss, "rss_start_kib": rss0,
        "errors": r.get("errors", 0), "bad_replies": r.get("bad_replies", 0), "lost": r.get("lost", 0),
        "loadgen_cpu_s": r.get("loadgen_cpu_s"),
    }
    if mode == "stream":
        row["verified"] = r.get("verified")
    if mode == "hold":
        n = held.get("n", 0)
        row["idle_held"] = n
        row["rss_per_idle_conn_bytes"] = ((held.get("rss", rss0) - rss0) * 1024 / n) if n else None
        row["idle_alive_after_probes"] = r.get("idle_alive_after_probes")
        row["rate"] = None  # the figure is latency, not throughput
    return row


SLICE_LOAD = dict(LOAD, stream=["--bytes", str(256 << 20)])


def process_cpu_seconds(pid):
    """CPU time of the whole process (every thread, the ended ones too) from
    its CPU-time clock, in nanoseconds: /proc/PID/stat counts 10 ms ticks,
    too coarse for a half-second slice. The clock id of process PID is
    (~PID << 3) | 2 (CPUCLOCK_SCHED, see clock_getcpuclockid(3))."""
    return time.clock_gettime_ns((~pid << 3) | 2) / 1e9


def paired(mode, names, cycles, seconds):
    """Server CPU per operation in paired slices. The rounds run each server
    for seconds, one after the other, and on this VM a slow patch lasts about
    as long: it can hit one server and spare the next. Here the servers (the
    reference first) are all started once and kept running, and the load
    generator goes to each in turn for a short slice (`seconds`; stream: 256
    MiB each way), `cycles` times, the order reversed every other cycle. A
    server's slice is divided by the reference's slice of the same cycle.

    Each server first takes one slice that is not counted (first-use costs),
    and the second CPU reading waits 50 ms after the load generator has
    ended, so that the server's work on the last connections is in its own
    slice.

    Returns {name: {"cpu": [CPU µs per operation, one per cycle],
    "rate": [operations (stream: MiB) per second, one per cycle]}}; raises if
    a slice had an error, a wrong reply or a loss, or (stream) did not move
    every byte."""
    if names[0] != REFERENCE or len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"paired(): the reference first, then other servers, each once: {names}")
    if cycles < 2:
        raise ValueError(f"paired(): at least 2 cycles, not {cycles}")
    servers = {}
    per_op = {n: {"cpu": [], "rate": []} for n in names}

    def one_slice(n):
        srv = servers[n]
        before = process_cpu_seconds(srv.proc.pid)
        r = loadgen(mode, srv.port, 60 if mode == "stream" else seconds, SLICE_LOAD[mode])
        time.sleep(0.05)
        used = process_cpu_seconds(srv.proc.pid) - before
        wrong = r.get("errors", 0) + r.get("bad_replies", 0) + r.get("lost", 0)
        if wrong:
            raise RuntimeError(f"{n}, {mode} slice: {r.get('errors', 0)} errors, "
                               f"{r.get('bad_replies', 0)} wrong replies, {r.get('lost', 0)} lost: "
                               f"{r.get('error_kinds')}")
        if mode == "stream" and not r.get("verified"):
            raise RuntimeError(f"{n}, stream slice: not every byte came back within the time limit")
        ops = r.get("bytes", 0) / (1 << 20) if mode == "stream" else r.get("ops", 0)
        if not ops or not r.get("seconds"):
            raise RuntimeError(f"{n}, {mode} slice: no operation completed")
        return used * 1e6 / ops, ops / r["seconds"]

    try:
        for n in names:
            tcp, udp, _ = SERVERS[n]
            servers[n] = Server(udp if mode == "udp" else tcp)
        for n in names:
            one_slice(n)  # warm-up, not counted
        for cycle in range(cycles):
            for n in (names if cycle % 2 == 0 else names[::-1]):
                cpu, rate = one_slice(n)
                per_op[n]["cpu"].append(cpu)
                per_op[n]["rate"].append(rate)
    finally:
        for srv in servers.values():
            try:
                srv.stop()
            except Exception as e:  # stop the others all the same
                print(f"stopping a server: {e}", file=sys.stderr)
    return per_op


def paired_summary(per_op):
    """For each server and figure ("cpu", "rate"): the median, and the
    median and quartiles of the server's ratios to the reference, cycle by
    cycle."""
    out = {}
    for n, figs in per_op.items():
        out[n] = {"cycles": len(figs["cpu"])}
        for key, xs in figs.items():
            out[n][key] = dict(ratio_stats(xs, per_op[REFERENCE][key]), median=statistics.median(xs), per_cycle=xs)
    return out


def ratio_stats(xs, base):
    """Median and quartiles (inclusive: of the ratios themselves, not of a
    population beyond them) of xs[i] / base[i]."""
    rs = [a / b for a, b in zip(xs, base)]
    q1, median, q3 = statistics.quantiles(rs, n=4, method="inclusive")
    return {"ratio": median, "q1": q1, "q3": q3}


def iperf3(quick):
    """One TCP flow over loopback, one direction, for 3 s: the bytes-per-second
    ceiling of this machine's loopback. (iperf3 3.x is single-threaded, so its
    --bidir starves one direction; the echo's stream mode moves every byte
    both ways, so it cannot reach this figure.)"""
    if not shutil.which("iperf3"):
        return None
    with socket_port() as port:
        srv = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = subprocess.run(["iperf3", "-c", HOST, "-p", str(port), "-t", "1" if quick else "3", "-J"],
                             capture_output=True, text=True, timeout=120)
        data = json.loads(out.stdout)
        received = data["end"]["sum_received"]["bits_per_second"] / 8
        return {"server": "iperf3 (one direction, ceiling)", "mode": "stream", "rate": received / (1 << 20),
                "unit": "MiB", "ops": None, "p50_us": None, "p99_us": None, "server_cpu_s": None,
                "cpu_us_per_op": None, "rss_kib": None, "errors": 0, "bad_replies": 0, "lost": 0}
    finally:
        if srv.poll() is None:
            srv.terminate()
        srv.wait(timeout=10)


class socket_port:
    """A free TCP port on loopback (bound, released on exit)."""

    def __enter__(self):
        import socket
        self.s = socket.socket()
        self.s.bind((HOST, 0))
        return self.s.getsockname()[1]

    def __exit__(self, *exc):
        self.s.close()


def median_row(rs):
    """The median run by server CPU per operation (or by rate), with the
    errors of every round added up: none may hide in a discarded round."""
    key = "cpu_us_per_op" if rs[0]["mode"] != "hold" else "p50_us"
    good = [r for r in rs if r.get(key) is not None] or rs
    good = sorted(good, key=lambda r: r.get(key) or 0)
    row = dict(good[len(good) // 2])
    for k in ("errors", "bad_replies", "lost"):
        row[k] = sum(r.get(k) or 0 for r in rs)
    rates = sorted(r["rate"] for r in rs if r.get("rate") is not None)
    if rates:
        row["rate"] = rates[len(rates) // 2]
    row["rounds"] = len(rs)
    # Every round's figures, in round order, for ratios paired by round.
    row["rounds_rate"] = [r.get("rate") for r in rs]
    row["rounds_cpu_us_per_op"] = [r.get("cpu_us_per_op") for r in rs]
    return row


def fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def ratio(a, b):
    return (a / b) if (a is not None and b) else None


def table(rows):
    ref = {r["mode"]: r for r in rows if r["server"] == REFERENCE}
    lines = []
    for mode in MODES:
        mrows = [r for r in rows if r["mode"] == mode]
        if not mrows:
            continue
        unit = UNIT[mode]
        lines.append(f"### {mode}\n")
        if mode == "hold":
            lines.append("| server | idle connections held | RSS per idle connection | new client p50 | p99 | max | server CPU | errors |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
            for r in mrows:
                per = r.get("rss_per_idle_conn_bytes")
                lines.append(f"| {r['server']} | {fmt(r.get('idle_held'))} | {fmt(per)} B | {fmt(r['p50_us'])} µs | "
                             f"{fmt(r['p99_us'])} µs | {fmt(r.get('max_us'))} µs | {fmt(r['server_cpu_s'], 2)} s | "
                             f"{r['errors'] + r['bad_replies']} |")
        else:
            lines.append(f"| server | {unit}/s | vs C ref | p50 | p99 | server CPU µs/{unit} | vs C ref | server RSS | errors / bad / lost |")
            lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            base = ref.get(mode, {})
            for r in mrows:
                rr = ratio(r["rate"], base.get("rate"))
                cr = ratio(r["cpu_us_per_op"], base.get("cpu_us_per_op"))
                lines.append(
                    f"| {r['server']} | {fmt(r['rate'])} | {fmt(rr, 2)}x | {fmt(r['p50_us'])} µs | {fmt(r['p99_us'])} µs | "
                    f"{fmt(r['cpu_us_per_op'], 2)} | {fmt(cr, 2)}x | {fmt(r['rss_kib'])} KiB | "
                    f"{r['errors']} / {r['bad_replies']} / {r['lost']} |")
        lines.append("")
    return "\n".join(lines)


def chart(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    modes = [m for m in ["oneshot", "persistent", "stream", "udp"] if any(r["mode"] == m for r in rows)]
    servers = [s for s in SERVERS if not s.startswith(REFERENCE)]  # the reference is the 1.0 line
    ref = {r["mode"]: r for r in rows if r["server"] == REFERENCE}
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    width = 0.8 / max(1, len(servers))
    for ax, key, title in [(axes[0], "rate", "throughput vs C epoll reference (higher is better)"),
                           (axes[1], "cpu_us_per_op", "server CPU per operation vs C epoll reference (lower is better)")]:
        for i, s in enumerate(servers):
            vals = []
            for m in modes:
                r = next((x for x in rows if x["server"] == s and x["mode"] == m), None)
                vals.append(ratio(r[key], ref.get(m, {}).get(key)) if r else 0)
            xs = [j + (i - len(servers) / 2) * width + width / 2 for j in range(len(modes))]
            ax.bar(xs, [v or 0 for v in vals], width, label=s)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(modes)))
        ax.set_xticklabels(modes)
        ax.set_title(title, fontsize=10)
        ax.set_yscale("log")
    # Below both panels, where it covers no bar.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    return True


def machine():
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}"


class Tee:
    """What the run prints, stdout and stderr, also goes into
    bench/results/latest-run.log. It is written beside it (`.tmp`) and
    takes the name only with the results (`keep()`): a run that stops
    before writing its results leaves the log of the last one in place."""

    def __init__(self, path):
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.file = open(self.tmp, "w", encoding="utf-8", buffering=1)
        self.saved = (sys.stdout, sys.stderr)
        sys.stdout = _Both(sys.stdout, self.file)
        sys.stderr = _Both(sys.stderr, self.file)

    def _restore(self):
        sys.stdout, sys.stderr = self.saved
        self.file.close()

    def keep(self):
        self._restore()
        os.replace(self.tmp, self.path)

    def discard(self):
        self._restore()
        self.tmp.unlink(missing_ok=True)


class _Both:
    """A text stream that also writes to a file; anything else is the stream's."""

    def __init__(self, stream, file):
        self.stream = stream
        self.file = file

    def write(self, text):
        self.stream.write(text)
        self.file.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.file.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter runs (for a smoke test)")
    ap.add_argument("--only", default="", help="comma-separated server names (the reference is always run)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--rounds", type=int, default=0, help="runs per server and mode, median reported (default 3, 1 with --quick)")
    ap.add_argument("--cycles", type=int, default=0,
                    help=f"cycles of paired slices per mode, at least 2 (default {PAIRED_CYCLES}, 3 with --quick)")
    ap.add_argument("--no-paired", action="store_true",
                    help="skip the paired slices (the CPU targets then use the rounds; --cycles is ignored)")
    import tls_bench  # bench/tls_bench.py, which imports this file for its helpers
    tls_bench.add_arguments(ap)
    args = ap.parse_args()
    tls_bench.check_args(ap, args)
    if args.rounds < 0:
        ap.error("--rounds must be 1 or more")
    if args.cycles < 0 or args.cycles == 1:
        ap.error("--cycles must be 2 or more")
    only, unknown = only_names(args.only)
    if unknown:
        ap.error(f"--only: no server named {unknown!r}; the names: {'; '.join(SERVERS)}")
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        ap.error(f"--modes: {', '.join(unknown) if unknown else 'none given'}; the modes: {','.join(MODES)}")
    # The reference (and its second run, the noise gauge) always runs.
    names = [n for n in SERVERS if not only or n.startswith(REFERENCE) or n in only]
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A SIGTERM ends the run as Ctrl-C does: through the `finally`s that
    # stop the servers (each in a session of its own, so nothing else would).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    log = Tee(RESULTS / ("tls-run.log" if args.tls_only else "latest-run.log"))
    try:
        print(f"{shlex.join(['bench/run.py'] + sys.argv[1:])}  "
              f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine()})")
        problems = [] if args.tls_only else measure(args, names, modes)
        if args.tls or args.tls_only:
            problems += tls_bench.measure(args)
        if problems:
            print("THIS RUN FAILED:")
            for prob in problems:
                print(f"  - {prob}")
    except BaseException:
        log.discard()
        raise
    log.keep()
    if problems:
        sys.exit(1)


def measure(args, names, modes):
    """Every server in every mode, then the Python client bench; writes the
    results (latest.json, latest.md, chart.png, BENCHMARKS.md). Returns what
    fails the run."""
    started = time.monotonic()
    rows = []
    slices = {}  # mode -> paired_summary()
    problems = []
    for mode in modes:
        # Rounds go over all the servers in turn, so that a slow patch of the
        # machine hits every server alike; each figure is the median.
        runs = {name: [] for name in names if mode in SERVERS[name][2]}
        rounds = args.rounds or (1 if args.quick else ROUNDS)
        for rnd in range(rounds):
            for name in runs:
                print(f"[{time.monotonic() - started:6.1f}s] {mode:<10} {name} (round {rnd + 1}/{rounds}) ...", end=" ",
                      flush=True)
                try:
                    row = run_one(name, mode, args.quick)
                except Exception as e:  # a server that fails is reported, and the rest still run
                    print(f"FAILED: {e}")
                    row = {"server": name, "mode": mode, "rate": None, "unit": UNIT[mode], "ops": None,
                           "p50_us": None, "p99_us": None, "server_cpu_s": None, "cpu_us_per_op": None,
                           "rss_kib": None, "errors": 1, "bad_replies": 0, "lost": 0, "failure": str(e)}
                runs[name].append(row)
                if "failure" not in row:
                    print(f"{fmt(row['rate'])} {row['unit']}/s, {fmt(row['cpu_us_per_op'], 2)} µs CPU/{row['unit']}, "
                          f"errors {row['errors']}, bad {row['bad_replies']}, lost {row['lost']}")
                problems += round_problems(row, rnd + 1)
        for name, rs in runs.items():
            rows.append(median_row(rs))
        if mode in SLICE_LOAD and not args.no_paired and any(n in runs for n in PAIRED if n.startswith("upcase")):
            chosen = [REFERENCE] + [n for n in PAIRED + PAIRED_EXTRA.get(mode, []) if n in runs]
            cycles = args.cycles or (3 if args.quick else PAIRED_CYCLES)
            print(f"[{time.monotonic() - started:6.1f}s] {mode:<10} paired slices: {cycles} cycles over "
                  f"{len(chosen)} servers ...", end=" ", flush=True)
            try:
                got = paired_summary(paired(mode, chosen, cycles, PAIRED_SECONDS))
            except Exception as e:  # reported, and the run fails at the end
                print(f"FAILED: {e}")
                problems.append(f"paired slices, {mode}: {e}")
            else:
                slices[mode] = got
                print("; ".join(f"{n} CPU {v['cpu']['ratio']:.2f}x" for n, v in got.items() if n != REFERENCE))
        if mode == "stream":
            r = iperf3(args.quick)
            if r:
                rows.append(r)
                print(f"[{time.monotonic() - started:6.1f}s] stream     iperf3, one direction: {fmt(r['rate'])} MiB/s")
    pyclient = python_client_bench(args.quick)
    if pyclient:
        print(f"[{time.monotonic() - started:6.1f}s] python client: tcp_request {pyclient['tcp_ratio']:.2f}x the stdlib, "
              f"udp_request {pyclient['udp_ratio']:.2f}x (a socket per request), "
              f"{pyclient['udp_ratio_kept_socket']:.2f}x (the stdlib keeping its socket)")
        problems += [f"python client {k}: {v['bad']} wrong replies" for k, v in pyclient.items()
                     if isinstance(v, dict) and v.get("bad")]
    else:
        problems.append("the python client bench failed (see above): its rows are missing")
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "seconds": round(time.monotonic() - started, 1), "quick": args.quick, "problems": problems}
    (RESULTS / "latest.json").write_text(json.dumps({"meta": meta, "rows": rows, "paired_slices": slices,
                                                     "python_client": pyclient}, indent=1))
    md = targets(rows, pyclient, slices) + "\n" + table(rows)
    (RESULTS / "latest.md").write_text(md)
    have_chart = chart(rows, RESULTS / "chart.png")
    print()
    print(md)
    update_benchmarks_md(meta, md, have_chart)
    return problems


def only_names(text):
    """The server names in a comma-separated --only list, where a name may
    itself hold a comma ("upcase.Server (Python, 1 loop + defer-accept)"):
    pieces are joined back until they make a name. Returns (names, the
    first text that is no name, or None)."""
    names, cur = [], None
    for piece in text.split(","):
        cur = piece if cur is None else f"{cur},{piece}"
        if cur.strip() in SERVERS:
            names.append(cur.strip())
            cur = None
    leftover = cur.strip() if cur is not None and cur.strip() else None
    return names, leftover


def round_problems(row, rnd):
    """What in one round's row fails the run: a wrong reply from any server;
    a server that could not run; a stream that did not move every byte; and
    errors or losses of the servers the targets compare (upcase and the
    reference). Errors and losses of the other servers are theirs to have:
    they stay in the table."""
    where = f"{row['server']}, {row['mode']}, round {rnd}"
    out = []
    if row.get("failure"):
        out.append(f"{where}: {row['failure']}")
    if row.get("bad_replies"):
        out.append(f"{where}: {row['bad_replies']} wrong replies")
    if row["mode"] == "stream" and "failure" not in row and not row.get("verified"):
        out.append(f"{where}: not every byte came back within the time limit")
    ours = row["server"].startswith(("upcase", REFERENCE))
    if ours and "failure" not in row and (row.get("errors") or row.get("lost")):
        out.append(f"{where}: {row['errors']} errors, {row['lost']} lost")
    return out


def update_benchmarks_md(meta, md, have_chart):
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else ""
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    failed = "".join(f"\n- {p}" for p in meta.get("problems", []))
    block = (f"{start}\nLatest run: {meta['date']}, {meta['machine']}, {meta['seconds']} s"
             f"{' (quick)' if meta['quick'] else ''}.\n\n"
             + (f"**This run failed:**{failed}\n\n" if failed else "")
             + ("![throughput and server CPU per operation, relative to the C epoll reference](bench/results/chart.png)\n\n"
                if have_chart else "")
             + md + f"\n{end}")
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text + "\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
