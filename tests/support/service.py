"""Helpers for the router service's tests: the stand-in Ollama serving the tiny GGUF (tests/support/tinygguf.py)
that can be killed and brought back on its port, a scriptable fake Ollama (versions, answers, delays), a
student dir for the service, the service on a thread, and a load generator that reports percentiles."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import ROOT, free_port, stop_process, wait_for_port
from tests.support.fakehttp import JsonHandler, LoopbackServer
from tests.support.tinygguf import write_tiny_gguf, write_tiny_modelfile

STANDIN_OLLAMA = ROOT / "tools" / "standin-ollama" / "ollama"


def write_service_student(folder: Path, catalog, *, threshold: float | None = 0.0,
                          system_prompt: str | None = None) -> Path:
    """A student dir as the robot holds it: student.json + its catalog copy (catalog.yaml), hash matching."""
    from distill.prompting import brief_route_prompt

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "config" / "skills.yaml", folder / "catalog.yaml")
    spec = {"name": "router_student", "kind": "router", "system_prompt": system_prompt or brief_route_prompt(catalog),
            "stop": ["<|im_end|>"], "catalog": "catalog.yaml", "catalog_hash": catalog.hash, "threshold": threshold,
            "created": "2026-12-01T00:00:00Z", "git_commit": "test"}
    (folder / "student.json").write_text(json.dumps(spec, indent=2))
    # a test split: what `distill deployed record` starts the fixed held-out set from
    (folder / "test.jsonl").write_text(json.dumps({"id": "t0", "text": "how much battery is left?",
                                                   "skill": "battery_status", "args": {}}) + "\n")
    return folder


@dataclass
class StandinOllama:
    """`ollama serve` (the stand-in) on a fixed loopback port, with `router-student` made from the tiny GGUF."""

    home: Path
    port: int
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "OLLAMA_STANDIN_HOME": str(self.home), "OLLAMA_STANDIN_PYTHON": sys.executable,
                "OLLAMA_HOST": f"127.0.0.1:{self.port}"}

    def create(self, gguf: Path, name: str = "router-student") -> None:
        modelfile = write_tiny_modelfile(self.home / f"{name}.Modelfile", gguf)
        done = subprocess.run([str(STANDIN_OLLAMA), "create", name, "-f", str(modelfile)], env=self.env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    def start(self) -> None:
        self.starts += 1
        log = (self.home / f"serve-{self.starts}.log").open("w")
        self.proc = subprocess.Popen([str(STANDIN_OLLAMA), "serve"], env=self.env(), stdout=log,
                                     stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc, timeout=60)

    def kill(self) -> None:
        """SIGKILL, as when Ollama crashes: no goodbye on open connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def standin_ollama(tmp_path_factory, tiny_gguf) -> Iterator[StandinOllama]:
    home = tmp_path_factory.mktemp("standin-ollama")
    ollama = StandinOllama(home, free_port())
    ollama.create(tiny_gguf)
    ollama.start()
    try:
        yield ollama
    finally:
        ollama.stop()


class FakeOllama(LoopbackServer):
    """A scripted Ollama on loopback: `version`, `chat(body) -> (status, obj)`, `delay` seconds per /api/chat."""

    def __init__(self, version: str = "0.12.11"):
        self.version = version
        self.delay = 0.0
        self.chat: Callable[[dict], tuple[int, dict]] = lambda body: (500, {"error": "no answer set"})
        self.requests: list[tuple[str, dict]] = []
        fake = self

        class Handler(JsonHandler):
            def do_GET(self):  # noqa: N802
                if self.path == "/api/version":
                    self.send_json(200, {"version": fake.version})
                else:
                    self.send_json(404, {"error": "not found"})

            def do_POST(self):  # noqa: N802
                body = self.json_body()
                fake.requests.append((self.path, body))
                if fake.delay:
                    time.sleep(fake.delay)
                self.send_json(*fake.chat(body))

        super().__init__(Handler)


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    fake = FakeOllama()
    yield fake
    fake.close()


def label_answer(label: str, p: float = 0.99, logprobs: bool = True) -> dict:
    """An /api/chat answer whose content is `label`, one token per character, each with probability `p`."""
    import math

    answer = {"model": "router-student", "message": {"role": "assistant", "content": label}, "done": True}
    if logprobs:
        answer["logprobs"] = [{"token": c, "logprob": math.log(p), "bytes": list(c.encode()),
                               "top_logprobs": [{"token": c, "logprob": math.log(p)}]} for c in label]
    return answer


@dataclass
class RunningService:
    url: str
    service: object
    server: object

    def route(self, text: str, **extra) -> dict:
        import requests

        response = requests.post(f"{self.url}/route", json={"text": text, **extra}, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()


@contextlib.contextmanager
def running_service(**settings) -> Iterator[RunningService]:
    """The service on a background thread on a free loopback port, stopped after."""
    from distill.runtime.service import load_config, serve_in_thread

    config = load_config(None, {"listen": "127.0.0.1:0", **settings})
    server, service, thread = serve_in_thread(config)
    try:
        yield RunningService(f"http://127.0.0.1:{server.server_address[1]}", service, server)
    finally:
        server.shutdown()
        server.server_close()
        service.close()
        thread.join(10)


@dataclass
class Load:
    """What a load run saw: every response, latencies, errors, the wall time."""

    responses: list[dict] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        from distill.runtime.service import quantile

        return quantile(self.latencies_ms, q)

    def summary(self) -> str:
        n = len(self.latencies_ms)
        return (f"{n} requests in {self.seconds:.1f} s ({n / self.seconds:.1f}/s): p50 {self.percentile(0.5):.0f} ms, "
                f"p95 {self.percentile(0.95):.0f} ms, p99 {self.percentile(0.99):.0f} ms, max "
                f"{max(self.latencies_ms, default=0):.0f} ms; {len(self.errors)} errors")


def load(url: str, clients: int, per_client: int, text: Callable[[int, int], str],
         between: Callable[[int], None] | None = None, timeout: float = 120) -> Load:
    """`clients` threads, each with its own keep-alive session, POST `per_client` requests one after another.
    `between(n)` runs on client 0 after its n-th request (to kill or restart things mid-run)."""
    import requests

    result, lock = Load(), threading.Lock()

    def client(i: int) -> None:
        session = requests.Session()
        for j in range(per_client):
            started = time.perf_counter()
            try:
                response = session.post(f"{url}/route", json={"text": text(i, j)}, timeout=timeout)
                body = response.json() if response.status_code == 200 else None
                error = None if body is not None else f"HTTP {response.status_code}: {response.text[:200]}"
            except requests.RequestException as err:
                body, error = None, f"{type(err).__name__}: {err}"
            with lock:
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                if body is not None:
                    result.responses.append({"client": i, "n": j, **body})
                if error:
                    result.errors.append(error)
            if i == 0 and between is not None:
                between(j)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout * per_client)
    result.seconds = time.perf_counter() - started
    assert not any(t.is_alive() for t in threads), "a client is still running: the load did not stop by itself"
    return result
