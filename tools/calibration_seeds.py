#!/usr/bin/env python3
"""Is the calibrated threshold stable, and does it hold on requests nobody trained or calibrated on?

For each data set and training seed: train the router student as `make demo` does, export the Q4_K_M GGUF
(merge + convert, as `make gguf`), calibrate it (`python -m distill calibrate`, the threshold method the robot
gets, on the calibration requests prompts/router_calibration.txt labelled by the stand-in's rules, as `make
collect` and `make calibrate` do; `--calibration valid`: on the validation split instead) and check precision
and coverage at the chosen threshold on a held-out set of hand-written requests
(bench/data/heldout_routes.jsonl: 238 requests written for this check, labelled by the stand-in teacher's rules
and checked by hand; none of them is in the seeds or their paraphrases). Prints the table for docs/runtime.md
and one JSON line. Steps whose outputs exist are skipped, so `--recalibrate` re-runs only calibration.

    python tools/calibration_seeds.py --data demo=/tmp/demo-wd/data/routes.jsonl --data seeds=@seeds \\
        --seeds 0 1 2 --work build/calibration-seeds --base ~/.cache/droidhead/bases/smollm2-135m-float32

`@seeds` is the small real-looking set: the 439 hand-written seed prompts (prompts/router_seed.txt) labelled
by the stand-in teacher's rules, no paraphrases. About 10 minutes per student on 2 quiet cores (measured: three
students of the demo's data in 30.5 min; the table in docs/runtime.md).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.fileio import read_json, read_prompts, write_jsonl  # noqa: E402

HELDOUT = ROOT / "bench" / "data" / "heldout_routes.jsonl"
BASE = ROOT / "models" / "base-smollm2-135m"


def standin_routes(prompts: Path, out: Path, prefix: str) -> Path:
    """`prompts` labelled by the stand-in teacher's rules (what `make collect` would store for them)."""
    from distill.skills import load_catalog
    from distill.standins.teacher import route

    catalog = load_catalog(ROOT / "config" / "skills.yaml")
    records = []
    for i, text in enumerate(read_prompts(prompts)):
        label = catalog.validate(route(text))
        records.append({"id": f"{prefix}{i:04d}", "text": text, "skill": label.skill, "args": label.args,
                        "votes": 1, "teacher": "standin-gpt-oss", "created": "2026-12-01T00:00:00Z"})
    write_jsonl(out, records)
    return out


def seed_routes(out: Path) -> Path:
    """The small real-looking set: the seed prompts, labelled."""
    return standin_routes(ROOT / "prompts" / "router_seed.txt", out, "s")


def calibration_routes(out: Path) -> Path:
    """The calibration requests (prompts/router_calibration.txt), labelled: what `make calibrate` calibrates on."""
    return standin_routes(ROOT / "prompts" / "router_calibration.txt", out, "c")


def run(step: str, argv: list, log: Path) -> None:
    shown = " ".join(shlex.quote(str(a)) for a in argv)
    print(f"  $ {shown}", flush=True)
    with log.open("a") as handle:
        handle.write(f"$ {shown}\n")
        handle.flush()
        code = subprocess.call([str(a) for a in argv], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"{step} failed (exit {code}); log: {log}")


def one_student(name: str, routes: Path, seed: int, work: Path, args: argparse.Namespace) -> dict:
    folder = work / name / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    student, gguf, log = folder / "router_student_mlx", folder / "router-student.gguf", folder / "log.txt"
    py = sys.executable
    timings = {}
    if not (student / "student.json").is_file():
        began = time.monotonic()
        run("train", [py, "-m", "distill", "train-router", "--base", args.base, "--train_jsonl", routes,
                      "--out", student, "--seed", seed, "--holdout", HELDOUT, "--force",
                      *shlex.split(args.train_args)], log)
        timings["train_s"] = round(time.monotonic() - began, 1)
    if not gguf.is_file():
        run("merge", [py, "-m", "distill", "merge", "--lora", student, "--out", folder / "merged", "--no-peft"], log)
        run("convert", [py, "-m", "distill", "convert", "--in", folder / "merged", "--out", gguf], log)
        shutil.rmtree(folder / "merged", ignore_errors=True)
    report = folder / "calibration.json"
    if args.recalibrate or not report.is_file():
        on = [] if args.calibration_file is None else ["--calibration", args.calibration_file]
        run("calibrate", [py, "-m", "distill", "calibrate", "--student", student, "--gguf", gguf, *on, "--heldout",
                          args.heldout, "--report", report, "--plot", folder / "calibration.png",
                          *shlex.split(args.calibrate_args)], log)
    r = read_json(report)
    spec = read_json(student / "student.json")
    return {"data": name, "seed": seed, "splits": spec["splits"], "threshold": r["threshold"],
            "calibration": {"precision": r["precision"], "coverage": r["coverage"], "total": r["total"]},
            "heldout": r["heldout"], "ece": r["ece"], "stability": r["stability"], "empirical": r["empirical"],
            "train_seconds": spec.get("train_seconds"), **timings}


def table(rows: list[dict]) -> str:
    lines = ["| data | seed | splits train/valid/test | threshold | calibration precision / coverage | "
             "held-out precision / coverage (n) | ECE raw / scaled | bootstrap coverage p5-p95 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, c, h = r["splits"], r["calibration"], r["heldout"]
        p5, _, p95 = r["stability"]["coverage_p5_p50_p95"]
        lines.append(f"| {r['data']} | {r['seed']} | {s['train']}/{s['valid']}/{s['test']} | {r['threshold']:.3f} | "
                     f"{c['precision']:.1%} / {c['coverage']:.1%} | {h['precision']:.1%} / {h['coverage']:.1%} "
                     f"({h['total']}) | {r['ece']['raw']:.3f} / {r['ece']['scaled']:.3f} | {p5:.0%}-{p95:.0%} |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", action="append", required=True, help="NAME=routes.jsonl, or NAME=@seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "calibration-seeds")
    parser.add_argument("--base", type=Path, default=BASE)
    parser.add_argument("--heldout", type=Path, default=HELDOUT)
    parser.add_argument("--train-args", default="--epochs 2 --lr 2e-4 --batch 8 --iters 100",
                        help="training flags (default: what make demo passes through the Makefile's train-router)")
    parser.add_argument("--calibration", default="@prompts",
                        help="what calibration picks the threshold on: @prompts (default: prompts/router_calibration.txt "
                             "labelled by the stand-in's rules, as make collect + make calibrate do), valid (the "
                             "student's validation split, the method before them) or a labelled JSONL")
    parser.add_argument("--calibrate-args", default="", help="extra flags for python -m distill calibrate")
    parser.add_argument("--recalibrate", action="store_true", help="re-run calibration on existing students")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.calibration == "@prompts":
        args.calibration_file = calibration_routes(args.work / "calibration_routes.jsonl")
    elif args.calibration == "valid":
        args.calibration_file = None  # calibrate's own default, the validation split
    else:
        args.calibration_file = Path(args.calibration).resolve()
    rows = []
    for spec in args.data:
        name, _, source = spec.partition("=")
        routes = seed_routes(args.work / name / "routes.jsonl") if source == "@seeds" else Path(source).resolve()
        for seed in args.seeds:
            print(f"{name} seed {seed}", flush=True)
            rows.append(one_student(name, routes, seed, args.work, args))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
