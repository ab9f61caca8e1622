"""Training data and students: small labeled route sets written by the test (no teacher needed), the stand-in
teacher's collected routes, and the one router student the slow tests share (trained once per session)."""

from __future__ import annotations

import json
import shutil
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


# ~3.4 s each on 2 quiet cores with the short student prompt (5.4 s before it): the wall time 60 took then. The
# test split holds phrasing families training never saw; 60 iterations left 86.9% of it right (53 of 61).
ROUTER_TEST_ITERS = 100


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


# The shared student sees a single example of this skill: a request the robot will get that its first student
# barely knows, which is what tests/pipeline/test_loop.py harvests and teaches the next student. The other slow
# tests never route it (their held-out splits cannot hold a skill with one example).
SCARCE_SKILL = "battery_status"


def scarce_first(routes: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the shared student's training records, the SCARCE_SKILL records it never saw), in a fixed order."""
    from distill.prompting import normalize_text

    scarce = sorted((r for r in routes if r["skill"] == SCARCE_SKILL), key=lambda r: normalize_text(r["text"]))
    return [r for r in routes if r["skill"] != SCARCE_SKILL] + scarce[:1], scarce[1:]


@pytest.fixture(scope="session")
def router_routes(tmp_path_factory, collected_routes) -> Path:
    """The shared student's data: every collected route but one SCARCE_SKILL example (see scarce_first)."""
    from distill.fileio import read_jsonl, write_jsonl

    path = tmp_path_factory.mktemp("router_data") / "routes.jsonl"
    write_jsonl(path, scarce_first(read_jsonl(collected_routes))[0])
    return path


@pytest.fixture(scope="session")
def trained_router(tmp_path_factory, router_routes, base_model_dir, cli) -> Path:
    """The router student the slow tests share, trained once by `make train-router` (which runs the seed command
    train/finetune_router_mlx.py) in a scratch work dir laid out as the Makefile expects.

    Tests read it and copy it before changing anything (the demo calibrates its copy): never write into it."""
    from tests.support import ROOT

    work = tmp_path_factory.mktemp("students")
    for code in ("train", "config"):  # the seed command and the default catalog, as in a checkout
        (work / code).symlink_to(ROOT / code, target_is_directory=True)
    (work / "data").mkdir()
    shutil.copyfile(router_routes, work / "data" / "routes.jsonl")
    result = cli("make", "--no-print-directory", "-f", ROOT / "Makefile", "train-router", f"VENV={sys.prefix}",
                 f"BASE={base_model_dir}", "ROUTER=models/router_student_mlx", "EPOCHS=1", "LR=2e-4", "BATCH=8",
                 f"TRAIN_ARGS=--iters {ROUTER_TEST_ITERS}", cwd=work, env={"MAKEFLAGS": "", "MAKELEVEL": ""},
                 timeout=3000)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return work / "models" / "router_student_mlx"
