"""SIGTERM: a graceful stop that lets requests in flight finish, within
global.shutdown_timeout, and never forges an answer for one it cuts."""
import signal
import socket
import threading
import time

from conftest import free_port, scaled, status_of


def _config(port, b, extra=""):
    return (
        f"global:\n  workers: 2\n{extra}"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, pool: web }}\n"
        f"pools:\n  web:\n    servers:\n      - {{ name: b1, address: {b.address} }}\n"
    )


def _request_in_thread(port, path, out):
    def run():
        s = socket.create_connection(("127.0.0.1", port), timeout=scaled(20))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
                if b"\r\n\r\n" in data and data.endswith(b"\n"):
                    break
        except OSError as e:
            out["error"] = e
        s.close()
        out["data"] = data
        out["t"] = time.monotonic()

    th = threading.Thread(target=run)
    th.start()
    return th


def _idle_keepalive(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(s.recv(65536)) == 200
    return s


def test_sigterm_lets_requests_in_flight_finish(backends, tern):
    (b,) = backends(1)
    port = free_port()
    t = tern(_config(port, b), [port])
    idle = _idle_keepalive(port)
    out = {}
    th = _request_in_thread(port, "/slow?ms=1500", out)
    time.sleep(0.4)  # the request reached the backend
    t0 = time.monotonic()
    t.proc.send_signal(signal.SIGTERM)
    # Listeners close at once and the idle keep-alive connection is closed.
    time.sleep(0.3)
    idle.settimeout(scaled(3))
    assert idle.recv(1) == b""
    idle.close()
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        refused = False
    except OSError:
        refused = True
    assert refused, "a listener still accepted after SIGTERM"
    th.join(scaled(10))
    assert status_of(out["data"]) == 200, out
    t.proc.wait(timeout=scaled(10))
    assert t.proc.returncode == 0
    # It waited for the request, no longer.
    assert out["t"] - t0 >= 0.9
    assert time.monotonic() - t0 < scaled(5)


def test_shutdown_timeout_cuts_what_is_left(backends, tern):
    (b,) = backends(1)
    port = free_port()
    t = tern(_config(port, b, "  shutdown_timeout: 1s\n"), [port])
    out = {}
    th = _request_in_thread(port, "/slow?ms=10000", out)
    time.sleep(0.4)
    t0 = time.monotonic()
    t.proc.send_signal(signal.SIGTERM)
    t.proc.wait(timeout=scaled(8))
    took = time.monotonic() - t0
    assert t.proc.returncode == 0
    assert 0.8 < took < scaled(4), took
    th.join(scaled(5))
    # Cut, not answered: no status line was forged for the unfinished request.
    assert status_of(out.get("data", b"")) is None, out


def test_sigint_stops_at_once_cutting_requests_in_flight(backends, tern):
    """SIGINT is the fast stop: no drain, whatever the shutdown_timeout;
    a request in flight is cut (never answered with a forged status) and
    the process is gone well before that request would have ended."""
    (b,) = backends(1)
    port = free_port()
    t = tern(_config(port, b, "  shutdown_timeout: 30s\n"), [port])
    idle = _idle_keepalive(port)
    out = {}
    th = _request_in_thread(port, "/slow?ms=5000", out)
    time.sleep(0.4)  # the request reached the backend
    t0 = time.monotonic()
    t.proc.send_signal(signal.SIGINT)
    t.proc.wait(timeout=scaled(4))
    took = time.monotonic() - t0
    assert t.proc.returncode == 0
    assert took < 2, took  # not the 5 s request, not the 30 s bound
    th.join(scaled(5))
    assert status_of(out.get("data", b"")) is None, out
    idle.settimeout(scaled(3))
    assert idle.recv(1) == b""
    idle.close()
