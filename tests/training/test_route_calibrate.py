"""Threshold calibration on synthetic scores (pure functions), and the atomic student.json update."""

from __future__ import annotations

import json
import math
import random

import pytest

from distill.training.calibrate import pick_threshold, precision_coverage_curve, store_threshold
from distill.runtime.router import NEVER_ACT


def test_picks_the_lowest_threshold_that_keeps_the_target_precision():
    # 10 confident right answers, one wrong at 0.6, right ones below it, one more wrong at 0.3.
    scores = [(0.99 - i * 0.02, True) for i in range(10)] + [(0.6, False), (0.55, True), (0.5, True), (0.3, False)]
    pick = pick_threshold(scores, target=0.99, total=20)
    assert pick.reached and pick.threshold == pytest.approx(0.81)  # the last confidence above the first error
    assert (pick.precision, pick.coverage, pick.total) == (1.0, 10 / 20, 20)
    # A looser target admits the first error and everything down to the second one.
    loose = pick_threshold(scores, target=0.9)
    assert loose.threshold == 0.5
    assert (loose.precision, loose.coverage) == (pytest.approx(12 / 13), pytest.approx(13 / 14))


def test_ties_act_together():
    scores = [(0.9, True), (0.8, True), (0.8, False), (0.8, True), (0.7, True)]
    points = precision_coverage_curve(scores)
    assert [(p.threshold, p.covered, p.correct) for p in points] == [(0.9, 1, 1), (0.8, 4, 3), (0.7, 5, 4)]
    assert pick_threshold(scores, target=0.99).threshold == 0.9  # 0.8 would act on the wrong one too


def test_unreachable_target_never_acts():
    pick = pick_threshold([(0.9, False), (0.5, True)], target=0.99)
    assert (pick.reached, pick.threshold, pick.coverage) == (False, NEVER_ACT, 0.0)
    assert pick_threshold([], target=0.99, total=5).threshold == NEVER_ACT


def test_matches_brute_force_on_random_scores():
    rng = random.Random(7)
    for _ in range(50):
        scores = [(round(rng.random(), 2), rng.random() < 0.85) for _ in range(rng.randint(1, 40))]
        total = len(scores) + rng.randint(0, 5)
        pick = pick_threshold(scores, target=0.9, total=total)
        best = None
        for t in sorted({c for c, _ in scores}):
            acted = [ok for c, ok in scores if c >= t]
            precision = sum(acted) / len(acted)
            if precision >= 0.9 and (best is None or len(acted) > best[1]):
                best = (t, len(acted))
        if best is None:
            assert not pick.reached
        else:
            assert (pick.threshold, pick.coverage) == (best[0], pytest.approx(best[1] / total))


def test_store_threshold_rewrites_student_json_atomically(tmp_path):
    student = tmp_path / "s"
    student.mkdir()
    (student / "student.json").write_text(json.dumps({"name": "router_student", "system_prompt": "route", "threshold": None, "stop": ["x"]}))
    store_threshold(student, 0.8125)
    spec = json.loads((student / "student.json").read_text())
    assert (spec["name"], spec["system_prompt"], spec["threshold"], spec["stop"]) == ("router_student", "route", 0.8125, ["x"])
    assert sorted(p.name for p in student.iterdir()) == ["student.json"]  # no temp file left behind


# ---- the scaled method (issue 16) ---------------------------------------------------------------------------------

from distill.training.calibrate import (MARGIN_SE, Scaling, expected_calibration_error,  # noqa: E402
                                        expected_points, fit_scaling,
                                        pick_scaled_threshold, reliability, stability)


def synthetic(n: int, error_rate: float, seed: int) -> list[tuple[float, bool]]:
    """Right labels mostly near 1, wrong ones spread over (0.2, 0.97): a trained student's shape."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ok = rng.random() > error_rate
        out.append((1 - rng.betavariate(0.6, 30) if ok else rng.uniform(0.2, 0.97), ok))
    return out


def test_scaling_is_the_identity_on_a_calibrated_score():
    rng = random.Random(3)
    scores = [(c, rng.random() < c) for c in (rng.uniform(0.05, 0.95) for _ in range(4000))]
    scaling = fit_scaling(scores)
    assert scaling.slope == pytest.approx(1.0, abs=0.1) and scaling.bias == pytest.approx(0.0, abs=0.1)
    assert expected_calibration_error(scores) < 0.03


def test_scaling_stays_finite_when_scores_separate_perfectly_and_bends_overconfidence():
    separated = [(0.99, True)] * 50 + [(0.3, False)] * 5
    scaling = fit_scaling(separated)
    assert 1.0 < scaling.slope < 10 and abs(scaling.bias) < 10  # the prior keeps it finite
    overconfident = [(0.99, i % 10 != 0) for i in range(200)]  # says 99%, is right 90% of the time
    assert fit_scaling(overconfident)(0.99) == pytest.approx(0.9, abs=0.02)


def test_the_scaled_pick_reaches_the_target_in_expectation_and_is_monotone():
    scores = synthetic(300, 0.04, seed=1)
    scaling = fit_scaling(scores)
    curve = [(p.threshold, p.expected, p.coverage) for p in expected_points(scores, scaling)]
    expected = [e for _, e, _ in curve]
    assert all(a >= b - 1e-12 for a, b in zip(expected, expected[1:]))  # acting on more never raises it
    pick = pick_scaled_threshold(scores, 0.99, scaling=scaling, margin=0)
    assert pick.reached and pick.threshold == min(t for t, e, _ in curve if e >= 0.99)
    covered = [ok for c, ok in scores if c >= pick.threshold]
    assert (pick.coverage, pick.precision) == (len(covered) / 300, sum(covered) / len(covered))
    assert not pick_scaled_threshold([(0.5, True), (0.4, False)], 0.99).reached


def test_the_default_pick_keeps_one_standard_error_above_the_target():
    scores = synthetic(300, 0.04, seed=1)
    scaling = fit_scaling(scores)
    on_target = pick_scaled_threshold(scores, 0.99, scaling=scaling, margin=0)
    pick = pick_scaled_threshold(scores, 0.99, scaling=scaling)
    assert MARGIN_SE == 1.0 and pick.threshold > on_target.threshold and pick.coverage < on_target.coverage
    points = expected_points(scores, scaling)
    at_pick = next(p for p in points if p.threshold == pick.threshold)
    assert at_pick.expected - at_pick.error >= 0.99 and at_pick.error > 0
    below = [p for p in points if p.threshold < pick.threshold and p.threshold >= 0.5]
    assert all(p.expected - p.error < 0.99 for p in below[:1])  # the next lower threshold would not hold it
    certain = Scaling(scaling.slope, scaling.bias)  # no uncertainty: the margin is nothing
    assert pick_scaled_threshold(scores, 0.99, scaling=certain) == on_target
    # more records, less uncertainty: the margin costs less coverage
    many = synthetic(3000, 0.04, seed=1)
    cost = lambda xs: (pick_scaled_threshold(xs, 0.99, margin=0).coverage - pick_scaled_threshold(xs, 0.99).coverage)
    assert cost(many) < cost(scores)


def test_the_scalings_covariance_is_the_inverse_hessian_of_the_posterior():
    """Checked against finite differences of the negative log posterior the fit minimizes."""
    scores = synthetic(400, 0.05, seed=3)
    scaling = fit_scaling(scores)
    kept = [(c, ok) for c, ok in scores if c >= 0.5]

    def objective(a: float, b: float) -> float:
        total = 0.5 * ((a - 1) ** 2 + b ** 2)  # PRIOR_SD = 1
        for c, ok in kept:
            z = a * math.log(min(max(c, 1e-6), 1 - 1e-6) / (1 - min(max(c, 1e-6), 1 - 1e-6))) + b
            total += max(z, 0) + math.log1p(math.exp(-abs(z))) - (z if ok else 0)
        return total

    a, b, h = scaling.slope, scaling.bias, 1e-4
    f = objective
    h_aa = (f(a + h, b) - 2 * f(a, b) + f(a - h, b)) / h ** 2
    h_bb = (f(a, b + h) - 2 * f(a, b) + f(a, b - h)) / h ** 2
    h_ab = (f(a + h, b + h) - f(a + h, b - h) - f(a - h, b + h) + f(a - h, b - h)) / (4 * h ** 2)
    det = h_aa * h_bb - h_ab ** 2
    assert scaling.var_slope == pytest.approx(h_bb / det, rel=1e-3)
    assert scaling.var_bias == pytest.approx(h_aa / det, rel=1e-3)
    assert scaling.cov == pytest.approx(-h_ab / det, rel=1e-3)


def test_one_confident_error_does_not_flip_the_pick_on_enough_records():
    """The issue's failure: one args slip at 0.999 among the calibration records. On as many records as the
    calibration requests (~500) the pick loses a few points of coverage (measured 3-7 with the margin, 1-4
    without); on the demo's 66 validation records the raw ratio dropped from 92% to 44%. On 200 the margin
    makes it costly (18-22 points): the fit is unsure, and says so."""
    for seed in range(3):
        scores = synthetic(500, 0.04, seed)
        before = pick_scaled_threshold(scores, 0.99)
        after = pick_scaled_threshold(scores + [(0.999, False)], 0.99)
        assert before.coverage - after.coverage < 0.08, (seed, before, after)
        assert stability(scores, 500, 0.99, rounds=20)["leave_one_out_max_coverage_change"] < 0.03


def test_reliability_bins_and_ece_by_hand():
    scores = [(0.9, True), (0.9, False), (0.5, True), (0.5, True)]
    bins = reliability(scores, bins=2)
    assert [(b.n, b.confidence, b.accuracy) for b in bins] == [(2, 0.5, 1.0), (2, 0.9, 0.5)]
    assert expected_calibration_error(scores, bins=2) == pytest.approx(0.5 * 0.5 + 0.5 * 0.4)
    assert Scaling()(0.7) == pytest.approx(0.7)


def test_correct_records_far_below_even_odds_do_not_flatten_the_fit():
    """Measured on a 200-iteration student: two right labels at confidence ~1e-10 (logit -13.8, clipped) bent a fit
    over every record to slope 0.17 and the student was told never to act. The router never acts below 0.5, so
    the fit and the pick look only at or above it."""
    scores = [(0.999, True)] * 60 + [(0.97, True)] * 10 + [(0.9, False)] + [(0.6, True)] * 3
    clean = pick_scaled_threshold(scores, 0.99)
    with_far = scores + [(1e-10, True), (3e-10, True)]
    scaling = fit_scaling(with_far)
    assert scaling.slope > 0.8, scaling
    assert fit_scaling(with_far, floor=0.0).slope < 0.5  # what the fit over every record did
    pick = pick_scaled_threshold(with_far, 0.99)
    assert pick.reached and pick.threshold == clean.threshold >= 0.5
    assert not pick_scaled_threshold([(0.3, True)] * 50, 0.9).reached  # never a threshold below even odds
