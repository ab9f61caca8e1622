"""Helpers for the bad-input tests (issue 17): hostile files, a read-only directory, a snapshot of a folder, and a
tiny mlx-lm LoRA adapter to corrupt."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

LATIN1 = b"caf\xe9"  # "café" in Latin-1: not UTF-8


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (symlinked dirs not followed) -> sha256: equal snapshots mean nothing was
    written, changed or removed."""
    found = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        for name in files + [d for d in dirs if not os.listdir(os.path.join(root, d))]:  # empty dirs count too
            path = Path(root, name)
            rel = str(path.relative_to(folder))
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return found


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """`path` as a directory nobody can write into: mode 0555 for a normal user; root ignores modes, so for root a
    read-only tmpfs is mounted there (skips the test where that is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def write_tiny_lora(out: Path, base_dir: Path, layers: int = 2) -> Path:
    """An mlx-lm LoRA adapter dir (adapter_config.json + adapters.safetensors) for a tiny llama in `base_dir`."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    lora = {"rank": 2, "scale": 1.0, "dropout": 0.0}
    model, _ = load(str(base_dir))
    model.freeze()
    linear_to_lora_layers(model, layers, lora)
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))
    (out / "adapter_config.json").write_text(json.dumps(
        {"fine_tune_type": "lora", "num_layers": layers, "lora_parameters": lora, "model": str(base_dir)}))
    return out
