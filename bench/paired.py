#!/usr/bin/env python3
"""Server CPU per operation of a few servers in paired slices, alone: the
measurement `make bench` makes after each mode's rounds (`paired()` in
`run.py`), for any servers and as many cycles as wanted.

    .venv/bin/python bench/paired.py MODE SERVER... [--cycles N] [--seconds S] [--load OPTIONS]
                                     [--extra 'NAME=COMMAND']...
    .venv/bin/python bench/paired.py persistent "upcase (1 loop + defer-accept)" "C epoll reference (again)"

The C reference is always the first server; names are those of `run.py`,
and those that `--extra` adds for this run: any command that listens on a
port it prints as "listening on HOST:PORT" (for an A/B of an old build or
an experiment; `{host}` in it is the benchmark's address), measured after
the named servers, in the order given.
Prints, for each server, its median CPU per operation and throughput, and
the median and quartiles of its ratios to the reference, cycle by cycle. Fails if any slice
had an error, a wrong reply or a loss. Needs what `make bench` builds.
"""

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the servers, their commands, the load generator)


def with_load(mode, extra):
    """The load generator options of `mode`'s slices with `extra` (a shell-
    quoted string) after them; ValueError if it does not split."""
    return run.SLICE_LOAD[mode] + shlex.split(extra)


def extra_server(spec, taken):
    """`NAME=COMMAND` -> (name, argv) of a server added for this run, the
    command shell-split with `{host}` filled in; ValueError if it is not
    that, or the name is in `taken`."""
    name, eq, command = spec.partition("=")
    name = name.strip()
    if not eq or not name:
        raise ValueError(f"{spec!r} is not NAME=COMMAND")
    if name in taken:
        raise ValueError(f"{name!r} is taken")
    argv = [a.replace("{host}", run.HOST) for a in shlex.split(command)]
    if not argv:
        raise ValueError(f"{name!r} has no command")
    return name, argv


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=sorted(run.SLICE_LOAD))
    ap.add_argument("servers", nargs="*", help="server names as in bench/run.py")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=COMMAND",
                    help="one more server for this run: a command that prints 'listening on HOST:PORT' "
                         "({host} in it is the address to bind), as in --extra='old=/tmp/old/tcp_server "
                         "--quiet 0 {host}'; may be given more than once")
    ap.add_argument("--cycles", type=int, default=16, help="cycles, at least 2 (default 16; make bench runs 12)")
    ap.add_argument("--load", default="",
                    help="more load generator options, after the mode's own (a later option wins); "
                         "write it with '=', as in --load='--threads 1'")
    ap.add_argument("--seconds", type=float, default=run.PAIRED_SECONDS,
                    help=f"slice length (default {run.PAIRED_SECONDS}; stream slices are 256 MiB each way instead)")
    # Intermixed: server names may come after options too (a plain parse
    # gives the optional positional nothing once it has seen MODE).
    args = ap.parse_intermixed_args()
    if args.cycles < 2 or not 0.1 <= args.seconds <= 30:
        ap.error("--cycles must be at least 2 and --seconds 0.1-30")
    try:
        run.SLICE_LOAD[args.mode] = with_load(args.mode, args.load)
    except ValueError as e:
        ap.error(f"--load: {e}")
    extras = []
    for spec in args.extra:
        try:
            name, argv = extra_server(spec, set(run.SERVERS))
        except ValueError as e:
            ap.error(f"--extra: {e}")
        run.SERVERS[name] = (argv, argv, [args.mode])
        extras.append(name)
    # The reference first, then each named server once, in the order given.
    names = list(dict.fromkeys([run.REFERENCE] + args.servers + extras))
    if len(names) < 2:
        ap.error("name at least one server besides the reference")
    for n in names:
        if n not in run.SERVERS:
            ap.error(f"no server named {n!r}; the names: {'; '.join(run.SERVERS)}")
        if args.mode not in run.SERVERS[n][2]:
            ap.error(f"{n!r} does not run {args.mode}")
    needed = [run.LOADGEN] + [(run.SERVERS[n][1] if args.mode == "udp" else run.SERVERS[n][0])[0] for n in names]
    missing = [x for x in dict.fromkeys(needed) if shutil.which(x) is None]
    if missing:
        sys.exit(f"paired.py: not found or not executable: {', '.join(missing)} "
                 "(`make bench` builds the project's own)")
    try:
        got = run.paired_summary(run.paired(args.mode, names, args.cycles, args.seconds))
    except (RuntimeError, OSError, ValueError, ArithmeticError, subprocess.SubprocessError) as e:
        sys.exit(f"paired.py: {e}")
    unit = run.UNIT[args.mode]
    what = "256 MiB each way" if args.mode == "stream" else f"{args.seconds} s"
    print(f"{args.mode}: {args.cycles} cycles of {what} slices; ratios to the reference: median of the cycles "
          "(quartiles)")
    print(f"load: {shlex.join(['loadgen', args.mode] + run.SLICE_LOAD[args.mode])}")
    print(f"| server | CPU µs/{unit} (median) | CPU ratio | {unit}/s (median) | throughput ratio |")
    print("|---|---:|---:|---:|---:|")
    for n, v in got.items():
        c, r = v["cpu"], v["rate"]
        print(f"| {n} | {c['median']:.2f} | {c['ratio']:.3f}x ({c['q1']:.3f}-{c['q3']:.3f}) | "
              f"{r['median']:,.0f} | {r['ratio']:.3f}x ({r['q1']:.3f}-{r['q3']:.3f}) |")

if __name__ == "__main__":
    main()
