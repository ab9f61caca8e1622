"""The decision log: every decision one JSON line, size-based rotation, off with one setting, never in the way."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from distill.runtime.decisions import DecisionLog, log_files
from distill.runtime.router import Router
from tests.runtime.test_route import FakeBackend

LABEL = '{"skill":"eyes_color","args":{"color":"red"}}'


def router_with(catalog, decision_log, confidence=0.9):
    return Router(FakeBackend(catalog, LABEL, confidence), catalog, "SYS", threshold=0.5, log=decision_log)


def test_each_decision_is_one_line_with_the_fields_harvest_needs(tmp_path, catalog):
    path = tmp_path / "logs" / "decisions.jsonl"
    router = router_with(catalog, DecisionLog(path))
    router.route("turn your eyes red")
    router.threshold = 0.95
    router.route("make your eyes red please")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["source"] for line in lines] == ["student", "fallback"]
    first, second = lines
    assert set(first) >= {"time", "text", "skill", "args", "confidence", "source", "reason", "latency_ms", "model"}
    assert (first["text"], first["skill"], first["args"], first["reason"]) == (
        "turn your eyes red", "eyes_color", {"color": "red"}, None)
    assert first["model"] == "fake:1" and first["confidence"] == pytest.approx(0.9)
    assert (second["skill"], second["reason"]) == ("chat", "below_threshold")
    assert second["proposal"] == {"skill": "eyes_color", "args": {"color": "red"}}


def test_rotation_by_size_keeps_n_backups_of_whole_lines(tmp_path, catalog):
    path = tmp_path / "decisions.jsonl"
    router = router_with(catalog, DecisionLog(path, max_bytes=1000, backups=2))
    for i in range(40):
        router.route(f"turn your eyes red, request number {i}")
    files = log_files(path)
    assert [f.name for f in files] == ["decisions.jsonl.2", "decisions.jsonl.1", "decisions.jsonl"]
    assert not (tmp_path / "decisions.jsonl.3").exists()
    texts = []
    for f in files:
        assert f.stat().st_size <= 1000
        texts += [json.loads(line)["text"] for line in f.read_text().splitlines()]
    # Oldest first, the newest line last, nothing torn or duplicated.
    assert texts[-1] == "turn your eyes red, request number 39"
    numbers = [int(t.rsplit(" ", 1)[1]) for t in texts]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


def test_off_with_one_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_DECISION_LOG", "off")
    assert DecisionLog.from_env(tmp_path / "x.jsonl") is None
    monkeypatch.setenv("DISTILL_DECISION_LOG", str(tmp_path / "robot.jsonl"))
    assert DecisionLog.from_env().path == tmp_path / "robot.jsonl"
    monkeypatch.delenv("DISTILL_DECISION_LOG")
    assert DecisionLog.from_env(tmp_path / "d.jsonl").path == tmp_path / "d.jsonl"


def unwritable_paths(tmp_path: Path) -> list[tuple[str, Path]]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cases = [("parent is a file", blocker / "decisions.jsonl")]
    if Path("/dev/full").exists():
        cases.append(("disk full", Path("/dev/full")))
    if Path("/proc/version").exists():
        cases.append(("uncreatable directory (procfs)", Path("/proc/droidhead/decisions.jsonl")))
    return cases


def test_an_unwritable_log_warns_once_and_routing_goes_on(tmp_path, catalog, caplog):
    for name, path in unwritable_paths(tmp_path):
        caplog.clear()
        decision_log = DecisionLog(path)
        router = router_with(catalog, decision_log)
        with caplog.at_level(logging.WARNING, logger="distill.runtime.decisions"):
            decisions = [router.route("turn your eyes red") for _ in range(3)]
        assert [d.source for d in decisions] == ["student"] * 3, name
        warnings = [r for r in caplog.records if r.name == "distill.runtime.decisions"]
        assert len(warnings) == 1, name
        assert "routing goes on" in warnings[0].getMessage()
        assert decision_log.failures == 3, name


def test_the_log_resumes_when_the_directory_becomes_writable(tmp_path, catalog):
    blocker = tmp_path / "logs"
    blocker.write_text("in the way")
    decision_log = DecisionLog(blocker / "decisions.jsonl")
    router = router_with(catalog, decision_log)
    router.route("first")
    blocker.unlink()
    blocker.mkdir()
    router.route("second")
    assert [json.loads(line)["text"] for line in (blocker / "decisions.jsonl").read_text().splitlines()] == ["second"]
