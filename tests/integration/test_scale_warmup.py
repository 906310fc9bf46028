"""scale[].warmup with target tracking, end to end with test_scale's exec
provider scripts: while a server the group launched warms up, no reading
of the metric lowers desired (conf/REFERENCE.md), also one at the target
while a failed launch has left the group short of desired. The metric is
test_watch2's spy plugin's spy.level, which reads what the test writes.
"""
import os
import signal
import time

from conftest import free_port, scaled, wait_for
from test_scale import scale_api, scripts, target_tracking  # noqa: F401 (scripts: a fixture)
from test_watch import compile_plugin
from test_watch2 import SPY


def lowered(g):
    return [a for a in (g or {}).get("activities", [])
            if a["action"] == "desired" and a["reason"].startswith("2 -> 1")]


def test_warmup_holds_target_tracking_below_desired(tern, scripts):  # noqa: F811
    """desired 2 and a provider that can make only web-tern-1: every other
    launch fails and waits its back-off, so the group has 1 server for a
    desired 2. spy.level at 2, twice the target, holds desired at 2; at 1,
    the target, target tracking recommends 1. With warmup 1h, web-tern-1 is
    warming and desired stays 2 (the group keeps trying); a reload to
    warmup 0s lets the same reading lower it to 1."""
    d = scripts
    create = os.path.join(d, "create.sh")
    with open(create) as f:
        text = f.read()
    with open(create, "w") as f:
        f.write(text.replace(f"dir={d}\n", f"dir={d}\n"
                             '[ "$TERN_SERVER" = web-tern-1 ] || { echo "no room" >&2; exit 1; }\n',
                             1))
    level = os.path.join(d, "level")
    with open(level, "w") as f:
        f.write("2\n")
    so = compile_plugin(d, "spy", f'#define LEVEL_FILE "{level}"\n' + SPY)
    port, admin = free_port(), free_port()
    yaml = target_tracking(port, admin, d, "metric: spy.level, target: 1, scale_in_stabilization: 0s")
    yaml = yaml.replace("  workers: 1\n", f"  workers: 1\n  plugins: [ {so} ]\n")
    yaml = yaml.replace("    min: 1\n    max: 3\n", "    min: 1\n    max: 2\n    desired: 2\n")
    t = tern(yaml.replace("    min: 1\n", "    min: 1\n    warmup: 1h\n"), wait_ports=[port])

    def short_after_failure(g):
        in_service = [s for s in (g or {}).get("servers", []) if s["state"] == "in_service"]
        failed = [a for a in (g or {}).get("activities", []) if a["result"].startswith("failed")]
        return g if len(in_service) == 1 and failed else None

    g = wait_for(lambda: short_after_failure(scale_api(admin)), 20)
    assert g and g["desired"] == 2, f"{scale_api(admin)}\n{t.log()}"
    with open(level, "w") as f:
        f.write("1\n")
    time.sleep(scaled(3))  # several ticks of the policy, each reading 1
    g = scale_api(admin)
    assert g["desired"] == 2 and lowered(g) == [], f"{g}\n{t.log()}"
    assert [s["warming"] for s in g["servers"] if s["state"] == "in_service"] == [True], g

    with open(t.conf, "w") as f:
        f.write(yaml)
    t.proc.send_signal(signal.SIGHUP)
    g = wait_for(lambda: (lambda g: g if g and g["desired"] == 1 else None)(scale_api(admin)), 20)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    (down,) = lowered(g)
    assert down["reason"] == "2 -> 1: spy.level is 1, target 1", down
