#!/usr/bin/env python3
"""UDPServer from the slides, in Python 3, on upcase's socket (Rust).

The slide program with `from upcase import *` in place of `from socket import *`,
done properly where the slide is not: it receives datagrams of any size
(a buffer of 65535 bytes, not 2048, so nothing is cut), and stops cleanly on
Ctrl-C (SIGINT) or SIGTERM.

usage: UDPServer.py [PORT [HOST]]   (default: 12000, '' = all interfaces)
"""
import signal
import sys

from upcase import *
from upcase.cli import parse_server_args  # the command line, as every program here reads it


def addrText(address):
    """(host, port[, flowinfo, scope_id]) as host:port, or [host]:port for IPv6."""
    host, port = address[0], address[1]
    return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


def stop(signum, frame):
    raise KeyboardInterrupt  # Ctrl-C (SIGINT) and SIGTERM both end the server


args = parse_server_args('UDPServer.py', description=__doc__, protocol='udp', options=False)
serverPort, serverName = args.port, args.host  # '' unless given: every interface

signal.signal(signal.SIGINT, stop)  # also where a shell started us with Ctrl-C ignored
signal.signal(signal.SIGTERM, stop)
try:
    serverSocket = socket(AF_INET6 if ':' in serverName else AF_INET, SOCK_DGRAM)
    serverSocket.bind((serverName, serverPort))
except OSError as e:
    sys.exit(f'UDPServer.py: cannot bind {addrText((serverName, serverPort))}: {e}')

try:  # from here on, a signal is a clean stop
    print('The server is ready to receive', flush=True)
    print('listening on', addrText(serverSocket.getsockname()), flush=True)
    while True:
        message, clientAddress = serverSocket.recvfrom(65535)  # the largest datagram there is
        print('datagram from', addrText(clientAddress), flush=True)
        modifiedMessage = message.upper()  # bytes.upper(): ASCII a-z only
        try:
            serverSocket.sendto(modifiedMessage, clientAddress)
        except OSError as e:  # one client's trouble is not the server's
            print(f'UDPServer.py: {addrText(clientAddress)}: {e}', file=sys.stderr, flush=True)
except KeyboardInterrupt:
    pass
finally:
    serverSocket.close()
