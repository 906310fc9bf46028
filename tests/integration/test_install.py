"""tern as a system daemon: what `meson install` puts where, the systemd unit,
the manual pages, readiness notifications (sd_notify) and the switch to
global.user after binding.

The install tests use the build tree under test (TERN_BUILD, set by
tests/run.sh) with `meson install --no-rebuild --destdir`, so they never
rebuild it; without TERN_BUILD they configure and build a throwaway tree. The
privilege tests need root (they skip otherwise) and read /proc/PID/status of
tern and of each of its threads.
"""
import json
import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT, TERN, Backend, free_port, raw_exchange, scaled, status_of, wait_port

CAP_NET_BIND_SERVICE, CAP_NET_ADMIN, CAP_NET_RAW = 10, 12, 13
VRRP_CAPS = (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)  # 0x3000


# ---------------------------------------------------------------- install


def meson_options(build):
    r = subprocess.run(["meson", "introspect", "--buildoptions", build], capture_output=True, text=True, check=True)
    return {o["name"]: o["value"] for o in json.loads(r.stdout)}


@pytest.fixture(scope="module")
def installed():
    """Installs into a temporary DESTDIR; yields (destdir, paths)."""
    build = os.environ.get("TERN_BUILD")
    own = None
    if not build or not os.path.isfile(os.path.join(build, "build.ninja")):
        own = tempfile.mkdtemp(prefix="tern-inst-build-")
        build = os.path.join(own, "b")
        subprocess.run(["meson", "setup", build, ROOT, "--prefix=/usr", "--sysconfdir=/etc"],
                       capture_output=True, check=True)
        r = subprocess.run(["ninja", "-C", build], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-3000:]
    dest = tempfile.mkdtemp(prefix="tern-destdir-")
    r = subprocess.run(["meson", "install", "--no-rebuild", "-C", build, "--destdir", dest],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    o = meson_options(build)
    prefix = o["prefix"]

    def under(d):  # meson's dirs are relative to the prefix unless absolute
        return d if os.path.isabs(d) else os.path.join(prefix, d)

    paths = {
        "tern": os.path.join(under(o["sbindir"]), "tern"),
        "tern.8": os.path.join(under(o["mandir"]), "man8", "tern.8"),
        "tern.yaml.5": os.path.join(under(o["mandir"]), "man5", "tern.yaml.5"),
        "example": os.path.join(under(o["sysconfdir"]), "tern", "tern.yaml.example"),
        "unit": os.path.join(prefix, "lib", "systemd", "system", "tern.service"),
        "sbindir": under(o["sbindir"]),
        "sysconfdir": under(o["sysconfdir"]),
        "mandir": under(o["mandir"]),
    }
    yield dest, paths
    shutil.rmtree(dest, ignore_errors=True)
    if own:
        shutil.rmtree(own, ignore_errors=True)


def inside(dest, path):
    return os.path.join(dest, path.lstrip("/"))


def test_install_puts_every_file_in_place(installed):
    dest, p = installed
    for key in ("tern", "tern.8", "tern.yaml.5", "example", "unit"):
        f = inside(dest, p[key])
        assert os.path.isfile(f), f"{key}: {p[key]} not installed; tree:\n" + "\n".join(
            os.path.join(d, n) for d, _, ns in os.walk(dest) for n in ns)
        assert os.path.getsize(f) > 0, f
    assert os.access(inside(dest, p["tern"]), os.X_OK)
    # The example is the one from conf/, and the installed binary accepts it.
    with open(os.path.join(ROOT, "conf", "tern.example.yaml")) as a, open(inside(dest, p["example"])) as b:
        assert a.read() == b.read()
    from conftest import checkable_example

    r = subprocess.run([inside(dest, p["tern"]), "-t", "-c",
                        checkable_example(inside(dest, p["example"]), dest)],
                       capture_output=True, text=True, timeout=scaled(20))
    assert r.returncode == 0, r.stderr


def read_unit(path):
    keys = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", "[")) and "=" in line:
                k, v = line.split("=", 1)
                keys.setdefault(k, []).append(v)
    return keys


def test_unit_contents(installed):
    dest, p = installed
    u = read_unit(inside(dest, p["unit"]))
    conf = os.path.join(p["sysconfdir"], "tern", "tern.yaml")
    tern = os.path.join(p["sbindir"], "tern")
    expect = {
        "Type": "notify",
        "ExecStartPre": f"{tern} -t -c {conf}",
        "ExecStart": f"{tern} -c {conf}",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "KillSignal": "SIGTERM",
        "TimeoutStopSec": "40",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "LimitNOFILE": "1048576",
        "ReadWritePaths": "/var/log/tern",
    }
    for k, v in expect.items():
        assert u.get(k) == [v], f"{k}: {u.get(k)} != {v}"
    net = {"CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert set(u["AmbientCapabilities"][0].split()) == net
    # Plus what switching to global.user takes, and nothing else.
    assert set(u["CapabilityBoundingSet"][0].split()) == net | {"CAP_SETUID", "CAP_SETGID"}


def test_unit_passes_systemd_analyze(installed, tmp_path):
    exe = shutil.which("systemd-analyze")
    if not exe:
        pytest.skip("systemd-analyze is not installed")
    dest, p = installed
    # The unit names installed paths, which exist only inside the DESTDIR:
    # check a copy that points there (--root would hide the host's own units
    # that tern.service depends on), with man looking in the DESTDIR for the
    # pages its Documentation= names.
    with open(inside(dest, p["unit"])) as f:
        text = f.read()
    text = text.replace(p["sbindir"] + "/tern", inside(dest, p["tern"]))
    unit = tmp_path / "tern.service"
    unit.write_text(text)
    env = dict(os.environ, MANPATH=inside(dest, p["mandir"]))
    r = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, env=env, timeout=60)
    out = r.stdout + r.stderr
    # In a container systemd-analyze may also complain about the host's own
    # units; only lines about tern.service count.
    mine = [l for l in out.splitlines() if "tern" in l]
    assert r.returncode == 0 and not mine, out


def render(page, tool):
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80")
    if tool == "groff":
        cmd = ["groff", "-man", "-Tutf8", "-ww", page]
    else:
        cmd = ["man", "--warnings", "-l", page]
    return subprocess.run(cmd, capture_output=True, env=env, timeout=60)


@pytest.mark.parametrize("tool", ["groff", "man"])
def test_man_pages_render_without_warnings(installed, tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed")
    dest, p = installed
    texts = {}
    for key in ("tern.8", "tern.yaml.5"):
        r = render(inside(dest, p[key]), tool)
        err = r.stderr.decode(errors="replace")
        assert r.returncode == 0 and not err.strip(), f"{key}: {err}"
        texts[key] = r.stdout.decode(errors="replace")
        # Placeholders filled in at build time.
        assert "@" not in re.sub(r"\S+@\S+\.\w+", "", texts[key]), key
    t8, t5 = texts["tern.8"], texts["tern.yaml.5"]
    plain8 = re.sub(".\b", "", t8)  # man may embolden by overstriking
    plain5 = re.sub(".\b", "", t5)
    for word in ("SIGHUP", "SIGTERM", "SIGINT", "SIGUSR1", "EXIT STATUS", "tern ctl", "drain", "weight", "TERN_TOKEN",
                 "listeners", "vrrp", "-T tokenfile", "global.user", "NOTIFY_SOCKET",
                 os.path.join(p["sysconfdir"], "tern", "tern.yaml")):
        assert word in plain8, word
    for word in ("${NAME}", "${NAME:-default}", "include:", "500ms", "32k", "[::]:port",
                 "listeners[].bind", "pools.<name>.servers[].weight", "vrrp[].advert_interval",
                 "global.workers", "tern --reference"):
        assert word in plain5, word


def test_yaml5_lists_every_key_of_the_reference(installed):
    dest, p = installed
    with open(inside(dest, p["tern.yaml.5"])) as f:
        page = f.read().replace("\\-", "-").replace("\\e", "\\")
    with open(os.path.join(ROOT, "conf", "REFERENCE.md")) as f:
        keys = re.findall(r"^\| `([^`]+)` \|", f.read(), re.M)
    assert len(keys) > 50
    missing = [k for k in keys if f".B {k}\n" not in page and "." in k]
    assert not missing, missing


# ---------------------------------------------------------------- sd_notify


def http_config(port, backend, extra=""):
    return (
        f"global:\n  workers: 2\n{extra}"
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, pool: web }}\n"
        f"pools:\n  web:\n    servers:\n      - {{ name: {backend.name}, address: {backend.address} }}\n"
    )


class Notify:
    """An AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"tern-test-notify-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.dir = tempfile.mkdtemp(prefix="tern-notify-")
            path = os.path.join(self.dir, "notify")
            self.sock.bind(path)
            self.env = path

    def recv(self, timeout=10.0):
        """Returns the next message as a dict, or None on timeout."""
        self.sock.settimeout(scaled(timeout))
        try:
            data = self.sock.recv(4096).decode()
        except socket.timeout:
            return None
        return dict(l.split("=", 1) for l in data.split("\n") if "=" in l)

    def close(self):
        self.sock.close()
        if hasattr(self, "dir"):
            shutil.rmtree(self.dir, ignore_errors=True)


def start_tern(tmp_path, text, env=None, user=None):
    conf = tmp_path / "tern.yaml"
    conf.write_text(text)
    errf = open(tmp_path / "stderr", "w")
    e = dict(os.environ)
    e.update(env or {})
    proc = subprocess.Popen([TERN, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=errf, env=e,
                            user=user)
    errf.close()
    return proc


def log_of(tmp_path):
    return (tmp_path / "stderr").read_text(errors="replace")


def stop(proc, tmp_path, sig=signal.SIGTERM):
    """Stops tern (sig None: it was already signalled) and returns its exit
    status and log."""
    if proc.poll() is None:
        if sig is not None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=scaled(15))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("tern did not stop:\n" + log_of(tmp_path))
    log = log_of(tmp_path)
    assert "Sanitizer" not in log and "runtime error" not in log, log
    return proc.returncode, log


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_ready_then_stopping(tmp_path, abstract):
    b = Backend("n1")
    n = Notify(abstract)
    port = free_port()
    proc = start_tern(tmp_path, http_config(port, b), env={"NOTIFY_SOCKET": n.env})
    try:
        msg = n.recv()
        assert msg is not None, "no notification within the timeout:\n" + log_of(tmp_path)
        assert msg.get("READY") == "1", msg
        assert msg.get("MAINPID") == str(proc.pid), msg
        # READY=1 means serving: the port accepts and a request goes through.
        assert listening(port), "READY=1 arrived before the port listened"
        assert status_of(raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 200
        assert n.recv(timeout=0.3) is None, "more than one message before stopping"
        proc.send_signal(signal.SIGTERM)
        msg = n.recv()
        assert msg == {"STOPPING": "1"}, msg
        rc, log = stop(proc, tmp_path, sig=None)
        assert rc == 0, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        n.close()
        b.stop()


def test_notify_stopping_on_sigint(tmp_path):
    b = Backend("n1")
    n = Notify()
    port = free_port()
    proc = start_tern(tmp_path, http_config(port, b), env={"NOTIFY_SOCKET": n.env})
    try:
        assert (n.recv() or {}).get("READY") == "1", log_of(tmp_path)
        proc.send_signal(signal.SIGINT)
        assert n.recv() == {"STOPPING": "1"}
        rc, log = stop(proc, tmp_path, sig=None)
        assert rc == 0, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        n.close()
        b.stop()


def test_notify_reload_brackets(tmp_path):
    b = Backend("n1")
    n = Notify()
    port = free_port()
    proc = start_tern(tmp_path, http_config(port, b), env={"NOTIFY_SOCKET": n.env})
    try:
        assert (n.recv() or {}).get("READY") == "1", log_of(tmp_path)
        proc.send_signal(signal.SIGHUP)
        msg = n.recv(timeout=5)
        assert msg is not None and msg.get("RELOADING") == "1", msg
        assert int(msg.get("MONOTONIC_USEC", "0")) > 0, msg
        msg = n.recv()
        assert msg is not None and msg.get("READY") == "1", msg
        assert listening(port)
        rc, log = stop(proc, tmp_path)
        assert rc == 0, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        n.close()
        b.stop()


def test_notify_socket_missing_is_harmless(tmp_path):
    b = Backend("n1")
    port = free_port()
    proc = start_tern(tmp_path, http_config(port, b), env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    try:
        assert wait_port(port), log_of(tmp_path)
        rc, log = stop(proc, tmp_path)
        assert rc == 0, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        b.stop()


# ---------------------------------------------------------------- global.user


def status_fields(path):
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@needs_root
def test_drops_to_user_with_vrrp_caps_only(tmp_path):
    nobody = pwd.getpwnam("nobody")
    groups = sorted(os.getgrouplist("nobody", nobody.pw_gid))
    b = Backend("p1")
    port = free_port()
    proc = start_tern(tmp_path, http_config(port, b, "  user: nobody\n"))
    try:
        assert wait_port(port), log_of(tmp_path)
        # The port answers as soon as it is bound, which can be before the
        # worker threads exist.
        deadline = time.monotonic() + scaled(5)
        while len(os.listdir(f"/proc/{proc.pid}/task")) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        tasks = os.listdir(f"/proc/{proc.pid}/task")
        assert len(tasks) >= 3, tasks  # control thread and two workers
        for t in tasks:
            st = status_fields(f"/proc/{proc.pid}/task/{t}/status")
            where = f"thread {t} ({st['Name']})"
            assert st["Uid"] == [str(nobody.pw_uid)] * 4, (where, st["Uid"])
            assert st["Gid"] == [str(nobody.pw_gid)] * 4, (where, st["Gid"])
            assert sorted(int(g) for g in st["Groups"]) == groups, (where, st["Groups"])
            assert int(st["CapEff"][0], 16) == VRRP_CAPS, (where, st["CapEff"])
            assert int(st["CapPrm"][0], 16) == VRRP_CAPS, (where, st["CapPrm"])
            assert int(st["CapInh"][0], 16) == 0, (where, st["CapInh"])
            assert int(st.get("CapAmb", ["0"])[0], 16) == 0, (where, st["CapAmb"])
        for i in range(6):  # both workers, several requests
            r = raw_exchange(port, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert status_of(r) == 200, r
        rc, log = stop(proc, tmp_path)
        assert rc == 0, log
        assert re.search(r"switched to user nobody \(uid \d+, gid \d+\); capabilities kept: "
                         r"CAP_NET_ADMIN CAP_NET_RAW$", log, re.M), log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        b.stop()


def free_low_port():
    for port in range(950, 600, -1):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    pytest.skip("no free port below 1024")


@needs_root
def test_admin_on_low_port_keeps_bind_service(tmp_path):
    b = Backend("p1")
    port, admin = free_port(), free_low_port()
    text = http_config(port, b, "  user: nobody\n") + f"admin:\n  listen: 127.0.0.1:{admin}\n"
    proc = start_tern(tmp_path, text)
    try:
        assert wait_port(port) and wait_port(admin), log_of(tmp_path)
        st = status_fields(f"/proc/{proc.pid}/status")
        assert st["Uid"][1] == str(pwd.getpwnam("nobody").pw_uid)
        assert int(st["CapEff"][0], 16) == VRRP_CAPS | (1 << CAP_NET_BIND_SERVICE), st["CapEff"]
        rc, log = stop(proc, tmp_path)
        assert rc == 0, log
        assert "capabilities kept: CAP_NET_BIND_SERVICE CAP_NET_ADMIN CAP_NET_RAW" in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        b.stop()


def test_unknown_user_is_one_line_error(tmp_path):
    b = Backend("p1")
    port = free_port()
    proc = start_tern(tmp_path, http_config(port, b, "  user: no-such-user-tern\n"))
    try:
        rc = proc.wait(timeout=scaled(15))
        log = log_of(tmp_path)
        assert rc == 1, log
        lines = [l for l in log.splitlines() if l.strip()]
        assert len(lines) == 1 and "no-such-user-tern" in lines[0], log
        assert not listening(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        b.stop()


def test_user_set_without_root_warns_and_runs():
    """global.user given, tern not root: a warning, and it serves as it is."""
    run_as = None
    if os.geteuid() == 0:
        # Run as nobody, which must reach the binary and read the config
        # (pytest's tmp_path is private to root).
        run_as = pwd.getpwnam("nobody").pw_uid
        if any(not os.stat(d).st_mode & 0o001 for d in parents(os.path.dirname(TERN))):
            pytest.skip("nobody cannot reach the tern binary")
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="tern-user-"))
    os.chmod(tmp_path, 0o755)
    b = Backend("p1")
    port = free_port()
    proc = start_tern(tmp_path, http_config(port, b, "  user: root\n"), user=run_as)
    try:
        assert wait_port(port), log_of(tmp_path)
        st = status_fields(f"/proc/{proc.pid}/status")
        assert st["Uid"][0] == str(run_as if run_as is not None else os.geteuid())
        rc, log = stop(proc, tmp_path)
        assert rc == 0, log
        assert re.search(r"\[warn\] global\.user is root but tern runs as uid \d+, not root", log), log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        b.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def parents(path):
    path = os.path.abspath(path)
    while True:
        yield path
        up = os.path.dirname(path)
        if up == path:
            return
        path = up
