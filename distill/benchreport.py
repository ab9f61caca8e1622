"""`make bench`: run every benchmark under bench/ and write reports/bench.md (plus the raw results as JSON).

Each bench/*.py is a standalone script that prints its own Markdown table, then one JSON line (its contract;
`--json` prints the JSON line alone, `--quick` a smaller run). This runs each one in its own process with
OpenBLAS preloaded, takes the last JSON line as its result and the rest as its details, and renders the
result's `summary` list (rows the bench declares itself: area, measure, value, baseline, ratio, goal, met; see
`Row`) into one summary table, every figure beside the baseline it was measured against in the same run. The
report knows no bench's keys or goals: a new bench adds its rows by writing them. A bench that fails, times
out or declares a malformed row becomes a failed row; the others still run.

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
from dataclasses import asdict, dataclass, fields
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
    """One line of the summary table, as a bench declares it in its JSON result (`"summary": [row, ...]`).

    value, baseline and ratio are shown as given (a bench formats its own units); met is true, false or null
    (no goal, e.g. a contrast measurement).
    """

    area: str
    measure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""
    met: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: object, where: str = "summary row") -> Row:
        """A declared row, checked: one ValueError naming the row and the field when it is not one."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: not an object")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(known)})")
        for name in ("area", "measure", "value"):
            if name not in raw:
                raise ValueError(f"{where}: missing {name!r}")
        texts = {}
        for name in ("area", "measure", "value", "baseline", "ratio", "goal"):
            value = raw.get(name, "")
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(f"{where}: {name!r} must be text or a number, not {type(value).__name__}")
            texts[name] = value if isinstance(value, str) else f"{value:g}"
        met = raw.get("met")
        if met is not None and not isinstance(met, bool):
            raise ValueError(f"{where}: 'met' must be true, false or null, not {met!r}")
        return cls(**texts, met=met)


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


# ---- summary rows: declared by each bench ----------------------------------------------------------------

def declared_rows(run: BenchRun) -> list[Row]:
    """The rows a bench put in its result's `summary`; a bench that declares none gets one "ran" row."""
    summary = run.result.get("summary")
    if summary is None:
        return [Row(run.name, f"bench/{run.name}.py", "ran: see its details below", met=run.result.get("goals_met"))]
    if not isinstance(summary, list):
        raise ValueError(f"summary: a list of rows, not {type(summary).__name__}")
    return [Row.from_dict(entry, f"summary[{index}]") for index, entry in enumerate(summary)]


def summary_rows(runs: list[BenchRun]) -> list[Row]:
    rows = []
    for run in runs:
        if not run.ok:
            rows.append(Row(run.name, f"bench/{run.name}.py", f"FAILED: {run.error}", met=False))
            continue
        try:
            rows.extend(declared_rows(run))
        except ValueError as err:
            rows.append(Row(run.name, f"bench/{run.name}.py", f"FAILED: unexpected result ({err})", met=False))
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
