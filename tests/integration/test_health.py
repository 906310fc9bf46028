"""Health: active checks (tcp, http: status, body, timeout), passive outlier
ejection, slow start, and a pool with no healthy server answering 503 fast.

Backends switch their own /healthz and their answers at runtime (see
tests/tools/backend.py: /healthz/ok|fail|hang|body, /fail/on|off); the tests
read tern's log for the transitions and their reasons. Intervals are 100 ms
so that every test ends in a few seconds.
"""
import http.client
import json
import re
import signal
import socket
import statistics
import struct
import threading
import time

from conftest import Backend, free_port, scaled, simple_config, wait_port

FAST_HTTP = (
    "    health_check: { type: http, path: /healthz, interval: 100ms, timeout: 300ms,"
    " rise: 2, fall: 2 }\n"
)
NO_OUTLIER = "    outlier: { consecutive_failures: 0 }\n"


def backend_get(b, path):
    """Talks to a backend directly (not through tern) to switch its mode."""
    c = http.client.HTTPConnection("127.0.0.1", b.port, timeout=5)
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    c.close()
    assert r.status == 200


class Client:
    """One keep-alive connection to tern (reopened when tern closes it)."""

    def __init__(self, port):
        self.port = port
        self.c = None

    def get(self, path="/"):
        for attempt in range(2):
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(5))
            try:
                self.c.request("GET", path)
                r = self.c.getresponse()
                body = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return r.status, r.getheader("X-Backend"), body
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def wait_log(t, pattern, timeout, start=0):
    """Waits until tern's log (from offset start) matches pattern; returns the
    match and the time it took."""
    t0 = time.monotonic()
    deadline = t0 + scaled(timeout)
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        m = rx.search(t.log()[start:])
        if m:
            return m, time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"no {pattern!r} in tern's log within {timeout}s:\n{t.log()}")


def spread(client, n, path="/"):
    """Sends n requests; returns {backend: count} and the statuses seen."""
    seen, statuses = {}, {}
    for _ in range(n):
        st, who, _ = client.get(path)
        statuses[st] = statuses.get(st, 0) + 1
        if st == 200:
            seen[who] = seen.get(who, 0) + 1
    return seen, statuses


def test_killed_backend_goes_down_and_comes_back(tern, backends):
    b1, b2 = backends(2)
    port = free_port()
    t = tern(simple_config(port, [b1, b2], pool_extra=FAST_HTTP + NO_OUTLIER), [port])
    c = Client(port)
    seen, _ = spread(c, 20)
    assert set(seen) == {"b1", "b2"}

    b2.proc.kill()
    b2.proc.wait()
    m, took = wait_log(t, r"server b2 is DOWN \(([^\n]*)\)", 3)
    assert "connect refused" in m.group(1) and "2 checks failed" in m.group(1)
    # fall (2) x interval (100 ms), plus scheduling: well under a second.
    assert took < scaled(1.5)

    # Down: every request goes to b1, none fails.
    seen, statuses = spread(c, 40)
    assert statuses == {200: 40}, statuses
    assert seen == {"b1": 40}

    mark = len(t.log())
    b2 = Backend("b2", port=b2.port)  # same address again
    try:
        m, took = wait_log(t, r"server b2 is UP \(([^\n]*)\)", 3, mark)
        assert "status 200; 2 checks passed" in m.group(1)
        seen, statuses = spread(c, 20)
        assert statuses == {200: 20} and set(seen) == {"b1", "b2"}, (seen, statuses)
    finally:
        b2.stop()
    c.close()


def test_hanging_health_check_times_out(tern, backends):
    b1, b2 = backends(2)
    port = free_port()
    t = tern(simple_config(port, [b1, b2], pool_extra=FAST_HTTP + NO_OUTLIER), [port])
    backend_get(b1, "/healthz/hang")
    m, took = wait_log(t, r"server b1 is DOWN \(([^\n]*)\)", 3)
    assert "timeout after 300 ms (waiting for the response)" in m.group(1), m.group(1)
    # Two timeouts of 300 ms and an interval: not before 600 ms.
    assert took >= 0.55
    assert "server b2 is DOWN" not in t.log()

    mark = len(t.log())
    backend_get(b1, "/healthz/ok")
    wait_log(t, r"server b1 is UP", 3, mark)


def test_hanging_checks_never_stall_traffic(tern, backends):
    """Checks run on the control thread, apart from the workers: while
    every check of both servers hangs for its whole 2 s timeout, requests
    through tern keep being answered at once by those same servers."""
    b1, b2 = backends(2)
    port = free_port()
    hc = ("    health_check: { type: http, path: /healthz, interval: 100ms, timeout: 2s,"
          " rise: 1, fall: 3 }\n")
    tern(simple_config(port, [b1, b2], pool_extra=hc + NO_OUTLIER), [port])
    backend_get(b1, "/healthz/hang")
    backend_get(b2, "/healthz/hang")
    c = Client(port)
    worst, n, t0 = 0.0, 0, time.monotonic()
    while time.monotonic() - t0 < 3:
        t1 = time.monotonic()
        status, _, _ = c.get("/")
        worst = max(worst, time.monotonic() - t1)
        assert status == 200
        n += 1
    assert n > 20 and worst < 0.5, (n, worst)


def test_status_outside_expected_range(tern, backends):
    b1, b2 = backends(2)
    port = free_port()
    hc = (
        "    health_check: { type: http, path: /healthz, expect_status: 200-399,"
        " interval: 100ms, timeout: 300ms, rise: 1, fall: 3 }\n"
    )
    t = tern(simple_config(port, [b1, b2], pool_extra=hc + NO_OUTLIER), [port])
    backend_get(b2, "/healthz/fail")
    m, _ = wait_log(t, r"server b2 is DOWN \(([^\n]*)\)", 3)
    assert m.group(1) == "status 500, expected 200-399; 3 checks failed"
    # The failed checks before the transition were logged with their count.
    assert "server b2: check failed (status 500, expected 200-399), 1/3 to go down" in t.log()
    c = Client(port)
    seen, statuses = spread(c, 20)
    assert seen == {"b1": 20}, seen
    backend_get(b2, "/healthz/ok")
    wait_log(t, r"server b2 is UP \(status 200; 1 check passed\)", 3)
    c.close()


def test_expect_body_mismatch(tern, backends):
    b1, b2 = backends(2)
    port = free_port()
    hc = (
        "    health_check: { type: http, path: /healthz, expect_body: ok,"
        " interval: 100ms, timeout: 300ms, rise: 2, fall: 2 }\n"
    )
    t = tern(simple_config(port, [b1, b2], pool_extra=hc + NO_OUTLIER), [port])
    backend_get(b1, "/healthz/body")  # 200 "nope"
    m, _ = wait_log(t, r"server b1 is DOWN \(([^\n]*)\)", 3)
    assert m.group(1).startswith("body does not contain 'ok'"), m.group(1)
    mark = len(t.log())
    backend_get(b1, "/healthz/ok")
    m, _ = wait_log(t, r"server b1 is UP \(([^\n]*)\)", 3, mark)
    assert "body matched" in m.group(1)


def test_body_framings(tern, backends):
    """expect_body across chunk boundaries ("o w" spans the chunks "hello",
    " ", "world") and in a body delimited by the end of the connection."""
    b1, b2 = backends(2)
    port = free_port()
    cfg = (
        "global:\n  workers: 1\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, pool: chunked }}\n"
        "pools:\n"
        "  chunked:\n"
        f"    servers: [ {{ name: c1, address: {b1.address} }} ]\n"
        "    health_check: { type: http, path: /chunked, expect_body: 'o w', interval: 100ms,"
        " timeout: 300ms, fall: 1 }\n"
        "  closed:\n"
        f"    servers: [ {{ name: k1, address: {b2.address} }} ]\n"
        "    health_check: { type: http, path: /close, expect_body: until-close, interval: 100ms,"
        " timeout: 300ms, fall: 1 }\n"
        "  wrong:\n"
        f"    servers: [ {{ name: w1, address: {b2.address} }} ]\n"
        "    health_check: { type: http, path: /chunked, expect_body: ext=1, interval: 100ms,"
        " timeout: 300ms, fall: 1 }\n"
    )
    t = tern(cfg, [port])
    # The control case proves the chunk framing is taken off: "ext=1" is in
    # the raw bytes, not in the body.
    m, _ = wait_log(t, r"server w1 is DOWN \(([^\n]*)\)", 3)
    assert "body does not contain" in m.group(1)
    time.sleep(scaled(0.5))
    log = t.log()
    assert "server c1 is DOWN" not in log and "server k1 is DOWN" not in log, log


def test_tcp_check(tern, backends):
    b1, b2 = backends(2)
    port = free_port()
    hc = "    health_check: { type: tcp, interval: 100ms, timeout: 300ms, rise: 2, fall: 2 }\n"
    t = tern(simple_config(port, [b1, b2], pool_extra=hc + NO_OUTLIER), [port])
    wait_log(t, r"pool web: tcp health checks every 100 ms \(timeout 300 ms\), rise 2, fall 2", 2)
    time.sleep(scaled(0.4))
    assert "is DOWN" not in t.log()
    b1.proc.kill()
    b1.proc.wait()
    m, _ = wait_log(t, r"server b1 is DOWN \(([^\n]*)\)", 3)
    assert m.group(1) == "connect refused; 2 checks failed"
    mark = len(t.log())
    b1 = Backend("b1", port=b1.port)
    try:
        m, _ = wait_log(t, r"server b1 is UP \(([^\n]*)\)", 3, mark)
        assert m.group(1) == "connected; 2 checks passed"
    finally:
        b1.stop()


def check_intervals(tern, jitter, n=21):
    """Seconds between the first n tcp checks of a server (a listener of
    ours that counts connects), at interval 200ms with the given jitter."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    seen = []

    def accept():
        while len(seen) < n:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            # When the kernel completed the handshake (ms ago), so that
            # this thread's own wake-up delay does not count.
            info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            ago = struct.unpack_from("I", info, 56)[0]  # tcpi_last_ack_recv
            seen.append(time.monotonic() - ago / 1000.0)
            c.close()

    th = threading.Thread(target=accept, daemon=True)
    th.start()

    class S:
        name, address = "s", "127.0.0.1:%d" % srv.getsockname()[1]

    port = free_port()
    hc = f"    health_check: {{ type: tcp, interval: 200ms, jitter: {jitter} }}\n"
    tern(simple_config(port, [S], pool_extra=hc + NO_OUTLIER), [port])
    th.join(scaled(n * 0.4 + 5))
    srv.close()
    assert len(seen) == n, seen
    return [b - a for a, b in zip(seen, seen[1:])]


def test_health_check_jitter_spreads_intervals(tern):
    """With 100ms of jitter the intervals spread over 200 +- 100 ms: the
    median distance from 200 ms is about 50 ms (it stays under 15 ms with
    probability < 0.001), against about 1 ms without jitter, where only the
    odd late check on a busy machine strays."""

    def spread(gaps):
        return statistics.median(abs(g - 0.2) for g in gaps)

    gaps = check_intervals(tern, "100ms")
    assert spread(gaps) > 0.015, gaps
    assert min(gaps) > 0.09, gaps
    steady = check_intervals(tern, "0")
    assert spread(steady) < 0.01, steady


def test_request_sent_by_http_check(tern):
    """The probe's request, byte for byte: method, path, Host (given, or the
    server's address), Connection: close, User-Agent."""
    got = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    addr = "127.0.0.1:%d" % srv.getsockname()[1]

    def serve():
        while len(got) < 4:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            data = b""
            c.settimeout(2)
            try:
                while b"\r\n\r\n" not in data:
                    d = c.recv(4096)
                    if not d:
                        break
                    data += d
                got.append(data)
                c.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            except OSError:
                pass
            c.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    port = free_port()
    cfg = (
        "global:\n  workers: 1\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, pool: a }}\n"
        "pools:\n"
        f"  a:\n    servers: [ {{ name: s1, address: {addr} }} ]\n"
        "    health_check: { type: http, method: HEAD, path: '/hc?x=1', host: svc.example,"
        " expect_status: 204, interval: 100ms, timeout: 300ms }\n"
        f"  b:\n    servers: [ {{ name: s2, address: {addr} }} ]\n"
        "    health_check: { type: http, expect_status: 204, interval: 100ms, timeout: 300ms }\n"
    )
    t = tern(cfg, [port])
    deadline = time.monotonic() + scaled(3)
    while len(got) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    log = t.log()
    srv.close()
    assert (
        b"HEAD /hc?x=1 HTTP/1.1\r\nHost: svc.example\r\nConnection: close\r\n"
        b"User-Agent: tern-health\r\n\r\n"
    ) in got
    assert (
        f"GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n"
        "User-Agent: tern-health\r\n\r\n".encode()
    ) in got
    assert "is DOWN" not in log


def test_all_servers_down_answers_503_fast(tern):
    b1 = Backend("b1", extra=("--unhealthy",))
    b2 = Backend("b2", extra=("--unhealthy",))
    try:
        port = free_port()
        t = tern(simple_config(port, [b1, b2], pool_extra=FAST_HTTP + NO_OUTLIER), [port])
        wait_log(t, r"server b1 is DOWN", 3)
        wait_log(t, r"server b2 is DOWN", 3)
        c = Client(port)
        for _ in range(5):
            t0 = time.monotonic()
            st, _, _ = c.get("/")
            assert st == 503
            assert time.monotonic() - t0 < 1.0
        c.close()
        # They answer / fine: the 503 came from their health, not from them.
        assert not [r for r in b1.requests() + b2.requests() if r.startswith("GET / ")]
    finally:
        b1.stop()
        b2.stop()


PASSIVE = "    outlier: { consecutive_failures: 3, base_ejection: 1s, max_ejection: 4s }\n"


def test_passive_ejection_and_return(tern, backends):
    b1, b2 = backends(2)
    port = free_port()
    t = tern(simple_config(port, [b1, b2], pool_extra=PASSIVE), [port])
    backend_get(b2, "/fail/on")
    c = Client(port)
    fails = 0
    deadline = time.monotonic() + scaled(5)
    while "server b2 is DOWN" not in t.log():
        assert time.monotonic() < deadline, t.log()
        st, who, _ = c.get("/")
        fails += st == 500
        time.sleep(0.005)
    m, _ = wait_log(t, r"server b2 is DOWN \(([^\n]*)\)", 1)
    assert re.fullmatch(r"ejected: \d+ consecutive failures; back in 1 s", m.group(1)), m.group(1)
    assert fails >= 3
    # Ejected: no more 500s from b2 to clients.
    seen, statuses = spread(c, 30)
    assert statuses == {200: 30} and seen == {"b1": 30}, (seen, statuses)

    backend_get(b2, "/fail/off")
    m, took = wait_log(t, r"server b2 is UP \(ejection over\)", 3)
    assert took < scaled(1.5)
    seen, statuses = spread(c, 20)
    assert statuses == {200: 20} and set(seen) == {"b1", "b2"}, (seen, statuses)
    c.close()


def test_passive_ejection_on_refused_connections(tern, backends):
    b1, b2 = backends(2)
    port = free_port()
    t = tern(simple_config(port, [b1, b2], pool_extra=PASSIVE), [port])
    b2.proc.kill()
    b2.proc.wait()
    c = Client(port)
    # Refused connects are retried on b1: clients see no error at all.
    seen, statuses = spread(c, 40)
    assert statuses == {200: 40}, statuses
    m, _ = wait_log(t, r"server b2 is DOWN \(([^\n]*)\)", 2)
    assert m.group(1).startswith("ejected: ")
    # Still refusing when the ejection ends: ejected again, for twice as long.
    m, _ = wait_log(t, r"server b2 is UP \(ejection over\)", 3)
    mark = len(t.log())
    spread(c, 20)
    m, _ = wait_log(t, r"server b2 is DOWN \(([^\n]*)\)", 2, mark)
    assert m.group(1).endswith("back in 2 s"), m.group(1)
    c.close()


def test_passive_never_ejects_more_than_half(tern, backends):
    b1, b2 = backends(2)
    port = free_port()
    # Ejections long enough not to end during the test.
    passive = "    outlier: { consecutive_failures: 3, base_ejection: 10s }\n"
    t = tern(simple_config(port, [b1, b2], pool_extra=passive), [port])
    backend_get(b1, "/fail/on")
    backend_get(b2, "/fail/on")
    c = Client(port)
    spread(c, 30)
    wait_log(t, r"is DOWN \(ejected", 2)
    wait_log(t, r"consecutive failures, not ejected: 1 of the pool's servers already are", 2)
    time.sleep(0.3)
    assert len(re.findall(r"is DOWN \(ejected", t.log())) == 1
    # The one left still gets the traffic (and its 500s pass through).
    _, statuses = spread(c, 10)
    assert statuses == {500: 10}
    c.close()


def test_slow_start(tern, backends):
    b1, b2 = backends(2)
    port = free_port()
    hc = (
        "    health_check: { type: http, path: /healthz, interval: 100ms, timeout: 300ms,"
        " rise: 1, fall: 1 }\n"
        "    slow_start: 4s\n"
    )
    t = tern(simple_config(port, [b1, b2], pool_extra=hc + NO_OUTLIER), [port])
    backend_get(b2, "/healthz/fail")
    wait_log(t, r"server b2 is DOWN", 3)
    c = Client(port)
    spread(c, 5)
    mark = len(t.log())
    backend_get(b2, "/healthz/ok")
    wait_log(t, r"server b2 is UP", 3, mark)
    t_up = time.monotonic()

    early = {}
    while time.monotonic() - t_up < 0.6:
        st, who, _ = c.get("/")
        assert st == 200
        early[who] = early.get(who, 0) + 1
    n_early = sum(early.values())
    share_early = early.get("b2", 0) / n_early
    assert n_early >= 20, early

    time.sleep(max(0, 4.3 - (time.monotonic() - t_up)))
    late, _ = spread(c, 100)
    share_late = late.get("b2", 0) / 100
    # Ramp from 10%: over its first 0.6 s b2 has at most ~22% of b1's
    # weight (18% of the traffic); after the ramp, half.
    assert 0 < share_early < 0.25, (early, late)
    assert share_late > 0.4, (early, late)
    c.close()


def admin_call(aport, method, path, body=None, token="tok-health"):
    c = http.client.HTTPConnection("127.0.0.1", aport, timeout=scaled(5))
    h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def test_servers_added_and_removed_at_runtime(tern, backends, tmp_path):
    """A server added through the admin API is checked (at once, and marked
    down when it fails); a removed one is checked no more."""
    b1, b2 = backends(2)
    port, aport = free_port(), free_port()
    tok = tmp_path / "token"
    tok.write_text("tok-health\n")
    cfg = (
        "global:\n  workers: 2\n"
        f"admin:\n  listen: 127.0.0.1:{aport}\n  token_file: {tok}\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, pool: web }}\n"
        "pools:\n  web:\n"
        f"    servers: [ {{ name: b1, address: {b1.address} }} ]\n" + FAST_HTTP + NO_OUTLIER
    )
    t = tern(cfg, [port, aport])
    st, data = admin_call(
        aport, "POST", "/api/v1/pools/web/servers", {"name": "b2", "address": b2.address, "weight": 1}
    )
    assert st in (200, 201), data

    def checks():
        return len([r for r in b2.requests() if r.startswith("GET /healthz ")])

    deadline = time.monotonic() + scaled(2)
    while checks() < 2:
        assert time.monotonic() < deadline, "added server not checked"
        time.sleep(0.02)
    backend_get(b2, "/healthz/fail")
    m, _ = wait_log(t, r"server b2 is DOWN \(([^\n]*)\)", 3)
    assert m.group(1) == "status 500, expected 200; 2 checks failed"

    st, data = admin_call(aport, "DELETE", "/api/v1/pools/web/servers/b2")
    assert st in (200, 202, 204), data
    time.sleep(0.3)  # a probe in flight may still land
    n = checks()
    time.sleep(scaled(0.6))
    assert checks() == n, "removed server still checked"
    assert "server b1 is DOWN" not in t.log()


def test_reload_keeps_health_and_follows_the_new_config(tern, backends):
    b1, b2, b3 = backends(3)
    port = free_port()
    t = tern(simple_config(port, [b1, b2], pool_extra=FAST_HTTP + NO_OUTLIER), [port])
    backend_get(b2, "/healthz/fail")
    wait_log(t, r"server b2 is DOWN", 3)

    def reload(text):
        mark = len(t.log())
        with open(t.conf, "w") as f:
            f.write(text)
        t.proc.send_signal(signal.SIGHUP)
        wait_log(t, r"reload: .* in effect", 3, mark)
        return mark

    # Same checks, one more server: b2 stays down, b3 is checked and used.
    mark = reload(simple_config(port, [b1, b2, b3], pool_extra=FAST_HTTP + NO_OUTLIER))
    deadline = time.monotonic() + scaled(2)
    while not [r for r in b3.requests() if r.startswith("GET /healthz ")]:
        assert time.monotonic() < deadline, "server added by reload not checked"
        time.sleep(0.02)
    c = Client(port)
    seen, statuses = spread(c, 30)
    assert statuses == {200: 30} and set(seen) == {"b1", "b3"}, (seen, statuses)
    assert "server b2 is UP" not in t.log()[mark:]

    # No health_check any more: nothing keeps b2 down.
    mark = reload(simple_config(port, [b1, b2, b3], pool_extra=NO_OUTLIER))
    wait_log(t, r"server b2 is UP \(health checks removed from the configuration\)", 2, mark)
    c.close()
    seen, _ = spread(Client(port), 30)
    assert set(seen) == {"b1", "b2", "b3"}, seen
