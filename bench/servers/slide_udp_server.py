#!/usr/bin/env python3
"""The slide's UDPServer, ported to Python 3 on the standard library socket.

Iterative like the slide, but done enough to keep the protocol: it receives
with recvfrom(65535), not 2048, so no datagram the kernel allows is cut.
It also exits cleanly on SIGTERM (exit_on_signal.py says why it takes a
thread).

usage: slide_udp_server.py --udp PORT HOST   (PORT may be 0; --udp optional)
"""
import sys
from socket import *

from exit_on_signal import exit_on_signal


args = [a for a in sys.argv[1:] if a != '--udp']
if len(args) != 2:
    sys.exit('usage: slide_udp_server.py [--udp] PORT HOST')
serverPort, serverName = int(args[0]), args[1]
exit_on_signal()

family, _, _, _, address = getaddrinfo(serverName, serverPort, AF_UNSPEC, SOCK_DGRAM, 0, AI_PASSIVE)[0]
serverSocket = socket(family, SOCK_DGRAM)
serverSocket.bind(address)
host, port = serverSocket.getsockname()[:2]
print(f'listening on [{host}]:{port}' if family == AF_INET6 else f'listening on {host}:{port}', flush=True)
while True:
    message, clientAddress = serverSocket.recvfrom(65535)
    modifiedMessage = message.upper()
    try:
        serverSocket.sendto(modifiedMessage, clientAddress)
    except OSError:  # e.g. the send buffer is full: UDP may drop a reply
        pass
