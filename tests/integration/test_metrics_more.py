"""Pool and listener figures that the other metric tests leave out, read
where operators and plugins read them: /metrics, the JSON API, and the
plugin metrics through watch alarms (GET /api/v1/alarms shows each alarm's
last value and its history of datapoints).
"""
import json
import threading
import time
import urllib.request

from conftest import free_port, raw_exchange, scaled, status_of, wait_for
from test_admin import Api, metric, parse_metrics


def alarms(admin):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1/alarms", timeout=2) as r:
            doc = json.loads(r.read())
    except (OSError, ValueError):
        return {}
    return {a["name"]: a for a in doc.get("alarms", [])}


def alarm_state(admin, name):
    return alarms(admin).get(name, {}).get("state")


def raised(admin, name):
    """The alarm as it is while in ALARM (its value is the last period's),
    else None."""
    a = alarms(admin).get(name)
    return a if a and a["state"] == "ALARM" else None


class Traffic:
    """Requests one after another on fresh connections until stopped; keeps
    every answer's status."""

    def __init__(self, port, path="/"):
        self.port, self.path = port, path
        self.statuses = []
        self.stop_flag = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        req = f"GET {self.path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        while not self.stop_flag.is_set():
            self.statuses.append(status_of(raw_exchange(self.port, req)))
            time.sleep(0.02)

    def stop(self):
        self.stop_flag.set()
        self.t.join()
        return self.statuses


# ---- pool error rate with every server down ----


def test_error_rate_counts_503s_when_no_server_is_usable(tern):
    # Two servers nobody listens on: the tcp check takes both down, and from
    # then on tern answers every request itself with 503.
    port, admin = free_port(), free_port()
    dead = [free_port(), free_port()]
    t = tern(
        "global:\n  workers: 2\n"
        f"admin:\n  listen: 127.0.0.1:{admin}\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}\n"
        "pools:\n  web:\n"
        "    health_check: { type: tcp, interval: 100ms, timeout: 100ms, fall: 1, rise: 1 }\n"
        "    servers:\n"
        + "".join(f"      - {{ name: s{i}, address: 127.0.0.1:{p} }}\n" for i, p in enumerate(dead))
        + "watch:\n  interval: 200ms\n  alarms:\n"
        "    - { name: web-errors, metric: pool.web.error_rate, above: 0.5, period: 1s,\n"
        "        evaluation_periods: 1, datapoints_to_alarm: 1 }\n",
        wait_ports=[port, admin])
    api = Api(admin)
    assert wait_for(lambda: metric(parse_metrics(api.get("/metrics")[2]),
                                   "tern_pool_healthy_servers", pool="web") == 0, 10), t.log()

    load = Traffic(port)
    try:
        a = wait_for(lambda: raised(admin, "web-errors"), 15)
    finally:
        statuses = load.stop()
    assert a, f"the error rate alarm stayed {alarm_state(admin, 'web-errors')}:\n{t.log()}"
    assert statuses and set(statuses) == {503}, statuses
    assert a["value"] == 1.0, a
    assert all(p["value"] in (None, 1.0) for p in a["history"]), a["history"]

    # /metrics and the JSON API count the same answers the clients got.
    n = len(statuses)
    m = parse_metrics(api.get("/metrics")[2])
    assert metric(m, "tern_pool_responses_total", pool="web", code="5xx") == n
    for code in ("other", "1xx", "2xx", "3xx", "4xx"):
        assert metric(m, "tern_pool_responses_total", pool="web", code=code) == 0, code
    assert metric(m, "tern_pool_requests_total", pool="web") == n
    assert metric(m, "tern_pool_no_server_total", pool="web") == n
    for i in range(len(dead)):
        assert metric(m, "tern_server_responses_total", pool="web", server=f"s{i}",
                      code="5xx") == 0
    pool = api.get("/api/v1/pools/web")[2]
    assert pool["responses"] == {"other": 0, "1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": n}
    assert pool["requests_total"] == n and pool["no_server_total"] == n
    assert all(s["responses"]["5xx"] == 0 for s in pool["servers"])
    t.stop()
