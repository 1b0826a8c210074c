"""Browser tests: Debian's chromium, driven by Playwright for Python, against the real
coordinator (tests/live.py) on the session's Valkey, an RQ worker process, and fake WHMCS.

Playwright's own browser downloads are never used (no ``playwright install``): the browser is
``/usr/bin/chromium`` from Debian (``.ci/run`` installs it). Without it the tests skip — or
fail, when ``INVOICE_SYNC_REQUIRE_TOOLS=1`` says CI installed it.

Each test saves a screenshot of every page it visits in ``tests/browser/screenshots/``
(git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support import missing_tool

CHROMIUM = os.environ.get("INVOICE_SYNC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).parent / "screenshots"

pytestmark = pytest.mark.integration


def _missing(what: str) -> None:
    missing_tool(f"{what}; the browser tests need it, NOT tested")


@pytest.fixture(scope="session")
def browser():
    """One headless chromium for the session."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _missing(f"{CHROMIUM} is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (Python) is not installed")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed
    return report


@pytest.fixture
def page(browser, request):
    """A fresh browser context (no cookies) and page, laptop-sized; a screenshot on failure."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    # Nothing may come from anywhere but the coordinator under test.
    page.outside = []
    page.on("request", lambda request: page.outside.append(request.url)
            if not request.url.startswith(("http://127.0.0.1", "data:", "blob:")) else None)
    # No script error and no Content-Security-Policy violation on any page (4xx answers the
    # tests provoke are logged by the browser and by htmx; they are not errors here).
    expected = re.compile(r"status of 4\d\d|Response Status Error Code 4\d\d")
    page.errors = []
    page.on("console", lambda message: page.errors.append(message.text)
            if message.type == "error" and not expected.search(message.text) else None)
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    if getattr(request.node, "call_failed", False):
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"FAILED-{request.node.name}.png"), full_page=True)
    context.close()
    assert page.outside == []
    assert page.errors == []


@pytest.fixture
def shot():
    """Save a full-page screenshot: ``shot(page, "overview")``."""
    SCREENSHOTS.mkdir(exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def worker(live_coordinator, valkey, tmp_path):
    """A real ``invoice-sync worker`` process serving the sync queue for the test."""
    env = {**os.environ, "INVOICE_SYNC_REDIS_URL": valkey.url,
           "INVOICE_SYNC_SECRET_KEYS": live_coordinator.app.config["SECRET_KEYS"],
           "INVOICE_SYNC_ALLOW_HTTP_SYSTEM_URLS": "true",
           "INVOICE_SYNC_ALLOW_PRIVATE_SYSTEM_URLS": "true",
           "INVOICE_SYNC_DATA_DIR": str(tmp_path / "data"), "INVOICE_SYNC_LOG_LEVEL": "WARNING"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "coordinator", "worker"], env=env)
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Gate:
    """Hold a fake WHMCS's GetInvoices requests after the first ``after`` until opened, so a
    test sees a sync mid-way whatever the machine's speed."""

    def __init__(self, fake, after: int) -> None:
        self.fake = fake
        self.after = after
        self.opened = threading.Event()
        self.inner = fake.__call__

    def __call__(self, environ, start_response):
        if self.fake.calls["GetInvoices"] >= self.after:
            self.opened.wait(timeout=60)
        return self.inner(environ, start_response)

    def open(self) -> None:
        self.opened.set()
