"""distill.bases.replicas: the pieces that make a replica's tokenizer the real one (seconds; llama.cpp's vocab files
from the pinned source). The whole chain per family is tests/test_families.py (slow)."""

from __future__ import annotations

import json

import pytest

from distill.bases import replicas
from distill.errors import DistillError
from distill.training.train import DEFAULT_LORA_LAYERS


def test_reference_vectors_parse_llama_cpp_test_files():
    vectors = replicas.vocab_vectors("llama-spm")
    assert len(vectors) == 46
    texts = dict(vectors)
    assert texts[""] == [] and texts["Hello world"] == [15043, 3186]
    assert texts["    Hello"] == [268, 15043], "runs of spaces: the case the hand-written writer got wrong"


def test_llama_3_1_special_token_names():
    names = {i: replicas.llama31_special(i) for i in range(128000, 128256)}
    assert names[128004] == "<|finetune_right_pad_id|>" and names[128008] == "<|eom_id|>"
    assert names[128009] == "<|eot_id|>" and names[128010] == "<|python_tag|>"
    assert names[128005] == "<|reserved_special_token_2|>" and names[128011] == "<|reserved_special_token_3|>"
    assert names[128255] == "<|reserved_special_token_247|>" and len(set(names.values())) == 256


def test_gemma_3_says_why_there_is_no_replica():
    with pytest.raises(DistillError, match="gemma3: no faithful replica: .*no Gemma 3 vocabulary"):
        replicas.family("gemma3")


def test_llama_spm_needs_the_real_normalizer_to_match_the_reference():
    from tokenizers import Tokenizer

    vectors = replicas.vocab_vectors("llama-spm")
    loaded = json.loads(replicas.gguf_tokenizer("llama-spm").backend_tokenizer.to_str())
    as_loaded = Tokenizer.from_str(json.dumps(loaded))
    fixed = Tokenizer.from_str(json.dumps(replicas.fix_llama_spm(json.loads(json.dumps(loaded)))))
    assert len(replicas.vector_mismatches(lambda t: as_loaded.encode(t, add_special_tokens=False).ids, vectors)) == 15
    assert replicas.vector_mismatches(lambda t: fixed.encode(t, add_special_tokens=False).ids, vectors) == []


def test_sentencepiece_model_built_from_the_vocab_reproduces_the_reference(tmp_path):
    import sentencepiece as spm

    path = tmp_path / "tokenizer.model"
    path.write_bytes(replicas.sentencepiece_model("llama-spm"))
    sp = spm.SentencePieceProcessor(model_file=str(path))
    assert sp.vocab_size() == 32000 and sp.bos_id() == 1 and sp.eos_id() == 2
    assert replicas.vector_mismatches(sp.encode, replicas.vocab_vectors("llama-spm")) == []


def test_every_family_keeps_rows_quantizable_and_its_structure():
    for fam in replicas.FAMILIES.values():
        tiny = replicas.tiny_config(fam)
        heads, kv = tiny["num_attention_heads"], tiny["num_key_value_heads"]
        assert tiny["hidden_size"] % 32 == 0 and tiny["intermediate_size"] % 32 == 0, fam.key
        assert (kv < heads) == (fam.config["num_key_value_heads"] < fam.config["num_attention_heads"]), fam.key
        assert ("head_dim" in tiny) == ("head_dim" in fam.config), fam.key
        assert tiny["num_hidden_layers"] < DEFAULT_LORA_LAYERS, "the replicas exercise the --num-layers default"
