"""data/overrides.jsonl: a person's fixes, append-only, the latest per record wins, training applies them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.errors import DistillError
from distill.overrides import (append_override, apply_overrides, latest, make_override, overrides_path_for,
                               read_overrides)
from distill.skills import LabelError

LOOK_LEFT = {"skill": "look", "args": {"direction": "left"}}


def _records() -> list[dict]:
    return [{"id": "a1", "text": "look at the weather outside", "skill": "look", "args": {"direction": "left"},
             "votes": 2, "teacher": "t", "created": "c"},
            {"id": "b2", "text": "turn your eyes red", "skill": "eyes_color", "args": {"color": "red"}},
            {"id": "c3", "text": "do a backflip", "skill": "backflip", "args": {}}]


def _save(path, catalog, record_id, text, action, after=None, before=LOOK_LEFT):
    append_override(path, make_override(record_id, text, action, before, after, catalog, source="test"))


def test_a_change_is_validated_and_stored_canonical(catalog):
    line = make_override("a1", "look at the weather outside", "change", LOOK_LEFT,
                         {"skill": "set_volume", "args": {"level": 30.0}}, catalog)
    assert line["after"] == {"skill": "set_volume", "args": {"level": 30}}
    assert set(line) >= {"time", "id", "text", "before", "after", "action"}
    with pytest.raises(LabelError, match="greater than the maximum"):
        make_override("a1", "x", "change", None, {"skill": "set_volume", "args": {"level": 300}}, catalog)
    with pytest.raises(ValueError, match="unknown action"):
        make_override("a1", "x", "delete", None, None, catalog)
    assert make_override("a1", "x", "accept", LOOK_LEFT, None, catalog)["after"] == LOOK_LEFT
    assert make_override("a1", "x", "reject", LOOK_LEFT, LOOK_LEFT, catalog)["after"] is None


def test_training_applies_the_latest_override_per_record(tmp_path, catalog):
    path = overrides_path_for(tmp_path / "routes.jsonl")
    assert path == tmp_path / "overrides.jsonl"
    _save(path, catalog, "a1", "look at the weather outside", "reject")
    weather = {"skill": "weather", "args": {"location": "outside"}}
    loudest = {"skill": "set_volume", "args": {"level": 100}}
    _save(path, catalog, "a1", "look at the weather outside", "change", weather)
    _save(path, catalog, "c3", "do a backflip", "reject")
    _save(path, catalog, "zz", "make it louder than loud", "change", loudest, None)
    records, applied = apply_overrides(_records(), path, catalog)
    by_text = {r["text"]: r for r in records}
    assert (by_text["look at the weather outside"]["skill"], by_text["look at the weather outside"]["args"]) == (
        "weather", {"location": "outside"})  # the later change beats the earlier reject
    assert by_text["look at the weather outside"]["votes"] == 2  # the rest of the record is kept
    assert "do a backflip" not in by_text
    assert by_text["turn your eyes red"]["skill"] == "eyes_color"  # untouched
    assert by_text["make it louder than loud"]["teacher"] == "person"  # a text the teacher rejected, labelled
    assert (applied.changed, applied.rejected, applied.added, applied.accepted) == (1, 1, 1, 0)
    assert "1 changed, 1 rejected, 1 added" in applied.summary()


def test_overrides_match_by_normalized_text_when_ids_differ(tmp_path, catalog):
    path = tmp_path / "overrides.jsonl"
    _save(path, catalog, "other-id", "Turn your eyes RED!", "reject")
    records, applied = apply_overrides(_records(), path, catalog)
    assert "turn your eyes red" not in {r["text"] for r in records} and applied.rejected == 1


def test_no_overrides_file_changes_nothing(tmp_path, catalog):
    records, applied = apply_overrides(_records(), tmp_path / "overrides.jsonl", catalog)
    assert records == _records() and applied.sha256 is None


def test_a_torn_last_line_is_skipped_and_cut_by_the_next_append(tmp_path, catalog):
    path = tmp_path / "overrides.jsonl"
    _save(path, catalog, "b2", "turn your eyes red", "accept")
    with path.open("a") as handle:
        handle.write('{"time": "t", "id": "a1", "text": "look')  # a crash mid-write
    overrides, bad = read_overrides(path)
    assert [o.id for o in overrides] == ["b2"] and bad == []
    _save(path, catalog, "a1", "look at the weather outside", "reject")
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


def test_a_bad_line_stops_training_naming_file_and_line(tmp_path, catalog):
    path = tmp_path / "overrides.jsonl"
    path.write_text('{"id": "a1", "text": "x", "action": "explode", "time": "t"}\n')
    with pytest.raises(DistillError, match=r"overrides.jsonl:1: not an override: action"):
        apply_overrides(_records(), path, catalog)
    assert read_overrides(path)[1][0].line == 1  # the review page shows it instead


def test_a_change_the_catalog_no_longer_accepts_fails_clearly(tmp_path, catalog):
    path = tmp_path / "overrides.jsonl"
    path.write_text(json.dumps({"time": "t", "id": "a1", "text": "look at the weather outside", "action": "change",
                                "before": LOOK_LEFT, "after": {"skill": "dance", "args": {}}}) + "\n")
    with pytest.raises(DistillError, match=r"overrides.jsonl:1: after: unknown_skill"):
        apply_overrides(_records(), path, catalog)


def test_latest_keeps_the_last_line_per_id(tmp_path, catalog):
    path = tmp_path / "overrides.jsonl"
    for action in ("accept", "reject", "accept"):
        _save(path, catalog, "b2", "turn your eyes red", action)
    overrides, _ = read_overrides(path)
    assert len(overrides) == 3 and latest(overrides)["b2"].line == 3


def test_accepting_a_changed_label_keeps_the_change(tmp_path, catalog):
    path = tmp_path / "overrides.jsonl"
    weather = {"skill": "weather", "args": {"location": "outside"}}
    _save(path, catalog, "a1", "look at the weather outside", "change", weather)
    _save(path, catalog, "a1", "look at the weather outside", "accept", weather, before=weather)
    records, applied = apply_overrides(_records(), path, catalog)
    fixed = next(r for r in records if r["id"] == "a1")
    assert (fixed["skill"], fixed["args"]) == ("weather", {"location": "outside"}) and applied.accepted == 1


def test_collection_leaves_the_overrides_alone(tmp_path, teacher_config, catalog):
    """Collect appends beside data/overrides.jsonl and never rewrites it (the teacher's files are its own)."""
    from distill.teacher.collect import RouteTask, collect
    from distill.teacher.config import load_teacher_config

    out = tmp_path / "data" / "routes.jsonl"
    overrides = overrides_path_for(out)
    _save(overrides, catalog, "a1", "look at the weather outside", "change",
          {"skill": "weather", "args": {"location": "outside"}})
    before = overrides.read_bytes(), overrides.stat().st_mtime_ns
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("look at the weather outside\nturn your eyes red\n")
    summary = collect(RouteTask(catalog), load_teacher_config(teacher_config), [prompts], out,
                      cache_dir=tmp_path / "cache", progress=False)
    assert summary.labeled == 2
    assert (overrides.read_bytes(), overrides.stat().st_mtime_ns) == before
    records, applied = apply_overrides([json.loads(line) for line in out.open()], overrides, catalog)
    assert applied.changed == 1 and {r["skill"] for r in records} == {"weather", "eyes_color"}


def _routes_file(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "data" / "routes.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_training_reads_the_overrides_beside_the_routes(tmp_path, catalog):
    """What `make train-router` does first (train.prepare_data): the person's fixes, with no flag to remember."""
    from distill.training.train import build_parser, prepare_data

    routes = _routes_file(tmp_path, _records())
    overrides = overrides_path_for(routes)
    _save(overrides, catalog, "c3", "do a backflip", "reject")  # the catalog refuses it: training would stop
    _save(overrides, catalog, "a1", "look at the weather outside", "change", {"skill": "weather",
                                                                              "args": {"location": "outside"}})
    args = build_parser("router").parse_args(["--base", "b", "--train_jsonl", str(routes), "--out",
                                              str(tmp_path / "s"), "--catalog", "config/skills.yaml"])
    splits, _, extra = prepare_data("router", args)
    labels = {r["text"]: (r["skill"], r["args"]) for split in splits.values() for r in split}
    assert labels == {"look at the weather outside": ("weather", {"location": "outside"}),
                      "turn your eyes red": ("eyes_color", {"color": "red"})}
    assert extra["overrides"]["changed"] == 1 and extra["overrides"]["rejected"] == 1
    assert extra["overrides"]["sha256"]  # student.json records which fixes it was trained with


def test_training_errors_keep_the_routes_line_numbers(tmp_path, catalog):
    from distill.overrides import Fixes
    from distill.training.datasets import load_routes

    rows = _records()
    rows.append({"id": "d4", "text": "  ", "skill": "chat", "args": {}})
    routes = _routes_file(tmp_path, rows)
    overrides = overrides_path_for(routes)
    _save(overrides, catalog, "c3", "do a backflip", "reject")
    _save(overrides, catalog, "a1", "look at the weather outside", "reject")  # earlier lines drop out
    with pytest.raises(DistillError, match=r"routes.jsonl:4: text: missing or empty"):
        load_routes(routes, catalog, Fixes(overrides, catalog))
