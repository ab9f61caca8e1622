"""Training data: load labeled records, split them deterministically, and format chat records for mlx-lm."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from ..errors import fail
from ..fileio import read_jsonl
from ..overrides import Fixes
from ..prompting import STUDENT_ROUTER_PROMPT, STUDENT_STYLE_PROMPT, chat_messages, normalize_text
from ..skills import Catalog, Label, LabelError

def load_routes(path: str | Path, catalog: Catalog, fixes: Fixes | None = None) -> list[dict]:
    """Router records, each re-validated against the catalog; duplicates (normalized text) dropped. With `fixes`
    (data/overrides.jsonl, distill.overrides) a person's reject drops a record and a change relabels it, before the
    check: a label the catalog refuses that the person rejected or fixed stops nothing."""
    records, seen = [], set()
    numbered = list(enumerate(read_jsonl(path), 1))
    if fixes is not None:
        numbered = [(n, fixed) for n, r in numbered if (fixed := fixes.apply(r)) is not None]
        numbered += [(f"{fixes.path} (added)", r) for r in fixes.added()]
    for number, record in numbered:
        where = f"{path}:{number}" if isinstance(number, int) else number
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            fail(where, "missing or empty", "text")
        try:
            label = catalog.validate({"skill": record.get("skill"), "args": record.get("args", {})})
        except LabelError as err:
            field = "skill" if err.reason == "unknown_skill" else "args"
            fail(where, f"{err} (catalog {catalog.source})", field)
        key = normalize_text(text)
        if key in seen:
            continue
        seen.add(key)
        records.append({**record, "text": text.strip(), "skill": label.skill, "args": label.args})
    return records


def load_style(path: str | Path) -> list[dict]:
    records, seen = [], set()
    for number, record in enumerate(read_jsonl(path), 1):
        for field in ("prompt", "response"):
            if not isinstance(record.get(field), str) or not record[field].strip():
                fail(f"{path}:{number}", "missing or empty", field)
        key = normalize_text(record["prompt"])
        if key not in seen:
            seen.add(key)
            records.append(record)
    return records


def _rank(text: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{normalize_text(text)}".encode()).hexdigest()


def split_records(
    records: list[dict], *, key: str, group: str | None, valid_frac: float, test_frac: float, seed: int,
    holdout: set[str] | frozenset[str] = frozenset(),
) -> dict[str, list[dict]]:
    """Deterministic train/valid/test split, stratified by `group` (the skill for routes).

    Order comes from a hash of the normalized text, so adding data never moves an old example between
    splits for the same seed, and no text can land in two splits. Records whose normalized text is in
    `holdout` (the fixed set of docs/loop.md) go to the test split whatever their hash.
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    splits: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    for record in records:
        if holdout and normalize_text(record[key]) in holdout:
            splits["test"].append(record)
        else:
            groups[record[group] if group else ""].append(record)
    for members in groups.values():
        members = sorted(members, key=lambda r: _rank(r[key], seed))
        n_test, n_valid = _held_out_sizes(len(members), valid_frac, test_frac)
        splits["test"] += members[:n_test]
        splits["valid"] += members[n_test : n_test + n_valid]
        splits["train"] += members[n_test + n_valid :]
    for name in splits:
        splits[name].sort(key=lambda r: _rank(r[key], seed + 1))  # mix skills within a split
    return splits


def _held_out_sizes(n: int, valid_frac: float, test_frac: float) -> tuple[int, int]:
    if n < 3:
        return 0, 0  # too few to hold any out: all go to training
    n_test = max(1, round(n * test_frac)) if test_frac > 0 else 0
    n_valid = max(1, round(n * valid_frac)) if valid_frac > 0 else 0
    return n_test, n_valid


def router_chat(record: dict, system: str = STUDENT_ROUTER_PROMPT) -> dict:
    """The chat record mlx-lm trains on: the student's prompt, the text, the canonical label as the answer."""
    label = Label(record["skill"], record.get("args", {})).canonical()
    return {"messages": chat_messages(system, record["text"], label)}


def style_chat(record: dict, system: str = STUDENT_STYLE_PROMPT) -> dict:
    return {"messages": chat_messages(system, record["prompt"], record["response"].strip())}
