"""Pool and listener figures that the other metric tests leave out, read
where operators and plugins read them: /metrics, the JSON API, and the
plugin metrics through watch alarms (GET /api/v1/alarms shows each alarm's
last value and its history of datapoints).
"""
import json
import signal
import socket
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



def test_queue_503s_count_in_the_pools_answers(backends, tern):
    # One slot on the only server, one place in the queue, a short wait.
    (b,) = backends(1)
    port, admin = free_port(), free_port()
    t = tern(
        "global:\n  workers: 1\n"
        f"admin:\n  listen: 127.0.0.1:{admin}\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}\n"
        "pools:\n  web:\n    queue_size: 1\n    timeouts: { queue: 300ms }\n"
        f"    servers:\n      - {{ name: b1, address: {b.address}, max_connections: 1 }}\n",
        wait_ports=[port, admin])
    api = Api(admin)

    def prom(name, **labels):
        return metric(parse_metrics(api.get("/metrics")[2]), name, pool="web", **labels)

    def get(path, out):
        out.append(status_of(raw_exchange(
            port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
            timeout=scaled(10))))

    held, waited, refused = [], [], []
    slow = threading.Thread(target=get, args=(f"/slow?ms={int(scaled(3) * 1000)}", held))
    slow.start()
    assert wait_for(lambda: prom("tern_pool_active_connections") == 1, 5)
    queued = threading.Thread(target=get, args=("/", waited))
    queued.start()
    assert wait_for(lambda: prom("tern_pool_queued") == 1, 5)
    get("/", refused)  # the queue is full: 503 at once
    queued.join()  # 503 when its wait ran out
    slow.join()
    assert (held, waited, refused) == ([200], [503], [503])

    m = parse_metrics(api.get("/metrics")[2])
    assert metric(m, "tern_pool_responses_total", pool="web", code="5xx") == 2
    assert metric(m, "tern_pool_responses_total", pool="web", code="2xx") == 1
    assert metric(m, "tern_server_responses_total", pool="web", server="b1", code="5xx") == 0
    assert metric(m, "tern_pool_no_server_total", pool="web") == 1  # only the full queue
    pool = api.get("/api/v1/pools/web")[2]
    assert (pool["responses"]["5xx"], pool["responses"]["2xx"]) == (2, 1), pool
    t.stop()


# ---- per-listener counters ----


CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")


def listener_figures(api, name):
    """One listener's counters from /metrics, or None when the JSON API
    (read right after) does not say the same: figures still moving."""
    m = parse_metrics(api.get("/metrics")[2])
    fig = {f: metric(m, f"tern_listener_{f}", listener=name)
           for f in ("connections_total", "active_connections", "requests_total",
                     "bytes_in_total", "bytes_out_total")}
    fig["responses"] = {c: metric(m, "tern_listener_responses_total", listener=name, code=c)
                        for c in CLASSES}
    (j,) = [ls for ls in api.get("/api/v1/listeners")[2]["listeners"] if ls["name"] == name]
    same = {"connections_total": j["connections_total"],
            "active_connections": j["active_connections"], "requests_total": j["requests_total"],
            "bytes_in_total": j["bytes_in"], "bytes_out_total": j["bytes_out"],
            "responses": j["responses"] if fig["responses"]["2xx"] is not None
            else dict.fromkeys(CLASSES)}
    return fig if fig == same else None


def settles_at(api, name, want, timeout=5):
    return wait_for(lambda: listener_figures(api, name) == want, timeout) or (
        listener_figures(api, name), want)


def test_listener_counters_follow_each_listeners_traffic(backends, tern):
    (b,) = backends(1)
    hport, tport, admin = free_port(), free_port(), free_port()
    # Only the admin port is waited for: it opens after the listeners, and a
    # probe connection would count on a listener.
    t = tern(
        "global:\n  workers: 2\n"
        f"admin:\n  listen: 127.0.0.1:{admin}\n"
        "listeners:\n"
        f"  - {{ name: front, bind: 127.0.0.1:{hport}, mode: http, pool: web }}\n"
        f"  - {{ name: plain, bind: 127.0.0.1:{tport}, mode: tcp, pool: web }}\n"
        f"pools:\n  web:\n    servers:\n      - {{ name: b1, address: {b.address} }}\n",
        wait_ports=[admin])
    api = Api(admin)
    zero = {"connections_total": 0, "active_connections": 0, "requests_total": 0,
            "bytes_in_total": 0, "bytes_out_total": 0}
    assert listener_figures(api, "front") == dict(zero, responses=dict.fromkeys(CLASSES, 0))
    # A TCP listener has no responses of its own.
    assert listener_figures(api, "plain") == dict(zero, responses=dict.fromkeys(CLASSES))

    # HTTP: three pipelined requests on one connection (a body with the
    # head, a 404, a last one that closes), then one more connection.
    body = b"x" * 3000
    reqs = [
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3000\r\n\r\n" + body,
        b"GET /status/404 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /big?n=20000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ]
    got = [raw_exchange(hport, b"".join(reqs))]
    last = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    got.append(raw_exchange(hport, last))
    assert got[0].count(b"HTTP/1.1 200 ") == 2 and got[0].count(b"HTTP/1.1 404 ") == 1, got[0]
    assert status_of(got[1]) == 200
    sent = sum(map(len, reqs)) + len(last)
    want_front = {"connections_total": 2, "active_connections": 0, "requests_total": 4,
                  "bytes_in_total": sent, "bytes_out_total": sum(map(len, got)),
                  "responses": {"other": 0, "1xx": 0, "2xx": 3, "3xx": 0, "4xx": 1, "5xx": 0}}
    assert settles_at(api, "front", want_front) is True

    # TCP: two sessions of one request each, spliced through.
    treqs = [b"GET /big?n=5000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
             b"GET / HTTP/1.1\r\nHost: tcp-listener\r\nConnection: close\r\n\r\n"]
    tgot = [raw_exchange(tport, r) for r in treqs]
    assert all(status_of(g) == 200 for g in tgot), tgot
    want_plain = {"connections_total": 2, "active_connections": 0, "requests_total": 2,
                  "bytes_in_total": sum(map(len, treqs)),
                  "bytes_out_total": sum(map(len, tgot)),
                  "responses": dict.fromkeys(CLASSES)}
    assert settles_at(api, "plain", want_plain) is True
    # The other listener's figures did not move.
    assert listener_figures(api, "front") == want_front

    # A reload keeps them: they are kept by listener name.
    t.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: api.get("/api/v1/reload")[2].get("ok") is True, 10), t.log()
    assert listener_figures(api, "front") == want_front
    assert listener_figures(api, "plain") == want_plain

    # A connection open now is active on its listener only, until it closes.
    c = socket.create_connection(("127.0.0.1", hport), timeout=scaled(5))
    one = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    c.sendall(one)
    resp = b""
    while not resp.endswith(b"\r\n\r\nb1\n"):
        chunk = c.recv(65536)
        assert chunk, resp
        resp += chunk
    open_now = dict(want_front, connections_total=3, active_connections=1, requests_total=5,
                    bytes_in_total=want_front["bytes_in_total"] + len(one),
                    bytes_out_total=want_front["bytes_out_total"] + len(resp),
                    responses=dict(want_front["responses"], **{"2xx": 4}))
    assert settles_at(api, "front", open_now) is True
    assert listener_figures(api, "plain") == want_plain
    c.close()
    assert settles_at(api, "front", dict(open_now, active_connections=0)) is True
    t.stop()


# ---- pool latency percentiles and active connections ----


def test_latency_percentiles_and_active_connections_of_a_slow_backend(backends, tern):
    # Each answer takes DELAY ms at the backend, so every request lands in a
    # latency bucket that starts at 250 ms or later (the bounds around DELAY
    # are 250 and 500). A percentile is interpolated within its bucket: p50
    # of requests all in (250, 500] is 375, and slower ones only raise it.
    # So DELAY bounds p50, p95 and p99 from below whatever the machine's
    # speed, and a few seconds from above.
    DELAY, CLIENTS = 300, 3
    (b,) = backends(1)
    port, admin = free_port(), free_port()
    watch = "watch:\n  interval: 200ms\n  alarms:\n" + "".join(
        f"    - {{ name: {name}, metric: pool.web.{name}, statistic: maximum, above: 1000000,\n"
        "        period: 1s, evaluation_periods: 1 }\n"
        for name in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "active_connections"))
    t = tern(
        "global:\n  workers: 2\n"
        f"admin:\n  listen: 127.0.0.1:{admin}\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}\n"
        f"pools:\n  web:\n    servers:\n      - {{ name: b1, address: {b.address} }}\n" + watch,
        wait_ports=[port, admin])

    def values_when(pred):
        """{alarm: last value} of the first evaluation for which pred holds."""
        def once():
            v = {name: a["value"] for name, a in alarms(admin).items()}
            return v if v and pred(v) else None
        return once

    # Idle: nothing in flight, and no latency at all (missing, not zero).
    idle = wait_for(values_when(lambda v: v["active_connections"] == 0), 10)
    assert idle, alarms(admin)
    assert all(idle[f"latency_{q}_ms"] is None for q in ("p50", "p95", "p99")), idle

    loads = [Traffic(port, f"/slow?ms={DELAY}") for _ in range(CLIENTS)]
    try:
        # Every client's request in flight at once shows as active.
        busy = wait_for(values_when(lambda v: v["active_connections"] == CLIENTS
                                    and v["latency_p50_ms"] is not None), 15)
        time.sleep(scaled(2))  # a few more periods of history
        last = alarms(admin)
    finally:
        statuses = [s for load in loads for s in load.stop()]
    assert busy, last
    assert statuses and set(statuses) == {200}, statuses
    # One evaluation: the percentiles of the same samples are in order.
    p50, p95, p99 = (busy[f"latency_{q}_ms"] for q in ("p50", "p95", "p99"))
    assert DELAY <= p50 <= p95 <= p99 <= scaled(5) * 1000, (p50, p95, p99)
    for q in ("p50", "p95", "p99"):
        seen = [p["value"] for p in last[f"latency_{q}_ms"]["history"] if p["value"] is not None]
        assert seen and all(DELAY <= v <= scaled(5) * 1000 for v in seen), (q, seen)
    seen = [p["value"] for p in last["active_connections"]["history"] if p["value"] is not None]
    assert seen and all(0 <= v <= CLIENTS for v in seen), seen

    # Traffic over: back to no request in flight.
    assert wait_for(lambda: alarms(admin)["active_connections"]["value"] == 0, 10), alarms(admin)
    t.stop()
