"""Training checks every setting before it creates anything (issue 17 item 13): a run refused at argument
validation leaves no `<out>.partial`, so the next run with good arguments is not told to --resume it."""

from __future__ import annotations

import sys

import pytest

from distill.training.train import check_output

TRAIN = "train/finetune_router_mlx.py"


@pytest.mark.parametrize("extra, flag", [
    (["--num-layers", "999"], "--num-layers"),  # the case of the issue: refused after .partial was made
    (["--batch", "0"], "--batch"),
    (["--batch", "5000"], "--batch"),  # mlx-lm refuses a dataset smaller than a batch, after .partial was made
    (["--lr", "nan"], "--lr"),
    (["--epochs", "-1"], "--epochs"),
])
def test_a_refused_setting_leaves_nothing_and_the_next_run_is_not_refused(cli, tmp_path, small_routes,
                                                                          base_model_dir, extra, flag):
    out = tmp_path / "router"
    result = cli(sys.executable, TRAIN, "--base", base_model_dir, "--train_jsonl", small_routes, "--out", out,
                 "--epochs", "1", "--batch", "4", *extra)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {flag}: "), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routes.jsonl"]  # before: router.partial was left
    assert check_output(out, resume=False, force=False) is None  # the next run goes ahead
