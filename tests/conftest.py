"""Fixtures shared by the whole test suite.

``wechat_sandbox`` is one fake WeChat API server per test session (a free port on 127.0.0.1), reset to
its start state before every test that uses it, so tests never see each other's tokens, messages or
faults.  Its start state is the demo account (``sandbox.demo.DEMO_ACCOUNT``) *without* a callback URL,
so no test gets delivery receipts it did not ask for: point ``callback_url`` at your receiver with
``wechat_sandbox.update_account(appid, callback_url=...)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sandbox.demo import DEMO_APPID, demo_config
from sandbox.server import SandboxServer
from sandbox.state import Account, SandboxState


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
        """Change latency_ms, error_rate, error_code, token_ttl, receipts, receipt_delay_ms for this test."""
        return self.state.set_faults(**changes)

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
