"""Q4_K_M size of the real bases, computed by llama.cpp itself from the real configs (no weights downloaded).

For each real model: its published config.json and its family's replica tokenizer go into a model dir whose
model.safetensors is a *sparse* file of the real tensor shapes (header only, zeros as holes); llama.cpp's own
convert_hf_to_gguf.py writes the f16 GGUF with its tensor data left as holes too (the converter's lazy tensors are
never computed), and llama.cpp's quantizer in dry-run mode (`llama_model_quantize_params.dry_run`) picks every
tensor's Q4_K_M type by its own rules (Q6_K for output and some attn_v/ffn_down, fallbacks when a row length is
not a multiple of 256) and reports the quantized size. File size = that + the GGUF's metadata (vocabulary, chat
template). Seconds per model, a few MB on disk: nothing real is written or computed.

    python -m distill.bases.sizes [--family qwen2.5 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import cli, fail
from ..export import llamacpp_source
from . import replicas

# Sibling sizes of each family: the published config.json keys that differ from the family's own model.
SIBLING_CONFIGS: dict[str, dict] = {
    "meta-llama/Llama-3.2-3B-Instruct": {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
                                         "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128},
    "Qwen/Qwen2.5-1.5B-Instruct": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                                   "num_attention_heads": 12, "num_key_value_heads": 2, "max_window_layers": 21},
    "Qwen/Qwen3-1.7B": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128},
    "microsoft/Phi-3.5-mini-instruct": {"max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
                                        "sliding_window": 262144},  # same weights' shapes as Phi-3-mini
    "HuggingFaceTB/SmolLM2-360M-Instruct": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                                            "num_attention_heads": 15, "num_key_value_heads": 5},
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                                            "num_attention_heads": 32, "num_key_value_heads": 32, "rope_theta": 130000},
}

# In the converter's process: write tensor data as holes instead of computing it.
SPARSE_WRITER = r'''
import os, runpy, sys
import gguf
from gguf.gguf_writer import GGUFWriter, WriterState

def write_tensors_as_holes(self, *, progress=False):
    self.write_ti_data_to_file()
    for fout in self.fout:
        self.write_padding(fout, fout.tell())
    for fout, tensors in zip(self.fout, self.tensors):
        for ti in tensors.values():
            fout.seek(ti.nbytes, 1)
            self.write_padding(fout, ti.nbytes)
            ti.tensor = None
        fout.truncate()
    self.state = WriterState.WEIGHTS

GGUFWriter.write_tensors_to_file = write_tensors_as_holes
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # the converter imports its `conversion` package from beside it
runpy.run_path(sys.argv[0], run_name="__main__")
'''

QUANT_LINE = re.compile(r"quant size\s*=\s*([\d.]+) MiB \(([\d.]+) BPW\)")


def real_models() -> list[tuple[str, str, dict]]:
    """(family key, hub id, published config) of every family's model and siblings."""
    out = []
    for fam in replicas.FAMILIES.values():
        out.append((fam.key, fam.hub_id, fam.config))
        for sibling in fam.siblings:
            out.append((fam.key, sibling, {**fam.config, **SIBLING_CONFIGS[sibling]}))
    return out


def sparse_checkpoint(config: dict, out: Path) -> int:
    """model.safetensors with the real tensor names and shapes, all data a hole; returns the parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {k: v for k, v in config.items() if k not in ("architectures", "model_type", "torch_dtype")}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **settings),
                                                 dtype=torch.bfloat16)
    shapes = {name: list(t.shape) for name, t in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        shapes.pop("lm_head.weight", None)  # tied checkpoints do not store it
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        size = 2 * int(torch.tensor(shape).prod().item()) if shape else 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with (out / "model.safetensors").open("wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        handle.truncate(8 + len(blob) + offset)
    return offset // 2


def q4_k_m_size(key: str, config: dict, work: Path) -> dict:
    """Parameters, quantized tensor bytes (llama.cpp's dry run) and the file size, for one real config."""
    import gguf

    model_dir, f16 = work / "model", work / "model.f16.gguf"
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    replica = replicas.ensure_replica(key)
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "generation_config.json"):
        if (replica / name).is_file():
            shutil.copy(replica / name, model_dir / name)
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    params = sparse_checkpoint(config, model_dir)
    done = subprocess.run([sys.executable, "-c", SPARSE_WRITER, str(llamacpp_source.converter_script()), str(model_dir),
                           "--outfile", str(f16), "--outtype", "f16"], env=llamacpp_source.converter_env(),
                          capture_output=True, text=True)
    if done.returncode != 0:
        fail(model_dir, f"converter failed: {done.stderr.strip().splitlines()[-1:]}")
    reader = gguf.GGUFReader(str(f16))
    metadata_bytes = int(reader.tensors[0].data_offset) if reader.tensors else f16.stat().st_size
    quant_mib, bpw = dry_run_q4_k_m(f16)
    f16.unlink()
    shutil.rmtree(model_dir)
    return {"params": params, "q4_k_m_tensor_bytes": int(quant_mib * 2**20), "bits_per_weight": bpw,
            "file_bytes": int(quant_mib * 2**20) + metadata_bytes}


def dry_run_q4_k_m(f16: Path) -> tuple[float, float]:
    """(quantized MiB, bits per weight) as llama.cpp's quantizer reports them in dry-run mode."""
    script = ("import ctypes, llama_cpp, sys\n"
              "p = llama_cpp.llama_model_quantize_default_params()\n"
              "p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M\np.dry_run = True\np.nthread = 1\n"
              "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))")
    done = subprocess.run([sys.executable, "-c", script, str(f16), os.devnull], capture_output=True, text=True)
    match = QUANT_LINE.search(done.stderr)
    if done.returncode != 0 or not match:
        fail(f16, f"llama.cpp's quantizer dry run failed: {done.stderr.strip().splitlines()[-1:]}")
    return float(match.group(1)), float(match.group(2))


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m distill.bases.sizes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", action="append", help="family key (repeatable; default: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sizes-") as tmp:
        for key, hub_id, config in real_models():
            if args.family and key not in args.family:
                continue
            result = {"family": key, "hub_id": hub_id, **q4_k_m_size(key, config, Path(tmp))}
            rows.append(result)
            print(f"{hub_id:40} {result['params'] / 1e6:8.0f} M params  Q4_K_M {result['file_bytes'] / 1e6:7.0f} MB "
                  f"({result['bits_per_weight']} bits/weight)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
