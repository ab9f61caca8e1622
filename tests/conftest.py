"""Shared fixtures. Each stage keeps its own fixtures in tests/fixtures_<stage>.py (loaded here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

pytest_plugins = sorted(f"tests.{p.stem}" for p in (ROOT / "tests").glob("fixtures_*.py"))

BASE_DIR = ROOT / "models" / "base-smollm2-135m"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def catalog():
    from distill.skills import load_catalog

    return load_catalog(ROOT / "config" / "skills.yaml")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from distill.offline_base import smollm2_gguf

    return smollm2_gguf()


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The offline base built by `make base`; built here when missing so a bare `pytest` works too."""
    from distill.offline_base import convert, is_current, smollm2_gguf
    from distill.blas import default_dtype

    if not is_current(BASE_DIR, smollm2_gguf(), default_dtype()):
        convert(smollm2_gguf(), BASE_DIR)
    return BASE_DIR


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Terminate a server a test started; kill it if it does not go within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_cli(*args: str | Path, cwd: Path = ROOT, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command as a user would (own process, OpenBLAS preloaded), capturing text output."""
    from distill.blas import env_with_openblas

    full_env = env_with_openblas({**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([str(a) for a in args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def cli():
    return run_cli
