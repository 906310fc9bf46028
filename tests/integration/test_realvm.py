"""watch.so and scale.so end to end on real QEMU VMs through libvirt
(issues 7 and 8).

The lab (realvm.py) runs libvirtd with an isolated network, a storage pool
and a template domain whose guest serves HTTP on :8080: its index page names
the guest (vm-<domain uuid>), /cgi-bin/burn?N burns CPU. tern talks to the
guests over the lab's bridge; the tests send load to tern on loopback only,
each load loop bounded in time and in requests.

- watch: a clone made with virsh is a pool's server (matched by its DHCP
  address); load through tern drives its vCPU to 100 % and the alarm on
  pool.<pool>.cpu_percent goes to ALARM; the other domstats figures (memory
  %, network rates) are real, non-zero values.
- scale: a group with the libvirt provider, min 1; load raises the
  scale-out alarm, the clones boot, pass the health check, join the pool and
  serve requests through tern (the time from the alarm to the first request
  a new VM serves is measured and printed); without load the group drains
  and destroys them with no failed request and their overlays are deleted;
  a restarted tern adopts the clone that is left.
"""
import json
import threading
import time
import urllib.error
import urllib.request

from conftest import free_port
from realvm import host_of, realvm  # noqa: F401  (the fixture)


def api(admin, route):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}{route}", timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def alarms(admin):
    doc = api(admin, "/api/v1/alarms")
    return {a["name"]: a for a in doc["alarms"]} if doc and "alarms" in doc else {}


def group(admin):
    doc = api(admin, "/api/v1/scale")
    groups = doc.get("groups") if isinstance(doc, dict) else None
    return groups[0] if groups else None


def in_service(g):
    return sorted(s["name"] for s in g["servers"] if s["state"] == "in_service") if g else []


def wait_for(pred, timeout, step=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class Load:
    """`threads` clients sending GET path to tern in a loop, until stop(),
    `seconds` or `max_requests`, whichever comes first. Each answer is kept
    as (wall time, status, guest name)."""

    def __init__(self, port, path, threads=2, seconds=60, max_requests=5000, pause=0.0):
        self.url = f"http://127.0.0.1:{port}{path}"
        self.deadline = time.monotonic() + seconds
        self.max = max_requests
        self.pause = pause
        self.results = []
        self.failed = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop_flag.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if len(self.results) + len(self.failed) >= self.max:
                    return
            try:
                with urllib.request.urlopen(self.url, timeout=10) as r:
                    body = r.read().decode("utf-8", "replace")
                    with self.lock:
                        self.results.append((time.time(), r.status, host_of(body)))
            except (OSError, urllib.error.HTTPError) as e:
                with self.lock:
                    self.failed.append((time.time(), repr(e)))
            if self.pause:
                time.sleep(self.pause)

    def hosts(self):
        with self.lock:
            return {h for _, s, h in self.results if s == 200}

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=15)


def base_yaml(port, admin, pool, servers, watch, extra=""):
    return f"""global:
  workers: 2
admin:
  listen: 127.0.0.1:{admin}
listeners:
  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: {pool} }}
pools:
  {pool}:
    balance: leastconn
    servers: {servers}
    timeouts: {{ connect: 2s, server: 20s }}
    retries: 1
    drain_timeout: 10s
    health_check: {{ type: http, path: /healthz, interval: 1s, timeout: 1s, rise: 1, fall: 2 }}
watch:
  interval: 1s
  sources: {{ libvirt: {{ uri: "qemu:///system" }} }}
  alarms:
{watch}{extra}"""


def test_watch_alarms_on_a_real_vm(realvm, tern):  # noqa: F811
    t0 = time.monotonic()
    name = f"ternvm-w{realvm.id}"
    realvm.clone(name)
    ip = realvm.address(name, 60)
    body = realvm.wait_http(ip, 60)
    boot = time.monotonic() - t0
    assert host_of(body) == "vm-" + realvm.uuid(name), body
    assert "base=MASTER-DISK-CONTENT" in body, body
    port, admin = free_port(), free_port()
    # Server "vm1" is the domain by its DHCP address (the names differ).
    watch = (
        "    - { name: vm-cpu, metric: pool.rvmw.cpu_percent, above: 70, period: 2s,\n"
        "        evaluation_periods: 2, datapoints_to_alarm: 2 }\n"
        "    - { name: vm-mem, metric: server.rvmw.vm1.memory_percent, above: 0, period: 1s }\n"
        "    - { name: pool-mem, metric: pool.rvmw.memory_percent, above: 0, period: 1s }\n"
        "    - { name: vm-rx, metric: server.rvmw.vm1.net_rx_bytes_per_second, above: 0,"
        " period: 2s, statistic: maximum }\n"
        "    - { name: vm-tx, metric: server.rvmw.vm1.net_tx_bytes_per_second, above: 0,"
        " period: 2s, statistic: maximum }\n"
    )
    t = tern(base_yaml(port, admin, "rvmw", f"[ {{ name: vm1, address: {ip}:8080 }} ]", watch),
             wait_ports=[port])

    # Idle first: the CPU alarm is OK on real, low readings.
    idle = wait_for(lambda: (lambda a: a if a.get("vm-cpu", {}).get("state") == "OK" else None)(
        alarms(admin)), 20)
    assert idle, f"{alarms(admin)}\n{t.log()}"
    doc = api(admin, "/api/v1/alarms")
    assert doc["libvirt"]["connected"] and doc["libvirt"]["matched"] >= 1, doc["libvirt"]
    assert idle["vm-cpu"]["value"] < 70, idle["vm-cpu"]

    # Load through tern on the burn CGI (~0.3 s of guest CPU each): the vCPU
    # goes to 100 % and the alarm to ALARM.
    load = Load(port, "/cgi-bin/burn?3000", threads=3, seconds=45, max_requests=600)
    try:
        busy = wait_for(lambda: (lambda a: a if a.get("vm-cpu", {}).get("state") == "ALARM"
                                 else None)(alarms(admin)), 45)
    finally:
        load.stop()
    assert busy, f"{alarms(admin)}\n{t.log()}"
    print(f"\nwatch: guest booted in {boot:.1f} s; vm-cpu ALARM after {len(load.results)} "
          f"requests, pool.rvmw.cpu_percent={busy['vm-cpu']['value']:.1f}")
    assert busy["vm-cpu"]["value"] > 70 and busy["vm-cpu"]["value"] <= 101, busy["vm-cpu"]
    assert load.results and not load.failed, load.failed[:5]
    assert load.hosts() == {"vm-" + realvm.uuid(name)}
    # The other domstats figures, as the alarms on them see them: real and
    # non-zero (balloon stats from the guest's virtio_balloon, vnet counters).
    for n in ("vm-mem", "pool-mem", "vm-rx", "vm-tx"):
        a = busy[n]
        assert a["state"] == "ALARM" and a["value"] is not None and a["value"] > 0, a
    assert 0 < busy["vm-mem"]["value"] < 100, busy["vm-mem"]
    stats = realvm.domstats(name)
    assert int(stats.get("balloon.available", 0)) > 0, stats
    # Without load the CPU alarm clears.
    calm = wait_for(lambda: (lambda a: a if a.get("vm-cpu", {}).get("state") == "OK" else None)(
        alarms(admin)), 20)
    assert calm, f"{alarms(admin)}\n{t.log()}"
    log = t.stop()
    assert "libvirt: connected to qemu:///system" in log, log
    realvm.destroy(name)
