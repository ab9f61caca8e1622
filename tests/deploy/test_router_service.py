"""The router service deployed for real: ansible-playbook through the test sshd into a loopback robot (its own root
directory playing `/`), the stand-in Ollama serving the tiny GGUF, the stand-in systemctl starting the unit's own
command as the dedicated user, up to the service answering /health and /route.

The tests share one robot (module scope) and run in file order: first deploy, second deploy, check mode, a new
threshold, Ollama restarted, the service killed, harvest, upgrade and rollbacks (WHAT=router, WHAT=style, a
rollback that fails half-way), lint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.fileio import read_json, sha256_file
from tests.support import ROOT
from tests.support.robot import SERVICE, publish, read_log, robot  # noqa: F401 (fixture)

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.timeout(3600),
              pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                 reason="systemd-analyze not installed (apt-get install systemd; make system-deps)")]

HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "Restart=on-failure",
             "User=droidhead-router", "After=network.target ollama.service", "CapabilityBoundingSet=")


def uid_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0])


def deployed(robot, *args: str) -> None:
    """Record what the robot now serves as the controller's deployed student (what `make deploy` does)."""
    done = subprocess.run([sys.executable, "-m", "distill", "deployed", "record", "--student", str(robot.student),
                           "--gguf", str(robot.controller / "gguf" / "router-student.gguf"), "--dir",
                           str(robot.root / "router_student_mlx.deployed"), *args], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def record_version(robot) -> str:
    return read_json(robot.root / "router_student_mlx.deployed" / "deployed.json")["version"].rpartition("@")[2]


def make_rollback(robot, what: str, *extra: str):
    return robot.make("rollback", f"WHAT={what}", f"INVENTORY={robot.inventory()}",
                      f"DEPLOYED={robot.root / 'router_student_mlx.deployed'}", f"ROBOT_STATE={robot.root / 'state'}",
                      *extra)


@pytest.fixture(scope="module")
def first(robot):
    result = robot.play()
    print(f"\nfirst deploy (models + service): {result.seconds:.0f} s, load {os.getloadavg()[0]:.1f}")
    return result


def test_first_deploy_leaves_a_healthy_service_running_as_its_own_user(robot, first):
    assert first.rc == 0, first.output[-5000:]
    unit = robot.unit.read_text()
    for line in HARDENING:
        assert line in unit, line
    verified = subprocess.run(["systemd-analyze", "verify", "--man=no", str(robot.unit)], capture_output=True,
                              text=True)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    shown = robot.show()
    assert shown["ActiveState"] == "active" and shown["UnitFileState"] == "enabled"
    assert uid_of(int(shown["MainPID"])) == int(subprocess.check_output(["id", "-u", "droidhead-router"]))
    status, health = robot.health()
    assert status == 200 and health["status"] == "ok", health
    assert health["model_version"] == robot.version() and health["backend"] == "ollama"
    assert health["student"]["path"] == f"{robot.models}/router-student/versions/{robot.version()}/student/student.json"
    # the smoke request went through the service, and its decision is the first line of the log
    assert "router service healthy" in first.output and "'how much battery is left?' -> student" in first.output
    assert [r["text"] for r in read_log(robot.decision_log)] == ["how much battery is left?"]
    decision = robot.route("turn your eyes red")
    assert decision["source"] == "student" and decision["skill"] == "battery_status"  # the tiny model's one answer


def test_a_second_deploy_changes_nothing_and_restarts_nothing(robot, first):
    pid = robot.show()["MainPID"]
    again = robot.play()
    print(f"second deploy: {again.seconds:.0f} s, load {os.getloadavg()[0]:.1f}")
    assert again.rc == 0, again.output[-3000:]
    assert again.recap("robot")["changed"] == 0, again.output[-4000:]
    assert robot.show()["MainPID"] == pid


def test_check_mode_shows_a_new_threshold_and_touches_nothing(robot, first):
    pid, spec = robot.show()["MainPID"], robot.student / "student.json"
    on_robot = robot.models / "router-student" / "current" / "student" / "student.json"
    before = on_robot.read_text()
    original = spec.read_text()
    spec.write_text(json.dumps({**json.loads(original), "threshold": 0.25}, indent=2))
    try:
        check = robot.play("--check", "--diff")
    finally:
        spec.write_text(original)
    assert check.rc == 0, check.output[-3000:]
    assert check.recap("robot")["changed"] > 0 and '"threshold": 0.25' in check.output
    assert on_robot.read_text() == before and robot.show()["MainPID"] == pid


def test_a_new_threshold_restarts_the_service_once(robot, first):
    pid, spec = robot.show()["MainPID"], robot.student / "student.json"
    original = spec.read_text()
    spec.write_text(json.dumps({**json.loads(original), "threshold": 0.25}, indent=2))
    try:
        changed = robot.play()
        assert changed.rc == 0, changed.output[-3000:]
        assert "RUNNING HANDLER [router_service : Restart the router service]" in changed.output
        assert robot.show()["MainPID"] != pid and robot.wait_healthy()["threshold"] == 0.25
        assert robot.play().recap("robot")["changed"] == 0
    finally:
        spec.write_text(original)
    assert robot.play().rc == 0 and robot.wait_healthy()["threshold"] == 0.0


def test_the_service_survives_an_ollama_restart(robot, first):
    pid = robot.show()["MainPID"]
    robot.kill_ollama()
    down = robot.route("turn your eyes red")
    assert down["source"] == "fallback" and down["reason"] == "backend_down"
    assert robot.health()[0] == 503
    robot.start_ollama()
    assert robot.route("turn your eyes red")["source"] == "student"
    assert robot.wait_healthy()["ollama"]["reachable"] and robot.show()["MainPID"] == pid


def test_a_crashed_service_is_restarted(robot, first):
    pid = int(robot.show()["MainPID"])
    os.kill(pid, 9)
    time.sleep(3)  # RestartSec=2
    assert robot.wait_healthy()["status"] == "ok"
    shown = robot.show()
    assert int(shown["MainPID"]) != pid and int(shown["NRestarts"]) >= 1


def test_harvest_fetches_the_services_log(robot, first, tmp_path):
    texts = ["could you dance for me?", "sing something"]
    for text in texts:
        robot.route(text)
    dest = tmp_path / "harvest"
    result = robot.play("-e", f"harvest_dest={dest}", playbook="harvest.yml")
    assert result.rc == 0, result.output[-3000:]
    prompts = tmp_path / "harvested.txt"
    done = subprocess.run([sys.executable, "-m", "distill", "harvest", "--logs", str(dest), "--labeled",
                           str(tmp_path / "none.jsonl"), "--out", str(prompts)], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    harvested = prompts.read_text().splitlines()
    assert set(texts) <= set(harvested) and "how much battery is left?" in harvested
    assert len(read_log(dest / "robot" / "decisions.jsonl")) == len(read_log(robot.decision_log))


def test_rollback_router_goes_back_with_the_service_and_the_controller_record(robot, first):
    deployed(robot)
    v1 = robot.version()
    publish(robot.controller, robot.root / "tiny.gguf", extra=b"v2")
    try:
        upgrade = robot.play()
        assert upgrade.rc == 0, upgrade.output[-3000:]
        v2 = robot.version()
        assert v2 != v1 and robot.wait_healthy()["model_version"] == v2
        deployed(robot)
        style_before = robot.version("style-student")
        rollback = make_rollback(robot, "router")
        print(f"make rollback WHAT=router: {rollback.seconds:.0f} s")
        assert rollback.rc == 0, rollback.output[-4000:]
        assert robot.version() == v1 and robot.wait_healthy()["model_version"] == v1
        assert robot.version("style-student") == style_before  # only what was asked
        assert record_version(robot) == v1  # the controller follows the robot
        assert "back to router-student.gguf@" in rollback.output
        again = make_rollback(robot, "router")
        assert again.rc == 0 and "in step with the robot" in again.output and robot.version() == v1
    finally:
        publish(robot.controller, robot.root / "tiny.gguf")


def test_rollback_style_touches_only_the_style_model(robot, first):
    router, record = robot.version(), record_version(robot)
    result = make_rollback(robot, "style")
    assert result.rc != 0
    assert "no previous version of style-student" in result.output
    router_tasks = re.findall(r"TASK \[router_(?:student|service) : .*?\] \**\n(\w+):", result.output)
    assert router_tasks and set(router_tasks) == {"skipping"}, router_tasks  # listed by Ansible, none ran
    assert robot.version() == router and record_version(robot) == record


def test_a_rollback_that_fails_half_way_keeps_controller_and_robot_in_step(robot, first):
    """The smoke test fails after the robot went back (a broken catalog): the controller's record must
    still follow the robot (before: the play's failure stopped make, and the record stayed on the newer student)."""
    publish(robot.controller, robot.root / "tiny.gguf", extra=b"v3")
    try:
        # what users run: make deploy (FORCE=1: no regression gate for this fake student), which records it
        deploy = robot.make("deploy", "FORCE=1", f"INVENTORY={robot.inventory()}", f"ROUTER={robot.student}",
                            f"ROUTER_GGUF={robot.controller / 'gguf' / 'router-student.gguf'}",
                            f"DEPLOYED={robot.root / 'router_student_mlx.deployed'}", f"ROBOT_STATE={robot.root / 'state'}")
        print(f"make deploy (a new version): {deploy.seconds:.0f} s")
        assert deploy.rc == 0, deploy.output[-4000:]
        v3 = robot.version()
        assert "recorded router-student.gguf@" in deploy.output and record_version(robot) == v3
        assert robot.wait_healthy()["model_version"] == v3
        previous = Path((robot.models / "router-student" / "previous").readlink()).name
        bad_catalog = robot.root / "broken-catalog.yaml"
        bad_catalog.write_text("skills: [not, a, mapping]\n")
        failed = make_rollback(robot, "router", f"ANSIBLE_ARGS=-e router_catalog={bad_catalog}")
        assert failed.rc != 0 and "TASK [router_student : Build the label JSON schema" in failed.output
        assert robot.version() == previous != v3
        assert record_version(robot) == previous, failed.output[-3000:]
    finally:
        publish(robot.controller, robot.root / "tiny.gguf")
    assert robot.play().rc == 0 and robot.wait_healthy()["status"] == "ok"


def test_ansible_lint_production_profile_passes(robot):
    lint = robot.make("lint", timeout=600)
    assert lint.rc == 0, lint.output[-3000:]
    assert re.search(r"Passed.*0 failure", lint.output)
