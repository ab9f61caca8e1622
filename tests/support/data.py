"""Training fixtures: small labeled route sets written by the test (no teacher needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HAND_LABELED = [
    *[(f"turn your eyes {c}", "eyes_color", {"color": c}) for c in ("red", "blue", "green", "teal", "pink", "orange")],
    *[(f"look {d}", "look", {"direction": d}) for d in ("left", "right", "up", "down", "center")],
    *[(f"please turn your head {d}", "look", {"direction": d}) for d in ("left", "right", "up", "down")],
    *[(t, "time_now", {}) for t in ("what time is it", "got the time?", "tell me the time please", "time check", "what's the time")],
    *[(t, "chat", {}) for t in ("tell me a joke", "who built you?", "what is love", "how old are you", "do you like cats")],
]


def write_routes(path: Path, rows=HAND_LABELED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for i, (text, skill, args) in enumerate(rows):
            record = {"id": f"r{i}", "text": text, "skill": skill, "args": args, "votes": 1, "teacher": "hand", "created": "2026-11-25T00:00:00Z"}
            handle.write(json.dumps(record) + "\n")
    return path


@pytest.fixture
def small_routes(tmp_path) -> Path:
    return write_routes(tmp_path / "routes.jsonl")


ROUTER_TEST_ITERS = 60  # ~3.5 s each on 2 cores: 20 already route unseen phrasings, 60 clear 90% held out


@pytest.fixture(scope="session")
def collected_routes(tmp_path_factory, teacher_config, cli) -> Path:
    """Seed prompts plus stand-in paraphrases, labeled by the stand-in teacher over real HTTP."""
    folder = tmp_path_factory.mktemp("collected")
    expanded, routes = folder / "expanded.txt", folder / "routes.jsonl"
    for cmd in (
        ["scripts/expand_prompts.py", "--config", teacher_config, "--input", "prompts/router_seed.txt", "--out", expanded, "--per-skill", "60", "--no-progress"],
        ["scripts/collect_routes.py", "--config", teacher_config, "--input", "prompts/router_seed.txt", "--out", routes],
        ["scripts/collect_routes.py", "--config", teacher_config, "--input", expanded, "--out", routes],
    ):
        result = cli(sys.executable, *cmd)
        assert result.returncode == 0, result.stderr[-2000:]
    return routes


@pytest.fixture(scope="session")
def trained_router(tmp_path_factory, collected_routes, base_model_dir, cli) -> Path:
    """A router student trained with the seed command on the offline base (shared by the slow tests)."""
    out = tmp_path_factory.mktemp("students") / "router_student_mlx"
    result = cli(sys.executable, "train/finetune_router_mlx.py", "--base", base_model_dir, "--train_jsonl", collected_routes,
                 "--out", out, "--epochs", "1", "--lr", "2e-4", "--batch", "8", "--iters", str(ROUTER_TEST_ITERS), timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    return out
