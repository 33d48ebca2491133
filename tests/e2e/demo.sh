#!/usr/bin/env bash
# The slide exchange, live: the C and the Python TCP and UDP servers on
# 127.0.0.1 (a free port each), a line to each from the C client and from the
# Python client, and what every side printed; then the same line inside TLS,
# C client to C server, with a throwaway CA and certificate made for the run.
# Run from anywhere after `make all` (it is what `make demo` runs); the
# Python side needs the module too (`make python`), and is left out without it.
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

PY=.venv/bin/python
EX=examples/python
CLIENTS=1
if [[ -x $PY ]] && $PY -c 'import upcase' 2>/dev/null; then
    CLIENTS=2
else
    echo "demo: the C programs only (no Python module in $PY: 'make python' builds it)"
fi

# A throwaway CA and a server certificate it signs, for localhost and
# 127.0.0.1, made in $TMP and removed with it: no key outlives the demo.
make_certs() {
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    openssl req -x509 "${ec[@]}" -keyout "$TMP/ca.key" -out "$TMP/ca.pem" -days 1 -subj "/CN=upcase demo CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign &&
    openssl req -new "${ec[@]}" -keyout "$TMP/server.key" -out "$TMP/server.csr" -subj /CN=localhost &&
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$TMP/server.ext" &&
    openssl x509 -req -in "$TMP/server.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" -set_serial 1 -days 1 \
        -extfile "$TMP/server.ext" -out "$TMP/server.pem"
}

# The servers: C and Python (on upcase.socket), TCP and UDP; the C TCP server
# again inside TLS.
declare -A SERVER=(
    [c_tcp]="$BIN/tcp_server 0 127.0.0.1"
    [c_udp]="$BIN/udp_server 0 127.0.0.1"
    [py_tcp]="$PY $EX/TCPServer.py 0 127.0.0.1"
    [py_udp]="$PY $EX/UDPServer.py 0 127.0.0.1"
    [c_tls]="$BIN/tcp_server --tls-cert $TMP/server.pem --tls-key $TMP/server.key 0 127.0.0.1"
)
ORDER=(c_tcp c_udp)
((CLIENTS == 2)) && ORDER+=(py_tcp py_udp)
if ! command -v openssl >/dev/null; then
    echo "demo: no TLS exchange (no openssl command to make a certificate with)"
elif make_certs >"$TMP/openssl.log" 2>&1; then
    ORDER+=(c_tls)
else
    cat "$TMP/openssl.log" >&2
    echo "demo: openssl could not make the demo's certificate" >&2
    exit 1
fi

# 1. The servers: serverSocket = socket(); bind(('127.0.0.1', 0)); "ready to receive"
for name in "${ORDER[@]}"; do
    ${SERVER[$name]} >"$TMP/$name.out" 2>&1 &
    PID[$name]=$!
done
for name in "${ORDER[@]}"; do
    PORT[$name]=$(wait_line "$TMP/$name.out" '^listening on ' | sed 's/.*:\([0-9]*\)$/\1/')
    echo "== server: ${SERVER[$name]}  (pid ${PID[$name]}, port ${PORT[$name]})"
    show "$TMP/$name.out"
done
echo

# 2. Every server gets a line from the C client and from the Python client
#    of its protocol: C and Python talking to each other.
exchange() { # server-name client-command...
    local name=$1
    shift
    echo "== client: echo \"$LINE\" | $* 127.0.0.1 ${PORT[$name]}"
    local reply
    reply=$(echo "$LINE" | timeout 10 "$@" 127.0.0.1 "${PORT[$name]}")
    echo "    sent:     $LINE"
    echo "    received: $reply"
    local expected="From Server: ${LINE^^}"
    [[ $reply == "$expected" ]] || { echo "demo: expected '$expected'" >&2; exit 1; }
}
for name in "${ORDER[@]}"; do
    proto=${name#*_}
    lines_before=$(grep -c ' from ' "$TMP/$name.out" || true)
    clients=$CLIENTS
    if [[ $proto == tls ]]; then
        # TLS: the client checks the server's certificate against the demo's CA.
        exchange "$name" "$BIN/tcp_client" --tls --tls-ca "$TMP/ca.pem"
        clients=1
    else
        exchange "$name" "$BIN/${proto}_client"
        ((CLIENTS == 2)) && exchange "$name" "$PY" "$EX/${proto^^}Client.py"
    fi
    # What the server saw: each client's address and port.
    for _ in $(seq 50); do
        (( $(grep -c ' from ' "$TMP/$name.out" || true) >= lines_before + clients )) && break
        sleep 0.1
    done
    echo "   the server (${SERVER[$name]%% 0 *}) printed:"
    show "$TMP/$name.out"
    echo
done

# 3. Stop them as Ctrl-C would: SIGTERM, then each frees its server and exits 0.
for name in "${ORDER[@]}"; do
    pid=${PID[$name]}
    kill -TERM "$pid"
    gone_within_5s "$pid" || { echo "demo: $name (pid $pid) did not stop within 5 s" >&2; exit 1; }
    rc=0
    wait "$pid" || rc=$?
    unset "PID[$name]"
    echo "== ${SERVER[$name]%% 0 *} stopped by SIGTERM: exit status $rc"
    [[ $rc -eq 0 ]] || exit 1
done
