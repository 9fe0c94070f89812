#!/bin/sh
# 19,000 clients on `sse-server --workers 1` and then `--workers 2` (one port, a private local
# log), 5 publishes/s for 10 s: publish→receive latency of the fan-out, same run.
B=${B:-target/release}
. benches/cluster/free_port.sh
for n in 1 2; do
  PORT=$(free_port)
  $B/sse-server --workers $n --listen 127.0.0.1:$PORT --interval off > ${TMPDIR:-/tmp}/sse-w$n.out 2>/dev/null & S=$!
  for i in $(seq 100); do grep -q listening ${TMPDIR:-/tmp}/sse-w$n.out && break; sleep 0.1; done
  echo "== --workers $n"
  timeout 120 $B/sse-load --url http://127.0.0.1:$PORT/events --clients 19000 --source-ips 4 --publish-rate 5 --publish-pipeline 1 --duration 10s 2>&1 | grep -E 'clients |delivered|latency|result'
  kill $S; wait $S
done
