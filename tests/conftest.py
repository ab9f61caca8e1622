"""Fixtures every area uses: the catalog, the offline base, a CLI runner, the stand-in teacher and the shared
trained router student. Each area's own fixtures are in its directory's conftest.py (tests/<area>/conftest.py);
helpers are plain functions in tests/support/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support import ROOT, run_cli
from tests.support.data import collected_routes, router_routes, trained_router  # noqa: F401 (shared session fixtures)
from tests.support.docker import docker_engine, llamacpp_images  # noqa: F401 (the real engine, for marker docker)
from tests.support.teacher import standin_stats, standin_teacher, teacher_config, teacher_config_for  # noqa: F401

sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def catalog():
    from distill.skills import load_catalog

    return load_catalog(ROOT / "config" / "skills.yaml")


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from distill.bases.smollm2 import smollm2_gguf

    return smollm2_gguf()


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The offline base in the user's cache (never inside the checkout), built once when missing or stale."""
    from distill.bases.smollm2 import cached_base

    return cached_base()


@pytest.fixture(scope="session")
def cli():
    return run_cli
