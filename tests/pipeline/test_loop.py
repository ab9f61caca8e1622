"""Closing the loop, end to end on the offline base (docs/loop.md).

The first student is the one the slow tests share (tests/support/data.py `trained_router`): trained on
stand-in-teacher data that holds a single battery_status example, exported here to a Q4 GGUF (what the robot
runs) and recorded as deployed. Battery requests routed through it with a fixed
threshold, through the router service over HTTP as on the robot (distill.runtime.service), fall back and land in
its size-rotated decision log. ansible/harvest.yml fetches the log over a local
connection, distill.teacher.harvest turns it into prompts, the stand-in teacher labels them, and a second student is
trained on the union with the fixed set held out. The second student routes the harvested requests, and battery
requests nobody harvested, itself, and it is not worse than the first on the fixed held-out set beyond one record
(distill.training.evaluate --compare / --gate-against).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from distill.training.datasets import normalize_text
from distill.fileio import read_json, read_jsonl, read_prompts
from tests.support.deploy import harvest_locally
from tests.support.data import ROUTER_TEST_ITERS, SCARCE_SKILL, scarce_first

pytestmark = pytest.mark.slow

SKILL = SCARCE_SKILL  # the skill the first (shared) student barely saw
THRESHOLD = 0.9  # fixed for both rounds, so the fallback rates compare
ROBOT_BATTERY = 30  # battery requests the robot gets (harvested); the rest of them are never seen by anyone
OTHER_TRAFFIC = 8  # requests of other skills, already labeled: harvest must drop them


def train(cli, base: Path, routes: Path, out: Path, *extra) -> Path:
    result = cli(sys.executable, "train/finetune_router_mlx.py", "--base", base, "--train_jsonl", routes, "--out", out,
                 "--iters", str(ROUTER_TEST_ITERS), "--batch", "8", "--lr", "2e-4", *extra, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def export_gguf(cli, student: Path, folder: Path) -> Path:
    """What `make gguf` does (merge, convert to Q4_K_M), with distill.export."""
    gguf = folder / "router-student.gguf"
    for verb in (["merge", "--lora", student, "--out", folder / "merged", "--no-peft"],
                 ["convert", "--in", folder / "merged", "--out", gguf]):
        result = cli(sys.executable, "-m", "distill", *verb)
        assert result.returncode == 0, result.stderr[-3000:]
    shutil.rmtree(folder / "merged")
    return gguf


def route_all(student: Path, gguf: Path, texts: list[str], log: Path | None = None) -> list:
    """The robot's runtime: the router service (distill.runtime.service, over real HTTP on loopback) routing the
    GGUF, fixed threshold, decisions in a small rotating log; the decisions as objects (d.source, d.skill, ...)."""
    from types import SimpleNamespace

    import requests

    from tests.support.service import running_service

    logging = {"decision_log": str(log), "log_max_bytes": 4096, "log_backups": 9} if log else {"decision_log": "off"}
    with running_service(student=str(student), backend="llamacpp", gguf=str(gguf), threshold=THRESHOLD,
                         deadline_s=300.0, warmup=False, **logging) as service:
        session = requests.Session()
        answers = [session.post(f"{service.url}/route", json={"text": text}, timeout=600) for text in texts]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    return [SimpleNamespace(**a.json()) for a in answers]


def harvest_play(robot_log: Path, dest: Path, scratch: Path) -> None:
    """ansible/harvest.yml against this machine over a local connection (NET=droidhead-local's inventory)."""
    result = harvest_locally(robot_log, dest, scratch)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert sorted(dest.glob("droidhead/decisions.jsonl*")), result.stdout[-3000:]


def rate(decisions, skill: str | None = None) -> float:
    """Share of decisions the student took itself (and, with `skill`, got that skill)."""
    ok = [d for d in decisions if d.source == "student" and (skill is None or d.skill == skill)]
    return len(ok) / len(decisions)


def test_harvested_fallbacks_teach_the_next_student(tmp_path, collected_routes, router_routes, trained_router,
                                                    base_model_dir, teacher_config, cli):
    started = time.monotonic()
    # ---- round 1: the shared student, which saw one battery request (read here, never written)
    first_data, first = router_routes, trained_router
    seen, never_seen = scarce_first(read_jsonl(collected_routes))  # what router_routes holds, and the rest
    battery = [r for r in seen if r["skill"] == SKILL] + never_seen
    assert len(battery) > 1 + ROBOT_BATTERY, len(battery)  # one seen, the robot's, and some nobody harvests
    first_gguf = export_gguf(cli, first, tmp_path / "round1" / "gguf")
    deployed = tmp_path / "router_student_mlx.deployed"
    result = cli(sys.executable, "-m", "distill", "deployed", "record", "--student", first, "--gguf", first_gguf,
                 "--dir", deployed)
    assert result.returncode == 0, result.stderr
    fixed = read_jsonl(deployed / "fixed.jsonl")
    assert SKILL not in {r["skill"] for r in fixed}  # one example: nothing of it could be held out

    # ---- on the robot: battery requests (and some it knows) through the deployed GGUF, logged
    robot_texts = [r["text"] for r in battery[1:1 + ROBOT_BATTERY]]
    unseen_texts = [r["text"] for r in battery[1 + ROBOT_BATTERY:]]
    known_texts = [r["text"] for r in fixed[:OTHER_TRAFFIC]]
    robot_log = tmp_path / "robot" / "var" / "decisions.jsonl"
    before = route_all(first, first_gguf, robot_texts + known_texts, robot_log)
    before_battery = before[:ROBOT_BATTERY]
    # most fall back; a few go confidently to a wrong skill (harvest takes them too, after the fallbacks)
    assert rate(before_battery) <= 1 / 3 and rate(before_battery, SKILL) == 0, [
        (d.skill, round(d.confidence, 3)) for d in before_battery]
    assert len(list(robot_log.parent.iterdir())) > 1, "the log should have rotated"

    # ---- harvest through a local connection, label with the stand-in teacher, retrain on the union
    harvest_play(robot_log, tmp_path / "harvest", tmp_path / "ansible")
    union = tmp_path / "round2" / "routes.jsonl"
    union.parent.mkdir()
    shutil.copyfile(first_data, union)
    harvested = tmp_path / "prompts" / "harvested.txt"
    result = cli(sys.executable, "-m", "distill", "harvest", "--logs", tmp_path / "harvest", "--labeled", union,
                 "--out", harvested)
    assert result.returncode == 0, result.stderr
    prompts = read_prompts(harvested)
    fell_back = [d.skill == "chat" and d.source == "fallback" for d in before_battery]
    assert {normalize_text(p) for p in prompts} == {normalize_text(t) for t in robot_texts}, "known texts dropped"
    assert sum(fell_back) == 0 or normalize_text(prompts[0]) in {
        normalize_text(t) for t, f in zip(robot_texts, fell_back) if f}, "fallbacks come first"
    result = cli(sys.executable, "scripts/collect_routes.py", "--config", teacher_config, "--input", harvested,
                 "--out", union)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sum(r["skill"] == SKILL for r in read_jsonl(union)) == 1 + ROBOT_BATTERY
    second = train(cli, base_model_dir, union, tmp_path / "round2" / "router_student_mlx",
                   "--holdout", deployed / "fixed.jsonl")
    second_gguf = export_gguf(cli, second, tmp_path / "round2" / "gguf")

    # ---- the new student routes those requests itself, and battery requests nobody harvested
    after = route_all(second, second_gguf, robot_texts + unseen_texts)
    after_robot, after_unseen = after[:ROBOT_BATTERY], after[ROBOT_BATTERY:]
    assert rate(after_robot, SKILL) >= 0.8, [(d.skill, d.confidence) for d in after_robot]
    # most of them, where the first student routed none (observed: 0.69 and 0.83 in two runs)
    assert rate(after_unseen, SKILL) >= 0.5, [(d.skill, round(d.confidence, 3)) for d in after_unseen]

    # ---- and it is not worse on the fixed held-out set (up to one record: retraining from scratch on more data
    # moves single borderline records either way; a manual run lost one weather request to chat, -1.7 points,
    # and the default gate, --max-drop 0, refused it): compare report and the deploy gate
    report_path = tmp_path / "reports" / "compare.json"
    result = cli(sys.executable, "train/eval_router.py", "--student", second, "--compare", deployed,
                 "--harvested", harvested, "--routes", union, "--out", report_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = read_json(report_path)
    fixed_part, harvest_part = report["fixed"], report["harvested"]
    assert fixed_part["n"] == len(fixed) and fixed_part["leaked_into_new_training"] == 0
    one_record = 1 / fixed_part["n"]
    right = {who: round(fixed_part[who]["skill_accuracy"] * fixed_part["n"]) for who in ("new", "deployed")}
    assert right["new"] >= right["deployed"] - 1, fixed_part
    assert harvest_part["n"] == ROBOT_BATTERY
    assert harvest_part["new"]["skill_accuracy"] > harvest_part["deployed"]["skill_accuracy"] + 0.5
    gate = cli(sys.executable, "-m", "distill", "eval-router", "--student", second, "--gate-against", deployed,
               "--max-drop", f"{100 * one_record + 0.01:.2f}")
    assert gate.returncode == 0 and "deploy gate (fixed set) passes" in gate.stdout, gate.stderr

    print(f"\nloop: fixed set n={fixed_part['n']} skill acc {fixed_part['deployed']['skill_accuracy']:.3f} -> "
          f"{fixed_part['new']['skill_accuracy']:.3f}; harvested n={harvest_part['n']} "
          f"{harvest_part['deployed']['skill_accuracy']:.3f} -> {harvest_part['new']['skill_accuracy']:.3f}; "
          f"battery routed by the student: {rate(before_battery):.2f} -> {rate(after_robot, SKILL):.2f} (harvested), "
          f"{rate(after_unseen, SKILL):.2f} (unseen, n={len(unseen_texts)}); {time.monotonic() - started:.0f} s")
