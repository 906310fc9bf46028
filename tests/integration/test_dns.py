"""Server addresses that name a host: resolved at start, by `tern -t` and at
each reload, never by the control loop itself.

Names come only from a resolver each test controls. tern and its backends run
inside a network namespace made for the test: `ip netns exec` bind-mounts
/etc/netns/NS/hosts and /etc/netns/NS/resolv.conf over /etc/hosts and
/etc/resolv.conf, so getaddrinfo() there reads the files written here, and a
name server, when there is one, is a socket of ours on the namespace's
loopback. The test's own client enters the namespace on a thread (setns) to
reach tern's listener and admin API on that loopback.
"""
import ctypes
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import BACKEND, TERN, Tern, scaled, wait_for
from test_scale import calls, scale_api, scripts  # noqa: F401 (scripts: a fixture)
from test_scale import config as scale_config

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_seq = itertools.count()

if os.geteuid() != 0 or shutil.which("ip") is None:
    pytest.skip("network namespaces need root and iproute2", allow_module_level=True)


def in_netns(ns, fn, *args):
    """fn(*args) on a thread that entered namespace ns; its value or its
    exception. Sockets it makes belong to ns."""
    out = {}

    def run():
        try:
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            out["v"] = fn(*args)
        except BaseException as e:  # noqa: B036 - handed to the caller
            out["e"] = e

    th = threading.Thread(target=run)
    th.start()
    th.join()
    if "e" in out:
        raise out["e"]
    return out["v"]


def http_get(port, path="/", timeout=5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


def try_get(port, path="/"):
    try:
        return http_get(port, path)
    except OSError:
        return None


class Netns:
    """A network namespace with lo up and its own hosts and resolv.conf."""

    def __init__(self):
        self.name = f"terndns{os.getpid()}x{next(_seq)}"
        self.etc = f"/etc/netns/{self.name}"
        self.procs = []
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            os.makedirs(self.etc)
            self.write("hosts", "127.0.0.1 localhost\n")
            # Nothing listens on port 53 unless a test binds it: a lookup
            # that reaches DNS fails at once (port unreachable).
            self.write("resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
            subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        except BaseException:
            self.remove()
            raise

    def write(self, name, text):
        # In place, not by rename: the bind mount holds this inode, and a
        # running tern must see the new text.
        with open(os.path.join(self.etc, name), "w") as f:
            f.write(text)

    def cmd(self, *argv):
        return ["ip", "netns", "exec", self.name, *argv]

    def backend(self, name, host, port):
        p = subprocess.Popen(self.cmd(sys.executable, BACKEND, "--host", host, "--port", str(port),
                                      "--name", name),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        line = p.stdout.readline()
        assert line.startswith("ready"), f"backend {name} did not start: {line!r}"
        return p

    def remove(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.etc, ignore_errors=True)


class NsTern(Tern):
    """conftest's Tern (log, stop, sanitizer checks), started inside ns;
    `ip netns exec` execs tern, so signals reach tern itself."""

    def __init__(self, ns, yaml_text):
        self.dir = tempfile.mkdtemp(prefix="tern-test-")
        self.conf = os.path.join(self.dir, "tern.yaml")
        with open(self.conf, "w") as f:
            f.write(yaml_text)
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(ns.cmd(TERN, "-c", self.conf), stdout=subprocess.DEVNULL,
                                     stderr=self.stderr)
        self.ns = ns
        if not wait_for(lambda: self.proc.poll() is not None or in_netns(ns.name, try_get, ADMIN),
                        10) or self.proc.poll() is not None:
            self.stop(check=False)
            raise AssertionError(f"tern did not start:\n{self.log()}")

    def rewrite(self, yaml_text):
        with open(self.conf, "w") as f:
            f.write(yaml_text)

    def get(self, port, path="/"):
        return in_netns(self.ns.name, http_get, port, path)


PORT = 8000
ADMIN = 9900


def config(address):
    return (
        "global:\n  workers: 1\n"
        f"admin:\n  listen: 127.0.0.1:{ADMIN}\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{PORT}, pool: web }}\n"
        "pools:\n  web:\n    retries: 0\n    servers:\n"
        f"      - {{ name: app, address: '{address}' }}\n"
    )


@pytest.fixture
def netns():
    ns = Netns()
    made = []

    def start(yaml_text):
        t = NsTern(ns, yaml_text)
        made.append(t)
        return t

    ns.tern = start
    try:
        yield ns
    finally:
        try:
            for t in made:
                t.stop()
        finally:
            ns.remove()


def last_reload(t):
    status, body = t.get(ADMIN, "/api/v1/reload")
    assert status == 200, body
    return json.loads(body)


def test_server_named_by_host_is_served_and_shows_the_name(netns):
    netns.write("hosts", "127.0.0.1 localhost\n127.0.0.2 app1.test\n")
    netns.backend("b-two", "127.0.0.2", 8080)
    t = netns.tern(config("app1.test:8080"))
    assert t.get(PORT) == (200, "b-two\n")
    status, body = t.get(ADMIN, "/api/v1/pools/web/servers/app")
    assert status == 200 and json.loads(body)["address"] == "app1.test:8080", body


def test_check_reports_a_name_that_does_not_resolve_at_its_key(netns):
    d = tempfile.mkdtemp(prefix="tern-dns-")
    try:
        path = os.path.join(d, "tern.yaml")
        with open(path, "w") as f:
            f.write(config("nosuch.test:8080"))
        r = subprocess.run(netns.cmd(TERN, "-t", "-c", path), capture_output=True, text=True,
                           timeout=scaled(30))
        assert r.returncode == 1, r.stdout + r.stderr
        # The server's address is on line 11, its value (the quote) at column 31.
        assert f"{path}:11:31: pools.web.servers[0].address: cannot resolve 'nosuch.test:8080'" \
            in r.stderr, r.stderr
        netns.write("hosts", "127.0.0.1 localhost\n127.0.0.2 nosuch.test\n")
        r = subprocess.run(netns.cmd(TERN, "-t", "-c", path), capture_output=True, text=True,
                           timeout=scaled(30))
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_reload_follows_the_hosts_file_and_refuses_a_name_gone(netns):
    netns.write("hosts", "127.0.0.1 localhost\n127.0.0.2 app1.test\n")
    netns.backend("b-two", "127.0.0.2", 8080)
    netns.backend("b-three", "127.0.0.3", 8080)
    t = netns.tern(config("app1.test:8080"))
    assert t.get(PORT) == (200, "b-two\n")

    # The record changes; only a reload reads it again.
    netns.write("hosts", "127.0.0.1 localhost\n127.0.0.3 app1.test\n")
    assert t.get(PORT) == (200, "b-two\n")
    t.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "in effect" in t.log(), 10), t.log()
    assert t.get(PORT) == (200, "b-three\n")
    status, body = t.get(ADMIN, "/api/v1/pools/web/servers/app")
    assert status == 200 and json.loads(body)["address"] == "app1.test:8080", body

    # The name is gone: the reload is refused and traffic goes on.
    netns.write("hosts", "127.0.0.1 localhost\n")
    t.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: last_reload(t)["ok"] is False, 10), t.log()
    errors = last_reload(t)["errors"]
    assert any(f"{t.conf}:11:31: pools.web.servers[0].address: cannot resolve 'app1.test:8080'" in e
               for e in errors), errors
    assert "refused, the running configuration is unchanged" in t.log()
    assert t.get(PORT) == (200, "b-three\n")


class SilentNameServer:
    """UDP 127.0.0.1:53 in the namespace that reads queries and answers none,
    as a name server that is down behind a firewall does."""

    def __init__(self, ns):
        self.sock = in_netns(ns, self._bind)
        self.queries = 0
        self.thread = threading.Thread(target=self._drop, daemon=True)
        self.thread.start()

    @staticmethod
    def _bind():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 53))
        return s

    def _drop(self):
        while True:
            try:
                self.sock.recv(4096)
            except OSError:
                return
            self.queries += 1

    def close(self):
        self.sock.close()


def test_control_loop_answers_while_a_reload_waits_for_a_silent_resolver(netns):
    netns.write("hosts", "127.0.0.1 localhost\n127.0.0.2 app1.test\n")
    netns.backend("b-two", "127.0.0.2", 8080)
    t = netns.tern(config("app1.test:8080"))
    assert t.get(PORT) == (200, "b-two\n")
    dns = SilentNameServer(netns.name)
    try:
        # Each lookup now waits 2 s per try, 2 tries, before giving up.
        netns.write("resolv.conf", "nameserver 127.0.0.1\noptions timeout:2 attempts:2\n")
        t.rewrite(config("slow.test:8080"))
        t.proc.send_signal(signal.SIGHUP)
        sent = time.monotonic()
        assert wait_for(lambda: dns.queries > 0, 5), t.log()

        # While the lookup hangs, the admin API (control loop) and the
        # proxy keep answering, each call promptly.
        answered_pending = 0
        slowest = 0.0
        while True:
            t0 = time.monotonic()
            state = last_reload(t)
            slowest = max(slowest, time.monotonic() - t0)
            if state["time"] is not None:
                break
            answered_pending += 1
            assert t.get(PORT) == (200, "b-two\n")
            assert time.monotonic() - sent < scaled(60), t.log()
            time.sleep(0.1)
        pending_for = time.monotonic() - sent
        assert slowest < 1.0, f"the admin API took {slowest:.2f} s to answer"
        assert answered_pending >= 5 and pending_for >= 2.0, (answered_pending, pending_for)

        # The lookup gave up: the reload is refused, the old address serves.
        assert state["ok"] is False, state
        assert any("pools.web.servers[0].address: cannot resolve 'slow.test:8080'" in e
                   for e in state["errors"]), state
        assert t.get(PORT) == (200, "b-two\n")
    finally:
        dns.close()


def test_stop_during_a_slow_load_does_not_wait_for_it(netns):
    """SIGTERM while a reload waits for the resolver stops tern at once and
    cleanly: the load is abandoned, not waited for."""
    netns.write("hosts", "127.0.0.1 localhost\n127.0.0.2 app1.test\n")
    netns.backend("b-two", "127.0.0.2", 8080)
    t = netns.tern(config("app1.test:8080"))
    dns = SilentNameServer(netns.name)
    try:
        netns.write("resolv.conf", "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n")
        t.rewrite(config("slow.test:8080"))
        t.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: dns.queries > 0, 5), t.log()
        t0 = time.monotonic()
        log = t.stop()  # exit status 0, no sanitizer report
        assert time.monotonic() - t0 < 5, log
        assert "in effect" not in log and "cannot resolve" not in log, log
    finally:
        dns.close()


def test_sighups_during_a_slow_load_are_not_lost(netns):
    """A SIGHUP that comes while a load waits for the resolver starts one
    more load after it, which reads the file as it is then."""
    netns.write("hosts", "127.0.0.1 localhost\n127.0.0.2 app1.test\n127.0.0.3 app2.test\n")
    netns.backend("b-two", "127.0.0.2", 8080)
    netns.backend("b-three", "127.0.0.3", 8080)
    t = netns.tern(config("app1.test:8080"))
    dns = SilentNameServer(netns.name)
    try:
        netns.write("resolv.conf", "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
        t.rewrite(config("slow.test:8080"))
        t.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: dns.queries > 0, 5), t.log()
        t.rewrite(config("app2.test:8080"))
        t.proc.send_signal(signal.SIGHUP)
        t.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "in effect" in t.log(), 30), t.log()
        log = t.log()
        assert log.count("SIGHUP: reloading") == 2, log
        assert "cannot resolve 'slow.test:8080'" in log, log
        assert t.get(PORT) == (200, "b-three\n")
    finally:
        dns.close()


def test_admin_api_refuses_a_server_named_by_host(netns):
    netns.write("hosts", "127.0.0.1 localhost\n127.0.0.2 app1.test\n")
    netns.backend("b-two", "127.0.0.2", 8080)
    tok = tempfile.NamedTemporaryFile("w", prefix="tern-token-", delete=False)
    tok.write("s3cret-token-for-tests\n")
    tok.close()
    try:
        text = config("127.0.0.2:8080").replace(
            f"  listen: 127.0.0.1:{ADMIN}\n", f"  listen: 127.0.0.1:{ADMIN}\n  token_file: {tok.name}\n")
        t = netns.tern(text)

        def post():
            c = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=5)
            try:
                c.request("POST", "/api/v1/pools/web/servers",
                          body='{"name": "app2", "address": "app1.test:8080"}',
                          headers={"Authorization": "Bearer s3cret-token-for-tests",
                                   "Content-Type": "application/json"})
                r = c.getresponse()
                return r.status, r.read().decode()
            finally:
                c.close()

        status, body = in_netns(netns.name, post)
        assert status == 400, body
        assert "only pools[].servers[].address in the configuration file may name a host" in body
    finally:
        os.unlink(tok.name)


def test_scale_create_that_prints_a_host_name_fails_and_destroys(netns, scripts):
    """A server added at runtime is one fixed address, so an exec create
    that prints a name fails its launch, saying what to print, and the
    server it made is destroyed rather than left running unknown."""
    netns.write("hosts", "127.0.0.1 localhost\n127.0.0.1 app1.test\n")
    create = os.path.join(scripts, "create.sh")
    with open(create) as f:
        text = f.read()
    with open(create, "w") as f:
        f.write(text.replace("echo 127.0.0.1:$port\n", "echo app1.test:$port\n"))
    t = netns.tern(scale_config(PORT, ADMIN, scripts))

    def failed_launch():
        g = in_netns(netns.name, scale_api, ADMIN)
        acts = [a for a in (g or {}).get("activities", []) if a["action"] == "launch"]
        return (g, acts) if acts and acts[0]["result"].startswith("failed") else None

    found = wait_for(failed_launch, 20)
    assert found, f"{in_netns(netns.name, scale_api, ADMIN)}\n{t.log()}"
    g, acts = found
    assert "printed a host name" in acts[0]["result"], acts
    assert "print the server's numeric IP address" in acts[0]["result"], acts
    assert "destroy ran" in acts[0]["result"], acts
    assert wait_for(lambda: any(c.startswith("destroy web web web-tern-1 app1.test:")
                                for c in calls(scripts)), 5), calls(scripts)
    assert g["servers"] == [] or all(s["state"] != "in_service" for s in g["servers"]), g


# ---- POST /api/v1/reload: the answer waits for the load, the loop does not ----

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def token_file():
    tok = tempfile.NamedTemporaryFile("w", prefix="tern-token-", delete=False)
    tok.write(TOKEN + "\n")
    tok.close()
    yield tok.name
    os.unlink(tok.name)


def with_token(text, token_path):
    return text.replace(f"  listen: 127.0.0.1:{ADMIN}\n",
                        f"  listen: 127.0.0.1:{ADMIN}\n  token_file: {token_path}\n")


def post_reload(timeout=60.0):
    c = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=scaled(timeout))
    try:
        c.request("POST", "/api/v1/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


class Pending:
    """A call made in the namespace on a thread of its own; .done once it
    returned, .value its value (or .error its exception)."""

    def __init__(self, ns, fn, *args):
        self.done = threading.Event()
        self.value = self.error = None

        def run():
            try:
                self.value = in_netns(ns, fn, *args)
            except BaseException as e:  # noqa: B036 - handed to the caller
                self.error = e
            self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout):
        assert self.done.wait(scaled(timeout)), "no answer in time"
        if self.error:
            raise self.error
        return self.value


def answered_meanwhile(t, pending):
    """GET /api/v1/pools on other connections, as long as every call in
    pending waits: how many answered before any of them did."""
    n = 0
    while not any(p.done.is_set() for p in pending):
        status, body = t.get(ADMIN, "/api/v1/pools")
        assert status == 200 and json.loads(body)["pools"][0]["name"] == "web", body
        if any(p.done.is_set() for p in pending):
            break
        n += 1
        time.sleep(0.2)
    return n


def slow_start(netns, token_file, resolv="timeout:2 attempts:2"):
    """tern serving app1.test (b-two), a silent name server, and the file
    naming slow.test, which the name server will never answer for."""
    netns.write("hosts", "127.0.0.1 localhost\n127.0.0.2 app1.test\n127.0.0.3 app2.test\n")
    netns.backend("b-two", "127.0.0.2", 8080)
    netns.backend("b-three", "127.0.0.3", 8080)
    t = netns.tern(with_token(config("app1.test:8080"), token_file))
    dns = SilentNameServer(netns.name)
    netns.write("resolv.conf", f"nameserver 127.0.0.1\noptions {resolv}\n")
    t.rewrite(with_token(config("slow.test:8080"), token_file))
    return t, dns


def cannot_resolve_slow(body):
    return body["ok"] is False and any(
        "pools.web.servers[0].address: cannot resolve 'slow.test:8080'" in e
        for e in body["errors"])


def test_reload_post_waits_for_its_load_while_the_admin_api_answers(netns, token_file):
    """POST /api/v1/reload answers with the outcome of its reload, but the
    control loop does not wait for the resolver with it: other admin
    connections are answered meanwhile."""
    t, dns = slow_start(netns, token_file)
    try:
        post = Pending(netns.name, post_reload)
        assert wait_for(lambda: dns.queries > 0 or post.done.is_set(), 5), t.log()
        assert answered_meanwhile(t, [post]) >= 3, (post.value, t.log())
        status, body = post.result(60)
        assert status == 400 and cannot_resolve_slow(body), body
        assert last_reload(t)["time"] == body["time"], (last_reload(t), body)
        assert t.get(PORT) == (200, "b-two\n")
        log = t.log()
        assert "admin API: reloading" in log and "SIGHUP" not in log, log
    finally:
        dns.close()


def pipelined_post_then_get():
    """POST /api/v1/reload and GET /api/v1/reload sent at once on one
    connection: both answers, in order."""
    s = socket.create_connection(("127.0.0.1", ADMIN), timeout=scaled(60))
    try:
        s.sendall(f"POST /api/v1/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  "Content-Length: 0\r\n\r\nGET /api/v1/reload HTTP/1.1\r\nHost: x\r\n\r\n"
                  .encode())
        out = []
        f = s.makefile("rb")
        for _ in range(2):
            status = int(f.readline().split()[1])
            headers = {}
            while (line := f.readline().strip()):
                name, _, value = line.decode().partition(":")
                headers[name.lower()] = value.strip()
            body = f.read(int(headers["content-length"]))
            out.append((status, json.loads(body), headers.get("connection")))
        return out
    finally:
        s.close()


def test_reload_posts_at_once_each_get_the_outcome(netns, token_file):
    """Two POSTs while a load waits for the resolver: both are answered
    with the outcome, the one pipelined with a GET before that GET; the
    admin API answers others meanwhile."""
    t, dns = slow_start(netns, token_file)
    try:
        first = Pending(netns.name, pipelined_post_then_get)
        assert wait_for(lambda: dns.queries > 0 or first.done.is_set(), 5), t.log()
        second = Pending(netns.name, post_reload)
        assert answered_meanwhile(t, [first, second]) >= 3, t.log()
        (st1, body1, conn1), (st_get, got, _) = first.result(60)
        assert st1 == 400 and cannot_resolve_slow(body1) and conn1 == "keep-alive", body1
        # The GET behind it ran once the POST was answered, not before.
        assert st_get == 200 and got["time"] == body1["time"] and got["ok"] is False, got
        status, body2 = second.result(60)
        assert status == 400 and cannot_resolve_slow(body2), body2
        # The second came during the first's load: it waited for a load
        # that read the file after it came, the next one.
        assert body2["time"] > body1["time"], (body1, body2)
        assert t.log().count("admin API: reloading") == 2, t.log()
    finally:
        dns.close()


def test_reload_post_during_a_sighup_load_gets_a_later_load(netns, token_file):
    """A POST while a SIGHUP's load waits for the resolver is not refused:
    it is answered with the outcome of a load that read the file after the
    POST came, and the log still pairs the SIGHUP with its outcome."""
    t, dns = slow_start(netns, token_file, "timeout:2 attempts:1")
    try:
        t.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: dns.queries > 0, 5), t.log()
        t.rewrite(with_token(config("app2.test:8080"), token_file))
        status, body = in_netns(netns.name, post_reload)
        assert status == 200 and body["ok"] is True, (body, t.log())
        assert last_reload(t)["time"] == body["time"]
        assert t.get(PORT) == (200, "b-three\n")
        log = t.log()
        assert log.count("SIGHUP: reloading") == 1, log
        assert log.count("admin API: reloading") == 1, log
        assert "cannot resolve 'slow.test:8080'" in log and log.count(" in effect (") == 1, log
    finally:
        dns.close()


def test_reload_post_whose_client_goes_away_while_waiting(netns, token_file):
    """Clients that close (one cleanly, one with a reset) while their POST
    waits for the load: the admin API goes on answering, the load ends as
    usual, a later POST works, and tern stops cleanly (no leak or misuse
    under the sanitizers)."""
    t, dns = slow_start(netns, token_file)
    try:
        def send_post(reset):
            s = socket.create_connection(("127.0.0.1", ADMIN), timeout=scaled(5))
            if reset:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            s.sendall(f"POST /api/v1/reload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                      f"{TOKEN}\r\nContent-Length: 0\r\n\r\n".encode())
            return s

        gone = [in_netns(netns.name, send_post, False)]
        assert wait_for(lambda: dns.queries > 0, 5), t.log()
        gone.append(in_netns(netns.name, send_post, True))
        time.sleep(0.3)
        for s in gone:
            s.close()
        started = time.monotonic()
        # The loop is not held by the waiting answers, nor by their end.
        answered = 0
        while last_reload(t)["time"] is None:
            status, body = t.get(ADMIN, "/api/v1/pools")
            assert status == 200, body
            answered += 1
            assert time.monotonic() - started < scaled(60), t.log()
            time.sleep(0.2)
        assert answered >= 3, t.log()
        # The second POST came during the first load: wait for its own load.
        assert wait_for(lambda: t.log().count("cannot resolve 'slow.test:8080'") >= 2, 30), t.log()
        netns.write("resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        t.rewrite(with_token(config("app2.test:8080"), token_file))
        status, body = in_netns(netns.name, post_reload)
        assert status == 200 and body["ok"] is True, body
        assert t.get(PORT) == (200, "b-three\n")
        assert "out of" not in t.log() and "admin: " not in t.log(), t.log()
    finally:
        dns.close()
