"""tools/calibration_seeds.py (the three-seed table in docs/runtime.md): its small real-looking data set and its
table, without training (the whole study takes ~10 minutes per student)."""

from __future__ import annotations

import importlib.util
import json

from distill.fileio import read_prompts
from distill.skills import load_catalog
from tests.support import ROOT


def load_tool():
    spec = importlib.util.spec_from_file_location("calibration_seeds", ROOT / "tools" / "calibration_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_routes_labels_every_seed_prompt_with_a_valid_label(tmp_path):
    tool = load_tool()
    out = tool.seed_routes(tmp_path / "routes.jsonl")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    prompts = read_prompts(ROOT / "prompts" / "router_seed.txt")
    assert [r["text"] for r in records] == list(prompts)
    catalog = load_catalog(ROOT / "config" / "skills.yaml")
    for record in records:
        catalog.validate({"skill": record["skill"], "args": record["args"]})
    assert len({r["skill"] for r in records}) == len(catalog.skills)  # every skill is in the small set


def test_table_row_shows_threshold_and_held_out_numbers():
    tool = load_tool()
    row = {"data": "demo", "seed": 1, "splits": {"train": 528, "valid": 66, "test": 66}, "threshold": 0.9079,
           "calibration": {"precision": 0.983, "coverage": 0.879, "total": 66},
           "heldout": {"precision": 0.96, "coverage": 0.731, "total": 238},
           "ece": {"raw": 0.019, "scaled": 0.017}, "stability": {"coverage_p5_p50_p95": [0.64, 0.88, 1.0]}}
    last = tool.table([row]).splitlines()[-1]
    assert last == ("| demo | 1 | 528/66/66 | 0.908 | 98.3% / 87.9% | 96.0% / 73.1% (238) | 0.019 / 0.017 | "
                    "64%-100% |")
