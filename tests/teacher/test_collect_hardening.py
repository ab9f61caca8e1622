"""Collection against a hostile user and a hostile network (issue 17): every test here failed before its fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

from distill.errors import DistillError
from distill.fileio import JsonlAppender, read_jsonl

SEED = ROOT / "prompts" / "router_seed.txt"


def routes_cmd(config: Path, out: Path, *extra, inputs=(SEED,)) -> list:
    return [sys.executable, "scripts/collect_routes.py", "--config", config, "--input", *inputs, "--out", out,
            "--cache", out.parent / "cache", *extra]


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ---- item 2: --out is validated before it is touched -------------------------------------------------------
@pytest.mark.parametrize("content", ["turn your eyes red\nlook to your left", "look left\n{\"text\": \"torn",
                                     "turn your eyes red\n"])
def test_a_prompt_file_given_as_out_is_refused_untouched(tmp_path, teacher_config, standin_teacher, standin_stats,
                                                         content, cli):
    out = tmp_path / "x.txt"
    out.write_text(content)
    prompts = tmp_path / "in.txt"
    prompts.write_text("stop\n")
    calls = standin_stats(standin_teacher)["chat_completions"]
    line = one_error_line(cli(*routes_cmd(teacher_config, out, inputs=(prompts,))))
    assert f"{out}:1" in line
    assert out.read_text() == content  # before: the last line was cut off, then "invalid JSON" was reported
    assert standin_stats(standin_teacher)["chat_completions"] == calls
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "x.txt"]


def test_the_appender_cuts_only_a_torn_record(tmp_path):
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"text": "a"}\n{"text": "b", "sk')
    assert [r["text"] for r in read_jsonl(torn, torn_tail_ok=True)] == ["a"]  # reading alone changes nothing
    assert torn.read_text().endswith('"sk')
    JsonlAppender(torn).close()
    assert torn.read_text() == '{"text": "a"}\n'

    whole = tmp_path / "whole.jsonl"
    whole.write_text('{"text": "a"}\n{"text": "b"}')  # a whole record that only lacks its newline is kept
    with JsonlAppender(whole) as out:
        out.append({"text": "c"})
    assert [r["text"] for r in read_jsonl(whole)] == ["a", "b", "c"]

    foreign = tmp_path / "prompts.txt"
    foreign.write_text("look left\nturn your eyes red")
    with pytest.raises(DistillError, match="prompts.txt:2: not a JSON record"):
        JsonlAppender(foreign)
    assert foreign.read_text() == "look left\nturn your eyes red"


# ---- item 6: only a format-unsupported reply steps the structured-output ladder down ------------------------
def client_config(url, **overrides):
    from distill.standins.teacher import MODEL_ID
    from distill.teacher.config import TeacherConfig

    return TeacherConfig(**{"base_url": [url], "model": MODEL_ID, "timeout": 5, "retries": 1, "concurrency": 2,
                            **overrides})


def test_a_context_length_400_fails_that_prompt_only_and_keeps_json_schema(catalog):
    from distill.standins.teacher import serve, stats
    from distill.teacher.client import TeacherClient, TeacherError

    schema = catalog.label_schema()
    with serve(max_prompt_chars=20000) as url:
        client = TeacherClient(client_config(url), cache_dir=None, backoff_base=0.01)
        with pytest.raises(TeacherError) as err:
            client.chat([{"role": "user", "content": "look left " * 5000}], schema=schema)
        assert err.value.reason == "http_400" and "maximum context length" in err.value.detail
        reply = client.chat([{"role": "user", "content": "look left"}], schema=schema)
        assert reply.mode == "json_schema" and client.mode(url) == "json_schema"  # before: json_object+schema
        assert client.stats.downgrades == [] and stats(url)["modes"] == {"json_schema": 1}


def test_a_400_that_names_the_format_still_steps_down(catalog):
    from distill.standins.teacher import serve
    from distill.teacher.client import TeacherClient

    with serve(refuse=("json_schema",)) as url:
        client = TeacherClient(client_config(url), cache_dir=None, backoff_base=0.01)
        reply = client.chat([{"role": "user", "content": "look left"}], schema=catalog.label_schema())
        assert reply.mode == "json_object+schema" and len(client.stats.downgrades) == 1


# ---- item 8: an overall deadline per request, however the server sends its bytes -----------------------------
def test_a_server_that_drips_bytes_times_out_at_the_timeout():
    import threading
    import time

    from distill.standins.teacher import serve, stats
    from distill.teacher.client import TeacherClient, TeacherError

    with serve(fault_rate=1.0, faults=("drip",), drip=0.1) as url:  # a byte every 0.1 s: every read is in time
        client = TeacherClient(client_config(url, timeout=1.0, retries=1), cache_dir=None, backoff_base=0.01)
        outcome: list = []

        def ask():
            started = time.monotonic()
            try:
                client.chat([{"role": "user", "content": "look left"}])
            except TeacherError as err:
                outcome.append((err.reason, time.monotonic() - started))

        worker = threading.Thread(target=ask, daemon=True)
        worker.start()
        worker.join(timeout=20)  # before: each attempt read the whole dripped answer (about a minute)
        assert outcome, "still reading the dripped answer after 20 s"
        reason, elapsed = outcome[0]
        assert reason == "timeout" and 2.0 <= elapsed < 8.0, outcome  # two attempts of 1 s each (+ SDK set-up)
        assert stats(url)["faults"] == {"drip": 2}


# ---- item 7: Ctrl-C cancels the requests in flight within a second; a second Ctrl-C exits at once -------------
def interrupt_collect(tmp_path, teacher_config_for, signals: int):
    """A collect whose teacher hangs on half the requests (timeout 120 s, 4 retries), stopped by Ctrl-C once
    records are written and hung requests are in flight. Returns (process, its stderr lines with the seconds
    since the first SIGINT, seconds to its exit, output path, the stand-in)."""
    import os
    import signal
    import subprocess
    import threading
    import time

    from distill.standins.teacher import serve, stats

    context = serve(fault_rate=0.5, faults=("hang",), hang=600, seed=2)
    url = context.__enter__()
    config = teacher_config_for(url, timeout=120, retries=4, concurrency=4)
    out = tmp_path / "routes.jsonl"
    proc = subprocess.Popen([str(a) for a in routes_cmd(config, out)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (
                out.is_file() and len(out.read_text().splitlines()) >= 5 and stats(url)["faults"].get("hang", 0) >= 4):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        said: list[tuple[float, str]] = []  # (seconds after the first SIGINT, stderr line)
        started = time.monotonic()
        reader = threading.Thread(target=lambda: said.extend((time.monotonic() - started, line)
                                                            for line in proc.stderr), daemon=True)
        reader.start()
        for _ in range(signals):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        exited = time.monotonic() - started
        reader.join(timeout=5)
        return proc, said, exited, out, (url, context)
    except BaseException:
        proc.kill()
        context.__exit__(None, None, None)
        raise


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_stops_in_flight_requests_within_a_second_and_keeps_the_records(tmp_path, teacher_config_for,
                                                                              catalog, signals):
    from distill.prompting import normalize_text

    proc, said, exited, out, (url, context) = interrupt_collect(tmp_path, teacher_config_for, signals)
    try:
        stderr = "".join(line for _, line in said)
        # 130 from the handler; a second Ctrl-C that lands while Python is already exiting kills it with SIGINT
        assert proc.returncode in ((130,) if signals == 1 else (130, -2)), stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
        stopped = next(seconds for seconds, line in said if "interrupted" in line)
        print(f"{signals} x Ctrl-C: requests cancelled, 'interrupted' after {stopped:.2f} s, exit {proc.returncode} "
              f"after {exited:.2f} s")
        # Before: nothing for 30 s (the hung requests and their retries), then killed. The rest of the exit is
        # Python tearing down its modules: 0.8-1.4 s at a load of 12 on 2 cores.
        assert stopped < 1.0 and exited < 5.0
        rows = [json.loads(line) for line in out.read_text().splitlines()]  # every line whole
        assert len(rows) >= 5 and len({normalize_text(r["text"]) for r in rows}) == len(rows)
        assert all(catalog.check({"skill": r["skill"], "args": r["args"]}) is None for r in rows)
    finally:
        context.__exit__(None, None, None)


# ---- item 9: one collect at a time per --out ------------------------------------------------------------------
def test_a_second_collect_on_the_same_out_is_refused_and_nothing_is_duplicated(tmp_path, teacher_config_for,
                                                                                catalog, cli):
    import os
    import subprocess
    import time

    from distill.prompting import normalize_text
    from distill.standins.teacher import serve, stats

    with serve(latency=0.3) as url:  # 60 prompts, 2 at a time: 9 s, longer than the second run takes to start
        config = teacher_config_for(url, concurrency=2)
        out = tmp_path / "routes.jsonl"
        first = subprocess.Popen([str(a) for a in routes_cmd(config, out, "--limit", "60")], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.is_file() and out.read_text().count("\n") >= 3):
            time.sleep(0.05)
        second = cli(*routes_cmd(config, out, "--limit", "60"))
        line = one_error_line(second)  # before: it ran too, asking the teacher again and appending duplicates
        assert first.poll() is None, "the first run ended before the second started: the test proves nothing"
        assert str(out) in line and "--out" in line and f"pid {first.pid}" in line
        assert first.wait(timeout=120) == 0, first.stderr.read()
        rows = [json.loads(r) for r in out.read_text().splitlines()]
        assert len(rows) == 60 and len({normalize_text(r["text"]) for r in rows}) == 60  # before: duplicates
        assert stats(url)["chat_completions"] == 60
        assert not (tmp_path / ".routes.jsonl.lock").exists()


# ---- item 10: too many rejects is a failure ---------------------------------------------------------------------
def test_collect_fails_above_the_rejected_share_and_keeps_what_was_labeled(tmp_path, teacher_config_for, cli):
    from distill.standins.teacher import serve

    with serve(fault_rate=0.85, faults=("unknown_skill",), seed=4) as url:
        config = teacher_config_for(url)
        out = tmp_path / "routes.jsonl"
        result = cli(*routes_cmd(config, out, "--limit", "40"))
        line = one_error_line(result)  # before: exit 0
        assert f"{out}: --max-rejected:" in line and "were rejected" in line
        assert "routes: " in result.stdout  # the summary still says what happened
        labeled = out.read_text().count("\n")
        assert 0 < labeled < 40 and f"the {labeled} labeled are kept" in line

        lenient = cli(*routes_cmd(config, tmp_path / "other.jsonl", "--limit", "40", "--max-rejected", "1"))
        assert lenient.returncode == 0, lenient.stderr

    assert "--max-rejected" in one_error_line(cli(*routes_cmd(config, out, "--max-rejected", "1.5")))


# ---- item 11: prompt lines are split on \n only, cleaned of control characters, and capped --------------------
HOSTILE_LINES = ["\x1b[31mturn your eyes red\x1b[0m",  # ANSI colours from a terminal paste
                 "look\u2028to your left",  # a Unicode line separator inside one prompt
                 "what time\x85is it",  # NEL (U+0085)
                 "stop\x00 right now\x07",  # NUL and BEL
                 "set a timer for 5 minutes\r",  # a CRLF file
                 "take a " + "very " * 30000 + "nice photo"]  # 150 KB


def test_prompts_are_split_on_newline_only_cleaned_and_capped(tmp_path, teacher_config_for, cli):
    from distill.standins.teacher import serve, stats

    prompts = tmp_path / "in.txt"
    prompts.write_text("\n".join(HOSTILE_LINES) + "\n", newline="")
    with serve() as url:
        config = teacher_config_for(url)
        out = tmp_path / "routes.jsonl"
        result = cli(*routes_cmd(config, out, inputs=(prompts,)))
        assert result.returncode == 0, result.stderr
        assert stats(url)["chat_completions"] == 5  # the 150 KB line never went to the teacher
    texts = sorted(json.loads(line)["text"] for line in out.read_text().splitlines())
    assert texts == ["look to your left", "set a timer for 5 minutes", "stop right now", "turn your eyes red",
                     "what time is it"]
    rejects = [json.loads(line) for line in (tmp_path / "routes.rejected.jsonl").read_text().splitlines()]
    assert [(r["reason"], r["detail"]) for r in rejects] == [("too_long", "150017 characters, more than 1000")]


def test_expand_reads_prompt_lines_the_same_way(tmp_path):
    from distill.teacher.expand import read_grouped_prompts

    seeds = tmp_path / "seed.txt"
    seeds.write_text("# skill: look\n" + "\n".join(HOSTILE_LINES[1:3]) + "\r\n", newline="")
    assert read_grouped_prompts(seeds) == {"look": ["look to your left", "what time is it"]}  # before: 4 prompts


# ---- item 14: credentials written into base_url never leave the config -----------------------------------------
def test_credentials_in_base_url_are_redacted_everywhere(tmp_path, teacher_config_for, cli):
    from distill.standins.teacher import serve

    secret = "s3cret-pw"
    with serve(refuse=("json_schema",)) as url:  # a downgrade note names the endpoint too
        live = url.replace("http://", f"http://robot:{secret}@")
        dead = f"http://robot:{secret}@127.0.0.1:9/v1?api_key={secret}"
        config = teacher_config_for([live, dead], retries=3)
        out = tmp_path / "routes.jsonl"
        result = cli(*routes_cmd(config, out, "--limit", "20"))
        assert result.returncode == 0, result.stderr
        assert "robot" not in result.stderr and "***@127.0.0.1" in result.stderr  # the downgrade note
        unreachable = cli(*routes_cmd(teacher_config_for([dead]), tmp_path / "other.jsonl"))
        assert "***@127.0.0.1:9/v1?api_key=***" in one_error_line(unreachable)
        health = cli(sys.executable, "-m", "distill", "teacher-health", "--config", config)
        assert health.returncode == 0 and "***@" in health.stdout, health.stderr
    written = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert {"routes.jsonl", "routes.audit.jsonl", "cache.sqlite"} <= set(written)
    assert [name for name, data in written.items() if secret.encode() in data] == []  # before: audit, cache
    for output in (result, unreachable, health):
        assert secret not in output.stdout + output.stderr
