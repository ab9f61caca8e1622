"""Fuse an mlx-lm LoRA student into its base (Hugging Face layout) and write the adapter in PEFT format.

Fusing uses mlx-lm's own pieces (load, load_adapters, LoRALinear.fuse, save). A quantized base is
dequantized *before* the adapters are applied: fused weights then stay full precision, and the GGUF
quantizer, not MLX, decides the final precision.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..bases import load_mlx_base
from ..blas import ensure_openblas
from ..errors import cli, fail
from ..fileio import atomic_writer, check_writable, read_json, staged_dir, utc_now, write_json
from ..student import STUDENT_FILE, StudentSpec, copy_spec_files, is_student

ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_DIR = "peft"
# Written into every merge output: only a dir holding it may be replaced without --force (a mistyped --out such
# as the student dir or `models` would otherwise be deleted by the swap).
MERGE_MARKER = ".distill-merge.json"


@dataclass(frozen=True)
class MergeResult:
    out_dir: Path
    fused_layers: int
    dequantized: bool
    peft_dir: Path | None


def adapter_config(adapter_dir: Path) -> dict:
    """mlx-lm's adapter_config.json, checked for what fusing needs."""
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (adapter_dir / name).is_file():
            fail(adapter_dir / name, "missing: not an mlx-lm adapter directory (train the student first)")
    config = read_json(adapter_dir / ADAPTER_CONFIG)
    if not isinstance(config, dict):
        fail(adapter_dir / ADAPTER_CONFIG, "expected a JSON object")
    kind = config.get("fine_tune_type", "lora")
    if kind not in ("lora", "dora", "full"):
        fail(adapter_dir / ADAPTER_CONFIG, f"unknown fine_tune_type {kind!r}", "fine_tune_type")
    if kind != "full" and not isinstance(config.get("lora_parameters"), dict):
        fail(adapter_dir / ADAPTER_CONFIG, "missing lora_parameters", "lora_parameters")
    return config


def adapter_weights(adapter_dir: Path) -> dict:
    """The adapter tensors; one line naming the file when it is truncated or not safetensors (mlx raises a
    RuntimeError with a C++ message)."""
    import mlx.core as mx

    path = adapter_dir / ADAPTER_WEIGHTS
    try:
        return mx.load(str(path))
    except (RuntimeError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        fail(path, f"not a readable safetensors file ({reason}); train the student again")


def resolve_base(base: str | None, adapter_dir: Path) -> str:
    """The base to fuse onto: as given, else what the student was trained on (student.json, adapter config)."""
    student = adapter_dir / STUDENT_FILE
    trained_on = StudentSpec.load(adapter_dir).base if is_student(adapter_dir) else None
    trained_on = trained_on or adapter_config(adapter_dir).get("model")
    if base is None:
        if not trained_on:
            fail(adapter_dir, "no --base given and the student does not name its base", "base")
        return trained_on
    if trained_on and not _same_model(base, trained_on):
        fail(student if student.is_file() else adapter_dir / ADAPTER_CONFIG,
             f"the student was trained on {trained_on!r}, not on --base {base!r}", "base")
    return base


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a.rstrip("/") == b.rstrip("/")


def check_merge_out(out_dir: Path, adapter_dir: Path, base: str, force: bool) -> None:
    """Refuse an --out whose replacement would lose data: one that is or holds --lora or --base (even with
    --force), a file, or a non-empty dir that is not an earlier merge output (unless --force)."""
    out = out_dir.resolve()
    for flag, path in (("--lora", adapter_dir), ("--base", Path(base).expanduser())):
        if path.exists() and (out == path.resolve() or out in path.resolve().parents):
            fail(out_dir, f"is or contains {flag} {path}; replacing it would delete it", "--out")
    if out_dir.exists() and not out_dir.is_dir():
        fail(out_dir, "exists and is not a directory", "--out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MERGE_MARKER).is_file() and not force:
        fail(out_dir, f"is not empty and not an earlier merge output (no {MERGE_MARKER}); pass --force to "
             "replace it", "--out")


def fuse_adapters(model, config: dict, adapter_dir: Path) -> tuple[int, bool]:
    """Dequantize (if needed), apply the adapters, fuse every LoRA layer in place. Returns (fused, dequantized)."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load_adapters

    dequantized = "quantization" in config or "quantization_config" in config
    if dequantized:
        # Upstream fuse re-quantizes fused layers onto the base's grid, which rounds a small LoRA delta away.
        dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    try:
        load_adapters(model, str(adapter_dir))
    except (ValueError, KeyError) as err:
        fail(adapter_dir / ADAPTER_WEIGHTS, f"adapters do not fit the base: {str(err).splitlines()[0]}")
    fused = [(name, module.fuse()) for name, module in model.named_modules() if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    return len(fused), dequantized


def merge(base: str | None, adapter_dir: str | Path, out_dir: str | Path, *, peft: bool = True,
          force: bool = False) -> MergeResult:
    """Write <out_dir> (HF layout: config, safetensors, tokenizer, chat template) and <out_dir>/peft/."""
    from mlx_lm.utils import save

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    config_json = adapter_config(adapter_dir)
    adapter_weights(adapter_dir)  # a corrupt file fails here, before the base is loaded
    base = resolve_base(base, adapter_dir)
    check_merge_out(out_dir, adapter_dir, base, force)
    model, tokenizer, config = load_mlx_base(base, return_config=True)
    fused, dequantized = fuse_adapters(model, config, adapter_dir)
    if config_json.get("fine_tune_type", "lora") != "full" and fused == 0:
        fail(adapter_dir / ADAPTER_CONFIG, "no LoRA layer was fused (num_layers or keys match nothing)")
    with staged_dir(out_dir) as stage:
        save(stage, base, model, tokenizer, config, donate_model=False)
        _copy_tokenizer_extras(Path(base), stage)
        copy_spec_files(adapter_dir, stage)
        write_json(stage / MERGE_MARKER, {"lora": str(adapter_dir), "base": base, "created": utc_now()})
        peft_dir = None
        if peft and config_json.get("fine_tune_type", "lora") == "lora":
            write_peft_adapter(adapter_dir, stage / PEFT_DIR, base=base)
            peft_dir = out_dir / PEFT_DIR
    return MergeResult(out_dir, fused, dequantized, peft_dir)


def _copy_tokenizer_extras(base: Path, out_dir: Path) -> None:
    """Files save_pretrained may not rewrite but converters read (the SentencePiece model)."""
    if base.is_dir():
        for name in ("tokenizer.model",):
            if (base / name).is_file() and not (out_dir / name).exists():
                shutil.copy2(base / name, out_dir / name)


# ---- PEFT -------------------------------------------------------------------------------------------
def peft_tensors(adapter_dir: Path) -> tuple[dict, dict]:
    """MLX LoRA tensors renamed to PEFT's: x.lora_a (in, r) -> base_model.model.x.lora_A.weight (r, in)."""
    import mlx.core as mx
    import numpy as np

    config = adapter_config(adapter_dir)
    if config.get("fine_tune_type", "lora") != "lora":
        fail(adapter_dir / ADAPTER_CONFIG, "only plain LoRA adapters have a PEFT form", "fine_tune_type")
    weights = adapter_weights(adapter_dir)
    out = {}
    for name, value in weights.items():
        module, _, leaf = name.rpartition(".")
        if leaf not in ("lora_a", "lora_b"):
            fail(adapter_dir / ADAPTER_WEIGHTS, f"unexpected tensor {name!r} for a LoRA adapter")
        peft_leaf = "lora_A" if leaf == "lora_a" else "lora_B"
        array = np.array(value.astype(mx.float32)).T
        out[f"base_model.model.{module}.{peft_leaf}.weight"] = np.ascontiguousarray(array)
    return out, config


def peft_config(tensors: dict, config: dict, base: str) -> dict:
    """adapter_config.json for PEFT: same rank, alpha = scale x r, and exactly the layers mlx-lm adapted."""
    lora = config["lora_parameters"]
    modules = sorted({name.split(".layers.", 1)[1].split(".", 1)[1].rsplit(".lora_", 1)[0] for name in tensors})
    layers = sorted({int(name.split(".layers.", 1)[1].split(".", 1)[0]) for name in tensors})
    rank = int(lora["rank"])
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": rank,
        "lora_alpha": float(lora["scale"]) * rank,
        "lora_dropout": float(lora.get("dropout", 0.0)),
        "target_modules": modules,
        "layers_to_transform": layers,
        "layers_pattern": "layers",
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    }


def write_peft_adapter(adapter_dir: str | Path, out_dir: str | Path, base: str | None = None) -> Path:
    """adapter_model.safetensors + adapter_config.json that peft.PeftModel.from_pretrained loads."""
    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    tensors, config = peft_tensors(adapter_dir)
    if not all(".layers." in name for name in tensors):
        fail(adapter_dir / ADAPTER_WEIGHTS, "LoRA outside model.layers has no PEFT mapping here")
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_writer(out_dir / "adapter_model.safetensors", "wb") as handle:
        handle.write(_safetensors_bytes(tensors))
    write_json(out_dir / "adapter_config.json", peft_config(tensors, config, base or config.get("model", "")))
    return out_dir


def _safetensors_bytes(tensors: dict) -> bytes:
    from safetensors.numpy import save

    return save(tensors, metadata={"format": "pt"})



@cli
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python tools/merge_lora.py",
                                description="Fuse the LoRA student into its base (Hugging Face layout) + a PEFT copy.")
    p.add_argument("--base", help="base model dir or hub id (default: the one the student was trained on)")
    p.add_argument("--lora", type=Path, required=True, help="student dir with adapters.safetensors")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-peft", action="store_true", help="skip <out>/peft/")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out that is not an earlier merge")
    args = p.parse_args(argv)
    check_writable(args.out, "--out", directory=True)
    ensure_openblas()
    result = merge(args.base, args.lora, args.out, peft=not args.no_peft, force=args.force)
    note = " (base dequantized first)" if result.dequantized else ""
    print(f"{result.out_dir}: fused {result.fused_layers} LoRA layers{note}"
          + (f"; PEFT adapter in {result.peft_dir}" if result.peft_dir else ""))


@cli
def peft_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m distill peft",
                                description="Write the mlx-lm adapter in Hugging Face PEFT format.")
    p.add_argument("--lora", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--base", help="recorded as base_model_name_or_path")
    args = p.parse_args(argv)
    print(f"{write_peft_adapter(args.lora, args.out, base=args.base)}: written")


if __name__ == "__main__":
    main()
