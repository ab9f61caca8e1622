"""Fine-tune a student with mlx-lm's own LoRA trainer (router or style), from teacher-labeled JSONL.

The output dir holds mlx-lm's adapter files plus student.json (everything export and serving need to
render exactly what training saw), the held-out splits, metrics.csv and loss.png. Work happens in
`<out>.partial` and is swapped in at the end, so a failed or interrupted run never clobbers a student;
Ctrl-C leaves a checkpoint there that `--resume` continues.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import math
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

from ..bases import load_mlx_base
from ..blas import default_dtype, ensure_openblas
from ..errors import DistillError, cli, fail
from ..fileio import (atomic_writer, check_writable, read_json, read_jsonl, swap_in, utc_now, write_json,
                      write_jsonl)
from ..overrides import Fixes, overrides_path_for
from ..prompting import STUDENT_ROUTER_PROMPT, STUDENT_STYLE_PROMPT, normalize_text
from ..skills import DEFAULT_CATALOG, load_catalog
from ..student import StudentSpec, copy_catalog, git_commit, is_student
from . import datasets

PROGRESS_FILE = "progress.json"
DEFAULT_LORA_LAYERS = 16  # mlx-lm's own default, capped at the base's layer count (lora_layers)


def build_parser(kind: str) -> argparse.ArgumentParser:
    defaults = {"router": (2, 8, 2e-4), "style": (1, 4, 2e-4)}[kind]
    seed_script = {"router": "train/finetune_router_mlx.py", "style": "train/finetune_style_mlx.py"}[kind]
    p = argparse.ArgumentParser(prog=f"python {seed_script}", description=f"LoRA-train the {kind} student with mlx-lm.")
    p.add_argument("--base", required=True, help="Hugging Face id (Mac) or local model dir")
    p.add_argument("--train_jsonl", required=True, type=Path, help=f"data/{'routes' if kind == 'router' else 'style'}.jsonl")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--epochs", type=float, default=defaults[0])
    p.add_argument("--lr", type=float, default=defaults[2])
    p.add_argument("--batch", type=int, default=defaults[1])
    p.add_argument("--iters", type=int, help="override --epochs with an exact iteration count")
    p.add_argument("--fine-tune-type", choices=["lora", "dora", "full"], default="lora")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-scale", type=float, default=20.0)
    p.add_argument("--num-layers", type=int, default=None,
                   help=f"layers to adapt, counted from the top (-1: all; default: {DEFAULT_LORA_LAYERS} or all when "
                        "the base has fewer)")
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grad-checkpoint", action="store_true")
    p.add_argument("--valid-frac", type=float, default=0.1)
    p.add_argument("--test-frac", type=float, default=0.1)
    if kind == "router":
        p.add_argument("--split", choices=["families", "records"], default="families",
                       help="families (default): a phrasing and its paraphrases stay in one split, so calibration "
                            "and the gate see phrasings training never saw; records: each record on its own (the "
                            "split of students trained before)")
    p.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    p.add_argument("--holdout", type=Path, help="records (JSONL with text/prompt) never to train on: they join the "
                   "test split (the deployed student's fixed set, docs/loop.md)")
    p.add_argument("--overrides", type=Path, help="a person's fixes of the labels (router; default: overrides.jsonl "
                   "beside --train_jsonl, written by make review)")
    p.add_argument("--name", default=f"{kind}_student")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--force", action="store_true", help="replace a student already in --out")
    return p


def rank_and_size() -> tuple[int, int]:
    import mlx.core as mx

    world = mx.distributed.init()
    return world.rank(), world.size()


# ---- data ---------------------------------------------------------------------------------------------

def prepare_data(kind: str, args: argparse.Namespace) -> tuple[dict[str, list[dict]], str, dict]:
    """Splits of raw records, the system prompt and, for a router, the catalog it learns and the overrides applied."""
    if kind == "router":
        catalog = load_catalog(args.catalog)
        fixes = Fixes(args.overrides or overrides_path_for(args.train_jsonl), catalog)
        records = datasets.load_routes(args.train_jsonl, catalog, fixes)
        if fixes.applied.sha256:
            print(fixes.applied.summary(), file=sys.stderr)
        splits = datasets.split_records(records, key="text", group="skill", valid_frac=args.valid_frac,
                                        test_frac=args.test_frac, seed=args.seed,
                                        holdout=holdout_texts(args.holdout, "text"),
                                        families=args.split == "families")
        applied = fixes.applied.to_dict() if fixes.applied.sha256 else None  # recorded in student.json
        return splits, STUDENT_ROUTER_PROMPT, {"catalog": catalog, "overrides": applied}
    records = datasets.load_style(args.train_jsonl)
    splits = datasets.split_records(records, key="prompt", group=None, valid_frac=args.valid_frac,
                                    test_frac=args.test_frac, seed=args.seed,
                                    holdout=holdout_texts(args.holdout, "prompt"))
    return splits, STUDENT_STYLE_PROMPT, {}


def holdout_texts(path: Path | None, field: str) -> frozenset[str]:
    """Normalized texts of the records in `path` (none without --holdout)."""
    if path is None:
        return frozenset()
    texts = set()
    for number, record in enumerate(read_jsonl(path), 1):
        if not isinstance(record.get(field), str):
            fail(f"{path}:{number}", "missing or not a string", field)
        texts.add(normalize_text(record[field]))
    return frozenset(texts)


def chat_records(kind: str, records: list[dict], system: str) -> list[dict]:
    to_chat = datasets.router_chat if kind == "router" else datasets.style_chat
    return [to_chat(r, system) for r in records]


PAD_TO = 8  # batch width: 1 + a multiple of this (mlx-lm pads to 1 + a multiple of 32)


def trimmed_batches(iterate_batches, pad_to: int = PAD_TO):
    """mlx-lm's batches, cut to 1 + the next multiple of `pad_to` above the longest sequence in the batch.

    mlx-lm pads every batch to 1 + a multiple of 32. Router chats are 60-82 tokens, so its batches are 65 or 97
    wide: 60,816 token slots for 45,880 real tokens on the demo's 660 records (+33%). Multiples of 8 leave
    48,784 (+6%) for 4 batch shapes to compile instead of 2. Only padding columns are cut: the loss masks them,
    so the loss and the gradients are those of the untrimmed batch.
    """
    def iterate(*args, **kwargs):
        for batch, lengths in iterate_batches(*args, **kwargs):
            longest = int(lengths[:, 1].max().item())
            width = min(batch.shape[1], 1 + pad_to * -(-longest // pad_to))
            yield batch[:, :width], lengths

    return iterate


def validation_loss(model, dataset, lora_args) -> float:
    """mlx-lm's own evaluate() over the whole validation split, with the training's padding."""
    from mlx_lm.tuner.datasets import CacheDataset
    from mlx_lm.tuner.trainer import evaluate, iterate_batches

    return float(evaluate(model, CacheDataset(dataset), batch_size=min(lora_args.batch_size, len(dataset)),
                          num_batches=-1, max_seq_length=lora_args.max_seq_length,
                          iterate_batches=trimmed_batches(iterate_batches)))


@contextlib.contextmanager
def tighter_padding(pad_to: int = PAD_TO):
    """Make mlx_lm.lora.train_model use trimmed_batches (it calls trainer.train without an iterate_batches)."""
    import mlx_lm.lora as lora
    from mlx_lm.tuner import trainer

    original = lora.train
    lora.train = functools.partial(trainer.train, iterate_batches=trimmed_batches(trainer.iterate_batches, pad_to))
    try:
        yield
    finally:
        lora.train = original


def build_datasets(tokenizer, chats: list[dict]):
    """mlx-lm's ChatDataset with prompt masking: loss only on the assistant turn."""
    from mlx_lm.tuner.datasets import ChatDataset

    return ChatDataset(chats, tokenizer, chat_key="messages", mask_prompt=True)


# ---- model --------------------------------------------------------------------------------------------

def load_base(base: str):
    """The base's mlx-lm model and tokenizer; it must have a chat template (the student answers in chat)."""
    model, tokenizer = load_mlx_base(base)
    if tokenizer.chat_template is None:
        fail(base, "the base has no chat template", "--base")
    return model, tokenizer


def lora_layers(requested: int | None, n_layers: int) -> int:
    """How many layers (from the top) get LoRA: as asked, -1 for all, by default mlx-lm's 16 capped at the base's.

    mlx-lm 0.32 defaults to 16 and stops on a smaller base ("Requested to train 16 layers but the model only has
    2 layers"); a default must fit every base (SmolLM2-135M has 30 layers, Qwen3-0.6B 28, the test replicas 2).
    An explicit number larger than the base is still an error.
    """
    if requested is None:
        return min(DEFAULT_LORA_LAYERS, n_layers)
    return n_layers if requested == -1 else requested


def lora_namespace(args: argparse.Namespace, n_layers: int, iters: int, adapter_dir: Path, resume_file: Path | None):
    """The argument namespace mlx_lm.lora.train_model expects (its CONFIG_DEFAULTS plus our flags)."""
    from mlx_lm.lora import CONFIG_DEFAULTS

    num_layers = lora_layers(args.num_layers, n_layers)
    if not 0 < num_layers <= n_layers:
        fail("--num-layers", f"{args.num_layers} is outside 1..{n_layers} (the base has {n_layers} layers)")
    settings = dict(CONFIG_DEFAULTS)
    settings.update(
        model=args.base,
        data=str(args.train_jsonl),  # what mlx-lm's run header and adapter_config.json show (not its default)
        train=True,
        fine_tune_type=args.fine_tune_type,
        seed=args.seed,
        num_layers=num_layers,
        batch_size=args.batch,
        iters=iters,
        val_batches=-1,
        learning_rate=args.lr,
        steps_per_report=max(1, min(10, iters // 10)),
        # Validation passes cost 20-35 s each on 2 cores (66 records) and only draw the loss curve; 5 of them
        # were ~2.5 of the demo's 12 training minutes. train_student validates once, after the last step (mlx-lm
        # gets no validation set); this is what bench/train_speed.py hands `mlx_lm lora` (first and last only).
        steps_per_eval=iters,
        save_every=max(25, iters // 4),
        adapter_path=str(adapter_dir),
        resume_adapter_file=str(resume_file) if resume_file else None,
        max_seq_length=args.max_seq_len,
        grad_checkpoint=args.grad_checkpoint,
        lora_parameters={"rank": args.lora_rank, "dropout": 0.0, "scale": args.lora_scale},
        mask_prompt=True,
    )
    return types.SimpleNamespace(**settings)


class MetricsRecorder:
    """mlx-lm TrainingCallback: collects losses and throughput for metrics.csv / loss.png."""

    def __init__(self) -> None:
        self.rows: dict[int, dict] = {}
        self.last_iteration = 0

    def on_train_loss_report(self, info: dict) -> None:
        row = self.rows.setdefault(info["iteration"], {"step": info["iteration"]})
        row.update(train_loss=info["train_loss"], tokens_per_sec=info["tokens_per_second"])
        self.last_iteration = info["iteration"]

    def on_val_loss_report(self, info: dict) -> None:
        self.rows.setdefault(info["iteration"], {"step": info["iteration"]})["valid_loss"] = info["val_loss"]

    def write(self, out_dir: Path, offset: int = 0) -> None:
        fields = ["step", "train_loss", "valid_loss", "tokens_per_sec"]
        with atomic_writer(out_dir / "metrics.csv") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for step in sorted(self.rows):
                writer.writerow({**{f: "" for f in fields}, **self.rows[step], "step": step + offset})
        plot_losses(out_dir / "metrics.csv", out_dir / "loss.png")


def plot_losses(metrics_csv: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(metrics_csv.open()))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for column, style in (("train_loss", "-o"), ("valid_loss", "-s")):
        points = [(int(r["step"]), float(r[column])) for r in rows if r[column]]
        if points:
            ax.plot(*zip(*points), style, label=column.replace("_", " "), markersize=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(png.parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_writer(png, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


# ---- output dir ---------------------------------------------------------------------------------------

def staging_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def check_output(out: Path, resume: bool, force: bool) -> Path | None:
    """Refuse to clobber; return the adapter file to resume from, if any."""
    check_writable(out, "--out", directory=True)  # a file there, under a file, read-only: one line
    staging = staging_dir(out)
    if resume:
        for candidate in (staging, out):
            if (candidate / "adapters.safetensors").is_file():
                return candidate / "adapters.safetensors"
        fail(out, "nothing to resume (no adapters.safetensors here or in .partial)", "--resume")
    if is_student(out) and not force:
        try:
            other = StudentSpec.load(out)
            what = f" (base {other.base!r}, {other.created})"
        except DistillError:  # an unreadable student.json is still somebody's student
            what = ""
        fail(out, f"already holds a student{what}; pass --force to replace it", "--out")
    if out.exists() and not is_student(out) and any(out.iterdir()) and not force:
        fail(out, "exists and is not a student dir; pass --force to replace it", "--out")
    if staging.exists() and not force:
        fail(staging, "an interrupted run is here: --resume to continue it or --force to start over", "--out")
    return None


def check_settings(args: argparse.Namespace, n_layers: int, n_train: int, n_valid: int) -> None:
    """Every setting mlx-lm would refuse, checked before --out is touched: a run refused here leaves no .partial
    (the next run would be told to --resume a run that never trained)."""
    num_layers = lora_layers(args.num_layers, n_layers)
    if not 0 < num_layers <= n_layers:
        fail("--num-layers", f"{args.num_layers} is outside 1..{n_layers} (the base has {n_layers} layers)")
    positive = {"--batch": args.batch, "--lr": args.lr, "--epochs": args.epochs, "--lora-rank": args.lora_rank,
                "--max-seq-len": args.max_seq_len, "--iters": 1 if args.iters is None else args.iters}
    for flag, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            fail(flag, f"{value} must be a positive number")
    if not math.isfinite(args.lora_scale):
        fail("--lora-scale", f"{args.lora_scale} is not a number")
    for split, size in (("training", n_train), ("validation", n_valid)):
        if args.batch > size:
            fail("--batch", f"{args.batch} is more than the {size} {split} examples (mlx-lm needs a full batch)")


# ---- recipe -------------------------------------------------------------------------------------------

def train_student(kind: str, args: argparse.Namespace) -> Path:
    import mlx.core as mx
    import numpy as np
    from mlx_lm.lora import train_model

    np.random.seed(args.seed)  # mlx-lm shuffles batches with numpy: same seed, same run
    rank, world_size = rank_and_size()
    splits, system, extra = prepare_data(kind, args)
    if not splits["train"]:
        fail(args.train_jsonl, "no training examples after the held-out split")
    model, tokenizer = load_base(args.base)  # before touching --out: a bad base leaves nothing behind
    check_settings(args, len(model.layers), len(splits["train"]), len(splits["valid"]) or 1)  # so does a bad setting
    if rank == 0:
        resume_file = check_output(args.out, args.resume, args.force)
        staging = staging_dir(args.out)
        if resume_file and resume_file.parent != staging:
            shutil.copytree(resume_file.parent, staging, dirs_exist_ok=True)
            resume_file = staging / resume_file.name
        if not resume_file:
            shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True, exist_ok=True)
    else:  # other ranks compute the same steps but own no files (mlx-lm still writes its config there)
        resume_file = None
        staging = Path(tempfile.mkdtemp(prefix=f"rank{rank}-"))

    dtype = default_dtype()
    if dtype == "float32":
        model.set_dtype(mx.float32)  # CPU: half precision has no BLAS path

    total_iters = args.iters or max(1, math.ceil(args.epochs * len(splits["train"]) / args.batch))
    done = read_json(staging / PROGRESS_FILE)["iterations"] if resume_file and (staging / PROGRESS_FILE).is_file() else 0
    iters = max(1, total_iters - done)
    chats = {name: chat_records(kind, records, system) for name, records in splits.items()}
    if rank == 0:
        for name, records in splits.items():
            write_jsonl(staging / f"{name}.jsonl", records)
    lora_args = lora_namespace(args, len(model.layers), iters, staging, resume_file)
    recorder = MetricsRecorder()
    valid = chats["valid"] or chats["train"][:1]
    started = time.time()
    try:
        with tighter_padding():
            # No validation inside mlx-lm's loop (it would run at iteration 1 too: the untrained loss, a full
            # pass of 20-35 s on 2 cores, 8 minutes under load 15); one pass after the last step instead.
            train_model(lora_args, model, build_datasets(tokenizer, chats["train"]), [], recorder)
        recorder.on_val_loss_report({"iteration": recorder.last_iteration,
                                     "val_loss": validation_loss(model, build_datasets(tokenizer, valid), lora_args)})
    except KeyboardInterrupt:
        if rank == 0:
            save_checkpoint(model, staging, done + recorder.last_iteration, total_iters)
            recorder.write(staging, offset=done)
        print(f"interrupted: checkpoint in {staging}; re-run with --resume to continue", file=sys.stderr)
        raise
    if world_size > 1:
        final = recorder.rows[max(recorder.rows)].get("train_loss")
        print(f"rank {rank}/{world_size}: final train loss {final:.6f}", flush=True)
    if rank != 0:
        shutil.rmtree(staging, ignore_errors=True)
        return args.out
    recorder.write(staging, offset=done)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("resume", "force")}
    catalog = extra.get("catalog")
    student = StudentSpec(
        name=args.name,
        kind=kind,
        base=args.base,
        system_prompt=system,
        chat_template=tokenizer.chat_template,
        stop=[tokenizer.eos_token],
        catalog=copy_catalog(catalog, staging) if catalog else None,
        catalog_hash=catalog.hash if catalog else None,
        splits={name: len(records) for name, records in splits.items()},
        settings={**settings, "num_layers": lora_args.num_layers, "iters": total_iters, "dtype": dtype,
                  "world_size": world_size},
        train_seconds=round(time.time() - started, 1),
        git_commit=git_commit(),
        created=utc_now(),
        extra={"overrides": extra["overrides"]} if extra.get("overrides") else {},
    )
    (staging / PROGRESS_FILE).unlink(missing_ok=True)
    for checkpoint in staging.glob("*_adapters.safetensors"):
        checkpoint.unlink()  # mlx-lm's periodic snapshots; adapters.safetensors is the result
    student.save(staging)
    swap_in(staging, args.out)
    return args.out


def save_checkpoint(model, staging: Path, iterations: int, total: int) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    mx.save_safetensors(str(staging / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))
    write_json(staging / PROGRESS_FILE, {"iterations": iterations, "total": total})


def main(kind: str = "router", argv: list[str] | None = None) -> None:
    @cli
    def run() -> None:
        args = build_parser(kind).parse_args(argv)
        ensure_openblas()
        out = train_student(kind, args)
        if rank_and_size()[0] == 0:
            student = StudentSpec.load(out)
            print(f"{kind} student written to {out} (splits {student.splits}, {student.train_seconds} s)")

    run()


def router_main(argv: list[str] | None = None) -> None:
    main("router", argv)


def style_main(argv: list[str] | None = None) -> None:
    main("style", argv)


if __name__ == "__main__":
    router_main()
