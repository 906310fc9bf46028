"""Hot reload: SIGHUP applies a valid file with nothing lost, refuses an
invalid one with nothing changed."""
import http.client
import os
import signal
import socket
import subprocess
import threading
import time

from conftest import free_port, raw_exchange, scaled, status_of, wait_port


def get(port, path="/", conn=None, headers=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(5))
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    return r.status, r.read(), c


def cfg(listeners, pools, extra=""):
    out = "global:\n  workers: 2\n" + extra + "listeners:\n"
    for name, port, pool in listeners:
        out += f"  - {{ name: {name}, bind: 127.0.0.1:{port}, pool: {pool} }}\n"
    out += "pools:\n"
    for name, servers in pools.items():
        out += f"  {name}:\n    servers:\n"
        for b in servers:
            out += f"      - {{ name: {b.name}, address: {b.address} }}\n"
        if not servers:
            out = out.replace(f"  {name}:\n    servers:\n", f"  {name}:\n    servers: []\n")
    return out


def reload(t, text, wait=0.3):
    with open(t.conf, "w") as f:
        f.write(text)
    t.proc.send_signal(signal.SIGHUP)
    time.sleep(scaled(wait))


def test_reload_changes_pool_servers_and_keeps_connections(backends, tern):
    b1, b2 = backends(2)
    port = free_port()
    t = tern(cfg([("web", port, "web")], {"web": [b1]}), [port])
    st, body, conn = get(port)
    assert body == b"b1\n"
    reload(t, cfg([("web", port, "web")], {"web": [b2]}))
    # The same client connection goes on, now on the new configuration.
    st, body, conn = get(port, conn=conn)
    assert st == 200 and body == b"b2\n"
    st, body, _ = get(port)
    assert body == b"b2\n"
    assert "reload:" in t.log() and "in effect" in t.log()


def test_reload_adds_and_removes_listeners(backends, tern):
    (b1,) = backends(1)
    p1, p2 = free_port(), free_port()
    t = tern(cfg([("a", p1, "web")], {"web": [b1]}), [p1])
    reload(t, cfg([("a", p1, "web"), ("b", p2, "web")], {"web": [b1]}))
    assert wait_port(p2)
    assert get(p2)[0] == 200
    reload(t, cfg([("b", p2, "web")], {"web": [b1]}))
    time.sleep(scaled(0.2))
    try:
        socket.create_connection(("127.0.0.1", p1), timeout=1).close()
        refused = False
    except ConnectionRefusedError:
        refused = True
    assert refused
    assert get(p2)[0] == 200


def test_invalid_reload_changes_nothing(backends, tern):
    (b1,) = backends(1)
    port = free_port()
    good = cfg([("web", port, "web")], {"web": [b1]})
    t = tern(good, [port])
    reload(t, good.replace("servers:", "servres:"))
    assert get(port)[1] == b"b1\n"
    log = t.log()
    assert "refused" in log and "tern.yaml:" in log and "servres" in log
    assert t.proc.poll() is None


def test_reload_onto_a_busy_port_fails_cleanly(backends, tern):
    (b1,) = backends(1)
    port = free_port()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    bport = busy.getsockname()[1]
    t = tern(cfg([("web", port, "web")], {"web": [b1]}), [port])
    reload(t, cfg([("web", port, "web"), ("x", bport, "web")], {"web": [b1]}))
    busy.close()
    assert "Address already in use" in t.log()
    assert get(port)[1] == b"b1\n"


def test_server_state_carries_over(backends, tern):
    b1, b2 = backends(2)
    port = free_port()
    text = cfg([("web", port, "web")], {"web": [b1, b2]})
    t = tern(text, [port])
    for _ in range(4):
        get(port)[2].close()
    # Kill b2: its connect errors are counted; after reload the pool works.
    reload(t, text.replace("workers: 2", "workers: 2\n  max_connections: 5000"))
    bodies = {get(port)[1] for _ in range(6)}
    assert bodies == {b"b1\n", b"b2\n"}


def run_wrk(port, seconds, extra=()):
    return subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", *extra, f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=scaled(seconds * 3 + 20),
    ).stdout


def test_reloads_under_load_lose_nothing(backends, tern):
    b1, b2 = backends(2)
    port = free_port()
    a = cfg([("web", port, "web")], {"web": [b1]})
    b = cfg([("web", port, "web")], {"web": [b1, b2]})
    t = tern(a, [port])
    results = {}

    def load(name, extra):
        results[name] = run_wrk(port, 6, extra)

    threads = [
        threading.Thread(target=load, args=("keepalive", ())),
        threading.Thread(target=load, args=("close", ("-H", "Connection: close"))),
    ]
    for th in threads:
        th.start()
    time.sleep(0.5)
    n = 0
    deadline = time.monotonic() + 4.5
    while time.monotonic() < deadline and n < 100:
        # Replace the file atomically, as editors and config managers do:
        # a reload must never see half a file written in place.
        with open(t.conf + ".new", "w") as f:
            f.write(b if n % 2 else a)
        os.replace(t.conf + ".new", t.conf)
        t.proc.send_signal(signal.SIGHUP)
        n += 1
        time.sleep(0.04)
    for th in threads:
        th.join()
    assert n >= 20
    for name, out in results.items():
        assert "requests in" in out, out
        assert "Non-2xx" not in out and "Socket errors" not in out, (name, out)
    time.sleep(scaled(0.3))
    log = t.log()
    # Signals sent faster than they are handled coalesce; every one handled
    # must have applied.
    handled = log.count("SIGHUP: reloading")
    assert handled >= n // 2 and log.count("in effect") == handled, log[-2000:]
    assert "refused" not in log and "failed" not in log


# ---- global.max_connections: one limit for the whole process, reloadable ----

from conftest import wait_for  # noqa: E402  (appended section)


def limited(port, b, limit):
    return cfg([("web", port, "web")], {"web": [b]}, f"  max_connections: {limit}\n")


def asked(port):
    """A client connection with one GET already sent. The kernel completes
    the handshake even while tern does not accept, so the request waits."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    return s


def answer(s, wait):
    """One whole response read within wait (scaled) seconds, or None when
    nothing came: tern has not accepted the connection."""
    s.settimeout(scaled(wait))
    data = b""
    try:
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
                length = {k.strip().lower(): v for k, v in fields.items()}.get(b"content-length")
                if length is not None and len(body) >= int(length):
                    return data
            chunk = s.recv(4096)
            if not chunk:
                return data or None
            data += chunk
    except socket.timeout:
        return data or None


def served(s):
    r = answer(s, 5)
    return r is not None and r.startswith(b"HTTP/1.1 200")


def again(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    return served(s)


def reload_applied(t, text):
    """Reloads and waits for the log to say so; the workers switch on their
    next loop turn, so leave them a moment."""
    before = t.log().count("in effect")
    reload(t, text, wait=0)
    assert wait_for(lambda: t.log().count("in effect") > before, 5), t.log()[-2000:]
    time.sleep(scaled(0.3))


def hold(backends, tern, limit, n):
    """tern (two workers) with max_connections limit, and n client
    connections it served and keeps open."""
    (b1,) = backends(1)
    port = free_port()
    t = tern(limited(port, b1, limit), [port])
    held = [asked(port) for _ in range(n)]
    assert all(served(s) for s in held)
    return t, port, b1, held


def test_max_connections_counts_all_workers_together(backends, tern):
    # Three connections open at once on two workers: a limit shared out per
    # worker (3 // 2 = 1 each) would serve two at most.
    t, port, _, held = hold(backends, tern, 3, 3)
    fourth = asked(port)
    assert answer(fourth, 1) is None
    held.pop().close()
    assert served(fourth)
    for s in held + [fourth]:
        s.close()
    assert t.proc.poll() is None


def test_reload_raises_max_connections(backends, tern):
    t, port, b1, held = hold(backends, tern, 2, 2)
    third = asked(port)
    assert answer(third, 1) is None  # waits in the accept queue
    reload_applied(t, limited(port, b1, 4))
    assert "global.max_connections 2 -> 4" in t.log()
    # The waiting connection is taken with the new limit, and one more fits.
    assert served(third)
    fourth = asked(port)
    assert served(fourth)
    fifth = asked(port)
    assert answer(fifth, 1) is None
    for s in held + [third, fourth, fifth]:
        s.close()


def test_reload_lowering_max_connections_spares_open_ones(backends, tern):
    t, port, b1, held = hold(backends, tern, 4, 3)
    reload_applied(t, limited(port, b1, 2))
    # Open connections stay and go on being served above the new limit...
    assert all(again(s) for s in held)
    # ...while a new one waits until the count falls under it.
    fourth = asked(port)
    assert answer(fourth, 1) is None
    held.pop().close()
    assert answer(fourth, 1) is None  # two open: still at the limit
    held.pop().close()
    assert served(fourth)
    for s in held + [fourth]:
        s.close()


# ---- listeners[].max_connections: one listener's connections, all workers ----


def two_listeners(port, port2, b, limit):
    """web with its own limit (None: none), other without; two workers."""
    out = cfg([("web", port, "web"), ("other", port2, "web")], {"web": [b]})
    if limit is not None:
        out = out.replace(f"pool: web }}\n  - {{ name: other",
                          f"pool: web, max_connections: {limit} }}\n  - {{ name: other")
    return out


def test_listener_max_connections_pauses_that_listener_only(backends, tern):
    (b1,) = backends(1)
    port, port2 = free_port(), free_port()
    t = tern(two_listeners(port, port2, b1, 2), [port, port2])
    held = [asked(port) for _ in range(2)]
    assert all(served(s) for s in held)
    third = asked(port)
    assert answer(third, 1) is None  # web is full, in both workers
    others = [asked(port2) for _ in range(3)]  # the other listener is not
    assert all(served(s) for s in others)
    held.pop().close()
    assert served(third)
    for s in held + others + [third]:
        s.close()
    assert t.proc.poll() is None


def test_reload_sets_and_lifts_a_listener_limit(backends, tern):
    # The count survives reloads: a limit set by a reload sees the
    # connections already open on the listener.
    (b1,) = backends(1)
    port, port2 = free_port(), free_port()
    t = tern(two_listeners(port, port2, b1, None), [port, port2])
    held = [asked(port) for _ in range(2)]
    assert all(served(s) for s in held)
    reload_applied(t, two_listeners(port, port2, b1, 1))
    assert all(again(s) for s in held)  # open ones stay
    third = asked(port)
    assert answer(third, 1) is None
    held.pop().close()
    assert answer(third, 1) is None  # one open: still at the limit
    reload_applied(t, two_listeners(port, port2, b1, None))
    assert served(third)
    for s in held + [third]:
        s.close()


# ---- keep-alive connections of a renamed or removed listener ----


def test_idle_keepalive_follows_a_renamed_listener(backends, tern):
    """reload.c keeps a listening socket by its address, whatever its name:
    an idle keep-alive connection's next request runs on the renamed
    listener's configuration like a new connection's, not 503."""
    b1, b2 = backends(2)
    port = free_port()
    t = tern(cfg([("web", port, "p1")], {"p1": [b1], "p2": [b2]}), [port])
    c = asked(port)
    assert served(c)
    reload_applied(t, cfg([("front", port, "p2")], {"p1": [b1], "p2": [b2]}))
    c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    r = answer(c, 5)
    assert r.startswith(b"HTTP/1.1 200") and r.endswith(b"b2\n"), r
    assert again(c)  # and the connection goes on
    c.close()


def test_idle_keepalive_of_a_removed_listener_is_served_once_then_closed(backends, tern):
    """A listener removed by a reload: its idle keep-alive connection's next
    request is still answered, on the configuration the connection started
    with (DESIGN: a connection keeps its snapshot until it ends), with
    Connection: close, and the connection ends."""
    b1, b2 = backends(2)
    port, port2 = free_port(), free_port()
    t = tern(cfg([("web", port, "p1"), ("other", port2, "p2")], {"p1": [b1], "p2": [b2]}),
             [port, port2])
    c = asked(port)
    assert served(c)
    reload_applied(t, cfg([("other", port2, "p2")], {"p2": [b2]}))
    c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    r = answer(c, 5)
    assert r.startswith(b"HTTP/1.1 200") and r.endswith(b"b1\n"), r
    assert b"connection: close" in r.lower(), r
    c.settimeout(scaled(3))
    assert c.recv(1) == b""
    c.close()
