"""Real QEMU VMs through libvirt for the end-to-end tests of watch.so and
scale.so (recipe: ../shared/notes/real-vm.md).

The module-scoped fixture `realvm` gives a RealVM lab:

- virtlogd and libvirtd started by hand (no systemd), pid files and logs in a
  temporary folder; an already running libvirtd is used as it is and left
  running;
- an isolated libvirt network (no <forward>: nothing leaves the host; dnsmasq
  with no-ping and 2-minute leases) on a 192.168.X.0/24 no interface, route
  or libvirt network of this host uses (X from 150);
- a dir storage pool in the temporary folder holding the template's qcow2
  disk (tests/vm/build-guest.sh builds it with the kernel and initramfs);
- the template domain, type='qemu' (TCG: this host's /dev/kvm cannot boot
  Debian's kernel), never started itself: clones are overlays on its disk.

Teardown removes everything by name and PID: the domains of the lab (the
template, clones made here and the scale plugin's <pool>-tern-<n>), their
volumes, the pool, the network, the daemons it started with the LIBVIRT_*
iptables chains and their leftover files. Traffic goes only to the guests on
the lab's bridge.

The fixture skips (with the reason) when libvirtd or QEMU cannot run here,
and when the binary under test is the sanitizer build: real VMs are tested
against the release binary only (the time budget of `make test`).
"""
import fcntl
import grp
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from conftest import ROOT, SANITIZED

URI = "qemu:///system"
TERN_NS = "https://tern.dev/xmlns/scale/1"
LAB = "ternvm"  # prefix of every libvirt object the lab makes
LOCK = "/run/lock/tern-realvm.lock" if os.path.isdir("/run/lock") else "/tmp/tern-realvm.lock"


def _run(cmd, timeout=60, check=True, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def virsh(*args, check=True, timeout=60):
    t = time.monotonic()
    out = _run(["virsh", "-q", "-c", URI, *args], timeout=timeout, check=check).stdout
    if os.environ.get("REALVM_DEBUG"):
        print(f"virsh {' '.join(args)}: {time.monotonic() - t:.2f} s")
    return out


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is dead (PID 1 here does not reap double-forked daemons)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def http_get(host, path="/", port=8080, timeout=2.0):
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as r:
        return r.status, r.read().decode("utf-8", "replace")


def host_of(body):
    """The guest's name from its index page ("host=NAME uuid=...")."""
    m = re.search(r"host=(\S+)", body)
    return m.group(1) if m else None


def _used_subnets():
    used = set()
    out = _run(["ip", "-4", "-o", "addr"], check=False).stdout + _run(
        ["ip", "-4", "route"], check=False).stdout
    for m in re.finditer(r"(\d+\.\d+\.\d+\.\d+)(/\d+)?", out):
        try:
            used.add(ipaddress.ip_network(m.group(1) + (m.group(2) or "/32"), strict=False))
        except ValueError:
            pass
    for net in virsh("net-list", "--all", "--name", check=False).split():
        x = virsh("net-dumpxml", net, check=False)
        m = re.search(r"<ip address='([\d.]+)' netmask='([\d.]+)'", x)
        if m:
            used.add(ipaddress.ip_network(f"{m.group(1)}/{m.group(2)}", strict=False))
    return used


# Runs as `python3 -c REAPER TMPDIR DAEMON...`: becomes a child subreaper,
# starts each daemon (virtlogd, libvirtd: daemonized, pid files and logs in
# TMPDIR), prints "ready", then reaps every orphan of that subtree until
# SIGTERM.
REAPER = r"""
import ctypes, os, signal, subprocess, sys, time
tmp = sys.argv[1]
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    print("prctl failed", flush=True)
    sys.exit(1)
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
for name in sys.argv[2:]:
    env = dict(os.environ, LIBVIRT_LOG_OUTPUTS=f"3:file:{tmp}/{name}.log")
    p = subprocess.run([f"/usr/sbin/{name}", "-d", "-p", f"{tmp}/{name}.pid"], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"{name}: exit {p.returncode}: {p.stderr.strip()}", flush=True)
        sys.exit(1)
print("ready", flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
"""


class RealVM:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="tern-realvm-")
        os.chmod(self.tmp, 0o755)  # libvirt-qemu reads the kernel and disks
        self.id = f"{os.getpid() % 100000}"
        self.net = f"{LAB}-net-{self.id}"
        self.bridge = f"ternbr{os.getpid() % 100000}"
        self.storage = f"{LAB}-pool-{self.id}"
        self.template = f"{LAB}-master-{self.id}"
        self.pool_dir = os.path.join(self.tmp, "pool")
        self.started = []  # (name, pidfile) of daemons we started
        self.reapers = []  # the REAPER processes, each under its daemons
        self.lockf = None
        self.kvm_mode = None  # /dev/kvm's (mode, uid, gid) to put back
        self.domains = set()  # names made here (plus group prefixes)
        self.prefixes = [f"{LAB}-"]
        self.guest = None
        self.subnet = None
        self.timings = {}

    # ---- setup ----

    def _lock(self, timeout=300):
        """One lab at a time on this host (several `make test` may run at
        once): the sweep and the teardown would take the other's VMs and
        daemons away."""
        self.lockf = open(LOCK, "w")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.lockf.close()
                    self.lockf = None
                    pytest.skip(f"real VMs: another lab holds {LOCK} for over {timeout} s")
                time.sleep(1)

    def setup(self):
        t0 = time.monotonic()
        for tool in ("virsh", "/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "qemu-system-x86_64"):
            if shutil.which(tool) is None:
                pytest.skip(f"real VMs: {tool} is not installed (scripts/deps.sh test)")
        if os.geteuid() != 0:
            pytest.skip("real VMs: qemu:///system and bridges need root")
        self._lock()
        self.timings["lock"] = time.monotonic() - t0
        p = _run([os.path.join(ROOT, "tests", "vm", "build-guest.sh")], timeout=300, check=False)
        assert p.returncode == 0, f"tests/vm/build-guest.sh failed:\n{p.stderr}"
        self.guest = p.stdout.strip().splitlines()[-1]
        self.timings["guest"] = time.monotonic() - t0
        self._daemons()
        self.timings["daemons"] = time.monotonic() - t0
        caps = virsh("capabilities", check=False)
        if "<domain type='qemu'" not in caps and '<domain type="qemu"' not in caps:
            pytest.skip("real VMs: libvirt lists no QEMU (TCG) domain type here")
        self._sweep()
        self._network()
        self._pool()
        self._template()
        self.timings["setup"] = time.monotonic() - t0

    def _daemons(self):
        if os.path.exists("/run/libvirt/libvirt-sock") and _run(
                ["virsh", "-c", URI, "version"], check=False, timeout=30).returncode == 0:
            return  # a running libvirtd: use it, leave it running
        # libvirt takes QEMU's capabilities from its cache only while KVM
        # looks as usable as when they were probed: QEMU (as root) finds
        # /dev/kvm, so libvirt-qemu must be able to open it too, as Debian's
        # udev rule makes it (root:kvm 0660); otherwise every define probes
        # QEMU again (8 s). The device's mode is put back at teardown.
        try:
            st = os.stat("/dev/kvm")
            kvm_gid = grp.getgrnam("kvm").gr_gid
            if (st.st_mode & 0o060) != 0o060 or st.st_gid != kvm_gid:
                self.kvm_mode = (st.st_mode & 0o7777, st.st_uid, st.st_gid)
                os.chown("/dev/kvm", st.st_uid, kvm_gid)
                os.chmod("/dev/kvm", (st.st_mode & 0o7777) | 0o060)
        except (OSError, KeyError):
            pass
        # The daemons start under a reaper (REAPER): double-forked daemons and
        # the QEMU processes libvirtd probes and kills would otherwise be
        # orphans of PID 1, which does not reap them here, and libvirtd
        # waits ~15 s for each such zombie to go away (every define took 50 s).
        line = self._reaper("virtlogd", "libvirtd")
        for name in ("virtlogd", "libvirtd"):
            self.started.append((name, os.path.join(self.tmp, f"{name}.pid")))
        if line != "ready":
            pytest.skip(f"real VMs: the libvirt daemons do not start: {line}")
        self._wait_libvirtd()

    def _reaper(self, *daemons):
        r = subprocess.Popen([sys.executable, "-c", REAPER, self.tmp, *daemons],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
        self.reapers.append(r)
        return r.stdout.readline().strip()

    def _wait_libvirtd(self):
        deadline = time.monotonic() + 60  # the first start probes QEMU (~8 s)
        while time.monotonic() < deadline:
            try:  # blocks while libvirtd probes QEMU
                if _run(["virsh", "-c", URI, "version"], check=False, timeout=30).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            pid = _read_pid(os.path.join(self.tmp, "libvirtd.pid"))
            if pid is not None and not _pid_alive(pid):
                break
            time.sleep(0.2)
        log = ""
        try:
            with open(os.path.join(self.tmp, "libvirtd.log")) as f:
                log = f.read()[-800:]
        except OSError:
            pass
        pytest.skip(f"real VMs: libvirtd does not answer on {URI}: {log}")

    def restart_libvirtd(self, down=2.0):
        """Stops libvirtd (SIGTERM; the guests keep running), waits `down`
        seconds, starts it again: it finds its running domains."""
        assert self.started, "libvirtd was not started by the lab"
        pid = _read_pid(os.path.join(self.tmp, "libvirtd.pid"))
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pid_alive(pid), "libvirtd did not stop"
        time.sleep(down)
        assert self._reaper("libvirtd") == "ready"
        self._wait_libvirtd()

    def _sweep(self):
        """Leftovers of an earlier run that could not clean up: the lab's
        domains (by prefix) and networks and pools named like ours."""
        for name in virsh("list", "--all", "--name", check=False).split():
            if name.startswith(f"{LAB}-") or re.match(r"^rvm\w*-tern-\d+$", name):
                self._remove_domain(name)
        for net in virsh("net-list", "--all", "--name", check=False).split():
            if net.startswith(f"{LAB}-net-"):
                virsh("net-destroy", net, check=False)
                virsh("net-undefine", net, check=False)
        for pool in virsh("pool-list", "--all", "--name", check=False).split():
            if pool.startswith(f"{LAB}-pool-"):
                for vol in self.volumes(pool):
                    virsh("vol-delete", "--pool", pool, vol, check=False)
                virsh("pool-destroy", pool, check=False)
                virsh("pool-undefine", pool, check=False)

    def _network(self):
        used = _used_subnets()
        for x in range(150, 200):
            cand = ipaddress.ip_network(f"192.168.{x}.0/24")
            if not any(cand.overlaps(u) for u in used):
                self.subnet = cand
                break
        assert self.subnet is not None, "no free 192.168.X.0/24 for the lab's network"
        h = list(self.subnet.hosts())
        xml = f"""<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>{self.net}</name>
  <bridge name='{self.bridge}' stp='off' delay='0'/>
  <ip address='{h[0]}' netmask='255.255.255.0'>
    <dhcp><range start='{h[9]}' end='{h[249]}'><lease expiry='2' unit='minutes'/></range></dhcp>
  </ip>
  <dnsmasq:options><dnsmasq:option value='no-ping'/></dnsmasq:options>
</network>
"""
        path = os.path.join(self.tmp, "net.xml")
        with open(path, "w") as f:
            f.write(xml)
        virsh("net-define", path)
        p = _run(["virsh", "-c", URI, "net-start", self.net], check=False)
        if p.returncode != 0:
            pytest.skip(f"real VMs: libvirt cannot start a bridged network here: {p.stderr.strip()}")
        self.gateway = str(h[0])

    def _pool(self):
        os.makedirs(self.pool_dir)
        os.chmod(self.pool_dir, 0o755)
        path = os.path.join(self.tmp, "pool.xml")
        with open(path, "w") as f:
            f.write(f"<pool type='dir'><name>{self.storage}</name>"
                    f"<target><path>{self.pool_dir}</path></target></pool>")
        virsh("pool-define", path)
        virsh("pool-start", self.storage)
        disk = os.path.join(self.guest, "disk.qcow2")
        size = os.path.getsize(disk)
        virsh("vol-create-as", self.storage, "master.qcow2", str(size), "--format", "qcow2")
        virsh("vol-upload", "--pool", self.storage, "master.qcow2", disk)

    def _template(self):
        # Kernel and initramfs copied next to the pool: libvirt-qemu must read
        # them, and the cache folder stays root's.
        for f in ("vmlinux", "initrd.gz"):
            shutil.copy(os.path.join(self.guest, f), os.path.join(self.tmp, f))
            os.chmod(os.path.join(self.tmp, f), 0o644)
        xml = f"""<domain type='qemu'>
  <name>{self.template}</name>
  <metadata><tern:scale xmlns:tern='{TERN_NS}' port='8080'/></metadata>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{self.tmp}/vmlinux</kernel>
    <initrd>{self.tmp}/initrd.gz</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <features><acpi/><tcg><tb-cache unit='MiB'>64</tb-cache></tcg></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source pool='{self.storage}' volume='master.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='{self.net}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <serial type='pty'/><console type='pty'/>
    <controller type='usb' model='none'/>
    <video><model type='none'/></video>
    <memballoon model='virtio'><stats period='1'/></memballoon>
  </devices>
</domain>
"""
        path = os.path.join(self.tmp, "template.xml")
        with open(path, "w") as f:
            f.write(xml)
        virsh("define", path)
        self.domains.add(self.template)

    # ---- for the tests ----

    def watch_group(self, prefix):
        """Domains named prefix... (a scale group's clones) are the lab's:
        teardown removes them."""
        self.prefixes.append(prefix)

    def clone(self, name):
        """A linked clone of the template, started: what the scale
        plugin's libvirt provider does, with virsh."""
        self.domains.add(name)
        base = virsh("vol-path", "--pool", self.storage, "master.qcow2").strip()
        vol = os.path.join(self.tmp, f"{name}-vol.xml")
        with open(vol, "w") as f:
            f.write(f"<volume><name>{name}.qcow2</name><capacity unit='MiB'>16</capacity>"
                    "<target><format type='qcow2'/></target>"
                    f"<backingStore><path>{base}</path><format type='qcow2'/></backingStore></volume>")
        virsh("vol-create", self.storage, vol)
        x = virsh("dumpxml", "--inactive", self.template)
        x = re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", x, count=1)
        x = re.sub(r"\s*<uuid>[^<]*</uuid>", "", x)
        x = re.sub(r"\s*<mac address=[^>]*/>", "", x)
        x = x.replace("volume='master.qcow2'", f"volume='{name}.qcow2'")
        path = os.path.join(self.tmp, f"{name}.xml")
        with open(path, "w") as f:
            f.write(x)
        virsh("define", path)
        virsh("start", name)

    def broken_template(self, name, kernel="/nonexistent/vmlinux"):
        """A copy of the template whose kernel does not exist: its clones
        are defined and fail to start."""
        self.domains.add(name)
        x = virsh("dumpxml", "--inactive", self.template)
        x = re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", x, count=1)
        x = re.sub(r"\s*<uuid>[^<]*</uuid>", "", x)
        x = re.sub(r"\s*<mac address=[^>]*/>", "", x)
        x = re.sub(r"<kernel>[^<]*</kernel>", f"<kernel>{kernel}</kernel>", x)
        path = os.path.join(self.tmp, f"{name}.xml")
        with open(path, "w") as f:
            f.write(x)
        virsh("define", path)

    def destroy(self, name):
        self._remove_domain(name)
        virsh("vol-delete", "--pool", self.storage, f"{name}.qcow2", check=False)

    def address(self, name, timeout=60):
        """The clone's IPv4 address from the DHCP leases."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = virsh("domifaddr", name, "--source", "lease", check=False)
            m = re.search(r"ipv4\s+([\d.]+)/", out)
            if m:
                return m.group(1)
            time.sleep(0.3)
        raise AssertionError(f"{name}: no DHCP lease within {timeout} s")

    def wait_http(self, ip, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return http_get(ip, "/", timeout=1)[1]
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"{ip}:8080 does not answer within {timeout} s")

    def uuid(self, name):
        return virsh("domuuid", name).strip()

    def running(self, prefix):
        return sorted(n for n in virsh("list", "--name", check=False).split() if n.startswith(prefix))

    def all_domains(self, prefix):
        return sorted(n for n in virsh("list", "--all", "--name", check=False).split()
                      if n.startswith(prefix))

    def volumes(self, pool=None):
        out = virsh("vol-list", pool or self.storage, check=False)  # "name path" lines
        return sorted(line.split()[0] for line in out.splitlines() if line.strip())

    def domstats(self, name):
        out = virsh("domstats", name, check=False)
        return dict(re.findall(r"^\s*([\w.\-]+)=(\S+)$", out, re.M))

    # ---- teardown ----

    def _remove_domain(self, name):
        virsh("destroy", name, check=False)
        virsh("undefine", name, "--managed-save", "--snapshots-metadata", check=False)
        try:
            os.unlink(f"/var/log/libvirt/qemu/{name}.log")
        except OSError:
            pass

    def teardown(self):
        errors = []
        try:
            names = set(self.domains)
            for n in virsh("list", "--all", "--name", check=False).split():
                if any(n.startswith(p) for p in self.prefixes):
                    names.add(n)
            for n in sorted(names - {self.template}):
                self._remove_domain(n)
            self._remove_domain(self.template)
            for vol in self.volumes():
                virsh("vol-delete", "--pool", self.storage, vol, check=False)
            virsh("pool-destroy", self.storage, check=False)
            virsh("pool-undefine", self.storage, check=False)
            virsh("net-destroy", self.net, check=False)
            virsh("net-undefine", self.net, check=False)
        except Exception as e:  # keep going: the daemons must stop
            errors.append(repr(e))
        for name, pidfile in reversed(self.started):
            pid = _read_pid(pidfile)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                continue
            deadline = time.monotonic() + 15
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        for r in self.reapers:
            r.terminate()
            try:
                r.wait(timeout=10)
            except subprocess.TimeoutExpired:
                r.kill()
                r.wait()
        if self.kvm_mode is not None:
            mode, uid, gid = self.kvm_mode
            try:
                os.chown("/dev/kvm", uid, gid)
                os.chmod("/dev/kvm", mode)
            except OSError as e:
                errors.append(repr(e))
        if self.started:
            self._iptables()
            shutil.rmtree("/run/libvirt", ignore_errors=True)
        # Leftover files: dnsmasq's of the network, QEMU's logs of the
        # domains (also those the scale plugin made and destroyed itself).
        leftovers = {"/var/lib/libvirt/dnsmasq": (self.net, self.bridge),
                     "/var/log/libvirt/qemu": tuple(self.prefixes) + tuple(self.domains)}
        for d, starts in leftovers.items():
            for f in os.listdir(d) if os.path.isdir(d) else []:
                if f.startswith(starts):
                    try:
                        os.unlink(os.path.join(d, f))
                    except OSError:
                        pass
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.lockf is not None:
            self.lockf.close()  # releases the lock
            self.lockf = None
        return errors

    @staticmethod
    def _iptables():
        """libvirt leaves its (empty) LIBVIRT_* chains behind when its
        networks stop: the jumps to them, then the chains."""
        for tool in ("iptables", "ip6tables"):
            if shutil.which(tool) is None:
                continue
            for table in ("filter", "nat", "mangle"):
                rules = _run([tool, "-w", "-t", table, "-S"], check=False).stdout.splitlines()
                for r in rules:
                    if r.startswith("-A ") and "-j LIBVIRT_" in r:
                        _run([tool, "-w", "-t", table, "-D", *r[3:].split()], check=False)
                for r in rules:
                    if r.startswith("-N LIBVIRT_"):
                        chain = r.split()[1]
                        _run([tool, "-w", "-t", table, "-F", chain], check=False)
                        _run([tool, "-w", "-t", table, "-X", chain], check=False)


@pytest.fixture(scope="module")
def realvm():
    if SANITIZED:
        pytest.skip("real VMs run against the release binary only (make test's time budget)")
    lab = RealVM()
    try:
        lab.setup()
        yield lab
    finally:
        errors = lab.teardown()
        print(f"\nrealvm: setup {json.dumps({k: round(v, 1) for k, v in lab.timings.items()})}")
        assert not errors, errors
