#!/bin/sh
# 19,000 clients against `sse-server` (one process, in-memory log), `sse-server --workers N` (one port, a private local log) and nginx +
# nchan with N worker processes (benches/nchan/nginx.conf), N = 1 then 2, interleaved so both
# servers see the same machine: the same sse-load command each time (5 publishes/s for 10 s,
# publish→receive latency of the fan-out), and the server's peak resident memory (all its
# processes) above what it held idle. Needs nginx and libnginx-mod-nchan (Debian: apt-get
# install nginx libnginx-mod-nchan).
set -u
B=${B:-target/release}; CLIENTS=${CLIENTS:-19000}
. benches/cluster/free_port.sh
tree_rss_kb() { # resident KiB of a process and its children
  ps -o rss= -p "$1" --ppid "$1" 2>/dev/null | awk '{s += $1} END {print s + 0}'
}
load() { # PORT PID
  idle=$(tree_rss_kb "$2"); peak=$idle
  ( while kill -0 "$2" 2>/dev/null; do tree_rss_kb "$2"; sleep 0.5; done ) > "$TMP/rss" &
  sampler=$!
  timeout 180 $B/sse-load --url "http://127.0.0.1:$1/events" --clients $CLIENTS --source-ips 4 \
    --publish-rate 5 --publish-pipeline 1 --duration 10s --header 'Accept: text/event-stream' \
    2>&1 | grep -E 'clients |delivered|latency|result'
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null
  peak=$(sort -n "$TMP/rss" | tail -1)
  echo "  server memory    idle ${idle} KiB, peak ${peak} KiB: $(( (peak - idle) * 1024 / CLIENTS )) B per client"
}
TMP=$(mktemp -d)
PORT=$(free_port)
$B/sse-server --listen 127.0.0.1:$PORT --interval off > $TMP/sse.out 2>/dev/null & S=$!
for i in $(seq 100); do grep -q listening $TMP/sse.out && break; sleep 0.1; done
echo "== sse-server (one process, the in-memory log)"
load $PORT $S
kill $S; wait $S
for n in 1 2; do
  PORT=$(free_port)
  $B/sse-server --workers $n --listen 127.0.0.1:$PORT --interval off > $TMP/sse.out 2>/dev/null & S=$!
  for i in $(seq 100); do grep -q listening $TMP/sse.out && break; sleep 0.1; done
  echo "== sse-server --workers $n"
  load $PORT $S
  kill $S; wait $S

  PORT=$(free_port); DIR=$TMP/nginx$n; mkdir -p $DIR/tmp
  sed -e "s/@PORT@/$PORT/" -e "s/@WORKERS@/$n/" benches/nchan/nginx.conf > $DIR/nginx.conf
  nginx -p $DIR -c $DIR/nginx.conf & S=$!
  for i in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/publish" -d warmup && break; sleep 0.1; done
  echo "== nginx + nchan, worker_processes $n"
  load $PORT $S
  kill $S; wait $S
done
rm -rf $TMP
