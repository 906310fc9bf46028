"""The command line: -t, --version, --help, start-up failures."""
import os
import re
import socket
import subprocess

from conftest import TERN, free_port, scaled


def run(*args, **kw):
    return subprocess.run([TERN, *args], capture_output=True, text=True, timeout=scaled(20), **kw)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and re.match(r"tern \d+\.\d+\.\d+", r.stdout)
    r = run("--help")
    assert r.returncode == 0 and "tern -t -c FILE" in r.stdout
    r = run("--bogus")
    assert r.returncode == 2


def test_check_valid_config(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("listeners:\n  - { name: web, bind: 127.0.0.1:18080, pool: web }\n"
                 "pools:\n  web: { servers: [ { name: a, address: 127.0.0.1:9 } ] }\n")
    r = run("-t", "-c", str(f))
    assert r.returncode == 0, r.stderr


def test_check_reports_every_error_with_position(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(
        "listeners:\n"
        "  - name: web\n"
        "    bind: 127.0.0.1:99999\n"
        "    pool: nowhere\n"
        "pools:\n"
        "  web:\n"
        "    balanse: roundrobin\n"
        "    servers: []\n"
    )
    r = run("-t", "-c", str(f))
    assert r.returncode == 1
    lines = [l for l in r.stderr.splitlines() if l.startswith(str(f) + ":")]
    assert any(l.startswith(f"{f}:3:11:") for l in lines), r.stderr
    assert any(l.startswith(f"{f}:4:11:") and "nowhere" in l for l in lines), r.stderr
    assert any(l.startswith(f"{f}:7:5:") and "balance" in l for l in lines), r.stderr


def test_shipped_configs_are_valid(tmp_path):
    from conftest import checkable_example

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = run("-t", "-c", os.path.join(root, "conf", "demo.yaml"))
    assert r.returncode == 0, r.stderr
    r = run("-t", "-c", checkable_example(os.path.join(root, "conf", "tern.example.yaml"), tmp_path))
    assert r.returncode == 0, r.stderr
    # Without its certificate the example is refused, naming the file.
    r = run("-t", "-c", os.path.join(root, "conf", "tern.example.yaml"))
    assert r.returncode == 1 and "/etc/tern/site.pem" in r.stderr, r.stderr


def test_port_in_use_is_one_line_error(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    f = tmp_path / "c.yaml"
    f.write_text(f"listeners:\n  - {{ name: web, bind: 127.0.0.1:{port}, pool: web }}\n"
                 "pools:\n  web: { servers: [] }\n")
    r = run("-c", str(f))
    busy.close()
    assert r.returncode == 1
    assert "Address already in use" in r.stderr and f"127.0.0.1:{port}" in r.stderr, r.stderr


def test_unreadable_file(tmp_path):
    r = run("-c", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1
    assert "missing.yaml" in r.stderr and "Sanitizer" not in r.stderr
