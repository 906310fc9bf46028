"""The dashboard at GET / in a real browser (headless Chromium + chromedriver).

One tern with an admin listener, a token file and two pools takes live
traffic; the page must show it as it happens (rows, states, rising counts,
charts), drain a server through the in-page token form (a wrong token first:
refused, shown, nothing changed), and never reach any host but the admin
address. Screenshots land in tests/artifacts/ (dashboard.png, and
dashboard-401.png with the refused token) for a human to look at.

Needs chromium, chromium-driver and python3-selenium (scripts/deps.sh test);
skips, saying why, only when the browser cannot be started.
"""
import http.client
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import ROOT, free_port, scaled

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "s3cret-dashboard-token"
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")


def api(aport, path, method="GET", token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{aport}{path}", method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=scaled(5)) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def server_state(aport, pool, name):
    status, body = api(aport, f"/api/v1/pools/{pool}")
    assert status == 200, body
    return {s["name"]: s for s in body["servers"]}[name]["state"]


class Traffic(threading.Thread):
    """Keeps requests flowing through a listener (keep-alive, ~100/s, some
    slower ones so the latency charts have a shape) until stopped."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.halt = threading.Event()
        self.sent = 0

    def run(self):
        conn = None
        i = 0
        while not self.halt.is_set():
            i += 1
            path = f"/slow?ms={5 + i % 20}" if i % 4 == 0 else "/"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(5))
                conn.request("GET", path)
                conn.getresponse().read()
                self.sent += 1
            except (OSError, http.client.HTTPException):
                # A drained server's connection may close: just reconnect.
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.01)
        if conn is not None:
            conn.close()

    def stop(self):
        self.halt.set()
        self.join(timeout=scaled(10))


@pytest.fixture
def browser():
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.skip(f"python3-selenium is not installed ({e}): run scripts/deps.sh test")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is missing: run scripts/deps.sh test")
    profile = tempfile.mkdtemp(prefix="tern-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        # The test must send nothing off this machine whatever the page does;
        # a stray request still shows in the network log checked below.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--window-size=1440,1200",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(flag)
    # The performance log carries every request the page made (DevTools
    # Network events), including any that failed.
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    log = os.path.join(profile, "chromedriver.log")
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_path=log), options=opts)
    except WebDriverException as e:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"chromium cannot start: {(e.msg or str(e)).strip().splitlines()[0]}")
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, what, cond, timeout=15):
    """Polls cond(driver) until it is truthy; fails with what and the page's
    visible text, which says most about why."""
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.common.exceptions import TimeoutException

    try:
        return WebDriverWait(driver, scaled(timeout), poll_frequency=0.1).until(cond)
    except TimeoutException:
        body = driver.find_element("tag name", "body").text
        raise AssertionError(f"timed out waiting for {what}; the page shows:\n{body}") from None


def cell(driver, pool, server, field):
    return driver.find_element(
        "css selector", f'tr[data-pool="{pool}"][data-server="{server}"] td[data-field="{field}"]'
    ).text


def number(text):
    return float(text.replace(",", "").split()[0])


def test_dashboard_live(tern, backends, browser):
    b1, b2, b3 = backends(3)
    web_port, api_port, aport = free_port(), free_port(), free_port()
    conf = (
        "global:\n  workers: 2\n"
        f"admin:\n  listen: 127.0.0.1:{aport}\n  token_file: admin.token\n"
        "listeners:\n"
        f"  - name: web\n    bind: 127.0.0.1:{web_port}\n    mode: http\n    pool: web\n"
        f"  - name: api\n    bind: 127.0.0.1:{api_port}\n    mode: http\n    pool: api\n"
        "pools:\n"
        "  web:\n    balance: roundrobin\n    servers:\n"
        f"      - {{ name: b1, address: {b1.address} }}\n"
        f"      - {{ name: b2, address: {b2.address} }}\n"
        "  api:\n    balance: leastconn\n    servers:\n"
        f"      - {{ name: b3, address: {b3.address} }}\n"
    )
    t = tern(conf, wait_ports=(web_port, api_port, aport), extra_files={"admin.token": TOKEN + "\n"})
    traffic = [Traffic(web_port), Traffic(api_port)]
    for tr in traffic:
        tr.start()
    try:
        run_browser(browser, aport, traffic)
    finally:
        for tr in traffic:
            tr.stop()
    assert traffic[0].sent > 0, t.log()


def run_browser(d, aport, traffic):
    origin = f"127.0.0.1:{aport}"
    d.get(f"http://{origin}/")
    assert "tern" in d.title

    # Live data: both pools in the API's order, their servers ready and up.
    wait_for(d, "server rows", lambda d: d.find_elements("css selector", 'tr[data-pool="web"][data-server="b2"]'))
    wait_for(d, "b1 ready", lambda d: cell(d, "web", "b1", "state") == "ready")
    pools = [e.get_attribute("data-pool") for e in d.find_elements("css selector", "section[data-pool]")]
    assert pools == ["web", "api"]
    rows = d.find_elements("css selector", 'tr[data-pool="web"][data-server]')
    assert [r.get_attribute("data-server") for r in rows] == ["b1", "b2"]
    for s in ("b1", "b2"):
        assert cell(d, "web", s, "state") == "ready"
        assert cell(d, "web", s, "health") == "up"
        assert cell(d, "web", s, "weight") == "1"
        assert cell(d, "web", s, "address").startswith("127.0.0.1:")
    assert cell(d, "api", "b3", "state") == "ready"

    # Counters rise while the page is open, and the rates and charts follow.
    first = number(cell(d, "web", "b1", "requests_total"))
    wait_for(d, "b1's request count to rise", lambda d: number(cell(d, "web", "b1", "requests_total")) > first + 10)
    wait_for(d, "a request rate", lambda d: cell(d, "web", "b1", "requests_per_second") not in ("–", "0"))
    wait_for(d, "a p99 latency", lambda d: cell(d, "web", "b1", "p99_ms").endswith("ms"))
    wait_for(
        d,
        "the requests/s chart's line",
        lambda d: d.find_elements("css selector", 'svg[data-chart="rps"][data-pool="web"] path[stroke]'),
    )
    wait_for(
        d,
        "the latency chart's lines",
        lambda d: len(d.find_elements("css selector", 'svg[data-chart="latency"][data-pool="web"] path')) >= 2,
    )

    # The side panels: listeners as configured, plugins absent.
    lrows = d.find_elements("css selector", "#listeners tr[data-listener]")
    assert [r.get_attribute("data-listener") for r in lrows] == ["web", "api"]
    assert "→ web" in lrows[0].text and "http" in lrows[0].text
    assert d.find_element("css selector", "#vrrp").text == "not configured"
    assert d.find_element("css selector", "#alarms").text == "no alarms"
    assert d.find_element("css selector", "#scale").text == "no scaling groups"
    assert d.find_element("css selector", "#conn-status").get_attribute("data-state") == "live"

    # Drain b2: the first click asks for the token; a wrong one is refused,
    # said so, and changes nothing.
    auth = d.find_element("css selector", "#auth")
    assert not auth.is_displayed()
    d.find_element("css selector", 'button[data-action="drain"][data-server="b2"]').click()
    wait_for(d, "the token form", lambda d: auth.is_displayed())
    d.find_element("css selector", "#auth-token").send_keys("wrong-token")
    d.find_element("css selector", "#auth-submit").click()
    err = wait_for(
        d, "the 401 message", lambda d: d.find_element("css selector", "#auth-error").text or None
    )
    assert "401" in err and "invalid bearer token" in err, err
    assert auth.is_displayed()
    os.makedirs(ARTIFACTS, exist_ok=True)
    d.save_screenshot(os.path.join(ARTIFACTS, "dashboard-401.png"))
    assert d.execute_script("return sessionStorage.getItem('tern.admin.token')") is None
    assert not d.find_element("css selector", "#token-status").is_displayed()
    assert server_state(aport, "web", "b2") == "ready"
    time.sleep(scaled(1.2))  # one poll later the page still says ready
    assert cell(d, "web", "b2", "state") == "ready"

    # The right token: the API agrees, then the page.
    d.find_element("css selector", "#auth-token").send_keys(TOKEN)
    d.find_element("css selector", "#auth-submit").click()
    wait_for(d, "the form to close", lambda d: not auth.is_displayed())
    deadline = time.monotonic() + scaled(5)
    while server_state(aport, "web", "b2") != "drain":
        assert time.monotonic() < deadline, "the API never showed b2 draining"
        time.sleep(0.05)
    wait_for(d, "b2 shown draining", lambda d: cell(d, "web", "b2", "state") == "drain")
    assert cell(d, "web", "b1", "state") == "ready"
    assert server_state(aport, "web", "b1") == "ready"
    msg = d.find_element("css selector", "#action-msg")
    assert msg.is_displayed() and "b2" in msg.text and "drain" in msg.text
    assert d.execute_script("return sessionStorage.getItem('tern.admin.token')") == TOKEN
    assert d.find_element("css selector", "#token-status").is_displayed()
    assert not d.find_element("css selector", 'button[data-action="drain"][data-server="b2"]').is_enabled()

    # A few seconds of history make the charts of the screenshot worth
    # looking at (for a reader; nothing checks them). tern samples once a
    # second, sanitizers or not: no need to scale.
    time.sleep(4)
    shot = os.path.join(ARTIFACTS, "dashboard.png")
    assert d.save_screenshot(shot), shot

    # Enable it again: the token is remembered, no form this time.
    d.find_element("css selector", 'button[data-action="enable"][data-server="b2"]').click()
    wait_for(d, "b2 shown ready again", lambda d: cell(d, "web", "b2", "state") == "ready")
    assert not auth.is_displayed()
    assert server_state(aport, "web", "b2") == "ready"

    # Every request the page made went to the admin address, nowhere else,
    # and it did use the API (history included).
    # (The network log also holds the browser's own start page, a chrome://
    # document loaded before ours: its internal resources do not count.)
    urls = set(d.execute_script(
        "return performance.getEntries()"
        ".filter(e => e.entryType === 'navigation' || e.entryType === 'resource')"
        ".map(e => e.name)"))
    for entry in d.get_log("performance"):
        m = json.loads(entry["message"])["message"]
        if m["method"] != "Network.requestWillBeSent":
            continue
        if m["params"].get("documentURL", "").startswith("chrome://"):
            continue
        urls.add(m["params"]["request"]["url"])
    foreign = []
    for u in urls:
        p = urllib.parse.urlsplit(u)
        if p.scheme in ("data", "about", "blob"):
            continue
        if p.scheme not in ("http", "https") or p.netloc != origin:
            foreign.append(u)
    assert not foreign, f"requests to other places than {origin}: {foreign}"
    paths = {urllib.parse.urlsplit(u).path for u in urls}
    for p in ("/", "/api/v1/pools", "/api/v1/listeners", "/api/v1/pools/web/history",
              "/api/v1/pools/web/servers/b2/drain", "/api/v1/pools/web/servers/b2/enable"):
        assert p in paths, (p, sorted(paths))

    # The page ran without a script error (the 401 it provoked is expected).
    errors = [
        e["message"] for e in d.get_log("browser")
        if e["level"] == "SEVERE" and "401" not in e["message"]
    ]
    assert not errors, errors


def test_dashboard_shows_alarms_as_they_change(tern, backends, browser):
    """With the watch plugin, the alarms panel follows an alarm's state as
    traffic comes and goes: OK while idle, ALARM under traffic, OK again
    when it stops, each as the API says it."""
    (b1,) = backends(1)
    port, aport = free_port(), free_port()
    conf = (
        "global:\n  workers: 1\n"
        f"admin:\n  listen: 127.0.0.1:{aport}\n"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}\n"
        f"pools:\n  web:\n    servers:\n      - {{ name: b1, address: {b1.address} }}\n"
        "watch:\n  interval: 500ms\n  alarms:\n"
        "    - { name: web-busy, metric: pool.web.requests_per_second, above: 20, period: 1s,"
        " evaluation_periods: 1, missing_data: not_breaching }\n"
    )
    tern(conf, wait_ports=(port, aport))
    d = browser
    d.get(f"http://127.0.0.1:{aport}/")

    def shown(d):
        # Read in one step inside the page: the panel is re-rendered whole
        # when it changes, which would leave an element found here stale.
        return d.execute_script(
            "const e = document.querySelector("
            "'#alarms [data-alarm=\"web-busy\"] [data-field=\"state\"]');"
            "return e ? e.textContent : null;")

    def api_state():
        return {a["name"]: a["state"] for a in api(aport, "/api/v1/alarms")[1]["alarms"]}["web-busy"]

    wait_for(d, "web-busy OK while idle", lambda d: shown(d) == "OK")
    traffic = Traffic(port)
    traffic.start()
    try:
        wait_for(d, "web-busy in ALARM under traffic", lambda d: shown(d) == "ALARM")
        assert api_state() == "ALARM"
        os.makedirs(ARTIFACTS, exist_ok=True)
        d.save_screenshot(os.path.join(ARTIFACTS, "dashboard-alarm.png"))
    finally:
        traffic.stop()
    wait_for(d, "web-busy OK again", lambda d: shown(d) == "OK")
    assert api_state() == "OK"
