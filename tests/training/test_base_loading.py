"""Loading a base for training: defaults that fit any base, RoPE keys transformers 5 writes, and chats tokenized
as llama.cpp will tokenize them at serving time (fast: tiny tokenizers built here, no model)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from distill.bases import rope_config_compat, serving_tokenization
from distill.errors import DistillError
from distill.training.train import DEFAULT_LORA_LAYERS, lora_layers, lora_namespace

ZEPHYR = ("{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")


# ---- --num-layers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("requested,n_layers,expected", [
    (None, 2, 2), (None, 30, DEFAULT_LORA_LAYERS), (-1, 30, 30), (8, 30, 8), (None, 16, 16),
])
def test_lora_layers_default_fits_any_base(requested, n_layers, expected):
    assert lora_layers(requested, n_layers) == expected


def test_explicit_num_layers_beyond_the_base_is_still_an_error(tmp_path):
    args = argparse.Namespace(num_layers=40)
    with pytest.raises(DistillError, match="--num-layers: 40 is outside 1..30"):
        lora_namespace(args, 30, 10, tmp_path, None)


# ---- RoPE keys -------------------------------------------------------------------------------------------
def _config(tmp_path: Path, **config) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_rope_parameters_of_transformers_5_become_the_keys_mlx_lm_reads(tmp_path):
    llama3 = {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert rope_config_compat(_config(tmp_path, model_type="llama", rope_parameters=llama3)) == {
        "rope_theta": 500000.0, "rope_scaling": {k: v for k, v in llama3.items() if k != "rope_theta"}}
    plain = {"rope_theta": 1000000.0, "rope_type": "default"}
    assert rope_config_compat(_config(tmp_path, model_type="qwen2", rope_parameters=plain)) == {"rope_theta": 1000000.0}


def test_classic_rope_keys_are_left_alone(tmp_path):
    assert rope_config_compat(_config(tmp_path, model_type="llama", rope_theta=10000.0, rope_scaling=None)) == {}
    assert rope_config_compat(_config(tmp_path, model_type="llama")) == {}


# ---- chats tokenized as llama.cpp will ---------------------------------------------------------------------
def llama2_style_dir(tmp_path: Path) -> Path:
    """A Llama-2-style repo in miniature: byte-fallback BPE whose tokenizer.json prepends '▁' with a normalizer
    (as TinyLlama's does) and a tokenizer_config.json naming `LlamaTokenizer`, legacy false, add_bos_token."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors

    pieces = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], "▁", "a", "▁a", "▁▁", "|", "<", ">",
              "s", "y", "t", "e", "m", "u", "r", "\n"]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("▁", "a"), ("▁", "▁")], byte_fallback=True, fuse_unk=True,
                               unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])  # as Llama 2's tokenizer.json
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "chat_template": ZEPHYR}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return tmp_path


def shipped_ids(model_dir: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def test_the_shipped_tokenizer_json_pipeline_is_used(tmp_path):
    from transformers import AutoTokenizer

    model_dir = llama2_style_dir(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    text = "  a</s>\na"  # leading spaces, and text right after a special token
    if tokenizer.encode(text, add_special_tokens=False) == shipped_ids(model_dir, text):
        pytest.skip("this transformers keeps tokenizer.json's pipeline itself; nothing to restore")
    serving_tokenization(tokenizer)
    assert tokenizer.encode(text, add_special_tokens=False) == shipped_ids(model_dir, text)


def test_chats_get_the_bos_llama_cpp_adds_once(tmp_path):
    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from transformers import AutoTokenizer

    model_dir = llama2_style_dir(tmp_path)
    wrapper = TokenizerWrapper(AutoTokenizer.from_pretrained(str(model_dir)))
    serving_tokenization(wrapper)
    messages = [{"role": "system", "content": "a"}, {"role": "user", "content": "a a"}]
    ids = wrapper.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    text = wrapper.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ids == [1, *shipped_ids(model_dir, text)], "BOS first, once, then the text as tokenizer.json splits it"
    assert wrapper.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == text
    serving_tokenization(wrapper)  # idempotent: loading twice never doubles BOS
    assert wrapper.apply_chat_template(messages, add_generation_prompt=True, return_dict=False) == ids


def test_a_template_that_renders_bos_itself_gets_no_second_one(tmp_path):
    from transformers import AutoTokenizer

    model_dir = llama2_style_dir(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.chat_template = "{{ bos_token }}" + ZEPHYR
    serving_tokenization(tokenizer)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "a"}], return_dict=False)
    assert ids[0] == 1 and ids[1] != 1


QWEN3_LIKE = (  # Qwen3's switch, reduced: the last answer gets an empty think block; the prompt only when asked
    "{% for m in messages %}{% if m['role'] == 'assistant' and loop.last %}"
    "{{ '<|im_start|>assistant\n<think>\n\n</think>\n\n' + m['content'] + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)


def test_students_never_think_the_answer_trained_is_the_label(tmp_path):
    """mlx-lm passes enable_thinking=True for a vocabulary with <think>: the prompt would end before the empty think
    block and the answer trained would start with it, which the label grammar forbids at serving time."""
    from mlx_lm.tokenizer_utils import TokenizerWrapper
    from mlx_lm.tuner.datasets import ChatDataset
    from transformers import AutoTokenizer

    from distill.prompting import chat_messages, render_chat

    model_dir = llama2_style_dir(tmp_path)
    hf = AutoTokenizer.from_pretrained(str(model_dir))
    hf.add_special_tokens({"additional_special_tokens": ["<think>", "</think>", "<|im_start|>", "<|im_end|>"]})
    hf.chat_template = QWEN3_LIKE
    wrapper = TokenizerWrapper(hf)
    assert wrapper.has_thinking, "the case: mlx-lm would render with enable_thinking=True"
    serving_tokenization(wrapper)
    chat = {"messages": chat_messages("a", "a a", "a")}
    ids, offset = ChatDataset([chat], wrapper, chat_key="messages", mask_prompt=True).process(chat)
    assert hf.decode(ids[offset:]).startswith("a<|im_end|>"), "the loss covers the label only, not a think block"
    served = render_chat(QWEN3_LIKE, chat_messages("a", "a a"))  # what export and the runtime render
    assert served.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert ids[:offset] == [1, *hf.encode(served, add_special_tokens=False)], "training's prompt is the served one"


LLAMA3_DATE = ("{%- if not date_string is defined %}{%- if strftime_now is defined %}"
               "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = '26 Jul 2024' %}"
               "{%- endif %}{%- endif %}{{ 'Today Date: ' + date_string + '\n' }}"
               "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}")


def test_llama_3_prompts_show_one_date_in_training_export_and_runtime(tmp_path):
    """Without a fixed date_string, training, the Modelfile and each request render their own day."""
    from transformers import AutoTokenizer

    from distill.prompting import TEMPLATE_VARIABLES, chat_messages, render_chat

    served = render_chat(LLAMA3_DATE, chat_messages("a", "a"), add_generation_prompt=False)
    assert served.startswith(f"Today Date: {TEMPLATE_VARIABLES['date_string']}\n")
    tokenizer = AutoTokenizer.from_pretrained(str(llama2_style_dir(tmp_path)))
    tokenizer.chat_template = LLAMA3_DATE
    serving_tokenization(tokenizer)
    assert tokenizer.apply_chat_template(chat_messages("a", "a"), tokenize=False) == served
