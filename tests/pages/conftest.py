"""Browser fixtures: real Chromium (the Debian package at /usr/bin/chromium) driven by Playwright
against pytest-django's `live_server`.

Chromium is a required component (README, "Quick start"): without it these tests fail, they
never skip. CI installs it with `apt-get install -y chromium`. Never `playwright install`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(
    os.environ.get(
        "PAGES_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
    )
)


@pytest.fixture(scope="package")
def browser():
    """One Chromium for the package's tests, stopped afterwards.

    Playwright's sync API runs an asyncio loop in this thread, which trips Django's async-unsafe
    guard on every ORM call of the test itself; the guard is lifted only while the browser runs
    (the live server handles requests in its own thread, where the guard still applies)."""
    if not CHROMIUM.is_file():
        hint = "apt-get install -y chromium (the Debian package), or set CHROMIUM_PATH"
        pytest.fail(
            f"Chromium is required for the page tests and is missing at {CHROMIUM}: {hint}.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context (no cookies) on the live server; actions wait at most 10 s."""
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": 1280, "height": 900},
        locale="en-US",
        timezone_id="UTC",
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.js_errors = errors
    yield page
    context.close()
    # Pages answered 404 or 400 on purpose (tenancy, bad invitations) are logged as failed loads.
    real = [
        e
        for e in errors
        if not e.startswith("Failed to load resource: the server responded with a status of 4")
    ]
    assert real == [], f"JavaScript errors in the pages: {real}"


@pytest.fixture
def screenshot(page):
    """Save a full-page screenshot as SCREENSHOTS/<name>.png; returns the path."""

    def take(name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
