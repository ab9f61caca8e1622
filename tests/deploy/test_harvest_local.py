"""ansible/harvest.yml over NET=droidhead-local's local connection (seconds, no sshd): the decision log named in
the inventory's group_vars arrives under harvest_dest/<host>/, and `python -m distill harvest` reads it there.

tests/pipeline/test_loop.py harvests the same way after an hour of training; this catches an inventory whose
droidhead_decision_log the play never sees (it then says "no decision log" and exits 0) in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.support import ROOT
from tests.support.deploy import harvest_locally, local_inventory


def _decision(text: str, source: str) -> str:
    return json.dumps({"text": text, "skill": "chat", "source": source, "confidence": 0.4}) + "\n"


def test_harvest_over_the_local_inventory_fetches_the_log_and_its_rotated_copies(tmp_path):
    robot = tmp_path / "robot" / "var"
    robot.mkdir(parents=True)
    (robot / "decisions.jsonl").write_text(_decision("how full is your battery", "fallback"))
    (robot / "decisions.jsonl.1").write_text(_decision("are you charged", "fallback"))
    (robot / "unrelated.log").write_text("no\n")
    dest = tmp_path / "harvest"

    result = harvest_locally(robot / "decisions.jsonl", dest, tmp_path / "ansible")

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert sorted(p.name for p in (dest / "droidhead").iterdir()) == ["decisions.jsonl", "decisions.jsonl.1"]
    out = tmp_path / "harvested.txt"
    labeled = tmp_path / "routes.jsonl"
    labeled.write_text("")
    made = subprocess.run([sys.executable, "-m", "distill", "harvest", "--logs", str(dest), "--labeled", str(labeled),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert {"how full is your battery", "are you charged"} <= set(out.read_text().splitlines())


def test_the_local_inventory_is_the_shipped_one_with_the_values_in_its_group_vars(tmp_path):
    inventory = local_inventory(tmp_path, droidhead_decision_log="/tmp/x/decisions.jsonl")
    shipped = ROOT / "ansible" / "inventories" / "droidhead-local"
    assert (inventory / "hosts.yml").read_text() == (shipped / "hosts.yml").read_text()
    values = yaml.safe_load((inventory / "group_vars" / "droidhead.yml").read_text())
    assert values == {**yaml.safe_load((shipped / "group_vars" / "droidhead.yml").read_text()),
                      "droidhead_decision_log": "/tmp/x/decisions.jsonl"}
