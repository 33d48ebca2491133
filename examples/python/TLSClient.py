#!/usr/bin/env python3
"""TLSClient: TCPClient from the slides inside TLS, on upcase's socket and TLS (Rust).

TCPClient.py with the lines Python's ssl module would need (TLSContext for
SSLContext) and no others: the server's certificate verified and its name
checked before a byte is sent. The slide program with `from upcase import *` in place of `from socket import *`,
done properly where the slide is not: it sends all of the line (sendall),
half-closes (shutdown(SHUT_WR)) so the server sees the end of the request,
and reads the reply to the end (not one recv(1024), which cuts long lines).
On failure it says why on stderr and exits 1.

usage: TLSClient.py [--tls-ca PEM] [--tls-name NAME] [--tls-cert PEM --tls-key PEM] [HOST [PORT]] < line
       (default: localhost 12000; the server verified against the system's CAs unless --tls-ca)
"""
import sys

from upcase import *  # also gaierror, the error for a name that does not resolve
from upcase.cli import parse_client_args  # the command line, as every program here reads it

args = parse_client_args('TLSClient.py', description=__doc__, protocol='tcp', options=False, tls=True)
serverName, serverPort = args.host, args.port  # checked: a port 1-65535, a host not all digits

context = TLSContext(PROTOCOL_TLS_CLIENT)  # TLS: verifies the server's certificate and name
try:  # TLS: the files named on the command line
    if args.tls_ca:  # TLS: the CAs to trust (else the system's)
        context.load_verify_locations(args.tls_ca)
    if args.tls_cert:  # TLS: a client certificate, for a server that asks
        context.load_cert_chain(args.tls_cert, args.tls_key)
except (OSError, ValueError) as e:  # TLS: a missing file, or one that is not PEM
    sys.exit(f'TLSClient.py: {e}')
clientSocket = socket(AF_INET6 if ':' in serverName else AF_INET, SOCK_STREAM)
clientSocket = context.wrap_socket(clientSocket, server_hostname=args.tls_name or serverName)  # TLS
clientSocket.settimeout(5.0)  # for each wait: a silent server cannot hang the client
try:
    clientSocket.connect((serverName, serverPort))  # TLS: and the handshake
    # The prompt only for a person at a terminal, not for a pipe or a file.
    sentence = input('Input lowercase sentence: ' if sys.stdin.isatty() else '')
    clientSocket.sendall(sentence.encode())
    clientSocket.shutdown(SHUT_WR)  # end of the request (TLS: close_notify): the server closes after replying
    modifiedSentence = b''
    while True:
        chunk = clientSocket.recv(65536)
        if not chunk:  # the server's TLS close_notify: that was the whole reply
            break
        modifiedSentence += chunk
except EOFError:
    sys.exit('TLSClient.py: no input: expected one line on stdin')
except gaierror as e:
    sys.exit(f'TLSClient.py: unknown host {serverName}: {e.strerror or e}')
except ConnectionRefusedError:
    sys.exit(f'TLSClient.py: connection refused by {serverName} port {serverPort}')
except TimeoutError:
    sys.exit(f'TLSClient.py: timed out talking to {serverName} port {serverPort}')
except OSError as e:  # TLS: an SSLError is an OSError, with the reason (a wrong CA, a wrong name, ...)
    sys.exit(f'TLSClient.py: {serverName} port {serverPort}: {e}')
finally:
    clientSocket.close()
print('From Server:', modifiedSentence.decode())
