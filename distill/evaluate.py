"""Evaluate a router (MLX student, GGUF file, or the untrained base) on held-out routes.

Every backend yields `distill.route.RawPrediction`s, so the MLX student, the f16/Q4 GGUFs and the baseline
are scored by one function. Decoding is greedy and grammar-constrained:
- GGUF: llama.cpp's grammar from the catalog's JSON schema (distill.route.LlamaCppBackend);
- MLX: `MlxBackend` below keeps, at each step, the most likely token whose text keeps the output a prefix
  of some canonical label (a regular language built from the catalog: skill names, enum values, string /
  integer / number shapes, in schema order). That is greedy decoding under a grammar, the same rule
  llama.cpp's sampler applies at temperature 0, restricted to the canonical compact form the student was
  trained to emit. The fixed opening `{"skill":"` is fed with the prompt rather than decoded.
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
from .fileio import atomic_writer, read_json, read_jsonl, read_prompts, sha256_file, write_json
from .skills import Catalog, load_catalog

DEFAULT_REPORT = Path("reports/router_eval.json")
DEFAULT_COMPARE_REPORT = Path("reports/compare.json")
DEFAULT_HARVESTED = Path("prompts/harvested.txt")
DEFAULT_ROUTES = Path("data/routes.jsonl")


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
LABEL_PREFIX = '{"skill":"'
_SKILL_CHOSEN = re.compile(r'\s?\{"skill":"[^"]+"')


class LabelConstraint:
    def __init__(self, catalog: Catalog):
        import regex

        self._pattern = regex.compile(label_pattern(catalog))

    def viable(self, text: str) -> bool:
        return self._pattern.fullmatch(text, partial=True) is not None

    def complete(self, text: str) -> bool:
        return self._pattern.fullmatch(text) is not None

    def forced(self, text: str, limit: int = 64) -> str:
        """The characters the grammar forces next (`","args":{}}` after an arg-free skill, `"}}` after an enum
        value...). Empty until the skill name is complete, so the model alone spells the skill and the
        confidence stays its own."""
        extension = ""
        while len(extension) < limit and not self.complete(text + extension):
            options = [c for c in _ALPHABET if self.viable(text + extension + c)]
            if len(options) != 1:
                break
            extension += options[0]
        named = _SKILL_CHOSEN.match(text) or extension.startswith('"')
        return extension if named else ""


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
        self._cache, self._cached = None, []  # KV cache of the tokens in _cached
        self._prefix_tokens = tokenizer.encode(LABEL_PREFIX, add_special_tokens=False)

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

    def _prefill(self, tokens: list[int]):
        """Logits after `tokens`, reusing the KV cache of the longest prefix shared with the last call
        (the system prompt and user header are the same for every request)."""
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

        if self._cache is None:
            self._cache, self._cached = make_prompt_cache(self.model), []
        shared = 0
        for cached, new in zip(self._cached, tokens[:-1]):  # always recompute at least the last token
            if cached != new:
                break
            shared += 1
        trim_prompt_cache(self._cache, len(self._cached) - shared)
        self._cached = tokens[:]
        return self.model(mx.array(tokens[shared:])[None], cache=self._cache)[0, -1]

    def _best_viable(self, output: str, order: list[int]) -> int | None:
        """The most likely token that keeps the output inside the label language."""
        return next((t for t in order if t not in self._special and self.constraint.viable(output + self._text(t))), None)

    def prompt_tokens(self, text: str, system_prompt: str | None = None) -> list[int]:
        messages = [{"role": "system", "content": system_prompt or self.system_prompt}, {"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)

    def predict(self, text: str, system_prompt: str | None = None):
        import mlx.core as mx

        from .route import Piece, interpret

        started = time.perf_counter()
        # Every label starts with the same bytes: feed them with the prompt instead of decoding them one by one
        # (`{"` `skill` `":"` tokenize the same alone as inside a label, so the model sees what it was trained on).
        logits = self._prefill(self.prompt_tokens(text, system_prompt) + self._prefix_tokens)
        output, pieces = LABEL_PREFIX, [Piece(LABEL_PREFIX.encode(), 0.0)]
        for _ in range(self.max_tokens):
            logprobs = logits - mx.logsumexp(logits)
            token = self._best_viable(output, mx.argsort(-logprobs).tolist())
            if token is None:
                break  # no token of the vocabulary fits (cannot happen for a well-formed catalog)
            pieces.append(Piece(self._text(token).encode(), logprobs[token].item()))
            output += self._text(token)
            step = [token]
            forced = self.constraint.forced(output)
            if forced:  # no choice: take the forced text in one forward pass instead of token by token
                output += forced
                pieces.append(Piece(forced.encode(), 0.0))
                if self.constraint.complete(output):
                    break
                step += self.tokenizer.encode(forced, add_special_tokens=False)
            logits = self.model(mx.array([step]), cache=self._cache)[0, -1]
            self._cached += step
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
    from .collect import route_system_prompt

    return route_system_prompt(catalog)


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


# ---- round over round: the new student against the deployed one ------------------------------------------
# The fixed set is the held-out split of the first student that was deployed: distill.deployed carries it
# forward as <deployed>/fixed.jsonl, and `make train-router` keeps it out of training (--holdout), so every
# round is measured on the same records (docs/loop.md).

FIXED_CACHE = "fixed_eval.json"
COMPARED = ("skill_accuracy", "args_exact", "valid_label_rate")


def fixed_set_path(deployed: str | Path) -> Path:
    """The deployed reference's fixed held-out set: fixed.jsonl (carried across rounds), else its test split."""
    deployed = Path(deployed)
    return deployed / "fixed.jsonl" if (deployed / "fixed.jsonl").is_file() else deployed / "test.jsonl"


def fixed_set_metrics(student_dir: str | Path, fixed: Path) -> dict:
    """The MLX student's metrics on `fixed`, cached in <student>/fixed_eval.json under the adapters' and the
    set's sha256 (eval-router computes them, the deploy gate and distill.deployed reuse them)."""
    student_dir = Path(student_dir)
    key = {"adapters_sha256": sha256_file(student_dir / "adapters.safetensors"), "fixed_sha256": sha256_file(fixed)}
    cache = student_dir / FIXED_CACHE
    if cache.is_file():
        cached = read_json(cache)
        if isinstance(cached, dict) and isinstance(cached.get("metrics"), dict) and all(
                cached.get(k) == v for k, v in key.items()):
            return cached["metrics"]
    metrics = evaluate_mlx(student_dir, read_jsonl(fixed))
    write_json(cache, {**key, "fixed_set": str(fixed), "metrics": metrics})
    return metrics


def harvested_records(prompts: Path, routes: Path) -> tuple[list[dict], int]:
    """The teacher's labels for the harvested prompts (records of `routes`), and how many are not labeled yet."""
    from .datasets import normalize_text

    if not prompts.is_file() or not any(line.strip() and not line.lstrip().startswith("#")
                                        for line in prompts.read_text().splitlines()):
        return [], 0
    labeled = {normalize_text(r["text"]): r for r in read_jsonl(routes, allow_empty=True)} if routes.is_file() else {}
    keys = dict.fromkeys(normalize_text(text) for text in read_prompts(prompts))
    found = [labeled[k] for k in keys if k in labeled]
    return found, len(keys) - len(found)


def difference(new: dict, old: dict) -> dict[str, float]:
    """new - old, in percentage points, for the headline metrics."""
    return {k: round((new[k] - old[k]) * 100, 2) for k in COMPARED if k in new and k in old}


def deploy_verdict(new: dict, deployed: dict, max_drop: float = 0.0,
                   metric: str = "skill_accuracy") -> tuple[bool, float, str]:
    """(passed, points lost, message): the new student may lose at most `max_drop` points on the fixed set."""
    drop = round((deployed[metric] - new[metric]) * 100, 2) + 0.0  # + 0.0: no "-0.0"
    passed = drop <= max_drop
    verdict = "not worse than" if passed else "WORSE than"
    message = (f"new student {verdict} the deployed one on the fixed set: {metric} {new[metric]:.3f} vs "
               f"{deployed[metric]:.3f} ({0.0 - drop:+.1f} points, at most {max_drop:.1f} may be lost)")
    return passed, drop, message


def leaked(student_dir: Path, records: list[dict]) -> int:
    """Fixed-set records the student was trained or early-stopped on (0 when --holdout kept them out)."""
    from .datasets import normalize_text

    seen = set()
    for split in ("train", "valid"):
        if (student_dir / f"{split}.jsonl").is_file():
            seen |= {normalize_text(r["text"]) for r in read_jsonl(student_dir / f"{split}.jsonl", allow_empty=True)}
    return sum(normalize_text(r["text"]) in seen for r in records)


def compare_students(new: Path, deployed: Path, harvested: list[dict], max_drop: float = 0.0) -> dict:
    """Both students on the deployed reference's fixed set and on the harvested items; differences in points."""
    fixed = fixed_set_path(deployed)
    if not fixed.is_file():
        fail(deployed, "no fixed.jsonl or test.jsonl: not a student dir", "--compare")
    fixed_records = read_jsonl(fixed)
    results = {"new": fixed_set_metrics(new, fixed), "deployed": fixed_set_metrics(deployed, fixed)}
    passed, drop, message = deploy_verdict(results["new"], results["deployed"], max_drop)
    report = {
        "new": str(new), "deployed": str(deployed),
        "fixed": {"path": str(fixed), "n": len(fixed_records), "sha256": sha256_file(fixed),
                  "leaked_into_new_training": leaked(new, fixed_records), **results,
                  "difference_points": difference(results["new"], results["deployed"])},
        "verdict": {"passed": passed, "drop_points": drop, "max_drop_points": max_drop, "message": message},
    }
    if harvested:
        from .datasets import normalize_text

        train_split = new / "train.jsonl"
        trained = {normalize_text(r["text"]) for r in read_jsonl(train_split, allow_empty=True)
                   } if train_split.is_file() else set()
        both = {"new": evaluate_mlx(new, harvested), "deployed": evaluate_mlx(deployed, harvested)}
        report["harvested"] = {"n": len(harvested), "in_new_training": sum(normalize_text(r["text"]) in trained
                                                                           for r in harvested),
                               **both, "difference_points": difference(both["new"], both["deployed"])}
    return report


def compare_table(report: dict) -> str:
    lines = ["| set | n | metric | deployed | new | difference |", "|---|---|---|---|---|---|"]
    for name in ("fixed", "harvested"):
        part = report.get(name)
        for metric in COMPARED if part else ():
            lines.append(f"| {name} | {part['n']} | {metric} | {part['deployed'][metric]:.3f} | "
                         f"{part['new'][metric]:.3f} | {part['difference_points'][metric]:+.1f} pts |")
    return "\n".join(lines)


def run_compare(args: argparse.Namespace) -> None:
    if not (args.compare / "student.json").is_file():
        fail(args.compare, "not a student dir (no student.json); make deploy records the deployed one", "--compare")
    harvested, unlabeled = harvested_records(args.harvested, args.routes)
    report = compare_students(args.student, args.compare, harvested, args.max_drop)
    report["harvested_unlabeled"] = unlabeled
    out = args.out if args.out != DEFAULT_REPORT else DEFAULT_COMPARE_REPORT
    write_json(out, report)
    print(compare_table(report))
    if report["fixed"]["leaked_into_new_training"]:
        print(f"warning: {report['fixed']['leaked_into_new_training']} fixed-set records are in the new student's "
              "training data (train with --holdout <deployed>/fixed.jsonl)", file=sys.stderr)
    if unlabeled:
        print(f"note: {unlabeled} harvested prompts are not labeled yet (make collect)", file=sys.stderr)
    print(f"\n{report['verdict']['message']}\nreport: {out}")


def run_gate(args: argparse.Namespace) -> None:
    """The pre-deploy check: fail (exit 2) when the student is worse on the fixed set than the deployed one."""
    if not (args.gate_against / "student.json").is_file():
        print(f"no deployed student recorded in {args.gate_against}: nothing to compare with (first deploy)")
        return
    if not (args.student / "student.json").is_file():
        fail(args.student, "not a trained student (no student.json): cannot compare it with the deployed one",
             "--student")
    fixed = fixed_set_path(args.gate_against)
    if not fixed.is_file():
        fail(args.gate_against, "no fixed.jsonl or test.jsonl: not a deployed student record", "--gate-against")
    new, deployed = fixed_set_metrics(args.student, fixed), fixed_set_metrics(args.gate_against, fixed)
    passed, _, message = deploy_verdict(new, deployed, args.max_drop)
    if not passed:
        fail(args.student, f"{message}; make deploy FORCE=1 ships it anyway", "skill_accuracy")
    print(message)


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
    p.add_argument("--out", type=Path, default=DEFAULT_REPORT, help=f"report (default {DEFAULT_REPORT}; "
                   f"{DEFAULT_COMPARE_REPORT} with --compare)")
    p.add_argument("--compare", type=Path, metavar="DEPLOYED_DIR",
                   help="compare with this (deployed) student on its fixed held-out set plus the harvested items")
    p.add_argument("--gate-against", type=Path, metavar="DEPLOYED_DIR",
                   help="pre-deploy check: exit 2 when --student is worse on the fixed set than this student")
    p.add_argument("--max-drop", type=float, default=0.0, help="skill-accuracy points the new student may lose "
                   "on the fixed set (default 0)")
    p.add_argument("--harvested", type=Path, default=DEFAULT_HARVESTED, help="harvested prompts (with --compare)")
    p.add_argument("--routes", type=Path, default=DEFAULT_ROUTES, help="their teacher labels (with --compare)")
    return p


@cli
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    ensure_openblas()
    if args.gate_against:
        return run_gate(args)
    if not (args.student / "student.json").is_file():
        fail(args.student, "not a trained student (no student.json); run make train-router", "--student")
    if args.compare:
        return run_compare(args)
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


# ---- style --------------------------------------------------------------------------------------------

MAX_SENTENCES, MAX_WORDS = 2, 40  # the persona's rule (config/persona.md)


def complies_with_length(answer: str) -> bool:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s]
    return bool(answer.strip()) and len(sentences) <= MAX_SENTENCES and len(answer.split()) <= MAX_WORDS


def held_out_loss(model, tokenizer, chats: list[dict]) -> float:
    """Mean per-token loss on the assistant turns (prompt masked, as in training)."""
    from mlx_lm.tuner.datasets import CacheDataset
    from mlx_lm.tuner.trainer import evaluate

    from .train import build_datasets

    return evaluate(model, CacheDataset(build_datasets(tokenizer, chats)), batch_size=1, num_batches=-1)


def evaluate_style(student_dir: str | Path, records: list[dict], max_tokens: int = 80) -> dict:
    """Held-out loss/perplexity of the student vs its base, and how often its answers keep the length rule."""
    import mlx.core as mx
    from mlx_lm import generate, load

    from .datasets import style_chat

    spec = read_json(Path(student_dir) / "student.json")
    chats = [style_chat(r, spec["system_prompt"]) for r in records]
    results = {}
    for name, adapters in (("untrained base", None), ("mlx student", student_dir)):
        model, tokenizer = load(spec["base"], adapter_path=str(adapters) if adapters else None)
        if default_dtype() == "float32":
            model.set_dtype(mx.float32)
        loss = held_out_loss(model, tokenizer, chats)
        answers = []
        for chat in chats:
            prompt = tokenizer.apply_chat_template(chat["messages"][:-1], add_generation_prompt=True, tokenize=False)
            answers.append(generate(model, tokenizer, prompt, max_tokens=max_tokens))
        results[name] = {
            "n": len(records),
            "loss": loss,
            "perplexity": math.exp(loss),
            "length_compliance": sum(map(complies_with_length, answers)) / max(1, len(answers)),
            "examples": [{"prompt": r["prompt"], "answer": a} for r, a in list(zip(records, answers))[:5]],
        }
    return results


@cli
def style_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Evaluate the style student against its base on the held-out split.")
    p.add_argument("--student", type=Path, default=Path("models/style_student_mlx"))
    p.add_argument("--limit", type=int, help="evaluate the first N records only")
    p.add_argument("--out", type=Path, default=Path("reports/style_eval.json"))
    args = p.parse_args(argv)
    ensure_openblas()
    if not (args.student / "student.json").is_file():
        fail(args.student, "not a trained student (no student.json); run make train-style", "--student")
    results = evaluate_style(args.student, read_jsonl(args.student / "test.jsonl")[: args.limit])
    write_json(args.out, {"student": str(args.student), "results": results})
    print("| model | n | loss | perplexity | length rule kept |\n|---|---|---|---|---|")
    for name, m in results.items():
        print(f"| {name} | {m['n']} | {m['loss']:.3f} | {m['perplexity']:.2f} | {m['length_compliance']:.2f} |")
    print(f"\nreport: {args.out}")
