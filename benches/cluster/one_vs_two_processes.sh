#!/bin/bash
# 19,000 clients on one cluster process vs two sharing the port (--reuse-port), same run.
B=$(dirname "$0")/../../target/release
D=${TMPDIR:-/tmp}/sse-bench-redis3; rm -rf $D; mkdir -p $D
redis-server --port 0 --unixsocket $D/r.sock --save '' --appendonly no --dir $D --daemonize no --logfile $D/log >/dev/null 2>&1 &
RP=$!
sleep 0.5
. "$(dirname "$0")/free_port.sh"
PORT=${PORT:-$(free_port)}
for procs in 1 2; do
  PIDS=""
  for p in $(seq $procs); do
    $B/sse-server --listen 127.0.0.1:$PORT --reuse-port --interval off --redis redis+unix://$D/r.sock > ${TMPDIR:-/tmp}/sse-bench-out.p$p 2>${TMPDIR:-/tmp}/sse-bench-err.p$p &
    PIDS="$PIDS $!"
  done
  sleep 1
  for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/health | grep -q 200 && break; sleep 0.1; done
  echo "== $procs process(es)"
  timeout 120 $B/sse-load --url http://127.0.0.1:$PORT/events --clients 19000 --source-ips 4 --publish-rate 5 --publish-pipeline 1 --duration 10s --json
  for p in $PIDS; do echo "pid $p clients: $(curl -s http://127.0.0.1:$PORT/metrics >/dev/null; grep VmRSS /proc/$p/status)"; done
  kill $PIDS; wait $PIDS 2>/dev/null
done
kill $RP
