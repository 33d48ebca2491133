#!/usr/bin/env python3
"""The upper-case server a Python user would write with asyncio.

TCP: asyncio.start_server with a reader/writer loop per connection (read up
to 64 KiB, write the upper-cased bytes, drain) that closes after the client
half-closes. With --udp: a DatagramProtocol answering each datagram.

usage: asyncio_server.py [--udp] PORT HOST   (PORT may be 0)
"""
import asyncio
import signal
import socket
import sys


async def handle(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()  # EOF: everything read has been written
        await writer.wait_closed()
    except OSError:  # one client's reset is not the server's end
        writer.close()


class UpperProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data.upper(), addr)


async def main(udp, host, port):
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    # Resolve to one address, so that a name like "localhost" binds one socket, one port.
    family, _, _, _, address = socket.getaddrinfo(host, port, socket.AF_UNSPEC, kind, 0, socket.AI_PASSIVE)[0]
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    if udp:
        transport, _ = await loop.create_datagram_endpoint(UpperProtocol, local_addr=address[:2], family=family)
        bound = transport.get_extra_info('sockname')
    else:
        server = await asyncio.start_server(handle, address[0], address[1], family=family, backlog=4096)
        bound = server.sockets[0].getsockname()
    h, p = bound[:2]
    print(f'listening on [{h}]:{p}' if family == socket.AF_INET6 else f'listening on {h}:{p}', flush=True)
    await stopping.wait()
    if udp:
        transport.close()
    else:
        server.close()  # open connections' tasks are cancelled when asyncio.run returns


if __name__ == '__main__':
    args = sys.argv[1:]
    udp = args[:1] == ['--udp']
    if udp:
        args = args[1:]
    if len(args) != 2:
        sys.exit('usage: asyncio_server.py [--udp] PORT HOST')
    asyncio.run(main(udp, args[1], int(args[0])))
