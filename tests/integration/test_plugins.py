"""What the plugin host gives plugins, end to end: host metrics of the
registry (pool.<pool>.queued) seen through a watch alarm, and the
configuration sections of third-party modules."""
import json
import threading
import time
import urllib.request

from conftest import free_port
from test_scale import wait_for


def alarm(admin, name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1/alarms", timeout=2) as r:
            doc = json.loads(r.read())
    except (OSError, ValueError):
        return None
    return next((a for a in doc.get("alarms", []) if a["name"] == name), None)


def test_pool_queued_metric(backends, tern):
    """One slot (max_connections: 1) and eight slow requests: seven wait in
    the queue, pool.web.queued says so, its alarm goes to ALARM; once they
    are answered the queue is empty and the alarm back to OK."""
    (b,) = backends(1)
    port, admin = free_port(), free_port()
    t = tern(f"""global:
  workers: 2
admin:
  listen: 127.0.0.1:{admin}
listeners:
  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}
pools:
  web:
    servers: [ {{ name: b1, address: "{b.address}", max_connections: 1 }} ]
    queue_size: 50
    timeouts: {{ queue: 20s, server: 10s }}
watch:
  interval: 200ms
  alarms:
    - {{ name: queue-long, metric: pool.web.queued, statistic: maximum, above: 4, period: 1s,
        evaluation_periods: 1 }}
""", wait_ports=[port, admin])
    assert wait_for(lambda: (alarm(admin, "queue-long") or {}).get("state") == "OK", 10), t.log()
    statuses = []

    def get():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/slow?ms=400", timeout=30) as r:
                statuses.append(r.status)
        except OSError as e:
            statuses.append(repr(e))

    threads = [threading.Thread(target=get) for _ in range(8)]
    for th in threads:
        th.start()
    a = wait_for(lambda: (lambda a: a if a and a["state"] == "ALARM" else None)(
        alarm(admin, "queue-long")), 10)
    for th in threads:
        th.join()
    assert a, f"{alarm(admin, 'queue-long')}\n{t.log()}"
    assert max(p["value"] for p in a["history"] if p["value"] is not None) >= 5, a
    assert statuses == [200] * 8, statuses
    # Every queued request left the count: the gauge is back to zero.
    a = wait_for(lambda: (lambda a: a if a and a["state"] == "OK" and a["value"] == 0 else None)(
        alarm(admin, "queue-long")), 10)
    assert a, alarm(admin, "queue-long")
