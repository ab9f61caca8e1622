"""The review page's fixtures: a demo-like project, the app served on a loopback port, headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.review import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, LiveReview, build_review_project


@pytest.fixture
def review_project(tmp_path: Path, catalog) -> Path:
    return build_review_project(tmp_path / "project", catalog)


@pytest.fixture
def live(review_project: Path):
    server = LiveReview(review_project)
    yield server
    server.close()


@pytest.fixture
def clean_live(tmp_path: Path, catalog):
    """A project without the corrupt line (training reads routes strictly and would stop at it)."""
    root = build_review_project(tmp_path / "clean", catalog, corrupt_line=False)
    server = LiveReview(root)
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's headless Chromium at 1280x800 with a fresh profile; the tests' one window (tabs open in it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_AVOID_STATS", "true")  # both paths are given, so Selenium Manager never runs anyway
    # `make test` preloads OpenBLAS for MLX (LD_PRELOAD); Chromium's renderer does not start with it preloaded.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, env=env), options=options)
    # The viewport itself is 1280x800 (a window of that size has less room for the page).
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    yield driver
    driver.quit()
