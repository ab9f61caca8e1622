"""`make bench`: run every benchmark under bench/ and write reports/bench.md (plus the raw results as JSON).

Each bench/*.py is a standalone script that prints its own Markdown table, then one JSON line (its contract;
`--json` prints the JSON line alone, `--quick` a smaller run). This runs each one in its own process with
OpenBLAS preloaded, takes the last JSON line as its result and the rest as its details, and puts the numbers
that answer the project's goals into one summary table, every figure beside the baseline it was measured
against in the same run. A bench that fails or times out becomes a failed row; the others still run.

    python -m distill bench [--quick] [--only train_speed route_latency] [--out reports/bench.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path

from .blas import env_with_openblas, openblas_path
from . import REPO_ROOT
from .errors import cli, fail
from .fileio import atomic_writer, write_json
from .student import git_commit

ROOT = REPO_ROOT
BENCH_DIR = ROOT / "bench"
DEFAULT_OUT = Path("reports/bench.md")
# Summary order; a bench not listed here still runs and shows its details, after these.
ORDER = ("collect_throughput", "train_speed", "blas_speed", "route_latency", "export_quality")
VERSIONED = ("mlx", "mlx-lm", "llama-cpp-python", "transformers")


@dataclass
class BenchRun:
    name: str
    command: list[str]
    seconds: float = 0.0
    result: dict | None = None
    details: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Row:
    area: str
    measure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""
    met: bool | None = None


# ---- running -------------------------------------------------------------------------------------------

def discover(bench_dir: Path | None = None, only: list[str] | None = None) -> list[Path]:
    bench_dir = bench_dir or BENCH_DIR
    scripts = {p.stem: p for p in sorted(bench_dir.glob("*.py")) if not p.name.startswith("_")}
    if only:
        unknown = sorted(set(only) - set(scripts))
        if unknown:
            fail("--only", f"no bench/{unknown[0]}.py (have: {', '.join(scripts)})")
        scripts = {name: scripts[name] for name in only}
    ranked = sorted(scripts, key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER), name))
    return [scripts[name] for name in ranked]


def split_output(stdout: str) -> tuple[str, dict]:
    """(Markdown details, result): the result is the last line that is a JSON object."""
    lines = stdout.rstrip().splitlines()
    for index in range(len(lines) - 1, -1, -1):
        text = lines[index].strip()
        if text.startswith("{"):
            try:
                result = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(result, dict):
                return "\n".join(lines[:index]).strip(), result
    raise ValueError("no JSON result line in its output")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run_bench(script: Path, quick: bool, timeout: float) -> BenchRun:
    command = [sys.executable, str(script), *(["--quick"] if quick else [])]
    run = BenchRun(script.stem, command)
    env = env_with_openblas()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    # Own process group: on a timeout the bench's own children (trainers, servers) are stopped with it.
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        run.error = f"timed out after {timeout:.0f} s"
    else:
        if proc.returncode != 0:
            run.error = f"exit {proc.returncode}: {last_line(stderr or stdout)}"
        else:
            try:
                run.details, run.result = split_output(stdout)
            except ValueError as err:
                run.error = str(err)
    run.seconds = round(time.perf_counter() - started, 1)
    return run


# ---- the machine -----------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
        if done.stdout.strip():
            return done.stdout.strip()
    return platform.processor() or platform.machine()


def ram_gib() -> str:
    try:
        return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        return "unknown"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, str]:
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": ram_gib(),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        **{name: package_version(name) for name in VERSIONED},
        "BLAS for MLX": f"OpenBLAS preloaded ({openblas_path()})" if openblas_path() else "platform default",
        "git commit": git_commit(short=True) or "unknown",
    }


# ---- summary rows, one function per bench ------------------------------------------------------------------

def _num(value: float | None, fmt: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def collect_rows(r: dict) -> list[Row]:
    rows = [Row("collection", f"throughput, C = {t['concurrency']} in flight (L = {r['latency_s']:g} s)",
                f"{t['requests_per_s']:.2f} req/s", f"C/L = {t['bound_per_s']:.2f} req/s", f"{t['fraction']:.2f}",
                ">= 0.9", t["fraction"] >= 0.9) for t in r["throughput"]]
    c = r["cache"]
    rows.append(Row("collection", f"re-run from the answer cache ({c['prompts']} prompts)", f"{c['rerun_s']} s",
                    f"first run {c['first_s']} s", f"{c['speedup']}x", ">= 50x", c["speedup"] >= 50))
    return rows


def train_rows(r: dict) -> list[Row]:
    return [Row("training", f"make train-router vs python -m mlx_lm lora ({r['iters']} it, batch {r['batch']})",
                f"{r['ours']['tokens_per_s']:.1f} tok/s", f"{r['mlx_lm']['tokens_per_s']:.1f} tok/s",
                f"{r['ratio']:.2f}x", ">= 1.0x", r["ratio"] >= 1.0)]


def blas_rows(r: dict) -> list[Row]:
    rows = []
    for row in r["rows"]:
        contrast = "contrast" in row["measure"]
        rows.append(Row("training", f"{row['measure']}: OpenBLAS vs reference BLAS", _num(row["openblas"]),
                        _num(row["reference"]), _num(row["ratio"], ".1f", "x"),
                        "none (no BLAS path)" if contrast else "> 1x",
                        None if contrast or row["ratio"] is None else row["ratio"] > 1))
    return rows


def route_rows(r: dict) -> list[Row]:
    trained = bool(r.get("student"))
    what = f"`{r['model']}`" + ("" if trained else " (untrained base: no student yet)")
    w, c = r["warm"], r["cold"]
    ratio = r["teacher_prompt_tokens"] / r["student_prompt_tokens"]
    return [
        Row("routing", f"per-route latency, warm prefix, {what}", f"{w['router_median_ms']:.0f} ms",
            f"llama.cpp floor {w['floor_median_ms']:.0f} ms", f"{w['overhead_ratio']:.2f}x", "close to 1x"),
        Row("routing", "per-route latency, cold prefix", f"{c['router_median_ms']:.0f} ms",
            f"llama.cpp floor {c['floor_median_ms']:.0f} ms", f"{c['overhead_ratio']:.2f}x", "close to 1x"),
        Row("routing", "prompt tokens: teacher catalog prompt / student prompt" + ("" if trained else
            " (no student yet: the base needs the brief catalog prompt)"),
            f"{r['student_prompt_tokens']:.0f} tokens", f"teacher {r['teacher_prompt_tokens']:.0f} tokens",
            f"{ratio:.1f}x", ">= 10x" if trained else ">= 10x for a student", ratio >= 10 if trained else None),
    ]


def export_rows(r: dict) -> list[Row]:
    if not r.get("available"):
        reason = r.get("reason", "not available")
        return [Row("export", "GGUF size Q4 / f16", reason, goal="<= 0.35"),
                Row("export", "held-out skill accuracy, Q4 vs f16", reason, goal="gate: Q4 <= 2 points below MLX")]
    rows = [Row("export", "GGUF size Q4 / f16", f"{r['q4_bytes'] / 1e6:.1f} MB", f"f16 {r['f16_bytes'] / 1e6:.1f} MB",
                f"{r['q4_over_f16']:.3f}", "<= 0.35", r["q4_over_f16"] <= 0.35)]
    acc = {name: m.get("skill_accuracy") for name, m in r.get("accuracy", {}).items()}
    if "q4" in acc and "f16" in acc:
        gate = r.get("gate") or {}
        baseline = f"f16 {acc['f16']:.3f}" + (f", MLX {acc['mlx']:.3f}" if acc.get("mlx") is not None else "")
        rows.append(Row("export", f"held-out skill accuracy, Q4 vs f16 ({r.get('n_records')} records)",
                        f"Q4 {acc['q4']:.3f}", baseline, f"{r.get('q4_minus_f16_points', 0):+.1f} points",
                        f"gate: Q4 <= {gate.get('max_drop_points', 2)} points below MLX", gate.get("passed")))
    else:
        rows.append(Row("export", "held-out skill accuracy, Q4 vs f16", "not available: run make gguf"))
    if r.get("stale"):
        stale = ", ".join(r["stale"])
        rows.append(Row("export", "note", f"reports/export.json is older than the {stale} GGUF: re-run make gguf"))
    return rows


SUMMARIES = {"collect_throughput": collect_rows, "train_speed": train_rows, "blas_speed": blas_rows,
             "route_latency": route_rows, "export_quality": export_rows}
AREAS = {"collect_throughput": "collection", "train_speed": "training", "blas_speed": "training",
         "route_latency": "routing", "export_quality": "export"}


def summary_rows(runs: list[BenchRun]) -> list[Row]:
    rows = []
    for run in runs:
        area = AREAS.get(run.name, run.name)
        if not run.ok:
            rows.append(Row(area, f"bench/{run.name}.py", f"FAILED: {run.error}", met=False))
            continue
        summarize = SUMMARIES.get(run.name)
        if summarize is None:
            rows.append(Row(area, f"bench/{run.name}.py", "ran: see its details below",
                            met=run.result.get("goals_met")))
            continue
        try:
            rows.extend(summarize(run.result))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            rows.append(Row(area, f"bench/{run.name}.py", f"FAILED: unexpected result ({type(err).__name__}: {err})",
                            met=False))
    return rows


# ---- the report --------------------------------------------------------------------------------------------

def display_path(path: str) -> str:
    return Path(path).relative_to(ROOT).as_posix() if Path(path).is_relative_to(ROOT) else path


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(runs: list[BenchRun], machine: dict[str, str], started: datetime, load_before: str, load_after: str,
           quick: bool, command: str = "make bench") -> str:
    marks = {True: "yes", False: "**no**", None: ""}
    lines = [
        "# Benchmarks", "",
        f"Measured {started.strftime('%Y-%m-%d %H:%M %Z').strip()} by `{command}`"
        + (" (`--quick`: smaller runs)" if quick else "") + ". Every ratio compares against a baseline measured in "
        "the same run on the same machine; the CPU may be shared, so the load average is given too.", "",
        "| machine | |", "|---|---|",
        *[f"| {_cell(k)} | {_cell(v)} |" for k, v in machine.items()],
        f"| load average (1/5/15 min) before / after | {load_before} ; {load_after} |", "",
        "## Summary", "",
        "| area | measure | result | baseline | ratio | goal | met |", "|---|---|---|---|---|---|---|",
        *[f"| {r.area} | {_cell(r.measure)} | {_cell(r.value)} | {_cell(r.baseline)} | {_cell(r.ratio)} | "
          f"{_cell(r.goal)} | {marks[r.met]} |" for r in summary_rows(runs)],
        "", "## Details", "",
    ]
    for run in runs:
        command = " ".join(["python", display_path(run.command[1]), *run.command[2:]])
        status = "" if run.ok else f", **failed**: {run.error}"
        lines += [f"### bench/{run.name}.py", "", f"`{command}`: {run.seconds} s{status}", ""]
        if run.details:  # the bench's own "### title" becomes a sub-heading of its section
            lines += ["#" + line if line.startswith("### ") else line for line in run.details.splitlines()] + [""]
    return "\n".join(lines).rstrip() + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m distill bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every bench (smaller runs)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benches (file stems)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown report (JSON beside it)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per bench before it counts as failed")
    return parser.parse_args(argv)


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m distill bench", *given]) if given else "make bench"
    scripts = discover(only=args.only)
    started, load_before = datetime.now().astimezone(), load_average()
    runs = []
    for script in scripts:
        print(f"bench: {script.name} ...", file=sys.stderr, flush=True)
        run = run_bench(script, args.quick, args.timeout)
        print(f"bench: {script.name}: {'ok' if run.ok else 'FAILED: ' + run.error} ({run.seconds} s)",
              file=sys.stderr, flush=True)
        runs.append(run)
    report = render(runs, machine_facts(), started, load_before, load_average(), args.quick, command)
    with atomic_writer(args.out) as handle:
        handle.write(report)
    write_json(args.out.with_suffix(".json"), {"started": started.isoformat(timespec="seconds"), "quick": args.quick,
                                                "runs": [vars(run) for run in runs]})
    print(report)
    print(f"{args.out}: written", file=sys.stderr)
    failed = [run.name for run in runs if not run.ok]
    if failed:
        raise SystemExit(f"{len(failed)} bench(es) failed: {', '.join(failed)} (see {args.out})")


if __name__ == "__main__":
    main()
