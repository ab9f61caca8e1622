"""Benchmarks and `make bench`'s report: argument parsing, result parsing, report assembly (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.support import ROOT

from distill import benchreport
from distill.training import datasets, train
from distill.benchreport import BenchRun
from distill.blas import OPT_OUT, openblas_path
from distill.errors import DistillError
from tests.support.data import write_routes

BENCHES = sorted((ROOT / "bench").glob("*.py"))


def load_bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- every bench: --help, --quick, --json --------------------------------------------------------------------

@pytest.mark.parametrize("script", BENCHES, ids=[p.stem for p in BENCHES])
def test_each_bench_has_help_with_quick_and_json(script, cli):
    result = cli(sys.executable, script, "--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--quick" in result.stdout and "--json" in result.stdout


def test_report_discovers_every_bench_in_goal_order():
    names = [p.stem for p in benchreport.discover()]
    assert sorted(names) == sorted(p.stem for p in BENCHES)
    known = [n for n in names if n in benchreport.ORDER]
    assert known == [n for n in benchreport.ORDER if n in names]
    assert {"blas_speed", "train_speed", "export_quality", "collect_throughput", "route_latency"} <= set(names)


def test_report_rejects_an_unknown_bench_name():
    with pytest.raises(DistillError, match="--only: no bench/nope.py"):
        benchreport.discover(only=["nope"])


# ---- argument parsing ------------------------------------------------------------------------------------------

def test_blas_speed_arguments():
    blas = load_bench("blas_speed")
    full, quick = blas.parse_args([]), blas.parse_args(["--quick", "--json"])
    assert full.sizes == [1024, 2048] and full.train_iters >= 2
    assert quick.sizes == [1024] and quick.train_iters == 2 and quick.train_batch == 1 and quick.json


def test_blas_speed_sides_differ_only_in_the_blas(monkeypatch):
    blas = load_bench("blas_speed")
    monkeypatch.setenv("LD_PRELOAD", ":".join(filter(None, [openblas_path(), "/lib/other.so"])))
    monkeypatch.setenv(OPT_OUT, "reference")
    reference = blas.side_env("reference")
    assert reference[OPT_OUT] == "reference" and "libopenblas" not in reference["LD_PRELOAD"]
    assert "/lib/other.so" in reference["LD_PRELOAD"]  # other preloads are kept
    if openblas_path():
        fast = blas.side_env("openblas")
        assert OPT_OUT not in fast and fast["LD_PRELOAD"].split(":")[0] == openblas_path()


def test_blas_speed_summary_ratios():
    blas = load_bench("blas_speed")
    sides = {"openblas": {"matmul_f32_gflops": {"1024": 100.0}, "matmul_f16_gflops": {"1024": 5.0},
                          "lora": {"tokens_per_s": 30.0, "batch": 2}},
             "reference": {"matmul_f32_gflops": {"1024": 4.0}, "matmul_f16_gflops": {"1024": 5.0},
                           "lora": {"tokens_per_s": 1.5, "batch": 2}}}
    rows = {r["measure"]: r for r in blas.summarize(sides)["rows"]}
    assert rows["float32 matmul 1024², GFLOP/s"]["ratio"] == 25.0
    assert rows["float16 matmul 1024², GFLOP/s (contrast)"]["ratio"] == 1.0
    assert rows["LoRA training (batch 2), tokens/s"]["ratio"] == 20.0
    only_reference = blas.summarize({"reference": sides["reference"]})["rows"]
    assert all(r["ratio"] is None and r["openblas"] is None for r in only_reference)


def test_train_speed_arguments():
    speed = load_bench("train_speed")
    args = speed.parse_args([])
    assert (args.iters, args.batch, args.lora_rank, args.num_layers, args.rounds) == (8, 8, 8, 16, 2)
    quick = speed.parse_args(["--quick", "--rounds", "3"])
    assert (quick.iters, quick.rounds) == (4, 1)


def test_train_speed_gives_mlx_lm_the_trainers_own_split_and_settings(tmp_path, catalog):
    """Same examples, same system prompt, same batch/iterations/LoRA settings, prompt masking on."""
    import yaml

    speed = load_bench("train_speed")
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"num_hidden_layers": 30}))
    routes = write_routes(tmp_path / "routes.jsonl")
    args = speed.parse_args(["--base", str(base), "--iters", "6", "--batch", "4", "--lora-rank", "4",
                             "--num-layers", "8"])
    command, sizes = speed.write_mlx_lm_inputs(args, routes, tmp_path)

    flags = dict(zip(command[4::1], command[5::1]))
    assert command[1:5] == ["-m", "mlx_lm", "lora", "--train"] and "--mask-prompt" in command
    assert (flags["--batch-size"], flags["--iters"], flags["--num-layers"]) == ("4", "6", "8")
    assert flags["--model"] == str(base) and flags["--seed"] == "0" and flags["--learning-rate"] == "0.0002"
    assert yaml.safe_load(Path(flags["-c"]).read_text())["lora_parameters"]["rank"] == 4

    ours = train.build_parser("router").parse_args(speed.trainer_flags(args, routes, tmp_path / "out"))
    assert (ours.batch, ours.iters, ours.lora_rank, ours.num_layers) == (4, 6, 4, 8)
    splits = datasets.split_records(datasets.load_routes(routes, catalog), key="text", group="skill",
                                    valid_frac=0.1, test_frac=0.1, seed=0)
    data = Path(flags["--data"])
    for name in ("train", "valid"):
        written = [json.loads(line) for line in (data / f"{name}.jsonl").read_text().splitlines()]
        assert written == [datasets.router_chat(r) for r in splits[name]]
        assert sizes[name] == len(written)
    assert not (data / "test.jsonl").exists()  # the held-out split stays out of both runs


def test_train_speed_reads_mlx_lm_tokens_per_second_from_its_own_table():
    """Rendered by the installed mlx-lm's TrainUI (colors forced, as in a captured run)."""
    speed = load_bench("train_speed")
    program = ("from mlx_lm.cli_ui import TrainUI\n"
               "with TrainUI(3) as ui:\n"
               "    ui.report_val(1, 3.2, 0.5)\n"
               "    ui.report_train(1, 3.0, 1234.5, 900)\n"
               "    ui.report_train(2, 3.1, 48.2, 1500)\n"
               "    ui.report_train(3, 2.0, 51.0, 2100)\n")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert speed.mlx_lm_step_rates(out.stdout) == {1: 1234.0, 2: 48.0, 3: 51.0}
    summary = speed.summary([speed.mlx_lm_step_rates(out.stdout)], [10.0])
    assert summary["tokens_per_s"] == 49.5  # step 1 (compiling) left out


def test_train_speed_reads_our_metrics_csv(tmp_path):
    speed = load_bench("train_speed")
    csv_file = tmp_path / "metrics.csv"
    csv_file.write_text("step,train_loss,valid_loss,tokens_per_sec\n"
                        "0,,3.1,\n1,3.0,,20.0\n2,2.5,,40.0\n3,2.0,2.2,44.0\n")
    rates = speed.ours_step_rates(csv_file)
    assert rates == {1: 20.0, 2: 40.0, 3: 44.0}
    assert speed.summary([rates], [1.0])["tokens_per_s"] == 42.0
    pooled = speed.summary([rates, {1: 5.0, 2: 10.0, 3: 12.0}], [1.0, 3.0])
    assert pooled["tokens_per_s"] == 26.0 and pooled["wall_s"] == 2.0 and pooled["steps_reported"] == 6
    with pytest.raises(SystemExit, match="no tokens/s"):
        speed.summary([{}], [1.0])


# ---- export / accuracy rows ----------------------------------------------------------------------------------

def export_report(q4_size: int, f16_size: int) -> dict:
    metrics = lambda acc: {"skill_accuracy": acc, "args_exact": acc - 0.1, "valid_json_rate": 1.0}  # noqa: E731
    return {"student": "models/router_student_mlx", "max_drop_points": 2.0, "drop_points": 1.0, "passed": True,
            "message": "quality gate passes", "split": "test", "n_records": 40, "size_ratio_q4_f16": q4_size / f16_size,
            "variants": {"mlx": {"metrics": metrics(0.95)},
                         "q4": {"metrics": metrics(0.94), "size_bytes": q4_size, "file_type": "MOSTLY_Q4_K_M",
                                "bits_per_weight": 5.6},
                         "f16": {"metrics": metrics(0.95), "size_bytes": f16_size}}}


def test_export_quality_reads_the_gate_report(tmp_path):
    export = load_bench("export_quality")
    gguf = tmp_path / "router-student.gguf"
    gguf.write_bytes(b"q" * 30)
    (tmp_path / "router-student.f16.gguf").write_bytes(b"f" * 100)
    report = tmp_path / "export.json"
    report.write_text(json.dumps(export_report(30, 100)))
    result = export.measure(report, gguf)
    assert result["available"] and result["q4_over_f16"] == 0.3 and result["size_goal_met"]
    assert result["accuracy"]["q4"]["skill_accuracy"] == 0.94 and result["q4_minus_f16_points"] == -1.0
    assert result["stale"] == [] and result["goals_met"]
    size, accuracy = result["summary"]
    assert (size["value"], size["baseline"], size["ratio"], size["goal"], size["met"]) == (
        "0.0 MB", "f16 0.0 MB", "0.300", "<= 0.35", True)
    assert (accuracy["measure"], accuracy["value"], accuracy["baseline"], accuracy["ratio"], accuracy["met"]) == (
        "held-out skill accuracy, Q4 vs f16 (40 records)", "Q4 0.940", "f16 0.950, MLX 0.950", "-1.0 points", True)
    assert accuracy["goal"] == "gate: Q4 <= 2.0 points below MLX"
    gguf.write_bytes(b"q" * 31)  # re-exported after the gate ran
    stale = export.measure(report, gguf)
    assert stale["stale"] == ["q4"] and stale["summary"][-1]["measure"] == "note"
    assert "older than the q4 GGUF" in stale["summary"][-1]["value"]


def test_export_quality_without_a_student(tmp_path):
    export = load_bench("export_quality")
    result = export.measure(tmp_path / "export.json", tmp_path / "router-student.gguf")
    summary = result.pop("summary")
    assert result == {"bench": "export_quality", "available": False, "reason": "not available: run make demo first"}
    assert [(row["measure"], row["value"], row["met"]) for row in summary] == [
        ("GGUF size Q4 / f16", "not available: run make demo first", None),
        ("held-out skill accuracy, Q4 vs f16", "not available: run make demo first", None)]
    (tmp_path / "router-student.gguf").write_bytes(b"q" * 40)
    (tmp_path / "router-student.f16.gguf").write_bytes(b"f" * 100)
    sizes_only = export.measure(tmp_path / "export.json", tmp_path / "router-student.gguf")
    assert sizes_only["q4_over_f16"] == 0.4 and not sizes_only["size_goal_met"] and sizes_only["accuracy"] == {}
    assert [(row["value"], row["met"]) for row in sizes_only["summary"]] == [
        ("0.0 MB", False), ("not available: run make gguf", None)]


def test_export_quality_json_mode(tmp_path, cli):
    result = cli(sys.executable, "bench/export_quality.py", "--json", "--report", tmp_path / "none.json",
                 "--gguf", tmp_path / "none.gguf", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout)
    assert {k: printed[k] for k in ("bench", "available", "reason")} == {
        "bench": "export_quality", "available": False, "reason": "not available: run make demo first"}
    assert [benchreport.Row.from_dict(row).value for row in printed["summary"]] == [
        "not available: run make demo first"] * 2


# ---- the report ------------------------------------------------------------------------------------------------

CANNED = {
    "collect_throughput": {"bench": "collect_throughput", "latency_s": 0.5, "goals_met": True,
                           "throughput": [{"concurrency": 4, "requests": 32, "seconds": 4.1, "requests_per_s": 7.8,
                                           "bound_per_s": 8.0, "fraction": 0.975}],
                           "cache": {"prompts": 80, "first_s": 10.2, "rerun_s": 0.05, "speedup": 204.0,
                                     "teacher_calls_on_rerun": 0, "cached_answers": 80}},
    "train_speed": {"bench": "train_speed", "iters": 8, "batch": 8, "lora_rank": 8, "num_layers": 16, "rounds": 1,
                    "splits": {"train": 200, "valid": 25, "test": 25}, "routes": "x",
                    "ours": {"tokens_per_s": 51.0, "wall_s": 60}, "mlx_lm": {"tokens_per_s": 50.0, "wall_s": 58},
                    "ratio": 1.02, "goals_met": True},
    "blas_speed": {"bench": "blas_speed", "rows": [
        {"measure": "float32 matmul 1024², GFLOP/s", "openblas": 120.0, "reference": 4.0, "ratio": 30.0},
        {"measure": "float16 matmul 1024², GFLOP/s (contrast)", "openblas": 4.0, "reference": 4.0, "ratio": 1.0}]},
    "route_latency": {"model": "router-student@abc", "student": "models/router_student_mlx", "threads": 1, "texts": 8,
                      "warm": {"router_median_ms": 210.0, "floor_median_ms": 200.0, "overhead_ratio": 1.05},
                      "cold": {"router_median_ms": 400.0, "floor_median_ms": 380.0, "overhead_ratio": 1.05},
                      "student_prompt_tokens": 40.0, "teacher_prompt_tokens": 520.0, "prompt_token_ratio": 0.077},
    "export_quality": {"bench": "export_quality", "available": False, "reason": "not available: run make demo first"},
}


def declared(name: str) -> dict:
    """A canned result as the bench prints it: with the summary rows the bench itself declares."""
    result = CANNED[name]
    return {**result, "summary": [row.to_dict() for row in load_bench(name).summary_rows(result)]}


def canned_runs() -> list[BenchRun]:
    runs = [BenchRun(name, [sys.executable, str(ROOT / "bench" / f"{name}.py")], 1.0, declared(name),
                     f"### {name} table\n\n| a |") for name in CANNED]
    runs.append(BenchRun("new_bench", [sys.executable, "bench/new_bench.py"], 2.0, None, "", "exit 1: boom"))
    return runs


# ---- each bench declares its own summary rows ------------------------------------------------------------------

def test_collect_throughput_rows():
    rows = load_bench("collect_throughput").summary_rows(CANNED["collect_throughput"])
    text = {(r.measure, r.value, r.baseline, r.ratio, r.goal, r.met) for r in rows}
    assert ("throughput, C = 4 in flight (L = 0.5 s)", "7.80 req/s", "C/L = 8.00 req/s", "0.97", ">= 0.9", True) in text
    cache = rows[-1]
    assert cache.measure.startswith("re-run from the answer cache") and cache.ratio == "204.0x" and cache.met
    slow = {**CANNED["collect_throughput"], "cache": {**CANNED["collect_throughput"]["cache"], "speedup": 20.0}}
    assert load_bench("collect_throughput").summary_rows(slow)[-1].met is False


def test_train_speed_row():
    (row,) = load_bench("train_speed").summary_rows(CANNED["train_speed"])
    assert row.measure == "make train-router vs python -m mlx_lm lora (8 it, batch 8)"
    assert (row.value, row.baseline, row.ratio, row.goal, row.met) == ("51.0 tok/s", "50.0 tok/s", "1.02x", ">= 1.0x",
                                                                       True)
    assert not load_bench("train_speed").summary_rows({**CANNED["train_speed"], "ratio": 0.97})[0].met


def test_blas_speed_rows():
    rows = load_bench("blas_speed").summary_rows(CANNED["blas_speed"])
    assert rows[0].ratio == "30.0x" and rows[0].met and rows[0].measure.endswith(": OpenBLAS vs reference BLAS")
    assert "float16" in rows[1].measure and rows[1].met is None  # contrast: no goal


def test_route_latency_rows():
    rows = load_bench("route_latency").summary_rows(CANNED["route_latency"])
    prompt = next(r for r in rows if r.measure.startswith("prompt tokens"))
    assert prompt.ratio == "13.0x" and prompt.met


# ---- the report renders what the benches declare -----------------------------------------------------------------

def test_report_renders_the_declared_rows_in_bench_order():
    runs = canned_runs()
    rows = benchreport.summary_rows(runs)
    expected = [benchreport.Row.from_dict(row) for run in runs if run.ok for row in run.result["summary"]]
    assert rows[:-1] == expected
    assert [r.value for r in rows if r.area == "export"] == ["not available: run make demo first"] * 2
    failed = rows[-1]
    assert failed.measure == "bench/new_bench.py" and failed.value == "FAILED: exit 1: boom" and failed.met is False


def test_report_knows_no_bench_by_name():
    """A bench the report has never heard of shows its own rows; one that declares none gets a "ran" row."""
    row = {"area": "vision", "measure": "camera frames/s", "value": "31 fps", "baseline": "driver 32 fps",
           "ratio": 0.97, "goal": ">= 0.9", "met": True}
    new = BenchRun("camera_fps", [sys.executable, "bench/camera_fps.py"], 1.0, {"summary": [row]})
    silent = BenchRun("plain", [sys.executable, "bench/plain.py"], 1.0, {"goals_met": False})
    assert benchreport.summary_rows([new, silent]) == [
        benchreport.Row("vision", "camera frames/s", "31 fps", "driver 32 fps", "0.97", ">= 0.9", True),
        benchreport.Row("plain", "bench/plain.py", "ran: see its details below", met=False)]


@pytest.mark.parametrize("summary, message", [
    ({"area": "x"}, "summary: a list of rows, not dict"),
    (["row"], "summary[0]: not an object"),
    ([{"area": "a", "value": "1"}], "summary[0]: missing 'measure'"),
    ([{"area": "a", "measure": "m", "value": "1"}, {"area": "a", "measure": "m", "value": "1", "met": "yes"}],
     "summary[1]: 'met' must be true, false or null, not 'yes'"),
    ([{"area": "a", "measure": "m", "value": "1", "basline": "2"}], "summary[0]: unknown field 'basline'"),
    ([{"area": "a", "measure": "m", "value": {"ms": 3}}], "summary[0]: 'value' must be text or a number, not dict"),
])
def test_report_turns_a_malformed_summary_into_a_failed_row(summary, message):
    run = BenchRun("train_speed", [sys.executable, "bench/train_speed.py"], 1.0, {"summary": summary})
    (row,) = benchreport.summary_rows([run])
    assert row.value.startswith(f"FAILED: unexpected result ({message}") and row.met is False


def test_report_markdown_has_machine_summary_and_details():
    machine = {"CPU": "Test CPU", "cores": "2", "RAM": "8.0 GiB", "mlx": "0.32.4"}
    started = datetime(2026, 11, 25, 14, 0, tzinfo=timezone.utc)
    text = benchreport.render(canned_runs(), machine, started, "1.00 / 2.00 / 3.00", "2.00 / 2.00 / 2.00", quick=True)
    assert text.startswith("# Benchmarks\n") and "2026-11-25 14:00" in text and "--quick" in text
    assert "| CPU | Test CPU |" in text and "| load average (1/5/15 min) before / after | 1.00 / 2.00 / 3.00" in text
    assert "| training | make train-router vs python -m mlx_lm lora (8 it, batch 8) | 51.0 tok/s | 50.0 tok/s | " \
           "1.02x | >= 1.0x | yes |" in text
    assert "| bench/new_bench.py | FAILED: exit 1: boom |" in text and "**no**" in text
    assert "### bench/train_speed.py\n\n`python bench/train_speed.py`: 1.0 s\n\n#### train_speed table" in text
    assert "`python bench/new_bench.py`: 2.0 s, **failed**: exit 1: boom" in text


def test_machine_facts_name_the_machine():
    facts = benchreport.machine_facts()
    assert facts["cores"].isdigit() and facts["CPU"] and facts["Python"].count(".") == 2
    assert facts["mlx"] != "not installed" and facts["llama-cpp-python"] != "not installed"


def test_split_output_takes_the_last_json_object_line():
    details, result = benchreport.split_output("| a |\n|---|\n{not json\n{\"x\": 1}\n")
    assert details == "| a |\n|---|\n{not json" and result == {"x": 1}
    with pytest.raises(ValueError, match="no JSON result"):
        benchreport.split_output("only a table\n[1, 2]\n")


def write_script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text("import sys, time, json\n" + body + "\n")
    return path


def test_run_bench_records_failures_instead_of_raising(tmp_path):
    ok = benchreport.run_bench(write_script(tmp_path, "ok", "print('### t'); print(json.dumps({'v': sys.argv[1:]}))"),
                               quick=True, timeout=60)
    assert ok.ok and ok.result == {"v": ["--quick"]} and ok.details == "### t"
    crash = benchreport.run_bench(write_script(tmp_path, "crash", "sys.exit('boom: no model')"), quick=False,
                                  timeout=60)
    assert not crash.ok and crash.error == "exit 1: boom: no model"
    silent = benchreport.run_bench(write_script(tmp_path, "silent", "print('just a table')"), quick=False, timeout=60)
    assert silent.error == "no JSON result line in its output"
    pid_file = tmp_path / "child.pid"
    slow = write_script(tmp_path, "slow", "import subprocess\n"
                        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
                        "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
                        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\ntime.sleep(60)")
    assert benchreport.run_bench(slow, quick=False, timeout=3).error == "timed out after 3 s"
    assert not child_alive(int(pid_file.read_text()))  # the bench's own children go with it


def child_alive(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.1)
    return True


def test_make_bench_writes_the_report_even_when_a_bench_fails(tmp_path, monkeypatch, capsys):
    benches = tmp_path / "bench"
    write_script(benches, "good", "print('### good'); print(json.dumps({'goals_met': True}))")
    write_script(benches, "bad", "raise SystemExit('bad: broken')")
    monkeypatch.setattr(benchreport, "BENCH_DIR", benches)
    out = tmp_path / "reports" / "bench.md"
    with pytest.raises(SystemExit, match="1 bench\\(es\\) failed: bad"):
        benchreport.main(["--out", str(out)])
    text = out.read_text()
    assert "| bench/good.py | ran: see its details below |" in text and "FAILED: exit 1: bad: broken" in text
    raw = json.loads(out.with_suffix(".json").read_text())
    assert [run["name"] for run in raw["runs"]] == ["bad", "good"]
    assert "## Summary" in capsys.readouterr().out


def test_route_rows_without_a_student_set_no_prompt_goal():
    untrained = {**CANNED["route_latency"], "student": None, "student_prompt_tokens": 200.0}
    prompt = load_bench("route_latency").summary_rows(untrained)[-1]
    assert "no student yet" in prompt.measure and prompt.ratio == "2.6x" and prompt.met is None
