"""Acceptance: stand-in teacher -> collect -> train a router LoRA, on the offline base (CPU): the shared student
(tests/support/data.py `trained_router`) is a complete artifact trained on what it should be.

Its held-out evaluation (beats the untrained base, >= 85% skill accuracy on unseen phrasing families, valid labels
only) is asserted once, in tests/pipeline/test_demo.py, where `make eval-router` evaluates this very student: one run
of the evaluator for both."""

from __future__ import annotations

import json

import pytest

from distill.training.datasets import normalize_text
from distill.fileio import read_jsonl
from tests.support.data import ROUTER_TEST_ITERS, SCARCE_SKILL

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


def test_student_saw_one_example_of_the_scarce_skill(trained_router):
    """What tests/pipeline/test_loop.py builds on: the shared student trained on a single SCARCE_SKILL request."""
    trained = read_jsonl(trained_router / "train.jsonl")
    held_out = read_jsonl(trained_router / "test.jsonl") + read_jsonl(trained_router / "valid.jsonl")
    assert [r["skill"] for r in trained].count(SCARCE_SKILL) == 1
    assert SCARCE_SKILL not in {r["skill"] for r in held_out}
    assert json.loads((trained_router / "student.json").read_text())["settings"]["iters"] == ROUTER_TEST_ITERS
