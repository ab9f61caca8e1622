"""The deploy area's fixtures and helpers: a real sshd on a loopback port, a sandbox "robot" directory with the stand-in
ollama on its PATH and the stand-in's HTTP server, and a runner for ansible-playbook through that sshd.

The test (not the play) starts `ollama serve`, as systemd does on the Orin; the play only talks to it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, stop_process, wait_for_port

SSHD = Path("/usr/sbin/sshd")
STANDIN_OLLAMA = ROOT / "tools" / "standin-ollama" / "ollama"
CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)
ROUTER_SYSTEM = "You route requests for a robot head to one skill. Answer with one JSON label."


def write_modelfile(path: Path, gguf: str, *, template: str | None = CHATML_TEMPLATE, stop_param: bool = True,
                    system: str = ROUTER_SYSTEM) -> Path:
    lines = [f"FROM {gguf}"]
    if template is not None:
        lines.append(f'TEMPLATE """{template}"""')
    lines += [f"SYSTEM {system}", "PARAMETER temperature 0"]
    if stop_param:
        lines.append('PARAMETER stop "<|im_end|>"')
    lines.append("PARAMETER num_ctx 512")
    path.write_text("\n".join(lines) + "\n")
    return path


def publish_gguf(source: Path, dest_dir: Path, *, extra: bytes = b"") -> Path:
    """gguf/router-student.gguf + .sha256 as `make gguf` leaves them; `extra` bytes make a new version."""
    from distill.fileio import sha256_file

    dest_dir.mkdir(parents=True, exist_ok=True)
    gguf = dest_dir / "router-student.gguf"
    shutil.copyfile(source, gguf)
    if extra:
        with gguf.open("ab") as handle:  # llama.cpp and gguf ignore bytes after the tensor data
            handle.write(extra)
    (dest_dir / "router-student.gguf.sha256").write_text(f"{sha256_file(gguf)}  router-student.gguf\n")
    write_modelfile(dest_dir / "RouterStudent.Modelfile", "./router-student.gguf")
    return gguf


@dataclass
class Sshd:
    port: int
    user: str
    key: Path
    known_hosts: Path
    host_key_pub: Path
    root: Path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Sshd:
    """A real sshd on a free loopback port: own config, host key, authorized_keys; stopped in teardown."""
    if not SSHD.exists() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("sshd/ssh not installed (apt-get install openssh-server openssh-client; `make system-deps`)")
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = free_port()
    sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server") if Path(p).exists()),
                "internal-sftp")
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root}/host_key\nPidFile {root}/sshd.pid\n"
        f"AuthorizedKeysFile {root}/authorized_keys\nStrictModes no\nUsePAM no\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        f"Subsystem sftp {sftp}\nLogLevel ERROR\n"
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir sshd insists on
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=(root / "sshd.log").open("w"))
    try:
        wait_for_port(port, proc)
        host_key = (root / "host_key.pub").read_text().split()
        (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
        yield Sshd(port, getpass.getuser(), root / "client_key", root / "known_hosts", root / "host_key.pub", root)
    finally:
        stop_process(proc)


@dataclass
class Sandbox:
    """A directory standing in for the Orin: bin/ollama (stand-in), models/, the stand-in's state and server."""

    root: Path
    sshd: Sshd
    ollama_port: int
    state: Path
    models: Path
    src: Path
    gguf: Path
    env: dict = field(default_factory=dict)

    @property
    def model_root(self) -> Path:
        return self.models / "router-student"

    def creates(self) -> list[dict]:
        from distill.fileio import read_jsonl

        log = self.state / "create.log"
        return read_jsonl(log) if log.exists() else []

    def inventory(self, name: str = "hosts.yml", *, port: int | None = None, known_hosts: Path | None = None,
                  **host_vars) -> Path:
        """An inventory for the sandbox host over ssh (host-key checking on, the test's known_hosts)."""
        import yaml

        ssh_args = (f"-o UserKnownHostsFile={known_hosts or self.sshd.known_hosts} -o StrictHostKeyChecking=yes "
                    "-o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=5")
        host = {
            "ansible_host": "127.0.0.1", "ansible_port": port or self.sshd.port, "ansible_user": self.sshd.user,
            "ansible_ssh_private_key_file": str(self.sshd.key), "ansible_ssh_common_args": ssh_args,
            # the login shell's PATH here has pyenv shims that interpreter discovery trips over
            "ansible_python_interpreter": "/usr/bin/python3",
            "droidhead_models_dir": str(self.models), "ollama_bin": str(self.root / "bin" / "ollama"),
            "ollama_host": f"127.0.0.1:{self.ollama_port}",
            "ollama_environment": {"OLLAMA_STANDIN_HOME": str(self.state)},
            "router_gguf": str(self.gguf), "router_modelfile": str(self.src / "RouterStudent.Modelfile"),
            "router_smoke_requests": ["turn your eyes red"],  # one request: grammar decoding is slow on 2 cores
            "router_require_gpu": False,  # the loopback robot has no GPU: its Ollama reports size_vram 0
            # the model deployment alone: the router service has its own loopback robot with a stand-in systemctl
            # (tests/support/robot.py, tests/deploy/test_router_service.py)
            "router_service_enabled": False,
            **host_vars,
        }
        path = self.root / name
        path.write_text(yaml.safe_dump({"droidhead": {"hosts": {"sandbox": host}}}, sort_keys=False))
        return path

    @contextlib.contextmanager
    def ollama_server(self, vram: str) -> Iterator[int]:
        """A second `ollama serve` on the same state, reporting `vram` in /api/ps (OLLAMA_STANDIN_VRAM:
        `all` plays an Orin whose Ollama uses CUDA); yields its port."""
        port = free_port()
        proc = start_ollama(self.root, self.state, port, f"ollama-serve-{vram}.log", vram=vram)
        try:
            yield port
        finally:
            stop_process(proc)

    def play(self, *args: str, inventory: Path | None = None, timeout: float = 600) -> PlayResult:
        cmd = [str(ROOT / ".venv" / "bin" / "ansible-playbook") if (ROOT / ".venv").exists() else "ansible-playbook",
               "-i", str(inventory or self.inventory()), str(ROOT / "ansible" / "deploy.yml"), *args]
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        return PlayResult(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)


@dataclass
class PlayResult:
    rc: int
    output: str
    seconds: float

    def recap(self, host: str = "sandbox") -> dict[str, int]:
        import re

        match = re.search(rf"^{host}\s*:\s*(.*)$", self.output, re.M)
        assert match, f"no PLAY RECAP line for {host}:\n{self.output[-3000:]}"
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def start_ollama(root: Path, state: Path, port: int, log: str, *, vram: str = "0") -> subprocess.Popen:
    """The robot's `ollama serve` (the stand-in under root/bin), answering on `port` once this returns."""
    env = {**os.environ, "OLLAMA_STANDIN_HOME": str(state), "OLLAMA_HOST": f"127.0.0.1:{port}",
           "OLLAMA_STANDIN_VRAM": vram}
    proc = subprocess.Popen([str(root / "bin" / "ollama"), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=(root / log).open("w"))
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def ansible_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(root / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(root / "ansible-remote"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(root / "cp"),
        # short-lived connection sharing, so nothing outlives sshd
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=2s",
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
    })
    return env


def local_inventory(scratch: Path, **group_vars) -> Path:
    """A copy of ansible/inventories/droidhead-local (the host `droidhead` in the group `droidhead`, local
    connection) with `group_vars` set in its group_vars/droidhead.yml, where an inventory's values belong.

    Not inline under the host in hosts.yml: Ansible sets the variables of a host that shares its group's name on
    the group, and an inventory file's group vars rank below ansible/group_vars/all.yml, so the play silently
    read all.yml's /var/lib/droidhead/decisions.jsonl instead (measured: harvest fetched nothing, rc 0)."""
    import yaml

    inventory = scratch / "droidhead-local"
    shutil.copytree(ROOT / "ansible" / "inventories" / "droidhead-local", inventory)
    values = inventory / "group_vars" / "droidhead.yml"
    values.write_text(yaml.safe_dump({**yaml.safe_load(values.read_text()), **group_vars}, sort_keys=False))
    return inventory


def harvest_locally(robot_log: Path, dest: Path, scratch: Path) -> subprocess.CompletedProcess:
    """ansible/harvest.yml over NET=droidhead-local's local connection, the robot's log at `robot_log`, into
    `dest` (the logs land in dest/droidhead/, the inventory's host)."""
    scratch.mkdir(parents=True, exist_ok=True)
    inventory = local_inventory(scratch, droidhead_decision_log=str(robot_log))
    playbook = Path(sys.executable).parent / "ansible-playbook"
    return subprocess.run([str(playbook), "-i", str(inventory), str(ROOT / "ansible" / "harvest.yml"),
                           "-e", f"harvest_dest={dest}"], env=ansible_env(scratch), capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def sandbox(sshd, tmp_path_factory, smollm2_gguf) -> Sandbox:
    """The robot stand-in, its stand-in Ollama server running (started here, like systemd would)."""
    root = tmp_path_factory.mktemp("robot")
    (root / "bin").mkdir()
    (root / "bin" / "ollama").symlink_to(STANDIN_OLLAMA)
    state, models, src = root / "ollama-state", root / "models", root / "controller" / "gguf"
    gguf = publish_gguf(smollm2_gguf, src)
    port = free_port()
    proc = start_ollama(root, state, port, "ollama-serve.log")  # a CPU robot: size_vram 0, as Ollama reports
    try:
        yield Sandbox(root, sshd, port, state, models, src, gguf, env=ansible_env(root))
    finally:
        stop_process(proc)
        cp = root / "cp"
        for socket_path in cp.glob("*") if cp.is_dir() else []:
            subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "sandbox"],
                           capture_output=True, timeout=10)
