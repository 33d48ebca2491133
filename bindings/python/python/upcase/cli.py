"""The command lines: ``python -m upcase server|client``, the console scripts
``upcase-server`` and ``upcase-client``, and the argument rules that the
scripts in examples/python share with them.

Clients take ``[HOST [PORT]]``, the order of nc and telnet; servers take
``[PORT [HOST]]``, the order of ``python -m http.server``. The options are
the C programs' (build/c/{tcp,udp}_{server,client}), with ``--udp`` to
choose the protocol. TLS: servers ``--tls-cert PEM --tls-key PEM
[--tls-client-ca PEM] [--tls-handshake-timeout SECONDS]``, clients ``--tls
[--tls-ca PEM] [--tls-name NAME] [--tls-cert PEM --tls-key PEM]``. ``-h`` prints help on stdout and exits 0; a usage error
names the argument at fault on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

import upcase

DEFAULT_PORT = 12000
#: Seconds: what the C programs' uint32_t of milliseconds holds.
MAX_SECONDS = 4_294_967
MAX_COUNT = 4_294_967_295
PROMPT = "Input lowercase sentence: "

_DIGITS = re.compile(r"[0-9]+")
_SECONDS = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")

# Options that only one protocol's server or client has: (option, its protocol).
_SERVER_ONLY = {
    "max_connections": ("--max-connections", "tcp"),
    "max_connections_per_address": ("--max-per-address", "tcp"),
    "idle_timeout": ("--idle-timeout", "tcp"),
    "min_rate": ("--min-rate", "tcp"),
    "defer_accept": ("--defer-accept", "tcp"),
    "io_uring": ("--io-uring", "tcp"),
    "max_datagram": ("--max-datagram", "udp"),
    "tls_cert": ("--tls-cert", "tcp"),
}
_CLIENT_ONLY = {"retries": ("--retries", "udp"), "tls": ("--tls", "tcp")}


@dataclass
class ClientOptions:
    """A client's command line, checked."""

    host: str
    port: int
    udp: bool
    message: Optional[str]
    timeout: float
    retries: int
    tls: bool = False
    tls_ca: Optional[str] = None
    tls_name: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None

    def tls_options(self) -> Dict[str, Any]:
        """The TLS keywords of upcase.tcp_request and upcase.Connection that
        these options set (none without --tls)."""
        if not self.tls:
            return {}
        return {"tls": True, "cafile": self.tls_ca, "server_hostname": self.tls_name,
                "certfile": self.tls_cert, "keyfile": self.tls_key}


@dataclass
class ServerOptions:
    """A server's command line, checked; None leaves the library's default."""

    port: int
    host: str
    udp: bool
    iterative: bool
    quiet: bool
    threads: Optional[int]
    max_connections: Optional[int]
    max_connections_per_address: Optional[int]
    idle_timeout: Optional[int]
    min_rate: Optional[int]
    defer_accept: bool
    io_uring: bool
    max_datagram: Optional[int]
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_client_ca: Optional[str] = None
    tls_handshake_timeout: Optional[float] = None

    def server_options(self) -> Dict[str, Any]:
        """The keyword arguments of upcase.Server that these options set."""
        kw: Dict[str, Any] = {
            "transport": "udp" if self.udp else "tcp",
            "mode": "iterative" if self.iterative else "concurrent",
            "defer_accept": self.defer_accept,
            "io_uring": self.io_uring,
        }
        if self.threads:  # 0: one per CPU, which is upcase.Server's None
            kw["threads"] = self.threads
        if self.idle_timeout is not None:
            kw["idle_timeout"] = float(self.idle_timeout) or None  # 0: never
        for name in ("max_connections", "max_connections_per_address", "min_rate", "max_datagram"):
            if getattr(self, name) is not None:
                kw[name] = getattr(self, name)
        if self.tls_cert is not None:
            kw.update(certfile=self.tls_cert, keyfile=self.tls_key, client_cafile=self.tls_client_ca)
            if self.tls_handshake_timeout is not None:
                kw["tls_handshake_timeout"] = self.tls_handshake_timeout
        return kw


# ---------------------------------------------------------------- argument types


def _port(low: int) -> Callable[[str], int]:
    def port(text: str) -> int:
        if _DIGITS.fullmatch(text) and low <= int(text) <= 65535:
            return int(text)
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from {low} to 65535")

    return port


def _host(order: str) -> Callable[[str], str]:
    def host(text: str) -> str:
        if _DIGITS.fullmatch(text):
            raise argparse.ArgumentTypeError(
                f"{text!r} is only digits: give a name or an address such as 127.0.0.1 ({order})"
            )
        return text

    return host


def _count(low: int, high: int, what: str) -> Callable[[str], int]:
    def count(text: str) -> int:
        if _DIGITS.fullmatch(text) and low <= int(text) <= high:
            return int(text)
        raise argparse.ArgumentTypeError(f"{text!r}: give {what}")

    return count


def _seconds(text: str) -> float:
    if _SECONDS.fullmatch(text) and 0 < float(text) <= MAX_SECONDS:
        return float(text)
    raise argparse.ArgumentTypeError(f"{text!r}: give seconds, more than 0, at most {MAX_SECONDS}")


# ---------------------------------------------------------------- parsers


def _parser(prog: str, usage: str, description: Optional[str], epilog: str) -> argparse.ArgumentParser:
    # The first paragraph of a script's docstring describes it.
    first = (description or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=usage,
        description=first or None,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (upcase) {upcase.__version__}",
                        help="print the library's version and exit")
    return parser


def _one_protocol(parser: argparse.ArgumentParser, ns: argparse.Namespace, udp: bool,
                  only: Dict[str, Tuple[str, str]]) -> None:
    """A usage error for an option of the other protocol."""
    for name, (option, proto) in only.items():
        given = getattr(ns, name, None)
        if given is None or given is False or (proto == "udp") == udp:
            continue
        parser.error(f"{option} is for UDP (add --udp)" if proto == "udp" else f"{option} is for TCP, not --udp")


def _pem(text: str) -> str:
    if text:
        return text
    raise argparse.ArgumentTypeError("give a PEM file")


def _tls_pairs(parser: argparse.ArgumentParser, ns: argparse.Namespace, needs: Optional[str],
               after: Sequence[Tuple[str, str]]) -> None:
    """Usage errors: --tls-cert without --tls-key or the other way round,
    and the options in ``after`` without the option ``needs``."""
    cert, key = getattr(ns, "tls_cert", None), getattr(ns, "tls_key", None)
    if cert is not None and key is None:
        parser.error("--tls-cert needs --tls-key: the certificate's private key (PEM)")
    if key is not None and cert is None:
        parser.error("--tls-key needs --tls-cert: the certificate chain (PEM)")
    if needs is not None:
        for name, option in after:
            if getattr(ns, name, None) is not None:
                parser.error(f"{option} needs {needs}")


def parse_client_args(prog: str, argv: Optional[Sequence[str]] = None, *, description: Optional[str] = None,
                      protocol: Optional[str] = None, options: bool = True, tls: bool = False) -> ClientOptions:
    """A client's ``[options] [HOST [PORT]]``. ``protocol`` "tcp" or "udp"
    fixes it; None offers ``--udp``. ``options=False``: only HOST and PORT
    (the slide programs). ``tls=True``: always TLS, with the TLS options
    but no ``--tls`` (the TLS slide programs)."""
    opts = "[options] " if options or tls else "[-h] [--version] "
    parser = _parser(
        prog, f"%(prog)s {opts}[HOST [PORT]]", description,
        f"HOST comes first, then PORT, the order nc and telnet take them (default:\n"
        f"localhost {DEFAULT_PORT}). A HOST of digits only is refused: it would be read as an\n"
        f"IPv4 number.",
    )
    parser.add_argument("host", metavar="HOST", nargs="?", default="localhost",
                        type=_host("HOST comes before PORT"), help="the server (default: localhost)")
    parser.add_argument("port", metavar="PORT", nargs="?", default=DEFAULT_PORT, type=_port(1),
                        help=f"its port, 1 to 65535 (default: {DEFAULT_PORT})")
    if options:
        if protocol is None:
            parser.add_argument("--udp", action="store_true", help="UDP instead of TCP")
        parser.add_argument("-m", "--message", metavar="TEXT", help="send TEXT instead of reading stdin")
        parser.add_argument("--timeout", metavar="SECONDS", type=_seconds,
                            help="bound on each wait (default: 5 for TCP, 1 for each UDP try)")
        if protocol != "tcp":
            parser.add_argument("--retries", metavar="N", type=_count(0, MAX_COUNT, f"a number from 0 to {MAX_COUNT}"),
                                help="UDP: send again at most N times (default: 3)")
        if protocol != "udp" and not tls:
            parser.add_argument("--tls", action="store_true", default=None, help="TCP: inside TLS")
    if tls or (options and protocol != "udp"):
        add = parser.add_argument
        add("--tls-ca", metavar="PEM", type=_pem,
            help="TLS: the CAs that sign the server's certificate (default: the system's)")
        add("--tls-name", metavar="NAME", help="TLS: the name the server's certificate must have (default: HOST)")
        add("--tls-cert", metavar="PEM", type=_pem, help="TLS: a client certificate chain, for a server that asks")
        add("--tls-key", metavar="PEM", type=_pem, help="TLS: the client certificate's private key")
    ns = parser.parse_args(argv)
    udp = protocol == "udp" or bool(getattr(ns, "udp", False))
    _one_protocol(parser, ns, udp, _CLIENT_ONLY)
    on = tls or bool(getattr(ns, "tls", False))
    _tls_pairs(parser, ns, None if on else "--tls",
               [("tls_ca", "--tls-ca"), ("tls_name", "--tls-name"), ("tls_cert", "--tls-cert")])
    timeout = getattr(ns, "timeout", None)
    retries = getattr(ns, "retries", None)
    return ClientOptions(
        host=ns.host,
        port=ns.port,
        udp=udp,
        message=getattr(ns, "message", None),
        timeout=timeout if timeout is not None else (1.0 if udp else 5.0),
        retries=retries if retries is not None else 3,
        tls=on,
        tls_ca=getattr(ns, "tls_ca", None),
        tls_name=getattr(ns, "tls_name", None),
        tls_cert=getattr(ns, "tls_cert", None),
        tls_key=getattr(ns, "tls_key", None),
    )


def parse_server_args(prog: str, argv: Optional[Sequence[str]] = None, *, description: Optional[str] = None,
                      protocol: Optional[str] = None, options: bool = True, tls: bool = False) -> ServerOptions:
    """A server's ``[options] [PORT [HOST]]``; ``protocol`` and ``options``
    as for parse_client_args. HOST defaults to '' (every interface).
    ``tls=True``: --tls-cert and --tls-key are required (the TLS slide
    programs)."""
    opts = "[options] " if options or tls else "[-h] [--version] "
    parser = _parser(
        prog, f"%(prog)s {opts}[PORT [HOST]]", description,
        f"PORT comes first, then HOST, the order python -m http.server takes them\n"
        f"(default: {DEFAULT_PORT} on every interface; PORT 0 picks a free port). A HOST of\n"
        f"digits only is refused: it would be read as an IPv4 number.",
    )
    parser.add_argument("port", metavar="PORT", nargs="?", default=DEFAULT_PORT, type=_port(0),
                        help=f"0 to 65535 (default: {DEFAULT_PORT})")
    parser.add_argument("host", metavar="HOST", nargs="?", default="", type=_host("PORT comes before HOST"),
                        help="the address to listen on (default: every interface)")
    if options:
        add = parser.add_argument
        if protocol is None:
            add("--udp", action="store_true", help="UDP instead of TCP")
        add("--iterative", action="store_true", help="one client at a time, as the slides' loop")
        add("--quiet", action="store_true", help="no line per client")
        add("--threads", metavar="N", type=_count(0, 1024, "a number from 0 (one per CPU) to 1024"),
            help="event loops: 0 (one per CPU, the default) to 1024")
        if protocol != "udp":
            add("--max-connections", metavar="N", type=_count(1, MAX_COUNT, f"a number from 1 to {MAX_COUNT}"),
                help="TCP: clients at once (default: 16384)")
            add("--max-per-address", metavar="N", dest="max_connections_per_address",
                type=_count(0, MAX_COUNT, f"a number from 0 (no limit) to {MAX_COUNT}"),
                help="TCP: clients at once from one address (IPv6: one /64), 0: no limit (default: 1024)")
            add("--idle-timeout", metavar="SECONDS", type=_count(0, MAX_SECONDS, f"seconds, 0 (never) to {MAX_SECONDS}"),
                help="TCP: close a silent client after SECONDS, 0: never (default: 60)")
            add("--min-rate", metavar="BYTES",
                type=_count(0, 1_000_000_000, "bytes per second, 0 (off) to 1000000000"),
                help="TCP: least bytes/s a client must send, 0: off (default: 1)")
            add("--defer-accept", action="store_true", help="TCP: accept a connection once its first bytes arrive")
            add("--io-uring", action="store_true", help="TCP: serve on io_uring instead of epoll (Linux 6.1+)")
        if protocol != "tcp":
            add("--max-datagram", metavar="BYTES", type=_count(1, 65527, "bytes, 1 to 65527"),
                help="UDP: largest datagram answered (default: 65527)")
    if tls or (options and protocol != "udp"):
        add = parser.add_argument
        add("--tls-cert", metavar="PEM", type=_pem, help="TLS: the server's certificate chain, leaf first")
        add("--tls-key", metavar="PEM", type=_pem, help="TLS: its private key (PKCS#8, SEC1 or RSA)")
        add("--tls-client-ca", metavar="PEM", type=_pem,
            help="TLS: require client certificates signed by these CAs")
        if options:
            add("--tls-handshake-timeout", metavar="SECONDS", type=_seconds,
                help="TLS: close a client whose handshake is not done after SECONDS (default: 10)")
    ns = parser.parse_args(argv)
    udp = protocol == "udp" or bool(getattr(ns, "udp", False))
    _one_protocol(parser, ns, udp, _SERVER_ONLY)
    if tls and getattr(ns, "tls_cert", None) is None and getattr(ns, "tls_key", None) is None:
        parser.error("--tls-cert and --tls-key are needed: the certificate chain and its key (PEM)")
    _tls_pairs(parser, ns, "--tls-cert and --tls-key",
               [("tls_client_ca", "--tls-client-ca"), ("tls_handshake_timeout", "--tls-handshake-timeout")]
               if getattr(ns, "tls_cert", None) is None else [])
    if getattr(ns, "tls_cert", None) is not None and getattr(ns, "io_uring", False):
        parser.error("--tls-cert: the io_uring loop does not serve TLS (leave out --io-uring)")
    return ServerOptions(
        port=ns.port,
        host=ns.host,
        udp=udp,
        iterative=bool(getattr(ns, "iterative", False)),
        quiet=bool(getattr(ns, "quiet", False)),
        threads=getattr(ns, "threads", None),
        max_connections=getattr(ns, "max_connections", None),
        max_connections_per_address=getattr(ns, "max_connections_per_address", None),
        idle_timeout=getattr(ns, "idle_timeout", None),
        min_rate=getattr(ns, "min_rate", None),
        defer_accept=bool(getattr(ns, "defer_accept", False)),
        io_uring=bool(getattr(ns, "io_uring", False)),
        max_datagram=getattr(ns, "max_datagram", None),
        tls_cert=getattr(ns, "tls_cert", None),
        tls_key=getattr(ns, "tls_key", None),
        tls_client_ca=getattr(ns, "tls_client_ca", None),
        tls_handshake_timeout=getattr(ns, "tls_handshake_timeout", None),
    )


# ---------------------------------------------------------------- running


def addr_text(host: str, port: int) -> str:
    """host:port, or [host]:port for IPv6."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _interrupt(signum: int, frame: Optional[FrameType]) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM ends a server as Ctrl-C does


def run_server(options: ServerOptions, prog: str) -> int:
    """Serves until Ctrl-C (SIGINT) or SIGTERM; 0 then, 1 if it cannot bind."""
    word = "datagram" if options.udp else "connection"

    def on_client(host: str, port: int) -> None:
        print(word, "from", addr_text(host, port), flush=True)

    signal.signal(signal.SIGINT, _interrupt)  # also where a shell started us with Ctrl-C ignored
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server = upcase.Server(options.host, options.port, on_client=None if options.quiet else on_client,
                               **options.server_options())
    except (OSError, ValueError) as e:
        what = "cannot serve TLS on" if options.tls_cert is not None else "cannot bind"
        print(f"{prog}: {what} {addr_text(options.host, options.port)}: {e}", file=sys.stderr)
        return 1
    try:  # from here on, a signal is a clean stop
        print("The server is ready to receive", flush=True)
        print("listening on", addr_text(*server.address), flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _lines(stdin: BinaryIO) -> Iterator[bytes]:
    """Each line of stdin without its newline; a prompt first at a terminal."""
    tty = stdin.isatty()
    while True:
        if tty:
            sys.stdout.write(PROMPT)
            sys.stdout.flush()
        line = stdin.readline()
        if not line:
            if tty:
                sys.stdout.write("\n")  # Ctrl-D at the prompt: the shell's prompt on a line of its own
            return
        yield line[:-1] if line.endswith(b"\n") else line


def run_client(options: ClientOptions, prog: str, stdin: Optional[BinaryIO] = None) -> int:
    """Sends the message, or each line of stdin (TCP: over one kept-open
    connection), and prints each reply as ``From Server: ...``. 0, or 1 on a
    failure, said on stderr."""
    host, port = options.host, options.port
    if options.message is not None:
        messages: Iterator[bytes] = iter([os.fsencode(options.message)])
    else:
        messages = _lines(stdin if stdin is not None else sys.stdin.buffer)
    out = sys.stdout.buffer
    conn: Optional[upcase.Connection] = None
    sent = 0
    try:
        for data in messages:
            if options.udp:
                reply = upcase.udp_request(host, port, data, timeout=options.timeout, retries=options.retries)
            else:
                if conn is not None:
                    try:
                        reply = conn.request(data)
                    except ConnectionError:
                        # The server closed the kept connection (its idle
                        # timeout while stdin was quiet): once more on a new one.
                        conn.close()
                        conn = None
                if conn is None:
                    conn = upcase.Connection(host, port, timeout=options.timeout, **options.tls_options())
                    reply = conn.request(data)
            out.write(b"From Server: " + reply + b"\n")
            out.flush()
            sent += 1
    except socket.gaierror as e:
        return _fail(prog, f"unknown host {host}: {e.strerror or e}")
    except ConnectionRefusedError:
        return _fail(prog, f"connection refused by {host} port {port}")
    except TimeoutError:
        return _fail(prog, f"timed out: no reply from {host} port {port}")
    except (OSError, ValueError) as e:  # TLS failures too (ssl.SSLError), and bad TLS files
        return _fail(prog, f"{host} port {port}: {e}")
    except KeyboardInterrupt:
        return 130
    finally:
        if conn is not None:
            conn.close()
    if sent == 0:
        return _fail(prog, "no input: expected a line on stdin")
    return 0


def _fail(prog: str, why: str) -> int:
    print(f"{prog}: {why}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------- entry points

_DESCRIPTION = {
    "server": "The upper-case server, its loop in Rust (upcase.Server): concurrent on an\n"
              "event loop per core, or one client at a time with --iterative. One line per\n"
              "client; Ctrl-C (SIGINT) or SIGTERM stops it. TLS with --tls-cert and --tls-key.",
    "client": "The upper-case client, in Rust (upcase.Connection / upcase.udp_request):\n"
              "sends each line of stdin, or -m TEXT, and prints each reply. --tls: inside TLS.",
}


def server_main(argv: Optional[Sequence[str]] = None, prog: str = "upcase-server") -> int:
    """``upcase-server [options] [PORT [HOST]]``."""
    return run_server(parse_server_args(prog, argv, description=_DESCRIPTION["server"]), prog)


def client_main(argv: Optional[Sequence[str]] = None, prog: str = "upcase-client") -> int:
    """``upcase-client [options] [HOST [PORT]]``."""
    return run_client(parse_client_args(prog, argv, description=_DESCRIPTION["client"]), prog)


USAGE = """\
usage: python -m upcase server [options] [PORT [HOST]]
       python -m upcase client [options] [HOST [PORT]]
"""

HELP = f"""\
{USAGE}
The upper-case server and client of upcase, run in Rust. TCP by default,
UDP with --udp; TLS with --tls-cert/--tls-key (server) and --tls (client). Servers take PORT then HOST (as python -m http.server does),
clients HOST then PORT (as nc and telnet do).

  python -m upcase server --help     the server's options
  python -m upcase client --help     the client's options
  python -m upcase --version         the library's version

Installed, the same programs are upcase-server and upcase-client.
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m upcase server|client ...``."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    prog = "python -m upcase"
    if args and args[0] in ("-h", "--help"):
        sys.stdout.write(HELP)
        return 0
    if args and args[0] == "--version":
        print(f"{prog} (upcase) {upcase.__version__}")
        return 0
    if args and args[0] == "server":
        return server_main(args[1:], f"{prog} server")
    if args and args[0] == "client":
        return client_main(args[1:], f"{prog} client")
    why = f"unknown command {args[0]!r}" if args else "a command is needed: server or client"
    sys.stderr.write(f"{prog}: {why}\n{USAGE}")
    return 2
