#!/usr/bin/env python3
"""upcase's own server, driven from Python: what the benchmark measures.

upcase.Server(HOST, PORT, transport=..., mode="concurrent").serve_forever():
the Rust epoll server (one loop per core) behind the Python binding.

usage: upcase_py_server.py [--udp] [--threads N] [--defer-accept] PORT HOST   (PORT may be 0)
"""
import signal
import sys

import upcase


def stop(signum, frame):
    raise KeyboardInterrupt  # serve_forever() stops on it, as on Ctrl-C


def main():
    usage = 'usage: upcase_py_server.py [--udp] [--threads N] [--defer-accept] PORT HOST'
    args = sys.argv[1:]
    udp, threads, defer = False, None, False
    while args and args[0].startswith('--'):
        opt = args.pop(0)
        if opt == '--udp':
            udp = True
        elif opt == '--defer-accept':
            defer = True
        elif opt == '--threads' and args:
            threads = int(args.pop(0))
        else:
            sys.exit(usage)
    if len(args) != 2:
        sys.exit(usage)
    port, host = int(args[0]), args[1]
    signal.signal(signal.SIGTERM, stop)
    server = upcase.Server(host, port, transport='udp' if udp else 'tcp', mode='concurrent', threads=threads,
                           defer_accept=defer and not udp)
    h, p = server.address[0], server.port
    try:
        print(f'listening on [{h}]:{p}' if ':' in h else f'listening on {h}:{p}', flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    main()
