"""Every base family a user would pick goes train -> merge -> GGUF -> Q4_K_M -> Modelfile with the seed's commands.

Offline, on tiny random-weight replicas of the real families (distill.bases.replicas: real configs scaled down,
real tokenizers proven against llama.cpp's reference vectors). Per family, after the seed's commands:
- llama.cpp loads the GGUF (f16 and Q4_K_M) as the family's architecture;
- it tokenizes the reference texts to the reference ids (the real Hugging Face tokenizer's);
- the Modelfile's TEMPLATE (rendered as Ollama does, by the Go-template stand-in) and the GGUF's own chat template
  (rendered as the runtime does) give token for token the prompt training used;
- the f16 GGUF's logits match the merged model's in MLX: every position's top token, and the largest difference
  within LOGIT_TOLERANCE of the logits' spread (measured: at most 0.9%);
- `distill route` answers with a label the catalog accepts (the grammar's job; the weights are random).
Gemma 3 is not here: no faithful replica can be built from llama.cpp's source (distill.bases.replicas.UNBUILDABLE).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from distill.bases import replicas
from tests.support.data import write_routes

pytestmark = pytest.mark.slow

ITERS, BATCH = "4", "2"  # a few steps prove the chain; accuracy is not the point on random weights
LOGIT_TOLERANCE = 0.05  # max |logit difference| / std(logits); measured 0.005-0.009 on every family
TEXT = "turn your eyes red"


@dataclass
class Exported:
    key: str
    base: Path
    student: Path
    merged: Path
    gguf: Path
    f16: Path
    modelfile: Path
    seconds: dict = field(default_factory=dict)


def run_step(cli, seconds: dict, name: str, *args) -> None:
    started = time.monotonic()
    done = cli(sys.executable, *args, timeout=1800)
    seconds[name] = round(time.monotonic() - started, 1)
    assert done.returncode == 0, f"{name}: {done.stderr[-3000:]}"


@pytest.fixture(scope="module", params=list(replicas.FAMILIES))
def exported(request, tmp_path_factory, cli) -> Exported:
    """The seed's commands on one family's replica, as a user types them (no --num-layers: the default fits)."""
    key, seconds = request.param, {}
    started = time.monotonic()
    base = replicas.ensure_replica(key)
    seconds["replica"] = round(time.monotonic() - started, 1)
    work = tmp_path_factory.mktemp(key)
    routes = write_routes(work / "data" / "routes.jsonl")
    out = Exported(key, base, work / "models" / "router_student_mlx", work / "models" / "router_merged",
                   work / "gguf" / "router-student.gguf", work / "gguf" / "router-student.f16.gguf",
                   work / "ollama" / "RouterStudent.Modelfile", seconds)
    run_step(cli, seconds, "train", "train/finetune_router_mlx.py", "--base", base, "--train_jsonl", routes,
             "--out", out.student, "--iters", ITERS, "--batch", BATCH, "--lr", "1e-3")
    run_step(cli, seconds, "merge", "tools/merge_lora.py", "--base", base, "--lora", out.student, "--out", out.merged)
    run_step(cli, seconds, "convert", "tools/convert_to_gguf.py", "--in", out.merged, "--out", out.gguf,
             "--quant", "Q4_K_M")
    run_step(cli, seconds, "modelfile", "-m", "distill", "modelfile", "--student", out.student, "--gguf", out.gguf,
             "--out", out.modelfile)
    yield out
    print(f"\n{key}: seconds {json.dumps(seconds)}")


def test_llama_cpp_loads_the_family_architecture(exported):
    import gguf

    from distill.export.gguf import tensor_report

    fam = replicas.FAMILIES[exported.key]
    for path in (exported.f16, exported.gguf):
        assert gguf.GGUFReader(str(path)).fields["general.architecture"].contents() == fam.gguf_arch
    report = tensor_report(exported.gguf)
    print(f"\n{exported.key}: Q4_K_M {report['size_bytes'] / 1e6:.1f} MB, {report['bits_per_weight']} bits/weight, "
          f"{report['tensor_types']}")
    assert report["file_type"] == "MOSTLY_Q4_K_M"
    assert report["bits_per_weight"] < tensor_report(exported.f16)["bits_per_weight"]
    assert (exported.merged / "tokenizer.model").is_file() == fam.sentencepiece, "merge keeps tokenizer.model"


def test_llama_cpp_tokenizes_like_the_real_tokenizer(exported):
    from distill.runtime.llamacpp import load_llama

    vectors, reference = replicas.reference_vectors(replicas.FAMILIES[exported.key])
    llm = load_llama(exported.gguf, vocab_only=True)
    try:
        bad = replicas.vector_mismatches(lambda t: llm.tokenize(t.encode(), add_bos=False, special=False), vectors)
    finally:
        llm.close()
    assert not bad, f"{len(bad)}/{len(vectors)} differ from {reference}, e.g. {bad[0]}"


def training_prompt(exported: Exported) -> list[int]:
    """The prompt ids training computed its loss mask with (mlx-lm's ChatDataset, through training's loader);
    the answer after them must be the label itself (no think block, nothing the grammar would forbid)."""
    from mlx_lm.tuner.datasets import ChatDataset

    from distill.bases import load_mlx_base
    from distill.student import StudentSpec
    from distill.training import datasets

    spec = StudentSpec.load(exported.student)
    _, tokenizer = load_mlx_base(str(exported.base))
    chat = datasets.router_chat({"text": TEXT, "skill": "eyes_color", "args": {"color": "red"}}, spec.system_prompt)
    ids, offset = ChatDataset([chat], tokenizer, chat_key="messages", mask_prompt=True).process(chat)
    answer = tokenizer.decode(ids[offset:])
    assert answer.lstrip().startswith(chat["messages"][-1]["content"]), f"training taught {answer!r}"
    return ids[:offset]


def test_modelfile_and_gguf_templates_give_the_training_prompt(exported, catalog):
    from distill.export.modelfile import parse_modelfile
    from distill.runtime.backends import LlamaCppBackend
    from distill.standins.gotemplate import render
    from distill.student import StudentSpec

    want = training_prompt(exported)
    spec = StudentSpec.load(exported.student)
    doc = parse_modelfile(exported.modelfile)
    backend = LlamaCppBackend(exported.gguf, catalog, system_prompt=spec.system_prompt)  # the GGUF's own template
    assert backend.chat_template == spec.chat_template, "the GGUF carries the template training used"
    ollama_prompt = render(doc["template"], {"System": doc["system"], "Prompt": TEXT})
    add_bos = backend.llm.metadata.get("tokenizer.ggml.add_bos_token") == "true"
    as_ollama = backend.llm.tokenize(ollama_prompt.encode(), add_bos=add_bos, special=True)
    assert as_ollama == want, "Ollama would feed another prompt than training saw"
    assert backend.prompt_tokens(TEXT) == want, "the runtime would feed another prompt than training saw"


def test_f16_gguf_logits_match_the_merged_model(exported):
    import mlx.core as mx
    import numpy as np

    from distill.bases import load_mlx_base
    from distill.runtime.llamacpp import load_llama

    model, tokenizer = load_mlx_base(str(exported.merged))
    model.set_dtype(mx.float32)
    ids = tokenizer.encode("Turn your eyes red and look left, then tell me the time.")
    want = np.array(model(mx.array([ids]))[0].astype(mx.float32))
    llm = load_llama(exported.f16, n_ctx=128, logits_all=True)
    try:
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()
    worst = float(np.abs(got - want).max())
    print(f"\n{exported.key}: f16 GGUF vs MLX logits over {len(ids)} positions: max |diff| {worst:.4f}, "
          f"std {want.std():.3f} ({worst / want.std():.2%})")
    assert (got.argmax(-1) == want.argmax(-1)).all(), "llama.cpp and MLX disagree on the most likely token"
    assert worst <= LOGIT_TOLERANCE * want.std()


def test_route_answers_a_valid_label_through_the_grammar(exported, cli, catalog):
    done = cli(sys.executable, "-m", "distill", "route", "--student", exported.student, "--gguf", exported.gguf,
               "--raw", "--log", "off", TEXT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    raw = json.loads(done.stdout)["raw"]  # the student's own answer, before the threshold rule
    assert raw["valid_json"], raw
    catalog.validate(json.loads(raw["output"]))  # raises on an invented skill or bad args
