"""The command line: -t, --version, --help, start-up failures."""
import os
import re
import socket
import subprocess

from conftest import TERN, free_port, scaled, wait_for


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
    # -t reads the admin token as start-up does: make demo writes the demo's.
    token = tmp_path / "demo.token"
    token.write_text("t0ken\n")
    r = run("-t", "-c", os.path.join(root, "conf", "demo.yaml"),
            env={**os.environ, "TERN_DEMO_TOKEN_FILE": str(token)})
    assert r.returncode == 0, r.stderr
    example = checkable_example(os.path.join(root, "conf", "tern.example.yaml"), tmp_path)
    with open(os.path.join(os.path.dirname(example), "admin.token"), "w") as f:
        f.write("t0ken\n")
    r = run("-t", "-c", example)
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


# ---- -t checks what start-up opens: log files, the admin token, the user ----

CHECKED = "listeners:\n  - { name: web, bind: 127.0.0.1:18080, pool: web }\n" \
          "pools:\n  web: { servers: [ { name: a, address: 127.0.0.1:9 } ] }\n"


def refused(tmp_path, text, key, line, col, what):
    """tern -t on text fails with one line for key at line:col that says
    what; the rest of the output is the usual count."""
    f = tmp_path / "t.yaml"
    f.write_text(text + CHECKED)
    r = run("-t", "-c", str(f))
    assert r.returncode == 1, r.stderr
    mine = [l for l in r.stderr.splitlines() if f": {key}: " in l]
    assert len(mine) == 1 and mine[0].startswith(f"{f}:{line}:{col}: {key}: "), r.stderr
    assert what in mine[0], r.stderr
    assert "tern: " + str(f) + ": 1 error" in r.stderr, r.stderr


def test_check_refuses_a_log_it_cannot_open(tmp_path):
    refused(tmp_path, f"global:\n  workers: 1\n  log: {tmp_path}/no/such/dir/tern.log\n",
            "global.log", 3, 3, f"cannot create {tmp_path}/no/such/dir/tern.log: ")
    (tmp_path / "adir").mkdir()
    refused(tmp_path, f"global:\n  log: {tmp_path}/adir\n",
            "global.log", 2, 3, f"cannot open {tmp_path}/adir for appending: Is a directory")


def test_check_refuses_an_access_log_it_cannot_open(tmp_path):
    refused(tmp_path, f"global:\n  access_log: {tmp_path}/nodir/access.log\n",
            "global.access_log", 2, 3, f"{tmp_path}/nodir/access.log")


def test_check_refuses_an_unknown_user(tmp_path):
    refused(tmp_path, "global:\n  user: no-such-user-here\n",
            "global.user", 2, 3, "unknown user 'no-such-user-here'")


def test_check_refuses_a_token_file_it_cannot_read(tmp_path):
    # Relative to the config file, as start-up reads it.
    refused(tmp_path, "admin:\n  listen: 127.0.0.1:19900\n  token_file: nothere.token\n",
            "admin.token_file", 3, 3, f"cannot read {tmp_path}/nothere.token: No such file")
    (tmp_path / "tokdir").mkdir()
    refused(tmp_path, "admin: { token_file: tokdir }\n",
            "admin.token_file", 1, 10, f"cannot read {tmp_path}/tokdir: Is a directory")


def test_check_places_a_key_set_in_an_included_file(tmp_path):
    (tmp_path / "g.yaml").write_text("global:\n\n  user: no-such-user-here\n")
    f = tmp_path / "main.yaml"
    f.write_text("include: g.yaml\n" + CHECKED)
    r = run("-t", "-c", str(f))
    assert r.returncode == 1
    assert f"{tmp_path}/g.yaml:3:3: global.user: unknown user" in r.stderr, r.stderr


def test_check_passes_once_the_token_exists_and_changes_no_file(tmp_path):
    log = tmp_path / "tern.log"
    log.write_text("earlier lines\n")
    f = tmp_path / "ok.yaml"
    f.write_text(f"global:\n  log: {log}\n  access_log: {tmp_path}/access.log\n  user: root\n"
                 "admin:\n  listen: 127.0.0.1:19900\n  token_file: admin.token\n" + CHECKED)
    r = run("-t", "-c", str(f))
    assert r.returncode == 1 and "admin.token_file" in r.stderr, r.stderr
    (tmp_path / "admin.token").write_text("s3cret\n")
    r = run("-t", "-c", str(f))
    assert r.returncode == 0, r.stderr
    # The existing log is neither cut nor written; the missing one is not made.
    assert log.read_text() == "earlier lines\n"
    assert not (tmp_path / "access.log").exists()


def thread_names(pid):
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass  # a thread that just ended
    return sorted(names)


def test_threads_are_named(tern):
    """top -H, ps -L and perf tell the workers apart from the control thread
    (the process's own name) and a reload's loader."""
    port = free_port()
    t = tern(f"""global:
  workers: 3
listeners:
  - {{ name: web, bind: 127.0.0.1:{port}, pool: web }}
pools:
  web:
    servers: []
""", wait_ports=[port])
    # The listening sockets open before the worker threads start.
    workers = lambda: [n for n in thread_names(t.proc.pid) if n.startswith("tern-w")]
    assert wait_for(lambda: workers() == ["tern-w0", "tern-w1", "tern-w2"], 5), workers()
    names = thread_names(t.proc.pid)
    assert "tern" in names, names
