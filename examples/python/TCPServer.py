#!/usr/bin/env python3
"""TCPServer from the slides, in Python 3, on upcase's socket (Rust).

The slide program with `from upcase import *` in place of `from socket import *`,
done properly where the slide is not: it reads until the client half-closes
and answers each chunk as it arrives (not one recv(1024)), sends all of every
reply, sets SO_REUSEADDR so it can be restarted at once on the same port, and
stops cleanly on Ctrl-C (SIGINT) or SIGTERM.

usage: TCPServer.py [PORT [HOST]]   (default: 12000, '' = all interfaces)
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


args = parse_server_args('TCPServer.py', description=__doc__, protocol='tcp', options=False)
serverPort, serverName = args.port, args.host  # '' unless given: every interface

signal.signal(signal.SIGINT, stop)  # also where a shell started us with Ctrl-C ignored
signal.signal(signal.SIGTERM, stop)
try:
    serverSocket = socket(AF_INET6 if ':' in serverName else AF_INET, SOCK_STREAM)
    serverSocket.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    serverSocket.bind((serverName, serverPort))
    serverSocket.listen(1)
except OSError as e:
    sys.exit(f'TCPServer.py: cannot listen on {addrText((serverName, serverPort))}: {e}')

try:  # from here on, a signal is a clean stop
    print('The server is ready to receive', flush=True)
    print('listening on', addrText(serverSocket.getsockname()), flush=True)
    while True:
        connectionSocket, addr = serverSocket.accept()
        print('connection from', addrText(addr), flush=True)
        connectionSocket.settimeout(60.0)  # a silent client cannot hold the server for ever
        try:
            while True:
                sentence = connectionSocket.recv(65536)
                if not sentence:  # the client half-closed: all was answered
                    break
                capitalizedSentence = sentence.upper()  # bytes.upper(): ASCII a-z only
                connectionSocket.sendall(capitalizedSentence)
        except OSError as e:  # this client's trouble (reset, timeout) is not the server's
            print(f'TCPServer.py: {addrText(addr)}: {e}', file=sys.stderr, flush=True)
        finally:
            connectionSocket.close()
except KeyboardInterrupt:
    pass
finally:
    serverSocket.close()
