"""The skills catalog: load and check config/skills.yaml, validate labels, build the label JSON schema."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import fail
from .fileio import read_text

# Relative to the working directory (the repository root, where make runs): an explicit path, not package data.
# A trained student carries its own copy (distill.student), so the robot never needs this default.
DEFAULT_CATALOG = Path("config/skills.yaml")
FALLBACK_SKILL = "chat"
NO_ARGS: dict = {"type": "object", "properties": {}, "additionalProperties": False}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class LabelError(ValueError):
    """A label that does not fit the catalog; the message is the rejection reason."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    args_schema: dict = field(default_factory=lambda: dict(NO_ARGS))
    examples: tuple[dict, ...] = ()

    @property
    def arg_names(self) -> list[str]:
        return list(self.args_schema.get("properties", {}))


@dataclass(frozen=True)
class Label:
    skill: str
    args: dict

    def to_dict(self) -> dict:
        return {"skill": self.skill, "args": self.args}

    def canonical(self) -> str:
        """The exact text the student is trained to emit (compact: fewer tokens to decode)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


class Catalog:
    def __init__(self, skills: dict[str, Skill], source: str = "<memory>"):
        self.skills = skills
        self.source = source
        self._validators = {name: jsonschema.Draft202012Validator(s.args_schema) for name, s in skills.items()}

    @property
    def names(self) -> list[str]:
        return list(self.skills)

    @property
    def hash(self) -> str:
        """Changes whenever anything a student could have learned changes."""
        blob = json.dumps(
            {n: [s.description, s.args_schema] for n, s in self.skills.items()}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def validate(self, label: Any) -> Label:
        """Return the canonical Label, or raise LabelError with a short machine-readable reason."""
        if not isinstance(label, dict):
            raise LabelError("not_an_object", type(label).__name__)
        extra = set(label) - {"skill", "args"}
        if extra:
            raise LabelError("extra_keys", ", ".join(sorted(extra)))
        name = label.get("skill")
        if not isinstance(name, str) or name not in self.skills:
            raise LabelError("unknown_skill", repr(name))
        args = label.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise LabelError("bad_args", "args must be an object")
        args = {k: v.strip() if isinstance(v, str) else v for k, v in args.items()}
        error = jsonschema.exceptions.best_match(self._validators[name].iter_errors(args))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path) or "args"
            raise LabelError("bad_args", f"{where}: {error.message}")
        return Label(name, _integral_numbers(args))

    def check(self, label: Any) -> str | None:
        """The rejection reason, or None when the label is valid."""
        try:
            self.validate(label)
        except LabelError as err:
            return str(err)
        return None

    def label_schema(self) -> dict:
        """JSON Schema of a whole label: one branch per skill, `skill` first so decoding commits early."""
        branches = []
        for skill in self.skills.values():
            branches.append(
                {
                    "type": "object",
                    "properties": {"skill": {"const": skill.name}, "args": skill.args_schema},
                    "required": ["skill", "args"],
                    "additionalProperties": False,
                }
            )
        return {"anyOf": branches}

    def describe(self) -> str:
        """The catalog as the teacher sees it: names, descriptions, arg schemas, examples."""
        lines = []
        for skill in self.skills.values():
            props = skill.args_schema.get("properties", {})
            args = json.dumps(props, separators=(",", ":")) if props else "none (args is {})"
            lines.append(f"- {skill.name}: {skill.description} Args: {args}")
            for example in skill.examples:
                label = Label(skill.name, example.get("args", {})).canonical()
                lines.append(f"    {json.dumps(example['text'])} -> {label}")
        return "\n".join(lines)


def _integral_numbers(args: dict) -> dict:
    """5.0 and 5 are the same label: keep integers as ints so canonical JSON is stable."""
    return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in args.items()}


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> Catalog:
    path = Path(path)
    if not path.is_file():
        fail(path, "catalog file not found")
    try:
        doc = yaml.safe_load(read_text(path, "catalog file"))  # one line when not UTF-8
    except yaml.YAMLError as err:
        fail(path, f"invalid YAML: {str(err).splitlines()[0]}")
    if not isinstance(doc, dict) or not isinstance(doc.get("skills"), dict) or not doc["skills"]:
        fail(path, "expected a mapping with a non-empty 'skills' mapping", "skills")
    unknown = set(doc) - {"version", "skills"}
    if unknown:
        fail(path, f"unknown key(s) {sorted(unknown)}", "catalog")
    skills = {name: _parse_skill(path, name, body) for name, body in doc["skills"].items()}
    if FALLBACK_SKILL not in skills:
        fail(path, f"the fallback skill '{FALLBACK_SKILL}' must be in the catalog", "skills")
    catalog = Catalog(skills, str(path))
    for skill in skills.values():
        for i, example in enumerate(skill.examples):
            reason = catalog.check({"skill": skill.name, "args": example.get("args", {})})
            if reason:
                fail(path, reason, f"skills.{skill.name}.examples[{i}]")
    return catalog


def _parse_skill(path: Path, name: Any, body: Any) -> Skill:
    where = f"skills.{name}"
    if not isinstance(name, str) or not _NAME.match(name):
        fail(path, "skill names are lowercase identifiers", where)
    if not isinstance(body, dict):
        fail(path, "expected a mapping", where)
    unknown = set(body) - {"description", "args", "examples"}
    if unknown:
        fail(path, f"unknown key(s) {sorted(unknown)}", where)
    description = body.get("description")
    if not isinstance(description, str) or not description.strip():
        fail(path, "missing or empty", f"{where}.description")
    schema = body.get("args") or dict(NO_ARGS)
    if not isinstance(schema, dict) or schema.get("type") != "object":
        fail(path, "must be a JSON Schema with type: object", f"{where}.args")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as err:
        fail(path, f"not a valid JSON Schema: {err.message}", f"{where}.args")
    for arg, prop in schema.get("properties", {}).items():
        pattern = prop.get("pattern") if isinstance(prop, dict) else None
        if pattern is not None and not (pattern.startswith("^") and pattern.endswith("$")):
            # Unanchored, a pattern only has to match somewhere; llama.cpp's grammar converter refuses it.
            fail(path, "a pattern must start with ^ and end with $", f"{where}.args.properties.{arg}.pattern")
    examples = body.get("examples") or []
    if not isinstance(examples, list) or not all(isinstance(e, dict) and isinstance(e.get("text"), str) for e in examples):
        fail(path, "must be a list of {text, args}", f"{where}.examples")
    return Skill(name, description.strip(), schema, tuple(examples))


def normalize_args(args: dict | None) -> dict:
    """Args as the evaluator compares them: exact up to case and runs of space in strings, and 5 == 5.0
    (shared by evaluation and the review page; calibration compares `Label.canonical()` instead)."""
    out = {}
    for key, value in (args or {}).items():
        if isinstance(value, str):
            value = " ".join(value.split()).casefold()
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        out[key] = value
    return out
