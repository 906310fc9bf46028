"""HTTP proxying through the real tern binary with real clients."""
import base64
import collections
import http.client
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import raw_exchange, scaled, simple_config, status_of, free_port, wait_port


def get(port, path="/", headers=None, method="GET", body=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(5))
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    return r, data, c


def test_roundrobin_spreads_by_weight(backends, tern):
    bs = backends(3)
    port = free_port()
    cfg = (
        "global:\n  workers: 1\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, pool: web }}\n"
        "pools:\n  web:\n    servers:\n"
        f"      - {{ name: b1, address: {bs[0].address}, weight: 2 }}\n"
        f"      - {{ name: b2, address: {bs[1].address} }}\n"
        f"      - {{ name: b3, address: {bs[2].address} }}\n"
    )
    tern(cfg, [port])
    seen = collections.Counter()
    conn = None
    for _ in range(40):
        r, data, conn = get(port, conn=conn)
        assert r.status == 200
        seen[data.decode().strip()] += 1
    assert seen == {"b1": 20, "b2": 10, "b3": 10}


def test_backend_connections_are_reused(backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]).replace("workers: 2", "workers: 1"), [port])
    ids = set()
    # Separate client connections, one after the other: the backend
    # connection goes back to the idle pool and is taken again.
    for _ in range(10):
        r, data, c = get(port, "/conn")
        c.close()
        assert r.status == 200
        ids.add(data)
    assert len(ids) == 1, ids


def test_idle_connections_bounds_the_reuse_pool(backends, tern):
    """idle_connections: 2 keeps two of five backend connections after five
    requests ran at once; the rest are closed, not pooled."""
    (b,) = backends(1)
    port = free_port()
    cfg = simple_config(port, [b], pool_extra="    idle_connections: 2\n")
    tern(cfg.replace("workers: 2", "workers: 1"), [port])
    assert [r[0] for r in _concurrent_gets(port, "/slow?ms=400", 5)] == [200] * 5
    # The backend numbered those connections 1-5. Three slow requests take
    # whatever the pool kept; had it kept more than two, the two /conn
    # requests after them would still find one numbered 5 or less.
    held = [threading.Thread(target=get, args=(port, "/slow?ms=800")) for _ in range(3)]
    for th in held:
        th.start()
    time.sleep(0.3)
    ids = []
    for _ in range(2):
        r, data, c = get(port, "/conn")
        ids.append(int(data))
        c.close()
    for th in held:
        th.join(scaled(10))
    assert min(ids) > 5, ids


def test_idle_connections_zero_disables_reuse(backends, tern):
    (b,) = backends(1)
    port = free_port()
    cfg = simple_config(port, [b], pool_extra="    idle_connections: 0\n")
    tern(cfg.replace("workers: 2", "workers: 1"), [port])
    ids = set()
    for _ in range(4):
        r, data, c = get(port, "/conn")
        c.close()
        ids.add(data)
    assert len(ids) == 4, ids


def test_head_then_late_body_arrives_whole(tern):
    """An origin that writes a head and, 300 ms later, its small body: tern
    holds the head for the body (MSG_MORE) and the client gets both, once
    the body is there, not after the cork's 200 ms on top."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def origin():
        c, _ = srv.accept()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += c.recv(4096)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        time.sleep(0.3)
        c.sendall(b"hello")
        time.sleep(1)
        c.close()

    threading.Thread(target=origin, daemon=True).start()

    class Origin:
        name = "o"
        address = f"127.0.0.1:{srv.getsockname()[1]}"

    port = free_port()
    tern(simple_config(port, [Origin]), [port])
    c = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    t0 = time.monotonic()
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while not got.endswith(b"hello"):
        d = c.recv(4096)
        assert d, got
        got += d
    took = time.monotonic() - t0
    c.close()
    srv.close()
    assert got.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\nhello" in got
    assert 0.25 < took < scaled(0.45), took


def test_pipelined_requests_answered_in_order(backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    req = b"".join(
        f"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(str(i))}\r\n\r\n{i}".encode()
        for i in range(20)
    )
    req += b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw_exchange(port, req)
    bodies = []
    rest = out
    for i in range(20):
        head, _, rest = rest.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
        bodies.append(rest[:n])
        rest = rest[n:]
    assert bodies == [str(i).encode() for i in range(20)]
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b"b1\n")


def test_chunked_upload_and_download(backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in [b"a" * 1000, b"b" * 70000, b"c"]) + b"0\r\n\r\n"
    req = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body
    out = raw_exchange(port, req)
    head, _, data = out.partition(b"\r\n\r\n")
    assert status_of(head) == 200
    assert data == b"a" * 1000 + b"b" * 70000 + b"c"
    # A chunked response passes through unchanged, trailer included.
    out = raw_exchange(port, b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"transfer-encoding: chunked" in out.lower()
    assert out.endswith(b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-T: 1\r\n\r\n")


def test_large_bodies_stream_both_ways(backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    payload = os.urandom(3 * 1024 * 1024)
    r, data, _ = get(port, "/echo", method="POST", body=payload)
    assert r.status == 200 and data == payload
    r, data, _ = get(port, "/big?n=5000000")
    assert r.status == 200 and len(data) == 5000000


def test_expect_100_continue(backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    # The demo backend (asyncio) does not send 100 itself; the client sends
    # the body anyway after a short wait, as curl does, and gets the answer.
    time.sleep(0.2)
    s.sendall(b"hello")
    data = b""
    while b"hello" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert b" 200 " in data and data.endswith(b"hello")


def test_expect_100_continue_with_curl(backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    out = subprocess.run(
        ["curl", "-s", "-H", "Expect: 100-continue", "--data-binary", "@-", f"http://127.0.0.1:{port}/echo"],
        input=b"x" * 2000, capture_output=True, timeout=scaled(10),
    )
    assert out.stdout == b"x" * 2000


def test_websocket_upgrade_is_tunneled(backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"upgrade: websocket" in head.lower()
    for msg in [b"hello", b"x" * 300]:
        mask = os.urandom(4)
        frame = bytes([0x81])
        frame += bytes([0x80 | len(msg)]) if len(msg) < 126 else bytes([0x80 | 126]) + len(msg).to_bytes(2, "big")
        frame += mask + bytes(c ^ mask[i % 4] for i, c in enumerate(msg))
        s.sendall(frame)
        hdr = s.recv(2, socket.MSG_WAITALL)
        n = hdr[1] & 0x7F
        if n == 126:
            n = int.from_bytes(s.recv(2, socket.MSG_WAITALL), "big")
        assert s.recv(n, socket.MSG_WAITALL) == msg
    s.sendall(b"\x88\x80" + os.urandom(4))
    assert s.recv(2, socket.MSG_WAITALL) == b"\x88\x00"
    s.close()


def test_backend_dies_mid_response_cuts_client(backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    out = raw_exchange(port, b"GET /die HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert status_of(head) == 200
    assert b"content-length: 1000" in head.lower()
    # Never a forged complete answer: the body is short and the connection closed.
    assert len(body) < 1000


def test_backend_down_gets_503_after_retries(backends, tern):
    (b,) = backends(1)
    dead = free_port()
    port = free_port()
    cfg = simple_config(port, [b]).replace(
        "servers:\n", f"retries: 2\n    servers:\n      - {{ name: dead, address: 127.0.0.1:{dead} }}\n"
    )
    t = tern(cfg, [port])
    # The dead server is tried and skipped: every request still succeeds.
    for _ in range(10):
        r, data, c = get(port)
        c.close()
        assert r.status == 200 and data == b"b1\n"
    b.stop()
    r, data, _ = get(port)
    assert r.status == 503


def test_backend_closes_before_response_gets_502(tern):
    # A backend that accepts, reads the request and closes without answering.
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    bport = srv.getsockname()[1]

    def serve():
        for _ in range(2):
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.recv(4096)
            c.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    port = free_port()

    class B:
        name = "closer"
        address = f"127.0.0.1:{bport}"

    tern(simple_config(port, [B]), [port])
    out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(out) == 502
    srv.close()


class RawBackend:
    """A backend written as socket calls, for the byte timing a test needs.
    Each accepted connection gets a thread that reads request heads and calls
    handle(conn, n, head, rest) for each: n counts connections from 0, rest
    is what followed the head, and handle returns what is left for the next
    request, or None to stop."""

    name = "raw"

    def __init__(self, handle):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.address = "127.0.0.1:%d" % self.srv.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._serve, args=(handle,), daemon=True).start()

    def _serve(self, handle):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._requests, args=(c, len(self.conns) - 1, handle),
                             daemon=True).start()

    def _requests(self, c, n, handle):
        data = b""
        try:
            while data is not None:
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                data = handle(c, n, head, rest)
        except OSError:
            pass  # closed by the handler or by stop()

    def stop(self):
        self.srv.close()
        for c in self.conns:
            c.close()


def test_body_request_skips_a_connection_the_backend_closed(tern):
    """A backend answers with Content-Length and closes at once without
    saying so. The POST pipelined behind that request is parsed in the same
    loop pass, before the idle watcher can see the FIN; a request with a
    body cannot be replayed once sent, so tern must notice the close before
    it sends. Both answers are 200, the second from a new connection."""

    def handle(c, n, head, data):
        if head.startswith(b"GET"):
            # Corked, the answer waits for the FIN and both leave in one
            # segment: tern reads the answer with the FIN already queued.
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbye\n")
            c.shutdown(socket.SHUT_WR)
            return None
        while not data.endswith(b"hello"):
            data += c.recv(4096)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        return b""

    b = RawBackend(handle)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    for _ in range(10):
        out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                           b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                           b"Connection: close\r\n\r\nhello")
        assert out.count(b"HTTP/1.1 200 ") == 2, out
        assert out.endswith(b"hello"), out
    b.stop()


def second_request(tern, handle, request):
    """One tern worker in front of RawBackend(handle); a client sends a GET
    (answered 200, which leaves an idle backend connection), then request on
    the same connection. Returns what the client got for request."""
    b = RawBackend(handle)
    port = free_port()
    tern(simple_config(port, [b]).replace("workers: 2", "workers: 1"), [port])
    c = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.recv(4096).startswith(b"HTTP/1.1 200 ")
    c.sendall(request)
    out = c.recv(4096)
    c.close()
    b.stop()
    return out


@pytest.mark.parametrize("method,replayed", [("DELETE", True), ("POST", False)])
def test_only_idempotent_requests_are_replayed(tern, method, replayed):
    """A backend keeps the connection of a first GET open, then reads the
    next request on it and closes without a word: it may have acted on it.
    tern sends a DELETE again on a fresh connection (RFC 9110 9.2.2), but
    answers a POST, even without a body, with 502 instead of repeating it."""
    seen = []

    def handle(c, n, head, data):
        seen.append(head.split(b" ")[0].decode())
        if n == 0 and len(seen) == 2:
            c.close()  # read, perhaps acted on, never answered
            return None
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        return data

    out = second_request(
        tern, handle, f"{method} /thing HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    if replayed:
        assert out.startswith(b"HTTP/1.1 200 ") and seen == ["GET", method, method], (out, seen)
    else:
        assert out.startswith(b"HTTP/1.1 502 ") and seen == ["GET", method], (out, seen)


def read_body(c, head, data):
    """The body of a request whose head is head, from data and then c, with
    its raw framing (Content-Length or chunked); returns (body, rest).
    Raises ConnectionError if c ends first."""

    def more():
        chunk = c.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        return chunk

    h = head.lower()
    if b"transfer-encoding: chunked" in h:
        while b"\r\n0\r\n\r\n" not in b"\r\n" + data:
            data += more()
        end = (b"\r\n" + data).index(b"\r\n0\r\n\r\n") + 5
        return data[:end], data[end:]
    n = int(h.split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in h else 0
    while len(data) < n:
        data += more()
    return data[:n], data[n:]


@pytest.mark.parametrize(
    "extra,body,replayed",
    [
        (b"Content-Length: 10000\r\n", b"p" * 10000, True),
        (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n", True),
        # Beyond the 16 KiB that tern keeps behind the head: not replayed.
        (b"Content-Length: 20000\r\n", b"q" * 20000, False),
    ],
    ids=["put-10k", "put-chunked", "put-20k"],
)
def test_idempotent_request_with_body_is_replayed_whole(tern, extra, body, replayed):
    """As above with a PUT and its body: the backend reads the whole request
    on the reused connection and closes without a word. tern sends it again
    on a fresh connection with the same body bytes, from the copy it keeps
    of what it sent; a body too large for that copy gets 502."""
    seen = []

    def handle(c, n, head, data):
        got, rest = read_body(c, head, data)
        seen.append((head.split(b" ")[0].decode(), got))
        if n == 0 and len(seen) == 2:
            c.close()
            return None
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        return rest

    out = second_request(tern, handle, b"PUT /thing HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n" + body)
    methods = [m for m, _ in seen]
    if replayed:
        assert out.startswith(b"HTTP/1.1 200 "), out
        assert methods == ["GET", "PUT", "PUT"] and seen[1][1] == seen[2][1] == body, seen
    else:
        assert out.startswith(b"HTTP/1.1 502 ") and methods == ["GET", "PUT"], (out, methods)


def test_server_timeout_gives_504(backends, tern):
    (b,) = backends(1)
    port = free_port()
    cfg = simple_config(port, [b], pool_extra="    timeouts: { connect: 1s, server: 1s }\n")
    tern(cfg, [port])
    t0 = time.monotonic()
    out = raw_exchange(port, b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
    assert status_of(out) == 504
    assert time.monotonic() - t0 < scaled(5)


def test_slowloris_cut_at_header_timeout_while_others_served(backends, tern):
    (b,) = backends(1)
    port = free_port()
    cfg = simple_config(port, [b], listener_extra="    timeouts: { header: 1s }\n")
    tern(cfg, [port])
    slow = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    slow.sendall(b"GET / HTTP/1.1\r\n")
    t0 = time.monotonic()
    answered = 0
    got = b""
    slow.settimeout(0.1)
    while time.monotonic() - t0 < scaled(4):
        try:
            slow.sendall(b"X-a: b\r\n")
        except OSError:
            break
        try:
            chunk = slow.recv(4096)
            if not chunk:
                break
            got += chunk
        except socket.timeout:
            pass
        r, data, c = get(port)
        c.close()
        answered += r.status == 200
    elapsed = time.monotonic() - t0
    slow.close()
    assert status_of(got) == 408, got
    assert elapsed < scaled(3)
    assert answered > 3


def test_routes_by_host_and_path_prefix(backends, tern):
    web, api, admin = backends(3)
    port = free_port()
    cfg = (
        "global:\n  workers: 1\n"
        "listeners:\n"
        f"  - name: web\n    bind: 127.0.0.1:{port}\n    pool: web\n"
        "    routes:\n"
        "      - { match: { host: api.example.com, path_prefix: /v1/ }, pool: api }\n"
        "      - { match: { host: '*.admin.example.com' }, pool: admin }\n"
        "pools:\n"
        f"  web: {{ servers: [ {{ name: web, address: {web.address} }} ] }}\n"
        f"  api: {{ servers: [ {{ name: api, address: {api.address} }} ] }}\n"
        f"  admin: {{ servers: [ {{ name: admin, address: {admin.address} }} ] }}\n"
    )
    tern(cfg, [port])
    cases = [
        ("api.example.com", "/v1/users", "b2"),
        ("API.example.com:80", "/v1/", "b2"),
        ("api.example.com", "/v2/users", "b1"),
        ("other.example.com", "/v1/users", "b1"),
        ("x.admin.example.com", "/", "b3"),
        ("admin.example.com", "/", "b1"),
    ]
    for host, path, want in cases:
        r, data, c = get(port, path, headers={"Host": host})
        c.close()
        assert data.decode().strip() == want, (host, path)


def test_forwarded_headers_added(backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    r, data, _ = get(
        port, "/headers",
        headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "Connection": "keep-alive, X-Drop", "X-Drop": "1"},
    )
    head = data.decode().lower()
    assert "x-forwarded-for: 203.0.113.7, 127.0.0.1\r\n" in head
    assert "x-forwarded-proto: http\r\n" in head
    assert "forwarded: for=127.0.0.1;proto=http\r\n" in head
    assert "x-drop" not in head  # listed in Connection: hop-by-hop
    assert "keep-alive" not in head
    # A Connection header naming only other fields, from a client whose
    # address has one-, two- and three-digit parts.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(5), source_address=("127.10.200.3", 0))
    c.request("GET", "/headers", headers={"Connection": "X-Only", "X-Only": "1", "X-Kept": "2"})
    head = c.getresponse().read().decode().lower()
    c.close()
    assert "x-only" not in head
    assert "x-kept: 2\r\n" in head
    assert "x-forwarded-for: 127.10.200.3\r\n" in head
    assert "forwarded: for=127.10.200.3;proto=http\r\n" in head


def test_head_and_close_delimited_responses(backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    out = raw_exchange(port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200") == 2 and out.endswith(b"b1\n")
    out = raw_exchange(port, b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert body == b"until-close\n" * 10


def test_http10_client(backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    out = raw_exchange(port, b"GET / HTTP/1.0\r\n\r\n")
    assert status_of(out) == 200 and out.endswith(b"b1\n")


def test_no_server_available_gets_503_fast(tern):
    port = free_port()
    cfg = (
        "listeners:\n"
        f"  - {{ name: web, bind: 127.0.0.1:{port}, pool: empty }}\n"
        "pools:\n  empty: { servers: [] }\n"
    )
    tern(cfg, [port])
    t0 = time.monotonic()
    out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(out) == 503
    assert time.monotonic() - t0 < scaled(1)


def test_wrk_load_has_no_errors(backends, tern):
    bs = backends(2)
    port = free_port()
    tern(simple_config(port, bs), [port])
    out = subprocess.run(
        ["wrk", "-t1", "-c20", "-d2s", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=scaled(30),
    ).stdout
    assert "requests in" in out, out
    assert "Non-2xx" not in out and "Socket errors" not in out, out


def test_access_log_lines(backends, tern, tmp_path):
    (b,) = backends(1)
    port = free_port()
    log = tmp_path / "access.log"
    cfg = simple_config(port, [b]).replace("workers: 2", f"workers: 1\n  access_log: {log}")
    t = tern(cfg, [port])
    get(port, "/status/404")
    t.stop()
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    assert ' web web/b1 "GET /status/404 HTTP/1.1" 404 ' in lines[0], lines[0]


def _concurrent_gets(port, path, n):
    out = [None] * n

    def one(i):
        try:
            r, data, c = get(port, path)
            out[i] = (r.status, time.monotonic())
            c.close()
        except Exception as e:  # noqa: BLE001 - recorded for the assertion
            out[i] = (repr(e), time.monotonic())

    ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in ths:
        th.start()
        time.sleep(0.02)
    for th in ths:
        th.join(scaled(20))
    return out


def test_max_connections_queues_requests(backends, tern):
    (b,) = backends(1)
    port = free_port()
    cfg = (
        "global:\n  workers: 1\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, pool: web }}\n"
        "pools:\n  web:\n    queue_size: 10\n    timeouts: { queue: 5s }\n    servers:\n"
        f"      - {{ name: b1, address: {b.address}, max_connections: 1 }}\n"
    )
    tern(cfg, [port])
    t0 = time.monotonic()
    res = _concurrent_gets(port, "/slow?ms=400", 3)
    assert [r[0] for r in res] == [200, 200, 200], res
    # One at a time: the last answer comes after three backend turns.
    assert max(r[1] for r in res) - t0 >= 1.1


def test_queue_full_and_queue_timeout_give_503(backends, tern):
    (b,) = backends(1)
    port = free_port()
    cfg = (
        "global:\n  workers: 1\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, pool: web }}\n"
        "pools:\n  web:\n    queue_size: 1\n    timeouts: { queue: 300ms }\n    servers:\n"
        f"      - {{ name: b1, address: {b.address}, max_connections: 1 }}\n"
    )
    tern(cfg, [port])
    t0 = time.monotonic()
    res = _concurrent_gets(port, "/slow?ms=1500", 3)
    statuses = sorted(r[0] for r in res)
    assert statuses == [200, 503, 503], res
    # The queued one gave up at the queue timeout, long before the first ended.
    assert min(r[1] for r in res if r[0] == 503) - t0 < scaled(1.2)


def _silent_client_cut_after(port):
    """Seconds from connect until tern closes a connection that never sends
    a byte (the header timeout runs only once a worker has accepted it)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    t0 = time.monotonic()
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    s.close()
    return time.monotonic() - t0


def test_defer_accept_keeps_silent_clients_in_the_kernel(backends, tern):
    """http listeners default to TCP_DEFER_ACCEPT: a connection reaches a
    worker with its first bytes, so a silent one is accepted only after the
    kernel's first SYN-ACK retransmission (1 s) and then gets the 200 ms
    header timeout. Turned off, the 200 ms start at once; a reload flips the
    option on the socket it keeps."""
    (b,) = backends(1)
    port = free_port()
    extra = "    timeouts: { header: 200ms }\n"
    off = simple_config(port, [b], listener_extra=extra + "    defer_accept: false\n")
    t = tern(off, [port])
    assert _silent_client_cut_after(port) < 0.8
    with open(t.conf, "w") as f:
        f.write(simple_config(port, [b], listener_extra=extra))
    t.proc.send_signal(signal.SIGHUP)
    time.sleep(scaled(0.5))
    assert _silent_client_cut_after(port) >= 0.9
    # A client that speaks at once is served at once.
    t0 = time.monotonic()
    out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 200
    assert time.monotonic() - t0 < 0.5
