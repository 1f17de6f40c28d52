"""Browser tests: Playwright (pytest-playwright) driving Debian's chromium against pytest-django's live server.

No ``playwright install``: the browser is the system's ``/usr/bin/chromium`` (``apt-get install chromium
fonts-wqy-zenhei``; ``.ci/run`` installs it).  Without it these tests fail with a message saying so, unless
``WXNOTIFY_SKIP_BROWSER=1`` is set outside CI, which skips them on a machine that cannot have a browser.

Screenshots of every step go to ``test-artifacts/browser/<test>/`` (gitignored).  Browser tests belong in this
package: its fixtures launch the right browser with the right arguments, and end it when the package is done.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.utils import timezone
from playwright.sync_api import Browser, BrowserType, Playwright, sync_playwright

from accounts.models import Follower, OfficialAccount
from accounts.selectors import STAFF_GROUP
from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID, DEMO_TEMPLATES
from templates_app.keywords import parse_keywords
from templates_app.models import MessageTemplate
from wxnotify.wechat.tokens import default_token_manager

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SKIP_ENV = "WXNOTIFY_SKIP_BROWSER"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
OTHER_APPID = "wx00000000000000b2"
STAFF_PERMISSIONS = (
    "view_officialaccount",
    "view_follower",
    "view_messagetemplate",
    "view_message",
    "add_message",
    "view_campaign",
    "add_campaign",
)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        # CI installs the browser (.ci/run), so there a missing one is always a failure.
        in_ci = os.environ.get("CI", "").lower() in {"1", "true"}
        if os.environ.get(SKIP_ENV) == "1" and not in_ci:
            pytest.skip(f"{CHROMIUM} is missing and {SKIP_ENV}=1: browser tests skipped")
        pytest.fail(
            f"{CHROMIUM} is missing: install it with `apt-get install -y chromium fonts-wqy-zenhei` "
            f"(.ci/run does), or set {SKIP_ENV}=1 to skip the browser tests on this machine.",
            pytrace=False,
        )
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


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


def _template(account: OfficialAccount, spec: dict[str, str]) -> MessageTemplate:
    return MessageTemplate.objects.create(
        account=account,
        template_id=spec["template_id"],
        title=spec["title"],
        content=spec["content"],
        keywords=[keyword.as_dict() for keyword in parse_keywords(spec["content"])],
    )


@pytest.fixture
def staff_group(transactional_db) -> Group:
    """Transactional tests empty the tables the data migrations filled, so the group is made again if needed."""
    group, created = Group.objects.get_or_create(name=STAFF_GROUP)
    if created:
        group.permissions.add(*Permission.objects.filter(codename__in=STAFF_PERMISSIONS))
    return group


@pytest.fixture
def account_a(transactional_db) -> OfficialAccount:
    account = OfficialAccount.objects.create(
        name="Demo A",
        appid=DEMO_APPID,
        app_secret=DEMO_ACCOUNT["secret"],
        token=DEMO_ACCOUNT["token"],
        encoding_aes_key=DEMO_ACCOUNT["encoding_aes_key"],
        message_mode=OfficialAccount.MessageMode.SAFE,
    )
    for spec in DEMO_TEMPLATES:
        _template(account, spec)
    return account


@pytest.fixture
def account_b(transactional_db) -> OfficialAccount:
    account = OfficialAccount.objects.create(name="Other B", appid=OTHER_APPID, app_secret="b" * 32, token="tokenb")
    _template(account, DEMO_TEMPLATES[0])
    return account


def _staff(django_user_model: Any, name: str, group: Group, account: OfficialAccount) -> Any:
    user = django_user_model.objects.create_user(name, password=f"pw-{name}")
    user.groups.add(group)
    account.operators.add(user)
    return user


@pytest.fixture
def staff_a(django_user_model, staff_group, account_a):
    return _staff(django_user_model, "staff_a", staff_group, account_a)


@pytest.fixture
def staff_b(django_user_model, staff_group, account_b):
    return _staff(django_user_model, "staff_b", staff_group, account_b)


@pytest.fixture
def sandbox_followers(account_a, sandbox_api) -> Iterator[list[Follower]]:
    """The first six sandbox followers of A as our followers; the sandbox is the WeChat API for the test."""
    default_token_manager().forget(DEMO_APPID)
    followers = [
        Follower.objects.create(account=account_a, openid=openid, subscribed_at=timezone.now())
        for openid in sandbox_api.followers()[:6]
    ]
    yield followers
    default_token_manager().forget(DEMO_APPID)
