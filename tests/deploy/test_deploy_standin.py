"""The pieces the deploy stage stands on: the Go-template renderer, the Modelfile parser, the stand-in ollama
(CLI strictness, model store, HTTP API on loopback with a real llama.cpp answer), and the smoke checker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from tests.support import ROOT
import requests

from distill.errors import DistillError
from distill.standins.gotemplate import TemplateError, render
from distill.export.modelfile import format_modelfile, parse_modelfile_text
from distill.standins.ollama import parse_host, render_prompt
from tests.support import stop_process
from tests.support.deploy import CHATML_TEMPLATE, ROUTER_SYSTEM, STANDIN_OLLAMA, free_port, wait_for_port, \
    write_modelfile

# ---- Go templates ----------------------------------------------------------------------------------------


def test_chatml_template_renders_what_the_hf_chat_template_renders(smollm2_gguf):
    import gguf

    reader = gguf.GGUFReader(str(smollm2_gguf))
    hf = reader.fields["tokenizer.chat_template"].contents()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "look left"}]
    expected = jinja2.Template(hf).render(messages=messages, add_generation_prompt=True)
    assert render(CHATML_TEMPLATE, {"System": "Be brief.", "Prompt": "look left", "Response": ""}) == expected


def test_trim_markers_range_and_conditions():
    source = (
        "{{- range $i, $m := .Messages }}\n  {{- if eq $m.Role \"user\" }}U:{{ $m.Content }}"
        "{{ else if eq .Role \"system\" }}S:{{ .Content }}{{ else }}A:{{ .Content }}{{ end }}\n"
        "{{ end -}}\n  [{{ len .Messages }}|{{ $.System | len }}|{{ not (eq 1 2) }}]{{/* comment */}}"
    )
    data = {"System": "abc", "Messages": [{"Role": "system", "Content": "x"}, {"Role": "user", "Content": "hi"},
                                          {"Role": "assistant", "Content": "yo"}]}
    assert render(source, data) == "S:x\nU:hi\nA:yo\n[3|3|true]"
    assert render("{{ if .A }}a{{ else }}b{{ end }}", {"A": ""}) == "b"
    assert render("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}) == "empty"


@pytest.mark.parametrize("source, message", [
    ("{{ if .System }}open", "missing {{ end }}"),
    ("{{ end }}", "unexpected {{ end }}"),
    ("{{ .Missing }}", "can't evaluate field Missing"),
    ("{{ with .System }}{{ end }}", "not supported"),
    ("{{ frobnicate .System }}", "unknown function"),
    ("text {{ .System ", "unclosed action"),
])
def test_template_errors_name_the_problem(source, message):
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        render(source, {"System": "s"})


# ---- Modelfiles ------------------------------------------------------------------------------------------

MODELFILE = f'''# the router student
FROM ./router-student.gguf
TEMPLATE """{CHATML_TEMPLATE}"""
SYSTEM {ROUTER_SYSTEM}
PARAMETER temperature 0
PARAMETER stop "<|im_end|>"
PARAMETER stop <|endoftext|>
PARAMETER num_ctx 512
MESSAGE user """two
lines"""
LICENSE """Apache-2.0"""
'''


def test_modelfile_parses_to_typed_fields_and_round_trips():
    doc = parse_modelfile_text(MODELFILE)
    assert doc["from"] == "./router-student.gguf"
    assert doc["template"] == CHATML_TEMPLATE and doc["system"] == ROUTER_SYSTEM
    assert doc["parameters"] == {"temperature": 0.0, "stop": ["<|im_end|>", "<|endoftext|>"], "num_ctx": 512}
    assert doc["messages"] == [{"role": "user", "content": "two\nlines"}] and doc["license"] == ["Apache-2.0"]
    assert parse_modelfile_text(format_modelfile(doc)) == doc


def test_modelfile_parameters_are_ollama_0_12_11_options():
    doc = parse_modelfile_text("FROM x.gguf\nPARAMETER main_gpu 0\nPARAMETER use_mmap false\nPARAMETER min_p 0.05\n")
    assert doc["parameters"] == {"main_gpu": 0, "use_mmap": False, "min_p": 0.05}


@pytest.mark.parametrize("text, message", [
    ("SYSTEM hi\n", "FROM: missing FROM"),
    ("FROM x.gguf\nRUN rm -rf /\n", "line 2: unknown instruction 'RUN'"),
    ("FROM x.gguf\nPARAMETER temperature warm\n", "line 2: PARAMETER temperature: 'warm' is not a valid float"),
    ("FROM x.gguf\nPARAMETER colour red\n", "line 2: unknown parameter 'colour'"),
    ("FROM x.gguf\nPARAMETER numa true\n", "line 2: unknown parameter 'numa'"),  # dropped by Ollama 0.12
    ("FROM x.gguf\nPARAMETER mirostat 2\n", "line 2: unknown parameter 'mirostat'"),
    ('FROM x.gguf\nTEMPLATE """{{ .Prompt }}\n', 'line 2: TEMPLATE: unclosed """'),
    ("FROM x.gguf\nPARAMETER num_ctx 1\nPARAMETER num_ctx 2\n", "line 3: PARAMETER num_ctx given twice"),
])
def test_modelfile_errors_name_file_and_line(text, message):
    with pytest.raises(DistillError, match=message.replace("(", r"\(")) as err:
        parse_modelfile_text(text, where="ollama/RouterStudent.Modelfile")
    assert str(err.value).startswith("ollama/RouterStudent.Modelfile: ")


# ---- prompts the stand-in builds -------------------------------------------------------------------------


def _record(template: str, system: str | None = "SYS") -> dict:
    return {"parsed": {"template": template, "system": system, "messages": [], "parameters": {}}}


def test_prompt_uses_modelfile_system_unless_the_request_brings_one():
    record = _record(CHATML_TEMPLATE)
    assert render_prompt(record, [{"role": "user", "content": "hi"}]) == (
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    own = render_prompt(record, [{"role": "system", "content": "MINE"}, {"role": "user", "content": "hi"}])
    assert "MINE" in own and "SYS" not in own


def test_prompt_for_multi_turn_legacy_and_messages_templates():
    legacy = "{{ if .System }}[S]{{ .System }}{{ end }}[U]{{ .Prompt }}[A]{{ .Response }}[/A]"
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert render_prompt(_record(legacy), turns) == "[S]SYS[U]a[A]b[/A][U]c[A]"
    messages = "{{ range .Messages }}<{{ .Role }}>{{ .Content }}{{ end }}<assistant>"
    assert render_prompt(_record(messages), turns) == "<system>SYS<user>a<assistant>b<user>c<assistant>"


def test_ollama_host_is_loopback_only():
    assert parse_host("127.0.0.1:9") == ("127.0.0.1", 9)
    assert parse_host("http://localhost:8080/") == ("localhost", 8080)
    with pytest.raises(DistillError, match="loopback only"):
        parse_host("0.0.0.0:11434")


# ---- the stand-in CLI ------------------------------------------------------------------------------------


@pytest.fixture
def ollama(tmp_path, cli):
    home = tmp_path / "state"

    def run(*args: str):
        return cli(STANDIN_OLLAMA, *args, env={"OLLAMA_STANDIN_HOME": str(home)}, timeout=300)

    run.home = home
    return run


def test_create_list_show_rm_and_the_create_log(ollama, tmp_path, smollm2_gguf):
    modelfile = write_modelfile(tmp_path / "Modelfile", str(smollm2_gguf))
    created = ollama("create", "router-student", "-f", modelfile)
    assert created.returncode == 0, created.stderr
    assert "created router-student:latest" in created.stdout
    assert "router-student:latest" in ollama("list").stdout
    shown = ollama("show", "router-student", "--modelfile").stdout
    assert parse_modelfile_text(shown)["template"] == CHATML_TEMPLATE
    assert "quantization         Q4_1" in ollama("show", "router-student").stdout
    log = [json.loads(line) for line in (ollama.home / "create.log").read_text().splitlines()]
    assert [entry["name"] for entry in log] == ["router-student:latest"]
    assert ollama("rm", "router-student").returncode == 0
    assert "router-student" not in ollama("list").stdout
    assert ollama("--version").stdout.startswith("ollama version is ")


def _bad_modelfile(tmp_path: Path, smollm2_gguf: Path, case: str) -> Path:
    if case == "missing FROM file":
        return write_modelfile(tmp_path / "M", str(tmp_path / "nowhere.gguf"))
    if case == "not a GGUF":
        fake = tmp_path / "fake.gguf"
        fake.write_text("definitely not a model\n")
        return write_modelfile(tmp_path / "M", str(fake))
    if case == "truncated GGUF":
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(smollm2_gguf.read_bytes()[:5_000_000])
        return write_modelfile(tmp_path / "M", str(cut))
    if case == "no TEMPLATE":
        return write_modelfile(tmp_path / "M", str(smollm2_gguf), template=None)
    if case == "no stop":
        return write_modelfile(tmp_path / "M", str(smollm2_gguf), stop_param=False)
    if case == "broken TEMPLATE":
        return write_modelfile(tmp_path / "M", str(smollm2_gguf), template="{{ if .System }}never closed")
    raise AssertionError(case)


@pytest.mark.parametrize("case, message", [
    ("missing FROM file", "FROM: file not found"),
    ("not a GGUF", "is not a GGUF file (magic b'defi'"),
    ("truncated GGUF", "is not a readable GGUF"),
    ("no TEMPLATE", "TEMPLATE: missing TEMPLATE"),
    ("no stop", "PARAMETER stop: missing PARAMETER stop"),
    ("broken TEMPLATE", "TEMPLATE: does not parse: offset 0: missing {{ end }}"),
])
def test_create_refuses_what_could_not_serve(ollama, tmp_path, smollm2_gguf, case, message):
    result = ollama("create", "router-student", "-f", _bad_modelfile(tmp_path, smollm2_gguf, case))
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (ollama.home / "create.log").exists() and "router-student" not in ollama("list").stdout


# ---- the stand-in HTTP API, answering with llama.cpp ------------------------------------------------------


@pytest.fixture
def ollama_server(ollama, tmp_path, smollm2_gguf):
    assert ollama("create", "router-student", "-f", write_modelfile(tmp_path / "Modelfile", str(smollm2_gguf))
                  ).returncode == 0
    port = free_port()
    env = {**os.environ, "OLLAMA_STANDIN_HOME": str(ollama.home), "OLLAMA_HOST": f"127.0.0.1:{port}"}
    proc = subprocess.Popen([str(STANDIN_OLLAMA), "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.mark.slow  # real grammar-constrained decoding: ~10 s alone, a minute on a busy 2-core box
def test_http_api_answers_like_ollama(ollama_server, catalog):
    assert requests.get(f"{ollama_server}/api/version", timeout=5).json()["version"]
    tags = requests.get(f"{ollama_server}/api/tags", timeout=5).json()["models"]
    assert [m["name"] for m in tags] == ["router-student:latest"]
    shown = requests.post(f"{ollama_server}/api/show", json={"model": "router-student"}, timeout=5).json()
    assert shown["template"] == CHATML_TEMPLATE and shown["system"] == ROUTER_SYSTEM
    missing = requests.post(f"{ollama_server}/api/show", json={"model": "nope"}, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"] == "model 'nope' not found"  # the name as asked

    routed = requests.post(f"{ollama_server}/api/generate", timeout=300, json={
        "model": "router-student", "prompt": "turn your eyes red", "stream": False,
        "format": catalog.label_schema(), "options": {"temperature": 0, "num_predict": 64}}).json()
    assert routed["done"] is True
    assert catalog.check(json.loads(routed["response"])) is None, routed["response"]

    chat = requests.post(f"{ollama_server}/api/chat", timeout=300, json={
        "model": "router-student", "messages": [{"role": "user", "content": "hello"}],
        "options": {"num_predict": 3}, "logprobs": True, "top_logprobs": 2})
    lines = [json.loads(line) for line in chat.text.splitlines()]  # streamed by default, piece by piece
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True] and len(lines) >= 2
    assert lines[0]["message"]["role"] == "assistant" and lines[0]["message"]["content"]
    logprobs = [entry for line in lines for entry in line.get("logprobs", [])]  # each piece carries its own
    assert len(logprobs) == 3 and all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in logprobs)

    bad = requests.post(f"{ollama_server}/api/chat", timeout=5, json={
        "model": "router-student", "messages": [], "options": {"temprature": 0}})
    assert bad.status_code == 400 and "invalid option provided: temprature" in bad.json()["error"]


# ---- the smoke checker the play runs on the controller ----------------------------------------------------


def test_smoke_check_accepts_labels_and_names_the_first_bad_answer():
    good = [["turn your eyes red", '{"skill":"eyes_color","args":{"color":"red"}}'],
            {"request": "what time is it?", "answer": ' {"skill": "time_now", "args": {}}'}]
    ok = subprocess.run([sys.executable, "-m", "distill", "smoke", "check"], input=json.dumps(good),
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    assert '\'turn your eyes red\' -> {"skill":"eyes_color","args":{"color":"red"}}' in ok.stdout
    bad = good + [["dance", '{"skill":"dance","args":{}}']]
    failed = subprocess.run([sys.executable, "-m", "distill", "smoke", "check"],
                            input=json.dumps(bad), capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode == 2
    assert failed.stderr.strip() == ("error: smoke: request 'dance': answer '{\"skill\":\"dance\",\"args\":{}}' "
                                     "is not a catalog label (unknown_skill: 'dance')")
