"""The skills catalog: the shipped one loads, bad ones fail with file/skill/field, labels validate."""

from __future__ import annotations

import json

import pytest

from distill.teacher.config import load_teacher_config
from distill.errors import DistillError
from distill.skills import LabelError, load_catalog

SHIPPED = ["look", "eyes_color", "set_volume", "set_timer", "weather", "time_now", "take_photo",
           "battery_status", "stop", "play_sound", "chat"]


def test_shipped_catalog_has_the_droid_skills(catalog):
    assert catalog.names == SHIPPED
    for skill in catalog.skills.values():
        assert skill.description and skill.examples, skill.name


@pytest.mark.parametrize(
    "label, canonical",
    [
        ({"skill": "look", "args": {"direction": "left"}}, '{"skill":"look","args":{"direction":"left"}}'),
        ({"skill": "set_timer", "args": {"minutes": 5.0}}, '{"skill":"set_timer","args":{"minutes":5}}'),
        ({"skill": "set_timer", "args": {"minutes": 1.5}}, '{"skill":"set_timer","args":{"minutes":1.5}}'),
        ({"skill": "time_now"}, '{"skill":"time_now","args":{}}'),
        ({"skill": "eyes_color", "args": {"color": "  teal "}}, '{"skill":"eyes_color","args":{"color":"teal"}}'),
    ],
)
def test_valid_labels_canonicalize(catalog, label, canonical):
    assert catalog.validate(label).canonical() == canonical


@pytest.mark.parametrize(
    "label, reason",
    [
        ({"skill": "dance"}, "unknown_skill"),
        ({"skill": "look", "args": {"direction": "sideways"}}, "bad_args"),
        ({"skill": "look", "args": {}}, "bad_args"),
        ({"skill": "set_volume", "args": {"level": 101}}, "bad_args"),
        ({"skill": "set_volume", "args": {"level": 5.5}}, "bad_args"),
        ({"skill": "set_timer", "args": {"minutes": 0}}, "bad_args"),
        ({"skill": "time_now", "args": {"when": "now"}}, "bad_args"),
        ({"skill": "chat", "confidence": 1}, "extra_keys"),
        (["look"], "not_an_object"),
    ],
)
def test_invalid_labels_are_rejected_with_a_reason(catalog, label, reason):
    with pytest.raises(LabelError) as err:
        catalog.validate(label)
    assert err.value.reason == reason
    assert catalog.check(label).startswith(reason)


def test_label_schema_accepts_exactly_the_valid_labels(catalog):
    import jsonschema

    validator = jsonschema.Draft202012Validator(catalog.label_schema())
    assert validator.is_valid({"skill": "weather", "args": {"location": "Oslo"}})
    assert validator.is_valid({"skill": "stop", "args": {}})
    assert not validator.is_valid({"skill": "weather", "args": {}})
    assert not validator.is_valid({"skill": "nap", "args": {}})


def test_catalog_hash_changes_with_the_catalog(catalog, tmp_path, repo_root):
    text = (repo_root / "config/skills.yaml").read_text().replace("Turn the head", "Rotate the head")
    (tmp_path / "skills.yaml").write_text(text)
    assert load_catalog(tmp_path / "skills.yaml").hash != catalog.hash


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        ("skills: [", "invalid YAML"),
        ("version: 1\n", "skills: expected a mapping"),
        ("skills:\n  look:\n    args: {type: object}\n", "skills.look.description: missing or empty"),
        ("skills:\n  chat: {description: x}\n  Look: {description: y}\n", "skills.Look: skill names are lowercase"),
        ("skills:\n  chat: {description: x}\n  a: {description: y, args: {type: string}}\n", "skills.a.args: must be a JSON Schema"),
        ("skills:\n  chat: {description: x}\n  a: {description: y, args: {type: object, properties: {n: {type: 12}}}}\n",
         "skills.a.args: not a valid JSON Schema"),
        ("skills:\n  look: {description: x}\n", "the fallback skill 'chat' must be in the catalog"),
        ("skills:\n  chat: {description: x, colour: red}\n", "skills.chat: unknown key(s) ['colour']"),
        ("skills:\n  chat: {description: x}\n  a:\n    description: y\n    args: {type: object, properties: {n: {type: integer}}, required: [n]}\n"
         "    examples: [{text: hi, args: {n: nope}}]\n", "skills.a.examples[0]: bad_args"),
    ],
)
def test_bad_catalog_names_file_and_field(tmp_path, yaml_text, expected):
    path = tmp_path / "skills.yaml"
    path.write_text(yaml_text)
    with pytest.raises(DistillError) as err:
        load_catalog(path)
    assert str(err.value).startswith(str(path))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_catalog(tmp_path):
    with pytest.raises(DistillError, match="catalog file not found"):
        load_catalog(tmp_path / "none.yaml")


def test_shipped_teacher_config(repo_root):
    config = load_teacher_config(repo_root / "config/teacher.json")
    assert config.base_url == ["http://localhost:8000/v1"]
    assert config.model == "gpt-oss-20b" and config.reasoning_effort == "low"


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"temprature": 0.2}, "temprature"),
        ({"temperature": "hot"}, "temperature"),
        ({"concurrency": 0}, "concurrency"),
        ({"retries": True}, "retries"),
        ({"reasoning_effort": "max"}, "reasoning_effort"),
        ({"base_url": ["http://a:1/v1", "ftp://b"]}, "base_url"),
        ({"base_url": []}, "base_url"),
    ],
)
def test_bad_teacher_config_names_the_field(tmp_path, repo_root, patch, field):
    config = json.loads((repo_root / "config/teacher.json").read_text()) | patch
    path = tmp_path / "teacher.json"
    path.write_text(json.dumps(config))
    with pytest.raises(DistillError) as err:
        load_teacher_config(path)
    assert str(err.value).startswith(f"{path}: {field}:")


def test_base_url_list_and_api_key_from_env(tmp_path, monkeypatch):
    path = tmp_path / "teacher.json"
    path.write_text(json.dumps({"base_url": ["http://127.0.0.1:1/v1/", "http://127.0.0.1:2/v1"], "api_key_env": "MY_KEY"}))
    config = load_teacher_config(path)
    assert config.base_url == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    monkeypatch.setenv("MY_KEY", "sekrit")
    assert config.api_key == "sekrit"


def test_seed_prompts_cover_every_skill(repo_root, catalog):
    """At least 250 router prompts, 15+ per skill (grouped under '# skill: NAME'), 80+ style questions."""
    from collections import Counter

    from distill.fileio import read_prompts

    counts, skill = Counter(), None
    for line in (repo_root / "prompts/router_seed.txt").read_text().splitlines():
        if line.startswith("# skill:"):
            skill = line.split(":", 1)[1].strip()
            assert skill in catalog.names, skill
        elif line.strip() and not line.startswith("#"):
            counts[skill] += 1
    assert sum(counts.values()) >= 250
    assert {s: c for s, c in counts.items() if c < 15} == {}
    assert set(counts) == set(catalog.names)
    router = read_prompts(repo_root / "prompts/router_seed.txt")
    assert len(router) == len(set(router))
    assert len(read_prompts(repo_root / "prompts/style_seed.txt")) >= 80
