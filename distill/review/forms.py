"""The label form, built from each skill's JSON Schema; what it sends is checked by the catalog, nothing else.

enum -> <select>; string -> text input (its pattern/length shown as a hint); integer/number -> number input;
boolean -> yes/no select. The browser does not validate (the form is `novalidate`): the catalog is the one judge,
and its message is what the page shows, so the page and training can never disagree about what is valid.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..skills import Catalog, Skill

_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class ArgField:
    """One input of the form."""

    skill: str
    name: str
    kind: str  # select | text | integer | number | boolean
    options: tuple[str, ...]
    required: bool
    hint: str
    value: str

    @property
    def input_name(self) -> str:
        return field_name(self.skill, self.name)


def field_name(skill: str, arg: str) -> str:
    """Each skill has its own inputs, so switching the skill select keeps what was typed for another skill."""
    return f"arg.{skill}.{arg}"


def skill_fields(skill: Skill, args: Mapping[str, Any] | None = None) -> list[ArgField]:
    args = args or {}
    required = set(skill.args_schema.get("required", []))
    fields = []
    for name, schema in skill.args_schema.get("properties", {}).items():
        value = args.get(name)
        shown = "" if value is None else ("true" if value is True else "false" if value is False else str(value))
        kind, options = _kind(schema)
        fields.append(ArgField(skill.name, name, kind, options, name in required, hint(schema), shown))
    return fields


def _kind(schema: dict) -> tuple[str, tuple[str, ...]]:
    if "enum" in schema:
        return "select", tuple(str(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind in ("integer", "number"):
        return kind, ()
    if kind == "boolean":
        return "boolean", ("true", "false")
    return "text", ()


def hint(schema: dict) -> str:
    """The schema's constraints in words, shown under the input."""
    parts = []
    if schema.get("type") == "string" and "enum" not in schema:
        low, high = schema.get("minLength"), schema.get("maxLength")
        if low is not None and high is not None:
            parts.append(f"{low}–{high} characters")
        elif high is not None:
            parts.append(f"at most {high} characters")
        elif low is not None:
            parts.append(f"at least {low} characters")
        if schema.get("pattern"):
            parts.append(f"matches {schema['pattern']}")
    if schema.get("type") in ("integer", "number"):
        parts.append("whole number" if schema["type"] == "integer" else "number")
        for key, word in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
            if key in schema:
                parts.append(f"{word} {schema[key]}")
    return ", ".join(parts)


def label_from_form(form: Mapping[str, str], catalog: Catalog) -> dict:
    """The label the form describes, NOT validated (Catalog.validate judges it): numbers are parsed when they look
    like numbers, anything else is passed on as typed so the catalog's message names the real problem."""
    name = (form.get("skill") or "").strip()
    skill = catalog.skills.get(name)
    if skill is None:
        return {"skill": name, "args": {}}
    args: dict[str, Any] = {}
    for field in skill_fields(skill):
        raw = form.get(field.input_name)
        if raw is None or raw.strip() == "":
            continue  # absent: the schema's `required` says whether that is allowed
        args[field.name] = _coerce(field.kind, raw.strip())
    return {"skill": name, "args": args}


def _coerce(kind: str, raw: str) -> Any:
    if kind == "integer" and _INTEGER.match(raw):
        return int(raw)
    if kind == "number" and _NUMBER.match(raw):
        value = float(raw)
        return int(value) if value.is_integer() else value
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw
