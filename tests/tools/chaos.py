#!/usr/bin/python3
"""Chaos campaign against a real tern: hostile clients, misbehaving backends,
admin API abuse and signals, all at once, on loopback only.

It starts tern (the ASan+UBSan build by default) with several listeners
(http, http+TLS with a self-signed certificate made here with openssl, tcp,
tcp+TLS) and the admin API; pools of real backends (tests/tools/backend.py)
and of misbehaving ones run in this process (garbage heads, huge headers,
bad chunked encodings, close mid-body, never answer, answer before the
request body ends, 1xx storms, resets, smuggling shapes). Then, bounded by
a time limit AND an operation count, worker threads mix:

  - HTTP requests built from valid ones by mutation (bit flips, truncation,
    duplicated headers, huge lines, random chunk sizes, pipelining), sent
    whole, split, dripped, half-closed or cut with a reset (SO_LINGER 0);
  - random bytes, truncated and mutated ClientHellos, corrupted records and
    mutated requests over TLS;
  - admin API calls: bad JSON, wrong methods, unknown routes, huge bodies,
    add/remove/drain/patch of servers, reloads;
  - SIGHUP reloads alternating valid and invalid configurations, SIGUSR1.

Every connection must end with an answer or a close within the timeouts
(else: hang); every answer on an HTTP listener must be well-formed HTTP (a
response cut by a close is allowed); valid requests to the good pool must
get the right answer. At the end tern must still serve a normal request,
stop with exit code 0 on SIGTERM, and its stderr must hold no sanitizer
report. Every operation draws from its own random generator seeded by
(seed, op number), so `--seed S --replay-op N` sends the same bytes again.

Usage: chaos.py [--seed S] [--duration SEC] [--count N] [--tern BIN]
                [--threads N] [--keep DIR] [--replay-op N]
Exit status 0 when clean, 1 when anything was found (listed on stdout and
in DIR/findings.txt with the bytes of each offending operation).
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_TERN = os.path.join(ROOT, "build-asan", "lb", "tern")
BACKEND = os.path.join(ROOT, "tests", "tools", "backend.py")
HOST = "127.0.0.1"  # the only address this script ever connects or binds to
TOKEN = "chaos-t0ken"

# tern's own timeouts in the configuration: short, so that every connection
# must end well within HANG_S seconds of the client going quiet.
T_CLIENT, T_HEADER, T_TUNNEL, T_SERVER, T_CONNECT, T_QUEUE = 4, 3, 5, 4, 1, 2


def free_ports(n):
    """n distinct free ports: each stays bound until all are picked, so no
    two are the same."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def connect(port, timeout):
    return socket.create_connection((HOST, port), timeout=timeout)


def set_rst(sock):
    """Makes close() send a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# ---------------------------------------------------------------------------
# Misbehaving backends
# ---------------------------------------------------------------------------

BAD_KINDS = ["garbage", "badstatus", "hugehdr", "badchunk", "closemid", "never",
             "early", "storm1xx", "reset", "smuggle", "weird", "random"]


class BadBackend:
    """A backend that answers every request wrongly in one way (kind), each
    connection with its own generator so runs are comparable."""

    def __init__(self, kind, seed, stop):
        self.kind = kind
        self.seed = seed
        self.stop = stop
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(256)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.n = 0
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.n += 1
            rng = random.Random(f"{self.seed}/{self.kind}/{self.n}")
            threading.Thread(target=self.serve, args=(c, rng), daemon=True).start()
        self.sock.close()

    def read_head(self, c, timeout=6.0):
        c.settimeout(timeout)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 1 << 16:
                d = c.recv(65536)
                if not d:
                    return data, False
                data += d
        except OSError:
            return data, False
        return data, True

    def serve(self, c, rng):
        try:
            for _ in range(rng.randint(1, 4)):  # a few requests per connection
                if not self.answer(c, rng):
                    break
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def answer(self, c, rng):
        """Answers one request; False when the connection is done."""
        kind = self.kind if self.kind != "random" else rng.choice(BAD_KINDS[:-1])
        if kind == "reset" and rng.random() < 0.3:
            set_rst(c)  # before reading anything
            return False
        head, ok = self.read_head(c)
        if not ok:
            return False
        ok200 = b"HTTP/1.1 200 OK\r\n"
        if kind == "garbage":
            c.sendall(rng.randbytes(rng.randint(1, 4096)))
            if rng.random() < 0.5:
                set_rst(c)
            return False
        if kind == "badstatus":
            c.sendall(rng.choice([
                b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/9.9 200 OK\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 99 Low\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 1000 High\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 200\nContent-Length: 0\n\n",
                b"HTTP/1.1 200 OK\rContent-Length: 0\r\r",
                b"HTTP/1.1  200  OK\r\n\r\n",
                b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                b"HTTP/1.1 200 OK\x00\r\nContent-Length: 0\r\n\r\n",
                b"ICY 200 OK\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n Content-Length: 0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length 0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n: empty\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nX: " + b"\xff" * 50 + b"\r\nContent-Length: 0\r\n\r\n",
                b"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\n",  # then close: head never ends
            ]))
            return False
        if kind == "hugehdr":
            v = rng.random()
            if v < 0.3:
                c.sendall(ok200 + b"X-Big: " + b"a" * rng.choice([40000, 70000, 300000])
                          + b"\r\nContent-Length: 0\r\n\r\n")
            elif v < 0.6:
                c.sendall(ok200 + b"".join(b"X-H%d: v\r\n" % i for i in range(rng.choice([200, 1000, 5000])))
                          + b"Content-Length: 0\r\n\r\n")
            elif v < 0.8:
                c.sendall(ok200 + b"X-Endless: " + b"z" * 200000)  # never ends the head
            else:
                c.sendall(b"HTTP/1.1 200 " + b"R" * 100000 + b"\r\nContent-Length: 0\r\n\r\n")
            return False
        if kind == "badchunk":
            body = rng.choice([
                b"zz\r\nhello\r\n0\r\n\r\n",
                b"ffffffffffffffffffff\r\nx\r\n",
                b"-5\r\nhello\r\n0\r\n\r\n",
                b"5\r\nhelloXX0\r\n\r\n",
                b"5\r\nhel",
                b"3\r\nhello\r\n0\r\n\r\n",
                b"5 ;\r\nhello\r\n0\r\n\r\n",
                b"5;" + b"e" * 70000 + b"\r\nhello\r\n0\r\n\r\n",
                b"0\r\n" + b"X-T: t\r\n" * 3000 + b"\r\n",
                b"0\r\nbad trailer\r\n\r\n",
                b"7fffffffffffffff\r\nabc",
                b"8000000000000000\r\nabc",
                b"0x5\r\nhello\r\n0\r\n\r\n",
                b"\r\n\r\n",
                b"5\nhello\n0\n\n",
                b"1\r\na\r\n" * 2000 + b"0\r\n\r\n",
            ])
            te = rng.choice([b"chunked", b"chunked, chunked", b"gzip, chunked", b"chunked, gzip", b"Chunked"])
            c.sendall(ok200 + b"Transfer-Encoding: " + te + b"\r\n\r\n" + body)
            if rng.random() < 0.5:
                set_rst(c)
            return False
        if kind == "closemid":
            n = rng.choice([10, 1000, 100000])
            c.sendall(ok200 + b"Content-Length: %d\r\n\r\n" % (n * 2) + b"m" * n)
            if rng.random() < 0.5:
                set_rst(c)
            return False
        if kind == "never":
            c.settimeout(60)
            try:
                while c.recv(65536):
                    pass
            except OSError:
                pass
            return False
        if kind == "early":
            # Answers as soon as the head is in, before the body (if any).
            v = rng.random()
            if v < 0.4:
                c.sendall(ok200 + b"Content-Length: 5\r\n\r\nearly")
                return rng.random() < 0.5
            if v < 0.7:
                c.sendall(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return False
            c.sendall(ok200 + b"Content-Length: 5\r\n\r\nearly")
            set_rst(c)
            return False
        if kind == "storm1xx":
            n = rng.choice([10, 500, 5000])
            one = rng.choice([b"HTTP/1.1 100 Continue\r\n\r\n",
                              b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
                              b"HTTP/1.1 102 Processing\r\n\r\n"])
            c.sendall(one * n)
            if rng.random() < 0.6:
                c.sendall(ok200 + b"Content-Length: 4\r\n\r\n1xx!")
                return True
            return False
        if kind == "reset":
            if rng.random() < 0.5:
                c.sendall(ok200 + b"Content-Length: 100\r\n\r\npartial")
            set_rst(c)
            return False
        if kind == "smuggle":
            c.sendall(rng.choice([
                ok200 + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                ok200 + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                ok200 + b"Content-Length: -1\r\n\r\n",
                ok200 + b"Content-Length: 99999999999999999999999\r\n\r\nx",
                ok200 + b"Content-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggled",
                ok200 + b"Content-Length: 0\r\n\r\nHTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n",
                ok200 + b"Content-Length: 5, 5\r\n\r\nhello",
                ok200 + b"Content-Length: +5\r\n\r\nhello",
                ok200 + b"Transfer-Encoding: identity\r\n\r\nhello",
            ]))
            return rng.random() < 0.5
        if kind == "weird":
            c.sendall(rng.choice([
                b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
                b"HTTP/1.1 304 Not Modified\r\n\r\nbody-after-304",
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nraw",
                b"HTTP/1.0 200 OK\r\n\r\nclose-delimited",
                ok200 + b"X-Fold: a\r\n b\r\nContent-Length: 0\r\n\r\n",
                ok200 + b"X-Nul: a\x00b\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
                b"HTTP/1.1 000 Zero\r\nContent-Length: 0\r\n\r\n",
                ok200 + b"Connection: close, keep-alive, upgrade\r\nContent-Length: 0\r\n\r\n",
                ok200 + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc" + b"\r\n" * 10,
            ]))
            return rng.random() < 0.4
        return False


# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------

IPV4 = re.compile(rb"(?<![0-9.])(\d{1,3})\.\d{1,3}\.\d{1,3}\.\d{1,3}")


def loopback_only(text):
    """True when every IPv4 literal of a configuration is in 127.0.0.0/8 and
    it names no wildcard bind: what this script writes must never make tern
    listen beyond loopback or send traffic anywhere else."""
    b = text.encode() if isinstance(text, str) else text
    if any(m.group(1) != b"127" for m in IPV4.finditer(b)):
        return False
    return not re.search(rb"(bind|address|listen)\s*:\s*['\"]?(\*|:|\[|[a-zA-Z])", b.replace(b"localhost", b"127.0.0.1"))


class Env:
    def __init__(self, dir, seed):
        self.dir = dir
        self.seed = seed
        # The good backends' ports too, all distinct; nothing listens on closed.
        (self.web, self.tls, self.tcp, self.tcps, self.admin, self.web2, self.closed,
         *self.good_ports) = free_ports(10)
        self.cert = os.path.join(dir, "cert.pem")
        self.key = os.path.join(dir, "key.pem")
        self.ec_cert = os.path.join(dir, "ec-cert.pem")
        self.ec_key = os.path.join(dir, "ec-key.pem")
        self.token_file = os.path.join(dir, "admin.token")
        self.conf = os.path.join(dir, "tern.yaml")
        self.log = os.path.join(dir, "tern.log")
        self.access = os.path.join(dir, "access.log")
        self.good = []  # (name, port)
        self.bad = {}  # kind -> port


ROUTES = ("    routes:\n"
          "      - { match: { path_prefix: /bad/ }, pool: bad }\n"
          "      - { match: { path_prefix: /mixed/ }, pool: mixed }\n"
          "      - { match: { path_prefix: /hc/ }, pool: hc }\n"
          "      - { match: { path_prefix: /tlsb/ }, pool: tlsb }\n"
          "      - { match: { path_prefix: /dyn/ }, pool: dyn }\n"
          "      - { match: { host: '*.bad.test' }, pool: bad }\n")

BALANCES = ["roundrobin", "leastconn", "random2", "source_hash", "uri_hash", "maglev"]


def make_config(env, variant=0):
    """A valid configuration; variant moves what a reload may change (pools'
    balance and weights, limits, an extra listener, health checks) while
    the main listeners and the good pool stay."""
    bal = BALANCES[variant % len(BALANCES)]
    lt = f"    timeouts: {{ client: {T_CLIENT}s, header: {T_HEADER}s, tunnel: {T_TUNNEL}s }}\n"
    limits = ["", "    max_header_size: 8k\n    max_request_line: 1k\n", "    max_body_size: 64k\n"][variant % 3]
    pt = f"    timeouts: {{ connect: {T_CONNECT}s, server: {T_SERVER}s, queue: {T_QUEUE}s }}\n"
    # Reloads swap the listeners' certificate between RSA and ECDSA under live TLS connections.
    cert, key = (env.cert, env.key) if variant % 4 < 2 else (env.ec_cert, env.ec_key)
    tlsb = f"    tls:\n      certificates: [ {{ cert: {cert}, key: {key} }} ]\n"
    s = "global:\n  workers: 2\n"
    s += f"  log: {env.log}\n"
    if variant % 4 != 3:
        s += f"  access_log: {env.access}\n"
    s += "  shutdown_timeout: 3s\n"
    s += f"admin:\n  listen: {HOST}:{env.admin}\n  token_file: {env.token_file}\n"
    s += "listeners:\n"
    s += f"  - name: web\n    bind: {HOST}:{env.web}\n    mode: http\n    pool: good\n" + lt + limits + ROUTES
    s += f"  - name: tls\n    bind: {HOST}:{env.tls}\n    mode: http\n    pool: good\n" + lt + ROUTES + tlsb
    s += f"  - name: tcp\n    bind: {HOST}:{env.tcp}\n    mode: tcp\n    pool: tcpp\n" + lt
    s += f"  - name: tcps\n    bind: {HOST}:{env.tcps}\n    mode: tcp\n    pool: good\n" + lt + tlsb
    if variant % 2 == 1:
        s += f"  - name: web2\n    bind: {HOST}:{env.web2}\n    mode: http\n    pool: mixed\n" + lt
    s += "pools:\n"

    def srv(name, port, extra=""):
        return f"      - {{ name: {name}, address: {HOST}:{port}{extra} }}\n"

    s += "  good:\n    balance: roundrobin\n" + pt + "    servers:\n"
    s += "".join(srv(n, p) for n, p in env.good[:2])
    s += f"  bad:\n    balance: {bal}\n    retries: 1\n    outlier: {{ consecutive_failures: 0 }}\n" + pt
    s += "    servers:\n" + "".join(srv(k, p) for k, p in sorted(env.bad.items()))
    mixed_bad = sorted(env.bad.items())[variant % 3::3]
    s += f"  mixed:\n    balance: {BALANCES[(variant + 1) % len(BALANCES)]}\n    queue_size: 8\n" + pt
    s += "    servers:\n" + srv(env.good[2][0], env.good[2][1], ", max_connections: 4")
    s += "".join(srv(k, p, f", weight: {1 + (variant + i) % 3}") for i, (k, p) in enumerate(mixed_bad))
    s += srv("closed", env.closed)
    hc_type = "http" if variant % 2 == 0 else "tcp"
    s += (f"  hc:\n    health_check: {{ type: {hc_type}, path: /healthz, interval: 300ms, timeout: 500ms,"
          " rise: 1, fall: 1 }\n" + pt + "    servers:\n")
    s += "".join(srv(k, p) for k, p in sorted(env.bad.items()))
    s += srv(env.good[0][0], env.good[0][1])
    s += f"  tlsb:\n    tls: true\n    tls_ca: {env.cert}\n" + pt + "    servers:\n"
    s += srv(env.good[0][0], env.good[0][1])
    for k in ("garbage", "reset", "never", "badstatus"):
        s += srv(k, env.bad[k])
    s += "  dyn:\n    servers: []\n" + pt
    s += "  tcpp:\n" + pt + "    servers:\n" + srv(env.good[1][0], env.good[1][1])
    for k in ("reset", "never", "garbage"):
        s += srv(k, env.bad[k])
    assert loopback_only(s), s
    return s


def make_bad_config(env, rng, variant):
    """A configuration tern must refuse (or, for a few shapes, may take):
    structural breakage of a valid one, never random bytes inside an
    address, so nothing it could accept reaches beyond loopback."""
    good = make_config(env, variant)
    lines = good.split("\n")
    pick = rng.randrange(16)
    if pick == 0:
        out = good + "bogus_key: 1\n"
    elif pick == 1:
        out = good.replace("mode: http", "mode: htp", 1)
    elif pick == 2:
        out = good[: rng.randrange(len(good))]
    elif pick == 3:
        out = good.replace("  - name: web\n", "\t- name: web\n", 1)
    elif pick == 4:
        out = good.replace(env.cert, env.cert + ".missing")
    elif pick == 5:
        out = good.replace("name: tls\n", "name: web\n", 1)
    elif pick == 6:
        out = good + rng.randbytes(rng.randint(1, 200)).decode("latin-1")
    elif pick == 7:
        out = good + "#" + "x" * (2 << 20) + "\n"
    elif pick == 8:
        out = good + f"include: {env.conf}\n"
    elif pick == 9:
        out = good + "include: /nonexistent/chaos/*.yaml\ninclude: /nonexistent/chaos.yaml\n"
    elif pick == 10:
        out = good.replace("workers: 2", "workers: ${CHAOS_UNSET_VARIABLE}")
    elif pick == 11:
        # An alias bomb: 10^6 nodes if expanded.
        out = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in range(1, 7):
            out += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
        out += good
    elif pick == 12:
        out = good + "deep: " + "[" * 20000 + "]" * 20000 + "\n"
    elif pick == 13:
        out = good.replace(env.token_file, env.token_file + ".missing")
    elif pick == 14:
        i = rng.randrange(len(lines))
        lines.insert(i, lines[i])  # a duplicated line: duplicate key or list item
        out = "\n".join(lines)
    else:
        # Random bytes flipped, but only on lines that hold no address.
        b = bytearray(good.encode())
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            start = b.rfind(b"\n", 0, i) + 1
            end = b.find(b"\n", i)
            if not re.search(rb"\d+\.\d+|address|bind|listen|include", bytes(b[start:end])):
                b[i] ^= 1 << rng.randrange(8)
        out = bytes(b).decode("latin-1")
    if not loopback_only(out.encode("latin-1")):
        out = good + "bogus_key: 1\n"
    return out


def write_config(env, text):
    # Always whole (rename): a half-written file can be a valid one with
    # fewer listeners, and tern would rightly take it.
    tmp = env.conf + ".tmp"
    with open(tmp, "w", encoding="latin-1") as f:
        f.write(text)
    os.replace(tmp, env.conf)


# ---------------------------------------------------------------------------
# HTTP: valid requests, mutations, answers
# ---------------------------------------------------------------------------

def req(method, path, headers=(), body=None, chunked=False, version=b"HTTP/1.1", host=b"chaos.test"):
    h = [b"%s %s %s" % (method, path, version)]
    if host is not None:
        h.append(b"Host: " + host)
    h += list(headers)
    if body is not None and chunked:
        h.append(b"Transfer-Encoding: chunked")
        out = b"\r\n".join(h) + b"\r\n\r\n"
        return out + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else out + b"0\r\n\r\n"
    if body is not None:
        h.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(h) + b"\r\n\r\n" + (body or b"")


def rechunk(body, rng):
    """body in chunks of random sizes, sometimes with extensions, upper-case
    hex, leading zeros or a trailer."""
    out, i = b"", 0
    while i < len(body):
        n = rng.randint(1, max(1, min(len(body) - i, rng.choice([1, 7, 100, 5000]))))
        size = b"%x" % n
        if rng.random() < 0.2:
            size = size.upper()
        if rng.random() < 0.1:
            size = b"000" + size
        ext = b";ext=%d" % rng.randint(0, 9) if rng.random() < 0.1 else b""
        out += size + ext + b"\r\n" + body[i:i + n] + b"\r\n"
        i += n
    out += b"0\r\n"
    if rng.random() < 0.2:
        out += b"X-Trailer: t\r\n"
    return out + b"\r\n"


def valid_request(rng, pool_prefix=b""):
    """(bytes, expectation) of a valid request. expectation: a callable that
    checks the parsed responses, or None when any well-formed answer will do
    (pools with misbehaving servers)."""
    p = pool_prefix
    body = rng.randbytes(rng.choice([0, 1, 100, 3000, 70000]))
    choice = rng.randrange(12)
    if choice == 0:
        return req(b"GET", p + b"/"), ("good", 200, None)
    if choice == 1:
        return req(b"POST", p + b"/echo", [b"X-Chaos: 1"], body), ("good", 200, body)
    if choice == 2:
        head = req(b"POST", p + b"/echo", [b"X-Chaos: 1"], b"", chunked=True)
        head = head[: -len(b"0\r\n\r\n")]
        return head + rechunk(body, rng), ("good", 200, body)
    if choice == 3:
        return req(b"GET", p + b"/chunked"), ("good", 200, b"hello world")
    if choice == 4:
        return req(b"HEAD", p + b"/"), ("head", 200, b"")
    if choice == 5:
        return req(b"GET", p + b"/", version=b"HTTP/1.0", host=None), ("good", 200, None)
    if choice == 6:
        return req(b"POST", p + b"/echo", [b"Expect: 100-continue"], body), ("good", 200, body)
    if choice == 7:
        return req(b"GET", p + b"/ws", [b"Upgrade: websocket", b"Connection: Upgrade",
                                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                         b"Sec-WebSocket-Version: 13"]), ("any", None, None)
    if choice == 8:
        return req(b"GET", p + b"/big?n=65536"), ("good", 200, b"b" * 65536)
    if choice == 9:
        return req(b"GET", p + b"/slow?ms=%d" % rng.choice([10, 500, 5000])), ("any", None, None)
    if choice == 10:
        return req(b"GET", p + rng.choice([b"/hang", b"/die", b"/close", b"/status/503", b"/conn"])), \
            ("any", None, None)
    return req(b"DELETE", p + b"/echo", [b"Connection: close"]), ("good", 200, b"")


def chaos_request(rng):
    """A request to any pool, possibly pipelined: the seed of a mutation."""
    prefix = rng.choice([b"", b"", b"/bad", b"/mixed", b"/hc", b"/tlsb", b"/dyn"])
    n = 1 if rng.random() < 0.8 else rng.randint(2, 20)
    return b"".join(valid_request(rng, prefix)[0] for _ in range(n))


def mutate(data, rng, rounds=None):
    b = bytearray(data)
    for _ in range(rounds or rng.choice([1, 1, 2, 3, 8])):
        if not b:
            b = bytearray(b"GET / HTTP/1.1\r\n\r\n")
        m = rng.randrange(14)
        i = rng.randrange(len(b))
        if m == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif m == 1:
            del b[rng.randrange(len(b)):]  # truncation
        elif m == 2:
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif m == 3:
            del b[i:i + rng.randint(1, 8)]
        elif m == 4:  # duplicate a line (a header twice)
            s = b.rfind(b"\r\n", 0, i) + 2
            e = b.find(b"\r\n", i)
            if e > s:
                b[e:e] = b"\r\n" + b[s:e]
        elif m == 5:  # a huge line
            b[i:i] = b"X-Huge: " + b"h" * rng.choice([1000, 9000, 40000, 200000]) + b"\r\n"
        elif m == 6:
            b = b.replace(b"\r\n", b"\n", rng.randint(1, 5))
        elif m == 7:  # a huge request line
            b[b.find(b" ") + 1:b.find(b" ") + 1] = b"/" + b"p" * rng.choice([1000, 9000, 70000])
        elif m == 8:
            b[i:i] = rng.choice([b"Content-Length: %d\r\n" % rng.choice([0, 1, 5, 2**31, 2**64 + 1]),
                                 b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n",
                                 b"Content-Length: 5\r\nContent-Length: 6\r\n", b"Expect: 100-continue\r\n",
                                 b"Connection: close\r\n", b"Connection: keep-alive, Upgrade\r\n",
                                 b"Upgrade: websocket\r\n", b"Host: a\r\nHost: b\r\n", b" folded\r\n",
                                 b"\x00", b"\r", b"\n", b"\r\n\r\n", b"HTTP/1.1", b":", b"%00", b"%zz",
                                 b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"])
        elif m == 9:  # random chunk sizes
            b[i:i] = b"%x\r\n" % rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 2**64 - 1]) + rng.randbytes(
                rng.randint(0, 20)) + b"\r\n"
        elif m == 10:  # pipelining: the request again, whole or mutated
            b += bytes(b) if rng.random() < 0.5 else mutate(bytes(b), rng, 1)
        elif m == 11:
            b[i:i + 1] = bytes([rng.choice([0, 9, 10, 13, 32, 127, 128, 255])])
        elif m == 12:  # method and version swaps
            for a, c in ((b"GET", rng.choice([b"CONNECT", b"TRACE", b"PRI", b"G\x00T", b"get", b"X" * 300])),
                         (b"HTTP/1.1", rng.choice([b"HTTP/2.0", b"HTTP/1.9", b"HTTP/0.9", b"HTTP/1.10", b""]))):
                if rng.random() < 0.5:
                    b = b.replace(a, c, 1)
        else:  # many headers
            b[i:i] = b"".join(b"X-M%d: v\r\n" % k for k in range(rng.choice([50, 200, 2000])))
    if len(b) > 1 << 20:
        del b[1 << 20:]
    return bytes(b)


STATUS_RE = re.compile(rb"HTTP/1\.[01] ([1-9]\d\d) [^\r\n]*")
FIELD_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[ \t]*[^\r\n\x00]*")


def parse_answers(data, head_req=False):
    """Parses a byte stream as the responses of an HTTP/1.1 connection.
    Returns (responses, problem): responses are (status, headers, body);
    problem is None, "cut" (a response cut short by the close: allowed) or a
    description of bytes that are not HTTP. head_req: whether the requests
    were HEADs (no body follows a head), or a list with one such flag per
    request, for a pipeline that mixes HEAD with other methods."""
    out, i = [], 0
    while i < len(data):
        j = data.find(b"\r\n\r\n", i)
        if j < 0:
            if data[i:i + 5] == b"HTTP/"[: len(data) - i] or STATUS_RE.match(data, i):
                return out, "cut"
            return out, f"not HTTP at byte {i}: {data[i:i + 40]!r}"
        lines = data[i:j].split(b"\r\n")
        m = STATUS_RE.fullmatch(lines[0])
        if not m:
            return out, f"bad status line at byte {i}: {lines[0][:60]!r}"
        hdrs = {}
        for ln in lines[1:]:
            if not FIELD_RE.fullmatch(ln):
                return out, f"bad header line {ln[:60]!r}"
            k, v = ln.split(b":", 1)
            hdrs.setdefault(k.lower().decode(), []).append(v.strip())
        status = int(m.group(1))
        i = j + 4
        if 100 <= status < 200 and status != 101:
            continue
        if status == 101:
            out.append((status, hdrs, b""))
            return out, None  # a tunnel follows
        te = b",".join(hdrs.get("transfer-encoding", [])).lower()
        cl = hdrs.get("content-length")
        if isinstance(head_req, list):
            head = len(out) < len(head_req) and head_req[len(out)]
        else:
            head = head_req
        if head or status in (204, 304):
            body = b""
        elif te and te.replace(b" ", b"").split(b",")[-1] != b"chunked":
            # Chunked not last: the body ends with the connection (RFC 9112 6.3).
            body = data[i:]
            i = len(data)
        elif te:
            body = b""
            while True:
                e = data.find(b"\r\n", i)
                if e < 0:
                    return out, "cut"
                try:
                    n = int(data[i:e].split(b";")[0], 16)
                except ValueError:
                    return out, f"bad chunk size {data[i:e][:40]!r}"
                i = e + 2
                if n == 0:
                    e = data.find(b"\r\n\r\n", i - 2)
                    if e < 0:
                        return out, "cut"
                    i = e + 4
                    break
                if len(data) < i + n + 2:
                    return out, "cut"
                body += data[i:i + n]
                if data[i + n:i + n + 2] != b"\r\n":
                    return out, "chunk without CRLF"
                i += n + 2
        elif cl:
            if len(cl) != 1 or not cl[0].isdigit():
                return out, f"content-length {cl!r}"
            n = int(cl[0])
            if len(data) < i + n:
                return out, "cut"
            body = data[i:i + n]
            i += n
        else:
            body = data[i:]
            i = len(data)
        out.append((status, hdrs, body))
    return out, None


# ---------------------------------------------------------------------------
# One connection: send, then read until close; a finding when it never ends
# ---------------------------------------------------------------------------

class Outcome:
    def __init__(self):
        self.data = b""
        self.end = None  # "close", "reset", "hang", "connect-failed"
        self.seconds = 0.0


def deliver(sock, data, rng, how, stop_at):
    """Sends data the way how says. Returns False when the peer cut us off."""
    try:
        if how in ("all", "halfclose", "rst", "close"):
            sock.sendall(data)
        elif how == "split":
            i = 0
            while i < len(data):
                n = rng.randint(1, max(1, len(data) // 3))
                sock.sendall(data[i:i + n])
                i += n
                time.sleep(rng.choice([0, 0, 0.001, 0.05]))
        elif how == "drip":  # slowloris: a byte now and then, bounded
            for k in range(min(len(data), 40)):
                if time.monotonic() > stop_at:
                    break
                sock.sendall(data[k:k + 1])
                time.sleep(rng.choice([0.05, 0.3, 1.0]))
        elif how == "rst_mid":
            sock.sendall(data[: rng.randrange(len(data) + 1)])
        if how == "halfclose":
            sock.shutdown(socket.SHUT_WR)
        return True
    except OSError:
        return False


def read_all(sock, hang_s, keep=1 << 21, done=None, settled=None):
    """Reads until the peer closes, or until done(bytes so far) says every
    answer is in, or until settled(bytes so far) holds after 3 s of silence
    (a keep-alive connection at rest); end is "hang" when hang_s pass with
    the connection still open and silent."""
    o = Outcome()
    t0 = time.monotonic()
    last = t0
    sock.settimeout(0.5)
    while True:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            if settled and time.monotonic() - last > 3 and settled(o.data):
                o.end = "answered"
                break
            if time.monotonic() - last > hang_s:
                o.end = "hang"
                break
            continue
        except ConnectionResetError:
            o.end = "reset"
            break
        except OSError:
            o.end = "reset"
            break
        if not d:
            o.end = "close"
            break
        last = time.monotonic()
        if len(o.data) < keep:
            o.data += d
        if done and done(o.data):
            o.end = "answered"
            break
        if time.monotonic() - t0 > hang_s * 4:
            o.end = "endless"  # bytes keep coming: an answer that never ends
            break
    o.seconds = time.monotonic() - t0
    return o


# ---------------------------------------------------------------------------
# TLS helpers: handshakes driven by hand through memory BIOs
# ---------------------------------------------------------------------------

def client_ctx(max13=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if not max13:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def client_hello(rng):
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(rng.random() < 0.5).wrap_bio(inc, out, server_hostname=rng.choice(["chaos.test", ".".join(["x" * 60] * 4)]))
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


class TlsConn:
    """A TLS client over a plain socket, so raw bytes can be mixed in."""

    def __init__(self, sock, rng, timeout):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = client_ctx(rng.random() < 0.5).wrap_bio(self.inc, self.out, server_hostname="chaos.test")
        deadline = time.monotonic() + timeout
        sock.settimeout(timeout)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                if time.monotonic() > deadline:
                    raise socket.timeout("handshake")
                d = sock.recv(65536)
                if not d:
                    raise ConnectionResetError("closed in handshake")
                self.inc.write(d)
        self.flush()

    def flush(self):
        d = self.out.read()
        if d:
            self.sock.sendall(d)

    def records(self, data):
        self.obj.write(data)
        return self.out.read()

    def read_all(self, hang_s):
        """As read_all(), decrypting; a TLS error is an end like a reset."""
        o = read_all_tls(self, hang_s)
        return o


def read_all_tls(t, hang_s):
    o = Outcome()
    t0 = time.monotonic()
    last = t0
    t.sock.settimeout(0.5)
    while True:
        try:
            while True:
                d = t.obj.read(65536)
                if not d:
                    o.end = "close"
                    break
                if len(o.data) < 1 << 21:
                    o.data += d
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, OSError):
            o.end = "close"
        if o.end:
            break
        try:
            d = t.sock.recv(65536)
        except socket.timeout:
            if time.monotonic() - last > hang_s:
                o.end = "hang"
                break
            continue
        except OSError:
            o.end = "reset"
            break
        if not d:
            t.inc.write_eof()
            try:
                while True:
                    d = t.obj.read(65536)
                    if not d:
                        break
                    o.data += d
            except (ssl.SSLError, OSError):
                pass
            o.end = "close"
            break
        last = time.monotonic()
        t.inc.write(d)
        if time.monotonic() - t0 > hang_s * 4:
            o.end = "endless"
            break
    o.seconds = time.monotonic() - t0
    return o


# ---------------------------------------------------------------------------
# The campaign
# ---------------------------------------------------------------------------

class Finding(Exception):
    pass


class Campaign:
    def __init__(self, tern_bin, seed, duration, count, threads, keep=None, hang_s=None, log=print,
                 kill_after=None):
        self.tern_bin = tern_bin
        self.seed = seed
        self.duration = duration
        self.count = count
        self.threads = threads
        self.say = log
        self.sanitized = "asan" in os.path.basename(os.path.dirname(os.path.dirname(tern_bin))) or \
            "asan" in tern_bin
        # An answer or a close must come within hang_s of the client going
        # quiet: far above every tern timeout, and the sanitizer's slowness.
        self.hang_s = hang_s or (max(T_CLIENT, T_HEADER, T_TUNNEL, T_SERVER + T_QUEUE) * (4 if self.sanitized else 2))
        self.kill_after = kill_after
        self.dir = keep or tempfile.mkdtemp(prefix="tern-chaos-")
        os.makedirs(self.dir, exist_ok=True)
        self.env = Env(self.dir, seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.findings = []
        self.counts = {}
        self.next_op = 0
        self.inflight = {}
        self.sig_lock = threading.Lock()
        self.reloads = 0
        self.procs = []
        self.bad = []
        self.tern = None
        self.stderr_path = os.path.join(self.dir, "tern.stderr")

    # ---- setup and teardown ----

    def setup(self):
        e = self.env
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=chaos.test", "-keyout", e.key, "-out", e.cert],
                       check=True, capture_output=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "2", "-subj", "/CN=chaos.test", "-keyout", e.ec_key, "-out", e.ec_cert],
                       check=True, capture_output=True)
        with open(e.token_file, "w") as f:
            f.write(TOKEN + "\n")
        for i, port in enumerate(e.good_ports):
            p = subprocess.Popen([sys.executable, BACKEND, "--port", str(port), "--name", f"good{i + 1}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.procs.append(p)
            line = p.stdout.readline()
            if not line.startswith("ready"):
                raise RuntimeError(f"backend good{i + 1} did not start: {line!r}")
            e.good.append((f"good{i + 1}", port))
        for k in BAD_KINDS:
            b = BadBackend(k, self.seed, self.stop)
            self.bad.append(b)
            e.bad[k] = b.port
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1:halt_on_error=1")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        for attempt in range(3):
            write_config(e, make_config(e, 0))
            self.stderr = open(self.stderr_path, "w")
            self.tern = subprocess.Popen([self.tern_bin, "-c", e.conf], stdout=subprocess.DEVNULL,
                                         stderr=self.stderr, env=env)
            if self.wait_listening() or attempt == 2:
                return
            # A port picked free was taken before tern bound it (other
            # tests run beside this one): new ports, same campaign.
            self.stderr.close()
            e.web, e.tls, e.tcp, e.tcps, e.admin, e.web2 = free_ports(6)

    def wait_listening(self):
        """True once tern listens everywhere; False when it could not bind."""
        e = self.env
        deadline = time.monotonic() + (60 if self.sanitized else 20)
        for port in (e.web, e.tls, e.tcp, e.tcps, e.admin):
            while True:
                if self.tern.poll() is not None:
                    # Its log goes to a file once the configuration is read.
                    try:
                        with open(e.log, errors="replace") as f:
                            log = self.stderr_text() + f.read()
                    except OSError:
                        log = self.stderr_text()
                    if "in use" in log:
                        return False
                    raise RuntimeError(f"tern exited at start ({self.tern.returncode}):\n{log}")
                try:
                    connect(port, 0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"tern did not listen on {port}:\n{self.stderr_text()}")
                    time.sleep(0.05)
        return True

    def teardown(self):
        self.stop.set()
        if self.tern and self.tern.poll() is None:
            self.tern.kill()
            self.tern.wait()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    def stderr_text(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # ---- findings ----

    def find(self, kind, op, detail, sent=b""):
        with self.lock:
            n = len(self.findings) + 1
            path = os.path.join(self.dir, f"finding-{n}.bin")
            with open(path, "wb") as f:
                f.write(sent)
            rec = {"kind": kind, "op": op, "detail": detail, "bytes": path, "sent_len": len(sent),
                   "sent_head": sent[:300].decode("latin-1")}
            self.findings.append(rec)
        self.say(f"FINDING {kind} (op {op}): {detail} [{len(sent)} bytes in {path}]")

    def tally(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    # ---- operations ----

    OPS = [("http_mut", 30), ("http_valid", 12), ("tls_http", 10), ("tls_raw", 8), ("tcp_raw", 5),
           ("tcps", 3), ("admin_api", 14), ("admin_raw", 5), ("slow", 3), ("web2", 2),
           ("flood", 1), ("slowread", 3)]

    def pick_op(self, rng):
        total = sum(w for _, w in self.OPS)
        r = rng.uniform(0, total)
        for name, w in self.OPS:
            r -= w
            if r <= 0:
                return name
        return self.OPS[0][0]

    def run_op(self, n):
        rng = random.Random(f"{self.seed}/op/{n}")
        op = self.pick_op(rng)
        self.tally(op)
        getattr(self, "op_" + op)(n, rng)

    def exchange(self, n, port, data, rng, how=None, expect=None, lenient=False, answers=None, heads=None):
        """One connection: sends data (how: all, split, drip, halfclose, rst,
        rst_mid, close), reads the answer and judges it. heads: which of the
        answers requests were HEADs, when known; without it, a pipeline
        that mixes HEAD and other methods is never seen as answered, and
        waits for the admin API's 30 s idle close instead."""
        how = how or rng.choice(["all"] * 6 + ["split", "split", "halfclose", "halfclose", "rst", "rst_mid",
                                               "close", "drip"])
        # The admin API keeps an idle connection ADMIN_TIMEOUT_IDLE (30 s).
        hang = self.hang_s + (30 if port == self.env.admin else 0)
        done, settled = None, None
        if port == self.env.admin:
            def settled(d):
                r, problem = parse_answers(d, heads if heads is not None else b"HEAD " in data)
                return problem is None and len(r) > 0
        if answers:
            def done(d):
                r, problem = parse_answers(d, heads or False)
                return problem is None and len(r) >= answers
        o, ok = self.send_read(n, port, data, rng, how, hang, done, settled)
        if o:
            self.judge(n, f"{how} to port {port}", data, o, expect, lenient or not ok)

    def open(self, n, port, data, refused_ok=False):
        """A connection to port, or None (a finding unless refused_ok)."""
        try:
            return connect(port, 5)
        except OSError as ex:
            if not refused_ok:
                self.find("connect-failed", n, f"port {port}: {ex}", data)
            return None

    def send_read(self, n, port, data, rng, how, hang=None, done=None, settled=None, refused_ok=False):
        """Connects, sends data as how says and reads until the end. Returns
        (outcome, whether all was sent); outcome is None when the client
        cut the connection itself (rst, rst_mid, close) or could not connect."""
        s = self.open(n, port, data, refused_ok)
        if not s:
            return None, False
        try:
            ok = deliver(s, data, rng, how, time.monotonic() + self.hang_s)
            if how in ("rst", "rst_mid"):
                set_rst(s)
                return None, ok
            if how == "close":
                return None, ok
            return read_all(s, hang or self.hang_s, done=done, settled=settled), ok
        finally:
            s.close()

    def judge(self, n, what, data, o, expect, lenient):
        if o.end == "hang":
            self.find("hang", n, f"{what}: no answer nor close within {o.seconds:.0f}s; got {len(o.data)} bytes "
                      f"{o.data[:80]!r}", data)
            return
        if o.end == "endless":
            self.find("endless", n, f"{what}: bytes still coming after {o.seconds:.0f}s", data)
            return
        if not o.data:
            if expect and expect[0] == "good" and not lenient:
                self.find("wrong-answer", n, f"{what}: closed with no answer to a valid request", data)
            return
        head_req = b"HEAD " in data
        resps, problem = parse_answers(o.data, head_req)
        if problem and problem != "cut" and not head_req and not (resps and resps[-1][0] == 101):
            self.find("malformed-answer", n, f"{what}: {problem}; answer starts {o.data[:120]!r}", data)
            return
        if expect and expect[0] in ("good", "head") and not lenient:
            _, status, body = expect
            if problem == "cut" or not resps:
                self.find("wrong-answer", n, f"{what}: answer cut ({problem}): {o.data[:120]!r}", data)
                return
            st, hdrs, got = resps[0]
            if st == 413 and len(data) > 65536:
                return  # some valid configurations set max_body_size: 64k
            if st != status or (body is not None and got != body):
                self.find("wrong-answer", n, f"{what}: status {st}, body {got[:60]!r} (want {status} "
                          f"{(body or b'')[:60]!r})", data)

    def op_http_valid(self, n, rng):
        data, expect = valid_request(rng)
        if rng.random() < 0.3:  # pipelined copies of one valid request
            k = rng.randint(2, 10)
            data = data * k
            if expect[0] in ("good", "head"):
                expect = ("any", None, None)
        if expect[0] == "head":
            # Closing right after a HEAD lets the whole stream be framed.
            pass
        k = data.count(b" HTTP/1.")
        self.exchange(n, self.env.web, data, rng, how=rng.choice(["all", "split", "halfclose"]), expect=expect,
                      answers=None if expect[0] == "head" or b"/ws" in data else k)

    def op_http_mut(self, n, rng):
        self.exchange(n, self.env.web, mutate(chaos_request(rng), rng), rng)

    def op_web2(self, n, rng):
        # web2 exists in every other valid configuration: refused is fine.
        if rng.random() < 0.5:
            self.keepalive(n, rng, rng.choice([self.env.web2, self.env.web]))
            return
        data = mutate(chaos_request(rng), rng) if rng.random() < 0.7 else chaos_request(rng)
        o, _ = self.send_read(n, self.env.web2, data, rng, "halfclose", refused_ok=True)
        if o:
            self.judge(n, "to web2", data, o, None, True)

    def keepalive(self, n, rng, port):
        """Valid requests one after the other on one connection, with pauses
        in which reloads add or remove its listener: each gets a whole
        answer, or the connection closes between two of them."""
        s = self.open(n, port, b"", refused_ok=True)
        if not s:
            return
        sent = b""
        try:
            for _ in range(rng.randint(2, 6)):
                data = req(b"GET", rng.choice([b"/", b"/mixed/", b"/chunked", b"/conn"]))
                sent += data
                try:
                    s.sendall(data)
                except OSError:
                    return  # closed between two requests: allowed
                o = read_all(s, self.hang_s, done=lambda d: parse_answers(d)[1] is None and parse_answers(d)[0])
                if o.end in ("hang", "endless") or (o.data and parse_answers(o.data)[1] not in (None, "cut")):
                    self.judge(n, f"keep-alive to {port}", sent, o, None, True)
                    return
                if o.end != "answered":
                    return
                self.stop.wait(rng.choice([0, 0.2, 1, 3]))
        finally:
            s.close()

    def op_flood(self, n, rng):
        """Many connections at once, each left with nothing, a part of a
        head or a ClientHello, then all cut by FIN or RST."""
        port = rng.choice([self.env.web, self.env.tls, self.env.tcp, self.env.tcps, self.env.admin])
        socks = []
        for _ in range(rng.choice([20, 100, 300])):
            try:
                s = connect(port, 2)
            except OSError:
                break  # a full accept queue is the kernel's business
            socks.append(s)
            try:
                if rng.random() < 0.5:
                    s.sendall(rng.choice([b"GET / HTTP/1.1\r\nHost: x\r\n", b"\x16\x03\x01\x02\x00\x01",
                                          b"POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc"]))
            except OSError:
                pass
        self.stop.wait(rng.choice([0.1, 1, 3]))
        for s in socks:
            if rng.random() < 0.5:
                set_rst(s)
            s.close()

    def op_slowread(self, n, rng):
        """Pipelined big answers to a client that reads slowly, stops
        reading, or resets in the middle: back pressure on every path."""
        path = rng.choice([b"/big?n=65536", b"/chunked", b"/mixed/big?n=65536", b"/bad/x"])
        data = req(b"GET", path) * rng.randint(2, 30)
        # A small receive buffer, set before connecting: shrunk afterwards,
        # the kernel's window updates come only with delayed ACKs (4 KiB per
        # 200 ms, with or without tern in the path).
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rng.choice([2048, 8192, 65536]))
        s.settimeout(5)
        try:
            s.connect((HOST, self.env.web))
        except OSError as ex:
            s.close()
            self.find("connect-failed", n, f"web: {ex}", data)
            return
        try:
            deliver(s, data, rng, rng.choice(["all", "halfclose"]), time.monotonic() + self.hang_s)
            stop_at = time.monotonic() + rng.choice([0.5, 2, 6])
            s.settimeout(0.5)
            got = b""
            while time.monotonic() < stop_at:
                try:
                    d = s.recv(rng.choice([1, 512, 4096]))
                    if not d:
                        return
                    got += d
                except socket.timeout:
                    pass
                except OSError:
                    return
                time.sleep(rng.choice([0, 0.01, 0.2]))
            if rng.random() < 0.5:
                set_rst(s)
                return
            o = read_all(s, self.hang_s)
            o.data = got + o.data
        finally:
            s.close()
        self.judge(n, "slow reader", data, o, None, True)

    def op_slow(self, n, rng):
        data = chaos_request(rng)
        port = rng.choice([self.env.web, self.env.admin])
        self.exchange(n, port, data, rng, how="drip")

    def op_tcp_raw(self, n, rng):
        v = rng.random()
        data = rng.randbytes(rng.randint(0, 5000)) if v < 0.4 else mutate(chaos_request(rng), rng) \
            if v < 0.8 else valid_request(rng)[0]
        how = rng.choice(["all", "halfclose", "halfclose", "rst", "rst_mid", "close", "split"])
        o, _ = self.send_read(n, self.env.tcp, data, rng, how)
        # A TCP listener relays whatever its server says: only hangs count.
        if o and o.end in ("hang", "endless"):
            self.find(o.end, n, f"tcp {how}: no close within {self.hang_s}s", data)

    def op_tls_raw(self, n, rng):
        v = rng.randrange(7)
        if v == 0:
            data = rng.randbytes(rng.randint(1, 3000))
        elif v == 1:
            ch = client_hello(rng)
            data = ch[: rng.randrange(len(ch))]
        elif v == 2:
            data = mutate(client_hello(rng), rng)
        elif v == 3:
            data = client_hello(rng) * rng.randint(2, 4)
        elif v == 4:
            data = valid_request(rng)[0]  # plain HTTP to the TLS port
        elif v == 5:
            # A record header announcing a huge record, then little.
            data = b"\x16\x03\x01" + struct.pack(">H", rng.choice([0, 1, 0x4000, 0x4800, 0xFFFF])) + \
                rng.randbytes(rng.randint(0, 100))
        else:
            ch = bytearray(client_hello(rng))
            for _ in range(rng.randint(1, 4)):  # lengths inside the hello
                i = rng.randrange(5, min(len(ch), 60))
                ch[i] = rng.choice([0, 0xFF, ch[i] ^ 0x80])
            data = bytes(ch)
        port = self.env.tls if rng.random() < 0.8 else self.env.tcps
        how = rng.choice(["all", "all", "halfclose", "rst", "rst_mid", "split", "drip"])
        o, _ = self.send_read(n, port, data, rng, how)
        if o and o.end in ("hang", "endless"):
            self.find(o.end, n, f"tls raw {how} to {port}: no close within {self.hang_s}s", data)

    def op_tls_http(self, n, rng):
        v = rng.random()
        if v < 0.35:
            data, expect = valid_request(rng)
        else:
            data, expect = mutate(chaos_request(rng), rng), None
        port = self.env.tls
        s = self.open(n, port, data)
        if not s:
            return
        try:
            try:
                t = TlsConn(s, rng, self.hang_s)
            except (ssl.SSLError, OSError) as ex:
                if isinstance(ex, socket.timeout):
                    self.find("hang", n, "TLS handshake never finished", b"")
                else:
                    self.find("tls-handshake-failed", n, f"{ex!r}", b"")
                return
            w = rng.random()
            recs = t.records(data)
            if w < 0.15 and recs:  # a corrupted record
                r = bytearray(recs)
                i = rng.randrange(5, len(r)) if len(r) > 5 else 0
                r[i] ^= 0x40
                recs = bytes(r)
                expect = None
            elif w < 0.25:  # plaintext garbage after the handshake
                recs = recs[: rng.randrange(len(recs) + 1)] + rng.randbytes(rng.randint(1, 500))
                expect = None
            elif w < 0.3:  # close_notify right after the request
                try:
                    t.obj.unwrap()
                except ssl.SSLError:
                    pass
                recs += t.out.read()
            try:
                if rng.random() < 0.3:
                    for k in range(0, len(recs), 7):
                        s.sendall(recs[k:k + 7])
                else:
                    s.sendall(recs)
                if rng.random() < 0.2:
                    s.shutdown(socket.SHUT_WR)
                    expect = None if expect and expect[0] != "good" else expect
            except OSError:
                expect = None
            if rng.random() < 0.1:
                set_rst(s)
                return
            o = read_all_tls(t, self.hang_s)
        finally:
            s.close()
        self.judge(n, "over TLS", data, o, expect, expect is None)

    def op_tcps(self, n, rng):
        """The TCP listener with TLS: relays the decrypted bytes."""
        data, _ = valid_request(rng) if rng.random() < 0.5 else (rng.randbytes(rng.randint(1, 2000)), None)
        s = self.open(n, self.env.tcps, data)
        if not s:
            return
        try:
            try:
                t = TlsConn(s, rng, self.hang_s)
                s.sendall(t.records(data))
            except socket.timeout:
                self.find("hang", n, "tcps TLS handshake never finished", b"")
                return
            except (ssl.SSLError, OSError) as ex:
                self.find("tls-handshake-failed", n, f"tcps: {ex!r}", b"")
                return
            o = read_all_tls(t, self.hang_s)
        finally:
            s.close()
        if o.end in ("hang", "endless"):
            self.find(o.end, n, f"tcps: no close within {self.hang_s}s", data)

    # ---- admin ----

    def admin_request(self, rng):
        pools = ["mixed", "dyn", "bad", "hc", "tlsb", "tcpp", "nosuch", "good", "%00", "a" * 300, "m%69xed"]
        pool = rng.choice(pools[:6] * 3 + pools)
        srv = rng.choice(["d1", "d2", "d3", "garbage", "closed", "good3", "nosuch", "x/y", "%2F", "\xff", ""])
        paths = ["/", "/metrics", "/api/v1/pools", f"/api/v1/pools/{pool}", f"/api/v1/pools/{pool}/history",
                 f"/api/v1/pools/{pool}/servers", f"/api/v1/pools/{pool}/servers/{srv}",
                 f"/api/v1/pools/{pool}/servers/{srv}/drain", f"/api/v1/pools/{pool}/servers/{srv}/enable",
                 f"/api/v1/pools/{pool}/servers/{srv}/maint", f"/api/v1/pools/{pool}/servers/{srv}?now=1",
                 "/api/v1/listeners", "/api/v1/vrrp", "/api/v1/alarms", "/api/v1/scale", "/api/v1/reload",
                 "/api/v1/nosuch", "/api/v2/pools", "//api//v1//pools//", "/api/v1/pools/" + "s/" * 20,
                 "/api/v1/pools/mixed/servers/d1/drain/x", "*", "/metrics?x=" + "q" * 3000]
        path = rng.choice(paths)
        # Only this pool's servers may be given addresses, and only loopback ones.
        port = rng.choice([self.env.good[2][1], self.env.bad["garbage"], self.env.bad["never"],
                           self.env.closed, self.env.good[0][1]])
        addr = rng.choice([f"127.0.0.1:{port}", f"127.0.0.1:{port}", "127.0.0.1:0", "127.0.0.1:99999",
                           "localhost:" + str(port), "not-an-address", "", "127.0.0.1"])
        bodies = [
            None,
            json.dumps({"name": rng.choice(["d1", "d2", "d3", "n" * 300]), "address": addr}),
            json.dumps({"name": "d1", "address": addr, "weight": rng.choice([0, 1, 256, 257, -1, 2**40])}),
            json.dumps({"weight": rng.choice([0, 3, 256, 1000, -5, 1.5, "1", None])}),
            json.dumps({"state": rng.choice(["ready", "drain", "maint", "up", "", 5])}),
            json.dumps({"weight": 2, "state": "ready", "extra": 1}),
            "{", "}", "[]", "null", "\"str\"", "{\"name\": \"d1\", \"name\": \"d2\", \"address\": \"" + addr + "\"}",
            "{\"name\": \"\\ud800\", \"address\": \"" + addr + "\"}",
            "{\"name\": \"a\\u0000b\", \"address\": \"" + addr + "\"}",
            "[" * 5000 + "]" * 5000, "{\"a\":" * 3000 + "1" + "}" * 3000,
            "{\"weight\": 1e400}", "{\"weight\": 99999999999999999999999}",
            "x" * rng.choice([100, 70000, 300000]),
            "\xff\xfe\x00garbage",
        ]
        body = rng.choice(bodies)
        method = rng.choice(["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "BREW", "get", "POST"])
        if path.endswith(("/drain", "/enable", "/maint")) or path.endswith("/reload"):
            method = rng.choice([method, "POST", "POST"])
        tok = rng.choice([TOKEN] * 6 + [None, "wrong", TOKEN + "x", "", TOKEN[:-1], "x" * 5000])
        h = [f"{method} {path} HTTP/1.1", "Host: admin"]
        if tok is not None:
            h.append(rng.choice(["Authorization: Bearer ", "Authorization: bearer ", "Authorization: Basic ",
                                 "Authorization: Bearer  "]) + tok)
        b = b""
        if body is not None:
            b = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
            b = b.replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe")
            if rng.random() < 0.2:
                h.append("Transfer-Encoding: chunked")
                b = rechunk(b, rng)
            else:
                h.append(f"Content-Length: {len(b)}")
            h.append(rng.choice(["Content-Type: application/json", "Content-Type: text/plain", "X-N: 1"]))
        if rng.random() < 0.2:
            h.append("Connection: close")
        raw = ("\r\n".join(h) + "\r\n\r\n").encode("utf-8", "surrogateescape") + b
        return raw

    def op_admin_api(self, n, rng):
        k = 1 if rng.random() < 0.7 else rng.randint(2, 6)  # pipelined calls
        reqs = [self.admin_request(rng) for _ in range(k)]
        self.exchange(n, self.env.admin, b"".join(reqs), rng,
                      how=rng.choice(["all", "all", "halfclose", "split", "rst"]),
                      expect=("any", None, None), answers=k, heads=[r.startswith(b"HEAD ") for r in reqs])

    def op_admin_raw(self, n, rng):
        raw = self.admin_request(rng)
        # Mutations on the head only: a body may hold a server address, and
        # a flipped byte there could point tern beyond loopback.
        cut = raw.find(b"\r\n\r\n") + 4
        data = mutate(raw[:cut], rng) + (raw[cut:] if b"address" not in raw[cut:] else b"")
        if b"address" in data and not loopback_only(data):
            return
        self.exchange(n, self.env.admin, data, rng)

    # ---- signals ----

    def op_sighup(self, n, rng):
        with self.sig_lock:
            if self.tern.poll() is not None:
                return
            self.reloads += 1
            if self.reloads % 2 == 0:
                text = make_config(self.env, rng.randrange(12))
                kind = "valid"
            else:
                text = self.checked_bad_config(rng)
                kind = "invalid"
            write_config(self.env, text)
            self.tally(f"reload_{kind}")
            if rng.random() < 0.2:
                # The same reload through the admin API.
                try:
                    s = connect(self.env.admin, 5)
                    s.sendall(f"POST /api/v1/reload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n"
                              "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
                    o = read_all(s, self.hang_s)
                    s.close()
                    if o.end == "hang":
                        self.find("hang", n, "POST /api/v1/reload never answered", b"")
                except OSError as ex:
                    self.find("connect-failed", n, f"admin reload: {ex}", b"")
            else:
                self.tern.send_signal(signal.SIGHUP)
            time.sleep(rng.choice([0, 0.05, 0.3]))

    def checked_bad_config(self, rng):
        """A broken configuration that `tern -t` refuses. Some breakages
        (a truncation at a line's end, a duplicated list item) leave a
        valid file with fewer listeners, which a reload rightly applies;
        those are swapped for one that is surely wrong."""
        text = make_bad_config(self.env, rng, rng.randrange(12))
        path = os.path.join(self.dir, "candidate.yaml")
        with open(path, "w", encoding="latin-1") as f:
            f.write(text)
        r = subprocess.run([self.tern_bin, "-t", "-c", path], capture_output=True, timeout=120)
        err = r.stderr.decode("utf-8", "replace")
        if self.sanitizer_report(err) or r.returncode not in (0, 1):
            self.find("config-check", -1, f"tern -t exited {r.returncode}: {err[-3000:]}", text.encode("latin-1"))
        if r.returncode == 0:
            self.tally("bad_config_valid")
            text = make_config(self.env, 0) + "bogus_key: 1\n"
        return text

    def op_sigusr1(self, n, rng):
        with self.sig_lock:
            if self.tern.poll() is not None:
                return
            if rng.random() < 0.5:  # as logrotate would: move the files away first
                for p in (self.env.log, self.env.access):
                    try:
                        os.replace(p, p + ".1")
                    except OSError:
                        pass
            self.tern.send_signal(signal.SIGUSR1)

    def signaller(self, t_end):
        """Reloads and log reopens on their own clock, whatever the pace of
        the connections: a signal every 0.2 to 2 s."""
        rng = random.Random(f"{self.seed}/signals")
        k = 0
        while not self.stop.is_set() and time.monotonic() < t_end:
            self.stop.wait(rng.uniform(0.2, 2))
            if self.stop.is_set() or time.monotonic() >= t_end:
                return
            k += 1
            n = -1000 - k  # signal operations are numbered apart
            try:
                if rng.random() < 0.8:
                    self.tally("sighup")
                    self.op_sighup(n, rng)
                else:
                    self.tally("sigusr1")
                    self.op_sigusr1(n, rng)
            except Exception:
                self.find("harness-error", n, traceback.format_exc(), b"")

    # ---- the run ----

    def canary(self, timeout):
        """A normal request to the good pool must get 200 and a good name."""
        try:
            s = connect(self.env.web, timeout)
            s.sendall(b"GET / HTTP/1.1\r\nHost: canary\r\nConnection: close\r\n\r\n")
            o = read_all(s, timeout)
            s.close()
        except OSError as ex:
            return f"connect: {ex}"
        resps, problem = parse_answers(o.data)
        if problem or not resps:
            return f"no answer ({o.end}, {problem}): {o.data[:200]!r}"
        st, _, body = resps[0]
        if st != 200 or body not in (b"good1\n", b"good2\n"):
            return f"status {st} body {body[:80]!r}"
        return None

    def worker(self, t_end):
        while not self.stop.is_set():
            with self.lock:
                n = self.next_op
                if n >= self.count or time.monotonic() > t_end:
                    return
                self.next_op += 1
                self.inflight[n] = time.monotonic()
            try:
                self.run_op(n)
            except Exception:
                self.find("harness-error", n, traceback.format_exc(), b"")
            finally:
                with self.lock:
                    self.inflight.pop(n, None)

    def sanitizer_report(self, text):
        return "ERROR: AddressSanitizer" in text or "ERROR: LeakSanitizer" in text or \
            "runtime error:" in text or "SUMMARY: " in text

    def run(self, replay_op=None):
        self.say(f"chaos: seed {self.seed}, {self.duration}s, at most {self.count} ops, {self.threads} threads, "
                 f"hang threshold {self.hang_s}s, tern {self.tern_bin}, files in {self.dir}")
        self.say(f"replay: {sys.executable} {os.path.abspath(__file__)} --seed {self.seed} "
                 f"--duration {self.duration} --count {self.count} --threads {self.threads}")
        t_start = time.monotonic()
        self.setup()
        try:
            if replay_op is not None:
                self.run_op(replay_op)
            else:
                t_end = time.monotonic() + self.duration
                ws = [threading.Thread(target=self.worker, args=(t_end,), daemon=True) for _ in range(self.threads)]
                ws.append(threading.Thread(target=self.signaller, args=(t_end,), daemon=True))
                for w in ws:
                    w.start()
                last_canary = time.monotonic()
                fails = 0
                killed = False
                while any(w.is_alive() for w in ws):
                    time.sleep(0.2)
                    if self.kill_after is not None and not killed and time.monotonic() - t_start > self.kill_after:
                        self.tern.kill()  # self-test: the campaign must see this
                        killed = True
                    if self.tern.poll() is not None:
                        with self.lock:
                            ops = sorted(self.inflight)
                        self.find("tern-died", ops[0] if ops else -1,
                                  f"exit {self.tern.returncode} with ops {ops} in flight", b"")
                        self.stop.set()
                        break
                    if self.sanitizer_report(self.stderr_text()):
                        with self.lock:
                            ops = sorted(self.inflight)
                        self.find("sanitizer", ops[0] if ops else -1, f"report with ops {ops} in flight", b"")
                        self.stop.set()
                        break
                    if len(self.findings) >= 25:
                        self.say("25 findings: stopping here")
                        self.stop.set()
                        break
                    if time.monotonic() - last_canary > 5:
                        last_canary = time.monotonic()
                        why = self.canary(self.hang_s)
                        fails = fails + 1 if why else 0
                        if why:
                            self.say(f"canary failed ({fails} in a row): {why}")
                        if fails >= 4:
                            self.find("wedged", -1, f"4 canaries in a row failed, last: {why}", b"")
                            self.stop.set()
                            break
                for w in ws:
                    w.join(self.hang_s * 5 + 30)
                    if w.is_alive():
                        self.find("harness-stuck", -1, "a worker did not finish", b"")
            self.final_checks()
        finally:
            self.teardown()
        return self.report()

    def final_checks(self):
        e = self.env
        if self.tern.poll() is None:
            # A valid configuration again, so the final state is known.
            with self.sig_lock:
                write_config(e, make_config(e, 0))
                self.tern.send_signal(signal.SIGHUP)
            time.sleep(1)
            why = None
            for _ in range(5):
                why = self.canary(self.hang_s)
                if not why:
                    break
                time.sleep(1)
            if why:
                self.find("final-request", -1, why, b"")
            # And over TLS.
            try:
                s = connect(e.tls, 5)
                t = TlsConn(s, random.Random(0), self.hang_s)
                s.sendall(t.records(b"GET / HTTP/1.1\r\nHost: final\r\nConnection: close\r\n\r\n"))
                o = read_all_tls(t, self.hang_s)
                s.close()
                resps, problem = parse_answers(o.data)
                if problem or not resps or resps[0][0] != 200:
                    self.find("final-request", -1, f"over TLS: {problem} {o.data[:200]!r}", b"")
            except (OSError, ssl.SSLError) as ex:
                self.find("final-request", -1, f"over TLS: {ex!r}", b"")
        if self.tern.poll() is None:
            self.check_gauges()
        if self.tern.poll() is None:
            self.tern.send_signal(signal.SIGTERM)
            try:
                self.tern.wait(timeout=60 if self.sanitized else 20)
            except subprocess.TimeoutExpired:
                self.find("stop-hang", -1, "tern did not exit within the time after SIGTERM", b"")
                self.tern.kill()
                self.tern.wait()
        self.stderr.close()
        rc = self.tern.returncode
        text = self.stderr_text()
        tracer = ("Tracer caught signal" in text and "LeakSanitizer has encountered a fatal error" in text
                  and "ERROR: AddressSanitizer" not in text and "ERROR: LeakSanitizer" not in text
                  and "runtime error" not in text)
        if tracer:
            # LeakSanitizer's own tracer crashing now and then (google/sanitizers#1353) says nothing about tern.
            self.say("warning: LeakSanitizer's tracer crashed at exit; this run's leak check did not happen")
        elif self.sanitizer_report(text) and not any(f["kind"] == "sanitizer" for f in self.findings):
            self.find("sanitizer", -1, "report in tern's stderr", b"")
        if rc != 0 and not tracer and not any(f["kind"] == "tern-died" for f in self.findings):
            self.find("exit-code", -1, f"tern exited with {rc}", b"")

    def metrics(self):
        s = connect(self.env.admin, 5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        o = read_all(s, self.hang_s)
        s.close()
        resps, problem = parse_answers(o.data)
        if problem or not resps or resps[0][0] != 200:
            raise OSError(f"GET /metrics: {problem} {o.data[:200]!r}")
        return resps[0][2].decode("utf-8", "replace")

    GAUGES = ("tern_listener_active_connections", "tern_server_active_connections",
              "tern_pool_active_connections", "tern_pool_queued")

    def check_gauges(self):
        """Once every client is gone, nothing may still count as open: a
        gauge stuck above 0 is a connection or a slot that leaked."""
        deadline = time.monotonic() + self.hang_s * 2
        stuck = None
        while time.monotonic() < deadline:
            try:
                text = self.metrics()
            except OSError as ex:
                self.find("final-request", -1, f"metrics: {ex}", b"")
                return
            gauges = [ln for ln in text.splitlines() if ln.startswith(self.GAUGES)]
            if not gauges:
                self.find("harness-error", -1, f"none of {self.GAUGES} in /metrics", b"")
                return
            stuck = [ln for ln in gauges if not ln.endswith(" 0")]
            if not stuck:
                return
            time.sleep(1)
        self.find("gauge-leak", -1, "still counted once every client left: " + "; ".join(stuck[:10]), b"")

    def report(self):
        text = self.stderr_text()
        m = re.search(r"(=+\d+=+ERROR: .*?)(?:\n\n\n|\Z)", text, re.S)
        if m:
            self.say("---- sanitizer output ----\n" + m.group(1)[:8000])
        elif self.findings and text:
            self.say("---- tern stderr (tail) ----\n" + text[-3000:])
        self.say(f"ops: {self.next_op} {json.dumps(self.counts, sort_keys=True)}")
        with open(os.path.join(self.dir, "findings.txt"), "w") as f:
            json.dump({"seed": self.seed, "findings": self.findings, "counts": self.counts}, f, indent=1)
        self.say(f"chaos: seed {self.seed}: {len(self.findings)} finding(s)")
        return self.findings


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--duration", type=float, default=60, help="seconds of chaos")
    ap.add_argument("--count", type=int, default=100000, help="most operations")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--tern", default=os.environ.get("TERN_BIN", DEFAULT_TERN))
    ap.add_argument("--keep", help="folder for the files (default: a new temporary one)")
    ap.add_argument("--replay-op", type=int, help="only run this one operation of the seed")
    ap.add_argument("--hang", type=float, help="seconds of silence that make a hang")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    # SIGTERM unwinds like an exception, so tern and the backends are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    c = Campaign(os.path.abspath(a.tern), seed, a.duration, a.count, a.threads, a.keep, a.hang)
    findings = c.run(a.replay_op)
    if not findings and not a.keep:
        shutil.rmtree(c.dir, ignore_errors=True)
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
