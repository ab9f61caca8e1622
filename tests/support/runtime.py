"""Fixtures of the runtime tests: fake Ollama and OpenAI-compatible servers on loopback, an untrained 'student', and
the stand-in Ollama serving a real GGUF."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fakehttp import JsonHandler, LoopbackServer


class FakeServer(LoopbackServer):
    """A real HTTP server on 127.0.0.1; each test sets `server.answer = fn(path, body) -> (status, obj)`."""

    def __init__(self):
        self.requests: list[tuple[str, dict]] = []
        self.answer = lambda path, body: (404, {"error": "no answer set"})
        self.delay = 0.0
        fake = self

        class Handler(JsonHandler):
            def do_POST(self):  # noqa: N802
                body = self.json_body()
                fake.requests.append((self.path, body))
                if fake.delay:
                    time.sleep(fake.delay)
                self.send_json(*fake.answer(self.path, body))

        super().__init__(Handler)


@pytest.fixture
def fake_server():
    server = FakeServer()
    yield server
    server.close()


def ollama_answer(content: str, probs: dict[str, float] | None = None, logprobs: bool = True) -> dict:
    """An /api/chat answer whose logprobs split `content` into word / punctuation tokens.

    `probs` maps a token text to its probability (others get 0.99); the top_logprobs list the token itself.
    """
    import math

    answer = {"model": "router-student", "message": {"role": "assistant", "content": content}, "done": True}
    if logprobs:
        entries = []
        for token in re.findall(r"[A-Za-z0-9]+|_[A-Za-z0-9]*|[^\w]+", content):
            lp = math.log((probs or {}).get(token, 0.99))
            entries.append({"token": token, "logprob": lp, "bytes": list(token.encode()),
                            "top_logprobs": [{"token": token, "logprob": lp, "bytes": list(token.encode())}]})
        answer["logprobs"] = entries
    return answer


def openai_answer(text: str) -> dict:
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": "big",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]}


@pytest.fixture(scope="session")
def smollm2_backend(smollm2_gguf, catalog):
    """The untrained SmolLM2 GGUF behind the catalog grammar, with the brief catalog prompt (loaded once)."""
    from distill.runtime.backends import LlamaCppBackend

    return LlamaCppBackend(smollm2_gguf, catalog, n_ctx=1024, timeout_s=300)  # generous: a shared, busy CPU


@pytest.fixture
def untrained_student(tmp_path, catalog) -> Path:
    """A student dir for the untrained base: student.json with the brief prompt, and a small valid split."""
    from distill.prompting import brief_route_prompt

    student = tmp_path / "router_student_mlx"
    student.mkdir()
    spec = {"name": "router_student", "kind": "router", "base": "models/base-smollm2-135m",
            "system_prompt": brief_route_prompt(catalog), "chat_template": None, "stop": ["<|im_end|>"],
            "catalog": "config/skills.yaml", "catalog_hash": catalog.hash,
            "splits": {"train": 0, "valid": 6, "test": 0},
            "settings": {}, "git_commit": "test", "created": "2026-11-25T00:00:00+00:00", "threshold": None}
    (student / "student.json").write_text(json.dumps(spec, indent=2))
    records = [
        ("turn your eyes red", "eyes_color", {"color": "red"}),
        ("look to your left", "look", {"direction": "left"}),
        ("what time is it?", "time_now", {}),
        ("take a picture of me", "take_photo", {}),
        ("tell me a joke", "chat", {}),
        ("volume to 30", "set_volume", {"level": 30}),
    ]
    with (student / "valid.jsonl").open("w") as handle:
        for i, (text, skill, args) in enumerate(records):
            handle.write(json.dumps({"id": f"v{i}", "text": text, "skill": skill, "args": args, "votes": 1,
                                     "teacher": "test", "created": "2026-11-25"}) + "\n")
    return student


@contextlib.contextmanager
def serve_standin_ollama(home: Path, gguf: Path, model: str = "router-student") -> Iterator[str]:
    """The stand-in `ollama` (tools/standin-ollama/ollama) with `model` created from `gguf` by a Modelfile, then
    `ollama serve` on a free loopback port, as systemd runs it on the Orin; yields the base URL, stops it after.

    The stand-in runs on this test's interpreter (it needs llama-cpp-python), whatever the client runs on."""
    from tests.support import free_port, stop_process, wait_for_port
    from tests.support.deploy import STANDIN_OLLAMA, write_modelfile

    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OLLAMA_STANDIN_HOME": str(home), "OLLAMA_STANDIN_PYTHON": sys.executable}
    modelfile = write_modelfile(home / "Modelfile", str(gguf))
    created = subprocess.run([str(STANDIN_OLLAMA), "create", model, "-f", str(modelfile)], env=env,
                             capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stderr[-2000:]
    port = free_port()
    with (home / "serve.log").open("w") as log:
        proc = subprocess.Popen([str(STANDIN_OLLAMA), "serve"], env={**env, "OLLAMA_HOST": f"127.0.0.1:{port}"},
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
