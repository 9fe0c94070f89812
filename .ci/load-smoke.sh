#!/usr/bin/env bash
# Load smoke test: a release server with 500 clients (over two sse-load worker processes) must
# deliver 3 ticks to every one of them.
# Starts the server on a free loopback port, runs sse-load, stops the server by its PID.
# Exit 0 only when sse-load reports every tick reached every client.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh

cargo build --release --quiet --bins

out=$(mktemp)
trap 'rm -f "$out"' EXIT
./target/release/sse-server --listen 127.0.0.1:0 --interval 500ms >"$out" 2>/dev/null &
server=$!
stop() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$out"; }
trap stop EXIT

addr=$(listening_addr "$out")
if [ -z "$addr" ]; then
    echo "load-smoke: the server did not start" >&2
    exit 1
fi

status=0
report=$(./target/release/sse-load --url "http://$addr/events" --clients 500 --workers 2 --source-ips 4 \
    --events 3 --duration 10s --json) || status=$?
echo "$report"
if [ "$status" -ne 0 ] || ! grep -q '"all_delivered":true' <<<"$report"; then
    echo "load-smoke: FAILED: not every tick reached every client (sse-load exit $status)" >&2
    exit 1
fi
echo "load-smoke: OK: 3 ticks reached all 500 clients"
