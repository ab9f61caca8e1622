"""Merged Hugging Face model dir -> GGUF f16 (llama.cpp's own converter) -> quantized GGUF (llama.cpp's quantizer).

One llama.cpp for everything: `convert_hf_to_gguf.py` from the llama.cpp source vendored in the pinned
llama-cpp-python sdist (`distill.export.llamacpp_source`), run as a subprocess with this venv's Python and that
tree's own `gguf-py`; the quantizer is the same llama.cpp compiled into llama-cpp-python
(`llama_cpp.llama_model_quantize`). So every architecture llama.cpp converts (llama, qwen2, qwen3, phi3,
gemma3, ...) exports with the seed's command, and the runtime loads exactly what its converter wrote.

Why not our own writer any more: the hand-written llama-only writer this replaced could not export Qwen, Phi or
Gemma at all, and on TinyLlama (no tokenizer.model read) it tokenized runs of spaces differently from training
('    return' -> 268, 2457 instead of 1678, 736). llama.cpp's converter reads tokenizer.model when the model has
one, picks the BPE pre-tokenizer by hashing the tokenizer's output, writes RoPE factors, biases, q/k norms
and the chat template as llama.cpp expects them.

Checks kept on the converter's output: llama.cpp (vocab only) must tokenize a fixed probe set exactly as the
merged model's tokenizer.json does (the tokenizer training used and merge saved); otherwise the file is removed
and the export fails. `tensor_report` reads back the effective type of each tensor (K-quants fall back per
tensor when a row length is not a multiple of 256).

The converter imports torch (CPU is enough): the `export` extra installs it; the robot's runtime never does.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import importlib.util
import os
import sys
from collections import Counter
from pathlib import Path

from ..blas import ensure_openblas
from ..errors import cli, fail
from ..fileio import atomic_writer, check_writable, read_json, sha256_file
from ..student import StudentSpec, is_student
from . import llamacpp_source
from .tool import run_tool

QUANTS = ("Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q5_K_M", "Q5_0", "Q6_K", "Q8_0")
DEFAULT_QUANT = "Q4_K_M"
RUNNERS = ("native", "docker")

# Strings llama.cpp and the training tokenizer must split identically (digits, spaces, unicode, specials, code).
PROBES = (
    "Hello world",
    "turn your eyes red",
    "  two leading spaces, trailing  ",
    "Numbers: 0 7 42 1234567 3.14159 -12,5 2026-11-25",
    "Punctuation!?... (brackets) [x] {\"skill\":\"look\",\"args\":{\"direction\":\"left\"}}",
    "café naïve Größe 日本語 한국어 русский 🤖👀",
    "tabs\tand\nnew\n\nlines\r\n",
    "<|im_start|>user\nlook left<|im_end|>\n<|im_start|>assistant\n",
    "don't I'll we've they're",
    "def f(x):\n    return x**2  # comment",
)


# ---- preflight ----------------------------------------------------------------------------------------
def preflight(hf_dir: str | Path) -> dict:
    """What must be there before the converter runs (it would fail later or write a GGUF the router cannot use)."""
    hf_dir = Path(hf_dir)
    path = hf_dir / "config.json"
    if not path.is_file():
        fail(path, "missing: not a Hugging Face model directory (run merge first)")
    config = read_json(path)  # one line naming the file and line when it is not UTF-8 JSON
    if not isinstance(config, dict) or not config.get("architectures"):
        fail(path, "names no architecture (llama.cpp's converter picks its writer by it)", "architectures")
    if not (hf_dir / "tokenizer.json").is_file():
        fail(hf_dir / "tokenizer.json", "missing: the export checks llama.cpp's tokenization against it")
    if not isinstance(read_json(hf_dir / "tokenizer.json"), dict):  # else the converter's traceback says it
        fail(hf_dir / "tokenizer.json", "expected a JSON object")
    if not chat_template(hf_dir):
        fail(hf_dir, "missing chat template (chat_template.jinja or tokenizer_config.json: chat_template); "
                     "Ollama and the router need it", "chat_template")
    return config


def chat_template(hf_dir: Path) -> str | None:
    """From chat_template.jinja (transformers >= 4.43 saves it there) or tokenizer_config.json."""
    jinja = hf_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config_path = hf_dir / "tokenizer_config.json"
    tokenizer_config = read_json(config_path) if config_path.is_file() else {}
    template = tokenizer_config.get("chat_template") if isinstance(tokenizer_config, dict) else None
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template or None


# ---- llama.cpp's converter ------------------------------------------------------------------------------
def converter_command(hf_dir: Path, f16_out: Path, name: str | None = None) -> list[str]:
    """convert_hf_to_gguf.py of the pinned llama.cpp, with this interpreter (its torch, transformers, numpy)."""
    command = [sys.executable, str(llamacpp_source.converter_script()), str(hf_dir), "--outfile", str(f16_out),
               "--outtype", "f16"]
    return command + (["--model-name", name] if name else [])


def run_converter(hf_dir: Path, f16_out: Path, name: str | None = None) -> None:
    """Run the converter; on a terminal its log is passed through (a 3.8 B model takes minutes), elsewhere only its
    own error line becomes ours (one error line for scripts and logs)."""
    if importlib.util.find_spec("torch") is None:
        fail("torch", "llama.cpp's convert_hf_to_gguf.py needs PyTorch (the CPU build is enough): "
                      "pip install -e '.[export]'")
    run_tool(converter_command(hf_dir, f16_out, name), hf_dir, env=llamacpp_source.converter_env(),
             passthrough=sys.stderr.isatty(), tool="llama.cpp's convert_hf_to_gguf.py")
    if not f16_out.is_file():
        fail(hf_dir, "llama.cpp's convert_hf_to_gguf.py exited 0 but wrote no file")


def write_f16_gguf(hf_dir: str | Path, out_path: str | Path, name: str | None = None) -> Path:
    """Preflight, convert with llama.cpp's converter, check llama.cpp's tokenization; atomic (temp, then rename)."""
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    preflight(hf_dir)
    with _temp_beside(out_path) as tmp:
        run_converter(hf_dir, tmp, name or hf_dir.name)
        check_tokenizer(hf_dir, tmp)
    return out_path


def check_tokenizer(hf_dir: Path, gguf_path: Path, probes: tuple[str, ...] = PROBES) -> None:
    """llama.cpp (vocab only) must split every probe exactly as the model dir's tokenizer.json does.

    tokenizer.json of a merged student is the tokenizer training used (merge saves the one it loaded), so a
    mismatch means the GGUF would not see what training saw.
    """
    from tokenizers import Tokenizer

    from ..runtime.llamacpp import load_llama

    hf = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    with _quiet_stderr():
        llm = load_llama(gguf_path, vocab_only=True, verbose=False)
    try:
        for text in probes:
            want = hf.encode(text, add_special_tokens=False).ids
            got = llm.tokenize(text.encode(), add_bos=False, special=True)
            if got != want:
                fail(hf_dir / "tokenizer.json", f"llama.cpp tokenizes {text!r} as {got[:12]}..., the HF tokenizer as "
                                               f"{want[:12]}...: the GGUF vocabulary would not match training", "tokenizer")
    finally:
        llm.close()


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp logs model loading to fd 2 even with verbose=False."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def _temp_beside(path: Path):
    """A temp path in the target's folder; renamed over `path` only when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# ---- quantize and inspect -----------------------------------------------------------------------------
def quantize(f16_path: str | Path, out_path: str | Path, quant: str = DEFAULT_QUANT, threads: int | None = None) -> Path:
    import llama_cpp

    if quant not in QUANTS:
        fail("--quant", f"unknown quantization {quant!r} (choose from {', '.join(QUANTS)})")
    f16_path, out_path = Path(f16_path), Path(out_path)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = threads or os.cpu_count() or 1
    with _temp_beside(out_path) as tmp:
        with _quiet_stderr():
            status = llama_cpp.llama_model_quantize(str(f16_path).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0:
            fail(f16_path, f"llama.cpp quantization to {quant} failed (status {status})")
    return out_path


def tensor_report(path: str | Path) -> dict:
    """File size, tensor count per effective type, and bits per weight, read back from the GGUF."""
    stat = Path(path).stat()
    return dict(_tensor_report(str(path), stat.st_size, stat.st_mtime_ns))


@functools.lru_cache(maxsize=16)
def _tensor_report(path: str, size: int, mtime_ns: int) -> dict:
    """Cached per file version: GGUFReader parses the whole vocabulary in Python (seconds)."""
    import gguf

    reader = gguf.GGUFReader(path)
    counts: Counter = Counter()
    params: Counter = Counter()
    nbytes = elements = 0
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        counts[kind] += 1
        params[kind] += int(tensor.n_elements)
        nbytes += int(tensor.n_bytes)
        elements += int(tensor.n_elements)
    file_type = reader.fields.get("general.file_type")
    return {
        "path": str(path),
        "size_bytes": size,
        "file_type": gguf.LlamaFileType(int(file_type.contents())).name if file_type else None,
        "tensor_types": dict(sorted(counts.items())),
        "params_by_type": dict(sorted(params.items())),
        "bits_per_weight": round(8 * nbytes / elements, 3) if elements else None,
        "n_params": elements,
    }


def write_sha256(paths: list[Path], out: Path) -> Path:
    """sha256sum format, names relative to the checksum file: `cd gguf && sha256sum -c x.gguf.sha256`."""
    with atomic_writer(out) as handle:
        for path in paths:
            handle.write(f"{sha256_file(path)}  {os.path.relpath(path, out.parent)}\n")
    return out


def f16_path_for(out_path: Path) -> Path:
    """gguf/router-student.gguf -> gguf/router-student.f16.gguf"""
    return out_path.with_name(f"{out_path.name.removesuffix('.gguf')}.f16.gguf")


def convert(hf_dir: str | Path, out_path: str | Path, quant: str = DEFAULT_QUANT, runner: str = "native") -> dict:
    """hf_dir -> <out>.f16.gguf -> <out> (quantized) + <out>.sha256; returns the tensor reports of both."""
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    if out_path.suffix != ".gguf":
        fail(out_path, "the output name must end in .gguf", "--out")
    if quant not in QUANTS:
        fail("--quant", f"unknown quantization {quant!r} (choose from {', '.join(QUANTS)})")
    if runner not in RUNNERS:
        fail("--runner", f"unknown runner {runner!r} ({' or '.join(RUNNERS)})")
    f16 = f16_path_for(out_path)
    if runner == "docker":
        from .docker import convert_with_docker

        preflight(hf_dir)
        convert_with_docker(hf_dir, f16, out_path, quant)
    else:
        write_f16_gguf(hf_dir, f16, name=_student_name(hf_dir))
        quantize(f16, out_path, quant)
    write_sha256([out_path, f16], out_path.with_name(out_path.name + ".sha256"))
    return {"quantized": tensor_report(out_path), "f16": tensor_report(f16), "quant": quant, "runner": runner}


def _student_name(hf_dir: Path) -> str:
    return StudentSpec.load(hf_dir).name if is_student(hf_dir) else hf_dir.name


@cli
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python tools/convert_to_gguf.py",
                                description="Merged HF model dir -> <out>.f16.gguf -> quantized <out> + <out>.sha256.")
    p.add_argument("--in", dest="src", type=Path, required=True, help="merged model dir (tools/merge_lora.py --out)")
    p.add_argument("--out", type=Path, required=True, help="the quantized GGUF, e.g. gguf/router-student.gguf")
    p.add_argument("--quant", default=DEFAULT_QUANT, choices=QUANTS)
    p.add_argument("--runner", default="native", choices=RUNNERS,
                   help="native (default): llama.cpp's converter and quantizer here, from the pinned source; "
                        "docker: the same tools in the docker/llamacpp image")
    args = p.parse_args(argv)
    check_writable(args.out, "--out")
    ensure_openblas()
    report = convert(args.src, args.out, args.quant, args.runner)
    for name in ("f16", "quantized"):
        r = report[name]
        types = ", ".join(f"{k}x{v}" for k, v in r["tensor_types"].items())
        print(f"{r['path']}: {r['size_bytes'] / 1e6:.1f} MB, {r['bits_per_weight']} bits/weight ({types})")
    print(f"{args.out}.sha256: written")


if __name__ == "__main__":
    main()
