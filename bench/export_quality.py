#!/usr/bin/env python3
"""What the Q4 export costs: GGUF size Q4 / f16 and held-out accuracy of the MLX student, f16 and Q4 GGUFs.

Nothing is recomputed here: `make gguf`'s quality gate already evaluated all three with the same
grammar-constrained evaluator and wrote reports/export.json; this reads it (and checks it still describes the
GGUF files on disk). Without that report the size ratio is read from the files when both GGUFs exist; without
a trained student there is nothing to measure ("not available: run make demo first"). Goals: Q4/f16 <= 0.35 and
Q4 within the gate's allowed drop of the MLX student. Prints a Markdown table, then one JSON line.

    python bench/export_quality.py [--report reports/export.json] [--gguf gguf/router-student.gguf] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill.benchreport import Row  # noqa: E402
from distill.fileio import read_json  # noqa: E402
from distill.export.gguf import f16_path_for  # noqa: E402

DEFAULT_REPORT = ROOT / "reports" / "export.json"
DEFAULT_GGUF = ROOT / "gguf" / "router-student.gguf"
SIZE_GOAL = 0.35
NOT_AVAILABLE = "not available: run make demo first"
METRICS = ("skill_accuracy", "args_exact", "valid_json_rate")


def from_report(report: dict, gguf: Path) -> dict:
    variants = report.get("variants", {})
    sizes = {name: variants.get(name, {}).get("size_bytes") for name in ("q4", "f16")}
    on_disk = {"q4": gguf, "f16": f16_path_for(gguf)}
    stale = [name for name, size in sizes.items()
             if size and on_disk[name].is_file() and on_disk[name].stat().st_size != size]
    result = {
        "available": True, "source": "reports/export.json (make gguf's quality gate)",
        "q4_bytes": sizes["q4"], "f16_bytes": sizes["f16"],
        "q4_over_f16": report.get("size_ratio_q4_f16") or (sizes["q4"] / sizes["f16"] if all(sizes.values()) else None),
        "q4_file_type": variants.get("q4", {}).get("file_type"),
        "q4_bits_per_weight": variants.get("q4", {}).get("bits_per_weight"),
        "accuracy": {name: {m: variants[name]["metrics"].get(m) for m in METRICS}
                     for name in ("mlx", "f16", "q4") if name in variants},
        "n_records": report.get("n_records"), "split": report.get("split"),
        "gate": {k: report.get(k) for k in ("passed", "drop_points", "max_drop_points", "message")},
        "stale": stale,
    }
    return result


def from_files(gguf: Path) -> dict:
    f16 = f16_path_for(gguf)
    if not (gguf.is_file() and f16.is_file()):
        return {"available": False, "reason": NOT_AVAILABLE}
    q4_bytes, f16_bytes = gguf.stat().st_size, f16.stat().st_size
    return {"available": True, "source": "GGUF file sizes (no reports/export.json: run make gguf for accuracy)",
            "q4_bytes": q4_bytes, "f16_bytes": f16_bytes, "q4_over_f16": q4_bytes / f16_bytes, "accuracy": {},
            "gate": {}, "stale": []}


def measure(report_path: Path, gguf: Path) -> dict:
    result = from_report(read_json(report_path), gguf) if report_path.is_file() else from_files(gguf)
    if result["available"]:
        ratio, acc = result.get("q4_over_f16"), result["accuracy"]
        result["size_goal_met"] = ratio is not None and ratio <= SIZE_GOAL
        if "q4" in acc and "f16" in acc:
            result["q4_minus_f16_points"] = round((acc["q4"]["skill_accuracy"] - acc["f16"]["skill_accuracy"]) * 100, 2)
        result["goals_met"] = result["size_goal_met"] and result["gate"].get("passed") is not False
    result = {"bench": "export_quality", **result}
    return {**result, "summary": [row.to_dict() for row in summary_rows(result)]}


def summary_rows(r: dict) -> list[Row]:
    """Size Q4/f16 against its goal, and the quality gate's verdict on held-out accuracy (Q4 vs MLX)."""
    size_measure, accuracy_measure = "GGUF size Q4 / f16", "held-out skill accuracy, Q4 vs f16"
    if not r.get("available"):
        reason = r.get("reason", "not available")
        return [Row("export", size_measure, reason, goal=f"<= {SIZE_GOAL}"),
                Row("export", accuracy_measure, reason, goal="gate: Q4 <= 2 points below MLX")]
    if None in (r.get("q4_over_f16"), r.get("q4_bytes"), r.get("f16_bytes")):  # a gate report without sizes
        rows = [Row("export", size_measure, "n/a: the report names no sizes", goal=f"<= {SIZE_GOAL}")]
    else:
        rows = [Row("export", size_measure, f"{r['q4_bytes'] / 1e6:.1f} MB", f"f16 {r['f16_bytes'] / 1e6:.1f} MB",
                    f"{r['q4_over_f16']:.3f}", f"<= {SIZE_GOAL}", r["q4_over_f16"] <= SIZE_GOAL)]
    acc = {name: m.get("skill_accuracy") for name, m in r.get("accuracy", {}).items()}
    if "q4" in acc and "f16" in acc:
        gate = r.get("gate") or {}
        baseline = f"f16 {acc['f16']:.3f}" + (f", MLX {acc['mlx']:.3f}" if acc.get("mlx") is not None else "")
        rows.append(Row("export", f"{accuracy_measure} ({r.get('n_records')} records)", f"Q4 {acc['q4']:.3f}",
                        baseline, f"{r.get('q4_minus_f16_points', 0):+.1f} points",
                        f"gate: Q4 <= {gate.get('max_drop_points', 2)} points below MLX", gate.get("passed")))
    else:
        rows.append(Row("export", accuracy_measure, "not available: run make gguf"))
    if r.get("stale"):
        stale = ", ".join(r["stale"])
        rows.append(Row("export", "note", f"reports/export.json is older than the {stale} GGUF: re-run make gguf"))
    return rows


def print_table(r: dict) -> None:
    print("### Export: Q4 vs f16\n")
    if not r["available"]:
        print(f"{r['reason']}\n")
        return
    stale = f"; stale for {', '.join(r['stale'])} (the file changed since)" if r["stale"] else ""
    print(f"source: {r['source']}{stale}\n")
    print("| measure | value |\n|---|---|")
    if r.get("q4_over_f16") is not None:
        print(f"| GGUF size Q4 / f16 (goal <= {SIZE_GOAL}) | {r['q4_bytes'] / 1e6:.1f} MB / "
              f"{r['f16_bytes'] / 1e6:.1f} MB = {r['q4_over_f16']:.3f} |")
    if r.get("q4_file_type"):
        print(f"| Q4 file type, bits per weight | {r['q4_file_type']}, {r['q4_bits_per_weight']} |")
    for name, label in (("mlx", "MLX student"), ("f16", "f16 GGUF"), ("q4", "Q4 GGUF")):
        if name in r["accuracy"]:
            m = r["accuracy"][name]
            print(f"| {label}: skill acc / args exact / valid JSON ({r.get('n_records')} held out) | "
                  + " / ".join("n/a" if m[k] is None else f"{m[k]:.3f}" for k in METRICS) + " |")
    if r["gate"].get("message"):
        print(f"| quality gate | {r['gate']['message']} |")
    print()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="the quality gate's report")
    parser.add_argument("--gguf", type=Path, default=DEFAULT_GGUF, help="the Q4 GGUF (its .f16.gguf beside it)")
    parser.add_argument("--quick", action="store_true", help="accepted for make bench; this bench only reads files")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = measure(args.report, args.gguf)
    if not args.json:
        print_table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
