"""`x-copy` args (issue 16): when routing, a place, color or sound name is words of the request and a number is
one the request says (in the arg's unit: the catalog's x-units), in every decoder: llama.cpp's
grammar, Ollama's `format` and the MLX constraint. Measured on the demo students (docs/runtime.md): without it
the student wrote "Zurach", "Tokyo" for Athens, 44 for "timer 4 min"."""

from __future__ import annotations

import json
import re

import pytest

from distill.errors import DistillError
from distill.skills import Catalog, copy_candidates, load_catalog, spoken_numbers, spoken_quantities, word_runs


def args_schema(catalog: Catalog, text: str, skill: str) -> dict | None:
    """The args schema of `skill`'s branch in the label schema for `text` (None: the branch is left out)."""
    for branch in catalog.label_schema(text)["anyOf"]:
        if branch["properties"]["skill"]["const"] == skill:
            return branch["properties"]["args"]
    return None


def test_word_runs_shed_punctuation_at_word_ends_and_stop_at_four_words():
    runs = word_runs('Is it snowing in "Zurich"?')
    assert "Zurich" in runs and "in Zurich" in runs and '"Zurich"?' not in runs
    assert "Is it snowing in" in runs and "Is it snowing in Zurich" not in runs  # five words
    assert word_runs("São Paulo, please") == ["São", "São Paulo", "São Paulo please", "Paulo", "Paulo please", "please"]
    assert word_runs("  ") == [] and word_runs("?! ...") == []


def test_lower_and_proper_modes_and_the_args_own_pattern(catalog):
    color = catalog.skills["eyes_color"].args_schema["properties"]["color"]
    values = copy_candidates("Set eye color to Hot Pink.", color, "lower")
    assert "hot pink" in values and "Hot Pink" not in values and "pink" in values
    hostile = copy_candidates("eyes red; rm -rf /", color, "lower")
    assert "red" in hostile and not [v for v in hostile if "/" in v or ";" in v]  # the arg's pattern still holds
    assert not [v for v in hostile if catalog.check({"skill": "eyes_color", "args": {"color": v}})]
    place = catalog.skills["weather"].args_schema["properties"]["location"]
    values = copy_candidates("weather in new york", place, "proper")
    assert {"new york", "New York"} <= set(values) and "NEW YORK" not in values


def test_a_copied_value_never_holds_the_args_without_words(catalog):
    """x-copy-without: `blue eyes` and `purple pls` are no colors (the demo student wrote both, confidently, in
    calibration); the runs around those words stay."""
    color = catalog.skills["eyes_color"].args_schema["properties"]["color"]
    assert copy_candidates("Could you switch to blue eyes?", color, "lower") == [
        "could", "could you", "could you switch", "could you switch to", "you", "you switch", "you switch to",
        "you switch to blue", "switch", "switch to", "switch to blue", "to", "to blue", "blue"]
    assert copy_candidates("eyes purple pls", color, "lower") == ["purple"]
    assert copy_candidates("Turn your LEDs light blue, please.", color, "lower")[-3:] == ["light", "light blue", "blue"]
    assert args_schema(catalog, "eyes purple pls", "eyes_color")["properties"]["color"]["enum"] == ["purple"]
    assert catalog.check({"skill": "eyes_color", "args": {"color": "blue eyes"}}) is None  # a teacher label is still free
    assert "x-copy-without" not in catalog.describe() and "x-" not in json.dumps(catalog.label_schema("blue eyes"))


@pytest.mark.parametrize("text, numbers", [
    ("timer 4 min", [4]), ("Set a timer for 1.5 minutes", [1.5]), ("volume to 90 percent", [90]),
    ("eleven minutes", [11]), ("twenty-five minutes", [25]), ("twenty five", [25]), ("a hundred percent", [100]),
    ("two hundred", [200]), ("3 minutes and 30 seconds", [3, 30]), ("mute yourself", []),
    ("two and a half minutes", [2.5]), ("1 and a half hours", [1.5]),
    ("an hour and a half", []),
])
def test_spoken_numbers(text, numbers):
    assert spoken_numbers(text) == numbers


def test_a_number_arg_is_a_number_said_in_the_args_unit(catalog):
    def minutes(text: str) -> list:
        return args_schema(catalog, text, "set_timer")["properties"]["minutes"]["enum"]

    assert args_schema(catalog, "timer 4 min", "set_timer")["properties"]["minutes"] == {"type": "number", "enum": [4]}
    assert minutes("Can you time 30 seconds for me?") == [0.5]  # x-units: second = 1/60 minute
    assert minutes("Start a two hour timer.") == [120] and minutes("a ten-minute timer") == [10]
    assert minutes("2 more hours") == [120]  # the unit within two words of its number
    assert minutes("one and a half hours") == [90] and minutes("two and a half minutes") == [2.5]
    assert minutes("boil 3 eggs for 5 minutes") == [3, 5] and minutes("timer 20") == [20]  # no unit: minutes
    assert spoken_quantities("3 eggs for 5 minutes") == [(3, ["eggs", "for"]), (5, ["minutes"])]
    assert args_schema(catalog, "volume 90", "set_volume")["properties"]["level"] == {"type": "integer", "enum": [90]}
    # a unit named with an article or a fraction is an amount too (a trained student wrote 1.5 for "an hour")
    assert minutes("set a timer for an hour") == [60] and minutes("Set timer for an hour and a half.") == [90]
    assert minutes("Can you set a timer for half an hour?") == [30] and minutes("a half hour timer") == [30]
    assert minutes("Start a quarter of an hour countdown.") == [15] and minutes("a quarter hour timer") == [15]
    assert minutes("set a timer for a minute") == [1] and minutes("in two and a half minutes") == [2.5]
    # no number said: the model converts freely ("mute" -> 0)
    assert args_schema(catalog, "Mute yourself", "set_volume")["properties"]["level"] == {
        "type": "integer", "minimum": 0, "maximum": 100}
    # said, but none fits the arg (150 > 100; 1.5 is no integer): the schema's own bounds, not an empty enum
    assert "enum" not in args_schema(catalog, "volume 150", "set_volume")["properties"]["level"]


def test_a_skill_whose_required_copy_arg_has_no_candidate_is_left_out(catalog):
    assert args_schema(catalog, "?!", "weather") is None
    assert args_schema(catalog, "?!", "time_now") is not None  # arg-free skills stay


def test_the_published_schema_and_the_teacher_prompt_have_no_x_keys(catalog):
    assert "x-" not in json.dumps(catalog.label_schema())
    assert "x-copy" not in catalog.describe() and "x-units" not in catalog.describe()


def test_x_copy_is_a_decoding_rule_not_part_of_the_catalog_hash(tmp_path, repo_root, catalog):
    plain = tmp_path / "skills.yaml"
    plain.write_text((repo_root / "config" / "skills.yaml").read_text()
                     .replace(""", x-copy: lower,
                x-copy-without: [eyes, eye, leds, led, color, colour, please, pls, plz, thanks]}""", "}")
                     .replace(", x-copy: lower", "").replace(", x-copy: proper", "")
                     .replace(""", x-copy: number,
                  x-units: {minute: 1, min: 1, hour: 60, hr: 60, second: 0.0166667, sec: 0.0166667}}""", "}")
                     .replace(", x-copy: number", ""))
    stripped = load_catalog(plain)
    assert not any(skill.copy_args for skill in stripped.skills.values())
    assert stripped.hash == catalog.hash  # students trained before x-copy stay valid
    assert args_schema(stripped, "weather in Zurich", "weather")["properties"]["location"].get("enum") is None


@pytest.mark.parametrize("find, replace, field", [
    ("x-copy: lower,", "x-copy: upper,", "skills.eyes_color.args.properties.color.x-copy"),
    ("x-copy-without: [eyes,", "x-copy-without: [Eyes,", "skills.eyes_color.args.properties.color.x-copy-without"),
    ("x-copy-without: [eyes,", "x-copy-without: [blue eyes,", "skills.eyes_color.args.properties.color.x-copy-without"),
    ("x-copy: lower,", "x-copy: number,", "skills.eyes_color.args.properties.color.x-copy"),
    ("level: {type: integer, minimum: 0, maximum: 100, x-copy: number}",
     "level: {type: integer, minimum: 0, maximum: 100, x-copy: number, x-copy-without: [percent]}",
     "skills.set_volume.args.properties.level.x-copy-without"),
    ("level: {type: integer, minimum: 0, maximum: 100, x-copy: number}",
     "level: {type: integer, minimum: 0, maximum: 100, x-copy-without: [percent]}",
     "skills.set_volume.args.properties.level.x-copy-without"),
    ("level: {type: integer, minimum: 0, maximum: 100, x-copy: number}",
     "level: {type: integer, minimum: 0, maximum: 100, x-copy: lower}", "skills.set_volume.args.properties.level.x-copy"),
    ("hour: 60, hr: 60", "hour: -60, hr: 60", "skills.set_timer.args.properties.minutes.x-units"),
    ("{minute: 1, min: 1,", "{Minute: 1, min: 1,", "skills.set_timer.args.properties.minutes.x-units"),
    ('{text: "make your eyes glow teal", args: {color: teal}}', '{text: "make your eyes glow", args: {color: teal}}',
     "skills.eyes_color.examples[1].args.color"),
])
def test_a_bad_x_copy_is_one_error_naming_the_field(tmp_path, repo_root, find, replace, field):
    text = (repo_root / "config" / "skills.yaml").read_text()
    assert find in text
    bad = tmp_path / "skills.yaml"
    bad.write_text(text.replace(find, replace, 1))
    with pytest.raises(DistillError, match=re.escape(f"{field}:")):
        load_catalog(bad)


def test_the_mlx_constraint_holds_copy_args_to_the_request(catalog):
    from distill.training.mlx_decode import LabelConstraint

    zurich = LabelConstraint(catalog, "Is it snowing in Zurich?")
    assert zurich.complete('{"skill":"weather","args":{"location":"Zurich"}}')
    assert not zurich.viable('{"skill":"weather","args":{"location":"Zura')
    timer = LabelConstraint(catalog, "timer 4 min")
    assert timer.complete('{"skill":"set_timer","args":{"minutes":4}}')
    assert not timer.viable('{"skill":"set_timer","args":{"minutes":44')
    assert timer.forced('{"skill":"set_timer","args":{"minutes":4') == "}}"  # nothing else can follow the 4
    assert LabelConstraint(catalog).viable('{"skill":"weather","args":{"location":"Zura')  # request-free: any


def test_ollamas_format_is_the_schema_for_this_request(catalog):
    from distill.runtime.backends import OllamaBackend

    body = OllamaBackend("http://127.0.0.1:9", "router-student", catalog).request_body("weather in Lisbon?")
    assert body["format"] == catalog.label_schema("weather in Lisbon?")
    assert "x-" not in json.dumps(body["format"])


def test_calibration_skips_a_gold_label_the_request_cannot_express(catalog):
    """`play the laff sound` labelled `laugh` by the teacher: under x-copy no student can say it, so the record
    says nothing about the confidence (one such record made a 97%-right student never act)."""
    from distill.runtime.backends import RawPrediction
    from distill.training.calibrate import expressible, score

    said = RawPrediction(text="play the laff sound", valid_json=True, skill="play_sound", args={"name": "laff"},
                         confidence=0.95)
    assert not expressible(catalog, "play the laff sound", {"skill": "play_sound", "args": {"name": "laugh"}})
    assert score(said, {"skill": "play_sound", "args": {"name": "laugh"}}, catalog) is None
    assert score(said, {"skill": "play_sound", "args": {"name": "laff"}}, catalog) == (0.95, True)
    wrong = RawPrediction(text="play the laff sound", valid_json=True, skill="stop", args={}, confidence=0.9)
    assert score(wrong, {"skill": "play_sound", "args": {"name": "laff"}}, catalog) == (0.9, False)
