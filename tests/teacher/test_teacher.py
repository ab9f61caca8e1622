"""The teacher client against the stand-in over real HTTP: retries, Retry-After, cache keys, endpoints, audit."""

from __future__ import annotations

import json
import time

import pytest

from distill.teacher.config import TeacherConfig
from distill.standins.teacher import MODEL_ID, serve, stats
from distill.teacher.client import TeacherClient, TeacherError, TeacherUnreachable, cache_key, parse_json_answer

HELLO = [{"role": "user", "content": "Hi robot!"}]


def config_for(url, **overrides) -> TeacherConfig:
    return TeacherConfig(**{"base_url": url if isinstance(url, list) else [url], "model": MODEL_ID, "timeout": 5,
                            "retries": 2, "concurrency": 2, **overrides})


def test_retry_after_is_honoured_then_reported(tmp_path):
    with serve(fault_rate=1.0, faults=("429",), retry_after=0.4) as url:
        # backoff alone would wait milliseconds: only Retry-After makes it 0.8 s
        client = TeacherClient(config_for(url), cache_dir=None, backoff_base=0.001)
        started = time.monotonic()
        with pytest.raises(TeacherError) as err:
            client.chat(HELLO)
        assert time.monotonic() - started >= 0.8  # two waits of Retry-After
        assert err.value.reason == "http_429"
        assert stats(url)["chat_completions"] == 3 and client.stats.retries == 2


def test_garbled_body_and_500_are_retried_until_an_answer(tmp_path):
    with serve(fault_rate=0.5, faults=("garbled", "500"), seed=1) as url:
        client = TeacherClient(config_for(url, retries=8), cache_dir=None, backoff_base=0.01)
        replies = [client.chat([{"role": "user", "content": f"question {i}"}]) for i in range(10)]
        assert all(r.content for r in replies)
        assert client.stats.retries > 0 and set(client.stats.errors) <= {"bad_response", "http_500"}


def test_hang_times_out_and_is_retried():
    with serve(fault_rate=1.0, faults=("hang",), hang=30) as url:
        client = TeacherClient(config_for(url, timeout=0.5, retries=1), cache_dir=None, backoff_base=0.01)
        with pytest.raises(TeacherError) as err:
            client.chat(HELLO)
        assert err.value.reason == "timeout" and stats(url)["chat_completions"] == 2


def test_cache_key_covers_model_messages_and_sampling(tmp_path):
    with serve() as url:
        client = TeacherClient(config_for(url), cache_dir=tmp_path / "cache")
        first = client.chat(HELLO)
        assert not first.cached and client.chat(HELLO).cached
        assert not client.chat(HELLO, temperature=0.9).cached
        assert not client.chat(HELLO, seed=1).cached
        assert not client.chat([{"role": "user", "content": "Hi robot?"}]).cached
        assert stats(url)["chat_completions"] == 4
        client.close()
        again = TeacherClient(config_for(url), cache_dir=tmp_path / "cache")  # survives the process
        assert again.chat(HELLO).content == first.content and stats(url)["chat_completions"] == 4
    params = {"temperature": 0.2}
    assert cache_key("a", HELLO, params) != cache_key("b", HELLO, params)


def test_dead_endpoint_is_skipped_and_all_dead_is_unreachable():
    with serve() as url:
        client = TeacherClient(config_for(["http://127.0.0.1:9/v1", url]), cache_dir=None)
        for i in range(6):
            client.chat([{"role": "user", "content": f"q{i}"}])
        assert stats(url)["chat_completions"] == 6
    client = TeacherClient(config_for(["http://127.0.0.1:9/v1"], retries=1), cache_dir=None, backoff_base=0.01)
    with pytest.raises(TeacherUnreachable):
        client.chat(HELLO)


def test_reasoning_goes_to_audit_not_content(tmp_path):
    with serve(reasoning_field="thinking") as url:
        client = TeacherClient(config_for(url), cache_dir=None, audit_path=tmp_path / "audit.jsonl")
        reply = client.chat(HELLO)
        client.close()
    assert reply.reasoning and reply.reasoning not in reply.content
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert audit[0]["reasoning"] == reply.reasoning and audit[0]["content"] == reply.content


@pytest.mark.parametrize("content, expected", [
    ('{"skill": "stop", "args": {}}', {"skill": "stop", "args": {}}),
    ('```json\n{"skill": "stop", "args": {}}\n```', {"skill": "stop", "args": {}}),
    ('Sure! {"skill": "stop", "args": {}} hope that helps', {"skill": "stop", "args": {}}),
])
def test_parse_json_answer(content, expected):
    assert parse_json_answer(content) == expected


def test_parse_json_answer_refuses_non_json():
    with pytest.raises(ValueError):
        parse_json_answer('{"skill": "stop", "ar')
