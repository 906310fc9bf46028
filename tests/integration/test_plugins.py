"""What the plugin host gives plugins, end to end: host metrics of the
registry (pool.<pool>.queued) seen through a watch alarm, and the
configuration sections of third-party modules."""
import json
import os
import signal
import subprocess
import threading
import urllib.request

import pytest

from conftest import ROOT, TERN, free_port, wait_for


def alarm(admin, name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1/alarms", timeout=2) as r:
            doc = json.loads(r.read())
    except (OSError, ValueError):
        return None
    return next((a for a in doc.get("alarms", []) if a["name"] == name), None)


def test_pool_queued_metric(backends, tern):
    """One slot (max_connections: 1) and eight slow requests: seven wait in
    the queue, pool.web.queued says so, its alarm goes to ALARM; once they
    are answered the queue is empty and the alarm back to OK."""
    (b,) = backends(1)
    port, admin = free_port(), free_port()
    t = tern(f"""global:
  workers: 2
admin:
  listen: 127.0.0.1:{admin}
listeners:
  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}
pools:
  web:
    servers: [ {{ name: b1, address: "{b.address}", max_connections: 1 }} ]
    queue_size: 50
    timeouts: {{ queue: 20s, server: 10s }}
watch:
  interval: 200ms
  alarms:
    - {{ name: queue-long, metric: pool.web.queued, statistic: maximum, above: 4, period: 1s,
        evaluation_periods: 1 }}
""", wait_ports=[port, admin])
    assert wait_for(lambda: (alarm(admin, "queue-long") or {}).get("state") == "OK", 10), t.log()
    statuses = []

    def get():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/slow?ms=400", timeout=30) as r:
                statuses.append(r.status)
        except OSError as e:
            statuses.append(repr(e))

    threads = [threading.Thread(target=get) for _ in range(8)]
    for th in threads:
        th.start()
    a = wait_for(lambda: (lambda a: a if a and a["state"] == "ALARM" else None)(
        alarm(admin, "queue-long")), 10)
    for th in threads:
        th.join()
    assert a, f"{alarm(admin, 'queue-long')}\n{t.log()}"
    assert max(p["value"] for p in a["history"] if p["value"] is not None) >= 5, a
    assert statuses == [200] * 8, statuses
    # Every queued request left the count: the gauge is back to zero.
    a = wait_for(lambda: (lambda a: a if a and a["state"] == "OK" and a["value"] == 0 else None)(
        alarm(admin, "queue-long")), 10)
    assert a, alarm(admin, "queue-long")


# ---- a third-party module's section ----

GREETER = os.path.join(os.environ.get("TERN_BUILD") or os.path.join(ROOT, "build"), "tests",
                       "greeter.so")


def greeter_config(port, section):
    return (f"global:\n  workers: 1\n  plugins: [ {GREETER} ]\n"
            "listeners:\n"
            f"  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}\n"
            "pools:\n  web:\n    servers: []\n" + section)


def check(tmp_path, text):
    """tern -t on text: (exit code, output)."""
    conf = tmp_path / "t.yaml"
    conf.write_text(text)
    r = subprocess.run([TERN, "-t", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def test_third_party_section_is_checked_and_given(tern, tmp_path):
    """greeter.so (tests/plugins/greeter.c) declares `greeter:` with a
    schema: the plugin gets the section with its defaults applied and its
    file name resolved next to the configuration file; a reload hands it
    the new values."""
    if not os.path.exists(GREETER):
        pytest.fail(f"{GREETER} is missing: the build makes it (tests/meson.build)")
    port = free_port()
    section = ("greeter:\n  every: 2s\n  names: [ ann, bob ]\n  words: words.txt\n"
               "  target: { host: example }\n"
               "  targets: [ { host: a }, { host: b, port: 8080 } ]\n")
    t = tern(greeter_config(port, section), wait_ports=[port])
    here = os.path.dirname(t.conf)
    want = (f"greeter: init: greeting=hello every=2000 times=3 loud=false names=[2] "
            f"words={here}/words.txt target={{example:80}} targets=[2]")
    assert wait_for(lambda: want in t.log(), 5), t.log()
    with open(t.conf, "w") as f:
        f.write(greeter_config(port, "greeter:\n  every: 1s\n  greeting: hi\n  times: 7\n"))
    t.proc.send_signal(signal.SIGHUP)
    want = "greeter: reload: greeting=hi every=1000 times=7 loud=false"
    assert wait_for(lambda: want in t.log(), 5), t.log()
    line = [l for l in t.log().splitlines() if "greeter: reload:" in l][-1]
    assert "target=" not in line and "words=" not in line, line


def test_third_party_section_errors(tmp_path):
    """Mistakes in the section are configuration errors with their place,
    found by `tern -t` like any other; without the module in
    global.plugins the section is an unknown key."""
    port = free_port()
    rc, out = check(tmp_path, greeter_config(port, "greeter:\n  every: 2s\n  greting: hi\n"))
    assert rc == 1 and "t.yaml:11:3: greeter.greting: unknown key" in out, out
    assert "did you mean 'greeting'" in out, out
    rc, out = check(tmp_path, greeter_config(port, "greeter:\n  every: 2s\n  times: 11\n"))
    assert rc == 1 and "t.yaml:11:10: greeter.times:" in out, out
    rc, out = check(tmp_path, greeter_config(port, "greeter:\n  times: 2\n"))
    assert rc == 1 and "greeter: missing required key 'every'" in out, out
    rc, out = check(tmp_path, greeter_config(port, "greeter:\n  every: 2s\n  target: {}\n"))
    assert rc == 1 and "greeter.target: missing required key 'host'" in out, out
    rc, out = check(tmp_path, greeter_config(
        port, "greeter:\n  every: 2s\n  targets: [ { host: a, port: 0 } ]\n"))
    assert rc == 1 and "greeter.targets[0].port:" in out, out
    rc, out = check(tmp_path, greeter_config(port, "greeter:\n  every: 2s\n"))
    assert rc == 0, out
    no_module = greeter_config(port, "greeter:\n  every: 2s\n").replace(
        f"  plugins: [ {GREETER} ]\n", "")
    rc, out = check(tmp_path, no_module)
    assert rc == 1 and "greeter: unknown key" in out, out
