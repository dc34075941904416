"""`apigen-mt view` in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
selenium) opens the app the CLI serves on a run made by the scripted roles, checks the overview's numbers against
the manifest, filters the table to the rejected trials, opens one and finds its reasons and tool calls, opens the
static file the same way, and sees a shard written while the page is open appear without a restart.

Screenshots are kept in tests/artifacts/view/ (ignored by git): overview.png, table.png, trial.png, blueprint.png,
static.png, live.png. Skipped with a message when Chromium, its driver or selenium is missing (`make setup`
installs them)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.schemas import TRAJECTORY_SCHEMA
from apigen_mt.pipeline.store.shards import ShardWriter
from tests.conftest import load_test_module

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "view"
CLI = Path(sys.executable).parent / "apigen-mt"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WRONG = "demo-retail-cancel-2"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("headless Chromium not found (Debian packages chromium and chromium-driver; `make setup`)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip extra `test`)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Without the background-networking switches Chromium keeps dialing Google's hosts, which a closed
    # network refuses; a profile of its own keeps runs apart.
    profile = tmp_path_factory.mktemp("chromium-profile")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1600",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.implicitly_wait(5)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def run_dir(browser, ray_local, tmp_path_factory) -> Path:
    return load_test_module("test_view").make_run(tmp_path_factory.mktemp("view-browser") / "run")


@pytest.fixture(scope="module")
def served(run_dir):
    """`apigen-mt view RUN --port 0` as a user starts it; its URL."""
    server = subprocess.Popen([str(CLI), "view", str(run_dir), "--port", "0"], stderr=subprocess.PIPE, text=True)
    line = server.stderr.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
    assert match, line + server.stderr.read()
    yield match[1]
    server.terminate()
    server.wait(timeout=30)


def manifest_counts(run_dir: Path) -> dict[str, int]:
    return json.loads((run_dir / "manifest.json").read_text())["counts"]["trajectories"]


def count(browser, name: str) -> int:
    return int(browser.find_element("id", f"count-{name}").text.replace(",", ""))


def follow(browser, element) -> None:
    """Click what loads another page and wait until it has: until then the old page's elements still answer."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = browser.find_element("tag name", "html")
    element.click()
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(page))


def test_the_overview_shows_the_manifest_s_numbers_and_its_charts(browser, served, run_dir):
    browser.get(served + "/")
    for name, value in manifest_counts(run_dir).items():
        assert count(browser, name) == value, name
    charts = browser.find_elements("css selector", "figure svg.chart")
    assert len(charts) == 8 and all(chart.size["height"] > 0 for chart in charts)
    assert "% kept" in browser.find_element("id", "chart-phase2").text
    browser.save_screenshot(ARTIFACTS / "overview.png")


def test_the_rejected_trials_open_with_their_reasons_and_tool_calls(browser, served, run_dir):
    from selenium.webdriver.support.ui import Select

    browser.get(served + "/trials")
    Select(browser.find_element("id", "filter-status")).select_by_visible_text("rejected")
    follow(browser, browser.find_element("id", "apply"))
    rows = browser.find_elements("css selector", "#trials-table tbody tr")
    assert len(rows) == manifest_counts(run_dir)["rejected"]
    assert {row.find_element("css selector", ".badge").text for row in rows} == {"rejected"}
    browser.save_screenshot(ARTIFACTS / "table.png")

    follow(browser, rows[0].find_element("link text", WRONG))
    assert browser.find_element("id", "trial-status").text == "rejected"
    reasons = browser.find_elements("css selector", ".reasons li.reason")
    assert any("the final database differs" in reason.text for reason in reasons)
    calls = [element.text for element in browser.find_elements("css selector", ".call-name code")]
    assert calls == ["find_user_id_by_email", "get_order_details", "cancel_pending_order"]
    browser.find_element("link text", "see in the chat").click()
    target = browser.find_element("css selector", ":target")
    assert "cancel_pending_order" in target.text and "no longer needed" in target.text
    browser.save_screenshot(ARTIFACTS / "trial.png")


def test_a_blueprint_shows_its_rounds(browser, served, run_dir):
    browser.get(served + "/blueprints")
    follow(browser, browser.find_elements("css selector", "#blueprints-table tbody a")[0])
    rounds = browser.find_elements("css selector", "section.round")
    assert rounds and all(section.text.startswith("Round ") for section in rounds)
    browser.save_screenshot(ARTIFACTS / "blueprint.png")


def test_the_static_file_opens_without_a_server(browser, run_dir, tmp_path):
    path = tmp_path / "report.html"
    done = subprocess.run([str(CLI), "view", str(run_dir), "--static", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    browser.get(path.as_uri())
    for name, value in manifest_counts(run_dir).items():
        assert count(browser, name) == value, name
    statuses = {element.text for element in browser.find_elements("id", "trial-status")}
    assert statuses == {"accepted", "rejected", "failed"}
    # Nothing was fetched: the page is the only resource the browser loaded.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    browser.save_screenshot(ARTIFACTS / "static.png")


def test_a_shard_written_while_the_page_is_open_appears_without_a_restart(browser, served, run_dir):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    browser.get(served + "/")
    before = count(browser, "trials")
    rows = RunFolder(run_dir).trials().slice(0, 2).to_pylist()
    with ShardWriter(run_dir / "trajectories", TRAJECTORY_SCHEMA) as writer:
        for number, row in enumerate(rows):
            writer.write(row | {"trial": 1000 + number})
    deadline, shown = time.monotonic() + 20, before
    while time.monotonic() < deadline and shown != before + 2:
        try:
            shown = count(browser, "trials")
        except (NoSuchElementException, StaleElementReferenceException):  # the page is reloading itself
            pass
        time.sleep(0.25)
    assert shown == before + 2
    browser.save_screenshot(ARTIFACTS / "live.png")
