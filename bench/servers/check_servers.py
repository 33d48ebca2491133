#!/usr/bin/env python3
"""Check every reference server of `make bench` against the upcase protocol.

Each server is started on port 0 (IPv4 loopback, then once more on ::1) and
must print `listening on HOST:PORT`, answer byte for byte:

  TCP: a 32-byte one-shot with half-close; a 4 MiB message holding all 256
       byte values (sent and received at once, from two threads); 100
       sequential requests on one kept-open connection;
  UDP: a 64-byte and a 65,507-byte datagram;

and exit 0 within 3 s of SIGTERM (with a client connection still open, for
TCP). Prints one line per server and transport, then `N passed, M failed`;
exits 1 if anything failed.

usage: check_servers.py [--epoll-bin PATH] [--tokio-bin PATH] [--uring-bin PATH] [--udp-floor-bin PATH]
                        [--only NAME ...]
  Without --epoll-bin the C server is compiled into a temporary directory
  (cc -O2 -Wall -Wextra -Werror); --tokio-bin defaults to
  target/release/tokio-server (cargo build --release -p tokio-server).
  --uring-bin adds the io_uring experiment (bench/experiments/uring_server.c,
  TCP only), once plain and once with each of its flags: uring, uring_link,
  uring_fixed, uring_buf_ring.
  --udp-floor-bin adds the UDP floor experiment (bench/experiments/udp_floor.c,
  UDP only), with its default batch and with --batch 1: udp_floor,
  udp_floor_1.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV_PY = os.path.join(ROOT, '.venv', 'bin', 'python')
PY = VENV_PY if os.access(VENV_PY, os.X_OK) else sys.executable
LISTENING = re.compile(r'^listening on (?:\[([^\]]+)\]|([^:\[\]]+)):(\d+)$')


class Failure(Exception):
    pass


# The expected reply, built independently of bytes.upper(): a-z to A-Z, all else as is.
UPPER_TABLE = bytes(b - 32 if 97 <= b <= 122 else b for b in range(256))


def upper(data):
    return data.translate(UPPER_TABLE)


ALL_BYTES = bytes(range(256))


def servers(epoll_bin, tokio_bin, uring_bin=None, udp_floor_bin=None):
    """(name, TCP command or None, UDP command or None); PORT HOST are appended."""
    variants = [('uring', []), ('uring_link', ['--link']), ('uring_fixed', ['--fixed']),
                ('uring_buf_ring', ['--buf-ring'])]
    uring = [(name, [uring_bin, *flags], None) for name, flags in variants] if uring_bin else []
    floor = ([('udp_floor', None, [udp_floor_bin]), ('udp_floor_1', None, [udp_floor_bin, '--batch', '1'])]
             if udp_floor_bin else [])
    def py(script, *flags):
        return [PY, os.path.join(HERE, script), *flags]

    return [
        ('epoll', [epoll_bin], [epoll_bin, '--udp']),
        ('tokio', [tokio_bin], [tokio_bin, '--udp']),
        ('slide', py('slide_tcp_server.py'), py('slide_udp_server.py', '--udp')),
        ('threading', py('threading_server.py'), py('threading_server.py', '--udp')),
        ('asyncio', py('asyncio_server.py'), py('asyncio_server.py', '--udp')),
        ('upcase_py', py('upcase_py_server.py'), py('upcase_py_server.py', '--udp')),
    ] + uring + floor


class Running:
    """A server process, started on port 0, with its announced address."""

    def __init__(self, argv, host):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv + ['0', host], stdout=subprocess.PIPE, stderr=self.log)
        try:
            self.announced(host)
        except BaseException:
            self.kill()
            raise

    def announced(self, host):
        line = [None]
        reader = threading.Thread(target=lambda: line.__setitem__(0, self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(15)
        text = (line[0] or b'').decode(errors='replace').rstrip('\n')
        m = LISTENING.match(text)
        if not m:
            raise Failure(f'no listening line (got {text!r}){self.stderr_tail()}')
        self.host, self.port = m.group(1) or m.group(2), int(m.group(3))
        if self.port == 0:
            raise Failure(f'announced port 0: {text!r}')
        if (':' in host) != (m.group(1) is not None):
            raise Failure(f'address format: {text!r} for host {host}')

    def stderr_tail(self):
        self.log.seek(0)
        tail = self.log.read()[-500:].decode(errors='replace').strip()
        return f'; stderr: {tail}' if tail else ''

    def terminate(self, within=3.0):
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(within)
        except subprocess.TimeoutExpired:
            raise Failure(f'still running {within} s after SIGTERM')
        if rc != 0:
            raise Failure(f'exit status {rc} after SIGTERM{self.stderr_tail()}')
        return time.monotonic() - start

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


def recv_exact(sock, n):
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise Failure(f'connection closed after {got} of {n} reply bytes')
        chunks.append(chunk)
        got += len(chunk)
    return b''.join(chunks)


def recv_to_eof(sock):
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b''.join(chunks)


def compare(what, got, want):
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise Failure(f'{what}: reply differs ({len(got)} bytes back for {len(want)}, first difference at {at})')


def tcp_oneshot(host, port):
    msg = b'hello, World! \x00\xff\x80 az{`@[AZ xy\xc3\xa9\n'
    assert len(msg) == 32
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(msg)
        s.shutdown(socket.SHUT_WR)
        compare('32-byte oneshot', recv_to_eof(s), upper(msg))


def tcp_big(host, port):
    msg = ALL_BYTES * (4 * 1024 * 1024 // 256)
    errors = []

    def send(s):
        try:
            s.sendall(msg)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(e)

    with socket.create_connection((host, port), timeout=30) as s:
        sender = threading.Thread(target=send, args=(s,))
        sender.start()
        try:
            got = recv_to_eof(s)
        finally:
            sender.join()
        if errors:
            raise Failure(f'4 MiB send: {errors[0]}')
        compare('4 MiB message', got, upper(msg))


def tcp_sequential(host, port):
    with socket.create_connection((host, port), timeout=10) as s:
        for i in range(100):
            msg = f'request {i}: mixed Case '.encode() + ALL_BYTES[: i * 7 % 256] + b'\n'
            s.sendall(msg)
            compare(f'request {i} of 100', recv_exact(s, len(msg)), upper(msg))
        s.shutdown(socket.SHUT_WR)
        if rest := recv_to_eof(s):
            raise Failure(f'{len(rest)} unexpected bytes after 100 requests')


def udp_datagram(host, port, size):
    msg = (ALL_BYTES * (size // 256 + 1))[:size]
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for _ in range(3):  # UDP may drop; the reply must never be cut
            s.sendto(msg, (host, port))
            try:
                data, peer = s.recvfrom(65536)
            except socket.timeout:
                continue
            compare(f'{size}-byte datagram', data, upper(msg))
            return
        raise Failure(f'no reply to a {size}-byte datagram in 3 tries')


def timed(results, name, fn, *args):
    start = time.monotonic()
    try:
        fn(*args)
    except Failure:
        raise
    except Exception as e:  # an OSError, a timeout: this check failed, not the checker
        raise Failure(f'{name}: {type(e).__name__}: {e}')
    results.append(f'{name} {(time.monotonic() - start) * 1000:.0f}ms')


def check(argv, udp):
    results = []
    server = Running(argv, '127.0.0.1')
    try:
        h, p = server.host, server.port
        if udp:
            timed(results, 'udp64', udp_datagram, h, p, 64)
            timed(results, 'udp65507', udp_datagram, h, p, 65507)
            results.append(f'sigterm {server.terminate() * 1000:.0f}ms')
        else:
            timed(results, 'oneshot', tcp_oneshot, h, p)
            timed(results, '4MiB', tcp_big, h, p)
            timed(results, 'seq100', tcp_sequential, h, p)
            idle = socket.create_connection((h, p), timeout=5)  # still open at SIGTERM
            try:
                results.append(f'sigterm {server.terminate() * 1000:.0f}ms')
            finally:
                idle.close()
    finally:
        server.kill()
    server = Running(argv, '::1')
    try:
        if udp:
            timed(results, 'ipv6', udp_datagram, server.host, server.port, 64)
        else:
            timed(results, 'ipv6', tcp_oneshot, server.host, server.port)
        server.terminate()
    finally:
        server.kill()
    return ', '.join(results)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--epoll-bin')
    ap.add_argument('--tokio-bin', default=os.path.join(ROOT, 'target', 'release', 'tokio-server'))
    ap.add_argument('--uring-bin', help='the io_uring experiment, built (make experiments)')
    ap.add_argument('--udp-floor-bin', help='the UDP floor experiment, built (make experiments)')
    ap.add_argument('--only', nargs='+', metavar='NAME')
    opts = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix='check_servers.')
    try:
        epoll_bin = opts.epoll_bin
        if not epoll_bin:
            epoll_bin = os.path.join(tmp, 'epoll_server')
            cc = os.environ.get('CC', 'cc')
            src = os.path.join(HERE, 'epoll_server.c')
            subprocess.run([cc, '-O2', '-Wall', '-Wextra', '-Werror', '-o', epoll_bin, src], check=True)
        passed = failed = 0
        for name, tcp, udp in servers(epoll_bin, opts.tokio_bin, opts.uring_bin, opts.udp_floor_bin):
            if opts.only and name not in opts.only:
                continue
            for transport, argv in (('tcp', tcp), ('udp', udp)):
                if argv is None:
                    continue
                label = f'{name:<10} {transport}'
                if not os.access(argv[0], os.X_OK):
                    print(f'FAIL {label}: {argv[0]} is not built', flush=True)
                    failed += 1
                    continue
                try:
                    detail = check(argv, transport == 'udp')
                except Failure as e:
                    print(f'FAIL {label}: {e}', flush=True)
                    failed += 1
                else:
                    print(f'ok   {label}: {detail}', flush=True)
                    passed += 1
        print(f'{passed} passed, {failed} failed')
        return 1 if failed or not passed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
