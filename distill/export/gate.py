"""The export's quality gate: the quantized GGUF may lose at most --max-drop points against the MLX student.

    python -m distill gate --student models/router_student_mlx --gguf gguf/router-student.gguf [--max-drop 2.0]

The MLX student, the Q4 and the f16 GGUF are scored on the student's held-out split by distill.training.evaluate
(greedy, grammar-constrained; the MLX student's numbers come from `make eval-router` when it scored this student
on this split, <student>/split_eval.json), and reports/export.json records size, accuracy and the effective
quant type of every tensor (K-quants fall back per tensor when a row length is not a multiple of 256).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..blas import ensure_openblas
from ..errors import cli, fail
from ..fileio import read_jsonl, write_json
from ..training.evaluate import SPLIT_CACHE, cached_mlx_metrics, evaluate_gguf, regression_verdict
from .gguf import f16_path_for, tensor_report

DEFAULT_MAX_DROP = 2.0
DEFAULT_REPORT = Path("reports/export.json")
EXPORT_GATE = {"gate": "quality gate", "names": ("MLX student", "Q4 GGUF")}


def gate_report(student: Path, gguf: Path, results: dict[str, dict], max_drop: float) -> dict:
    """reports/export.json: size, accuracy and effective quant types of each variant, and the verdict."""
    passed, drop, message = regression_verdict(results["mlx"], results["q4"], max_drop, **EXPORT_GATE)
    report = {"student": str(student), "max_drop_points": max_drop, "drop_points": drop, "passed": passed,
              "message": message, "variants": {}}
    for name, metrics in results.items():
        entry = {"metrics": metrics}
        if name != "mlx":
            path = gguf if name == "q4" else f16_path_for(gguf)
            entry.update(tensor_report(path))
        report["variants"][name] = entry
    q4_size, f16_size = (report["variants"].get(k, {}).get("size_bytes") for k in ("q4", "f16"))
    if q4_size and f16_size:
        report["size_ratio_q4_f16"] = round(q4_size / f16_size, 3)
    return report


def run_gate(student: Path, gguf: Path, max_drop: float, report_path: Path, split: str = "test") -> dict:
    """Evaluate the MLX student, the Q4 and the f16 GGUF on the student's held-out split with distill.training.evaluate."""
    records = read_jsonl(student / f"{split}.jsonl")
    if not gguf.is_file():
        fail(gguf, "GGUF not found (run convert first)")
    f16 = f16_path_for(gguf)
    mlx = cached_mlx_metrics(student, student / f"{split}.jsonl", SPLIT_CACHE)  # eval-router's, when it ran
    results = {"mlx": mlx, "q4": evaluate_gguf(gguf, student, records)}
    if f16.is_file():
        results["f16"] = evaluate_gguf(f16, student, records)
    report = gate_report(student, gguf, results, max_drop)
    report["split"], report["n_records"] = split, len(records)
    write_json(report_path, report)
    return report


@cli
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m distill gate", description=__doc__.splitlines()[0])
    p.add_argument("--student", type=Path, required=True)
    p.add_argument("--gguf", type=Path, required=True)
    p.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, help="skill-accuracy points (default 2.0)")
    p.add_argument("--split", default="test", choices=["test", "valid"])
    p.add_argument("--report", type=Path, default=DEFAULT_REPORT)
    args = p.parse_args(argv)
    ensure_openblas()
    report = run_gate(args.student, args.gguf, args.max_drop, args.report, args.split)
    print(json.dumps({k: v["metrics"].get("skill_accuracy") for k, v in report["variants"].items()}))
    print(f"{args.report}: written")
    if not report["passed"]:
        fail(args.gguf, report["message"] + f"; see {args.report}", "skill_accuracy")
    print(report["message"])


if __name__ == "__main__":
    main()
