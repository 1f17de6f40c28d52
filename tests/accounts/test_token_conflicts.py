"""Conflict alarm and force-refresh budget, against the sandbox: a token we hold as fresh rejected with 40001/42001
is recorded once; three within an hour warn on the dashboard, the account's admin page and /metrics; force refreshes
stay within WeChat's 20 a day."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.clients import wechat_client_for
from accounts.models import TokenConflict
from accounts.selectors import token_conflict_alarms
from sandbox.demo import DEMO_APPID
from tests.factories import english_client
from wxnotify import encryption
from wxnotify.wechat.tokens import (
    FORCE_REFRESH_DAILY_LIMIT,
    _force_refresh_count_key,
    cache_key,
    default_token_manager,
)

TEMPLATES_API = "/cgi-bin/template/get_all_private_template"
STABLE_TOKEN = "/cgi-bin/stable_token"


@pytest.fixture
def client_a(account_a, sandbox_api, fresh_cache, fresh_demo_token):
    return wechat_client_for(account_a)


def another_system_replaces_the_token(sandbox) -> None:
    """What a force refresh by another system holding the AppSecret does: every token we hold is revoked."""
    assert sandbox.invalidate_tokens(DEMO_APPID) >= 1


def force_refreshes(sandbox) -> int:
    return sum(1 for request in sandbox.requests(STABLE_TOKEN) if b'"force_refresh":true' in request.body)


def metric(text: str, family: str, sample: str, **labels: str) -> float:
    for parsed in text_string_to_metric_families(text):
        if parsed.name == family:
            for found in parsed.samples:
                if found.name == sample and found.labels == labels:
                    return found.value
    return 0.0


def superuser_client():
    return english_client(get_user_model().objects.create_superuser("root", password="pw"))


def test_a_conflict_storm_raises_the_alarm_everywhere(client_a, account_a, sandbox_api, client, caplog):
    counted_before = metric(
        client.get("/metrics").content.decode(),
        "wxnotify_token_conflicts",
        "wxnotify_token_conflicts_total",
        account=DEMO_APPID,
        errcode="40001",
    )
    client_a.get_all_private_templates()
    for _ in range(3):
        another_system_replaces_the_token(sandbox_api)
        with caplog.at_level(logging.WARNING, logger="wxnotify.wechat"):
            client_a.get_all_private_templates()  # 40001, refreshed, retried: the call itself succeeds

    assert list(TokenConflict.objects.values_list("account", "errcode")) == [(account_a.pk, 40001)] * 3
    assert "another system is fetching tokens with this AppSecret" in caplog.text
    assert token_conflict_alarms([account_a.pk], timezone.now()) == {account_a.pk: 3}

    admin = superuser_client()
    dashboard = admin.get(reverse("operations:dashboard")).content.decode()
    assert 'id="ops-token-conflicts"' in dashboard
    assert "WeChat rejected 3 access_tokens in the last hour" in dashboard

    page = admin.get(reverse("admin:accounts_officialaccount_change", args=[account_a.pk])).content.decode()
    assert "3 in the last hour, 3 in the last 24 hours." in page
    assert "token API (GET /api/v1/accounts/&lt;appid&gt;/access-token/)" in page
    assert "switch it to stable_token" in page

    scraped = client.get("/metrics").content.decode()
    assert (
        metric(
            scraped,
            "wxnotify_token_conflicts",
            "wxnotify_token_conflicts_total",
            account=DEMO_APPID,
            errcode="40001",
        )
        == counted_before + 3
    )
    assert (
        metric(scraped, "wxnotify_token_conflicts_last_hour", "wxnotify_token_conflicts_last_hour", account=DEMO_APPID)
        == 3
    )
    assert metric(scraped, "wxnotify_token_conflict_alarm", "wxnotify_token_conflict_alarm", account=DEMO_APPID) == 1


def test_two_conflicts_or_old_ones_raise_no_alarm(client_a, account_a, sandbox_api):
    client_a.get_all_private_templates()
    for _ in range(2):
        another_system_replaces_the_token(sandbox_api)
        client_a.get_all_private_templates()
    TokenConflict.objects.create(account=account_a, errcode=42001)
    TokenConflict.objects.filter(errcode=42001).update(detected_at=timezone.now() - timedelta(minutes=61))

    assert token_conflict_alarms([account_a.pk], timezone.now()) == {}
    page = superuser_client().get(reverse("operations:dashboard")).content.decode()
    assert 'id="ops-token-conflicts"' not in page


def test_a_rejection_seen_by_many_callers_is_one_conflict(client_a, sandbox_api):
    manager = default_token_manager()
    held = manager.get_token(client_a)
    another_system_replaces_the_token(sandbox_api)

    for _ in range(3):  # three threads or hosts that all sent with the rejected token
        manager.refresh(client_a, failed_token=held, errcode=40001)

    assert TokenConflict.objects.count() == 1


@pytest.mark.parametrize("errcode", [40014, None])
def test_other_rejections_are_no_conflict(client_a, sandbox_api, errcode):
    manager = default_token_manager()
    held = manager.get_token(client_a)
    another_system_replaces_the_token(sandbox_api)

    manager.refresh(client_a, failed_token=held, errcode=errcode)

    assert not TokenConflict.objects.exists()


def test_a_token_about_to_expire_is_no_conflict(client_a, sandbox_api):
    manager = default_token_manager()
    held = manager.get_token(client_a)
    now = time.time()
    entry = {"sealed": encryption.encrypt(held), "expires_at": now + 30, "fetched_at": now - 7000}
    manager.cache.set(cache_key(DEMO_APPID), entry, timeout=30)

    manager.refresh(client_a, failed_token=held, errcode=42001)

    assert not TokenConflict.objects.exists()


def test_force_refreshes_are_counted_and_shown(client_a, account_a, sandbox_api):
    client_a.get_all_private_templates()
    # Rejected, yet normal mode hands back the same token: only force mode gets a new one.
    sandbox_api.add_api_fault(TEMPLATES_API, errcode=40001, times=1)

    client_a.get_all_private_templates()

    assert force_refreshes(sandbox_api) == 1
    assert default_token_manager().force_refreshes_today(DEMO_APPID) == 1
    page = superuser_client().get(reverse("admin:accounts_officialaccount_change", args=[account_a.pk]))
    assert "1 of the 20 WeChat allows a day" in page.content.decode()


def test_past_the_daily_budget_no_force_refresh_is_made(client_a, sandbox_api, caplog):
    held = client_a.token_manager.get_token(client_a)
    manager = default_token_manager()
    manager.cache.set(_force_refresh_count_key(DEMO_APPID, time.time()), FORCE_REFRESH_DAILY_LIMIT, timeout=3600)
    sandbox_api.add_api_fault(TEMPLATES_API, errcode=40001, times=1)

    with caplog.at_level(logging.WARNING, logger="wxnotify.wechat"):
        client_a.get_all_private_templates()  # the retry with the normal-mode token passes: the fault was once

    assert force_refreshes(sandbox_api) == 0
    assert manager.force_refreshes_today(DEMO_APPID) == FORCE_REFRESH_DAILY_LIMIT
    assert "force refreshes WeChat allows a day are used up: staying in normal mode" in caplog.text
    assert manager.peek(DEMO_APPID).value == held
