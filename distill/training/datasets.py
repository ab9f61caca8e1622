"""Training data: load labeled records, split them deterministically, and format chat records for mlx-lm."""

from __future__ import annotations

import hashlib
import re
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


# Words that carry no request of their own: greetings, politeness, fillers, the robot's names and English function
# words. What is left is a request's content ("hey droid, look left, ok" -> {look, left}).
FILLER_WORDS = frozenset("""
    a an the to of for in on at by with and or but so is are be am was were do does did it its this that there here
    i me my you your we us our please thanks thank ok okay hey hi hello um uh er just now can could would will
    should may might let lets quick question kindly droid robot buddy
""".split())


def content_words(text: str) -> frozenset[str]:
    """The words of a request that say what is asked (lowercased, fillers and function words dropped)."""
    return frozenset(w for w in re.findall(r"[0-9a-z']+", normalize_text(text)) if w not in FILLER_WORDS)


def phrasing_families(texts: list[str]) -> list[list[int]]:
    """Indices of `texts` grouped into families of one phrasing: two texts are one family when their content words
    are equal, or when the content words (two or more) of one are all in the other. A paraphrase that wraps a
    seed in politeness ("Could you look left, thanks?") is the seed's family; "look left and up" is too.

    Why: `make expand` grows each seed into several paraphrases. Split record by record, most validation and
    test records had a sibling in training that differed only in fillers, so calibration saw requests the student
    had nearly memorised: on 7 students the thresholds picked there gave 95.1-99.4% precision on 238 hand-written
    requests, six of seven under the 99% asked (docs/runtime.md). Families keep whole phrasings out of training."""
    words = [content_words(t) for t in texts]
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    containing: dict[str, set[int]] = defaultdict(set)  # word -> texts that hold it
    for i, ws in enumerate(words):
        for w in ws:
            containing[w].add(i)
    for i, ws in enumerate(words):
        if not ws:
            continue
        postings = sorted((containing[w] for w in ws), key=len)  # rarest word first: small intersections
        supersets = set.intersection(*postings)  # the texts holding every content word of i
        for j in supersets:
            if len(ws) >= 2 or words[j] == ws:
                parent[root(j)] = root(i)
    families: dict[int, list[int]] = defaultdict(list)
    for i in range(len(texts)):
        families[root(i)].append(i)
    return list(families.values())


def split_records(
    records: list[dict], *, key: str, group: str | None, valid_frac: float, test_frac: float, seed: int,
    holdout: set[str] | frozenset[str] = frozenset(), families: bool = False,
) -> dict[str, list[dict]]:
    """Deterministic train/valid/test split, stratified by `group` (the skill for routes).

    Order comes from a hash of the normalized text, so the split does not depend on the order of the records and
    no text can land in two splits. Records whose normalized text is in `holdout` (the fixed set of docs/loop.md)
    go to the test split whatever their hash. With `families` (routes) whole phrasing families
    (`phrasing_families`) go to one split: validation and test then hold phrasings training never saw; a family
    larger than a split's share stays in training.
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    splits: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    for record in records:
        if holdout and normalize_text(record[key]) in holdout:
            splits["test"].append(record)
        else:
            groups[record[group] if group else ""].append(record)
    for members in groups.values():
        n_test, n_valid = _held_out_sizes(len(members), valid_frac, test_frac)
        if families:
            units = [[members[i] for i in family] for family in phrasing_families([r[key] for r in members])]
        else:
            units = [[record] for record in members]
        units = [sorted(unit, key=lambda r: _rank(r[key], seed)) for unit in units]
        units.sort(key=lambda unit: _rank(unit[0][key], seed))
        taken = {"test": 0, "valid": 0}
        wanted = {"test": n_test, "valid": n_valid}
        for unit in units:
            name = next((n for n in ("test", "valid") if _fits(taken[n], len(unit), wanted[n])), "train")
            if name in taken:
                taken[name] += len(unit)
            splits[name] += unit
    for name in splits:
        splits[name].sort(key=lambda r: _rank(r[key], seed + 1))  # mix skills within a split
    return splits


def _fits(taken: int, size: int, wanted: int) -> bool:
    """A unit joins a held-out split while it fits in the split's share; a share of one takes a first family of
    two (a small skill whose seeds all have a paraphrase still gets a validation and a test record)."""
    room = max(wanted, 2) if taken == 0 and wanted else wanted
    return taken + size <= room


def _held_out_sizes(n: int, valid_frac: float, test_frac: float) -> tuple[int, int]:
    if n < 3:
        return 0, 0  # too few to hold any out: all go to training
    n_test = max(1, round(n * test_frac)) if test_frac > 0 else 0
    n_valid = max(1, round(n * valid_frac)) if valid_frac > 0 else 0
    return n_test, n_valid


def split_texts(student_dir: Path, splits: tuple[str, ...] = ("train",)) -> set[str]:
    """Normalized texts of a student's splits (<student>/<split>.jsonl; a split that is not there holds none): what
    it trained on, for the checks that must not count those records (calibration, the fixed set, harvested items)."""
    texts: set[str] = set()
    for split in splits:
        path = Path(student_dir) / f"{split}.jsonl"
        if path.is_file():
            texts |= {normalize_text(r["text"]) for r in read_jsonl(path, allow_empty=True)}
    return texts


def router_chat(record: dict, system: str = STUDENT_ROUTER_PROMPT) -> dict:
    """The chat record mlx-lm trains on: the student's prompt, the text, the canonical label as the answer."""
    label = Label(record["skill"], record.get("args", {})).canonical()
    return {"messages": chat_messages(system, record["text"], label)}


def style_chat(record: dict, system: str = STUDENT_STYLE_PROMPT) -> dict:
    return {"messages": chat_messages(system, record["prompt"], record["response"].strip())}
