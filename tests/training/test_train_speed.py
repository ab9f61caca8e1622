"""Training speed settings (issue 16): tighter batch padding changes no loss, and validation runs twice."""

from __future__ import annotations

import argparse

import pytest

mx = pytest.importorskip("mlx.core")


def tiny_model():
    from mlx_lm.models import llama

    args = llama.ModelArgs(model_type="llama", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=101,
                           tie_word_embeddings=True)
    mx.random.seed(0)
    model = llama.Model(args)
    mx.eval(model.parameters())
    return model


class Dataset:
    """What CacheDataset gives mlx-lm's iterate_batches: (tokens, prompt offset) per record."""

    def __init__(self, lengths):
        self.rows = [([1 + (i * 7 + j) % 100 for j in range(n)], 20) for i, n in enumerate(lengths)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def process(self, row):  # CacheDataset's hook (ChatDataset tokenizes here)
        return row


def test_trimmed_batches_are_narrower_and_give_the_same_loss():
    from mlx_lm.tuner.trainer import default_loss, iterate_batches

    from distill.training.train import trimmed_batches

    data = Dataset([60, 61, 63, 64, 70, 72, 75, 82] * 2)  # the router chats' range on the demo data
    full = list(iterate_batches(data, 4, 512, seed=3))
    trimmed = list(trimmed_batches(iterate_batches, 8)(data, 4, 512, seed=3))
    model = tiny_model()
    assert len(full) == len(trimmed) == 4
    for (wide, lengths), (narrow, same_lengths) in zip(full, trimmed):
        longest = int(lengths[:, 1].max().item())
        assert narrow.shape[1] == 1 + 8 * -(-longest // 8) < wide.shape[1] or wide.shape[1] == narrow.shape[1]
        assert narrow.shape[1] > longest and mx.array_equal(narrow, wide[:, :narrow.shape[1]])
        assert mx.array_equal(lengths, same_lengths)
        loss_wide, tokens_wide = default_loss(model, wide, lengths)
        loss_narrow, tokens_narrow = default_loss(model, narrow, lengths)
        assert tokens_wide.item() == tokens_narrow.item()
        assert loss_narrow.item() == pytest.approx(loss_wide.item(), rel=1e-5)
    assert sum(b.shape[1] for b, _ in trimmed) < sum(b.shape[1] for b, _ in full)


def test_mlx_lm_gets_no_validation_passes_in_between():
    from distill.training.train import build_parser, lora_namespace

    args = build_parser("router").parse_args(["--base", "b", "--train_jsonl", "r.jsonl", "--out", "o"])
    settings = lora_namespace(args, n_layers=30, iters=60, adapter_dir=argparse.Namespace(), resume_file=None)
    assert settings.steps_per_eval == 60  # mlx-lm evaluates at it == 1 and it == iters regardless


def test_the_final_validation_loss_is_mlx_lms_own_evaluate():
    from mlx_lm.tuner.datasets import CacheDataset
    from mlx_lm.tuner.trainer import evaluate

    from distill.training.train import validation_loss

    data = Dataset([60, 61, 63, 64, 70, 72, 75, 82])
    model = tiny_model()
    settings = argparse.Namespace(batch_size=4, max_seq_length=512)
    expected = evaluate(model, CacheDataset(data), batch_size=4, num_batches=-1, max_seq_length=512)
    assert validation_loss(model, data, settings) == pytest.approx(float(expected), rel=1e-5)
