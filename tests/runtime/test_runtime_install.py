"""The robot's install: the core package alone (`pip install <repo>`, no extras: requests, jsonschema, pyyaml,
jinja2, jsonlines) in a fresh venv imports `distill.runtime` and routes through Ollama's HTTP API, with no MLX,
torch, transformers, openai or llama-cpp-python anywhere in that venv.

The venv is made without pip (`python -m venv --without-pip`) and filled by this interpreter's pip through
`pip --python`, so it holds the core install and nothing else; pip may answer from its cache, and builds the
wheel from a copy of the checkout's sources (never in the checkout, where other runs build too). Ollama is the
stand-in (tools/standin-ollama/ollama) serving the SmolLM2 GGUF from a Modelfile, on this test's interpreter.
The fresh interpreter runs isolated (`-I`: no PYTHONPATH, no current directory on sys.path), so the checkout
can never be imported by mistake.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.runtime import serve_standin_ollama

# What the robot must never need: the training stack, the teacher's client, and llama.cpp (Ollama serves).
ABSENT = ("mlx", "mlx_lm", "torch", "transformers", "openai", "llama_cpp")
CORE = ("requests", "jsonschema", "PyYAML", "Jinja2", "jsonlines")
PROBE = """
import importlib.metadata, importlib.util, json, sys
import distill.runtime
print(json.dumps({
    "runtime": distill.runtime.__file__,
    "absent_found": [m for m in %r if importlib.util.find_spec(m) is not None],
    "loaded": sorted({m.split(".")[0] for m in sys.modules}),
    "distributions": sorted(d.metadata["Name"].lower() for d in importlib.metadata.distributions()),
}))
""" % (ABSENT,)


def clean_env() -> dict[str, str]:
    """This process's environment without what would point a Python at the checkout or at our venv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def copy_sources(dest: Path) -> Path:
    """What `pip install <repo>` packages: the project metadata and the distill package."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "distill", dest / "distill", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def runtime_python(tmp_path_factory) -> Path:
    """The interpreter of a fresh venv holding only the core install of this checkout."""
    root = tmp_path_factory.mktemp("runtime-install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check",
           "--no-input", "--progress-bar", "off", str(copy_sources(root / "src"))]
    done = subprocess.run(pip, cwd=root, env=clean_env(), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"pip install of the core package failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return python


def run_isolated(python: Path, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-I", *args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_core_install_imports_the_runtime_without_the_training_stack(runtime_python, tmp_path):
    done = run_isolated(runtime_python, "-c", PROBE, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout)
    assert Path(probe["runtime"]).is_relative_to(runtime_python.parent.parent), probe["runtime"]  # not the checkout
    assert probe["absent_found"] == [], f"installed in the runtime-only venv: {probe['absent_found']}"
    assert not set(ABSENT) & set(probe["loaded"])
    installed = set(probe["distributions"])
    assert "droidhead-distill" in installed and {name.lower() for name in CORE} <= installed, installed
    assert not {"mlx", "mlx-lm", "torch", "transformers", "openai", "llama-cpp-python", "numpy"} & installed


def test_routes_through_ollamas_http_api_with_the_core_install(runtime_python, tmp_path, smollm2_gguf, catalog):
    """`python -m distill route --ollama URL --model M --student DIR --log off TEXT` prints a valid decision."""
    from distill.prompting import brief_route_prompt
    from distill.student import StudentSpec, copy_catalog

    student = tmp_path / "router_student_mlx"
    student.mkdir()
    # The untrained SmolLM2 behind Ollama reads the catalog from its prompt; the dir carries its own catalog.
    StudentSpec(name="router_student", system_prompt=brief_route_prompt(catalog), base="SmolLM2-135M-Instruct",
                stop=["<|im_end|>"], catalog=copy_catalog(catalog, student), catalog_hash=catalog.hash).save(student)
    workdir = tmp_path / "robot"  # no checkout here: cwd holds nothing importable
    workdir.mkdir()
    with serve_standin_ollama(tmp_path / "ollama", smollm2_gguf) as url:
        # threshold 0: act on whatever the model says, so the decision shows the label and confidence that came
        # back over HTTP (the threshold rule itself is tested elsewhere)
        done = run_isolated(runtime_python, "-m", "distill", "route", "--ollama", url, "--model", "router-student",
                            "--student", str(student), "--log", "off", "--threshold", "0", "--timeout", "300",
                            "turn your eyes red", cwd=workdir)
        serve_log = (tmp_path / "ollama" / "serve.log").read_text()
    assert done.returncode == 0, done.stderr[-3000:] + serve_log[-2000:]
    decision = json.loads(done.stdout)
    assert decision["source"] == "student" and decision["reason"] is None, decision
    assert catalog.check({"skill": decision["skill"], "args": decision["args"]}) is None, decision
    assert 0 < decision["confidence"] <= 1, decision  # from the token log-probabilities Ollama returned
