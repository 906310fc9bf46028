#!/bin/sh
# The demo's scaling provider (conf/demo.yaml, scale: exec): one script for
# create, destroy and list, told apart by TERN_ACTION. A "server" is a local
# tests/tools/backend.py on a free loopback port; $TERN_DEMO_STATE (default
# /tmp/tern-demo-scale) holds one "name pid host:port" line per server, so
# destroy knows what to kill and list what a restarted tern may adopt.
set -u
cd "$(dirname "$0")/.."
state=${TERN_DEMO_STATE:-/tmp/tern-demo-scale}
mkdir -p "$state"
touch "$state/servers"

case "$TERN_ACTION" in
create)
    # Port 0 would be simpler, but backend.py reports the port it was given.
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    out="$state/$TERN_SERVER.out"
    python3 tests/tools/backend.py --port "$port" --name "$TERN_SERVER" >"$out" 2>&1 </dev/null &
    pid=$!
    i=0
    until grep -q ready "$out" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$out" >&2; exit 1; }
        i=$((i + 1))
        [ $i -gt 100 ] && { kill "$pid"; exit 1; }
        sleep 0.05
    done
    echo "$TERN_SERVER $pid 127.0.0.1:$port" >>"$state/servers"
    echo "127.0.0.1:$port"
    ;;
destroy)
    pid=$(awk -v n="$TERN_SERVER" '$1 == n { print $2 }' "$state/servers")
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    grep -v "^$TERN_SERVER " "$state/servers" >"$state/servers.tmp"
    mv "$state/servers.tmp" "$state/servers"
    rm -f "$state/$TERN_SERVER.out"
    ;;
list)
    while read -r name pid addr; do
        kill -0 "$pid" 2>/dev/null && echo "$name $addr"
    done <"$state/servers"
    ;;
*)
    echo "unknown TERN_ACTION '$TERN_ACTION'" >&2
    exit 2
    ;;
esac
exit 0
