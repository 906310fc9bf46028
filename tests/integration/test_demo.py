"""`make demo`'s scaling loop, briefly and with bounded load.

Runs conf/demo.yaml as scripts/demo.sh does (from the repository, so that
its exec provider finds scripts/demo-scale.sh), on free ports instead of the
demo's fixed ones. Load from a few threads (bounded in time and count)
raises scaled-busy and the group grows from 1 to 3 servers, each a
backend.py the script started; without load scaled-idle brings it back to
1, every request answered, and the script's stopped servers are gone. When
headless Chromium runs (test_dashboard's browser), the dashboard's Scaling
panel must show the group's launches and then its terminations.
"""
import os
import re
import signal

import pytest

import test_dashboard
from conftest import ROOT, SANITIZED, free_port, wait_for
from test_dashboard import browser  # noqa: F401 (a fixture, used by name)
from test_scale import Load, in_service, scale_api, settled

DEMO = os.path.join(ROOT, "conf", "demo.yaml")


def demo_config():
    """conf/demo.yaml with its listeners and admin on free ports."""
    with open(DEMO) as f:
        text = f.read()
    ports = {}
    for old in ("8080", "8081", "8082", "9900"):
        ports[old] = free_port()
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{ports[old]}")
    return text, ports


def pids(state):
    try:
        with open(os.path.join(state, "servers")) as f:
            return {l.split()[0]: int(l.split()[1]) for l in f if l.strip()}
    except OSError:
        return {}


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def page(request, admin):
    """The dashboard in headless Chromium, or None where it cannot run."""
    try:
        d = request.getfixturevalue("browser")
    except pytest.skip.Exception:
        return None
    d.get(f"http://127.0.0.1:{admin}/")
    return d


def panel_shows(d, what, css):
    """Waits until the Scaling panel has an element matching css."""
    if d is not None:
        test_dashboard.wait_for(d, what, lambda d: d.find_elements(
            "css selector", f'#scale [data-group="scaled"] {css}'))


def test_demo_script_names_the_scaled_listener():
    with open(os.path.join(ROOT, "scripts", "demo.sh")) as f:
        script = f.read()
    with open(DEMO) as f:
        conf = f.read()
    wrk = re.search(r"wrk -c 20 -d 60s http://127\.0\.0\.1:(\d+)/", script)
    assert wrk, "demo.sh prints the wrk command for the scaled pool"
    assert re.search(rf"bind: 127\.0\.0\.1:{wrk.group(1)}\s+mode: http\s+pool: scaled", conf)
    assert "http://127.0.0.1:9900/" in script


def test_demo_scales_out_and_back(tern, tmp_path, monkeypatch, request):
    if SANITIZED:
        # The scale plugin runs under ASan in test_scale.py; this test is about
        # the demo's own timings (cooldowns of seconds), 35 s of make test.
        pytest.skip("the demo's scaling loop runs against the release binary only "
                    "(make test's time budget)")
    state = str(tmp_path / "state")
    token = tmp_path / "token"
    token.write_text("demo-token\n")
    monkeypatch.setenv("TERN_DEMO_STATE", state)
    monkeypatch.setenv("TERN_DEMO_TOKEN_FILE", str(token))
    monkeypatch.chdir(ROOT)
    text, ports = demo_config()
    port, admin = ports["8082"], ports["9900"]
    t = tern(text, wait_ports=[port, admin])
    try:
        # min 1: the script starts scaled-tern-1.
        assert wait_for(lambda: settled(scale_api(admin), 1), 15), f"{scale_api(admin)}\n{t.log()}"
        started = pids(state)
        assert list(started) == ["scaled-tern-1"] and alive(started["scaled-tern-1"])
        d = page(request, admin)
        panel_shows(d, "the group with its first server", '[data-server="scaled-tern-1"]')

        # Load over 50 requests/s: a server every 5 s cooldown, 1 -> 3.
        load = Load(port, threads=4)
        try:
            g = wait_for(lambda: (lambda g: g if len(in_service(g)) >= 3 or load.ok > 20000
                                  else None)(scale_api(admin)), 30)
        finally:
            load.stop()
        assert g and len(in_service(g)) >= 3, f"{scale_api(admin)}\n{t.log()}"
        grown = pids(state)
        assert len(grown) >= 3 and all(alive(p) for p in grown.values()), grown
        panel_shows(d, "a launch on scaled-busy", '[data-action="launch"] + [data-action="desired"]')

        # No load: back to min, newest first, and their processes stopped.
        g = wait_for(lambda: (lambda g: g if settled(g, 1) else None)(scale_api(admin)), 40)
        assert g, f"{scale_api(admin)}\n{t.log()}"
        assert in_service(g) == ["scaled-tern-1"]
        assert load.failed == [], load.failed[:5]
        assert pids(state).keys() == {"scaled-tern-1"}
        gone = [p for n, p in grown.items() if n != "scaled-tern-1"]
        assert wait_for(lambda: not any(alive(p) for p in gone), 5), gone
        reasons = " ".join(a["reason"] for a in g["activities"])
        assert "scaled-busy" in reasons and "scaled-idle" in reasons, g["activities"]
        panel_shows(d, "a termination", '[data-action="terminate"]')
    finally:
        t.stop()
        for p in pids(state).values():
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
