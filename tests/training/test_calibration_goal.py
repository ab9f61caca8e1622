"""Issue 16's goal, end to end, with a fixed seed: a router student trained on the small real-looking set (the
439 seed prompts, tools/calibration_seeds.py's `@seeds`), exported to Q4_K_M and calibrated on the calibration
requests as `make calibrate` does, is >= 99% precise while acting on >= 90% of 238 hand-written requests it
never trained or calibrated on (bench/data/heldout_routes.jsonl).

Seed 2 of docs/runtime.md's table: 99.1% precision at 95.8% coverage when measured (threshold 0.588; 99.6% at
93.7% before a string value's spellings counted as one value). The other seeds and `make demo`'s student are in
the table (all at >= 99% / >= 90%, with margins of a few requests); this one is trained in CI and fails when a
change to training, export, decoding, the confidence or the threshold rule costs it. ~12 minutes on 2 cores
(200 training iterations, most of it)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow

SEED = 2
TRAIN_ARGS = "--epochs 2 --lr 2e-4 --batch 8 --iters 200"  # the table's students


def test_the_calibrated_student_meets_the_goal_on_requests_it_never_saw(cli, base_model_dir, tmp_path):
    result = cli(sys.executable, ROOT / "tools" / "calibration_seeds.py", "--data", "seeds=@seeds", "--seeds", str(SEED),
                 "--work", tmp_path, "--base", base_model_dir, "--train-args", TRAIN_ARGS, timeout=3600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [row] = json.loads(result.stdout.strip().splitlines()[-1])
    report = json.loads((tmp_path / "seeds" / f"seed{SEED}" / "calibration.json").read_text())
    # calibrated on the calibration requests (none of them trained on), not on the validation split
    assert report["calibration"] == [str(tmp_path / "calibration_routes.jsonl")] and report["dropped_trained"] == 0
    assert report["total"] >= 500 and report["margin_se"] == 1.0
    held_out = row["heldout"]
    assert held_out["total"] == 238
    assert held_out["precision"] >= 0.99 and held_out["coverage"] >= 0.90, row
