"""Browser tests: Playwright (pytest-playwright) driving Debian's chromium against pytest-django's live server.

No ``playwright install``: the browser is the system's ``/usr/bin/chromium`` (see ``tests.chromium``).  Every test
here is marked ``browser``: without chromium (outside CI) they are left out of the run, with one line in its summary
saying how to enable them.  The accounts and staff members are the suite's (``tests/conftest.py``);
every test here uses the live server, so their database is transactional.

Screenshots of every step go to ``test-artifacts/browser/<test>/`` (gitignored).  Browser tests belong in this
package: its fixtures launch the right browser with the right arguments, and end it when the package is done.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, BrowserType, Playwright, sync_playwright

from accounts.models import Follower
from tests.chromium import CHROMIUM, CHROMIUM_ARGS, require_chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    require_chromium()
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


# pytest-playwright keeps one Playwright for the whole session, and with it an event loop marked running in the
# main thread: every later test of the suite would run beside it, where Django refuses ORM calls and another
# sync_playwright() cannot start.  The fixtures below are pytest-playwright's, scoped to this package instead, so
# the browser and its loop are gone once the browser tests are done.


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    # While the loop runs, tests and the live server still use the ORM synchronously, one call at a time: tell
    # Django that is intended, for exactly as long as the loop exists.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        driver = sync_playwright().start()
        yield driver
        driver.stop()


@pytest.fixture(scope="package")
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    return getattr(playwright, browser_name)


@pytest.fixture(scope="package")
def launch_browser(browser_type_launch_args: dict[str, Any], browser_type: BrowserType) -> Callable[..., Browser]:
    def launch(**kwargs: Any) -> Browser:
        return browser_type.launch(**{**browser_type_launch_args, **kwargs})

    return launch


@pytest.fixture(scope="package")
def browser(launch_browser: Callable[..., Browser]) -> Iterator[Browser]:
    launched = launch_browser()
    yield launched
    launched.close()


@pytest.fixture(scope="package")
def browser_context_args() -> dict[str, Any]:
    """English pages at laptop size; tests that need another language or size open their own context."""
    return {"locale": "en-US", "viewport": {"width": 1280, "height": 900}}


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[..., Path]:
    """``shot(page, "03-error")`` saves a full-page PNG under test-artifacts/browser/<test>/ and returns its path."""
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def sandbox_followers(account_a, sandbox_api, fresh_demo_token) -> list[Follower]:
    """The first six sandbox followers of A as our followers; the sandbox is the WeChat API for the test."""
    return [
        Follower.objects.create(account=account_a, openid=openid, subscribed_at=timezone.now())
        for openid in sandbox_api.followers()[:6]
    ]
