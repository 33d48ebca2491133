#!/usr/bin/env python3
"""The upper-case client with its socket calls in Rust: upcase.tcp_request /
upcase.udp_request do connect / send / shutdown / recv / close (TCP) or
sendto / recvfrom with a timeout and retries (UDP) in one call.

usage: rust_client.py [--udp] [-m TEXT] [--timeout SECONDS] [--retries N] [HOST [PORT]] < line
       rust_client.py --tls [--tls-ca PEM] [--tls-name NAME] [--tls-cert PEM --tls-key PEM] ...
       (default: localhost 12000; the options of build/c/tcp_client and udp_client)
"""
import socket
import sys

import upcase
from upcase.cli import parse_client_args

args = parse_client_args('rust_client.py', description=__doc__)
host, port = args.host, args.port
try:
    if args.message is not None:
        sentence = args.message
    else:
        sentence = input('Input lowercase sentence: ' if sys.stdin.isatty() else '')
    if args.udp:
        reply = upcase.udp_request(host, port, sentence, timeout=args.timeout, retries=args.retries)
    else:
        # tls, cafile, server_hostname, ...: the keywords --tls and its options set
        reply = upcase.tcp_request(host, port, sentence, timeout=args.timeout, **args.tls_options())
except EOFError:
    sys.exit('rust_client.py: no input: expected one line on stdin')
except socket.gaierror as e:
    sys.exit(f'rust_client.py: unknown host {host}: {e.strerror or e}')
except ConnectionRefusedError:
    sys.exit(f'rust_client.py: connection refused by {host} port {port}')
except TimeoutError:
    sys.exit(f'rust_client.py: timed out: no reply from {host} port {port}')
except (OSError, ValueError) as e:  # also TLS failures (ssl.SSLError) and bad TLS files
    sys.exit(f'rust_client.py: {host} port {port}: {e}')
print('From Server:', reply)
