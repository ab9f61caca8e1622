"""`python -m distill deployed sync`: after a deploy or rollback play, whatever its outcome, the controller's record
follows what the robot serves (ansible/state.yml writes it), so the two are never left apart (issue 17 item 3)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from distill.deploy.deployed import previous_dir, record, robot_version, sync
from distill.errors import DistillError
from distill.fileio import read_json


def student(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "student.json").write_text(json.dumps({"name": name, "system_prompt": "route"}))
    (folder / "test.jsonl").write_text(json.dumps({"id": "t", "text": "x", "skill": "look", "args": {}}) + "\n")
    return folder


def gguf(folder: Path, digest: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "router-student.gguf"
    path.write_bytes(b"GGUF" + digest.encode())
    (folder / "router-student.gguf.sha256").write_text(f"{digest}{'0' * 52}  router-student.gguf\n")
    return path


def state(folder: Path, **hosts: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for host, version in hosts.items():
        (folder / f"{host}.json").write_text(json.dumps({"host": host, "router": version, "style": ""}))
    return folder


@pytest.fixture
def history(tmp_path):
    """Two students deployed in turn: the record holds the second, .previous the first."""
    dest = tmp_path / "router_student_mlx.deployed"
    first, second = student(tmp_path / "s1", "first"), student(tmp_path / "s2", "second")
    record(first, gguf(tmp_path / "g1", "aaaaaaaaaaaa"), dest)
    record(second, gguf(tmp_path / "g2", "bbbbbbbbbbbb"), dest)
    return dest


def test_in_step_changes_nothing(history):
    before = (history / "deployed.json").read_text()
    assert "in step" in sync(history, "bbbbbbbbbbbb")
    assert (history / "deployed.json").read_text() == before


def test_the_robot_on_the_previous_version_rolls_the_record_back(history):
    assert "back to router-student.gguf@aaaaaaaaaaaa" in sync(history, "aaaaaaaaaaaa")
    assert read_json(history / "deployed.json")["version"].endswith("@aaaaaaaaaaaa")
    assert read_json(previous_dir(history) / "deployed.json")["version"].endswith("@aaaaaaaaaaaa")
    assert "in step" in sync(history, "aaaaaaaaaaaa")  # a second rollback: nothing


def test_the_robot_on_the_new_gguf_records_it(history, tmp_path):
    third = student(tmp_path / "s3", "third")
    new = gguf(tmp_path / "g3", "cccccccccccc")
    assert "recorded router-student.gguf@cccccccccccc" in sync(history, "cccccccccccc", third, new)
    assert read_json(history / "deployed.json")["student"] == str(third)


def test_anything_else_fails_naming_all_three(history):
    with pytest.raises(DistillError, match=r"the robot serves dddddddddddd, the record says "
                                           r"router-student.gguf@bbbbbbbbbbbb \(previous router-student.gguf@aaaa"):
        sync(history, "dddddddddddd")


def test_robot_state_must_name_one_version(tmp_path):
    assert robot_version(state(tmp_path / "one", droidhead="aaaaaaaaaaaa")) == "aaaaaaaaaaaa"
    with pytest.raises(DistillError, match="do not serve one router version"):
        robot_version(state(tmp_path / "two", a="aaaaaaaaaaaa", b="bbbbbbbbbbbb"))
    with pytest.raises(DistillError, match="do not serve one router version"):
        robot_version(state(tmp_path / "none", droidhead=""))
    with pytest.raises(DistillError, match="no robot state here"):
        robot_version(tmp_path / "missing")


def test_sync_cli_is_one_line(history, tmp_path, cli):
    done = cli(sys.executable, "-m", "distill", "deployed", "sync", "--dir", history, "--state",
               state(tmp_path / "robot", droidhead="aaaaaaaaaaaa"))
    assert done.returncode == 0 and done.stdout.strip().endswith("which the robot serves"), done.stderr
    bad = cli(sys.executable, "-m", "distill", "deployed", "sync", "--dir", history, "--state",
              state(tmp_path / "other", droidhead="eeeeeeeeeeee"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "deploy again" in bad.stderr
