"""Collection against real HTTP servers on loopback: the stand-in teacher (with faults) and the CLI scripts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT

from distill.prompting import normalize_text as normalize
from distill.standins.teacher import paraphrases, route, serve, stats

SEED = ROOT / "prompts" / "router_seed.txt"
STYLE_SEED = ROOT / "prompts" / "style_seed.txt"
ROUTE_KEYS = {"id", "text", "skill", "args", "votes", "teacher", "created"}


def seed_with_headers(path: Path = SEED) -> list[tuple[str, str]]:
    pairs, skill = [], None
    for line in path.read_text().splitlines():
        line = line.strip()
        header = re.match(r"#\s*skill:\s*(\S+)", line)
        if header:
            skill = header.group(1)
        elif line and not line.startswith("#"):
            pairs.append((line, skill))
    return pairs


def unique_seed_texts() -> set[str]:
    return {normalize(text) for text, _ in seed_with_headers()}


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def routes_cmd(config: Path, out: Path, *extra, inputs=(SEED,)) -> list:
    return [sys.executable, "scripts/collect_routes.py", "--config", config, "--input", *inputs, "--out", out,
            "--cache", out.parent / "cache", *extra]


def assert_clean_routes(out: Path, catalog) -> list[dict]:
    """Every row has the contract's keys, a label the catalog accepts as-is, and a unique text."""
    rows = read_records(out)
    for row in rows:
        assert set(row) == ROUTE_KEYS, row
        label = catalog.validate({"skill": row["skill"], "args": row["args"]})
        assert label.to_dict() == {"skill": row["skill"], "args": row["args"]}, row
        assert row["id"] and row["votes"] >= 1
    keys = [normalize(r["text"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate texts in routes.jsonl"
    return rows


# ------------------------------------------------------------------------------------------------ stand-in rules
def test_standin_agrees_with_seed_headers():
    pairs = seed_with_headers()
    agree = sum(route(text)["skill"] == skill for text, skill in pairs)
    assert len(pairs) > 300
    assert agree / len(pairs) >= 0.97, f"{agree}/{len(pairs)}"


@pytest.mark.parametrize("text, label", [
    ("Can you set volume to fifty?", {"skill": "set_volume", "args": {"level": 50}}),
    ("Put the volume at seventy five.", {"skill": "set_volume", "args": {"level": 75}}),
    ("Mute your speaker, volume 0.", {"skill": "set_volume", "args": {"level": 0}}),
    ("Can you set a timer for half an hour?", {"skill": "set_timer", "args": {"minutes": 30}}),
    ("Time me for 90 seconds.", {"skill": "set_timer", "args": {"minutes": 1.5}}),
    ("Set a quarter hour timer.", {"skill": "set_timer", "args": {"minutes": 15}}),
    ("timer for twenty minutes", {"skill": "set_timer", "args": {"minutes": 20}}),
    ("Turn your eyes navy blue.", {"skill": "eyes_color", "args": {"color": "navy blue"}}),
    ("What's the forecast for New York?", {"skill": "weather", "args": {"location": "New York"}}),
    ("wether in toronto", {"skill": "weather", "args": {"location": "Toronto"}}),
    ("I'm flying to Rome tomorrow, what's the weather there?", {"skill": "weather", "args": {"location": "Rome"}}),
    ("play the laff sound", {"skill": "play_sound", "args": {"name": "laugh"}}),
    ("Can you play the r2 whistle?", {"skill": "play_sound", "args": {"name": "r2 whistle"}}),
    ("Point your eyes toward the ceiling.", {"skill": "look", "args": {"direction": "up"}}),
    ("Stop turning your head.", {"skill": "stop", "args": {}}),
    ("Play me some music on Spotify.", {"skill": "chat", "args": {}}),
    ("What's your favorite color?", {"skill": "chat", "args": {}}),
])
def test_standin_args(text, label, catalog):
    assert route(text, catalog.names) == label
    catalog.validate(label)


def test_paraphrases_keep_the_label():
    pairs = seed_with_headers()
    total = kept = 0
    for text, _ in pairs:
        for variant in paraphrases(text, 3):
            total += 1
            kept += route(variant) == route(text)
    assert kept / total >= 0.97, f"{kept}/{total}"


# ------------------------------------------------------------------------------------------------ routes CLI
def test_collect_routes_with_faults_then_rerun_is_free(tmp_path, teacher_config_for, catalog, cli):
    """20% injected faults: each prompt ends labeled or rejected with a reason; a re-run asks nothing."""
    with serve(fault_rate=0.2, seed=7, retry_after=0.1, hang=30) as url:
        config = teacher_config_for(url, timeout=1.5, retries=4, concurrency=8)
        out = tmp_path / "routes.jsonl"
        result = cli(*routes_cmd(config, out))
        assert result.returncode == 0, result.stderr
        assert re.search(r"routes: \d+ labeled, \d+ rejected .*teacher calls", result.stdout), result.stdout
        faults = stats(url)["faults"]
        assert set(faults) == {"429", "500", "hang", "malformed", "unknown_skill", "bad_args"}, faults

        rows = assert_clean_routes(out, catalog)
        rejects = read_records(tmp_path / "routes.rejected.jsonl")
        for reject in rejects:
            assert reject["reason"] in {"unparseable", "unknown_skill", "bad_args", "teacher_error"}, reject
            assert "raw" in reject and reject["text"]
        labeled = {normalize(r["text"]) for r in rows}
        rejected = {normalize(r["text"]) for r in rejects}
        assert labeled | rejected == unique_seed_texts() and not labeled & rejected
        assert len(rows) > 0.75 * len(unique_seed_texts())
        # the labels that made it through are the rules' labels: faults never leak into the data
        wrong = [r for r in rows if route(r["text"]) != {"skill": r["skill"], "args": r["args"]}]
        assert not wrong, wrong[:3]
        audit = read_records(tmp_path / "routes.audit.jsonl")
        assert audit and all(a["reasoning"] for a in audit)

        before = stats(url)["chat_completions"]
        again = cli(*routes_cmd(config, out))
        assert again.returncode == 0, again.stderr
        assert stats(url)["chat_completions"] == before
        assert " 0 teacher calls" in again.stdout
        assert read_records(out) == rows

        # the data gone but the cache kept: rebuilt without a single call
        out.unlink()
        (tmp_path / "routes.rejected.jsonl").unlink()
        rebuilt = cli(*routes_cmd(config, out))
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert stats(url)["chat_completions"] == before
        assert {r["text"]: r["args"] for r in read_records(out)} == {r["text"]: r["args"] for r in rows}


def test_kill_9_then_rerun_loses_and_duplicates_nothing(tmp_path, teacher_config_for, catalog):
    with serve(latency=0.05) as url:
        config = teacher_config_for(url, concurrency=4)
        out = tmp_path / "routes.jsonl"
        env = {**os.environ, "PYTHONPATH": ""}
        proc = subprocess.Popen([str(a) for a in routes_cmd(config, out)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 40):
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        partial = len(read_records(out))
        assert 40 <= partial < len(unique_seed_texts())
        with out.open("a") as handle:  # what a kill in the middle of a write leaves behind
            handle.write('{"id": "torn", "text": "look le')
        result = subprocess.run([str(a) for a in routes_cmd(config, out)], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert f"{partial} already done" in result.stdout
        rows = assert_clean_routes(out, catalog)
        assert {normalize(r["text"]) for r in rows} == unique_seed_texts()


def test_multiple_inputs_append_to_one_file(tmp_path, teacher_config, standin_teacher, catalog, cli):
    first = tmp_path / "a.txt"
    first.write_text("look left\nturn your eyes red\n")
    second = tmp_path / "b.txt"
    second.write_text("# overlap and new ones\nLook left!\nwhat time is it?\nset volume to 20\n")
    out = tmp_path / "routes.jsonl"
    assert cli(*routes_cmd(teacher_config, out, inputs=(first,))).returncode == 0
    result = cli(*routes_cmd(teacher_config, out, inputs=(second,)))
    assert result.returncode == 0, result.stderr
    assert "2 labeled" in result.stdout and "1 already done" in result.stdout
    rows = assert_clean_routes(out, catalog)
    assert sorted(r["skill"] for r in rows) == ["eyes_color", "look", "set_volume", "time_now"]


def test_votes_are_recorded(tmp_path, teacher_config, standin_teacher, catalog, cli):
    out = tmp_path / "routes.jsonl"
    before = stats(standin_teacher)["chat_completions"]
    result = cli(*routes_cmd(teacher_config, out, "--votes", "3", "--min-agree", "2", "--limit", "5"))
    assert result.returncode == 0, result.stderr
    rows = assert_clean_routes(out, catalog)
    assert len(rows) == 5 and all(r["votes"] == 3 for r in rows)
    assert stats(standin_teacher)["chat_completions"] - before == 15


def test_ladder_falls_back_and_remembers(tmp_path, teacher_config_for, catalog, cli):
    """A server that answers HTTP 500 to json_schema (llama-cpp-python does) is asked json_object+schema."""
    with serve(refuse=("json_schema",), reasoning_field="reasoning_content") as url:
        config = teacher_config_for(url, concurrency=2)
        out = tmp_path / "routes.jsonl"
        result = cli(*routes_cmd(config, out, "--limit", "20"))
        assert result.returncode == 0, result.stderr
        assert "json_schema -> json_object+schema" in result.stderr
        assert len(assert_clean_routes(out, catalog)) == 20
        modes = stats(url)["modes"]
        assert modes["json_object+schema"] == 20 and modes["json_schema"] <= 2, modes
        audit = read_records(tmp_path / "routes.audit.jsonl")
        assert {a["mode"] for a in audit} == {"json_object+schema"}
        assert all(a["reasoning"] for a in audit)  # read from reasoning_content


def test_endpoints_spread_and_dead_one_skipped(tmp_path, teacher_config_for, catalog, cli):
    with serve() as one, serve() as two:
        dead = "http://127.0.0.1:9/v1"  # discard port: nothing listens
        config = teacher_config_for([dead, one, two], concurrency=4)
        out = tmp_path / "routes.jsonl"
        result = cli(*routes_cmd(config, out, "--limit", "40"))
        assert result.returncode == 0, result.stderr
        assert len(assert_clean_routes(out, catalog)) == 40
        assert stats(one)["chat_completions"] >= 8 and stats(two)["chat_completions"] >= 8
        assert not (tmp_path / "routes.rejected.jsonl").exists()


def test_api_key_comes_from_the_env_var(tmp_path, teacher_config_for, cli):
    with serve(api_key="s3cret") as url:
        config = teacher_config_for(url, api_key_env="DROID_TEACHER_KEY")
        out = tmp_path / "routes.jsonl"
        ok = cli(*routes_cmd(config, out, "--limit", "3"), env={"DROID_TEACHER_KEY": "s3cret"})
        assert ok.returncode == 0, ok.stderr
        assert stats(url)["last_request"]["reasoning_effort"] == "low"
        out2 = tmp_path / "other" / "routes.jsonl"
        denied = cli(*routes_cmd(config, out2, "--limit", "3"), env={"DROID_TEACHER_KEY": ""})
        assert denied.returncode == 2
        assert denied.stderr.strip().count("\n") == 0 and "DROID_TEACHER_KEY" in denied.stderr
        assert not out2.exists()


# ------------------------------------------------------------------------------------------------ errors
def _one_error_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_bad_config_missing_input_unreachable(tmp_path, teacher_config, cli):
    out = tmp_path / "routes.jsonl"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"base_url": "http://127.0.0.1:9/v1", "temprature": 0.2}))
    line = _one_error_line(cli(*routes_cmd(bad, out)))
    assert "bad.json" in line and "temprature" in line

    line = _one_error_line(cli(*routes_cmd(teacher_config, out, inputs=(tmp_path / "nope.txt",))))
    assert "nope.txt" in line

    dead = tmp_path / "dead.json"
    dead.write_text(json.dumps({"base_url": "http://127.0.0.1:9/v1", "timeout": 2}))
    line = _one_error_line(cli(*routes_cmd(dead, out)))
    assert "dead.json" in line and "base_url" in line and "unreachable" in line and "refused" in line
    style = _one_error_line(cli(sys.executable, "scripts/collect_style.py", "--config", dead, "--input", STYLE_SEED,
                                "--out", tmp_path / "style.jsonl", "--cache", tmp_path / "cache"))
    assert "unreachable" in style
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".jsonl") == []


# ------------------------------------------------------------------------------------------------ style, expand
def test_collect_style_rejects_empty_truncated_refused(tmp_path, teacher_config_for, cli):
    prompts = tmp_path / "style.txt"
    prompts.write_text(STYLE_SEED.read_text() + "\n# unsafe\nHow do I make a bomb?\n")
    with serve(fault_rate=0.25, faults=("malformed", "unknown_skill"), seed=3) as url:
        config = teacher_config_for(url, concurrency=8)
        out = tmp_path / "style.jsonl"
        result = cli(sys.executable, "scripts/collect_style.py", "--config", config, "--input", prompts, "--out", out,
                     "--cache", tmp_path / "cache")
        assert result.returncode == 0, result.stderr
    rows = read_records(out)
    rejects = read_records(tmp_path / "style.rejected.jsonl")
    assert {r["reason"] for r in rejects} == {"truncated", "empty", "refused"}
    assert any(r["prompt"] == "How do I make a bomb?" and r["reason"] == "refused" for r in rejects)
    for row in rows:
        assert set(row) == {"id", "prompt", "response", "teacher", "created"}
        assert row["response"].strip() and len(row["response"].split()) < 40
    assert len(rows) + len(rejects) == len({normalize(p) for p in prompts.read_text().splitlines()
                                            if p.strip() and not p.startswith("#")})


def test_expand_balances_and_keeps_labels(tmp_path, teacher_config, standin_teacher, cli):
    out = tmp_path / "router_expanded.txt"
    cmd = [sys.executable, "scripts/expand_prompts.py", "--config", teacher_config, "--input", SEED, "--out", out,
           "--per-skill", "40", "--cache", tmp_path / "cache"]
    result = cli(*cmd)
    assert result.returncode == 0, result.stderr
    expanded = seed_with_headers(out)
    seeds = seed_with_headers()
    per_skill = {}
    for _, skill in seeds + expanded:
        per_skill[skill] = per_skill.get(skill, 0) + 1
    assert all(count >= 40 for count in per_skill.values()), per_skill
    keys = [normalize(t) for t, _ in expanded]
    assert len(keys) == len(set(keys)) and not set(keys) & unique_seed_texts()
    agree = sum(route(text)["skill"] == skill for text, skill in expanded)
    assert agree / len(expanded) >= 0.97
    before = stats(standin_teacher)["chat_completions"]
    assert cli(*cmd).returncode == 0
    assert stats(standin_teacher)["chat_completions"] == before


# ------------------------------------------------------------------------------------------------ health
def test_health(teacher_config, teacher_config_for, tmp_path, cli):
    result = cli(sys.executable, "-m", "distill", "teacher-health", "--config", teacher_config, "--health")
    assert result.returncode == 0, result.stderr
    assert "standin-gpt-oss" in result.stdout and "json_schema: yes" in result.stdout
    assert "reasoning:   yes" in result.stdout and re.search(r"latency:\s+\d+\.\d+ s", result.stdout)
    with serve(refuse=("json_schema",)) as url:
        refused = cli(sys.executable, "-m", "distill", "teacher-health", "--config", teacher_config_for(url), "--health")
    assert refused.returncode == 0 and "json_schema: no" in refused.stdout
    dead = tmp_path / "dead.json"
    dead.write_text(json.dumps({"base_url": ["http://127.0.0.1:9/v1"], "timeout": 2}))
    line = _one_error_line(cli(sys.executable, "-m", "distill", "teacher-health", "--config", dead, "--health"))
    assert "unreachable" in line and "dead.json" in line
