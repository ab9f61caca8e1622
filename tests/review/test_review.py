"""`make review` in a real browser: Debian's Chromium driven by Selenium, against the app on a loopback port.

The browser tests skip, with the reason printed, when chromium / chromedriver / selenium are missing
(tools/system_deps.sh installs the first two, the test extra the third). Screenshots of each view at 1280x800 go
to reports/review/ (REVIEW_SCREENSHOTS moves them).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from distill.overrides import read_overrides
from tests.support import ROOT
from tests.support.review import (HARVESTED, LABELS, REJECTED, SPLIT, STUDENT_ERRORS, browser_missing,
                                  build_review_project)

pytest.importorskip("flask", reason="flask is not installed (pip install -e '.[review]')")
SHOTS = Path(os.environ.get("REVIEW_SCREENSHOTS", ROOT / "reports" / "review"))
needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


# 30 s: a passing wait returns at once; 10 s timed out once (refused save's message) with four processes on
# the 2 cores (a CI run and the training tests beside it).
def _wait(driver, condition, timeout: float = 30.0):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # an element read while the page replaces it is stale: ask again (the page's own updates are asynchronous)
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def _open(driver, url: str):
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")
    return driver.find_element(By.TAG_NAME, "main")


def _rows(driver) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#records tbody tr[data-key]")


def _screenshot(driver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def _js_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _labelled(text: str) -> tuple[str, dict]:
    return next((s, a) for t, s, a in LABELS if t == text)


# ---- the browser tests ---------------------------------------------------------------------------------

@needs_browser
def test_labels_page_loads_with_demo_like_data(browser, live):
    from selenium.webdriver.common.by import By

    main = _open(browser, live.url + "/")
    assert browser.current_url.endswith("/labels")
    rows = _rows(browser)
    assert len(rows) == len(LABELS) + 2  # every record, the corrupt line and the record the catalog refuses
    flagged = browser.find_elements(By.CSS_SELECTOR, "#records tr.flagged")
    assert len(flagged) == 2
    assert any("not JSON" in row.text for row in flagged), "the corrupt line shows as a flagged row"
    assert any("catalog refuses" in row.text for row in flagged)
    assert main.find_element(By.CSS_SELECTOR, "svg.chart")  # records per skill
    assert "fewer than 20 records" in main.text  # every skill of this small set is flagged
    assert browser.find_element(By.ID, "show-split").text == "votes split"
    assert _js_errors(browser) == []
    _screenshot(browser, "labels")


@needs_browser
def test_filters_show_exactly_the_matching_records(browser, live):
    from selenium.webdriver.common.by import By

    _open(browser, live.url + "/labels")
    browser.find_element(By.CSS_SELECTOR, 'svg.chart a[href*="skill=look"]').click()  # the bar chart's label
    _wait(browser, lambda d: "skill=look" in d.current_url)
    want = sorted(t for t, s, _ in LABELS if s == "look")
    rows = _rows(browser)
    assert sorted(r.find_element(By.CSS_SELECTOR, "td.text").text for r in rows) == want
    assert {r.find_element(By.CSS_SELECTOR, "td.label .skill").text for r in rows} == {"look"}
    assert browser.find_element(By.ID, "total").text == str(len(want))

    for show, expected in (("split", set(SPLIT)), ("rejected", {t for t, *_ in REJECTED}),
                           ("disagree", set(STUDENT_ERRORS)), ("harvested", {HARVESTED})):
        _open(browser, f"{live.url}/labels?show={show}")
        assert {r.find_element(By.CSS_SELECTOR, "td.text").text for r in _rows(browser)} == expected, show
    _open(browser, f"{live.url}/labels?show=rejected")
    assert "unknown_skill" in browser.find_element(By.ID, "records").text
    _open(browser, f"{live.url}/labels?q=tokyo")
    assert [r.find_element(By.CSS_SELECTOR, "td.text").text for r in _rows(browser)] == ["will it rain in Tokyo today?"]


@needs_browser
def test_fixing_a_label_writes_one_override_and_training_uses_it(browser, clean_live, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    live = clean_live
    text = "look at the weather outside"
    _open(browser, f"{live.url}/labels?q=weather+outside")
    _rows(browser)[0].find_element(By.CSS_SELECTOR, "td.text a").click()
    _wait(browser, lambda d: "/record/" in d.current_url)
    assert browser.find_element(By.ID, "text").text == text
    Select(browser.find_element(By.ID, "skill")).select_by_value("weather")
    field = browser.find_element(By.ID, "arg.weather.location")
    assert field.is_displayed()  # the weather fieldset shows once the skill is chosen (plain JS)
    field.clear()
    field.send_keys("outside")
    browser.find_element(By.ID, "save").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".flash"))
    assert "skill=" not in browser.current_url  # back to the same filter (the form's skill is the new label's)
    assert "changed" in _rows(browser)[0].find_element(By.CSS_SELECTOR, "td.notes").text
    lines = live.override_lines()
    assert len(lines) == 1
    assert lines[0]["action"] == "change" and lines[0]["text"] == text
    assert lines[0]["before"] == {"skill": "look", "args": {"direction": "left"}}
    assert lines[0]["after"] == {"skill": "weather", "args": {"location": "outside"}}
    _screenshot(browser, "fix")

    # Keyboard review: the record the catalog refuses is rejected with `r`, a good one accepted with `a` (list page).
    _open(browser, f"{live.url}/labels?q=backflip")
    browser.find_element(By.TAG_NAME, "body").send_keys("r")
    _wait(browser, lambda d: len(live.override_lines()) == 2)
    _open(browser, f"{live.url}/labels?q=volume")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("j")  # the second row: "mute yourself" (file order)
    body.send_keys("a")
    _wait(browser, lambda d: len(live.override_lines()) == 3)
    actions = [(line["text"], line["action"]) for line in live.override_lines()]
    assert actions[1:] == [("do a backflip", "reject"), ("mute yourself", "accept")]

    # The training code (what `make train-router` runs first) reads the fixed label.
    from distill.training.train import build_parser, prepare_data

    args = build_parser("router").parse_args(["--base", "unused", "--train_jsonl", str(live.root / "data/routes.jsonl"),
                                              "--out", str(tmp_path / "student"),
                                              "--catalog", str(ROOT / "config/skills.yaml")])
    splits, _, _ = prepare_data("router", args)
    trained = {r["text"]: r for split in splits.values() for r in split}
    assert (trained[text]["skill"], trained[text]["args"]) == ("weather", {"location": "outside"})
    assert "do a backflip" not in trained
    assert (trained["mute yourself"]["skill"], trained["mute yourself"]["args"]) == _labelled("mute yourself")
    assert len(trained) == len(LABELS)


@needs_browser
def test_an_invalid_arg_is_refused_with_a_message(browser, live):
    from selenium.webdriver.common.by import By

    _open(browser, f"{live.url}/labels?q=volume+to+30")
    _rows(browser)[0].find_element(By.CSS_SELECTOR, "td.text a").click()
    _wait(browser, lambda d: "/record/" in d.current_url)
    level = browser.find_element(By.ID, "arg.set_volume.level")
    level.clear()
    level.send_keys("150")
    browser.find_element(By.ID, "save").click()
    error = _wait(browser, lambda d: d.find_elements(By.ID, "error"))[0]
    assert "150 is greater than the maximum of 100" in error.text
    assert browser.find_element(By.ID, "arg.set_volume.level").get_attribute("value") == "150"  # kept for editing
    assert live.override_lines() == []

    browser.find_element(By.ID, "skill").send_keys("eyes_color")
    color = browser.find_element(By.ID, "arg.eyes_color.color")
    color.send_keys("x" * 40)
    browser.find_element(By.ID, "save").click()
    # wait for the new message: the first one stays on the page until the refused save's answer replaces it
    _wait(browser, lambda d: any("is too long" in e.text for e in d.find_elements(By.ID, "error")))
    assert live.override_lines() == []
    _screenshot(browser, "fix-refused")


@needs_browser
def test_runs_table_lists_the_student_with_its_numbers(browser, live):
    from selenium.webdriver.common.by import By

    _open(browser, live.url + "/runs")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-run="router_student_mlx"]')
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "base-smollm2-135m"
    assert cells[2].split()[0] == str(len(LABELS) - 12 + 4 + 12)  # train + valid + test records
    assert cells[4] == "100"
    assert cells[5].startswith("83.3%") and cells[7] == "83.3%"  # MLX, Q4: 10 of 12 held-out skills right
    assert cells[8] == "0.896" and cells[9] == "90.0%" and cells[10] == "612" and cells[11] == "105.7 MB"
    assert cells[12] == "deployed"
    older = browser.find_element(By.CSS_SELECTOR, 'tr[data-run="router_qwen_mlx"]').text
    assert "90.9%" in older and "fixed set" in older and "base-qwen2-0.5b" in older
    assert browser.find_element(By.CSS_SELECTOR, "svg.chart circle")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) == 2  # the deployed copy is no run
    _screenshot(browser, "runs")


@needs_browser
def test_student_view_lists_errors_and_opens_their_records(browser, live):
    from selenium.webdriver.common.by import By

    _open(browser, live.url + "/student")
    assert browser.find_element(By.ID, "confusion")
    assert browser.find_element(By.CSS_SELECTOR, "svg.chart path")  # the calibration curve
    texts = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#errors td.text")]
    by_confidence = sorted(STUDENT_ERRORS, key=lambda t: -STUDENT_ERRORS[t][2])
    assert texts == by_confidence
    _screenshot(browser, "student")
    browser.find_element(By.LINK_TEXT, by_confidence[0]).click()
    _wait(browser, lambda d: "/record/" in d.current_url)
    assert browser.find_element(By.ID, "text").text == by_confidence[0]
    assert "disagrees" in browser.find_element(By.ID, "prediction").text
    _screenshot(browser, "record")


@needs_browser
def test_two_tabs_saving_at_once_lose_nothing(browser, live):
    from selenium.webdriver.common.by import By

    texts = ["turn your eyes red", "play the fanfare"]
    tabs = []
    for text in texts:
        if tabs:
            browser.switch_to.new_window("tab")
        _open(browser, f"{live.url}/labels?q={text.replace(' ', '+')}")
        _rows(browser)[0].find_element(By.CSS_SELECTOR, "td.text a").click()
        _wait(browser, lambda d: "/record/" in d.current_url)
        tabs.append(browser.current_window_handle)
    # Both tabs submit their Reject form at the same wall-clock moment (a timer in each page).
    at = int(time.time() * 1000) + 1500
    for handle in tabs:
        browser.switch_to.window(handle)
        browser.execute_script(
            "const at = arguments[0]; setTimeout(() => document.getElementById('reject-form').submit(),"
            " Math.max(0, at - Date.now()));", at)
    _wait(browser, lambda d: len(live.override_lines()) >= 2, timeout=15)
    time.sleep(0.5)
    assert sorted((line["text"], line["action"]) for line in live.override_lines()) == sorted(
        (t, "reject") for t in texts)
    for handle in tabs[1:]:
        browser.switch_to.window(handle)
        browser.close()
    browser.switch_to.window(tabs[0])


# ---- without a browser ----------------------------------------------------------------------------------

def test_appends_from_many_threads_lose_nothing(tmp_path, catalog):
    """8 writers x 40 overrides (some 20 kB long) on one file: every line arrives whole."""
    from distill.overrides import append_override, make_override

    path = tmp_path / "data" / "overrides.jsonl"

    def writer(n: int) -> None:
        for i in range(40):
            line = make_override(f"id{n}-{i}", f"text {n} {i} " + "x" * (20_000 if i % 10 == 0 else 10), "reject",
                                 {"skill": "chat", "args": {}}, None, catalog)
            append_override(path, line)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    overrides, bad = read_overrides(path)
    assert bad == [] and len(overrides) == 320 and len({o.id for o in overrides}) == 320


def _client(root: Path):
    from distill.review import create_app

    app = create_app(root, catalog=ROOT / "config" / "skills.yaml")
    return app.test_client()


def test_saves_only_from_this_machine_and_this_page(review_project):
    client = _client(review_project)
    key = json.loads((review_project / "data/routes.jsonl").read_text().splitlines()[0])["id"]
    assert client.get("/labels", headers={"Host": "127.0.0.1:8765"}).status_code == 200
    assert client.get("/labels", headers={"Host": "attacker.example:8765"}).status_code == 403  # DNS rebinding
    refused = client.post(f"/record/{key}/fix", data={"action": "reject"},
                          headers={"Host": "127.0.0.1:8765", "Origin": "http://attacker.example"})
    assert refused.status_code == 403
    assert not (review_project / "data/overrides.jsonl").exists()
    saved = client.post(f"/record/{key}/fix", data={"action": "reject"},
                        headers={"Host": "127.0.0.1:8765", "Origin": "http://127.0.0.1:8765"})
    assert saved.status_code == 302
    assert len((review_project / "data/overrides.jsonl").read_text().splitlines()) == 1


def test_a_corrupt_overrides_line_is_shown_not_fatal(review_project):
    path = review_project / "data/overrides.jsonl"
    path.write_text('{"broken\n')
    page = _client(review_project).get("/labels", headers={"Host": "127.0.0.1"})
    assert page.status_code == 200
    assert b"are not overrides (line 1" in page.data


def test_5k_records_stay_fast(tmp_path, catalog):
    """5,000 records + 5,000 audit lines: the first page parses everything once, later pages reuse it.

    Bounds are generous for a shared 2-core machine; the measured times print with -s."""
    root = build_review_project(tmp_path / "big", catalog)
    routes = root / "data/routes.jsonl"
    audit = root / "data/routes.audit.jsonl"
    with routes.open("a") as out, audit.open("a") as log:
        for i in range(5000):
            rid = f"big{i:05d}"
            out.write(json.dumps({"id": rid, "text": f"set the volume to {i % 101} please #{i}", "skill": "set_volume",
                                  "args": {"level": i % 101}, "votes": 3, "teacher": "t",
                                  "created": "2026-11-25T10:00:00Z"}) + "\n")
            log.write(json.dumps({"tag": rid, "content": json.dumps({"skill": "set_volume",
                                                                     "args": {"level": i % 101}})}) + "\n")
    client = _client(root)
    times = {}
    for name, url in (("first", "/labels"), ("again", "/labels"), ("filtered", "/labels?skill=set_volume&q=please"),
                      ("page 30", "/labels?page=30"), ("record", "/record/big04000?skill=set_volume")):
        started = time.perf_counter()
        response = client.get(url, headers={"Host": "127.0.0.1"})
        times[name] = time.perf_counter() - started
        assert response.status_code == 200, name
    print("5k records:", {k: f"{v * 1000:.0f} ms" for k, v in times.items()})
    assert times["first"] < 15
    assert max(times["again"], times["filtered"], times["page 30"], times["record"]) < 2.0


def test_a_save_over_another_tabs_fix_says_so(review_project):
    client = _client(review_project)
    key = json.loads((review_project / "data/routes.jsonl").read_text().splitlines()[0])["id"]
    host = {"Host": "127.0.0.1"}
    client.post(f"/record/{key}/fix", data={"action": "reject", "seen": ""}, headers=host)  # tab 1
    second = client.post(f"/record/{key}/fix", data={"action": "accept", "seen": ""}, headers=host,  # tab 2, opened
                         follow_redirects=True)  # before tab 1 saved
    assert "another tab had saved a fix for this record" in second.get_data(as_text=True)
    assert [line["action"] for line in map(json.loads, (review_project / "data/overrides.jsonl").open())] == [
        "reject", "accept"]


def test_accepting_a_label_the_catalog_refuses_is_refused(review_project):
    client = _client(review_project)
    key = next(json.loads(line)["id"] for line in (review_project / "data/routes.jsonl").open()
               if "backflip" in line)
    page = client.post(f"/record/{key}/fix", data={"action": "accept"}, headers={"Host": "127.0.0.1"})
    assert page.status_code == 422 and "no valid label to accept" in page.get_data(as_text=True)
    assert not (review_project / "data/overrides.jsonl").exists()


def test_make_review_serves_the_page_on_loopback(review_project):
    """What `make review` runs: python -m distill.review, on 127.0.0.1 only."""
    import subprocess
    import sys
    import urllib.request

    from tests.support import stop_process

    proc = subprocess.Popen([sys.executable, "-m", "distill.review", "--root", str(review_project), "--port", "0",
                             "--catalog", str(ROOT / "config/skills.yaml")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stdout.readline()
        assert line.startswith("review page: http://127.0.0.1:"), line
        url = line.split()[2]
        with urllib.request.urlopen(url + "labels", timeout=30) as response:
            assert response.status == 200 and b"look to your left" in response.read()
    finally:
        stop_process(proc)
