"""merge --out safety (issue 17 item 1): only an earlier merge output is replaced without --force; --out never
equals or contains --lora/--base. A tiny llama and a hand-made LoRA keep each merge under a second."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from distill.errors import DistillError
from distill.export.merge import MERGE_MARKER, merge
from tests.support.hostile import write_tiny_lora


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory, tiny_llama_dir) -> Path:
    """An mlx-lm LoRA adapter dir (adapter_config.json + adapters.safetensors) for the tiny llama."""
    return write_tiny_lora(tmp_path_factory.mktemp("tiny_lora") / "router_student_mlx", tiny_llama_dir)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_merge_leaves_a_marker_and_may_replace_its_own_output(tmp_path, tiny_lora, tiny_llama_dir):
    out = tmp_path / "router_merged"
    merge(str(tiny_llama_dir), tiny_lora, out, peft=False)
    assert (out / MERGE_MARKER).is_file() and (out / "config.json").is_file()
    merge(str(tiny_llama_dir), tiny_lora, out, peft=False)  # a re-run replaces its own output
    assert (out / MERGE_MARKER).is_file()


@pytest.mark.parametrize("where", ["lora", "parent of lora", "base", "parent of base"])
def test_out_that_is_or_holds_lora_or_base_is_refused_even_with_force(where, tiny_lora, tiny_llama_dir):
    target = {"lora": tiny_lora, "parent of lora": tiny_lora.parent, "base": tiny_llama_dir,
              "parent of base": tiny_llama_dir.parent}[where]
    before = snapshot(target)
    with pytest.raises(DistillError, match="--out: is or contains --(lora|base)"):
        merge(str(tiny_llama_dir), tiny_lora, target, peft=False, force=True)
    assert snapshot(target) == before


def test_a_foreign_non_empty_out_needs_force(tmp_path, tiny_lora, tiny_llama_dir):
    out = tmp_path / "models"
    out.mkdir()
    (out / "precious.txt").write_text("teacher hours\n")
    with pytest.raises(DistillError, match="not an earlier merge output.*--force"):
        merge(str(tiny_llama_dir), tiny_lora, out, peft=False)
    assert (out / "precious.txt").read_text() == "teacher hours\n"
    merge(str(tiny_llama_dir), tiny_lora, out, peft=False, force=True)
    assert (out / MERGE_MARKER).is_file() and not (out / "precious.txt").exists()


def test_out_that_is_a_file_is_refused(tmp_path, tiny_lora, tiny_llama_dir):
    out = tmp_path / "merged"
    out.write_text("x")
    with pytest.raises(DistillError, match="not a directory"):
        merge(str(tiny_llama_dir), tiny_lora, out, peft=False, force=True)
    assert out.read_text() == "x"


def test_cli_out_equal_to_lora_is_one_error_line_and_keeps_the_adapters(cli, repo_root, tiny_lora, tiny_llama_dir):
    before = snapshot(tiny_lora)
    result = cli(sys.executable, "tools/merge_lora.py", "--base", tiny_llama_dir, "--lora", tiny_lora,
                 "--out", tiny_lora, "--force")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {tiny_lora}: --out: is or contains")
    assert snapshot(tiny_lora) == before
