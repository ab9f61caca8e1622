"""Evaluate a router (MLX student, GGUF file, or the untrained base) on held-out routes, and the gates.

    python train/eval_router.py --student models/router_student_mlx [--gguf gguf/router-student.gguf]
    python train/eval_router.py --student models/router_student_mlx --compare models/router_student_mlx.deployed
    python train/eval_router.py --student models/router_student_mlx --gate-against models/router_student_mlx.deployed

Every backend yields `distill.runtime.backends.RawPrediction`s, so the MLX student (distill.training.mlx_decode),
the f16/Q4 GGUFs (distill.runtime.backends.LlamaCppBackend) and the baseline are scored by one function, with
greedy, grammar-constrained decoding. One rule compares two models on one set (`regression_verdict`): the export
gate (Q4 against the MLX student) and the deploy gate (the new student against the deployed one) both use it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

from ..blas import ensure_openblas
from ..errors import cli, fail
from ..fileio import atomic_writer, read_json, read_jsonl, read_prompts, sha256_file, write_json
from ..prompting import normalize_text, teacher_route_prompt
from ..skills import normalize_args
from ..student import StudentSpec, is_student
from .datasets import split_texts
from .mlx_decode import MlxBackend

DEFAULT_REPORT = Path("reports/router_eval.json")
DEFAULT_COMPARE_REPORT = Path("reports/compare.json")
DEFAULT_HARVESTED = Path("prompts/harvested.txt")
DEFAULT_ROUTES = Path("data/routes.jsonl")


# ---- metrics ------------------------------------------------------------------------------------------

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


def prediction_rows(records: list[dict], predictions: list) -> list[dict]:
    """Per record: its text, the teacher's label, the student's (None when not a valid label) and the student's
    confidence. The report keeps them so the review page can show the held-out errors and which records the
    student disagrees with (make review)."""
    return [{"id": r.get("id"), "text": r["text"], "gold": {"skill": r["skill"], "args": r.get("args") or {}},
             "predicted": p.label.to_dict() if p.valid else None, "confidence": round(p.confidence, 4),
             "error": None if p.valid else (p.error or p.label_error)} for r, p in zip(records, predictions)]


def evaluate_mlx(student_dir: str | Path, records: list[dict]) -> dict:
    metrics, _ = evaluate_backend(MlxBackend.from_student(student_dir), records, desc="mlx student")
    return metrics


def evaluate_gguf(gguf: str | Path, student_dir: str | Path, records: list[dict]) -> dict:
    """The GGUF's metrics on `records`, decoded by as many llama.cpp contexts as the cores hold (predict_many)."""
    from tqdm import tqdm

    # llama-cpp-python: only when a GGUF is evaluated
    from ..runtime.backends import LlamaCppBackend

    backend = LlamaCppBackend.from_student(student_dir, gguf)
    with tqdm(total=len(records), desc=Path(gguf).name, leave=False, file=sys.stderr) as bar:
        predictions = backend.predict_all([r["text"] for r in records], bar.update)
    return {**score_predictions(predictions, records, backend.catalog.names), "size_bytes": Path(gguf).stat().st_size}


def evaluate_baseline(student_dir: str | Path, records: list[dict]) -> dict:
    spec = StudentSpec.load(student_dir)
    catalog = spec.load_catalog()
    backend = MlxBackend.load(spec.base, catalog, teacher_route_prompt(catalog))  # the teacher's help, for fairness
    metrics, _ = evaluate_backend(backend, records, desc="untrained base")
    return metrics


# ---- round over round: the new student against the deployed one ------------------------------------------
# The fixed set is the held-out split of the first student that was deployed: distill.deployed carries it
# forward as <deployed>/fixed.jsonl, and `make train-router` keeps it out of training (--holdout), so every
# round is measured on the same records (docs/loop.md).

FIXED_CACHE = "fixed_eval.json"
SPLIT_CACHE = "split_eval.json"  # the student's own test (or valid) split: eval-router writes it, the gate reads it
COMPARED = ("skill_accuracy", "args_exact", "valid_label_rate")


def fixed_set_path(deployed: str | Path) -> Path:
    """The deployed reference's fixed held-out set: fixed.jsonl (carried across rounds), else its test split."""
    deployed = Path(deployed)
    return deployed / "fixed.jsonl" if (deployed / "fixed.jsonl").is_file() else deployed / "test.jsonl"


def fixed_set_metrics(student_dir: str | Path, fixed: Path) -> dict:
    """The MLX student's metrics on `fixed`, cached in <student>/fixed_eval.json (eval-router computes them, the
    deploy gate and distill.deployed reuse them)."""
    return cached_mlx_metrics(student_dir, fixed, FIXED_CACHE)


def cached_mlx_metrics(student_dir: str | Path, records_path: Path, cache_name: str,
                       metrics: dict | None = None) -> dict:
    """The MLX student's metrics on `records_path`, cached in <student>/<cache_name> under the adapters' and the
    records' sha256: read when the key matches, else computed (or `metrics`, already computed) and stored. Why:
    `make eval-router` and `make gguf`'s quality gate score the same student on the same split, ~1 s a record on
    2 cores; the gate reuses eval-router's numbers (~45 s of `make demo`)."""
    student_dir = Path(student_dir)
    if not (student_dir / "adapters.safetensors").is_file():  # nothing to key a cache on
        return metrics if metrics is not None else evaluate_mlx(student_dir, read_jsonl(records_path))
    key = {"adapters_sha256": sha256_file(student_dir / "adapters.safetensors"),
           "fixed_sha256": sha256_file(records_path)}
    cache = student_dir / cache_name
    if metrics is None and cache.is_file():
        cached = read_json(cache)
        if isinstance(cached, dict) and isinstance(cached.get("metrics"), dict) and all(
                cached.get(k) == v for k, v in key.items()):
            return cached["metrics"]
    if metrics is None:
        metrics = evaluate_mlx(student_dir, read_jsonl(records_path))
    write_json(cache, {**key, "fixed_set": str(records_path), "metrics": metrics})
    return metrics


def harvested_records(prompts: Path, routes: Path) -> tuple[list[dict], int]:
    """The teacher's labels for the harvested prompts (records of `routes`), and how many are not labeled yet."""
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


def regression_verdict(reference: dict, candidate: dict, max_drop: float, *, gate: str, names: tuple[str, str],
                       metric: str = "skill_accuracy") -> tuple[bool, float, str]:
    """(passed, points lost, message): `candidate` may lose at most `max_drop` points of `metric` against
    `reference` on the same records. `gate` and `names` = (reference, candidate) name them in the message.

    The export gate (Q4 GGUF vs MLX student, max 2 points) and the deploy gate (new student vs the deployed
    one on the fixed set, max 0 points) are this one rule.
    """
    for name, metrics in zip(names, (reference, candidate)):
        if not isinstance(metrics.get(metric), (int, float)):
            fail("gate", f"the {name} evaluation has no {metric}", metric)
    drop = round((reference[metric] - candidate[metric]) * 100, 2) + 0.0  # + 0.0: no "-0.0"
    passed = drop <= max_drop
    verdict = "passes" if passed else "FAILS"
    message = (f"{gate} {verdict}: {names[1]} {metric} {candidate[metric]:.3f} vs {names[0]} {reference[metric]:.3f} "
               f"({0.0 - drop:+.1f} points, at most {max_drop:.1f} may be lost)")
    return passed, drop, message


DEPLOY_GATE = {"gate": "deploy gate (fixed set)", "names": ("deployed student", "new student")}


def leaked(student_dir: Path, records: list[dict]) -> int:
    """Fixed-set records the student was trained or early-stopped on (0 when --holdout kept them out)."""
    seen = split_texts(student_dir, ("train", "valid"))
    return sum(normalize_text(r["text"]) in seen for r in records)


def compare_students(new: Path, deployed: Path, harvested: list[dict], max_drop: float = 0.0) -> dict:
    """Both students on the deployed reference's fixed set and on the harvested items; differences in points."""
    fixed = fixed_set_path(deployed)
    if not fixed.is_file():
        fail(deployed, "no fixed.jsonl or test.jsonl: not a student dir", "--compare")
    fixed_records = read_jsonl(fixed)
    results = {"new": fixed_set_metrics(new, fixed), "deployed": fixed_set_metrics(deployed, fixed)}
    passed, drop, message = regression_verdict(results["deployed"], results["new"], max_drop, **DEPLOY_GATE)
    report = {
        "new": str(new), "deployed": str(deployed),
        "fixed": {"path": str(fixed), "n": len(fixed_records), "sha256": sha256_file(fixed),
                  "leaked_into_new_training": leaked(new, fixed_records), **results,
                  "difference_points": difference(results["new"], results["deployed"])},
        "verdict": {"passed": passed, "drop_points": drop, "max_drop_points": max_drop, "message": message},
    }
    if harvested:
        trained = split_texts(new)
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
    if not is_student(args.compare):
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
    if not is_student(args.gate_against):
        print(f"no deployed student recorded in {args.gate_against}: nothing to compare with (first deploy)")
        return
    if not is_student(args.student):
        fail(args.student, "not a trained student (no student.json): cannot compare it with the deployed one",
             "--student")
    fixed = fixed_set_path(args.gate_against)
    if not fixed.is_file():
        fail(args.gate_against, "no fixed.jsonl or test.jsonl: not a deployed student record", "--gate-against")
    new, deployed = fixed_set_metrics(args.student, fixed), fixed_set_metrics(args.gate_against, fixed)
    passed, _, message = regression_verdict(deployed, new, args.max_drop, **DEPLOY_GATE)
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
    if not is_student(args.student):
        fail(args.student, "not a trained student (no student.json); run make train-router", "--student")
    if args.compare:
        return run_compare(args)
    records = read_jsonl(args.data or args.student / f"{args.split}.jsonl")[: args.limit]
    mlx_metrics, predictions = evaluate_backend(MlxBackend.from_student(args.student), records, desc="mlx student")
    if not args.data and args.limit is None:  # the whole split: the export gate may reuse these numbers
        cached_mlx_metrics(args.student, args.student / f"{args.split}.jsonl", SPLIT_CACHE, mlx_metrics)
    results = {"mlx student": mlx_metrics}
    for gguf in args.gguf:
        results[gguf.name] = evaluate_gguf(gguf, args.student, records)
    if not args.no_baseline:
        results["untrained base"] = evaluate_baseline(args.student, records)
    skills = StudentSpec.load(args.student).load_catalog().names
    report = {"student": str(args.student), "split": str(args.data or args.split), "results": results,
              "predictions": prediction_rows(records, predictions)}
    write_json(args.out, report)
    plot_confusion(results["mlx student"], skills, args.out.with_name("router_confusion.png"), f"{args.student.name} ({report['split']})")
    print(markdown_table(results))
    print(f"\nreport: {args.out}  confusion matrix: {args.out.with_name('router_confusion.png')}")


if __name__ == "__main__":
    main()
