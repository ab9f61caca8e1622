"""Threshold calibration on synthetic scores (pure functions), and the atomic student.json update."""

from __future__ import annotations

import json
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
