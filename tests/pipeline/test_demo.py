"""`make demo` (distill.demo): the whole offline pipeline in a scratch work dir, and that it never leaves a
server behind: not after a full run, not after a failed step, not after Ctrl-C or SIGTERM.

The full run takes the router student the slow tests share (`--student`, trained once per session by
`make train-router`) instead of training its own: what it tests is every later step on a student, and the
pipeline's plumbing; training itself is tested by the shared fixture and tests/training/."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT

from distill.demo import group_members
from distill.fileio import read_jsonl, sha256_file



def process(pid: int) -> str | None:
    """The command line of a live (not zombie) process, None when there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return None if stat.rsplit(")", 1)[1].split()[0] == "Z" else cmdline


def alive(pid: int) -> bool:
    """Still running and still one of ours (a stand-in server or its make), not a reused pid."""
    cmdline = process(pid)
    return cmdline is not None and ("standin" in cmdline or "make" in cmdline)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment names `text` (the work dir)."""
    found = []
    needle = text.encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int(proc.name) == os.getpid():
                continue
            if needle in (proc / "cmdline").read_bytes() or needle in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return [pid for pid in found if process(pid) is not None]


def assert_nothing_left(workdir: Path) -> None:
    registry = json.loads((workdir / "build" / "demo" / "processes.json").read_text())
    assert registry, "the demo recorded no servers"
    for name, entry in registry.items():
        assert entry["pids"], name
        assert not [pid for pid in entry["pids"] if alive(pid)], f"{name} still runs: {entry}"
        assert not group_members(entry["pgid"]), f"{name}'s process group still has members"
    assert not processes_mentioning(str(workdir)), "a process started for the demo is still running"


def assert_the_forced_end_changes_nothing(student: Path, gguf: Path) -> None:
    """A trained student writes compact labels, so its arg-free ones end at the skill name (forced_tail): the
    outputs, decisions and confidences are those of decoding the forced `","args":{}}` token by token."""
    from distill.runtime.backends import LlamaCppBackend

    texts = ["what time is it?", "take a picture of me", "tell me a joke", "stop", "look left", "turn your eyes red",
             "what's the weather in Lisbon", "who built you?"]
    backend = LlamaCppBackend.from_student(student, gguf)
    ended, short = [], []
    for text in texts:
        short.append(backend.predict(text))
        ended.append(backend.last_pieces[-1].token is None)
    backend._arg_free = []  # decode every label to its closing brace, as before the rule
    full = [backend.predict(text) for text in texts]
    assert any(ended) and not all(ended), ended  # both kinds of label were routed
    for a, b in zip(short, full):
        assert (a.output, a.skill, a.args, a.confidence, a.skill_confidence) == \
            (b.output, b.skill, b.args, b.confidence, b.skill_confidence), a.text
        assert a.n_tokens <= b.n_tokens


def demo_cmd(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "distill", "demo", "--workdir", str(workdir), *extra]


def demo_env() -> dict:
    from distill.blas import env_with_openblas

    return env_with_openblas({**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.slow
def test_fast_demo_runs_the_whole_pipeline_and_stops_its_servers(tmp_path, cli, trained_router):
    workdir = tmp_path / "demo"
    shared_spec = (trained_router / "student.json").read_text()
    result = cli(*demo_cmd(workdir, "--fast", "--student", str(trained_router)),
                 timeout=3000)  # a few minutes when the machine is quiet
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]

    # every step announced itself and its duration
    for index, step in enumerate(("prepare", "teacher", "collect", "train", "evaluate", "export", "calibrate",
                                  "deploy", "route"), 1):
        assert f"[{index}/9] {step}:" in result.stdout
        assert f"--- {step}: done in " in result.stdout

    # the final table, printed and written
    table = (workdir / "reports" / "demo.md").read_text()
    assert table in result.stdout
    for row in ("| labeled routes (data/routes.jsonl) |", "| untrained base", "| MLX student", "| GGUF f16",
                "| GGUF Q4_K_M", "| confidence threshold", "| precision / coverage", "student latency via Ollama",
                "| LoRA adapters", "| **total** |"):
        assert row in table, row
    routes = read_jsonl(workdir / "data" / "routes.jsonl")
    assert f"| labeled routes (data/routes.jsonl) | {len(routes)} |" in table
    assert len(routes) >= 300 and {r["teacher"] for r in routes} == {"standin-gpt-oss"}

    # the artifacts stay where the Makefile puts them, inside the work dir
    for name in ("prompts/router_expanded.txt", "data/style.jsonl", "models/router_student_mlx/adapters.safetensors",
                 "models/router_merged/config.json", "gguf/router-student.f16.gguf", "ollama/RouterStudent.Modelfile",
                 "reports/router_eval.json", "reports/export.json", "reports/calibration.json",
                 "reports/demo_routes.json"):
        assert (workdir / name).is_file(), name
    gguf = workdir / "gguf" / "router-student.gguf"
    assert_the_forced_end_changes_nothing(workdir / "models" / "router_student_mlx", gguf)
    assert (workdir / "gguf" / "router-student.gguf.sha256").read_text().split()[0] == sha256_file(gguf)
    student = json.loads((workdir / "models" / "router_student_mlx" / "student.json").read_text())
    # the shared student, copied: calibrated in the work dir, the original untouched for the other tests
    assert student["settings"] == json.loads(shared_spec)["settings"] and isinstance(student["threshold"], float)
    assert (trained_router / "student.json").read_text() == shared_spec
    assert f"copied the trained student {trained_router}" in result.stdout
    # calibrated on the calibration requests make collect labelled, not on the validation split
    calibration = json.loads((workdir / "reports" / "calibration.json").read_text())
    requests = read_jsonl(workdir / "data" / "calibration_routes.jsonl")
    assert calibration["calibration"] == ["data/calibration_routes.jsonl"]
    assert calibration["total"] + calibration["dropped_trained"] == len(requests) >= 500
    assert {r["teacher"] for r in requests} == {"standin-gpt-oss"}
    assert f"| precision / coverage on the calibration requests (n={calibration['total']}: " in table
    export = json.loads((workdir / "reports" / "export.json").read_text())
    assert export["passed"] and set(export["variants"]) == {"mlx", "q4", "f16"}
    # make eval-router (train/eval_router.py) on the shared student: it beats the untrained base and routes
    # held-out requests (this is the one evaluation of that student; test_pipeline_router checks the artifact)
    evaluation = json.loads((workdir / "reports" / "router_eval.json").read_text())["results"]
    mlx_student, base = evaluation["mlx student"], evaluation["untrained base"]
    # The test split holds phrasing families training never saw (--split families): measured 90.2% (55 of 61)
    # at 100 iterations, 86.9% at 60; the untrained base 45.9%. 0.85 proves learning without riding one record.
    assert mlx_student["skill_accuracy"] >= 0.85 and mlx_student["valid_json_rate"] == 1.0, mlx_student
    assert mlx_student["skill_accuracy"] > base["skill_accuracy"]
    assert "| mlx student |" in result.stdout and "| untrained base |" in result.stdout
    assert (workdir / "reports" / "router_confusion.png").stat().st_size > 10_000

    # deployed by Ansible into the sandbox robot, and the example requests went through it
    robot = workdir / "build" / "demo-robot"
    current = robot / "models" / "router-student" / "current"
    assert current.is_symlink() and (current / "router-student.gguf").is_file()
    assert sha256_file(current / "router-student.gguf") == sha256_file(gguf)
    assert len(read_jsonl(robot / "ollama-state" / "create.log")) == 1
    decisions = json.loads((workdir / "reports" / "demo_routes.json").read_text())
    assert len(decisions) == 4
    # the deployed model answered every request with a catalog label (acted on, or below the threshold: a
    # quickly trained student is not always sure enough for 99% precision), and chat went to the fallback model
    assert all(d["source"] == "student" or d["reason"] == "below_threshold" for d in decisions), decisions
    assert all(d["reply"] for d in decisions if d["skill"] == "chat"), decisions
    assert "eyes_color" in result.stdout and "every server stopped" in result.stdout

    assert_nothing_left(workdir)


def wait_for_services(proc: subprocess.Popen, registry: Path, names: set[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        if registry.is_file() and names <= set(json.loads(registry.read_text())):
            return
        time.sleep(0.2)
    raise AssertionError(f"{names} not started within {timeout}s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_servers_and_the_running_step(tmp_path, sig):
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(demo_cmd(workdir, "--fast"), cwd=ROOT, env=demo_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_services(proc, workdir / "build" / "demo" / "processes.json", {"teacher"})
        time.sleep(1.0)  # the collect step has started its make
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted during step" in output
    assert_nothing_left(workdir)


def test_a_failed_step_names_itself_and_stops_the_servers(tmp_path, cli):
    workdir = tmp_path / "demo"
    (workdir / "data" / "routes.jsonl").mkdir(parents=True)  # collect cannot write its output
    result = cli(*demo_cmd(workdir, "--fast"), timeout=600)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "error: demo step 'collect':" in result.stderr
    assert "build/demo/logs/collect.log" in result.stderr
    assert_nothing_left(workdir)


def test_refuses_data_labeled_by_a_real_teacher(tmp_path, cli):
    workdir = tmp_path / "demo"
    (workdir / "data").mkdir(parents=True)
    record = {"id": "r1", "text": "look left", "skill": "look", "args": {"direction": "left"}, "votes": 1,
              "teacher": "gpt-oss-20b", "created": "2026-11-25T00:00:00Z"}
    (workdir / "data" / "routes.jsonl").write_text(json.dumps(record) + "\n")
    result = cli(*demo_cmd(workdir), timeout=120)
    assert result.returncode == 2
    assert "demo step 'prepare'" in result.stderr and "data/routes.jsonl: teacher:" in result.stderr
    assert "gpt-oss-20b" in result.stderr
    assert not (workdir / "build" / "demo" / "processes.json").exists()  # nothing was started


def test_student_must_be_a_trained_router_student(tmp_path, cli):
    workdir, student = tmp_path / "demo", tmp_path / "not-a-student"
    student.mkdir()
    result = cli(*demo_cmd(workdir, "--fast", "--student", str(student)), timeout=120)
    assert result.returncode == 2 and f"error: {student / 'student.json'}" in result.stderr, result.stderr
    assert not workdir.exists()  # refused before anything was laid out or started
    both = cli(*demo_cmd(workdir, "--iters", "5", "--student", str(student)), timeout=120)
    assert both.returncode == 2 and "--iters trains a student, --student reuses one" in both.stderr
