"""Pick the router's confidence threshold on the validation split and store it with the student.

    python -m distill calibrate --student models/router_student_mlx --gguf gguf/router-student.gguf

The student routes every record of <student>/valid.jsonl (threshold 0). A record is *covered* at threshold t
when the prediction is a valid label with confidence >= t, and *correct* when that label equals the gold label
(skill and canonical args). We pick the t with the most coverage whose precision (correct / covered) reaches
the target (default 0.99), store it as `threshold` in student.json (atomic rewrite), and write
reports/calibration.json plus reports/calibration.png (precision and coverage against the threshold).
If no threshold reaches the target, the stored threshold is NEVER_ACT: everything falls back.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import cli, fail
from ..fileio import read_jsonl, write_json
from ..runtime.backends import LlamaCppBackend, RawPrediction
from ..runtime.router import DEFAULT_GGUF, DEFAULT_STUDENT, NEVER_ACT
from ..skills import Catalog, LabelError
from ..student import StudentSpec

DEFAULT_TARGET = 0.99


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    covered: int
    correct: int
    precision: float
    coverage: float


@dataclass(frozen=True)
class ThresholdPick:
    threshold: float  # NEVER_ACT when the target is not reachable
    precision: float  # on the covered records (1.0 when nothing is covered)
    coverage: float  # covered / total
    reached: bool
    target: float
    total: int


def precision_coverage_curve(scores: list[tuple[float, bool]], total: int | None = None) -> list[CurvePoint]:
    """One point per distinct confidence c (acting iff confidence >= c), highest threshold first.

    `scores` = (confidence, correct) for the predictions the router could act on; `total` counts every record
    (default len(scores)), so records with an invalid prediction lower the coverage but never the precision.
    """
    total = len(scores) if total is None else total
    if total < len(scores):
        raise ValueError("total must count every scored record")
    points: list[CurvePoint] = []
    covered = correct = 0
    ordered = sorted(scores, key=lambda s: -s[0])
    for i, (confidence, ok) in enumerate(ordered):
        covered += 1
        correct += bool(ok)
        if i + 1 < len(ordered) and ordered[i + 1][0] == confidence:
            continue  # ties act together
        points.append(CurvePoint(confidence, covered, correct, correct / covered, covered / total if total else 0.0))
    return points


def pick_threshold(scores: list[tuple[float, bool]], target: float = DEFAULT_TARGET,
                   total: int | None = None) -> ThresholdPick:
    """The threshold with the most coverage whose precision reaches `target` (pure; unit-tested)."""
    total = len(scores) if total is None else total
    reaching = [p for p in precision_coverage_curve(scores, total) if p.precision >= target]
    if not reaching:
        return ThresholdPick(NEVER_ACT, 1.0, 0.0, False, target, total)
    best = max(reaching, key=lambda p: (p.coverage, p.threshold))
    return ThresholdPick(best.threshold, best.precision, best.coverage, True, target, total)


def score(prediction: RawPrediction, gold: dict, catalog: Catalog) -> tuple[float, bool] | None:
    """(confidence, correct) for a prediction the router could act on; None when it never could."""
    if not prediction.valid:
        return None
    try:
        expected = catalog.validate({"skill": gold["skill"], "args": gold.get("args") or {}})
    except LabelError:
        return None  # a gold label the catalog no longer accepts says nothing about the student
    return prediction.confidence, prediction.label.canonical() == expected.canonical()


def plot_curve(points: list[CurvePoint], pick: ThresholdPick, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    points = sorted(points, key=lambda p: p.threshold)  # a threshold in (c_i-1, c_i] acts like c_i: step "pre"
    xs = [p.threshold for p in points]
    ax.step(xs, [p.precision for p in points], where="pre", label="precision (acted on)")
    ax.step(xs, [p.coverage for p in points], where="pre", label="coverage (routed by the student)")
    ax.axhline(pick.target, color="grey", linestyle=":", label=f"target precision {pick.target:g}")
    if pick.reached:
        ax.axvline(pick.threshold, color="red", linestyle="--",
                   label=f"threshold {pick.threshold:.3f}: coverage {pick.coverage:.0%}")
    ax.set_xlabel("confidence threshold")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(min(xs + [0.0]), 1.0)
    ax.set_title(f"Router calibration ({pick.total} validation records)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def store_threshold(student: str | Path, threshold: float) -> Path:
    """Rewrite student.json with the new threshold (atomic: temp file + rename)."""
    return StudentSpec.load(student).update(threshold=threshold)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m distill calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default=str(DEFAULT_STUDENT), help="student dir (holds student.json, valid.jsonl)")
    parser.add_argument("--gguf", default=str(DEFAULT_GGUF), help="the exported GGUF to calibrate")
    parser.add_argument("--valid", help="validation records (default: <student>/valid.jsonl)")
    parser.add_argument("--target", type=float, default=DEFAULT_TARGET, help="target precision")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per prediction (evaluation, not runtime)")
    parser.add_argument("--report", default="reports/calibration.json")
    parser.add_argument("--plot", default="reports/calibration.png")
    args = parser.parse_args(argv)
    if not 0 < args.target <= 1:
        parser.error("--target must be in (0, 1]")
    return args


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    student_dir = StudentSpec.load(args.student).dir
    valid_path = Path(args.valid) if args.valid else student_dir / "valid.jsonl"
    records = read_jsonl(valid_path)
    for i, record in enumerate(records, 1):
        if not isinstance(record.get("text"), str) or not isinstance(record.get("skill"), str):
            fail(f"{valid_path}:{i}", "needs string fields text and skill")
    backend = LlamaCppBackend.from_student(args.student, args.gguf, timeout_s=args.timeout)
    scores = []
    for record in tqdm(records, desc="calibrating", unit="text", file=sys.stderr):
        scored = score(backend.predict(record["text"]), record, backend.catalog)
        if scored is not None:
            scores.append(scored)
    points = precision_coverage_curve(scores, len(records))
    pick = pick_threshold(scores, args.target, len(records))
    store_threshold(args.student, pick.threshold)
    write_json(args.report, {"student": str(student_dir), "gguf": str(args.gguf), "valid": str(valid_path),
                             "model": backend.model_version, **asdict(pick),
                             "curve": [asdict(p) for p in points]})
    plot_curve(points, pick, Path(args.plot))
    if pick.reached:
        print(f"threshold {pick.threshold:.4f}: precision {pick.precision:.3f}, coverage {pick.coverage:.1%} "
              f"of {pick.total} validation records -> {student_dir / 'student.json'}")
    else:
        print(f"warning: no threshold reaches precision {args.target:g} on {pick.total} records; stored "
              f"{NEVER_ACT} (the student never acts, everything falls back)", file=sys.stderr)


if __name__ == "__main__":
    main()
