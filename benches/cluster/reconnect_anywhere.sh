#!/bin/bash
# Clients that drop their stream every ~2 s and resume with Last-Event-ID through a port
# shared by two `--reuse-port --redis` processes (the kernel picks the process, so a resume
# often lands on the other one); every event must still arrive once, in order.
B=$(dirname "$0")/../../target/release
T=${TMPDIR:-/tmp}
D=$T/sse-bench-redis-rc; rm -rf $D; mkdir -p $D
. "$(dirname "$0")/free_port.sh"
PORT=${PORT:-$(free_port)}
redis-server --port 0 --unixsocket $D/r.sock --save '' --appendonly no --dir $D --daemonize no --logfile $D/log >/dev/null 2>&1 &
RP=$!
sleep 0.5
PIDS=""
for p in 1 2; do
  $B/sse-server --listen 127.0.0.1:$PORT --reuse-port --interval off --redis redis+unix://$D/r.sock >/dev/null 2>$T/sse-bench-rc-err.$p &
  PIDS="$PIDS $!"
done
for i in $(seq 100); do curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/health | grep -q 200 && break; sleep 0.1; done
timeout 120 $B/sse-load --url http://127.0.0.1:$PORT/events --clients ${CLIENTS:-2000} --publish-rate 50 --publish-pipeline 1 --reconnect-every 2s --duration 10s --drain 5s --json
for p in $PIDS; do curl -s http://127.0.0.1:$PORT/metrics >/dev/null; done
kill $PIDS; wait $PIDS 2>/dev/null
kill $RP
