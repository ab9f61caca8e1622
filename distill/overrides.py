"""A person's fixes of teacher labels: `data/overrides.jsonl`, append-only, the latest line per record wins.

Each line: {"time", "id", "text", "before", "after", "action", "source"} with action
- `accept`: `after` (the label on the page: the teacher's, or the person's earlier change) is right; it also undoes an
  earlier reject of the record;
- `change`: `after` = {"skill", "args"} replaces the teacher's label (validated by the catalog when it is written
  and again when training reads it, since the catalog may have changed in between);
- `reject`: the record is dropped from training (after is null).

The teacher's files are never touched: collection appends to `routes.jsonl` and `routes.rejected.jsonl`, this file
is only ever appended to (by `make review`), and training applies it (`apply_overrides`). A `change` of a text the
teacher has no label for (one it rejected) adds that record. The split stays stable because it hashes the text,
which a fix never changes.

Two browser tabs may save at once: each line is written under an exclusive `flock` on the file and fsync'd
before the lock is released, so no line is lost or interleaved (tests/test_review.py saves from two tabs at once).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import fail
from .fileio import JsonlAppender, sha256_file
from .prompting import normalize_text
from .skills import Catalog, LabelError

OVERRIDES_FILE = "overrides.jsonl"
ACTIONS = ("accept", "change", "reject")
PERSON = "person"  # the `teacher` of a record a person labelled (a `change` of a text the teacher rejected)


def overrides_path_for(routes: str | Path) -> Path:
    """The overrides beside a routes file: data/routes.jsonl -> data/overrides.jsonl."""
    return Path(routes).with_name(OVERRIDES_FILE)


@dataclass(frozen=True)
class Override:
    """One line of the overrides file."""

    line: int
    time: str
    id: str
    text: str
    action: str
    before: dict | None
    after: dict | None
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return normalize_text(self.text)


@dataclass(frozen=True)
class BadLine:
    """A line of the overrides file that is not an override (shown flagged by the review page)."""

    line: int
    message: str
    raw: str


# ---- writing ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` itself (separate opens conflict, also between threads of one process)."""
    with path.open("a") as guard:
        fcntl.flock(guard.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard.fileno(), fcntl.LOCK_UN)


def make_override(record_id: str, text: str, action: str, before: dict | None, after: dict | None,
                  catalog: Catalog, **extra: Any) -> dict:
    """The line to append, checked: a known action, a catalog-valid `after` for a change (canonical form).

    Raises LabelError for a changed label the catalog refuses (the review page shows its message).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an override needs the record's text")
    if action == "change":
        after = catalog.validate(after).to_dict()
    elif action == "accept":
        after = after or before  # the label kept: the current one, or the teacher's when a reject is undone
    else:
        after = None
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return {"time": stamp, "id": record_id, "text": text, "before": before, "after": after, "action": action,
            **extra}


def append_override(path: str | Path, line: dict) -> None:
    """Append one override line: flock, fsync, unlock. A torn tail from an earlier crash is cut first
    (JsonlAppender), under the lock, so a concurrent writer never sees it half-cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path), JsonlAppender(path) as out:
        out.append(line)


# ---- reading ------------------------------------------------------------------------------------------

def read_overrides(path: str | Path) -> tuple[list[Override], list[BadLine]]:
    """Every override in file order, and the lines that are not overrides. A missing file has none.

    A last line without a newline that does not parse is a write torn by a crash: it was never acknowledged to
    the person, so it is skipped silently (the next append cuts it off).
    """
    path = Path(path)
    if not path.is_file():
        return [], []
    overrides, bad = [], []
    data = path.read_text(encoding="utf-8", errors="replace")
    lines = data.split("\n")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        torn = number == len(lines) and not data.endswith("\n")
        try:
            overrides.append(_parse(number, json.loads(raw)))
        except (ValueError, TypeError) as err:
            if not torn:
                bad.append(BadLine(number, str(err).splitlines()[0], raw[:500]))
    return overrides, bad


def _parse(number: int, obj: Any) -> Override:
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    for name in ("id", "text", "action", "time"):
        if not isinstance(obj.get(name), str) or not obj[name].strip():
            raise ValueError(f"{name}: missing or not a string")
    if obj["action"] not in ACTIONS:
        raise ValueError(f"action: {obj['action']!r} is not one of {', '.join(ACTIONS)}")
    if obj["action"] == "change" and not isinstance(obj.get("after"), dict):
        raise ValueError("after: a change needs the new label {skill, args}")
    known = {"id", "text", "action", "time", "before", "after"}
    return Override(number, obj["time"], obj["id"], obj["text"], obj["action"], obj.get("before"),
                    obj.get("after"), {k: v for k, v in obj.items() if k not in known})


def latest(overrides: list[Override]) -> dict[str, Override]:
    """The latest override per record, keyed by id (file order is write order: appends are serialized)."""
    return {o.id: o for o in overrides}


# ---- applying (training) ------------------------------------------------------------------------------

@dataclass
class Applied:
    """What the overrides did to a routes file's records (training prints it and stores it in student.json)."""

    path: str
    sha256: str | None = None
    accepted: int = 0
    changed: int = 0
    rejected: int = 0
    added: int = 0

    def summary(self) -> str:
        return (f"overrides {self.path}: {self.changed} changed, {self.rejected} rejected, {self.added} added, "
                f"{self.accepted} accepted")

    def to_dict(self) -> dict:
        return dict(vars(self))


def load_overrides(path: str | Path) -> dict[str, Override]:
    """The latest override per record for training; a line that is not an override fails naming file and line."""
    overrides, bad = read_overrides(path)
    if bad:
        fail(f"{path}:{bad[0].line}", f"not an override: {bad[0].message} (fix or delete the line; "
             "make review shows it)")
    return latest(overrides)


class Fixes:
    """The overrides of one file, applied record by record (training keeps its own line numbers for errors)."""

    def __init__(self, path: str | Path, catalog: Catalog):
        self.path, self.catalog = Path(path), catalog
        self.applied = Applied(str(self.path))
        self._chosen = load_overrides(self.path)
        self._by_text = {o.key: o for o in self._chosen.values()}
        self._used: set[str] = set()
        if self._chosen:
            self.applied.sha256 = sha256_file(self.path)

    def apply(self, record: dict) -> dict | None:
        """The record as the person left it: None when rejected, relabelled when changed (matched by id, else by
        normalized text)."""
        text = record.get("text")
        found = self._chosen.get(record.get("id")) or (
            self._by_text.get(normalize_text(text)) if isinstance(text, str) else None)
        if found is None:
            return record
        self._used.add(found.id)
        if found.action == "reject":
            self.applied.rejected += 1
            return None
        if found.action == "accept":
            self.applied.accepted += 1  # the accepted label: the teacher's, or an earlier change of the person's
            return {**record, **self._label(found)} if found.after else record
        self.applied.changed += 1
        return {**record, **self._label(found), "override": found.time}

    def added(self) -> list[dict]:
        """Texts the teacher has no record of (it rejected them) that the person labelled; call after `apply`."""
        out = []
        for found in self._chosen.values():
            if found.id not in self._used and found.action == "change":
                self.applied.added += 1
                out.append({"id": found.id, "text": found.text, **self._label(found), "votes": None,
                            "teacher": PERSON, "created": found.time, "override": found.time})
        return out

    def _label(self, found: Override) -> dict:
        try:
            return self.catalog.validate(found.after).to_dict()
        except LabelError as err:
            fail(f"{self.path}:{found.line}", f"{err} (catalog {self.catalog.source}); fix it again in make review",
                 "after")


def apply_overrides(records: list[dict], path: str | Path, catalog: Catalog) -> tuple[list[dict], Applied]:
    """Records with the person's fixes applied: rejected ones dropped, changed ones relabelled, changes of texts the
    teacher did not label added at the end."""
    fixes = Fixes(path, catalog)
    kept = [fixed for fixed in map(fixes.apply, records) if fixed is not None]
    return kept + fixes.added(), fixes.applied
