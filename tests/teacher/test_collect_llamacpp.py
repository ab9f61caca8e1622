"""Collection against a real third-party server: llama-cpp-python's OpenAI-compatible server with SmolLM2-135M.

A 135M model is no teacher: its labels may be wrong or rejected. What must hold is the client's side: the
server's HTTP 500 to a json_schema response_format is survived (json_object + schema instead), and every
answer is validated, so the run ends clean: each prompt labeled with a catalog-valid label or rejected.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import requests

from distill.skills import load_catalog
from tests.support import stop_process

pytestmark = pytest.mark.slow  # a real model on 2 shared cores: tens of seconds

MINI_CATALOG = """\
version: 1
skills:
  look:
    description: Turn the head to look in a direction.
    args:
      type: object
      properties:
        direction: {type: string, enum: [left, right, up, down, center]}
      required: [direction]
      additionalProperties: false
    examples:
      - {text: "look to your left", args: {direction: left}}
  chat:
    description: Anything else.
    examples:
      - {text: "tell me a joke"}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(smollm2_gguf, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "1024", "--n_threads", "2"],
            stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/models", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-500:]}")
            time.sleep(0.3)
        yield url
    finally:
        stop_process(proc)


def test_routes_against_llama_cpp_server(llama_server, tmp_path, teacher_config_for, cli):
    catalog_path = tmp_path / "skills.yaml"
    catalog_path.write_text(MINI_CATALOG)
    catalog = load_catalog(catalog_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("look up\ntell me a story\n")
    config = teacher_config_for(llama_server, model="smollm2", concurrency=1, max_tokens=32, temperature=0,
                                timeout=300, retries=1)
    out = tmp_path / "routes.jsonl"
    result = cli(sys.executable, "scripts/collect_routes.py", "--config", config, "--input", prompts, "--out", out,
                 "--catalog", catalog_path, "--cache", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert "json_schema -> json_object+schema" in result.stderr  # the server's 500 was understood, not fatal

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rejects_path = tmp_path / "routes.rejected.jsonl"
    rejects = [json.loads(line) for line in rejects_path.read_text().splitlines()] if rejects_path.exists() else []
    assert sorted(r["text"] for r in rows + rejects) == ["look up", "tell me a story"]
    for row in rows:
        catalog.validate({"skill": row["skill"], "args": row["args"]})
    for reject in rejects:
        assert reject["reason"] and "raw" in reject
    audit = [json.loads(line) for line in (tmp_path / "routes.audit.jsonl").read_text().splitlines()]
    assert {a["mode"] for a in audit} == {"json_object+schema"}
