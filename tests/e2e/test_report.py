"""The report a person can open, end to end: real photos through a real worker, written by
``python -m changewatch.producer report U --out FILE.html``, opened in headless Chromium.

It must render (the history rows, the trend, the plot, a map per angle with the photo's
thumbnail under its grid: a screenshot goes to ``artifacts/report.png``) and must load
nothing: every request the browser makes is the file itself or a data: URI, and the
page's resource timing lists nothing fetched.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from changewatch.producer import report_html
from tests.e2e.test_flower import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS
from tests.e2e.test_trend import ANGLES, SESSIONS
from tests.e2e.test_trend import drifting as person  # noqa: F401  # the fixture
from tests.helpers import ARTIFACTS, found, require, run_module

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Debian's chromium through Debian's chromedriver, with its network log on."""
    require(
        CHROMIUM.exists() and CHROMEDRIVER.exists(),
        f"{CHROMIUM} or {CHROMEDRIVER} missing (scripts/setup.sh installs chromium-driver)",
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(
        options=options,
        service=Service(str(CHROMEDRIVER), log_output=str(ARTIFACTS / "chromedriver.log")),
    )
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def requested(driver: webdriver.Chrome, document: str) -> list[str]:
    """Every URL the browser asked for on behalf of ``document``, from its DevTools network
    log (the browser's own start page logs requests too: those are left out)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent" and params["documentURL"] == document:
            urls.append(params["request"]["url"])
    return urls


def spread_of(png: bytes) -> float:
    """How much a screenshot's pixels vary: near 0 for a flat grey box."""
    with Image.open(io.BytesIO(png)) as image:
        return float(np.asarray(image.convert("L"), dtype=np.float64).std())


@pytest.fixture(scope="module")
def written(person: dict[str, Any]) -> Path:  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / "report.html"
    proc = run_module("changewatch.producer", "report", str(person["user"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["report"] == str(out)
    return out


def test_the_report_is_one_neutral_file(
    written: Path,
    person: dict[str, Any],  # noqa: F811
) -> None:
    html = written.read_text()
    assert found(html) == []
    assert f'content="{report_html.CSP}"' in html
    assert "http://" not in html and "https://" not in html
    assert html.count('class="thumb" href="data:image/jpeg;base64,') == len(ANGLES)
    # Each angle whose latest result has region scores gets its nine shaded regions; the
    # others say there is no map yet (every angle, until results carry regions).
    mapped = [r for r in person["results"][-1]["per_angle"] if r.get("regions")]
    assert html.count('class="cell" data-region=') == 9 * len(mapped)
    assert html.count("no region map yet") == len(ANGLES) - len(mapped)


def test_the_report_renders_in_chromium_and_loads_nothing(
    written: Path,
    browser: webdriver.Chrome,
) -> None:
    browser.get(written.as_uri())
    assert browser.title.startswith("changewatch report")
    history = browser.find_elements(By.CSS_SELECTOR, "#history tr")
    assert len(history) == 1 + SESSIONS
    assert "rising" in browser.find_element(By.ID, "trend").text
    plot = browser.find_element(By.CSS_SELECTOR, "img.plot")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", plot)
    maps = browser.find_elements(By.CSS_SELECTOR, "svg.map")
    assert [m.get_attribute("data-angle") for m in maps] == ANGLES
    for svg in maps:
        assert len(svg.find_elements(By.CSS_SELECTOR, "rect.cell")) == 9
        # The thumbnail is drawn: the map is a photo, not the flat grey behind it.
        assert spread_of(svg.screenshot_as_png) > 10, svg.get_attribute("data-angle")
    assert spread_of(plot.screenshot_as_png) > 10

    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    (ARTIFACTS / "report.png").write_bytes(base64.b64decode(shot["data"]))

    urls = requested(browser, written.as_uri())
    assert urls and urls[0] == written.as_uri()
    assert all(u == written.as_uri() or u.startswith("data:") for u in urls), urls
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith('data:'))"
    )
    assert fetched == []
