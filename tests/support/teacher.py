"""Fixtures of the collection stage, shared with other areas (training, demo): a stand-in teacher on loopback.

- `standin_teacher`: base URL (`http://127.0.0.1:PORT/v1`) of a stand-in teacher started once per session.
- `teacher_config`: path of a teacher config JSON pointing at it (timeout 10 s, concurrency 4).
- `teacher_config_for`: factory `(base_url, **overrides) -> Path` for configs of your own stand-ins.
- `standin_stats`: `standin_stats(base_url)` -> the server's counters (requests, chat_completions, faults...).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def standin_teacher() -> Iterator[str]:
    from distill.standins.teacher import serve

    with serve() as base_url:
        yield base_url


@pytest.fixture(scope="session")
def teacher_config_for(tmp_path_factory) -> Callable[..., Path]:
    folder = tmp_path_factory.mktemp("teacher_configs")
    made = []

    def make(base_url: str | list[str], **overrides) -> Path:
        from distill.standins.teacher import MODEL_ID

        config = {"base_url": base_url, "model": MODEL_ID, "timeout": 10, "retries": 2, "concurrency": 4,
                  **overrides}
        path = folder / f"teacher{len(made)}.json"
        path.write_text(json.dumps(config, indent=2))
        made.append(path)
        return path

    return make


@pytest.fixture(scope="session")
def teacher_config(standin_teacher, teacher_config_for) -> Path:
    return teacher_config_for(standin_teacher)


@pytest.fixture(scope="session")
def standin_stats() -> Callable[[str], dict]:
    from distill.standins.teacher import stats

    return stats
