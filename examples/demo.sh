#!/usr/bin/env bash
# examples/demo.sh — what `make demo` runs: list the store "demo" of examples/storage through the
# module, against the local API emulator, printing each command before its output and, first,
# the environment those commands need, as an `export` line to paste.
#
#   bash examples/demo.sh         the demo; it uses the emulator that `make emulator` left running
#                                 in EMULATOR_RUNDIR, or else starts one and stops it at the end
#   bash examples/demo.sh start   (make emulator) start an emulator over examples/storage in
#                                 EMULATOR_RUNDIR that keeps running; print its export line
#   bash examples/demo.sh stop    (make emulator-stop) stop it
#
# LUA picks the interpreter (lua5.4; lua5.1, lua5.2, lua5.3, luajit), EMULATOR_RUNDIR the
# emulator's run directory (build/emulator).
set -euo pipefail
cd "$(dirname "$0")/.."

LUA=${LUA:-lua5.4}
build=${LUA#lua}
[ "$LUA" = luajit ] && build=jit
TOKEN=demo-token
RUNDIR=${EMULATOR_RUNDIR:-build/emulator}

# The base URL of the emulator running in $RUNDIR, if one is.
running_url() {
  local pid
  pid=$(cat "$RUNDIR/nginx.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && cat "$RUNDIR/base_url"
}

# What the commands need (run from the repository root): the module, the API, the token.
print_env() {
  echo "export LUA_CPATH='build/$build/?.so;;' APIFY_API_BASE_URL='$1' APIFY_TOKEN='$TOKEN'"
}

start() {
  local url
  if url=$(running_url); then
    echo "# the local API emulator is already running at $url ($RUNDIR)"
  else
    mkdir -p "$RUNDIR"
    url=$(KVS_EMULATOR_TOKEN="$TOKEN" "$LUA" emulator/launch.lua start --storage examples/storage --rundir "$RUNDIR")
    echo "# local API emulator at $url (store 'demo' from examples/storage); it keeps running:"
    echo "# stop it with make emulator-stop"
  fi
  echo "# the environment of the commands make demo prints (paste it in the repository root):"
  print_env "$url"
}

case "${1:-demo}" in
  start) start; exit ;;
  stop)
    if running_url >/dev/null; then
      "$LUA" emulator/launch.lua stop --rundir "$RUNDIR" && echo "# the emulator in $RUNDIR stopped"
    else
      echo "# no emulator running in $RUNDIR"
    fi
    exit ;;
  demo) ;;
  *) echo "usage: demo.sh [start|stop]" >&2; exit 2 ;;
esac

if base_url=$(running_url); then
  echo "# the local API emulator at $base_url, left running by make emulator ($RUNDIR)"
else
  rundir=$(mktemp -d /tmp/apify-kvs-demo.XXXXXX)
  stop() { "$LUA" emulator/launch.lua stop --rundir "$rundir" >/dev/null 2>&1 || true; rm -rf "$rundir"; }
  trap stop EXIT
  base_url=$(KVS_EMULATOR_TOKEN="$TOKEN" "$LUA" emulator/launch.lua start --storage examples/storage --rundir "$rundir")
  echo "# local API emulator at $base_url (store 'demo' from examples/storage), stopped when"
  echo "# this demo ends. To run the commands yourself, keep one running: make emulator (it prints"
  echo "# the export line for its URL; make demo then uses it too), later make emulator-stop."
fi
echo "# The commands below need this environment (paste it in the repository root):"
print_env "$base_url"
eval "$(print_env "$base_url")"      # the demo runs with exactly what it printed

# "# what:  command", then the command's output
show() {
  local what=$1; shift
  echo; echo "# $what:  $*"
  "$@"
}
show "every key" "$LUA" examples/list_keys.lua demo
show "prefix 'img-'" "$LUA" examples/list_keys.lua demo img-
show "batches of 10, resuming from the last key" "$LUA" examples/resume.lua demo 10
show "one page as a table" "$LUA" examples/one_page.lua demo 3
show "an error, as a value (exit status 1)" "$LUA" examples/one_page.lua no-such-store || true
show "the command-line tool, JSON lines" "$LUA" bin/apify-kvs keys demo --prefix report- --json
