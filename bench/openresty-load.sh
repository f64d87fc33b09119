#!/usr/bin/env bash
# bench/openresty-load.sh — apify.kvs.openresty (nginx cosockets) under load in a real nginx: 2
# workers, 50 concurrent listings, 3000 listings of a 2000-key store against the local emulator,
# with an unrelated location asked every 10 ms; throughput, p50/p99 of listings and of the
# unrelated requests, errors, worker RSS before and after; then the workers' CPU while one
# listing waits on pages of 1 s. Once per mode: the listing in content_by_lua, and in a timer
# (ngx.timer.at).
#
#   bench/openresty-load.sh                  both modes
#   C=20 L=500 bench/openresty-load.sh timer one mode, smaller
# Settings: C (concurrent listings), L (listings), K (keys of the store), PAGE, WORKERS, PARALLEL
# (parallel = n per listing), KEEP=1 (keep the run directory).
# Run it on a quiet machine (`uptime` load below the number of cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
make --no-print-directory build/jit/apify/kvs.so >/dev/null
modes=("$@")
[ ${#modes[@]} -eq 0 ] && modes=(content timer)
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for m in "${modes[@]}"; do lua5.4 bench/openresty-load.lua "$m"; done
