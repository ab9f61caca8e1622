"""The optional style student: stand-in teacher answers -> LoRA -> lower held-out loss than the base."""

from __future__ import annotations

import json
import sys

import pytest

from distill.training.style_eval import complies_with_length

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "answer, ok",
    [("Beep. I can look around and change my eye color.", True),
     ("One. Two. Three.", False),
     ("", False),
     (" ".join(["word"] * 41) + ".", False)],
)
def test_length_rule(answer, ok):
    assert complies_with_length(answer) is ok


def test_style_student_learns_the_voice(tmp_path, teacher_config, base_model_dir, cli):
    data, student, report = tmp_path / "style.jsonl", tmp_path / "style_student_mlx", tmp_path / "style_eval.json"
    collected = cli(sys.executable, "scripts/collect_style.py", "--config", teacher_config, "--input", "prompts/style_seed.txt", "--out", data)
    assert collected.returncode == 0, collected.stderr[-2000:]
    trained = cli(sys.executable, "train/finetune_style_mlx.py", "--base", base_model_dir, "--train_jsonl", data, "--out", student,
                  "--epochs", "1", "--lr", "2e-4", "--batch", "4", "--iters", "10")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads((student / "student.json").read_text())["kind"] == "style"
    evaluated = cli(sys.executable, "train/eval_style.py", "--student", student, "--limit", "3", "--out", report)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    results = json.loads(report.read_text())["results"]
    assert results["mlx student"]["loss"] < results["untrained base"]["loss"] - 0.5
    assert "| mlx student |" in evaluated.stdout
