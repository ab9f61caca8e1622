"""Closing the loop, the fast parts: deploy gate, compare report, deployed record, training hold-out.

Students here are stand-ins whose fixed-set evaluation is already cached (<student>/fixed_eval.json, keyed by
the sha256 of their adapters and of the fixed set), so the gate logic runs without a model; tests/test_loop.py
measures real students end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

from distill.training.datasets import split_records
from distill.deploy.deployed import previous_dir, record, rollback
from distill.training.evaluate import DEPLOY_GATE, harvested_records, regression_verdict
from distill.fileio import read_json, read_jsonl, sha256_file

FIXED = [("look left", "look", {"direction": "left"}), ("what time is it", "time_now", {}),
         ("tell me a joke", "chat", {}), ("battery?", "battery_status", {})]


def routes_file(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": t, "skill": s, "args": a, "votes": 1, "teacher": "t",
                                        "created": "2026"}) + "\n" for i, (t, s, a) in enumerate(rows)))
    return path


def fake_student(folder: Path, skill_accuracy: float, fixed: Path | None = None, *, seed: bytes = b"") -> Path:
    """A student dir whose evaluation on `fixed` (default: its own test.jsonl) is cached with this accuracy."""
    folder.mkdir(parents=True)
    (folder / "student.json").write_text(json.dumps({"name": "router_student", "kind": "router",
                                                     "system_prompt": "S", "base": "b"}))
    (folder / "adapters.safetensors").write_bytes(b"adapters of " + folder.name.encode() + seed)
    routes_file(folder / "test.jsonl", FIXED)
    routes_file(folder / "train.jsonl", [("turn your eyes red", "eyes_color", {"color": "red"})])
    fixed = fixed or folder / "test.jsonl"
    metrics = {"n": 4, "skill_accuracy": skill_accuracy, "args_exact": skill_accuracy, "valid_label_rate": 1.0}
    (folder / "fixed_eval.json").write_text(json.dumps({
        "adapters_sha256": sha256_file(folder / "adapters.safetensors"), "fixed_sha256": sha256_file(fixed),
        "metrics": metrics}))
    return folder


def run_make(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_verdict_says_by_how_much():
    passed, drop, message = regression_verdict({"skill_accuracy": 0.9475}, {"skill_accuracy": 0.9125}, 0.0, **DEPLOY_GATE)
    assert (passed, drop) == (False, 3.5)
    assert message.startswith("deploy gate (fixed set) FAILS: new student skill_accuracy 0.912 vs deployed student "
                              "0.948 (-3.5 points, at most 0.0 may be lost)"), message
    assert regression_verdict({"skill_accuracy": 0.95}, {"skill_accuracy": 0.95}, 0.0, **DEPLOY_GATE)[0]
    assert regression_verdict({"skill_accuracy": 0.95}, {"skill_accuracy": 0.93}, 2.5, **DEPLOY_GATE)[0]


def test_gate_refuses_a_worse_student_in_one_line(tmp_path, cli):
    deployed = fake_student(tmp_path / "deployed", 1.0)
    worse = fake_student(tmp_path / "worse", 0.75, deployed / "test.jsonl")
    result = cli(sys.executable, "-m", "distill", "eval-router", "--student", worse, "--gate-against", deployed)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {worse}: skill_accuracy: deploy gate (fixed set) FAILS: new student")
    assert "(-25.0 points" in result.stderr and "FORCE=1" in result.stderr
    better = fake_student(tmp_path / "better", 1.0, deployed / "test.jsonl")
    ok = cli(sys.executable, "-m", "distill", "eval-router", "--student", better, "--gate-against", deployed)
    assert ok.returncode == 0 and "deploy gate (fixed set) passes" in ok.stdout and "+0.0 points" in ok.stdout
    first = cli(sys.executable, "-m", "distill", "eval-router", "--student", tmp_path / "none", "--gate-against",
                tmp_path / "nothing-deployed")
    assert first.returncode == 0 and "first deploy" in first.stdout


def test_a_stale_cache_is_not_trusted(tmp_path):
    """Change the adapters after the evaluation: the gate must re-evaluate (here: cannot, no base model)."""
    deployed = fake_student(tmp_path / "deployed", 1.0)
    from distill.training.evaluate import fixed_set_metrics

    assert fixed_set_metrics(deployed, deployed / "test.jsonl")["skill_accuracy"] == 1.0
    (deployed / "adapters.safetensors").write_bytes(b"retrained")
    with pytest.raises(Exception):  # evaluate_mlx on a fake student dir: anything but the stale number
        fixed_set_metrics(deployed, deployed / "test.jsonl")


def test_make_deploy_refuses_before_ansible_and_force_overrides(tmp_path):
    deployed = fake_student(tmp_path / "deployed", 1.0)
    worse = fake_student(tmp_path / "worse", 0.5, deployed / "test.jsonl")
    refused = run_make("deploy", f"ROUTER={worse}", f"DEPLOYED={deployed}", "NET=does-not-exist")
    assert refused.returncode != 0
    assert "deploy gate (fixed set) FAILS" in refused.stderr and "(-50.0 points" in refused.stderr
    assert "ansible-playbook" not in refused.stdout  # stopped before anything shipped
    forced = run_make("deploy", f"ROUTER={worse}", f"DEPLOYED={deployed}", "NET=does-not-exist", "FORCE=1")
    assert "FORCE=1: not checking" in forced.stdout and "ansible-playbook" in forced.stdout
    assert "FAILS" not in forced.stderr


def test_compare_writes_the_difference(tmp_path, cli):
    deployed = fake_student(tmp_path / "deployed", 0.75)
    new = fake_student(tmp_path / "new", 1.0, deployed / "test.jsonl")
    out = tmp_path / "compare.json"
    result = cli(sys.executable, "train/eval_router.py", "--student", new, "--compare", deployed, "--out", out,
                 "--harvested", tmp_path / "no-harvest.txt")
    assert result.returncode == 0, result.stderr
    report = read_json(out)
    assert report["fixed"]["n"] == 4 and report["fixed"]["difference_points"]["skill_accuracy"] == 25.0
    assert report["fixed"]["leaked_into_new_training"] == 0 and "harvested" not in report
    assert report["verdict"]["passed"] and "| fixed | 4 | skill_accuracy | 0.750 | 1.000 | +25.0 pts |" in result.stdout


def test_harvested_records_are_the_teachers_labels(tmp_path):
    routes = routes_file(tmp_path / "routes.jsonl", FIXED)
    prompts = tmp_path / "harvested.txt"
    prompts.write_text("# header\nBattery?\nwhat time is it.\nsomething unlabeled\n")
    records, unlabeled = harvested_records(prompts, routes)
    assert [r["skill"] for r in records] == ["battery_status", "time_now"] and unlabeled == 1
    prompts.write_text("# only a header\n")
    assert harvested_records(prompts, routes) == ([], 0)


def test_record_carries_the_fixed_set_forward_and_rolls_back(tmp_path):
    dest = tmp_path / "router_student_mlx.deployed"
    first = fake_student(tmp_path / "first", 0.75)
    gguf = tmp_path / "router-student.gguf"
    gguf.write_bytes(b"GGUF")
    (tmp_path / "router-student.gguf.sha256").write_text("ab" * 32 + "  router-student.gguf\n")
    info = record(first, gguf, dest)
    assert info["version"] == "router-student.gguf@" + "ab" * 6
    assert info["fixed_metrics"] == {"n": 4, "skill_accuracy": 0.75, "args_exact": 0.75}
    assert read_jsonl(dest / "fixed.jsonl") == read_jsonl(first / "test.jsonl")

    second = fake_student(tmp_path / "second", 1.0, dest / "fixed.jsonl")
    routes_file(second / "test.jsonl", [("a brand new test split", "chat", {})])
    info = record(second, gguf, dest)
    assert read_jsonl(dest / "fixed.jsonl") == read_jsonl(first / "test.jsonl"), "the fixed set stays fixed"
    assert info["fixed_metrics"]["skill_accuracy"] == 1.0 and info["student"] == str(second)
    assert read_json(previous_dir(dest) / "deployed.json")["student"] == str(first)

    assert rollback(dest)["student"] == str(first)
    assert rollback(dest)["student"] == str(first), "a second rollback changes nothing"
    assert (dest / "adapters.safetensors").read_bytes() == (first / "adapters.safetensors").read_bytes()


def test_holdout_records_never_train():
    records = [{"text": f"look left {i}", "skill": "look"} for i in range(30)]
    plain = split_records(records, key="text", group="skill", valid_frac=0.1, test_frac=0.1, seed=0)
    pinned = {r["text"] for r in plain["train"][:5]}
    held = split_records(records, key="text", group="skill", valid_frac=0.1, test_frac=0.1, seed=0,
                         holdout=set(pinned))
    assert pinned <= {r["text"] for r in held["test"]}
    assert not pinned & {r["text"] for r in held["train"] + held["valid"]}
    assert sum(len(v) for v in held.values()) == 30


def test_deployed_cli_errors_are_one_line(tmp_path, cli):
    for verb in ("rollback", "show"):
        result = cli(sys.executable, "-m", "distill", "deployed", verb, "--dir", tmp_path / "router.deployed")
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "nothing to roll back to" in result.stderr or "no deployed student recorded" in result.stderr
    result = cli(sys.executable, "-m", "distill", "deployed", "record", "--student", tmp_path / "nope", "--gguf",
                 tmp_path / "x.gguf", "--dir", tmp_path / "router.deployed")
    assert result.returncode == 2 and "not a trained student" in result.stderr
    assert not (tmp_path / "router.deployed").exists()
