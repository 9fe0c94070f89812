#!/bin/bash
# How far a busy node's applied offset trails the heads it learns (its own publishes'
# answers come before its tail shows them): sse_bus_unapplied_seconds sampled every 20 ms
# under sse-load (1,000 clients, publishes through the node), and how often /health said
# 503. Then an idle node's CPU with its head probes (one every half bound while the tail is
# quiet). One node, one Redis on a unix socket; build first with `cargo build --release`.
B=$(dirname "$0")/../../target/release
T=${TMPDIR:-/tmp}
D=$T/sse-bench-redis-lag; rm -rf $D; mkdir -p $D
redis-server --port 0 --unixsocket $D/r.sock --save '' --appendonly no --dir $D --daemonize no --logfile $D/log >/dev/null 2>&1 &
RP=$!
sleep 0.5
start() { # $1: extra flags; sets SP and ADDR
  $B/sse-server --listen 127.0.0.1:0 --interval off --redis redis+unix://$D/r.sock $1 > $T/sse-bench-out.lag 2>$T/sse-bench-err.lag &
  SP=$!
  sleep 0.5
  ADDR=$(head -1 $T/sse-bench-out.lag | sed 's|listening on http://||')
  for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' http://$ADDR/health | grep -q 200 && break; sleep 0.1; done
}
for rate in ${RATES:-1000 5000 20000}; do
  start "--health-apply-bound ${BOUND:-5s}"
  echo "== publish rate $rate/s, bound ${BOUND:-5s}"
  timeout 60 $B/sse-load --url http://$ADDR/events --clients 1000 --publish-rate $rate --publish-pipeline 64 --duration 10s > $T/sse-bench-load.lag 2>&1 &
  LP=$!
  : > $T/sse-bench-samples.lag
  while kill -0 $LP 2>/dev/null; do
    curl -s http://$ADDR/metrics | awk '/^sse_bus_unapplied_seconds /{printf "%s ", $2} /^sse_bus_lag_events /{print $2}' >> $T/sse-bench-samples.lag
    curl -s -o /dev/null -w '%{http_code}\n' http://$ADDR/health >> $T/sse-bench-health.lag
    sleep 0.02
  done
  grep -E "deliveries|published|latency|p99" $T/sse-bench-load.lag | head -5
  awk '{n++; if ($1>m) m=$1; if ($2>l) l=$2; s+=$1} END{printf "samples %d, unapplied seconds: max %.3f mean %.4f; lag events max %d\n", n, m, s/n, l}' $T/sse-bench-samples.lag
  echo "health answers: $(sort $T/sse-bench-health.lag | uniq -c | tr '\n' ' ')"
  rm -f $T/sse-bench-health.lag
  curl -s http://$ADDR/metrics | grep -E "^sse_bus_(apply_stalled|head_probes_total|publish_seconds_count) "
  kill $SP; wait $SP 2>/dev/null
done
echo "== idle for 60 s, default bound"
start ""
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
C0=$(cpu $SP); sleep 60; C1=$(cpu $SP)
echo "server cpu $((C1-C0)) ticks (1/100 s) in 60 s; $(curl -s http://$ADDR/metrics | grep '^sse_bus_head_probes_total')"
kill $SP; wait $SP 2>/dev/null
kill $RP
