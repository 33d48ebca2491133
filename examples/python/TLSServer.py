#!/usr/bin/env python3
"""TLSServer: TCPServer from the slides inside TLS, on upcase's socket and TLS (Rust).

TCPServer.py with the lines Python's ssl module would need (TLSContext for
SSLContext) and no others: its socket wrapped in TLS, every byte on the wire
encrypted. The slide program with `from upcase import *` in place of `from socket import *`,
done properly where the slide is not: it reads until the client half-closes
and answers each chunk as it arrives (not one recv(1024)), sends all of every
reply, sets SO_REUSEADDR so it can be restarted at once on the same port, and
stops cleanly on Ctrl-C (SIGINT) or SIGTERM.

usage: TLSServer.py --tls-cert PEM --tls-key PEM [--tls-client-ca PEM] [PORT [HOST]]
       (default: 12000, '' = all interfaces; --tls-client-ca: require client certificates)
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


args = parse_server_args('TLSServer.py', description=__doc__, protocol='tcp', options=False, tls=True)
serverPort, serverName = args.port, args.host  # '' unless given: every interface

signal.signal(signal.SIGINT, stop)  # also where a shell started us with Ctrl-C ignored
signal.signal(signal.SIGTERM, stop)
try:
    context = TLSContext(PROTOCOL_TLS_SERVER)  # TLS: what this server presents
    context.load_cert_chain(args.tls_cert, args.tls_key)  # TLS: a bad file fails here, naming it
    if args.tls_client_ca:  # TLS: clients must show a certificate these CAs signed
        context.verify_mode = CERT_REQUIRED  # TLS
        context.load_verify_locations(args.tls_client_ca)
    serverSocket = socket(AF_INET6 if ':' in serverName else AF_INET, SOCK_STREAM)
    serverSocket.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
    serverSocket.bind((serverName, serverPort))
    serverSocket.listen(1)
    # TLS: each accepted connection comes wrapped; its handshake runs in its first recv
    serverSocket = context.wrap_socket(serverSocket, server_side=True, do_handshake_on_connect=False)
except (OSError, ValueError) as e:  # TLS: ValueError for a certificate or key file that is not one
    sys.exit(f'TLSServer.py: cannot listen on {addrText((serverName, serverPort))}: {e}')

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
                if not sentence:  # the client's TLS close_notify: all was answered
                    connectionSocket = connectionSocket.unwrap()  # TLS: close_notify back: the reply is whole
                    break
                capitalizedSentence = sentence.upper()  # bytes.upper(): ASCII a-z only
                connectionSocket.sendall(capitalizedSentence)
        except OSError as e:  # this client's trouble (reset, timeout, TLS: an SSLError) is not the server's
            print(f'TLSServer.py: {addrText(addr)}: {e}', file=sys.stderr, flush=True)
        finally:
            connectionSocket.close()
except KeyboardInterrupt:
    pass
finally:
    serverSocket.close()
