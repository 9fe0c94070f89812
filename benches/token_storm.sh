#!/bin/sh
# A reconnect storm of ES256 tokens, with the cache of verified tokens off (--jwt-cache 0) and
# on, in one run: server CPU per reconnect and an open stream's publish→receive latency
# (benches/token_storm.rs does the work; results in benches/README.md).
#
# Settings (environment): STORM_RECONNECTS (10000), STORM_DISTINCT (100,10000: one pair of
# runs per value), STORM_CONCURRENCY (256 reconnecting at a time), STORM_CACHE (10000),
# STORM_RATE (0: --max-stream-rate per run, e.g. 0,500 runs with and without the bound).
set -eu
cd "$(dirname "$0")/.."
exec cargo bench --bench token_storm
