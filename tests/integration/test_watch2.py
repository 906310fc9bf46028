"""The watch plugin's channels and the plugin host, second part: what
test_watch.py leaves unchecked.

Checked on the peer's side: whether the mail went over TLS (aiosmtpd's
session), which recipients got it and how often, when an SMTP server that
never greets saw tern connect and hang up, which HTTP method the SMS
gateway received. A third-party plugin compiled here logs every event of
the bus with all its fields, so the tests read what a plugin is told.
"""
import contextlib
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port, scaled, wait_for
from test_watch import (  # noqa: F401 (certs is a fixture, used by name)
    Load,
    Mailbox,
    alarms_api,
    base_config,
    busy_alarm,
    certs,
    compile_plugin,
    smtp_server,
    subject_of,
)
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402 (after test_watch's skip)


def notify_watch(channel, extra_watch=""):
    """A watch: section whose web-busy alarm notifies ops by channel."""
    return (
        f"watch:\n  interval: 200ms\n  group_wait: 100ms\n{extra_watch}  alarms:\n" + busy_alarm() +
        f"  notify:\n    ops:\n      {channel}\n"
    )


def email_watch(server, extra_email="", extra_watch="", to="[ ops@example.com ]"):
    return notify_watch(
        f"email: {{ server: \"{server}\", from: tern@example.com, to: {to}{extra_email} }}",
        extra_watch)


# ---- e-mail ----


def run_until(tern, b, peer, watch, done, timeout):
    """Starts a tern with watch, loads it until done(t), then stops the load
    and calls peer() to stop the server it sends to (the tern runs on).
    Returns the tern and its admin port."""
    port, admin = free_port(), free_port()
    t = tern(base_config(port, admin, b, watch), wait_ports=[port])
    load = Load(port)
    try:
        assert wait_for(lambda: done(t), timeout), t.log()
    finally:
        load.stop()
        peer()
    return t, admin


@pytest.mark.parametrize("offers_tls", [True, False])
def test_starttls_optional(backends, tern, certs, offers_tls):  # noqa: F811
    """optional: TLS when the server offers it, the mail in clear when it
    does not; the server's session says which."""
    (b,) = backends(1)
    box = Mailbox()
    ctx = None
    if offers_tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(f"{certs}/cert.pem", f"{certs}/key.pem")
    smtp = smtp_server(box, tls_context=ctx)
    watch = email_watch(f"localhost:{smtp.port}",
                        f", starttls: optional, ca_file: {certs}/cert.pem, timeout: 5s")
    t, _ = run_until(tern, b, smtp.stop, watch, lambda t: box.messages, 20)
    log = t.stop()
    m = box.messages[0]
    assert m["tls"] is offers_tls, m
    assert subject_of(m["text"]).startswith("[tern] ALARM web-busy"), m
    assert "notifier ops: email sent: [tern] ALARM web-busy" in log, log
    assert "email failed" not in log, log


class PickyMailbox(Mailbox):
    """Refuses recipients at RCPT as told: replies[address] is the reply of
    each attempt in turn (the last one stays; None accepts). By default
    gone@example.com is refused for good, as an unknown mailbox. Keeps
    every delivery, so a repeat shows."""

    def __init__(self, replies=None):
        super().__init__()
        self.replies = replies or {"gone@example.com": ["550 5.1.1 no such mailbox"]}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        turns = self.replies.get(address, [None])
        reply = turns.pop(0) if len(turns) > 1 else turns[0]
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"


REFUSED = "recipient gone@example.com refused: 550 5.1.1 no such mailbox"


def picky_watch(smtp, retries, to):
    return email_watch(f"127.0.0.1:{smtp.port}", ", starttls: off",
                       extra_watch=f"  retries: {retries}\n", to=to)


def test_refused_recipient_is_reported_and_the_others_get_it_once(backends, tern):
    (b,) = backends(1)
    box = PickyMailbox()
    smtp = smtp_server(box)
    watch = picky_watch(smtp, 3, "[ gone@example.com, ops@example.com ]")
    try:
        # The server stays up: the OK mail that follows goes the same way.
        t, admin = run_until(tern, b, lambda: None, watch,
                             lambda t: "notifier ops: email" in t.log(), 15)
        # A retry would come after 2 s (tern's timer, not scaled), and the
        # mail it sends within a (scaled) second more.
        time.sleep(2 + scaled(1))
        doc = alarms_api(admin)
        log = t.stop()
    finally:
        smtp.stop()
    alarm_mails = [m for m in box.messages if subject_of(m["text"]).startswith("[tern] ALARM")]
    assert len(alarm_mails) == 1, f"{len(alarm_mails)} copies:\n{log}"
    assert alarm_mails[0]["to"] == ["ops@example.com"]
    assert f"notifier ops: email sent, but {REFUSED}" in log, log
    assert "email failed" not in log and "giving up" not in log, log
    n = doc["notifiers"][0]
    assert REFUSED in n["last_error"], n
    assert n["failed"] == 0 and n["retries"] == 0 and n["sent"] >= 1, n


def test_every_recipient_refused_is_a_failure(backends, tern):
    """Then libesmtp sends DATA anyway, and the server's "503 need RCPT"
    must not hide the reason."""
    (b,) = backends(1)
    box = PickyMailbox()
    smtp = smtp_server(box)
    watch = picky_watch(smtp, 1, "[ gone@example.com ]")
    t, admin = run_until(tern, b, smtp.stop, watch, lambda t: "giving up" in t.log(), 15)
    doc = alarms_api(admin)
    log = t.stop()
    assert not box.messages
    assert f"email failed after 1 attempt, giving up: {REFUSED}" in log, log
    assert REFUSED in doc["notifiers"][0]["last_error"], doc


def test_recipient_refused_for_now_is_retried_alone(backends, tern):
    """A 4xx at RCPT (mailbox busy, greylisting) is worth a retry, to that
    recipient only: the others have the mail already."""
    (b,) = backends(1)
    box = PickyMailbox({"later@example.com": ["450 4.2.1 mailbox busy", None]})
    smtp = smtp_server(box)
    watch = picky_watch(smtp, 3, "[ ops@example.com, later@example.com ]")
    try:
        t, admin = run_until(tern, b, lambda: None, watch,
                             lambda t: "notifier ops: email sent" in t.log(), 15)
        doc = alarms_api(admin)
        log = t.stop()
    finally:
        smtp.stop()
    alarm_mails = [m["to"] for m in box.messages
                   if subject_of(m["text"]).startswith("[tern] ALARM")]
    assert alarm_mails == [["ops@example.com"], ["later@example.com"]], (alarm_mails, log)
    assert ("email failed (attempt 1 of 3): recipient later@example.com refused: 450 4.2.1 "
            "mailbox busy; retrying in 2s") in log, log
    n = doc["notifiers"][0]
    assert n["retries"] == 1 and n["failed"] == 0 and n["sent"] >= 1, n


class SilentSMTP:
    """Accepts TCP and never says a word: what a wedged MTA or a firewall
    that lets SYNs through looks like. Records when each connection came
    and when the client hung up."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []  # [accepted, closed or None]
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            rec = [time.monotonic(), None]
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self.watch, args=(c, rec), daemon=True).start()

    def watch(self, c, rec):
        try:
            while c.recv(4096):
                pass
        except OSError:
            pass
        rec[1] = time.monotonic()
        c.close()

    def snapshot(self):
        with self.lock:
            return [list(r) for r in self.conns]

    def close(self):
        self.sock.close()


def get_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=scaled(2)) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def hanging_send(tern, b, timeout):
    """A tern whose alarm's mail is hanging on a SilentSMTP (retries: 2),
    under the load that keeps the alarm on: were it to clear, its OK mail
    would be one more connection."""
    srv = SilentSMTP()
    port, admin = free_port(), free_port()
    watch = email_watch(f"127.0.0.1:{srv.port}", f", starttls: off, timeout: {timeout}",
                        extra_watch="  retries: 2\n")
    t = tern(base_config(port, admin, b, watch), wait_ports=[port])
    load = Load(port)
    try:
        assert wait_for(lambda: srv.snapshot(), 15), t.log()
        yield srv, t, port, admin
    finally:
        load.stop()
        srv.close()


def test_silent_server_times_out_and_retries_without_blocking(backends, tern):
    """email.timeout bounds the wait for the greeting (libesmtp's own is 5
    minutes); the failure is retried after 2 s as documented; while the
    send hangs, the proxy and the admin API answer."""
    (b,) = backends(1)
    with hanging_send(tern, b, "3s") as (srv, t, port, admin):
        # The first attempt is hanging now: both sides of tern answer.
        assert get_ok(f"http://127.0.0.1:{port}/")
        doc = alarms_api(admin)
        hanging = srv.snapshot()[0]
        assert hanging[1] is None, "the connection ended before the checks"
        assert doc is not None and doc["notifiers"][0]["pending"] == 1, doc
        assert wait_for(lambda: "giving up" in t.log(), 30), t.log()
        # The SMTP server's thread sees the close a moment after tern logs it.
        wait_for(lambda: all(c is not None for _, c in srv.snapshot()), scaled(5))
        conns = srv.snapshot()
    log = t.stop()
    assert len(conns) == 2, conns
    for opened, closed in conns:
        assert closed is not None
        # Not before the timeout, and nowhere near libesmtp's minutes.
        assert 2.5 <= closed - opened <= 3 + scaled(5), conns
    # The retry waits the documented 2 s after the first failure (less 1 s
    # for when this side noticed the close).
    assert conns[1][0] - conns[0][1] >= 1.0, conns
    assert "email failed (attempt 1 of 2)" in log and "retrying in 2s" in log, log
    assert "email failed after 2 attempts, giving up" in log, log


def test_reload_that_drops_watch_does_not_wait_for_a_hanging_send(backends, tern):
    """A reload that removes the watch: section unloads the plugin while its
    send hangs on a silent server. The control thread must not wait out the
    SMTP timeout: the reload takes effect and the admin API answers at
    once; the send ends on its own later."""
    (b,) = backends(1)
    # retries: 2 makes the send that ends after the unload ask for a retry
    # timer, which must not outlive the plugin.
    with hanging_send(tern, b, "10s") as (srv, t, port, admin):
        with open(t.conf, "w") as f:
            f.write(base_config(port, admin, b, ""))
        t.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "its section is gone" in t.log(), 5), t.log()
        assert wait_for(lambda: get_ok(f"http://127.0.0.1:{admin}/api/v1/pools"), 5), t.log()
        assert get_ok(f"http://127.0.0.1:{port}/")
        assert srv.snapshot()[0][1] is None, "the send ended before the checks"
        assert "plugin watch: stopped; unloaded once its 1 job ends" in t.log(), t.log()
        # The send times out on its own; then the plugin is finished, and
        # no retry follows: one would connect 2 s (tern's timer, not scaled)
        # after the failure.
        assert wait_for(lambda: "plugin watch unloaded" in t.log(), 30), t.log()
        time.sleep(2 + scaled(1))
        conns = srv.snapshot()
    log = t.stop()
    assert len(conns) == 1, conns
    assert "email failed after 1 attempt, giving up" in log, log
    assert "retrying" not in log, log


def test_watch_loaded_again_while_the_old_one_finishes(backends, tern):
    """The watch: section goes while a send hangs, and comes back before
    that send ends: the old instance finishes (fini) while the new one is
    in the middle of an AUTH. The old one's exit must not unload libesmtp's
    AUTH modules under the new one's session."""
    (b,) = backends(1)
    box = Mailbox()
    holder = {}

    def slow_auth(server, session, envelope, mechanism, data):
        # Answers once the old instance is gone (aiosmtpd's loop waits).
        wait_for(lambda: "plugin watch unloaded" in holder["t"].log(), 30)
        ok = isinstance(data, LoginPassword) and data.password == b"s3cret"
        return AuthResult(success=ok)

    smtp = smtp_server(box, auth=slow_auth)
    try:
        with hanging_send(tern, b, "8s") as (srv, t, port, admin):
            holder["t"] = t
            with open(os.path.join(t.dir, "pw"), "w") as f:
                f.write("s3cret\n")
            with open(t.conf, "w") as f:
                f.write(base_config(port, admin, b, ""))
            t.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: "unloaded once its 1 job ends" in t.log(), 5), t.log()
            again = email_watch(f"127.0.0.1:{smtp.port}",
                                ", starttls: off, user: tern, password_file: pw, timeout: 60s")
            with open(t.conf, "w") as f:
                f.write(base_config(port, admin, b, again))
            t.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: box.messages, 40), t.log()
    finally:
        smtp.stop()
    log = t.stop()
    assert box.messages[0]["auth"], box.messages
    assert log.index("plugin watch unloaded") < log.index("notifier ops: email sent"), log


# ---- SMS ----


class MethodGateway(http.server.BaseHTTPRequestHandler):
    """Records each request; answers 402 when the body names a number in
    server.refuse."""

    def answer(self):
        n = int(self.headers.get("Content-Length", 0))
        got = {"method": self.command, "path": self.path, "body": self.rfile.read(n).decode()}
        self.server.got.append(got)
        refused = any(f'"{num}"' in got["body"] for num in self.server.refuse)
        self.send_response(402 if refused else 200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "queued"}')

    do_GET = do_POST = do_PUT = answer

    def log_message(self, *a):
        pass


@pytest.fixture
def gateway():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MethodGateway)
    srv.got = []
    srv.refuse = set()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("method", ["POST", "PUT", "GET"])
def test_sms_method(backends, tern, gateway, method):
    """Each method the schema allows reaches the gateway as that method; GET
    carries the fields in the URL (form-escaped), the others in the body."""
    (b,) = backends(1)
    srv = gateway
    url = f"http://127.0.0.1:{srv.server_port}/send?to={{to}}&state={{state}}"
    watch = notify_watch(f"sms: {{ url: \"{url}\", method: {method}, to: [ \"+15550001\" ] }}")
    t, _ = run_until(tern, b, lambda: None, watch, lambda t: srv.got, 15)
    t.stop()
    req = srv.got[0]
    assert req["method"] == method, req
    assert req["path"] == "/send?to=%2B15550001&state=ALARM", req
    if method == "GET":
        assert req["body"] == "", req
    else:
        doc = json.loads(req["body"])
        assert doc["to"] == "+15550001" and doc["text"].startswith("[ALARM] web-busy "), doc


# ---- the event bus, seen by a third-party plugin ----

SPY = r"""
#include <math.h>
#include <stdio.h>
#include <string.h>

struct spy { const struct tern_host *h; };
static struct spy the_state; /* one instance: the test loads it once */

static const char *or_dash(const char *s) { return s ? s : "-"; }

static void on_event(void *arg, const struct tern_event *ev)
{
    struct spy *s = arg;
    double age = s->h->now(s->h) - ev->time;

    s->h->log(s->h, TERN_LOG_INFO,
              "event type=%d source=%s name=%s pool=%s server=%s metric=%s state=%s value=%g"
              " threshold=%g fresh=%d detail=%s", (int)ev->type, or_dash(ev->source),
              or_dash(ev->name), or_dash(ev->pool), or_dash(ev->server), or_dash(ev->metric),
              or_dash(ev->state), ev->value, ev->threshold, age >= 0 && age < 60,
              or_dash(ev->detail));
}

/* The level the test wants, from a file it writes: a metric of the
 * plugin's own that a watch alarm follows. */
static void tick(void *arg)
{
    struct spy *s = arg;
    FILE *f = fopen(LEVEL_FILE, "r");
    double v = NAN;

    if (f != NULL) {
        if (fscanf(f, "%lf", &v) != 1)
            v = NAN;
        fclose(f);
    }
    s->h->metric_set(s->h, "spy.level", v);
}

static char *api(void *arg, const char *route)
{
    char *out = (char *)__builtin_malloc(64);

    if (out != NULL)
        snprintf(out, 64, "{\"route\": \"%s\"}", route);
    return out;
}

/* A route that answers something that is not JSON. */
static char *api_bad(void *arg, const char *route)
{
    char *out = (char *)__builtin_malloc(16);

    if (out != NULL)
        strcpy(out, "{not json");
    return out;
}

static int init(const struct tern_host *h, const struct tern_value *sec, void **state)
{
    int r;

    the_state.h = h;
    *state = &the_state;
    r = h->api_register(h, "/api/v1/spy", api, &the_state);
    if (r == 0)
        r = h->api_register(h, "/api/v1/spy/bad", api_bad, &the_state);
    if (r == 0 && h->subscribe(h, TERN_EV_ALL, on_event, &the_state) <= 0)
        r = -ENOMEM;
    if (r == 0 && h->timer_add(h, 0.1, 0.1, tick, &the_state) == NULL)
        r = -ENOMEM;
    return r;
}

TERN_PLUGIN_EXPORT const struct tern_plugin tern_plugin_entry = {
    .api_version = TERN_PLUGIN_API_VERSION, .name = "spy", .init = init,
};
"""

EXEC_CREATE = "#!/bin/sh\necho \"$TERN_ACTION $TERN_SERVER\" >> {dir}/calls\necho {address}\n"
EXEC_DESTROY = "#!/bin/sh\necho \"$TERN_ACTION $TERN_SERVER\" >> {dir}/calls\nexit 0\n"


def events(log, **want):
    """The spy's event lines whose fields include want, as dicts."""
    out = []
    for line in log.splitlines():
        if "spy: event " not in line:
            continue
        head, _, detail = line.split("spy: event ", 1)[1].partition(" detail=")
        ev = dict(kv.split("=", 1) for kv in head.split())
        ev["detail"] = detail
        if all(ev.get(k) == str(v) for k, v in want.items()):
            out.append(ev)
    return out


@pytest.fixture
def spy_dir():
    d = tempfile.mkdtemp(prefix="tern-spy-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def spy_config(d, port, admin, b1, b2):
    so = compile_plugin(d, "spy", f'#define LEVEL_FILE "{d}/level"\n' + SPY)
    for name, text in (("create.sh", EXEC_CREATE), ("destroy.sh", EXEC_DESTROY)):
        with open(f"{d}/{name}", "w") as f:
            f.write(text.format(dir=d, address=b2.address))
        os.chmod(f"{d}/{name}", 0o755)
    return (
        f"global:\n  workers: 1\n  plugins: [ {so} ]\n"
        f"admin:\n  listen: 127.0.0.1:{admin}\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}\n"
        "pools:\n"
        "  web:\n"
        "    health_check: { type: http, path: /healthz, interval: 100ms, timeout: 300ms,"
        " rise: 2, fall: 2 }\n"
        f"    servers:\n      - {{ name: b1, address: {b1.address} }}\n"
        "  grow:\n    servers: []\n"
        "watch:\n  interval: 200ms\n  alarms:\n"
        # maximum: a period that saw 7 reads 7, however the ticks fall.
        "    - { name: spy-high, metric: spy.level, statistic: maximum, above: 5, period: 1s,"
        " evaluation_periods: 1, datapoints_to_alarm: 1 }\n"
        "scale:\n  - pool: grow\n    min: 1\n    max: 1\n"
        f"    provider: {{ exec: {{ create: {d}/create.sh, destroy: {d}/destroy.sh }} }}\n"
    )


def backend_switch(b, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{b.port}{path}", timeout=5) as r:
        assert r.status == 200


def spy_alarm(admin):
    doc = alarms_api(admin)
    return doc["alarms"][0] if doc else None


def test_event_bus_reaches_a_third_party_plugin(backends, tern, spy_dir):
    b1, b2 = backends(2)
    port, admin = free_port(), free_port()
    with open(f"{spy_dir}/level", "w") as f:
        f.write("1\n")
    t = tern(spy_config(spy_dir, port, admin, b1, b2), wait_ports=[port])

    # Scaling: the group launches its minimum through the exec provider.
    assert wait_for(lambda: events(t.log(), type=8, state="successful"), 15), t.log()
    # The first of each: a later reconcile may replace the server.
    started = events(t.log(), type=8, state="started")[0]
    assert started["name"] == "grow" and started["pool"] == "grow", started
    assert started["source"] == "scale" and started["fresh"] == "1", started
    done = events(t.log(), type=8, state="successful")[0]
    assert done["pool"] == "grow" and done["server"] != "-", done
    assert done["detail"].startswith(f"launch {done['server']}: "), done

    # Health: down, then up, as the host's checks see it.
    backend_switch(b1, "/healthz/fail")
    assert wait_for(lambda: events(t.log(), type=2, server="b1"), 10), t.log()
    backend_switch(b1, "/healthz/ok")
    assert wait_for(lambda: events(t.log(), type=1, server="b1"), 10), t.log()
    for type_, detail in ((2, "health check failed"), (1, "health check passed")):
        (ev,) = events(t.log(), type=type_, server="b1")
        assert ev["pool"] == "web" and ev["source"] == "tern" and ev["detail"] == detail, ev
        assert ev["fresh"] == "1" and ev["value"] == "nan", ev

    # The plugin's own metric drives a watch alarm: raised, then cleared.
    assert wait_for(lambda: (spy_alarm(admin) or {}).get("state") == "OK", 10), t.log()
    with open(f"{spy_dir}/level", "w") as f:
        f.write("7\n")
    assert wait_for(lambda: events(t.log(), type=5), 10), t.log()
    (raised,) = events(t.log(), type=5)
    assert raised == {
        "type": "5", "source": "watch", "name": "spy-high", "pool": "-", "server": "-",
        "metric": "spy.level", "state": "ALARM", "value": "7", "threshold": "5", "fresh": "1",
        "detail": raised["detail"]}, raised
    assert raised["detail"].startswith("Threshold Crossed: 1 out of the last 1 datapoints"), raised
    a = spy_alarm(admin)
    assert a["state"] == "ALARM" and a["value"] == 7, a
    with open(f"{spy_dir}/level", "w") as f:
        f.write("2\n")
    assert wait_for(lambda: events(t.log(), type=6), 10), t.log()
    (cleared,) = events(t.log(), type=6)
    assert cleared["name"] == "spy-high" and cleared["state"] == "OK", cleared
    assert cleared["value"] == "2" and cleared["threshold"] == "5", cleared
    assert spy_alarm(admin)["value"] == 2
    t.stop()


def test_third_party_api_route_answers(backends, tern, spy_dir):
    b1, b2 = backends(2)
    port, admin = free_port(), free_port()
    t = tern(spy_config(spy_dir, port, admin, b1, b2), wait_ports=[port, admin])
    assert wait_for(lambda: "plugin spy loaded" in t.log(), 5), t.log()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1/spy", timeout=5) as r:
            assert json.loads(r.read()) == {"route": "/api/v1/spy"}
        # A plugin's answer that is not JSON is the server's fault: 500; a
        # path nobody registered stays 404.
        for path, status in (("/api/v1/spy/bad", 500), ("/api/v1/spy/none", 404)):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=5)
            assert e.value.code == status, path
            assert path in json.loads(e.value.read())["error"], path
    finally:
        t.stop()


def test_sms_retry_texts_only_the_numbers_that_failed(backends, tern, gateway):
    (b,) = backends(1)
    gateway.refuse.add("+15550002")
    url = f"http://127.0.0.1:{gateway.server_port}/send"
    watch = notify_watch(f"sms: {{ url: \"{url}\", to: [ \"+15550001\", \"+15550002\" ] }}",
                         extra_watch="  retries: 3\n")
    t, _ = run_until(tern, b, lambda: None, watch, lambda t: "giving up" in t.log(), 20)
    log = t.stop()
    alarm_texts = [json.loads(r["body"])["to"] for r in gateway.got
                   if json.loads(r["body"])["text"].startswith("[ALARM]")]
    assert sorted(alarm_texts) == ["+15550001"] + ["+15550002"] * 3, (alarm_texts, log)
    assert "sms failed after 3 attempts, giving up: to +15550002: the gateway answered 402" in log
