"""A short chaos campaign (tests/tools/chaos.py) in the normal suite.

Hostile and broken clients, misbehaving backends, admin API abuse and
reloads by SIGHUP with valid and invalid configurations hit one tern at once
for about 15 s, with a fixed seed so a failure replays with
`tests/tools/chaos.py --seed SEED` (the failure's output gives the whole
command). The release and the sanitizer pass each run a campaign with a
seed of their own, so together they try two sequences of operations rather
than one twice. The test fails on a crash, a sanitizer report (ASan,
UBSan, LeakSanitizer), an exit code other than 0 on SIGTERM, a connection
that gets neither an answer nor a close, a malformed or wrong answer, or a
final normal request that is not served.

Two tests check the harness itself, since one that cannot see a failure
would pass anything: tern killed in the middle of a campaign, and a tern
that writes a sanitizer report and exits 3 when stopped, must both fail it.
"""
import os
import sys

from conftest import SANITIZED, TERN, free_port, raw_exchange, scaled, status_of

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import chaos  # noqa: E402

SEED = 20261124
CHAOS_SECONDS = 15
# SEED + 1 and SEED + 2 are the self-tests' below.
CAMPAIGN_SEED = SEED + 10 if SANITIZED else SEED


def campaign(tmp_path, seed, duration, tern_bin=TERN, **kw):
    lines = []
    c = chaos.Campaign(tern_bin, seed, duration, count=20000, threads=12, keep=str(tmp_path / "chaos"),
                       hang_s=scaled(12), log=lines.append, **kw)
    findings = c.run()
    return findings, "\n".join(lines)


def test_chaos_campaign(tmp_path):
    findings, out = campaign(tmp_path, CAMPAIGN_SEED, CHAOS_SECONDS)
    assert not findings, out
    # The campaign did mix everything it is meant to: a run that silently
    # skipped reloads or TLS would prove less than it claims.
    assert "reload_valid" in out and "reload_invalid" in out and "tls_raw" in out and "admin_api" in out, out


def test_chaos_sees_a_crash(tmp_path):
    findings, out = campaign(tmp_path, SEED + 1, 60, kill_after=scaled(3))
    assert any(f["kind"] == "tern-died" for f in findings), out


def test_chaos_sees_a_report_and_an_exit_code(tmp_path):
    """A tern that serves well but writes a LeakSanitizer report and exits 3
    on SIGTERM (a wrapper) fails the campaign on both counts."""
    fake = tmp_path / "tern-with-a-report"
    fake.write_text(
        "#!/bin/bash\n"
        f"'{TERN}' \"$@\" & child=$!\n"
        "trap 'kill -HUP $child' HUP\n"
        "trap 'kill -USR1 $child' USR1\n"
        "trap 'kill -TERM $child; wait $child;"
        " echo \"==1==ERROR: LeakSanitizer: detected memory leaks\" >&2; exit 3' TERM\n"
        "while kill -0 $child 2>/dev/null; do wait $child; done\n")
    fake.chmod(0o755)
    findings, out = campaign(tmp_path, SEED + 2, 3, tern_bin=str(fake))
    kinds = {f["kind"] for f in findings}
    assert {"sanitizer", "exit-code"} <= kinds, out


# ---- what chaos found, pinned down ----

def test_http10_request_without_host_to_a_pool_with_no_server(tern):
    """An HTTP/1.0 request without Host to a pool with no server yet (one a
    scaling group or the admin API fills) is answered 503. tern used to take
    the Host it adds from the pool's first server slot, empty there, and
    died of strlen(NULL) (SIGSEGV; UBSan at lb/http_head.c) on 18 bytes from
    any client."""
    port = free_port()
    t = tern("global: { workers: 1 }\n"
             f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, mode: http, pool: empty }}\n"
             "pools:\n  empty: { servers: [] }\n", [port])
    for _ in range(3):
        assert status_of(raw_exchange(port, b"GET / HTTP/1.0\r\n\r\n")) == 503
    assert t.proc.poll() is None
