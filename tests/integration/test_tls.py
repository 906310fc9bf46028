"""TLS at the edge: termination with SNI and ALPN, resumption, client
certificates, OCSP stapling, TLS to the servers, and refusal of bad
certificates at start and at reload.

Certificates are made for each run with the openssl command line in a temporary
folder: a CA, RSA and ECDSA certificates for the same names, a wildcard, an
expired one, a second CA for client certificates and a third nobody trusts.
Clients are real: curl, openssl s_client and Python's ssl module.
"""
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import TERN, free_port, raw_exchange, scaled, status_of, wait_port

# ---- certificates ----


def _openssl(*args, cwd=None, input=None):
    r = subprocess.run(["openssl", *args], cwd=cwd, input=input, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def _ca(d, name):
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.pem", "-subj", f"/CN={name}", "-days", "30", cwd=d)


def _leaf(d, name, ca, subj, sans=None, key="rsa", days="10"):
    keyopt = ["-newkey", "rsa:2048"] if key == "rsa" else [
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    args = ["req", *keyopt, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", subj]
    if sans:
        args += ["-addext", "subjectAltName=" + ",".join(f"DNS:{s}" for s in sans)]
    _openssl(*args, cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", days, "-out", f"{name}.pem", "-copy_extensions", "copy",
             cwd=d)


def _ocsp(d, leaf, ca):
    serial = _openssl("x509", "-in", f"{leaf}.pem", "-noout", "-serial", cwd=d).decode()
    serial = serial.strip().split("=")[1]
    subject = _openssl("x509", "-in", f"{leaf}.pem", "-noout", "-subject", "-nameopt", "compat",
                       cwd=d).decode().strip().split("=", 1)[1]
    with open(os.path.join(d, "index.txt"), "w") as f:
        f.write(f"V\t301231000000Z\t\t{serial}\tunknown\t{subject}\n")
    _openssl("ocsp", "-issuer", f"{ca}.pem", "-cert", f"{leaf}.pem", "-reqout", "req.der",
             "-no_nonce", cwd=d)
    _openssl("ocsp", "-index", "index.txt", "-rsigner", f"{ca}.pem", "-rkey", f"{ca}.key",
             "-CA", f"{ca}.pem", "-reqin", "req.der", "-respout", f"{leaf}.ocsp", "-ndays", "1",
             cwd=d)


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="tern-tls-")
    _ca(d, "ca")
    _ca(d, "clientca")
    _ca(d, "rogue")
    _leaf(d, "rsa", "ca", "/CN=site.test", ["site.test", "localhost"])
    _leaf(d, "ec", "ca", "/CN=site.test", ["site.test", "localhost"], key="ec")
    _leaf(d, "other", "ca", "/CN=other.test", ["other.test"], key="ec")
    _leaf(d, "wild", "ca", "/CN=wild", ["*.wild.test"])
    _leaf(d, "expired", "ca", "/CN=site.test", ["site.test"], days="-1")
    _leaf(d, "backend", "ca", "/CN=backend.test", ["backend.test"])
    _leaf(d, "alice", "clientca", "/O=Tern Test/CN=alice")
    _leaf(d, "mallory", "rogue", "/CN=mallory")
    _ocsp(d, "rsa", "ca")
    p = lambda n: os.path.join(d, n)  # noqa: E731
    yield p
    shutil.rmtree(d, ignore_errors=True)


def der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


# ---- a TLS origin server ----

ORIGIN = r'''
import http.server, itertools, ssl, sys
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ids = itertools.count(1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        self.cid = next(ids)
        self.served = 0
    def parse_request(self):
        self.served += 1  # requests on this connection
        return super().parse_request()
    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Conn", str(self.cid))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/close":
            body = f"reused={self.connection.session_reused}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        elif self.path.startswith("/big"):
            self.reply(b"z" * int(self.path.split("=")[1]))
        elif self.path == "/headers":
            self.reply(str(self.headers).encode())
        else:
            self.reply(b"tls-origin\n")
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        self.reply(hashlib.sha256(data).hexdigest().encode())
    def do_PUT(self):
        # /forget: read the whole request, then close without a word, unless
        # it is the connection's first request.
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/forget" and self.served > 1:
            self.close_connection = True
            return
        self.reply(hashlib.sha256(data).hexdigest().encode())
    def log_message(self, *a):
        pass
import hashlib
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
srv.daemon_threads = True
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("ready", flush=True)
srv.serve_forever()
'''


class TLSOrigin:
    def __init__(self, pki, name="tls1"):
        self.name = name
        self.port = free_port()
        self.script = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
        self.script.write(ORIGIN)
        self.script.close()
        self.proc = subprocess.Popen(
            [sys.executable, self.script.name, str(self.port), pki("backend.pem"),
             pki("backend.key")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout.readline().startswith("ready")

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if os.path.exists(self.script.name):  # a test may stop it early
            os.unlink(self.script.name)


@pytest.fixture
def origins(pki):
    made = []

    def make(n=1):
        out = [TLSOrigin(pki, f"tls{i + 1}") for i in range(n)]
        made.extend(out)
        return out

    yield make
    for o in made:
        o.stop()


# ---- helpers ----


def tls_cfg(port, servers, certs, tls_extra="", workers=1, mode="http", pool_extra="",
            listener_extra="", extra_listeners="", global_extra=""):
    certs_yaml = ", ".join(
        "{ " + ", ".join(f"{k}: {v}" for k, v in c.items()) + " }" for c in certs)
    return (
        f"global:\n  workers: {workers}\n{global_extra}"
        "listeners:\n"
        f"  - name: web\n    bind: 127.0.0.1:{port}\n    mode: {mode}\n    pool: web\n"
        f"{listener_extra}"
        f"    tls:\n      certificates: [ {certs_yaml} ]\n{tls_extra}"
        f"{extra_listeners}"
        "pools:\n"
        f"  web:\n{pool_extra}    servers:\n"
        + "".join(f"      - {{ name: {s.name}, address: {s.address} }}\n" for s in servers)
    )


def client_ctx(pki, alpn=None, cert=None, maxv=None, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki("ca.pem"))
    ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert:
        ctx.load_cert_chain(pki(f"{cert}.pem"), pki(f"{cert}.key"))
    if maxv:
        ctx.maximum_version = maxv
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def handshake(port, ctx, sni=None, session=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(5))
    return ctx.wrap_socket(s, server_hostname=sni, session=session)


def https_get(sock, path="/", host="site.test", extra=b""):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode() + extra + b"\r\n")
    return read_response(sock)


def read_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    while len(body) < n:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def curl(port, path="/", *args, host="site.test"):
    return subprocess.run(
        ["curl", "-s", "-S", "--max-time", str(scaled(20)), "--cacert", CA[0],
         "--resolve", f"{host}:{port}:127.0.0.1", *args, f"https://{host}:{port}{path}"],
        capture_output=True)


CA = [None]


@pytest.fixture(autouse=True)
def _ca_path(pki):
    CA[0] = pki("ca.pem")


def s_client(port, *args, data=b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n"):
    r = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", CA[0], "-ign_eof",
         *args], input=data, capture_output=True, timeout=scaled(20))
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


RSA_EC = lambda pki: [  # noqa: E731
    {"cert": pki("rsa.pem"), "key": pki("rsa.key")},
    {"cert": pki("ec.pem"), "key": pki("ec.key")},
]

# ---- termination, SNI, ALPN ----


def test_curl_over_tls_reaches_backend_with_https_proto(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(tls_cfg(port, [b], RSA_EC(pki)), [port])
    r = curl(port, "/headers", "-v")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert "X-Forwarded-Proto: https" in out
    assert "proto=https" in out
    assert "ALPN: server accepted http/1.1" in r.stderr.decode()


def test_certificate_files_relative_to_the_config(pki, backends, tern):
    """cert: rsa.pem names the file beside the configuration, wherever tern
    was started from (it runs from the test folder, which has none)."""
    (b,) = backends(1)
    port = free_port()
    files = {n: open(pki(n)).read() for n in ("rsa.pem", "rsa.key")}
    tern(tls_cfg(port, [b], [{"cert": "rsa.pem", "key": "rsa.key"}]), [port], extra_files=files)
    assert not os.path.exists("rsa.pem")
    r = curl(port, "/")
    assert r.returncode == 0, r.stderr


def test_sni_exact_wildcard_and_default(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    certs = RSA_EC(pki) + [
        {"cert": pki("other.pem"), "key": pki("other.key")},
        {"cert": pki("wild.pem"), "key": pki("wild.key")},
    ]
    tern(tls_cfg(port, [b], certs), [port])
    ctx = client_ctx(pki)
    cases = {
        "other.test": "other.pem",
        "OTHER.test": "other.pem",
        "a.wild.test": "wild.pem",
        "b.a.wild.test": None,  # a wildcard covers one label only: default
        "wild.test": None,
        "unknown.example": None,
        None: None,
    }
    for sni, want in cases.items():
        with handshake(port, ctx, sni) as s:
            got = s.getpeercert(binary_form=True)
            if want:
                assert got == der(pki(want)), sni
            else:
                # The default group: RSA and ECDSA for site.test.
                assert got in (der(pki("rsa.pem")), der(pki("ec.pem"))), sni
            assert status_of(https_get(s)) == 200
    # s_client names the certificate it got.
    out = s_client(port, "-servername", "a.wild.test")
    assert "CN = wild" in out and "Verify return code: 0 (ok)" in out, out
    out = s_client(port, "-servername", "other.test")
    assert "CN = other.test" in out, out


def test_rsa_and_ecdsa_chosen_by_client_algorithms(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(tls_cfg(port, [b], RSA_EC(pki)), [port])
    ec = client_ctx(pki, maxv=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    rsa = client_ctx(pki, maxv=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    with handshake(port, ec, "site.test") as s:
        assert s.getpeercert(binary_form=True) == der(pki("ec.pem"))
        assert s.version() == "TLSv1.2"
    with handshake(port, rsa, "site.test") as s:
        assert s.getpeercert(binary_form=True) == der(pki("rsa.pem"))
    with handshake(port, client_ctx(pki), "site.test") as s:
        assert s.version() == "TLSv1.3"


def test_alpn_http11_never_h2(pki, backends, tern, tmp_path):
    (b,) = backends(1)
    port = free_port()
    tern(tls_cfg(port, [b], RSA_EC(pki)), [port])
    with handshake(port, client_ctx(pki, alpn=["h2", "http/1.1"]), "site.test") as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        assert status_of(https_get(s)) == 200
    with handshake(port, client_ctx(pki, alpn=["h2"]), "site.test") as s:
        assert s.selected_alpn_protocol() is None
    # Offering h2 is refused when the file is checked.
    bad = tmp_path / "h2.yaml"
    bad.write_text(tls_cfg(port, [b], RSA_EC(pki), tls_extra="      alpn: [h2, http/1.1]\n"))
    r = subprocess.run([TERN, "-t", "-c", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "HTTP/2" in r.stderr, r.stderr


def test_min_version_13_and_ciphers(pki, backends, tern, tmp_path):
    (b,) = backends(1)
    port = free_port()
    tern(tls_cfg(port, [b], RSA_EC(pki), tls_extra="      min_version: \"1.3\"\n"), [port])
    with pytest.raises(ssl.SSLError):
        handshake(port, client_ctx(pki, maxv=ssl.TLSVersion.TLSv1_2), "site.test")
    with handshake(port, client_ctx(pki), "site.test") as s:
        assert s.version() == "TLSv1.3"
    bad = tmp_path / "c.yaml"
    bad.write_text(tls_cfg(port, [b], RSA_EC(pki), tls_extra="      ciphers: NOPE-CIPHER\n"))
    r = subprocess.run([TERN, "-t", "-c", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "ciphers" in r.stderr, r.stderr


def test_default_tls12_suites_are_forward_secret_aead(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(tls_cfg(port, [b], RSA_EC(pki)), [port])
    with pytest.raises(ssl.SSLError):
        handshake(port, client_ctx(pki, maxv=ssl.TLSVersion.TLSv1_2, ciphers="AES128-SHA"),
                  "site.test")


# ---- resumption ----


def _resumes(port, ctx, n, sni="site.test"):
    with handshake(port, ctx, sni) as s:
        https_get(s)  # the TLS 1.3 ticket comes after the handshake
        sess = s.session
    reused = 0
    for _ in range(n):
        with handshake(port, ctx, sni, session=sess) as s:
            https_get(s)
            reused += s.session_reused
            sess = s.session
    return reused


def test_resumption_with_s_client(pki, backends, tern, tmp_path):
    (b,) = backends(1)
    port = free_port()
    tern(tls_cfg(port, [b], RSA_EC(pki)), [port])
    sess = str(tmp_path / "sess")
    out = s_client(port, "-servername", "site.test", "-sess_out", sess)
    assert "New, TLSv1.3" in out, out
    out = s_client(port, "-servername", "site.test", "-sess_in", sess)
    assert "Reused, TLSv1.3" in out, out
    # TLS 1.2 tickets too.
    out = s_client(port, "-servername", "site.test", "-tls1_2", "-sess_out", sess)
    assert "New, TLSv1.2" in out, out
    out = s_client(port, "-servername", "site.test", "-tls1_2", "-sess_in", sess)
    assert "Reused, TLSv1.2" in out, out


def test_tickets_shared_by_workers_and_survive_reload(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    text = tls_cfg(port, [b], RSA_EC(pki), workers=2)
    t = tern(text, [port])
    ctx = client_ctx(pki)
    # SO_REUSEPORT spreads these connections over both workers.
    assert _resumes(port, ctx, 20) == 20
    with handshake(port, ctx, "site.test") as s:
        https_get(s)
        sess = s.session
    with open(t.conf, "w") as f:
        f.write(text.replace("workers: 2", "workers: 2\n  max_connections: 5000"))
    t.proc.send_signal(signal.SIGHUP)
    time.sleep(scaled(0.5))
    assert "in effect" in t.log()
    with handshake(port, ctx, "site.test", session=sess) as s:
        assert status_of(https_get(s)) == 200
        assert s.session_reused


def test_sessions_do_not_cross_listeners(pki, backends, tern):
    (b,) = backends(1)
    p1, p2 = free_port(), free_port()
    certs = "[ { cert: %s, key: %s } ]" % (pki("rsa.pem"), pki("rsa.key"))
    extra = (f"  - name: strict\n    bind: 127.0.0.1:{p2}\n    pool: web\n"
             f"    tls:\n      certificates: {certs}\n"
             f"      client_ca: {pki('clientca.pem')}\n      client_auth: optional\n")
    tern(tls_cfg(p1, [b], RSA_EC(pki), extra_listeners=extra), [p1, p2])
    ctx = client_ctx(pki)
    with handshake(p1, ctx, "site.test") as s:
        https_get(s)
        sess = s.session
    with handshake(p2, ctx, "site.test", session=sess) as s:
        assert status_of(https_get(s)) == 200
        assert not s.session_reused


# ---- client certificates ----


def _mtls_cfg(pki, port, b, auth):
    return tls_cfg(port, [b], RSA_EC(pki),
                   tls_extra=f"      client_ca: {pki('clientca.pem')}\n"
                             f"      client_auth: {auth}\n")


def test_mtls_required(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(_mtls_cfg(pki, port, b, "required"), [port])
    r = curl(port, "/headers", "--cert", pki("alice.pem"), "--key", pki("alice.key"),
             "-H", "X-Client-Cert-Subject: CN=admin")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert "X-Client-Cert-Subject: CN=alice,O=Tern Test" in out, out
    assert "CN=admin" not in out
    # No certificate, or one from a CA we do not trust: refused.
    r = curl(port, "/")
    assert r.returncode != 0 and b"b1" not in r.stdout
    r = curl(port, "/", "--cert", pki("mallory.pem"), "--key", pki("mallory.key"))
    assert r.returncode != 0 and b"b1" not in r.stdout
    assert b.requests() == ["GET /headers 0"]


def test_mtls_optional_and_header_stripped(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(_mtls_cfg(pki, port, b, "optional"), [port])
    r = curl(port, "/headers", "-H", "X-Client-Cert-Subject: CN=admin")
    assert r.returncode == 0, r.stderr
    assert b"X-Client-Cert-Subject" not in r.stdout, r.stdout
    r = curl(port, "/headers", "--cert", pki("alice.pem"), "--key", pki("alice.key"))
    assert b"X-Client-Cert-Subject: CN=alice,O=Tern Test" in r.stdout
    r = curl(port, "/", "--cert", pki("mallory.pem"), "--key", pki("mallory.key"))
    assert r.returncode != 0


def test_client_header_stripped_on_plain_listener(backends, tern):
    from conftest import simple_config
    (b,) = backends(1)
    port = free_port()
    tern(simple_config(port, [b]), [port])
    out = raw_exchange(port, b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b"X-Client-Cert-Subject: CN=admin\r\n\r\n")
    assert status_of(out) == 200 and b"CN=admin" not in out


# ---- OCSP stapling ----


def test_ocsp_stapling(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    certs = [{"cert": pki("rsa.pem"), "key": pki("rsa.key"), "ocsp": pki("rsa.ocsp")},
             {"cert": pki("other.pem"), "key": pki("other.key")}]
    tern(tls_cfg(port, [b], certs), [port])
    out = s_client(port, "-servername", "site.test", "-status")
    assert "OCSP Response Status: successful" in out, out
    assert "Cert Status: good" in out, out
    out = s_client(port, "-servername", "other.test", "-status")
    assert "OCSP response: no response sent" in out, out


def test_ocsp_for_another_certificate_is_an_error(pki, tmp_path):
    port = free_port()
    cfg = tmp_path / "t.yaml"

    class B:
        name, address = "b1", "127.0.0.1:1"
    cfg.write_text(tls_cfg(port, [B], [{"cert": pki("other.pem"), "key": pki("other.key"),
                                          "ocsp": pki("rsa.ocsp")}]))
    r = subprocess.run([TERN, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1 and pki("rsa.ocsp") in r.stderr, r.stderr


# ---- bad certificates: start, -t, reload ----


class _B:
    name, address = "b1", "127.0.0.1:1"


@pytest.mark.parametrize("case", ["expired", "mismatch", "missing", "notpem", "client_ca"])
def test_bad_certificate_refuses_check_and_start(pki, tmp_path, case):
    port = free_port()
    cert, key, extra = pki("rsa.pem"), pki("rsa.key"), ""
    if case == "expired":
        cert, key, named, why = pki("expired.pem"), pki("expired.key"), pki("expired.pem"), "expired"
    elif case == "mismatch":
        key, named, why = pki("ec.key"), pki("ec.key"), "does not match"
    elif case == "missing":
        cert, named, why = str(tmp_path / "nope.pem"), str(tmp_path / "nope.pem"), "cannot open"
    elif case == "notpem":
        cert, named, why = pki("rsa.ocsp"), pki("rsa.ocsp"), "no PEM certificate"
    else:
        extra = f"      client_ca: {pki('rsa.key')}\n      client_auth: required\n"
        named, why = pki("rsa.key"), "client_ca"
    cfg = tmp_path / "t.yaml"
    cfg.write_text(tls_cfg(port, [_B], [{"cert": cert, "key": key}], tls_extra=extra))
    r = subprocess.run([TERN, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert named in r.stderr and why in r.stderr, r.stderr
    assert f"{cfg}:" in r.stderr
    r = subprocess.run([TERN, "-c", str(cfg)], capture_output=True, text=True,
                       timeout=scaled(10))
    assert r.returncode == 1, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert named in lines[0] and why in lines[0], r.stderr
    assert "Sanitizer" not in r.stderr


def test_pool_tls_needs_sni_or_ca(tmp_path):
    port = free_port()
    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, pool: web }}\n"
        "pools:\n  web:\n    tls: true\n    servers:\n      - { name: a, address: 127.0.0.1:1 }\n")
    r = subprocess.run([TERN, "-t", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1 and "pool web" in r.stderr and "tls_sni" in r.stderr, r.stderr


def test_reload_with_bad_certificate_changes_nothing(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    good = tls_cfg(port, [b], [{"cert": pki("rsa.pem"), "key": pki("rsa.key")}])
    t = tern(good, [port])
    for bad_cert, bad_key, named in [
        (pki("expired.pem"), pki("expired.key"), pki("expired.pem")),
        (pki("rsa.pem"), pki("other.key"), pki("other.key")),
    ]:
        with open(t.conf, "w") as f:
            f.write(good.replace(pki("rsa.pem"), bad_cert).replace(pki("rsa.key"), bad_key))
        t.proc.send_signal(signal.SIGHUP)
        time.sleep(scaled(0.5))
        log = t.log()
        assert "reload of" in log and named in log, log
        with handshake(port, client_ctx(pki), "site.test") as s:
            assert s.getpeercert(binary_form=True) == der(pki("rsa.pem"))
            assert status_of(https_get(s)) == 200
    # A good reload puts the new certificate in place.
    with open(t.conf, "w") as f:
        f.write(good.replace(pki("rsa.pem"), pki("ec.pem")).replace(pki("rsa.key"), pki("ec.key")))
    t.proc.send_signal(signal.SIGHUP)
    time.sleep(scaled(0.5))
    assert "in effect" in t.log()
    with handshake(port, client_ctx(pki), "site.test") as s:
        assert s.getpeercert(binary_form=True) == der(pki("ec.pem"))


# ---- robustness and data path ----


def test_garbage_and_plain_http_to_tls_port(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    t = tern(tls_cfg(port, [b], RSA_EC(pki), workers=2), [port])
    for junk in [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(3000), b"\x16\x03\x01\x00\x05zzzzz",
                 b"\x16\x03\x01\xff\xff" + os.urandom(100)]:
        out = raw_exchange(port, junk, timeout=2, shut=True)
        assert b"b1" not in out
    # A client that connects and goes away mid-handshake.
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    s.close()
    r = curl(port, "/")
    assert r.returncode == 0 and r.stdout == b"b1\n", r.stderr
    assert t.proc.poll() is None


def test_keep_alive_and_pipelining_over_tls(pki, backends, tern, tmp_path):
    (b,) = backends(1)
    port = free_port()
    log = tmp_path / "access.log"
    t = tern(tls_cfg(port, [b], RSA_EC(pki), global_extra=f"  access_log: {log}\n"), [port])
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_ctx(pki),
                                       timeout=scaled(5))
    conn.request("GET", "/")
    conn.getresponse().read()
    sock = conn.sock
    for i in range(50):
        conn.request("POST", "/echo", body=str(i).encode())
        r = conn.getresponse()
        assert r.status == 200 and r.read() == str(i).encode()
    assert conn.sock is sock
    conn.close()
    # 20 pipelined requests in one TLS write; answers in order.
    with handshake(port, client_ctx(pki), "site.test") as s:
        req = b"".join(
            f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(str(i))}\r\n\r\n{i}".encode()
            for i in range(20))
        s.sendall(req + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    assert out.count(b"HTTP/1.1 200") == 21, out
    bodies = [part.split(b"\r\n\r\n", 1)[1][:len(str(i))] for i, part in
              enumerate(out.split(b"HTTP/1.1 200")[1:21])]
    assert bodies == [str(i).encode() for i in range(20)]
    t.stop()
    lines = log.read_text().splitlines()
    assert lines and all(" TLSv1.3 TLS_" in l for l in lines), lines[:3]


def test_big_upload_and_download_over_tls(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(tls_cfg(port, [b], RSA_EC(pki)), [port])
    n = 20_000_000
    r = curl(port, f"/big?n={n}")
    assert r.returncode == 0 and len(r.stdout) == n and r.stdout == b"b" * n
    body = os.urandom(3_000_000)
    r = subprocess.run(
        ["curl", "-s", "--max-time", str(scaled(30)), "--cacert", CA[0], "--resolve",
         f"site.test:{port}:127.0.0.1", "--data-binary", "@-", "-H", "Expect:",
         f"https://site.test:{port}/echo"], input=body, capture_output=True)
    assert r.returncode == 0 and hashlib.sha256(r.stdout).digest() == hashlib.sha256(body).digest()
    # A slow reader: the proxy holds decrypted bytes while the client waits.
    with handshake(port, client_ctx(pki), "site.test") as s:
        s.sendall(b"GET /big?n=3000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        time.sleep(scaled(0.5))
        # The whole body, after the head (whose length varies).
        while b"\r\n\r\n" not in got or len(got) - got.index(b"\r\n\r\n") - 4 < 3_000_000:
            d = s.recv(1000)
            assert d
            got += d
        assert got.partition(b"\r\n\r\n")[2] == b"b" * 3_000_000


def test_websocket_upgrade_over_tls(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    tern(tls_cfg(port, [b], RSA_EC(pki)), [port])
    with handshake(port, client_ctx(pki), "site.test") as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
        payload = b"hello over tls"
        mask = b"\x01\x02\x03\x04"
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask +
                  bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))
        frame = s.recv(4096)
        assert frame[2:] == payload


# ---- TLS to the servers ----


def _pool_tls(pki, ca="ca.pem", sni="backend.test"):
    out = "    tls: true\n"
    if ca:
        out += f"    tls_ca: {pki(ca)}\n"
    if sni:
        out += f"    tls_sni: {sni}\n"
    return out


def test_tls_backend_verified_and_reused(pki, origins, tern):
    (o,) = origins(1)
    port = free_port()
    tern(tls_cfg(port, [o], RSA_EC(pki), pool_extra=_pool_tls(pki)), [port])
    conns = set()
    for _ in range(5):
        r = curl(port, "/", "-D", "-")
        assert r.returncode == 0 and b"tls-origin" in r.stdout, r.stderr
        conns |= {l for l in r.stdout.split(b"\r\n") if l.startswith(b"X-Conn")}
    assert len(conns) == 1, conns  # one backend TLS connection, kept and reused
    body = os.urandom(2_000_000)
    r = subprocess.run(
        ["curl", "-s", "--cacert", CA[0], "--resolve", f"site.test:{port}:127.0.0.1",
         "--data-binary", "@-", "-H", "Expect:", f"https://site.test:{port}/up"],
        input=body, capture_output=True)
    assert r.stdout.decode() == hashlib.sha256(body).hexdigest()
    # The upload probed the idle TLS connection before using it (a request
    # with a body cannot be replayed); a healthy one passes and stays in use.
    r = curl(port, "/", "-D", "-")
    assert {l for l in r.stdout.split(b"\r\n") if l.startswith(b"X-Conn")} == conns, r.stdout
    r = curl(port, "/big=5000000")
    assert r.returncode == 0 and r.stdout == b"z" * 5_000_000


def test_tls_backend_replays_a_put_with_its_body(pki, origins, tern):
    """The TLS origin reads a PUT on the reused connection and closes it
    without an answer. tern sends the PUT again, body included, on a fresh
    TLS connection: over TLS a body is moved behind its head before it is
    written, which the copy kept for the replay must not disturb."""
    (o,) = origins(1)
    port = free_port()
    tern(tls_cfg(port, [o], RSA_EC(pki), pool_extra=_pool_tls(pki)), [port])
    assert curl(port, "/").stdout == b"tls-origin\n"
    body = os.urandom(10_000)
    r = subprocess.run(
        ["curl", "-s", "-D", "-", "--cacert", CA[0], "--resolve", f"site.test:{port}:127.0.0.1",
         "-X", "PUT", "--data-binary", "@-", "-H", "Expect:", f"https://site.test:{port}/forget"],
        input=body, capture_output=True)
    assert r.stdout.startswith(b"HTTP/1.1 200 "), r.stdout
    assert b"X-Conn: 2" in r.stdout and r.stdout.endswith(hashlib.sha256(body).hexdigest().encode())


def test_tls_backend_sessions_resume(pki, origins, tern):
    # The origin closes after each answer, so every request needs a new TLS
    # connection: all but the first resume the worker's last session.
    (o,) = origins(1)
    port = free_port()
    tern(tls_cfg(port, [o], RSA_EC(pki), pool_extra=_pool_tls(pki)), [port])
    seen = []
    for _ in range(5):
        r = curl(port, "/close")
        assert r.returncode == 0, r.stderr
        seen.append(r.stdout)
    assert seen[0] == b"reused=False" and set(seen[1:]) == {b"reused=True"}, seen


def test_tls_backend_chain_only_with_private_ca(pki, origins, tern):
    (o,) = origins(1)
    port = free_port()
    tern(tls_cfg(port, [o], RSA_EC(pki), pool_extra=_pool_tls(pki, sni=None)), [port])
    r = curl(port, "/")
    assert r.stdout == b"tls-origin\n", r.stderr


@pytest.mark.parametrize("ca,sni", [("rogue.pem", "backend.test"), ("ca.pem", "wrong.test")])
def test_tls_backend_verification_failure_is_502(pki, origins, tern, ca, sni):
    (o,) = origins(1)
    port = free_port()
    t = tern(tls_cfg(port, [o], RSA_EC(pki), pool_extra=_pool_tls(pki, ca=ca, sni=sni)), [port])
    r = curl(port, "/", "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout == b"502", r.stderr
    assert "certificate verify failed" in t.log(), t.log()


def test_plain_backend_behind_tls_pool_is_502(pki, backends, tern):
    # The server takes the ClientHello for the start of a request and waits
    # for more: the handshake times out (connect timeout), a bad gateway.
    (b,) = backends(1)
    port = free_port()
    t = tern(tls_cfg(port, [b], RSA_EC(pki),
                     pool_extra=_pool_tls(pki) + "    timeouts: { connect: 500ms }\n"), [port])
    r = curl(port, "/", "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout == b"502"
    assert "TLS handshake timeout" in t.log()


# ---- mode: tcp ----


def test_tcp_listener_terminates_tls(pki, backends, tern):
    (b,) = backends(1)
    port = free_port()
    t = tern(tls_cfg(port, [b], RSA_EC(pki), mode="tcp"), [port])
    r = curl(port, "/")
    assert r.returncode == 0 and r.stdout == b"b1\n", r.stderr
    n = 10_000_000
    r = curl(port, f"/big?n={n}")
    assert len(r.stdout) == n
    body = os.urandom(2_000_000)
    r = subprocess.run(
        ["curl", "-s", "--cacert", CA[0], "--resolve", f"site.test:{port}:127.0.0.1",
         "--data-binary", "@-", "-H", "Expect:", f"https://site.test:{port}/echo"],
        input=body, capture_output=True)
    assert hashlib.sha256(r.stdout).digest() == hashlib.sha256(body).digest()
    # No ALPN on a tcp listener unless configured.
    with handshake(port, client_ctx(pki, alpn=["http/1.1"]), "site.test") as s:
        assert s.selected_alpn_protocol() is None
    out = raw_exchange(port, b"GET / HTTP/1.1\r\n\r\n", timeout=2)
    assert b"b1" not in out
    assert t.proc.poll() is None


def test_tcp_listener_with_tls_counts_its_sessions(pki, backends, tern):
    """A tcp listener that terminates TLS runs its sessions in the TLS
    tunnel; its listener counters still count them, in plaintext bytes, and
    not a handshake that failed."""
    (b,) = backends(1)
    port, aport = free_port(), free_port()
    cfg = tls_cfg(port, [b], RSA_EC(pki), mode="tcp").replace(
        "listeners:", f"admin:\n  listen: 127.0.0.1:{aport}\nlisteners:")
    tern(cfg, [aport])
    sent = recv = 0
    for path in ("/", "/big?n=5000"):
        req = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        with handshake(port, client_ctx(pki), "site.test") as s:
            s.sendall(req)
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        assert status_of(out) == 200, out
        sent, recv = sent + len(req), recv + len(out)
    raw_exchange(port, b"not a TLS hello\r\n\r\n", timeout=2)

    def figures():
        c = http.client.HTTPConnection("127.0.0.1", aport, timeout=scaled(5))
        c.request("GET", "/api/v1/listeners")
        (ls,) = json.loads(c.getresponse().read())["listeners"]
        return {k: ls[k] for k in ("connections_total", "active_connections", "requests_total",
                                   "bytes_in", "bytes_out")}

    want = {"connections_total": 3, "active_connections": 0, "requests_total": 2,
            "bytes_in": sent, "bytes_out": recv}
    deadline = time.monotonic() + scaled(5)
    while figures() != want and time.monotonic() < deadline:
        time.sleep(0.05)
    assert figures() == want


def test_tcp_listener_to_tls_pool(pki, origins, tern):
    (o,) = origins(1)
    port = free_port()
    cfg = (
        "global:\n  workers: 1\n"
        f"listeners:\n  - {{ name: t, bind: 127.0.0.1:{port}, mode: tcp, pool: web }}\n"
        "pools:\n  web:\n" + _pool_tls(pki) +
        f"    servers:\n      - {{ name: o, address: {o.address} }}\n")
    tern(cfg, [port])
    out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(out) == 200 and out.endswith(b"tls-origin\n"), out


def test_http_health_check_speaks_tls_to_tls_pools(pki, origins, tern):
    # A TLS pool's servers answer HTTP only inside TLS: the check must too,
    # verified like the proxy's own connections.
    (o,) = origins(1)
    port = free_port()
    check = "    health_check: { type: http, path: /healthz, interval: 200ms, timeout: 1s, rise: 1, fall: 2 }\n"
    t = tern(tls_cfg(port, [o], RSA_EC(pki), pool_extra=_pool_tls(pki) + check), [port])
    time.sleep(scaled(1.2))
    assert "is DOWN" not in t.log(), t.log()
    assert curl(port, "/").stdout == b"tls-origin\n"
    o.stop()
    deadline = time.monotonic() + scaled(5)
    while time.monotonic() < deadline and "is DOWN" not in t.log():
        time.sleep(0.1)
    assert "is DOWN" in t.log(), t.log()


def test_http_health_check_refuses_an_unverified_server(pki, origins, tern, tmp_path):
    (o,) = origins(1)
    port = free_port()
    other = tmp_path / "other-ca"
    other.mkdir()
    _ca(str(other), "other")
    check = "    health_check: { type: http, path: /healthz, interval: 200ms, timeout: 1s, rise: 1, fall: 1 }\n"
    pool = f"    tls: true\n    tls_ca: {other / 'other.pem'}\n    tls_sni: backend.test\n" + check
    t = tern(tls_cfg(port, [o], RSA_EC(pki), pool_extra=pool), [port])
    deadline = time.monotonic() + scaled(5)
    while time.monotonic() < deadline and "is DOWN" not in t.log():
        time.sleep(0.1)
    log = t.log()
    assert "is DOWN" in log and "TLS handshake failed" in log, log
