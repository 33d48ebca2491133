#!/usr/bin/env python3
"""`make soak`: hours-of-use in minutes, then check that nothing was lost or kept.

Starts the C example servers (build/c/tcp_server and build/c/udp_server, both
`--quiet 0 127.0.0.1`) as child processes and drives them from a pool of client
threads for --seconds (default 300, or the environment's SOAK_SECONDS) with a
weighted random mix of:

  tcp       one exchange: a request of random size (log-uniform, 0 B to 1 MiB,
            random bytes including NUL and >= 0x80), sent while the reply is
            read concurrently, then half-close and read to end of stream
  keep      one kept-open connection, several requests of random sizes, each
            reply read to exactly its length; then half-close and expect an
            end of stream with nothing more
  abandon   a client that leaves on purpose: reset (SO_LINGER 0) in the middle
            of a large request, with or without reading; close before reading
            the reply; reset after its half-close; connect and leave at once.
            Its bytes are "abandoned", counted apart, never "lost"
  udp       one datagram of random size (0 to 65,507 bytes), 1 s timeout,
            retried (each retry is counted as udp_retries: loopback may drop
            under load); a reply is accepted only if it is the right one

Every reply is compared byte for byte with the request upper-cased by this
script (bytes.translate, not the library). Counted: bytes sent in exchanges the
client meant to complete, bytes answered correctly, bytes lost (the difference;
must be 0), wrong replies (must be 0), client-side errors (must be 0),
abandoned bytes, exchanges per kind.

Each server's descriptor count (/proc/PID/fd), VmRSS and thread count are
sampled after a short warm-up (all kinds, --warmup seconds, then the clients
stop and the servers settle) and again at the end once every client has
finished and the servers have settled: descriptors and threads must be back to
their starting values exactly; VmRSS may end at most --rss-slack-kib (default
2048) above its start. Why a slack at all: the servers' per-connection reply
buffers (at most 64 KiB, only while the kernel holds back part of a reply) come
from glibc malloc arenas, one per server thread; freed chunks below the trim
threshold (128 KiB) stay in the arena and stay resident, so the high-water
mark of the busiest moment can remain. With 8 clients that is at most a few
64 KiB buffers per loop, well under 2 MiB; a leak grows with the traffic (a
5-minute run moves gigabytes) and shows far above it. The peak during the run
is printed too.

Finally both servers get SIGTERM and must exit 0. The last line is
`soak: PASS` or `soak: FAIL (reasons)`; the exit status is 0 only on PASS.

usage: bench/soak.py [--seconds S] [--clients N] [--seed N] [--warmup S]
                     [--settle S] [--rss-slack-kib K] [--mix tcp=4,keep=2,abandon=2,udp=3]
"""

import argparse
import math
import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
TCP_CMD = [str(ROOT / "build/c/tcp_server"), "--quiet", "0", HOST]
UDP_CMD = [str(ROOT / "build/c/udp_server"), "--quiet", "0", HOST]

MiB = 1 << 20
TCP_MAX = MiB            # largest TCP request
UDP_MAX = 65507          # largest IPv4 UDP payload
UDP_TIMEOUT = 1.0        # seconds per UDP attempt
RECV_CHUNK = 256 * 1024
SEND_CHUNK = 256 * 1024

LOWER = b"abcdefghijklmnopqrstuvwxyz"
UPPER_TABLE = bytes.maketrans(LOWER, LOWER.upper())
# Maps random bytes onto a text-like alphabet (mostly lower case, some upper
# case, digits, NUL, UTF-8 lead and continuation bytes), so that a good share
# of every request actually needs upper-casing.
TEXTISH = bytes(
    (LOWER + b"ABCXYZ" + b"09 @[`{\n\x00\x7f\x80\xc3\xa9\xff")[b % 42] for b in range(256))
KINDS = ["tcp", "keep", "abandon", "udp"]


def expected(payload):
    return payload.translate(UPPER_TABLE)


def matching_prefix(got, want):
    """How many leading bytes of `got` agree with `want`."""
    n = min(len(got), len(want))
    if got[:n] == want[:n]:
        return n
    lo, hi = 0, n          # got[:lo] matches, got[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if got[:mid] == want[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def log_uniform(rng, top):
    """0..top, log-uniform (as many requests of 10-100 bytes as of 100-1000)."""
    return min(top, int(math.exp(rng.uniform(0.0, math.log(top + 1)))) - 1)


def payload(rng, n):
    data = rng.randbytes(n)
    return data.translate(TEXTISH) if rng.random() < 0.4 else data


class Failed(Exception):
    """An exchange failed; `got` is what had arrived by then."""

    def __init__(self, msg, got=b""):
        super().__init__(msg)
        self.got = bytes(got)


# ---------------------------------------------------------------- statistics

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = {k: 0 for k in KINDS}       # exchanges (keep: requests)
        self.conns = {k: 0 for k in KINDS}       # connections / UDP exchanges
        self.errors = {k: 0 for k in KINDS}
        self.wrong = {k: 0 for k in KINDS}
        self.sent = {k: 0 for k in KINDS}
        self.answered = {k: 0 for k in KINDS}
        self.abandoned = 0
        self.abandon_variants = {}
        self.udp_retries = 0
        self.udp_unanswered = 0
        self.messages = []

    def note(self, kind, msg):
        with self.lock:
            if len(self.messages) < 20:
                self.messages.append(f"{kind}: {msg}")

    def add(self, kind, sent, answered, wrong=False, error=None, requests=1):
        with self.lock:
            self.count[kind] += requests
            self.sent[kind] += sent
            self.answered[kind] += answered
            if wrong:
                self.wrong[kind] += 1
            if error is not None and not wrong:   # a wrong reply is counted once, as wrong
                self.errors[kind] += 1
        if error is not None:
            self.note(kind, error)

    def conn(self, kind):
        with self.lock:
            self.conns[kind] += 1

    def total(self, field):
        return sum(getattr(self, field).values())


# ---------------------------------------------------------------- TCP helpers

def connect(port, stall):
    s = socket.create_connection((HOST, port), timeout=stall)
    s.setblocking(False)
    return s


def reset_close(s):
    """Close with SO_LINGER {1, 0}: the kernel sends RST, not FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def pump(s, data, stall, *, want=None, half_close=False, send_limit=None, read=True):
    """Send `data` while reading whatever comes back.

    half_close: after the last byte, shutdown(SHUT_WR) and read to end of stream.
    want: otherwise, stop once `want` bytes have arrived (more is kept, and is wrong).
    send_limit: stop (without waiting for replies) once that many bytes are sent.
    read=False: never read; return when sending makes no progress for `stall` s.
    Returns (bytes sent, bytes received). Raises Failed on error or stall.
    """
    view = memoryview(data)
    limit = len(data) if send_limit is None else min(send_limit, len(data))
    off = 0
    got = bytearray()
    shut = False
    sel = selectors.DefaultSelector()
    try:
        def interest():
            ev = selectors.EVENT_READ if read else 0
            if off < limit:
                ev |= selectors.EVENT_WRITE
            return ev

        if off == limit and half_close:
            s.shutdown(socket.SHUT_WR)
            shut = True
        ev = interest()
        if ev == 0:
            return off, got
        sel.register(s, ev)
        last = time.monotonic()
        while True:
            if send_limit is not None and off >= limit:
                return off, got
            if not read and off >= limit:
                return off, got
            if want is not None and not half_close and off >= limit and len(got) >= want:
                return off, got
            events = sel.select(timeout=0.5)
            now = time.monotonic()
            if not events:
                if not read and now - last > stall:
                    return off, got         # the peer stopped taking bytes: enough
                if now - last > stall:
                    raise Failed(f"no progress for {stall:.0f} s (sent {off}/{len(data)}, "
                                 f"received {len(got)})", got)
                continue
            mask = events[0][1]
            if mask & selectors.EVENT_WRITE and off < limit:
                try:
                    n = s.send(view[off:min(limit, off + SEND_CHUNK)])
                except BlockingIOError:
                    n = 0
                except OSError as e:
                    raise Failed(f"send after {off} bytes: {e!r}", got) from None
                if n:
                    off += n
                    last = now
                if off == limit:
                    if half_close and limit == len(data):
                        s.shutdown(socket.SHUT_WR)
                        shut = True
                    ev = interest()
                    if ev == 0:
                        return off, got
                    sel.modify(s, ev)
            if mask & selectors.EVENT_READ:
                try:
                    chunk = s.recv(RECV_CHUNK)
                except BlockingIOError:
                    continue
                except OSError as e:
                    raise Failed(f"recv after {len(got)} bytes (sent {off}): {e!r}", got) from None
                if not chunk:
                    if shut:
                        return off, got
                    raise Failed(f"end of stream after {len(got)} bytes, before the client "
                                 f"half-closed (sent {off}/{len(data)})", got)
                got += chunk
                last = now
    finally:
        sel.close()


def await_eof(s, stall):
    """After a half-close: the server must close, with nothing more to say."""
    extra = b""
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + stall
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.5):
                continue
            try:
                chunk = s.recv(RECV_CHUNK)
            except BlockingIOError:
                continue
            if not chunk:
                return extra
            extra += chunk
        raise Failed(f"no end of stream {stall:.0f} s after the half-close", extra)
    finally:
        sel.close()


# ---------------------------------------------------------------- the kinds

def do_tcp(rng, port, st, stall):
    n = log_uniform(rng, TCP_MAX)
    data = payload(rng, n)
    want = expected(data)
    got = b""
    error = None
    try:
        s = connect(port, stall)
    except OSError as e:
        st.add("tcp", n, 0, error=f"connect: {e!r}")
        return
    try:
        _, got = pump(s, data, stall, half_close=True)
    except Failed as e:
        got, error = e.got, f"{n}-byte request: {e}"
    finally:
        s.close()
    st.conn("tcp")
    ok = matching_prefix(got, want)
    wrong = ok < min(len(got), len(want)) or len(got) > len(want)
    if wrong:
        error = error or (f"{n}-byte request: reply of {len(got)} bytes differs at byte {ok}")
    elif len(got) < len(want) and error is None:
        error = f"{n}-byte request: short reply, {len(got)} bytes"
    st.add("tcp", n, ok, wrong=wrong, error=error)


def do_keep(rng, port, st, stall, deadline):
    rounds = rng.randint(2, 12)
    try:
        s = connect(port, stall)
    except OSError as e:
        st.add("keep", 0, 0, error=f"connect: {e!r}", requests=0)
        return
    st.conn("keep")
    try:
        for i in range(rounds):
            # Mostly small requests on a kept-open connection, a few large.
            n = log_uniform(rng, TCP_MAX if rng.random() < 0.2 else 64 * 1024)
            data = payload(rng, n)
            want = expected(data)
            try:
                _, got = pump(s, data, stall, want=n)
            except Failed as e:
                ok = matching_prefix(e.got, want)
                st.add("keep", n, ok, wrong=ok < min(len(e.got), n),
                       error=f"request {i + 1} of {n} bytes: {e}")
                return
            ok = matching_prefix(got, want)
            wrong = ok < n or len(got) != n
            st.add("keep", n, ok, wrong=wrong,
                   error=(f"request {i + 1} of {n} bytes: reply of {len(got)} bytes, "
                          f"first difference at byte {ok}") if wrong else None)
            if wrong or time.monotonic() > deadline:
                break
        # Done: half-close; the server must close with nothing more.
        try:
            s.shutdown(socket.SHUT_WR)
            extra = await_eof(s, stall)
        except (OSError, Failed) as e:
            st.add("keep", 0, 0, error=f"closing after the requests: {e!r}", requests=0)
            return
        if extra:
            st.add("keep", 0, 0, wrong=True, requests=0,
                   error=f"{len(extra)} unrequested bytes after the last reply")
    finally:
        s.close()


ABANDON_VARIANTS = ["rst-mid-request", "rst-mid-request-unread", "close-unread",
                    "rst-after-half-close", "rst-after-connect", "close-after-connect"]


def do_abandon(rng, port, st, stall):
    variant = rng.choice(ABANDON_VARIANTS)
    sent = 0
    try:
        s = connect(port, stall)
    except OSError as e:
        st.add("abandon", 0, 0, error=f"{variant}: connect: {e!r}", requests=0)
        return
    try:
        if variant == "rst-mid-request":
            # A large request, read while sending, reset part-way through.
            n = rng.randint(64 * 1024, TCP_MAX)
            sent, _ = pump(s, payload(rng, n), stall, send_limit=rng.randint(1, n - 1))
        elif variant == "rst-mid-request-unread":
            # Never reads: the server's reply backs up, then the client resets.
            n = rng.randint(64 * 1024, TCP_MAX)
            sent, _ = pump(s, payload(rng, n), min(stall, rng.uniform(0.05, 0.5)), read=False,
                           send_limit=rng.randint(1, n - 1))
        elif variant == "close-unread":
            # A whole request (maybe half-closed), then close() without reading a byte.
            n = log_uniform(rng, TCP_MAX)
            sent, _ = pump(s, payload(rng, n), min(stall, rng.uniform(0.05, 0.5)), read=False)
            if sent == n and rng.random() < 0.5:
                s.shutdown(socket.SHUT_WR)
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0, 0.05))
        elif variant == "rst-after-half-close":
            # The whole request and the half-close, then a reset while the
            # reply is (maybe) still coming.
            n = log_uniform(rng, TCP_MAX)
            sent, _ = pump(s, payload(rng, n), stall, send_limit=n)
            s.shutdown(socket.SHUT_WR)
            time.sleep(rng.uniform(0, 0.02))
        elif variant == "close-after-connect" and rng.random() < 0.5:
            s.shutdown(socket.SHUT_WR)      # an empty request, then leave
    except (Failed, OSError) as e:
        # The client resets anyway; a failure before it is still the server's.
        st.note("abandon", f"{variant}: before leaving: {e!r}")
        with st.lock:
            st.errors["abandon"] += 1
    finally:
        if variant.startswith("rst"):
            reset_close(s)
        else:
            s.close()
    with st.lock:
        st.count["abandon"] += 1
        st.conns["abandon"] += 1
        st.abandoned += sent
        st.abandon_variants[variant] = st.abandon_variants.get(variant, 0) + 1


def do_udp(rng, port, st, retries):
    r = rng.random()
    n = 0 if r < 0.03 else UDP_MAX if r < 0.08 else log_uniform(rng, UDP_MAX)
    data = payload(rng, n)
    want = expected(data)
    # A fresh socket per exchange: a late duplicate reply to an earlier,
    # retried datagram cannot arrive in a later exchange. connect() makes the
    # kernel deliver datagrams from the server's address and port only.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(UDP_TIMEOUT)
    try:
        s.connect((HOST, port))
        for attempt in range(retries + 1):
            try:
                s.send(data)
                got = s.recv(UDP_MAX + 1024)
            except (TimeoutError, socket.timeout):
                with st.lock:
                    st.udp_retries += 1
                continue
            except OSError as e:
                st.add("udp", n, 0, error=f"{n}-byte datagram: {e!r}")
                return
            st.conn("udp")
            if got == want:
                st.add("udp", n, n)
            else:
                ok = matching_prefix(got, want)
                st.add("udp", n, 0, wrong=True,
                       error=f"{n}-byte datagram: reply of {len(got)} bytes, first difference at byte {ok}")
            return
        with st.lock:
            st.udp_unanswered += 1
        st.add("udp", n, 0, error=f"{n}-byte datagram: no reply in {retries + 1} attempts")
    finally:
        s.close()


def client(index, seed, tag, tcp_port, udp_port, st, deadline, args, weights, stop):
    rng = random.Random(f"{seed}:{tag}:{index}")
    for _ in range(10_000_000):            # bounded; the deadline ends it long before
        if time.monotonic() >= deadline or stop.is_set():
            return
        kind = rng.choices(KINDS, weights)[0]
        try:
            if kind == "tcp":
                do_tcp(rng, tcp_port, st, args.stall)
            elif kind == "keep":
                do_keep(rng, tcp_port, st, args.stall, deadline)
            elif kind == "abandon":
                do_abandon(rng, tcp_port, st, args.stall)
            else:
                do_udp(rng, udp_port, st, args.udp_retries)
        except Exception as e:              # a bug here must not pass silently
            st.add(kind, 0, 0, error=f"client exception: {e!r}", requests=0)


def run_clients(n, seed, tag, tcp_port, udp_port, st, seconds, args, weights, stop):
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=client, daemon=True, name=f"{tag}-{i}",
                                args=(i, seed, tag, tcp_port, udp_port, st, deadline, args, weights, stop))
               for i in range(n)]
    for t in threads:
        t.start()
    # Every exchange is bounded by --stall per wait; allow for a few of them.
    limit = deadline + 4 * args.stall + 10
    for t in threads:
        t.join(timeout=max(0.0, limit - time.monotonic()))
    return [t.name for t in threads if t.is_alive()]


# ---------------------------------------------------------------- servers

class Server:
    def __init__(self, name, cmd):
        self.name = name
        self.stderr = []
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.port = None
        ready = threading.Event()

        def out():
            for line in self.proc.stdout:
                if self.port is None and line.startswith("listening on "):
                    self.port = int(line.rsplit(":", 1)[1])
                    ready.set()
            ready.set()

        def err():
            for line in self.proc.stderr:
                if len(self.stderr) < 50:
                    self.stderr.append(line.rstrip("\n"))

        threading.Thread(target=out, daemon=True).start()
        threading.Thread(target=err, daemon=True).start()
        ready.wait(10)
        if self.port is None:
            self.stop()
            raise RuntimeError(f"{name}: no 'listening on' line within 10 s; stderr: {self.stderr}")
        self.pid = self.proc.pid
        self.rc = None

    def alive(self):
        return self.proc.poll() is None

    def sample(self):
        """(descriptors, VmRSS in KiB, threads), or None if it is gone."""
        try:
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            rss = threads = None
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads = int(line.split()[1])
            return fds, rss, threads
        except (FileNotFoundError, ProcessLookupError):
            return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.rc = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()            # our own child, by its Popen
                self.proc.wait(timeout=10)
                self.rc = "hung on SIGTERM (killed)"
        else:
            self.rc = f"had already exited ({self.proc.returncode})"
        return self.rc


def settle(servers, baseline, seconds_min, seconds_max):
    """Wait at least seconds_min, then until every server's descriptor count
    is back at its baseline (or seconds_max). Returns the seconds waited."""
    t0 = time.monotonic()
    time.sleep(seconds_min)
    while time.monotonic() - t0 < seconds_max:
        samples = [s.sample() for s in servers]
        if baseline is None:
            # Warm-up: wait until the counts stop changing.
            time.sleep(0.5)
            if [x and x[0] for x in samples] == [(x := s.sample()) and x[0] for s in servers]:
                break
        elif all(x is not None and x[0] == baseline[s.name][0] for s, x in zip(servers, samples)):
            break
        else:
            time.sleep(0.2)
    return time.monotonic() - t0


# ---------------------------------------------------------------- main

def human(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def parse_mix(text):
    w = dict.fromkeys(KINDS, 0.0)
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in w:
            raise argparse.ArgumentTypeError(f"unknown kind {k!r} (kinds: {', '.join(KINDS)})")
        w[k.strip()] = float(v)
    if sum(w.values()) <= 0:
        raise argparse.ArgumentTypeError("all weights are 0")
    return [w[k] for k in KINDS]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 300)),
                    help="length of the run after the warm-up (default 300, or $SOAK_SECONDS)")
    ap.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    ap.add_argument("--seed", type=int, default=None, help="RNG seed (default: random, printed)")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up traffic before the baseline (s)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="wait at least this long after the clients before the final sample (s)")
    ap.add_argument("--settle-max", type=float, default=15.0,
                    help="and at most this long for the descriptors to come back (s)")
    ap.add_argument("--rss-slack-kib", type=int, default=2048,
                    help="VmRSS may end this much above its start (default 2048 KiB)")
    ap.add_argument("--stall", type=float, default=30.0,
                    help="a TCP exchange with no progress for this long fails (s)")
    ap.add_argument("--udp-retries", type=int, default=5, help="UDP retries per datagram (1 s each)")
    ap.add_argument("--mix", type=parse_mix, default=parse_mix("tcp=4,keep=2,abandon=2,udp=3"),
                    help="weights of the kinds (default tcp=4,keep=2,abandon=2,udp=3)")
    args = ap.parse_args()
    if not 0 < args.seconds <= 24 * 3600 or not 1 <= args.clients <= 256:
        ap.error("--seconds must be in (0, 86400], --clients in 1..256")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    for cmd in (TCP_CMD, UDP_CMD):
        if not os.access(cmd[0], os.X_OK):
            print(f"soak: {cmd[0]} is missing: run `make` first", file=sys.stderr)
            return 2

    mix = ", ".join(f"{k}={w:g}" for k, w in zip(KINDS, args.mix))
    print(f"soak: seed {seed}, {args.seconds:g} s after a {args.warmup:g} s warm-up, "
          f"{args.clients} clients, mix {mix}", flush=True)

    servers = []
    reasons = []
    st = Stats()
    stop = threading.Event()
    try:
        tcp = Server("tcp_server", TCP_CMD)
        servers.append(tcp)
        udp = Server("udp_server", UDP_CMD)
        servers.append(udp)
    except (RuntimeError, OSError) as e:
        for srv in servers:
            srv.stop()
        print(f"soak: cannot start the servers: {e}", file=sys.stderr)
        return 2
    try:
        print(f"soak: tcp_server pid {tcp.pid} port {tcp.port}, udp_server pid {udp.pid} port {udp.port}",
              flush=True)

        # Warm-up: every kind once or more, so that lazily made things (loop
        # threads' buffers, malloc arenas) exist before the baseline.
        stuck = run_clients(args.clients, seed, "warmup", tcp.port, udp.port, st, args.warmup,
                            args, args.mix, stop)
        if stuck:
            reasons.append(f"warm-up clients did not finish: {stuck}")
        waited = settle(servers, None, 1.0, args.settle_max)
        start = {s.name: s.sample() for s in servers}
        print(f"soak: baseline after warm-up and {waited:.1f} s settle: " +
              ", ".join(f"{n} fds {v[0]} rss {v[1]} KiB threads {v[2]}" for n, v in start.items()
                        if v is not None), flush=True)

        # The run, with a monitor sampling the servers once a second.
        peak = {s.name: list(start[s.name] or (0, 0, 0)) for s in servers}
        mon_stop = threading.Event()

        def monitor():
            t0 = time.monotonic()
            next_report = t0 + 10
            while not mon_stop.wait(1.0):
                for s in servers:
                    x = s.sample()
                    if x is None or not s.alive():
                        stop.set()          # a dead server ends the run
                        continue
                    peak[s.name] = [max(a, b) for a, b in zip(peak[s.name], x)]
                if time.monotonic() >= next_report:
                    next_report += 10
                    with st.lock:
                        done = sum(st.count.values())
                        sent = st.total("sent")
                        errs = st.total("errors") + st.total("wrong")
                    print(f"soak: {time.monotonic() - t0:5.0f} s  {done} exchanges, "
                          f"{human(sent)} sent, {errs} errors, fds " +
                          "/".join(str((s.sample() or ("-",))[0]) for s in servers), flush=True)

        mon = threading.Thread(target=monitor, daemon=True)
        mon.start()
        t_run = time.monotonic()
        stuck = run_clients(args.clients, seed, "run", tcp.port, udp.port, st, args.seconds,
                            args, args.mix, stop)
        run_time = time.monotonic() - t_run
        mon_stop.set()
        mon.join(timeout=5)
        if stuck:
            reasons.append(f"clients did not finish: {stuck}")
        for s in servers:
            if not s.alive():
                reasons.append(f"{s.name} died during the run (exit {s.proc.returncode})")

        waited = settle(servers, start, args.settle, args.settle_max)
        end = {s.name: s.sample() for s in servers}
        for name, x in end.items():
            if x is not None:
                peak[name] = [max(a, b) for a, b in zip(peak[name], x)]
    finally:
        stop.set()
        for s in servers:
            s.stop()

    # ------------------------------------------------------------ report
    print()
    print(f"{'kind':<8} {'exchanges':>10} {'conns':>8} {'errors':>7} {'wrong':>6} "
          f"{'sent':>12} {'answered':>12} {'lost':>8}")
    for k in KINDS:
        lost = st.sent[k] - st.answered[k]
        print(f"{k:<8} {st.count[k]:>10} {st.conns[k]:>8} {st.errors[k]:>7} {st.wrong[k]:>6} "
              f"{st.sent[k]:>12} {st.answered[k]:>12} {lost:>8}")
    sent, answered = st.total("sent"), st.total("answered")
    lost = sent - answered
    errors, wrong = st.total("errors"), st.total("wrong")
    print(f"{'total':<8} {sum(st.count.values()):>10} {sum(st.conns.values()):>8} {errors:>7} "
          f"{wrong:>6} {sent:>12} {answered:>12} {lost:>8}")
    print()
    print(f"bytes sent (completed exchanges) {sent:>14}  ({human(sent)} in {run_time + args.warmup:.0f} s "
          f"with the warm-up, {human(int(sent / (run_time + args.warmup)))}/s)")
    print(f"bytes answered correctly         {answered:>14}")
    print(f"bytes lost                       {lost:>14}")
    print(f"wrong replies                    {wrong:>14}")
    print(f"client-side errors               {errors:>14}")
    print(f"bytes abandoned on purpose       {st.abandoned:>14}  ({human(st.abandoned)}; " +
          ", ".join(f"{v} {n}" for v, n in sorted(st.abandon_variants.items())) + ")")
    print(f"udp_retries (timeouts, resent)   {st.udp_retries:>14}")
    print(f"udp datagrams never answered     {st.udp_unanswered:>14}")
    print()
    print(f"{'server':<11} {'fds start':>9} {'end':>5} {'peak':>5}  {'rss start':>11} {'end':>11} "
          f"{'peak':>11}  {'threads':>7} {'end':>4}  exit")
    for s in servers:
        a, b, p = start.get(s.name), end.get(s.name), peak.get(s.name, [0, 0, 0])
        if a is None or b is None:
            print(f"{s.name:<11} (no sample: the server was gone)  exit {s.rc}")
            reasons.append(f"{s.name} could not be sampled")
            continue
        print(f"{s.name:<11} {a[0]:>9} {b[0]:>5} {p[0]:>5}  {a[1]:>7} KiB {b[1]:>7} KiB {p[1]:>7} KiB  "
              f"{a[2]:>7} {b[2]:>4}  {s.rc}")
        if b[0] != a[0]:
            reasons.append(f"{s.name} descriptors {a[0]} -> {b[0]} after {waited:.1f} s settle")
        if b[2] != a[2]:
            reasons.append(f"{s.name} threads {a[2]} -> {b[2]}")
        if b[1] - a[1] > args.rss_slack_kib:
            reasons.append(f"{s.name} VmRSS {a[1]} -> {b[1]} KiB (more than +{args.rss_slack_kib} KiB)")
    print(f"(final sample after the clients finished and {waited:.1f} s settle; "
          f"RSS slack {args.rss_slack_kib} KiB)")
    for s in servers:
        if s.rc != 0:
            reasons.append(f"{s.name} exit status on SIGTERM: {s.rc}")
        if s.stderr:
            print(f"{s.name} stderr: " + " | ".join(s.stderr[:10]))
            reasons.append(f"{s.name} wrote to stderr")
    if st.messages:
        print("\nfirst problems:")
        for m in st.messages:
            print(f"  {m}")

    if lost:
        reasons.insert(0, f"{lost} bytes lost")
    if wrong:
        reasons.insert(0, f"{wrong} wrong replies")
    if errors:
        reasons.insert(0, f"{errors} client-side errors")
    if sum(st.count.values()) == 0:
        reasons.append("no exchanges at all")
    print()
    if reasons:
        print(f"soak: FAIL ({'; '.join(reasons)})")
        return 1
    print("soak: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
