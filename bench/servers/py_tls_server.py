#!/usr/bin/env python3
"""The upper-case server a Python user would write with asyncio and ssl.

An asyncio Protocol per connection drives an ssl.SSLObject over two
ssl.MemoryBIOs: TLS records from the socket go into one, records for the
socket come out of the other. asyncio.start_server(ssl=...) cannot serve
this protocol: its SSL transport drops writes after the client's
close_notify, the client's half-close. Here the server answers everything
before the close_notify, sends its own and closes. Back-pressure: while the
transport's write buffer is above its high-water mark, the connection is
not read from.

usage: py_tls_server.py PORT CERT KEY   (PORT may be 0; binds 127.0.0.1)
Prints "listening on 127.0.0.1:PORT" once ready; SIGTERM or SIGINT exits 0.
"""
import asyncio
import signal
import ssl
import sys

HOST = '127.0.0.1'


class TlsUpper(asyncio.Protocol):
    def __init__(self, context):
        self.context = context

    def connection_made(self, transport):
        self.transport = transport
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.handshaken = False

    def data_received(self, data):
        self.incoming.write(data)
        try:
            self.serve()
        except ssl.SSLError:  # a bad record or an alert: this connection is over
            self.transport.abort()
            return
        self.flush()

    def serve(self):
        if not self.handshaken:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                return
            self.handshaken = True
        while True:
            try:
                data = self.tls.read(65536)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:
                data = b''
            if not data:  # close_notify: everything before it is answered
                self.close()
                return
            self.tls.write(data.upper())  # into a MemoryBIO: takes all of it

    def close(self):
        try:
            self.tls.unwrap()  # our close_notify, into the outgoing BIO
        except ssl.SSLWantReadError:
            pass
        self.flush()
        self.transport.close()  # after the buffered records are sent

    def flush(self):
        if records := self.outgoing.read():
            self.transport.write(records)

    def eof_received(self):
        self.transport.abort()  # TCP end without close_notify: a truncation, not a half-close
        return False

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


async def main(port, cert, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    server = await loop.create_server(lambda: TlsUpper(context), HOST, port, backlog=4096)
    print(f'listening on {HOST}:{server.sockets[0].getsockname()[1]}', flush=True)
    await stopping.wait()
    server.close()


if __name__ == '__main__':
    if len(sys.argv) != 4:
        sys.exit('usage: py_tls_server.py PORT CERT KEY')
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
