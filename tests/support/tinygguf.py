"""A 100 KB llama GGUF that answers in a millisecond: for tests that load the router service, not the model.

Why: a real route through the stand-in Ollama on the SmolLM2 GGUF costs 0.5-2 s on a quiet 2-core machine and
20-50 s when other jobs run (measured 2026-12: load average 11, 36-52 s a route), and llama.cpp's grammar
sampler masks all 49,152 vocabulary entries at every step. 400 requests cannot go through that in a test.

This model has a byte-level vocabulary (256 byte tokens, no merges worth the name, ChatML's three control
tokens), one layer whose attention and MLP are zero, and identical token embeddings: every position carries the
same hidden vector, so the output logits are one fixed ranking (`RANKING`, 5 logits apart: the top allowed
token has p ~ 0.99). Under the label grammar, greedy decoding then writes the same valid label for every text,
`{"skill":"battery_status","args":{}}`, with a skill confidence of ~0.9, and stops (`<|im_end|>` ranks second).
It is a real GGUF: the stand-in's `create` checks it and llama.cpp loads it.
"""

from __future__ import annotations

from pathlib import Path

# Highest first: what greedy decoding picks among the tokens the grammar allows.
RANKING = [ord('"'), 258, *b'}{,:_abcdefghijklmnopqrstuvwxyz0123456789 ']
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 256, 257, 258


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what byte-level BPE vocabularies store)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def write_tiny_gguf(path: Path, *, embedding: int = 32, ffn: int = 64, heads: int = 2) -> Path:
    import gguf
    import numpy as np

    table = _bytes_to_unicode()
    # llama.cpp refuses a BPE vocabulary without merges: one merge of two control bytes, never used
    tokens = [table[b] for b in range(256)] + SPECIALS + [table[1] + table[2]]
    types = [1] * 256 + [3] * len(SPECIALS) + [1]
    vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-fixed-ranking")
    writer.add_context_length(4096)
    writer.add_embedding_length(embedding)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(embedding // heads)
    writer.add_vocab_size(vocab)
    writer.add_file_type(0)  # all F32
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([table[1] + " " + table[2]])
    writer.add_bos_token_id(256)
    writer.add_eos_token_id(258)
    writer.add_add_bos_token(False)
    hidden = np.zeros(embedding, np.float32)
    hidden[0] = 1.0
    output = np.zeros((vocab, embedding), np.float32)
    for rank, token in enumerate(RANKING):
        output[token, 0] = 40.0 - 5.0 * rank
    zeros = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    writer.add_tensor("token_embd.weight", np.tile(hidden, (vocab, 1)))
    writer.add_tensor("output_norm.weight", np.ones(embedding, np.float32))
    writer.add_tensor("output.weight", output)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(embedding, np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.0.{name}.weight", zeros(embedding, embedding))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(embedding, np.float32))
    writer.add_tensor("blk.0.ffn_gate.weight", zeros(ffn, embedding))
    writer.add_tensor("blk.0.ffn_up.weight", zeros(ffn, embedding))
    writer.add_tensor("blk.0.ffn_down.weight", zeros(embedding, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
)


def write_tiny_modelfile(path: Path, gguf: Path, system: str = "Route the request to one skill.") -> Path:
    """A Modelfile the stand-in accepts; num_ctx large enough for the byte-level prompt (one token per byte)."""
    path.write_text(f'FROM {gguf}\nTEMPLATE """{CHATML_TEMPLATE}"""\nSYSTEM {system}\nPARAMETER temperature 0\n'
                    'PARAMETER stop "<|im_end|>"\nPARAMETER num_ctx 4096\n')
    return path
