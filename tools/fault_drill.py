#!/usr/bin/env python3
"""Fault drill for collection (docs/reliability.md): the real collect CLI against the stand-in teacher injecting
faults, killed (-9) and interrupted (Ctrl-C) mid-run, then re-run until done; counts what was lost or duplicated.

    python tools/fault_drill.py [--workdir DIR] [--input prompts/router_seed.txt]

Prints one markdown table row per scenario. "Lost": a record that was in the file after an interruption and is
not in the final file, or a prompt that ends neither labeled nor rejected. "Duplicated": a normalized text that
appears twice in the final file. "Wrong": a label that differs from the stand-in's own rule for that prompt
(an injected bad answer that leaked in).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.fileio import read_prompts  # noqa: E402
from distill.prompting import normalize_text  # noqa: E402
from distill.standins.teacher import MODEL_ID, route, serve, stats  # noqa: E402

SCENARIOS = [
    # name, stand-in settings, interruptions (signal, after N records), teacher config
    ("20% faults", {"fault_rate": 0.2, "seed": 7}, [], {}),
    ("70% faults", {"fault_rate": 0.7, "seed": 8}, [], {"retries": 8}),
    ("20% faults, kill -9 x3", {"fault_rate": 0.2, "seed": 9}, [(signal.SIGKILL, 40), (signal.SIGKILL, 120),
                                                              (signal.SIGKILL, 200)], {}),
    ("20% faults, Ctrl-C x2", {"fault_rate": 0.2, "seed": 10}, [(signal.SIGINT, 60), (signal.SIGINT, 180)], {}),
    ("30% hangs + drips", {"fault_rate": 0.3, "faults": ("hang", "drip"), "drip": 0.05, "seed": 11}, [], {}),
]


def records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n") if line.strip().endswith("}")]


def collect_cmd(config: Path, inputs: Path, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "scripts" / "collect_routes.py"), "--config", str(config), "--input",
            str(inputs), "--out", str(out), "--cache", str(out.parent / "cache"), "--no-progress",
            "--max-rejected", "1"]


def run_scenario(name: str, settings: dict, interruptions: list, overrides: dict, inputs: Path,
                 workdir: Path) -> dict:
    folder = workdir / name.replace(" ", "_").replace("%", "pct").replace(",", "").replace("+", "and")
    folder.mkdir(parents=True)
    out, rejects = folder / "routes.jsonl", folder / "routes.rejected.jsonl"
    prompts = {normalize_text(p): p for p in read_prompts(inputs)}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seen: dict[str, dict] = {}  # every record ever read back from the file, by id
    started = time.monotonic()
    runs = 0
    with serve(hang=30, retry_after=0.1, **settings) as url:
        config = folder / "teacher.json"
        config.write_text(json.dumps({"base_url": url, "model": MODEL_ID, "timeout": 1.5, "retries": 4,
                                      "concurrency": 8, **overrides}))
        for signum, after in interruptions:
            proc = subprocess.Popen(collect_cmd(config, inputs, out), env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            runs += 1
            while proc.poll() is None and len(records(out)) < after:
                time.sleep(0.02)
            proc.send_signal(signum)
            proc.wait(timeout=60)
            seen.update({r["id"]: r for r in records(out)})
        while True:  # re-run until a run asks the teacher nothing
            before = stats(url)["chat_completions"]
            done = subprocess.run(collect_cmd(config, inputs, out), env=env, capture_output=True, text=True)
            runs += 1
            if done.returncode != 0:
                raise SystemExit(f"{name}: collect failed: {done.stderr.strip()}")
            if stats(url)["chat_completions"] == before or runs > 10:
                break
        final = records(out)
        teacher = stats(url)
    elapsed = time.monotonic() - started
    by_id = {r["id"]: r for r in final}
    lost = [rid for rid, r in seen.items() if by_id.get(rid) != r]
    labeled = {normalize_text(r["text"]) for r in final}
    rejected = Counter(r["reason"] for r in records(rejects) if normalize_text(r["text"]) not in labeled)
    unaccounted = set(prompts) - labeled - {normalize_text(r["text"]) for r in records(rejects)}
    counts = Counter(normalize_text(r["text"]) for r in final)
    wrong = [r for r in final if route(r["text"]) != {"skill": r["skill"], "args": r["args"]}]
    return {"scenario": name, "prompts": len(prompts), "requests": teacher["chat_completions"],
            "faults": sum(teacher["faults"].values()), "runs": runs, "labeled": len(final),
            "rejected": sum(rejected.values()), "reasons": dict(rejected), "lost": len(lost) + len(unaccounted),
            "duplicated": sum(n - 1 for n in counts.values() if n > 1), "wrong": len(wrong),
            "seconds": round(elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="where the runs write (default: a temp dir)")
    parser.add_argument("--input", type=Path, default=ROOT / "prompts" / "router_seed.txt")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fault-drill-"))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; work dir {workdir}\n")
    print("| scenario | prompts | teacher requests | faults injected | runs | labeled | rejected (reasons) "
          "| lost | duplicated | wrong labels | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, settings, interruptions, overrides in SCENARIOS:
        r = run_scenario(name, settings, interruptions, overrides, args.input, workdir)
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["reasons"].items()))
        print(f"| {r['scenario']} | {r['prompts']} | {r['requests']} | {r['faults']} | {r['runs']} | {r['labeled']} "
              f"| {r['rejected']} ({reasons or '-'}) | {r['lost']} | {r['duplicated']} | {r['wrong']} "
              f"| {r['seconds']} |", flush=True)


if __name__ == "__main__":
    main()
