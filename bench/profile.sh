#!/usr/bin/env bash
# Where a server's CPU goes under one load generator mode: the figures
# behind "What bounds the targets" in BENCHMARKS.md.
#
#   bench/profile.sh [--flame FILE.svg] MODE [LOADGEN OPTION...] -- SERVER COMMAND...
#   bench/profile.sh persistent --duration 3 -- build/c/tcp_server --quiet --threads 1 0 127.0.0.1
#   bench/profile.sh --flame udp.svg udp --duration 3 -- build/bench/epoll_server --udp 0 127.0.0.1
#
# The server command must listen on port 0 of a loopback address; its port
# is read from `ss`. Four runs of the same load in stream, three in the
# other modes, one for each measurement, so that none disturbs another:
#  1. server CPU per operation (utime + stime of all its threads, from
#     /proc/PID/stat) and TCP segments per operation (`nstat`, both
#     directions: loopback carries them all);
#  2. system calls per operation (`perf stat` on the syscall tracepoints);
#  3. (stream) loopback's packets by payload size (`perf record -e
#     net:net_dev_xmit -a`): full segments, tails, packets without data;
#  4. a profile (`perf record -e cpu-clock`, the software clock, which works
#     where the hardware counters are not available, as in most VMs): the
#     share of samples in the kernel and in user space, and the top symbols;
#     with --flame, also a flame graph of it (inferno, which is installed
#     into target/tools from crates.io the first time).
# Needs perf (Debian: linux-perf) and root (or perf_event_paranoid -1: the
# stream run records tracepoints on all CPUs).
# Every run is bounded by the load generator's own --duration / --bytes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOADGEN=$ROOT/target/release/loadgen
FLAME=
if [ "${1:-}" = "--flame" ]; then
    case "${2:-}" in
        "" | -*) echo "profile.sh: --flame needs a file name (FILE.svg)" >&2; exit 2 ;;
    esac
    FLAME=$2
    shift 2
fi
[ $# -ge 3 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
MODE=$1
case "$MODE" in
    oneshot | persistent | stream | udp | hold) ;;
    *) echo "profile.sh: no mode $MODE (oneshot, persistent, stream, udp, hold; --flame goes first)" >&2; exit 2 ;;
esac
shift
LARGS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    [ "$1" != "--flame" ] || { echo "profile.sh: --flame goes before the mode" >&2; exit 2; }
    LARGS+=("$1")
    shift
done
[ "${1:-}" = "--" ] || { echo "profile.sh: no -- before the server command" >&2; exit 2; }
shift
[ $# -gt 0 ] || { echo "profile.sh: no server command" >&2; exit 2; }
command -v perf >/dev/null || { echo "profile.sh: perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
[ -x "$LOADGEN" ] || { echo "profile.sh: build the load generator first (make bench, or cargo build --release -p upcase-loadgen)" >&2; exit 2; }
INFERNO=$ROOT/target/tools/bin
if [ -n "$FLAME" ] && [ ! -x "$INFERNO/inferno-flamegraph" ]; then
    echo "profile.sh: installing inferno (flame graphs) into target/tools ..." >&2
    cargo install --quiet --locked --root "$ROOT/target/tools" inferno --version '^0.12' >&2 ||
        { echo "profile.sh: could not install inferno" >&2; exit 2; }
fi

WORK=$(mktemp -d)
export NSTAT_HISTORY=$WORK/nstat   # our own history: another nstat user cannot skew the delta
SPID=
cleanup() {
    if [ -n "$SPID" ]; then kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Starts the server; sets SPID, HOST and PORT (from its listening socket).
start() {
    "$@" >"$WORK/server.out" 2>&1 &
    SPID=$!
    PORT=
    for _ in $(seq 100); do
        local addr
        addr=$(ss -ltnupH -p 2>/dev/null | grep "pid=$SPID," | head -1 | awk '{print $5}') || true
        if [ -n "$addr" ]; then
            PORT=${addr##*:}
            HOST=${addr%:*}
            HOST=${HOST#[}
            HOST=${HOST%]}
            return 0
        fi
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.05
    done
    echo "profile.sh: the server did not start listening:" >&2
    cat "$WORK/server.out" >&2
    exit 1
}
stop() { kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; SPID=; }
# utime + stime; the fields are counted after the ")" that ends the name.
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
# Fails loudly if perf wrote nothing.
recorded() {
    if [ ! -s "$1" ]; then
        echo "profile.sh: perf recorded nothing:" >&2
        cat "$WORK/perf.err" >&2
        exit 1
    fi
}
# The load generator's report: operations, checked for errors. With
# arguments, they are a perf command that runs the load generator as its
# workload (`perf ... --`): perf starts it only once it records, and stops
# with it, where a perf started aside could still be setting up (it scans
# every process first) while a short load goes by unseen.
load() {
    "$@" "$LOADGEN" "$MODE" --host "$HOST" --port "$PORT" "${LARGS[@]}" >"$WORK/report.json" 2>"$WORK/perf.err" ||
        { echo "profile.sh: ${1:+perf or }the load generator failed:" >&2; cat "$WORK/perf.err" >&2; return 1; }
    python3 - "$WORK/report.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
bad = d.get("errors", 0) + d.get("bad_replies", 0) + d.get("lost", 0)
if bad:
    sys.exit(f"profile.sh: the load generator reported {bad} errors / bad replies / losses")
print(d["ops"])
EOF
}

HZ=$(getconf CLK_TCK)
start "$@"
nstat -n >/dev/null
t0=$(ticks "$SPID")
OPS=$(load)
t1=$(ticks "$SPID")
SEGS=$(nstat | awk '$1 == "TcpOutSegs" {print $2}')
stop
python3 - "$OPS" "$((t1 - t0))" "$HZ" "${SEGS:-0}" <<'EOF'
import sys
ops, ticks, hz, segs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"operations: {ops}")
print(f"server CPU: {ticks / hz:.2f} s, {ticks / hz * 1e6 / ops:.2f} us per operation")
print(f"TCP segments (both directions) per operation: {segs / ops:.2f}")
EOF

if [ "$MODE" = stream ]; then
    # The packets on loopback by payload size, both directions (the
    # `net_dev_xmit` tracepoint on all CPUs: run nothing else meanwhile;
    # `tcp:tcp_probe`, which knows the ports, sees the receiver's backlog
    # after it has merged segments). The payload is the length past the
    # smallest packet's (a bare ACK's headers). A full segment is one the
    # size of the largest seen; a tail is one of 1-1023 bytes: a 64 KiB
    # write on loopback's 65,483-byte MSS leaves a 53-byte one (from the
    # server's replies, or the load generator's writes when the kernel
    # takes 64 KiB of them), a 256 KiB write of the load generator a
    # 212-byte one. The handful of handshake packets, whose options are
    # longer, count as tails too.
    start "$@"
    OPS=$(load perf record -q -e net:net_dev_xmit -a -o "$WORK/xmit.data" --)
    recorded "$WORK/xmit.data"
    stop
    perf script -i "$WORK/xmit.data" >"$WORK/xmit.txt" 2>"$WORK/perf.err" ||
        { echo "profile.sh: perf script failed:" >&2; cat "$WORK/perf.err" >&2; exit 1; }
    python3 - "$OPS" "$WORK/xmit.txt" <<'EOF'
import re, sys
ops = int(sys.argv[1])
pat = re.compile(r"dev=lo .*?len=(\d+)")
lens = [int(m.group(1)) for m in map(pat.search, open(sys.argv[2])) if m]
if not lens:
    sys.exit("profile.sh: net_dev_xmit saw no packet on lo")
head = min(lens)
top = max(lens) - head
kinds = {"no data (ACK, FIN)": 0, "full": 0, "tail (1-1023 bytes)": 0, "other": 0}
tails = {}
for n in lens:
    p = n - head
    k = "no data (ACK, FIN)" if p == 0 else "full" if p == top else "tail (1-1023 bytes)" if p < 1024 else "other"
    kinds[k] += 1
    if 0 < p < 1024:
        tails[p] = tails.get(p, 0) + 1
print(f"packets on lo per operation, by payload past a bare ACK (full: {top} bytes):")
for k, v in kinds.items():
    print(f"  {k:<24} {v / ops:10.3f}")
common = sorted(tails.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
print("  tails by size (bytes x packets):", ", ".join(f"{size} x {n}" for size, n in common) or "none")
EOF
fi

start "$@"
EVENTS=$(printf 'syscalls:sys_enter_%s,' accept4 recvfrom sendto recvmsg sendmsg read write recvmmsg \
    sendmmsg epoll_wait epoll_pwait epoll_ctl poll ppoll io_uring_enter shutdown close)
OPS=$(load perf stat -x, -e "${EVENTS%,}" -p "$SPID" -o "$WORK/stat.txt" --)
recorded "$WORK/stat.txt"
stop
echo "system calls per operation ($OPS operations):"
awk -F, -v ops="$OPS" '$3 ~ /syscalls:sys_enter_/ && $1 + 0 > 0 {
    sub("syscalls:sys_enter_", "", $3); printf "  %-11s %8.3f\n", $3, $1 / ops }' "$WORK/stat.txt"

start "$@"
load perf record -q -F 2000 -e cpu-clock -g -p "$SPID" -o "$WORK/perf.data" -- >/dev/null
recorded "$WORK/perf.data"
stop
perf report -q -i "$WORK/perf.data" --no-children --sort dso --stdio -g none >"$WORK/dso.txt" 2>"$WORK/perf.err" ||
    { echo "profile.sh: perf report failed:" >&2; cat "$WORK/perf.err" >&2; exit 1; }
awk 'BEGIN { k = 0; u = 0 } $1 ~ /%$/ { p = $1 + 0; if ($2 ~ /kernel/) k += p; else u += p }
     END { printf "samples in the kernel: %.1f %%, in user space: %.1f %%\n", k, u }' "$WORK/dso.txt"
echo "top symbols (self):"
# (`head` closes the pipe early: not a failure.)
perf report -q -i "$WORK/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | head -15 || true
echo "system calls and other paths, with what they call (children):"
perf report -q -i "$WORK/perf.data" --children --sort sym --stdio -g none 2>/dev/null |
    grep -E '__x64_sys_|net_rx_action|_copy_(to|from)_iter|upper|schedule$' | head -15 || true
if [ -n "$FLAME" ]; then
    # The server command and the load as the title; kernel frames in their
    # own colour. Drawn aside first: a failure leaves no half-written file.
    TITLE="$(basename "$1")${2:+ ${*:2}}: $MODE${LARGS[*]:+ ${LARGS[*]}}"
    perf script -i "$WORK/perf.data" 2>"$WORK/perf.err" | "$INFERNO/inferno-collapse-perf" --all 2>>"$WORK/perf.err" |
        "$INFERNO/inferno-flamegraph" --colors java --minwidth 0.1 --title "$TITLE" >"$WORK/flame.svg" 2>>"$WORK/perf.err" ||
        { echo "profile.sh: the flame graph failed:" >&2; cat "$WORK/perf.err" >&2; exit 1; }
    mv "$WORK/flame.svg" "$FLAME"
    echo "flame graph: $FLAME"
fi
