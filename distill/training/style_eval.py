"""Evaluate the style student against its base: held-out loss and perplexity, and the persona's length rule.

    python train/eval_style.py --student models/style_student_mlx
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from ..blas import default_dtype, ensure_openblas
from ..errors import cli, fail
from ..fileio import read_jsonl, write_json
from ..student import StudentSpec, is_student
from .datasets import style_chat
from .train import build_datasets


MAX_SENTENCES, MAX_WORDS = 2, 40  # the persona's rule (config/persona.md)


def complies_with_length(answer: str) -> bool:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s]
    return bool(answer.strip()) and len(sentences) <= MAX_SENTENCES and len(answer.split()) <= MAX_WORDS


def held_out_loss(model, tokenizer, chats: list[dict]) -> float:
    """Mean per-token loss on the assistant turns (prompt masked, as in training)."""
    from mlx_lm.tuner.datasets import CacheDataset
    from mlx_lm.tuner.trainer import evaluate

    return evaluate(model, CacheDataset(build_datasets(tokenizer, chats)), batch_size=1, num_batches=-1)


def evaluate_style(student_dir: str | Path, records: list[dict], max_tokens: int = 80) -> dict:
    """Held-out loss/perplexity of the student vs its base, and how often its answers keep the length rule."""
    import mlx.core as mx
    from mlx_lm import generate, load

    spec = StudentSpec.load(student_dir)
    chats = [style_chat(r, spec.system_prompt) for r in records]
    results = {}
    for name, adapters in (("untrained base", None), ("mlx student", student_dir)):
        model, tokenizer = load(spec.base, adapter_path=str(adapters) if adapters else None)
        if default_dtype() == "float32":
            model.set_dtype(mx.float32)
        loss = held_out_loss(model, tokenizer, chats)
        answers = []
        for chat in chats:
            prompt = tokenizer.apply_chat_template(chat["messages"][:-1], add_generation_prompt=True, tokenize=False)
            answers.append(generate(model, tokenizer, prompt, max_tokens=max_tokens))
        results[name] = {
            "n": len(records),
            "loss": loss,
            "perplexity": math.exp(loss),
            "length_compliance": sum(map(complies_with_length, answers)) / max(1, len(answers)),
            "examples": [{"prompt": r["prompt"], "answer": a} for r, a in list(zip(records, answers))[:5]],
        }
    return results


@cli
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Evaluate the style student against its base on the held-out split.")
    p.add_argument("--student", type=Path, default=Path("models/style_student_mlx"))
    p.add_argument("--limit", type=int, help="evaluate the first N records only")
    p.add_argument("--out", type=Path, default=Path("reports/style_eval.json"))
    args = p.parse_args(argv)
    ensure_openblas()
    if not is_student(args.student):
        fail(args.student, "not a trained student (no student.json); run make train-style", "--student")
    results = evaluate_style(args.student, read_jsonl(args.student / "test.jsonl")[: args.limit])
    write_json(args.out, {"student": str(args.student), "results": results})
    print("| model | n | loss | perplexity | length rule kept |\n|---|---|---|---|---|")
    for name, m in results.items():
        print(f"| {name} | {m['n']} | {m['loss']:.3f} | {m['perplexity']:.2f} | {m['length_compliance']:.2f} |")
    print(f"\nreport: {args.out}")


if __name__ == "__main__":
    main()
