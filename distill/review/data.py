"""What the review page shows, read leniently: a bad line becomes a flagged row, never an exception.

The teacher's files are parsed once per change (cached on size + mtime); a person's overrides are read on every
request (they change with every save, and reading them is cheap), so a save shows at once in every tab.
Measured on 5,000 records (tests/test_review.py::test_5k_records_stay_fast): see that test's docstring.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..overrides import BadLine, Override, latest, overrides_path_for, read_overrides
from ..prompting import normalize_text
from ..skills import Catalog, Label, LabelError, normalize_args

REJECTED_SUFFIX = ".rejected.jsonl"
AUDIT_SUFFIX = ".audit.jsonl"
SHOWS = {
    "all": "all records",
    "split": "votes split",
    "rejected": "rejected by the teacher",
    "disagree": "student disagrees",
    "harvested": "fell back on the robot",
    "flagged": "flagged lines",
    "fixed": "fixed by you",
    "unreviewed": "not reviewed yet",
}


@dataclass(frozen=True)
class Paths:
    """Where the page reads from, all under one project root (the demo's, or a checkout's)."""

    root: Path
    routes: Path

    @classmethod
    def under(cls, root: str | Path, routes: str | Path | None = None) -> Paths:
        root = Path(root).resolve()
        routes = Path(routes) if routes else Path("data/routes.jsonl")
        return cls(root, routes if routes.is_absolute() else root / routes)

    @property
    def rejected(self) -> Path:
        return self.routes.with_name(self.routes.name.removesuffix(".jsonl") + REJECTED_SUFFIX)

    @property
    def audit(self) -> Path:
        return self.routes.with_name(self.routes.name.removesuffix(".jsonl") + AUDIT_SUFFIX)

    @property
    def overrides(self) -> Path:
        return overrides_path_for(self.routes)

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def eval_report(self) -> Path:
        return self.reports / "router_eval.json"

    @property
    def calibration(self) -> Path:
        return self.reports / "calibration.json"

    @property
    def export_report(self) -> Path:
        return self.reports / "export.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def harvested_prompts(self) -> Path:
        return self.root / "prompts" / "harvested.txt"

    @property
    def harvest_logs(self) -> Path:
        return self.root / "data" / "harvest"


@dataclass
class Row:
    """One line of routes.jsonl or routes.rejected.jsonl, as the page shows it."""

    key: str  # the record id (URL), or "<file>-line-N" for a line that is not a record
    source: str  # "routes" | "rejected"
    line: int
    text: str = ""
    skill: str | None = None
    args: dict = field(default_factory=dict)
    votes: int | None = None
    teacher: str = ""
    created: str = ""
    problem: str | None = None  # why the row is flagged: not JSON, not a record, a label the catalog refuses
    raw: str | None = None  # the line itself, for a line that is not a record
    reason: str | None = None  # rejected: the teacher's failure, its detail and the raw answer
    detail: str = ""
    answer: Any = None
    minority: list[str] = field(default_factory=list)  # other labels the teacher's votes gave
    split: bool = False
    fell_back: bool = False
    search: str = ""  # lower-cased text + label, for the search box

    @property
    def fixable(self) -> bool:
        return bool(self.text)

    @property
    def teacher_label(self) -> dict | None:
        return {"skill": self.skill, "args": self.args} if self.skill else None


@dataclass
class Teacher:
    """Everything parsed from the teacher's files."""

    rows: list[Row]
    by_key: dict[str, Row]
    by_text: dict[str, Row]
    max_votes: int
    main_teacher: str = ""  # the teacher of most records (the list names it once, and only the others per row)


@dataclass
class Prediction:
    """The student's answer for one held-out record in the latest evaluation."""

    text: str
    gold: dict | None
    predicted: dict | None
    confidence: float
    error: str | None
    id: str | None = None

    @property
    def correct(self) -> bool:
        return self.predicted is not None and same_label(self.predicted, self.gold)


class Cached:
    """A value computed from files, recomputed when any of them changes (size or mtime)."""

    def __init__(self, compute: Callable[[], Any], files: Callable[[], list[Path]]):
        self._compute, self._files = compute, files
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._value: Any = None

    def get(self) -> Any:
        stamp = tuple(_stamp(p) for p in self._files())
        with self._lock:
            if stamp != self._stamp:
                self._value, self._stamp = self._compute(), stamp
            return self._value


def _stamp(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), st.st_size, st.st_mtime_ns)


# ---- reading ------------------------------------------------------------------------------------------

def read_lines(path: Path) -> list[tuple[int, str, dict | None, str | None]]:
    """(line number, raw line, object or None, problem or None) for every non-blank line; missing file: none."""
    if not path.is_file():
        return []
    out = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, 1):
            raw = raw.rstrip("\n")
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError as err:
                out.append((number, raw, None, f"not JSON: {str(err).splitlines()[0]}"))
                continue
            if not isinstance(obj, dict):
                out.append((number, raw, None, "not a JSON object"))
                continue
            out.append((number, raw, obj, None))
    return out


def load_teacher(paths: Paths, catalog: Catalog) -> Teacher:
    rows: list[Row] = []
    for number, raw, obj, problem in read_lines(paths.routes):
        rows.append(_route_row(number, raw, obj, problem, catalog))
    labeled = {r.key for r in rows if not r.problem}
    for number, raw, obj, problem in read_lines(paths.rejected):
        row = _rejected_row(number, raw, obj, problem)
        if row.key not in labeled:  # labeled on a later run: the record is what counts
            rows.append(row)
    max_votes = max((r.votes for r in rows if isinstance(r.votes, int)), default=1)
    minority = read_minority(paths.audit, catalog)
    for row in rows:
        if row.source == "routes" and row.skill:
            row.minority = [m for m in minority.get(row.key, []) if m != label_text(row.teacher_label)]
            row.split = bool(row.minority) or (isinstance(row.votes, int) and row.votes < max_votes)
        row.search = f"{row.text} {row.key} {label_text(row.teacher_label) if row.skill else ''}".casefold()
    by_key: dict[str, Row] = {}
    for row in rows:
        by_key.setdefault(row.key, row)
    by_text = {normalize_text(r.text): r for r in reversed(rows) if r.text}
    teachers = Counter(r.teacher for r in rows if r.teacher)
    return Teacher(rows, by_key, by_text, max_votes, teachers.most_common(1)[0][0] if teachers else "")


def _route_row(number: int, raw: str, obj: dict | None, problem: str | None, catalog: Catalog) -> Row:
    key = f"routes-line-{number}"
    if obj is None:
        return Row(key, "routes", number, problem=problem, raw=raw[:500])
    text = obj.get("text") if isinstance(obj.get("text"), str) else ""
    row = Row(str(obj.get("id") or key), "routes", number, text=text, votes=_int(obj.get("votes")),
              teacher=str(obj.get("teacher") or ""), created=str(obj.get("created") or ""))
    if not text.strip():
        row.problem, row.raw = "text: missing or empty", raw[:500]
        return row
    try:
        label = catalog.validate({"skill": obj.get("skill"), "args": obj.get("args") or {}})
        row.skill, row.args = label.skill, label.args
    except LabelError as err:
        row.skill = obj.get("skill") if isinstance(obj.get("skill"), str) else None
        row.args = obj.get("args") if isinstance(obj.get("args"), dict) else {}
        row.problem = f"the catalog refuses this label: {err}"
    return row


def _rejected_row(number: int, raw: str, obj: dict | None, problem: str | None) -> Row:
    key = f"rejected-line-{number}"
    if obj is None:
        return Row(key, "rejected", number, problem=problem, raw=raw[:500])
    text = obj.get("text") if isinstance(obj.get("text"), str) else ""
    row = Row(str(obj.get("id") or key), "rejected", number, text=text, teacher=str(obj.get("teacher") or ""),
              created=str(obj.get("created") or ""), reason=str(obj.get("reason") or "?"),
              detail=str(obj.get("detail") or ""), answer=obj.get("raw"))
    if not text.strip():
        row.problem, row.raw = "text: missing or empty", raw[:500]
    return row


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_minority(audit: Path, catalog: Catalog) -> dict[str, list[str]]:
    """Per record id, the distinct labels the teacher's answers gave (the audit log keeps every uncached answer)."""
    if not audit.is_file():
        return {}
    from ..teacher.client import parse_json_answer

    answers: dict[str, list[str]] = {}
    for _, _, obj, _ in read_lines(audit):
        if obj is None or not isinstance(obj.get("tag"), str) or not isinstance(obj.get("content"), str):
            continue
        try:
            label = label_text(catalog.validate(parse_json_answer(obj["content"])).to_dict())
        except LabelError as err:
            label = f"✗ {err}"
        except (ValueError, TypeError):
            label = "✗ not JSON: " + obj["content"].strip()[:60]
        seen = answers.setdefault(obj["tag"], [])
        if label not in seen:
            seen.append(label)
    return answers


def read_harvested(paths: Paths) -> set[str]:
    """Normalized texts that fell back on a robot: the harvest's prompt file and the fetched decision logs."""
    keys = set()
    if paths.harvested_prompts.is_file():
        for line in paths.harvested_prompts.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                keys.add(normalize_text(line))
    if paths.harvest_logs.is_dir():
        for log in sorted(paths.harvest_logs.rglob("*.jsonl*")):
            for _, _, obj, _ in read_lines(log):
                if obj and isinstance(obj.get("text"), str) and obj.get("source") != "student":
                    keys.add(normalize_text(obj["text"]))
    return keys


def harvest_files(paths: Paths) -> list[Path]:
    logs = sorted(paths.harvest_logs.rglob("*.jsonl*")) if paths.harvest_logs.is_dir() else []
    return [paths.harvested_prompts, *logs]


def read_json_file(path: Path) -> tuple[Any, str | None]:
    """(content, None), or (None, problem) for a missing or broken file: the page says so instead of failing."""
    if not path.is_file():
        return None, f"{path.name} not found"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (ValueError, OSError) as err:
        return None, f"{path.name}: not JSON ({str(err).splitlines()[0]})"


def load_predictions(path: Path) -> tuple[dict[str, Prediction], str | None]:
    """Per normalized text, the student's held-out prediction from the latest evaluation report."""
    report, problem = read_json_file(path)
    if problem:
        return {}, problem
    rows = report.get("predictions") if isinstance(report, dict) else None
    if not isinstance(rows, list):
        return {}, f"{path.name} has no per-record predictions (re-run make eval-router)"
    out = {}
    for item in rows:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            confidence = item.get("confidence")
            out[normalize_text(item["text"])] = Prediction(
                item["text"], _label_or_none(item.get("gold")), _label_or_none(item.get("predicted")),
                float(confidence) if isinstance(confidence, (int, float)) else 0.0, item.get("error"), item.get("id"))
    return out, None


def _label_or_none(value: Any) -> dict | None:
    if isinstance(value, dict) and isinstance(value.get("skill"), str):
        return {"skill": value["skill"], "args": value.get("args") if isinstance(value.get("args"), dict) else {}}
    return None


# ---- labels -------------------------------------------------------------------------------------------

def label_text(label: dict | None) -> str:
    """A label as the page prints it (the canonical compact JSON the student is trained on)."""
    if not label:
        return ""
    return Label(label["skill"], label.get("args") or {}).canonical()


def same_label(a: dict | None, b: dict | None) -> bool:
    """Skill and args equal up to string case/spacing and 5 == 5.0 (the evaluator's args_exact rule)."""
    if not a or not b:
        return False
    return a["skill"] == b["skill"] and normalize_args(a.get("args")) == normalize_args(b.get("args"))


# ---- the view of one moment ---------------------------------------------------------------------------

@dataclass
class View:
    """Teacher rows + the latest overrides + the student's predictions, as of one request."""

    teacher: Teacher
    overrides: dict[str, Override]
    override_problems: list[BadLine]
    predictions: dict[str, Prediction]
    predictions_problem: str | None
    harvested: set[str]

    def override(self, row: Row) -> Override | None:
        return self.overrides.get(row.key)

    def label(self, row: Row) -> dict | None:
        """What training will use: the person's change, nothing if rejected by either, else the teacher's."""
        found = self.override(row)
        if found is not None:
            if found.action in ("change", "accept") and found.after:
                return found.after
            if found.action == "reject":
                return None
        return row.teacher_label if row.source == "routes" and not row.problem else None

    def acceptable(self, row: Row) -> dict | None:
        """The label an accept keeps: the current one, or the teacher's valid one (an accept undoes a reject)."""
        return self.label(row) or (row.teacher_label if row.source == "routes" and not row.problem else None)

    def prediction(self, row: Row) -> Prediction | None:
        return self.predictions.get(normalize_text(row.text)) if row.text else None

    def disagrees(self, row: Row) -> bool:
        pred = self.prediction(row)
        label = self.label(row)
        return pred is not None and label is not None and not same_label(pred.predicted, label)

    def fell_back(self, row: Row) -> bool:
        return bool(row.text) and normalize_text(row.text) in self.harvested

    def matches(self, row: Row, skill: str, show: str, query: str) -> bool:
        if show == "rejected":
            if row.source != "rejected":
                return False
        elif row.source == "rejected" and not (show == "flagged" and row.problem) and self.label(row) is None:
            return False  # a rejected text shows with the records once a person has labelled it
        if skill:
            label = self.label(row)
            if not label or label["skill"] != skill:
                return False
        if query and query not in row.search:
            return False
        return {
            "split": lambda: row.split,
            "disagree": lambda: self.disagrees(row),
            "harvested": lambda: self.fell_back(row),
            "flagged": lambda: row.problem is not None,
            "fixed": lambda: self.override(row) is not None,
            "unreviewed": lambda: self.override(row) is None and row.problem is None,
        }.get(show, lambda: True)()

    def select(self, skill: str = "", show: str = "all", query: str = "") -> list[Row]:
        query = query.strip().casefold()
        return [r for r in self.teacher.rows if self.matches(r, skill, show, query)]

    def skill_counts(self, catalog: Catalog) -> Counter:
        """Training records per skill after the person's fixes (what the student will see)."""
        counts: Counter = Counter({name: 0 for name in catalog.names})
        for row in self.teacher.rows:
            label = self.label(row)
            if label:
                counts[label["skill"]] += 1
        return counts

    def show_counts(self) -> dict[str, int]:
        return {show: len(self.select(show=show)) for show in SHOWS}


def load_overrides_view(paths: Paths) -> tuple[dict[str, Override], list[BadLine]]:
    overrides, bad = read_overrides(paths.overrides)
    return latest(overrides), bad
