#!/usr/bin/env python3
"""UDPClient from the slides, in Python 3, on upcase's socket (Rust).

The slide program with `from upcase import *` in place of `from socket import *`,
done properly where the slide is not: UDP may lose a datagram, so it waits
at most 1 s for the reply and sends again, 3 times, before giving up; it
receives up to 65535 bytes (not 2048, so nothing is cut). On failure it says
why on stderr and exits 1.

usage: UDPClient.py [HOST [PORT]] < line   (default: localhost 12000)
"""
import sys

from upcase import *  # also gaierror, the error for a name that does not resolve
from upcase.cli import parse_client_args  # the command line, as every program here reads it

args = parse_client_args('UDPClient.py', description=__doc__, protocol='udp', options=False)
serverName, serverPort = args.host, args.port  # checked: a port 1-65535, a host not all digits

# The slide's form: socket.AF_INET works because upcase's socket class carries
# the constants as attributes, as the standard socket module's names do.
if ':' in serverName:
    clientSocket = socket(socket.AF_INET6, socket.SOCK_DGRAM)
else:
    clientSocket = socket(socket.AF_INET, socket.SOCK_DGRAM)
clientSocket.settimeout(1.0)  # wait at most 1 s for each reply
retries = 3  # then send again, at most 3 times
try:
    # The prompt only for a person at a terminal, not for a pipe or a file.
    message = input('Input lowercase sentence: ' if sys.stdin.isatty() else '')
    for attempt in range(1 + retries):
        clientSocket.sendto(message.encode(), (serverName, serverPort))
        try:
            modifiedMessage, serverAddress = clientSocket.recvfrom(65535)
            break
        except TimeoutError:
            if attempt == retries:
                raise
except EOFError:
    sys.exit('UDPClient.py: no input: expected one line on stdin')
except gaierror as e:
    sys.exit(f'UDPClient.py: unknown host {serverName}: {e.strerror or e}')
except ConnectionRefusedError:
    sys.exit(f'UDPClient.py: connection refused by {serverName} port {serverPort}')
except TimeoutError:
    sys.exit(f'UDPClient.py: timed out: no reply from {serverName} port {serverPort}'
             f' after {1 + retries} tries of {clientSocket.gettimeout()} s')
except OSError as e:
    sys.exit(f'UDPClient.py: {serverName} port {serverPort}: {e}')
finally:
    clientSocket.close()
print('From Server:', modifiedMessage.decode())
