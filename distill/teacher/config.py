"""config/teacher.json: where the teacher lives and how to talk to it. Unknown or invalid keys fail loudly."""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import fail
from ..fileio import read_json

REASONING_EFFORTS = ("low", "medium", "high")
MAX_TIMEOUT = 86400.0  # seconds for one request; a day is already no timeout


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
    "timeout": ((int, float), lambda v: 0 < v <= MAX_TIMEOUT),  # 1e400 parses as inf: no socket takes that
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
            fail(path, f"not an http(s) URL: {redact_url(url)!r}", "base_url")
    return [u.rstrip("/") for u in urls]


_SECRET_QUERY_KEY = re.compile(r"key|token|secret|pass|auth|sig", re.I)
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.I)


def redact_url(url: str) -> str:
    """`url` fit for messages, logs and caches: credentials written into it (`user:password@`, or a token as
    the user) become `***@`, and so do the values of query keys that look secret (`?api_key=...`)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # not even a URL: still hide anything before an @
        return _USERINFO.sub(r"\1***@", url)
    netloc = "***@" + parts.netloc.rpartition("@")[2] if "@" in parts.netloc else parts.netloc
    pairs = [pair.partition("=") for pair in parts.query.split("&")] if parts.query else []
    query = "&".join(k + eq + ("***" if eq and _SECRET_QUERY_KEY.search(k) else v) for k, eq, v in pairs)
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing secret: exactly as written
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_text(text: str) -> str:
    """Any URL credentials in free text (an error message that quotes a URL) replaced by `***@`."""
    return _USERINFO.sub(r"\1***@", text)
