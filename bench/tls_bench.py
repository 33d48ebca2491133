#!/usr/bin/env python3
"""The TLS section of `make bench` (also `make bench-tls`, or
`bench/run.py --tls-only`): the upcase TLS server against the TLS servers
people would pick instead, in one run, on loopback.

Modes (the load generator's TLS client: TLS 1.3, AES-128-GCM, an X25519 key
share; see bench/loadgen):
  full       connect, full handshake (no resumption), 32 bytes, close_notify,
             the reply and the server's close_notify, close (ECDSA P-256)
  resumed    the same, resuming with tickets
  full-rsa   full handshakes with an RSA-2048 certificate
  persistent kept-open TLS connections, 64-byte requests
  stream     one connection, --tls-stream-bytes (1 GiB) each way
  hold       --tls-idle (2,000) idle TLS connections: server RSS per connection

Server CPU per operation is utime + stime of the server process (every
thread, from its CPU-time clock) plus that of its children once reaped
(socat and ncat fork per connection), over the load generator's run.
Certificates (a CA, ECDSA P-256 and RSA-2048 server certificates) are made
fresh per run with the openssl command line in a temporary directory. The
floor is the crypto a server cannot avoid, from `openssl speed` on one core.

Writes bench/results/tls.json and tls.md, and puts tls.md into BENCHMARKS.md
between `<!-- tls-results:start -->` and `<!-- tls-results:end -->` when both
markers are there.
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import run as plain  # bench/run.py: Server, loadgen, fmt, ratio, rss_kib, machine

ROOT = plain.ROOT
HOST = plain.HOST
S = ROOT / "bench" / "servers"
TCP_SERVER = ROOT / "build" / "c" / "tcp_server"
UPCASE_EXAMPLE = ROOT / "target" / "release" / "examples" / "upcase-tls-server"
TOKIO = ROOT / "target" / "release" / "tokio-server"
C_TLS = ROOT / "build" / "bench" / "c-tls" / "tls_server"
PY_TLS = S / "py_tls_server.py"
PYTHON = plain.PY if Path(plain.PY).exists() else sys.executable

MODES = ["full", "resumed", "full-rsa", "persistent", "stream", "hold"]
UNIT = {"full": "handshake", "resumed": "handshake", "full-rsa": "handshake", "persistent": "req",
        "stream": "GiB each way", "hold": "conn"}
# Load generator runs: the handshake modes get two threads (a full handshake
# costs the client more CPU than a fast server).
LOAD = {
    "full": ["handshake", "--clients", "8", "--threads", "2"],
    "resumed": ["resumed", "--clients", "8", "--threads", "2"],
    "full-rsa": ["handshake", "--clients", "8", "--threads", "2"],
    "persistent": ["persistent", "--connections", "32", "--size", "64"],
}
UPCASE = "upcase"
# The upcase server without TLS under the same load: what TCP alone costs
# (a floor of its own, not an anchor). Handshake modes share the full one's.
TCP_ALONE = "TCP alone (upcase, no TLS)"
TCP_LOAD = {"full": ["oneshot", "--clients", "8", "--threads", "2", "--size", "32"]}
TCP_MODE = {"full": "full", "resumed": "full", "full-rsa": "full", "persistent": "persistent", "stream": "stream"}
# The targets: server CPU per operation against the best anchor
# (and the floor), throughput >= the best anchor's, RSS per idle connection.
CPU_GOAL = {"full": 0.85, "resumed": 0.85, "full-rsa": 0.9, "persistent": 0.85, "stream": 0.75}
FLOOR_GOAL = {"full": 2.0}
RSS_GOAL_KIB = 4.0


def upcase_command():
    """build/c/tcp_server when it takes --tls-cert, else the Rust bench server."""
    if TCP_SERVER.exists():
        try:
            out = subprocess.run([str(TCP_SERVER), "--help"], capture_output=True, text=True, timeout=10)
            if "--tls-cert" in out.stdout + out.stderr:
                return [str(TCP_SERVER), "--quiet"], "build/c/tcp_server"
        except (OSError, subprocess.SubprocessError):
            pass
    if UPCASE_EXAMPLE.exists():
        return [str(UPCASE_EXAMPLE)], "upcase-tls-server (bench/loadgen/examples)"
    return None, None


def servers():
    """name -> (command from (cert, key, ca, port), modes, what runs it); only those present."""
    out = {}
    up, what = upcase_command()
    if up:
        out[UPCASE] = (lambda c, k, a, p, up=up: up + ["--tls-cert", c, "--tls-key", k, "0", HOST],
                       MODES, what)
        out["upcase (1 loop)"] = (lambda c, k, a, p, up=up: up + ["--threads", "1", "--tls-cert", c, "--tls-key", k,
                                                                  "0", HOST],
                                  [m for m in MODES if m != "hold"], what)
        out[TCP_ALONE] = (lambda c, k, a, p, up=up: up + ["0", HOST], ["full", "persistent", "stream"], what)
    if TOKIO.exists():
        out["tokio-rustls"] = (lambda c, k, a, p: [str(TOKIO), "--tls-cert", c, "--tls-key", k, "0", HOST], MODES,
                               "target/release/tokio-server")
    if C_TLS.exists():
        out["C epoll + OpenSSL"] = (lambda c, k, a, p: [str(C_TLS), "0", c, k], MODES, "build/bench/c-tls/tls_server")
    if PY_TLS.exists():
        out["Python asyncio + ssl"] = (lambda c, k, a, p: [PYTHON, str(PY_TLS), "0", c, k], MODES,
                                       "bench/servers/py_tls_server.py")
    # tr buffers its output on a pipe: unbuffered, it answers each read at once.
    tr = "stdbuf -o0 tr a-z A-Z"
    if shutil.which("socat") and shutil.which("stdbuf"):
        # A process per connection: its memory is not the parent's, so no hold.
        out["socat OPENSSL-LISTEN,fork"] = (
            lambda c, k, a, p: ["socat", f"OPENSSL-LISTEN:{p},bind={HOST},fork,reuseaddr,cert={c},key={k},cafile={a},"
                                "verify=0", f"EXEC:{tr}"],
            ["full", "resumed", "full-rsa", "persistent", "stream"], "socat")
    if shutil.which("ncat") and shutil.which("stdbuf"):
        # ncat --sh-exec stops relaying at the client's end of stream: kept-open connections only.
        out["ncat --ssl"] = (
            lambda c, k, a, p: ["ncat", "--ssl", "--ssl-cert", c, "--ssl-key", k, "-l", HOST, str(p), "-k",
                                "--max-conns", "256", "--sh-exec", tr],
            ["persistent"], "ncat")
    return out


ANCHORS_MISSING = {"C epoll + OpenSSL": C_TLS, "Python asyncio + ssl": PY_TLS}


def make_certs(d):
    """A CA and two server certificates for localhost / 127.0.0.1 it signed:
    ECDSA P-256 (ec.pem, ec.key) and RSA-2048 (rsa.pem, rsa.key)."""
    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{d}/ca.key",
        "-out", f"{d}/ca.pem", "-days", "2", "-subj", "/CN=upcase bench CA")
    Path(d, "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                  "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    for name, newkey in [("ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                         ("rsa", ["-newkey", "rsa:2048"])]:
        ssl("req", *newkey, "-nodes", "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr", "-subj", "/CN=localhost")
        ssl("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{d}/ext.cnf", "-out", f"{d}/{name}.pem")


def speed(args):
    """`openssl speed -mr` lines starting with '+F', split."""
    out = subprocess.run(["openssl", "speed", "-mr", *args], capture_output=True, text=True, timeout=300)
    return [line.split(":") for line in out.stdout.splitlines() if line.startswith("+F")]


def floor(seconds):
    """The crypto floor on one core, from `openssl speed`: µs per full
    handshake (1 ECDSA P-256 sign + 1 X25519), per resumed handshake (1
    X25519), per RSA full handshake (1 RSA-2048 sign + 1 X25519), and s per
    GiB each way of stream (2 GiB of AES-128-GCM)."""
    s = str(seconds)
    rates = {}
    for f in speed(["-seconds", s, "ecdsap256", "ecdhx25519", "rsa2048"]):
        if f[0] == "+F2" and f[2] == "2048":
            rates["rsa2048_sign_per_s"] = float(f[3])
        elif f[0] == "+F4" and f[2] == "256":
            rates["ecdsap256_sign_per_s"] = float(f[3])
        elif f[0] == "+F5" and f[2] == "253":
            rates["x25519_per_s"] = float(f[3])
    for f in speed(["-seconds", s, "-bytes", "16384", "-evp", "aes-128-gcm"]):
        if f[0] == "+F" and len(f) >= 4:
            rates["aes128gcm_bytes_per_s"] = float(f[-1])
    need = ["rsa2048_sign_per_s", "ecdsap256_sign_per_s", "x25519_per_s", "aes128gcm_bytes_per_s"]
    if any(k not in rates for k in need):
        raise RuntimeError(f"openssl speed: could not read {[k for k in need if k not in rates]}")
    x = 1e6 / rates["x25519_per_s"]
    return dict(rates, **{
        "full": 1e6 / rates["ecdsap256_sign_per_s"] + x,
        "resumed": x,
        "full-rsa": 1e6 / rates["rsa2048_sign_per_s"] + x,
        "stream": 2 * (1 << 30) / rates["aes128gcm_bytes_per_s"],
    })


def server_cpu(pid):
    """CPU seconds of the process (every thread, ns clock) and of its reaped children (ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    children = (int(fields[13]) + int(fields[14])) / plain.TICK  # cutime, cstime
    return plain.process_cpu_seconds(pid) + children


class PortServer(plain.Server):
    """A server that prints nothing: started on a port of ours, ready once it accepts."""

    def __init__(self, cmd, port):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.port = port
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]}: exited {self.proc.returncode}: {self.proc.stderr.read()[-500:]}")
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{cmd[0]}: not accepting on port {port} after 10 s")


def start(name, spec, certs, mode):
    cmd_of, _, _ = spec
    kind = "rsa" if mode == "full-rsa" else "ec"
    cert, key, ca = f"{certs}/{kind}.pem", f"{certs}/{kind}.key", f"{certs}/ca.pem"
    if name.startswith(("socat", "ncat")):
        with plain.socket_port() as port:
            pass
        return PortServer(cmd_of(cert, key, ca, port), port)
    return plain.Server(cmd_of(cert, key, ca, 0))


def run_one(name, spec, certs, mode, args):
    srv = start(name, spec, certs, mode)
    tls = [] if name == TCP_ALONE else ["--tls-ca", f"{certs}/ca.pem", "--tls-name", "localhost"]
    held = {}
    try:
        time.sleep(0.2)
        pid = srv.proc.pid
        if mode == "hold":
            # Handshakes before the baseline, so that the code and tables
            # every handshake needs once are not counted per connection.
            plain.loadgen("handshake", srv.port, 1, ["--clients", "8"] + tls)
            time.sleep(0.2)
        rss0 = plain.rss_kib(pid)
        cpu0 = server_cpu(pid)
        if mode in LOAD:
            lg_mode, *extra = TCP_LOAD.get(mode, LOAD[mode]) if name == TCP_ALONE else LOAD[mode]
            r = plain.loadgen(lg_mode, srv.port, args.tls_seconds, extra + tls)
        elif mode == "stream":
            r = plain.loadgen("stream", srv.port, 300, ["--bytes", str(args.tls_stream_bytes)] + tls)
        else:
            def at_hold(n):
                time.sleep(0.5)
                held["rss"] = plain.rss_kib(pid)
                held["n"] = n
            r = plain.loadgen("hold", srv.port, 120, ["--idle", str(args.tls_idle), "--hold-secs", "1"] + tls,
                              on_holding=at_hold)
        time.sleep(0.2)  # the server's work on the last connections, and its children reaped
        cpu = server_cpu(pid) - cpu0
    finally:
        srv.stop()
    row = {"server": name, "mode": mode, "unit": UNIT[mode], "errors": r.get("errors", 0),
           "bad_replies": r.get("bad_replies", 0), "error_kinds": r.get("error_kinds"),
           "negotiated": r.get("negotiated"), "hrr": r.get("handshakes_hrr", 0),
           "resumed": r.get("handshakes_resumed"), "full": r.get("handshakes_full"),
           "p50_us": r.get("p50_us"), "p99_us": r.get("p99_us"), "server_cpu_s": cpu,
           "loadgen_cpu_s": r.get("loadgen_cpu_s")}
    if mode == "stream":
        gib = r.get("bytes", 0) / (1 << 30)
        row.update(ops=gib, rate=r.get("bytes_per_s", 0) / (1 << 20), rate_unit="MiB/s",
                   cpu_per_op=(cpu / gib) if gib else None, cpu_unit="s", verified=r.get("verified"))
    elif mode == "hold":
        n = held.get("n", 0)
        row.update(ops=n, rate=None, cpu_per_op=None, idle_held=n,
                   rss_per_conn_kib=((held.get("rss", rss0) - rss0) / n) if n else None,
                   alive=r.get("idle_alive_after_probes"))
    else:
        ops = r.get("ops", 0)
        row.update(ops=ops, rate=r.get("ops_per_s"), rate_unit="/s",
                   cpu_per_op=(cpu * 1e6 / ops) if ops else None, cpu_unit="µs")
    return row


def best_row(rs):
    """The round with the least server CPU per operation (other programs on
    the machine only ever add to it), with the errors of every round added
    up, and the median throughput."""
    good = sorted((r for r in rs if r.get("cpu_per_op") is not None), key=lambda r: r["cpu_per_op"])
    row = dict(good[0] if good else rs[0])
    for k in ("errors", "bad_replies"):
        row[k] = sum(r.get(k) or 0 for r in rs)
    rates = [r["rate"] for r in rs if r.get("rate") is not None]
    if rates:
        row["rate"] = statistics.median(rates)
    rss = [r["rss_per_conn_kib"] for r in rs if r.get("rss_per_conn_kib") is not None]
    if rss:
        row["rss_per_conn_kib"] = min(rss)
    row["rounds"] = len(rs)
    row["rounds_cpu_per_op"] = [r.get("cpu_per_op") for r in rs]
    return row


def is_upcase(name):
    return name.startswith(UPCASE)


def tcp_alone(rows, mode):
    """Server CPU per operation of TCP alone for `mode`, or None."""
    r = next((x for x in rows if x["server"] == TCP_ALONE and x["mode"] == TCP_MODE.get(mode)
              and not x["errors"] and not x["bad_replies"]), None)
    return r.get("cpu_per_op") if r else None


def report(rows, fl, meta):
    f, fmt, ratio = fl or {}, plain.fmt, plain.ratio
    lines = [f"Latest TLS run: {meta['date']}, {meta['machine']}, {meta['seconds']} s, "
             f"{meta['rounds']} rounds; upcase server: {meta['upcase']}.", ""]
    lines += ["### TLS targets (ratios within this run)", "",
              "Server CPU per operation against the best anchor of the same mode (the anchor with the",
              "least), and throughput against the anchor with the most. \"met\" is yes when an upcase",
              "configuration meets every goal of the row. \"vs floor + TCP\" compares with the crypto floor",
              "plus what TCP alone costs the same server under the same load (the column TCP alone; persistent",
              "has no crypto floor, so TCP alone is all of it).", "",
              "| mode | goal | upcase CPU/op | best anchor | CPU vs best | vs floor | vs floor + TCP | "
              "throughput vs best | met |",
              "|---|---|---:|---|---:|---:|---:|---:|---|"]
    for mode in [m for m in MODES if m != "hold"]:
        mrows = [r for r in rows if r["mode"] == mode and r.get("cpu_per_op") and not r["errors"]
                 and not r["bad_replies"]]
        anchors = [r for r in mrows if not is_upcase(r["server"]) and r["server"] != TCP_ALONE]
        ours = [r for r in mrows if is_upcase(r["server"])]
        if not ours or not anchors:
            continue
        best = min(anchors, key=lambda r: r["cpu_per_op"])
        fastest = max(anchors, key=lambda r: r["rate"] or 0)
        us = min(ours, key=lambda r: r["cpu_per_op"])
        cpu_r = ratio(us["cpu_per_op"], best["cpu_per_op"])
        rate_r = max((ratio(r["rate"], fastest["rate"]) or 0) for r in ours)
        floor_r = ratio(us["cpu_per_op"], f.get(mode))
        tcp = tcp_alone(rows, mode)
        crypto = 0 if mode == "persistent" else f.get(mode)
        tcp_r = ratio(us["cpu_per_op"], crypto + tcp) if tcp and crypto is not None else None
        goal = f"CPU <= {CPU_GOAL[mode]}x best" + (f", <= {FLOOR_GOAL[mode]}x floor" if mode in FLOOR_GOAL else "") \
            + ", throughput >= 1.0x"
        ok = cpu_r <= CPU_GOAL[mode] and rate_r >= 1.0 and (mode not in FLOOR_GOAL or floor_r <= FLOOR_GOAL[mode])
        unit = us["cpu_unit"]
        lines.append(f"| {mode} | {goal} | {fmt(us['cpu_per_op'], 2 if unit == 's' else 1)} {unit} ({us['server']}) | "
                     f"{best['server']} {fmt(best['cpu_per_op'], 2 if unit == 's' else 1)} {unit} | {cpu_r:.2f}x | "
                     f"{f'{floor_r:.2f}x' if floor_r else '-'} | {f'{tcp_r:.2f}x' if tcp_r else '-'} | "
                     f"{rate_r:.2f}x | {'yes' if ok else 'no'} |")
    hold = [r for r in rows if r["mode"] == "hold" and is_upcase(r["server"]) and r.get("rss_per_conn_kib") is not None]
    if hold:
        v = min(r["rss_per_conn_kib"] for r in hold)
        lines.append(f"| hold | RSS per idle connection <= {RSS_GOAL_KIB:g} KiB | {v:.1f} KiB | | | | | | "
                     f"{'yes' if v <= RSS_GOAL_KIB else 'no'} |")
    lines.append("")
    if f:
        lines += ["### Floor: the crypto on one core (`openssl speed`)", "",
                  f"ECDSA P-256 sign {fmt(f['ecdsap256_sign_per_s'])}/s, X25519 {fmt(f['x25519_per_s'])}/s, "
                  f"RSA-2048 sign {fmt(f['rsa2048_sign_per_s'])}/s, AES-128-GCM "
                  f"{fmt(f['aes128gcm_bytes_per_s'] / (1 << 20))} MiB/s (16 KiB blocks): "
                  f"full handshake {f['full']:.1f} µs (1 sign + 1 X25519), resumed {f['resumed']:.1f} µs (1 X25519), "
                  f"RSA full {f['full-rsa']:.1f} µs (1 RSA sign + 1 X25519), stream {f['stream']:.2f} s per GiB each "
                  "way (GCM open + seal of 2 GiB).", ""]
    tcp = {m: tcp_alone(rows, m) for m in ("full", "persistent", "stream")}
    if any(tcp.values()):
        def cell(m, digits, unit):
            return "-" if tcp[m] is None else f"{tcp[m]:.{digits}f} {unit}"
        lines += ["### Floor: TCP alone", "",
                  "The upcase server without TLS, under the same load (plaintext oneshot for the handshake modes): "
                  f"{cell('full', 1, 'µs')} per connection, {cell('persistent', 1, 'µs')} per 64-byte request, "
                  f"{cell('stream', 2, 's')} per GiB each way. A TLS server pays this as well as its crypto.", ""]
    names = list(dict.fromkeys(r["server"] for r in rows))
    label = {"full": "full handshake, ECDSA P-256", "resumed": "resumed handshake", "full-rsa": "full handshake, RSA-2048",
             "persistent": "persistent, per 64-byte request", "stream": "stream, per GiB each way",
             "hold": "idle TLS connection, RSS"}
    lines += ["### Server CPU per operation (the least of the rounds)", "",
              "| operation | " + " | ".join(names) + " | floor |", "|---|" + "---:|" * (len(names) + 1)]
    ran = [m for m in MODES if any(r["mode"] == m for r in rows)]
    for mode in ran:
        cells = []
        for n in names:
            r = next((x for x in rows if x["server"] == n and x["mode"] == mode), None)
            if r is None:
                cells.append("-")
            elif mode == "hold":
                v = r.get("rss_per_conn_kib")
                cells.append("-" if v is None else f"{v:.1f} KiB")
            else:
                v, unit = r.get("cpu_per_op"), r.get("cpu_unit", "")
                cells.append("-" if v is None else f"{fmt(v, 2 if unit == 's' else 1)} {unit}"
                             + (" (HRR)" if r.get("hrr") and mode != "persistent" else ""))
        fv = f.get(mode)
        fcell = "-" if fv is None else (f"{fv:.2f} s" if mode == "stream" else f"{fv:.1f} µs")
        lines.append(f"| {label[mode]} | " + " | ".join(cells) + f" | {fcell} |")
    lines += ["", "### Throughput (the median of the rounds)", "",
              "| mode | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for mode in [m for m in ran if m != "hold"]:
        cells = []
        for n in names:
            r = next((x for x in rows if x["server"] == n and x["mode"] == mode), None)
            cells.append("-" if r is None or r.get("rate") is None else fmt(r["rate"]))
        unit = "MiB/s each way" if mode == "stream" else ("req/s" if mode == "persistent" else "/s")
        lines.append(f"| {mode} ({unit}) | " + " | ".join(cells) + " |")
    lines += ["", "### TLS, every server", "",
              "| mode | server | throughput | server CPU per op | vs floor | p50 | p99 | handshakes (full / HRR / "
              "resumed) | negotiated | errors / bad |",
              "|---|---|---:|---:|---:|---:|---:|---|---|---:|"]
    for mode in MODES:
        for r in (x for x in rows if x["mode"] == mode):
            if mode == "hold":
                per = r.get("rss_per_conn_kib")
                lines.append(f"| hold | {r['server']} | {fmt(r.get('idle_held'))} held | RSS "
                             f"{'-' if per is None else f'{per:.1f} KiB'}/conn | | | | | {r.get('negotiated') or '-'} | "
                             f"{r['errors']} / {r['bad_replies']} |")
                continue
            unit = r.get("cpu_unit", "")
            cpu = r.get("cpu_per_op")
            fr = ratio(cpu, f.get(mode)) if r["server"] != TCP_ALONE else None
            kinds = f"{fmt(r.get('full'))} / {fmt(r.get('hrr'))} / {fmt(r.get('resumed'))}"
            lines.append(f"| {mode} | {r['server']} | {fmt(r.get('rate'))} {r.get('rate_unit', '')} | "
                         f"{fmt(cpu, 2 if unit == 's' else 1)} {unit} | {f'{fr:.2f}x' if fr else '-'} | "
                         f"{fmt(r.get('p50_us'))} µs | {fmt(r.get('p99_us'))} µs | {kinds} | "
                         f"{r.get('negotiated') or '-'} | {r['errors']} / {r['bad_replies']} |")
    lines.append("")
    return "\n".join(lines)


def measure(args):
    """The TLS section; returns what fails the run."""
    started = time.monotonic()
    specs = servers()
    problems = []
    if UPCASE not in specs:
        return ["TLS: no upcase TLS server built (build/c/tcp_server with --tls-cert, or "
                "cargo build --release -p upcase-loadgen --example upcase-tls-server)"]
    for name, path in ANCHORS_MISSING.items():
        if name not in specs:
            print(f"TLS: {name} skipped: {path.relative_to(ROOT)} is not there")
    modes = [m for m in args.tls_modes.split(",") if m]
    rows, fl = [], None
    if not args.tls_no_floor:
        print(f"[{time.monotonic() - started:6.1f}s] TLS floor: openssl speed ...", end=" ", flush=True)
        try:
            fl = floor(args.tls_floor_seconds)
            print(f"full {fl['full']:.1f} µs, resumed {fl['resumed']:.1f} µs, RSA {fl['full-rsa']:.1f} µs, "
                  f"stream {fl['stream']:.2f} s/GiB")
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            print(f"FAILED: {e}")
            problems.append(f"TLS floor: {e}")
    with tempfile.TemporaryDirectory(prefix="upcase-bench-tls-") as certs:
        make_certs(certs)
        for mode in modes:
            runs = {n: [] for n, s in specs.items() if mode in s[1]}
            for rnd in range(args.tls_rounds):
                order = list(runs) if rnd % 2 == 0 else list(runs)[::-1]
                for name in order:
                    print(f"[{time.monotonic() - started:6.1f}s] TLS {mode:<10} {name} (round {rnd + 1}/"
                          f"{args.tls_rounds}) ...", end=" ", flush=True)
                    try:
                        row = run_one(name, specs[name], certs, mode, args)
                    except Exception as e:  # reported; the others still run
                        print(f"FAILED: {e}")
                        problems.append(f"TLS {mode}, {name}: {e}")
                        continue
                    runs[name].append(row)
                    if mode == "hold":
                        per = row.get("rss_per_conn_kib")
                        print(f"{row.get('idle_held')} held, RSS {'-' if per is None else f'{per:.1f}'} KiB/conn, "
                              f"errors {row['errors']}")
                    else:
                        print(f"{plain.fmt(row['rate'])} {row['rate_unit']}, {plain.fmt(row['cpu_per_op'], 2)} "
                              f"{row['cpu_unit']} CPU/{row['unit']}, HRR {row['hrr']}, resumed {row['resumed']}, "
                              f"errors {row['errors']}, bad {row['bad_replies']}")
                    if row["bad_replies"]:
                        problems.append(f"TLS {mode}, {name}: {row['bad_replies']} wrong replies")
                    if (is_upcase(name) or name == TCP_ALONE) and row["errors"]:
                        problems.append(f"TLS {mode}, {name}: {row['errors']} errors {row['error_kinds']}")
                    if mode == "stream" and not row.get("verified"):
                        problems.append(f"TLS stream, {name}: not every byte came back")
                    if mode == "resumed" and is_upcase(name) and not row.get("resumed"):
                        problems.append(f"TLS resumed, {name}: no handshake was resumed")
            rows += [best_row(rs) for rs in runs.values() if rs]
    meta = {"machine": plain.machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "seconds": round(time.monotonic() - started, 1), "rounds": args.tls_rounds,
            "upcase": specs[UPCASE][2], "problems": problems,
            "load": {"seconds": args.tls_seconds, "stream_bytes": args.tls_stream_bytes, "idle": args.tls_idle}}
    md = report(rows, fl, meta)
    plain.RESULTS.mkdir(parents=True, exist_ok=True)
    (plain.RESULTS / "tls.json").write_text(json.dumps({"meta": meta, "floor": fl, "rows": rows}, indent=1))
    (plain.RESULTS / "tls.md").write_text(md)
    print()
    print(md)
    update_benchmarks_md(md)
    return problems


def update_benchmarks_md(md):
    path = ROOT / "BENCHMARKS.md"
    start, end = "<!-- tls-results:start -->", "<!-- tls-results:end -->"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        text = text[:text.index(start)] + f"{start}\n{md}\n{end}" + text[text.index(end) + len(end):]
        path.write_text(text)


def add_arguments(ap):
    ap.add_argument("--tls", action="store_true", help="also run the TLS section (make bench does)")
    ap.add_argument("--tls-only", action="store_true", help="run the TLS section only")
    ap.add_argument("--tls-modes", default=",".join(MODES), help=f"TLS modes ({','.join(MODES)})")
    ap.add_argument("--tls-rounds", type=int, default=2, help="runs per TLS server and mode (default 2)")
    ap.add_argument("--tls-seconds", type=float, default=2.0, help="load per TLS run, handshake and persistent modes")
    ap.add_argument("--tls-stream-bytes", type=int, default=1 << 30, help="TLS stream: bytes each way (1 GiB)")
    ap.add_argument("--tls-idle", type=int, default=2000, help="TLS hold: idle connections (2000)")
    ap.add_argument("--tls-floor-seconds", type=int, default=2, help="openssl speed -seconds (2)")
    ap.add_argument("--tls-no-floor", action="store_true", help="skip openssl speed")


def check_args(ap, args):
    bad = [m for m in args.tls_modes.split(",") if m and m not in MODES]
    if bad:
        ap.error(f"--tls-modes: {', '.join(bad)}; the modes: {','.join(MODES)}")
    if args.tls_rounds < 1:
        ap.error("--tls-rounds must be 1 or more")
