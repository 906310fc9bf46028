#!/usr/bin/env python3
"""TLS termination: tern vs HAProxy vs nginx, in one run on this machine.

Each proxy terminates TLS with the same certificate (RSA 2048 by default,
--key ec for ECDSA P-256) in one worker and forwards plain HTTP/1.1 over
keep-alive connections to one nginx origin serving a 100-byte file. Three
figures per proxy:

  full handshakes/s   bench/tlsload.c, 50 connections at a time, each a new
                      TCP connection, a full TLS handshake (it never offers a
                      session), one request with Connection: close, the
                      answer, close.
  wrk new conns/s     wrk -H 'Connection: close': also a new connection per
                      request, but wrk resumes the previous session when the
                      server gave it a ticket (SSL_clear keeps it), so this
                      mixes full and resumed handshakes as each server's
                      ticket policy allows. For information; no target.
  keep-alive req/s    wrk over persistent TLS connections: record encryption
                      and the proxying itself.

RSA is the default because a full handshake then costs the server (an RSA
signature) far more than the client (a verification), so the proxy, not the
load generator sharing the other CPU, is what the handshake figure measures;
with ECDSA the client's verification costs more than the server's signature.
Rounds rotate the order of the proxies; the table shows medians, ratios and
the targets (full handshakes/s at least the best of HAProxy and nginx; keep-alive
TLS req/s at least 1.2 x HAProxy). The report is appended to
bench/RESULTS-tls.md. With two or more CPUs the proxy gets CPU 1 to itself
and wrk and the origin share CPU 0 (as bench/bench.py's default pinning).

Everything listens on 127.0.0.1 on free ports, runs as a child of this
script and is stopped by PID at the end. Standard library only; needs wrk,
haproxy, nginx, openssl, cc and libssl-dev (for tlsload). Not part of the
test suite.

usage: bench/tls_bench.py [--tern build/lb/tern] [--rounds 3] [--seconds 6]
                          [--conns 50] [--key rsa|ec] [--keep] [--out FILE]
"""
import argparse
import datetime
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROXIES = ["tern", "haproxy", "nginx"]
LABEL = {"tern": "tern", "haproxy": "HAProxy", "nginx": "nginx"}


def log(msg):
    print("[tls-bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def first_line(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


class Child:
    def __init__(self, name, argv, cpus, logpath):
        self.name = name
        self.log = open(logpath, "w")
        self.popen = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)

    def pids(self):
        """The child and its descendants (nginx master and worker)."""
        out, todo = [], [self.popen.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            try:
                with open(f"/proc/{p}/task/{p}/children") as f:
                    todo += [int(x) for x in f.read().split()]
            except OSError:
                pass
        return out

    def cpu(self):
        total = 0.0
        for p in self.pids():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return total

    def stop(self):
        if self.popen.poll() is None:
            for p in reversed(self.pids()):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.popen.wait()
        self.log.close()


def make_cert(d, key):
    keyopt = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key == "ec"
              else ["-newkey", "rsa:2048"])
    subprocess.run(["openssl", "req", "-x509", *keyopt, "-nodes", "-keyout", f"{d}/site.key",
                    "-out", f"{d}/site.pem", "-subj", "/CN=bench.test", "-days", "3",
                    "-addext", "subjectAltName=DNS:bench.test"], check=True, capture_output=True)
    with open(f"{d}/site.bundle", "w") as out:  # HAProxy wants both in one file
        for n in ("site.pem", "site.key"):
            with open(f"{d}/{n}") as f:
                out.write(f.read())


def nginx_head(d, name, nofile):
    user = "user root;" if os.geteuid() == 0 else ""
    t = f"{d}/{name}-tmp"
    os.makedirs(t, exist_ok=True)
    return f"""worker_processes 1;
daemon off;
master_process on;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
{user}
worker_rlimit_nofile {nofile};
events {{ worker_connections {nofile - 100}; }}
http {{
    access_log off;
    server_tokens off;
    tcp_nodelay on;
    keepalive_timeout 300s;
    keepalive_requests 1000000000;
    client_body_temp_path {t};
    proxy_temp_path {t};
    fastcgi_temp_path {t};
    uwsgi_temp_path {t};
    scgi_temp_path {t};
"""


def origin_conf(d, port, nofile):
    return nginx_head(d, "origin", nofile) + f"""    etag off;
    sendfile on;
    open_file_cache max=16 inactive=600s;
    default_type application/octet-stream;
    server {{ listen 127.0.0.1:{port} backlog=4096; root {d}/www; }}
}}
"""


def nginx_conf(d, port, origin, nofile):
    return nginx_head(d, "nginx", nofile) + f"""    upstream origin {{
        server 127.0.0.1:{origin};
        keepalive 64;
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {d}/site.pem;
        ssl_certificate_key {d}/site.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def haproxy_conf(d, port, origin, maxconn):
    return f"""global
    nbthread 1
    maxconn {maxconn}
    ssl-default-bind-options ssl-min-ver TLSv1.2

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
    bind 127.0.0.1:{port} ssl crt {d}/site.bundle alpn http/1.1
    default_backend web

backend web
    server o1 127.0.0.1:{origin}
"""


def tern_conf(d, port, origin):
    return f"""# generated by bench/tls_bench.py
global: {{ workers: 1 }}
listeners:
  - name: web
    bind: 127.0.0.1:{port}
    pool: web
    tls: {{ certificates: [ {{ cert: {d}/site.pem, key: {d}/site.key }} ] }}
pools:
  web: {{ servers: [ {{ name: o1, address: 127.0.0.1:{origin} }} ] }}
"""


WRK_REQ = re.compile(r"(\d+) requests in ([\d.]+)(\w+)")


def children_cpu():
    """CPU seconds of the waited-for children: wrk or tlsload, run one at a time."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_wrk(port, seconds, conns, close, cpus):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"https://127.0.0.1:{port}/100b.bin")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                       preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    m = WRK_REQ.search(r.stdout)
    if not m:
        return None, r.stdout + r.stderr
    n = int(m.group(1))
    t = float(m.group(2)) * {"s": 1, "ms": 1e-3, "m": 60}.get(m.group(3), 1)
    bad = 0
    for pat in (r"Non-2xx or 3xx responses: (\d+)",):
        mm = re.search(pat, r.stdout)
        if mm:
            bad += int(mm.group(1))
    errs = re.search(r"Socket errors: (.*)", r.stdout)
    return (n - bad) / t, (errs.group(1) if errs else "")


def run_tlsload(tlsload, port, seconds, conns, cpus):
    r = subprocess.run([tlsload, str(port), str(seconds), str(conns), "/100b.bin"],
                       capture_output=True, text=True, timeout=seconds + 60,
                       preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    m = re.search(r"(\d+) connections in ([\d.]+) s, [\d.]+/s, (\d+) errors", r.stdout)
    if not m:
        return None, r.stdout + r.stderr
    return int(m.group(1)) / float(m.group(2)), (f"{m.group(3)} errors" if int(m.group(3)) else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tern", default=os.path.join(REPO, "build", "lb", "tern"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--key", choices=["ec", "rsa"], default="rsa")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS-tls.md"))
    a = ap.parse_args()
    for tool in ("wrk", "haproxy", "nginx", "openssl", "cc"):
        if not shutil.which(tool):
            raise SystemExit(f"tls_bench: {tool} is needed")
    if not os.access(a.tern, os.X_OK):
        raise SystemExit(f"tls_bench: no tern binary at {a.tern} (--tern)")

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nofile = min(hard, 65536)
    ncpu = os.cpu_count() or 1
    proxy_cpus = {1} if ncpu >= 2 else None
    client_cpus = {0} if ncpu >= 2 else None

    load0 = " ".join(open("/proc/loadavg").read().split()[:3])
    d = tempfile.mkdtemp(prefix="tern-tls-bench-")
    os.chmod(d, 0o755)
    os.makedirs(f"{d}/www")
    with open(f"{d}/www/100b.bin", "wb") as f:
        f.write(b"x" * 100)
    make_cert(d, a.key)
    tlsload = f"{d}/tlsload"
    subprocess.run(["cc", "-O2", "-o", tlsload, os.path.join(HERE, "tlsload.c"), "-lssl",
                    "-lcrypto"], check=True)
    for n in os.listdir(d):
        os.chmod(os.path.join(d, n), 0o755 if os.path.isdir(os.path.join(d, n)) else 0o644)
    os.chmod(tlsload, 0o755)

    children = []
    signal.signal(signal.SIGTERM, lambda *x: (_ for _ in ()).throw(KeyboardInterrupt()))
    results = {p: {k: [] for k in ("hs", "wrk", "ka", "hs_cpu", "wrk_cpu", "ka_cpu", "ka_cpu0")}
               for p in PROXIES}
    notes = []
    try:
        p_origin = free_port()
        with open(f"{d}/origin.conf", "w") as f:
            f.write(origin_conf(d, p_origin, nofile))
        origin = Child("origin", ["nginx", "-p", d + "/", "-c", f"{d}/origin.conf"], client_cpus,
                       f"{d}/origin.log")
        children.append(origin)
        if not wait_port(p_origin):
            raise SystemExit("tls_bench: the origin nginx did not start")

        ports, procs = {}, {}
        for name in PROXIES:
            port = free_port()
            ports[name] = port
            if name == "tern":
                with open(f"{d}/tern.yaml", "w") as f:
                    f.write(tern_conf(d, port, p_origin))
                argv = [a.tern, "-c", f"{d}/tern.yaml"]
            elif name == "haproxy":
                with open(f"{d}/haproxy.cfg", "w") as f:
                    f.write(haproxy_conf(d, port, p_origin, min(20000, (nofile - 15) // 2)))
                argv = ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"]
            else:
                with open(f"{d}/nginx.conf", "w") as f:
                    f.write(nginx_conf(d, port, p_origin, nofile))
                argv = ["nginx", "-p", d + "/", "-c", f"{d}/nginx.conf"]
            c = Child(name, argv, proxy_cpus, f"{d}/{name}.log")
            children.append(c)
            procs[name] = c
            if not wait_port(port):
                raise SystemExit(f"tls_bench: {name} did not start; see {d}/{name}.log")

        for name in PROXIES:  # warm-up: connections, caches
            run_wrk(ports[name], 1, a.conns, False, client_cpus)
        for rnd in range(a.rounds):
            order = PROXIES[rnd % 3:] + PROXIES[:rnd % 3]
            for key in ("hs", "wrk", "ka"):
                for name in order:
                    c0 = procs[name].cpu()
                    o0, w0 = origin.cpu(), children_cpu()
                    if key == "hs":
                        rate, errs = run_tlsload(tlsload, ports[name], a.seconds, a.conns,
                                                 client_cpus)
                    else:
                        rate, errs = run_wrk(ports[name], a.seconds, a.conns, key == "wrk",
                                             client_cpus)
                    cpu = procs[name].cpu() - c0
                    cpu0 = origin.cpu() - o0 + children_cpu() - w0
                    if rate is None:
                        notes.append(f"round {rnd + 1}: {name} {key}: wrk failed: {errs[:200]}")
                        continue
                    results[name][key].append(rate)
                    results[name][key + "_cpu"].append(cpu / (rate * a.seconds) * 1e6)
                    if key == "ka":
                        results[name]["ka_cpu0"].append(cpu0 / (rate * a.seconds) * 1e6)
                    if errs:
                        notes.append(f"round {rnd + 1}: {name} {key}: socket errors {errs}")
                    what = {"hs": "full handshakes", "wrk": "wrk new conns", "ka": "keep-alive"}
                    log(f"round {rnd + 1} {name:8s} {what[key]}: "
                        f"{rate:,.0f}/s, {cpu / (rate * a.seconds) * 1e6:.1f} us CPU each")
    except KeyboardInterrupt:
        notes.append("interrupted")
    finally:
        for c in reversed(children):
            c.stop()
        if a.keep:
            log(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)

    def med(name, key):
        v = results[name][key]
        return statistics.median(v) if v else None

    def fmt(x, unit=""):
        return "n/a" if x is None else f"{x:,.0f}{unit}"

    def ratio(x, y):
        return "n/a" if x is None or y is None or y == 0 else f"{x / y:.2f}"

    t_hs, h_hs, n_hs = med("tern", "hs"), med("haproxy", "hs"), med("nginx", "hs")
    t_w, h_w, n_w = med("tern", "wrk"), med("haproxy", "wrk"), med("nginx", "wrk")
    t_ka, h_ka, n_ka = med("tern", "ka"), med("haproxy", "ka"), med("nginx", "ka")
    best_hs = max([x for x in (h_hs, n_hs) if x is not None], default=None)
    hs_ok = t_hs is not None and best_hs is not None and t_hs >= best_hs
    ka_ok = t_ka is not None and h_ka is not None and t_ka >= 1.2 * h_ka

    out = []
    out.append(f"## TLS run {datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}\n")
    out.append(f"- tern {first_line(['git', '-C', REPO, 'describe', '--always', '--dirty'])}, "
               f"{first_line(['haproxy', '-v'])}, {first_line(['nginx', '-v'])}, "
               f"{first_line(['openssl', 'version'])}, {first_line(['wrk', '-v'])}")
    out.append(f"- {ncpu} CPUs; proxy pinned to CPU 1, wrk and the origin on CPU 0"
               if proxy_cpus else f"- {ncpu} CPU, nothing pinned")
    out.append(f"- certificate: {'ECDSA P-256' if a.key == 'ec' else 'RSA 2048'}, self-signed; "
               f"one worker each; tlsload and wrk -t1 -c{a.conns} -d{a.seconds}s; {a.rounds} "
               "rounds, medians; load averages at the start and end: "
               f"{load0} / {' '.join(open('/proc/loadavg').read().split()[:3])}; "
               "the origin is nginx with a 100-byte file over plain keep-alive HTTP")
    out.append("")
    out.append("| figure | tern | HAProxy | nginx | tern/HAProxy | tern/nginx | target | result |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    out.append(f"| full TLS handshakes/s (tlsload, no resumption) | {fmt(t_hs)} | {fmt(h_hs)} | "
               f"{fmt(n_hs)} | {ratio(t_hs, h_hs)} | {ratio(t_hs, n_hs)} | >= best of both | "
               f"{'PASS' if hs_ok else 'MISS'} |")
    out.append(f"| CPU us per handshake | {fmt(med('tern', 'hs_cpu'))} | "
               f"{fmt(med('haproxy', 'hs_cpu'))} | {fmt(med('nginx', 'hs_cpu'))} | "
               f"{ratio(med('tern', 'hs_cpu'), med('haproxy', 'hs_cpu'))} | "
               f"{ratio(med('tern', 'hs_cpu'), med('nginx', 'hs_cpu'))} | | |")
    out.append(f"| wrk Connection: close conns/s (resumption as allowed) | {fmt(t_w)} | {fmt(h_w)} | "
               f"{fmt(n_w)} | {ratio(t_w, h_w)} | {ratio(t_w, n_w)} | | |")
    out.append(f"| CPU us per wrk connection | {fmt(med('tern', 'wrk_cpu'))} | "
               f"{fmt(med('haproxy', 'wrk_cpu'))} | {fmt(med('nginx', 'wrk_cpu'))} | "
               f"{ratio(med('tern', 'wrk_cpu'), med('haproxy', 'wrk_cpu'))} | "
               f"{ratio(med('tern', 'wrk_cpu'), med('nginx', 'wrk_cpu'))} | | |")
    out.append(f"| keep-alive TLS req/s | {fmt(t_ka)} | {fmt(h_ka)} | {fmt(n_ka)} | "
               f"{ratio(t_ka, h_ka)} | {ratio(t_ka, n_ka)} | >= 1.2 x HAProxy | "
               f"{'PASS' if ka_ok else 'MISS'} |")
    out.append(f"| CPU us per keep-alive request | {fmt(med('tern', 'ka_cpu'))} | "
               f"{fmt(med('haproxy', 'ka_cpu'))} | {fmt(med('nginx', 'ka_cpu'))} | "
               f"{ratio(med('tern', 'ka_cpu'), med('haproxy', 'ka_cpu'))} | "
               f"{ratio(med('tern', 'ka_cpu'), med('nginx', 'ka_cpu'))} | | |")
    c0s = {p: med(p, "ka_cpu0") for p in PROXIES}
    if proxy_cpus and all(c0s.values()):
        out.append(f"| keep-alive: wrk + origin CPU us per request (both on CPU 0) | "
                   + " | ".join(f"{c0s[p]:.1f}" for p in PROXIES) + " | | | | |")
        out.append(f"| keep-alive: rate at which CPU 0 is full, req/s | "
                   + " | ".join(fmt(1e6 / c0s[p]) for p in PROXIES) + " | | | | |")
        out.append("")
        out.append(f"The keep-alive target, 1.2x HAProxy, is {fmt(1.2 * h_ka)} req/s; with tern in "
                   f"front, wrk and the origin fill CPU 0 at {fmt(1e6 / c0s['tern'])} (see "
                   "bench/README.md, \"What bounds the request rate\").")
    out.append("")
    out.append("Every run (per second): " + "; ".join(
        f"{LABEL[p]} full handshakes {[round(x) for x in results[p]['hs']]}, "
        f"wrk close {[round(x) for x in results[p]['wrk']]}, "
        f"keep-alive {[round(x) for x in results[p]['ka']]}" for p in PROXIES))
    for n in notes:
        out.append(f"\n- note: {n}")
    out.append("\n")
    text = "\n".join(out)
    new = not os.path.exists(a.out)
    with open(a.out, "a") as f:
        if new:
            f.write("# TLS benchmark results (bench/tls_bench.py)\n\n"
                    "Appended by each run; see the script's header for the method.\n\n")
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
