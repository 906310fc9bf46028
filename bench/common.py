"""What bench.py, tls_bench.py and reload_bench.py share.

One place for the configurations they write (origin nginx, nginx as a proxy,
HAProxy, tern), so that the three benchmarks put every proxy in the same
set-up (one worker, same timeouts, keep-alive to the same origin, no access
log) and a change to that set-up reaches all three; and one place for the
machinery around them: child processes stopped by PID, /proc CPU and memory
sampling, CPU pinning, free ports, wrk's output.

Standard library only.
"""

import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")

BODY_SIZE = 100
BODY_PATH = "/100b.bin"

PROXIES = ["tern", "haproxy", "nginx"]
LABEL = {"tern": "tern", "haproxy": "HAProxy", "nginx": "nginx", "direct": "direct"}


def logger(tag):
    """log(msg) to stderr as '[tag HH:MM:SS] msg' (stdout carries the report)."""
    def log(msg):
        print("[%s %s] %s" % (tag, time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)
    return log


class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    # An exception rather than an exit, so that the driver's finally: stops
    # every child by PID before the process goes.
    raise Interrupted("signal %d" % signum)


# --------------------------------------------------------------------------
# /proc


def proc_stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()


def descendants(pid):
    """pid and all its descendants (nginx master -> workers)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = proc_stat_fields(int(name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if os.path.exists("/proc/%d" % p):
            out.append(p)
        todo.extend(children.get(p, []))
    return out


def group_pids(pgid):
    """Processes in process group pgid (every child gets its own group)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = proc_stat_fields(int(name))
        if f is not None and int(f[3]) == pgid:
            out.append(int(name))
    return out


def cpu_split(pids):
    """(utime, stime) of the processes in seconds, each covering all of a
    process's threads: the proxy's own code against the kernel's work done
    on its behalf."""
    u = k = 0
    for pid in pids:
        fields = proc_stat_fields(pid)
        if fields:
            u += int(fields[11])
            k += int(fields[12])
    return u / CLK_TCK, k / CLK_TCK


def cpu_seconds(pids):
    """utime+stime of the processes."""
    return sum(cpu_split(pids))


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_times():
    """Per-CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                vals = [int(x) for x in parts[1:]]
                idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
                total = sum(vals[:8])
                out[int(parts[0][3:])] = (total - idle, total)
    return out


def busy_between(a, b):
    """Busy share of each CPU between two cpu_times() samples."""
    out = {}
    for cpu in sorted(b):
        if cpu in a:
            db = b[cpu][0] - a[cpu][0]
            dt = b[cpu][1] - a[cpu][1]
            out[cpu] = db / dt if dt > 0 else 0.0
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --------------------------------------------------------------------------
# pinning


def cpus_for(pin, ncpu, role):
    """The CPU set of a role ("proxy", "client", "origin", "origin-direct")
    under --pin; None lets the scheduler place it. split: the proxy gets CPU 1
    to itself, clients and origin share CPU 0, and for the direct runs the
    origin moves to CPU 1 so that direct also gets both cores."""
    if pin == "none":
        return None
    if pin == "one" or ncpu < 2:
        return {0}
    return {"proxy": {1}, "client": {0}, "origin": {0}, "origin-direct": {1}}[role]


def set_affinity(pids, cpus):
    if not cpus:
        return
    for pid in pids:
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError:
            pass
        # threads too (tern workers, sink threads)
        try:
            for tid in os.listdir("/proc/%d/task" % pid):
                try:
                    os.sched_setaffinity(int(tid), cpus)
                except OSError:
                    pass
        except OSError:
            pass


def preexec(cpus):
    """For Popen: the child gets its own process group (a ^C at the terminal
    reaches only the driver, which then stops it by PID) and its CPU set
    before it runs anything, so that it never runs elsewhere."""
    def pre():
        os.setpgid(0, 0)
        if cpus:
            os.sched_setaffinity(0, cpus)
    return pre


# --------------------------------------------------------------------------
# ports and a tiny HTTP client


def port_free(port):
    try:
        socket.getservbyport(port, "tcp")
        return False  # a named service port: leave it alone
    except OSError:
        pass
    for addr in ("127.0.0.1", "0.0.0.0"):
        s = socket.socket()
        try:
            s.bind((addr, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def pick_ports(n):
    """Free ports below the ephemeral range, so that client sockets never take them."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except OSError:
        lo = 32768
    top = max(lo, 20000)
    base = 20000 if top - 20000 > 1000 else 10000
    rng = random.Random()
    ports = []
    while len(ports) < n:
        p = rng.randrange(base, top)
        if p not in ports and port_free(p):
            ports.append(p)
    return ports


def response_complete(buf):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].lower()
    body = buf[end + 4:]
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
    if m:
        return len(body) >= int(m.group(1))
    if b"transfer-encoding: chunked" in head:
        return body.endswith(b"0\r\n\r\n")
    return False


def http_get(port, path=BODY_PATH, timeout=1.0):
    """One request with Connection: close; returns the status code or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path).encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if response_complete(data):
                    break
        m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def tcp_open(port, timeout=0.5):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        return True
    except OSError:
        return False


def wait_ready(child, port, timeout, tls=False):
    """Until the child serves HTTP 200 on port (tls: accepts connections,
    since this client speaks no TLS); False if it exits or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if child is not None and not child.alive():
            return False
        if tcp_open(port) if tls else http_get(port, timeout=0.5) == 200:
            return True
        time.sleep(0.1)
    return False


# --------------------------------------------------------------------------
# child processes


class Child:
    """A server (proxy, origin, sink) run for the whole benchmark. Every one
    started is in Child.registry, so that stop_all() can stop them all, by
    PID, however the run ends."""

    registry = []

    def __init__(self, name, argv, cpus, logpath, cwd=None):
        self.name = name
        self.argv = argv
        self.cpus = cpus
        self.logpath = logpath
        self.cwd = cwd
        self.popen = None
        self.known_pids = set()

    def start(self):
        logf = open(self.logpath, "ab")
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                                      stderr=subprocess.STDOUT, cwd=self.cwd, preexec_fn=preexec(self.cpus))
        logf.close()
        self.known_pids = {self.popen.pid}
        if self not in Child.registry:
            Child.registry.append(self)
        return self

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def pids(self):
        if not self.alive():
            return []
        p = descendants(self.popen.pid)
        self.known_pids.update(p)
        return p

    def cpu(self):
        """CPU seconds used so far by the process and its descendants."""
        return cpu_seconds(self.pids())

    def log_tail(self, n=8):
        try:
            with open(self.logpath, errors="replace") as f:
                lines = [l.rstrip() for l in f.readlines() if l.strip()]
            return lines[-n:]
        except OSError:
            return []

    def stop(self, timeout=3.0):
        if self.popen is None:
            return
        self.pids()
        pids = sorted(self.known_pids)
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.time() + timeout
        while time.time() < deadline and self.popen.poll() is None:
            time.sleep(0.05)
        for pid in pids:  # whatever is left of it, by PID
            if pid == self.popen.pid and self.popen.poll() is not None:
                continue
            if pid != self.popen.pid and not os.path.exists("/proc/%d" % pid):
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass


def stop_all(log):
    for c in reversed(Child.registry):
        try:
            c.stop()
        except Exception as e:  # keep stopping the others
            log("stopping %s: %s" % (c.name, e))


def run_guarded(driver, steps, stop, keep, log):
    """Run steps in order with SIGTERM, SIGINT and SIGHUP turned into
    Interrupted; however they end, stop() (which stops the children by PID)
    and remove driver.tmp unless keep. True if every step ran."""
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)
    try:
        for step in steps:
            step()
        return True
    except Interrupted as e:
        log("interrupted (%s): stopping" % e)
        return False
    finally:
        # A second ^C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop()
        if driver.tmp and not keep:
            shutil.rmtree(driver.tmp, ignore_errors=True)
        elif driver.tmp:
            log("kept %s" % driver.tmp)


def print_summary(table, out):
    print()
    print("\n".join(table))
    print()
    print("full report: %s" % out)


def run_measured(argv, cpus, timeout, cwd=None):
    """Run a client (wrk, tcpbulk, tlsload) to completion; returns (rc,
    stdout+stderr, CPU seconds of the client, from its rusage)."""
    out = tempfile.TemporaryFile()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         cwd=cwd, preexec_fn=preexec(cpus))
    deadline = time.time() + timeout
    rc, ru = None, None
    try:
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.time() > deadline:
                os.kill(p.pid, signal.SIGKILL)
                pid, status, ru = os.wait4(p.pid, 0)
                rc = -9
                break
            time.sleep(0.02)
    finally:
        if rc is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
                os.wait4(p.pid, 0)
            except OSError:
                pass
        p.returncode = rc if rc is not None else -9
    out.seek(0)
    text = out.read().decode(errors="replace")
    out.close()
    cpu = (ru.ru_utime + ru.ru_stime) if ru else 0.0
    return rc, text, cpu


# --------------------------------------------------------------------------
# the run's environment


def raise_nofile():
    """Soft open-file limit up to the hard one (the children inherit it);
    returns the limit now in force."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    except (ValueError, OSError):
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def make_workdir(prefix, log):
    """The run's temporary directory, with the origin's document root
    (www/100b.bin). World-readable: nginx workers may run as another user."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    log("work dir %s" % d)
    os.makedirs(d + "/www")
    with open(d + "/www" + BODY_PATH, "wb") as f:
        f.write((b"0123456789abcdef" * 8)[:BODY_SIZE - 1] + b"\n")
    return d


def need_tools(prog, tools):
    for tool in tools:
        if shutil.which(tool) is None:
            raise SystemExit("%s: %s not found (scripts/deps.sh all installs it)" % (prog, tool))


def resolve_tern(a):
    """a.tern relative to the current directory, else to the repository;
    a.tern_display keeps what was typed, for the report."""
    a.tern_display = a.tern
    if a.tern and not os.path.isabs(a.tern):
        cand = os.path.abspath(a.tern)
        a.tern = cand if os.path.exists(cand) else os.path.join(REPO, a.tern)


def tern_missing(path):
    """Why path is not a tern binary we can run, or None."""
    if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
        return "binary not found at %s" % (path or "(none)")
    return None


def tern_check(path, cfg):
    """`tern -t -c cfg`: None if tern accepts the file, else the last lines it printed."""
    chk = subprocess.run([path, "-t", "-c", cfg], capture_output=True, text=True, timeout=20)
    if chk.returncode == 0:
        return None
    return " / ".join((chk.stdout + chk.stderr).strip().splitlines()[-3:])


def first_line(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (p.stdout or p.stderr).strip()
        return text.splitlines()[0].strip() if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def versions():
    """Short version strings of the tools and the tern tree, for the reports."""
    return {
        "haproxy": re.sub(r"^HAProxy version (\S+).*", r"HAProxy \1", first_line(["haproxy", "-v"])),
        "nginx": re.sub(r"^nginx version: nginx/", "nginx ", first_line(["nginx", "-v"])),
        "wrk": re.sub(r"\s*(\[\w+\])?\s*Copyright.*", "", first_line(["wrk", "-v"])),
        "tern_commit": first_line(["git", "-C", REPO, "describe", "--always", "--dirty"]),
    }


# --------------------------------------------------------------------------
# wrk


UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def parse_time_us(text):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text.strip())
    if not m:
        return None
    return float(m.group(1)) * UNIT_US[m.group(2)]


def parse_wrk(text):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+\w+),", text)
    if m:
        r["requests"] = int(m.group(1))
        r["seconds"] = parse_time_us(m.group(2)) / 1e6
    for pct in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, text, re.M)
        if m:
            r["p%s_us" % pct] = parse_time_us(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["errors"] = sum(int(x) for x in m.groups()) if m else 0
    r["err_detail"] = m.group(0) if m else ""
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    return r


def fmt_int(v):
    return "{:,.0f}".format(v)


def fmt_f2(v):
    return "%.2f" % v


def fmt_f3(v):
    return "%.3f" % v


def fmt_us(v):
    if v is None:
        return "n/a"
    if v < 1000:
        return "%.0f us" % v
    if v < 1e6:
        return "%.2f ms" % (v / 1e3)
    return "%.2f s" % (v / 1e6)


# --------------------------------------------------------------------------
# configurations
#
# Every proxy: one worker, no access log, keep-alive to the origin, the same
# timeouts (connect 5 s, idle 300 s). `servers` is a list of (name, port) on
# 127.0.0.1; `comment`, when given, becomes the file's first line.


def _comment(comment):
    return "# %s\n" % comment if comment else ""


def _nginx_main(d, name, nofile, worker_connections=None, error_level="warn"):
    """The top of an nginx config: foreground (we are its parent), pid and
    error log in d, as many descriptors as we have."""
    user_line = "user root;" if os.geteuid() == 0 else ""  # nginx refuses to drop to nobody otherwise
    return f"""worker_processes 1;
daemon off;
master_process on;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log {error_level};
{user_line}
worker_rlimit_nofile {nofile};
events {{ worker_connections {worker_connections or nofile - 100}; }}
"""


def _nginx_temp_paths(d, name):
    # nginx's compiled-in temp paths are under /var/lib/nginx, which only
    # root can write: point them into the run's directory.
    t = f"{d}/{name}-tmp"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(f"{t}/{sub}", exist_ok=True)
    return f"""    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
"""


def origin_conf(d, ports, nofile):
    """The origin: nginx serving d/www (the 100-byte file) on each port,
    from an open-file cache, with keep-alive connections that never end."""
    listen = "".join(f"        listen 127.0.0.1:{p} backlog=4096;\n" for p in ports)
    return _nginx_main(d, "origin", nofile) + f"""http {{
    access_log off;
    server_tokens off;
    etag off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 1000000000;
    open_file_cache max=16 inactive=600s;
    open_file_cache_valid 600s;
    default_type application/octet-stream;
{_nginx_temp_paths(d, "origin")}
    server {{
{listen}        root {d}/www;
    }}
}}
"""


def nginx_proxy_conf(d, port, servers, nofile, worker_connections=None, error_level="warn",
                     tls=None, stream=None, comment=None):
    """nginx as the proxy on port, to upstream `servers`.

    tls: (cert, key) to terminate TLS on port. stream: (module, tcp_port,
    sink) for a TCP relay from tcp_port to sink; module is the path of
    ngx_stream_module.so to load, or "" when the stream module is built in.
    error_level: "notice" logs each reload ("start worker processes")."""
    conf = _comment(comment)
    if stream and stream[0]:
        conf += f"load_module {stream[0]};\n"
    upstream = "".join(f"        server 127.0.0.1:{p};\n" for _, p in servers)
    listen = f"127.0.0.1:{port} ssl backlog=4096" if tls else f"127.0.0.1:{port} backlog=4096"
    ssl = ""
    if tls:
        ssl = f"""        ssl_certificate {tls[0]};
        ssl_certificate_key {tls[1]};
        ssl_protocols TLSv1.2 TLSv1.3;
"""
    conf += _nginx_main(d, "nginx", nofile, worker_connections, error_level) + f"""http {{
    access_log off;
    server_tokens off;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 1000000000;
{_nginx_temp_paths(d, "nginx")}
    upstream origin {{
{upstream}        keepalive 64;
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {listen};
{ssl}        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    if stream:
        conf += f"""stream {{
    upstream bulk {{ server 127.0.0.1:{stream[2]}; }}
    server {{
        listen 127.0.0.1:{stream[1]} backlog=4096;
        proxy_pass bulk;
    }}
}}
"""
    return conf


def haproxy_conf(port, servers, maxconn, tls_bundle=None, tcp=None, global_extra=(), balance=None,
                 comment=None):
    """HAProxy on port, to `servers`, one thread, server-side connections
    reused (http-reuse always). tls_bundle: cert+key file to terminate TLS
    (TLS 1.2 and up, ALPN http/1.1). tcp: (tcp_port, sink) for a mode tcp
    frontend/backend pair. global_extra: more lines for the global section."""
    glob = "".join(f"    {line}\n" for line in global_extra)
    if tls_bundle:
        glob += "    ssl-default-bind-options ssl-min-ver TLSv1.2\n"
    bind = f"127.0.0.1:{port}" + (f" ssl crt {tls_bundle} alpn http/1.1" if tls_bundle else "")
    backend = (f"    balance {balance}\n" if balance else "") + \
        "".join(f"    server {name} 127.0.0.1:{p}\n" for name, p in servers)
    conf = _comment(comment) + f"""global
    nbthread 1
    maxconn {maxconn}
{glob}
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 30s
    timeout http-keep-alive 300s

frontend web
    bind {bind}
    default_backend web

backend web
{backend}"""
    if tcp:
        conf += f"""
frontend bulk
    mode tcp
    bind 127.0.0.1:{tcp[0]}
    default_backend bulk

backend bulk
    mode tcp
    server s1 127.0.0.1:{tcp[1]}
"""
    return conf


def tern_conf(port, servers, comment, tls=None, tcp=None):
    """tern with one worker: an http listener on port to pool web (`servers`);
    tls: (cert, key) to terminate TLS there; tcp: (tcp_port, sink) for a tcp
    listener to pool bulk."""
    tls_opt = ", tls: { certificates: [ { cert: %s, key: %s } ] }" % tls if tls else ""
    conf = _comment(comment) + f"""global: {{ workers: 1 }}
listeners:
  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: web{tls_opt} }}
"""
    pools = [("web", servers)]
    if tcp:
        conf += f"  - {{ name: bulk, bind: 127.0.0.1:{tcp[0]}, mode: tcp, pool: bulk }}\n"
        pools.append(("bulk", [("s1", tcp[1])]))
    conf += "pools:\n"
    width = max(len(name) for name, _ in pools) + 1  # the pools' braces line up
    for name, srv in pools:
        conf += "  %-*s { servers: [ %s ] }\n" % (
            width, name + ":", ", ".join("{ name: %s, address: 127.0.0.1:%d }" % s for s in srv))
    return conf
