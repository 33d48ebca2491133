#!/usr/bin/env python3
"""The upper-case server a Python user would write with socketserver.

ThreadingTCPServer (a thread per connection) or, with --udp,
ThreadingUDPServer (a thread per datagram), configured as a careful user
would: daemon_threads, allow_reuse_address, request_queue_size 4096, and
max_packet_size raised from 8192 so no datagram the kernel allows is cut.

usage: threading_server.py [--udp] PORT HOST   (PORT may be 0)
"""
import socket
import socketserver
import sys

from exit_on_signal import exit_on_signal


class TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:  # half-close: socketserver then shuts down and closes
                return
            self.request.sendall(data.upper())


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(data.upper(), self.client_address)


class TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096


class UDPServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True
    max_packet_size = 65535


def main():
    args = sys.argv[1:]
    udp = args[:1] == ['--udp']
    if udp:
        args = args[1:]
    if len(args) != 2:
        sys.exit('usage: threading_server.py [--udp] PORT HOST')
    port, host = int(args[0]), args[1]
    kind, server_class, handler = (
        (socket.SOCK_DGRAM, UDPServer, UDPHandler) if udp else (socket.SOCK_STREAM, TCPServer, TCPHandler)
    )
    family, _, _, _, address = socket.getaddrinfo(host, port, socket.AF_UNSPEC, kind, 0, socket.AI_PASSIVE)[0]
    server_class.address_family = family
    # Out at once on SIGTERM or Ctrl-C, without the interpreter's
    # finalization (with handler threads still alive, that once held a stop
    # up past the 1 s check_servers.py allows), and before any handler
    # thread starts: they inherit the blocked signals.
    exit_on_signal()
    with server_class(address, handler) as server:
        h, p = server.server_address[:2]
        print(f'listening on [{h}]:{p}' if family == socket.AF_INET6 else f'listening on {h}:{p}', flush=True)
        server.serve_forever()


if __name__ == '__main__':
    main()
