#!/usr/bin/env bash
# Runs tern in the foreground on conf/demo.yaml with three local demo backends,
# and a scaling group whose backends scripts/demo-scale.sh starts and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
tern=${1:-build/lb/tern}
pids=()
export TERN_DEMO_STATE=${TERN_DEMO_STATE:-/tmp/tern-demo-scale}
# The scaling group's backends outlive tern (a restarted tern adopts them);
# the demo stops them with itself, and starts from none.
stop_scaled() {
    [ -f "$TERN_DEMO_STATE/servers" ] || return 0
    while read -r _ pid _; do kill "$pid" 2>/dev/null || true; done <"$TERN_DEMO_STATE/servers"
    rm -rf "$TERN_DEMO_STATE"
}
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    stop_scaled
}
stop_scaled
trap cleanup EXIT
for i in 1 2 3; do
    python3 tests/tools/backend.py --port 910$i --name demo$i >/dev/null &
    pids+=($!)
done
sleep 0.5
export TERN_DEMO_TOKEN_FILE=${TERN_DEMO_TOKEN_FILE:-/tmp/tern-demo.token}
token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
(umask 077 && printf '%s\n' "$token" >"$TERN_DEMO_TOKEN_FILE")
cat <<MSG

  tern demo: three backends on 127.0.0.1:9101-9103 (demo1 has weight 2)

    curl http://127.0.0.1:8080/          # answered by demo1, demo1, demo2, demo3, ...
    curl http://127.0.0.1:8080/api/x     # routed to pool "api" (demo3)
    curl http://127.0.0.1:8081/          # the same servers through the TCP listener
    wrk -c 50 -d 5s http://127.0.0.1:8080/

  scaling: pool "scaled" behind 127.0.0.1:8082 starts with one server; load it

    wrk -c 20 -d 60s http://127.0.0.1:8082/

  and watch the Scaling panel: over 50 requests/s it adds a server every 5 s
  (up to 4); once wrk stops it drains and stops them again, down to 1.

  dashboard: http://127.0.0.1:9900/   (admin token: $token)
    build/lb/tern ctl pools

  Ctrl-C stops it. Access log below.

MSG
"$tern" -c conf/demo.yaml
