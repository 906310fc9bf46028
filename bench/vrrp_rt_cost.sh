#!/bin/sh
# What the control thread's SCHED_FIFO (global.vrrp_rt_priority) costs the
# workers: requests/s through tern with a VRRP master advertising every
# 20 ms, alternately with vrrp_rt_priority 0 and 10. Everything runs in one
# throw-away network namespace (a veth pair for VRRP, loopback for HTTP).
# Needs root and wrk. Usage: sudo bench/vrrp_rt_cost.sh [TERN] [PAIRS]
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TERN=${1:-$ROOT/build/lb/tern}
PAIRS=${2:-5}
NS=tern-rtcost-$$
DIR=$(mktemp -d)
ip netns add $NS
trap 'kill $TP $BP 2>/dev/null; wait 2>/dev/null; ip netns del $NS; rm -rf $DIR' EXIT
ip -n $NS link set lo up
ip -n $NS link add d0 type veth peer name d1
ip -n $NS link set d1 up
ip -n $NS link set d0 up
ip -n $NS addr add 10.9.0.1/24 dev d0
ip netns exec $NS /usr/bin/python3 "$ROOT/tests/tools/backend.py" --port 9000 --name b \
    >/dev/null 2>&1 &
BP=$!
sleep 0.5
i=0
while [ $i -lt $((PAIRS * 2 + 1)) ]; do
    rt=$(( (i % 2) * 10 ))
    cat >"$DIR/t.yaml" <<EOY
global:
  workers: 2
  vrrp_rt_priority: $rt
listeners:
  - { name: web, bind: 127.0.0.1:8080, mode: http, pool: web }
pools:
  web:
    servers:
      - { name: local, address: 127.0.0.1:9000 }
vrrp:
  - { name: v, interface: d0, vrid: 9, priority: 255, advert_interval: 20ms,
      virtual_ips: [ 10.9.0.100/24 ] }
EOY
    ip netns exec $NS "$TERN" -c "$DIR/t.yaml" 2>"$DIR/tern.log" &
    TP=$!
    sleep 0.5
    # The first run only warms up.
    r=$(ip netns exec $NS wrk -t2 -c64 -d5s http://127.0.0.1:8080/ | awk '/Requests\/sec/ {print $2}')
    [ $i -gt 0 ] && echo "vrrp_rt_priority=$rt requests/s=$r"
    kill $TP
    wait $TP || true
    i=$((i + 1))
done
