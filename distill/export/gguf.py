"""Hugging Face llama-family model dir -> GGUF (f16) -> llama.cpp quantization, with checks on both ends.

Why not mlx-lm's `--export-gguf`: it labels the vocabulary SentencePiece for BPE models, writes token types
unsigned, every score -1000, no chat template, and float32 data under an F16 header. Here:

- weights: HF names -> GGUF names with gguf's own TensorNameMap; attn_q/attn_k rows permuted to llama.cpp's
  RoPE layout; 2-D tensors as real float16, norms float32 (as llama.cpp's converter does);
- vocabulary, from tokenizer.json:
  * byte-level BPE (SmolLM2, Llama 3, GPT-2): tokenizer.ggml.model = "gpt2", merges, and `pre` (llama.cpp's
    pre-tokenizer regex set) chosen from the structure of tokenizer.json's pre_tokenizer (see `bpe_pre`);
  * SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama): model = "llama", scores = -id (HF's
    converter orders SentencePiece pieces by score, so id order is merge priority), <0xXX> tokens as BYTE;
  * special added tokens are CONTROL (llama.cpp then parses <|im_start|> as one token), other added tokens
    USER_DEFINED; bos/eos/unk/pad/eot ids, add_bos/add_eos and the chat template via gguf.SpecialVocab;
- after writing, llama.cpp itself (llama-cpp-python, vocab only) must tokenize a fixed probe set exactly as
  the HF tokenizer does, otherwise the file is removed and the conversion fails: a wrong `pre` or score
  choice cannot slip through;
- quantization: llama.cpp's quantizer via llama_cpp.llama_model_quantize; `tensor_report` reads back the
  effective type of each tensor (K-quants fall back per tensor when a row length is not a multiple of 256).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..blas import ensure_openblas
from ..errors import cli, fail
from ..fileio import atomic_writer, sha256_file
from ..student import StudentSpec, is_student

QUANTS = ("Q4_K_M", "Q4_K_S", "Q4_0", "Q4_1", "Q5_K_M", "Q5_0", "Q6_K", "Q8_0")
DEFAULT_QUANT = "Q4_K_M"
SUPPORTED_MODEL_TYPES = ("llama",)
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")

# Llama 3's pre-tokenizer split (public in every Llama 3 tokenizer.json); llama.cpp names it "llama-bpe".
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Strings llama.cpp and the HF tokenizer must split identically (digits, spaces, unicode, specials, code).
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


@dataclass(frozen=True)
class Vocab:
    model: str  # "gpt2" | "llama"
    pre: str | None
    tokens: list[bytes]
    scores: list[float]
    types: list[int]
    add_space_prefix: bool | None


# ---- preflight ----------------------------------------------------------------------------------------
def read_hf_config(hf_dir: Path) -> dict:
    path = hf_dir / "config.json"
    if not path.is_file():
        fail(path, "missing: not a Hugging Face model directory (run merge first)")
    config = json.loads(path.read_text())
    config = config.get("text_config", config) if config.get("model_type") not in SUPPORTED_MODEL_TYPES else config
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        fail(path, f"unsupported architecture {model_type!r} for the native converter (llama family only); "
                   "use --runner docker (llama.cpp's convert_hf_to_gguf.py)", "model_type")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            fail(path, "biases are not supported by the native converter; use --runner docker", key)
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in (None, "default", "linear", "llama3"):
        fail(path, f"rope scaling {kind!r} not supported natively; use --runner docker", "rope_scaling")
    return config


def read_tokenizer_json(hf_dir: Path) -> dict:
    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        fail(path, "missing tokenizer: the native converter needs a fast tokenizer (tokenizer.json)")
    return json.loads(path.read_text())


def chat_template(hf_dir: Path) -> str:
    """From chat_template.jinja (transformers >= 4.43 saves it there) or tokenizer_config.json."""
    jinja = hf_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config_path = hf_dir / "tokenizer_config.json"
    template = json.loads(config_path.read_text()).get("chat_template") if config_path.is_file() else None
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if not template:
        fail(hf_dir, "missing chat template (chat_template.jinja or tokenizer_config.json: chat_template); "
                     "Ollama and the router need it", "chat_template")
    return template


def preflight(hf_dir: str | Path) -> tuple[dict, dict, Vocab]:
    """Everything that can be wrong with the input, checked before a byte is written."""
    hf_dir = Path(hf_dir)
    config = read_hf_config(hf_dir)
    tok_json = read_tokenizer_json(hf_dir)
    chat_template(hf_dir)
    vocab = read_vocab(tok_json, hf_dir)
    n_vocab = int(config.get("vocab_size", 0))
    if len(vocab.tokens) > n_vocab:
        fail(hf_dir / "config.json", f"vocab size mismatch: tokenizer has {len(vocab.tokens)} tokens, "
                                     f"the model {n_vocab} embedding rows", "vocab_size")
    return config, tok_json, vocab


# ---- vocabulary ---------------------------------------------------------------------------------------
def bpe_pre(tok_json: dict, where: Path) -> str:
    """llama.cpp's pre-tokenizer name for a byte-level BPE, from the pre_tokenizer's structure.

    llama.cpp's own converter hashes the token ids of a fixed text; reading the structure is equivalent for
    the families we ship, and the probe check after writing catches any mismatch.
    """
    pre = tok_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # StarCoder-style: every digit alone, then GPT-2's regex
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        if steps[0].get("pattern", {}).get("Regex") == LLAMA3_SPLIT:
            return "llama-bpe"
    fail(where, f"unknown BPE pre-tokenizer {kinds}; known: gpt-2, smollm, llama-bpe. "
                "Use --runner docker (llama.cpp's convert_hf_to_gguf.py)", "pre_tokenizer")


def read_vocab(tok_json: dict, hf_dir: Path) -> Vocab:
    import gguf

    where = hf_dir / "tokenizer.json"
    model = tok_json.get("model", {})
    if model.get("type") != "BPE":
        fail(where, f"tokenizer model {model.get('type')!r} not supported natively (BPE only)", "model.type")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in tok_json.get("added_tokens", [])}
    for text, token in added.items():
        vocab[text] = token["id"]
    size = max(vocab.values()) + 1
    by_id: list[str | None] = [None] * size
    for text, index in vocab.items():
        by_id[index] = text
    spm = bool(model.get("byte_fallback"))
    tokens, scores, types = [], [], []
    T = gguf.TokenType
    for index, text in enumerate(by_id):
        if text is None:  # a hole in the ids: llama.cpp wants a token at every index
            tokens.append(f"[PAD{index}]".encode())
            scores.append(-1000.0)
            types.append(T.UNUSED)
            continue
        tokens.append(text.encode("utf-8"))
        if text in added:
            types.append(T.CONTROL if added[text].get("special") else T.USER_DEFINED)
            scores.append(-1000.0 if spm else 0.0)
        elif spm and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types.append(T.BYTE)
            scores.append(0.0)
        elif spm and text == model.get("unk_token"):
            types.append(T.UNKNOWN)
            scores.append(0.0)
        else:
            types.append(T.NORMAL)
            scores.append(-float(index) if spm else 0.0)
    if spm:
        return Vocab("llama", None, tokens, scores, types, _adds_space_prefix(tok_json))
    if tok_json.get("decoder", {}).get("type") != "ByteLevel":
        fail(where, "BPE without byte fallback must have a ByteLevel decoder", "decoder")
    return Vocab("gpt2", bpe_pre(tok_json, where), tokens, scores, types, False)


def _adds_space_prefix(tok_json: dict) -> bool:
    """SentencePiece prepends '▁' (via a Prepend normalizer or a Metaspace pre-tokenizer) unless told not to."""
    text = json.dumps([tok_json.get("normalizer"), tok_json.get("pre_tokenizer")])
    return '"Prepend"' in text or ('"Metaspace"' in text and '"prepend_scheme": "never"' not in text)


# ---- weights ------------------------------------------------------------------------------------------
def load_weights(hf_dir: Path) -> dict:
    """All tensors as float32 numpy arrays (mlx reads bf16/f16/f32 safetensors alike)."""
    import mlx.core as mx
    import numpy as np

    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        fail(hf_dir, "no *.safetensors weights")
    weights = {}
    for file in files:
        for name, value in mx.load(str(file)).items():
            weights[name] = np.array(value.astype(mx.float32))
    return weights


def gguf_tensors(weights: dict, config: dict, where: Path):
    """(gguf name, array) in GGUF layout: permuted Q/K, f16 matrices, f32 vectors; lm_head dropped when tied."""
    import gguf
    import numpy as np

    from ..bases.smollm2 import permute_qk

    n_layers = int(config["num_hidden_layers"])
    heads, kv_heads = int(config["num_attention_heads"]), int(config.get("num_key_value_heads") or config["num_attention_heads"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    tied = config.get("tie_word_embeddings", False)
    for hf_name, array in weights.items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        if tied and hf_name == "lm_head.weight":
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            fail(where, f"tensor {hf_name!r} has no llama GGUF name", "weights")
        if name.endswith("attn_q.weight"):
            array = permute_qk(array, heads)
        elif name.endswith("attn_k.weight"):
            array = permute_qk(array, kv_heads)
        yield name, (array.astype(np.float16) if array.ndim == 2 else array.astype(np.float32))


def llama3_rope_factors(config: dict):
    """Per-frequency RoPE factors of Llama 3.1+ (`rope_freqs.weight`), from Meta's published formula."""
    import numpy as np

    scaling = config["rope_scaling"]
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    base = float(config.get("rope_theta", 10000.0))
    factor, low, high = float(scaling["factor"]), float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    old_len = float(scaling.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_len / high:
            factors.append(1.0)
        elif wavelen > old_len / low:
            factors.append(factor)
        else:
            smooth = (old_len / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


# ---- writing -----------------------------------------------------------------------------------------
def write_f16_gguf(hf_dir: str | Path, out_path: str | Path, name: str | None = None) -> Path:
    """Preflight, write the f16 GGUF, and check llama.cpp's tokenization against the HF tokenizer."""
    import gguf

    hf_dir, out_path = Path(hf_dir), Path(out_path)
    config, tok_json, vocab = preflight(hf_dir)
    weights = load_weights(hf_dir)
    embed_rows = weights["model.embed_tokens.weight"].shape[0] if "model.embed_tokens.weight" in weights else None
    if embed_rows != int(config["vocab_size"]):
        fail(hf_dir / "config.json", f"vocab size mismatch: config says {config['vocab_size']}, embeddings have {embed_rows} rows", "vocab_size")
    tokens, scores, types = _pad_vocab(vocab, embed_rows)
    with _temp_beside(out_path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        _add_hparams(writer, config, name or hf_dir.name)
        writer.add_tokenizer_model(vocab.model)
        if vocab.pre:
            writer.add_tokenizer_pre(vocab.pre)
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        if vocab.add_space_prefix is not None:
            writer.add_add_space_prefix(vocab.add_space_prefix)
        special = gguf.SpecialVocab(hf_dir, load_merges=vocab.model == "gpt2", n_vocab=len(tokens))
        special.chat_template = chat_template(hf_dir)
        special.add_to_gguf(writer, quiet=True)
        eot = _end_of_turn_id(tokens, types)
        if eot is not None and "eot" not in special.special_token_ids:
            writer.add_eot_token_id(eot)
        for tensor_name, array in gguf_tensors(weights, config, hf_dir):
            writer.add_tensor(tensor_name, array)
        if _rope_kind(config) == "llama3":
            writer.add_tensor("rope_freqs.weight", llama3_rope_factors(config))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        check_tokenizer(hf_dir, tmp)
    return out_path


def _rope_kind(config: dict) -> str | None:
    scaling = config.get("rope_scaling") or {}
    return scaling.get("rope_type", scaling.get("type"))


def _add_hparams(writer, config: dict, name: str) -> None:
    import gguf

    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(int(config["vocab_size"]))
    if _rope_kind(config) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(config["rope_scaling"]["factor"]))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)


def _pad_vocab(vocab: Vocab, rows: int) -> tuple[list, list, list]:
    """Embedding rows beyond the tokenizer (padded vocabularies) get unused placeholder tokens, like llama.cpp."""
    import gguf

    extra = rows - len(vocab.tokens)
    tokens = vocab.tokens + [f"[PAD{len(vocab.tokens) + i}]".encode() for i in range(extra)]
    return tokens, vocab.scores + [-1000.0] * extra, vocab.types + [gguf.TokenType.UNUSED] * extra


def _end_of_turn_id(tokens: list[bytes], types: list[int]) -> int | None:
    import gguf

    index = {t: i for i, t in enumerate(tokens)}
    for text in END_OF_TURN_TOKENS:
        i = index.get(text.encode())
        if i is not None and types[i] == gguf.TokenType.CONTROL:
            return i
    return None


def check_tokenizer(hf_dir: Path, gguf_path: Path, probes: tuple[str, ...] = PROBES) -> None:
    """llama.cpp (vocab only) must split every probe exactly as the HF tokenizer does."""
    from llama_cpp import Llama
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    with _quiet_stderr():
        llm = Llama(str(gguf_path), vocab_only=True, verbose=False)
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
    f16 = f16_path_for(out_path)
    if runner == "docker":
        from .docker import convert_with_docker

        convert_with_docker(hf_dir, f16, out_path, quant)
    elif runner == "native":
        write_f16_gguf(hf_dir, f16, name=_student_name(hf_dir))
        quantize(f16, out_path, quant)
    else:
        fail("--runner", f"unknown runner {runner!r} (native or docker)")
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
    p.add_argument("--runner", default="native", choices=["native", "docker"],
                   help="native: here; docker: llama.cpp's own tools in the docker/llamacpp image")
    args = p.parse_args(argv)
    ensure_openblas()
    report = convert(args.src, args.out, args.quant, args.runner)
    for name in ("f16", "quantized"):
        r = report[name]
        types = ", ".join(f"{k}x{v}" for k, v in r["tensor_types"].items())
        print(f"{r['path']}: {r['size_bytes'] / 1e6:.1f} MB, {r['bits_per_weight']} bits/weight ({types})")
    print(f"{args.out}.sha256: written")


if __name__ == "__main__":
    main()
