"""Every trained student side by side: models/*/student.json and the reports that measured it.

The reports under reports/ name the student they measured (`student`: its dir), so a report counts for a run only
when that path is the run's dir; a run measured before a newer one overwrote the report shows its numbers from what
lives in its own dir (fixed_eval.json) or a dash. Deployed = a models/*/deployed.json (distill.deploy) names the
run and holds the same adapters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import Paths, read_json_file

SKIP_SUFFIXES = (".partial", ".previous")
DEPLOYED_RECORD = "deployed.json"


@dataclass
class Run:
    name: str
    dir: Path
    kind: str = "router"
    base: str = ""
    created: str = ""
    splits: dict[str, int] = field(default_factory=dict)
    data_hash: str = ""
    iters: int | None = None
    accuracy: dict[str, float | None] = field(default_factory=lambda: {"mlx": None, "f16": None, "q4": None})
    args_exact: float | None = None
    eval_set: str = ""
    threshold: float | None = None
    coverage: float | None = None
    latency_ms: float | None = None
    gguf_bytes: int | None = None
    deployed: str = ""
    problem: str | None = None

    @property
    def data_size(self) -> int:
        return sum(v for v in self.splits.values() if isinstance(v, int))

    @property
    def best_accuracy(self) -> float | None:
        return next((self.accuracy[k] for k in ("q4", "f16", "mlx") if self.accuracy[k] is not None), None)


def run_files(paths: Paths) -> list[Path]:
    """The files the runs table depends on (the app recomputes it when any of them changes)."""
    files = sorted(paths.models.glob("*/student.json")) + sorted(paths.models.glob(f"*/{DEPLOYED_RECORD}"))
    files += sorted(paths.models.glob("*/fixed_eval.json"))
    return files + [paths.eval_report, paths.export_report, paths.calibration]


def collect_runs(paths: Paths) -> list[Run]:
    runs = []
    deployed = _deployed_records(paths)
    reports = {name: read_json_file(path)[0] for name, path in
               (("eval", paths.eval_report), ("export", paths.export_report), ("calibration", paths.calibration))}
    for spec_path in sorted(paths.models.glob("*/student.json")):
        folder = spec_path.parent
        if folder.name.endswith(SKIP_SUFFIXES) or ".old-" in folder.name or (folder / DEPLOYED_RECORD).is_file():
            continue  # staging dirs, swapped-out copies and the deployed reference (a copy of a run)
        runs.append(_run(paths, folder, reports, deployed))
    return sorted(runs, key=lambda r: r.created, reverse=True)


def _run(paths: Paths, folder: Path, reports: dict[str, Any], deployed: list[tuple[Path, dict]]) -> Run:
    spec, problem = read_json_file(folder / "student.json")
    run = Run(folder.name, folder)
    if problem or not isinstance(spec, dict):
        run.problem = problem or "student.json is not an object"
        return run
    settings = spec.get("settings") if isinstance(spec.get("settings"), dict) else {}
    run.name = str(spec.get("name") or folder.name)
    run.kind = str(spec.get("kind") or "router")
    run.base = Path(str(spec.get("base") or "")).name
    run.created = str(spec.get("created") or "")
    run.splits = spec.get("splits") if isinstance(spec.get("splits"), dict) else {}
    run.iters = settings.get("iters") if isinstance(settings.get("iters"), int) else None
    run.threshold = spec.get("threshold") if isinstance(spec.get("threshold"), (int, float)) else None
    run.data_hash = _data_hash(folder)
    _from_fixed_eval(run, folder)
    _from_eval(run, paths, reports["eval"])
    _from_export(run, paths, reports["export"])
    _from_calibration(run, paths, reports["calibration"])
    run.deployed = _deployed_state(folder, deployed, paths.root)
    return run


def _data_hash(folder: Path) -> str:
    """sha256 of the splits the student was trained and measured on (train, valid, test), first 12 hex digits."""
    digest = hashlib.sha256()
    found = False
    for split in ("train", "valid", "test"):
        path = folder / f"{split}.jsonl"
        if path.is_file():
            digest.update(path.read_bytes())
            found = True
    return digest.hexdigest()[:12] if found else ""


def _same_dir(named: Any, folder: Path, root: Path) -> bool:
    if not isinstance(named, str) or not named:
        return False
    path = Path(named)
    return (path if path.is_absolute() else root / path).resolve() == folder.resolve()


def _rate(metrics: Any, key: str = "skill_accuracy") -> float | None:
    value = metrics.get(key) if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _from_fixed_eval(run: Run, folder: Path) -> None:
    cached, _ = read_json_file(folder / "fixed_eval.json")
    if isinstance(cached, dict) and isinstance(cached.get("metrics"), dict):
        run.accuracy["mlx"] = _rate(cached["metrics"])
        run.args_exact = _rate(cached["metrics"], "args_exact")
        run.eval_set = f"fixed set, n={cached['metrics'].get('n', '?')}"


def _from_eval(run: Run, paths: Paths, report: Any) -> None:
    if not isinstance(report, dict) or not _same_dir(report.get("student"), run.dir, paths.root):
        return
    results = report.get("results") if isinstance(report.get("results"), dict) else {}
    for name, metrics in results.items():
        if name == "mlx student":
            run.accuracy["mlx"] = _rate(metrics)
            run.args_exact = _rate(metrics, "args_exact")
            run.eval_set = f"{report.get('split', 'test')}, n={metrics.get('n', '?')}"
        elif name.endswith(".f16.gguf"):
            run.accuracy["f16"] = _rate(metrics)
        elif name.endswith(".gguf"):
            run.accuracy["q4"] = _rate(metrics)
            run.latency_ms = _rate(metrics, "latency_ms_p50")
            run.gguf_bytes = metrics.get("size_bytes") or run.gguf_bytes


def _from_export(run: Run, paths: Paths, report: Any) -> None:
    if not isinstance(report, dict) or not _same_dir(report.get("student"), run.dir, paths.root):
        return
    variants = report.get("variants") if isinstance(report.get("variants"), dict) else {}
    for name in ("mlx", "f16", "q4"):
        entry = variants.get(name)
        if isinstance(entry, dict) and _rate(entry.get("metrics")) is not None:
            run.accuracy[name] = _rate(entry.get("metrics"))
    q4 = variants.get("q4") if isinstance(variants.get("q4"), dict) else {}
    if isinstance(q4.get("size_bytes"), int):
        run.gguf_bytes = q4["size_bytes"]
    if _rate(q4.get("metrics"), "latency_ms_p50") is not None:
        run.latency_ms = _rate(q4.get("metrics"), "latency_ms_p50")
    if not run.eval_set and report.get("n_records"):
        run.eval_set = f"{report.get('split', 'test')}, n={report['n_records']}"


def _from_calibration(run: Run, paths: Paths, report: Any) -> None:
    if not isinstance(report, dict) or not _same_dir(report.get("student"), run.dir, paths.root):
        return
    run.coverage = _rate(report, "coverage")
    if run.threshold is None:
        run.threshold = _rate(report, "threshold")
    gguf = report.get("gguf")
    if run.gguf_bytes is None and isinstance(gguf, str):
        path = Path(gguf) if Path(gguf).is_absolute() else paths.root / gguf
        if path.is_file():
            run.gguf_bytes = path.stat().st_size


def _deployed_records(paths: Paths) -> list[tuple[Path, dict]]:
    out = []
    for record in sorted(paths.models.glob(f"*/{DEPLOYED_RECORD}")):
        info, _ = read_json_file(record)
        if isinstance(info, dict):
            out.append((record.parent, info))
    return out


def _deployed_state(folder: Path, deployed: list[tuple[Path, dict]], root: Path) -> str:
    state = ""
    for copy, info in deployed:
        if not _same_dir(info.get("student"), folder, root):
            continue
        current = not copy.name.endswith(".previous")
        if _same_file(copy / "adapters.safetensors", folder / "adapters.safetensors"):
            return "deployed" if current else "previously deployed"
        state = state or "an older version deployed"
    return state


def _same_file(a: Path, b: Path) -> bool:
    if not a.is_file() or not b.is_file():
        return not a.exists() and not b.exists()  # neither has adapters (fixtures, style): the record decides
    if a.stat().st_size != b.stat().st_size:
        return False
    return hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
