"""Fixtures of the messaging tests: API clients of the suite's staff members, A's followers, a recording broker.

A module that needs another shape defines its own fixture of the same name (``test_console`` its ``followers_a``
without the sandbox, ``test_keyword_input`` its ``api_a`` with one follower).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Follower, OfficialAccount
from sandbox.demo import DEMO_APPID
from tests.factories import api_client_for
from wxnotify.wechat.tokens import default_token_manager


@pytest.fixture
def api_a(staff_a: Any) -> APIClient:
    return api_client_for(staff_a)


@pytest.fixture
def api_b(staff_b: Any) -> APIClient:
    return api_client_for(staff_b)


@pytest.fixture
def followers_a(account_a: OfficialAccount, sandbox_api: Any, django_user_model: Any) -> Iterator[list[Follower]]:
    """The first five sandbox followers of A; the first is bound to user "alice".

    The sandbox starts every test afresh, so no access_token cached by an earlier test may be used.
    """
    default_token_manager().forget(DEMO_APPID)
    alice = django_user_model.objects.create_user("alice")
    followers = [
        Follower.objects.create(account=account_a, openid=openid, subscribed_at=timezone.now())
        for openid in sandbox_api.followers()[:5]
    ]
    followers[0].user = alice
    followers[0].save()
    yield followers
    default_token_manager().forget(DEMO_APPID)


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Keep delivery out of the measurement: enqueued tasks are only recorded.

    The cache is cleared before and after: a delivery-alive signal left up by a recorded (never run) task
    would keep later tests' messages from being enqueued.
    """
    cache.clear()
    enqueued: list[str] = []
    monkeypatch.setattr("messaging.dispatch.async_task", lambda func, *args, **kwargs: enqueued.append(func))
    yield enqueued
    cache.clear()
