"""The deploy play for real: ansible-playbook through a real sshd (host-key checking on) into a sandbox
"robot" with the stand-in ollama, the SmolLM2 GGUF as the student, smoke answers through a JSON-schema grammar.

The tests share one sandbox (module scope) and run in file order: first deploy, re-run, check, upgrade +
rollback, failures; each test leaves the sandbox where a plain deploy of the first version changes nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from distill.fileio import sha256_file
from tests.support.deploy import ROOT, free_port, publish_gguf

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def first_deploy(sandbox):
    """`--check --diff` on the empty robot first (must change nothing), then the real first deploy."""
    check = sandbox.play("--check", "--diff")
    untouched = not sandbox.models.exists() and not sandbox.creates()
    deploy = sandbox.play()
    return check, untouched, deploy, len(sandbox.creates())


def _version(gguf: Path) -> str:
    return sha256_file(gguf)[:12]


def test_check_diff_on_an_empty_robot_changes_nothing(first_deploy):
    check, untouched, _, _ = first_deploy
    assert check.rc == 0, check.output[-3000:]
    assert check.recap()["failed"] == 0
    assert untouched, "check mode wrote to the robot"
    assert "--- before" in check.output and "+++ after" in check.output  # --diff shows what would change


def test_first_deploy_puts_the_files_creates_once_and_smoke_routes(sandbox, first_deploy):
    _, _, deploy, creates = first_deploy
    assert deploy.rc == 0, deploy.output[-4000:]
    print(f"first deploy: {deploy.seconds:.1f}s")
    version = _version(sandbox.gguf)
    current = sandbox.model_root / "current"
    assert current.is_symlink() and Path(current.readlink()).name == version
    gguf = current / "router-student.gguf"
    assert sha256_file(gguf) == sha256_file(sandbox.gguf)
    assert (current / "router-student.gguf.sha256").read_text().split()[0] == sha256_file(sandbox.gguf)
    modelfile = (current / "Modelfile").read_text()
    assert f"FROM {sandbox.model_root}/versions/{version}/router-student.gguf" in modelfile
    assert "{{ .System }}" in modelfile  # the Go template went through Jinja untouched
    assert creates == 1
    assert (sandbox.model_root / "ollama-version").read_text().strip() == version
    listed = subprocess.run([str(sandbox.root / "bin" / "ollama"), "list"], env={**sandbox.env,
                            "OLLAMA_STANDIN_HOME": str(sandbox.state)}, capture_output=True, text=True)
    assert "router-student:latest" in listed.stdout
    assert "turn your eyes red" in deploy.output and '\\"skill\\":' in deploy.output  # the smoke test's routes
    assert re.search(r"decoded the smoke route at [0-9.]+ tokens/s \(size_vram 0 of \d+ bytes\)", deploy.output)


def test_second_run_changes_nothing(sandbox, first_deploy):
    before = len(sandbox.creates())
    again = sandbox.play()
    print(f"second run: {again.seconds:.1f}s")
    assert again.rc == 0, again.output[-3000:]
    assert again.recap()["changed"] == 0, again.output[-3000:]
    assert len(sandbox.creates()) == before


def test_check_diff_of_a_new_version_changes_nothing(sandbox, first_deploy, tmp_path):
    new = publish_gguf(sandbox.gguf, tmp_path / "v2", extra=b"v2")
    before = len(sandbox.creates())
    check = sandbox.play("--check", "--diff", inventory=sandbox.inventory(
        "v2.yml", router_gguf=str(new), router_modelfile=str(new.parent / "RouterStudent.Modelfile")))
    assert check.rc == 0, check.output[-3000:]
    assert check.recap()["changed"] > 0
    assert _version(new) in check.output  # the diff names the version it would switch to
    assert not (sandbox.model_root / "versions" / _version(new)).exists()
    assert len(sandbox.creates()) == before


def test_upgrade_then_rollback_restores_the_previous_model(sandbox, first_deploy, tmp_path):
    old, new = _version(sandbox.gguf), None
    v2 = publish_gguf(sandbox.gguf, tmp_path / "v2", extra=b"v2")
    new = _version(v2)
    inventory = sandbox.inventory("v2.yml", router_gguf=str(v2),
                                  router_modelfile=str(v2.parent / "RouterStudent.Modelfile"))
    creates = len(sandbox.creates())
    upgrade = sandbox.play(inventory=inventory)
    assert upgrade.rc == 0, upgrade.output[-3000:]
    assert Path((sandbox.model_root / "current").readlink()).name == new
    assert Path((sandbox.model_root / "previous").readlink()).name == old
    assert len(sandbox.creates()) == creates + 1

    rollback = sandbox.play("-e", "router_rollback=true", inventory=inventory)
    print(f"rollback: {rollback.seconds:.1f}s")
    assert rollback.rc == 0, rollback.output[-3000:]
    assert Path((sandbox.model_root / "current").readlink()).name == old
    assert len(sandbox.creates()) == creates + 2
    assert sandbox.creates()[-1]["modelfile"].endswith(f"/versions/{old}/Modelfile")
    shown = subprocess.run([str(sandbox.root / "bin" / "ollama"), "show", "router-student", "--modelfile"],
                           env={**sandbox.env, "OLLAMA_STANDIN_HOME": str(sandbox.state)}, capture_output=True,
                           text=True)
    assert sha256_file(sandbox.gguf) in shown.stdout  # Ollama serves the old GGUF's blob again

    again = sandbox.play("-e", "router_rollback=true", inventory=inventory)
    assert again.rc == 0 and again.recap()["changed"] == 0, again.output[-3000:]

    # The rollback keeps the version it left (previous stays on the old one, so it is neither link's). The next
    # deploy removes it, and only that: here, and not in whichever test deploys next (the GPU smoke test saw
    # changed=1, its "Remove versions other than current and previous" task, when this test ran before it).
    cleanup = sandbox.play()
    assert cleanup.rc == 0, cleanup.output[-3000:]
    assert sorted(p.name for p in (sandbox.model_root / "versions").iterdir()) == [old]
    removed = cleanup.output.split("TASK [ollama_model : Remove versions other than current and previous]")[1]
    assert f"changed: [sandbox] => (item={sandbox.model_root}/versions/{new})" in removed.split("TASK")[0]
    assert cleanup.recap()["changed"] == 1 and len(sandbox.creates()) == creates + 2, cleanup.output[-3000:]


def test_smoke_passes_on_a_gpu_target_and_reports_its_speed(sandbox, first_deploy):
    with sandbox.ollama_server(vram="all") as port:  # Ollama on an Orin that found CUDA
        result = sandbox.play(inventory=sandbox.inventory("gpu.yml", ollama_host=f"127.0.0.1:{port}",
                                                          router_require_gpu=True))
    assert result.rc == 0, result.output[-3000:]
    assert result.recap()["changed"] == 0
    assert re.search(r"router-student:latest is on the GPU \((\d+) of \1 bytes in VRAM\)", result.output)
    speed = re.search(r"decoded the smoke route at ([0-9.]+) tokens/s", result.output)
    assert speed and float(speed.group(1)) > 0, result.output[-3000:]


def test_smoke_fails_clearly_when_the_router_is_not_on_the_gpu(sandbox, first_deploy):
    result = sandbox.play(inventory=sandbox.inventory("cpu.yml", router_require_gpu=True))
    assert result.rc != 0
    assert re.search(r"Ollama runs router-student:latest on the CPU \(/api/ps: size_vram 0 of \d+ bytes\), so it is "
                     r"not using CUDA", result.output), result.output[-3000:]
    assert "A CPU-only target runs with router_require_gpu=false" in result.output
    assert result.recap()["failed"] == 1


def test_rollback_without_a_previous_version_fails_clearly(sandbox, first_deploy, tmp_path):
    inventory = sandbox.inventory("fresh.yml", droidhead_models_dir=str(tmp_path / "models"))
    result = sandbox.play("-e", "router_rollback=true", inventory=inventory)
    assert result.rc != 0
    assert "no previous version of router-student" in result.output


def test_a_corrupted_gguf_is_refused_before_it_ships(sandbox, first_deploy, tmp_path):
    bad = publish_gguf(sandbox.gguf, tmp_path / "bad")
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the tensor data: the .sha256 no longer matches
    bad.write_bytes(bytes(data))
    creates = len(sandbox.creates())
    result = sandbox.play(inventory=sandbox.inventory(
        "bad.yml", router_gguf=str(bad), router_modelfile=str(bad.parent / "RouterStudent.Modelfile")))
    assert result.rc != 0
    assert f"{bad} does not match {bad}.sha256" in result.output
    assert "corrupt or stale" in result.output
    assert not (sandbox.model_root / "versions" / _version(bad)).exists()
    assert len(sandbox.creates()) == creates


def test_a_damaged_gguf_on_the_robot_is_detected_and_replaced(sandbox, first_deploy):
    sandbox.play()  # back on the first version whatever ran before
    deployed = sandbox.model_root / "current" / "router-student.gguf"
    with deployed.open("r+b") as handle:
        handle.truncate(deployed.stat().st_size // 2)
    creates = len(sandbox.creates())
    result = sandbox.play()
    assert result.rc == 0, result.output[-3000:]
    assert "changed: [sandbox]" in result.output.split("TASK [ollama_model : Copy the GGUF]")[1].split("TASK")[0]
    assert sha256_file(deployed) == sha256_file(sandbox.gguf)
    assert len(sandbox.creates()) == creates + 1  # Ollama re-created from the repaired file


def test_an_unreachable_robot_fails_with_a_clear_message(sandbox, first_deploy):
    closed = sandbox.play(inventory=sandbox.inventory("down.yml", port=free_port()))
    assert closed.rc != 0
    assert "UNREACHABLE!" in closed.output and "Connection refused" in closed.output
    assert closed.recap()["unreachable"] == 1


def test_a_wrong_host_key_is_refused(sandbox, first_deploy, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{sandbox.sshd.port} {kind} {key}\n")
    result = sandbox.play(inventory=sandbox.inventory("spoofed.yml", known_hosts=known))
    assert result.rc != 0
    assert "Host key verification failed" in result.output or "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.output


def test_a_missing_ollama_fails_the_preflight_clearly(sandbox, first_deploy):
    result = sandbox.play(inventory=sandbox.inventory("noollama.yml", ollama_bin=str(sandbox.root / "bin" / "nope")))
    assert result.rc != 0
    assert f"`{sandbox.root}/bin/nope --version` failed" in result.output


def test_ansible_lint_production_profile_passes(sandbox):
    lint = Path(sandbox.env["PATH"].split(":")[0]) / "ansible-lint"
    result = subprocess.run([str(lint), "--offline", "--profile", "production", "deploy.yml", "harvest.yml"],
                            cwd=ROOT / "ansible", env=sandbox.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "passed" in (result.stdout + result.stderr)


def test_harvest_fetches_the_decision_logs(sandbox, tmp_path):
    logs = tmp_path / "robot-logs"
    logs.mkdir()
    (logs / "decisions.jsonl").write_text(json.dumps({"text": "dance", "source": "fallback"}) + "\n")
    (logs / "decisions.jsonl.1").write_text(json.dumps({"text": "look up", "source": "student"}) + "\n")
    (logs / "unrelated.txt").write_text("no\n")
    dest = tmp_path / "harvest"
    inventory = sandbox.inventory("harvest.yml", droidhead_decision_log=str(logs / "decisions.jsonl"))
    cmd = [str(Path(sandbox.env["PATH"].split(":")[0]) / "ansible-playbook"), "-i", str(inventory),
           str(ROOT / "ansible" / "harvest.yml"), "-e", f"harvest_dest={dest}"]
    result = subprocess.run(cmd, env=sandbox.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert sorted(p.name for p in (dest / "sandbox").iterdir()) == ["decisions.jsonl", "decisions.jsonl.1"]
    assert "dance" in (dest / "sandbox" / "decisions.jsonl").read_text()
