"""The decision log after a full disk (issue 17 item 4): the torn line is repaired on the next write, so the
first record written after space returns is kept. A file-size limit (RLIMIT_FSIZE) makes the kernel refuse
the write part-way, as a full disk does; it runs in its own process so the limit touches nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.support import ROOT

FULL_DISK = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    from distill.runtime.decisions import DecisionLog

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
    path = Path(sys.argv[1])
    log = DecisionLog(path)
    log.append({"text": "first", "skill": "stop"})
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 25, hard))  # "disk" full mid-record
    log.append({"text": "second " * 20, "skill": "chat"})
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    log.append({"text": "third", "skill": "look"})
    log.close()
    print(log.failures)
""")


def run_full_disk(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FULL_DISK, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_the_first_record_after_a_full_disk_is_kept(tmp_path):
    path = tmp_path / "decisions.jsonl"
    result = run_full_disk(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1" and "not writable" in result.stderr  # one warning, routing went on
    lines = path.read_text().split("\n")
    assert lines[-1] == ""  # ends with a newline
    records = [json.loads(line) for line in lines[:-1]]  # every line parses: the torn one was cut
    assert [r["text"] for r in records] == ["first", "third"]


def test_a_torn_line_left_by_an_earlier_process_is_repaired_on_open(tmp_path):
    from distill.runtime.decisions import DecisionLog

    path = tmp_path / "decisions.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b", "sk')
    log = DecisionLog(path)
    log.append({"text": "c"})
    log.close()
    assert [json.loads(line)["text"] for line in path.read_text().splitlines()] == ["a", "c"]

    path.write_text('{"text": "a"}')  # a whole record that only lacks its newline is kept
    log = DecisionLog(path)
    log.append({"text": "c"})
    log.close()
    assert [json.loads(line)["text"] for line in path.read_text().splitlines()] == ["a", "c"]
