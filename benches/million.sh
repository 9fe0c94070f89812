#!/bin/sh
# 1,000,000 concurrent clients on one host from two commands: one `sse-server --workers N`
# (N processes on one port sharing a private local log) and one `sse-load`. The open-file
# limit here is 20,000 per process, so N = 52 (about 19,300 clients each); sse-load spreads
# its clients over its own worker processes and, by default, as many loopback source
# addresses as keep each one's ephemeral ports at most an eighth full (254 for 1,000,000):
# `connect` searches one parity of the port range first, so an address past about half full
# costs a scan of thousands of ports per connect (SOURCE_IPS=40 to see it).
# sse-load paces its connects (--rate, 5,000/s by default): 1,000,000 in 90 s needs more.
B=${B:-target/release}; CLIENTS=${CLIENTS:-1000000}; WORKERS=${WORKERS:-52}; RATE=${RATE:-14000}
. benches/cluster/free_port.sh; PORT=${PORT:-$(free_port)}
$B/sse-server --workers $WORKERS --listen 127.0.0.1:$PORT --interval off > ${TMPDIR:-/tmp}/sse-million.out 2>${TMPDIR:-/tmp}/sse-million.err & S=$!
for i in $(seq 600); do grep -q listening ${TMPDIR:-/tmp}/sse-million.out && break; sleep 0.1; done
timeout 600 $B/sse-load --url http://127.0.0.1:$PORT/events --clients $CLIENTS --rate $RATE ${SOURCE_IPS:+--source-ips $SOURCE_IPS} \
  --connect-timeout 120s --publish-rate 1 --publish-pipeline 1 --events 5 --duration 60s --drain 10s --server-pid $S
kill $S; wait $S
