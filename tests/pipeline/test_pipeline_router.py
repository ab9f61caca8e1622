"""Acceptance: stand-in teacher -> collect -> train a router LoRA -> evaluate, on the offline base (CPU)."""

from __future__ import annotations

import json
import sys

import pytest

from distill.training.datasets import normalize_text
from distill.fileio import read_jsonl

pytestmark = pytest.mark.slow


def test_student_is_a_complete_artifact(trained_router):
    student = json.loads((trained_router / "student.json").read_text())
    assert student["kind"] == "router" and student["stop"] == ["<|im_end|>"]
    assert "<|im_start|>" in student["chat_template"] and student["system_prompt"]
    assert set(student["splits"]) == {"train", "valid", "test"} and student["splits"]["test"] >= 30
    for name in ("adapters.safetensors", "adapter_config.json", "metrics.csv", "loss.png", "test.jsonl", "valid.jsonl"):
        assert (trained_router / name).is_file(), name
    rows = (trained_router / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,train_loss,valid_loss,tokens_per_sec" and len(rows) > 5


def test_no_test_example_was_trained_on(trained_router):
    seen = {normalize_text(r["text"]) for r in read_jsonl(trained_router / "train.jsonl")}
    held_out = read_jsonl(trained_router / "test.jsonl") + read_jsonl(trained_router / "valid.jsonl")
    assert not seen & {normalize_text(r["text"]) for r in held_out}


def test_student_beats_the_untrained_base_and_routes_held_out_requests(trained_router, tmp_path, cli):
    report = tmp_path / "router_eval.json"
    result = cli(sys.executable, "train/eval_router.py", "--student", trained_router, "--out", report, timeout=2400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| mlx student |" in result.stdout and "| untrained base |" in result.stdout
    results = json.loads(report.read_text())["results"]
    student, base = results["mlx student"], results["untrained base"]
    assert student["skill_accuracy"] >= 0.90, student
    assert student["skill_accuracy"] > base["skill_accuracy"]
    assert student["valid_json_rate"] == 1.0
    assert (tmp_path / "router_confusion.png").stat().st_size > 10_000
    rows = json.loads(report.read_text())["predictions"]  # per record, for make review's Student view
    assert len(rows) == student["n"]
    right = sum(r["predicted"] is not None and r["predicted"]["skill"] == r["gold"]["skill"] for r in rows)
    assert right == round(student["skill_accuracy"] * student["n"])
