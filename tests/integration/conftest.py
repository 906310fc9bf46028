"""Helpers for tern's integration tests: real tern binary, real clients.

Each test writes its YAML inline, starts the backends it needs (tests/tools/
backend.py) and a tern, talks to it over loopback, and stops what it started
by PID. TERN_TEST_SCALE multiplies every wait (slow machines, sanitizers).
"""
import fcntl
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TERN = os.environ.get("TERN_BIN", os.path.join(ROOT, "build", "lb", "tern"))
BACKEND = os.path.join(ROOT, "tests", "tools", "backend.py")
SCALE = float(os.environ.get("TERN_TEST_SCALE", "1"))
SANITIZED = "asan" in TERN


def scaled(seconds):
    return seconds * SCALE * (3 if SANITIZED else 1)


PORT_SLOTS = 8


def _port_range():
    """Ports for the servers a test starts (tern's listeners, backends):
    below the kernel's ephemeral range, so that no outgoing connection can
    take one between free_port() and the bind that follows it, and a slice
    of them per pytest process (make test runs several side by side), held
    by a lock on a file for as long as the process lives, so that two
    processes never hand out the same port. With every slice taken, the
    whole range, from a random place."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low < 12000:
        return None
    size = (low - 10000) // PORT_SLOTS
    for slot in range(PORT_SLOTS):
        f = open(os.path.join(tempfile.gettempdir(), f"tern-test-ports.{slot}.lock"), "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _held.append(f)  # the lock goes with the process
        return range(10000 + slot * size, 10000 + (slot + 1) * size)
    return range(10000, low)


_held = []
_PORTS = _port_range()
_port_at = [random.randrange(len(_PORTS)) if _PORTS else 0]


def free_port():
    """A port of this process's range that nothing uses now, handed out in
    turn so that a port comes back only after the whole range."""
    for _ in range(len(_PORTS) if _PORTS else 0):
        port = _PORTS[_port_at[0] % len(_PORTS)]
        _port_at[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    with socket.socket() as s:  # no range below the ephemeral ports
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, step=0.05):
    """pred()'s first true value within timeout (scaled) seconds, else its
    last value."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def wait_port(port, timeout=5.0, host="127.0.0.1"):
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


class Backend:
    def __init__(self, name, port=None, extra=()):
        self.name = name
        self.port = port or free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="backend-", suffix=".log", delete=False).name
        self.proc = subprocess.Popen(
            [sys.executable, BACKEND, "--port", str(self.port), "--name", name, "--log", self.log, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), f"backend {name} did not start: {line!r}"

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def requests(self):
        with open(self.log) as f:
            return f.read().splitlines()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.unlink(self.log)
        except OSError:
            pass


def lsan_tracer_crashed(log):
    """LeakSanitizer's tracer, which ptrace-stops the process at exit to scan
    it, now and then dies of SIGSEGV on its own (about once in 20 runs of
    one scale test here, with only the main thread left, before and after
    any change of ours). That says nothing about tern; any other sanitizer
    report in the same log still fails the test."""
    return ("Tracer caught signal" in log and "LeakSanitizer has encountered a fatal error" in log
            and "ERROR: AddressSanitizer" not in log and "ERROR: LeakSanitizer" not in log
            and "runtime error" not in log)


class Tern:
    def __init__(self, yaml_text, wait_ports=(), extra_files=None):
        self.dir = tempfile.mkdtemp(prefix="tern-test-")
        self.conf = os.path.join(self.dir, "tern.yaml")
        with open(self.conf, "w") as f:
            f.write(yaml_text)
        for name, text in (extra_files or {}).items():
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)
        self.stderr_path = os.path.join(self.dir, "stderr")
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen([TERN, "-c", self.conf], stdout=subprocess.DEVNULL, stderr=self.stderr)
        for p in wait_ports:
            if not wait_port(p):
                self.stop(check=False)
                raise AssertionError(f"tern did not listen on {p}:\n{self.log()}")

    def log(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM, check=True, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=scaled(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if check:
                    raise AssertionError("tern did not stop in time:\n" + self.log())
        self.stderr.close()
        log = self.log()
        if check and lsan_tracer_crashed(log):
            warnings.warn("LeakSanitizer's own tracer crashed at exit (google/sanitizers#1353): "
                          "this run's leak check did not happen")
            return log
        if check:
            assert "Sanitizer" not in log and "runtime error" not in log, log
            assert self.proc.returncode == 0, f"exit {self.proc.returncode}\n{log}"
        return log


@pytest.fixture
def backends(request):
    made = []

    def make(n, prefix="b", extra=()):
        out = [Backend(f"{prefix}{i + 1}", extra=extra) for i in range(n)]
        made.extend(out)
        return out

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def tern():
    made = []

    def start(yaml_text, wait_ports=(), **kw):
        t = Tern(yaml_text, wait_ports, **kw)
        made.append(t)
        return t

    yield start
    for t in made:
        t.stop()


def pool_yaml(name, servers, extra=""):
    lines = [f"  {name}:", "    servers:"]
    for s in servers:
        lines.append(f"      - {{ name: {s.name}, address: {s.address} }}")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def simple_config(port, servers, balance="roundrobin", listener_extra="", pool_extra="", mode="http"):
    return (
        "global:\n  workers: 2\n"
        "listeners:\n"
        f"  - name: web\n    bind: 127.0.0.1:{port}\n    mode: {mode}\n    pool: web\n{listener_extra}"
        "pools:\n"
        f"  web:\n    balance: {balance}\n{pool_extra}    servers:\n"
        + "".join(f"      - {{ name: {s.name}, address: {s.address} }}\n" for s in servers)
    )


def raw_exchange(port, data, timeout=3.0, shut=False, host="127.0.0.1"):
    """Sends data, returns every byte received until the peer closes or the
    timeout passes without bytes."""
    s = socket.create_connection((host, port), timeout=scaled(timeout))
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def status_of(resp):
    m = re.match(rb"HTTP/1\.[01] (\d{3})", resp)
    return int(m.group(1)) if m else None


def checkable_example(src, tmpdir):
    """A copy of the shipped example whose /etc/tern files exist: `tern -t`
    checks certificates, keys and the admin token file, and the example
    names /etc/tern/site.pem and /etc/tern/admin.token as an operator would.
    A throwaway self-signed pair and token stand in for them."""
    d = os.path.join(str(tmpdir), "etc-tern")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "admin.token"), "w") as f:
        f.write("t0ken-for-the-example\n")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=www.example.com", "-keyout", os.path.join(d, "site.key"),
         "-out", os.path.join(d, "site.pem")],
        check=True, capture_output=True)
    with open(src) as f:
        text = f.read().replace("/etc/tern/", d + "/")
    out = os.path.join(d, "tern.yaml")
    with open(out, "w") as f:
        f.write(text)
    return out
