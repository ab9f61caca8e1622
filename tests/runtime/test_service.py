"""The router service (distill.runtime.service) over real HTTP on loopback.

Fast tests use a scripted fake Ollama (versions, answers, delays); the end-to-end tests use the stand-in Ollama
(tools/standin-ollama/ollama, real llama.cpp) serving a tiny fixed-ranking GGUF, so 400 requests take a minute,
not an hour: 8 clients x 50 requests, and Ollama killed and brought back in the middle of a run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time

import pytest
import requests

from distill.runtime.decisions import DecisionLog
from distill.runtime.router import Router
from distill.runtime.service import has_logprobs, load_config, pick_backend, version_tuple
from tests.support import ROOT
from tests.support.service import label_answer, load, running_service, write_service_student

pytestmark = pytest.mark.timeout(900)

EYES_RED = '{"skill":"eyes_color","args":{"color":"red"}}'
DECISION_KEYS = {"skill", "args", "confidence", "source", "reason", "latency_ms", "student_ms", "reply", "proposal",
                 "detail", "queue_ms", "model"}


@pytest.fixture
def student(tmp_path, catalog):
    return write_service_student(tmp_path / "student", catalog, threshold=0.5)


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_valid_decision(decision: dict, catalog) -> None:
    """What a conductor relies on: the keys, a catalog label to act on, a reason exactly when falling back."""
    assert DECISION_KEYS <= set(decision), decision
    assert decision["source"] in ("student", "fallback")
    assert catalog.check({"skill": decision["skill"], "args": decision["args"]}) is None, decision
    if decision["source"] == "student":
        assert decision["reason"] is None
    else:
        assert decision["skill"] == "chat" and isinstance(decision["reason"], str) and decision["reason"]
    assert decision["latency_ms"] >= decision["queue_ms"] >= 0


# ---- configuration, versions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("student: s\nthreshhold: 0.5\n", "threshhold: unknown setting"),
    ("student: s\ndeadline_s: soon\n", "deadline_s: 'soon' is not a float"),
    ("student: s\nworkers: true\n", "workers: True is not a int"),
    ("deadline_s: 5\n", "student: the student dir"),
    ("student: s\nbackend: gpu\n", "backend: 'gpu': expected one of auto, ollama, llamacpp"),
    ("student: s\nlisten: nowhere\n", "listen: 'nowhere': expected HOST:PORT"),
    ("- a list\n", "expected a mapping of settings"),
])
def test_bad_config_is_one_line_naming_file_and_setting(tmp_path, text, message):
    config = tmp_path / "router-service.yaml"
    config.write_text(text)
    done = subprocess.run([sys.executable, "-m", "distill", "serve", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr


def test_ollama_versions_and_the_backend_they_choose():
    assert version_tuple("0.12.11") == (0, 12, 11) and version_tuple("v0.13.0-rc1") == (0, 13, 0)
    assert version_tuple("dev") is None
    assert has_logprobs("0.12.11") is True and has_logprobs("0.12.10") is False and has_logprobs("0.9.6") is False
    assert has_logprobs("0.0.0") is None and has_logprobs(None) is None  # a development build: unknown
    auto = load_config(None, {"student": "s", "gguf": "/m/router-student.gguf"})
    assert pick_backend(auto, "0.12.11")[0] == "ollama"
    assert pick_backend(auto, None)[0] == "ollama"  # not up yet: it starts beside us
    backend, why = pick_backend(auto, "0.11.4")
    assert backend == "llamacpp" and "0.11.4 returns no token log-probabilities" in why
    no_gguf = load_config(None, {"student": "s"})
    assert pick_backend(no_gguf, "0.11.4")[0] == "ollama"  # nothing else to route with: health says why


# ---- requests, deadline, queue ------------------------------------------------------------------------------


def test_bad_requests_get_400_naming_the_field(fake_ollama, student, tmp_path):
    fake_ollama.chat = lambda body: (200, label_answer(EYES_RED))
    log = tmp_path / "decisions.jsonl"
    with running_service(student=str(student), ollama=fake_ollama.url, decision_log=str(log), warmup=False) as svc:
        cases = [(b"not json", "body: not JSON"), (b"[1]", "body: expected a JSON object"),
                 (b'{"txt": "hi"}', "unknown field(s) txt"), (b'{"text": 3}', "text: required, a string"),
                 (json.dumps({"text": "x" * 2001}).encode(), "text: 2001 characters, the most is 2000"),
                 (b'{"text": "hi", "context": [{"role": "robot", "content": "x"}]}', "context: expected a list")]
        for raw, message in cases:
            response = requests.post(f"{svc.url}/route", data=raw, timeout=10)
            assert response.status_code == 400 and message in response.json()["error"], (raw, response.text)
        assert requests.get(f"{svc.url}/nope", timeout=10).status_code == 404
        assert requests.post(f"{svc.url}/route", data=b"x" * 70000, timeout=10).status_code == 413
        decision = svc.route("turn your eyes red")
    assert decision["source"] == "student" and decision["skill"] == "eyes_color"
    assert len(log_lines(log)) == 1  # bad requests are not decisions


def test_over_the_deadline_falls_back_with_timeout_and_is_logged_once(fake_ollama, student, tmp_path, catalog):
    fake_ollama.chat = lambda body: (200, label_answer(EYES_RED))
    fake_ollama.delay = 1.5
    log = tmp_path / "decisions.jsonl"
    with running_service(student=str(student), ollama=fake_ollama.url, decision_log=str(log), deadline_s=0.5,
                         warmup=False) as svc:
        started = time.monotonic()
        result = load(svc.url, clients=4, per_client=2, text=lambda i, j: f"turn your eyes red {i} {j}")
        took = time.monotonic() - started
        time.sleep(2.0)  # the late answers arrive now: they must not be logged or counted
        metrics = requests.get(f"{svc.url}/metrics", timeout=10).text
    assert result.errors == []
    assert [d["reason"] for d in result.responses] == ["timeout"] * 8
    for decision in result.responses:
        assert_valid_decision(decision, catalog)
        assert decision["latency_ms"] < 1500 and "deadline" in decision["detail"]
    assert took < 8 * 1.5  # nobody waited for the slow backend in turn
    assert len(log_lines(log)) == 8 and {r["reason"] for r in log_lines(log)} == {"timeout"}
    assert 'droidhead_router_decisions_total{source="fallback",reason="timeout"} 8' in metrics


def test_a_full_queue_makes_requests_wait_never_fail(fake_ollama, student, tmp_path, catalog):
    fake_ollama.chat = lambda body: (200, label_answer(EYES_RED))
    fake_ollama.delay = 0.2
    log = tmp_path / "decisions.jsonl"
    with running_service(student=str(student), ollama=fake_ollama.url, decision_log=str(log), queue_size=1,
                         workers=1, deadline_s=30.0, warmup=False) as svc:
        result = load(svc.url, clients=6, per_client=2, text=lambda i, j: f"turn your eyes red {i} {j}")
    assert result.errors == [] and len(result.responses) == 12
    assert all(d["source"] == "student" for d in result.responses)
    assert max(d["queue_ms"] for d in result.responses) >= 200  # they waited their turn
    assert len(log_lines(log)) == 12


# ---- Ollama's version, logprobs, the llama.cpp alternative ----------------------------------------------------------


def test_an_ollama_without_logprobs_is_named_in_health_and_every_decision(fake_ollama, student, tmp_path):
    fake_ollama.version = "0.11.4"
    fake_ollama.chat = lambda body: (200, label_answer(EYES_RED, logprobs=False))
    with running_service(student=str(student), ollama=fake_ollama.url, decision_log="off") as svc:
        decision = svc.route("turn your eyes red")
        health = requests.get(f"{svc.url}/health", timeout=10)
    assert decision["source"] == "fallback" and decision["reason"] == "no_logprobs"
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    problem = " ".join(health.json()["problems"])
    assert "Ollama 0.11.4 returns no token log-probabilities" in problem and "upgrade Ollama to 0.12.11" in problem
    assert "backend: llamacpp" in problem
    assert health.json()["ollama"]["min_version_for_logprobs"] == "0.12.11"


def test_an_old_ollama_with_a_gguf_routes_with_llama_cpp(fake_ollama, tiny_gguf, catalog, tmp_path):
    fake_ollama.version = "0.11.4"
    student = write_service_student(tmp_path / "student", catalog, threshold=0.0)
    with running_service(student=str(student), ollama=fake_ollama.url, gguf=str(tiny_gguf),
                         decision_log="off") as svc:
        decision = svc.route("how much battery is left?")
        health = requests.get(f"{svc.url}/health", timeout=10).json()
    assert health["backend"] == "llamacpp" and "with llama-cpp-python" in health["backend_why"]
    assert health["status"] == "ok", health
    assert decision["source"] == "student" and decision["skill"] == "battery_status"
    assert fake_ollama.requests == []  # Ollama was only asked its version


# ---- the fallback chat, the log format, metrics -----------------------------------------------------------------


def test_a_fallback_is_answered_by_the_chat_model_with_the_conversation(fake_ollama, student, tmp_path):
    def answer(body):
        if body["model"] == "router-student":  # confident label of an unknown skill: falls back
            return 200, label_answer('{"skill":"dance","args":{}}')
        return 200, {"model": body["model"], "message": {"role": "assistant", "content": " Beep, sunlight! "},
                     "done": True}

    fake_ollama.chat = answer
    persona = tmp_path / "persona.md"
    persona.write_text("You are a droid.")
    context = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with running_service(student=str(student), ollama=fake_ollama.url, decision_log="off", warmup=False,
                         fallback_model="llama3.2:3b", persona=str(persona)) as svc:
        decision = svc.route("why is the sky blue?", context=context)
    assert decision["source"] == "fallback" and decision["reason"] == "unknown_skill"
    assert decision["reply"] == "Beep, sunlight!"
    chat = [body for path, body in fake_ollama.requests if body["model"] == "llama3.2:3b"]
    assert len(chat) == 1 and chat[0]["stream"] is False
    assert chat[0]["messages"] == [{"role": "system", "content": "You are a droid."}, *context,
                                   {"role": "user", "content": "why is the sky blue?"}]


def test_the_service_logs_the_library_format(fake_ollama, student, tmp_path):
    fake_ollama.chat = lambda body: (200, label_answer(EYES_RED))
    library_log, service_log = tmp_path / "library.jsonl", tmp_path / "service.jsonl"
    decisions = DecisionLog(library_log)
    Router.from_student(student, ollama=fake_ollama.url, model="router-student", log=decisions).route("eyes red")
    decisions.close()
    with running_service(student=str(student), ollama=fake_ollama.url, decision_log=str(service_log),
                         model_version="0123456789ab", warmup=False) as svc:
        svc.route("eyes red")
    library, service = log_lines(library_log)[0], log_lines(service_log)[0]
    assert set(service) == set(library) | {"queue_ms"}  # harvest reads either
    assert service["model"] == "ollama:router-student@0123456789ab"


def test_metrics_are_prometheus_text_and_health_says_what_runs(fake_ollama, student):
    fake_ollama.chat = lambda body: (200, label_answer(EYES_RED))
    with running_service(student=str(student), ollama=fake_ollama.url, decision_log="off",
                         model_version="0123456789ab") as svc:
        for _ in range(3):
            svc.route("turn your eyes red")
        health = requests.get(f"{svc.url}/health", timeout=10)
        metrics = requests.get(f"{svc.url}/metrics", timeout=10)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["model_loaded"] and body["ollama"]["reachable"]
    assert body["ollama"]["version"] == "0.12.11" and body["ollama"]["logprobs"] is True
    assert body["threshold"] == 0.5 and body["model_version"] == "0123456789ab"
    assert body["student"]["name"] == "router_student" and re.fullmatch(r"[0-9a-f]{16}", body["catalog_hash"])
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+-]+$')
    for line in metrics.text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert 'droidhead_router_decisions_total{source="student",reason=""} 3' in metrics.text
    assert "droidhead_router_latency_seconds_count 3" in metrics.text
    assert re.search(r'droidhead_router_latency_seconds\{quantile="0.95"\} [0-9.]+', metrics.text)
    assert 'model_version="0123456789ab"' in metrics.text and "droidhead_router_backend_up 1" in metrics.text


def test_the_service_imports_nothing_heavy(repo_root):
    heavy = ("mlx", "mlx_lm", "torch", "transformers", "openai", "llama_cpp", "distill.standins", "distill.training",
             "distill.export", "distill.teacher")
    probe = ("import sys, distill.runtime.service, distill.runtime.chat, distill.runtime.cli; "
             f"print([m for m in sys.modules if m.split('.')[0] in {heavy!r} or m.startswith({heavy!r})])")
    done = subprocess.run([sys.executable, "-c", probe], cwd=repo_root, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_distill_route_routes_a_text_and_serves(repo_root):
    helped = subprocess.run([sys.executable, "-m", "distill.runtime.cli", "serve", "--help"], cwd=repo_root,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--deadline" in helped.stdout
    routed = subprocess.run([sys.executable, "-m", "distill.runtime.cli", "--help"], cwd=repo_root,
                            capture_output=True, text=True, timeout=120)
    assert routed.returncode == 0 and "usage: python -m distill route" in routed.stdout


# ---- end to end: the stand-in Ollama, real llama.cpp, many clients -------------------------------------------------


def test_eight_clients_fifty_requests_each(standin_ollama, tmp_path, catalog):
    student = write_service_student(tmp_path / "student", catalog, threshold=0.0)
    log = tmp_path / "log" / "decisions.jsonl"
    with running_service(student=str(student), ollama=standin_ollama.url, decision_log=str(log),
                         deadline_s=120.0) as svc:
        result = load(svc.url, clients=8, per_client=50, text=lambda i, j: f"client {i} request {j}: battery?")
        metrics = requests.get(f"{svc.url}/metrics", timeout=10).text
    print(f"\nservice, 8 clients x 50 requests via the stand-in Ollama: {result.summary()}")
    assert result.errors == [] and len(result.responses) == 400
    for decision in result.responses:
        assert_valid_decision(decision, catalog)
    assert {d["skill"] for d in result.responses} == {"battery_status"}  # what the tiny model always says
    assert sum(d["source"] == "student" for d in result.responses) == 400
    logged = log_lines(log)
    assert len(logged) == 400
    assert sorted(r["text"] for r in logged) == sorted(f"client {i} request {j}: battery?"
                                                       for i in range(8) for j in range(50))
    assert "droidhead_router_latency_seconds_count 400" in metrics


def test_ollama_killed_mid_run_falls_back_then_recovers(standin_ollama, tmp_path, catalog):
    student = write_service_student(tmp_path / "student", catalog, threshold=0.0)
    log = tmp_path / "decisions.jsonl"
    health: dict[str, int] = {}

    def chaos(n: int) -> None:  # client 0, after its n-th request
        if n == 4:
            standin_ollama.kill()
        elif n == 8:
            health["down"] = requests.get(f"{svc.url}/health", timeout=10).status_code
            standin_ollama.start()

    with running_service(student=str(student), ollama=standin_ollama.url, decision_log=str(log),
                         deadline_s=60.0) as svc:
        result = load(svc.url, clients=4, per_client=15, text=lambda i, j: f"client {i} request {j}", between=chaos)
        after = [svc.route("battery?") for _ in range(5)]
        health["up"] = requests.get(f"{svc.url}/health", timeout=10).status_code
    print(f"\nservice with Ollama killed and restarted mid-run: {result.summary()}")
    assert result.errors == [] and len(result.responses) == 60
    for decision in result.responses + after:
        assert_valid_decision(decision, catalog)
    reasons = {d["reason"] for d in result.responses}
    assert "backend_down" in reasons and reasons <= {None, "backend_down", "backend_error"}, reasons
    client0 = sorted((d for d in result.responses if d["client"] == 0), key=lambda d: d["n"])
    assert [d["source"] for d in client0[:5]] == ["student"] * 5  # before the kill
    assert [d["reason"] for d in client0[5:9]] == ["backend_down"] * 4  # while it was down
    assert all(d["source"] == "student" for d in client0[9:] + after), [d["reason"] for d in client0]
    assert health == {"down": 503, "up": 200}
    assert len(log_lines(log)) == 60 + 5


def test_the_conductor_example_calls_the_service(fake_ollama, student, cli):
    def answer(body):
        if body["model"] == "router-student":
            text = body["messages"][-1]["content"]
            if "eyes" in text:
                return 200, label_answer(EYES_RED)
            return 200, label_answer('{"skill":"chat","args":{}}', p=0.5)  # unsure: falls back
        return 200, {"model": body["model"], "message": {"role": "assistant", "content": "Blue skies!"}, "done": True}

    fake_ollama.chat = answer
    with running_service(student=str(student), ollama=fake_ollama.url, decision_log="off", warmup=False,
                         fallback_model="llama3.2:3b") as svc:
        done = cli(sys.executable, "examples/conductor.py", "--service", svc.url, "turn your eyes red",
                   "why is the sky blue?", "and at night?", timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].strip().startswith("[student") and "eye LEDs -> red" in lines[1]
    assert "[fallback: below_threshold" in lines[3] and "Blue skies!" in lines[3]
    chats = [body for _, body in fake_ollama.requests if body["model"] == "llama3.2:3b"]
    # the second fallback's chat request carries the conversation so far
    assert chats[1]["messages"][-3:] == [{"role": "user", "content": "why is the sky blue?"},
                                         {"role": "assistant", "content": "Blue skies!"},
                                         {"role": "user", "content": "and at night?"}]
    down = cli(sys.executable, "examples/conductor.py", "--service", "http://127.0.0.1:9", "hello", timeout=120)
    assert down.returncode == 0 and "fallback: service_unreachable" in down.stdout


def test_a_service_started_before_ollama_becomes_healthy_once_ollama_answers(fake_ollama, student, tmp_path):
    """At boot the service may start before Ollama listens: the warm-up fails, and /health must not stay
    'starting' until the first real request."""
    fake_ollama.chat = lambda body: (200, label_answer(EYES_RED))
    real_url = fake_ollama.url
    with running_service(student=str(student), ollama=real_url, decision_log="off", warmup=False) as svc:
        svc.service.model_loaded = False  # as after a warm-up that met no Ollama
        first = requests.get(f"{svc.url}/health", timeout=10)
        assert first.status_code == 503 and first.json()["status"] == "starting"
        deadline = time.monotonic() + 20
        while requests.get(f"{svc.url}/health", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "health never became ok"
            time.sleep(0.2)
    assert [path for path, _ in fake_ollama.requests] == ["/api/chat"]  # the warm-up, and no real request
