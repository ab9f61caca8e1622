"""The shape of the package: the runtime's import closure, the dispatcher, the one student.json contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from distill.errors import DistillError
from distill.fileio import staged_dir
from distill.student import CATALOG_FILE, StudentSpec, copy_catalog

HEAVY = ("mlx", "mlx_lm", "torch", "transformers", "openai", "distill.standins", "distill.training", "distill.export",
         "distill.teacher.client")


def test_runtime_imports_nothing_heavy_and_no_standin(repo_root):
    probe = ("import sys, distill.runtime, distill.runtime.router, distill.student, distill.prompting; "
             f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m.startswith({HEAVY!r})])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=repo_root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_dispatcher_lists_every_verb_and_runs_one(repo_root, cli):
    from distill.__main__ import VERBS

    listed = cli(sys.executable, "-m", "distill", "--help")
    assert listed.returncode == 0 and all(verb in listed.stdout for verb in VERBS)
    unknown = cli(sys.executable, "-m", "distill", "frobnicate")
    assert unknown.returncode == 2 and "unknown verb 'frobnicate'" in unknown.stderr
    for verb in VERBS:  # every verb's module imports and its main() answers --help
        helped = cli(sys.executable, "-m", "distill", verb, "--help", timeout=120)
        assert helped.returncode == 0 and "usage:" in helped.stdout, (verb, helped.stderr[-500:])


def test_staged_dir_swaps_in_only_when_complete(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_dir(out) as stage:
        (stage / "new.txt").write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and (out / "old.txt").is_file()
    with staged_dir(out, previous=tmp_path / "model.previous") as stage:
        (stage / "new.txt").write_text("new")
    assert (out / "new.txt").is_file() and not (out / "old.txt").exists()
    assert (tmp_path / "model.previous" / "old.txt").is_file()


def _spec(tmp_path, catalog, **changes) -> StudentSpec:
    spec = StudentSpec(name="r", system_prompt="route", catalog=copy_catalog(catalog, tmp_path),
                       catalog_hash=catalog.hash, stop=["<|im_end|>"], **changes)
    spec.save(tmp_path)
    return spec


def test_student_spec_round_trips_and_keeps_unknown_fields(tmp_path, catalog):
    _spec(tmp_path, catalog)
    raw = json.loads((tmp_path / "student.json").read_text())
    (tmp_path / "student.json").write_text(json.dumps({**raw, "calibration": {"method": "x"}}))
    spec = StudentSpec.load(tmp_path)
    assert spec.extra == {"calibration": {"method": "x"}} and spec.catalog == CATALOG_FILE
    spec.update(threshold=0.9)
    again = json.loads((tmp_path / "student.json").read_text())
    assert again["threshold"] == 0.9 and again["calibration"] == {"method": "x"}


def test_student_catalog_travels_with_it_and_its_hash_is_checked(tmp_path, catalog):
    (tmp_path / "a").mkdir()
    _spec(tmp_path / "a", catalog)
    moved = tmp_path / "elsewhere"
    (tmp_path / "a").rename(moved)  # a student copied to another place keeps its catalog
    assert StudentSpec.load(moved).load_catalog().hash == catalog.hash
    (moved / CATALOG_FILE).write_text((moved / CATALOG_FILE).read_text().replace("description:", "description: x", 1))
    with pytest.raises(DistillError, match="catalog_hash: the student was trained on catalog"):
        StudentSpec.load(moved).load_catalog()


@pytest.mark.parametrize("field, value, message", [
    ("system_prompt", 3, "system_prompt: missing or not a string"),
    ("stop", "x", "stop: must be a list"),
    ("threshold", True, "threshold: must be a number or null"),
    ("kind", "chat", "kind: must be one of router, style"),
])
def test_student_spec_names_the_bad_field(tmp_path, field, value, message):
    (tmp_path / "student.json").write_text(json.dumps({"name": "r", "system_prompt": "s", field: value}))
    with pytest.raises(DistillError, match=message):
        StudentSpec.load(tmp_path)


def test_make_help_is_plain_text_when_piped(repo_root):
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=repo_root, capture_output=True, text=True,
                         check=True).stdout
    assert "\x1b" not in out and "  train-router " in out


@pytest.mark.parametrize("script, usage", [
    ("tools/merge_lora.py", "usage: python tools/merge_lora.py"),
    ("tools/convert_to_gguf.py", "usage: python tools/convert_to_gguf.py"),
    ("train/finetune_router_mlx.py", "usage: python train/finetune_router_mlx.py"),
    ("train/finetune_style_mlx.py", "usage: python train/finetune_style_mlx.py"),
])
def test_seed_scripts_show_their_own_command_line(repo_root, cli, script, usage):
    helped = cli(sys.executable, script, "--help", timeout=120)
    assert helped.returncode == 0 and helped.stdout.startswith(usage), helped.stdout[:200]
