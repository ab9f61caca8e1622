"""prompts/router_calibration.txt, the requests `make calibrate` picks the threshold on: kept apart from the seeds
and from the held-out check, labelled into a valid route by the stand-in teacher's rules, every skill there; and
calibration leaves out any request the student trained on."""

from __future__ import annotations

import json
from collections import Counter

from distill.fileio import read_jsonl, read_prompts, write_jsonl
from distill.prompting import normalize_text
from distill.skills import load_catalog
from distill.standins.teacher import route
from distill.training.calibrate import drop_trained
from tests.support import ROOT

CALIBRATION = ROOT / "prompts" / "router_calibration.txt"


def normalized(texts) -> set[str]:
    return {normalize_text(t) for t in texts}


def test_no_calibration_request_is_a_seed_or_a_held_out_request():
    requests = read_prompts(CALIBRATION)
    assert len(normalized(requests)) == len(requests), "a request is there twice"
    seeds = normalized(read_prompts(ROOT / "prompts" / "router_seed.txt"))
    held_out = normalized(r["text"] for r in read_jsonl(ROOT / "bench" / "data" / "heldout_routes.jsonl"))
    assert not normalized(requests) & seeds, "calibrating on a request training sees vouches for it"
    assert not normalized(requests) & held_out, "the held-out check must stay unseen by calibration"


def test_every_request_gets_the_skill_its_header_names_and_a_valid_label():
    """The headers are hints for humans, so this pins the stand-in's labels to them: a rule change that turns
    'Turn the volume up to 90.' into a look up would make calibration count the student's right answer wrong."""
    catalog = load_catalog(ROOT / "config" / "skills.yaml")
    header, skills = None, Counter()
    for line in CALIBRATION.read_text().splitlines():
        if line.startswith("# skill: "):
            header = line.removeprefix("# skill: ").strip()
            continue
        if not line.strip() or line.startswith("#"):
            continue
        label = catalog.validate(route(line))
        assert label.skill == header, (line, label)
        skills[label.skill] += 1
    assert set(skills) == set(catalog.skills)
    assert sum(skills.values()) >= 250, "one confident error among fewer records moves the threshold"
    assert min(skills.values()) >= 15, skills


def test_calibration_leaves_out_what_the_student_trained_on(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "Look LEFT please", "skill": "look", "args": {"direction": "left"}}])
    records = [{"text": "look left please", "skill": "look"}, {"text": "look right please", "skill": "look"}]
    kept, dropped = drop_trained(records, tmp_path)
    assert [r["text"] for r in kept] == ["look right please"] and dropped == 1
    assert drop_trained(records, tmp_path / "no-student-here") == (records, 0)


def test_calibration_routes_tool_labels_every_request(tmp_path):
    from tests.training.test_calibration_seeds import load_tool

    out = load_tool().calibration_routes(tmp_path / "calibration_routes.jsonl")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in records] == read_prompts(CALIBRATION)
    assert len({r["id"] for r in records}) == len(records)


def test_split_texts_are_the_normalized_texts_of_the_splits_that_exist(tmp_path):
    """One reader for 'what did this student train on' (calibration, the fixed-set leak check, harvested items)."""
    from distill.training.datasets import split_texts

    write_jsonl(tmp_path / "train.jsonl", [{"text": "Look LEFT, please!", "skill": "look"}])
    write_jsonl(tmp_path / "valid.jsonl", [{"text": "what time is it", "skill": "time_now"}])
    assert split_texts(tmp_path) == {"look left, please"}  # normalized: case, the trailing "!"
    assert split_texts(tmp_path, ("train", "valid", "test")) == {"look left, please", normalize_text("What time is it?")}
