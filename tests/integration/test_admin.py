"""The admin API, /metrics and `tern ctl`, through the real binary.

Each test starts its own tern with an admin section, talks JSON to it over
loopback, and checks both the answer and what it did to the traffic.
"""
import collections
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import TERN, free_port, raw_exchange, scaled, status_of, wait_for

TOKEN = "t0k3n-for-tests"


def config(port, aport, servers, token_file=None, workers=2, balance="roundrobin",
           pool_extra="", admin_extra=""):
    admin = f"admin:\n  listen: 127.0.0.1:{aport}\n"
    if token_file:
        admin += f"  token_file: {token_file}\n"
    admin += admin_extra
    return (
        f"global:\n  workers: {workers}\n"
        + admin
        + "listeners:\n"
        f"  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}\n"
        "pools:\n"
        f"  web:\n    balance: {balance}\n{pool_extra}    servers:\n"
        + "".join(f"      - {{ name: {s.name}, address: {s.address} }}\n" for s in servers)
    )


@pytest.fixture
def token_file(tmp_path):
    p = tmp_path / "admin.token"
    p.write_text(f"  {TOKEN}\n\n")  # surrounding white space is trimmed
    return str(p)


@pytest.fixture
def setup(backends, tern, token_file):
    """Starts n backends and a tern with the admin API; returns
    (tern, proxy port, admin port, backends)."""

    def start(n=2, **kw):
        bs = backends(n)
        port, aport = free_port(), free_port()
        t = tern(config(port, aport, bs, token_file=token_file, **kw), [port, aport])
        return t, port, aport, bs

    return start


class Api:
    """A keep-alive JSON client of the admin API."""

    def __init__(self, port, token=TOKEN):
        self.port = port
        self.token = token
        self.conn = None

    def call(self, method, path, body=None, token="default", raw=None, headers=None):
        token = self.token if token == "default" else token
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(10))
            try:
                self.conn.request(method, path, body=data, headers=h)
                r = self.conn.getresponse()
                text = r.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        ctype = r.getheader("Content-Type", "")
        out = json.loads(text) if text and ctype.startswith("application/json") else text.decode()
        return r.status, r, out

    def get(self, path):
        return self.call("GET", path, token=None)


def http_get(port, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(10))
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def server_of(pool, name):
    return next((s for s in pool["servers"] if s["name"] == name), None)


def wait_until(pred, timeout=5.0, step=0.05):
    return wait_for(pred, timeout, step)


# ---- read-only routes ----


def test_get_routes_shapes(setup):
    t, port, aport, bs = setup(2)
    for _ in range(4):
        assert http_get(port)[0] == 200
    api = Api(aport)

    st, _, body = api.get("/api/v1/pools")
    assert st == 200
    (pool,) = body["pools"]
    for k in ("name", "balance", "servers", "servers_total", "healthy_servers",
              "active_connections", "requests_total", "requests_per_second", "no_server_total",
              "latency_ms"):
        assert k in pool, k
    assert pool["name"] == "web" and pool["balance"] == "roundrobin"
    assert pool["servers_total"] == 2 and pool["healthy_servers"] == 2
    assert pool["requests_total"] == 4
    assert set(pool["latency_ms"]) == {"p50", "p95", "p99"}
    assert pool["latency_ms"]["p50"] is not None and pool["latency_ms"]["p50"] >= 0
    srv = pool["servers"][0]
    for k in ("name", "address", "weight", "state", "health", "active_connections",
              "requests_total", "requests_per_second", "responses", "bytes_in", "bytes_out",
              "connect_errors", "latency_ms"):
        assert k in srv, k
    assert srv["state"] == "ready" and srv["health"] == "up" and srv["weight"] == 1
    assert set(srv["responses"]) == {"1xx", "2xx", "3xx", "4xx", "5xx", "other"}
    assert sum(s["responses"]["2xx"] for s in pool["servers"]) == 4
    assert sum(s["requests_total"] for s in pool["servers"]) == 4
    assert all(s["bytes_in"] > 0 and s["bytes_out"] > 0 for s in pool["servers"])

    st, _, one = api.get("/api/v1/pools/web")
    assert st == 200 and one["name"] == "web" and len(one["servers"]) == 2
    st, _, srv = api.get(f"/api/v1/pools/web/servers/{bs[0].name}")
    assert st == 200 and srv["address"] == bs[0].address
    assert api.get("/api/v1/pools/web/")[0] == 200  # a trailing slash is the same route

    st, _, ls = api.get("/api/v1/listeners")
    assert st == 200
    assert ls["listeners"] == [dict(ls["listeners"][0], name="web", bind=f"127.0.0.1:{port}",
                                    mode="http", pool="web")]
    assert api.get("/api/v1/vrrp")[2] == {"instances": []}
    assert api.get("/api/v1/alarms")[2] == {"alarms": []}
    assert api.get("/api/v1/scale")[2] == {"groups": []}
    st, _, rl = api.get("/api/v1/reload")
    assert st == 200 and rl["time"] is None and rl["errors"] == []

    st, r, html = api.get("/")
    assert st == 200 and r.getheader("Content-Type").startswith("text/html")
    assert "dashboard" in html.lower()

    # HEAD: the same headers, no body (the keep-alive connection stays usable).
    st, r, _ = api.call("HEAD", "/api/v1/pools", token=None)
    assert st == 200 and int(r.getheader("Content-Length")) > 0
    assert api.get("/api/v1/pools")[0] == 200

    for path in ("/api/v1/nothing", "/api/v2/pools", "/api/v1/pools/web/servers/b1/x/y",
                 "/favicon.ico", "/api/v1/pools/nope/history"):
        st, r, err = api.get(path)
        assert st == 404, path
        assert isinstance(err, dict) and err["status"] == 404 and err["error"], path
    st, _, err = api.get("/api/v1/pools/nope")
    assert st == 404 and "nope" in err["error"]
    st, _, err = api.get("/api/v1/pools/web/servers/nope")
    assert st == 404 and "nope" in err["error"]
    assert api.get("/api/v1/pools/%zz")[0] == 400


def test_rates_and_history(setup):
    t, port, aport, bs = setup(1)
    api = Api(aport)
    stop = time.monotonic() + scaled(2.5)
    n = 0
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(5))
    while time.monotonic() < stop:
        c.request("GET", "/")
        c.getresponse().read()
        n += 1
        time.sleep(0.005)
    c.close()
    pool = api.get("/api/v1/pools/web")[2]
    assert pool["requests_per_second"] > 0, pool
    assert pool["servers"][0]["requests_per_second"] > 0
    st, _, h = api.get("/api/v1/pools/web/history")
    assert st == 200 and h["interval_s"] == 1
    samples = h["samples"]
    assert 2 <= len(samples) <= 300
    assert all(set(s) == {"t", "rps", "p50_ms", "p99_ms"} for s in samples)
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    busy = [s for s in samples if s["rps"] > 0]
    assert busy and all(s["p50_ms"] is not None and s["p99_ms"] >= s["p50_ms"] for s in busy)
    assert abs(time.time() - samples[-1]["t"]) < scaled(3)
    # The rates add up to roughly what was sent (a tick is not exactly 1 s).
    assert sum(s["rps"] for s in samples) <= n * 1.25 + 5


# ---- authentication ----


def test_mutations_need_the_token(setup):
    t, port, aport, bs = setup(2)
    add = {"name": "x1", "address": "127.0.0.1:1"}
    calls = [
        ("POST", "/api/v1/pools/web/servers", add),
        ("POST", f"/api/v1/pools/web/servers/{bs[0].name}/drain", None),
        ("POST", f"/api/v1/pools/web/servers/{bs[0].name}/maint", None),
        ("PATCH", f"/api/v1/pools/web/servers/{bs[0].name}", {"weight": 9}),
        ("DELETE", f"/api/v1/pools/web/servers/{bs[0].name}?now=1", None),
        ("POST", "/api/v1/reload", None),
    ]
    api = Api(aport)
    before = api.get("/api/v1/pools/web")[2]
    for method, path, body in calls:
        for tok in (None, "wrong", TOKEN + "x", TOKEN[:-1], ""):
            st, r, err = api.call(method, path, body, token=tok)
            assert st == 401, (method, path, tok, err)
            assert "token" in err["error"] and err["status"] == 401
            assert r.getheader("WWW-Authenticate", "").startswith("Bearer")
        # Another scheme is not a bearer token either.
        st, _, _ = api.call(method, path, body, token=None,
                            headers={"Authorization": f"Basic {TOKEN}"})
        assert st == 401
    after = api.get("/api/v1/pools/web")[2]
    assert [(s["name"], s["state"], s["weight"]) for s in after["servers"]] == [
        (s["name"], s["state"], s["weight"]) for s in before["servers"]
    ]
    # The right token, with the scheme in any case, works.
    st, _, srv = api.call("POST", "/api/v1/pools/web/servers", add, token=None,
                          headers={"Authorization": f"bearer {TOKEN}"})
    assert st == 201 and srv["name"] == "x1"


def test_without_token_file_mutations_are_forbidden(backends, tern):
    bs = backends(1)
    port, aport = free_port(), free_port()
    tern(config(port, aport, bs), [port, aport])
    api = Api(aport)
    st, _, err = api.call("POST", "/api/v1/pools/web/servers",
                          {"name": "x", "address": "127.0.0.1:1"})
    assert st == 403 and "token_file" in err["error"]
    st, _, err = api.call("POST", "/api/v1/pools/web/servers/b1/drain", token=None)
    assert st == 403
    assert api.get("/api/v1/pools/web")[2]["servers"][0]["state"] == "ready"
    assert api.get("/api/v1/pools")[0] == 200  # reading needs no token


def test_unreadable_token_file_refuses_to_start(backends, tmp_path):
    bs = backends(1)
    port, aport = free_port(), free_port()
    path = tmp_path / "tern.yaml"
    path.write_text(config(port, aport, bs, token_file=str(tmp_path / "missing.token")))
    r = subprocess.run([TERN, "-c", str(path)], capture_output=True, text=True,
                       timeout=scaled(10))
    assert r.returncode != 0
    assert "token_file" in r.stderr and "missing.token" in r.stderr


# ---- bad input ----


def test_bad_input_is_refused_and_changes_nothing(setup):
    t, port, aport, bs = setup(2)
    api = Api(aport)
    b1 = bs[0].name
    servers = "/api/v1/pools/web/servers"
    bad = [
        ("POST", servers, None, "{", 400),
        ("POST", servers, None, '{"name": "x", "address": "127.0.0.1:1",}', 400),
        ("POST", servers, None, '{"name":"x","name":"y","address":"127.0.0.1:1"}', 400),
        ("POST", servers, None, '["x"]', 400),
        ("POST", servers, None, '"x"', 400),
        ("POST", servers, None, '{"name":"x","address":"127.0.0.1:1"} trailing', 400),
        ("POST", servers, None, "\xff\xfe", 400),
        ("POST", servers, {"name": "x", "address": "127.0.0.1:1", "colour": "red"}, None, 400),
        ("POST", servers, {"name": "x", "address": "127.0.0.1:1", "weight": "3"}, None, 400),
        ("POST", servers, {"name": "x", "address": "127.0.0.1:1", "weight": 1.5}, None, 400),
        ("POST", servers, {"name": "x", "address": "127.0.0.1:1", "weight": True}, None, 400),
        ("POST", servers, {"name": "x", "address": "127.0.0.1:1", "weight": 257}, None, 400),
        ("POST", servers, {"name": "x", "address": "127.0.0.1:1", "weight": -1}, None, 400),
        ("POST", servers, {"name": 5, "address": "127.0.0.1:1"}, None, 400),
        ("POST", servers, {"address": "127.0.0.1:1"}, None, 400),
        ("POST", servers, {"name": "x"}, None, 400),
        ("POST", servers, {}, None, 400),
        ("POST", servers, None, None, 400),
        ("POST", servers, {"name": "bad name!", "address": "127.0.0.1:1"}, None, 400),
        ("POST", servers, {"name": "x", "address": "not-an-address"}, None, 400),
        ("POST", servers, {"name": "x", "address": "127.0.0.1:99999"}, None, 400),
        ("POST", "/api/v1/pools/nope/servers", {"name": "x", "address": "127.0.0.1:1"}, None,
         404),
        ("POST", servers, {"name": b1, "address": "127.0.0.1:1"}, None, 409),
        ("PATCH", f"{servers}/{b1}", {}, None, 400),
        ("PATCH", f"{servers}/{b1}", {"weight": "2"}, None, 400),
        ("PATCH", f"{servers}/{b1}", {"weight": 1000}, None, 400),
        ("PATCH", f"{servers}/{b1}", {"state": "up"}, None, 400),
        ("PATCH", f"{servers}/{b1}", {"state": 1}, None, 400),
        ("PATCH", f"{servers}/{b1}", {"weight": 5, "state": "removed"}, None, 400),
        ("PATCH", f"{servers}/{b1}", {"weight": 5, "extra": 1}, None, 400),
        ("PATCH", f"{servers}/nope", {"weight": 5}, None, 404),
        ("PATCH", "/api/v1/pools/nope/servers/x", {"weight": 5}, None, 404),
        ("POST", f"{servers}/{b1}/drain", {"now": True}, None, 400),
        ("POST", f"{servers}/{b1}/drain", None, "nonsense", 400),
        ("POST", f"{servers}/nope/drain", None, None, 404),
        ("POST", f"{servers}/nope/enable", None, None, 404),
        ("POST", f"{servers}/nope/maint", None, None, 404),
        ("POST", "/api/v1/pools/nope/servers/x/drain", None, None, 404),
        ("DELETE", f"{servers}/{b1}?later=1", None, None, 400),
        ("DELETE", f"{servers}/nope", None, None, 404),
        ("DELETE", f"{servers}/{b1}", {"x": 1}, None, 400),
        ("POST", "/api/v1/reload", {"file": "/etc/passwd"}, None, 400),
    ]
    for method, path, body, raw, want in bad:
        st, _, err = api.call(method, path, body, raw=raw)
        assert st == want, (method, path, body, raw, st, err)
        assert err["status"] == want and isinstance(err["error"], str) and err["error"]
    st, _, err = api.call("POST", servers, None, raw='{"name": "x", "weight": "3",'
                          ' "address": "127.0.0.1:1"}')
    assert "weight" in err["error"] and "integer" in err["error"]
    st, _, err = api.call("POST", servers, {"name": "x", "address": "1.2.3.4:5", "colour": 1})
    assert "colour" in err["error"]
    st, _, err = api.call("POST", servers, None, raw="{")
    assert "JSON" in err["error"]
    pool = api.get("/api/v1/pools/web")[2]
    assert [(s["name"], s["state"], s["weight"]) for s in pool["servers"]] == [
        (b.name, "ready", 1) for b in bs
    ]

    # Wrong methods: 405 with the methods that are allowed.
    for method, path, allow in [
        ("PUT", "/api/v1/pools", "GET, HEAD"),
        ("DELETE", "/api/v1/pools/web", "GET, HEAD"),
        ("POST", "/api/v1/pools/web", "GET, HEAD"),
        ("GET", f"{servers}/{b1}/drain", "POST"),
        ("DELETE", "/api/v1/reload", "GET, HEAD, POST"),
        ("PUT", f"{servers}/{b1}", "GET, HEAD, PATCH, DELETE"),
        ("POST", "/metrics", "GET, HEAD"),
        ("OPTIONS", "/api/v1/pools", "GET, HEAD"),
    ]:
        st, r, err = api.call(method, path, token=None)
        assert st == 405, (method, path)
        assert r.getheader("Allow") == allow, (method, path, r.getheader("Allow"))
        assert err["status"] == 405


def test_no_free_slot_is_507(setup):
    t, port, aport, bs = setup(1)
    api = Api(aport)
    free = api.get("/api/v1/pools/web")[2]["free_slots"]
    assert free > 0
    for i in range(free):
        st, _, _ = api.call("POST", "/api/v1/pools/web/servers",
                            {"name": f"s{i}", "address": "127.0.0.1:9", "weight": 0})
        assert st == 201, i
    st, _, err = api.call("POST", "/api/v1/pools/web/servers",
                          {"name": "one-more", "address": "127.0.0.1:9"})
    assert st == 507 and "slot" in err["error"]
    assert api.get("/api/v1/pools/web")[2]["servers_total"] == free + 1
    # A removed server's slot is not reused until a reload, but its name is free.
    assert api.call("DELETE", "/api/v1/pools/web/servers/s0?now=1")[0] == 200
    st, _, _ = api.call("POST", "/api/v1/pools/web/servers",
                        {"name": "s0", "address": "127.0.0.1:9"})
    assert st == 507


# ---- changes and their effect on traffic ----


def test_added_server_gets_traffic(setup, backends):
    t, port, aport, bs = setup(1, workers=1)
    (new,) = backends(1, prefix="n")
    api = Api(aport)
    st, r, srv = api.call("POST", "/api/v1/pools/web/servers",
                          {"name": "n1", "address": new.address, "weight": 1})
    assert st == 201, srv
    assert r.getheader("Location") == "/api/v1/pools/web/servers/n1"
    assert srv["name"] == "n1" and srv["address"] == new.address and srv["state"] == "ready"
    assert srv["weight"] == 1 and srv["requests_total"] == 0
    seen = collections.Counter(http_get(port)[1].decode().strip() for _ in range(20))
    assert seen == {bs[0].name: 10, "n1": 10}, seen
    assert len(new.requests()) == 10
    pool = api.get("/api/v1/pools/web")[2]
    assert server_of(pool, "n1")["requests_total"] == 10
    assert pool["servers_total"] == 2
    # Weight defaults to 1 and 0 is allowed (no traffic).
    st, _, srv = api.call("POST", "/api/v1/pools/web/servers",
                          {"name": "n2", "address": "127.0.0.1:9"})
    assert st == 201 and srv["weight"] == 1


def slow_request(port, ms, out):
    st, body = http_get(port, f"/slow?ms={ms}")
    out.append((st, body))


def start_slow(port, bs, ms=1500):
    """Starts a slow request; returns (thread, results, backend it reached)."""
    res = []
    th = threading.Thread(target=slow_request, args=(port, ms, res))
    th.start()
    b = wait_until(lambda: next((b for b in bs if any("/slow" in l for l in b.requests())), None))
    assert b, "the slow request reached no backend"
    return th, res, b


def test_drain_lets_inflight_finish_and_takes_no_new_request(setup):
    t, port, aport, bs = setup(2)
    api = Api(aport)
    th, res, b = start_slow(port, bs)
    other = next(x for x in bs if x is not b)
    st, _, srv = api.call("POST", f"/api/v1/pools/web/servers/{b.name}/drain")
    assert st == 202 and srv["state"] == "drain" and srv["active_connections"] == 1
    before = len(b.requests())
    for _ in range(20):
        st, body = http_get(port)
        assert st == 200 and body.decode().strip() == other.name
    th.join(scaled(10))
    assert res == [(200, b"slow\n")]
    assert len(b.requests()) == before
    # A plain drain keeps the server, drained and idle.
    srv = api.get(f"/api/v1/pools/web/servers/{b.name}")[2]
    assert srv["state"] == "drain" and srv["active_connections"] == 0
    # enable brings it back; maint takes it out again.
    st, _, srv = api.call("POST", f"/api/v1/pools/web/servers/{b.name}/enable")
    assert st == 200 and srv["state"] == "ready"
    seen = {http_get(port)[1].decode().strip() for _ in range(6)}
    assert seen == {b.name, other.name}
    st, _, srv = api.call("POST", f"/api/v1/pools/web/servers/{b.name}/maint")
    assert st == 200 and srv["state"] == "maint"
    seen = {http_get(port)[1].decode().strip() for _ in range(6)}
    assert seen == {other.name}
    st, _, srv = api.call("POST", f"/api/v1/pools/web/servers/{b.name}/enable")
    assert srv["state"] == "ready"


def test_delete_leaves_at_drain_timeout_with_a_request_still_open(setup):
    """pools.web.drain_timeout bounds how long a deleted server waits for
    its connections: with a 6 s request in flight and a 1 s bound, it leaves
    the pool after about 1 s, and the request still finishes."""
    t, port, aport, bs = setup(2, pool_extra="    drain_timeout: 1s\n")
    api = Api(aport)
    th, res, b = start_slow(port, bs, ms=6000)
    t0 = time.monotonic()
    st, _, srv = api.call("DELETE", f"/api/v1/pools/web/servers/{b.name}")
    assert st == 202 and srv["state"] == "drain" and srv["active_connections"] == 1
    assert wait_until(lambda: api.get(f"/api/v1/pools/web/servers/{b.name}")[0] == 404)
    took = time.monotonic() - t0
    assert 0.8 <= took < 5.5, took  # the bound, not the request's 6 s
    assert th.is_alive()
    th.join(scaled(15))
    assert res == [(200, b"slow\n")]


def test_delete_is_graceful_and_now_is_immediate(setup):
    t, port, aport, bs = setup(3)
    api = Api(aport)
    th, res, b = start_slow(port, bs)
    st, _, srv = api.call("DELETE", f"/api/v1/pools/web/servers/{b.name}")
    assert st == 202 and srv["state"] == "drain"
    # Still listed while its request is in flight, and takes no new one.
    time.sleep(0.5)
    pool = api.get("/api/v1/pools/web")[2]
    assert server_of(pool, b.name)["state"] == "drain"
    before = len(b.requests())
    for _ in range(10):
        assert http_get(port)[1].decode().strip() != b.name
    th.join(scaled(10))
    assert res == [(200, b"slow\n")]
    assert len(b.requests()) == before
    # Once idle it is removed.
    assert wait_until(lambda: api.get(f"/api/v1/pools/web/servers/{b.name}")[0] == 404)
    pool = api.get("/api/v1/pools/web")[2]
    assert server_of(pool, b.name) is None and pool["servers_total"] == 2

    rest = [x for x in bs if x is not b]
    st, _, srv = api.call("DELETE", f"/api/v1/pools/web/servers/{rest[0].name}?now=1")
    assert st == 200 and srv["state"] == "removed"
    assert api.get(f"/api/v1/pools/web/servers/{rest[0].name}")[0] == 404
    assert {http_get(port)[1].decode().strip() for _ in range(6)} == {rest[1].name}
    # The name is free again.
    st, _, _ = api.call("POST", "/api/v1/pools/web/servers",
                        {"name": rest[0].name, "address": rest[0].address})
    assert st == 201


def test_patch_weight_changes_distribution(setup):
    t, port, aport, bs = setup(2, workers=1)
    api = Api(aport)
    b1, b2 = bs
    st, _, srv = api.call("PATCH", f"/api/v1/pools/web/servers/{b1.name}", {"weight": 3})
    assert st == 200 and srv["weight"] == 3 and srv["state"] == "ready"
    seen = collections.Counter(http_get(port)[1].decode().strip() for _ in range(40))
    assert seen == {b1.name: 30, b2.name: 10}, seen
    st, _, srv = api.call("PATCH", f"/api/v1/pools/web/servers/{b1.name}", {"weight": 0})
    assert st == 200 and srv["weight"] == 0
    assert {http_get(port)[1].decode().strip() for _ in range(8)} == {b2.name}
    # state through PATCH, together with a weight.
    st, _, srv = api.call("PATCH", f"/api/v1/pools/web/servers/{b2.name}",
                          {"state": "maint", "weight": 2})
    assert st == 200 and srv["state"] == "maint" and srv["weight"] == 2
    st, _, srv = api.call("PATCH", f"/api/v1/pools/web/servers/{b1.name}",
                          {"weight": 1, "state": "ready"})
    assert {http_get(port)[1].decode().strip() for _ in range(6)} == {b1.name}
    st, _, srv = api.call("PATCH", f"/api/v1/pools/web/servers/{b2.name}", {"state": "drain"})
    assert st == 200 and srv["state"] == "drain"
    st, _, srv = api.call("PATCH", f"/api/v1/pools/web/servers/{b2.name}", {"state": "ready"})
    assert st == 200 and srv["state"] == "ready"


def wrk_available():
    return shutil.which("wrk") is not None


@pytest.mark.skipif(not wrk_available(), reason="wrk is not installed (scripts/deps.sh test)")
def test_drain_under_load_fails_nothing(setup):
    t, port, aport, bs = setup(3)
    api = Api(aport)
    out = {}

    def load():
        out["wrk"] = subprocess.run(
            ["wrk", "-t2", "-c20", "-d3s", f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=scaled(40),
        ).stdout

    th = threading.Thread(target=load)
    th.start()
    time.sleep(1)
    st, _, srv = api.call("POST", f"/api/v1/pools/web/servers/{bs[1].name}/drain")
    assert st == 202
    # Once the requests it had in flight are done, nothing new reaches it.
    assert wait_until(lambda: api.get(f"/api/v1/pools/web/servers/{bs[1].name}")[2][
        "active_connections"] == 0)
    drained_at = len(bs[1].requests())
    th.join(scaled(40))
    text = out["wrk"]
    assert "requests in" in text, text
    assert "Non-2xx" not in text and "Socket errors" not in text, text
    assert len(bs[1].requests()) == drained_at
    assert api.get(f"/api/v1/pools/web/servers/{bs[1].name}")[2]["state"] == "drain"


# ---- metrics ----

SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*)?\})? (?P<value>-?[0-9.e+-]+|NaN|[+-]Inf)$'
)
COMMENT = re.compile(r"^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .+|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* "
                     r"(counter|gauge|histogram|summary|untyped))$")


def parse_metrics(text):
    """Checks every line and returns {(name, frozenset(labels)): value}."""
    out = {}
    typed = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("#"):
            assert COMMENT.match(line), line
            if line.startswith("# TYPE"):
                name = line.split()[2]
                assert name not in typed, f"family {name} declared twice"
                typed.add(name)
            continue
        m = SAMPLE.match(line)
        assert m, line
        name = m.group(1)
        assert re.sub(r"_(bucket|sum|count)$", "", name) in typed or name in typed, line
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|[^"\\])*)"',
                                      m.group(3) or ""))
        out[(name, labels)] = float(m.group("value"))
    return out


def metric(ms, name, **labels):
    return ms.get((name, frozenset(labels.items())))


def test_metrics_text_format_and_counters(setup):
    t, port, aport, bs = setup(2)
    api = Api(aport)
    st, r, text = api.get("/metrics")
    assert st == 200
    assert r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    m0 = parse_metrics(text)
    (info,) = [k for k in m0 if k[0] == "tern_build_info"]
    version = subprocess.run([TERN, "--version"], capture_output=True, text=True).stdout.split()[1]
    assert dict(info[1]) == {"version": version} and m0[info] == 1
    assert metric(m0, "tern_workers") == 2
    assert metric(m0, "tern_listener_info", listener="web", bind=f"127.0.0.1:{port}",
                  mode="http", pool="web", tls="false") == 1
    assert metric(m0, "tern_pool_servers", pool="web") == 2
    assert metric(m0, "tern_pool_healthy_servers", pool="web") == 2
    b1 = bs[0].name
    lab = {"pool": "web", "server": b1}
    assert metric(m0, "tern_server_requests_total", **lab) == 0
    assert metric(m0, "tern_server_up", **lab) == 1
    assert metric(m0, "tern_server_state", state="ready", **lab) == 1
    assert metric(m0, "tern_server_state", state="drain", **lab) == 0

    for _ in range(10):
        http_get(port)
    http_get(port, "/status/503")
    http_get(port, "/status/404")
    api.call("POST", f"/api/v1/pools/web/servers/{b1}/drain")
    m1 = parse_metrics(api.get("/metrics")[2])
    total = sum(metric(m1, "tern_server_requests_total", pool="web", server=b.name) for b in bs)
    assert total == 12
    assert metric(m1, "tern_pool_requests_total", pool="web") == 12
    assert metric(m1, "tern_server_requests_total", **lab) > 0
    assert sum(metric(m1, "tern_server_responses_total", pool="web", server=b.name, code="2xx")
               for b in bs) == 10
    assert sum(metric(m1, "tern_server_responses_total", pool="web", server=b.name, code="5xx")
               for b in bs) == 1
    assert sum(metric(m1, "tern_server_responses_total", pool="web", server=b.name, code="4xx")
               for b in bs) == 1
    assert metric(m1, "tern_server_bytes_in_total", **lab) > 0
    assert metric(m1, "tern_server_bytes_out_total", **lab) > 0
    assert metric(m1, "tern_server_up", **lab) == 0  # drained
    assert metric(m1, "tern_server_state", state="drain", **lab) == 1
    assert metric(m1, "tern_server_state", state="ready", **lab) == 0
    # The histogram is cumulative, ends with +Inf, and _count matches it.
    hist = "tern_server_request_duration_seconds"
    les = sorted(
        (float(dict(k[1])["le"]) if dict(k[1])["le"] != "+Inf" else float("inf"), v)
        for k, v in m1.items()
        if k[0] == hist + "_bucket" and dict(k[1])["server"] == b1
    )
    assert les[0][0] == 0.001 and les[-1][0] == float("inf") and len(les) == 15
    assert all(a[1] <= b[1] for a, b in zip(les, les[1:]))
    assert les[-1][1] == metric(m1, hist + "_count", **lab) == metric(
        m1, "tern_server_requests_total", **lab)
    assert metric(m1, hist + "_sum", **lab) > 0

    # Odd label values are escaped.
    st, _, _ = api.call("POST", "/api/v1/pools/web/servers",
                        {"name": "n.e-w_1", "address": "127.0.0.1:9"})
    assert st == 201
    m2 = parse_metrics(api.get("/metrics")[2])
    assert metric(m2, "tern_server_requests_total", pool="web", server="n.e-w_1") == 0

    if not shutil.which("promtool"):
        pytest.skip("promtool is not installed (Debian package prometheus, scripts/deps.sh)")
    r = subprocess.run(["promtool", "check", "metrics"], input=api.get("/metrics")[2],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- robustness of the admin port ----


def test_admin_port_survives_garbage_and_limits(setup):
    t, port, aport, bs = setup(1)
    out = raw_exchange(aport, b"\x00\x01\x02garbage\r\n\r\n")
    assert status_of(out) == 400 and b"Connection: close" in out
    out = raw_exchange(aport, os.urandom(4096))
    assert status_of(out) in (400, 501, 505) or out == b""
    out = raw_exchange(aport, b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
    assert status_of(out) == 431
    out = raw_exchange(aport, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(out) in (414, 431)
    # Too large a body is refused before it is read.
    out = raw_exchange(aport, b"POST /api/v1/reload HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Length: 10000000\r\n\r\n" + b"x" * 70000)
    assert status_of(out) == 413
    out = raw_exchange(aport, b"POST /api/v1/reload HTTP/1.1\r\nHost: x\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert status_of(out) == 411
    # Smuggling-shaped framing is refused by the strict parser.
    out = raw_exchange(aport, b"POST /api/v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                       b"Content-Length: 2\r\n\r\nxx")
    assert status_of(out) == 400
    # Pipelined requests are answered in order on one connection.
    out = raw_exchange(aport, b"GET /api/v1/vrrp HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /api/v1/alarms HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"GET /api/v1/scale HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 3
    assert out.index(b"instances") < out.index(b"alarms") < out.index(b"groups")
    # HTTP/1.0 closes unless asked to keep alive.
    out = raw_exchange(aport, b"GET /api/v1/vrrp HTTP/1.0\r\n\r\n")
    assert status_of(out) == 200 and b"Connection: close" in out
    # Expect: 100-continue gets its interim answer, then the real one.
    s = socket.create_connection(("127.0.0.1", aport), timeout=scaled(5))
    s.sendall(b"POST /api/v1/pools/web/servers HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
              b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b"{}")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert status_of(data) == 401
    assert http_get(aport, "/api/v1/pools")[0] == 200
    assert http_get(port)[0] == 200


def test_admin_port_slowloris_and_many_clients(setup):
    t, port, aport, bs = setup(1)
    # A client that trickles its head is cut off (408), while others are served.
    slow = socket.create_connection(("127.0.0.1", aport), timeout=scaled(20))
    slow.sendall(b"GET /api/v1/pools HTTP/1.1\r\n")
    t0 = time.monotonic()
    got = b""
    while time.monotonic() - t0 < scaled(15):
        try:
            slow.sendall(b"X")
        except OSError:
            break
        assert http_get(aport, "/api/v1/vrrp")[0] == 200
        slow.settimeout(0.5)
        try:
            chunk = slow.recv(4096)
            if not chunk:
                break
            got += chunk
        except socket.timeout:
            pass
    elapsed = time.monotonic() - t0
    slow.close()
    assert status_of(got) == 408 or got == b"", got
    assert elapsed < scaled(10), elapsed

    # Idle connections beyond the bound give way to new clients.
    idle = [socket.create_connection(("127.0.0.1", aport)) for _ in range(300)]
    try:
        assert http_get(aport, "/api/v1/vrrp")[0] == 200
    finally:
        for s in idle:
            s.close()

    # Many concurrent keep-alive clients, each with many requests.
    errors = []

    def client():
        try:
            api = Api(aport)
            for _ in range(20):
                st, _, body = api.get("/api/v1/pools")
                assert st == 200 and body["pools"][0]["name"] == "web"
                st, _, text = api.get("/metrics")
                assert st == 200 and "tern_workers" in text
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(32)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(scaled(60))
    assert errors == []
    assert http_get(port)[0] == 200


# ---- reload through the API ----


def test_reload_route_and_token_reread(setup, token_file):
    t, port, aport, bs = setup(1)
    api = Api(aport)
    st, _, res = api.call("POST", "/api/v1/reload")
    if st == 400 and any("not available" in e for e in res.get("errors", [])):
        pytest.skip("reload is not built yet")
    assert st == 200 and res["ok"] is True and res["time"] > 0, res
    st, _, last = api.get("/api/v1/reload")
    assert last["ok"] is True and last["errors"] == [] and last["time"] == res["time"]

    # A broken file changes nothing and says why.
    good = open(t.conf).read()
    with open(t.conf, "w") as f:
        f.write(good + "bogus_key: 1\n")
    st, _, res = api.call("POST", "/api/v1/reload")
    assert st == 400 and res["ok"] is False and res["errors"], res
    assert any("bogus_key" in e for e in res["errors"]), res
    st, _, last = api.get("/api/v1/reload")
    assert last["ok"] is False and last["errors"] == res["errors"]
    assert http_get(port)[0] == 200

    # The token file is read again on a successful reload.
    with open(t.conf, "w") as f:
        f.write(good)
    with open(token_file, "w") as f:
        f.write("new-token\n")
    assert api.call("POST", "/api/v1/reload")[0] == 200
    assert api.call("POST", "/api/v1/reload")[0] == 401
    api.token = "new-token"
    assert api.call("POST", "/api/v1/reload")[0] == 200


# ---- tern ctl ----


def ctl(aport, *args, token_file=None, env=None):
    cmd = [TERN, "ctl", "-a", f"127.0.0.1:{aport}"]
    if token_file:
        cmd += ["-T", token_file]
    e = dict(os.environ)
    e.pop("TERN_TOKEN", None)
    e.update(env or {})
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=scaled(20),
                          env=e)


def rows(out):
    """A table as a list of rows of cells (split on runs of 2+ blanks)."""
    return [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()]


def test_ctl_commands(setup, token_file, backends):
    t, port, aport, bs = setup(2)
    for _ in range(4):
        http_get(port)
    b1, b2 = bs

    r = ctl(aport, "pools")
    assert r.returncode == 0, r.stderr
    table = rows(r.stdout)
    assert table[0] == ["POOL", "BALANCE", "SERVERS", "HEALTHY", "ACTIVE", "REQ/S", "P99_MS",
                        "REQUESTS", "NO_SERVER"]
    assert table[1][:5] == ["web", "roundrobin", "2", "2", "0"] and table[1][7] == "4"
    # Columns line up: every row is as wide as the header, numbers right-aligned.
    lines = r.stdout.splitlines()
    assert len({len(line) for line in lines}) == 1, r.stdout

    r = ctl(aport, "pool", "web")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("pool web (roundrobin): 2 servers, 2 healthy")
    table = rows(r.stdout.split("\n\n", 1)[1])
    assert table[0] == ["SERVER", "ADDRESS", "STATE", "HEALTH", "WEIGHT", "ACTIVE", "REQ/S",
                        "P99_MS", "REQUESTS", "5XX"]
    assert [row[:5] for row in table[1:]] == [
        [b1.name, b1.address, "ready", "up", "1"],
        [b2.name, b2.address, "ready", "up", "1"],
    ]
    assert sum(int(row[8]) for row in table[1:]) == 4

    (n1,) = backends(1, prefix="n")
    r = ctl(aport, "add", "web", "n1", n1.address, "2", token_file=token_file)
    assert r.returncode == 0, r.stderr
    assert rows(r.stdout)[1][:5] == ["n1", n1.address, "ready", "up", "2"]
    r = ctl(aport, "drain", "web", b1.name, env={"TERN_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    assert rows(r.stdout)[1][2] == "drain"
    r = ctl(aport, "enable", "web", b1.name, token_file=token_file)
    assert r.returncode == 0 and rows(r.stdout)[1][2] == "ready"
    r = ctl(aport, "maint", "web", b1.name, token_file=token_file)
    assert r.returncode == 0 and rows(r.stdout)[1][2] == "maint"
    r = ctl(aport, "weight", "web", b2.name, "5", token_file=token_file)
    assert r.returncode == 0 and rows(r.stdout)[1][4] == "5"
    r = ctl(aport, "remove", "web", "n1", token_file=token_file)
    assert r.returncode == 0 and rows(r.stdout)[1][2] == "drain"
    assert wait_until(lambda: "n1" not in ctl(aport, "pool", "web").stdout)
    r = ctl(aport, "remove", "web", b1.name, "--now", token_file=token_file)
    assert r.returncode == 0 and rows(r.stdout)[1][2] == "removed"
    table = rows(ctl(aport, "pool", "web").stdout.split("\n\n", 1)[1])
    assert [row[0] for row in table[1:]] == [b2.name]

    r = ctl(aport, "listeners")
    assert r.returncode == 0
    assert rows(r.stdout) == [["LISTENER", "BIND", "MODE", "POOL"],
                              ["web", f"127.0.0.1:{port}", "http", "web"]]
    r = ctl(aport, "vrrp")
    assert r.returncode == 0 and r.stdout.strip() == "no VRRP instances"

    # Failures: the API's message and exit 1; usage mistakes exit 2.
    r = ctl(aport, "drain", "web", b2.name)
    assert r.returncode == 1 and "token" in r.stderr and "401" in r.stderr
    r = ctl(aport, "drain", "web", b2.name, env={"TERN_TOKEN": "wrong"})
    assert r.returncode == 1 and "invalid bearer token" in r.stderr
    r = ctl(aport, "pool", "nope")
    assert r.returncode == 1 and 'no pool named "nope"' in r.stderr
    r = ctl(aport, "add", "web", b2.name, "127.0.0.1:1", token_file=token_file)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = ctl(aport, "add", "web", "x", "nowhere", token_file=token_file)
    assert r.returncode == 1
    for args in (["frobnicate"], ["pool"], ["weight", "web", b2.name, "many"],
                 ["remove", "web", b2.name, "--later"], ["add", "web", "x"], []):
        r = ctl(aport, *args)
        assert r.returncode == 2, args
        assert "usage" in r.stderr or "weight" in r.stderr or "remove" in r.stderr
    r = ctl(free_port(), "pools")
    assert r.returncode == 1 and "cannot connect" in r.stderr
    r = subprocess.run([TERN, "ctl", "-T", "/nonexistent/token", "-a", f"127.0.0.1:{aport}",
                        "drain", "web", b2.name], capture_output=True, text=True)
    assert r.returncode == 1

    r = ctl(aport, "reload", token_file=token_file)
    if "not available" not in r.stderr:
        assert r.returncode == 0, r.stderr
        assert "ok" in r.stdout


def test_random_api_calls_under_traffic(setup, backends):
    """Seeded random calls, well-formed or not, against every route while
    clients go through the proxy: every answer is a 2xx or 4xx that the
    route can give, traffic is served or refused cleanly, and the stop at
    the end (under ASan, a leak check) is clean."""
    import random

    rnd = random.Random(20261124)
    t, port, aport, bs = setup(2)
    spare = backends(2)
    names = ["n%d" % i for i in range(8)] + [bs[0].name, "", "x" * 300, "a%2Fb"]
    values = [None, True, 0, -1, 1, 2**31, 2**63, 1.5, "", "a" * 5000, [], {}, [1], {"a": 1}]

    def body():
        r = rnd.random()
        if r < 0.1:
            return bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 100)))
        if r < 0.15:
            return b"[" * rnd.randint(1, 5000)
        if r < 0.2:
            return b'{"name": "a", "name": "b"}'
        o = {"name": rnd.choice(names + values),
             "address": rnd.choice([s.address for s in spare] + ["127.0.0.1:1", "[::1]:1", "nohost:1",
                                                                 "1.2.3.4", "127.0.0.1:99999"] + values),
             "weight": rnd.choice([1, 0, 100, 256, 10**9, -1, 1.5, "2", None])}
        for k in list(o):
            if rnd.random() < 0.15:
                del o[k]
        return json.dumps(o).encode()

    def call():
        r = rnd.random()
        n = rnd.choice(names)
        if r < 0.35:
            return "POST", rnd.choice(["/api/v1/pools/web/servers", "/api/v1/pools/nope/servers"])
        if r < 0.5:
            return "DELETE", f"/api/v1/pools/web/servers/{n}"
        if r < 0.6:
            return "POST", f"/api/v1/pools/web/servers/{n}/drain"
        if r < 0.65:
            return "POST", "/api/v1/reload"
        return (rnd.choice(["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"]),
                rnd.choice(["/api/v1/pools", "/api/v1/pools/web", "/api/v1/pools/web/servers", "/metrics",
                            "/api/v1/vrrp", "/api/v1/alarms", "/api/v1/scale", "/", "/api/v1/x",
                            "/api/v1/pools/web/servers/%00?a=%zz"]))

    stop = threading.Event()
    served = collections.Counter()

    def traffic():
        while not stop.is_set():
            try:
                st, _ = http_get(port)
                served[st] += 1
            except OSError:
                served["error"] += 1

    clients = [threading.Thread(target=traffic, daemon=True) for _ in range(2)]
    for c in clients:
        c.start()
    seen = collections.Counter()
    deadline = time.monotonic() + scaled(8)
    calls = 0
    try:
        while calls < 3000 and time.monotonic() < deadline:
            method, path = call()
            data = body() if method in ("POST", "PUT", "PATCH", "DELETE") else None
            tok = TOKEN if rnd.random() < 0.9 else rnd.choice(["wrong", "t" * 1000])
            c = http.client.HTTPConnection("127.0.0.1", aport, timeout=scaled(10))
            c.request(method, path, body=data, headers={"Authorization": f"Bearer {tok}"})
            r = c.getresponse()
            r.read()
            c.close()
            seen[r.status] += 1
            assert r.status in (200, 201, 202, 204, 400, 401, 404, 405, 409, 413, 415), \
                (method, path, data and data[:200], r.status)
            calls += 1
    finally:
        stop.set()
        for c in clients:
            c.join(scaled(10))
    assert seen[201] and seen[400] and seen[404] and seen[409], seen
    assert set(served) <= {200, 502, 503} and served[200], served
    st, _, doc = Api(aport).call("GET", "/api/v1/pools/web")
    assert st == 200 and all(s["name"] and s["address"] for s in doc["servers"]), doc
    assert http_get(aport, "/api/v1/pools")[0] == 200
