#!/bin/sh
# 19,000 clients against `sse-server --workers 1` and `--workers 2` (one port, a private local
# log) and against nginx + nchan with 1 and 2 worker processes (benches/nchan/nginx.conf),
# the same sse-load command each time: 5 publishes/s for 10 s, publish→receive latency of
# the fan-out. Needs nginx and libnginx-mod-nchan (Debian: apt-get install nginx
# libnginx-mod-nchan). One run of each, one after the other.
set -u
B=${B:-target/release}; CLIENTS=${CLIENTS:-19000}
. benches/cluster/free_port.sh
load() {
  timeout 180 $B/sse-load --url "http://127.0.0.1:$1/events" --clients $CLIENTS --source-ips 4 \
    --publish-rate 5 --publish-pipeline 1 --duration 10s --header 'Accept: text/event-stream' \
    --server-pid "$2" 2>&1 | grep -E 'clients |delivered|latency|result|memory|cpu'
}
for n in 1 2; do
  PORT=$(free_port); OUT=${TMPDIR:-/tmp}/sse-w$n.out
  $B/sse-server --workers $n --listen 127.0.0.1:$PORT --interval off > $OUT 2>/dev/null & S=$!
  for i in $(seq 100); do grep -q listening $OUT && break; sleep 0.1; done
  echo "== sse-server --workers $n"
  load $PORT $S
  kill $S; wait $S
done
for n in 1 2; do
  PORT=$(free_port); DIR=$(mktemp -d); mkdir $DIR/tmp
  sed -e "s/@PORT@/$PORT/" -e "s/@WORKERS@/$n/" benches/nchan/nginx.conf > $DIR/nginx.conf
  nginx -p $DIR -c $DIR/nginx.conf & S=$!
  for i in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/publish" -d warmup && break; sleep 0.1; done
  echo "== nginx + nchan, worker_processes $n"
  load $PORT $S
  kill $S; wait $S; rm -rf $DIR
done
