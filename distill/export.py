"""Export a trained student: fuse -> GGUF f16 -> quantized GGUF -> Ollama Modelfile -> quality gate.

    python -m distill.export merge --base models/base-smollm2-135m --lora models/router_student_mlx --out models/router_merged
    python -m distill.export convert --in models/router_merged --out gguf/router-student.gguf [--quant Q4_K_M] [--runner native|docker]
    python -m distill.export modelfile --student models/router_student_mlx --gguf gguf/router-student.gguf --out ollama/RouterStudent.Modelfile
    python -m distill.export gate --student models/router_student_mlx --gguf gguf/router-student.gguf [--max-drop 2.0]
    python -m distill.export peft --lora models/router_student_mlx --out models/router_student_mlx/peft

The seed's tools/merge_lora.py and tools/convert_to_gguf.py call `merge` and `convert` with the same flags.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .blas import ensure_openblas
from .errors import cli, fail
from .fileio import read_jsonl, write_json
from .gguf_export import DEFAULT_QUANT, QUANTS, convert, f16_path_for, tensor_report
from .merge import merge, write_peft_adapter
from .modelfile import DEFAULT_NUM_CTX, write_modelfile

DEFAULT_MAX_DROP = 2.0
DEFAULT_REPORT = Path("reports/export.json")


# ---- quality gate -------------------------------------------------------------------------------------
def gate_verdict(mlx: dict, q4: dict, max_drop: float, metric: str = "skill_accuracy") -> tuple[bool, float, str]:
    """(passed, drop in points, message): Q4 may lose at most `max_drop` points of `metric` against MLX."""
    for name, metrics in (("MLX student", mlx), ("Q4 GGUF", q4)):
        if not isinstance(metrics.get(metric), (int, float)):
            fail("gate", f"the {name} evaluation has no {metric}", metric)
    drop = round((mlx[metric] - q4[metric]) * 100, 2)
    passed = drop <= max_drop
    verb = "passes" if passed else "FAILS"
    message = (f"quality gate {verb}: Q4 {metric} {q4[metric]:.3f} vs MLX student {mlx[metric]:.3f} "
               f"({drop:+.1f} points lost, max {max_drop:.1f})")
    return passed, drop, message


def gate_report(student: Path, gguf: Path, results: dict[str, dict], max_drop: float) -> dict:
    """reports/export.json: size, accuracy and effective quant types of each variant, and the verdict."""
    passed, drop, message = gate_verdict(results["mlx"], results["q4"], max_drop)
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
    """Evaluate the MLX student, the Q4 and the f16 GGUF on the student's held-out split with distill.evaluate."""
    from .evaluate import evaluate_gguf, evaluate_mlx

    records = read_jsonl(student / f"{split}.jsonl")
    if not gguf.is_file():
        fail(gguf, "GGUF not found (run convert first)")
    f16 = f16_path_for(gguf)
    results = {"mlx": evaluate_mlx(student, records), "q4": evaluate_gguf(gguf, student, records)}
    if f16.is_file():
        results["f16"] = evaluate_gguf(f16, student, records)
    report = gate_report(student, gguf, results, max_drop)
    report["split"], report["n_records"] = split, len(records)
    write_json(report_path, report)
    return report


# ---- CLI ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m distill.export", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("merge", help="fuse the LoRA adapters into the base (HF layout) and write a PEFT copy")
    p.add_argument("--base", help="base model dir or hub id (default: the one the student was trained on)")
    p.add_argument("--lora", type=Path, required=True, help="student dir with adapters.safetensors")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-peft", action="store_true", help="skip <out>/peft/")

    p = verbs.add_parser("convert", help="HF dir -> <out>.f16.gguf -> <out> quantized + <out>.sha256")
    p.add_argument("--in", dest="src", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quant", default=DEFAULT_QUANT, choices=QUANTS)
    p.add_argument("--runner", default="native", choices=["native", "docker"],
                   help="native: gguf + llama-cpp-python here (llama family); docker: llama.cpp's own tools")

    p = verbs.add_parser("modelfile", help="write the Ollama Modelfile from student.json")
    p.add_argument("--student", type=Path, required=True)
    p.add_argument("--gguf", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--num-ctx", type=int, default=DEFAULT_NUM_CTX)

    p = verbs.add_parser("gate", help="fail when the Q4 GGUF loses more than --max-drop points against MLX")
    p.add_argument("--student", type=Path, required=True)
    p.add_argument("--gguf", type=Path, required=True)
    p.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP, help="skill-accuracy points (default 2.0)")
    p.add_argument("--split", default="test", choices=["test", "valid"])
    p.add_argument("--report", type=Path, default=DEFAULT_REPORT)

    p = verbs.add_parser("peft", help="write the mlx-lm adapter in Hugging Face PEFT format")
    p.add_argument("--lora", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--base", help="recorded as base_model_name_or_path")
    return parser


@cli
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    ensure_openblas()
    if args.verb == "merge":
        result = merge(args.base, args.lora, args.out, peft=not args.no_peft)
        note = " (base dequantized first)" if result.dequantized else ""
        print(f"{result.out_dir}: fused {result.fused_layers} LoRA layers{note}"
              + (f"; PEFT adapter in {result.peft_dir}" if result.peft_dir else ""))
    elif args.verb == "convert":
        report = convert(args.src, args.out, args.quant, args.runner)
        for name in ("f16", "quantized"):
            r = report[name]
            types = ", ".join(f"{k}x{v}" for k, v in r["tensor_types"].items())
            print(f"{r['path']}: {r['size_bytes'] / 1e6:.1f} MB, {r['bits_per_weight']} bits/weight ({types})")
        print(f"{args.out}.sha256: written")
    elif args.verb == "modelfile":
        print(f"{write_modelfile(args.student, args.gguf, args.out, num_ctx=args.num_ctx)}: written")
    elif args.verb == "gate":
        report = run_gate(args.student, args.gguf, args.max_drop, args.report, args.split)
        print(json.dumps({k: v["metrics"].get("skill_accuracy") for k, v in report["variants"].items()}))
        print(f"{args.report}: written")
        if not report["passed"]:
            fail(args.gguf, report["message"] + f"; see {args.report}", "skill_accuracy")
        print(report["message"])
    elif args.verb == "peft":
        print(f"{write_peft_adapter(args.lora, args.out, base=args.base)}: written")


if __name__ == "__main__":
    main()
