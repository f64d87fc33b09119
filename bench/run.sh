#!/usr/bin/env bash
# bench/run.sh — list every key of a synthetic N-key store with apify.kvs and
# with other clients, side by side, in one interleaved run.  See
# docs/performance.md.
#
#   bench/run.sh                         N=1000000 keys, R=5 rounds
#   N=20000 R=3 bench/run.sh             small
#   N=100000 DELAY=0.05 R=3 bench/run.sh latency mode: server waits 50 ms a page
#   WORK=200 bench/run.sh                200 loop iterations per key in Lua/JS
#   PEERS='kvs|floor' bench/run.sh       only the peers whose name matches
#   STRICT=1 bench/run.sh                a peer that cannot run is an error
set -euo pipefail

# The command line as typed, for the report (only the settings given).
CMDLINE=""
for v in N R DELAY WORK PEERS STRICT; do
    if [ -n "${!v+x}" ]; then CMDLINE+="$v=$(printf %q "${!v}") "; fi
done
CMDLINE+="bench/run.sh${*:+ $*}"

N=${N:-1000000}
R=${R:-5}
DELAY=${DELAY:-0}
WORK=${WORK:-0}
PEERS=${PEERS:-}
STRICT=${STRICT:-0}
export WORK

die() { echo "bench/run.sh: $*" >&2; exit 1; }

[[ "$N" =~ ^[0-9]+$ ]] || die "N must be a whole number, got '$N'"
[[ "$R" =~ ^[1-9][0-9]*$ ]] || die "R must be a positive whole number, got '$R'"
[[ "$WORK" =~ ^[0-9]+$ ]] || die "WORK must be a whole number, got '$WORK'"
[[ "$DELAY" =~ ^[0-9]*\.?[0-9]+$ ]] || die "DELAY must be seconds (e.g. 0.2), got '$DELAY'"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
cd "$ROOT"

# --- the peers ---------------------------------------------------------------
# One line per peer:  name | needs | command
#   needs:   a shell command; when it fails the row is skipped (with a note)
#   command: run from the repository root; $BASE is the server's base URL
#            (http://127.0.0.1:PORT), $STORE the cached store, $BIN the C tools
# Each command prints "count sum" (floor-fetch: "count -", decode.lua adds
# the seconds spent decoding).  The first peer is the reference for ratios.
# shellcheck disable=SC2016  # $BASE etc. expand when each command runs
PEER_LIST='
kvs (lua5.4)             | test -f build/5.4/apify/kvs.so                | lua5.4 bench/kvs.lua $BASE
kvs gzip=false (lua5.4)  | test -f build/5.4/apify/kvs.so                | env KVS_GZIP=0 lua5.4 bench/kvs.lua $BASE
kvs prefetch=false (lua5.4) | test -f build/5.4/apify/kvs.so             | env KVS_PREFETCH=0 lua5.4 bench/kvs.lua $BASE
kvs (luajit)             | test -f build/jit/apify/kvs.so                | luajit bench/kvs.lua $BASE
kvs gzip=false (luajit)  | test -f build/jit/apify/kvs.so                | env KVS_GZIP=0 luajit bench/kvs.lua $BASE
kvs urls=false (lua5.4)  | test -f build/5.4/apify/kvs.so                | env KVS_URLS=0 lua5.4 bench/kvs.lua $BASE
kvs urls=false (luajit)  | test -f build/jit/apify/kvs.so                | env KVS_URLS=0 luajit bench/kvs.lua $BASE
kvs C iterators (luajit) | test -f build/jit/apify/kvs.so                | env APIFY_KVS_FFI=0 luajit bench/kvs.lua $BASE
kvs job (lua5.4)         | test -f build/5.4/apify/kvs.so                | lua5.4 bench/job.lua $BASE
kvs job (luajit)         | test -f build/jit/apify/kvs.so                | luajit bench/job.lua $BASE
kvs job C iterators (luajit) | test -f build/jit/apify/kvs.so            | env APIFY_KVS_FFI=0 luajit bench/job.lua $BASE
kvs -jv log (luajit)     | test -f build/jit/apify/kvs.so                | env KVS_JV=$CACHE/jv.txt luajit bench/kvs.lua $BASE
kvs job -jv log (luajit) | test -f build/jit/apify/kvs.so                | env KVS_JV=$CACHE/jv-job.txt luajit bench/job.lua $BASE
kvs (lua5.1)             | test -f build/5.1/apify/kvs.so                | lua5.1 bench/kvs.lua $BASE
kvs urls=false (lua5.1)  | test -f build/5.1/apify/kvs.so                | env KVS_URLS=0 lua5.1 bench/kvs.lua $BASE
kvs 64 MB heap (lua5.1)  | test -f build/5.1/apify/kvs.so                | env KVS_HEAP_MB=64 lua5.1 bench/kvs.lua $BASE
kvs 64 MB heap urls=false (lua5.1) | test -f build/5.1/apify/kvs.so      | env KVS_HEAP_MB=64 KVS_URLS=0 lua5.1 bench/kvs.lua $BASE
kvs 64 MB heap (lua5.4)  | test -f build/5.4/apify/kvs.so                | env KVS_HEAP_MB=64 lua5.4 bench/kvs.lua $BASE
apify-client (node)      | command -v node                               | node bench/js/list.mjs $BASE
luasocket+cjson (lua5.4) | lua5.4 -e "require(\"socket.http\") require(\"cjson\")" | lua5.4 bench/luasocket.lua $BASE
luasocket+cjson (luajit) | luajit -e "require(\"socket.http\") require(\"cjson\")" | luajit bench/luasocket.lua $BASE
lua-curl+cjson (luajit)  | luajit -e "require(\"curl\") require(\"cjson\")"        | luajit bench/luacurl.lua $BASE
lua-http+cjson (luajit)  | luajit -e "require(\"http.request\") require(\"cjson\")" | luajit bench/luahttp.lua $BASE
floor-fetch (C)          | true                                          | $BIN/floor-fetch $BASE
floor-parse (C)          | true                                          | $BIN/floor-parse $BASE
floor-parse gzip (C)     | true                                          | env FLOOR_GZIP=1 $BIN/floor-parse $BASE
cjson.decode (lua5.4)    | lua5.4 -e "require(\"cjson\")"                | lua5.4 bench/decode.lua $STORE
cjson.decode (luajit)    | luajit -e "require(\"cjson\")"                | luajit bench/decode.lua $STORE
'

# --- tools -------------------------------------------------------------------
need() { command -v "$1" >/dev/null 2>&1 || die "missing tool '$1' ($2)"; }
need nginx  "apt-get install nginx"
need cc     "apt-get install gcc"
need lua5.4 "apt-get install lua5.4"
need timeout "coreutils"
[ -x /usr/bin/time ] || die "missing /usr/bin/time (apt-get install time)"
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] \
    || die "missing libcurl headers (apt-get install libcurl4-openssl-dev)"
[ -f /usr/include/yajl/yajl_parse.h ] || die "missing yajl headers (apt-get install libyajl-dev)"
[ -f /usr/include/zlib.h ] || die "missing zlib headers (apt-get install zlib1g-dev)"
lua5.4 -e 'require "socket"' 2>/dev/null || die "missing LuaSocket for lua5.4 (apt-get install lua-socket)"
if [ "$DELAY" != 0 ] && ! [[ "$DELAY" =~ ^0*\.?0*$ ]]; then
    LATENCY=1
    [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] \
        || die "DELAY needs nginx's Lua module (apt-get install libnginx-mod-http-lua)"
else
    LATENCY=0
    DELAY=0
fi

CACHE=$HERE/.cache
BIN=$CACHE/bin
STORE=$CACHE/store-$N
mkdir -p "$BIN"

# --- C tools (rebuilt when their source is newer) ----------------------------
build() {   # build OUT SRC FLAGS...
    local out=$1 src=$2; shift 2
    if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
        echo "building $(basename "$out")" >&2
        cc -O2 -Wall -o "$out.tmp" "$src" "$@" || die "cannot build $out"
        mv "$out.tmp" "$out"
    fi
}
build "$BIN/gen"         "$HERE/gen.c"   -lz -lm
build "$BIN/floor-fetch" "$HERE/floor.c" -lcurl
build "$BIN/floor-parse" "$HERE/floor.c" -DPARSE -lcurl -lyajl

# --- the store (generated once per N) -----------------------------------------
if [ ! -f "$STORE/expected.txt" ]; then
    echo "generating $N keys in ${STORE#"$ROOT"/}" >&2
    rm -rf "$STORE.tmp"
    "$BIN/gen" "$N" "$STORE.tmp" || die "generating the store failed"
    rm -rf "$STORE"
    mv "$STORE.tmp" "$STORE"
fi
read -r EXP_COUNT EXP_SUM < "$STORE/expected.txt"
PAGES=$(wc -l < "$STORE/pages.txt")

# --- the node client ----------------------------------------------------------
# Only when a node peer is selected: PEERS without one (make bench-smoke) stays offline.
node_peer_wanted() {
    local line name cmd
    while IFS= read -r line; do
        [ -n "${line// }" ] || continue
        IFS='|' read -r name _ cmd <<< "$line"
        name=$(echo "$name" | sed 's/^ *//; s/ *$//')
        [[ "$cmd" =~ ^\ *node\  ]] || continue
        if [ -z "$PEERS" ] || [[ "$name" =~ $PEERS ]]; then return 0; fi
    done <<< "$PEER_LIST"
    return 1
}
if node_peer_wanted && command -v node >/dev/null 2>&1 && [ ! -d "$HERE/js/node_modules/apify-client" ]; then
    need npm "npm comes with nodejs"
    echo "installing bench/js (npm ci)" >&2
    (cd "$HERE/js" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci in bench/js failed"
fi

# --- nginx --------------------------------------------------------------------
RUN=$(mktemp -d "${TMPDIR:-/tmp}/kvs-bench.XXXXXX")
NGINX_PID=""
cleanup() {
    if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
        kill -QUIT "$NGINX_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    lua5.4 -e 'local s = assert(require("socket").bind("127.0.0.1", 0))
               print((select(2, s:getsockname()))) s:close()'
}

write_conf() {   # write_conf PORT
    local lua_modules="" lua_delay=""
    if [ "$LATENCY" = 1 ]; then
        lua_modules="load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
        lua_delay="access_by_lua_block { ngx.sleep($DELAY) }"
    fi
    cat > "$RUN/nginx.conf" <<EOF
$lua_modules
$USER_LINE
worker_processes 1;
pid $RUN/nginx.pid;
error_log $RUN/error.log warn;
events { worker_connections 256; }
http {
    client_body_temp_path $RUN/client_body;
    proxy_temp_path       $RUN/proxy;
    fastcgi_temp_path     $RUN/fastcgi;
    uwsgi_temp_path       $RUN/uwsgi;
    scgi_temp_path        $RUN/scgi;
    types { application/json json; }
    default_type application/json;
    charset utf-8;
    charset_types application/json;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    gzip on;
    gzip_types application/json;
    gzip_static on;
    gzip_vary on;
    log_format bench '\$connection\t\$status\t\$sent_http_content_encoding\t\$body_bytes_sent';
    access_log $RUN/access.log bench;

    # ?exclusiveStartKey=X -> the page after X; none -> the first page.
    # \$arg_ is not percent-decoded, and some clients send "-" as %2D.
    map \$arg_exclusiveStartKey \$kvs_page {
        ""                                 first;
        "~^([a-z]+)(?:-|%2[dD])([0-9]+)\$" \$1-\$2;
        default                            invalid;
    }
    server {
        listen 127.0.0.1:$1;
        root $STORE_ROOT;
        location = /v2/key-value-stores/bench/keys {
            $lua_delay
            try_files /pages/\$kvs_page.json =404;
        }
        # start-up check: this run's own token, so a server that took the port first is noticed
        location = /_bench/ping { return 200 '$RUN_ID'; }
        location / { return 404 '{"error":{"type":"page-not-found","message":"not here"}}'; }
    }
}
EOF
}

# The free port is only free when asked: another server (an emulator of a spec run, another
# bench) may bind it before this nginx does. Then this nginx exits ("Address already in use")
# while the port still accepts connections, so a bare connect would take that other server for
# ours. The start counts only when our nginx is alive (not a zombie) and answers /_bench/ping
# with this run's id; otherwise it is stopped and tried again on a fresh port.
RUN_ID="kvs-bench-$$-$RANDOM$RANDOM"

# the body of GET /_bench/ping on a port, or nothing
ping_body() {
    lua5.4 -e "local s = require('socket').connect('127.0.0.1', $1)
               if not s then os.exit(1) end
               s:settimeout(2)
               s:send('GET /_bench/ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n')
               local r = s:receive('*a') or ''
               io.write((r:match('^HTTP/1%.%d 200.-\r\n\r\n(.*)$') or ''))" 2>/dev/null || true
}

# true while the nginx we started runs (a zombie or a reaped pid does not count)
nginx_alive() {
    local state
    state=$(sed -n 's/^[0-9]* ([^)]*) \([A-Z]\).*/\1/p' "/proc/$NGINX_PID/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# Started as root, nginx runs its workers as nobody, who may not enter a checkout under a
# private (0700) directory. nginx gets the store as descriptor 3, opened here, and its workers
# reach it as /proc/self/fd/3 without passing through the parents (the store itself is 0755).
USER_LINE=$(lua5.4 -e 'package.path = "./?.lua;" .. package.path
                       print(require("emulator.launch").user_directive())') || die "cannot run lua5.4"
STORE_ROOT=/proc/self/fd/3
[ -d /proc/self/fd ] || STORE_ROOT=$STORE

start_nginx() {
    local port
    for _ in 1 2 3 4 5 6 7 8; do
        port=$(free_port)
        write_conf "$port"
        rm -f "$RUN/nginx.pid"
        : > "$RUN/error.log"
        nginx -p "$RUN/" -c "$RUN/nginx.conf" -e "$RUN/error.log" -g 'daemon off;' 3<"$STORE" &
        NGINX_PID=$!
        for _ in $(seq 300); do     # up to ~30 s: a loaded machine starts nginx slowly
            nginx_alive || break
            grep -q 'Address already in use' "$RUN/error.log" 2>/dev/null && break
            if [ "$(ping_body "$port")" = "$RUN_ID" ]; then
                BASE="http://127.0.0.1:$port"
                return 0
            fi
            sleep 0.1
        done
        echo "nginx did not come up on port $port; trying another port" >&2
        kill -QUIT "$NGINX_PID" 2>/dev/null || true
        for _ in $(seq 50); do nginx_alive || break; sleep 0.1; done
        kill -KILL "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
        NGINX_PID=""
    done
    cat "$RUN/error.log" >&2 || true
    die "nginx did not start"
}
start_nginx
: > "$RUN/access.log"

# Check the server once with the floor before timing anything.
out=$("$BIN/floor-parse" "$BASE") || die "the server does not answer as expected (see above)"
[ "$out" = "$EXP_COUNT $EXP_SUM" ] || die "server check: floor-parse printed '$out', the store holds '$EXP_COUNT $EXP_SUM'"

# --- the peers that can run ---------------------------------------------------
NAMES=() CMDS=() NOTES=()
while IFS= read -r line; do
    [ -n "${line// }" ] || continue
    IFS='|' read -r name needs cmd <<< "$line"
    name=$(echo "$name" | sed 's/^ *//; s/ *$//')
    needs=$(echo "$needs" | sed 's/^ *//; s/ *$//')
    cmd=$(echo "$cmd" | sed 's/^ *//; s/ *$//')
    if [ -n "$PEERS" ] && ! [[ "$name" =~ $PEERS ]]; then continue; fi
    if ! (eval "$needs") >/dev/null 2>&1; then
        [ "$STRICT" = 1 ] && die "peer '$name' cannot run: \`$needs\` failed"
        NOTES+=("**$name: skipped** — \`$needs\` failed.")
        echo "skipping $name: \`$needs\` failed" >&2
        continue
    fi
    NAMES+=("$name")
    CMDS+=("$cmd")
done <<< "$PEER_LIST"
[ ${#NAMES[@]} -gt 0 ] || die "no peer to run"

TIMEOUT=$(lua5.4 -e "print(math.ceil(600 + $PAGES * $DELAY * 3))")

# --- rounds -------------------------------------------------------------------
RAW=$RUN/raw.tsv
: > "$RAW"
for ((r = 1; r <= R; r++)); do
    for i in "${!NAMES[@]}"; do
        name=${NAMES[$i]}
        eval "set -- ${CMDS[$i]}"
        logpos=$(stat -c %s "$RUN/access.log")
        rc=0
        t0=$(date +%s%N)
        /usr/bin/time -f '%e %M' -o "$RUN/time.txt" \
            timeout --foreground -k 5 "$TIMEOUT" "$@" > "$RUN/out.txt" 2> "$RUN/err.txt" || rc=$?
        t1=$(date +%s%N)
        if [ $rc -ne 0 ]; then
            echo "---- stderr of '$name' (round $r, exit $rc):" >&2
            tail -n 20 "$RUN/err.txt" >&2
            die "peer '$name' failed (exit $rc): ${CMDS[$i]}"
        fi
        # wall from the clock in ns (/usr/bin/time rounds to 10 ms), RSS from time
        read -r _ rss < <(tail -n 1 "$RUN/time.txt")
        wall=$(lua5.4 -e "print(string.format(\"%.4f\", ($t1 - $t0) / 1e9))")
        read -r count sum inner < <(head -n 1 "$RUN/out.txt") || true
        if [ "${count:-}" != "$EXP_COUNT" ] || { [ "${sum:-}" != "-" ] && [ "${sum:-}" != "$EXP_SUM" ]; }; then
            echo "---- output of '$name':" >&2; head -c 2000 "$RUN/out.txt" >&2
            echo "---- stderr:" >&2; tail -n 20 "$RUN/err.txt" >&2
            die "MISMATCH: peer '$name' printed '${count:-} ${sum:-}', the store holds '$EXP_COUNT $EXP_SUM'"
        fi
        # what the server saw: requests, connections, gzipped replies, non-200s
        read -r reqs conns gz bad < <(tail -c +"$((logpos + 1))" "$RUN/access.log" | awk -F'\t' '
            { n++; c[$1] = 1; if ($3 == "gzip") g++; if ($2 != 200) b++ }
            END { k = 0; for (x in c) k++; print n + 0, k, g + 0, b + 0 }')
        [ "$bad" = 0 ] || die "peer '$name' got $bad non-200 replies"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$i" "$wall" "$rss" "${inner:--}" "$reqs" "$conns" "$gz" >> "$RAW"
        printf 'round %d/%d  %-26s %6.2f s  %6.1f MB\n' "$r" "$R" "$name" "$wall" "$(lua5.4 -e "print($rss / 1024)")" >&2
    done
done

# --- report -------------------------------------------------------------------
if [ -n "${RESULTS:-}" ]; then
    :   # the caller chose where the table goes (make bench-smoke)
elif [ "$LATENCY" = 1 ] || [ "$WORK" != 0 ]; then
    SUFFIX=""
    [ "$LATENCY" = 1 ] && SUFFIX+="-delay$DELAY"
    [ "$WORK" != 0 ] && SUFFIX+="-work$WORK"
    RESULTS=$HERE/results-$N$SUFFIX.md
else
    RESULTS=$HERE/results-$N.md
fi
NAMES_FILE=$RUN/names.txt
printf '%s\n' "${NAMES[@]}" > "$NAMES_FILE"
NOTES_FILE=$RUN/notes.txt
printf '%s\n' "${NOTES[@]+"${NOTES[@]}"}" > "$NOTES_FILE"

ver() { "$@" 2>&1 | head -n 1 || true; }
{
    echo "# apify.kvs key listing benchmark: N=$N"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- command: \`$CMDLINE\`"
    echo "- N=$N keys in $PAGES pages, R=$R rounds (interleaved), DELAY=$DELAY s a page, WORK=$WORK"
    echo "- machine: nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(uname -sr)"
    echo "- server: $(ver nginx -v | sed 's/^nginx version: //'), 1 worker, keep-alive, gzip (precompressed, gzip_static) for clients that send Accept-Encoding$( [ "$LATENCY" = 1 ] && echo ", ngx.sleep($DELAY) before each page")"
    echo "- tools: $(ver lua5.4 -v | cut -d" " -f1-2), $(ver luajit -v | cut -d' ' -f1-2), node $(ver node --version), apify-client $(node -p 'require("./bench/js/node_modules/apify-client/package.json").version' 2>/dev/null || echo '-'), $(curl-config --version 2>/dev/null || echo libcurl)"
    echo "- apify.kvs: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo 'no commit yet')"
    echo
    RATIOS=${RATIOS:-} lua5.4 "$HERE/report.lua" "$RAW" "$NAMES_FILE" "$N" "$PAGES"
    if [ -s "$NOTES_FILE" ] && [ -n "$(tr -d '\n' < "$NOTES_FILE")" ]; then
        echo
        grep -v '^$' "$NOTES_FILE" | sed 's/^/- /'
    fi
} > "$RUN/results.md"
cp "$RUN/results.md" "$RESULTS"
cat "$RUN/results.md"
echo >&2
echo "written to ${RESULTS#"$ROOT"/}" >&2
