"""The configuration lifecycle, held to what README and DESIGN promise: every
SIGHUP handled and none losing a request, an invalid file changing nothing
and showing in GET /api/v1/reload, requests in flight finishing on the
snapshot they started with, counters kept by server name, runtime servers
surviving, and SIGUSR1 reopening both log files.

Reloads are counted from what tern reports (its log, GET /api/v1/reload),
never from the signals sent: signals sent faster than tern handles them
coalesce, so each test waits for one reload to be reported before the next.
"""
import collections
import errno
import http.client
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import Backend, free_port, scaled, wait_for
from test_admin import TOKEN, Api
from test_health import backend_get
from test_reload import cfg as base_cfg


def cfg(listeners, pools, aport=None, token_file=None, global_extra="", workers=2):
    admin = ""
    if aport:
        admin = f"admin:\n  listen: 127.0.0.1:{aport}\n"
        admin += f"  token_file: {token_file}\n" if token_file else ""
    out = base_cfg(listeners, pools, extra=global_extra + admin)
    return out.replace("workers: 2\n", f"workers: {workers}\n", 1)


def write_file(path, text):
    # Atomically, as config managers do: a reload must not read half a file.
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)


def write_conf(t, text):
    write_file(t.conf, text)


def attempt_after(api, after, timeout=5.0):
    """GET /api/v1/reload once it shows an attempt later than after."""
    def newer():
        last = api.get("/api/v1/reload")[2]
        return last if (last["time"] or 0) > after else None
    last = wait_for(newer, timeout)
    assert last, f"no reload attempt reported in GET /api/v1/reload within {scaled(timeout)} s"
    return last


def applied(t):
    return t.log().count(" in effect (")


def sighup_and_wait(t, text, timeout=5.0):
    """Writes text, sends one SIGHUP and waits until tern reports that one
    reload applied."""
    before = applied(t)
    write_conf(t, text)
    t.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: applied(t) > before, timeout), (
        f"reload not reported within {scaled(timeout)} s:\n" + t.log()[-3000:])


def get(port, path="/", timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=scaled(timeout))
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.getheader("X-Backend"), r.read()
    finally:
        c.close()


# Long enough for a reload and a request to happen while it is in flight.
SLOW = f"/slow?ms={int(scaled(1.5) * 1000)}"


def in_flight(port, path, backend):
    """Starts GET path in a thread and returns once backend has received it;
    the thread's result lands in the returned list."""
    out = []
    th = threading.Thread(target=lambda: out.append(get(port, path)))
    th.start()
    assert wait_for(lambda: any(path in line for line in backend.requests()), 5), \
        f"{path} never reached {backend.name}"
    return th, out


class Wrk:
    """wrk until stop(): SIGINT makes it stop and print its summary, so the
    load lasts exactly as long as the reloads it covers."""

    def __init__(self, target, extra=()):
        url = target if isinstance(target, str) else f"http://127.0.0.1:{target}/"
        self.proc = subprocess.Popen(
            ["wrk", "-t1", "-c16", "-d600s", *extra, url],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=scaled(30))
        return out


def requests_of(wrk_out):
    for line in wrk_out.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    return 0


def assert_no_failure(outputs):
    for name, out in outputs.items():
        assert requests_of(out) > 0, (name, out)
        assert "Non-2xx" not in out and "Socket errors" not in out, (name, out)


@pytest.fixture
def token_file(tmp_path):
    p = tmp_path / "admin.token"
    p.write_text(TOKEN + "\n")
    return str(p)


def test_100_sighup_reloads_under_load_all_applied_none_lost(backends, tern):
    b1, b2 = backends(2)
    port, aport = free_port(), free_port()
    # The order changes, the names stay: their counters must add up.
    a = cfg([("web", port, "web")], {"web": [b1, b2]}, aport)
    b = cfg([("web", port, "web")], {"web": [b2, b1]}, aport)
    t = tern(a, [port, aport])
    loads = {"keepalive": Wrk(port), "close": Wrk(port, ("-H", "Connection: close"))}
    try:
        time.sleep(scaled(0.5))
        start = time.monotonic()
        for i in range(100):
            sighup_and_wait(t, b if i % 2 else a)
            time.sleep(0.02)  # some requests on each generation
        elapsed = time.monotonic() - start
    finally:
        outputs = {name: w.stop() for name, w in loads.items()}
    log = t.log()
    assert log.count("SIGHUP: reloading") == 100 and applied(t) == 100, log[-3000:]
    assert "reload of" not in log, log[-3000:]  # neither refused nor failed
    # Each reload of a two-line change is milliseconds of work; a minute for
    # all 100 means one of them hung on something.
    assert elapsed < scaled(60), elapsed
    assert_no_failure(outputs)
    # Every request wrk completed was counted, however many generations it
    # crossed; wrk may also leave one request per connection unfinished.
    done = sum(requests_of(out) for out in outputs.values())
    api = Api(aport)

    def totals():
        pool = api.get("/api/v1/pools/web")[2]
        return (pool["requests_total"], sum(s["requests_total"] for s in pool["servers"]),
                sum(s["responses"]["2xx"] for s in pool["servers"]))

    assert wait_for(lambda: all(done <= n <= done + 32 for n in totals()), 3), (done, totals())
    assert {get(port)[1] for _ in range(4)} == {"b1", "b2"}


def test_invalid_sighup_under_load_changes_nothing_and_is_reported(backends, tern, token_file):
    b1, b2 = backends(2)
    port, aport = free_port(), free_port()
    good = cfg([("web", port, "web")], {"web": [b1]}, aport, token_file)
    t = tern(good, [port, aport])
    api = Api(aport)
    st, _, last = api.get("/api/v1/reload")
    assert st == 200 and last["time"] is None and last["ok"] is None, last
    # Both files would move the traffic to b2 if any part of them applied.
    moved = cfg([("web", port, "web")], {"web": [b2]}, aport, token_file)
    lines = moved.splitlines()
    at = next(i for i, line in enumerate(lines) if "servers:" in line)
    schema_error = "\n".join(lines[:at] + ["    servres:"] + lines[at + 1:])
    syntax_error = moved.replace(f"address: {b2.address} }}", f"address: {b2.address}")
    cases = [
        (schema_error, f"{t.conf}:{at + 1}:5: pools.web.servres: unknown key"),
        # The flow mapping never closes: libyaml notices at the end of the file.
        (syntax_error, f"{t.conf}:{len(lines) + 1}:1: YAML syntax error"),
    ]
    loads = {"keepalive": Wrk(port), "close": Wrk(port, ("-H", "Connection: close"))}
    try:
        time.sleep(scaled(0.3))
        for text, expected in cases:
            before = api.get("/api/v1/reload")[2]["time"] or 0
            write_conf(t, text)
            t.proc.send_signal(signal.SIGHUP)
            last = attempt_after(api, before)
            assert last["ok"] is False, last
            assert any(e.startswith(expected) for e in last["errors"]), (expected, last)
            assert expected in t.log()
            time.sleep(scaled(0.3))  # traffic on, after the refused file
    finally:
        outputs = {name: w.stop() for name, w in loads.items()}
    assert_no_failure(outputs)
    assert applied(t) == 0
    assert {get(port)[1] for _ in range(4)} == {"b1"}
    assert b2.requests() == []
    # The admin listener and its token were not touched either.
    st, _, body = api.call("POST", "/api/v1/pools/web/servers/b1/drain")
    assert 200 <= st < 300, body
    # The same change, valid this time, applies and clears the errors.
    sighup_and_wait(t, moved)
    last = api.get("/api/v1/reload")[2]
    assert last["ok"] is True and last["errors"] == [], last
    assert get(port)[1] == "b2"


def test_sighup_rereads_included_files_and_names_the_one_in_error(backends, tern, token_file):
    b1, b2 = backends(2)
    port, aport = free_port(), free_port()
    main = cfg([("web", port, "web")], {}, aport, token_file).replace("pools:\n", "")
    main += "include: pools.yaml\n"

    def pools(server, key="servers"):
        return (f"pools:\n  web:\n    {key}:\n"
                f"      - {{ name: {server.name}, address: {server.address} }}\n")

    t = tern(main, [port, aport], extra_files={"pools.yaml": pools(b1)})
    inc = os.path.join(t.dir, "pools.yaml")
    api = Api(aport)
    assert get(port)[1] == "b1"
    # Only the included file changes: SIGHUP reads it again.
    write_file(inc, pools(b2))
    sighup_and_wait(t, open(t.conf).read())
    assert get(port)[1] == "b2"
    before = api.get("/api/v1/reload")[2]["time"]
    write_file(inc, pools(b1, key="servres"))
    t.proc.send_signal(signal.SIGHUP)
    last = attempt_after(api, before)
    assert any(e.startswith(f"{inc}:3:5: pools.web.servres") for e in last["errors"]), last
    assert get(port)[1] == "b2"


def test_request_in_flight_finishes_on_its_snapshot(backends, tern):
    b1, b2 = backends(2)
    port = free_port()
    t = tern(cfg([("web", port, "web")], {"web": [b1]}), [port])
    th, out = in_flight(port, SLOW, b1)
    sighup_and_wait(t, cfg([("web", port, "web")], {"web": [b2]}))
    # New requests already go to the new pool while the old one is busy.
    assert get(port) == (200, "b2", b"b2\n")
    assert not out, "the slow request ended before the check above"
    th.join(scaled(10))
    assert out == [(200, "b1", b"slow\n")], out
    assert not any("/slow" in line for line in b2.requests())


def refused(port):
    # Refused, not merely slow: a listener still open with a full backlog
    # would time out instead.
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


def test_removed_listener_finishes_its_request_then_refuses(backends, tern):
    (b1,) = backends(1)
    p1, p2 = free_port(), free_port()
    t = tern(cfg([("a", p1, "web"), ("b", p2, "web")], {"web": [b1]}), [p1, p2])
    th, out = in_flight(p1, SLOW, b1)
    sighup_and_wait(t, cfg([("b", p2, "web")], {"web": [b1]}))
    assert get(p2)[0] == 200
    assert not out, "the slow request ended before the check above"
    th.join(scaled(10))
    assert out == [(200, "b1", b"slow\n")], out
    assert wait_for(lambda: refused(p1), 3), f"port {p1} still accepts after its removal"
    assert get(p2)[0] == 200


def counters(api):
    pool = api.get("/api/v1/pools/web")[2]
    return {s["name"]: (s["requests_total"], s["responses"]["2xx"]) for s in pool["servers"]}


def test_counters_carry_over_by_name_when_the_list_is_reordered(backends, tern, token_file):
    bs = backends(3)
    port, aport = free_port(), free_port()
    # One worker: one balancer, so the split over the servers is exact.
    text = cfg([("web", port, "web")], {"web": bs}, aport, token_file, workers=1)
    t = tern(text, [port, aport])
    api = Api(aport)
    # Unequal counts, so a counter that followed the position instead of the
    # name would show.
    for b, n in zip(bs, (1, 2, 3)):
        st, _, body = api.call("PATCH", f"/api/v1/pools/web/servers/{b.name}", {"weight": n})
        assert st == 200, body
    for _ in range(12):
        assert get(port)[0] == 200
    before = counters(api)
    assert sorted(v[0] for v in before.values()) == [2, 4, 6], before
    sighup_and_wait(t, cfg([("web", port, "web")], {"web": bs[::-1]}, aport, token_file,
                              workers=1))
    assert [s["name"] for s in api.get("/api/v1/pools/web")[2]["servers"]] == ["b3", "b2", "b1"]
    assert counters(api) == before


def test_health_and_admin_state_carry_over_by_name(backends, tern, token_file):
    bs = backends(3)
    b1, b2, b3 = bs
    port, aport = free_port(), free_port()
    hc = ("    health_check: { type: http, path: /healthz, interval: 100ms, timeout: 300ms,"
          " rise: 2, fall: 2 }\n")

    def text(order):
        return cfg([("web", port, "web")], {"web": order}, aport, token_file).replace(
            "    servers:\n", hc + "    servers:\n")

    t = tern(text(bs), [port, aport])
    api = Api(aport)
    backend_get(b2, "/healthz/fail")
    st, _, body = api.call("POST", "/api/v1/pools/web/servers/b3/drain")
    assert 200 <= st < 300, body

    def states():
        pool = api.get("/api/v1/pools/web")[2]
        return {s["name"]: (s["state"], s["health"]) for s in pool["servers"]}

    expected = {"b1": ("ready", "up"), "b2": ("ready", "down"), "b3": ("drain", "up")}
    assert wait_for(lambda: states() == expected, 5), states()
    # A new server under b2's name would start up; the same one stays down
    # until it passes `rise` checks, which it keeps failing.
    sighup_and_wait(t, text(bs[::-1]))
    assert states() == expected
    assert {get(port)[1] for _ in range(6)} == {"b1"}
    assert states() == expected


def test_counters_count_a_request_that_spans_a_reload(backends, tern, token_file):
    """A request picked before the reload and answered after it is counted
    once as sent and once as answered, on the server that keeps its name."""
    (b1,) = backends(1)
    port, aport = free_port(), free_port()
    text = cfg([("web", port, "web")], {"web": [b1]}, aport, token_file)
    t = tern(text, [port, aport])
    api = Api(aport)
    assert get(port)[0] == 200
    th, out = in_flight(port, SLOW, b1)
    sighup_and_wait(t, text.replace("workers:", "max_connections: 5000\n  workers:"))
    assert not out, "the slow request ended before the reload"
    th.join(scaled(10))
    assert out and out[0][0] == 200, out
    assert get(port)[0] == 200
    assert wait_for(lambda: counters(api)["b1"] == (3, 3), 2), counters(api)


def test_runtime_server_survives_a_reload_that_does_not_name_it(backends, tern, token_file):
    b1, b2 = backends(2)
    (n1,) = backends(1, prefix="n")
    port, aport = free_port(), free_port()
    t = tern(cfg([("web", port, "web")], {"web": [b1]}, aport, token_file, workers=1),
             [port, aport])
    api = Api(aport)
    st, _, body = api.call("POST", "/api/v1/pools/web/servers",
                           {"name": "n1", "address": n1.address, "weight": 1})
    assert st == 201, body
    seen = collections.Counter(get(port)[1] for _ in range(4))
    assert seen == {"b1": 2, "n1": 2}, seen
    sighup_and_wait(t, cfg([("web", port, "web")], {"web": [b1, b2]}, aport, token_file,
                              workers=1))
    pool = api.get("/api/v1/pools/web")[2]
    srv = {s["name"]: s for s in pool["servers"]}
    assert set(srv) == {"b1", "b2", "n1"}, pool
    assert srv["n1"]["dynamic"] and srv["n1"]["address"] == n1.address
    assert srv["n1"]["requests_total"] == 2 and srv["b1"]["requests_total"] == 2
    seen = collections.Counter(get(port)[1] for _ in range(6))
    assert seen == {"b1": 2, "b2": 2, "n1": 2}, seen


def test_sigusr1_reopens_the_log_and_the_access_log(backends, tern, tmp_path):
    (b1,) = backends(1)
    port = free_port()
    log, alog = str(tmp_path / "tern.log"), str(tmp_path / "access.log")
    t = tern(cfg([("web", port, "web")], {"web": [b1]},
                 global_extra=f"  log: {log}\n  access_log: {alog}\n"), [port])
    assert get(port, "/first")[0] == 200
    assert wait_for(lambda: os.path.exists(alog) and "/first" in open(alog).read(), 3)
    # What logrotate does: move the files away, then signal.
    os.rename(log, log + ".1")
    os.rename(alog, alog + ".1")
    t.proc.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: os.path.exists(log) and "log files reopened" in open(log).read(), 3), \
        t.log()
    assert get(port, "/second")[0] == 200
    assert wait_for(lambda: os.path.exists(alog) and "/second" in open(alog).read(), 3)
    assert "/first" not in open(alog).read()
    assert "/second" not in open(alog + ".1").read()
    assert "reopened" not in open(log + ".1").read()
    # The daemon's own lines go to the new file too.
    t.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "in effect" in open(log).read(), 5)
    assert "in effect" not in open(log + ".1").read()


def test_reload_moves_the_log_and_the_access_log(backends, tern, tmp_path):
    (b1,) = backends(1)
    port = free_port()

    def text(log, alog):
        return cfg([("web", port, "web")], {"web": [b1]},
                   global_extra=f"  log: {tmp_path / log}\n  access_log: {tmp_path / alog}\n")

    def read(name):
        p = tmp_path / name
        return p.read_text() if p.exists() else ""

    t = tern(text("a.log", "a.access"), [port])
    assert get(port, "/first")[0] == 200
    assert wait_for(lambda: "/first" in read("a.access"), 3)
    write_conf(t, text("b.log", "b.access"))
    t.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "in effect" in read("b.log"), 5), read("a.log")
    assert get(port, "/second")[0] == 200
    assert wait_for(lambda: "/second" in read("b.access"), 3), read("a.access")
    assert "/second" not in read("a.access") and "/first" not in read("b.access")
    assert "in effect" not in read("a.log")
    # Each file is open once, those left behind not at all; SIGUSR1 then
    # reopens the new ones.
    fds = f"/proc/{t.proc.pid}/fd"
    open_files = collections.Counter()
    for fd in os.listdir(fds):
        try:
            open_files[os.readlink(f"{fds}/{fd}")] += 1
        except OSError:
            pass  # a socket closed meanwhile
    assert [open_files[str(tmp_path / n)] for n in ("a.log", "a.access", "b.log", "b.access")] \
        == [0, 0, 1, 1], open_files
    t.proc.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: "log files reopened" in read("b.log"), 3)
    assert "reopened" not in read("a.log")
    # Off, then on again in another file.
    write_conf(t, text("b.log", "b.access").replace(f"  access_log: {tmp_path}/b.access\n", ""))
    t.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: read("b.log").count("in effect") == 2, 5), read("b.log")
    assert get(port, "/third")[0] == 200
    write_conf(t, text("b.log", "c.access"))
    t.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: read("b.log").count("in effect") == 3, 5), read("b.log")
    assert get(port, "/fourth")[0] == 200
    assert wait_for(lambda: "/fourth" in read("c.access"), 3)
    assert "/third" not in read("b.access") + read("c.access")


# write(2) to a log file held back when it carries SLOW_WRITE_MARK: a worker
# that has read the descriptor's number sleeps here before using it, as it
# could be preempted for real, only far less often.
SLOW_WRITE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

ssize_t write(int fd, const void *buf, size_t n)
{
    static ssize_t (*real)(int, const void *, size_t);
    if (!real)
        real = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    const char *mark = getenv("SLOW_WRITE_MARK"), *flag = getenv("SLOW_WRITE_FLAG");
    struct stat st;
    if (mark && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && memmem(buf, n, mark, strlen(mark))) {
        close(open(flag, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)); /* "holding fd now" */
        struct timespec ts = {0, atoi(getenv("SLOW_WRITE_MS")) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return real(fd, buf, n);
}
"""


@pytest.mark.parametrize("change", ["sigusr1", "reload-moves-it", "reload-turns-it-off"])
@pytest.mark.parametrize("which", ["access_log", "log"])
def test_log_line_in_flight_while_the_file_changes_goes_to_no_socket(
        backends, tern, tmp_path, monkeypatch, which, change):
    """The descriptor a worker is about to write to must not be closed under
    it: its number goes to the next socket accepted, and the line to a
    stranger's connection."""
    (b1,) = backends(1)
    port = free_port()
    log, moved = str(tmp_path / "tern.log"), str(tmp_path / "moved.log")
    shim = str(tmp_path / "slow_write.so")
    src = tmp_path / "slow_write.c"
    src.write_text(SLOW_WRITE)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", shim, str(src), "-ldl"], check=True)
    monkeypatch.setenv("LD_PRELOAD", shim)
    # The sanitizers' runtime wants to come first; ours only wraps write().
    monkeypatch.setenv("ASAN_OPTIONS",
                       os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0")
    if which == "access_log":
        # The line of this request, written by the worker that served it.
        servers, path, line = [b1], "/first", '/first HTTP/1.1" 200'
    else:
        # A worker's warning: nothing listens on the server's port.
        servers, path, line = [Backend("dead", port=free_port())], "/", "connect to"
        servers[0].stop()
    monkeypatch.setenv("SLOW_WRITE_MARK", line)
    flag = str(tmp_path / "writing")
    monkeypatch.setenv("SLOW_WRITE_FLAG", flag)
    monkeypatch.setenv("SLOW_WRITE_MS", str(int(scaled(0.5) * 1000)))

    def text(dest):
        return cfg([("web", port, "web")], {"web": servers},
                   global_extra=f"  {which}: {dest}\n" if dest else "")

    t = tern(text(log), [port])

    def logs():
        files = (log, log + ".1", moved, t.stderr_path)
        return "".join(open(f).read() for f in files if os.path.exists(f))

    # The request's answer may wait for its warning to be written.
    threading.Thread(target=get, args=(port, path), daemon=True).start()
    assert wait_for(lambda: os.path.exists(flag), 5), "the line was never written"
    if change == "sigusr1":
        os.rename(log, log + ".1")
        t.proc.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: "log files reopened" in logs(), 3), logs()
    else:
        write_conf(t, text(moved if change == "reload-moves-it" else None))
        t.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "in effect" in logs(), 3), logs()
    # New connections take the lowest free descriptors; an unfinished head
    # keeps each open and silent.
    socks = [socket.create_connection(("127.0.0.1", port), timeout=scaled(1)) for _ in range(8)]
    for s in socks:
        s.sendall(b"GET /second HTTP/1.1\r\n")
    time.sleep(scaled(1))
    received = b""
    for s in socks:
        s.settimeout(0.05)
        try:
            received += s.recv(4096)
        except socket.timeout:
            pass
        s.close()
    assert received == b"", received

    # Switched off, the access log line may go nowhere; otherwise to one file
    # or the other (a refused connect is tried again: several warnings).
    assert wait_for(lambda: line in logs(), 3) or (
        change == "reload-turns-it-off" and which == "access_log"), logs()
