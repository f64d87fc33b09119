#!/usr/bin/env bash
# bench/jit.sh — apify.kvs on LuaJIT against Lua 5.4 and against the
# luasocket + lua-cjson loop under LuaJIT, with and without urls, for
# store:keys{} (wall) and job:poll (CPU a key), in one interleaved run of
# bench/run.sh; then the JIT's trace log of one LuaJIT listing.
#
#   bench/jit.sh              N=1000000, R=5
#   N=20000 R=1 bench/jit.sh  quick
#
# Prints the table (also written to bench/results-jit-<N>.md) with, per pair,
# the median of the per-round ratios, and from the -jv log: traces made, trace
# aborts, and whether any trace falls back to the interpreter.  Then the rows
# that hold a 64 MB heap while listing, at N_HEAP keys (100000: on Lua 5.1 with
# urls, 1,000,000 keys took over 300 s), into bench/results-jit-heap-<N_HEAP>.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/.."
N=${N:-1000000}
R=${R:-5}
N_HEAP=${N_HEAP:-100000}
export N R
export RESULTS=${RESULTS:-$HERE/results-jit-$N.md}
export PEERS='^kvs (\(lua5\.4\)|\(luajit\)|urls=false \(lua5\.4\)|urls=false \(luajit\)|C iterators \(luajit\)|job \(lua5\.4\)|job \(luajit\)|job C iterators \(luajit\)|-jv log \(luajit\)|job -jv log \(luajit\))$|^luasocket\+cjson \(luajit\)$|^kvs (urls=false )?\(lua5\.1\)$'
export RATIOS='kvs (lua5.4)/kvs (luajit);luasocket+cjson (luajit)/kvs (luajit);kvs C iterators (luajit)/kvs (luajit);kvs (luajit)/kvs urls=false (luajit);kvs (lua5.4)/kvs urls=false (lua5.4);kvs job (lua5.4)/kvs job (luajit);kvs job C iterators (luajit)/kvs job (luajit);kvs (lua5.1)/kvs urls=false (lua5.1)'
rm -f "$HERE/.cache/jv.txt" "$HERE/.cache/jv-job.txt"
bash "$HERE/run.sh"

# what one listing's trace log says (the last round's): traces, aborts, fallbacks
for log in jv jv-job; do
    jv=$HERE/.cache/$log.txt
    [ -f "$jv" ] || { echo "bench/jit.sh: no $log log" >&2; exit 1; }
    traces=$(grep -c '^\[TRACE *[0-9]' "$jv" || true)
    aborts=$(grep -c '^\[TRACE --- ' "$jv" || true)
    fallback=$(grep -c 'fallback to interpreter' "$jv" || true)
    what=$([ $log = jv ] && echo "store:keys{} loop" || echo "job:poll() loop")
    echo "- LuaJIT trace log (jit.v) of one $what over $N keys: $traces traces, $aborts aborted recordings, $fallback \"fallback to interpreter\"."
done | tee -a "$RESULTS"

N=$N_HEAP RESULTS=$HERE/results-jit-heap-$N_HEAP.md PEERS='heap' \
  RATIOS='kvs 64 MB heap (lua5.1)/kvs 64 MB heap urls=false (lua5.1);kvs 64 MB heap (lua5.1)/kvs 64 MB heap (lua5.4)' \
  bash "$HERE/run.sh"
