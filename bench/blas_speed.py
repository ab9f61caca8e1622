#!/usr/bin/env python3
"""MLX on Linux CPU with and without the system OpenBLAS: matmul GFLOP/s and LoRA training tokens/s.

The `mlx[cpu]` wheel links a slow reference BLAS; LD_PRELOAD of the system OpenBLAS replaces its sgemm. Both
sides run in their own process of this script (`--worker`), because LD_PRELOAD only acts at process start:
"openblas" gets `distill.blas.env_with_openblas`, "reference" gets DISTILL_BLAS=reference and no preload. Each
worker reports which BLAS its process really mapped (from /proc/self/maps), so a ratio can't silently compare a
library with itself. Measured per side: float32 matmul GFLOP/s (what training runs on CPU), float16 matmul for
contrast (no BLAS path: the same either way), and LoRA training tokens/s of the offline base with mlx-lm's own
trainer on the catalog's example requests, prompt masked as in distill.training.train (median of the per-step rates
mlx-lm reports, which count the loss tokens, i.e. the assistant turn; the first step is left out: it compiles).
Prints a Markdown table, then one JSON line (`--json`: the JSON line only).

    python bench/blas_speed.py [--sizes 1024 2048] [--train-iters 3] [--train-batch 2] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.benchreport import Row  # noqa: E402
from distill.blas import OPT_OUT, env_with_openblas, openblas_path  # noqa: E402

DEFAULT_BASE = ROOT / "models" / "base-smollm2-135m"
F16_SIZE = 1024  # half precision runs ~5 GFLOP/s on either side: one size shows it


# ---- worker: runs inside one side's process ----------------------------------------------------------

def blas_in_use() -> str:
    """Which BLAS this process mapped: the preloaded OpenBLAS, or the wheel's own."""
    if sys.platform == "darwin":
        return "accelerate"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    return "openblas" if "libopenblas" in maps else "reference"


def matmul_gflops(n: int, dtype: str, min_seconds: float) -> float:
    import mlx.core as mx

    a = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    b = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    mx.eval(a @ b)  # warm-up: thread pools, first-touch of the output
    reps, started = 0, time.perf_counter()
    while reps == 0 or (time.perf_counter() - started < min_seconds and reps < 50):
        mx.eval(a @ b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - started) / 1e9


class StepRates:
    """mlx-lm TrainingCallback: the tokens/s it reports for each step."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_loss_report(self, info: dict) -> None:
        self.rates.append(info["tokens_per_second"])

    def on_val_loss_report(self, info: dict) -> None:
        pass


def lora_tokens_per_s(base: Path, iters: int, batch: int) -> dict:
    """A few LoRA steps on the catalog examples with mlx-lm's trainer (float32, rank 8, 16 layers)."""
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx_lm import load
    from mlx_lm.tuner.datasets import CacheDataset
    from mlx_lm.tuner.trainer import TrainingArgs, train
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from distill.training.datasets import router_chat
    from distill.skills import load_catalog
    from distill.training.train import build_datasets

    catalog = load_catalog()
    records = [{"text": e["text"], "skill": s.name, "args": e.get("args") or {}}
               for s in catalog.skills.values() for e in s.examples]
    model, tokenizer = load(str(base))
    model.set_dtype(mx.float32)
    model.freeze()
    linear_to_lora_layers(model, min(16, len(model.layers)), {"rank": 8, "dropout": 0.0, "scale": 20.0})
    steps = StepRates()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArgs(batch_size=batch, iters=iters, steps_per_report=1, steps_per_eval=10**9,
                            steps_per_save=10**9, max_seq_length=512, adapter_file=str(Path(tmp) / "a.safetensors"))
        dataset = CacheDataset(build_datasets(tokenizer, [router_chat(r) for r in records]))
        train(model, optim.Adam(learning_rate=2e-4), dataset, None, args=args, training_callback=steps)
    measured = steps.rates[1:] or steps.rates  # step 1 compiles the graph
    return {"tokens_per_s": statistics.median(measured), "steps": len(steps.rates), "batch": batch}


def worker(args: argparse.Namespace) -> None:
    result = {"blas": blas_in_use(), "matmul_f32_gflops": {}, "matmul_f16_gflops": {}}
    for n in args.sizes:
        result["matmul_f32_gflops"][str(n)] = matmul_gflops(n, "float32", args.min_seconds)
    result["matmul_f16_gflops"][str(F16_SIZE)] = matmul_gflops(F16_SIZE, "float16", args.min_seconds)
    if args.train_iters > 0:
        result["lora"] = lora_tokens_per_s(args.base, args.train_iters, args.train_batch)
    print(json.dumps(result))


# ---- parent: one process per side ----------------------------------------------------------------------

def side_env(side: str) -> dict[str, str]:
    """The environment of one side: OpenBLAS preloaded, or explicitly the wheel's reference BLAS."""
    env = {k: v for k, v in os.environ.items() if k not in (OPT_OUT, "_DISTILL_REEXEC")}
    lib = openblas_path()
    preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p and "libopenblas" not in p]
    env["LD_PRELOAD"] = ":".join(preload)
    env["PYTHONPATH"] = ":".join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if side == "openblas" and lib:
        return env_with_openblas(env)
    env[OPT_OUT] = "reference"
    return env


def run_side(side: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", "--sizes", *map(str, args.sizes), "--min-seconds",
               str(args.min_seconds), "--train-iters", str(args.train_iters), "--train-batch", str(args.train_batch),
               "--base", str(args.base)]
    started = time.perf_counter()
    done = subprocess.run(command, env=side_env(side), capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"{side} worker failed (exit {done.returncode}): {tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def ratio(fast: float | None, slow: float | None) -> float | None:
    return round(fast / slow, 2) if fast and slow else None


def summarize(sides: dict[str, dict]) -> dict:
    """Per measure: openblas value, reference value and their ratio."""
    fast, slow = sides.get("openblas", {}), sides.get("reference", {})
    rows = []
    for key, label in (("matmul_f32_gflops", "float32 matmul {n}², GFLOP/s"),
                       ("matmul_f16_gflops", "float16 matmul {n}², GFLOP/s (contrast)")):
        for n in (slow.get(key) or fast.get(key) or {}):
            a, b = fast.get(key, {}).get(n), slow.get(key, {}).get(n)
            rows.append({"measure": label.format(n=n), "openblas": a, "reference": b, "ratio": ratio(a, b)})
    if "lora" in slow or "lora" in fast:
        a, b = fast.get("lora", {}).get("tokens_per_s"), slow.get("lora", {}).get("tokens_per_s")
        batch = (slow.get("lora") or fast.get("lora"))["batch"]
        rows.append({"measure": f"LoRA training (batch {batch}), tokens/s", "openblas": a, "reference": b,
                     "ratio": ratio(a, b)})
    return {"rows": rows}


def _num(value: float | None, fmt: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def summary_rows(result: dict) -> list[Row]:
    """OpenBLAS should win every float32 measure; float16 has no BLAS path, so it is shown without a goal."""
    rows = []
    for row in result["rows"]:
        contrast = "contrast" in row["measure"]
        rows.append(Row("training", f"{row['measure']}: OpenBLAS vs reference BLAS", _num(row["openblas"]),
                        _num(row["reference"]), _num(row["ratio"], ".1f", "x"),
                        "none (no BLAS path)" if contrast else "> 1x",
                        None if contrast or row["ratio"] is None else row["ratio"] > 1))
    return rows


def print_table(result: dict) -> None:
    sides = result["sides"]
    print("### MLX CPU speed with and without OpenBLAS preloaded\n")
    print("| measure | OpenBLAS preloaded | reference BLAS (wheel) | ratio |")
    print("|---|---|---|---|")
    for row in result["rows"]:
        cells = [f"{row[k]:.1f}" if row[k] is not None else "n/a" for k in ("openblas", "reference")]
        speedup = f"{row['ratio']:.2f}x" if row["ratio"] else "n/a"
        print(f"| {row['measure']} | {cells[0]} | {cells[1]} | {speedup} |")
    loaded = ", ".join(f"{side}: {info['blas']} ({info['seconds']} s)" for side, info in sides.items())
    print(f"\nBLAS mapped by each side's process: {loaded}.\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048], help="float32 matmul sizes n (n x n)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="time each matmul size at least this long")
    # The reference side needs about a minute per LoRA step at batch 2 on 2 cores: keep this small.
    parser.add_argument("--train-iters", type=int, default=3, help="LoRA steps per side (0: skip training)")
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help="the offline base model dir")
    parser.add_argument("--quick", action="store_true", help="1024² only, 2 LoRA steps at batch 1, shorter timing")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.min_seconds = [1024], 0.5
        args.train_iters, args.train_batch = min(args.train_iters, 2), 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    if args.train_iters > 0 and not (args.base / "config.json").is_file():
        raise SystemExit(f"{args.base}: no base model (run make base), or pass --train-iters 0")
    sides_to_run = ("openblas", "reference") if openblas_path() else ("reference",)
    sides = {side: run_side(side, args) for side in sides_to_run}
    result = {"bench": "blas_speed", "openblas_path": openblas_path(), "sides": sides, **summarize(sides)}
    f32 = [r["ratio"] for r in result["rows"] if r["measure"].startswith("float32") and r["ratio"]]
    result["goals_met"] = bool(f32) and min(f32) > 1.0 and sides.get("openblas", {}).get("blas") == "openblas"
    result["summary"] = [row.to_dict() for row in summary_rows(result)]
    if not args.json:
        print_table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
