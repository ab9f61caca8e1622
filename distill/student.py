"""student.json: the one contract between training, evaluation, export, deployment and the robot's runtime.

Training writes it; everything downstream reads it through `StudentSpec.load`, which checks every field the
pipeline relies on, so a bad or hand-edited file fails with the file and the field named. The catalog the
student learned travels with it: training copies the catalog into the student dir (`catalog.yaml`, stored as a
path relative to the student), so a student copied to another machine keeps it, and every load checks the
catalog's hash against the one training saw.

Imports nothing heavy: the runtime reads students too.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import fail
from .fileio import read_json, write_json
from .skills import Catalog, load_catalog

STUDENT_FILE = "student.json"
CATALOG_FILE = "catalog.yaml"
KINDS = ("router", "style")
# Small files that describe a student (what `distill.deploy` keeps as the deployed reference, what merge copies).
SPEC_FILES = (STUDENT_FILE, CATALOG_FILE)


def student_json_path(student: str | Path) -> Path:
    """`student.json` itself, or the one inside a student dir."""
    path = Path(student)
    return path / STUDENT_FILE if path.is_dir() or path.suffix != ".json" else path


def is_student(student: str | Path) -> bool:
    return student_json_path(student).is_file()


@dataclass
class StudentSpec:
    """What a trained student is: its base, the exact prompt rendering, its catalog, its threshold."""

    name: str
    system_prompt: str
    kind: str = "router"
    base: str | None = None
    chat_template: str | None = None
    stop: list[str] = field(default_factory=list)
    catalog: str | None = None  # relative to the student dir (a copy made by training), or absolute (older students)
    catalog_hash: str | None = None
    threshold: float | None = None  # set by calibration; None = not calibrated yet
    splits: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    train_seconds: float | None = None
    git_commit: str | None = None
    created: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields later stages add (calibration details, ...)
    path: Path | None = field(default=None, compare=False)  # the student.json this was read from

    # ---- reading and writing ------------------------------------------------------------------------------
    @classmethod
    def load(cls, student: str | Path) -> StudentSpec:
        """student.json (or a student dir holding it), every field checked; DistillError names file and field."""
        path = student_json_path(student)
        if not path.is_file():
            fail(path, "student.json not found (train a student first: make train-router)")
        raw = read_json(path)
        if not isinstance(raw, dict):
            fail(path, "expected a JSON object")
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict, path: Path | None = None) -> StudentSpec:
        where = path or STUDENT_FILE
        known = {f.name for f in fields(cls)} - {"extra", "path"}
        values = {k: v for k, v in raw.items() if k in known}
        values.setdefault("name", path.parent.name if path else "student")
        _check(where, values)
        for key in ("stop", "splits", "settings"):  # null in a hand-written file means "none"
            if values.get(key, "") is None:
                del values[key]
        return cls(**values, extra={k: v for k, v in raw.items() if k not in known}, path=path)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "path")}
        return {**data, **self.extra}

    def save(self, directory: str | Path | None = None) -> Path:
        """Write student.json atomically into `directory` (default: where it was read from)."""
        target = Path(directory) / STUDENT_FILE if directory is not None else self.path
        if target is None:
            fail(STUDENT_FILE, "no directory to save the student spec in")
        _check(target, self.to_dict())
        write_json(target, self.to_dict())
        self.path = target
        return target

    def update(self, **changes: Any) -> Path:
        """Set fields (known ones or extra ones) and rewrite student.json atomically."""
        for key, value in changes.items():
            if key in {f.name for f in fields(self)} - {"extra", "path"}:
                setattr(self, key, value)
            else:
                self.extra[key] = value
        return self.save()

    @property
    def dir(self) -> Path | None:
        return self.path.parent if self.path else None

    @property
    def where(self) -> str:
        return str(self.path or STUDENT_FILE)

    # ---- the catalog ------------------------------------------------------------------------------------------
    def catalog_path(self) -> Path:
        """Where this student's catalog is: beside student.json (relative), or as stored (absolute, older ones)."""
        if not self.catalog:
            fail(self.where, "the student names no catalog (a router student must)", "catalog")
        stored = Path(self.catalog)
        if stored.is_absolute():
            return stored
        here = (self.dir or Path(".")) / stored
        # Students trained before the catalog was copied stored a path relative to the repository.
        return here if here.is_file() or not stored.is_file() else stored

    def load_catalog(self) -> Catalog:
        """The catalog the student was trained on; refuses one that changed since (hash in student.json)."""
        path = self.catalog_path()
        catalog = load_catalog(path)
        if self.catalog_hash and self.catalog_hash != catalog.hash:
            fail(self.where, f"the student was trained on catalog {self.catalog_hash}, {path} is now {catalog.hash}: "
                 "retrain", "catalog_hash")
        return catalog


def as_spec(student: StudentSpec | dict | str | Path) -> StudentSpec:
    """A StudentSpec from a spec, a student.json dict, a student dir or a student.json path."""
    if isinstance(student, StudentSpec):
        return student
    if isinstance(student, dict):
        return StudentSpec.from_dict(student)
    return StudentSpec.load(student)


def copy_catalog(catalog: Catalog, student_dir: Path) -> str:
    """Copy the catalog file into the student dir; returns the relative name student.json stores."""
    shutil.copyfile(catalog.source, student_dir / CATALOG_FILE)
    return CATALOG_FILE


def copy_spec_files(source_dir: Path, target_dir: Path) -> None:
    """student.json and the student's own catalog copy, from one dir to another (merge, deploy record)."""
    for name in SPEC_FILES:
        if (source_dir / name).is_file():
            shutil.copy2(source_dir / name, target_dir / name)


def git_commit(short: bool = False) -> str | None:
    """The checkout's commit (provenance in student.json and bench reports); None outside a git checkout."""
    command = ["git", "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


# ---- field checks ------------------------------------------------------------------------------------------------
def _check(where: str | Path, values: dict) -> None:
    for key in ("name", "system_prompt"):
        if not isinstance(values.get(key), str):
            fail(where, "missing or not a string", key)
    for key in ("base", "chat_template", "catalog", "catalog_hash", "git_commit", "created"):
        if values.get(key) is not None and not isinstance(values[key], str):
            fail(where, "not a string", key)
    if values.get("kind", "router") not in KINDS:
        fail(where, f"must be one of {', '.join(KINDS)}", "kind")
    stop = values.get("stop")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop)):
        fail(where, "must be a list of non-empty strings", "stop")
    threshold = values.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        fail(where, "must be a number or null", "threshold")
    for key in ("splits", "settings"):
        if values.get(key) is not None and not isinstance(values[key], dict):
            fail(where, "must be an object", key)
