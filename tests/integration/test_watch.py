"""The plugin host and the watch plugin, end to end.

Each test runs the real tern with a watch: section and real peers on
loopback: an SMTP server (aiosmtpd, in this process, with STARTTLS and AUTH
when asked), an HTTP sink standing in for an SMS gateway, libvirt's test
driver as a metric source, and small third-party plugins compiled here
against lb/plugin.h alone. Alarms are driven over their threshold with real
requests (pool.web.requests_per_second above 1), and the tests read what
arrived: the mail, the gateway's request, the log.
"""
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, free_port, wait_for

aiosmtpd = pytest.importorskip("aiosmtpd")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: E402


class Mailbox:
    """aiosmtpd handler: keeps what it receives, or refuses it."""

    def __init__(self, refuse=False):
        self.messages = []
        self.refuse = refuse
        self.attempts = 0

    async def handle_DATA(self, server, session, envelope):
        self.attempts += 1
        if self.refuse:
            return "550 5.7.1 refused by the test"
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "text": envelope.content.decode("utf-8", "replace"),
                "auth": getattr(session, "authenticated", False),
                "tls": session.ssl is not None,
            }
        )
        return "250 OK"


def smtp_server(handler, tls_context=None, auth=None, auth_required=False):
    kw = {"auth_required": auth_required}
    if tls_context is not None:
        kw.update(tls_context=tls_context, require_starttls=True)
    if auth is not None:
        kw.update(authenticator=auth, auth_require_tls=tls_context is not None)
    c = Controller(handler, hostname="127.0.0.1", port=free_port(), **kw)
    c.start()
    return c


def subject_of(text):
    for line in text.splitlines():
        if line.startswith("Subject:"):
            return line[len("Subject:"):].strip()
    return None


class Load:
    """Sends requests to tern in a loop until stopped: requests_per_second
    goes well above 1."""

    def __init__(self, port):
        self.port = port
        self.stop_flag = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2).read()
            except OSError:
                pass
            time.sleep(0.02)

    def stop(self):
        self.stop_flag.set()
        self.t.join()


def base_config(port, admin, backend, watch, extra_global="", servers=None):
    servers = servers or [f"{{ name: b1, address: {backend.address} }}"]
    return (
        f"global:\n  workers: 1\n{extra_global}"
        f"admin:\n  listen: 127.0.0.1:{admin}\n"
        "listeners:\n"
        f"  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}\n"
        "pools:\n  web:\n    servers:\n" + "".join(f"      - {s}\n" for s in servers) + watch
    )


def busy_alarm(notify="[ops]", extra=""):
    return (
        "    - { name: web-busy, metric: pool.web.requests_per_second, above: 1, period: 1s,\n"
        f"        evaluation_periods: 2, datapoints_to_alarm: 1, notify: {notify}{extra} }}\n"
    )


def alarms_api(admin):
    """GET /api/v1/alarms, or None while the admin API serves only its
    placeholder (the route is served from lb_plugins_api_json)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1/alarms", timeout=2) as r:
            doc = json.loads(r.read())
    except (OSError, ValueError):
        return None
    return doc if "notifiers" in doc else None


@pytest.fixture
def certs():
    d = tempfile.mkdtemp(prefix="tern-certs-")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_alarm_sends_mail_and_clears(backends, tern):
    (b,) = backends(1)
    box = Mailbox()
    smtp = smtp_server(box)
    port, admin = free_port(), free_port()
    watch = (
        "watch:\n  interval: 200ms\n  group_wait: 100ms\n  alarms:\n" + busy_alarm() +
        "  notify:\n    ops:\n"
        f"      email: {{ server: \"127.0.0.1:{smtp.port}\", starttls: off, from: tern@example.com,"
        " to: [ ops@example.com, oncall@example.com ] }\n"
    )
    t = tern(base_config(port, admin, b, watch), wait_ports=[port])
    try:
        load = Load(port)
        assert wait_for(lambda: box.messages, 15), "no mail:\n" + t.log()
        load.stop()
        m = box.messages[0]
        assert m["from"] == "tern@example.com"
        assert sorted(m["to"]) == ["oncall@example.com", "ops@example.com"]
        subj = subject_of(m["text"])
        assert subj == "[tern] ALARM web-busy: pool.web.requests_per_second above 1", subj
        body = m["text"]
        for want in ("Alarm:     web-busy", "State:     ALARM (was ", "Metric:    pool.web."
                     "requests_per_second", "Threshold: above 1", "Pool:      web", "Time:      ",
                     "Reason:    Threshold Crossed: 1 out of the last"):
            assert want in body, f"{want!r} not in\n{body}"
        value = float(body.split("Value:", 1)[1].split()[0])
        assert value > 1
        # Traffic stopped: the alarm clears and says so.
        assert wait_for(lambda: len(box.messages) >= 2, 15), t.log()
        assert subject_of(box.messages[1]["text"]).startswith("[tern] OK web-busy")
        assert "State:     OK (was ALARM)" in box.messages[1]["text"]
        doc = alarms_api(admin)
        if doc is not None:
            (a,) = doc["alarms"]
            assert a["name"] == "web-busy" and a["state"] == "OK" and a["threshold"] == 1
            assert a["comparison"] == "above" and a["history"]
            assert doc["notifiers"][0]["sent"] >= 2
    finally:
        smtp.stop()
    log = t.stop()
    assert "plugin watch loaded" in log
    assert "alarm web-busy: OK -> ALARM" in log or "INSUFFICIENT_DATA -> ALARM" in log


def test_email_to_sms_gateway_format(backends, tern):
    (b,) = backends(1)
    box = Mailbox()
    smtp = smtp_server(box)
    port, admin = free_port(), free_port()
    watch = (
        "watch:\n  interval: 200ms\n  group_wait: 100ms\n  alarms:\n" + busy_alarm() +
        "  notify:\n    ops:\n"
        f"      email: {{ server: \"127.0.0.1:{smtp.port}\", starttls: off, format: sms,"
        " from: tern@example.com, to: [ 5550001@sms.example.net ] }\n"
    )
    t = tern(base_config(port, admin, b, watch), wait_ports=[port])
    try:
        load = Load(port)
        assert wait_for(lambda: box.messages, 15), "no mail:\n" + t.log()
        load.stop()
    finally:
        smtp.stop()
    t.stop()
    text = box.messages[0]["text"]
    body = text.split("\n\n", 1)[1].strip() if "\n\n" in text else text.split("\r\n\r\n", 1)[1]
    assert body.startswith("[ALARM] web-busy pool.web.requests_per_second="), body
    assert "\n" not in body.strip()


def test_starttls_and_auth(backends, tern, certs):
    import ssl

    (b,) = backends(1)
    box = Mailbox()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(f"{certs}/cert.pem", f"{certs}/key.pem")

    def auth(server, session, envelope, mechanism, data):
        ok = isinstance(data, LoginPassword) and data.login == b"tern" and data.password == b"s3cret"
        return AuthResult(success=ok)

    smtp = smtp_server(box, tls_context=ctx, auth=auth)
    port, admin = free_port(), free_port()
    watch = (
        "watch:\n  interval: 200ms\n  group_wait: 100ms\n  alarms:\n" + busy_alarm() +
        "  notify:\n    ops:\n"
        f"      email: {{ server: \"localhost:{smtp.port}\", starttls: required,"
        f" ca_file: {certs}/cert.pem, user: tern, password_file: {certs}/pw, timeout: 5s,"
        " from: tern@example.com, to: [ ops@example.com ] }\n"
    )
    with open(f"{certs}/pw", "w") as f:
        f.write("s3cret\n")
    t = tern(base_config(port, admin, b, watch), wait_ports=[port])
    try:
        load = Load(port)
        assert wait_for(lambda: box.messages, 20), "no mail:\n" + t.log()
        load.stop()
        m = box.messages[0]
        assert m["tls"] and m["auth"], m
        assert subject_of(m["text"]).startswith("[tern] ALARM web-busy")
    finally:
        smtp.stop()
    t.stop()


@pytest.mark.parametrize("server_requires_auth", [True, False])
def test_wrong_password_is_reported_not_fatal(backends, tern, certs, server_requires_auth):
    """A refused AUTH is named in the log. libesmtp then tries the mail
    without AUTH: a server that requires it refuses (530) and the delivery
    fails; one that does not takes it, and the send is logged with a
    warning instead of passing as a clean success."""
    import ssl

    (b,) = backends(1)
    box = Mailbox()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(f"{certs}/cert.pem", f"{certs}/key.pem")
    # handled=False makes aiosmtpd answer 535; its default answers nothing.
    smtp = smtp_server(box, tls_context=ctx, auth=lambda *a: AuthResult(success=False, handled=False),
                       auth_required=server_requires_auth)
    port, admin = free_port(), free_port()
    watch = (
        "watch:\n  interval: 200ms\n  group_wait: 100ms\n  retries: 2\n  alarms:\n" + busy_alarm() +
        "  notify:\n    ops:\n"
        f"      email: {{ server: \"localhost:{smtp.port}\", ca_file: {certs}/cert.pem,"
        f" user: tern, password_file: {certs}/pw, timeout: 5s, from: tern@example.com,"
        " to: [ ops@example.com ] }\n"
    )
    with open(f"{certs}/pw", "w") as f:
        f.write("bad")
    t = tern(base_config(port, admin, b, watch), wait_ports=[port])
    refused = "authentication as tern failed (535 5.7.8 Authentication credentials invalid)"
    try:
        load = Load(port)
        if server_requires_auth:
            assert wait_for(lambda: "giving up" in t.log(), 25), t.log()
        else:
            assert wait_for(lambda: box.messages, 20), t.log()
        load.stop()
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
        doc = alarms_api(admin)
    finally:
        smtp.stop()
    log = t.stop()
    assert doc is not None and refused in doc["notifiers"][0]["last_error"], doc
    if server_requires_auth:
        assert not box.messages
        assert f"notifier ops: email failed (attempt 1 of 2): {refused}; then sender tern@example.com refused: 530" in log, log
    else:
        assert not box.messages[0]["auth"]
        assert f"notifier ops: email sent, but {refused}; the server took the message without it" in log, log


def test_refusing_server_is_retried_with_backoff(backends, tern):
    (b,) = backends(1)
    box = Mailbox(refuse=True)
    smtp = smtp_server(box)
    port, admin = free_port(), free_port()
    watch = (
        "watch:\n  interval: 200ms\n  group_wait: 100ms\n  retries: 3\n  alarms:\n" +
        busy_alarm() + "  notify:\n    ops:\n"
        f"      email: {{ server: \"127.0.0.1:{smtp.port}\", starttls: off, from: a@example.com,"
        " to: [ ops@example.com ] }\n"
    )
    t = tern(base_config(port, admin, b, watch), wait_ports=[port])
    try:
        load = Load(port)
        assert wait_for(lambda: box.attempts >= 2, 15), t.log()
        first = t.log()
        assert "email failed (attempt 1 of 3): message refused: 550" in first, first
        assert "retrying in 2s" in first
        doc = alarms_api(admin)
        if doc is not None:
            n = doc["notifiers"][0]
            assert n["retries"] >= 1 and "550" in n["last_error"]
            assert doc["deliveries"][0]["state"] in ("retrying", "failed")
        # Still serving while the mail fails.
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
        load.stop()
    finally:
        smtp.stop()
    t.stop()


def test_dead_server_is_retried_and_never_blocks(backends, tern):
    (b,) = backends(1)
    port, admin, dead = free_port(), free_port(), free_port()
    watch = (
        "watch:\n  interval: 200ms\n  group_wait: 100ms\n  retries: 2\n  alarms:\n" +
        busy_alarm() + "  notify:\n    ops:\n"
        f"      email: {{ server: \"127.0.0.1:{dead}\", starttls: off, from: a@example.com,"
        " to: [ ops@example.com ] }\n"
    )
    t = tern(base_config(port, admin, b, watch), wait_ports=[port])
    load = Load(port)
    assert wait_for(lambda: "giving up" in t.log(), 20), t.log()
    load.stop()
    log = t.stop()
    assert "email failed (attempt 1 of 2)" in log and "retrying in 2s" in log


class GatewayHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.server.got.append(
            {"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(n).decode()}
        )
        code = self.server.code
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status": "queued"}' if code == 200 else b'{"error": "no credit"}')

    def log_message(self, *a):
        pass


@pytest.fixture
def gateway():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GatewayHandler)
    srv.got = []
    srv.code = 200
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_sms_json_default_body(backends, tern, gateway):
    (b,) = backends(1)
    port, admin = free_port(), free_port()
    url = f"http://127.0.0.1:{gateway.server_port}/send"
    watch = (
        "watch:\n  interval: 200ms\n  group_wait: 100ms\n  alarms:\n" + busy_alarm() +
        "  notify:\n    ops:\n"
        f"      sms: {{ url: \"{url}\", headers: [ \"Authorization: Bearer k3y\" ],"
        " to: [ \"+821000000000\", \"+821000000001\" ] }\n"
    )
    t = tern(base_config(port, admin, b, watch), wait_ports=[port])
    load = Load(port)
    assert wait_for(lambda: len(gateway.got) >= 2, 15), t.log()
    load.stop()
    t.stop()
    req = gateway.got[0]
    assert req["path"] == "/send"
    assert req["headers"]["Authorization"] == "Bearer k3y"
    assert req["headers"]["Content-Type"] == "application/json"
    doc = json.loads(req["body"])
    assert doc["to"] in ("+821000000000", "+821000000001")
    assert doc["text"].startswith("[ALARM] web-busy pool.web.requests_per_second="), doc
    assert {json.loads(r["body"])["to"] for r in gateway.got[:2]} == {
        "+821000000000", "+821000000001"}


def test_sms_form_template_and_gateway_error(backends, tern, gateway):
    (b,) = backends(1)
    gateway.code = 402
    port, admin = free_port(), free_port()
    url = f"http://127.0.0.1:{gateway.server_port}/2010-04-01/Messages.json"
    watch = (
        "watch:\n  interval: 200ms\n  group_wait: 100ms\n  retries: 2\n  alarms:\n" + busy_alarm() +
        "  notify:\n    ops:\n      sms:\n"
        f"        url: \"{url}\"\n"
        "        headers: [ \"Content-Type: application/x-www-form-urlencoded\" ]\n"
        "        body: \"To={to}&From=tern&Body={state}+{alarm}+{value}+{comparison}+{threshold}\"\n"
        "        to: [ \"+15550001\" ]\n"
    )
    t = tern(base_config(port, admin, b, watch), wait_ports=[port])
    load = Load(port)
    assert wait_for(lambda: "giving up" in t.log(), 20), t.log()
    load.stop()
    log = t.stop()
    assert "the gateway answered 402" in log
    body = gateway.got[0]["body"]
    assert body.startswith("To=%2B15550001&From=tern&Body=ALARM+web-busy+"), body
    assert body.endswith("+above+1")


def compile_plugin(tmp, name, body):
    src = os.path.join(tmp, name + ".c")
    so = os.path.join(tmp, name + ".so")
    with open(src, "w") as f:
        f.write('#include <errno.h>\n#include <stddef.h>\n#include "lb/plugin.h"\n' + body)
    subprocess.run(["cc", "-shared", "-fPIC", "-Wall", "-Werror", "-I", ROOT, "-o", so, src],
                   check=True)
    return so


THIRD_PARTY = r"""
struct hello { const struct tern_host *h; struct tern_timer *t; int ticks; };
static struct hello the_state; /* one instance: the test loads it once */

static void on_event(void *arg, const struct tern_event *ev)
{
    struct hello *s = arg;
    s->h->log(s->h, TERN_LOG_INFO, "event %d pool=%s server=%s", (int)ev->type,
              ev->pool ? ev->pool : "-", ev->server ? ev->server : "-");
}

static void tick(void *arg)
{
    struct hello *s = arg;
    double v;
    int r = s->h->metric_get(s->h, "pool.web.servers", &v);
    s->h->log(s->h, TERN_LOG_INFO, "tick %d: pool.web.servers r=%d v=%g", ++s->ticks, r,
              r == 0 ? v : -1.0);
    s->h->metric_set(s->h, "hello.ticks", s->ticks);
    if (s->ticks == 2) {
        const char *why = NULL;
        r = s->h->server_add(s->h, "web", "extra", "127.0.0.1:9", 1, &why);
        s->h->log(s->h, TERN_LOG_INFO, "server_add r=%d", r);
    }
}

static char *api(void *arg, const char *route)
{
    char *s = NULL;
    return (s = (char *)__builtin_malloc(32)) ? __builtin_strcpy(s, "{\"hello\":true}"), s : NULL;
}

static int init(const struct tern_host *h, const struct tern_value *sec, void **state)
{
    struct hello *s = &the_state;
    s->h = h;
    if (h->subscribe(h, TERN_EV_ALL, on_event, s) <= 0)
        return -ENOMEM;
    s->t = h->timer_add(h, 0.2, 0.3, tick, s);
    h->api_register(h, "/api/v1/hello", api, s);
    h->log(h, TERN_LOG_INFO, "hello from a third party, api %u", h->api_version);
    *state = s;
    return 0;
}

static void fini(void *state) { struct hello *s = state; s->h->log(s->h, TERN_LOG_INFO, "bye"); }

TERN_PLUGIN_EXPORT const struct tern_plugin tern_plugin_entry = {
    .api_version = TERN_PLUGIN_API_VERSION, .name = "hello", .init = init, .fini = fini,
};
"""


def test_third_party_plugins(backends, tern):
    (b,) = backends(1)
    tmp = tempfile.mkdtemp(prefix="tern-plugins-")
    good = compile_plugin(tmp, "hello", THIRD_PARTY)
    old = compile_plugin(tmp, "old", """
static int init(const struct tern_host *h, const struct tern_value *s, void **st) { return 0; }
TERN_PLUGIN_EXPORT const struct tern_plugin tern_plugin_entry = {
    .api_version = 999, .name = "old", .init = init };
""")
    failing = compile_plugin(tmp, "failing", """
static int init(const struct tern_host *h, const struct tern_value *s, void **st)
{ h->log(h, TERN_LOG_ERR, "cannot reach my backend"); return -EHOSTUNREACH; }
TERN_PLUGIN_EXPORT const struct tern_plugin tern_plugin_entry = {
    .api_version = TERN_PLUGIN_API_VERSION, .name = "failing", .init = init };
""")
    port, admin = free_port(), free_port()
    glob = f"  plugins: [ {good}, {old}, {failing}, {tmp}/missing.so ]\n"
    t = tern(base_config(port, admin, b, "", extra_global=glob), wait_ports=[port])
    assert wait_for(lambda: "server_add r=0" in t.log(), 10), t.log()
    assert wait_for(lambda: "event 3 pool=web server=extra" in t.log(), 5), t.log()
    # The proxy serves on whatever the plugins did.
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
    log = t.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    assert "hello: hello from a third party, api 1" in log
    assert "hello: tick 1: pool.web.servers r=0 v=1" in log
    assert "built for plugin API version 999, this tern has version 1" in log
    assert "failing: cannot reach my backend" in log
    assert "plugin failing: init failed (No route to host); the plugin is disabled" in log
    assert "missing.so" in log and "cannot load" in log
    assert "hello: bye" in log


def test_watch_module_missing_is_not_fatal(backends, tern):
    (b,) = backends(1)
    port, admin = free_port(), free_port()
    empty = tempfile.mkdtemp(prefix="tern-noplug-")
    watch = "watch:\n  alarms:\n" + busy_alarm(notify="[]")
    t = tern(base_config(port, admin, b, watch, extra_global=f"  plugin_dir: {empty}\n"),
             wait_ports=[port])
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200
    log = t.stop()
    os.rmdir(empty)
    assert f"plugin watch: {empty}/watch.so: No such file or directory" in log


def vm_alarm(metric):
    return (
        f"    - {{ name: vm-busy, metric: {metric}, above: 1, period: 1s,\n"
        "        evaluation_periods: 1, notify: [] }\n"
    )


def test_libvirt_test_driver_matches_by_address(backends, tern):
    (b,) = backends(1)
    port, admin = free_port(), free_port()
    # test:///default has one running domain, "test", whose (fabricated)
    # DHCP lease address is 192.168.122.3: server "byaddr" is that VM.
    servers = [f"{{ name: b1, address: {b.address} }}",
               "{ name: byaddr, address: 192.168.122.3:80 }"]
    watch = (
        "watch:\n  interval: 300ms\n  sources: { libvirt: { uri: \"test:///default\" } }\n"
        "  alarms:\n" + vm_alarm("server.web.byaddr.cpu_percent") +
        "    - { name: pool-cpu, metric: pool.web.cpu_percent, above: 1, period: 1s,"
        " evaluation_periods: 1 }\n"
        "    - { name: pool-mem, metric: pool.web.memory_percent, above: 1, period: 1s,"
        " evaluation_periods: 1 }\n"
    )
    t = tern(base_config(port, admin, b, watch, servers=servers), wait_ports=[port])
    ok = wait_for(lambda: all(f"alarm {n}: INSUFFICIENT_DATA -> ALARM" in t.log()
                              for n in ("vm-busy", "pool-cpu", "pool-mem")), 15)
    doc = alarms_api(admin)
    log = t.stop()
    assert "libvirt: connected to test:///default" in log, log
    assert ok, log
    if doc is not None:
        assert doc["libvirt"]["domains"] == 1 and doc["libvirt"]["matched"] == 1


NODE_XML = """<node>
  <domain type='test'>
    <name>vm1</name>
    <memory>1048576</memory>
    <vcpu>1</vcpu>
    <os><type>hvm</type></os>
  </domain>
</node>
"""


def test_libvirt_reconnects_when_the_source_comes_back(backends, tern):
    (b,) = backends(1)
    port, admin = free_port(), free_port()
    d = tempfile.mkdtemp(prefix="tern-libvirt-")
    node = os.path.join(d, "node.xml")
    servers = [f"{{ name: b1, address: {b.address} }}", "{ name: vm1, address: 127.0.0.1:9 }"]
    watch = (
        f"watch:\n  interval: 300ms\n  sources: {{ libvirt: {{ uri: \"test://{node}\" }} }}\n"
        "  alarms:\n" + vm_alarm("server.web.vm1.cpu_percent")
    )
    t = tern(base_config(port, admin, b, watch, servers=servers), wait_ports=[port])
    assert wait_for(lambda: "libvirt: cannot connect to test://" in t.log(), 10), t.log()
    with open(node, "w") as f:
        f.write(NODE_XML)
    ok = wait_for(lambda: "vm-busy: INSUFFICIENT_DATA -> ALARM" in t.log(), 15)
    doc = alarms_api(admin)
    log = t.stop()
    shutil.rmtree(d, ignore_errors=True)
    assert f"libvirt: connected to test://{node}" in log, log
    assert ok, log
    if doc is not None:
        assert doc["libvirt"]["connected"] and doc["libvirt"]["failures"] >= 1
        assert doc["libvirt"]["matched"] == 1


def test_grouping_repeat_and_rate_limit(backends, tern):
    (b,) = backends(1)
    box = Mailbox()
    smtp = smtp_server(box)
    port, admin = free_port(), free_port()
    watch = (
        "watch:\n  interval: 200ms\n  group_wait: 300ms\n  repeat: 1s\n  rate_limit: 2\n"
        "  alarms:\n" + busy_alarm() +
        "    - { name: web-busier, metric: pool.web.requests_per_second, above: 2, period: 1s,\n"
        "        evaluation_periods: 2, datapoints_to_alarm: 1, notify: [ops] }\n"
        "  notify:\n    ops:\n"
        f"      email: {{ server: \"127.0.0.1:{smtp.port}\", starttls: off, from: a@example.com,"
        " to: [ ops@example.com ] }\n"
    )
    t = tern(base_config(port, admin, b, watch), wait_ports=[port])
    try:
        load = Load(port)
        assert wait_for(lambda: "rate limit (2 per hour) reached" in t.log(), 20), t.log()
        load.stop()
    finally:
        smtp.stop()
    t.stop()
    subjects = [subject_of(m["text"]) for m in box.messages]
    # Both alarms fire in the same period: one message names both.
    assert subjects[0] == "[tern] 2 alarms changed: ALARM web-busy, ALARM web-busier", subjects
    assert "Alarm:     web-busy\r\n" in box.messages[0]["text"]
    assert "Alarm:     web-busier\r\n" in box.messages[0]["text"]
    # The reminder while they stay on, then the bucket is empty.
    assert len(subjects) == 2 and "still on" in box.messages[1]["text"], subjects
