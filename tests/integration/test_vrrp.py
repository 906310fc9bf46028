"""VRRP failover between real tern processes in network namespaces.

Each test builds its own hosts: a Linux bridge in a "switch" namespace, two
tern nodes (A 10.123.0.1, B 10.123.0.2) and a client (C 10.123.0.10), each in
its own namespace on a veth to the bridge, virtual IP 10.123.0.100/24. Every
address lives inside those namespaces: nothing is sent anywhere else. Each
node serves HTTP on the VIP port from a local backend (tests/tools/backend.py,
run in the node's namespace) whose answer names the node.

Times come from the wire: a packet sniffer in the switch namespace (AF_PACKET
on the bridge, kernel timestamps) sees every advertisement and gratuitous
ARP, so "the backup owns the VIP" is the backup's first gratuitous ARP, as in
/work/shared/notes/keepalived-failover.sh. Address changes are also followed
with `ip -ts monitor address` in each node to check that two masters never
hold the VIP longer than one advertisement interval.

Needs root and `ip netns` (skipped otherwise); keepalived (Debian package) for
the interop tests, which skip without it. Counters come from GET /api/v1/vrrp
when the admin API serves them, else from tern's log lines ("dropped a packet
from ...: REASON (N so far)").
"""
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import BACKEND, TERN, scaled

PY = sys.executable
VIP = "10.123.0.100"
ADDR = {"a": "10.123.0.1", "b": "10.123.0.2", "c": "10.123.0.10", "k": "10.123.0.3"}
MAC = {n: "02:7b:00:00:00:%02x" % i for i, n in enumerate("abck", 1)}
VRID = 51
HTTP_PORT = 8080
ADMIN_PORT = 9900
# Slack on every bound the issue sets: "within X + 50 ms". Sanitizer builds
# start slower but time the same, so only TERN_TEST_SCALE widens it.
SLACK = 0.050 * float(os.environ.get("TERN_TEST_SCALE", "1"))


def skew(prio, interval):
    """RFC 5798 section 6.1: Skew_Time in seconds."""
    return (256 - prio) * interval / 256


def mdi(prio, interval):
    """RFC 5798 section 6.1: Master_Down_Interval in seconds."""
    return 3 * interval + skew(prio, interval)


def _root_and_netns():
    if os.geteuid() != 0:
        return "needs root (network namespaces, raw sockets)"
    name = "tern-test-probe%d" % os.getpid()
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return "ip netns does not work here: " + r.stderr.strip()
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


_WHY = _root_and_netns()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=_WHY or "")


def sh(*args, check=True):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def wait_for(cond, timeout, step=0.005):
    """Polls cond until it is true; returns the time it first was, or None."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if cond():
            return time.time()
        time.sleep(step)
    return None


# ---- the wire ----

SNIFFER = r"""
import json, socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS: kernel receive time
print("ready", flush=True)
while True:
    data, anc, _, _ = s.recvmsg(2048, 64)
    ts = time.time()
    for lvl, typ, val in anc:
        if lvl == socket.SOL_SOCKET and typ == 35:
            sec, nsec = struct.unpack("qq", val[:16])
            ts = sec + nsec / 1e9
    if len(data) < 14:
        continue
    src = data[6:12].hex(":")
    et = struct.unpack("!H", data[12:14])[0]
    if et == 0x0806 and len(data) >= 42:
        spa = socket.inet_ntoa(data[28:32]); tpa = socket.inet_ntoa(data[38:42])
        if spa == tpa:
            print(json.dumps({"t": ts, "k": "garp", "mac": src, "ip": spa}), flush=True)
    elif et == 0x86dd and len(data) >= 54:
        nh, hl = data[20], data[21]
        src6 = socket.inet_ntop(socket.AF_INET6, data[22:38])
        if nh == 58 and data[54] == 136 and len(data) >= 78:  # neighbor advertisement
            print(json.dumps({"t": ts, "k": "na", "mac": src, "hl": hl,
                              "ip": socket.inet_ntop(socket.AF_INET6, data[62:78])}), flush=True)
        elif nh == 112 and len(data) >= 62:
            v = data[54:]
            print(json.dumps({"t": ts, "k": "vrrp6", "mac": src, "ip": src6, "ttl": hl,
                              "ver": v[0] >> 4, "vrid": v[1], "prio": v[2]}), flush=True)
    elif et == 0x0800 and len(data) >= 34 and data[23] == 112:
        ihl = (data[14] & 15) * 4
        v = data[14 + ihl:]
        if len(v) >= 8:
            print(json.dumps({"t": ts, "k": "vrrp", "mac": src,
                              "ip": socket.inet_ntoa(data[26:30]), "ttl": data[22],
                              "ver": v[0] >> 4, "vrid": v[1], "prio": v[2]}), flush=True)
"""


class Sniffer:
    """Every advertisement and gratuitous ARP crossing the bridge."""

    def __init__(self, ns, dev="br0"):
        self.events = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, PY, "-c", SNIFFER, dev],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append(e)

    def find(self, after=0.0, **match):
        with self.lock:
            evs = list(self.events)
        return [e for e in evs if e["t"] >= after and all(e.get(k) == v for k, v in match.items())]

    def first(self, after=0.0, timeout=3.0, **match):
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            found = self.find(after, **match)
            if found:
                return found[0]
            time.sleep(0.005)
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class AddrMonitor:
    """`ip -ts monitor address` in one namespace: when the VIP came and went."""

    LINE = re.compile(r"^\[([0-9T:.\-]+)\]\s*(Deleted )?.*inet (\S+)/")

    def __init__(self, ns, has_vip_now):
        self.changes = [(time.time(), has_vip_now)]
        self.proc = subprocess.Popen(["ip", "-n", ns, "-ts", "monitor", "address"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            m = self.LINE.match(line.strip())
            if not m or m.group(3) != VIP:
                continue
            t = datetime.datetime.fromisoformat(m.group(1)).timestamp()
            self.changes.append((t, m.group(2) is None))

    def intervals(self, until):
        """[(start, end)] during which the VIP was present."""
        out, start = [], None
        for t, present in sorted(self.changes):
            if present and start is None:
                start = t
            elif not present and start is not None:
                out.append((start, t))
                start = None
        if start is not None:
            out.append((start, until))
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()


def longest_overlap(a, b, until):
    best = 0.0
    for s1, e1 in a.intervals(until):
        for s2, e2 in b.intervals(until):
            best = max(best, min(e1, e2) - max(s1, s2))
    return best


# ---- hosts ----


class Lab:
    """The namespaces, the processes started in them, and their cleanup."""

    def __init__(self):
        self.prefix = "tern-test-vrrp%d" % os.getpid()
        self.dir = tempfile.mkdtemp(prefix="tern-vrrp-")
        self.procs = []
        self.stoppers = []
        self.ns = {n: f"{self.prefix}-{n}" for n in ("sw", "a", "b", "c", "k")}

    def setup(self):
        self.cleanup()  # leftovers of an interrupted run with the same pid
        sh("ip", "netns", "add", self.ns["sw"])
        sh("ip", "-n", self.ns["sw"], "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.ns["sw"], "link", "set", "br0", "up")
        for n in ("a", "b", "c"):
            self.add_host(n)
        self.sniffer = Sniffer(self.ns["sw"])
        self.stoppers.append(self.sniffer.stop)

    def add_host(self, n):
        ns = self.ns[n]
        sh("ip", "netns", "add", ns)
        # No IPv6 duplicate address detection: link-local addresses are
        # usable at once (VRRP over IPv6 sends from them).
        sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0")
        sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0")
        # The veth is made inside the switch namespace and one end handed
        # over: no interface ever exists in the caller's namespace.
        sh("ip", "-n", self.ns["sw"], "link", "add", "v" + n, "type", "veth", "peer", "name",
           "eth0", "address", MAC[n], "netns", ns)
        sh("ip", "-n", self.ns["sw"], "link", "set", "v" + n, "master", "br0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "addr", "add", ADDR[n] + "/24", "dev", "eth0")

    def popen(self, n, argv, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[n], *argv], **kw)
        self.procs.append(p)
        return p

    def has_vip(self, n):
        out = sh("ip", "-n", self.ns[n], "-4", "-o", "addr", "show", "dev", "eth0", check=False)
        return f" {VIP}/" in out

    def curl(self, timeout=1.0):
        r = subprocess.run(["ip", "netns", "exec", self.ns["c"], "curl", "-s", "-m", str(timeout),
                            f"http://{VIP}:{HTTP_PORT}/"], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    def cleanup(self):
        for stop in self.stoppers:
            try:
                stop()
            except Exception:
                pass
        self.stoppers = []
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def lab():
    if not os.path.exists(TERN):
        pytest.skip(f"no tern binary at {TERN}")
    lab = Lab()
    try:
        lab.setup()
        yield lab
    finally:
        lab.cleanup()
        shutil.rmtree(lab.dir, ignore_errors=True)


def tern_yaml(n, prio, interval_ms=100, preempt=True, extra_vrrp="", health=False, peers=None,
              version=3):
    lines = [
        "global:",
        "  workers: 2",
        "admin:",
        f"  listen: 127.0.0.1:{ADMIN_PORT}",
        "listeners:",
        "  - name: web",
        f"    bind: 0.0.0.0:{HTTP_PORT}",
        "    mode: http",
        "    pool: web",
        "pools:",
        "  web:",
        "    servers:",
        "      - { name: local, address: 127.0.0.1:9000 }",
    ]
    if health:
        lines.append("    health_check: { type: tcp, interval: 100ms, timeout: 100ms, rise: 1,"
                     " fall: 1 }")
    lines += [
        "vrrp:",
        "  - name: vi_web",
        "    interface: eth0",
        f"    vrid: {VRID}",
        f"    priority: {prio}",
        f"    version: {version}",
        f"    advert_interval: {interval_ms}ms",
        f"    virtual_ips: [ {VIP}/24 ]",
        f"    preempt: {'true' if preempt else 'false'}",
    ]
    if peers:
        lines.append(f"    unicast_peers: [ {', '.join(peers)} ]")
    return "\n".join(lines) + "\n" + extra_vrrp


class Node:
    """One tern in namespace n with its backend (answers "node-n")."""

    def __init__(self, lab, n, yaml_text, env=None):
        self.lab, self.n = lab, n
        self.conf = os.path.join(lab.dir, f"{n}.yaml")
        with open(self.conf, "w") as f:
            f.write(yaml_text)
        self.log_path = os.path.join(lab.dir, f"{n}.log")
        self.backend = None
        self.start_backend()
        self.start(env)

    def start_backend(self):
        self.backend = self.lab.popen(self.n, [PY, BACKEND, "--port", "9000", "--name",
                                               f"node-{self.n}"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.backend.stdout.readline().startswith("ready")

    def stop_backend(self):
        self.backend.kill()
        self.backend.wait()

    def start(self, env=None):
        self.logf = open(self.log_path, "a")
        e = dict(os.environ)
        e.update(env or {})
        self.proc = self.lab.popen(self.n, [TERN, "-c", self.conf], stdout=subprocess.DEVNULL,
                                   stderr=self.logf, env=e)
        self.started = time.time()

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=10):
        try:
            return self.proc.wait(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.n} did not exit:\n{self.log()}")

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def transitions(self):
        return re.findall(r"vrrp vi_web: (\w+) -> (\w+)", self.log())

    def state(self):
        j = self.api()
        if j:
            return j["state"]
        t = self.transitions()
        return t[-1][1] if t else "INIT"

    def api(self):
        r = subprocess.run(["ip", "netns", "exec", self.lab.ns[self.n], "curl", "-s", "-m", "2",
                            f"http://127.0.0.1:{ADMIN_PORT}/api/v1/vrrp"],
                           capture_output=True, text=True)
        try:
            inst = json.loads(r.stdout)["instances"]
        except (ValueError, KeyError, TypeError):
            return None
        return inst[0] if inst else None

    def metrics(self):
        r = subprocess.run(["ip", "netns", "exec", self.lab.ns[self.n], "curl", "-s", "-m", "2",
                            f"http://127.0.0.1:{ADMIN_PORT}/metrics"],
                           capture_output=True, text=True)
        return r.stdout

    def counters(self):
        """From the admin API if it serves VRRP, else from the log."""
        j = self.api()
        if j:
            return j["counters"]
        out = {}
        for reason, n in re.findall(r"vrrp vi_web: [^\n]*: (\w+) \((\d+) so far\)", self.log()):
            out[reason] = max(out.get(reason, 0), int(n))
        return out


def start_pair(lab, prio_a=150, prio_b=100, interval_ms=100, **kw):
    a = Node(lab, "a", tern_yaml("a", prio_a, interval_ms, **kw))
    b = Node(lab, "b", tern_yaml("b", prio_b, interval_ms, **kw))
    wait_steady(lab, a, b)
    return a, b


def wait_steady(lab, master, backup, timeout=5.0):
    ok = wait_for(lambda: lab.has_vip(master.n) and not lab.has_vip(backup.n)
                  and master.state() == "MASTER" and backup.state() == "BACKUP", timeout)
    assert ok, f"no steady master/backup:\n{master.n}:\n{master.log()}\n{backup.n}:\n{backup.log()}"


def random_phase(interval):
    """A crash lands anywhere in the master's advertisement cycle."""
    time.sleep(2 * interval + random.random() * interval)


def garp_from(lab, n, after, timeout=3.0):
    e = lab.sniffer.first(after=after, timeout=timeout, k="garp", mac=MAC[n], ip=VIP)
    return e["t"] if e else None


def wait_http(lab, want, timeout=3.0):
    got = [None]

    def ok():
        got[0] = lab.curl(0.5)
        return got[0] == want

    assert wait_for(ok, timeout, step=0.05), f"HTTP on the VIP: {got[0]!r}, want {want!r}"


# ---- tests ----


def test_kill9_backup_owns_vip_within_master_down_interval(lab):
    a, b = start_pair(lab)
    wait_http(lab, "node-a")
    random_phase(0.1)
    t_kill = time.time()
    a.kill(signal.SIGKILL)
    t_garp = garp_from(lab, "b", t_kill)
    assert t_garp, "B never announced the VIP:\n" + b.log()
    took = t_garp - t_kill
    # From the kill the takeover lands in [MDI - interval, MDI] (the kill's
    # phase in A's advert cycle); the issue asks for at most MDI + 50 ms.
    assert took <= mdi(100, 0.1) + SLACK, f"took {took * 1000:.1f} ms"
    assert took >= mdi(100, 0.1) - 0.1 - 0.005, f"too soon: {took * 1000:.1f} ms"
    assert lab.has_vip("b")
    wait_http(lab, "node-b")
    assert b.counters().get("became_master", 1) >= 1


def test_sigterm_takeover_within_skew_time(lab):
    a, b = start_pair(lab)
    random_phase(0.1)
    t_term = time.time()
    a.kill(signal.SIGTERM)
    t_garp = garp_from(lab, "b", t_term)
    assert t_garp, "B never announced the VIP:\n" + b.log()
    took = t_garp - t_term
    assert took <= skew(100, 0.1) + SLACK, f"took {took * 1000:.1f} ms"
    # The priority-0 advertisement is what made it fast.
    p0 = lab.sniffer.find(after=t_term, k="vrrp", mac=MAC["a"], prio=0)
    assert p0, "A sent no priority 0"
    assert t_garp - p0[0]["t"] >= skew(100, 0.1) - 0.002
    assert a.wait_exit() == 0
    assert not lab.has_vip("a")
    wait_http(lab, "node-b")


@pytest.mark.parametrize("preempt", [True, False])
def test_master_comes_back(lab, preempt):
    a, b = start_pair(lab, preempt=preempt)
    a.kill(signal.SIGKILL)
    a.wait_exit()
    assert wait_for(lambda: lab.has_vip("b"), 2.0)
    # A died with the VIP still configured: its next start must remove it
    # before anything else, or both hosts would answer ARP for it.
    assert lab.has_vip("a")
    mon_a = AddrMonitor(lab.ns["a"], True)
    mon_b = AddrMonitor(lab.ns["b"], True)
    lab.stoppers += [mon_a.stop, mon_b.stop]
    time.sleep(0.2)
    t_start = time.time()
    a.start()
    if preempt:
        assert wait_for(lambda: lab.has_vip("a") and not lab.has_vip("b"), 3.0), a.log()
        t_a = garp_from(lab, "a", t_start)
        # Start-up plus A's own Master_Down_Interval (341 ms at 150).
        assert t_a and t_a - t_start <= mdi(150, 0.1) + 0.5, a.log()
        wait_http(lab, "node-a")
    else:
        time.sleep(1.0)
        assert not lab.has_vip("a") and lab.has_vip("b")
        assert a.state() == "BACKUP" and b.state() == "MASTER"
        wait_http(lab, "node-b")
    assert "left behind by an earlier run" in a.log()
    time.sleep(0.3)
    now = time.time()
    mon_a.stop()
    mon_b.stop()
    # Never two masters for longer than one advertisement interval.
    # A's stale VIP overlaps B's until A's start removes it: count from then.
    stale_gone = [t for t, present in mon_a.changes if not present]
    assert stale_gone, "A's stale VIP was never removed"
    mon_a.changes = [(t, p) for t, p in mon_a.changes if t >= stale_gone[0]]
    both = longest_overlap(mon_a, mon_b, now)
    assert both <= 0.1, f"two masters for {both * 1000:.1f} ms"


def test_tracked_pool_down_moves_the_vip(lab):
    track = "    track_pools: [ web ]\n"
    a = Node(lab, "a", tern_yaml("a", 150, health=True, extra_vrrp=track))
    b = Node(lab, "b", tern_yaml("b", 100, health=True, extra_vrrp=track))
    wait_steady(lab, a, b)
    wait_http(lab, "node-a")
    t0 = time.time()
    a.stop_backend()
    # Health check (100 ms, fall 1) then Fault: priority 0, Skew_Time.
    t_garp = garp_from(lab, "b", t0, timeout=5.0)
    assert t_garp, a.log()
    assert t_garp - t0 < 1.0, f"took {(t_garp - t0) * 1000:.0f} ms"
    assert a.state() == "FAULT"
    assert lab.sniffer.find(after=t0, k="vrrp", mac=MAC["a"], prio=0)
    wait_http(lab, "node-b")
    # Back to health: A leaves Fault and preempts again.
    a.start_backend()
    assert wait_for(lambda: lab.has_vip("a") and not lab.has_vip("b"), 5.0), a.log()
    wait_http(lab, "node-a")


def test_tracked_pool_with_weight_lowers_priority(lab):
    track = "    track_pools: [ web ]\n    track_weight: 60\n"
    a = Node(lab, "a", tern_yaml("a", 150, health=True, extra_vrrp=track))
    b = Node(lab, "b", tern_yaml("b", 100, health=True))
    wait_steady(lab, a, b)
    t0 = time.time()
    a.stop_backend()
    # 150 - 60 = 90 < 100: B (preempt) stops accepting A's adverts and takes
    # over after its Master_Down_Interval; A hears 100 and yields.
    assert wait_for(lambda: lab.has_vip("b") and not lab.has_vip("a"), 3.0), a.log()
    assert a.state() == "BACKUP"
    lows = lab.sniffer.find(after=t0, k="vrrp", mac=MAC["a"], prio=90)
    assert lows, "A never advertised its lowered priority"


def test_tracked_interface_down_moves_the_vip(lab):
    # A veth pair inside A stands for an uplink A depends on; taking the far
    # end down takes the carrier away, as a pulled cable would.
    sh("ip", "-n", lab.ns["a"], "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")
    sh("ip", "-n", lab.ns["a"], "link", "set", "uplink0", "up")
    sh("ip", "-n", lab.ns["a"], "link", "set", "uplink1", "up")
    a = Node(lab, "a", tern_yaml("a", 150, extra_vrrp="    track_interfaces: [ uplink0 ]\n"))
    b = Node(lab, "b", tern_yaml("b", 100))
    wait_steady(lab, a, b)
    t0 = time.time()
    sh("ip", "-n", lab.ns["a"], "link", "set", "uplink1", "down")
    # RTM_NEWLINK, Fault, priority 0: the backup waits only Skew_Time.
    t_garp = garp_from(lab, "b", t0)
    assert t_garp and t_garp - t0 <= skew(100, 0.1) + SLACK, a.log()
    assert a.state() == "FAULT"
    sh("ip", "-n", lab.ns["a"], "link", "set", "uplink1", "up")
    assert wait_for(lambda: lab.has_vip("a") and not lab.has_vip("b"), 3.0), a.log()


FORGE = r"""
import socket, struct, sys
spec = sys.argv[1]
f = dict(kv.split("=") for kv in spec.split(","))
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
src = socket.inet_aton(f.get("src", "10.123.0.10"))
dst_text = f.get("dst", "224.0.0.18"); dst = socket.inet_aton(dst_text)
ver, vrid, prio = int(f.get("ver", 3)), int(f.get("vrid", 51)), int(f.get("prio", 254))
count, naddr = int(f.get("count", 1)), int(f.get("naddr", 1))
intv = int(f.get("intv", 10))
if ver == 2:  # RFC 3768: auth type 0, interval in seconds, 8 bytes of auth data
    msg = struct.pack("!BBBBBBH", 0x21, vrid, prio, count, 0, intv, 0)
    msg += socket.inet_aton("10.123.0.100") * naddr + bytes(8)
    c = csum(msg)
else:
    msg = struct.pack("!BBBBHH", ver << 4 | 1, vrid, prio, count, intv, 0)
    msg += socket.inet_aton("10.123.0.100") * naddr
    ph = src + dst + struct.pack("!BBH", 0, 112, len(msg))
    c = csum(ph + msg)
if f.get("csum") == "bad":
    c ^= 0x5a5a
msg = msg[:6] + struct.pack("!H", c) + msg[8:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0xc0, 20 + len(msg), 1, 0, int(f.get("ttl", 255)),
                 112, 0, src, dst)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.123.0.10"))
for _ in range(int(f.get("n", 3))):
    s.sendto(ip + msg, (dst_text, 0))
"""

# (spec, the counter it must raise). All but the interval one claim priority
# 254 and would take mastership from A (150) if accepted.
FORGED = [
    ("vrid=52", "bad_vrid"),
    ("ttl=64", "bad_ttl"),
    ("csum=bad", "bad_checksum"),
    ("ver=1", "bad_version"),
    ("count=2,naddr=1", "truncated"),
    # RFC 5798 section 6.4.2: a v3 router adopts another interval, so this
    # one is counted but not dropped; priority 1 leaves A master.
    ("intv=50,prio=1", "interval_mismatch"),
    ("prio=255,csum=bad", "bad_checksum"),
]


def forge(lab, spec):
    r = subprocess.run(["ip", "netns", "exec", lab.ns["c"], PY, "-c", FORGE, spec],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_forged_and_malformed_packets_change_nothing(lab):
    a, b = start_pair(lab)
    before_a, before_b = a.transitions(), b.transitions()
    for spec, counter in FORGED:
        forge(lab, spec)
    time.sleep(0.5)
    assert lab.has_vip("a") and not lab.has_vip("b")
    assert a.transitions() == before_a, a.log()
    assert b.transitions() == before_b, b.log()
    assert a.state() == "MASTER" and b.state() == "BACKUP"
    for node in (a, b):
        c = node.counters()
        for spec, counter in FORGED:
            assert c.get(counter, 0) >= 1, f"{node.n}: {counter} not counted for {spec}: {c}"
    # The forged packets really were on the wire with what they claimed.
    assert lab.sniffer.find(k="vrrp", ip=ADDR["c"], ttl=64)
    assert lab.sniffer.find(k="vrrp", ip=ADDR["c"], vrid=52)


def test_vrrpv2(lab):
    """RFC 3768: whole-second intervals, Skew_Time (256 - Priority) / 256 s,
    and an advertisement with another interval is dropped, even from a
    higher priority (RFC 3768 section 7.1)."""
    a, b = start_pair(lab, interval_ms=1000, version=2)
    forge(lab, "ver=2,intv=2,prio=254")
    forge(lab, "ver=3,prio=254")
    time.sleep(0.3)
    assert lab.has_vip("a") and not lab.has_vip("b")
    assert a.state() == "MASTER"
    for node in (a, b):
        c = node.counters()
        assert c.get("interval_mismatch", 0) >= 1 and c.get("bad_version", 0) >= 1, c
    assert lab.sniffer.find(k="vrrp", mac=MAC["a"], ver=2)
    t_term = time.time()
    a.kill(signal.SIGTERM)
    t_garp = garp_from(lab, "b", t_term)
    assert t_garp and t_garp - t_term <= (256 - 100) / 256 + SLACK, b.log()


def test_reload(lab):
    a, b = start_pair(lab)
    before = a.transitions()
    a.kill(signal.SIGHUP)
    time.sleep(0.3)
    # An unchanged instance is left alone by a reload.
    assert a.transitions() == before and lab.has_vip("a")
    with open(a.conf, "w") as f:
        f.write(tern_yaml("a", 50))
    t0 = time.time()
    a.kill(signal.SIGHUP)
    assert wait_for(lambda: "by the reload" in a.log(), 1.0), a.log()
    # A changed instance restarts; a master hands over with priority 0.
    t_garp = garp_from(lab, "b", t0)
    assert t_garp and t_garp - t0 <= skew(100, 0.1) + SLACK + 0.1, a.log()
    assert wait_for(lambda: a.state() == "BACKUP", 1.0)
    wait_http(lab, "node-b")


def test_crash_handler_sends_priority_zero(lab):
    a = Node(lab, "a", tern_yaml("a", 150), env={"TERN_TEST_CRASH_AFTER_MS": "1500"})
    b = Node(lab, "b", tern_yaml("b", 100))
    wait_steady(lab, a, b, timeout=1.4)
    rc = a.wait_exit()
    assert rc == -signal.SIGABRT, f"exit {rc}\n{a.log()}"
    p0 = lab.sniffer.first(after=a.started, k="vrrp", mac=MAC["a"], prio=0)
    assert p0, "the fatal-signal handler sent no priority 0:\n" + a.log()
    t_garp = garp_from(lab, "b", p0["t"])
    assert t_garp
    # Skew_Time (61 ms), not Master_Down_Interval (361 ms).
    assert t_garp - p0["t"] <= skew(100, 0.1) + SLACK
    last = [e["t"] for e in lab.sniffer.find(k="vrrp", mac=MAC["a"]) if e["prio"] == 150]
    assert t_garp - max(last) < mdi(100, 0.1) - 0.1
    # The handler removed the VIP too: no stale address answers ARP on A.
    assert wait_for(lambda: not lab.has_vip("a"), 1.0)
    wait_http(lab, "node-b")


def test_20ms_adverts(lab):
    a, b = start_pair(lab, interval_ms=20)
    random_phase(0.02)
    t_kill = time.time()
    a.kill(signal.SIGKILL)
    t_garp = garp_from(lab, "b", t_kill)
    assert t_garp
    assert t_garp - t_kill <= mdi(100, 0.02) + SLACK, f"took {(t_garp - t_kill) * 1000:.1f} ms"
    wait_http(lab, "node-b")
    # And back with a graceful stop of B, A restarted first.
    a.start()
    assert wait_for(lambda: lab.has_vip("a") and not lab.has_vip("b"), 3.0), a.log()
    t_term = time.time()
    a.kill(signal.SIGTERM)
    t_garp = garp_from(lab, "b", t_term)
    assert t_garp and t_garp - t_term <= skew(100, 0.02) + SLACK


def test_vip_removed_by_hand_is_restored(lab):
    """`ip addr del` of the VIP on the master: it goes back at once (netlink
    RTM_DELADDR), announced, logged and counted; nothing else changes."""
    a, b = start_pair(lab)
    wait_http(lab, "node-a")
    t0 = time.time()
    sh("ip", "-n", lab.ns["a"], "addr", "del", VIP + "/24", "dev", "eth0")
    assert wait_for(lambda: lab.has_vip("a"), 1.0), a.log()
    assert garp_from(lab, "a", t0, timeout=1.0), "no gratuitous ARP after the restore"
    assert "10.123.0.100/24 was removed from eth0 by someone else while master: restored" \
        in a.log()
    assert a.counters()["vips_restored"] == 1
    assert a.state() == "MASTER" and b.state() == "BACKUP" and not lab.has_vip("b")
    assert b.counters()["vips_restored"] == 0
    # And in /metrics, which Prometheus's own checker accepts.
    m = a.metrics()
    assert 'tern_vrrp_state{instance="vi_web",state="MASTER"} 1' in m, m
    assert 'tern_vrrp_state{instance="vi_web",state="BACKUP"} 0' in m
    assert 'tern_vrrp_vips_restored_total{instance="vi_web"} 1' in m
    assert 'tern_vrrp_priority{instance="vi_web"} 150' in m
    assert 'tern_vrrp_state{instance="vi_web",state="BACKUP"} 1' in b.metrics()
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "metrics"], input=m, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    wait_http(lab, "node-a")
    # Our own removals (leaving master) are not "restored": a graceful stop
    # hands over and A's address stays gone.
    a.kill(signal.SIGTERM)
    a.wait_exit()
    assert not lab.has_vip("a")
    assert wait_for(lambda: lab.has_vip("b"), 1.0)


def _sched_policy(pid):
    """The scheduling policy of every thread of pid, by thread name."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # Fields 40 (rt_priority) and 41 (policy), counted from 1 with pid
        # and comm as 1 and 2: index 37 and 38 after the ")".
        out[int(tid)] = (int(fields[37]), int(fields[38]))
    return out


def test_control_thread_runs_realtime(lab):
    """global.vrrp_rt_priority (default 10): the control thread (the main
    one) is SCHED_FIFO, the workers are not; 0 turns it off."""
    a = Node(lab, "a", tern_yaml("a", 150))
    assert wait_for(lambda: lab.has_vip("a"), 5.0), a.log()
    pid = a.proc.pid
    pol = _sched_policy(pid)
    assert pol[pid] == (10, 1), pol  # SCHED_FIFO is 1
    others = [p for tid, p in pol.items() if tid != pid]
    assert others and all(p == (0, 0) for p in others), pol
    assert a.api()["rt_priority"] == 10
    a.kill(signal.SIGTERM)
    a.wait_exit()
    off = tern_yaml("a", 150).replace("global:\n", "global:\n  vrrp_rt_priority: 0\n")
    b = Node(lab, "b", off)
    assert wait_for(lambda: lab.has_vip("b"), 5.0), b.log()
    pol = _sched_policy(b.proc.pid)
    assert all(p == (0, 0) for p in pol.values()), pol
    b.kill(signal.SIGTERM)
    b.wait_exit()
    # As an ordinary user (global.user): set while still root, kept after
    # the switch; the workers, started after it, are ordinary.
    as_user = tern_yaml("a", 150).replace("global:\n", "global:\n  user: nobody\n")
    a2 = Node(lab, "c", as_user)
    assert wait_for(lambda: lab.has_vip("c"), 5.0), a2.log()
    pid = a2.proc.pid
    with open(f"/proc/{pid}/status") as f:
        assert re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1) != "0"
    pol = _sched_policy(pid)
    assert pol[pid] == (10, 1), a2.log()
    assert all(p == (0, 0) for tid, p in pol.items() if tid != pid), pol
    assert "cannot run the control thread" not in a2.log()


VIP6_LL = "fe80::7b:100"
VIP6 = "fd00:7b::100"
ADDR6 = {"a": "fd00:7b::1", "b": "fd00:7b::2", "c": "fd00:7b::10"}


# The nodes' link-local addresses (EUI-64 of their MACs).
LL = {"a": "fe80::7b:ff:fe00:1", "b": "fe80::7b:ff:fe00:2"}


def tern_yaml6(prio, peers=None):
    """tern_yaml with an IPv6 listener and IPv6 virtual IPs."""
    y = tern_yaml("a", prio, peers=peers)
    y = y.replace(f"bind: 0.0.0.0:{HTTP_PORT}", f'bind: "[::]:{HTTP_PORT}"')
    return y.replace(f"virtual_ips: [ {VIP}/24 ]", f"virtual_ips: [ {VIP6_LL}/64, {VIP6}/64 ]")


def has_vip6(lab, n):
    out = sh("ip", "-n", lab.ns[n], "-6", "-o", "addr", "show", "dev", "eth0", check=False)
    return f" {VIP6}/64" in out and f" {VIP6_LL}/64" in out


def test_ipv6_vips(lab):
    """VRRPv3 over IPv6: adverts to ff02::12 from the link-local address with
    hop limit 255, unsolicited NAs for every VIP on becoming master, kill -9
    failover within Master_Down_Interval, HTTP on the IPv6 VIP."""
    for n in ("a", "b", "c"):
        sh("ip", "-n", lab.ns[n], "addr", "add", ADDR6[n] + "/64", "dev", "eth0", "nodad")

    a = Node(lab, "a", tern_yaml6(150))
    b = Node(lab, "b", tern_yaml6(100))
    assert wait_for(lambda: has_vip6(lab, "a") and not has_vip6(lab, "b")
                    and b.state() == "BACKUP", 5.0), a.log() + b.log()
    adv = lab.sniffer.first(k="vrrp6", mac=MAC["a"], timeout=1.0)
    assert adv and adv["ttl"] == 255 and adv["ver"] == 3 and adv["prio"] == 150, adv
    assert adv["ip"].startswith("fe80:"), adv
    nas = {e["ip"] for e in lab.sniffer.find(k="na", mac=MAC["a"])}
    assert {VIP6, VIP6_LL} <= nas, nas
    # B hears A's adverts: no drops for checksum or anything else.
    assert b.counters()["adverts_received"] > 0
    assert b.counters()["bad_checksum"] == 0

    def curl6():
        r = subprocess.run(["ip", "netns", "exec", lab.ns["c"], "curl", "-s", "-m", "0.5",
                            f"http://[{VIP6}]:{HTTP_PORT}/"], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    assert wait_for(lambda: curl6() == "node-a", 3.0)
    random_phase(0.1)
    t_kill = time.time()
    a.kill(signal.SIGKILL)
    na = lab.sniffer.first(after=t_kill, timeout=3.0, k="na", mac=MAC["b"], ip=VIP6)
    assert na, "B never announced the VIP:\n" + b.log()
    assert na["hl"] == 255
    assert na["t"] - t_kill <= mdi(100, 0.1) + SLACK, f"took {(na['t'] - t_kill) * 1000:.1f} ms"
    assert has_vip6(lab, "b")
    # A died with its addresses: a rebooted host would not have them.
    sh("ip", "-n", lab.ns["a"], "addr", "del", VIP6 + "/64", "dev", "eth0", check=False)
    assert wait_for(lambda: curl6() == "node-b", 3.0)
    # A VIP removed by hand on the master comes back, IPv6 too.
    sh("ip", "-n", lab.ns["b"], "addr", "del", VIP6 + "/64", "dev", "eth0")
    assert wait_for(lambda: has_vip6(lab, "b"), 1.0), b.log()
    # Graceful stop: B leaves nothing behind.
    b.kill(signal.SIGTERM)
    b.wait_exit()
    assert not has_vip6(lab, "b")
    assert not re.search(r"\[(error|warn)\] (?!vrrp vi_web: fe80|vrrp vi_web: fd00)", b.log()), \
        b.log()


def test_ipv6_unicast_peers(lab):
    """IPv6 unicast: each node names the other by its link-local address."""
    a = Node(lab, "a", tern_yaml6(150, peers=[LL["b"]]))
    b = Node(lab, "b", tern_yaml6(100, peers=[LL["a"]]))
    assert wait_for(lambda: has_vip6(lab, "a") and not has_vip6(lab, "b")
                    and b.state() == "BACKUP", 5.0), a.log() + b.log()
    assert b.counters()["adverts_received"] > 0 and b.counters()["bad_source"] == 0
    t_term = time.time()
    a.kill(signal.SIGTERM)
    na = lab.sniffer.first(after=t_term, timeout=3.0, k="na", mac=MAC["b"], ip=VIP6)
    assert na and na["t"] - t_term <= skew(100, 0.1) + SLACK, b.log()


def test_unicast_peers(lab):
    a = Node(lab, "a", tern_yaml("a", 150, peers=[ADDR["b"]]))
    b = Node(lab, "b", tern_yaml("b", 100, peers=[ADDR["a"]]))
    wait_steady(lab, a, b)
    # A packet from someone not listed is dropped as a foreign source.
    forge(lab, "prio=254,dst=" + ADDR["a"])
    time.sleep(0.3)
    assert lab.has_vip("a") and not lab.has_vip("b")
    assert a.counters().get("bad_source", 0) >= 1
    t_kill = time.time()
    a.kill(signal.SIGKILL)
    assert wait_for(lambda: lab.has_vip("b"), 2.0)
    t_garp = garp_from(lab, "b", t_kill)
    assert t_garp and t_garp - t_kill <= mdi(100, 0.1) + SLACK


def test_notify_script(lab):
    out = os.path.join(lab.dir, "notify.out")
    script = os.path.join(lab.dir, "notify.sh")
    with open(script, "w") as f:
        f.write(f"#!/bin/sh\necho \"$1 $2 $3\" >> {out}\n")
    os.chmod(script, 0o755)
    extra = f"    notify: {script}\n"
    a = Node(lab, "a", tern_yaml("a", 150, extra_vrrp=extra))
    b = Node(lab, "b", tern_yaml("b", 100))
    wait_steady(lab, a, b)
    a.kill(signal.SIGTERM)
    a.wait_exit()
    lines = []

    def seen():
        lines[:] = open(out).read().split("\n") if os.path.exists(out) else []
        return "vi_web BACKUP MASTER" in lines

    assert wait_for(seen, 2.0), lines
    assert lines[0] == "vi_web INIT BACKUP"


# ---- keepalived in the same VRID ----

KEEPALIVED = shutil.which("keepalived") or (
    "/usr/sbin/keepalived" if os.path.exists("/usr/sbin/keepalived") else None)


class Keepalived:
    """Debian's keepalived in namespace n with the same VRID, version 3 and
    interval (its default is VRRPv2 at 1 s)."""

    def __init__(self, lab, n, prio, interval=0.1, vips=(f"{VIP}/24",)):
        self.lab, self.n, self.prio, self.interval = lab, n, prio, interval
        vip_lines = "\n".join(f"        {v} dev eth0" for v in vips)
        self.conf = os.path.join(lab.dir, f"ka-{n}.conf")
        with open(self.conf, "w") as f:
            f.write(f"""global_defs {{
    router_id tern_test_{n}
}}
vrrp_instance vi_web {{
    state BACKUP
    interface eth0
    virtual_router_id {VRID}
    priority {prio}
    advert_int {interval}
    version 3
    virtual_ipaddress {{
{vip_lines}
    }}
}}
""")
        self.log_path = os.path.join(lab.dir, f"ka-{n}.log")
        self.start()

    def start(self):
        self.pid = os.path.join(self.lab.dir, f"ka-{self.n}.pid")
        self.vpid = os.path.join(self.lab.dir, f"ka-{self.n}-vrrp.pid")
        for p in (self.pid, self.vpid):
            if os.path.exists(p):
                os.unlink(p)
        self.logf = open(self.log_path, "a")
        self.proc = self.lab.popen(self.n, [KEEPALIVED, "-n", "-l", "-D", "-G", "-P", "-f",
                                            self.conf, "-p", self.pid, "-r", self.vpid],
                                   stdout=self.logf, stderr=subprocess.STDOUT)
        assert wait_for(lambda: os.path.exists(self.vpid) and os.path.getsize(self.vpid) > 0,
                        5.0), self.log()
        self.child = int(open(self.vpid).read())
        self.lab.stoppers.append(self.kill9)

    def kill9(self):
        for pid in (self.child, self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def term(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def state(self):
        s = re.findall(r"Entering (\w+) STATE", self.log())
        return s[-1] if s else "INIT"


def add_keepalived_host(lab):
    lab.add_host("k")


@pytest.mark.skipif(KEEPALIVED is None, reason="keepalived not installed (scripts/deps.sh test)")
def test_keepalived_backup_of_tern(lab):
    add_keepalived_host(lab)
    a = Node(lab, "a", tern_yaml("a", 150))
    k = Keepalived(lab, "k", 100)
    assert wait_for(lambda: lab.has_vip("a") and k.state() == "BACKUP", 5.0), a.log() + k.log()
    assert not lab.has_vip("k")
    time.sleep(0.5)
    assert lab.has_vip("a") and not lab.has_vip("k"), k.log()
    # tern crashes: keepalived takes over after its Master_Down_Interval.
    random_phase(0.1)
    t_kill = time.time()
    a.kill(signal.SIGKILL)
    a.wait_exit()
    t_garp = garp_from(lab, "k", t_kill)
    assert t_garp and t_garp - t_kill <= mdi(100, 0.1) + SLACK, k.log()
    # tern comes back with the higher priority and preempts keepalived.
    a.start()
    assert wait_for(lambda: lab.has_vip("a") and not lab.has_vip("k"), 3.0), a.log() + k.log()
    wait_http(lab, "node-a")
    # tern stops gracefully: keepalived takes over after Skew_Time.
    t_term = time.time()
    a.kill(signal.SIGTERM)
    t_garp = garp_from(lab, "k", t_term)
    assert t_garp and t_garp - t_term <= skew(100, 0.1) + SLACK, k.log()
    # keepalived accepted tern's packets: no checksum or version complaint.
    assert "Invalid" not in k.log() and "bogus" not in k.log(), k.log()


@pytest.mark.skipif(KEEPALIVED is None, reason="keepalived not installed (scripts/deps.sh test)")
def test_tern_backup_of_keepalived(lab):
    add_keepalived_host(lab)
    k = Keepalived(lab, "k", 150)
    assert wait_for(lambda: lab.has_vip("k"), 5.0), k.log()
    b = Node(lab, "b", tern_yaml("b", 100))
    assert wait_for(lambda: b.state() == "BACKUP", 3.0)
    time.sleep(0.5)
    assert lab.has_vip("k") and not lab.has_vip("b"), b.log()
    assert b.state() == "BACKUP"
    # keepalived crashes (child and parent, as a host crash would).
    random_phase(0.1)
    t_kill = time.time()
    k.kill9()
    t_garp = garp_from(lab, "b", t_kill)
    assert t_garp and t_garp - t_kill <= mdi(100, 0.1) + SLACK, b.log()
    # A crashed host answers no ARP; killed keepalived leaves its VIP
    # configured (it removes it at its next start), which would.
    sh("ip", "-n", lab.ns["k"], "addr", "del", VIP + "/24", "dev", "eth0", check=False)
    wait_http(lab, "node-b")
    # keepalived returns and preempts.
    k.start()
    assert wait_for(lambda: lab.has_vip("k") and not lab.has_vip("b"), 3.0), b.log() + k.log()
    assert wait_for(lambda: b.state() == "BACKUP", 1.0)
    # keepalived stops gracefully: priority 0, tern takes over in Skew_Time.
    t_term = time.time()
    k.term()
    t_garp = garp_from(lab, "b", t_term)
    assert t_garp and t_garp - t_term <= skew(100, 0.1) + SLACK, b.log()
    c = b.counters()
    assert not any(c.get(x, 0) for x in ("bad_checksum", "bad_version", "bad_ttl")), c


@pytest.mark.skipif(KEEPALIVED is None, reason="keepalived not installed (scripts/deps.sh test)")
def test_keepalived_ipv6(lab):
    """keepalived and tern in one IPv6 VRID: they agree on the master both
    ways, checksums (IPv6 pseudo-header) accepted on both sides."""
    add_keepalived_host(lab)
    a = Node(lab, "a", tern_yaml6(150))
    k = Keepalived(lab, "k", 100, vips=(f"{VIP6_LL}/64", f"{VIP6}/64"))
    assert wait_for(lambda: has_vip6(lab, "a") and k.state() == "BACKUP", 5.0), a.log() + k.log()
    time.sleep(0.5)
    assert has_vip6(lab, "a") and not has_vip6(lab, "k"), k.log()
    t_kill = time.time()
    a.kill(signal.SIGKILL)
    a.wait_exit()
    assert wait_for(lambda: has_vip6(lab, "k"), 2.0), k.log()
    na = lab.sniffer.first(after=t_kill, timeout=1.0, k="na", mac=MAC["k"], ip=VIP6)
    assert na and na["t"] - t_kill <= mdi(100, 0.1) + SLACK, k.log()
    # tern comes back (removing the VIPs its crash left), hears keepalived as
    # a backup, then preempts it.
    a.start()
    assert wait_for(lambda: has_vip6(lab, "a") and not has_vip6(lab, "k")
                    and k.state() == "BACKUP", 5.0), a.log() + k.log()
    assert "fd00:7b::100/64 from eth0, left behind by an earlier run" in a.log()
    c = a.counters()
    assert c["adverts_received"] > 0 and c["bad_checksum"] == 0, c
    assert not re.search(r"(?i)checksum|bogus|invalid", k.log()), k.log()
