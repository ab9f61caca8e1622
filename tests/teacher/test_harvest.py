"""distill.teacher.harvest: decision logs (rotated, torn) -> deduplicated prompts ordered by need."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distill.fileio import read_prompts
from distill.teacher.harvest import harvest_logs


def decision(text, source="student", confidence=0.95, reason=None, **extra) -> str:
    return json.dumps({"time": "2026-11-25T10:00:00Z", "text": text, "skill": "chat", "args": {},
                       "confidence": confidence, "source": source, "reason": reason, "latency_ms": 30.0,
                       "model": "router_student:router-student.gguf@abc", **extra}) + "\n"


def write_robot_logs(root: Path) -> Path:
    """Two robots' logs as ansible/harvest.yml leaves them: data/harvest/<host>/decisions.jsonl[.N]."""
    a, b = root / "droidhead", root / "droidhead2"
    a.mkdir(parents=True)
    b.mkdir()
    (a / "decisions.jsonl.2").write_text(decision("how much battery do you have", "fallback", 0.31, "below_threshold")
                                         + decision("look left", confidence=0.99))
    (a / "decisions.jsonl.1").write_text(decision("Look left!", confidence=0.97)  # same text, normalized
                                         + '{"time": "2026-11-25T10:01:00Z", "text": "turn your ey')  # torn
    (a / "decisions.jsonl").write_text(decision("are you charged", confidence=0.62)
                                       + "not json at all\n" + json.dumps({"no": "text"}) + "\n"
                                       + decision("How much battery do you have?", "fallback", 0.12, "below_threshold"))
    (b / "decisions.jsonl").write_text(decision("battery level", "fallback", 0.2, "unknown_skill")
                                       + decision("time check", confidence=0.55)
                                       + decision("#hashtag selfie", "fallback", 0.1)
                                       + decision("   \n", "fallback", 0.0))
    (b / "notes.txt").write_text("not a log\n")
    return root


def write_labeled(path: Path, texts: list[str]) -> Path:
    with path.open("w") as handle:
        for i, text in enumerate(texts):
            handle.write(json.dumps({"id": f"r{i}", "text": text, "skill": "time_now", "args": {}, "votes": 1,
                                     "teacher": "t", "created": "2026"}) + "\n")
    return path


def test_fallbacks_first_then_ascending_confidence_deduplicated_against_logs_and_labels(tmp_path):
    logs = write_robot_logs(tmp_path / "harvest")
    labeled = write_labeled(tmp_path / "routes.jsonl", ["Time check."])
    out = tmp_path / "prompts" / "harvested.txt"
    harvest = harvest_logs(logs, labeled, out)
    # "How much battery..." fell back twice (two spellings) at 0.31 and 0.12: one prompt, lowest confidence kept
    assert read_prompts(out) == ["how much battery do you have", "battery level", "are you charged", "look left"]
    assert (harvest.decisions, harvest.unparseable, harvest.already_labeled, harvest.unwritable) == (8, 4, 1, 1)
    assert len(harvest.files) == 4
    header = [line for line in out.read_text().splitlines() if line.startswith("#")]
    assert "8 decisions (4 unparseable lines skipped)" in header[1] and "4 prompts to label (2 fell back)" in header[1]


def test_teacher_rejects_are_not_asked_again_unless_collect_retries_them(tmp_path):
    logs = write_robot_logs(tmp_path / "harvest")
    labeled = write_labeled(tmp_path / "routes.jsonl", ["Time check."])
    (tmp_path / "routes.rejected.jsonl").write_text(
        json.dumps({"id": "x", "text": "battery level", "reason": "unknown_skill"}) + "\n"
        + json.dumps({"id": "y", "text": "are you charged", "reason": "teacher_error"}) + "\n")
    harvest = harvest_logs(logs, labeled, tmp_path / "out.txt")
    assert read_prompts(tmp_path / "out.txt") == ["how much battery do you have", "are you charged", "look left"]
    assert harvest.already_labeled == 2


def test_limit_keeps_the_most_needed(tmp_path):
    logs = write_robot_logs(tmp_path / "harvest")
    harvest_logs(logs, tmp_path / "none.jsonl", tmp_path / "out.txt", limit=2)
    assert read_prompts(tmp_path / "out.txt") == ["how much battery do you have", "battery level"]


def test_everything_labeled_leaves_a_header_only_file(tmp_path):
    log = tmp_path / "decisions.jsonl"
    log.write_text(decision("look left"))
    harvest = harvest_logs(log, write_labeled(tmp_path / "routes.jsonl", ["look left"]), tmp_path / "out.txt")
    assert harvest.prompts == []
    assert all(line.startswith("#") for line in (tmp_path / "out.txt").read_text().splitlines())


def test_cli_one_line_errors_and_nothing_written(tmp_path, cli):
    out = tmp_path / "harvested.txt"
    missing = cli(sys.executable, "-m", "distill", "harvest", "--logs", tmp_path / "nope", "--out", out)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith(f"error: {tmp_path / 'nope'}: --logs: not found")
    (tmp_path / "empty").mkdir()
    empty = cli(sys.executable, "-m", "distill", "harvest", "--logs", tmp_path / "empty", "--out", out)
    assert empty.returncode == 2 and "no decision logs here" in empty.stderr
    logs = write_robot_logs(tmp_path / "harvest")
    bad = tmp_path / "routes.jsonl"
    bad.write_text('{"id": "x", "text": 3}\n')
    wrong = cli(sys.executable, "-m", "distill", "harvest", "--logs", logs, "--labeled", bad, "--out", out)
    assert wrong.returncode == 2 and f"{bad}:1: text:" in wrong.stderr
    assert not out.exists() and list(tmp_path.glob(".harvested.txt.*")) == []
    ok = cli(sys.executable, "-m", "distill", "harvest", "--logs", logs, "--labeled", tmp_path / "none.jsonl",
             "--out", out)
    assert ok.returncode == 0, ok.stderr
    assert "5 prompts to label (2 fell back)" in ok.stdout and len(read_prompts(out)) == 5
