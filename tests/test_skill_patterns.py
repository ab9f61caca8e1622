"""Free-text skill args have patterns (issue 17 item 12): sound names, colours and places are words, not paths
or markup; every label the seed prompts and the tests use stays valid, and every decoder shares the rule."""

from __future__ import annotations

import pytest

from distill.errors import DistillError
from distill.skills import load_catalog

FREE_TEXT = [("play_sound", "name"), ("eyes_color", "color"), ("weather", "location")]
HOSTILE = ["../../etc/passwd", "/dev/sda", "<script>alert(1)</script>", "red; rm -rf /", "beep\nstop", "a\\b",
           "$(reboot)", "{{7*7}}"]
FINE = {"name": ["beep", "r2 whistle", "sad trombone", "victory fanfare", "cat's meow"],
        "color": ["red", "navy blue", "lime green", "Red", "blue-green"],
        "location": ["Lisbon", "New York", "São Paulo", "Kraków", "Washington, D.C.", "St. John's", "here"]}


@pytest.mark.parametrize("skill, arg", FREE_TEXT)
@pytest.mark.parametrize("value", HOSTILE)
def test_free_text_args_refuse_paths_and_markup(catalog, skill, arg, value):
    reason = catalog.check({"skill": skill, "args": {arg: value}})
    assert reason is not None and reason.startswith("bad_args"), reason  # before: accepted


@pytest.mark.parametrize("skill, arg", FREE_TEXT)
def test_ordinary_values_stay_valid(catalog, skill, arg):
    assert [v for v in FINE[arg] if catalog.check({"skill": skill, "args": {arg: v}})] == []


def test_every_label_the_standin_gives_for_seeds_and_paraphrases_stays_valid(catalog, repo_root):
    from distill.fileio import read_prompts
    from distill.standins.teacher import paraphrases, route

    seeds = read_prompts(repo_root / "prompts" / "router_seed.txt")
    texts = seeds + [p for text in seeds for p in paraphrases(text, 4, seed=1)]
    invalid = [(t, label) for t in texts if catalog.check(label := route(t))]
    assert len(texts) > 1000 and invalid == []


def test_the_runtime_grammar_and_the_mlx_constraint_apply_the_patterns(catalog):
    from llama_cpp import LlamaGrammar

    from distill.prompting import label_grammar
    from distill.training.mlx_decode import LabelConstraint

    grammar = label_grammar(catalog)
    assert '"\\"" [A-Za-z0-9]+ ([ \'_-] [A-Za-z0-9]+)* "\\""' in grammar  # play_sound.name
    LlamaGrammar.from_string(grammar, verbose=False)  # llama.cpp accepts it
    constraint = LabelConstraint(catalog)
    assert constraint.complete('{"skill":"play_sound","args":{"name":"r2 whistle"}}')
    assert not constraint.viable('{"skill":"play_sound","args":{"name":"../')


def test_an_unanchored_pattern_is_one_clear_error(tmp_path, repo_root):
    text = (repo_root / "config" / "skills.yaml").read_text()
    bad = tmp_path / "skills.yaml"
    bad.write_text(text.replace('pattern: "^[A-Za-z0-9]+', 'pattern: "[A-Za-z0-9]+', 1))
    with pytest.raises(DistillError, match=r"skills.play_sound.args.properties.name.pattern: a pattern must start"):
        load_catalog(bad)
