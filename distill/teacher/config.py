"""config/teacher.json: where the teacher lives and how to talk to it. Unknown or invalid keys fail loudly."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import fail
from ..fileio import read_json

REASONING_EFFORTS = ("low", "medium", "high")


@dataclass(frozen=True)
class TeacherConfig:
    base_url: list[str] = field(default_factory=lambda: ["http://localhost:8000/v1"])
    model: str = "gpt-oss-20b"
    api_key_env: str = "TEACHER_API_KEY"
    temperature: float = 0.2
    max_tokens: int = 512
    reasoning_effort: str | None = "low"
    timeout: float = 120.0
    retries: int = 4
    concurrency: int = 4
    source: str = field(default="<defaults>", compare=False)

    @property
    def api_key(self) -> str:
        """From the environment only; local servers accept any key, so a placeholder is fine."""
        return os.environ.get(self.api_key_env, "") or "not-needed"

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("source")
        return data


_CHECKS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "model": (str, lambda v: bool(v.strip())),
    "api_key_env": (str, lambda v: v.replace("_", "").isalnum()),
    "temperature": ((int, float), lambda v: 0 <= v <= 2),
    "max_tokens": (int, lambda v: v > 0),
    "reasoning_effort": ((str, type(None)), lambda v: v is None or v in REASONING_EFFORTS),
    "timeout": ((int, float), lambda v: v > 0),
    "retries": (int, lambda v: 0 <= v <= 20),
    "concurrency": (int, lambda v: 1 <= v <= 256),
}


def load_teacher_config(path: str | Path) -> TeacherConfig:
    raw = read_json(path)
    if not isinstance(raw, dict):
        fail(path, "expected a JSON object")
    known = {f.name for f in fields(TeacherConfig)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        fail(path, f"unknown key (known: {', '.join(sorted(known))})", unknown[0])
    values: dict[str, Any] = {}
    for key, (types, ok) in _CHECKS.items():
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, types) or not ok(value):
            fail(path, f"invalid value {value!r}", key)
        values[key] = value
    if "base_url" in raw:
        values["base_url"] = _base_urls(path, raw["base_url"])
    return TeacherConfig(**values, source=str(path))


def _base_urls(path: str | Path, value: Any) -> list[str]:
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        fail(path, "a URL or a non-empty list of URLs", "base_url")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            fail(path, f"not an http(s) URL: {url!r}", "base_url")
    return [u.rstrip("/") for u in urls]
