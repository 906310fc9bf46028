"""HTTP proxying at its edges: every timeout of a listener and a pool,
the retry budget, interim responses, and backends that answer garbage.

Each test runs the real binary against sockets the test controls, so it
can hold a byte back, stall, or lie, and checks what the client sees and
that tern goes on serving.
"""
import base64
import http.client
import json
import os
import socket
import time

import pytest

from conftest import free_port, raw_exchange, scaled, simple_config, status_of, wait_for, wait_port
from test_http import RawBackend, get, read_body


def one_worker(cfg):
    return cfg.replace("workers: 2", "workers: 1")


def closed_within(c, at_least, at_most):
    """Waits for the peer to close c; returns the seconds it took, asserting
    the bounds. Anything received before the close is returned too."""
    t0 = time.monotonic()
    c.settimeout(at_most)
    got = b""
    while True:
        chunk = c.recv(4096)
        if not chunk:
            break
        got += chunk
    took = time.monotonic() - t0
    assert at_least <= took < at_most, took
    return took, got


def test_idle_client_closed_at_client_timeout_busy_one_kept(backends, tern):
    """timeouts.client ends a keep-alive connection that stays silent
    between requests; one that keeps asking within it stays open."""
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b], listener_extra="    timeouts: { client: 1s }\n"), [port])
    busy = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(5))
    idle = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200 ")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:
        busy.request("GET", "/")
        assert busy.getresponse().read() == b"b1\n"  # same connection each time
        time.sleep(0.3)
    assert busy.sock is not None
    # The idle one was closed about 1 s after its answer, long before now.
    idle.settimeout(0.2)
    assert idle.recv(4096) == b""


def test_client_stalling_in_its_body_is_cut_at_client_timeout(tern):
    """A client sends its head and part of the body, then nothing: the
    request has gone to the backend, which waits for the rest. At
    timeouts.client tern gives up on the client with 408 and closes the
    backend connection (its framing is in doubt), not at the 30 s server
    timeout."""
    closed = []

    def handle(c, n, head, data):
        c.settimeout(scaled(10))
        try:
            while c.recv(4096):
                pass
            closed.append(True)
        except OSError:
            pass
        return None

    b = RawBackend(handle)
    port = free_port()
    tern(simple_config(port, [b], listener_extra="    timeouts: { client: 1s }\n"), [port])
    c = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    c.sendall(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    _, got = closed_within(c, 0.8, scaled(5))
    assert status_of(got) == 408, got
    assert wait_for(lambda: closed, scaled(3)), "the backend connection stayed open"
    b.stop()


def blackhole():
    """A listening socket whose accept queue is full: the kernel drops the
    SYN of any further connect, which then hangs as toward a dead host.
    Returns (listener, [the connections that fill it])."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    fill = []
    for _ in range(2):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(srv.getsockname())
        fill.append(f)
    time.sleep(0.2)
    return srv, fill


class Named:
    def __init__(self, name, address):
        self.name, self.address = name, address


def test_connect_timeout_moves_on_then_503(backends, tern):
    """A server whose connect never completes is given up after
    timeouts.connect; the request goes to the next server. With only that
    server, each of 1 + retries attempts waits the timeout, then 503."""
    (b,) = backends(1)
    srv, fill = blackhole()
    hole = Named("hole", "127.0.0.1:%d" % srv.getsockname()[1])
    port, port2 = free_port(), free_port()
    pool = "    retries: 1\n    timeouts: { connect: 400ms }\n"
    tern(one_worker(simple_config(port, [hole, b], pool_extra=pool)), [port])
    for _ in range(4):  # round robin: two of these meet the hole first
        t0 = time.monotonic()
        r, data, c = get(port)
        c.close()
        assert r.status == 200 and data == b"b1\n"
    assert time.monotonic() - t0 < scaled(3)
    tern(one_worker(simple_config(port2, [hole], pool_extra=pool)), [port2])
    t0 = time.monotonic()
    out = raw_exchange(port2, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
    took = time.monotonic() - t0
    assert status_of(out) == 503, out
    assert 0.75 <= took < scaled(5), took
    srv.close()
    for f in fill:
        f.close()


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_bound_the_connect_attempts(tern, retries):
    """Every server refuses: a request makes exactly 1 + retries connect
    attempts, each on a different server while there are others, then
    gets 503. Counted by the admin API's connect_errors."""
    dead = [Named(f"d{i}", f"127.0.0.1:{free_port()}") for i in range(4)]
    port, aport = free_port(), free_port()
    cfg = one_worker(simple_config(port, dead, pool_extra=f"    retries: {retries}\n"))
    tern(cfg.replace("listeners:", f"admin:\n  listen: 127.0.0.1:{aport}\nlisteners:"),
         [port, aport])
    for _ in range(3):
        out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(out) == 503, out
    c = http.client.HTTPConnection("127.0.0.1", aport, timeout=scaled(5))
    c.request("GET", "/api/v1/pools/web")
    servers = json.loads(c.getresponse().read())["servers"]
    errors = [s["connect_errors"] for s in servers]
    assert sum(errors) == 3 * (1 + retries), errors
    if retries:
        assert max(errors) <= 3, errors  # never the same server twice in a request


def websocket(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def ws_echo(s, msg):
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(msg)))
    hdr = s.recv(2, socket.MSG_WAITALL)
    return s.recv(hdr[1] & 0x7F, socket.MSG_WAITALL)


def test_websocket_idle_beyond_tunnel_timeout_is_closed(backends, tern):
    """timeouts.tunnel bounds the silence of an upgraded connection, not its
    life: one that echoes every 0.3 s outlives it; one left silent is
    closed about 1 s after its last message."""
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b], listener_extra="    timeouts: { tunnel: 1s }\n"), [port])
    quiet, busy = websocket(port), websocket(port)
    assert ws_echo(quiet, b"once") == b"once"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:
        assert ws_echo(busy, b"ping") == b"ping"
        time.sleep(0.3)
    quiet.settimeout(0.2)
    assert quiet.recv(16) == b""
    busy.close()


def test_backend_100_continue_reaches_the_client_before_its_body(tern):
    """The client waits for 100 Continue before it sends the body (it has no
    fallback timer here): the backend's interim answer must come through,
    then the final one."""
    got = []

    def handle(c, n, head, data):
        assert b"expect: 100-continue" in head.lower()
        c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(data) < 5:
            data += c.recv(4096)
        got.append(data[:5])
        c.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        return data[5:]

    b = RawBackend(handle)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    c = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    c.sendall(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = c.recv(4096)
    assert interim.startswith(b"HTTP/1.1 100 "), interim
    c.sendall(b"hello")
    final = b""
    while not final.endswith(b"ok"):
        final += c.recv(4096)
    assert final.startswith(b"HTTP/1.1 201 "), final
    assert got == [b"hello"]
    c.close()
    b.stop()


BAD_RESPONSES = {
    "garbage": b"garbage\r\n\r\n",
    "status-4-digits": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "nul-in-value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "space-before-colon": b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "http-2.0": b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
}


def test_malformed_backend_responses_get_502_and_tern_goes_on(tern):
    """A backend that answers with a broken head: the client gets 502 (none
    of it is passed on) and tern serves the next request normally."""

    def handle(c, n, head, data):
        path = head.split(b" ")[1].decode()
        if path == "/ok":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            return data
        c.sendall(BAD_RESPONSES[path[1:]])
        c.close()
        return None

    b = RawBackend(handle)
    port = free_port()
    t = tern(simple_config(port, [b]), [port])
    for name in BAD_RESPONSES:
        out = raw_exchange(port, f"GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status_of(out) == 502, (name, out)
        assert b"hello" not in out and b"X-A" not in out, (name, out)
        r, data, c = get(port, "/ok")
        c.close()
        assert r.status == 200 and data == b"ok\n", name
    assert t.proc.poll() is None
    b.stop()


@pytest.mark.parametrize("pause", [0, 0.3])
def test_bad_chunked_response_body(tern, pause):
    """The head is good, then the chunk framing breaks. If the client has
    seen nothing yet (all arrived in one read), it gets 502; if the head and
    a first chunk have gone out, its connection is cut, never completed
    with a forged last chunk."""

    def handle(c, n, head, data):
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                  + (b"" if pause else b"zz\r\n"))
        if pause:
            time.sleep(pause)
            c.sendall(b"zz\r\n")
        return data

    b = RawBackend(handle)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    if pause:
        assert status_of(out) == 200 and out.endswith(b"hello\r\n"), out
    else:
        assert status_of(out) == 502, out
    b.stop()


def test_max_body_size_refuses_larger_bodies_with_413(tern):
    """listeners[].max_body_size: a declared length over it gets 413 before
    anything reaches a server (with Expect: 100-continue, instead of the
    100); one at the limit passes; a chunked body whose chunks add up to
    more is cut off at the server and answered 413."""
    seen = []

    def handle(c, n, head, data):
        try:
            body, rest = read_body(c, head, data)
        except (OSError, ValueError):
            body, rest = None, None
        seen.append((head.split(b" ")[1], body))
        if body is None:
            return None
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        return rest

    b = RawBackend(handle)
    port = free_port()
    tern(simple_config(port, [b], listener_extra="    max_body_size: 1k\n"), [port])
    out = raw_exchange(port, b"PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n"
                       b"Expect: 100-continue\r\n\r\n")
    assert status_of(out) == 413 and b" 100 " not in out, out
    out = raw_exchange(port, b"PUT /fits HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\n\r\n"
                       + b"f" * 1024)
    assert status_of(out) == 200, out
    # The first chunk goes out to the server before the second one arrives.
    c = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    c.sendall(b"PUT /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"258\r\n" + b"c" * 600 + b"\r\n")
    time.sleep(0.3)
    c.sendall(b"258\r\n" + b"c" * 600 + b"\r\n0\r\n\r\n")
    _, out = closed_within(c, 0, scaled(5))
    assert status_of(out) == 413, out
    # Its server connection was closed before the end of the body.
    assert wait_for(lambda: len(seen) == 2, scaled(3)), seen
    assert seen[0] == (b"/fits", b"f" * 1024)
    assert seen[1] == (b"/chunks", None), seen
    b.stop()


def test_access_log_counts_a_body_that_came_with_its_head(backends, tern, tmp_path):
    """IN is every byte of the request: a body sent in one write with its
    head (read with it) counts as much as one read later, and the next
    pipelined request's bytes are not this one's."""
    (b,) = backends(1)
    port = free_port()
    log = tmp_path / "access.log"
    cfg = simple_config(port, [b]).replace("workers: 2", f"workers: 1\n  access_log: {log}")
    t = tern(cfg, [port])
    post = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n" + b"p" * 3000
    nxt = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_exchange(port, post + nxt, timeout=5)
    assert out.count(b"HTTP/1.1 200 ") == 2, out
    t.stop()
    lines = log.read_text().splitlines()
    assert len(lines) == 2, lines
    ins = [int(line.split('" ')[1].split()[1]) for line in lines]
    assert ins == [len(post), len(nxt)], (ins, lines)


SMUGGLED = b"GET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("listed", ["Content-Length", "Transfer-Encoding", "Host"])
def test_connection_cannot_unframe_a_request(backends, tern, listed):
    """A client that lists Content-Length, Transfer-Encoding or Host in
    Connection: the field still reaches the backend, so the body stays the
    body (dropping Content-Length made it a second request nobody routed)
    and the backend still learns the host."""
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    if listed == "Host":
        req = b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: Host\r\n\r\n"
    elif listed == "Content-Length":
        req = (b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\n"
               b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED)
    else:
        req = (b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: Transfer-Encoding\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(SMUGGLED) + SMUGGLED
               + b"\r\n0\r\n\r\n")
    c = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    c.sendall(req)
    r = http.client.HTTPResponse(c)
    r.begin()
    body = r.read()
    c.close()
    assert r.status == 200, body
    if listed == "Host":
        assert b"\r\nhost: x\r\n" in body.lower(), body
    else:
        assert body == SMUGGLED
    time.sleep(scaled(0.3))
    assert not any("SMUGGLED" in line for line in b.requests()), b.requests()


@pytest.mark.parametrize("listed", ["Content-Length", "Transfer-Encoding"])
def test_connection_cannot_unframe_a_response(tern, listed):
    """The same from a backend: a response that lists its framing field in
    Connection keeps it, and the client's keep-alive connection stays in
    step (the next response is read as the next response)."""
    framed = {
        "Content-Length": b"Content-Length: 5\r\n\r\nhello",
        "Transfer-Encoding": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    }[listed]

    def handle(c, n, head, data):
        c.sendall(b"HTTP/1.1 200 OK\r\nConnection: " + listed.encode() + b"\r\n" + framed)
        return data

    b = RawBackend(handle)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    conn = None
    for _ in range(2):
        r, data, conn = get(port, conn=conn)
        assert r.status == 200 and data == b"hello"
        assert r.getheader(listed) is not None, r.getheaders()
    conn.close()
    b.stop()


@pytest.mark.parametrize("host", [b"", b"Host:\r\n", b"Host: a\r\n"])
def test_http10_request_reaches_the_backend_with_one_host(backends, tern, host):
    """HTTP/1.0 may come without Host: tern gives the backend one. An empty
    Host is still a Host and goes on alone (a second one would make the
    backend refuse the request, RFC 9112 3.2)."""
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    out = raw_exchange(port, b"GET /headers HTTP/1.0\r\n" + host + b"\r\n")
    assert status_of(out) == 200, out
    body = out.split(b"\r\n\r\n", 1)[1].lower()
    assert body.count(b"\r\nhost:") == 1, body
    if host:
        assert host.lower().rstrip(b"\r\n") in body, body


def test_broken_head_after_an_interim_response_is_cut_cleanly(tern):
    """100 Continue passed on, then a head that does not parse: the client's
    connection is cut (it has seen a response already). tern freed the
    session there and then read it again (ASan: use after free)."""

    def handle(c, n, head, data):
        c.sendall(b"HTTP/1.1 100 Continue\r\n\r\ngarbage\r\n\r\n")
        time.sleep(0.3)
        c.close()
        return None

    b = RawBackend(handle)
    port = free_port()
    t = tern(simple_config(port, [b]), [port])
    for _ in range(3):
        out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"garbage" not in out
        assert out == b"" or out.startswith((b"HTTP/1.1 100 ", b"HTTP/1.1 502 ")), out
    time.sleep(scaled(0.5))
    assert t.proc.poll() is None, t.log()
    b.stop()


@pytest.mark.parametrize("reset", [False, True])
def test_websocket_backend_gone_while_the_client_sends(tern, reset):
    """The backend switches to a tunnel and leaves (FIN or reset) while the
    client goes on sending: the tunnel ends. tern used to retry the write
    forever, and the worker served no one else."""

    def handle(c, n, head, data):
        if b"Upgrade" not in head:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            return data
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\n")
        if reset:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
        return None

    b = RawBackend(handle)
    port = free_port()
    # One worker: a spinning one would leave nobody to answer the next GET.
    t = tern(simple_config(port, [b]).replace("workers: 2", "workers: 1"), [port])
    c = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    c.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    assert c.recv(4096).startswith(b"HTTP/1.1 101 ")
    time.sleep(0.2)
    try:
        for _ in range(20):
            c.sendall(b"x" * 1000)
            time.sleep(0.02)
    except OSError:
        pass
    # The worker still serves others, and the tunnel's client is let go.
    r, data, conn = get(port, "/")
    conn.close()
    assert r.status == 200 and data == b"ok\n"
    c.settimeout(scaled(5))
    try:
        while c.recv(4096):
            pass
    except ConnectionResetError:
        pass
    c.close()
    assert t.proc.poll() is None
    b.stop()


def test_ipv6_clients_and_servers(backends, tern, tmp_path):
    """IPv6 end to end on ::1: http and tcp listeners on [::1] in front of a
    server at [::1]:port. The client's address goes on as X-Forwarded-For:
    ::1 and Forwarded: for="[::1]" (RFC 7239 brackets and quotes it), and
    the access log names the client [::1]:port. Health checks reach [::1]
    servers (one without a listener goes down), and the admin API listens on
    [::1] too."""
    with socket.socket(socket.AF_INET6) as s:
        try:
            s.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
    (b,) = backends(1, extra=("--host", "::1"))
    hp, tp, ap, dead = free_port(), free_port(), free_port(), free_port()
    log = tmp_path / "access.log"
    t = tern(f"""global:
  workers: 1
  access_log: {log}
admin:
  listen: "[::1]:{ap}"
listeners:
  - {{ name: web, bind: "[::1]:{hp}", mode: http, pool: web }}
  - {{ name: raw, bind: "[::1]:{tp}", mode: tcp, pool: web }}
pools:
  web:
    health_check: {{ type: http, path: /healthz, interval: 200ms, fall: 2 }}
    servers:
      - {{ name: b1, address: "[::1]:{b.port}" }}
      - {{ name: gone, address: "[::1]:{dead}" }}
""")
    assert all(wait_port(p, host="::1") for p in (hp, tp, ap)), t.log()

    def health():
        c = http.client.HTTPConnection("::1", ap, timeout=scaled(5))
        try:
            c.request("GET", "/api/v1/pools/web")
            return {x["name"]: x["health"] for x in json.loads(c.getresponse().read())["servers"]}
        finally:
            c.close()

    assert wait_for(lambda: health() == {"b1": "up", "gone": "down"}, 10), health()
    req = b"GET /headers HTTP/1.1\r\nHost: v6\r\nConnection: close\r\n\r\n"
    out = raw_exchange(hp, req, host="::1")
    assert out.startswith(b"HTTP/1.1 200 "), out
    assert b"\r\nX-Forwarded-For: ::1\r\n" in out, out
    assert b'\r\nForwarded: for="[::1]";proto=http\r\n' in out, out
    out = raw_exchange(tp, req, host="::1")
    assert out.startswith(b"HTTP/1.1 200 ") and b"X-Forwarded-For" not in out, out
    t.stop()
    lines = log.read_text().splitlines()
    got = [ln for ln in lines if ' web web/b1 "GET /headers HTTP/1.1" 200 ' in ln]
    assert len(got) == 1 and got[0].split()[1].startswith("[::1]:"), lines
    tcp = [ln for ln in lines if " raw web/b1 TCP " in ln and ln.split()[1].startswith("[::1]:")]
    assert tcp, lines
