#!/usr/bin/env python3
"""tern vs HAProxy vs nginx: one benchmark run on this machine.

Started by bench/run.sh, which passes its arguments through. Everything runs on
127.0.0.1, on free high ports picked at start, as children of this process, and
is stopped by PID when the run ends (normally, on error, or on a signal). See
bench/README.md for what each figure means and the caveats.

Standard library only.
"""

import argparse
import datetime
import errno
import json
import os
import platform
import re
import select
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time

from common import (BODY_PATH, BODY_SIZE, HERE, LABEL, PROXIES, REPO, Child, busy_between, cpu_seconds, cpu_split,
                    cpu_times, cpus_for, fmt_f2, fmt_f3, fmt_int, fmt_us, haproxy_conf, http_get, loadavg,
                    logger, make_workdir, need_tools, nginx_proxy_conf, origin_conf, parse_wrk, pick_ports,
                    print_summary, raise_nofile, resolve_tern, response_complete, rss_kb, run_guarded,
                    run_measured, set_affinity, stop_all, tcp_open, tern_check, tern_conf, tern_missing,
                    versions, wait_ready)

NOISY = 0.15  # cores used by other processes during a run above which it is flagged

# Figures from the issue, printed in RESULTS.md for context only (they come
# from another machine; the targets below are judged on this run's numbers).
REFERENCE = [
    ("keep-alive, 50 conns", "51k req/s, 17.9 us CPU/req", "54k req/s, 16.2 us CPU/req", "133k req/s"),
    ("Connection: close", "13k conn/s", "24k conn/s", ""),
    ("TCP bulk, 1 stream", "1.3 GB/s", "", "2.7 GB/s"),
    ("idle HTTP connection", "1,168 bytes", "642 bytes", ""),
]

log = logger("bench")


# --------------------------------------------------------------------------
# targets


class Target:
    """Something wrk and tcpbulk send to: a proxy (with its processes) or the origin."""

    def __init__(self, name, http_port, tcp_port, child=None):
        self.name = name
        self.http_port = http_port
        self.tcp_port = tcp_port
        self.child = child
        self.failed = None  # reason, when it could not be started
        self.tcp_failed = None
        self.restarts = 0
        self.ever_up = False
        self.notes = []

    def pids(self):
        return self.child.pids() if self.child else []


# --------------------------------------------------------------------------
# the benchmark


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = None
        self.targets = {}
        self.results = {}  # test -> target -> [per-round dicts]
        self.idle = {}  # target -> dict
        self.notes = []
        self.env = {}
        self.stream_module = None
        self.retries_left = args.retries

    # ---- layout

    def cpus(self, role):
        """CPU sets: the proxy gets CPU 1 alone, clients and origin share CPU 0."""
        return cpus_for(self.args.pin, self.ncpu, role)

    # ---- setup

    def setup(self):
        a = self.args
        self.ncpu = os.cpu_count() or 1
        self.nofile = raise_nofile()
        # HAProxy reserves two descriptors per connection (client and server
        # side) and refuses a maxconn it cannot back: maxsock = 2*maxconn + 15.
        fit = (self.nofile - 15) // 2 - 200
        if a.idle_conns > fit:
            new = max(100, fit // 100 * 100)
            self.notes.append("open-file hard limit is %d and cannot be raised here, so HAProxy can "
                              "hold at most %d connections: the idle test uses %d connections "
                              "per proxy instead of %d" % (self.nofile, (self.nofile - 15) // 2, new,
                                                             a.idle_conns))
            a.idle_conns = new
        self.haproxy_maxconn = min((self.nofile - 15) // 2, max(2000, a.idle_conns + 1000))
        self.tmp = make_workdir("tern-bench-", log)

        # helpers
        cc = shutil.which("cc") or shutil.which("gcc")
        self.tcpbulk = self.tmp + "/tcpbulk"
        if cc is None:
            raise SystemExit("bench: a C compiler (cc) is needed to build bench/tcpbulk.c")
        subprocess.check_call([cc, "-O2", "-pthread", "-o", self.tcpbulk, HERE + "/tcpbulk.c"])

        (self.p_origin, self.p_sink, self.p_ha, self.p_ha_tcp, self.p_ng, self.p_ng_tcp,
         self.p_tern, self.p_tern_tcp) = pick_ports(8)

        # versions and environment
        self.env["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S %Z").strip()
        self.env["kernel"] = platform.release()
        self.env["cpu"] = self.cpu_model()
        self.env["ncpu"] = self.ncpu
        self.env["load_start"] = loadavg()
        self.env.update(versions())

        # stream module for nginx TCP
        nv = subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr
        if "--with-stream " in nv + " " and "--with-stream=dynamic" not in nv:
            self.stream_module = ""  # built in
        else:
            for cand in ("/usr/lib/nginx/modules/ngx_stream_module.so",
                         "/usr/share/nginx/modules/ngx_stream_module.so"):
                if os.path.exists(cand):
                    self.stream_module = cand
        if self.stream_module is None:
            self.notes.append("nginx TCP: n/a - nginx-light has no stream module "
                              "(--with-stream=dynamic, ngx_stream_module.so not installed; "
                              "the libnginx-mod-stream package would provide it)")

        # origin and sink
        with open(self.tmp + "/origin.conf", "w") as f:
            f.write(origin_conf(self.tmp, [self.p_origin], self.nofile))
        self.origin = Child("origin", ["nginx", "-p", self.tmp + "/", "-c", self.tmp + "/origin.conf"],
                            self.cpus("origin"), self.tmp + "/origin.log").start()
        if not wait_ready(self.origin, self.p_origin, 10):
            raise SystemExit("bench: origin nginx did not start: %s" % "\n".join(self.origin.log_tail()))
        self.sink = Child("sink", [self.tcpbulk, "sink", str(self.p_sink)], self.cpus("origin"),
                          self.tmp + "/sink.log").start()
        for _ in range(50):
            if tcp_open(self.p_sink):
                break
            time.sleep(0.1)
        self.targets["direct"] = Target("direct", self.p_origin, self.p_sink, None)

        want = [p for p in PROXIES if p in a.only]
        if "haproxy" in want:
            self.start_haproxy()
        if "nginx" in want:
            self.start_nginx()
        if "tern" in want:
            self.start_tern()

    def cpu_model(self):
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor()

    def start_haproxy(self):
        with open(self.tmp + "/haproxy.cfg", "w") as f:
            f.write(haproxy_conf(self.p_ha, [("o1", self.p_origin)], self.haproxy_maxconn,
                                 tcp=(self.p_ha_tcp, self.p_sink)))
        c = Child("haproxy", ["haproxy", "-db", "-f", self.tmp + "/haproxy.cfg"], self.cpus("proxy"),
                  self.tmp + "/haproxy.log")
        self.add_proxy("haproxy", c, self.p_ha, self.p_ha_tcp)

    def start_nginx(self):
        stream = None if self.stream_module is None else (self.stream_module, self.p_ng_tcp, self.p_sink)
        with open(self.tmp + "/nginx.conf", "w") as f:
            f.write(nginx_proxy_conf(self.tmp, self.p_ng, [("o1", self.p_origin)], self.nofile,
                                     stream=stream))
        c = Child("nginx", ["nginx", "-p", self.tmp + "/", "-c", self.tmp + "/nginx.conf"],
                  self.cpus("proxy"), self.tmp + "/nginx.log")
        t = self.add_proxy("nginx", c, self.p_ng, self.p_ng_tcp)
        if self.stream_module is None:
            t.tcp_failed = "no stream module"

    def start_tern(self):
        path = self.args.tern
        t = Target("tern", self.p_tern, self.p_tern_tcp, None)
        self.targets["tern"] = t
        t.failed = tern_missing(path)
        if t.failed:
            log("tern: failed to start (%s)" % t.failed)
            return
        cfg = self.tmp + "/tern.yaml"
        web = [("o1", self.p_origin)]
        with open(cfg, "w") as f:
            f.write(tern_conf(self.p_tern, web, "generated by bench/bench.py",
                              tcp=(self.p_tern_tcp, self.p_sink)))
        err = tern_check(path, cfg)
        if err:
            # A tern without mode: tcp still gets its HTTP figures.
            t.notes.append("`tern -t` rejected the config with the tcp listener: %s" % err)
            with open(cfg, "w") as f:
                f.write(tern_conf(self.p_tern, web, "generated by bench/bench.py"))
            err = tern_check(path, cfg)
            if err:
                t.failed = "config check failed: %s" % err
                log("tern: failed to start (%s)" % t.failed)
                return
            t.tcp_failed = "no tcp listener (config rejected)"
        c = Child("tern", [path, "-c", cfg], self.cpus("proxy"), self.tmp + "/tern.log")
        t.child = c
        self.start_target(t)

    def add_proxy(self, name, child, port, tcp_port):
        t = Target(name, port, tcp_port, child)
        self.targets[name] = t
        self.start_target(t)
        return t

    def start_target(self, t):
        try:
            t.child.start()
        except OSError as e:
            t.failed = str(e)
            log("%s: failed to start (%s)" % (t.name, e))
            return False
        if wait_ready(t.child, t.http_port, 10):
            t.failed = None
            t.ever_up = True
            log("%s: up on 127.0.0.1:%d (pids %s)" % (t.name, t.http_port, t.pids()))
            return True
        tail = t.child.log_tail(4)
        if t.child.alive():
            t.failed = "not serving HTTP 200 on its port within 10 s"
        else:
            t.failed = "exited with status %s" % t.child.popen.returncode
        if tail:
            t.failed += ": " + " / ".join(tail)
        log("%s: failed to start (%s)" % (t.name, t.failed))
        t.child.stop()
        return False

    def ensure(self, t):
        """A proxy that died is restarted once per test; False if it cannot serve."""
        if t.child is None:
            return t.name == "direct"
        if not t.ever_up:
            return False
        if t.child.alive():
            return True
        if t.restarts >= 3:
            return False
        t.restarts += 1
        tail = " / ".join(t.child.log_tail(3))
        t.notes.append("%s exited (rc %s) and was restarted; log: %s"
                       % (t.name, t.child.popen.returncode if t.child.popen else "?", tail))
        log("%s: not running, restarting" % t.name)
        return self.start_target(t)

    def order(self, rnd):
        names = [n for n in ["direct"] + PROXIES if n in self.targets]
        k = rnd % len(names)
        return names[k:] + names[:k]

    # ---- tests

    def wrk_test(self, t, conns, duration, close=False):
        if not self.ensure(t):
            return {"failed": t.failed or "not running"}
        direct = t.name == "direct"
        if direct and self.cpus("origin-direct"):
            set_affinity(self.origin.pids(), self.cpus("origin-direct"))
        argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "--latency", "--timeout", "5s"]
        if close:
            argv += ["-H", "Connection: close"]
        argv.append("http://127.0.0.1:%d%s" % (t.http_port, BODY_PATH))
        pids = t.pids()
        opids = self.origin.pids()
        (u0, k0), o0, s0, w0 = cpu_split(pids), cpu_seconds(opids), cpu_times(), time.time()
        rc, out, client_cpu = run_measured(argv, self.cpus("client"), duration + 20)
        (u1, k1), o1, s1, w1 = cpu_split(pids), cpu_seconds(opids), cpu_times(), time.time()
        c0, c1 = u0 + k0, u1 + k1
        if direct and self.cpus("origin-direct"):
            set_affinity(self.origin.pids(), self.cpus("origin"))
        r = parse_wrk(out)
        if rc != 0 or "requests" not in r:
            return {"failed": "wrk rc=%s: %s" % (rc, out.strip().splitlines()[-1:] if out.strip() else "")}
        if t.child is not None and not t.child.alive():
            r["died"] = True
        good = r["requests"] - r["non2xx"]
        r["rps"] = good / r["seconds"] if r["seconds"] else 0.0
        if not direct:
            r["cpu_s"] = c1 - c0
            r["cpu_us"] = (c1 - c0) / good * 1e6 if good > 0 else None
            r["user_us"] = (u1 - u0) / good * 1e6 if good > 0 else None
            r["kernel_us"] = (k1 - k0) / good * 1e6 if good > 0 else None
        r["origin_cpu_s"] = o1 - o0
        r["client_cpu_s"] = client_cpu
        if not direct and good > 0:
            # With --pin split, wrk and the origin share CPU 0: what they
            # spend per request bounds the rate whatever the proxy does.
            r["cpu0_us"] = (client_cpu + o1 - o0) / good * 1e6
        busy = busy_between(s0, s1)
        r["busy"] = busy
        ours = (0 if direct else c1 - c0) + (o1 - o0) + client_cpu
        wall = w1 - w0
        r["other_cores"] = max(0.0, sum(busy.values()) - ours / wall) if wall > 0 else 0.0
        if not direct and wall > 0:
            r["proxy_cores"] = (c1 - c0) / wall
        bad = r["non2xx"] + r["errors"]
        if r["requests"] and bad > 0.01 * r["requests"]:
            r["warn"] = "%d non-2xx, %s" % (r["non2xx"], r["err_detail"])
        return r

    def tcp_test(self, t, nbytes):
        if t.tcp_failed:
            return {"failed": t.tcp_failed}
        if not self.ensure(t):
            return {"failed": t.failed or "not running"}
        direct = t.name == "direct"
        if direct and self.cpus("origin-direct"):
            set_affinity(self.sink.pids(), self.cpus("origin-direct"))
        pids = t.pids()
        kpids = self.sink.pids()
        timeout = 10 + nbytes / 150e6
        c0, k0, s0, w0 = cpu_seconds(pids), cpu_seconds(kpids), cpu_times(), time.time()
        rc, out, client_cpu = run_measured([self.tcpbulk, "send", "127.0.0.1", str(t.tcp_port), str(nbytes),
                                            str(int(timeout)), "3"], self.cpus("client"), timeout + 10)
        c1, k1, s1, w1 = cpu_seconds(pids), cpu_seconds(kpids), cpu_times(), time.time()
        if direct and self.cpus("origin-direct"):
            set_affinity(self.sink.pids(), self.cpus("origin"))
        m = re.search(r"bytes=(\d+) seconds=([\d.]+)", out)
        if rc != 0 or not m:
            why = re.search(r"(stalled|timeout) bytes=(\d+)", out)
            if why:
                msg = ("no progress for 3 s" if why.group(1) == "stalled" else "timed out") + \
                    " after %.1f MiB of %.0f MiB" % (int(why.group(2)) / 2 ** 20, nbytes / 2 ** 20)
            else:
                msg = "tcpbulk rc=%s: %s" % (rc, " ".join(out.split())[:160])
            if t.child is not None and not t.child.alive():
                msg += " (process died)"
            return {"failed": msg}
        b, sec = int(m.group(1)), float(m.group(2))
        r = {"bytes": b, "seconds": sec, "gbps": b / sec / 1e9, "busy": busy_between(s0, s1),
             "client_cpu_s": client_cpu, "sink_cpu_s": k1 - k0}
        ours = (0 if direct else c1 - c0) + (k1 - k0) + client_cpu
        if w1 > w0:
            r["other_cores"] = max(0.0, sum(r["busy"].values()) - ours / (w1 - w0))
        if not direct:
            r["cpu_s"] = c1 - c0
            r["cpu_s_gib"] = (c1 - c0) / (b / 2 ** 30)
            if w1 > w0:
                r["proxy_cores"] = (c1 - c0) / (w1 - w0)
        if t.child is not None and not t.child.alive():
            r["died"] = True
        return r

    def idle_test(self, t, n):
        if not self.ensure(t):
            return {"failed": t.failed or "not running"}
        for _ in range(20):
            http_get(t.http_port)
        time.sleep(0.5)
        rss0 = rss_kb(t.pids())
        t0 = time.time()
        socks, errs = open_idle(t.http_port, n, batch=self.args.idle_batch, deadline=time.time() + 60)
        opened = time.time() - t0
        time.sleep(1.5)
        rss1 = rss_kb(t.pids())
        alive = count_alive(socks)
        for s in socks:
            s.close()
        r = {"requested": n, "completed": len(socks), "alive": alive, "errors": errs,
             "rss0_kb": rss0, "rss1_kb": rss1, "open_s": opened}
        if alive > 0:
            r["bytes"] = (rss1 - rss0) * 1024 / alive
        if alive < n:
            r["warn"] = "%d of %d connections held (%d errors)" % (alive, n, errs)
        if t.child is not None and not t.child.alive():
            r["died"] = True
        time.sleep(1.0)
        return r

    def record(self, test, name, r):
        self.results.setdefault(test, {}).setdefault(name, []).append(r)
        if "failed" in r:
            desc = "FAILED: " + r["failed"]
        elif test == "tcp":
            desc = "%.2f GB/s" % r["gbps"] + (", %.3f CPU s/GiB" % r["cpu_s_gib"] if "cpu_s_gib" in r else "")
        elif test == "idle":
            desc = "%s bytes/conn (%d held, RSS %d -> %d kB)" % (
                "%.0f" % r["bytes"] if "bytes" in r else "n/a", r["alive"], r["rss0_kb"], r["rss1_kb"])
        else:
            desc = "%.0f req/s p50 %s p99 %s" % (r["rps"], fmt_us(r.get("p50_us")), fmt_us(r.get("p99_us")))
            if r.get("cpu_us") is not None:
                desc += ", %.1f us CPU/req" % r["cpu_us"]
            desc += ", busy " + "/".join("%.0f%%" % (v * 100) for v in r["busy"].values())
        if r.get("other_cores") is not None and r["other_cores"] > NOISY:
            desc += " [noisy: other processes used %.2f cores]" % r["other_cores"]
        if r.get("warn"):
            desc += " [%s]" % r["warn"]
        if r.get("died"):
            desc += " [process died]"
        log("  %-8s %-7s %s" % (test, name, desc))

    def run(self):
        a = self.args
        tests = [("ka50", dict(conns=50)), ("ka400", dict(conns=400)), ("close", dict(conns=50, close=True))]
        t_start = time.time()

        if a.idle_conns > 0:
            log("idle connections: %d per proxy" % a.idle_conns)
            for name in PROXIES:
                if name in self.targets:
                    self.record("idle", name, self.idle_test(self.targets[name], a.idle_conns))

        log("warm-up")
        for name in self.order(0):
            t = self.targets[name]
            if self.ensure(t):
                # At both connection counts, so that every proxy holds the
                # backend connections of the 400-connection test before it.
                for c in (50, 400):
                    run_measured(["wrk", "-t1", "-c%d" % c, "-d1s",
                                  "http://127.0.0.1:%d%s" % (t.http_port, BODY_PATH)],
                                 self.cpus("client"), 15)

        for rnd in range(a.rounds):
            bg = self.wait_quiet(a.wait_quiet)
            self.env.setdefault("background", []).append(bg)
            log("background load before round %d: %.2f cores (other processes on this machine)" % (rnd + 1, bg))
            order = self.order(rnd)
            log("round %d/%d, order: %s" % (rnd + 1, a.rounds, ", ".join(order)))
            for test, kw in tests:
                for name in order:
                    t = self.targets[name]
                    self.record(test, name, self.retry_noisy(
                        lambda: self.wrk_test(t, duration=a.duration, **kw), test, name))
            for name in order:
                t = self.targets[name]
                self.record("tcp", name, self.retry_noisy(
                    lambda: self.tcp_test(t, int(a.tcp_gib * 2 ** 30)), "tcp", name))
        self.env["elapsed"] = time.time() - t_start
        self.env["load_end"] = loadavg()

    def wait_quiet(self, limit):
        """Background load now; if it is high, wait up to limit seconds for it to drop."""
        bg = self.background()
        if limit > 0 and bg > self.args.quiet_cores:
            log("background load %.2f cores; waiting up to %d s for it to drop below %.2f"
                % (bg, limit, self.args.quiet_cores))
            deadline = time.time() + limit
            while bg > self.args.quiet_cores and time.time() < deadline:
                bg = self.background()
        return bg

    def retry_noisy(self, run, test, name):
        """Run once; while other processes took more than NOISY cores during the
        run and the retry budget lasts, wait for quiet and run again, keeping
        the quietest run."""
        r = run()
        tries = 0
        while ("failed" not in r and r.get("other_cores", 0) > NOISY and self.retries_left > 0
               and tries < 2):
            self.retries_left -= 1
            tries += 1
            log("  %-8s %-7s other processes used %.2f cores: running it again" % (test, name, r["other_cores"]))
            self.wait_quiet(min(self.args.wait_quiet, 10))
            r2 = run()
            if "failed" in r2:
                break
            if r2.get("other_cores", 0) < r["other_cores"]:
                r2["retried"] = tries
                r = r2
            else:
                r["retried"] = tries
        return r

    def background(self, seconds=1.0):
        """CPU cores kept busy by other processes while ours sit idle."""
        s0 = cpu_times()
        time.sleep(seconds)
        return sum(busy_between(s0, cpu_times()).values())

    # ---- report

    def med(self, test, name, key):
        """Median over the quiet runs (other processes under NOISY cores), or
        over all runs when none was quiet."""
        runs = [r for r in self.results.get(test, {}).get(name, [])
                if "failed" not in r and r.get(key) is not None]
        quiet = [r for r in runs if r.get("other_cores", 0) <= NOISY]
        vals = [r[key] for r in (quiet or runs)]
        return statistics.median(vals) if vals else None

    def report(self):
        a = self.args
        L = []
        L.append("# tern vs HAProxy vs nginx")
        L.append("")
        L.append("Generated by `bench/run.sh` on %s (%.0f s). See bench/README.md for the method." %
                 (self.env["date"], self.env.get("elapsed", 0)))
        L.append("")
        L.append("- machine: %s, %d CPUs, Linux %s; load average %s at start, %s at end" %
                 (self.env["cpu"], self.env["ncpu"], self.env["kernel"], self.env["load_start"],
                  self.env.get("load_end", "?")))
        built = ""
        if a.tern and os.path.exists(a.tern):
            built = ", built %s" % time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(a.tern)))
        L.append("- %s; %s; %s; tern from tree %s (`%s`%s)" % (
            self.env["haproxy"], self.env["nginx"], self.env["wrk"], self.env["tern_commit"], a.tern_display,
            built))
        L.append("- %d round(s); wrk -t1 --latency, %d s per run; TCP bulk %.2f GiB per run; "
                 "%d idle connections; figures are medians over the quiet rounds (all rounds if none was quiet)" %
                 (a.rounds, a.duration, a.tcp_gib, a.idle_conns))
        if a.pin == "split" and self.ncpu >= 2:
            L.append("- pinning (`--pin split`): proxy on CPU 1; wrk, tcpbulk sender, origin nginx and "
                     "sink on CPU 0 (for direct runs the origin/sink move to CPU 1)")
        elif a.pin == "none":
            L.append("- pinning (`--pin none`): none, the scheduler places everything")
        else:
            L.append("- pinning (`--pin one`): everything on CPU 0")
        if self.env.get("background"):
            L.append("- background load (cores busy with other processes, sampled for 1 s before each "
                     "round while ours were idle): %s" % ", ".join("%.2f" % x for x in self.env["background"]))
        L.append("- every proxy runs 1 worker (tern `workers: 1`, HAProxy `nbthread 1`, nginx "
                 "`worker_processes 1`), no access logs, in front of the same origin "
                 "(nginx, 1 worker, %d-byte static file)" % BODY_SIZE)
        L.append("")
        L.append("Reference figures from the issue (another machine, for context only):")
        L.append("")
        L.append("| | HAProxy 2.6 | nginx | direct |")
        L.append("| --- | --- | --- | --- |")
        for row in REFERENCE:
            L.append("| %s | %s | %s | %s |" % row)
        L.append("")
        L.append("## Results")
        L.append("")
        table = self.table()
        L.extend(table)
        verdicts = [row.rstrip(" |").rsplit("|", 1)[-1].strip() for row in table[2:]]
        L.append("")
        L.append("Targets: %d PASS, %d MISS, %d n/a." % (verdicts.count("PASS"), verdicts.count("MISS"),
                                                         verdicts.count("n/a")))
        L.append("")
        L.append("Ratios are tern's median divided by the other's median. CPU figures are the proxy's "
                 "own utime+stime (all threads / worker processes) over the run divided by requests "
                 "(or GiB) completed. A target line reads PASS or MISS; `n/a` when a figure is missing.")
        L.append("")
        if a.pin == "split" and self.ncpu >= 2:
            L.extend(self.ceiling())
        L.extend(self.split())
        L.append("## Every run")
        L.append("")
        L.extend(self.raw())
        notes = list(self.notes)
        for name, t in self.targets.items():
            if t.failed:
                notes.append("%s: failed to start: %s" % (name, t.failed))
            if t.tcp_failed and name != "nginx":
                notes.append("%s TCP: n/a (%s)" % (name, t.tcp_failed))
            notes.extend("%s: %s" % (name, n) for n in t.notes)
        noisy, retried, bound = [], [], []
        for test, by in self.results.items():
            for name, runs in by.items():
                for i, r in enumerate(runs):
                    if r.get("warn"):
                        notes.append("%s %s run %d: %s" % (name, test, i + 1, r["warn"]))
                    if r.get("died"):
                        notes.append("%s %s run %d: the process died during the run" % (name, test, i + 1))
                    if r.get("proxy_cores") is not None and r["proxy_cores"] < 0.85 \
                            and r.get("other_cores", 0) <= NOISY:
                        bound.append("%s/%s/%d (%.2f cores%s)" % (
                            test, LABEL[name], i + 1, r["proxy_cores"],
                            ", CPU 0 %.0f%%" % (r["busy"][0] * 100) if 0 in r.get("busy", {}) else ""))
                    if r.get("retried"):
                        retried.append("%s/%s/%d" % (test, LABEL[name], i + 1))
                    if r.get("other_cores") is not None and r["other_cores"] > NOISY:
                        noisy.append("%s/%s/%d (%.2f)" % (test, LABEL[name], i + 1, r["other_cores"]))
        if bound:
            notes.append("quiet runs where the proxy used less than 0.85 of its core, i.e. its CPU was not "
                         "the limit: the load generator was (CPU 0 near 100%%: wrk, sender, origin), or "
                         "the proxy waited (test/target/round (proxy cores, CPU 0 busy)): %s"
                         % ", ".join(bound))
        if retried:
            notes.append("repeated because other processes were busy (the quieter run is kept): %s"
                         % ", ".join(retried))
        if noisy:
            notes.append("noisy runs (other processes kept more than %.2f cores busy; test/target/round "
                         "(cores)): %s" % (NOISY, ", ".join(noisy)))
        L.append("")
        L.append("## Notes")
        L.append("")
        if notes:
            L.extend("- " + n for n in notes)
        else:
            L.append("- none")
        L.append("")
        return "\n".join(L)

    def table(self):
        # (test, key, label, formatter, lower_is_better, target)
        rows = [
            ("ka50", "rps", "keep-alive 50 conns: req/s", fmt_int, False, ("haproxy", ">=", 1.2)),
            ("ka50", "p50_us", "keep-alive 50 conns: p50 latency", fmt_us, True, None),
            ("ka50", "p99_us", "keep-alive 50 conns: p99 latency", fmt_us, True, ("haproxy", "<=", 1.0)),
            ("ka50", "cpu_us", "keep-alive 50 conns: CPU us/request", fmt_f2, True, ("haproxy", "<=", 0.75)),
            ("ka400", "rps", "keep-alive 400 conns: req/s", fmt_int, False, ("haproxy", ">=", 1.2)),
            ("ka400", "p50_us", "keep-alive 400 conns: p50 latency", fmt_us, True, None),
            ("ka400", "p99_us", "keep-alive 400 conns: p99 latency", fmt_us, True, ("haproxy", "<=", 1.0)),
            ("ka400", "cpu_us", "keep-alive 400 conns: CPU us/request", fmt_f2, True, ("haproxy", "<=", 0.75)),
            ("close", "rps", "Connection: close, 50 conns: conn/s", fmt_int, False, ("nginx", ">=", 1.0)),
            ("close", "p99_us", "Connection: close: p99 latency", fmt_us, True, None),
            ("close", "cpu_us", "Connection: close: CPU us/connection", fmt_f2, True, None),
            ("tcp", "gbps", "TCP bulk, 1 stream: GB/s", fmt_f2, False, ("haproxy", ">=", 1.1)),
            ("tcp", "cpu_s_gib", "TCP bulk: CPU s/GiB", fmt_f3, True, ("haproxy", "<=", 1.0)),
            ("idle", "bytes", "idle HTTP connection: bytes (RSS)", fmt_int, True, ("abs", "<=", 512)),
        ]
        out = ["| metric | tern | HAProxy | nginx | direct | tern/HAProxy | tern/nginx | tern/direct | target | result |",
               "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
        for test, key, label, fmt, lower, target in rows:
            v = {n: self.med(test, n, key) for n in ["tern", "haproxy", "nginx", "direct"]}
            cells = []
            for n in ["tern", "haproxy", "nginx", "direct"]:
                if v[n] is not None:
                    cells.append(fmt(v[n]))
                elif n == "direct" and key in ("cpu_us", "cpu_s_gib", "bytes"):
                    cells.append("-")
                else:
                    cells.append(self.why_missing(test, n))
            ratios = [ratio(v["tern"], v[o]) for o in ("haproxy", "nginx", "direct")]
            tgt, res = "", ""
            if target:
                other, op, factor = target
                if other == "abs":
                    tgt = "tern %s %s" % (op, factor)
                    ref = factor
                else:
                    tgt = "tern %s %sx %s" % (op, ("%g" % factor), LABEL[other])
                    ref = v[other] * factor if v[other] is not None else None
                if v["tern"] is None or ref is None:
                    res = "n/a"
                elif (v["tern"] >= ref) if op == ">=" else (v["tern"] <= ref):
                    res = "PASS"
                else:
                    res = "MISS"
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" %
                       (label, cells[0], cells[1], cells[2], cells[3], ratios[0], ratios[1], ratios[2],
                        tgt, res))
        return out

    # The wrk tests that the summary sections go through, with their labels.
    WRK_TESTS = (("ka50", "keep-alive 50"), ("ka400", "keep-alive 400"), ("close", "Connection: close"))

    def ceiling(self):
        """How close each proxy ran to the rate that CPU 0 alone allows: the
        CPU that wrk and the origin spent per request with that proxy in
        front, and 1 s divided by it."""
        L = ["## What bounds the request rate", "",
             "wrk and the origin share CPU 0, so the CPU they spend per request caps the rate "
             "at 1 s / that, whichever proxy is on CPU 1. A proxy at 95-100% of this ceiling "
             "cannot go faster here; its CPU per request is the figure that still tells proxies "
             "apart.", "",
             "| test | proxy | req/s | wrk + origin CPU us/request | CPU 0 ceiling, req/s | "
             "share of ceiling |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
        for test, label in self.WRK_TESTS:
            for n in ("tern", "haproxy", "nginx"):
                rps, c0 = self.med(test, n, "rps"), self.med(test, n, "cpu0_us")
                if rps is None or not c0:
                    continue
                L.append("| %s | %s | %s | %s | %s | %.0f%% |" % (
                    label, LABEL[n], fmt_int(rps), fmt_f2(c0), fmt_int(1e6 / c0), 100 * rps * c0 / 1e6))
        L.append("")
        for test in ("ka50", "ka400"):
            h, c0 = self.med(test, "haproxy", "rps"), self.med(test, "tern", "cpu0_us")
            if h and c0:
                L.append("- %s: the target, 1.2x HAProxy, is %s req/s; with tern in front CPU 0 "
                         "allows %s." % (test, fmt_int(1.2 * h), fmt_int(1e6 / c0)))
        L.append("")
        return L

    def split(self):
        """The proxy's CPU per request in its own code (utime) and in the
        kernel's work on its behalf (stime): system calls, and on loopback
        the TCP receive processing of whatever it sends."""
        L = ["## Where the proxy's CPU goes", "",
             "utime and stime of the proxy over the run, per request. The kernel's part is "
             "mostly the same work for every proxy: the same system calls and TCP segments "
             "per request (bench/README.md); a proxy that sleeps more often also makes more "
             "epoll_wait calls. tern's stime over HAProxy's utime+stime is the lowest ratio "
             "that cutting user-space work alone could reach.", "",
             "| test | proxy | user us/request | kernel us/request | kernel share |",
             "| --- | --- | ---: | ---: | ---: |"]
        for test, label in self.WRK_TESTS:
            for n in ("tern", "haproxy", "nginx"):
                u, k = self.med(test, n, "user_us"), self.med(test, n, "kernel_us")
                if u is None or k is None or u + k <= 0:
                    continue
                L.append("| %s | %s | %s | %s | %.0f%% |" % (label, LABEL[n], fmt_f2(u), fmt_f2(k),
                                                            100 * k / (u + k)))
        L.append("")
        for test in ("ka50", "ka400"):
            k, h = self.med(test, "tern", "kernel_us"), self.med(test, "haproxy", "cpu_us")
            if k and h:
                L.append("- %s: tern's kernel part alone is %.2fx HAProxy's CPU per request "
                         "(target 0.75x)." % (test, k / h))
        L.append("")
        return L

    def why_missing(self, test, name):
        if name not in self.targets:
            return "not run"
        t = self.targets[name]
        if t.failed and name == "tern":
            return "failed to start"
        runs = self.results.get(test, {}).get(name, [])
        if runs and all("failed" in r for r in runs):
            return "n/a"
        return "n/a"

    def raw(self):
        out = ["| test | target | round | result | proxy CPU | client CPU | origin/sink CPU | CPU0/CPU1 busy "
               "| other load (cores) |",
               "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for test in ("ka50", "ka400", "close", "tcp", "idle"):
            for name in ["tern", "haproxy", "nginx", "direct"]:
                for i, r in enumerate(self.results.get(test, {}).get(name, [])):
                    if "failed" in r:
                        res = "failed: " + r["failed"].replace("|", "/")
                    elif test == "tcp":
                        res = "%.2f GB/s (%.2f GiB in %.2f s)" % (r["gbps"], r["bytes"] / 2 ** 30, r["seconds"])
                    elif test == "idle":
                        res = "%s bytes/conn; %d held; RSS %d -> %d kB; opened in %.1f s" % (
                            "%.0f" % r["bytes"] if "bytes" in r else "n/a", r["alive"], r["rss0_kb"],
                            r["rss1_kb"], r["open_s"])
                    else:
                        res = "%s req/s, p50 %s, p75 %s, p90 %s, p99 %s, %d req, %d non-2xx, %d socket errors" % (
                            fmt_int(r["rps"]), fmt_us(r.get("p50_us")), fmt_us(r.get("p75_us")),
                            fmt_us(r.get("p90_us")), fmt_us(r.get("p99_us")), r["requests"], r["non2xx"],
                            r["errors"])
                    cpu = ""
                    if r.get("cpu_s") is not None:
                        cpu = "%.2f s" % r["cpu_s"]
                    if r.get("proxy_cores") is not None:
                        cpu += " (%.2f cores)" % r["proxy_cores"]
                    ccpu = "%.2f s" % r["client_cpu_s"] if r.get("client_cpu_s") is not None else ""
                    busy = "/".join("%.0f%%" % (x * 100) for x in r["busy"].values()) if r.get("busy") else ""
                    other = "%.2f" % r["other_cores"] if r.get("other_cores") is not None else ""
                    ocpu = r.get("origin_cpu_s", r.get("sink_cpu_s"))
                    ocpu = "%.2f s" % ocpu if ocpu is not None else ""
                    out.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s |" %
                               (test, LABEL[name], i + 1, res, cpu, ccpu, ocpu, busy, other))
        return out


def open_idle(port, n, batch, deadline):
    """Open n keep-alive connections, each completing one request; at most
    `batch` requests are in flight at once. Returns (open sockets, errors)."""
    sel = selectors.DefaultSelector()
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (BODY_PATH, port)).encode()
    done, errors, started, pending = [], 0, 0, 0
    bufs = {}

    def drop(s):
        nonlocal errors, pending
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        errors += 1
        pending -= 1

    while (started < n or pending > 0) and time.time() < deadline:
        while started < n and pending < batch:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            started += 1
            rc = s.connect_ex(("127.0.0.1", port))
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                errors += 1
                continue
            pending += 1
            sel.register(s, selectors.EVENT_WRITE, "connect")
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            if key.data == "connect":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    drop(s)
                    continue
                try:
                    s.send(req)
                except OSError:
                    drop(s)
                    continue
                bufs[s.fileno()] = b""
                sel.modify(s, selectors.EVENT_READ, "read")
            else:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    drop(s)
                    continue
                buf = bufs[s.fileno()] + data
                if response_complete(buf):
                    sel.unregister(s)
                    pending -= 1
                    if buf.startswith(b"HTTP/1.1 200") or buf.startswith(b"HTTP/1.0 200"):
                        done.append(s)
                    else:
                        s.close()
                        errors += 1
                else:
                    bufs[s.fileno()] = buf
    for key in list(sel.get_map().values()):  # timed out
        sel.unregister(key.fileobj)
        key.fileobj.close()
        errors += 1
    sel.close()
    return done, errors


def count_alive(socks):
    """Sockets the proxy has not closed (nothing readable: no EOF, no data)."""
    p = select.poll()
    for s in socks:
        p.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
    dead = len(p.poll(0))
    return len(socks) - dead


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    return "%.2fx" % (a / b)


def main():
    ap = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__.splitlines()[0])
    ap.add_argument("tern", nargs="?", default=os.path.join(REPO, "build/lb/tern"),
                    help="path to the tern binary (default: build/lb/tern)")
    ap.add_argument("--quick", action="store_true", help="one round of short runs (about 2 minutes)")
    ap.add_argument("--rounds", type=int, help="rounds of every test (default 3, --quick 1)")
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 6, --quick 4)")
    ap.add_argument("--tcp-gib", type=float, help="GiB per TCP bulk run (default 4, --quick 1)")
    ap.add_argument("--idle-conns", type=int, default=10000, help="idle connections per proxy (0: skip)")
    ap.add_argument("--idle-batch", type=int, default=256, help="requests in flight while opening them")
    ap.add_argument("--pin", choices=["split", "none", "one"], default="split",
                    help="split: proxy on CPU 1, clients and origin on CPU 0 (default); none")
    ap.add_argument("--wait-quiet", type=int, metavar="S",
                    help="before each round wait up to S seconds for other processes to use less "
                         "than --quiet-cores CPU (default 30, --quick 10; 0: do not wait)")
    ap.add_argument("--retries", type=int,
                    help="runs that may be repeated in all because other processes were busy during "
                         "them (default 8, --quick 4; the quieter run is kept)")
    ap.add_argument("--quiet-cores", type=float, default=0.15, help="see --wait-quiet (default 0.15)")
    ap.add_argument("--only", default="tern,haproxy,nginx", help="comma-separated proxies to run")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"), help="where to write the report")
    ap.add_argument("--json", help="also write the raw results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    a = ap.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.duration = a.duration or (4 if a.quick else 6)
    a.tcp_gib = a.tcp_gib or (1.0 if a.quick else 4.0)
    if a.retries is None:
        a.retries = 4 if a.quick else 8
    if a.wait_quiet is None:
        a.wait_quiet = 10 if a.quick else 30
    a.only = [x.strip() for x in a.only.split(",") if x.strip()]
    resolve_tern(a)
    need_tools("bench", ("wrk", "nginx", "haproxy"))

    b = Bench(a)
    if not run_guarded(b, [b.setup, b.run], lambda: stop_all(log), a.keep, log):
        return 130
    text = b.report()
    with open(a.out, "w") as f:
        f.write(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"env": b.env, "results": b.results}, f, indent=1, default=str)
    print_summary(b.table(), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
