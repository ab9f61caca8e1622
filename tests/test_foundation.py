"""Foundation: make help, CI script, OpenBLAS preload, atomic files."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from distill.blas import openblas_path
from distill.fileio import JsonlAppender, atomic_writer, read_jsonl


def test_make_help_lists_every_target_with_a_description(repo_root):
    makefile = (repo_root / "Makefile").read_text().replace("\\\n", " ")
    documented = set(re.findall(r"^([a-zA-Z_-]+):.*?## ", makefile, flags=re.M))
    phony = set(" ".join(re.findall(r"^\.PHONY:(.*)$", makefile, flags=re.M)).split())
    assert phony - documented == set()
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=repo_root, capture_output=True, text=True, check=True).stdout
    for target in ("setup", "test", "collect", "train-router", "gguf", "deploy", "demo", "bench", "calibrate", "route", "harvest"):
        assert re.search(rf"^\s+(\x1b\[\d+m)?{target}\b", out, flags=re.M), target
        assert target in documented


def test_ci_runs_the_readme_commands(repo_root):
    ci = (repo_root / ".ci/run").read_text()
    readme = (repo_root / "README.md").read_text()
    assert "make setup" in ci and "make test" in ci and "set -euo pipefail" in ci
    assert "make setup" in readme and "make test" in readme


@pytest.mark.skipif(openblas_path() is None, reason="no system OpenBLAS on this machine")
@pytest.mark.parametrize("opt_out, expected", [("", True), ("reference", False)])
def test_entry_points_re_exec_with_openblas(repo_root, opt_out, expected):
    probe = "from distill.blas import ensure_openblas; ensure_openblas(); import os; print(os.environ.get('LD_PRELOAD', ''))"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo_root), "DISTILL_BLAS": opt_out}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert (openblas_path() in out) is expected


def test_atomic_writer_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_writer(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_appender_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')  # killed mid-write
    with JsonlAppender(path) as log:
        log.append({"a": 3})
    assert read_jsonl(path) == [{"a": 1}, {"a": 3}]
    assert json.loads(path.read_text().splitlines()[-1]) == {"a": 3}
