"""Fixtures of the export stage: the shared trained router student (a real mlx-lm LoRA), its merge, and tiny models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lora_adapter(trained_router) -> Path:
    """The router student the slow tests share (tests/support/data.py): a real mlx-lm LoRA over 16 layers, with
    the student.json and catalog copy training wrote. Read only: a test that changes it works on a copy."""
    return trained_router


@pytest.fixture(scope="session")
def merged_student(tmp_path_factory, base_model_dir, lora_adapter) -> Path:
    from distill.export.merge import merge

    out = tmp_path_factory.mktemp("merged") / "router_merged"
    merge(str(base_model_dir), lora_adapter, out)
    return out


def write_tiny_llama(out: Path, tokenizer_dir: Path, *, hidden: int = 64, layers: int = 2, heads: int = 4,
                     kv_heads: int = 2, ffn: int = 128, tied: bool = True, seed: int = 0) -> Path:
    """A random llama in HF layout with a real tokenizer: converter tests in a second, not minutes."""
    import mlx.core as mx

    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (tokenizer_dir / name).is_file():
            shutil.copy(tokenizer_dir / name, out / name)
    vocab = max(t["id"] for t in json.loads((out / "tokenizer.json").read_text())["added_tokens"]) + 1
    vocab = max(vocab, len(json.loads((out / "tokenizer.json").read_text())["model"]["vocab"]))
    head_dim = hidden // heads
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
        "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": head_dim, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 512, "vocab_size": vocab, "hidden_act": "silu", "tie_word_embeddings": tied,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }
    mx.random.seed(seed)

    def rand(*shape, scale=0.2):
        return mx.random.normal(shape) * scale

    weights = {"model.embed_tokens.weight": rand(vocab, hidden, scale=1.0), "model.norm.weight": 1 + rand(hidden, scale=0.1)}
    if not tied:
        weights["lm_head.weight"] = rand(vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        weights |= {
            p + "self_attn.q_proj.weight": rand(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": rand(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": rand(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": rand(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": rand(ffn, hidden),
            p + "mlp.up_proj.weight": rand(ffn, hidden),
            p + "mlp.down_proj.weight": rand(hidden, ffn),
            p + "input_layernorm.weight": 1 + rand(hidden, scale=0.1),
            p + "post_attention_layernorm.weight": 1 + rand(hidden, scale=0.1),
        }
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, base_model_dir) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", base_model_dir)
