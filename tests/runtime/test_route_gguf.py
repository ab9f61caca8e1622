"""The router against a real GGUF in llama-cpp-python: the untrained SmolLM2 (grammar still forces labels).

When a trained student exists (models/router_student_mlx + gguf/router-student.gguf) the last test routes with
it too.
"""

from __future__ import annotations

import json
import sys

import pytest

from distill.errors import DistillError
from distill.runtime.router import BELOW_THRESHOLD, Router
from distill.runtime.backends import TIMEOUT, LlamaCppBackend, label_confidence, skill_confidence
from distill.runtime.llamacpp import load_llama

TEXTS = ["turn your eyes red", "look to your left", "what time is it?", "tell me a joke"]


@pytest.fixture(scope="module")
def router(smollm2_backend, catalog):
    return Router(smollm2_backend, catalog, smollm2_backend.system_prompt, threshold=0.0)


def test_decisions_are_valid_catalog_labels(router, catalog):
    for text in TEXTS:
        decision = router.route(text)
        pred = router.last_prediction
        assert pred.valid_json, pred.output  # the grammar forces a label, even from an untrained model
        assert pred.skill in catalog.names
        if decision.source == "student":
            assert decision.reason is None
            assert catalog.check({"skill": decision.skill, "args": decision.args}) is None
            assert 0.0 < decision.confidence <= 1.0
        else:  # the grammar cannot express every schema bound (e.g. integer ranges); validation catches those
            assert decision.reason == "bad_args", decision


def test_a_text_gets_the_same_answer_and_confidence_whatever_came_before(smollm2_backend):
    first = smollm2_backend.predict("turn your eyes red")
    smollm2_backend.predict("what's the weather in Lisbon")
    again = smollm2_backend.predict("turn your eyes red")
    assert (again.output, again.confidence) == (first.output, first.confidence)


def test_confidence_uses_llama_cpps_own_logprobs(smollm2_backend, smollm2_gguf, catalog):
    """Recompute every token's log-probability with logits_all=True and llama-cpp-python's logits_to_logprobs."""
    from llama_cpp import Llama

    pred = smollm2_backend.predict("look to your left")
    tokens = smollm2_backend.prompt_tokens("look to your left")
    prefix = smollm2_backend.shared_prefix(smollm2_backend.system_prompt)
    pieces = smollm2_backend.last_pieces
    reference = load_llama(smollm2_gguf, n_ctx=1024, logits_all=True)
    reference.eval(prefix)
    reference.eval(tokens[len(prefix):])  # the same split as the backend
    for piece in pieces:
        if piece.token is None:  # the forced end of an arg-free label (forced_tail): not decoded, outside the confidence
            assert piece is pieces[-1] and piece.logprob == 0.0
            break
        logprobs = Llama.logits_to_logprobs(reference.scores[reference.n_tokens - 1])
        assert piece.logprob == pytest.approx(float(logprobs[piece.token]), abs=1e-3)
        reference.eval([piece.token])
    assert pred.confidence == label_confidence(pieces, pred.skill, catalog.names) > 0
    assert pred.skill_confidence == skill_confidence(pieces, pred.skill, catalog.names) >= pred.confidence


def test_threshold_above_one_always_falls_back(smollm2_backend, catalog):
    router = Router(smollm2_backend, catalog, smollm2_backend.system_prompt, threshold=1.01)
    for text in TEXTS[:2]:
        decision = router.route(text)
        assert (decision.source, decision.skill, decision.reason) == ("fallback", "chat", BELOW_THRESHOLD)
        assert decision.proposal["skill"] in catalog.names and decision.confidence <= 1.0


def test_timeout_falls_back(smollm2_backend, catalog, monkeypatch):
    monkeypatch.setattr(smollm2_backend, "timeout_s", 0.0)
    decision = Router(smollm2_backend, catalog, smollm2_backend.system_prompt, threshold=0.0).route("look up")
    assert (decision.source, decision.reason) == ("fallback", TIMEOUT)


def test_router_from_student_reads_student_json(untrained_student, smollm2_gguf):
    router = Router.from_student(untrained_student, gguf=smollm2_gguf, threshold=None)
    assert router.threshold == 0.5  # uncalibrated: the documented default
    assert router.backend.model_version.startswith("router_student:SmolLM2-135M-Instruct.Q4_1.gguf@")
    spec = json.loads((untrained_student / "student.json").read_text())
    assert router.system_prompt == spec["system_prompt"]
    spec["catalog_hash"] = "0123456789abcdef"
    (untrained_student / "student.json").write_text(json.dumps(spec))
    with pytest.raises(DistillError, match="catalog_hash"):
        Router.from_student(untrained_student, gguf=smollm2_gguf)


def test_missing_gguf_is_one_clear_error(catalog, tmp_path):
    with pytest.raises(DistillError, match="GGUF file not found"):
        LlamaCppBackend(tmp_path / "nope.gguf", catalog)


def test_cli_prints_the_decision_as_json(cli, smollm2_gguf, untrained_student, tmp_path):
    log = tmp_path / "decisions.jsonl"
    result = cli(sys.executable, "-m", "distill", "route", "--gguf", smollm2_gguf, "--student", tmp_path / "none",
                 "--log", log, "--threshold", "1.01", "turn", "your", "eyes", "red")
    assert result.returncode == 2 and "student.json not found" in result.stderr  # a named student must exist
    result = cli(sys.executable, "-m", "distill", "route", "--student", untrained_student, "--gguf", smollm2_gguf,
                 "--log", log, "--threshold", "1.01", "--timeout", "300", "--raw", "turn your eyes red")
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert (decision["source"], decision["skill"], decision["reason"]) == ("fallback", "chat", BELOW_THRESHOLD)
    assert decision["raw"]["valid_json"] is True
    assert json.loads(log.read_text())["text"] == "turn your eyes red"


def test_calibrate_cli_stores_a_threshold_and_writes_the_report(cli, untrained_student, smollm2_gguf, tmp_path):
    report, plot = tmp_path / "calibration.json", tmp_path / "calibration.png"
    result = cli(sys.executable, "-m", "distill", "calibrate", "--student", untrained_student, "--gguf", smollm2_gguf,
                 "--report", report, "--plot", plot, "--target", "0.5", "--timeout", "300")
    assert result.returncode == 0, result.stderr
    assert "calibrating on the validation split" in result.stderr  # and how to get the calibration requests
    data = json.loads(report.read_text())
    assert data["total"] == 6 and data["target"] == 0.5 and data["calibration"] == [str(untrained_student / "valid.jsonl")]
    threshold = json.loads((untrained_student / "student.json").read_text())["threshold"]
    assert threshold == data["threshold"] and isinstance(threshold, float)
    if data["reached"]:
        assert data["precision"] >= 0.5
        assert any(p["threshold"] == threshold for p in data["curve"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_cli_calibrates_on_the_given_requests_less_those_trained_on(cli, untrained_student, smollm2_gguf,
                                                                             tmp_path):
    """`make calibrate` passes --calibration data/calibration_routes.jsonl; a request the student trained on is
    left out (counted in the report), and a file of nothing else is one clear error, the student untouched."""
    requests = tmp_path / "calibration_routes.jsonl"
    requests.write_text("".join(json.dumps(r) + "\n" for r in (
        {"text": "look to your right", "skill": "look", "args": {"direction": "right"}},
        {"text": "Turn your eyes BLUE", "skill": "eyes_color", "args": {"color": "blue"}},
        {"text": "how much battery is left?", "skill": "battery_status", "args": {}})))
    (untrained_student / "train.jsonl").write_text(json.dumps(
        {"text": "turn your eyes blue", "skill": "eyes_color", "args": {"color": "blue"}}) + "\n")
    report = tmp_path / "calibration.json"
    result = cli(sys.executable, "-m", "distill", "calibrate", "--student", untrained_student, "--gguf", smollm2_gguf,
                 "--calibration", requests, "--report", report, "--plot", tmp_path / "c.png", "--target", "0.5",
                 "--timeout", "300")
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert (data["total"], data["dropped_trained"], data["calibration"]) == (2, 1, [str(requests)])
    assert [r["text"] for r in data["predictions"]["calibration"]] == ["look to your right", "how much battery is left?"]
    assert "1 calibration requests are in the student's training data" in result.stderr

    spec = (untrained_student / "student.json").read_text()
    only_trained = tmp_path / "trained.jsonl"
    only_trained.write_text((untrained_student / "train.jsonl").read_text())
    result = cli(sys.executable, "-m", "distill", "calibrate", "--student", untrained_student, "--gguf", smollm2_gguf,
                 "--valid", only_trained, "--report", tmp_path / "other.json", "--plot", tmp_path / "other.png")
    assert result.returncode == 2 and "no calibration records the student did not train on" in result.stderr
    assert str(only_trained) in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert (untrained_student / "student.json").read_text() == spec and not (tmp_path / "other.json").exists()


def test_conductor_example_acts_or_falls_back_to_the_chat_model(cli, fake_server, tmp_path):
    from tests.support.runtime import openai_answer

    fake_server.answer = lambda path, body: (200, openai_answer("Beep! Here is a joke."))
    config = tmp_path / "chat.json"
    config.write_text(json.dumps({"base_url": fake_server.url + "/v1", "model": "gpt-oss-20b", "timeout": 30}))
    result = cli(sys.executable, "examples/conductor.py", "--in-process", "--student", tmp_path / "none",
                 "--fallback-config", config, "tell me a joke", env={"DISTILL_DECISION_LOG": "off"})
    assert result.returncode == 0, result.stderr
    assert "> tell me a joke" in result.stdout and "Beep! Here is a joke." in result.stdout
    assert fake_server.requests and fake_server.requests[0][1]["messages"][-1]["content"] == "tell me a joke"


def test_decoding_picks_the_tokens_of_llama_cpps_own_grammar_sampler(smollm2_backend):
    """GrammarCheck asks the grammar about a few candidates, not the whole vocabulary: the same greedy tokens
    as Llama.generate(temp=0, grammar=...) (which masks every vocabulary entry at every step)."""
    from llama_cpp import LlamaGrammar

    from distill.prompting import label_grammar

    llm = smollm2_backend.llm
    for text in ("look to your left", "volume to 30", "what's the weather in Lisbon"):
        # the request's own grammar: the catalog's x-copy args held to its words and numbers
        grammar = LlamaGrammar.from_string(label_grammar(smollm2_backend.catalog, text), verbose=False)
        smollm2_backend.predict(text)
        ours = [p.token for p in smollm2_backend.last_pieces]
        assert None not in ours  # the untrained model spaces its labels: no forced end is recognised, all decoded
        tokens = smollm2_backend.prompt_tokens(text)
        smollm2_backend._prime(tokens, smollm2_backend.system_prompt)  # the same prefix split as predict()
        reference = []
        for token in llm.generate(tokens, temp=0.0, repeat_penalty=1.0, grammar=grammar):
            if token == llm.token_eos() or len(reference) > len(ours) + 4:
                break
            reference.append(token)
        assert reference[:len(ours)] == ours, text
        # after the closing brace llama.cpp may add whitespace before the end; we stop at the brace
        assert not llm.detokenize(reference[len(ours):]).strip(), text


def test_several_contexts_give_the_answers_one_context_gives_in_order(smollm2_backend, smollm2_gguf, catalog):
    """predict_many (the gate's and calibration's GGUF scoring): two llama.cpp contexts side by side, same outputs
    and confidences as one context, each at its text's index."""
    from distill.runtime.backends import predict_many

    texts = TEXTS + ["", "look up", "set a timer for 5 minutes"]
    alone = [smollm2_backend.predict(text) for text in texts]
    loaded = []

    def load_more():
        loaded.append(LlamaCppBackend(smollm2_gguf, catalog, n_ctx=1024, timeout_s=300))
        return loaded[-1]

    done = []
    together = predict_many(smollm2_backend, texts, load_more=load_more, workers=2, on_prediction=lambda: done.append(1))
    assert len(loaded) == 1 and len(done) == len(texts)
    assert [(p.text, p.output, p.error) for p in together] == [(p.text, p.output, p.error) for p in alone]
    assert [p.confidence for p in together] == pytest.approx([p.confidence for p in alone], abs=1e-9)


def test_predict_all_opens_another_context_with_the_same_settings(smollm2_gguf, catalog, monkeypatch):
    """predict_all (evaluate_gguf, the gate, calibrate): the extra contexts are the same GGUF with the backend's
    own settings, not the defaults, and the answers are one context's, in order."""
    from distill.runtime import backends

    first = LlamaCppBackend(smollm2_gguf, catalog, system_prompt="Route it.", stop=("<|im_end|>", "\n\n"),
                            timeout_s=300, max_tokens=40, n_ctx=512, model_version="student:abc")
    other = first.another_context()
    assert other.llm is not first.llm and other.gguf == first.gguf and other.catalog is first.catalog
    assert (other.system_prompt, other.stop, other.timeout_s, other.max_tokens, other.model_version) == \
           ("Route it.", ("<|im_end|>", "\n\n"), 300, 40, "student:abc")
    assert other.llm.n_ctx() == 512
    texts = ["look up", "turn your eyes red", "what time is it?"]
    alone = [first.predict(t).output for t in texts]
    monkeypatch.setattr(backends, "parallel_contexts", lambda: 2)
    done = []
    assert [p.output for p in first.predict_all(texts, lambda: done.append(1))] == alone and len(done) == 3


def test_an_arg_free_label_ends_once_its_skill_is_decided(catalog, tmp_path, repo_root):
    """forced_tail: after `{"skill":"time_now` nothing but `","args":{}}` can follow (and none of it is in the
    confidence), so the decode stops there; a name that prefixes another waits for its closing quote, and any
    spelling but the compact one the student was trained to write decodes to the end as before."""
    from distill.runtime.backends import arg_free_labels, forced_tail
    from distill.skills import load_catalog

    labels = arg_free_labels(catalog)
    assert forced_tail(b'{"skill":"time_now', labels) == b'","args":{}}'
    assert forced_tail(b' {"skill":"chat', labels) == b'","args":{}}'  # the one leading space the grammar allows
    assert forced_tail(b'{"skill":"chat","', labels) == b'args":{}}'
    assert forced_tail(b'{"skill":"time_', labels) == b""  # not decided yet
    assert forced_tail(b'{"skill":"look', labels) == b""  # a skill with args
    assert forced_tail(b'{ "skill": "chat', labels) == b""  # another spelling
    assert forced_tail(b'{"skill":"chat","args":{}}', labels) == b""  # already whole
    with_prefix = tmp_path / "skills.yaml"
    with_prefix.write_text((repo_root / "config" / "skills.yaml").read_text().replace(
        "  stop:\n", "  stop_all:\n    description: Stop every motor and sound.\n  stop:\n", 1))
    labels = arg_free_labels(load_catalog(with_prefix))
    assert forced_tail(b'{"skill":"stop', labels) == b""  # stop or stop_all: the quote is the model's choice
    assert forced_tail(b'{"skill":"stop"', labels) == b',"args":{}}'
    assert forced_tail(b'{"skill":"stop_all', labels) == b'","args":{}}'
