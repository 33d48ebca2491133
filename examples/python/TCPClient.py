#!/usr/bin/env python3
"""TCPClient from the slides, in Python 3, on upcase's socket (Rust).

The slide program with `from upcase import *` in place of `from socket import *`,
done properly where the slide is not: it sends all of the line (sendall),
half-closes (shutdown(SHUT_WR)) so the server sees the end of the request,
and reads the reply to the end (not one recv(1024), which cuts long lines).
On failure it says why on stderr and exits 1.

usage: TCPClient.py [HOST [PORT]] < line   (default: localhost 12000)
"""
import sys

from upcase import *  # also gaierror, the error for a name that does not resolve
from upcase.cli import parse_client_args  # the command line, as every program here reads it

args = parse_client_args('TCPClient.py', description=__doc__, protocol='tcp', options=False)
serverName, serverPort = args.host, args.port  # checked: a port 1-65535, a host not all digits

clientSocket = socket(AF_INET6 if ':' in serverName else AF_INET, SOCK_STREAM)
clientSocket.settimeout(5.0)  # for each wait: a silent server cannot hang the client
try:
    clientSocket.connect((serverName, serverPort))
    # The prompt only for a person at a terminal, not for a pipe or a file.
    sentence = input('Input lowercase sentence: ' if sys.stdin.isatty() else '')
    clientSocket.sendall(sentence.encode())
    clientSocket.shutdown(SHUT_WR)  # end of the request: the server closes after replying
    modifiedSentence = b''
    while True:
        chunk = clientSocket.recv(65536)
        if not chunk:  # the server closed: that was the whole reply
            break
        modifiedSentence += chunk
except EOFError:
    sys.exit('TCPClient.py: no input: expected one line on stdin')
except gaierror as e:
    sys.exit(f'TCPClient.py: unknown host {serverName}: {e.strerror or e}')
except ConnectionRefusedError:
    sys.exit(f'TCPClient.py: connection refused by {serverName} port {serverPort}')
except TimeoutError:
    sys.exit(f'TCPClient.py: timed out talking to {serverName} port {serverPort}')
except OSError as e:
    sys.exit(f'TCPClient.py: {serverName} port {serverPort}: {e}')
finally:
    clientSocket.close()
print('From Server:', modifiedSentence.decode())
