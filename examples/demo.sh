#!/usr/bin/env bash
# examples/demo.sh — what `make demo` runs: start the local API emulator on a free
# port over examples/storage, list a store through the module, stop the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

LUA=${LUA:-lua5.4}
CPATH="build/${LUA#lua}/?.so"
[ "$LUA" = luajit ] && CPATH="build/jit/?.so"
export LUA_CPATH="$CPATH;;" LUA_PATH="./?.lua;;"

rundir=$(mktemp -d /tmp/apify-kvs-demo.XXXXXX)
token="demo-token"
stop() { "$LUA" emulator/launch.lua stop --rundir "$rundir" >/dev/null 2>&1 || true; rm -rf "$rundir"; }
trap stop EXIT

base_url=$(KVS_EMULATOR_TOKEN="$token" "$LUA" emulator/launch.lua start --storage examples/storage --rundir "$rundir")
export APIFY_API_BASE_URL="$base_url" APIFY_TOKEN="$token"
echo "# local API emulator at $base_url (store 'demo' from examples/storage)"

echo; echo "# every key:  $LUA examples/list_keys.lua demo"
"$LUA" examples/list_keys.lua demo
echo; echo "# prefix 'img-':  $LUA examples/list_keys.lua demo img-"
"$LUA" examples/list_keys.lua demo img-
echo; echo "# batches of 10, resuming from the last key:  $LUA examples/resume.lua demo 10"
"$LUA" examples/resume.lua demo 10
echo; echo "# one page as a table:  $LUA examples/one_page.lua demo 3"
"$LUA" examples/one_page.lua demo 3
echo; echo "# an error, as a value:  $LUA examples/one_page.lua no-such-store"
"$LUA" examples/one_page.lua no-such-store || true
echo; echo "# the command-line tool, JSON lines:  $LUA bin/apify-kvs keys demo --prefix report- --json"
"$LUA" bin/apify-kvs keys demo --prefix report- --json
