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
  a restarted tern adopts the clone that is left; libvirtd restarts under
  it without a failed request, and the plugins reconnect.
- a clone that cannot start: the launch fails and leaves no domain and no
  overlay behind.
- a clone stopped under a running tern (virsh destroy): the group's list
  shows it stopped, the group destroys it (domain and overlay) and boots a
  new clone in its place.
"""
import json
import threading
import time
import urllib.error
import urllib.request

from conftest import free_port, wait_for as _wait_for
from realvm import host_of, realvm, virsh  # noqa: F401  (realvm: the fixture)


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


def wait_for(pred, timeout):
    return _wait_for(pred, timeout, step=0.25)  # some predicates run virsh


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
    name = f"ternvm-w{realvm.id}"
    try:
        watch_one_vm(realvm, tern, name)
    finally:  # the next test wants the CPU and an exact list of volumes
        realvm.destroy(name)


def watch_one_vm(realvm, tern, name):  # noqa: F811  (realvm: the fixture's value)
    t0 = time.monotonic()
    realvm.clone(name)
    ip = realvm.address(name, 60)
    body = realvm.wait_http(ip, 60)
    boot = time.monotonic() - t0
    assert host_of(body) == "vm-" + realvm.uuid(name), body
    assert "base=MASTER-DISK-CONTENT" in body, body
    port, admin = free_port(), free_port()
    # Server "vm1" is the domain by its DHCP address (the names differ).
    watch = (
        "    - { name: vm-cpu, metric: pool.rvmw.cpu_percent, above: 60, period: 2s,\n"
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
    assert idle["vm-cpu"]["value"] < 60, idle["vm-cpu"]

    # Load through tern on the burn CGI (~0.3 s of guest CPU each): the vCPU
    # goes near 100 % (less when other work shares the host's two cores) and
    # the alarm to ALARM.
    load = Load(port, "/cgi-bin/burn?3000", threads=3, seconds=45, max_requests=600)
    try:
        busy = wait_for(lambda: (lambda a: a if a.get("vm-cpu", {}).get("state") == "ALARM"
                                 else None)(alarms(admin)), 45)
    finally:
        load.stop()
    assert busy, f"{alarms(admin)}\n{t.log()}"
    print(f"\nwatch: guest booted in {boot:.1f} s; vm-cpu ALARM after {len(load.results)} "
          f"requests, pool.rvmw.cpu_percent={busy['vm-cpu']['value']:.1f}")
    # The vCPU's time over the poll interval: ~100 for a saturated guest
    # (a little over it from the jitter between the two clocks).
    assert 60 < busy["vm-cpu"]["value"] <= 103, busy["vm-cpu"]
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


def test_scale_out_and_in_with_real_clones(realvm, tern):  # noqa: F811
    t_start = time.monotonic()
    realvm.watch_group("rvm-tern-")
    port, admin = free_port(), free_port()
    watch = (
        "    - { name: rvm-busy, metric: pool.rvm.cpu_percent, above: 60, period: 2s,\n"
        "        evaluation_periods: 2, datapoints_to_alarm: 2 }\n"
        "    - { name: rvm-idle, metric: pool.rvm.cpu_percent, below: 15, period: 2s,\n"
        "        evaluation_periods: 3, datapoints_to_alarm: 3 }\n"
    )
    scale = f"""scale:
  - pool: rvm
    min: 1
    max: 3
    provider: {{ libvirt: {{ uri: "qemu:///system", template: {realvm.template},
                            storage_pool: {realvm.storage} }} }}
    scale_out: {{ alarm: rvm-busy, add: 2, cooldown: 10s }}
    scale_in: {{ alarm: rvm-idle, remove: 1, cooldown: 2s }}
"""
    yaml = base_yaml(port, admin, "rvm", "[]", watch, scale)
    t = tern(yaml, wait_ports=[port])

    def settled(n):
        g = group(admin)
        return g if g and len(in_service(g)) == n and len(g["servers"]) == n else None

    # min 1: one clone, booted, probed, healthy, in the pool.
    g = wait_for(lambda: settled(1), 60)
    assert g, f"{group(admin)}\n{t.log()}"
    assert in_service(g) == ["rvm-tern-1"], g
    first = "vm-" + realvm.uuid("rvm-tern-1")
    t_min = time.monotonic() - t_start

    # Load on the burn CGI: the VM's CPU raises rvm-busy, the group adds 2.
    load = Load(port, "/cgi-bin/burn?2000", threads=3, seconds=120, max_requests=4000)
    try:
        busy = wait_for(lambda: (lambda a: a if a.get("rvm-busy", {}).get("state") == "ALARM"
                                 else None)(alarms(admin)), 40)
        seen_alarm = time.time()
        assert busy, f"{alarms(admin)}\n{t.log()}"
        t_alarm = busy["rvm-busy"]["last_change"]
        if abs(t_alarm - seen_alarm) > 5:  # not a wall-clock time: what the test saw
            t_alarm = seen_alarm
        g = wait_for(lambda: settled(3), 90)
        assert g, f"{group(admin)}\n{alarms(admin)}\n{t.log()}"
        names = in_service(g)
        assert names == ["rvm-tern-1", "rvm-tern-2", "rvm-tern-3"], g
        hosts = {"vm-" + realvm.uuid(n): n for n in names}
        # Every clone takes traffic through tern.
        assert wait_for(lambda: load.hosts() >= set(hosts), 30), (load.hosts(), hosts)
    finally:
        load.stop()
    with load.lock:
        news = [ts for ts, s, h in load.results if s == 200 and h in hosts and h != first]
    t_first = min(news) - t_alarm
    print(f"\nscale: min 1 in service after {t_min:.1f} s; alarm -> first request served by a "
          f"new VM: {t_first:.1f} s; {len(load.results)} burn requests, {len(load.failed)} failed")
    assert not load.failed, load.failed[:5]
    assert 0 < t_first < 90
    assert sorted(realvm.volumes()) == ["master.qcow2"] + [f"{n}.qcow2" for n in names]

    # No load: rvm-idle, the group drains and destroys the new clones one by
    # one (newest first) while light traffic goes on without a failure.
    light = Load(port, "/", threads=1, seconds=90, max_requests=3000, pause=0.05)
    try:
        g = wait_for(lambda: (lambda g: g if g and realvm.running("rvm-tern-") == ["rvm-tern-1"]
                              else None)(settled(1)), 75)
    finally:
        light.stop()
    assert g, f"{group(admin)}\n{alarms(admin)}\n{t.log()}"
    assert in_service(g) == ["rvm-tern-1"]
    assert not light.failed, light.failed[:5]
    assert len(light.results) > 20 and all(s == 200 for _, s, _ in light.results)
    assert realvm.all_domains("rvm-tern-") == ["rvm-tern-1"]
    assert realvm.volumes() == ["master.qcow2", "rvm-tern-1.qcow2"], realvm.volumes()
    acts = g["activities"]
    launches = [a for a in acts if a["action"] == "launch"]
    terms = [a for a in acts if a["action"] == "terminate"]
    assert len(launches) == 3 and all(a["result"].startswith("successful") for a in launches), acts
    assert sorted(a["server"] for a in terms) == ["rvm-tern-2", "rvm-tern-3"], acts
    assert len(terms) == 2 and all(a["result"].startswith("successful") for a in terms), acts

    # A restarted tern adopts the clone that is left and makes no other.
    t.stop()
    t2 = tern(yaml, wait_ports=[port])
    g = wait_for(lambda: settled(1), 30)
    assert g, f"{group(admin)}\n{t2.log()}"
    assert in_service(g) == ["rvm-tern-1"] and g["servers"][0]["adopted"] is True, g
    time.sleep(3)
    g = group(admin)
    assert not [a for a in g["activities"] if a["action"] == "launch"], g["activities"]
    assert realvm.all_domains("rvm-tern-") == ["rvm-tern-1"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        assert host_of(r.read().decode()) == first

    # libvirtd restarts under the running tern: the guest and the traffic
    # through tern go on; both plugins reconnect (the watch source counts
    # it, its metrics come back) and the group neither adopts nor launches
    # anything more.
    before = api(admin, "/api/v1/alarms")["libvirt"]
    light = Load(port, "/", threads=1, seconds=60, max_requests=2000, pause=0.05)
    try:
        realvm.restart_libvirtd(down=3)
        lv = wait_for(lambda: (lambda d: d["libvirt"] if d and d["libvirt"]["connected"] and
                               d["libvirt"]["reconnects"] > before["reconnects"] and
                               d["libvirt"]["matched"] == 1 else None)(
            api(admin, "/api/v1/alarms")), 20)
        assert lv, f"{api(admin, '/api/v1/alarms')}\n{t2.log()}"
        assert lv["failures"] > before["failures"], lv
        data = wait_for(lambda: (lambda a: a if a["rvm-idle"]["state"] in ("OK", "ALARM")
                                 and a["rvm-idle"]["value"] is not None else None)(alarms(admin)), 10)
        assert data, alarms(admin)
        time.sleep(2)  # a relist of the group's servers after the restart
    finally:
        light.stop()
    assert not light.failed, light.failed[:5]
    assert len(light.results) > 20
    g = group(admin)
    assert in_service(g) == ["rvm-tern-1"] and len(g["servers"]) == 1, g
    assert not [a for a in g["activities"] if a["action"] in ("launch", "terminate")], g
    assert realvm.all_domains("rvm-tern-") == ["rvm-tern-1"]
    assert realvm.running("rvm-tern-") == ["rvm-tern-1"]
    print(f"scale: whole scenario {time.monotonic() - t_start:.1f} s")


def one_clone_yaml(port, admin, pool, template, storage, pool_extra=""):
    """A group of exactly one clone of template, on pool."""
    return f"""global:
  workers: 1
admin:
  listen: 127.0.0.1:{admin}
listeners:
  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: {pool} }}
pools:
  {pool}:
    servers: []
{pool_extra}scale:
  - pool: {pool}
    min: 1
    max: 1
    provider: {{ libvirt: {{ uri: "qemu:///system", template: {template},
                            storage_pool: {storage} }} }}
"""


def test_failed_launch_leaves_nothing(realvm, tern):  # noqa: F811
    """A clone that cannot start (its template names a kernel that is not
    there): the launch fails, and the provider undoes what it made on the
    real libvirt: no domain and no overlay volume are left."""
    realvm.watch_group("rvmf-tern-")
    broken = f"ternvm-broken-{realvm.id}"
    realvm.broken_template(broken)
    port, admin = free_port(), free_port()
    t = tern(one_clone_yaml(port, admin, "rvmf", broken, realvm.storage), wait_ports=[port])

    def failed():
        g = group(admin)
        acts = g["activities"] if g else []
        return [a for a in acts if a["action"] == "launch" and a["result"].startswith("failed")]

    def left():
        return realvm.all_domains("rvmf-tern-") + [v for v in realvm.volumes()
                                                    if v.startswith("rvmf-")]

    f = wait_for(failed, 30)
    assert f, f"{group(admin)}\n{t.log()}"
    assert "start" in f[0]["result"], f[0]
    # Between two tries (they back off: 1, 2, 4 s) nothing of them is left.
    quiet = wait_for(lambda: (lambda g: g if g and not g["servers"] and not left() else None)(
        group(admin)), 15)
    assert quiet, f"{group(admin)}\n{left()}\n{t.log()}"
    assert len(failed()) >= 1 and not in_service(quiet), quiet
    print(f"\nfailed launch: {f[0]['result']}")
    t.stop()
    assert wait_for(lambda: not left(), 10), left()


def test_stopped_clone_is_replaced(realvm, tern):  # noqa: F811
    """A clone of the group stopped behind tern's back (virsh destroy) is
    not left to leak: the group terminates it, its domain and overlay go,
    and a new clone takes its place in the pool."""
    realvm.watch_group("rvms-tern-")
    port, admin = free_port(), free_port()
    extra = ("    drain_timeout: 5s\n"
             "    health_check: { type: http, path: /healthz, interval: 1s, timeout: 1s, rise: 1, "
             "fall: 2 }\n")
    t = tern(one_clone_yaml(port, admin, "rvms", realvm.template, realvm.storage, extra),
             wait_ports=[port])

    def settled(name):
        g = group(admin)
        return g if g and in_service(g) == [name] and len(g["servers"]) == 1 else None

    g = wait_for(lambda: settled("rvms-tern-1"), 90)
    assert g, f"{group(admin)}\n{t.log()}"
    t0 = time.monotonic()
    virsh("destroy", "rvms-tern-1")
    g = wait_for(lambda: settled("rvms-tern-2"), 120)
    assert g, f"{group(admin)}\n{t.log()}"
    print(f"\nstopped clone: replaced, in service after {time.monotonic() - t0:.1f} s")
    terms = [a for a in g["activities"] if a["action"] == "terminate"]
    assert [a["server"] for a in terms] == ["rvms-tern-1"], g["activities"]
    assert "rvms-tern-1 is stopped in the provider's list" in terms[0]["reason"], terms
    assert terms[0]["result"].startswith("successful"), terms
    assert realvm.all_domains("rvms-tern-") == ["rvms-tern-2"]
    assert [v for v in realvm.volumes() if v.startswith("rvms-")] == ["rvms-tern-2.qcow2"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        assert host_of(r.read().decode()) == "vm-" + realvm.uuid("rvms-tern-2")
    t.stop()
