#!/usr/bin/env python3
"""Collection throughput against a teacher with a fixed latency, and what the answer cache saves on a re-run.

The stand-in teacher runs in its own process and answers every completion after exactly L seconds, so a
collector with C requests in flight can at best do C/L requests per second. We report the measured rate as a
fraction of that bound (goal >= 0.9) for C in {1, 4, 16}, and the speed-up of re-collecting the same prompts
from the cache instead of the teacher (goal >= 50x). Collection runs the real code path: `distill.teacher.collect`
with validation, fsync'd appends and the audit log. Prints a Markdown table, then one JSON line.

    python bench/collect_throughput.py [--latency 0.5] [--rounds 8] [--cache-prompts 80] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from distill.benchreport import Row  # noqa: E402
from distill.teacher.collect import RouteTask, collect  # noqa: E402
from distill.teacher.config import TeacherConfig  # noqa: E402
from distill.fileio import read_prompts  # noqa: E402
from distill.skills import load_catalog  # noqa: E402
from distill.standins.teacher import MODEL_ID, stats  # noqa: E402

CONCURRENCY = (1, 4, 16)


def start_standin(latency: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "distill", "standin-teacher", "--port", str(port),
                             "--latency", str(latency)], cwd=ROOT, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/models", timeout=1).ok:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("stand-in teacher did not start")


def timed_collect(task: RouteTask, url: str, concurrency: int, prompts: list[str], work: Path, name: str,
                  cache: Path) -> tuple[float, object]:
    source = work / f"{name}.txt"
    source.write_text("\n".join(prompts) + "\n")
    out = work / f"{name}.jsonl"
    out.unlink(missing_ok=True)  # a rebuild from the cache, not a skip of records already there
    config = TeacherConfig(base_url=[url], model=MODEL_ID, concurrency=concurrency, timeout=30)
    started = time.perf_counter()
    summary = collect(task, config, [source], out, cache_dir=cache, progress=False)
    return time.perf_counter() - started, summary


THROUGHPUT_GOAL, CACHE_GOAL = 0.9, 50


def summary_rows(r: dict) -> list[Row]:
    """The rows `make bench` shows: each concurrency's fraction of the C/L bound, and the cache's speed-up."""
    rows = [Row("collection", f"throughput, C = {t['concurrency']} in flight (L = {r['latency_s']:g} s)",
                f"{t['requests_per_s']:.2f} req/s", f"C/L = {t['bound_per_s']:.2f} req/s", f"{t['fraction']:.2f}",
                f">= {THROUGHPUT_GOAL}", t["fraction"] >= THROUGHPUT_GOAL) for t in r["throughput"]]
    c = r["cache"]
    rows.append(Row("collection", f"re-run from the answer cache ({c['prompts']} prompts)", f"{c['rerun_s']} s",
                    f"first run {c['first_s']} s", f"{c['speedup']}x", f">= {CACHE_GOAL}x", c["speedup"] >= CACHE_GOAL))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.5, help="teacher latency L in seconds")
    parser.add_argument("--rounds", type=int, default=8, help="requests per worker in the throughput runs")
    parser.add_argument("--cache-prompts", type=int, default=80, help="prompts in the cache run (C=4)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, 40 cache prompts")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.cache_prompts = min(args.rounds, 3), min(args.cache_prompts, 40)

    catalog = load_catalog()
    task = RouteTask(catalog)
    seed = read_prompts(ROOT / "prompts" / "router_seed.txt")
    proc, url = start_standin(args.latency)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            # warm-up: the first collect in a process pays one-off imports and model-class set-up
            timed_collect(task, url, 1, ["warm up"], work, "warmup", work / "cache_warmup")
            offset = 0
            for concurrency in CONCURRENCY:
                count = concurrency * args.rounds
                prompts = seed[offset:offset + count]
                offset += count
                elapsed, summary = timed_collect(task, url, concurrency, prompts, work, f"c{concurrency}",
                                                 work / f"cache{concurrency}")
                rate = summary.calls / elapsed
                bound = concurrency / args.latency
                rows.append({"concurrency": concurrency, "requests": summary.calls, "seconds": round(elapsed, 2),
                             "requests_per_s": round(rate, 2), "bound_per_s": round(bound, 2),
                             "fraction": round(rate / bound, 3)})

            prompts = seed[: args.cache_prompts]
            cache = work / "cache_run"
            first, cold = timed_collect(task, url, 4, prompts, work, "cache", cache)
            before = stats(url)["chat_completions"]
            again, warm = timed_collect(task, url, 4, prompts, work, "cache", cache)
            calls_on_rerun = stats(url)["chat_completions"] - before
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    cache_row = {"prompts": len(prompts), "first_s": round(first, 3), "rerun_s": round(again, 4),
                 "speedup": round(first / again, 1), "teacher_calls_on_rerun": calls_on_rerun,
                 "cached_answers": warm.cached}
    if not args.json:
        print(f"### Collection throughput (stand-in teacher, latency L = {args.latency:g} s)\n")
        print(f"| C | requests | seconds | requests/s | bound C/L | fraction (goal >= {THROUGHPUT_GOAL}) |")
        print("|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['concurrency']} | {row['requests']} | {row['seconds']} | {row['requests_per_s']} | "
                  f"{row['bound_per_s']} | {row['fraction']:.3f} |")
        print(f"\n| cache re-run ({len(prompts)} prompts, C=4) | first run s | re-run s | "
              f"speed-up (goal >= {CACHE_GOAL}x) | teacher calls on re-run |")
        print("|---|---|---|---|---|")
        print(f"| | {cache_row['first_s']} | {cache_row['rerun_s']} | {cache_row['speedup']}x | {calls_on_rerun} |\n")
    result = {"bench": "collect_throughput", "latency_s": args.latency, "throughput": rows, "cache": cache_row}
    summary = summary_rows(result)
    result |= {"summary": [row.to_dict() for row in summary], "goals_met": all(row.met for row in summary)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
