#!/usr/bin/env python3
"""The upper-case client with its socket calls in Rust: upcase.tcp_request /
upcase.udp_request do connect / send / shutdown / recv / close (TCP) or
sendto / recvfrom with a timeout and retries (UDP) in one call.

usage: rust_client.py [--udp] [HOST [PORT]] < line   (default: localhost 12000)
"""
import socket
import sys

import upcase

args = sys.argv[1:]
udp = '--udp' in args
args = [a for a in args if a != '--udp']
try:
    host = args[0] if args else 'localhost'
    port = int(args[1]) if len(args) > 1 else 12000
    if not 1 <= port <= 65535 or len(args) > 2:
        raise ValueError
except ValueError:
    sys.stderr.write('usage: rust_client.py [--udp] [HOST [PORT]] < line   (PORT: 1 to 65535)\n')
    sys.exit(2)

try:
    sentence = input('Input lowercase sentence: ' if sys.stdin.isatty() else '')
    if udp:
        reply = upcase.udp_request(host, port, sentence, timeout=1.0, retries=3)
    else:
        reply = upcase.tcp_request(host, port, sentence, timeout=5.0)
except EOFError:
    sys.exit('rust_client.py: no input: expected one line on stdin')
except socket.gaierror as e:
    sys.exit(f'rust_client.py: unknown host {host}: {e.strerror or e}')
except ConnectionRefusedError:
    sys.exit(f'rust_client.py: connection refused by {host} port {port}')
except TimeoutError:
    sys.exit(f'rust_client.py: timed out: no reply from {host} port {port}')
except OSError as e:
    sys.exit(f'rust_client.py: {host} port {port}: {e}')
print('From Server:', reply)
