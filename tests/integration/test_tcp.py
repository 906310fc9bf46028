"""mode: tcp — full-duplex splice proxying, half-close, idle timeout."""
import hashlib
import os
import socket
import threading
import time

from conftest import free_port, scaled, simple_config, wait_port


class EchoServer:
    """Echoes everything; on EOF from the client it sends "bye" and a digest of
    what it received, then closes: that exercises half-close."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.name = "echo"
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = 0
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        h = hashlib.sha256()
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                h.update(d)
                c.sendall(d)
            c.sendall(b"bye " + h.hexdigest().encode())
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


def test_tcp_echo_and_half_close(tern):
    e = EchoServer()
    port = free_port()
    tern(simple_config(port, [e], mode="tcp"), [port])
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    payload = os.urandom(12 * 1024 * 1024)  # several times what one turn moves
    got = bytearray()

    def reader():
        while True:
            d = s.recv(1 << 20)
            if not d:
                return
            got.extend(d)

    th = threading.Thread(target=reader)
    th.start()
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)  # half-close: the answer must still arrive
    th.join(scaled(20))
    s.close()
    assert bytes(got[: len(payload)]) == payload
    assert bytes(got[len(payload):]) == b"bye " + hashlib.sha256(payload).hexdigest().encode()
    e.close()


def test_tcp_idle_timeout(tern):
    e = EchoServer()
    port = free_port()
    tern(simple_config(port, [e], mode="tcp", listener_extra="    timeouts: { tunnel: 1s }\n"), [port])
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    s.sendall(b"ping")
    assert s.recv(4) == b"ping"
    t0 = time.monotonic()
    assert s.recv(100) == b""  # closed by tern when idle
    assert 0.5 < time.monotonic() - t0 < scaled(4) + 1
    s.close()
    e.close()


def test_tcp_backend_refused_tries_next(tern):
    e = EchoServer()
    dead = free_port()

    class Dead:
        name = "dead"
        address = f"127.0.0.1:{dead}"

    port = free_port()
    tern(simple_config(port, [Dead, e], mode="tcp"), [port])
    for _ in range(6):
        s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        s.close()
    e.close()


def _tcp_queue_config(port, e, queue_size, queue_timeout):
    return (
        "global:\n  workers: 1\n"
        f"listeners:\n  - {{ name: t, bind: 127.0.0.1:{port}, mode: tcp, pool: p }}\n"
        f"pools:\n  p:\n    queue_size: {queue_size}\n    timeouts: {{ queue: {queue_timeout} }}\n"
        f"    servers:\n      - {{ name: e, address: {e.address}, max_connections: 1 }}\n"
    )


def test_tcp_max_connections_queues_then_serves(tern):
    """A second connection waits for the first one's slot, then is served."""
    e = EchoServer()
    port = free_port()
    tern(_tcp_queue_config(port, e, 4, "10s"), [port])
    time.sleep(0.2)
    base = e.conns  # the fixture's readiness probe went through too
    a = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    a.sendall(b"a")
    assert a.recv(1) == b"a"
    b = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    b.sendall(b"b")
    b.settimeout(0.5)
    try:
        early = b.recv(1)
    except socket.timeout:
        early = None
    assert early is None, "served past max_connections"
    assert e.conns == base + 1
    a.close()  # frees the slot: b goes next
    b.settimeout(scaled(5))
    assert b.recv(1) == b"b"
    assert e.conns == base + 2
    b.close()
    e.close()


def test_tcp_queue_timeout_and_full_queue_close(tern):
    e = EchoServer()
    port = free_port()
    tern(_tcp_queue_config(port, e, 1, "1s"), [port])
    time.sleep(0.2)
    base = e.conns
    a = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    a.sendall(b"a")
    assert a.recv(1) == b"a"
    waiting = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    time.sleep(0.2)
    # The queue holds one: the next one is closed at once.
    full = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    t0 = time.monotonic()
    assert full.recv(1) == b""
    assert time.monotonic() - t0 < 0.8
    # The waiting one is closed at the queue timeout, never forwarded.
    t0 = time.monotonic()
    assert waiting.recv(1) == b""
    assert 0.5 < time.monotonic() - t0 < scaled(3)
    assert e.conns == base + 1
    a.sendall(b"z")  # the first is untouched
    assert a.recv(1) == b"z"
    for s in (a, waiting, full):
        s.close()
    e.close()


def test_tcp_listener_accepts_a_silent_client_at_once(tern):
    """tcp listeners do not defer accept by default: with a protocol where
    the server speaks first (SMTP, MySQL), the client waits silently for a
    greeting that only comes once tern has accepted and connected."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held = []

    def greet():
        while True:
            try:
                b, _ = srv.accept()
            except OSError:
                return
            held.append(b)
            b.sendall(b"220 ready\r\n")

    threading.Thread(target=greet, daemon=True).start()

    class Greeter:
        name = "greeter"
        address = f"127.0.0.1:{srv.getsockname()[1]}"

    port = free_port()
    tern(simple_config(port, [Greeter()], mode="tcp"), [port])
    t0 = time.monotonic()
    c = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    assert c.recv(64) == b"220 ready\r\n"
    assert time.monotonic() - t0 < 0.8
    c.close()
    srv.close()
    for b in held:
        b.close()
