#!/usr/bin/env python3
"""The Python client side: `upcase.tcp_request` in a loop against the same
exchange written with the standard `socket` module (connect, sendall,
half-close, read to EOF, close), and `upcase.udp_request` against the same
exchange in the stdlib (a socket of its own, connect, send, recv, close: what
udp_request does for each call), each against the same upcase server. The
stdlib with one socket kept for every request is measured too, as the figure a
caller who keeps a socket gets. Prints one JSON object.

usage: py_client_bench.py TCP_PORT UDP_PORT [SECONDS]
"""

import json
import socket
import sys
import time

import upcase

HOST = "127.0.0.1"
MSG = b"hello from the slides, 32 bytes"


def stdlib_tcp(port):
    with socket.create_connection((HOST, port)) as s:
        s.sendall(MSG)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


def upcase_tcp(port):
    return upcase.tcp_request(HOST, port, MSG)


def stdlib_udp(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.connect((HOST, port))
        s.send(MSG)
        return s.recv(65535)


def make_stdlib_udp_kept():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)

    def once(port):
        s.sendto(MSG, (HOST, port))
        data, _ = s.recvfrom(65535)
        return data

    return once


def upcase_udp(port):
    # retries=0: like the stdlib version, a lost datagram is an error, not a quiet resend.
    return upcase.udp_request(HOST, port, MSG, timeout=1.0, retries=0)


def rate(fn, port, seconds):
    want = MSG.upper()
    n = 0
    bad = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            if fn(port) != want:
                bad += 1
            n += 1
    elapsed = time.perf_counter() - start
    return n / elapsed, bad


def main():
    tcp_port, udp_port = int(sys.argv[1]), int(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    out = {}
    kept = make_stdlib_udp_kept()
    runs = [("stdlib_tcp", stdlib_tcp, tcp_port), ("upcase_tcp", upcase_tcp, tcp_port),
            ("stdlib_udp", stdlib_udp, udp_port), ("upcase_udp", upcase_udp, udp_port),
            ("stdlib_udp_kept_socket", kept, udp_port)]
    # Alternate them, twice each, and keep the better run of each: fair to all.
    for _ in range(2):
        for name, fn, port in runs:
            r, b = rate(fn, port, seconds / 4)
            prev = out.get(name, {"per_s": 0.0, "bad": 0})
            out[name] = {"per_s": max(prev["per_s"], r), "bad": prev["bad"] + b}
    out["tcp_ratio"] = out["upcase_tcp"]["per_s"] / out["stdlib_tcp"]["per_s"]
    out["udp_ratio"] = out["upcase_udp"]["per_s"] / out["stdlib_udp"]["per_s"]
    out["udp_ratio_kept_socket"] = out["upcase_udp"]["per_s"] / out["stdlib_udp_kept_socket"]["per_s"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
