#!/bin/bash
# 1,000 clients resuming at once with an id 500 events back: from the node's cache
# (--history 1024) vs from Redis (--history 100: the range is read with XRANGE).
B=$(dirname "$0")/../../target/release
D=${TMPDIR:-/tmp}/sse-bench-redis2; rm -rf $D; mkdir -p $D
redis-server --port 0 --unixsocket $D/r.sock --save '' --appendonly no --dir $D --daemonize no --logfile $D/log >/dev/null 2>&1 &
RP=$!
sleep 0.5
for hist in 1024 100; do
  redis-cli -s $D/r.sock FLUSHALL >/dev/null
  $B/sse-server --listen 127.0.0.1:0 --interval off --history $hist --redis redis+unix://$D/r.sock > ${TMPDIR:-/tmp}/sse-bench-out.r$hist 2>${TMPDIR:-/tmp}/sse-bench-err.r$hist &
  SP=$!
  sleep 0.5
  ADDR=$(head -1 ${TMPDIR:-/tmp}/sse-bench-out.r$hist | sed 's|listening on http://||')
  for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' http://$ADDR/health | grep -q 200 && break; sleep 0.1; done
  FIRST=$(curl -s -d e0 http://$ADDR/publish)
  for i in $(seq 1 499); do curl -s -o /dev/null -d "e$i" http://$ADDR/publish; done
  echo "== history $hist, resume from $FIRST (500 events back)"
  cpu() { awk '{print $14+$15}' /proc/$1/stat; }
  rcpu() { redis-cli -s $D/r.sock INFO cpu | awk -F: '/used_cpu_(sys|user):/{s+=$2} END{printf "%.2f", s}'; }
  C0=$(cpu $SP); R0=$(rcpu); B0=$(curl -s http://$ADDR/metrics | awk '/^sse_bytes_written_total/{print $2}')
  timeout 60 $B/sse-load --url http://$ADDR/events --clients 1000 --rate 0 --header "Last-Event-ID: $FIRST" --duration 3s --drain 1s --json
  C1=$(cpu $SP); R1=$(rcpu); B1=$(curl -s http://$ADDR/metrics | awk '/^sse_bytes_written_total/{print $2}')
  echo "server cpu $((C1-C0)) ticks (1/100 s); redis cpu $R0 -> $R1 s; bytes written $((B1-B0))"
  curl -s http://$ADDR/metrics | grep -E "^sse_bus_range|^sse_frames_written"
  kill $SP; wait $SP 2>/dev/null
done
kill $RP
