#!/usr/bin/env python3
"""The slide's TCPServer, ported to Python 3 on the standard library socket.

Iterative like the slide (one client at a time), but done enough to keep the
protocol: it reads until the client half-closes, answering each chunk with
sendall as it arrives (the slide's single recv(1024) cuts longer messages),
then closes. Departures from the slide that are not protocol: SO_REUSEADDR,
a listen backlog of 4096 (the slide's listen(1) would make the kernel drop
the SYNs of a benchmark's concurrent clients), and a clean exit on SIGTERM
(exit_on_signal.py says why it takes a thread).

usage: slide_tcp_server.py PORT HOST   (PORT may be 0)
"""
import sys
from socket import *

from exit_on_signal import exit_on_signal


if len(sys.argv) != 3 or sys.argv[1] == '--udp':
    sys.exit('usage: slide_tcp_server.py PORT HOST   (for UDP: slide_udp_server.py)')
serverPort, serverName = int(sys.argv[1]), sys.argv[2]
exit_on_signal()

family, _, _, _, address = getaddrinfo(serverName, serverPort, AF_UNSPEC, SOCK_STREAM, 0, AI_PASSIVE)[0]
serverSocket = socket(family, SOCK_STREAM)
serverSocket.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
serverSocket.bind(address)
serverSocket.listen(4096)
host, port = serverSocket.getsockname()[:2]
print(f'listening on [{host}]:{port}' if family == AF_INET6 else f'listening on {host}:{port}', flush=True)
while True:
    connectionSocket, addr = serverSocket.accept()
    try:
        while True:
            sentence = connectionSocket.recv(65536)
            if not sentence:  # the client half-closed: everything has been answered
                break
            capitalizedSentence = sentence.upper()  # bytes.upper(): ASCII a-z only
            connectionSocket.sendall(capitalizedSentence)
    except OSError:  # one client's reset is not the server's end
        pass
    finally:
        connectionSocket.close()
