#!/usr/bin/env python3
"""The upper-case server with its loop in Rust: upcase.Server.

Where TCPServer.py / UDPServer.py write the slide's loop in Python on
upcase's socket, here the whole loop (accept / recv / upper / send, or
recvfrom / upper / sendto) runs in Rust: concurrently on an epoll loop per
core by default, or one client at a time with --iterative, as the slides'.
Python only says who each client is. Ctrl-C (SIGINT) or SIGTERM stops it.

usage: rust_server.py [--udp] [--iterative] [--quiet] [--threads N] ... [PORT [HOST]]
       rust_server.py --tls-cert PEM --tls-key PEM [--tls-client-ca PEM] ... (TLS)
       (default: 12000, all interfaces; the options of build/c/tcp_server and udp_server)
"""
import signal
import sys

import upcase
from upcase.cli import addr_text, parse_server_args

args = parse_server_args('rust_server.py', description=__doc__)
what = 'datagram' if args.udp else 'connection'


def on_client(host, port):  # called for each TCP connection or UDP datagram
    print(what, 'from', addr_text(host, port), flush=True)


def stop(signum, frame):
    raise KeyboardInterrupt  # Ctrl-C (SIGINT) and SIGTERM both end the server


signal.signal(signal.SIGINT, stop)  # also where a shell started us with Ctrl-C ignored
signal.signal(signal.SIGTERM, stop)
try:
    # transport, mode, threads, idle_timeout, ...: the keywords the options set
    server = upcase.Server(args.host, args.port, on_client=None if args.quiet else on_client,
                           **args.server_options())
except (OSError, ValueError) as e:
    sys.exit(f'rust_server.py: cannot bind {addr_text(args.host, args.port)}: {e}')

try:  # from here on, a signal is a clean stop
    print('The server is ready to receive', flush=True)
    print('listening on', addr_text(*server.address), flush=True)
    server.serve_forever()  # returns on stop(); a signal stops it and raises here
except KeyboardInterrupt:
    pass
