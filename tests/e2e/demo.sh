#!/usr/bin/env bash
# The slide exchange, live: the C TCP and UDP servers on 127.0.0.1 (a free
# port each), one client line to each, and what every side printed.
# Run from anywhere after `make all` (it is what `make demo` runs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN=build/c
LINE="hello from the slides"
for prog in tcp_server tcp_client udp_server udp_client; do
    [[ -x $BIN/$prog ]] || { echo "demo: $BIN/$prog is missing: run 'make all' first" >&2; exit 1; }
done

TMP=$(mktemp -d)
declare -A PID PORT

# True once process $1 has gone, waiting at most 5 s.
gone_within_5s() {
    local i
    for i in $(seq 50); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# On any exit: stop the servers still running (only ours, by PID), then tidy up.
cleanup() {
    local pid
    for pid in "${PID[@]}"; do
        if kill -TERM "$pid" 2>/dev/null && ! gone_within_5s "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

# Prints the first line matching $2 in file $1, waiting at most 5 s for it.
wait_line() {
    local i
    for i in $(seq 50); do
        grep -m1 -E "$2" "$1" && return 0
        sleep 0.1
    done
    echo "demo: no line matching '$2' in $1 after 5 s:" >&2
    cat "$1" >&2
    return 1
}

show() { sed 's/^/    | /' "$1"; }

# 1. The servers: serverSocket = socket(); bind(('127.0.0.1', 0)); "ready to receive"
for proto in tcp udp; do
    "$BIN/${proto}_server" 0 127.0.0.1 >"$TMP/$proto.out" 2>&1 &
    PID[$proto]=$!
done
for proto in tcp udp; do
    PORT[$proto]=$(wait_line "$TMP/$proto.out" '^listening on ' | sed 's/.*:\([0-9]*\)$/\1/')
    echo "== ${proto^^} server: $BIN/${proto}_server 0 127.0.0.1  (pid ${PID[$proto]}, port ${PORT[$proto]})"
    show "$TMP/$proto.out"
done
echo

# 2. One client each: a line in, the upper-cased line back.
for proto in tcp udp; do
    echo "== ${proto^^} client: echo \"$LINE\" | $BIN/${proto}_client 127.0.0.1 ${PORT[$proto]}"
    reply=$(echo "$LINE" | timeout 10 "$BIN/${proto}_client" 127.0.0.1 "${PORT[$proto]}")
    echo "    sent:     $LINE"
    echo "    received: $reply"
    expected="From Server: ${LINE^^}"
    [[ $reply == "$expected" ]] || { echo "demo: expected '$expected'" >&2; exit 1; }
    # What the server saw: the client's address and port.
    wait_line "$TMP/$proto.out" ' from ' >/dev/null
    echo "   ${proto}_server printed:"
    show "$TMP/$proto.out"
    echo
done

# 3. Stop them as Ctrl-C would: SIGTERM, then each frees its server and exits 0.
for proto in tcp udp; do
    pid=${PID[$proto]}
    kill -TERM "$pid"
    gone_within_5s "$pid" || { echo "demo: ${proto}_server (pid $pid) did not stop within 5 s" >&2; exit 1; }
    rc=0
    wait "$pid" || rc=$?
    unset "PID[$proto]"
    echo "== ${proto}_server stopped by SIGTERM: exit status $rc"
    [[ $rc -eq 0 ]] || exit 1
done
