"""The strict stand-in `systemctl` (tools/standin-systemctl, distill.standins.systemd): what it refuses, and that it
really runs the unit's command, as its user, restarting it on failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.support import ROOT, free_port

SYSTEMCTL = ROOT / "tools" / "standin-systemctl" / "systemctl"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze not installed (apt-get install systemd; make system-deps)")


@pytest.fixture
def machine():
    """A root directory playing `/` (0755 all the way, so the unit's user can read what it runs)."""
    root = Path(tempfile.mkdtemp(prefix="standin-systemd-"))
    root.chmod(0o755)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (root / "var" / "lib" / "demo").mkdir(parents=True)
    env = {**os.environ, "SYSTEMD_STANDIN_ROOT": str(root)}

    def systemctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SYSTEMCTL), *args], env=env, capture_output=True, text=True, timeout=120)

    systemctl.root = root
    yield systemctl
    systemctl("stop", "demo.service")
    shutil.rmtree(root, ignore_errors=True)


def write_unit(root: Path, port: int, **changes: str) -> Path:
    service = {"Type": "exec", "User": "daemon", "ExecStart": f"/usr/bin/python3 -m http.server {port} --bind 127.0.0.1",
               "Restart": "on-failure", "RestartSec": "0.2", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
               "ReadWritePaths": str(root / "var" / "lib" / "demo"), **changes}
    lines = ["[Unit]", "Description=demo", "After=network.target", "", "[Service]",
             *(f"{k}={v}" for k, v in service.items() if v), "", "[Install]", "WantedBy=multi-user.target", ""]
    path = root / "etc" / "systemd" / "system" / "demo.service"
    path.write_text("\n".join(lines))
    return path


def wait_http(port: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code
        except requests.RequestException:
            time.sleep(0.1)
    raise TimeoutError(port)


def props(systemctl) -> dict[str, str]:
    return dict(line.split("=", 1) for line in systemctl("show", "demo.service").stdout.splitlines())


def test_enable_start_runs_the_command_as_its_user_and_restarts_it_on_failure(machine):
    port = free_port()
    write_unit(machine.root, port)
    assert props(machine)["UnitFileState"] == "disabled"
    assert machine("enable", "demo.service").returncode == 0
    assert (machine.root / "etc/systemd/system/multi-user.target.wants/demo.service").is_symlink()
    assert machine("is-enabled", "demo.service").stdout.strip() == "enabled"
    assert machine("start", "demo.service").returncode == 0
    assert wait_http(port) == 200
    shown = props(machine)
    assert shown["ActiveState"] == "active" and shown["LoadState"] == "loaded"
    pid = int(shown["MainPID"])
    assert Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0] == "1"  # daemon's uid
    os.kill(pid, 9)  # a crash: Restart=on-failure brings it back
    time.sleep(1.0)
    assert wait_http(port) == 200 and props(machine)["NRestarts"] == "1"
    assert machine("stop", "demo.service").returncode == 0
    assert machine("is-active", "demo.service").returncode == 3
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)


@pytest.mark.parametrize("changes, message", [
    ({"NoNewPrivilegs": "yes"}, "Unknown key 'NoNewPrivilegs'"),
    ({"ExecStart": "/nope/python3 -m http.server"}, "/nope/python3 is not executable"),
    ({"User": "no-such-user-here"}, "User=no-such-user-here: no such user"),
    ({"Type": "notify"}, "Type=notify: the stand-in runs simple and exec services only"),
    ({"ExecStartPre": "/bin/true"}, "ExecStartPre=: the stand-in cannot honour it"),
])
def test_a_faulty_unit_is_refused_with_the_reason(machine, changes, message):
    write_unit(machine.root, free_port(), **changes)
    for verb in ("enable", "start"):
        done = machine(verb, "demo.service")
        assert done.returncode == 1 and message in done.stderr, (verb, done.stderr)
    assert props(machine)["LoadState"] == "bad-setting"


def test_a_unit_changed_on_disk_needs_daemon_reload(machine):
    port = free_port()
    write_unit(machine.root, port)
    assert machine("start", "demo.service").returncode == 0
    assert machine("stop", "demo.service").returncode == 0
    write_unit(machine.root, port, RestartSec="1")
    refused = machine("start", "demo.service")
    assert refused.returncode == 1 and "run 'systemctl daemon-reload'" in refused.stderr
    assert props(machine)["NeedDaemonReload"] == "yes"
    assert machine("daemon-reload").returncode == 0
    assert machine("start", "demo.service").returncode == 0 and wait_http(port) == 200


def test_missing_read_write_paths_fail_the_start_as_systemd_would(machine):
    write_unit(machine.root, free_port(), ReadWritePaths=str(machine.root / "var" / "lib" / "missing"))
    done = machine("start", "demo.service")
    assert done.returncode == 1 and "226/NAMESPACE" in done.stderr
    state = machine.root / "run" / "systemd-standin" / "demo.service.json"
    assert not state.exists() or json.loads(state.read_text()).get("main") is None
