"""Server up/down events as plugins hear them: each transition of a
server's health or admin state is published when it happens, so one that
goes down and comes back within the sampler's second is heard twice, in
order, and the sampler does not publish it again. A third-party plugin
compiled here (test_watch2's spy) logs every event it is told.
"""
import shutil
import tempfile
import time

import pytest

from conftest import free_port, scaled, wait_for
from test_admin import Api, token_file  # noqa: F401 (token_file is a fixture, used by name)
from test_watch import compile_plugin
from test_watch2 import SPY, backend_switch, events

UP, DOWN = 1, 2


@pytest.fixture
def spy_so():
    d = tempfile.mkdtemp(prefix="tern-events-")
    yield compile_plugin(d, "spy", f'#define LEVEL_FILE "{d}/level"\n' + SPY)
    shutil.rmtree(d, ignore_errors=True)


def config(so, port, admin, token, servers, health=""):
    return (
        f"global:\n  workers: 1\n  plugins: [ {so} ]\n"
        f"admin:\n  listen: 127.0.0.1:{admin}\n  token_file: {token}\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}\n"
        f"pools:\n  web:\n{health}    servers:\n"
        + "".join(f"      - {{ name: {s.name}, address: {s.address} }}\n" for s in servers)
    )


def up_down(log, server):
    """The server's up and down events, oldest first, as (type, state, detail)."""
    return [(int(e["type"]), e["state"], e["detail"]) for e in events(log, server=server)
            if e["type"] in (str(UP), str(DOWN))]


def test_admin_flaps_are_each_heard_once(backends, tern, spy_so, token_file):  # noqa: F811
    """maint then enable, drain then enable, each pair sent back to back
    (well inside one second): four events in order, with the admin state
    and the call that made them. Calls that change nothing (enable of a
    ready server, a new weight) and the sampler's later seconds add none."""
    b1, b2 = backends(2)
    port, admin = free_port(), free_port()
    t = tern(config(spy_so, port, admin, token_file, [b1, b2]), wait_ports=[port, admin])
    assert wait_for(lambda: "plugin spy loaded" in t.log(), 5), t.log()
    api = Api(admin)
    base = "/api/v1/pools/web/servers/b1"
    for path in ("/maint", "/enable", "/drain", "/enable", "/enable"):
        st, _, _ = api.call("POST", base + path)
        assert st in (200, 202), (path, st)
    st, _, _ = api.call("PATCH", base, {"weight": 3})
    assert st == 200
    via = "through the admin API"
    want = [(DOWN, "maint", f"set to maint {via}"), (UP, "ready", f"set to ready {via}"),
            (DOWN, "drain", f"set to drain {via}"), (UP, "ready", f"set to ready {via}")]
    assert wait_for(lambda: len(up_down(t.log(), "b1")) >= 4, 5), t.log()
    time.sleep(scaled(2.5))  # the sampler's passes over the same server
    assert up_down(t.log(), "b1") == want, t.log()
    assert up_down(t.log(), "b2") == [], t.log()
    for e in events(t.log(), server="b1"):
        assert e["pool"] == "web" and e["source"] == "tern" and e["fresh"] == "1", e


def test_health_flaps_are_each_heard_once(backends, tern, spy_so, token_file):  # noqa: F811
    """A health check that fails once and passes once (rise 1, fall 1,
    every 100 ms), five times over: each down lasts a probe or two, well
    under the sampler's second, yet plugins hear ten events, down and up
    in turn, and no more once the sampler has looked again."""
    (b1,) = backends(1)
    port, admin = free_port(), free_port()
    health = ("    health_check: { type: http, path: /healthz, interval: 100ms, timeout: 500ms,"
              " rise: 1, fall: 1 }\n")
    t = tern(config(spy_so, port, admin, token_file, [b1], health), wait_ports=[port, admin])
    assert wait_for(lambda: "plugin spy loaded" in t.log(), 5), t.log()
    flaps = 5
    for i in range(1, flaps + 1):
        backend_switch(b1, "/healthz/fail")
        assert wait_for(lambda: t.log().count("server b1 is DOWN") == i, 5), t.log()
        backend_switch(b1, "/healthz/ok")
        assert wait_for(lambda: t.log().count("server b1 is UP") == i, 5), t.log()
    time.sleep(scaled(2.5))
    want = [(DOWN, "ready", "health check failed"), (UP, "ready", "health check passed")] * flaps
    assert up_down(t.log(), "b1") == want, t.log()
    # Each is published with its transition: the spy's line follows the
    # daemon's own.
    lines = t.log().splitlines()
    for k, line in enumerate(lines):
        if "server b1 is DOWN" in line or "server b1 is UP" in line:
            assert "spy: event type=" in lines[k + 1], lines[k:k + 2]
