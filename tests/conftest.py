"""Fixtures shared by the whole test suite.

``wechat_sandbox`` is one fake WeChat API server per test session (a free port on 127.0.0.1), reset to
its start state before every test that uses it, so tests never see each other's tokens, messages or
faults.  Its start state is the demo account (``sandbox.demo.DEMO_ACCOUNT``) *without* a callback URL,
so no test gets delivery receipts it did not ask for: point ``callback_url`` at your receiver with
``wechat_sandbox.update_account(appid, callback_url=...)``.  It is the one fake WeChat of the unit tests: what a
client sent is in ``wechat_sandbox.requests()`` (the bytes as they arrived), and ``add_api_fault`` makes one API
answer an errcode, an HTTP error, a body that is not JSON, nothing, or late.

The database fixtures are the set-up many test modules share, built by the helpers in ``tests.factories``:
``account_a`` (the demo account, safe mode, with the demo templates), ``account_b`` (another account with one
template), ``staff_group`` and the staff members ``staff_a`` / ``staff_b`` operating one account each.  A module
that needs another shape defines its own fixture of the same name, which takes precedence for that module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.test import Client
from django.utils import translation

from accounts.models import OfficialAccount
from messaging.api.throttles import cache_outage, throttle_cache
from sandbox.demo import DEMO_APPID, demo_config
from sandbox.server import SandboxServer
from sandbox.state import Account, ApiFault, ReceivedRequest, SandboxState
from tests import chromium, factories
from wxnotify.memo import forget_lookups
from wxnotify.wechat.tokens import default_token_manager

BROWSER_TESTS = Path(__file__).resolve().parent / "browser"


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Iterator[None]:
    """Mark tests/browser ``browser`` before ``-m`` filters the items; then leave out what cannot run here."""
    for item in items:
        if item.path.is_relative_to(BROWSER_TESTS):
            item.add_marker(pytest.mark.browser)
    result = yield
    chromium.deselect_browser_tests(config, items)
    return result


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """An xdist worker finished: keep the number of browser tests it left out, for the summary line."""
    chromium.record_worker_count(node.config, getattr(node, "workeroutput", {}))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if line := chromium.summary_line(config):
        terminalreporter.write_sep("-", line, yellow=True)


@dataclass
class SandboxHandle:
    """What tests get from ``wechat_sandbox``: the URL, the live state and a few shortcuts."""

    server: SandboxServer

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def state(self) -> SandboxState:
        return self.server.state

    def messages(self, appid: str | None = None, touser: str | None = None) -> list[dict[str, Any]]:
        """Delivered template messages, oldest first."""
        return self.state.list_messages(appid, touser)

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Change latency_ms, user_latency_ms, error_rate, error_code, token_ttl, receipts, receipt_delay_ms,
        drop_reply_rate, drop_reply_mode, drop_reply_hang_ms, dedupe_window_s, bizsend_msgid, sent_event_error_code
        (see ``sandbox.state.Faults``)."""
        return self.state.set_faults(**changes)

    def add_api_fault(self, api: str, **spec: Any) -> ApiFault:
        """Answer the next call(s) to ``api`` with an errcode, an HTTP status/body, no answer, or late
        (see ``sandbox.state.ApiFault``)."""
        return self.state.add_api_fault(api, **spec)

    def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """The API requests the sandbox received in this test, oldest first, only those to ``path`` when given."""
        return self.state.received_requests(path)

    def add_account(self, **spec: Any) -> Account:
        """Add an account (appid and secret required; see ``sandbox.state`` for the other fields)."""
        return self.state.upsert_account(spec)

    def update_account(self, appid: str, **changes: Any) -> Account:
        return self.state.upsert_account({"appid": appid, **changes})

    def account(self, appid: str = DEMO_APPID) -> Account:
        return self.state.account(appid)

    def followers(self, appid: str = DEMO_APPID) -> list[str]:
        """Openids currently following, in user/get order."""
        return self.state.account(appid).following()

    def invalidate_tokens(self, appid: str = DEMO_APPID) -> int:
        return self.state.invalidate_tokens(appid)

    def counters(self, appid: str = DEMO_APPID) -> dict[str, Any]:
        return self.state.snapshot()["accounts"][appid]


@pytest.fixture(scope="session")
def wechat_sandbox_server() -> Iterator[SandboxServer]:
    server = SandboxServer(SandboxState(demo_config(callback_url="", followers=20))).start()
    yield server
    server.stop()


@pytest.fixture
def wechat_sandbox(wechat_sandbox_server: SandboxServer) -> SandboxHandle:
    wechat_sandbox_server.state.reset()
    return SandboxHandle(wechat_sandbox_server)


@pytest.fixture
def sandbox_api(wechat_sandbox: SandboxHandle, settings: Any) -> SandboxHandle:
    """The sandbox with ``settings.WECHAT_API_BASE`` pointing at it for this test."""
    settings.WECHAT_API_BASE = wechat_sandbox.base_url
    return wechat_sandbox


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """A plain HTTP session for talking to the sandbox (or a stand-in server) directly, closed after the test."""
    with requests.Session() as session:
        yield session


@pytest.fixture
def english(settings: Any) -> Iterator[None]:
    """Assertions read the English source strings, whatever translations the project ships."""
    settings.LANGUAGE_CODE = "en"
    with translation.override("en"):
        yield


@pytest.fixture
def english_client() -> Client:
    """An anonymous test client asking for English pages."""
    return factories.english_client()


@pytest.fixture(autouse=True)
def fresh_lookup_memo() -> Iterator[None]:
    """No memoised token, account or template of another test: ids are reused once a test's rows roll back."""
    forget_lookups()
    yield
    forget_lookups()


@pytest.fixture(autouse=True)
def no_past_cache_outage() -> Iterator[None]:
    """A test that broke the cache leaves the API throttles' outage pause behind: the next test starts without it.

    Without Redis the throttles count in this process's memory, which outlives a test: each test starts at zero.
    """
    cache_outage.reset()
    if not settings.REDIS_URL:
        throttle_cache().clear()
    yield
    cache_outage.reset()


@pytest.fixture
def fresh_cache(db: None) -> Iterator[None]:
    """An empty shared cache before and after the test: it outlives a test's transaction."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def fresh_demo_token() -> Iterator[None]:
    """No access_token of the demo account cached by another test (the sandbox forgets its tokens per test)."""
    default_token_manager().forget(DEMO_APPID)
    yield
    default_token_manager().forget(DEMO_APPID)


@pytest.fixture
def account_a(db: None) -> OfficialAccount:
    """The sandbox's demo account in safe mode, with the demo templates."""
    account = factories.create_demo_account("Demo A", message_mode=OfficialAccount.MessageMode.SAFE)
    factories.create_templates(account)
    return account


@pytest.fixture
def account_b(db: None) -> OfficialAccount:
    return factories.create_account_b()


@pytest.fixture
def staff_group(db: None) -> Group:
    return factories.ensure_staff_group()


@pytest.fixture
def staff_a(django_user_model: Any, account_a: OfficialAccount, staff_group: Group) -> Any:
    """A business staff member ("staff_a", password "pw-staff_a") operating account A only."""
    return factories.create_staff(django_user_model, "staff_a", staff_group, account_a)


@pytest.fixture
def staff_b(django_user_model: Any, account_b: OfficialAccount, staff_group: Group) -> Any:
    """A business staff member ("staff_b", password "pw-staff_b") operating account B only."""
    return factories.create_staff(django_user_model, "staff_b", staff_group, account_b)
