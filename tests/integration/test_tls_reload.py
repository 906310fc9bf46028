"""Certificates replaced in place and reloaded with SIGHUP, as a renewal does
(certbot, an ACME client): the path stays, the file's content changes. A
connection made before keeps its session; one made after gets the new
certificate."""
import signal
import ssl
import time

import pytest

from conftest import free_port, scaled, status_of, wait_for
from test_admin import Api
from test_reload2 import (Wrk, applied, assert_no_failure, attempt_after, sighup_and_wait,
                          write_file)
from test_tls import client_ctx, der, handshake, https_get, pki, tls_cfg  # noqa: F401


def install(pki, name, cert, key):
    # Renewal tools write a new file and rename it over the old one.
    for src, dst in ((pki(f"{name}.pem"), cert), (pki(f"{name}.key"), key)):
        with open(src) as f:
            write_file(dst, f.read())


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls1.2", "tls1.3"])
def test_keepalive_tls_connection_survives_a_certificate_reload(pki, backends, tern, tmp_path,
                                                                version):
    (b,) = backends(1)
    port = free_port()
    cert, key = str(tmp_path / "site.pem"), str(tmp_path / "site.key")
    install(pki, "rsa", cert, key)
    t = tern(tls_cfg(port, [b], [{"cert": cert, "key": key}], workers=2), [port])
    ctx = client_ctx(pki, maxv=version)
    with handshake(port, ctx, "site.test") as held:
        assert held.version() == version.name.replace("_", ".")
        assert held.getpeercert(binary_form=True) == der(pki("rsa.pem"))
        assert status_of(https_get(held)) == 200
        install(pki, "ec", cert, key)
        t.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "in effect" in t.log(), 5), t.log()
        # The connection made before goes on, several requests long, on the
        # certificate it was made with.
        for _ in range(3):
            r = https_get(held)
            assert status_of(r) == 200 and r.endswith(b"b1\n"), r
        assert held.getpeercert(binary_form=True) == der(pki("rsa.pem"))
        # New connections, on both workers, get the renewed certificate.
        for _ in range(6):
            with handshake(port, ctx, "site.test") as s:
                assert s.getpeercert(binary_form=True) == der(pki("ec.pem"))
                assert status_of(https_get(s)) == 200
        r = https_get(held)
        assert status_of(r) == 200 and r.endswith(b"b1\n"), r


def test_certificate_reloads_under_tls_load_lose_nothing(pki, backends, tern, tmp_path):
    """Handshakes in progress and requests in flight while the certificate
    changes under them: every reload applies, no request fails."""
    (b,) = backends(1)
    port = free_port()
    cert, key = str(tmp_path / "site.pem"), str(tmp_path / "site.key")
    install(pki, "rsa", cert, key)
    t = tern(tls_cfg(port, [b], [{"cert": cert, "key": key}], workers=2), [port])
    url = f"https://127.0.0.1:{port}/"
    loads = {"keepalive": Wrk(url), "close": Wrk(url, ("-H", "Connection: close"))}
    try:
        time.sleep(scaled(0.5))
        for i in range(30):
            install(pki, "ec" if i % 2 == 0 else "rsa", cert, key)
            sighup_and_wait(t, open(t.conf).read())
            time.sleep(0.05)
    finally:
        outputs = {name: w.stop() for name, w in loads.items()}
    assert applied(t) == 30 and "reload of" not in t.log(), t.log()[-3000:]
    assert_no_failure(outputs)
    # The last file installed was the RSA one.
    with handshake(port, client_ctx(pki), "site.test") as s:
        assert s.getpeercert(binary_form=True) == der(pki("rsa.pem"))


def test_half_renewed_pair_is_refused_until_the_key_follows(pki, backends, tern, tmp_path):
    """A renewal writes the certificate and the key one after the other; a
    SIGHUP in between finds a pair that does not match. It must change
    nothing, say which files, and the next SIGHUP with both in place
    applies."""
    (b,) = backends(1)
    port, aport = free_port(), free_port()
    cert, key = str(tmp_path / "site.pem"), str(tmp_path / "site.key")
    install(pki, "rsa", cert, key)
    text = tls_cfg(port, [b], [{"cert": cert, "key": key}], workers=2).replace(
        "listeners:", f"admin:\n  listen: 127.0.0.1:{aport}\nlisteners:")
    t = tern(text, [port, aport])
    api = Api(aport)
    ctx = client_ctx(pki)
    with handshake(port, ctx, "site.test") as held:
        assert status_of(https_get(held)) == 200
        write_file(cert, open(pki("ec.pem")).read())
        t.proc.send_signal(signal.SIGHUP)
        last = attempt_after(api, 0)
        assert last["ok"] is False, last
        named = f"key {key} does not match certificate {cert}"
        assert any(named in e for e in last["errors"]), last
        assert status_of(https_get(held)) == 200
        with handshake(port, ctx, "site.test") as s:
            assert s.getpeercert(binary_form=True) == der(pki("rsa.pem"))
            assert status_of(https_get(s)) == 200
        write_file(key, open(pki("ec.key")).read())
        sighup_and_wait(t, text)
        assert api.get("/api/v1/reload")[2]["ok"] is True
        with handshake(port, ctx, "site.test") as s:
            assert s.getpeercert(binary_form=True) == der(pki("ec.pem"))
        assert status_of(https_get(held)) == 200
