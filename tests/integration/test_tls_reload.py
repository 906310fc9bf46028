"""Certificates replaced in place and reloaded with SIGHUP, as a renewal does
(certbot, an ACME client): the path stays, the file's content changes. A
connection made before keeps its session; one made after gets the new
certificate."""
import os
import shutil
import signal

from conftest import free_port, status_of, wait_for
from test_tls import client_ctx, der, handshake, https_get, pki, tls_cfg  # noqa: F401


def install(pki, name, cert, key):
    # Renewal tools write a new file and rename it over the old one.
    for src, dst in ((pki(f"{name}.pem"), cert), (pki(f"{name}.key"), key)):
        shutil.copyfile(src, dst + ".new")
        os.replace(dst + ".new", dst)


def test_keepalive_tls_connection_survives_a_certificate_reload(pki, backends, tern, tmp_path):
    (b,) = backends(1)
    port = free_port()
    cert, key = str(tmp_path / "site.pem"), str(tmp_path / "site.key")
    install(pki, "rsa", cert, key)
    t = tern(tls_cfg(port, [b], [{"cert": cert, "key": key}], workers=2), [port])
    ctx = client_ctx(pki)
    with handshake(port, ctx, "site.test") as held:
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
