#!/bin/sh
# Deliveries/s and publish→receive latency at 1,000 clients and 2,000 events/s: the memory log
# against the durable local log (--durability sync, then batch), same run.
B=${B:-target/release}; D=$(mktemp -d); PORT=${PORT:-29300}
for mode in memory sync batch; do
  case $mode in
    memory) ARGS="";;
    *) rm -rf $D/log; ARGS="--data-dir $D/log --durability $mode";;
  esac
  $B/sse-server --listen 127.0.0.1:$PORT --interval off $ARGS >/dev/null 2>$D/err.$mode & P=$!
  for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:$PORT/health && break; sleep 0.1; done
  echo "== $mode"
  $B/sse-load --url http://127.0.0.1:$PORT/events --clients 1000 --publish-rate 2000 --duration 10s --server-pid $P 2>&1 | tail -n 12
  kill $P; wait $P
done
rm -rf $D
