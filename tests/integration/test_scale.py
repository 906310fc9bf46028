"""The scale plugin (scale.so) with the exec provider, end to end.

tern runs with a watch: section whose alarms follow
pool.web.requests_per_second and a scale: group on pool web whose provider
is a set of shell scripts written here: create starts tests/tools/backend.py
on a free port, records "name pid address" in a state file and prints the
address last; destroy kills by PID from that file (it is written to
DESIGN.md's contract alone: it knows no TERN_ACTION); list prints the
servers still alive (that is how a restarted tern adopts them), those
stopped with SIGSTOP as "name address stopped". Python threads drive the
load; every request must succeed while the group grows to max and shrinks
back to min.
"""
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import BACKEND, free_port, scaled, wait_for

CREATE = """#!/bin/sh
dir={dir}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "$TERN_ACTION $TERN_GROUP $TERN_POOL $TERN_SERVER" >> $dir/calls
python3 {backend} --port $port --name $TERN_SERVER --log $dir/$TERN_SERVER.log > $dir/$TERN_SERVER.out 2>/dev/null &
pid=$!
i=0
while ! grep -q ready $dir/$TERN_SERVER.out 2>/dev/null; do
    sleep 0.05; i=$((i+1)); [ $i -gt 200 ] && exit 1
done
echo "$TERN_SERVER $pid 127.0.0.1:$port" >> $dir/state
echo "started $TERN_SERVER as pid $pid"
echo 127.0.0.1:$port
"""

LIST = """#!/bin/sh
dir={dir}
touch $dir/state
while read name pid addr; do
    kill -0 $pid 2>/dev/null || continue
    case $(cut -d' ' -f3 /proc/$pid/stat) in
        T) echo "$name $addr stopped" ;;
        *) echo "$name $addr" ;;
    esac
done < $dir/state
"""

DESTROY = """#!/bin/sh
dir={dir}
touch $dir/state
echo "$TERN_ACTION $TERN_GROUP $TERN_POOL $TERN_SERVER $TERN_ADDRESS" >> $dir/calls
pid=$(awk -v n="$TERN_SERVER" '$1 == n {{ print $2 }}' $dir/state)
[ -n "$pid" ] && kill $pid && kill -CONT $pid
grep -v "^$TERN_SERVER " $dir/state > $dir/state.tmp; mv $dir/state.tmp $dir/state
exit 0
"""


def scale_api(admin):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1/scale", timeout=2) as r:
            doc = json.loads(r.read())
    except (OSError, ValueError):
        return None
    groups = doc.get("groups") if isinstance(doc, dict) else None
    return groups[0] if groups else None


def in_service(g):
    return sorted(s["name"] for s in g["servers"] if s["state"] == "in_service") if g else []


def settled(g, n):
    """n servers in service and nothing coming or going."""
    return g is not None and len(in_service(g)) == n and len(g["servers"]) == n and g["desired"] == n


class Load:
    """Threads sending requests through tern until stopped; counts failures."""

    def __init__(self, port, threads=4):
        self.port = port
        self.ok = 0
        self.failed = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        while not self.stop_flag.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as r:
                    r.read()
                    good = r.status == 200
                    err = r.status
            except (OSError, urllib.error.HTTPError) as e:
                good, err = False, repr(e)
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failed.append(err)
            time.sleep(0.01)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join()


def config(port, admin, d, create_timeout="10s", max_=3, reconcile=None, list_=True):
    """reconcile: the group's reconcile_interval (how often it reads the
    provider's list again); None leaves the 10 s default. list_: whether the
    exec provider has its list program."""
    relist = f"    reconcile_interval: {reconcile}\n" if reconcile else ""
    lister = f" list: {d}/list.sh," if list_ else ""
    return f"""global:
  workers: 1
admin:
  listen: 127.0.0.1:{admin}
listeners:
  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}
pools:
  web:
    servers: []
    drain_timeout: 5s
watch:
  interval: 200ms
  alarms:
    - {{ name: web-busy, metric: pool.web.requests_per_second, above: 10, period: 1s,
        evaluation_periods: 2, datapoints_to_alarm: 1 }}
    - {{ name: web-idle, metric: pool.web.requests_per_second, below: 2, period: 1s,
        evaluation_periods: 2, datapoints_to_alarm: 2 }}
scale:
  - pool: web
    min: 1
    max: {max_}
{relist}    provider: {{ exec: {{ create: {d}/create.sh, destroy: {d}/destroy.sh,{lister} timeout: {create_timeout} }} }}
    scale_out: {{ alarm: web-busy, add: 1, cooldown: 1s }}
    scale_in: {{ alarm: web-idle, remove: 1, cooldown: 1s }}
"""


@pytest.fixture
def scripts(tmp_path):
    d = str(tmp_path)
    for name, text in (("create.sh", CREATE), ("destroy.sh", DESTROY), ("list.sh", LIST)):
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write(text.format(dir=d, backend=BACKEND))
        os.chmod(p, 0o755)
    yield d
    # Kill what the scripts started and tern did not destroy.
    try:
        with open(os.path.join(d, "state")) as f:
            for line in f:
                try:
                    os.kill(int(line.split()[1]), signal.SIGKILL)
                except (OSError, ValueError, IndexError):
                    pass
    except OSError:
        pass


def calls(d):
    try:
        with open(os.path.join(d, "calls")) as f:
            return f.read().splitlines()
    except OSError:
        return []


def served(d, name):
    try:
        with open(os.path.join(d, name + ".log")) as f:
            return len(f.read().splitlines())
    except OSError:
        return 0


def test_grow_shrink_adopt(tern, scripts):
    d = scripts
    port, admin = free_port(), free_port()
    t = tern(config(port, admin, d), wait_ports=[port])

    # min 1: the group launches web-tern-1 and adds it once it answers.
    g = wait_for(lambda: (lambda g: g if settled(g, 1) else None)(scale_api(admin)), 15)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    assert in_service(g) == ["web-tern-1"]
    assert calls(d) == ["create web web web-tern-1"]

    # Load: web-busy goes to ALARM, the group grows one by one to max 3.
    load = Load(port)
    try:
        g = wait_for(lambda: (lambda g: g if len(in_service(g)) == 3 else None)(scale_api(admin)), 30)
        assert g, f"{scale_api(admin)}\n{t.log()}"
        assert g["desired"] == 3 and g["max"] == 3
        time.sleep(scaled(1.0))
        for n in ("web-tern-2", "web-tern-3"):
            assert wait_for(lambda: served(d, n) > 0, 5), f"{n} got no traffic\n{t.log()}"
    finally:
        pass

    # No load: web-idle goes to ALARM, the group shrinks back to min, newest
    # first, each drained before it is destroyed.
    load.stop()
    g = wait_for(lambda: (lambda g: g if settled(g, 1) else None)(scale_api(admin)), 30)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    assert load.failed == [], load.failed[:5]
    assert load.ok > 50
    assert in_service(g) == ["web-tern-1"]
    destroys = [c for c in calls(d) if c.startswith("destroy")]
    assert [c.split()[3] for c in destroys] == ["web-tern-3", "web-tern-2"], calls(d)
    assert all(c.split()[4].startswith("127.0.0.1:") for c in destroys)
    acts = g["activities"]
    for a in acts:
        assert set(a) >= {"time", "action", "reason", "result"}
    launches = [a for a in acts if a["action"] == "launch"]
    terms = [a for a in acts if a["action"] == "terminate"]
    assert len(launches) == 3 and all(a["result"].startswith("successful") for a in launches), acts
    assert len(terms) == 2 and all(a["result"].startswith("successful") for a in terms), acts
    assert any("web-busy" in a["reason"] for a in acts)
    assert any("web-idle" in a["reason"] for a in acts)
    assert "scale: group web: launch web-tern-2" in t.log()

    # A restart adopts web-tern-1 instead of creating another server.
    t.stop()
    ncalls = len(calls(d))
    t2 = tern(config(port, admin, d), wait_ports=[port])
    g = wait_for(lambda: (lambda g: g if settled(g, 1) else None)(scale_api(admin)), 15)
    assert g, f"{scale_api(admin)}\n{t2.log()}"
    assert in_service(g) == ["web-tern-1"]
    assert g["servers"][0]["adopted"] is True
    time.sleep(scaled(1.5))
    assert len(calls(d)) == ncalls, calls(d)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        assert r.read() == b"web-tern-1\n"


def test_create_failures(tern, scripts, tmp_path):
    """A create that exits non-zero, one that prints no address and one that
    hangs past the timeout all fail their launch; tern keeps trying, backing
    off between tries."""
    d = scripts
    port, admin = free_port(), free_port()
    create = os.path.join(d, "create.sh")
    with open(create, "w") as f:
        f.write(
            "#!/bin/sh\n"
            f"n=$(cat {d}/n 2>/dev/null || echo 0); echo $((n+1)) > {d}/n\n"
            "case $n in\n"
            "  0) echo oops; exit 3 ;;\n"
            "  1) echo not-an-address; exit 0 ;;\n"
            "  *) sleep 30 ;;\n"
            "esac\n"
        )
    t = tern(config(port, admin, d, create_timeout="1s"), wait_ports=[port])
    g = wait_for(
        lambda: (lambda g: g if g and sum(a["result"].startswith("failed") for a in g["activities"]) >= 3
                 else None)(scale_api(admin)), 20)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    results = [a["result"] for a in g["activities"] if a["action"] == "launch"]
    assert "exited with status 3" in results[0], results
    assert "no host:port" in results[1], results
    assert "timed out after 1000 ms" in results[2], results
    assert g["desired"] == 1
    # Failed launches back off: 1 s, 2 s, 4 s, ... between tries.
    assert "next try in 1 s" in results[0] and "next try in 2 s" in results[1], results
    assert "next try in 4 s" in results[2], results
    time.sleep(1.5)  # real time: the next try is 4 s after the third failure
    g = scale_api(admin)
    assert len([a for a in g["activities"] if a["action"] == "launch"]) == 3, g


NODE_XML = """<node>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>web-master</name>
    <memory>1048576</memory>
    <os><type>hvm</type></os>
    <metadata><tern:scale xmlns:tern='https://tern.dev/xmlns/scale/1' port='8080'/></metadata>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='/pool/web-master.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <interface type='network'><source network='default'/></interface>
    </devices>
    <test:runstate>5</test:runstate>
  </domain>
  <network>
    <name>default</name>
    <bridge name='virbr0'/>
    <forward/>
    <ip address='192.168.122.1' netmask='255.255.255.0'>
      <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp>
    </ip>
  </network>
  <pool type='dir'>
    <name>default</name>
    <target><path>/pool</path></target>
    <volume type='file'>
      <name>web-master.qcow2</name>
      <capacity unit='GiB'>10</capacity>
      <target><path>/pool/web-master.qcow2</path><format type='qcow2'/></target>
    </volume>
  </pool>
</node>
"""


def test_libvirt_provider_clones(tern, tmp_path):
    """The libvirt provider inside tern, against the test driver: min 2
    makes two linked clones of the template with addresses from the
    (fabricated) DHCP leases on the template's port; they stay probing
    because nothing answers there, and tern stops cleanly with the jobs."""
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML)
    port, admin = free_port(), free_port()
    yaml = f"""global:
  workers: 1
admin:
  listen: 127.0.0.1:{admin}
listeners:
  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web }}
pools:
  web:
    servers: []
scale:
  - pool: web
    min: 2
    max: 4
    provider: {{ libvirt: {{ uri: "test://{node}", template: web-master, storage_pool: default }} }}
"""
    t = tern(yaml, wait_ports=[port])
    if "built without libvirt" in t.log():
        pytest.skip("scale.so built without libvirt")

    def created():
        g = scale_api(admin)
        if not g:
            return None
        made = [a for a in g["activities"] if a["action"] == "launch" and "created at" in a["result"]]
        return g if len(made) == 2 else None

    g = wait_for(created, 15)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    assert g["provider"] == "libvirt"
    names = sorted(s["name"] for s in g["servers"])
    assert names == ["web-tern-1", "web-tern-2"]
    for s in g["servers"]:
        assert s["state"] == "probing"
        assert s["address"].startswith("192.168.") and s["address"].endswith(":8080"), s


FAKE_VRRP = r"""
#include <math.h>
#include <stdlib.h>
#include <unistd.h>
struct fv { const struct tern_host *h; struct tern_timer *t; };
static struct fv the_state;

static void say(const struct tern_host *h, const char *state)
{
    struct tern_event ev = {.type = TERN_EV_VRRP_STATE, .name = "vi_web", .state = state,
                            .value = NAN, .threshold = NAN};
    h->publish(h, &ev);
    h->log(h, TERN_LOG_INFO, "said %s", state);
}

/* MASTER once the test creates the file $FAKEVRRP_FILE. */
static void later(void *arg)
{
    struct fv *s = arg;
    const char *f = getenv("FAKEVRRP_FILE");
    if (s->t != NULL && f != NULL && access(f, F_OK) == 0) {
        s->h->timer_cancel(s->h, s->t);
        s->t = NULL;
        say(s->h, "MASTER");
    }
}

static int init(const struct tern_host *h, const struct tern_value *sec, void **state)
{
    the_state.h = h;
    say(h, "BACKUP");
    the_state.t = h->timer_add(h, 0.1, 0.1, later, &the_state);
    *state = &the_state;
    return 0;
}

TERN_PLUGIN_EXPORT const struct tern_plugin tern_plugin_entry = {
    .api_version = TERN_PLUGIN_API_VERSION, .name = "fakevrrp", .init = init,
};
"""


def test_only_vrrp_master_scales(tern, scripts, tmp_path, monkeypatch):
    """A VRRP BACKUP launches nothing (min 1 stays unmet) and destroys
    nothing (a stopped server of the group is left alone); once the
    instance is MASTER the group launches its server and destroys the
    stopped one."""
    import subprocess
    import sys

    from conftest import ROOT

    d = scripts
    src, so = tmp_path / "fakevrrp.c", tmp_path / "fakevrrp.so"
    src.write_text('#include <errno.h>\n#include <stddef.h>\n#include "lb/plugin.h"\n' + FAKE_VRRP)
    subprocess.run(["cc", "-shared", "-fPIC", "-Wall", "-Werror", "-I", ROOT, "-o", str(so),
                    str(src)], check=True)
    flag = tmp_path / "master"
    monkeypatch.setenv("FAKEVRRP_FILE", str(flag))
    port, admin, bport = free_port(), free_port(), free_port()
    yaml = config(port, admin, d, reconcile="1s").replace("global:\n  workers: 1\n",
                                          f"global:\n  workers: 1\n  plugins: [ {so} ]\n")
    # web-tern-4 exists and is stopped (as a master that died may leave one).
    old = subprocess.Popen([sys.executable, BACKEND, "--port", str(bport), "--name", "web-tern-4"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        os.kill(old.pid, signal.SIGSTOP)
        with open(os.path.join(d, "state"), "w") as f:
            f.write(f"web-tern-4 {old.pid} 127.0.0.1:{bport}\n")
        t = tern(yaml, wait_ports=[port])
        time.sleep(scaled(1.5))
        g = scale_api(admin)
        assert g is not None, t.log()
        assert g["servers"] == [] and calls(d) == [], f"{g}\n{t.log()}"
        assert "not scaling" in t.log()
        assert old.poll() is None
        flag.write_text("")
        # The name web-tern-4 is taken: the new server is web-tern-5; the
        # list, every second here, finds web-tern-4 stopped.
        g = wait_for(lambda: (lambda g: g if settled(g, 1) and "destroy" in " ".join(calls(d))
                              else None)(scale_api(admin)), 30)
        assert g, f"{scale_api(admin)}\n{t.log()}"
        assert in_service(g) == ["web-tern-5"], g
        destroys = [c.split()[3] for c in calls(d) if c.startswith("destroy")]
        assert destroys == ["web-tern-4"], calls(d)
        assert old.wait(timeout=scaled(5)) is not None
        assert "fakevrrp: said MASTER" in t.log()
        assert "VRRP vi_web is MASTER: scaling here" in t.log()
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()


def target_tracking(port, admin, d, tt):
    """config() with target tracking (tt: the mapping's inside) instead of
    the step policies."""
    yaml = config(port, admin, d)
    return yaml[: yaml.index("    scale_out:")] + f"    target_tracking: {{ {tt} }}\n"


def test_target_tracking_scales_out(tern, scripts):
    """target_tracking on pool.web.requests_per_second: load far above the
    target takes the group to max at once (ceil(current x value / target),
    no scale-out window); scale-in waits for its window, 300 s unless set,
    so the group stays at max; a reload that sets scale_in_stabilization
    to 2 s, long over since the load stopped, brings it back to min."""
    d = scripts
    port, admin = free_port(), free_port()
    yaml = target_tracking(port, admin, d, "metric: pool.web.requests_per_second, target: 20")
    t = tern(yaml, wait_ports=[port])
    assert wait_for(lambda: settled(scale_api(admin), 1), 15), f"{scale_api(admin)}\n{t.log()}"
    load = Load(port)
    try:
        g = wait_for(lambda: (lambda g: g if settled(g, 3) else None)(scale_api(admin)), 20)
    finally:
        load.stop()
    assert g, f"{scale_api(admin)}\n{t.log()}"
    assert load.failed == [], load.failed[:5]
    reasons = [a["reason"] for a in g["activities"] if a["action"] == "desired"]
    assert any("pool.web.requests_per_second is" in r and "target 20" in r for r in reasons), reasons
    time.sleep(scaled(2))
    assert settled(scale_api(admin), 3)

    with open(t.conf, "w") as f:
        f.write(yaml.replace("target: 20", "target: 20, scale_in_stabilization: 2s"))
    t.proc.send_signal(signal.SIGHUP)
    g = wait_for(lambda: (lambda g: g if settled(g, 1) else None)(scale_api(admin)), 30)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    assert in_service(g) == ["web-tern-1"], g


def test_target_tracking_tolerance_and_scale_out_window(tern, scripts):
    """pool.web.servers held at target 1.6 with 2 servers is 1.25 times the
    target: within a tolerance of 0.3 nothing moves; a reload to 0.2 with
    a 4 s scale-out window grows the group to 3, not before the window
    has passed over the recommendations of 2 made before the reload."""
    d = scripts
    port, admin = free_port(), free_port()
    base = target_tracking(port, admin, d, "metric: pool.web.servers, target: 1.6, EXTRA")
    base = base.replace("    min: 1\n", "    min: 2\n")
    t = tern(base.replace("EXTRA", "tolerance: 0.3"), wait_ports=[port])
    assert wait_for(lambda: settled(scale_api(admin), 2), 20), f"{scale_api(admin)}\n{t.log()}"
    time.sleep(scaled(3))  # the metric is refreshed every second
    g = scale_api(admin)
    assert settled(g, 2), f"{g}\n{t.log()}"
    assert [a for a in g["activities"] if a["action"] == "desired"] == [], g["activities"]

    with open(t.conf, "w") as f:
        f.write(base.replace("EXTRA", "tolerance: 0.2, scale_out_stabilization: 4s"))
    sent = time.time()
    t.proc.send_signal(signal.SIGHUP)
    g = wait_for(lambda: (lambda g: g if settled(g, 3) else None)(scale_api(admin)), 30)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    ups = [a for a in g["activities"] if a["action"] == "desired"]
    assert len(ups) == 1 and ups[0]["reason"].startswith("2 -> 3: pool.web.servers is 2"), ups
    # The last recommendation of 2 came at most a tick (0.5 s) before the
    # reload was sent.
    assert ups[0]["time"] - sent >= 3.4, (ups[0]["time"] - sent, t.log())


def test_reload_keeps_the_group(tern, scripts):
    """SIGHUP with new bounds: the group keeps its servers (they stay in,
    or go back into, the pool) and takes the new min."""
    d = scripts
    port, admin = free_port(), free_port()
    t = tern(config(port, admin, d), wait_ports=[port])
    assert wait_for(lambda: settled(scale_api(admin), 1), 15), f"{scale_api(admin)}\n{t.log()}"
    text = config(port, admin, d).replace("    min: 1\n", "    min: 2\n")
    with open(t.conf, "w") as f:
        f.write(text)
    t.proc.send_signal(signal.SIGHUP)
    g = wait_for(lambda: (lambda g: g if settled(g, 2) else None)(scale_api(admin)), 15)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    assert g["min"] == 2 and in_service(g) == ["web-tern-1", "web-tern-2"]
    seen = set()
    for _ in range(10):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            seen.add(r.read().decode().strip())
    assert seen == {"web-tern-1", "web-tern-2"}, (seen, t.log())
    assert len([c for c in calls(d) if c.startswith("create")]) == 2


def shrink_by_reload(t, admin, text):
    """Reloads text with min and max 1 (the group had 2); returns the group
    once it has settled at 1."""
    with open(t.conf, "w") as f:
        f.write(text.replace("    min: 2\n", "    min: 1\n").replace("    max: 2\n", "    max: 1\n"))
    t.proc.send_signal(signal.SIGHUP)
    return wait_for(lambda: (lambda g: g if settled(g, 1) else None)(scale_api(admin)), 20)


def test_destroy_runs_only_to_destroy(tern, scripts):
    """Without a list program the destroy program, written to DESIGN.md's
    contract (it knows no TERN_ACTION and would remove whatever
    TERN_SERVER names), runs exactly once per server removed, always with
    TERN_SERVER and TERN_ADDRESS: never at start, never at a reconcile."""
    d = scripts
    with open(os.path.join(d, "destroy.sh")) as f:
        text = f.read()
    with open(os.path.join(d, "destroy.sh"), "w") as f:
        f.write(text.replace(f"dir={d}\n", f"dir={d}\n"
                             'echo "server=${TERN_SERVER:-<unset>} address=${TERN_ADDRESS:-<unset>}"'
                             f" >> {d}/destroys\n", 1))
    port, admin = free_port(), free_port()
    text = config(port, admin, d, max_=2, reconcile="1s", list_=False).replace(
        "    min: 1\n", "    min: 2\n")
    assert "list:" not in text
    t = tern(text, wait_ports=[port])
    g = wait_for(lambda: (lambda g: g if settled(g, 2) else None)(scale_api(admin)), 20)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    addr = {s["name"]: s["address"] for s in g["servers"]}
    # Several reconcile intervals pass: nothing may call destroy.
    time.sleep(scaled(3))
    assert not os.path.exists(os.path.join(d, "destroys")), calls(d)
    assert "has no list program" in t.log()

    g = shrink_by_reload(t, admin, text)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    time.sleep(scaled(2))
    with open(os.path.join(d, "destroys")) as f:
        assert f.read().splitlines() == [f"server=web-tern-2 address={addr['web-tern-2']}"]
    assert [c for c in calls(d) if not c.startswith("create")] == [
        f"destroy web web web-tern-2 {addr['web-tern-2']}"], calls(d)


def test_remove_first_oldest(tern, scripts):
    """remove_first: oldest: a scale-in from 2 to 1 drains and destroys
    web-tern-1, the first launched, and web-tern-2 takes the traffic."""
    d = scripts
    port, admin = free_port(), free_port()
    text = config(port, admin, d, max_=2).replace(
        "    min: 1\n", "    min: 2\n    remove_first: oldest\n")
    t = tern(text, wait_ports=[port])
    g = wait_for(lambda: (lambda g: g if settled(g, 2) else None)(scale_api(admin)), 20)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    g = shrink_by_reload(t, admin, text)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    assert in_service(g) == ["web-tern-2"], g
    assert [c.split()[3] for c in calls(d) if c.startswith("destroy")] == ["web-tern-1"], calls(d)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        assert r.read() == b"web-tern-2\n"


def test_warmup_holds_scale_in(tern, scripts):
    """warmup: 1h: with no load web-idle goes to ALARM, yet the group keeps
    the 2 servers it launched, shown warming; a reload to warmup 0s lets
    the scale-in through."""
    d = scripts
    port, admin = free_port(), free_port()
    text = config(port, admin, d).replace("    min: 1\n", "    min: 1\n    desired: 2\n")
    t = tern(text.replace("    min: 1\n", "    min: 1\n    warmup: 1h\n"), wait_ports=[port])
    g = wait_for(lambda: (lambda g: g if settled(g, 2) else None)(scale_api(admin)), 20)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    assert wait_for(lambda: any("alarm web-idle: " in ln and "-> ALARM" in ln
                                for ln in t.log().splitlines()), 15), t.log()
    time.sleep(scaled(2))
    g = scale_api(admin)
    assert settled(g, 2) and all(s["warming"] for s in g["servers"]), f"{g}\n{t.log()}"

    with open(t.conf, "w") as f:
        f.write(text)
    t.proc.send_signal(signal.SIGHUP)
    g = wait_for(lambda: (lambda g: g if settled(g, 1) else None)(scale_api(admin)), 20)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    assert not g["servers"][0]["warming"], g
    assert any("web-idle" in a["reason"] for a in g["activities"] if a["action"] == "desired"), g


def pid_of(d, name):
    with open(os.path.join(d, "state")) as f:
        for line in f:
            if line.split()[0] == name:
                return int(line.split()[1])
    return None


def alive(pid):
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_stopped_server_is_replaced(tern, scripts):
    """A server the list reports stopped (its process got SIGSTOP) is
    terminated, destroyed and replaced by a new one: under a running tern,
    and after a restart, where it is not adopted."""
    d = scripts
    port, admin = free_port(), free_port()
    t = tern(config(port, admin, d, reconcile="1s"), wait_ports=[port])
    assert wait_for(lambda: settled(scale_api(admin), 1), 15), f"{scale_api(admin)}\n{t.log()}"
    pid1 = pid_of(d, "web-tern-1")
    os.kill(pid1, signal.SIGSTOP)

    # The next list (every second here) shows it stopped.
    g = wait_for(lambda: (lambda g: g if settled(g, 1) and in_service(g) == ["web-tern-2"]
                          else None)(scale_api(admin)), 30)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    destroys = [c.split()[3] for c in calls(d) if c.startswith("destroy")]
    assert destroys == ["web-tern-1"], calls(d)
    assert wait_for(lambda: not alive(pid1), 5), "destroy did not end the stopped server"
    terms = [a for a in g["activities"] if a["action"] == "terminate"]
    assert len(terms) == 1 and terms[0]["server"] == "web-tern-1", g["activities"]
    assert "web-tern-1 is stopped in the provider's list" in terms[0]["reason"], terms
    assert terms[0]["result"].startswith("successful"), terms
    launches = [a["server"] for a in g["activities"] if a["action"] == "launch"]
    assert launches == ["web-tern-1", "web-tern-2"], g["activities"]
    assert g["desired"] == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        assert r.read() == b"web-tern-2\n"

    # Stopped while tern was down: the restarted tern does not adopt it, it
    # destroys it and launches web-tern-3 (the name web-tern-2 is not
    # reused).
    t.stop()
    pid2 = pid_of(d, "web-tern-2")
    os.kill(pid2, signal.SIGSTOP)
    t2 = tern(config(port, admin, d, reconcile="1s"), wait_ports=[port])
    g = wait_for(lambda: (lambda g: g if settled(g, 1) and in_service(g) == ["web-tern-3"]
                          else None)(scale_api(admin)), 20)
    assert g, f"{scale_api(admin)}\n{t2.log()}"
    assert g["servers"][0]["adopted"] is False, g
    assert g["desired"] == 1, g
    destroys = [c.split()[3] for c in calls(d) if c.startswith("destroy")]
    assert destroys == ["web-tern-1", "web-tern-2"], calls(d)
    assert wait_for(lambda: not alive(pid2), 5), "destroy did not end the stopped server"
    acts = g["activities"]
    assert [a["action"] for a in acts if a["server"] == "web-tern-2"] == ["terminate"], acts
    assert "group web: terminate web-tern-2: web-tern-2 is stopped" in t2.log()


def test_server_in_its_create_is_not_replaced(tern, scripts):
    """A server still in its create job that the list reports stopped (a
    libvirt clone is defined, stopped, before it starts) is left to its
    create: no destroy, and it goes into service when the create ends."""
    d = scripts
    with open(os.path.join(d, "create.sh")) as f:
        text = f.read()
    # The create takes 4 s, longer than the 1 s between two lists here,
    # and the lists show the server stopped meanwhile.
    with open(os.path.join(d, "create.sh"), "w") as f:
        f.write(text.replace(f"dir={d}\n", f"dir={d}\n"
                             "echo \"$TERN_SERVER - stopped\" > $dir/booting\n"
                             "sleep 4\nrm -f $dir/booting\n", 1))
    with open(os.path.join(d, "list.sh")) as f:
        text = f.read()
    with open(os.path.join(d, "list.sh"), "w") as f:
        f.write(text.replace("done < $dir/state\n",
                             "done < $dir/state\n"
                             "[ -f $dir/booting ] && tee -a $dir/seen < $dir/booting\n", 1))
    port, admin = free_port(), free_port()
    t = tern(config(port, admin, d, create_timeout="30s", reconcile="1s"), wait_ports=[port])
    g = wait_for(lambda: (lambda g: g if settled(g, 1) else None)(scale_api(admin)), 25)
    assert g, f"{scale_api(admin)}\n{t.log()}"
    with open(os.path.join(d, "seen")) as f:
        assert "web-tern-1 - stopped" in f.read()
    assert in_service(g) == ["web-tern-1"]
    assert [c for c in calls(d) if c.startswith("destroy")] == [], calls(d)
    assert [a["action"] for a in g["activities"]] == ["launch"], g["activities"]


def test_addressless_server_is_replaced(tern, scripts):
    """A server of the group the list reports running without an address
    for longer than a create waits for one (the exec timeout, 5 s here) is
    terminated and destroyed (a clone that never got a DHCP lease); one
    that gets its address before that is adopted, not destroyed."""
    d = scripts
    with open(os.path.join(d, "list.sh")) as f:
        text = f.read()
    listing = '        *) echo "$name $addr" ;;\n'
    assert listing in text
    with open(os.path.join(d, "list.sh"), "w") as f:
        f.write(text.replace(listing,
                             '        *) echo "$name $addr running" | tee -a $dir/seen ;;\n', 1))
    # web-tern-1 runs and never gets an address; web-tern-2 is a backend
    # whose address the list shows only once the group has seen it without.
    broken = subprocess.Popen(["sleep", "600"])
    port2 = free_port()
    booting = subprocess.Popen(["python3", BACKEND, "--port", str(port2), "--name", "web-tern-2",
                                "--log", os.path.join(d, "web-tern-2.log")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert b"ready" in booting.stdout.readline()
        with open(os.path.join(d, "state"), "w") as f:
            f.write(f"web-tern-1 {broken.pid} -\nweb-tern-2 {booting.pid} -\n")
        port, admin = free_port(), free_port()
        t = tern(config(port, admin, d, create_timeout="5s", reconcile="1s"), wait_ports=[port])
        # Neither counts toward desired: web-tern-3 is launched once the
        # first list is read. web-tern-2 gets its address as soon as that
        # create has written its line in state (the file is then written by
        # no one else until web-tern-1 is destroyed), well within the 5 s
        # allowance.
        assert wait_for(lambda: pid_of(d, "web-tern-3") is not None, 15), \
            f"{calls(d)}\n{t.log()}"
        with open(os.path.join(d, "state")) as f:
            text = f.read()
        with open(os.path.join(d, "state.new"), "w") as f:
            f.write(text.replace(f"web-tern-2 {booting.pid} -",
                                 f"web-tern-2 {booting.pid} 127.0.0.1:{port2}"))
        os.replace(os.path.join(d, "state.new"), os.path.join(d, "state"))
        with open(os.path.join(d, "seen")) as f:
            seen = f.read()
        assert "web-tern-1 - running" in seen and "web-tern-2 - running" in seen, seen

        # The lists (every second here) show web-tern-1 still without an
        # address: destroyed once past the allowance. web-tern-2 is adopted,
        # and the group, one over desired, drains the newest, web-tern-3.
        def done():
            g = scale_api(admin)
            terms = [a for a in g["activities"] if a["action"] == "terminate"] if g else []
            return g if settled(g, 1) and len(terms) == 2 else None
        g = wait_for(done, 40)
        assert g, f"{scale_api(admin)}\n{calls(d)}\n{t.log()}"
        assert in_service(g) == ["web-tern-2"], g
        assert g["servers"][0]["adopted"] is True, g
        assert broken.wait(timeout=scaled(5)) is not None, "destroy did not end web-tern-1"
        assert booting.poll() is None, "web-tern-2 was destroyed"
        destroys = sorted(c.split()[3] for c in calls(d) if c.startswith("destroy"))
        assert destroys == ["web-tern-1", "web-tern-3"], calls(d)
        assert [c.split()[3] for c in calls(d) if c.startswith("create")] == ["web-tern-3"]
        acts = g["activities"]
        term1 = [a for a in acts if a["server"] == "web-tern-1"]
        assert [a["action"] for a in term1] == ["terminate"], acts
        assert "web-tern-1 has had no address for " in term1[0]["reason"], term1
        assert term1[0]["reason"].endswith("(the boot allowance is 5 s): replacing it"), term1
        assert term1[0]["result"].startswith("successful"), term1
        assert [a["action"] for a in acts if a["server"] == "web-tern-2"] == ["adopt"], acts
        assert "group web: terminate web-tern-1: web-tern-1 has had no address" in t.log()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.read() == b"web-tern-2\n"
    finally:
        for p in (broken, booting):
            p.kill()
            p.wait()
