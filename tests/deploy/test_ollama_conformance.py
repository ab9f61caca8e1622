"""The stand-in Ollama driven by Ollama's official Python client (PyPI `ollama`), call by call, against what
Ollama 0.12.11 answers (server/routes.go of that tag; /work/proto/ollama_api.md and docs/ollama-standin.md).

One stand-in server for the module, started as the robot starts Ollama (`ollama serve`), with
OLLAMA_STANDIN_VRAM=all so /api/ps reports a model fully on a GPU; the CPU default is checked on its own.
Tests marked slow decode with llama.cpp (SmolLM2-135M, a few tokens each).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys

import httpx
import pytest

from tests.support import ROOT, free_port, stop_process, wait_for_port
from tests.support.deploy import CHATML_TEMPLATE, ROUTER_SYSTEM, STANDIN_OLLAMA, write_modelfile

MODEL = "router-student"


def official_client_module():
    """PyPI `ollama`, not this repository's top-level ollama/ folder (Modelfiles), whatever sys.path says."""
    shadows = [p for p in sys.path if p in ("", ".", str(ROOT))]
    kept = [p for p in sys.path if p not in shadows]
    saved, sys.path[:] = list(sys.path), kept
    try:
        sys.modules.pop("ollama", None)
        import ollama
    finally:
        sys.path[:] = saved
    assert hasattr(ollama, "Client"), f"imported {ollama!r}, not the official client"
    return ollama


ollama = official_client_module()


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2_gguf):
    """`ollama serve` (the stand-in) with router-student created from a ChatML Modelfile; yields its URL."""
    root = tmp_path_factory.mktemp("ollama-conformance")
    state = root / "state"
    env = {**os.environ, "OLLAMA_STANDIN_HOME": str(state), "PYTHONPATH": str(ROOT)}
    modelfile = write_modelfile(root / "Modelfile", str(smollm2_gguf))
    created = subprocess.run([str(STANDIN_OLLAMA), "create", MODEL, "-f", str(modelfile)], env=env,
                             capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stderr
    port = free_port()
    env.update({"OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_STANDIN_VRAM": "all"})
    proc = subprocess.Popen([str(STANDIN_OLLAMA), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=(root / "serve.log").open("w"))
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server, timeout=300)


@pytest.fixture(scope="module")
def raw(server):
    """Plain HTTP for what the client does not expose (status lines, headers, debug rendering)."""
    with httpx.Client(base_url=server, timeout=300) as http:
        yield http


def _error(call) -> ollama.ResponseError:
    with pytest.raises(ollama.ResponseError) as caught:
        result = call()
        if hasattr(result, "__next__"):  # a stream raises while it is read
            list(result)
    return caught.value


# ---- no model needed ------------------------------------------------------------------------------------


def test_version_root_and_router_answers(raw):
    assert raw.get("/api/version").json() == {"version": "0.12.11"}
    root = raw.get("/")
    assert root.status_code == 200 and root.text == "Ollama is running"
    assert raw.head("/api/tags").status_code == 200 and raw.head("/api/tags").content == b""
    missing = raw.get("/api/nothing")
    assert (missing.status_code, missing.text, missing.headers["content-type"]) == (404, "404 page not found",
                                                                                    "text/plain")
    wrong = raw.get("/api/generate")
    assert (wrong.status_code, wrong.text, wrong.headers["allow"]) == (405, "405 method not allowed", "POST")
    assert raw.delete("/api/tags").headers["allow"] == "HEAD, GET"
    assert raw.head("/api/ps").status_code == 405
    assert raw.request("PATCH", "/api/show").status_code == 405  # not http.server's HTML 501
    assert raw.get("/api/tags/", follow_redirects=False).headers["location"] == "/api/tags"


def test_bodies_are_checked_like_ollamas_json_decoder(raw):
    empty = raw.post("/api/generate", content=b"")
    assert (empty.status_code, empty.json()) == (400, {"error": "missing request body"})
    typed = raw.post("/api/generate", json={"model": MODEL, "prompt": 7})
    assert typed.status_code == 400
    assert typed.json()["error"] == ("json: cannot unmarshal number 7 into Go struct field GenerateRequest.prompt "
                                     "of type string")
    assert raw.post("/api/chat", json={"model": MODEL, "keep_alive": True}).json() == {
        "error": "Unsupported type: 'bool'"}
    assert raw.post("/api/chat", json={"model": MODEL, "keep_alive": "soon"}).json() == {
        "error": 'time: invalid duration "soon"'}


def test_list_show_and_not_found(client, raw):
    listed = client.list()
    entry = next(m for m in listed.models if m.model == f"{MODEL}:latest")
    assert entry.details.family == "llama" and entry.details.format == "gguf"
    assert entry.details.parameter_size == "134.52M" and entry.details.quantization_level == "Q4_1"
    assert entry.size > 90e6 and len(entry.digest) == 64 and entry.modified_at is not None

    shown = client.show(MODEL)
    assert shown.template == CHATML_TEMPLATE
    assert raw.post("/api/show", json={"model": MODEL}).json()["system"] == ROUTER_SYSTEM  # not in ShowResponse
    assert shown.modelfile.startswith('# Modelfile generated by "ollama show"')
    assert 'stop                           "<|im_end|>"' in shown.parameters.splitlines()
    assert shown.capabilities == ["completion"]
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 8192
    assert shown.modelinfo["tokenizer.ggml.tokens"] == []  # long arrays are emptied unless verbose

    missing = _error(lambda: client.show("nope"))
    assert (missing.status_code, missing.error) == (404, "model 'nope' not found")
    assert _error(lambda: client.chat(model="nope", messages=[])).status_code == 404


def test_copy_delete_and_create_from_a_model(client, raw):
    assert client.copy(MODEL, "router-copy").status == "success"
    assert {"router-copy:latest", f"{MODEL}:latest"} <= {m.model for m in client.list().models}
    assert client.delete("router-copy").status == "success"
    again = _error(lambda: client.delete("router-copy"))
    assert (again.status_code, again.error) == (404, "model 'router-copy' not found")
    assert _error(lambda: client.copy("nope", "x")).error == 'model "nope" not found'

    done = client.create(model="router-brief", from_=MODEL, system="Be brief.", parameters={"temperature": 0.2})
    assert done.status == "success"
    shown = client.show("router-brief")
    assert shown.details.parent_model == f"{MODEL}:latest"
    assert raw.post("/api/show", json={"model": "router-brief"}).json()["system"] == "Be brief."
    params = shown.parameters.splitlines()
    assert "temperature                    0.2" in params and any(p.startswith("stop ") for p in params)
    steps = [p.status for p in client.create(model="router-brief", from_=MODEL, stream=True)]
    assert steps[-1] == "success" and "writing manifest" in steps
    assert _error(lambda: client.create(model="x", from_="not-here")).error == \
        "pull model manifest: file does not exist"
    assert client.delete("router-brief").status == "success"


def test_create_from_a_pushed_gguf_blob(client, raw, smollm2_gguf):
    digest = client.create_blob(smollm2_gguf)
    assert raw.head(f"/api/blobs/{digest}").status_code == 200
    assert raw.head(f"/api/blobs/sha256:{'0' * 64}").status_code == 404
    bad = raw.post(f"/api/blobs/sha256:{'0' * 64}", content=b"not this")
    assert bad.status_code == 400 and bad.json()["error"].startswith('digest mismatch, expected "sha256:000')
    made = client.create(model="from-files", files={"smollm2.gguf": digest}, template=CHATML_TEMPLATE,
                         parameters={"stop": ["<|im_end|>"], "num_ctx": 512})
    assert made.status == "success"
    assert client.show("from-files").details.quantization_level == "Q4_1"
    neither = _error(lambda: client.create(model="x"))
    assert (neither.status_code, neither.error) == (400, "neither 'from' or 'files' was specified")
    assert client.delete("from-files").status == "success"


def test_pull_is_offline_but_truthful(client):
    assert client.pull(MODEL).status == "success"
    assert [p.status for p in client.pull(MODEL, stream=True)][-1] == "success"
    failed = _error(lambda: client.pull("not-here"))
    assert (failed.status_code, failed.error) == (500, "pull model manifest: file does not exist")
    streamed = _error(lambda: client.pull("not-here", stream=True))
    assert streamed.error == "pull model manifest: file does not exist"


def test_routes_ollama_has_but_the_stand_in_does_not(client, raw):
    pushed = _error(lambda: client.push(MODEL))
    assert pushed.status_code == 501 and "does not implement POST /api/push" in pushed.error
    openai = raw.post("/v1/chat/completions", json={})
    assert openai.status_code == 501 and openai.headers["content-type"].startswith("application/json")


# ---- loading, unloading, /api/ps ----------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@pytest.mark.slow
def test_load_ps_and_unload(client):
    assert client.generate(model=MODEL, keep_alive=0).done_reason == "unload"
    assert client.ps().models == []
    loaded = client.generate(model=MODEL, keep_alive="10m")
    assert (loaded.done, loaded.done_reason, loaded.response) == (True, "load", "")
    [running] = client.ps().models
    assert running.model == f"{MODEL}:latest" and running.context_length == 512
    assert running.size_vram == running.size > 90e6  # OLLAMA_STANDIN_VRAM=all: fully on the "GPU"
    assert dt.timedelta(minutes=9) < running.expires_at - _now() <= dt.timedelta(minutes=10)
    client.generate(model=MODEL, keep_alive=-1)
    assert client.ps().models[0].expires_at.year > 2200  # forever, as Ollama reports it
    assert client.chat(model=MODEL, messages=[], keep_alive=0).done_reason == "unload"
    assert client.ps().models == []


def test_size_vram_is_zero_by_default_as_on_a_cpu(smollm2_gguf, tmp_path, monkeypatch):
    from distill.standins.ollama import Store, merged_options
    from distill.standins.ollama_engine import Engine

    monkeypatch.delenv("OLLAMA_STANDIN_VRAM", raising=False)
    store = Store(tmp_path)
    record = store.create(MODEL, write_modelfile(tmp_path / "Modelfile", str(smollm2_gguf)))
    engine = Engine()
    with engine.session(record, merged_options(record, None), keep_alive=60.0):
        pass
    [running] = engine.running()
    assert running["size_vram"] == 0 and running["size"] > record["size"]  # weights + KV cache
    assert Engine(vram="123").running() == [] and Engine(vram="all").vram == "all"


# ---- generation ---------------------------------------------------------------------------------------------


OPTIONS = {"temperature": 0, "num_predict": 8, "seed": 1}


@pytest.mark.slow
def test_generate_streamed_and_not(client):
    whole = client.generate(model=MODEL, prompt="Say hello.", options=OPTIONS)
    assert whole.done and whole.done_reason in ("stop", "length") and whole.model == MODEL
    assert whole.response and whole.eval_count > 0 and whole.eval_duration > 0 and whole.prompt_eval_count > 10
    assert whole.context and whole.total_duration >= whole.load_duration
    parts = list(client.generate(model=MODEL, prompt="Say hello.", options=OPTIONS, stream=True))
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True] and len(parts) > 2
    assert "".join(p.response for p in parts) == whole.response  # temperature 0: the same answer
    assert parts[-1].response == "" and parts[-1].context == whole.context


@pytest.mark.slow
def test_format_json_and_schema(client, raw, catalog):
    plain = client.generate(model=MODEL, prompt='Reply with a JSON object like {"color": "red"}.', format="json",
                            options={"temperature": 0, "num_predict": 48})
    assert plain.response.lstrip().startswith("{")  # Ollama's JSON mode: an object, never 500
    if plain.done_reason == "stop":
        assert isinstance(json.loads(plain.response), dict)
    routed = client.chat(model=MODEL, messages=[{"role": "user", "content": "turn your eyes red"}],
                         format=catalog.label_schema(), options={"temperature": 0, "num_predict": 64})
    assert catalog.check(json.loads(routed.message.content)) is None, routed.message.content
    refused = raw.post("/api/generate", json={"model": MODEL, "prompt": "x", "format": "xml", "stream": False})
    assert (refused.status_code, refused.json()["error"]) == (
        500, 'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object')  # Go's %q of the raw JSON


@pytest.mark.slow
def test_chat_logprobs_like_the_router_reads_them(client):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "options": OPTIONS}
    answer = client.chat(**body, logprobs=True, top_logprobs=2)
    assert answer.message.role == "assistant" and answer.message.content
    assert 1 <= len(answer.logprobs) <= answer.eval_count
    for entry in answer.logprobs:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
    bare = client.chat(**body, logprobs=True, top_logprobs=0)
    assert bare.logprobs and all(e.top_logprobs is None for e in bare.logprobs)  # omitted, as Go's omitempty
    streamed = list(client.chat(**body, logprobs=True, top_logprobs=1, stream=True))
    assert sum(len(p.logprobs or []) for p in streamed) == len(answer.logprobs)
    assert _error(lambda: client.chat(**body, logprobs=True, top_logprobs=21)).error == \
        "top_logprobs must be between 0 and 20"


@pytest.mark.slow
def test_raw_system_template_and_options(client, raw):
    rendered = raw.post("/api/generate", json={"model": MODEL, "prompt": "look left", "_debug_render_only": True})
    prompt = rendered.json()["_debug_info"]["rendered_template"]
    assert prompt == (f"<|im_start|>system\n{ROUTER_SYSTEM}<|im_end|>\n<|im_start|>user\nlook left<|im_end|>\n"
                      "<|im_start|>assistant\n")
    direct = client.generate(model=MODEL, prompt=prompt, raw=True, options=OPTIONS)
    assert direct.response == client.generate(model=MODEL, prompt="look left", options=OPTIONS).response
    assert direct.context is None  # raw mode returns no context
    mixed = _error(lambda: client.generate(model=MODEL, prompt="x", raw=True, system="s"))
    assert (mixed.status_code, mixed.error) == (400, "raw mode does not support template, system, or context")
    typo = _error(lambda: client.generate(model=MODEL, prompt="x", options={"temprature": 0}))
    assert (typo.status_code, typo.error) == (400, "invalid option provided: temprature")
    typed = _error(lambda: client.generate(model=MODEL, prompt="x", options={"temperature": "hot"}))
    assert (typed.status_code, typed.error) == (500, 'option "temperature" must be of type float32')
    legacy = client.generate(model=MODEL, prompt="x", options=ollama.Options(num_predict=1, mirostat=0))
    assert legacy.done  # names the client still has and Ollama 0.12.11 ignores
    assert _error(lambda: client.generate(model=MODEL, prompt="x", think=True)).error == \
        f'"{MODEL}" does not support thinking'


@pytest.mark.slow
def test_embed_and_embeddings(client):
    answer = client.embed(model=MODEL, input=["turn left", "turn right"])
    assert len(answer.embeddings) == 2 and answer.prompt_eval_count > 2
    for vector in answer.embeddings:
        assert len(vector) == 576 and math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-4)
    short = client.embed(model=MODEL, input="turn left", dimensions=8)
    assert len(short.embeddings[0]) == 8 and math.isclose(math.hypot(*short.embeddings[0]), 1.0, rel_tol=1e-4)
    assert client.embed(model=MODEL, input=[]).embeddings == []
    assert len(client.embeddings(model=MODEL, prompt="turn left").embedding) == 576
    assert _error(lambda: client.embed(model="nope", input="x")).error == 'model "nope" not found, try pulling it first'
