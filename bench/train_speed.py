#!/usr/bin/env python3
"""Training tokens/s of our router trainer against `python -m mlx_lm lora --train` on the same data, same run.

Ours is the seed command `train/finetune_router_mlx.py` with the flags `make train-router` passes. mlx-lm gets
the very same examples: the trainer's own split (distill.train.prepare_data) turned into mlx-lm chat files
{"messages": [...]} with the same system prompt (distill.datasets.router_chat), and the settings our trainer
hands to mlx-lm (distill.train.lora_namespace: model, batch, iterations, learning rate, LoRA rank/scale/layers,
max sequence length, seed, report/eval intervals, prompt masking on). Both run in their own process with
OpenBLAS preloaded, one after the other.

Tokens/s come from each tool's own report, which is the same mlx-lm number: per reported step, loss tokens
(the assistant turn, the prompt being masked) over the time spent in training steps, validation excluded. Ours
reads them from metrics.csv, mlx-lm's from the "tok/s" column it prints (rounded to whole tokens/s there). We
compare the median over steps 2..N (step 1 compiles the graph); the whole command's wall time (load,
tokenization, validation) is shown beside it. `--rounds N` alternates the two tools N times (a shared CPU's load
then hits both alike) and pools their steps.
Goal: ours / mlx-lm >= 1.0 (the wrapper costs nothing per step). Prints a Markdown table, then one JSON line.

    python bench/train_speed.py [--routes data/routes.jsonl] [--iters 8] [--batch 8] [--rounds 2] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.benchreport import Row  # noqa: E402
from distill.training import train  # noqa: E402
from distill.blas import env_with_openblas  # noqa: E402
from distill.fileio import read_json, read_prompts, write_jsonl  # noqa: E402

DEFAULT_BASE = ROOT / "models" / "base-smollm2-135m"
DEFAULT_ROUTES = ROOT / "data" / "routes.jsonl"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# mlx-lm's TrainUI row: "  iter   train_loss ▼    tok/s    tokens" (e.g. "     3    2.145 ▼      52    0.4k")
MLX_LM_ROW = re.compile(r"^\s*(\d+)\s+([0-9.]+)\s+[▼▲]\s+([0-9,]+)\s+([0-9.]+)k\s*$")


def seed_routes(path: Path) -> Path:
    """No collected data: label the seed prompts with the stand-in teacher's rules (in-process, no HTTP)."""
    from distill.standins.teacher import route

    prompts = read_prompts(ROOT / "prompts" / "router_seed.txt")
    records = [{"id": f"seed{i}", "text": text, **route(text), "votes": 1, "teacher": "standin-rules",
                "created": "2026-01-01T00:00:00Z"} for i, text in enumerate(prompts)]
    write_jsonl(path, records)
    return path


def trainer_flags(args: argparse.Namespace, routes: Path, out: Path) -> list[str]:
    """The seed command's flags as `make train-router` passes them, plus the bench's size."""
    return ["--base", str(args.base), "--train_jsonl", str(routes), "--out", str(out), "--epochs", "2", "--lr",
            str(args.lr), "--batch", str(args.batch), "--iters", str(args.iters), "--lora-rank", str(args.lora_rank),
            "--num-layers", str(args.num_layers), "--seed", "0"]


def mlx_lm_command(settings, data_dir: Path, adapter_dir: Path, config: Path) -> list[str]:
    """`python -m mlx_lm lora --train` with the settings our trainer hands to mlx-lm's train_model."""
    return [sys.executable, "-m", "mlx_lm", "lora", "--train", "--model", str(settings.model), "--data", str(data_dir),
            "--fine-tune-type", settings.fine_tune_type, "--mask-prompt", "--num-layers", str(settings.num_layers),
            "--batch-size", str(settings.batch_size), "--iters", str(settings.iters),
            "--val-batches", str(settings.val_batches), "--learning-rate", str(settings.learning_rate),
            "--steps-per-report", str(settings.steps_per_report), "--steps-per-eval", str(settings.steps_per_eval),
            "--save-every", str(settings.save_every), "--adapter-path", str(adapter_dir),
            "--max-seq-length", str(settings.max_seq_length), "--seed", str(settings.seed), "-c", str(config)]


def write_mlx_lm_inputs(args: argparse.Namespace, routes: Path, work: Path) -> tuple[list[str], dict]:
    """mlx-lm's data dir and config from our trainer's own split and settings; returns its command."""
    import yaml

    ours = train.build_parser("router").parse_args(trainer_flags(args, routes, work / "unused"))
    splits, system, _ = train.prepare_data("router", ours)
    data_dir = work / "mlx_lm_data"
    for name in ("train", "valid"):
        write_jsonl(data_dir / f"{name}.jsonl", train.chat_records("router", splits[name], system))
    n_layers = read_json(args.base / "config.json")["num_hidden_layers"]
    settings = train.lora_namespace(ours, n_layers, args.iters, work / "mlx_lm_adapters", None)
    config = work / "mlx_lm_lora.yaml"
    config.write_text(yaml.safe_dump({"lora_parameters": settings.lora_parameters}))  # rank/scale: no CLI flag
    sizes = {name: len(records) for name, records in splits.items()}
    return mlx_lm_command(settings, data_dir, work / "mlx_lm_adapters", config), sizes


def run(command: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    env = env_with_openblas()
    env["PYTHONPATH"] = ":".join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "120"  # mlx-lm's table is drawn by rich at terminal width
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise SystemExit(f"{Path(command[1]).name if command[1] != '-m' else 'mlx_lm lora'} failed "
                         f"(exit {done.returncode}): {tail}")
    return done, elapsed


def ours_step_rates(metrics_csv: Path) -> dict[int, float]:
    rows = csv.DictReader(metrics_csv.open())
    return {int(r["step"]): float(r["tokens_per_sec"]) for r in rows if r["tokens_per_sec"]}


def mlx_lm_step_rates(stdout: str) -> dict[int, float]:
    rates = {}
    for line in ANSI.sub("", stdout).splitlines():
        match = MLX_LM_ROW.match(line)
        if match:
            rates[int(match.group(1))] = float(match.group(3).replace(",", ""))
    return rates


def summary(rounds: list[dict[int, float]], walls: list[float], tool: str = "") -> dict:
    """Median tokens/s over steps 2..N of every round (step 1 compiles the graph)."""
    measured = [rate for rates in rounds for step, rate in sorted(rates.items()) if step > 1]
    measured = measured or [rate for rates in rounds for rate in rates.values()]
    if not measured:
        raise SystemExit(f"{tool}: no tokens/s reported")
    return {"tokens_per_s": statistics.median(measured), "steps_reported": sum(map(len, rounds)),
            "wall_s": round(statistics.median(walls), 1),
            "per_step": [{str(k): round(v, 1) for k, v in sorted(rates.items())} for rates in rounds]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help="model dir (default: the offline base)")
    parser.add_argument("--routes", type=Path,
                        help="routes JSONL (default data/routes.jsonl, else the seed prompts labeled by rules)")
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--num-layers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="run the pair this many times, alternating")
    parser.add_argument("--quick", action="store_true", help="4 iterations, one round")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    if args.quick:
        args.iters, args.rounds = min(args.iters, 4), 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not (args.base / "config.json").is_file():
        raise SystemExit(f"{args.base}: no base model (run make base)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        routes = args.routes or (DEFAULT_ROUTES if DEFAULT_ROUTES.is_file() else None)
        routes_label = str(routes.relative_to(ROOT) if routes and routes.is_relative_to(ROOT) else routes)
        if routes is None:
            routes = seed_routes(work / "routes.jsonl")
            routes_label = "prompts/router_seed.txt labeled by the stand-in teacher's rules"
        mlx_lm_cmd, sizes = write_mlx_lm_inputs(args, routes, work)
        ours_cmd = [sys.executable, str(ROOT / "train" / "finetune_router_mlx.py"),
                    *trainer_flags(args, routes, work / "router_student_mlx")]
        ours_rates, theirs_rates, ours_wall, theirs_wall = [], [], [], []
        for _ in range(args.rounds):  # alternate, so a busy shared CPU hits both tools alike
            _, wall = run(ours_cmd)
            ours_rates.append(ours_step_rates(work / "router_student_mlx" / "metrics.csv"))
            ours_wall.append(wall)
            if "--force" not in ours_cmd:
                ours_cmd.append("--force")  # the next round replaces this round's student
            done, wall = run(mlx_lm_cmd)
            theirs_rates.append(mlx_lm_step_rates(done.stdout))
            theirs_wall.append(wall)
        ours, theirs = summary(ours_rates, ours_wall, "ours"), summary(theirs_rates, theirs_wall, "mlx_lm lora")
    result = {"bench": "train_speed", "routes": routes_label,
              "splits": sizes, "iters": args.iters, "batch": args.batch, "lora_rank": args.lora_rank,
              "num_layers": args.num_layers, "rounds": args.rounds, "ours": ours, "mlx_lm": theirs,
              "ratio": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3)}
    summary = summary_rows(result)
    result |= {"summary": [row.to_dict() for row in summary], "goals_met": all(row.met for row in summary)}
    if not args.json:
        print_table(result)
    print(json.dumps(result))


RATIO_GOAL = 1.0  # the wrapper costs nothing per step


def summary_rows(r: dict) -> list[Row]:
    return [Row("training", f"make train-router vs python -m mlx_lm lora ({r['iters']} it, batch {r['batch']})",
                f"{r['ours']['tokens_per_s']:.1f} tok/s", f"{r['mlx_lm']['tokens_per_s']:.1f} tok/s",
                f"{r['ratio']:.2f}x", f">= {RATIO_GOAL}x", r["ratio"] >= RATIO_GOAL)]


def print_table(r: dict) -> None:
    print(f"### Training speed: make train-router vs python -m mlx_lm lora ({r['iters']} iterations, batch "
          f"{r['batch']}, LoRA rank {r['lora_rank']} on {r['num_layers']} layers, "
          f"{r['splits']['train']} train examples)\n")
    print(f"| trainer | tokens/s (median of steps 2..N, {r['rounds']} round(s)) | whole command, s (median) |")
    print("|---|---|---|")
    for name, key in (("train/finetune_router_mlx.py (ours)", "ours"), ("python -m mlx_lm lora", "mlx_lm")):
        print(f"| {name} | {r[key]['tokens_per_s']:.1f} | {r[key]['wall_s']} |")
    print(f"\nours / mlx-lm = {r['ratio']:.2f}x (goal >= {RATIO_GOAL}x); data: {r['routes']}\n")


if __name__ == "__main__":
    main()
