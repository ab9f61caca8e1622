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
# `x-copy` on a string arg: its value is words of the request, copied (see Catalog.label_schema(text)).
#   lower:  the words in lowercase ("Hot Pink" -> "hot pink"): colors, sound names
#   proper: the words as written, or each capitalized ("madrid" -> "madrid" | "Madrid"): place names
#   number: a number the request says (digits or English words), times the `x-units` factor of the unit word
#           after it ("30 seconds" -> 0.5 minutes); free when the request says no number ("mute" -> 0)
#   x-copy-without: [words] on a lower/proper arg: words a copied value never holds ("blue eyes" is no color,
#           "purple pls" neither: 4 of the demo student's 8 calibration errors at confidence >= 0.5 were such runs)
COPY_KEY = "x-copy"
UNITS_KEY = "x-units"
WITHOUT_KEY = "x-copy-without"
UNIT_LOOKAHEAD = 2  # words after a number where its unit may stand: "5 minutes", "2 more hours"
COPY_MODES = ("lower", "proper", "number")
MAX_COPY_WORDS = 4  # "dark green", "New York City", "Rio de Janeiro": longer names are rare in a spoken request
_WORD = re.compile(r"[^\s]+")
_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                     "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_NUMBER = re.compile(r"\d+(?:\.\d+)?|[a-z]+")  # on lowercased text
_WORD_EDGE = "\"'.,!?;:()[]{}<>\u201c\u201d\u2018\u2019"  # punctuation a word sheds at its ends ("Zurich?")


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

    @property
    def copy_args(self) -> dict[str, str]:
        """{arg: mode} of the args whose value is copied from the request (`x-copy` in the catalog)."""
        props = self.args_schema.get("properties", {})
        return {arg: prop[COPY_KEY] for arg, prop in props.items() if isinstance(prop, dict) and COPY_KEY in prop}


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
            {n: [s.description, public_schema(s.args_schema)] for n, s in self.skills.items()}, sort_keys=True
        )  # decoding rules (x-copy) are not learned: adding one keeps trained students valid
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

    def label_schema(self, text: str | None = None) -> dict:
        """JSON Schema of a whole label: one branch per skill, `skill` first so decoding commits early.

        With `text` (the request being routed), each `x-copy` arg becomes an `enum` of the request's own word
        runs (copy_candidates): a student can name only a place, color or sound the visitor said. Measured on
        the 238 hand-written held-out requests (docs/runtime.md): without it the 135M demo student wrote
        "Zurach", "Gaulor", "Tokyo" for Athens; a skill whose required copy arg has no candidate is left out.
        Without `text`: the catalog's schema as published (the teacher, Ollama's format), `x-` keys removed.
        """
        branches = []
        for skill in self.skills.values():
            args = public_schema(skill.args_schema)
            if text is not None and skill.copy_args:
                args = _grounded_args(args, skill, text)
                if args is None:
                    continue
            branches.append(
                {
                    "type": "object",
                    "properties": {"skill": {"const": skill.name}, "args": args},
                    "required": ["skill", "args"],
                    "additionalProperties": False,
                }
            )
        return {"anyOf": branches}

    def describe(self) -> str:
        """The catalog as the teacher sees it: names, descriptions, arg schemas, examples."""
        lines = []
        for skill in self.skills.values():
            props = public_schema(skill.args_schema).get("properties", {})
            args = json.dumps(props, separators=(",", ":")) if props else "none (args is {})"
            lines.append(f"- {skill.name}: {skill.description} Args: {args}")
            for example in skill.examples:
                label = Label(skill.name, example.get("args", {})).canonical()
                lines.append(f"    {json.dumps(example['text'])} -> {label}")
        return "\n".join(lines)


def public_schema(schema: dict) -> dict:
    """The args schema without our `x-` decoding keys (strict JSON Schema consumers refuse unknown keywords)."""
    props = schema.get("properties")
    if not isinstance(props, dict) or not any(isinstance(p, dict) and COPY_KEY in p for p in props.values()):
        return schema
    clean = {arg: {k: v for k, v in p.items() if not k.startswith("x-")} if isinstance(p, dict) else p
             for arg, p in props.items()}
    return {**schema, "properties": clean}


def word_runs(text: str, max_words: int = MAX_COPY_WORDS) -> list[str]:
    """Every run of 1..max_words consecutive words of `text`, punctuation at word ends shed, in reading order."""
    words = [w.strip(_WORD_EDGE) for w in _WORD.findall(text)]
    runs: list[str] = []
    for start in range(len(words)):
        for end in range(start + 1, min(start + max_words, len(words)) + 1):
            if words[end - 1] and all(words[start:end]):
                runs.append(" ".join(words[start:end]))
    return runs


def spoken_numbers(text: str) -> list[float]:
    """The numbers `text` says, in order: digits ("4", "1.5") and English number words ("eleven", "forty",
    "twenty-five", "two hundred", "a hundred"), "and a half" added ("two and a half" -> 2.5)."""
    return [value for value, _ in spoken_quantities(text)]


def spoken_quantities(text: str) -> list[tuple[float, list[str]]]:
    """Each number `text` says (spoken_numbers) with the words after it (UNIT_LOOKAHEAD), where a unit stands."""
    tokens = _NUMBER.findall(text.lower())
    found: list[tuple[float, list[str]]] = []
    i = 0
    while i < len(tokens):
        token, after = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else ""
        value = None
        if token[0].isdigit():
            value = float(token)
        elif token in _TENS and 0 < _UNITS.get(after, 0) < 10:  # twenty-five
            value = float(_TENS[token] + _UNITS[after])
            i += 1
        elif after == "hundred" and (token in _UNITS or token in ("a", "one")):  # two hundred, a hundred
            value = 100.0 * _UNITS.get(token, 1)
            i += 1
        elif token == "hundred":
            value = 100.0
        elif token in _TENS or token in _UNITS:
            value = float(_TENS.get(token, _UNITS.get(token, 0)))
        if value is not None:
            if tokens[i + 1: i + 4] == ["and", "a", "half"]:  # two and a half (minutes)
                value, i = value + 0.5, i + 3
            found.append((value, tokens[i + 1: i + 1 + UNIT_LOOKAHEAD]))
        i += 1
    return found


def _number_candidates(text: str, prop: dict, validator) -> list[int | float] | None:
    """A number arg's candidates: each number said, times the x-units factor of the first unit word after it
    (none: 1, the arg's own unit), rounded to 2 decimals ("90 seconds" -> 1.5); None when the text says no
    number or none fits the schema."""
    units = prop.get(UNITS_KEY, {})
    values: list[int | float] = []
    amounts = [(said, next((units[unit] for word in after if (unit := _unit_word(word, units))), 1))
               for said, after in spoken_quantities(text)]
    for said, factor in amounts + unit_amounts(text, units):
        value = round(said * factor, 2)
        value = int(value) if value.is_integer() else value
        if value not in values and validator.is_valid(value):
            values.append(value)
    return values or None


_FRACTIONS = {"half": 0.5, "quarter": 0.25}


def unit_amounts(text: str, units: dict) -> list[tuple[float, float]]:
    """(amount, the unit's factor) for each unit `text` names with an article or a fraction instead of a number:
    "an hour" (1), "an hour and a half" (1.5), "half an hour", "a half hour" (0.5), "a quarter of an hour",
    "quarter hour" (0.25). Measured: without them `set a timer for an hour` said no number, the arg was free and
    a trained student wrote 1.5 (confidence 0.30-0.51; four of its nine validation errors)."""
    tokens = _NUMBER.findall(text.lower())
    found = []
    for i, token in enumerate(tokens):
        unit = _unit_word(token, units)
        if unit is None:
            continue
        j, article, amount = i - 1, False, None
        if j >= 0 and tokens[j] in ("a", "an"):
            j, article = j - 1, True
        if j >= 0 and tokens[j] == "of":
            j -= 1
        if j >= 0 and tokens[j] in _FRACTIONS:
            if tokens[max(0, j - 2):j] == ["and", "a"]:
                continue  # "two and a half minutes": spoken_quantities' 2.5
            amount = _FRACTIONS[tokens[j]]
        elif article:
            amount = 1.0
            if tokens[i + 1: i + 4] == ["and", "a", "half"]:
                amount = 1.5
        if amount is not None:
            found.append((amount, units[unit]))
    return found


def _unit_word(word: str, units: dict) -> str | None:
    """The x-units key `word` spells, plural or not ("minutes" -> "minute"), else None."""
    for key in (word, word.removesuffix("s")):
        if key in units:
            return key
    return None


def copy_candidates(text: str, prop: dict, mode: str) -> list:
    """The values an `x-copy` arg may take for `text`: its word runs in the mode's case (or, for numbers, the
    numbers it says), those the arg's own schema (pattern, lengths, range) accepts, without repeats. For a
    number arg, None means unconstrained (the request says no number)."""
    validator = jsonschema.Draft202012Validator({k: v for k, v in prop.items() if not k.startswith("x-")})
    if mode == "number":
        return _number_candidates(text, prop, validator)
    values: list[str] = []
    without = {w.lower() for w in prop.get(WITHOUT_KEY, [])}
    for run in word_runs(text):
        if without and not without.isdisjoint(run.lower().split()):
            continue
        forms = [run.lower()] if mode == "lower" else [run, " ".join(w[:1].upper() + w[1:] for w in run.split())]
        for form in forms:
            if form not in values and validator.is_valid(form):
                values.append(form)
    return values


def grounded_values(skill: Skill, text: str) -> dict[str, list]:
    """{arg: the values it may take for `text`} for each copy arg the request holds (copy_candidates); a
    number arg the request says no number for is free, so absent."""
    out = {}
    for arg, mode in skill.copy_args.items():
        values = copy_candidates(text, skill.args_schema["properties"][arg], mode)
        if values is not None:  # a number arg and a request that says none: the model converts freely
            out[arg] = values
    return out


def _grounded_args(args: dict, skill: Skill, text: str) -> dict | None:
    """`args` with each copy arg's schema replaced by the enum of its candidates in `text`; None when a
    required copy arg has none (the skill cannot be meant)."""
    props = dict(args.get("properties", {}))
    required = set(args.get("required", []))
    for arg, values in grounded_values(skill, text).items():
        if not values:
            if arg in required:
                return None
            props.pop(arg)
            continue
        props[arg] = {"type": props[arg].get("type", "string"), "enum": values}
    return {**args, "properties": props}


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
            for arg, mode in skill.copy_args.items():
                value = (example.get("args") or {}).get(arg)
                candidates = copy_candidates(example["text"], skill.args_schema["properties"][arg], mode)
                if value is not None and candidates is not None and value not in candidates:
                    fail(path, f"{value!r} is not words of the text (the arg has x-copy: {mode})",
                         f"skills.{skill.name}.examples[{i}].args.{arg}")
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
        if isinstance(prop, dict):
            _check_copy(path, prop, f"{where}.args.properties.{arg}")
    examples = body.get("examples") or []
    if not isinstance(examples, list) or not all(isinstance(e, dict) and isinstance(e.get("text"), str) for e in examples):
        fail(path, "must be a list of {text, args}", f"{where}.examples")
    return Skill(name, description.strip(), schema, tuple(examples))


def _check_copy(path: Path, prop: dict, where: str) -> None:
    """x-copy: lower/proper on a string arg, number on an integer/number arg; x-units: {word: positive factor};
    x-copy-without: [lowercase words] on a lower/proper arg."""
    mode = prop.get(COPY_KEY)
    if mode is None:
        for key, needs in ((UNITS_KEY, "x-copy: number"), (WITHOUT_KEY, "x-copy: lower or proper")):
            if key in prop:
                fail(path, f"{key} needs {needs}", f"{where}.{key}")
        return
    kinds = ("integer", "number") if mode == "number" else ("string",)
    if mode not in COPY_MODES or prop.get("type") not in kinds:
        fail(path, "x-copy is lower or proper (on a string arg) or number (on an integer or number arg)",
             f"{where}.{COPY_KEY}")
    without = prop.get(WITHOUT_KEY, [])
    if not isinstance(without, list) or not all(isinstance(w, str) and w.isalpha() and w == w.lower() for w in without):
        fail(path, "x-copy-without is a list of lowercase words (e.g. [eyes, please])", f"{where}.{WITHOUT_KEY}")
    if without and mode == "number":
        fail(path, "x-copy-without needs x-copy: lower or proper", f"{where}.{WITHOUT_KEY}")
    units = prop.get(UNITS_KEY, {})
    if not isinstance(units, dict) or not all(isinstance(w, str) and w.isalpha() and w == w.lower()
                                              and isinstance(f, (int, float)) and f > 0 for w, f in units.items()):
        fail(path, "x-units maps lowercase unit words to positive factors (e.g. {hour: 60, second: 0.0166667})",
             f"{where}.{UNITS_KEY}")
    if units and mode != "number":
        fail(path, "x-units needs x-copy: number", f"{where}.{UNITS_KEY}")


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
