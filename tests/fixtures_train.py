"""Training fixtures: small labeled route sets written by the test (no teacher needed)."""

from __future__ import annotations

import json
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
