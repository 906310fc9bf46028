#!/usr/bin/env bash
# Runs tern in the foreground on conf/demo.yaml with three local demo backends.
set -euo pipefail
cd "$(dirname "$0")/.."
tern=${1:-build/lb/tern}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
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

  dashboard: http://127.0.0.1:9900/   (admin token: $token)
    build/lb/tern ctl pools

  Ctrl-C stops it. Access log below.

MSG
"$tern" -c conf/demo.yaml
