# Live `macula node`s on 127.0.0.1 for the scripts that test against them (tests/interop/run,
# tests/metrics/run). Source it after setting `bin` (the macula binary) and `realm`; it makes
# `work` (a temporary directory for the nodes' logs) and stops every node it started, and removes
# `work`, when the script exits.
# shellcheck shell=bash

work="$(mktemp -d)"
pids=()
stop_nodes() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap stop_nodes EXIT

# free_port [tcp|udp]: a port free on 127.0.0.1 now (udp unless told).
free_port() {
    python3 -c 'import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "${1:-udp}"
}

# start_node NAME EXTRA_ARGS...: starts a node, sets node_addr=ID@ADDR once it printed its node id
# (a global, not command substitution: the node's pid must land in this shell's pids).
node_addr=""
start_node() {
    local name=$1
    shift
    local port
    port="$(free_port)"
    "$bin" node --listen "127.0.0.1:$port" --identity "$work/$name.pem" --realm "$realm" "$@" \
        >"$work/$name.log" 2>&1 &
    pids+=("$!")
    local id=""
    for _ in $(seq 1 100); do
        id="$(grep -oE 'node id +[0-9a-f]{64}' "$work/$name.log" 2>/dev/null | grep -oE '[0-9a-f]{64}' | head -n 1 || true)"
        [ -n "$id" ] && break
        sleep 0.1
    done
    if [ -z "$id" ]; then
        echo "node $name did not start:" >&2
        cat "$work/$name.log" >&2
        return 1
    fi
    node_addr="$id@127.0.0.1:$port"
}
