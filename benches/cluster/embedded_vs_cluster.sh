#!/bin/bash
# Embedded vs cluster (one node, one Redis on a unix socket), 1,000 clients, same run.
B=$(dirname "$0")/../../target/release
D=${TMPDIR:-/tmp}/sse-bench-redis; rm -rf $D; mkdir -p $D
redis-server --port 0 --unixsocket $D/r.sock --save '' --appendonly no --dir $D --daemonize no --logfile $D/log >/dev/null 2>&1 &
RP=$!
sleep 0.5
for mode in embedded cluster; do
  extra=""; [ $mode = cluster ] && extra="--redis redis+unix://$D/r.sock"
  $B/sse-server --listen 127.0.0.1:0 --interval off $extra > ${TMPDIR:-/tmp}/sse-bench-out.$mode 2>${TMPDIR:-/tmp}/sse-bench-err.$mode &
  SP=$!
  sleep 0.5
  ADDR=$(head -1 ${TMPDIR:-/tmp}/sse-bench-out.$mode | sed 's|listening on http://||')
  for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}' http://$ADDR/health | grep -q 200 && break; sleep 0.1; done
  for rate in ${RATES:-1000}; do
    echo "== $mode rate $rate"
    timeout 60 $B/sse-load --url http://$ADDR/events --clients 1000 --publish-rate $rate --publish-pipeline ${PIPE:-64} --duration 5s --json
  done
  kill $SP; wait $SP 2>/dev/null
done
kill $RP
