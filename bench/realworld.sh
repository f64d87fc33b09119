#!/usr/bin/env bash
# bench/realworld.sh — listing a big store the way the real API serves it: the emulator
# (emulator/) with per-page latency plus jitter and the API's per-store rate limit (a token
# bucket answering 429), over stores with the key shapes real actors write; apify.kvs
# sequential and with `parallel`, and the official JavaScript client. See docs/performance.md
# ("Real-world mode").
#
#   bench/realworld.sh                          N=300000, every shape and run, R=1, plus a
#                                               uniform store of BIG keys and small ones
#   N=30000 BIG=0 bench/realworld.sh            small, no 3,000,000-key store
#   SHAPES='uniform gap' RUNS='seq auto' SMALL= bench/realworld.sh
#   LATENCY=0.15 JITTER=0.03 RATE=60 LOW_RATE=30 TIMEOUT=300 R=3 LUA=luajit bench/realworld.sh
#   WORKERS=2                                   the emulator's nginx workers (default 1; one
#                                               spends ~3 ms of CPU on a 1000-key page of a
#                                               300,000-key store, half of it in stat())
#
# Shapes (bench/realworld_gen.c): uniform prefixes gap random, N keys each, listed by RUNS.
# BIG (3000000; 0: none): a uniform store of that many keys, listed by BIG_RUNS (auto).
# SMALL (5 50): uniform stores of that many pages, listed by SMALL_RUNS (seq auto js).
# Runs: seq (apify.kvs, one page at a time: parallel = 1), auto (store:keys{}, its default
#       parallel = "auto"), p4 p8 p16 p32 (store:keys{parallel = n}), js (apify-client,
#       sequential), auto-low p8-low p16-low (the same against a server that enforces LOW_RATE
#       requests/s while its X-RateLimit-Limit says RATE).
set -euo pipefail

N=${N:-300000}
R=${R:-1}
SHAPES=${SHAPES:-uniform prefixes gap random}
RUNS=${RUNS:-seq auto p8 p16 js auto-low}
BIG=${BIG-3000000}
BIG_RUNS=${BIG_RUNS:-auto}
SMALL=${SMALL-5 50}
SMALL_RUNS=${SMALL_RUNS:-seq auto js}
LATENCY=${LATENCY:-0.15}
JITTER=${JITTER:-0.03}
RATE=${RATE:-60}
LOW_RATE=${LOW_RATE:-30}
SEED=${SEED:-1}
WORKERS=${WORKERS:-1}
LUA=${LUA:-lua5.4}

die() { echo "bench/realworld.sh: $*" >&2; exit 1; }
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive whole number, got '$N'"
[[ "$BIG" =~ ^[0-9]+$ ]] || die "BIG must be a whole number (0: no big store), got '$BIG'"
for p in $SMALL; do [[ "$p" =~ ^[1-9][0-9]*$ ]] || die "SMALL must be whole numbers of pages, got '$SMALL'"; done
[[ "$R" =~ ^[1-9][0-9]*$ ]] || die "R must be a positive whole number, got '$R'"
for v in LATENCY JITTER; do [[ "${!v}" =~ ^[0-9]*\.?[0-9]+$ ]] || die "$v must be seconds, got '${!v}'"; done
for v in RATE LOW_RATE SEED WORKERS; do [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"; done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

# The stores: "name shape keys runs" a line.
STORES=$(
    for shape in $SHAPES; do echo "$shape $shape $N ${RUNS// /,}"; done
    [ "$BIG" -gt 0 ] && echo "uniform-$BIG uniform $BIG ${BIG_RUNS// /,}"
    for p in $SMALL; do echo "uniform-${p}p uniform $((p * 1000)) ${SMALL_RUNS// /,}"; done
)
ALL_RUNS=$(echo "$RUNS $BIG_RUNS $SMALL_RUNS" | tr ' ' '\n' | awk 'NF && !seen[$0]++' | tr '\n' ' ')
# a run that takes longer than 3 sequential listings plus a minute has run away
timeout_for() { [ -n "${TIMEOUT:-}" ] && echo "$TIMEOUT" \
    || lua5.4 -e "print(math.ceil(math.ceil($1 / 1000) * ($LATENCY + $JITTER) * 3 + 60))"; }

need() { command -v "$1" >/dev/null 2>&1 || die "missing tool '$1' ($2)"; }
need nginx "apt-get install nginx libnginx-mod-http-lua"
need cc "apt-get install gcc"
need lua5.4 "apt-get install lua5.4"
need "$LUA" "apt-get install $LUA"
need curl "apt-get install curl"
need timeout "coreutils"
[ -x /usr/bin/time ] || die "missing /usr/bin/time (apt-get install time)"
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || die "missing nginx's Lua module (apt-get install libnginx-mod-http-lua)"
LUADIR=$([ "$LUA" = luajit ] && echo jit || echo "${LUA#lua}")
[ -f "build/$LUADIR/apify/kvs.so" ] || die "build/$LUADIR/apify/kvs.so is missing: run make first"

CACHE=$HERE/.cache
BIN=$CACHE/bin
mkdir -p "$BIN"

# --- the generator --------------------------------------------------------------
if [ ! -x "$BIN/realworld-gen" ] || [ "$HERE/realworld_gen.c" -nt "$BIN/realworld-gen" ]; then
    echo "building realworld-gen" >&2
    cc -O2 -Wall -o "$BIN/realworld-gen.tmp" "$HERE/realworld_gen.c" -lm || die "cannot build realworld-gen"
    mv "$BIN/realworld-gen.tmp" "$BIN/realworld-gen"
fi

# --- the JavaScript client ------------------------------------------------------
if [[ " $ALL_RUNS " == *" js "* ]]; then
    need node "apt-get install nodejs npm"
    if [ ! -d "$HERE/js/node_modules/apify-client" ]; then
        need npm "apt-get install npm"
        echo "installing bench/js (npm ci)" >&2
        (cd "$HERE/js" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci in bench/js failed"
    fi
fi

# --- the emulator ---------------------------------------------------------------
# The run directory holds the stores too: on a tmpfs when there is one (as the specs' scratch
# directories, emulator/launch.lua's mktemp_dir; $KVS_TMPDIR overrides). On ext4 the emulator's
# per-key stat() in a 300,000-file directory costs it more CPU than everything else on the page.
RUN=$(lua5.4 -e 'print(require("emulator.launch").mktemp_dir("kvs-realworld") or "")')
[ -n "$RUN" ] && [ -d "$RUN" ] || die "mktemp -d failed"
cleanup() {
    lua5.4 emulator/launch.lua stop --rundir "$RUN/emu" >/dev/null 2>&1 || true
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the stores (made for each run of the bench: 300,000 files take about a second on a tmpfs) --
STORAGE=$RUN/storage
mkdir -p "$STORAGE/key_value_stores"
while read -r name shape n _; do
    dir=$STORAGE/key_value_stores/$name
    echo "generating $n keys of shape '$shape' in $dir" >&2
    "$BIN/realworld-gen" "$shape" "$n" "$dir" || die "generating '$name' failed"
done <<< "$STORES"

# The emulator caches a store's key list only once its directory has been still for a second.
sleep 1.2
BASE=$(lua5.4 emulator/launch.lua start --storage "$STORAGE" --rundir "$RUN/emu" --workers "$WORKERS") || die "the emulator did not start"
ACCESS=$RUN/emu/access.log

# the control API needs the run directory's secret and a JSON body
config() {
    curl -sf -X POST -H "Authorization: Bearer $(cat "$RUN/emu/control-secret")" \
        -H 'Content-Type: application/json' -d "$1" "$BASE/_emulator/config" >/dev/null \
        || die "emulator config $1 failed"
}

# warm-up: the first listing of each store scans its directory
config '{"delay":0,"jitter":0,"rate_limit":0,"enforce":false}'
while read -r name _; do
    curl -sf -o /dev/null -H 'Authorization: Bearer bench' "$BASE/v2/key-value-stores/$name/keys?limit=1" \
        || die "the emulator does not list '$name'"
done <<< "$STORES"

# --- the runs -------------------------------------------------------------------
RAW=$RUN/raw.tsv
: > "$RAW"
run_label() {
    case "$1" in
        seq) echo "apify.kvs sequential (parallel = 1)" ;;
        js) echo "apify-client (JS, sequential)" ;;
        auto) echo "apify.kvs \"auto\" (the default)" ;;
        auto-low) echo "apify.kvs \"auto\", server $LOW_RATE/s (header $RATE)" ;;
        p*-low) echo "apify.kvs parallel = ${1//[!0-9]/}, server $LOW_RATE/s (header $RATE)" ;;
        p*) echo "apify.kvs parallel = ${1#p}" ;;
    esac
}
for ((r = 1; r <= R; r++)); do
    while read -r shape _ n runs; do
        read -r exp_count exp_sum < "$STORAGE/key_value_stores/$shape.expected"
        limit_s=$(timeout_for "$n")
        for run in ${runs//,/ }; do
            enforce=$RATE
            case "$run" in
                seq) cmd=("$LUA" bench/realworld.lua "$BASE" "$shape" 1) ;;
                js) cmd=(node bench/realworld.mjs "$BASE" "$shape") ;;
                auto) cmd=("$LUA" bench/realworld.lua "$BASE" "$shape" auto) ;;
                auto-low) cmd=("$LUA" bench/realworld.lua "$BASE" "$shape" auto); enforce=$LOW_RATE ;;
                p[0-9]*-low) cmd=("$LUA" bench/realworld.lua "$BASE" "$shape" "${run//[!0-9]/}"); enforce=$LOW_RATE ;;
                p[0-9]*) cmd=("$LUA" bench/realworld.lua "$BASE" "$shape" "${run#p}") ;;
                *) die "unknown run '$run' (seq, auto, auto-low, p<n>, p<n>-low, js)" ;;
            esac
            # fresh buckets and the same jitter sequence for every run
            config "{\"latency\":$LATENCY,\"jitter\":$JITTER,\"seed\":$SEED,\"rate_limit\":$RATE,\"enforce\":$enforce}"
            logpos=$(stat -c %s "$ACCESS")
            rc=0
            t0=$(date +%s%N)
            /usr/bin/time -f '%e %M' -o "$RUN/time.txt" \
                timeout -k 5 "$limit_s" "${cmd[@]}" > "$RUN/out.txt" 2> "$RUN/err.txt" || rc=$?
            t1=$(date +%s%N)
            wall=$(lua5.4 -e "print(string.format('%.2f', ($t1 - $t0) / 1e9))")
            rss=$(tail -n 1 "$RUN/time.txt" | awk '{print $2}')
            # the replies still in flight (a run stopped at the timeout) are logged when they end:
            # wait until the log has been still for half a second, so they count for this run
            size=-1
            for _ in $(seq 40); do
                [ "$(stat -c %s "$ACCESS")" = "$size" ] && break
                size=$(stat -c %s "$ACCESS")
                sleep 0.5
            done
            read -r reqs limited < <(tail -c +"$((logpos + 1))" "$ACCESS" \
                | awk '/ "GET \/v2\/key-value-stores\// { n++; if ($0 ~ /" 429 /) l++ } END { print n + 0, l + 0 }')
            read -r count sum order < <(head -n 1 "$RUN/out.txt") || true
            if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
                check="timeout after ${limit_s} s"
            elif [ $rc -ne 0 ]; then
                check="failed (exit $rc): $(tail -n 1 "$RUN/err.txt" | cut -c1-120)"
            elif [ "${count:-}" = "$exp_count" ] && [ "${sum:-}" = "$exp_sum" ] && [ "${order:-}" = ok ]; then
                check=ok
            else
                check="MISMATCH: '${count:-} ${sum:-} ${order:-}', the store holds '$exp_count $exp_sum'"
            fi
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$shape" "$run" "$wall" "$reqs" "$limited" "${rss:-0}" "$enforce" "$check" "$n" >> "$RAW"
            printf 'round %d/%d  %-15s %-42s %7s s  %5s requests  %4s x 429  %s\n' "$r" "$R" "$shape" \
                "$(run_label "$run")" "$wall" "$reqs" "$limited" "$check" >&2
        done
    done <<< "$STORES"
done

# --- the table ------------------------------------------------------------------
RESULTS=${RESULTS:-$HERE/results-realworld-$N.md}
LABELS=$RUN/labels.tsv
for run in $ALL_RUNS; do printf '%s\t%s\n' "$run" "$(run_label "$run")"; done > "$LABELS"
{
    echo "# apify.kvs real-world listing: N=$N"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); apify.kvs $(git describe --always --dirty 2>/dev/null || echo '-'); $LUA"
    echo "- server: the emulator (emulator/, $WORKERS nginx workers), ${LATENCY} s per page ± ${JITTER} s (seed $SEED), a token bucket of $RATE requests/s per store (burst $RATE) answering 429, X-RateLimit-Limit: $RATE"
    echo "- stores: $(echo "$STORES" | awk '{ printf "%s%s (%d keys)", (NR > 1 ? ", " : ""), $1, $3 }'); bound = the rate cap's ceil(keys/1000) / rate s; R=$R (medians); machine: nproc=$(nproc), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- apify-client $(node -p 'require("./bench/js/node_modules/apify-client/package.json").version' 2>/dev/null || echo '-') on node $(node --version 2>/dev/null || echo '-')"
    echo
    lua5.4 - "$RAW" "$LABELS" <<'LUA'
local raw, labels_file = arg[1], arg[2]
local labels, order = {}, {}
for line in io.lines(labels_file) do
  local run, label = line:match("^([^\t]+)\t(.*)$")
  labels[run] = label
  order[#order + 1] = run
end
local rows, shapes = {}, {}
for line in io.lines(raw) do
  local f = {}
  for x in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = x end
  local key = f[1] .. "\0" .. f[2]
  if not rows[key] then
    rows[key] = { shape = f[1], run = f[2], wall = {}, reqs = {}, limited = {}, rss = {}, rate = tonumber(f[7]),
                  checks = {}, pages = math.ceil(tonumber(f[9]) / 1000) }
    local seen = false
    for _, s in ipairs(shapes) do if s == f[1] then seen = true end end
    if not seen then shapes[#shapes + 1] = f[1] end
  end
  local r = rows[key]
  r.wall[#r.wall + 1] = tonumber(f[3])
  r.reqs[#r.reqs + 1] = tonumber(f[4])
  r.limited[#r.limited + 1] = tonumber(f[5])
  r.rss[#r.rss + 1] = tonumber(f[6])
  r.checks[#r.checks + 1] = f[8]
end
local function median(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  local m = #c
  if m == 0 then return 0 end
  if m % 2 == 1 then return c[(m + 1) / 2] end
  return (c[m / 2] + c[m / 2 + 1]) / 2
end
print("| store | client | wall s | requests | requests / page | 429s | RSS MB | bound s | wall / bound | keys |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|---|")
for _, shape in ipairs(shapes) do
  for _, run in ipairs(order) do
    local r = rows[shape .. "\0" .. run]
    if r then
      local pages = r.pages
      local bound = pages / r.rate
      local check = "ok"
      for _, c in ipairs(r.checks) do if c ~= "ok" then check = c break end end
      local wall = median(r.wall)
      print(string.format("| %s | %s | %.2f | %d | %.2f | %d | %.1f | %.2f | %s | %s |", shape, labels[run],
        wall, median(r.reqs), median(r.reqs) / pages, median(r.limited), median(r.rss) / 1024, bound,
        check == "ok" and string.format("%.2fx", wall / bound) or "-", check))
    end
  end
end
LUA
} > "$RUN/results.md"
cp "$RUN/results.md" "$RESULTS"
cat "$RUN/results.md"
echo >&2
echo "written to ${RESULTS#"$ROOT"/}" >&2
