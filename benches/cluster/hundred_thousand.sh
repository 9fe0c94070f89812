#!/bin/bash
# 100,000 clients on six `sse-server --reuse-port --redis` processes behind one port, one
# sse-load command (its workers spread the clients); every published event must reach every
# client. Prints sse-load's JSON, the servers' RSS growth per client and Redis's memory.
B=$(dirname "$0")/../../target/release
T=${TMPDIR:-/tmp}
D=$T/sse-bench-redis100k; rm -rf $D; mkdir -p $D
. "$(dirname "$0")/free_port.sh"
CLIENTS=${CLIENTS:-100000}; PROCS=${PROCS:-6}; PORT=${PORT:-$(free_port)}
redis-server --port 0 --unixsocket $D/r.sock --save '' --appendonly no --dir $D --daemonize no --logfile $D/log >/dev/null 2>&1 &
RP=$!
sleep 0.5
PIDS=""
for p in $(seq $PROCS); do
  $B/sse-server --listen 127.0.0.1:$PORT --reuse-port --interval off --redis redis+unix://$D/r.sock >/dev/null 2>$T/sse-bench-100k-err.$p &
  PIDS="$PIDS $!"
done
for i in $(seq 100); do curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/health | grep -q 200 && break; sleep 0.1; done
rss() { local s=0; for p in $PIDS; do s=$((s + $(awk '/VmRSS/{print $2}' /proc/$p/status))); done; echo $s; }
RSS0=$(rss)
(while true; do rss; sleep 1; done) > $T/sse-bench-100k-rss &
MON=$!
timeout 400 $B/sse-load --url http://127.0.0.1:$PORT/events --clients $CLIENTS --publish-rate 1 --publish-pipeline 1 --events 8 --duration 60s --drain 5s --json
kill $MON
RSS1=$(sort -n $T/sse-bench-100k-rss | tail -1)
echo "servers RSS at start ${RSS0} KiB, peak ${RSS1} KiB: $(( (RSS1 - RSS0) * 1024 / CLIENTS )) B per client"
redis-cli -s $D/r.sock INFO memory | grep -E '^used_memory(_human|_rss_human)?:'
kill $PIDS; wait $PIDS 2>/dev/null
kill $RP
