"""A loopback robot for the router service's deploy tests: a root directory playing `/` on the robot (0755, so
the service's own user can read what it runs), the stand-in `ollama` serving on a free port, the stand-in
`systemctl` (tools/standin-systemctl) on the PATH the play's systemd tasks see, the tiny GGUF (fast routes) as
the router student with a student dir on the "controller", and ansible-playbook through the test sshd.

The play runs for real up to the service answering: a venv from the wheelhouse, the unit verified by
systemd-analyze, the service started as its dedicated user by the stand-in systemctl, /health, /route.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, stop_process, wait_for_port
from tests.support.deploy import PlayResult, Sshd, ansible_env
from tests.support.service import write_service_student
from tests.support.tinygguf import write_tiny_gguf, write_tiny_modelfile

STANDIN_OLLAMA = ROOT / "tools" / "standin-ollama" / "ollama"
STANDIN_SYSTEMCTL_DIR = ROOT / "tools" / "standin-systemctl"
SERVICE = "droidhead-router.service"


def publish(controller: Path, gguf: Path, *, extra: bytes = b"", name: str = "router-student",
            modelfile: str = "RouterStudent.Modelfile") -> Path:
    """gguf/<name>.gguf + .sha256 + its Modelfile beside it, as `make gguf` leaves them; `extra` bytes after the
    tensor data make a new version that answers the same."""
    from distill.fileio import sha256_file

    (controller / "gguf").mkdir(parents=True, exist_ok=True)
    target = controller / "gguf" / f"{name}.gguf"
    shutil.copyfile(gguf, target)
    if extra:
        with target.open("ab") as handle:
            handle.write(extra)
    (controller / "gguf" / f"{name}.gguf.sha256").write_text(f"{sha256_file(target)}  {name}.gguf\n")
    write_tiny_modelfile(controller / "gguf" / modelfile, Path(f"./{name}.gguf"))
    return target


@dataclass
class Robot:
    root: Path
    sshd: Sshd
    ollama_port: int
    service_port: int
    controller: Path
    env: dict
    ollama: subprocess.Popen | None = None

    # -- where things are on the robot
    @property
    def models(self) -> Path:
        return self.root / "opt" / "droidhead" / "models"

    @property
    def decision_log(self) -> Path:
        return self.root / "var" / "lib" / "droidhead" / "decisions.jsonl"

    @property
    def unit(self) -> Path:
        return self.root / "etc" / "systemd" / "system" / SERVICE

    @property
    def config(self) -> Path:
        return self.root / "etc" / "droidhead" / "router-service.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service_port}"

    @property
    def student(self) -> Path:
        return self.controller / "models" / "router_student_mlx"

    def version(self, name: str = "router-student") -> str:
        return Path((self.models / name / "current").readlink()).name

    # -- the stand-ins
    def ollama_env(self) -> dict:
        return {**os.environ, "OLLAMA_STANDIN_HOME": str(self.root / "ollama-state"),
                "OLLAMA_STANDIN_PYTHON": sys.executable, "OLLAMA_HOST": f"127.0.0.1:{self.ollama_port}"}

    def start_ollama(self) -> None:
        log = (self.root / "ollama-serve.log").open("a")
        self.ollama = subprocess.Popen([str(STANDIN_OLLAMA), "serve"], env=self.ollama_env(), stdout=log,
                                       stderr=subprocess.STDOUT)
        wait_for_port(self.ollama_port, self.ollama, timeout=60)

    def kill_ollama(self) -> None:
        self.ollama.kill()
        self.ollama.wait(10)

    def systemctl(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "SYSTEMD_STANDIN_ROOT": str(self.root), "SYSTEMD_STANDIN_PYTHON": sys.executable}
        return subprocess.run([str(STANDIN_SYSTEMCTL_DIR / "systemctl"), *args], env=env, capture_output=True,
                              text=True, timeout=120)

    def show(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.systemctl("show", SERVICE).stdout.splitlines() if "=" in line)

    def health(self) -> tuple[int, dict]:
        import requests

        response = requests.get(f"{self.url}/health", timeout=10)
        return response.status_code, response.json()

    def route(self, text: str) -> dict:
        import requests

        response = requests.post(f"{self.url}/route", json={"text": text}, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_healthy(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                code, body = self.health()
                if code == 200:
                    return body
            except Exception:  # noqa: BLE001 -- not up yet
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{self.url}/health not ok after {timeout}s: {self.systemctl('status', SERVICE).stdout}")

    # -- Ansible
    def inventory(self, name: str = "robot.yml", **host_vars) -> Path:
        import yaml

        ssh_args = (f"-o UserKnownHostsFile={self.sshd.known_hosts} -o StrictHostKeyChecking=yes "
                    "-o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=5")
        systemctl_env = {"PATH": f"{STANDIN_SYSTEMCTL_DIR}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                         "SYSTEMD_STANDIN_ROOT": str(self.root), "SYSTEMD_STANDIN_PYTHON": sys.executable}
        host = {
            "ansible_host": "127.0.0.1", "ansible_port": self.sshd.port, "ansible_user": self.sshd.user,
            "ansible_ssh_private_key_file": str(self.sshd.key), "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": "/usr/bin/python3",
            "droidhead_models_dir": str(self.models), "droidhead_decision_log": str(self.decision_log),
            "ollama_bin": str(STANDIN_OLLAMA), "ollama_host": f"127.0.0.1:{self.ollama_port}",
            "ollama_environment": {"OLLAMA_STANDIN_HOME": str(self.root / "ollama-state"),
                                   "OLLAMA_STANDIN_PYTHON": sys.executable},
            "router_gguf": str(self.controller / "gguf" / "router-student.gguf"),
            "router_modelfile": str(self.controller / "gguf" / "RouterStudent.Modelfile"),
            "router_smoke_requests": ["how much battery is left?"],
            "router_require_gpu": False,
            "style_gguf": str(self.controller / "gguf" / "style-student.gguf"),
            "style_modelfile": str(self.controller / "gguf" / "StyleStudent.Modelfile"),
            # the router service: everything under the robot root, systemctl the stand-in, we log in as root
            "router_service_become": False,
            "router_service_home": str(self.root / "opt" / "droidhead" / "router-service"),
            "router_service_config": str(self.config),
            "router_service_unit_dir": str(self.unit.parent),
            "router_service_systemctl_environment": systemctl_env,
            "router_service_student_src": str(self.student),
            "router_service_source": str(self.controller / "src"),
            "router_service_listen": f"127.0.0.1:{self.service_port}",
            "router_service_smoke_requests": ["how much battery is left?"],
            **host_vars,
        }
        path = self.root / name
        path.write_text(yaml.safe_dump({"droidhead": {"hosts": {"robot": host}}}, sort_keys=False))
        return path

    def play(self, *args: str, inventory: Path | None = None, playbook: str = "deploy.yml",
             timeout: float = 900) -> PlayResult:
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory or self.inventory()),
               str(ROOT / "ansible" / playbook), *args]
        started = time.monotonic()
        done = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        return PlayResult(done.returncode, done.stdout + done.stderr, time.monotonic() - started)

    def make(self, target: str, *args: str, timeout: float = 900) -> PlayResult:
        started = time.monotonic()
        done = subprocess.run(["make", "--no-print-directory", target, *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        return PlayResult(done.returncode, done.stdout + done.stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def robot(sshd, catalog) -> Robot:
    """The loopback robot with Ollama serving; the service is whatever the plays leave (stopped in teardown)."""
    root = Path(tempfile.mkdtemp(prefix="droidhead-robot-"))
    root.chmod(0o755)  # the service's user walks down to its venv and student files
    (root / "etc" / "systemd" / "system").mkdir(parents=True)  # what every systemd machine has
    controller = root / "controller"
    gguf = write_tiny_gguf(root / "tiny.gguf")
    publish(controller, gguf)
    publish(controller, gguf, name="style-student", modelfile="StyleStudent.Modelfile")
    # the source the robot's package is built from: a snapshot, so edits made in the checkout while the tests
    # run (other work) cannot make a second deploy differ from the first
    for name in ("pyproject.toml", "README.md", "distill"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, controller / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (controller / "src").mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, controller / "src" / name)
    write_service_student(controller / "models" / "router_student_mlx", catalog, threshold=0.0)
    env = ansible_env(root)
    robot = Robot(root, sshd, free_port(), free_port(), controller, env)
    robot.start_ollama()
    try:
        yield robot
    finally:
        robot.systemctl("stop", SERVICE)
        if robot.ollama is not None:
            stop_process(robot.ollama)
        shutil.rmtree(root, ignore_errors=True)


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
