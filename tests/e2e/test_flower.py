"""Flower in a real headless browser: basic auth, the test worker online, a succeeded job.

``celery -A changewatch.worker flower`` runs with the project's celeryconfig against the
tests' broker and the session's real worker; Debian's chromium is driven through Debian's
chromedriver (never Selenium Manager, which would try to download a driver). Screenshots
are written to
``artifacts/flower-*.png``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from bench.harness import process
from bench.harness.services import ROOT, Worker, celery, free_port, wait_for_port
from changewatch.producer import Producer
from changewatch.schema.contract import ANALYZE_TASK
from tests.helpers import ARTIFACTS, Uploader, require

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1000",
)
USER = "operator"
# Everything a page needs (the workers table, the tasks table) arrives by AJAX after load.
PAGE_WAIT_S = 30.0
T = TypeVar("T")


class Flower:
    """``celery -A changewatch.worker flower`` on a free loopback port, behind FLOWER_BASIC_AUTH."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.worker_log_from = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def login_url(self) -> str:
        return f"http://{USER}:{self.password}@127.0.0.1:{self.port}"

    def start(self, log: Path) -> Flower:
        # The shell's own FLOWER_* settings (say FLOWER_UNAUTHENTICATED_API) must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
        env["FLOWER_BASIC_AUTH"] = f"{USER}:{self.password}"
        self.process = process.start(
            celery("flower", f"--port={self.port}", "--address=127.0.0.1"),
            log=log,
            env=env,
            cwd=ROOT,
            append=False,
        )
        try:
            wait_for_port(self.port, timeout=60, process=self.process)
        except (TimeoutError, RuntimeError):
            self.stop()
            raise
        return self

    def stop(self) -> None:
        process.stop(self.process, timeout=15)
        self.process = None

    def get(self, path: str, credentials: str | None = None) -> tuple[int, str]:
        """(status, body) of a plain HTTP GET; ``credentials`` is "user:password"."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if credentials is not None:
            token = base64.b64encode(credentials.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http)
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def api(self, path: str) -> Any:
        status, body = self.get(path, f"{USER}:{self.password}")
        return json.loads(body) if status == 200 else None


def until(check: Callable[[], T | None], what: str, timeout: float = PAGE_WAIT_S) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.25)


@pytest.fixture
def flower(worker: Worker) -> Iterator[Flower]:
    ARTIFACTS.mkdir(exist_ok=True)
    # Where the worker's log stood before Flower started (the file is appended to).
    worker_log = worker.log_path.read_bytes() if worker.log_path else b""
    server = Flower(password=secrets.token_urlsafe(12)).start(ARTIFACTS / "flower.log")
    server.worker_log_from = len(worker_log)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    require(
        CHROMIUM.exists() and CHROMEDRIVER.exists(),
        f"{CHROMIUM} or {CHROMEDRIVER} missing (scripts/setup.sh installs chromium-driver)",
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    # An explicit driver path: Selenium Manager (which downloads drivers) never runs.
    driver = webdriver.Chrome(
        options=options,
        service=Service(str(CHROMEDRIVER), log_output=str(ARTIFACTS / "chromedriver.log")),
    )
    driver.set_page_load_timeout(PAGE_WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_page(driver: webdriver.Chrome, check: Callable[[Any], T], what: str) -> T:
    """Wait for a page's content; on timeout keep a screenshot of what the browser showed."""
    try:
        return WebDriverWait(driver, PAGE_WAIT_S, poll_frequency=0.25).until(check)
    except TimeoutException:
        driver.save_screenshot(str(ARTIFACTS / "flower-failure.png"))
        body = driver.find_element(By.TAG_NAME, "body").text[:2000]
        pytest.fail(f"{what} not shown within {PAGE_WAIT_S:.0f}s; the page said:\n{body}")


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """The whole page, below the fold too, as ``artifacts/<name>``."""
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def rows(driver: webdriver.Chrome, table: str, row_id: str = "") -> list[list[str]]:
    """The cells' text of a table's body rows (those with ``row_id`` if given), read afresh."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
        return [
            [cell.text.strip() for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in found
            if not row_id or row.get_attribute("id") == row_id
        ]
    except WebDriverException:  # the table was redrawn while it was read
        return []


def test_flower_shows_the_worker_and_a_succeeded_job_behind_basic_auth(
    flower: Flower,
    browser: webdriver.Chrome,
    worker: Worker,
    producer: Producer,
    uploader: Uploader,
    photos: Path,
) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.monotonic() - started, 1)

    # Without credentials, or with wrong ones, Flower answers 401 and asks for basic auth.
    for credentials in (None, f"{USER}:wrong", f"intruder:{flower.password}"):
        for path in ("/", "/workers?json=1", "/api/workers", "/tasks/datatable"):
            status, _ = flower.get(path, credentials)
            assert status == 401, (path, credentials, status)
    assert flower.get("/", f"{USER}:{flower.password}")[0] == 200
    # Flower leaves its health check and Prometheus metrics open (for probes and scrapers);
    # the README says so. If Flower ever closes them, update the README.
    assert flower.get("/healthcheck") == (200, "OK")
    assert flower.get("/metrics")[0] == 200

    # Flower learns of workers from their events: once it lists the test worker, its event
    # receiver is subscribed and will see every event of the job below.
    until(
        lambda: any(
            w["hostname"].startswith("pytest@") and w["status"]
            for w in (flower.api("/workers?json=1") or {}).get("data", [])
        ),
        "Flower sees the pytest@ worker through its events",
    )
    lap("flower_sees_worker")
    # Workers send task events only while a monitor asks for them: Flower's first
    # enable_events broadcast goes out 5 s after its event thread starts (then every 5 s).
    log = worker.log_path
    until(
        lambda: (
            log is not None
            and b"Events of group {task} enabled" in log.read_bytes()[flower.worker_log_from :]
        ),
        "Flower turned on the worker's task events",
    )

    user, session = uuid.uuid4(), uuid.uuid4()
    series = sorted((photos / "series").glob("*.jpg"))[:3]
    images = uploader.session(user, dict(zip(["front", "left", "right"], series, strict=True)))
    producer.analyze(user, session, datetime(2026, 1, 5, 9, 30, tzinfo=UTC), images)
    producer.wait(session, timeout=240)
    task_id = producer.status(session)["task_id"]
    lap("job_succeeded")
    info = until(
        lambda: (t := flower.api(f"/api/task/info/{task_id}")) and t["state"] == "SUCCESS" and t,
        f"Flower records task {task_id} as SUCCESS",
    )
    assert info["name"] == "changewatch.analyze_session"
    # task_send_sent_event: the producer's "sent" event reached Flower, so queued jobs show.
    assert info["sent"], info
    lap("flower_has_task")

    # A job nobody has picked up yet shows too: PENDING with its "sent" time (it waits on a
    # queue that no worker consumes).
    parked_queue = f"flower-test-{uuid.uuid4().hex[:8]}"
    parked = producer.celery.send_task(ANALYZE_TASK, kwargs={}, queue=parked_queue)
    try:
        until(
            lambda: (
                (t := flower.api(f"/api/task/info/{parked.id}"))
                and t["state"] == "PENDING"
                and t["sent"]
            ),
            "Flower shows a queued job as PENDING, with its sent time",
        )
    finally:
        broker = redis.Redis.from_url(producer.celery.conf.broker_url)
        for key in broker.scan_iter(f"*{parked_queue}*"):  # the list and kombu's bindings
            broker.delete(key)
    lap("flower_has_queued_job")

    # The browser without credentials gets the 401, not Flower's pages.
    browser.get(flower.url + "/workers")
    assert "Flower" not in browser.title
    assert "Workers" not in browser.find_element(By.TAG_NAME, "body").text

    # Log in with basic auth in the URL; chromium then reuses the credentials for this origin
    # (the pages' AJAX calls and later navigations carry them).
    browser.get(flower.login_url + "/workers")
    assert browser.title.startswith("Workers"), browser.title
    worker_row = wait_page(
        browser,
        lambda d: next(
            (r for r in rows(d, "workers-table") if r and r[0].startswith("pytest@")), None
        ),
        "the pytest@ worker on the Workers page",
    )
    assert worker_row[1] == "Online", worker_row
    assert int(worker_row[5]) >= 1, worker_row  # succeeded count, from the worker's events
    wait_page(
        browser,
        lambda d: d.find_element(By.ID, "workers-online").text not in ("", "—"),
        "the online-workers count",
    )
    screenshot(browser, "flower-workers.png")
    lap("workers_page")

    browser.get(flower.url + "/tasks")
    assert browser.title.startswith("Tasks"), browser.title
    task_row = wait_page(
        browser,
        lambda d: next((r for r in rows(d, "tasks-table", task_id) if r), None),
        f"task {task_id} on the Tasks page",
    )
    assert "changewatch.analyze_session" in task_row and "SUCCESS" in task_row, task_row
    screenshot(browser, "flower-tasks.png")
    lap("tasks_page")

    browser.get(f"{flower.url}/task/{task_id}")
    assert browser.title.startswith("changewatch.analyze_session"), browser.title
    details = wait_page(
        browser,
        lambda d: {
            row.find_element(By.TAG_NAME, "dt").text.strip(): row.find_element(
                By.TAG_NAME, "dd"
            ).text.strip()
            for row in d.find_elements(By.CSS_SELECTOR, "#task-page .detail-row")
        },
        "the task's details",
    )
    assert details["Name"] == "changewatch.analyze_session", details
    assert details["UUID"].splitlines()[0] == task_id, details  # then a "Copy" button
    assert details["Status"] == "SUCCESS", details
    assert details["Worker"].startswith("pytest@"), details
    assert str(session) in details["Keyword arguments"], details
    assert details.get("Sent"), details
    screenshot(browser, "flower-task.png")
    lap("task_page")
    print("flower timings (s):", timings)
