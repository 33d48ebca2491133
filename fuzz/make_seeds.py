#!/usr/bin/env python3
"""Writes the hand-made seeds of the fuzz targets into fuzz/seeds/<target>/.

Each seed is named for what it holds. The rest of each seeds directory is
what `make fuzz-merge` kept from longer runs (libFuzzer names those by hash).
The byte layouts follow the readers in fuzz/fuzz_targets/*.rs.

    python3 fuzz/make_seeds.py
"""

import os
import socket
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
AF_INET, AF_INET6, AF_UNIX = socket.AF_INET, socket.AF_INET6, socket.AF_UNIX


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def sin(ip, port):
    """struct sockaddr_in: family (host order), port and address (network order), 8 zero bytes."""
    return struct.pack("=H", AF_INET) + struct.pack("!H", port) + socket.inet_pton(AF_INET, ip) + bytes(8)


def sin6(ip, port, scope=0, flow=0):
    """struct sockaddr_in6: family, port (network order), flow info, address, scope id (host order)."""
    return (struct.pack("=H", AF_INET6) + struct.pack("!H", port) + struct.pack("!I", flow)
            + socket.inet_pton(AF_INET6, ip) + struct.pack("=I", scope))


# ---- addr: the input is text, address bytes and numbers all at once --------

addr = {
    "v4-loopback": b"127.0.0.1",
    "v4-any": b"0.0.0.0",
    "v4-broadcast": b"255.255.255.255",
    "v4-octet-too-large": b"256.0.0.1",
    "v4-leading-zero": b"01.2.3.4",
    "v4-bracketed": b"[192.0.2.7]",
    "v6-loopback": b"::1",
    "v6-bracketed": b"[::1]",
    "v6-scoped": b"fe80::1%3",
    "v6-bracketed-scoped": b"[fe80::abcd%12]",
    "v6-scope-max": b"fe80::1%4294967295",
    "v6-scope-too-large": b"fe80::1%4294967296",
    "v6-scope-empty": b"fe80::1%",
    "v6-mapped": b"::ffff:10.1.2.3",
    "v6-full": b"2001:0db8:0000:0000:0000:0000:0000:0009",
    "v6-unclosed-bracket": b"[::1",
    "name": b"localhost",
    "empty": b"",
    "utf8-and-upper": "héllo, wörld! abc xyz `{".encode(),
    "raw-sin-loopback-12000": sin("127.0.0.1", 12000),
    "raw-sin-cut": sin("127.0.0.1", 12000)[:15],
    "raw-sin6-loopback-443": sin6("::1", 443),
    "raw-sin6-scoped": sin6("fe80::1", 80, scope=7, flow=0x12345),
    "raw-sin6-mapped": sin6("::ffff:10.1.2.3", 5000, scope=2),
    "raw-sin6-cut": sin6("2001:db8::9", 65535)[:27],
    "raw-unix": struct.pack("=H", AF_UNIX) + b"/tmp/upcase.sock".ljust(108, b"\0"),
    "raw-storage-full": sin6("2001:db8::1", 1).ljust(128, b"\0"),
    "raw-longer-than-storage": sin("10.0.0.1", 7).ljust(129, b"\xff"),
    "raw-kernel-error": b"\x02\x00\xee" + bytes(13),
}
for name, data in addr.items():
    write("addr", name, data)


# ---- capi: a list of ops, each an op byte then its fields ------------------

IP4, IP6, ADDR_NAME, ADDR_PORT, CODES, UPPER, ENDIAN, CONFIG, BIND, LIVE, REFUSED, NULLS = range(12)


def u8(x):
    return struct.pack("<B", x & 0xFF)


def u16(x):
    return struct.pack("<H", x & 0xFFFF)


def u32(x):
    return struct.pack("<I", x & 0xFFFFFFFF)


def blob(b):
    assert len(b) < 256
    return u8(len(b)) + b


def ip4(text, port=12000, flags=0):
    return u8(IP4) + u8(flags) + u16(port) + blob(text)


def ip6(text, port=12000, flags=0):
    return u8(IP6) + u8(flags) + u16(port) + blob(text)


def addr_name(raw, cap, flags=2, len_byte=0):
    return u8(ADDR_NAME) + u8(flags) + u8(len_byte) + u8(cap) + blob(raw)


def addr_port(raw, flags=2, len_byte=0):
    return u8(ADDR_PORT) + u8(flags) + u8(len_byte) + blob(raw)


def codes(code):
    return u8(CODES) + u32(code)


def upper(data, flags=2, len_byte=0, null_len=0):
    return u8(UPPER) + u8(flags) + u8(len_byte) + u16(null_len) + blob(data)


def endian(x16, x32):
    return u8(ENDIAN) + u16(x16) + u32(x32)


def config(flags=0):
    return u8(CONFIG) + u8(flags)


def bind(flags=4, fields=0, host=1, transport=0, mode=0, threads=1, max_connections=0, idle=0, backlog=0,
         max_datagram=0, defer=0, min_rate=0, cap=64, user=0):
    return (u8(BIND) + u8(flags) + u8(fields) + u8(host) + u32(transport) + u32(mode) + u32(threads)
            + u32(max_connections) + u32(idle) + u32(backlog) + u32(max_datagram) + u32(defer) + u32(min_rate)
            + u8(cap) + u32(user))


def live(data, flags=0, host=0, timeout=500, retries=0, cap_shift=4, big=0):
    return u8(LIVE) + u8(flags) + u8(host) + u16(timeout) + u8(retries) + u8(cap_shift) + u16(big) + blob(data)


def refused(host, data, flags=0, port=0, len_byte=0, cap=0, timeout=100, retries=0):
    return (u8(REFUSED) + u8(flags) + u16(port) + u8(len_byte) + u8(cap) + u32(timeout) + u32(retries)
            + blob(host) + blob(data))


def nulls(cap=64):
    return u8(NULLS) + u8(cap)


capi = {
    "ip4-loopback": ip4(b"127.0.0.1"),
    "ip4-interior-nul": ip4(b"127.0.0.1\0garbage"),
    "ip4-null-out": ip4(b"10.0.0.1", flags=2),
    "ip4-given-v6": ip4(b"::1"),
    "ip6-loopback": ip6(b"::1", port=443),
    "ip6-scoped": ip6(b"fe80::1%2", port=80),
    "ip6-bracketed-mapped": ip6(b"[::ffff:127.0.0.1]"),
    "ip6-null-ip": ip6(b"::1", flags=1),
    "addr-name-v4": addr_name(sin("127.0.0.1", 12000), cap=64),
    "addr-name-v4-buffer-one-short": addr_name(sin("127.0.0.1", 12000), cap=len("127.0.0.1:12000")),
    "addr-name-v6-scoped": addr_name(sin6("fe80::1", 80, scope=3), cap=64),
    "addr-name-v6-mapped": addr_name(sin6("::ffff:10.1.2.3", 5000), cap=64),
    "addr-name-v6-longest": addr_name(sin6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535, scope=4294967295), cap=64),
    "addr-name-cut-length": addr_name(sin6("::1", 1), cap=64, flags=0, len_byte=27),
    "addr-name-unix": addr_name(struct.pack("=H", AF_UNIX) + b"/tmp/x\0", cap=64),
    "addr-name-null-buf": addr_name(sin("127.0.0.1", 1), cap=64, flags=2 | 4),
    "addr-port-v6": addr_port(sin6("::1", 443)),
    "addr-port-null-port": addr_port(sin("127.0.0.1", 80), flags=2 | 4),
    "codes": codes(-111) + codes(-3002) + codes(-4001) + codes(-4005) + codes(0) + codes(12345) + codes(-(2**31)),
    "upper-utf8": upper("hello, wörld! abc-xyz `{ @[".encode()),
    "upper-part": upper(b"abcdefghijklmnopqrstuvwxyz", flags=0, len_byte=10),
    "upper-null": upper(b"", flags=1, null_len=5) + upper(b"", flags=1, null_len=0),
    "endian": endian(12000, 0x7F000001),
    "config-default": config() + config(flags=1),
    "bind-tcp-loopback": bind(),
    "bind-udp-v6-two-threads": bind(host=2, transport=1, threads=2, flags=4 | 16),
    "bind-iterative-zeroed-small-buffer": bind(flags=0, mode=1, cap=10),
    "bind-bad-transport": bind(fields=1, transport=7),
    "bind-too-many-threads": bind(fields=2, threads=1025),
    "bind-datagram-too-large": bind(fields=16, transport=1, max_datagram=65528),
    "bind-all-limits": bind(fields=0x7F, threads=3, max_connections=1, idle=1, backlog=1, max_datagram=1, defer=1,
                            min_rate=1000000000, flags=4 | 8 | 16 | 32, user=0xDEAD),
    "bind-invalid-utf8-host": bind(host=4),
    "live-tcp": live(b"hello, world"),
    "live-tcp-empty": live(b""),
    "live-udp": live(b"hello, udp", flags=1),
    "live-udp-big": live(b"big", flags=1 | 64, big=5507),
    "live-tcp-connection": live(b"kept open", flags=4),
    "live-tcp-iterative-callback-same-buffer": live(b"one at a time", flags=2 | 8 | 128),
    "live-udp-reply-too-small": live(b"0123456789", flags=1, cap_shift=0),
    "live-v6-nothing-listens": live(b"anyone?", host=1),
    "refused-port-0": refused(b"8.8.8.8", b"hello"),
    "refused-small-buffer": refused(b"127.0.0.1", b"hello", port=9, cap=2),
    "refused-udp-interior-nul": refused(b"127.0.0.1\0example.org", b"data", flags=1, port=9, cap=1),
    "refused-connection": refused(b"localhost", b"", flags=2),
    "refused-null-data": refused(b"127.0.0.1", b"", flags=8, port=9, len_byte=3),
    "nulls": nulls(),
    "mixed": ip4(b"127.0.0.1") + codes(-22) + upper(b"mixed") + bind() + nulls(0) + endian(1, 2),
}
for name, data in capi.items():
    write("capi", name, data)

# conn: the connection simulator's scripts (src/server/conn.rs, `sim::run`).
# Header: buffer length - 1 (mod 64), idle timeout / 50 ms (mod 16, 0 = none),
# minimum rate / 10 bytes/s (mod 8), send buffer room, most bytes per recv
# (mod 8, 0 = any). Then operations, each a byte mod 12 and its arguments.
SEND, EOF_, READ, ROOM, RECV_MAX, RECV_ERR, SEND_ERR, TIME, SPURIOUS, WAKE = 0, 2, 3, 4, 5, 6, 7, 8, 9, 10


def conn_script(buf=63, idle=0, rate=0, room=255, recv_max=0, ops=()):
    out = bytes([buf, idle, rate, room, recv_max])
    for op in ops:
        out += bytes(op)
    return out


def send(data):
    return [SEND, len(data) - 1] + list(data)


conn = {
    "request-half-close": conn_script(ops=[send(b"hello, world"), [EOF_], [WAKE]]),
    "all-256-byte-values": conn_script(ops=[send(bytes(range(i, i + 48))) for i in range(0, 240, 48)] +
                                       [send(bytes(range(240, 256))), [WAKE], [EOF_], [WAKE]]),
    "back-pressure": conn_script(buf=7, room=3, ops=[send(b"abcdefghijklmnop"), [WAKE], [WAKE], [READ, 2], [WAKE],
                                                     [READ, 255], [WAKE], [EOF_], [WAKE]]),
    "partial-reads": conn_script(buf=15, recv_max=1, ops=[send(b"one byte at a time"), [WAKE], [WAKE], [EOF_], [WAKE]]),
    "eintr-eagain": conn_script(ops=[[RECV_ERR, 0], [RECV_ERR, 1], [SEND_ERR, 0], [SEND_ERR, 1], send(b"retry"),
                                     [WAKE], [WAKE], [EOF_], [WAKE]]),
    "reset-mid-stream": conn_script(ops=[send(b"before"), [WAKE], [RECV_ERR, 2], send(b"after"), [WAKE]]),
    "broken-pipe-while-writing": conn_script(room=2, ops=[send(b"long reply"), [WAKE], [SEND_ERR, 2], [READ, 2], [WAKE]]),
    "spurious-wakeups": conn_script(ops=[[SPURIOUS], [SPURIOUS], send(b"x"), [SPURIOUS], [EOF_], [SPURIOUS]]),
    "idle-timeout": conn_script(idle=2, ops=[send(b"hi"), [WAKE], [TIME, 10], [TIME, 30]]),
    "slowloris": conn_script(idle=20, rate=7, ops=[op for _ in range(20) for op in (send(b"a"), [WAKE], [TIME, 150])]),
    "fast-client-with-min-rate": conn_script(idle=4, rate=1, ops=[op for _ in range(10) for op in
                                                                  (send(b"line of text " * 3), [WAKE], [TIME, 20])]),
}
for name, data in conn.items():
    write("conn", name, data)

# tls_conn: the TLS simulator's scripts (src/server/conn_sim/tls.rs, `run`).
# Header: TLS 1.2 (bit 0) and the buffer (bits 1-3: 1, 5, 64, 100, 1000, 4096,
# 16384, 65536 bytes); idle timeout / 50 ms (low 4 bits, 0 = none) and minimum
# rate (bits 4-5: 0, 0, 100, 10000 bytes/s); handshake timeout / 50 ms - 1
# (mod 16); send buffer room / 64; most bytes per recv (0 = any). Then
# operations, each a byte mod 16 and its arguments. An amount byte is 1-127
# bytes, 128 and up (n - 127) * 256 bytes, 0 everything.
(T_WRITE, T_BIG, T_XMIT, T_CREAD, T_ROOM, T_RECV_MAX, T_GARBAGE, T_FLIP_IN, T_FLIP_OUT, T_CLOSE, T_FIN,
 T_RECV_ERR, T_SEND_ERR, T_TIME, T_WAKE, T_SPURIOUS) = range(16)
T_ABORT = 128 + T_CLOSE  # close_notify at once, even in the handshake


def tls_script(tls12=False, buf=2, idle=0, rate=0, handshake=15, room=255, recv_max=0, ops=()):
    out = bytes([int(tls12) | buf << 1, idle | rate << 4, handshake, room, recv_max])
    for op in ops:
        out += bytes(op)
    return out


def t_write(data):
    return [T_WRITE, len(data) - 1] + list(data)


# Records both ways, the server woken, the client reading: three rounds
# finish a TLS 1.3 or 1.2 handshake.
EXCHANGE = [[T_XMIT, 0], [T_WAKE], [T_CREAD, 0]]
HANDSHAKE = EXCHANGE * 3

tls_conn = {}
for v, tls12 in (("13", False), ("12", True)):
    tls_conn[f"tls{v}-request-close-notify"] = tls_script(
        tls12, ops=HANDSHAKE + [t_write(b"hello, world")] + EXCHANGE + [[T_CLOSE]] + EXCHANGE * 2)
    tls_conn[f"tls{v}-end-of-stream-without-close-notify"] = tls_script(
        tls12, ops=HANDSHAKE + [t_write(b"cut short")] + EXCHANGE + [[T_FIN]] + EXCHANGE)
    tls_conn[f"tls{v}-split-at-every-byte"] = tls_script(
        tls12, recv_max=1, ops=[op for _ in range(40) for op in ([T_XMIT, 7], [T_WAKE], [T_CREAD, 13])]
        + [t_write(b"one byte at a time")] + EXCHANGE + [[T_CLOSE]] + EXCHANGE * 2)
    tls_conn[f"tls{v}-client-stops-reading"] = tls_script(
        tls12, buf=5, ops=HANDSHAKE + [[T_ROOM, 1]] + [op for _ in range(12) for op in
                                                        ([T_BIG, 255, 0], [T_XMIT, 0], [T_WAKE], [T_SPURIOUS])]
        + [[T_CREAD, 200], [T_WAKE], [T_ROOM, 255]] + EXCHANGE * 4)
tls_conn.update({
    "all-256-byte-values": tls_script(ops=HANDSHAKE + [t_write(bytes(range(i, i + 64))) for i in range(0, 256, 64)]
                                      + EXCHANGE * 2 + [[T_CLOSE]] + EXCHANGE * 2),
    "big-stream": tls_script(buf=5, ops=HANDSHAKE + [[T_BIG, 255, 3], [T_BIG, 100, 1]] + EXCHANGE * 6
                             + [[T_CLOSE]] + EXCHANGE * 3),
    "close-notify-then-end-of-stream": tls_script(ops=HANDSHAKE + [t_write(b"bye"), [T_CLOSE], [T_XMIT, 0], [T_FIN]]
                                                  + EXCHANGE * 2),
    "abort-in-the-handshake": tls_script(ops=EXCHANGE + [[T_ABORT]] + EXCHANGE * 2),
    "garbage-after-the-handshake": tls_script(ops=HANDSHAKE + [t_write(b"ok"), [T_XMIT, 0],
                                                               [T_GARBAGE, 5, 0x17, 3, 3, 0, 9, 0xAA]] + EXCHANGE * 2),
    "garbage-first": tls_script(ops=[[T_GARBAGE, 7] + list(b"GET / HTTP/1.1\r\n")[:8]] + EXCHANGE * 2),
    "client-byte-flipped": tls_script(ops=HANDSHAKE + [t_write(b"flip me"), [T_FLIP_IN, 30, 0, 0x40]] + EXCHANGE * 2),
    "server-byte-flipped": tls_script(ops=EXCHANGE + [[T_XMIT, 0], [T_WAKE], [T_FLIP_OUT, 200, 0, 1], [T_CREAD, 0]]
                                      + EXCHANGE * 2),
    "reset-mid-stream": tls_script(ops=HANDSHAKE + [t_write(b"before"), [T_RECV_ERR, 2]] + EXCHANGE),
    "broken-pipe-while-writing": tls_script(ops=HANDSHAKE + [[T_ROOM, 1], [T_BIG, 20, 0], [T_XMIT, 0], [T_WAKE],
                                                                      [T_SEND_ERR, 2], [T_CREAD, 10], [T_WAKE]]),
    "eintr-eagain": tls_script(ops=[[T_RECV_ERR, 0], [T_RECV_ERR, 1], [T_SEND_ERR, 0], [T_SEND_ERR, 1]]
                               + HANDSHAKE + [t_write(b"retry"), [T_CLOSE]] + EXCHANGE * 2),
    "handshake-timeout": tls_script(handshake=1, ops=[[T_XMIT, 40], [T_WAKE], [T_TIME, 10], [T_TIME, 20]]),
    "idle-timeout-after-handshake": tls_script(idle=2, ops=HANDSHAKE + [t_write(b"hi")] + EXCHANGE
                                               + [[T_TIME, 10], [T_TIME, 30]]),
    "slow-client-with-min-rate": tls_script(idle=4, rate=2, ops=HANDSHAKE + [op for _ in range(10) for op in
                                                                             (t_write(b"a"), [T_XMIT, 0], [T_WAKE],
                                                                              [T_TIME, 30])]),
})
for name, data in tls_conn.items():
    write("tls_conn", name, data)
