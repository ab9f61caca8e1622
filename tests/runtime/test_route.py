"""Router logic without a model: confidence arithmetic, the fallback rule, the Ollama client, the chat fallback."""

from __future__ import annotations

import json
import math
import socket

import pytest

from distill.runtime.router import BELOW_THRESHOLD, Decision, FallbackChat, Router
from distill.runtime.backends import (BACKEND_DOWN, BACKEND_ERROR, INVALID_JSON, NO_LOGPROBS, TIMEOUT, OllamaBackend,
                                      Piece, RawPrediction, interpret, skill_confidence)
from distill.prompting import label_grammar
from tests.support.runtime import ollama_answer, openai_answer


def pieces(*tokens: tuple[str, float]) -> list[Piece]:
    return [Piece(text.encode(), math.log(p)) for text, p in tokens]


def test_confidence_is_the_product_over_the_skill_name_tokens():
    out = pieces(('{"', 0.9), ("skill", 0.8), ('":"', 0.7), ("eyes", 0.6), ("_color", 0.5), ('","', 0.4),
                 ("args", 0.3), ('":{"color":"red"}}', 0.2))
    assert skill_confidence(out, "eyes_color") == pytest.approx(0.6 * 0.5)


def test_a_token_straddling_the_name_counts_and_prefix_names_need_the_closing_quote():
    out = pieces(('{"skill":"st', 0.5), ("op", 0.8), ('","args":{}}', 0.9))
    assert skill_confidence(out, "stop", ["stop"]) == pytest.approx(0.5 * 0.8)
    # With a longer skill "stop_all" in the catalog, "stop" is only decided by the closing quote.
    assert skill_confidence(out, "stop", ["stop", "stop_all"]) == pytest.approx(0.5 * 0.8 * 0.9)


def test_confidence_tolerates_spaces_and_a_leading_space_token():
    out = pieces((' {"skill": "', 0.99), ("look", 0.25), ('", "args": {"direction": "left"}}', 0.9))
    assert skill_confidence(out, "look") == pytest.approx(0.25)
    assert skill_confidence(out, "stop") == 0.0


def test_interpret_reports_why_a_label_is_unusable(catalog):
    bad_json = interpret("x", '{"skill": "look", "args": {', [], catalog, 1.0)
    assert (bad_json.valid_json, bad_json.label_error, bad_json.valid) == (False, INVALID_JSON, False)
    unknown = interpret("x", '{"skill":"dance","args":{}}', [], catalog, 1.0)
    assert unknown.valid_json and unknown.label_error == "unknown_skill" and unknown.skill == "dance"  # as emitted
    bad_args = interpret("x", '{"skill":"set_volume","args":{"level":300}}', [], catalog, 1.0)
    assert bad_args.label_error == "bad_args" and bad_args.skill == "set_volume"
    good = interpret("x", '{"skill":"look","args":{"direction":"up"}}', pieces(('{"skill":"', 1), ("look", 0.7),
                     ('","args":{"direction":"up"}}', 1)), catalog, 1.0)
    assert good.valid and good.label.canonical() == '{"skill":"look","args":{"direction":"up"}}'
    assert good.confidence == pytest.approx(0.7)


def test_the_grammar_admits_a_leading_space(catalog):
    grammar = label_grammar(catalog)
    assert "root ::= [ \\t\\n]? label" in grammar
    assert grammar.count("root ::=") == 1 and "label ::= alternative-0" in grammar


class FakeBackend:
    """Returns whatever the test sets; records the system prompt it was given."""

    model_version = "fake:1"

    def __init__(self, catalog, output=None, confidence=0.9, error=None, exc=None):
        self.catalog, self.output, self.confidence, self.error, self.exc = catalog, output, confidence, error, exc
        self.seen: list[tuple[str, str | None]] = []

    def predict(self, text, system_prompt=None):
        self.seen.append((text, system_prompt))
        if self.exc:
            raise self.exc
        if self.error:
            return RawPrediction(text=text, error=self.error, detail="simulated")
        label = json.loads(self.output)
        name = label.get("skill", "") if isinstance(label, dict) else "?"
        pred = interpret(text, self.output, [Piece(b'{"skill":"', 0.0), Piece(name.encode(), math.log(self.confidence)),
                                             Piece(self.output.split(name, 1)[-1].encode(), 0.0)], self.catalog, 3.0)
        return pred


@pytest.mark.parametrize(
    ("output", "confidence", "error", "exc", "reason"),
    [
        ('{"skill":"eyes_color","args":{"color":"red"}}', 0.4, None, None, BELOW_THRESHOLD),
        ('{"skill":"dance","args":{}}', 0.99, None, None, "unknown_skill"),
        ('{"skill":"set_volume","args":{"level":-5}}', 0.99, None, None, "bad_args"),
        ('{"skill":"look","args":{"direction":"left","speed":3}}', 0.99, None, None, "bad_args"),
        ('["look"]', 0.99, None, None, "not_an_object"),
        (None, 0.0, TIMEOUT, None, TIMEOUT),
        (None, 0.0, BACKEND_DOWN, None, BACKEND_DOWN),
        (None, 0.0, None, RuntimeError("llama_decode returned -1"), BACKEND_ERROR),
    ],
)
def test_everything_doubtful_falls_back_with_its_reason(catalog, output, confidence, error, exc, reason):
    backend = FakeBackend(catalog, output or "{}", confidence, error, exc)
    decision = Router(backend, catalog, "SYS", threshold=0.5).route("turn your eyes red")
    assert (decision.source, decision.skill, decision.args, decision.reason) == ("fallback", "chat", {}, reason)
    assert backend.seen == [("turn your eyes red", "SYS")]
    assert decision.latency_ms >= 0


def test_garbage_output_falls_back_as_invalid_json(catalog):
    class Garbage(FakeBackend):
        def predict(self, text, system_prompt=None):
            return interpret(text, "\x00}{ not json", [Piece(b"\x00}{ not json", -0.1)], self.catalog, 1.0)

    decision = Router(Garbage(catalog), catalog, None, 0.0).route("hi")
    assert (decision.source, decision.reason) == ("fallback", INVALID_JSON)


def test_threshold_is_inclusive_and_confident_valid_labels_are_acted_on(catalog):
    backend = FakeBackend(catalog, '{"skill":"eyes_color","args":{"color":"red"}}', confidence=0.75)
    decision = Router(backend, catalog, "SYS", threshold=0.75).route("turn your eyes red")
    assert (decision.source, decision.skill, decision.args, decision.reason) == (
        "student", "eyes_color", {"color": "red"}, None)
    assert decision.confidence == pytest.approx(0.75)
    assert Router(backend, catalog, "SYS", threshold=1.01).route("x").reason == BELOW_THRESHOLD
    proposal = Router(backend, catalog, "SYS", threshold=0.9).route("x").proposal
    assert proposal == {"skill": "eyes_color", "args": {"color": "red"}}


# ---- Ollama client layer (fake Ollama on loopback) ------------------------------------------------------


def test_ollama_request_shape_and_answer(fake_server, catalog):
    label = '{"skill":"eyes_color","args":{"color":"red"}}'
    fake_server.answer = lambda path, body: (200, ollama_answer(label, {"eyes": 0.8, "_color": 0.5}))
    backend = OllamaBackend(fake_server.url, "router-student", catalog, system_prompt="SYS", top_logprobs=3)
    decision = Router(backend, catalog, "SYS", threshold=0.3).route("turn your eyes red")

    path, body = fake_server.requests[0]
    assert path == "/api/chat"
    assert body["model"] == "router-student"
    assert body["format"] == catalog.label_schema("turn your eyes red")  # held to the request (x-copy)
    assert body["options"]["temperature"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 3
    assert body["stream"] is False
    assert body["messages"] == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "turn your eyes red"}]
    assert (decision.source, decision.skill, decision.args) == ("student", "eyes_color", {"color": "red"})
    # the skill name's tokens and the value's: "red" and the closing quote (0.99 each)
    assert decision.confidence == pytest.approx(0.8 * 0.5 * 0.99 * 0.99)


def test_ollama_without_system_prompt_leaves_the_modelfile_system(fake_server, catalog):
    fake_server.answer = lambda path, body: (200, ollama_answer('{"skill":"stop","args":{}}'))
    OllamaBackend(fake_server.url, "m", catalog).predict("stop")
    assert [m["role"] for m in fake_server.requests[0][1]["messages"]] == ["user"]


def test_ollama_chosen_token_logprob_falls_back_to_top_logprobs(catalog):
    from distill.runtime.backends import ollama_pieces

    entry = {"token": "look", "top_logprobs": [{"token": "stop", "logprob": -2.0}, {"token": "look", "logprob": -0.5}]}
    assert ollama_pieces([entry])[0].logprob == -0.5
    assert ollama_pieces([{"token": "x", "top_logprobs": []}])[0].logprob == -math.inf


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("garbage", INVALID_JSON),
        ("http500", BACKEND_ERROR),
        ("not_json_body", BACKEND_ERROR),
        ("slow", TIMEOUT),
        ("no_logprobs", NO_LOGPROBS),
    ],
)
def test_ollama_failures_fall_back(fake_server, catalog, setup, reason):
    answers = {
        "garbage": (200, ollama_answer("I think you want red eyes!")),
        "http500": (500, {"error": "model 'router-student' not found"}),
        "not_json_body": (200, "<html>proxy error</html>"),
        "slow": (200, ollama_answer('{"skill":"stop","args":{}}')),
        "no_logprobs": (200, ollama_answer('{"skill":"stop","args":{}}', logprobs=False)),
    }
    fake_server.answer = lambda path, body: answers[setup]
    fake_server.delay = 1.0 if setup == "slow" else 0.0
    backend = OllamaBackend(fake_server.url, "router-student", catalog, timeout_s=0.3)
    decision = Router(backend, catalog, "SYS", threshold=0.0).route("stop")
    assert (decision.source, decision.skill, decision.reason) == ("fallback", "chat", reason)


def test_ollama_down_falls_back(catalog):
    backend = OllamaBackend(f"http://127.0.0.1:{free_port()}", "router-student", catalog, timeout_s=2)
    decision = Router(backend, catalog, "SYS", threshold=0.0).route("look left")
    assert (decision.source, decision.reason) == ("fallback", BACKEND_DOWN)


# ---- the big chat model -----------------------------------------------------------------------------------


def test_fallback_chat_answers_and_its_failure_is_reported(fake_server, catalog):
    fake_server.answer = lambda path, body: (200, openai_answer("Beep! I can't order pizza, sorry."))
    chat = FallbackChat(fake_server.url + "/v1", "gpt-oss-20b", system_prompt="You are a droid.")
    router = Router(FakeBackend(catalog, error=TIMEOUT), catalog, "SYS", 0.5, fallback=chat)
    decision = router.route("order me a pizza")
    assert (decision.source, decision.skill, decision.reason) == ("fallback", "chat", TIMEOUT)
    assert decision.reply == "Beep! I can't order pizza, sorry."
    path, body = fake_server.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "gpt-oss-20b"
    assert body["messages"][0] == {"role": "system", "content": "You are a droid."}
    assert body["messages"][-1] == {"role": "user", "content": "order me a pizza"}

    # The student routing to chat itself also gets the big model's answer.
    student_chat = Router(FakeBackend(catalog, '{"skill":"chat","args":{}}', 0.9), catalog, "SYS", 0.5, fallback=chat)
    decision = student_chat.route("tell me a joke")
    assert (decision.source, decision.skill, decision.reply) == ("student", "chat", "Beep! I can't order pizza, sorry.")

    down = FallbackChat(f"http://127.0.0.1:{free_port()}/v1", "gpt-oss-20b", timeout_s=2)
    decision = Router(FakeBackend(catalog, error=TIMEOUT), catalog, "SYS", 0.5, fallback=down).route("hi")
    assert (decision.source, decision.reply) == ("fallback", None)
    assert "fallback chat failed" in decision.detail


def test_no_fallback_endpoint_still_says_fallback_chat(catalog):
    decision = Router(FakeBackend(catalog, error=BACKEND_DOWN), catalog, "SYS", 0.5).route("hi")
    assert isinstance(decision, Decision)
    assert (decision.source, decision.skill, decision.reason) == ("fallback", "chat", BACKEND_DOWN)
    assert decision.reply is None
