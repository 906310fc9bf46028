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
