"""Real headless Chromium for tests of the pages charlstm writes (the inspect-gates HTML report).

A page is only tested when a browser has drawn it: its scripts ran, nothing threw, nothing was
logged as an error. Playwright's Python package drives Debian's Chromium (`/usr/bin/chromium`),
so no browser is downloaded.

Use the `browser_page` fixture (registered for every test by `tests/conftest.py`)::

    def test_the_report_draws(browser_page, tmp_path):
        page = browser_page.open(tmp_path / "report.html")
        assert page.locator("svg").count() > 0
        browser_page.assert_no_errors()

Console errors and uncaught exceptions are collected in `browser_page.errors`; the fixture also
checks at teardown that there were none (a test that expects some clears the list). Outside pytest,
`open_page()` is the same as a context manager.

Without Playwright or Chromium, page tests are skipped on a developer's machine but fail when the
`CI` environment variable is set: CI installs both, so a page test must never skip there unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's package (`apt-get install chromium`); Playwright drives it instead of a browser of its own."""

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Flags for a browser that runs as root in a container and never reaches the network on its own."""

VIEWPORT = {"width": 1200, "height": 900}


def browser_missing() -> str | None:
    """Why no page can be tested here, or None when Playwright and Chromium are both present."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (Debian: apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip the calling test when no browser is here, or fail it in CI, where one must be."""
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but page tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"no headless browser: {reason}")


@dataclass
class BrowserPage:
    """A Playwright page and the errors it has reported; other attributes reach the page itself."""

    page: Any
    errors: list[str] = field(default_factory=list)

    def open(self, path: Path | str) -> Any:
        """Load a local file (or a URL) and wait until it and its scripts have run; returns the page."""
        target = str(path)
        if "://" not in target:
            target = Path(target).resolve().as_uri()
        self.page.goto(target, wait_until="load")
        return self.page

    def assert_no_errors(self) -> None:
        assert not self.errors, "the page reported errors:\n" + "\n".join(self.errors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.page, name)


def _watch(page: Any) -> BrowserPage:
    watched = BrowserPage(page)

    def on_console(message: Any) -> None:
        if message.type == "error":
            watched.errors.append(f"console.error: {message.text} ({message.location.get('url', '')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
    return watched


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless Chromium browser (Playwright `Browser`); the caller checks `browser_missing()` first."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser: Any) -> Iterator[BrowserPage]:
    """A fresh context and page in `browser`, watched for errors; closed afterwards."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        yield _watch(context.new_page())
    finally:
        context.close()


@contextmanager
def open_page() -> Iterator[BrowserPage]:
    """Outside pytest: launch Chromium and yield one watched page (raises if no browser is here)."""
    reason = browser_missing()
    if reason is not None:
        raise RuntimeError(f"no headless browser: {reason}")
    with launch_chromium() as browser, new_page(browser) as page:
        yield page


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One browser for the whole session (starting Chromium costs about a second)."""
    require_browser()
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[BrowserPage]:
    """A fresh page for one test; fails at teardown if the page logged an error nobody cleared."""
    with new_page(chromium) as page:
        yield page
        page.assert_no_errors()
