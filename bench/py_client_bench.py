#!/usr/bin/env python3
"""The Python client side: `upcase.tcp_request` in a loop against the same
exchange written with the standard `socket` module (connect, sendall,
half-close, read to EOF, close), and `upcase.udp_request` against a stdlib
sendto/recvfrom, each against the same upcase server. Prints one JSON object.

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


def make_stdlib_udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)

    def once(port):
        s.sendto(MSG, (HOST, port))
        data, _ = s.recvfrom(65535)
        return data

    return once


def upcase_udp(port):
    return upcase.udp_request(HOST, port, MSG)


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
    # Alternate the two twice each, keep the better run of each: fair to both.
    for name, fn, port in [("stdlib_tcp", stdlib_tcp, tcp_port), ("upcase_tcp", upcase_tcp, tcp_port),
                           ("stdlib_udp", make_stdlib_udp(), udp_port), ("upcase_udp", upcase_udp, udp_port)]:
        r1, b1 = rate(fn, port, seconds / 2)
        out[name] = {"per_s": r1, "bad": b1}
    for name, fn, port in [("stdlib_tcp", stdlib_tcp, tcp_port), ("upcase_tcp", upcase_tcp, tcp_port)]:
        r2, b2 = rate(fn, port, seconds / 2)
        out[name] = {"per_s": max(out[name]["per_s"], r2), "bad": out[name]["bad"] + b2}
    out["tcp_ratio"] = out["upcase_tcp"]["per_s"] / out["stdlib_tcp"]["per_s"]
    out["udp_ratio"] = out["upcase_udp"]["per_s"] / out["stdlib_udp"]["per_s"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
