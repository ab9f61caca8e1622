"""Export: llama.cpp's converter on a tiny model (seconds), preflight errors, the probe check, Modelfile, quality gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.errors import DistillError
from distill.export.gate import EXPORT_GATE, main as gate_main
from distill.training.evaluate import regression_verdict
from distill.export.gguf import PROBES, convert, f16_path_for, tensor_report, write_f16_gguf
from distill.export.modelfile import go_template, parse_modelfile, write_modelfile
from distill.prompting import chat_messages, render_chat
from distill.runtime.llamacpp import load_llama

CHATML_GO = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
             "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n")
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
ZEPHYR_TEMPLATE = (  # TinyLlama-1.1B-Chat's
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
PHI35_TEMPLATE = (  # microsoft/Phi-3.5-mini-instruct's: a finished conversation ends in EOS
    "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + "
    "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
EOS = {"zephyr": "</s>", "phi35": "<|endoftext|>"}
# Llama 3's pre-tokenizer split (public in every Llama 3 tokenizer.json; llama.cpp's "llama-bpe").
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SAMPLES = [
    ("You route requests.", "turn your eyes red"),
    ('Reply with JSON: {"skill":...}.', "look left,\nthen right — schnell! 🤖"),
    ("multi\nline\nsystem", "  spaces around  "),
]


def chatml(base_model_dir: Path) -> str:
    return json.loads((base_model_dir / "tokenizer_config.json").read_text())["chat_template"]


# ---- Modelfile TEMPLATE --------------------------------------------------------------------------------
def test_chatml_template_is_the_contract_string(base_model_dir):
    assert go_template(chatml(base_model_dir)) == CHATML_GO


@pytest.mark.parametrize("name,template,bos,add_bos", [
    ("chatml", None, "", False), ("llama3", LLAMA3_TEMPLATE, "<|begin_of_text|>", False),
    ("zephyr", ZEPHYR_TEMPLATE, "<s>", False), ("phi35", PHI35_TEMPLATE, "<s>", True),
])
def test_go_template_renders_byte_for_byte_like_the_hf_template(base_model_dir, name, template, bos, add_bos):
    from distill.standins.gotemplate import render

    template = template or chatml(base_model_dir)
    eos = EOS.get(name, "")
    go = go_template(template, bos_token=bos, eos_token=eos, add_bos=add_bos)
    for system, user in SAMPLES if name != "llama3" else SAMPLES[:2]:  # Llama 3's template trims the content
        want = render_chat(template, chat_messages(system, user), bos_token=bos, eos_token=eos)
        assert render(go, {"System": system, "Prompt": user}) == want, name


def test_go_template_drops_bos_the_runtime_adds_itself():
    from distill.standins.gotemplate import render

    go = go_template(LLAMA3_TEMPLATE, bos_token="<|begin_of_text|>", add_bos=True)
    hf = render_chat(LLAMA3_TEMPLATE, chat_messages("s", "u"), bos_token="<|begin_of_text|>")
    assert "<|begin_of_text|>" not in go
    assert "<|begin_of_text|>" + render(go, {"System": "s", "Prompt": "u"}) == hf


def test_modelfile_has_training_system_prompt_and_parameters(tmp_path, base_model_dir):
    student = {"name": "router_student", "system_prompt": 'Route. Reply {"skill":...}.',
               "chat_template": chatml(base_model_dir), "stop": ["<|im_end|>"]}
    (tmp_path / "gguf").mkdir()
    out = write_modelfile(student, tmp_path / "gguf" / "router-student.gguf", tmp_path / "ollama" / "R.Modelfile")
    doc = parse_modelfile(out)
    assert doc["from"] == "../gguf/router-student.gguf"
    assert doc["template"] == CHATML_GO
    assert doc["system"] == student["system_prompt"]
    assert doc["parameters"] == {"temperature": 0.0, "stop": ["<|im_end|>"], "num_ctx": 512}


def test_modelfile_without_system_prompt_fails_and_writes_nothing(tmp_path, base_model_dir):
    (tmp_path / "student.json").write_text(json.dumps({"chat_template": chatml(base_model_dir)}))
    with pytest.raises(DistillError, match="student.json: system_prompt"):
        write_modelfile(tmp_path, tmp_path / "x.gguf", tmp_path / "M.Modelfile")
    assert not (tmp_path / "M.Modelfile").exists()


# ---- preflight and the converter's own errors -----------------------------------------------------------
@pytest.mark.parametrize("breakage,message", [
    (lambda d: _edit_json(d / "config.json", architectures=[]), "names no architecture"),
    (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json: missing"),
    (lambda d: _edit_json(d / "tokenizer_config.json", chat_template=None), "missing chat template"),
    (lambda d: _edit_json(d / "config.json", architectures=["NoSuchModelForCausalLM"]),
     "convert_hf_to_gguf.py failed .*NoSuchModelForCausalLM"),
])
def test_bad_input_is_one_error_and_no_file(tmp_path, tiny_llama_dir, breakage, message):
    model = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model)
    breakage(model)
    with pytest.raises(DistillError, match=message):
        convert(model, tmp_path / "out" / "x.gguf")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def _edit_json(path: Path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# ---- llama.cpp's converter on a tiny random llama (seconds) ------------------------------------------
@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_llama_dir) -> dict:
    out = tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf"
    return convert(tiny_llama_dir, out, "Q8_0")


def test_tiny_gguf_logits_match_mlx(tiny_llama_dir, tiny_gguf):
    """Tensor names, Q/K permutation, norms and tied output are right when llama.cpp computes MLX's logits."""
    import mlx.core as mx
    from mlx_lm.utils import load

    model, _ = load(str(tiny_llama_dir))
    ids = [1, 9690, 198, 28120, 30, 2, 198, 504, 3575]
    want = np.array(model(mx.array([ids]))[0, -1])
    llm = load_llama(Path(tiny_gguf["f16"]["path"]), n_ctx=64, logits_all=True)
    llm.eval(ids)
    got = np.array(llm.scores[len(ids) - 1])
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max()
    assert int(got.argmax()) == int(want.argmax())


def test_tiny_gguf_files_types_and_checksums(tiny_gguf):
    f16, q8 = Path(tiny_gguf["f16"]["path"]), Path(tiny_gguf["quantized"]["path"])
    assert f16 == f16_path_for(q8) and f16.name == "tiny.f16.gguf"
    assert tiny_gguf["f16"]["file_type"] == "MOSTLY_F16"
    assert set(tiny_gguf["f16"]["tensor_types"]) == {"F16", "F32"}  # real half precision, norms in f32
    assert tiny_gguf["f16"]["bits_per_weight"] == pytest.approx(16, abs=0.1)
    assert tiny_gguf["quantized"]["file_type"] == "MOSTLY_Q8_0"
    assert tiny_gguf["quantized"]["bits_per_weight"] < 9
    lines = (q8.parent / "tiny.gguf.sha256").read_text().splitlines()
    from distill.fileio import sha256_file

    assert lines == [f"{sha256_file(q8)}  tiny.gguf", f"{sha256_file(f16)}  tiny.f16.gguf"]


def test_tiny_gguf_vocabulary_metadata(tiny_gguf):
    """llama.cpp's converter recognises SmolLM2's BPE by its own hash ('smollm') and keeps ids and template."""
    import gguf

    reader = gguf.GGUFReader(tiny_gguf["f16"]["path"])
    fields = {k: reader.fields[k].contents() for k in (
        "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.add_bos_token", "tokenizer.chat_template", "general.architecture", "general.name")}
    assert fields["general.architecture"] == "llama" and fields["general.name"] == "tiny-llama"
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "smollm"
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert fields["tokenizer.ggml.add_bos_token"] is False
    assert "<|im_start|>" in fields["tokenizer.chat_template"]
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    assert types[1] == gguf.TokenType.CONTROL and types[100] == gguf.TokenType.NORMAL
    assert len(reader.fields["tokenizer.ggml.merges"].data) > 40000


def test_a_vocabulary_that_differs_from_training_is_refused(tmp_path, tiny_llama_dir, tiny_gguf, monkeypatch):
    """The probe check after conversion: llama.cpp must split text as the model dir's tokenizer.json does.

    Here the model dir's tokenizer uses Llama 3's pre-tokenizer (digits in threes) while the GGUF keeps SmolLM2's
    (every digit alone), as when a converter picks the wrong `pre`: the file is refused and removed.
    """
    import distill.export.gguf as ge

    model = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model)
    tok = json.loads((model / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    (model / "tokenizer.json").write_text(json.dumps(tok))
    monkeypatch.setattr(ge, "run_converter", lambda hf_dir, out, name=None: shutil.copy(tiny_gguf["f16"]["path"], out))
    with pytest.raises(DistillError, match="llama.cpp tokenizes .*would not match training"):
        write_f16_gguf(model, tmp_path / "out" / "x.f16.gguf")
    assert not list((tmp_path / "out").iterdir())


# ---- quality gate --------------------------------------------------------------------------------------
def test_gate_verdict_points():
    ok, drop, message = regression_verdict({"skill_accuracy": 0.93}, {"skill_accuracy": 0.92}, 2.0, **EXPORT_GATE)
    assert ok and drop == pytest.approx(1.0) and "passes" in message
    ok, drop, message = regression_verdict({"skill_accuracy": 0.93}, {"skill_accuracy": 0.90}, 2.0, **EXPORT_GATE)
    assert not ok and drop == pytest.approx(3.0) and "FAILS" in message and "at most 2.0 may be lost" in message
    assert regression_verdict({"skill_accuracy": 0.90}, {"skill_accuracy": 0.95}, 0.0, **EXPORT_GATE)[0]  # Q4 may be better


def test_gate_cli_writes_report_and_fails_on_a_big_drop(tmp_path, tiny_gguf, monkeypatch, capsys):
    import distill.export.gate as evaluate  # the gate's own references to the evaluators
    import distill.training.evaluate as mlx_side  # the MLX numbers come through cached_mlx_metrics there

    student = tmp_path / "student"
    student.mkdir()
    (student / "test.jsonl").write_text(json.dumps({"id": "1", "text": "turn left", "skill": "look", "args": {}}) + "\n")
    gguf_path = Path(tiny_gguf["quantized"]["path"])
    seen = []
    monkeypatch.setattr(mlx_side, "evaluate_mlx", lambda s, r: seen.append(("mlx", s, len(r))) or {"skill_accuracy": 0.95})
    monkeypatch.setattr(evaluate, "evaluate_gguf",
                        lambda g, s, r: seen.append((Path(g).name, s, len(r))) or {"skill_accuracy": 0.90 if g == gguf_path else 0.94})
    report = tmp_path / "reports" / "export.json"
    args = ["--student", str(student), "--gguf", str(gguf_path), "--report", str(report)]
    with pytest.raises(SystemExit) as exit_info:
        gate_main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FAILS" in err[0] and "-5.0 points, at most 2.0 may be lost" in err[0]
    assert [s[0] for s in seen] == ["mlx", "tiny.gguf", "tiny.f16.gguf"]
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["drop_points"] == pytest.approx(5.0)
    assert data["variants"]["q4"]["file_type"] == "MOSTLY_Q8_0" and data["variants"]["f16"]["size_bytes"] > 0
    gate_main([*args, "--max-drop", "6"])
    assert json.loads(report.read_text())["passed"] is True


def test_probes_cover_digits_unicode_and_specials():
    text = "".join(PROBES)
    assert any(c.isdigit() for c in text) and "🤖" in text and "<|im_start|>" in text and "\t" in text
