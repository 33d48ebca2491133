#!/usr/bin/env python3
"""The upper-case server with its loop in Rust: upcase.Server.

Where TCPServer.py / UDPServer.py write the slide's loop in Python on
upcase's socket, here the whole loop (accept / recv / upper / send, or
recvfrom / upper / sendto) runs in Rust: concurrently on an epoll loop per
core by default, or one client at a time with --iterative, as the slides'.
Python only says who each client is. Ctrl-C (SIGINT) or SIGTERM stops it.

usage: rust_server.py [--udp] [--iterative] [PORT [HOST]]   (default: 12000, all interfaces)
"""
import signal
import sys

import upcase


def addrText(host, port):
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


def stop(signum, frame):
    raise KeyboardInterrupt  # Ctrl-C (SIGINT) and SIGTERM both end the server


args = sys.argv[1:]
transport = 'udp' if '--udp' in args else 'tcp'
mode = 'iterative' if '--iterative' in args else 'concurrent'
args = [a for a in args if a not in ('--udp', '--iterative')]
try:
    port = int(args[0]) if args else 12000
    host = args[1] if len(args) > 1 else ''  # '' = every interface, IPv4 and IPv6
    if not 0 <= port <= 65535 or len(args) > 2:
        raise ValueError
except ValueError:
    sys.stderr.write('usage: rust_server.py [--udp] [--iterative] [PORT [HOST]]   (PORT: 0 to 65535)\n')
    sys.exit(2)

what = 'datagram' if transport == 'udp' else 'connection'


def on_client(host, port):  # called for each TCP connection or UDP datagram
    print(what, 'from', addrText(host, port), flush=True)


signal.signal(signal.SIGINT, stop)  # also where a shell started us with Ctrl-C ignored
signal.signal(signal.SIGTERM, stop)
try:
    server = upcase.Server(host, port, transport=transport, mode=mode, on_client=on_client)
except OSError as e:
    sys.exit(f'rust_server.py: cannot bind {addrText(host, port)}: {e}')

try:  # from here on, a signal is a clean stop
    print('The server is ready to receive', flush=True)
    print('listening on', addrText(*server.address), flush=True)
    server.serve_forever()  # returns on stop(); a signal stops it and raises here
except KeyboardInterrupt:
    pass
