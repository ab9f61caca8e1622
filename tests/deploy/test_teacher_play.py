"""ansible/teacher.yml (make teacher-check; make collect NET=teacher-student-LAN runs it first): the teacher host
group's endpoints answer with the model, and `python -m distill teacher-health` passes, against the stand-in
teacher over a local connection (the teacher-student-LAN inventory's teacher is the machine running the scripts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, free_port
from tests.support.deploy import ansible_env


def teacher_inventory(folder: Path) -> Path:
    inventory = folder / "teacher.yml"
    inventory.write_text(json.dumps({"teacher": {"hosts": {"teacher": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    return inventory


def check(folder: Path, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "teacher-check", f"INVENTORY={teacher_inventory(folder)}",
                           f"CONFIG={config}"], cwd=ROOT, env=ansible_env(folder), capture_output=True, text=True,
                          timeout=600)


def test_the_teacher_check_passes_against_a_healthy_teacher(tmp_path, teacher_config):
    done = check(tmp_path, teacher_config)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "ok=4" in done.stdout and "json_schema" in done.stdout


def test_the_teacher_check_fails_clearly_when_the_teacher_is_down(tmp_path, teacher_config_for):
    down = teacher_config_for(f"http://127.0.0.1:{free_port()}/v1")
    done = check(tmp_path, down)
    assert done.returncode != 0
    assert f"{down}" in done.stdout and "did not answer" in done.stdout and "make teacher-up" in done.stdout


def test_the_teacher_check_fails_when_the_endpoint_lacks_the_model(tmp_path, standin_teacher, teacher_config_for):
    other = teacher_config_for(standin_teacher, model="gpt-oss-120b")
    done = check(tmp_path, other)
    assert done.returncode != 0 and "without the model gpt-oss-120b" in done.stdout, done.stdout[-3000:]
