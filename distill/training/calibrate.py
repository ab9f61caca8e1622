"""Pick the router's confidence threshold on held-out records and store it with the student.

    python -m distill calibrate --student models/router_student_mlx --gguf gguf/router-student.gguf \
        [--calibration data/calibration_routes.jsonl] [--heldout bench/data/heldout_routes.jsonl] \
        [--method scaled|empirical] [--target 0.99] [--margin 1.0]

The student (the GGUF the robot runs) predicts every calibration record: `--calibration` files (`make calibrate`
passes data/calibration_routes.jsonl, the teacher's labels of prompts/router_calibration.txt), else the student's
validation split (<student>/valid.jsonl). Requests like the robot's traffic, not the validation split: its records
are whole phrasing families training never saw, up to five times as often wrong as requests people write (2-11%
of them against 1.7-2.5%), so a threshold picked there acted on 80-89% of requests where ~95% would have kept the
precision (docs/runtime.md, "Calibration requests"). A request the student trained on says nothing about its errors and is dropped (counted
in the report). A record is *covered* at threshold t when the prediction is a valid label with confidence
>= t (the confidence covers the skill and the argument values, distill.runtime.backends.label_confidence), and
*correct* when that label equals the gold label (skill and canonical args).

Method (`scaled`, the default; docs/runtime.md has the numbers behind it): fit q(c) = sigmoid(a logit(c) + b) to
the records (Platt/temperature scaling, maximum a-posteriori with a prior centred on q = c, so a handful of
records cannot bend it far), then take the lowest t at which the *expected* precision of what the router would
act on, the mean q over the covered records, less `--margin` standard errors of it (the fit's own uncertainty in
a and b, Laplace approximation and delta method), reaches the target: the threshold has to hold on requests
calibration never saw. The raw ratio (`empirical`, the old method)
puts the threshold just above the most confident error, so one record decides it: on the demo's 66 validation
records one args slip at 0.999 moved the threshold from 0.896 (92% coverage) to 0.999 (44%).

Writes the threshold into student.json (atomic rewrite; NEVER_ACT when the target is out of reach: everything
falls back), reports/calibration.json (the pick, the scaling, ECE before and after it, the reliability bins, the
empirical pick for comparison, bootstrap and leave-one-out stability, the curve, every prediction) and
reports/calibration.png (reliability diagram; precision and coverage against the threshold with the pick).
`--heldout` records, never trained or calibrated on, are predicted too and their precision and coverage at the
chosen threshold reported: the check of the goal (precision >= 99% at coverage >= 90%); they never move the pick.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import cli, fail
from ..fileio import read_jsonl, write_json
from ..prompting import normalize_text
from ..runtime.backends import LlamaCppBackend, RawPrediction
from ..runtime.router import DEFAULT_GGUF, DEFAULT_STUDENT, NEVER_ACT
from ..skills import Catalog, LabelError
from ..student import StudentSpec
from .datasets import split_texts

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


# ---- scaling: the model's confidence, corrected on the calibration records -----------------------------------

PRIOR_SD = 1.0  # prior on (slope - 1, bias): "the model's own probability is right" unless the data say otherwise
_EPS = 1e-6
# The router never acts below even odds, so the scaling is fitted, and the threshold sought, at or above them.
# Measured: two *correct* validation records at confidence ~1e-10 (logit -13.8) flattened a fit over every record
# to slope 0.17, and a student right on 97.1% of the hand-written held-out requests was told never to act;
# fitted from 0.5 up, the same records give slope 1.65 and a threshold (docs/runtime.md).
ACT_FLOOR = 0.5


# The threshold must hold on requests calibration never saw, so it is picked where the expected precision is one
# standard error (the scaling's own uncertainty) above the target, not on it. Measured on 7 students calibrated on
# the 501 calibration requests and checked on 238 held-out ones (docs/runtime.md): on the target itself three of
# them landed at 98.6-98.7% precision; one standard error above it, none of the six whose held-out errors a
# threshold can separate at all, for 1-3 points of coverage.
MARGIN_SE = 1.0


@dataclass(frozen=True)
class Scaling:
    """q(c) = sigmoid(slope * logit(c) + bias): temperature (1/slope) and bias (Platt scaling) of the confidence,
    with the posterior covariance of (slope, bias) (Laplace approximation at the fit; zero: no uncertainty)."""

    slope: float = 1.0
    bias: float = 0.0
    var_slope: float = 0.0
    cov: float = 0.0
    var_bias: float = 0.0

    def __call__(self, confidence: float) -> float:
        return _sigmoid(self.slope * _logit(confidence) + self.bias)


def fit_scaling(scores: list[tuple[float, bool]], prior_sd: float = PRIOR_SD, floor: float = ACT_FLOOR) -> Scaling:
    """Maximum a-posteriori Platt scaling (damped Newton's method, two parameters) with a Gaussian prior centred on
    the identity, fitted on the records with confidence >= `floor` (where a threshold can fall). The prior keeps a
    handful of records from bending the map far (one error at 0.999 moves the slope a little, it does not make
    every confidence worthless) and keeps the fit finite when the scores separate the right and wrong labels
    perfectly (then the maximum-likelihood slope is infinite)."""
    kept = [(c, ok) for c, ok in scores if c >= floor]
    xs = [_logit(c) for c, _ in kept]
    ys = [1.0 if ok else 0.0 for _, ok in kept]
    inv_var = 1 / prior_sd ** 2

    def objective(slope: float, bias: float) -> float:  # negative log posterior
        total = 0.5 * inv_var * ((slope - 1) ** 2 + bias ** 2)
        for x, y in zip(xs, ys):
            z = slope * x + bias
            total += _softplus(z) - y * z  # -log p(y | z)
        return total

    def derivatives(slope: float, bias: float) -> tuple[float, float, float, float, float]:
        g_s, g_b = (slope - 1) * inv_var, bias * inv_var  # gradient of the objective
        h_ss, h_sb, h_bb = inv_var, 0.0, inv_var  # and its Hessian
        for x, y in zip(xs, ys):
            p = _sigmoid(slope * x + bias)
            g_s += (p - y) * x
            g_b += p - y
            w = p * (1 - p)
            h_ss += w * x * x
            h_sb += w * x
            h_bb += w
        return g_s, g_b, h_ss, h_sb, h_bb

    slope, bias = 1.0, 0.0
    current = objective(slope, bias)
    for _ in range(100):
        g_s, g_b, h_ss, h_sb, h_bb = derivatives(slope, bias)
        det = h_ss * h_bb - h_sb * h_sb
        step_s, step_b = (h_bb * g_s - h_sb * g_b) / det, (h_ss * g_b - h_sb * g_s) / det
        scale = 1.0
        while scale > 1e-6:  # halve the step until the posterior improves (Newton can overshoot)
            trial = objective(slope - scale * step_s, bias - scale * step_b)
            if trial <= current:
                break
            scale /= 2
        slope, bias, current = slope - scale * step_s, bias - scale * step_b, trial
        if max(abs(scale * step_s), abs(scale * step_b)) < 1e-10:
            break
    _, _, h_ss, h_sb, h_bb = derivatives(slope, bias)
    det = h_ss * h_bb - h_sb * h_sb  # the posterior covariance is the inverse Hessian at the fit
    return Scaling(slope, bias, h_bb / det, -h_sb / det, h_ss / det)


def _logit(c: float) -> float:
    c = min(max(c, _EPS), 1 - _EPS)
    return math.log(c / (1 - c))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def _softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


@dataclass(frozen=True)
class ExpectedPoint:
    threshold: float
    expected: float  # expected precision: the mean scaled confidence of the covered records
    error: float  # its standard error from the scaling's uncertainty (delta method)
    coverage: float


def expected_points(scores: list[tuple[float, bool]], scaling: Scaling, total: int | None = None) -> list[ExpectedPoint]:
    """One point per distinct confidence, highest first: the precision the fitted model expects of what the router
    would act on there, and how sure the fit is of it (its gradient in (slope, bias) through their covariance)."""
    total = len(scores) if total is None else total
    ordered = sorted((c for c, _ in scores), reverse=True)
    out, acc, d_slope, d_bias = [], 0.0, 0.0, 0.0
    for i, c in enumerate(ordered):
        q = scaling(c)
        acc += q
        d_slope += q * (1 - q) * _logit(c)  # d q / d slope
        d_bias += q * (1 - q)  # d q / d bias
        if i + 1 < len(ordered) and ordered[i + 1] == c:
            continue
        n = i + 1
        g_s, g_b = d_slope / n, d_bias / n
        variance = g_s * g_s * scaling.var_slope + 2 * g_s * g_b * scaling.cov + g_b * g_b * scaling.var_bias
        out.append(ExpectedPoint(c, acc / n, math.sqrt(max(variance, 0.0)), n / total if total else 0.0))
    return out


def pick_scaled_threshold(scores: list[tuple[float, bool]], target: float = DEFAULT_TARGET, total: int | None = None,
                          scaling: Scaling | None = None, margin: float = MARGIN_SE) -> ThresholdPick:
    """The lowest threshold (>= ACT_FLOOR) whose expected precision, less `margin` standard errors, reaches
    `target`; precision and coverage of the pick are the empirical ones on `scores`."""
    total = len(scores) if total is None else total
    scaling = scaling or fit_scaling(scores)
    reaching = [p.threshold for p in expected_points(scores, scaling, total)
                if p.expected - margin * p.error >= target and p.threshold >= ACT_FLOOR]
    if not reaching:
        return ThresholdPick(NEVER_ACT, 1.0, 0.0, False, target, total)
    threshold = min(reaching)
    covered = [ok for c, ok in scores if c >= threshold]
    return ThresholdPick(threshold, sum(covered) / len(covered), len(covered) / total if total else 0.0, True,
                         target, total)


# ---- reliability ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bin:
    lo: float
    hi: float
    n: int
    confidence: float  # mean confidence in the bin
    accuracy: float  # fraction correct in the bin


def reliability(scores: list[tuple[float, bool]], bins: int = 10, scaling: Scaling | None = None) -> list[Bin]:
    """Equal-mass bins (each about len/bins records) of (mean confidence, accuracy). Equal-width bins would put
    nearly every record of a trained student into [0.9, 1]; equal mass shows where the records are."""
    ordered = sorted(((scaling(c) if scaling else c), ok) for c, ok in scores)
    out = []
    for k in range(bins):
        part = ordered[k * len(ordered) // bins:(k + 1) * len(ordered) // bins]
        if part:
            out.append(Bin(part[0][0], part[-1][0], len(part), sum(c for c, _ in part) / len(part),
                           sum(ok for _, ok in part) / len(part)))
    return out


def expected_calibration_error(scores: list[tuple[float, bool]], bins: int = 10,
                               scaling: Scaling | None = None) -> float:
    """ECE over equal-mass bins: sum over bins of (share of records) * |accuracy - mean confidence|."""
    total = len(scores)
    return sum(b.n / total * abs(b.accuracy - b.confidence) for b in reliability(scores, bins, scaling)) if total else 0.0


def stability(scores: list[tuple[float, bool]], total: int, target: float, rounds: int = 200,
              seed: int = 0, margin: float = MARGIN_SE) -> dict:
    """How much the pick moves when the calibration records change: bootstrap resamples (5th/50th/95th
    percentile of threshold and coverage) and the largest coverage change from leaving one record out."""
    import random

    rng = random.Random(seed)
    n_invalid = total - len(scores)
    thresholds, coverages = [], []
    for _ in range(rounds):
        sample = [scores[rng.randrange(len(scores))] for _ in scores] if scores else []
        invalid = sum(rng.random() < n_invalid / total for _ in range(n_invalid)) if total else 0
        pick = pick_scaled_threshold(sample, target, len(sample) + invalid, margin=margin)
        thresholds.append(pick.threshold)
        coverages.append(pick.coverage)
    base = pick_scaled_threshold(scores, target, total, margin=margin)
    loo = [abs(pick_scaled_threshold(scores[:i] + scores[i + 1:], target, total - 1, margin=margin).coverage
               - base.coverage) for i in range(len(scores))]

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    return {"bootstrap_rounds": rounds,
            "threshold_p5_p50_p95": [pct(thresholds, q) for q in (0.05, 0.5, 0.95)],
            "coverage_p5_p50_p95": [pct(coverages, q) for q in (0.05, 0.5, 0.95)],
            "leave_one_out_max_coverage_change": max(loo, default=0.0)}


def score(prediction: RawPrediction, gold: dict, catalog: Catalog) -> tuple[float, bool] | None:
    """(confidence, correct) for a prediction the router could act on; None when it never could."""
    if not prediction.valid:
        return None
    try:
        expected = catalog.validate({"skill": gold["skill"], "args": gold.get("args") or {}})
    except LabelError:
        return None  # a gold label the catalog no longer accepts says nothing about the student
    if not expressible(catalog, prediction.text, expected.to_dict()):
        return None  # x-copy: the request's own schema cannot say it ("laff" -> "laugh"), no student could
    return prediction.confidence, prediction.label.canonical() == expected.canonical()


def expressible(catalog: Catalog, text: str, label: dict) -> bool:
    """Whether the label schema for `text` (its x-copy args held to the request) allows `label`."""
    import jsonschema

    return jsonschema.Draft202012Validator(catalog.label_schema(text)).is_valid(label)


def plot_calibration(scores: list[tuple[float, bool]], points: list[CurvePoint], pick: ThresholdPick,
                     scaling: Scaling, path: Path, heldout: dict | None = None, margin: float = MARGIN_SE) -> None:
    """Left: reliability diagram (equal-mass bins, raw and scaled confidence). Right: precision and coverage
    against the threshold, the chosen point marked (and the held-out precision/coverage there, when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rel, cur) = plt.subplots(1, 2, figsize=(11, 4.4), dpi=110)
    rel.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    for label, scale, marker in (("raw confidence", None, "o"), ("scaled (used for the pick)", scaling, "s")):
        bins = reliability(scores, scaling=scale)
        if bins:
            rel.plot([b.confidence for b in bins], [b.accuracy for b in bins], marker=marker, markersize=4,
                     label=f"{label}: ECE {expected_calibration_error(scores, scaling=scale):.3f}")
    rel.set_xlabel("mean confidence in bin (10 equal-mass bins)")
    rel.set_ylabel("fraction correct (skill and args)")
    rel.set_xlim(0, 1.01)
    rel.set_ylim(0, 1.02)
    rel.set_title(f"Reliability ({len(scores)} scored records)")
    rel.legend(loc="upper left", fontsize=8)

    points = sorted(points, key=lambda p: p.threshold)  # a threshold in (c_i-1, c_i] acts like c_i: step "pre"
    xs = [p.threshold for p in points]
    if points:
        cur.step(xs, [p.precision for p in points], where="pre", label="precision (acted on)")
        cur.step(xs, [p.coverage for p in points], where="pre", label="coverage (routed by the student)")
        bound = sorted(expected_points(scores, scaling), key=lambda p: p.threshold)
        cur.step([p.threshold for p in bound], [p.expected - margin * p.error for p in bound], where="pre",
                 linestyle="--", linewidth=1, label=f"expected precision - {margin:g} s.e. (scaled)")
    cur.axhline(pick.target, color="grey", linestyle=":", label=f"target precision {pick.target:g}")
    if pick.reached:
        cur.axvline(pick.threshold, color="red", linestyle="--", linewidth=1)
        cur.plot([pick.threshold] * 2, [pick.precision, pick.coverage], "o", color="red",
                 label=f"pick {pick.threshold:.3f}: precision {pick.precision:.1%}, coverage {pick.coverage:.0%}")
        if heldout:
            cur.plot([pick.threshold] * 2, [heldout["precision"], heldout["coverage"]], "D", color="black",
                     label=f"held out (n={heldout['total']}): precision {heldout['precision']:.1%}, "
                           f"coverage {heldout['coverage']:.0%}")
    cur.set_xlabel("confidence threshold")
    cur.set_ylim(0, 1.02)
    cur.set_xlim(min(xs + [0.0]), 1.0)
    cur.set_title(f"Precision / coverage ({pick.total} calibration records)")
    cur.legend(loc="lower left", fontsize=8)
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
    parser.add_argument("--calibration", "--valid", dest="calibration", nargs="+", metavar="JSONL",
                        help="labelled requests to calibrate on, never trained on (make calibrate: "
                             "data/calibration_routes.jsonl; default: <student>/valid.jsonl, the validation split)")
    parser.add_argument("--heldout", help="records never trained or calibrated on: report precision and coverage "
                        "at the chosen threshold on them (the goal check; they do not move the pick)")
    parser.add_argument("--target", type=float, default=DEFAULT_TARGET, help="target precision")
    parser.add_argument("--method", choices=["scaled", "empirical"], default="scaled",
                        help="scaled: expected precision under Platt-scaled confidence (default); empirical: the raw "
                             "correct/covered ratio (one confident error moves the threshold above itself)")
    parser.add_argument("--margin", type=float, default=MARGIN_SE,
                        help="scaled: standard errors of the expected precision kept above the target (default "
                             f"{MARGIN_SE:g}; 0: the expected precision alone)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per prediction (evaluation, not runtime)")
    parser.add_argument("--report", default="reports/calibration.json")
    parser.add_argument("--plot", default="reports/calibration.png")
    args = parser.parse_args(argv)
    if not 0 < args.target <= 1:
        parser.error("--target must be in (0, 1]")
    if not (math.isfinite(args.margin) and args.margin >= 0):
        parser.error("--margin must be a number >= 0")
    return args


def load_records(path: Path) -> list[dict]:
    records = read_jsonl(path)
    for i, record in enumerate(records, 1):
        if not isinstance(record.get("text"), str) or not isinstance(record.get("skill"), str):
            fail(f"{path}:{i}", "needs string fields text and skill")
    return records


def drop_trained(records: list[dict], student_dir: Path) -> tuple[list[dict], int]:
    """`records` without the requests the student trained on (its train.jsonl, normalized text), and how many went:
    a request seen in training is answered from memory and would vouch for a lower threshold than the robot's
    traffic allows."""
    trained = split_texts(student_dir)
    kept = [r for r in records if normalize_text(r["text"]) not in trained]
    return kept, len(records) - len(kept)


def predict_scores(backend: LlamaCppBackend, records: list[dict], desc: str,
                   rows: list[dict] | None = None) -> list[tuple[float, bool]]:
    """(confidence, correct) of every record whose prediction the router could act on; `rows` gets one entry per
    record (text, both confidences, correct: null when the prediction was not a usable label) for the report.
    As many contexts as the cores hold decode side by side (LlamaCppBackend.predict_all)."""
    with tqdm(total=len(records), desc=desc, unit="text", file=sys.stderr) as bar:
        predictions = backend.predict_all([r["text"] for r in records], bar.update)
    scores = []
    for record, prediction in zip(records, predictions):
        scored = score(prediction, record, backend.catalog)
        if scored is not None:
            scores.append(scored)
        if rows is not None:
            rows.append({"text": record["text"], "confidence": prediction.confidence,
                         "skill_confidence": prediction.skill_confidence,
                         "correct": None if scored is None else scored[1],
                         "skill_correct": prediction.skill == record["skill"] if prediction.valid else None,
                         "output": prediction.output.strip()})
    return scores


def at_threshold(scores: list[tuple[float, bool]], total: int, threshold: float) -> dict:
    """Precision and coverage of acting iff confidence >= threshold (precision 1.0 when nothing is covered)."""
    covered = [ok for c, ok in scores if c >= threshold]
    return {"total": total, "covered": len(covered), "correct": sum(covered),
            "precision": sum(covered) / len(covered) if covered else 1.0,
            "coverage": len(covered) / total if total else 0.0}


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    student_dir = StudentSpec.load(args.student).dir
    paths = [Path(p) for p in args.calibration] if args.calibration else [student_dir / "valid.jsonl"]
    records, dropped = drop_trained([record for path in paths for record in load_records(path)], student_dir)
    if dropped:
        print(f"{dropped} calibration requests are in the student's training data: left out", file=sys.stderr)
    if not records:
        fail(paths[0], "no calibration records the student did not train on", "--calibration")
    heldout_records = load_records(Path(args.heldout)) if args.heldout else []
    backend = LlamaCppBackend.from_student(args.student, args.gguf, timeout_s=args.timeout)
    if not args.calibration:  # said once the model loads: a bad GGUF stays one error line
        print("calibrating on the validation split: phrasings training never saw, harder than what the robot hears, "
              "so the threshold comes out high; make collect labels prompts/router_calibration.txt into "
              "data/calibration_routes.jsonl for make calibrate (docs/runtime.md, Calibration requests)",
              file=sys.stderr)
    rows: dict[str, list[dict]] = {"calibration": [], "heldout": []}
    scores = predict_scores(backend, records, "calibrating", rows["calibration"])
    total = len(records)
    scaling = fit_scaling(scores)
    points = precision_coverage_curve(scores, total)
    empirical = pick_threshold(scores, args.target, total)
    pick = (pick_scaled_threshold(scores, args.target, total, scaling, args.margin) if args.method == "scaled"
            else empirical)
    heldout = None
    if heldout_records:
        heldout_scores = predict_scores(backend, heldout_records, "held-out check", rows["heldout"])
        heldout = {"path": str(args.heldout), **at_threshold(heldout_scores, len(heldout_records), pick.threshold),
                   "ece": expected_calibration_error(heldout_scores)}
    store_threshold(args.student, pick.threshold)
    write_json(args.report, {
        "student": str(student_dir), "gguf": str(args.gguf), "calibration": [str(p) for p in paths],
        "dropped_trained": dropped,
        "model": backend.model_version, "method": args.method, "margin_se": args.margin, **asdict(pick),
        "expected_at_pick": next((asdict(p) for p in expected_points(scores, scaling, total)
                                  if p.threshold == pick.threshold), None),
        "scaling": asdict(scaling),
        "ece": {"raw": expected_calibration_error(scores), "scaled": expected_calibration_error(scores, scaling=scaling)},
        "reliability": {"raw": [asdict(b) for b in reliability(scores)],
                        "scaled": [asdict(b) for b in reliability(scores, scaling=scaling)]},
        "empirical": asdict(empirical), "stability": stability(scores, total, args.target, margin=args.margin),
        "heldout": heldout, "curve": [asdict(p) for p in points], "predictions": rows})
    plot_calibration(scores, points, pick, scaling, Path(args.plot), heldout, args.margin)
    if pick.reached:
        print(f"threshold {pick.threshold:.4f} ({args.method}): precision {pick.precision:.3f}, coverage "
              f"{pick.coverage:.1%} of {pick.total} calibration records -> {student_dir / 'student.json'}")
    else:
        print(f"warning: no threshold reaches precision {args.target:g} on {pick.total} records; stored "
              f"{NEVER_ACT} (the student never acts, everything falls back)", file=sys.stderr)
    if heldout:
        print(f"held out ({heldout['total']} records, never trained or calibrated on): precision "
              f"{heldout['precision']:.3f}, coverage {heldout['coverage']:.1%}")


if __name__ == "__main__":
    main()
