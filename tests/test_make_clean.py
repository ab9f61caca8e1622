"""`make clean` (issue 17 item 5): removes what a re-run makes again, keeps what cannot be regenerated (teacher
labels, robot logs, overrides, the deployed record, the teacher cache) and says what it removed."""

from __future__ import annotations

import subprocess

from tests.support import ROOT

KEPT = ["data/routes.jsonl", "data/style.jsonl", "data/overrides.jsonl", "data/harvest/robot/decisions.jsonl",
        "models/router_student_mlx.deployed/student.json", "models/base-smollm2-135m/config.json",
        ".cache/teacher/cache.sqlite", "prompts/router_seed.txt", "prompts/harvested.txt"]
REMOVED = ["models/router_student_mlx/adapters.safetensors", "models/style_student_mlx.partial/progress.json",
           "models/router_merged/config.json", "gguf/router-student.gguf", "reports/compare.json",
           "ollama/RouterStudent.Modelfile"]


def make_clean(workdir) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(workdir), "-f", str(ROOT / "Makefile"), "clean"],
                          capture_output=True, text=True, timeout=60)


def test_clean_keeps_what_cannot_be_regenerated_and_says_what_it_removes(tmp_path):
    for name in KEPT + REMOVED:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
    result = make_clean(tmp_path)
    assert result.returncode == 0, result.stderr
    assert [name for name in KEPT if not (tmp_path / name).is_file()] == []
    assert [name for name in REMOVED if (tmp_path / name).exists()] == []
    said = result.stdout.split("\n")[0]
    for top in ("models/router_student_mlx", "models/style_student_mlx.partial", "models/router_merged", "gguf",
                "reports", "ollama/RouterStudent.Modelfile"):
        assert top in said.split(), said
    assert "kept: data/" in result.stdout

    again = make_clean(tmp_path)
    assert again.returncode == 0 and again.stdout.startswith("nothing to remove")
