"""Evaluate a router (MLX student, GGUF file, or the untrained base) on held-out routes.

Every backend yields `distill.route.RawPrediction`s, so the MLX student, the f16/Q4 GGUFs and the baseline
are scored by one function. Decoding is greedy and grammar-constrained:
- GGUF: llama.cpp's grammar from the catalog's JSON schema (distill.route.LlamaCppBackend);
- MLX: `MlxBackend` below keeps, at each step, the most likely token whose text keeps the output a prefix
  of some canonical label (a regular language built from the catalog: skill names, enum values, string /
  integer / number shapes, in schema order). That is greedy decoding under a grammar, the same rule
  llama.cpp's sampler applies at temperature 0, restricted to the canonical compact form the student was
  trained to emit (plus one optional leading whitespace).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path

from .blas import default_dtype, ensure_openblas
from .errors import cli, fail
from .fileio import atomic_writer, read_json, read_jsonl, write_json
from .skills import Catalog, load_catalog

DEFAULT_REPORT = Path("reports/router_eval.json")


# ---- the label language -------------------------------------------------------------------------------

def _value_pattern(schema: dict) -> str:
    import regex

    if "enum" in schema:
        return "(?:" + "|".join(regex.escape(json.dumps(v, ensure_ascii=False)) for v in schema["enum"]) + ")"
    kind = schema.get("type")
    if kind == "string":
        longest = int(schema.get("maxLength", 64))
        return '"[^"\\\\\\x00-\\x1f]{%d,%d}"' % (max(1, int(schema.get("minLength", 1))), longest)
    if kind == "integer":
        return "-?(?:0|[1-9][0-9]{0,8})"
    if kind == "number":
        return "-?(?:0|[1-9][0-9]{0,8})(?:\\.[0-9]{1,6})?"
    if kind == "boolean":
        return "(?:true|false)"
    raise ValueError(f"unsupported arg schema {schema}")


def label_pattern(catalog: Catalog) -> str:
    """A regex whose full matches are exactly the canonical labels (values in schema shape)."""
    import regex

    branches = []
    for skill in catalog.skills.values():
        props = skill.args_schema.get("properties", {})
        args = ",".join(f'{regex.escape(json.dumps(k))}:{_value_pattern(s)}' for k, s in props.items())
        branches.append(regex.escape(f'{skill.name}","args":{{') + args + "\\}")
    return '\\s?\\{"skill":"(?:' + "|".join(branches) + ")\\}"


_ALPHABET = [chr(c) for c in range(32, 127)]
_SKILL_CHOSEN = re.compile(r'\s?\{"skill":"[^"]+"')


class LabelConstraint:
    def __init__(self, catalog: Catalog):
        import regex

        self._pattern = regex.compile(label_pattern(catalog))

    def viable(self, text: str) -> bool:
        return self._pattern.fullmatch(text, partial=True) is not None

    def complete(self, text: str) -> bool:
        return self._pattern.fullmatch(text) is not None

    def forced_completion(self, text: str, limit: int = 64) -> str | None:
        """The rest of the label when the grammar leaves no choice (`","args":{}}` after an arg-free skill,
        `"}}` after an enum value...), else None. Only once the skill name is closed, so the model alone
        spells the skill and its confidence stays its own."""
        if not _SKILL_CHOSEN.match(text):
            return None
        for _ in range(limit):
            if self.complete(text):
                return text
            options = [c for c in _ALPHABET if self.viable(text + c)]
            if len(options) != 1:
                return None
            text += options[0]
        return None


# ---- MLX backend --------------------------------------------------------------------------------------

class MlxBackend:
    """An mlx-lm model (+ optional adapters) decoding labels under the catalog constraint."""

    def __init__(self, model, tokenizer, catalog: Catalog, system_prompt: str, *, max_tokens: int = 64,
                 model_version: str = "mlx"):
        self.model, self.tokenizer, self.catalog = model, tokenizer, catalog
        self.system_prompt = system_prompt
        self.constraint = LabelConstraint(catalog)
        self.max_tokens = max_tokens
        self.model_version = model_version
        self._texts: dict[int, str] = {}
        self._special = set(tokenizer.all_special_ids)

    @classmethod
    def load(cls, base: str, catalog: Catalog, system_prompt: str, adapter_dir: str | Path | None = None, **kwargs) -> MlxBackend:
        import mlx.core as mx
        from mlx_lm import load

        model, tokenizer = load(str(base), adapter_path=str(adapter_dir) if adapter_dir else None)
        if default_dtype() == "float32":
            model.set_dtype(mx.float32)
        version = f"mlx:{Path(adapter_dir).name if adapter_dir else Path(str(base)).name}"
        return cls(model, tokenizer, catalog, system_prompt, model_version=version, **kwargs)

    @classmethod
    def from_student(cls, student_dir: str | Path, catalog: Catalog | None = None, **kwargs) -> MlxBackend:
        spec = read_json(Path(student_dir) / "student.json")
        catalog = catalog or load_catalog(spec.get("catalog") or "config/skills.yaml")
        return cls.load(spec["base"], catalog, spec["system_prompt"], adapter_dir=student_dir, **kwargs)

    def _text(self, token: int) -> str:
        if token not in self._texts:
            self._texts[token] = self.tokenizer.decode([token])
        return self._texts[token]

    def _best_viable(self, output: str, order: list[int]) -> int | None:
        """The most likely token that keeps the output inside the label language."""
        return next((t for t in order if t not in self._special and self.constraint.viable(output + self._text(t))), None)

    def prompt_tokens(self, text: str, system_prompt: str | None = None) -> list[int]:
        messages = [{"role": "system", "content": system_prompt or self.system_prompt}, {"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)

    def predict(self, text: str, system_prompt: str | None = None):
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        from .route import Piece, interpret

        started = time.perf_counter()
        cache = make_prompt_cache(self.model)
        logits = self.model(mx.array(self.prompt_tokens(text, system_prompt))[None], cache=cache)[0, -1]
        output, pieces = "", []
        for _ in range(self.max_tokens):
            logprobs = logits - mx.logsumexp(logits)
            token = self._best_viable(output, mx.argsort(-logprobs).tolist())
            if token is None:
                break  # no token of the vocabulary fits (cannot happen for a well-formed catalog)
            pieces.append(Piece(self._text(token).encode(), logprobs[token].item()))
            output += self._text(token)
            forced = self.constraint.forced_completion(output)
            if forced is not None:
                output = forced  # no choice left: skip the remaining decode steps
                break
            logits = self.model(mx.array([[token]]), cache=cache)[0, -1]
        return interpret(text, output.strip(), pieces, self.catalog, (time.perf_counter() - started) * 1000)


# ---- metrics ------------------------------------------------------------------------------------------

def normalize_args(args: dict | None) -> dict:
    """Exact match up to case and surrounding space of strings, and 5 == 5.0."""
    out = {}
    for key, value in (args or {}).items():
        if isinstance(value, str):
            value = " ".join(value.split()).casefold()
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        out[key] = value
    return out


def score_predictions(predictions: list, records: list[dict], skills: list[str]) -> dict:
    n = len(records)
    hits = [p.skill == r["skill"] and p.valid for p, r in zip(predictions, records)]
    args_hits = [h and normalize_args(p.args) == normalize_args(r.get("args")) for h, p, r in zip(hits, predictions, records)]
    latencies = sorted(p.latency_ms for p in predictions)
    confusion = Counter((r["skill"], p.skill if p.valid else "(invalid)") for p, r in zip(predictions, records))
    per_skill = {}
    for skill in skills:
        tp = confusion[(skill, skill)]
        predicted = sum(c for (_, pred), c in confusion.items() if pred == skill)
        actual = sum(c for (gold, _), c in confusion.items() if gold == skill)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_skill[skill] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    return {
        "n": n,
        "skill_accuracy": sum(hits) / n if n else 0.0,
        "args_exact": sum(args_hits) / n if n else 0.0,
        "valid_json_rate": sum(p.valid_json for p in predictions) / n if n else 0.0,
        "valid_label_rate": sum(p.valid for p in predictions) / n if n else 0.0,
        "latency_ms_p50": _percentile(latencies, 50),
        "latency_ms_p95": _percentile(latencies, 95),
        "per_skill": per_skill,
        "confusion": [[gold, pred, count] for (gold, pred), count in sorted(confusion.items())],
    }


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    index = min(len(values) - 1, max(0, math.ceil(pct / 100 * len(values)) - 1))
    return round(values[index], 2)


def evaluate_backend(backend, records: list[dict], *, desc: str = "eval", system_prompt: str | None = None) -> tuple[dict, list]:
    from tqdm import tqdm

    predictions = [backend.predict(r["text"], system_prompt) for r in tqdm(records, desc=desc, leave=False, file=sys.stderr)]
    return score_predictions(predictions, records, backend.catalog.names), predictions


def teacher_prompt(catalog: Catalog) -> str:
    """The catalog prompt the teacher labels with (the baseline gets the same help)."""
    from .collect import ROUTER_SYSTEM

    return ROUTER_SYSTEM.format(catalog=catalog.describe())


def evaluate_mlx(student_dir: str | Path, records: list[dict]) -> dict:
    metrics, _ = evaluate_backend(MlxBackend.from_student(student_dir), records, desc="mlx student")
    return metrics


def evaluate_gguf(gguf: str | Path, student_dir: str | Path, records: list[dict]) -> dict:
    from .route import LlamaCppBackend

    backend = LlamaCppBackend.from_student(student_dir, gguf)
    metrics, _ = evaluate_backend(backend, records, desc=Path(gguf).name)
    return {**metrics, "size_bytes": Path(gguf).stat().st_size}


def evaluate_baseline(student_dir: str | Path, records: list[dict]) -> dict:
    spec = read_json(Path(student_dir) / "student.json")
    catalog = load_catalog(spec.get("catalog") or "config/skills.yaml")
    backend = MlxBackend.load(spec["base"], catalog, teacher_prompt(catalog))
    metrics, _ = evaluate_backend(backend, records, desc="untrained base")
    return metrics


# ---- report -------------------------------------------------------------------------------------------

COLUMNS = [("skill_accuracy", "skill acc"), ("args_exact", "args exact"), ("valid_json_rate", "valid JSON"),
           ("latency_ms_p50", "p50 ms"), ("latency_ms_p95", "p95 ms")]


def markdown_table(results: dict[str, dict]) -> str:
    lines = ["| model | n | " + " | ".join(title for _, title in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for name, m in results.items():
        cells = [f"{m[k]:.3f}" if k.endswith(("accuracy", "exact", "rate")) else f"{m[k]:.0f}" for k, _ in COLUMNS]
        lines.append(f"| {name} | {m['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_confusion(metrics: dict, skills: list[str], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = skills + ["(invalid)"]
    grid = np.zeros((len(skills), len(columns)), dtype=int)
    for gold, pred, count in metrics["confusion"]:
        if gold in skills:
            grid[skills.index(gold), columns.index(pred if pred in columns else "(invalid)")] += count
    fig, ax = plt.subplots(figsize=(7.5, 6))
    ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right")
    ax.set_yticks(range(len(skills)), skills)
    for (i, j), count in np.ndenumerate(grid):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > grid.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("teacher label")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_writer(png, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate the router student (and the untrained base) on held-out data.")
    p.add_argument("--student", type=Path, default=Path("models/router_student_mlx"))
    p.add_argument("--gguf", type=Path, action="append", default=[], help="also evaluate these GGUF files")
    p.add_argument("--split", default="test", choices=["test", "valid"])
    p.add_argument("--data", type=Path, help="routes JSONL to evaluate instead of the student's split")
    p.add_argument("--no-baseline", action="store_true", help="skip the untrained base")
    p.add_argument("--limit", type=int, help="evaluate the first N records only")
    p.add_argument("--out", type=Path, default=DEFAULT_REPORT)
    return p


@cli
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    ensure_openblas()
    if not (args.student / "student.json").is_file():
        fail(args.student, "not a trained student (no student.json); run make train-router", "--student")
    records = read_jsonl(args.data or args.student / f"{args.split}.jsonl")[: args.limit]
    results = {"mlx student": evaluate_mlx(args.student, records)}
    for gguf in args.gguf:
        results[gguf.name] = evaluate_gguf(gguf, args.student, records)
    if not args.no_baseline:
        results["untrained base"] = evaluate_baseline(args.student, records)
    skills = load_catalog(read_json(args.student / "student.json").get("catalog") or "config/skills.yaml").names
    report = {"student": str(args.student), "split": str(args.data or args.split), "results": results}
    write_json(args.out, report)
    plot_confusion(results["mlx student"], skills, args.out.with_name("router_confusion.png"), f"{args.student.name} ({report['split']})")
    print(markdown_table(results))
    print(f"\nreport: {args.out}  confusion matrix: {args.out.with_name('router_confusion.png')}")


if __name__ == "__main__":
    main()
