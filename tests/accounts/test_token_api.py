"""The token API (``GET /api/v1/accounts/<appid>/access-token/``) against the sandbox: who may read, min_ttl,
single flight with concurrent readers, the record of every read, the throttle, and no token in the logs."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connections
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import AccessTokenRead, OfficialAccount
from accounts.selectors import TOKEN_READERS_GROUP
from sandbox.demo import DEMO_APPID
from tests.factories import OTHER_APPID
from wxnotify import encryption
from wxnotify.log import MASK, redact
from wxnotify.wechat import tokens as tokens_module
from wxnotify.wechat.tokens import cache_key, default_token_manager

STABLE_TOKEN = "/cgi-bin/stable_token"
URL = f"/api/v1/accounts/{DEMO_APPID}/access-token/"


def api_client(user) -> APIClient:
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def readers_group() -> Group:
    """The group of migration accounts 0009 (re-created after a transactional test emptied the database)."""
    group, created = Group.objects.get_or_create(name=TOKEN_READERS_GROUP)
    if created:
        group.permissions.add(Permission.objects.get(codename="read_access_token"))
    return group


def make_reader(django_user_model, name: str, account: OfficialAccount):
    user = django_user_model.objects.create_user(name)
    user.groups.add(readers_group())
    account.operators.add(user)
    return user


def token_fetches(sandbox) -> int:
    return sum(1 for request in sandbox.requests() if request.path in (STABLE_TOKEN, "/cgi-bin/token"))


def cached_expiry(appid: str = DEMO_APPID) -> float:
    return default_token_manager().cache.get(cache_key(appid))["expires_at"]


@pytest.fixture
def reader(django_user_model, account_a):
    return make_reader(django_user_model, "billing-service", account_a)


@pytest.fixture
def api(reader, sandbox_api, fresh_cache, fresh_demo_token) -> APIClient:
    return api_client(reader)


def test_the_migration_makes_a_token_readers_group_and_gives_staff_nothing(db):
    group = Group.objects.get(name=TOKEN_READERS_GROUP)
    assert list(group.permissions.values_list("codename", flat=True)) == ["read_access_token"]
    assert not Group.objects.filter(permissions__codename="read_access_token").exclude(pk=group.pk).exists()
    admins = Group.objects.get(name="wxnotify admins")
    assert admins.permissions.filter(codename="view_accesstokenread").exists()


def test_a_reader_gets_the_token_wechat_issued_and_the_read_is_recorded(api, reader, sandbox_api, account_a):
    response = api.get(URL)

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "expires_at"}
    assert sandbox_api.state.authenticate(body["access_token"]).appid == DEMO_APPID
    expires_at = datetime.fromisoformat(body["expires_at"]).timestamp()
    assert abs(expires_at - cached_expiry()) < 1
    assert token_fetches(sandbox_api) == 1
    read = AccessTokenRead.objects.get()
    assert (read.account, read.user, read.username, read.address) == (account_a, reader, "billing-service", "127.0.0.1")
    assert (read.min_ttl, read.refreshed) == (300, True)


def test_the_token_is_stored_encrypted_and_a_second_read_reuses_it(api, sandbox_api):
    first = api.get(URL).json()["access_token"]
    second = api.get(URL).json()["access_token"]

    assert first == second
    assert token_fetches(sandbox_api) == 1
    assert [read.refreshed for read in AccessTokenRead.objects.order_by("id")] == [True, False]
    stored = default_token_manager().cache.get(cache_key(DEMO_APPID))
    assert first not in repr(stored)
    assert encryption.decrypt(stored["sealed"]) == first


def test_min_ttl_fetches_only_when_the_token_has_less_left(api, sandbox_api, account_a, monkeypatch):
    # The classic endpoint issues a full-length token on every fetch; 1,000 s tokens make "too short" easy to reach.
    OfficialAccount.objects.filter(pk=account_a.pk).update(token_endpoint=OfficialAccount.TokenEndpoint.CLASSIC)
    sandbox_api.set_faults(token_ttl=1000)
    # A token fetched moments ago normally counts as good whatever is asked (tokens.MIN_REFETCH_INTERVAL).
    monkeypatch.setattr(tokens_module, "MIN_REFETCH_INTERVAL", 0)
    first = api.get(URL, {"min_ttl": 500}).json()["access_token"]

    assert api.get(URL, {"min_ttl": 900}).json()["access_token"] == first
    sandbox_api.set_faults(token_ttl=7200)
    renewed = api.get(URL, {"min_ttl": 1200}).json()

    assert renewed["access_token"] != first
    assert datetime.fromisoformat(renewed["expires_at"]).timestamp() > time.time() + 7000
    assert token_fetches(sandbox_api) == 2
    assert list(AccessTokenRead.objects.order_by("id").values_list("min_ttl", "refreshed")) == [
        (500, True),
        (900, False),
        (1200, True),
    ]


def test_a_stable_token_is_never_force_refreshed_for_a_reader(api, sandbox_api, monkeypatch):
    """stable_token keeps the current token until it expires: a longer min_ttl gets it back, with its true expiry."""
    sandbox_api.set_faults(token_ttl=1000)
    monkeypatch.setattr(tokens_module, "MIN_REFETCH_INTERVAL", 0)
    first = api.get(URL).json()

    again = api.get(URL, {"min_ttl": 7000}).json()

    assert again["access_token"] == first["access_token"]
    assert datetime.fromisoformat(again["expires_at"]).timestamp() < time.time() + 1000
    assert all(b'"force_refresh":false' in r.body for r in sandbox_api.requests(STABLE_TOKEN))


@pytest.mark.parametrize("min_ttl", ["-1", "7001", "soon", "1.5"])
def test_an_invalid_min_ttl_is_refused(api, min_ttl, sandbox_api):
    response = api.get(URL, {"min_ttl": min_ttl})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "min_ttl" in response.json()["errors"]
    assert token_fetches(sandbox_api) == 0
    assert not AccessTokenRead.objects.exists()


def test_business_staff_may_not_read_tokens(staff_a, sandbox_api, fresh_cache):
    response = api_client(staff_a).get(URL)

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert token_fetches(sandbox_api) == 0


def test_anonymous_callers_are_refused(db, sandbox_api):
    assert APIClient().get(URL).status_code == 401


def test_a_reader_of_another_account_gets_404_like_an_unknown_account(
    django_user_model, account_a, account_b, sandbox_api, fresh_cache
):
    other = api_client(make_reader(django_user_model, "other-service", account_b))

    for appid in (DEMO_APPID, "wx0123456789abcdef", "not-an-appid"):
        response = other.get(f"/api/v1/accounts/{appid}/access-token/")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert token_fetches(sandbox_api) == 0
    assert not AccessTokenRead.objects.exists()
    # Its own account answers (here: WeChat does not know account B, which is said as such).
    assert other.get(f"/api/v1/accounts/{OTHER_APPID}/access-token/").json()["code"] == "token_unavailable"


def test_a_wechat_refusal_is_a_clear_503_without_secrets(api, sandbox_api, account_a):
    sandbox_api.add_api_fault(STABLE_TOKEN, errcode=40125, times=1)

    response = api.get(URL)

    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "token_unavailable"
    assert "40125" in body["detail"]
    assert account_a.app_secret not in response.content.decode()
    assert not AccessTokenRead.objects.exists()


def test_reads_are_throttled_by_their_own_scope(api, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "token_read": "2/m"},
    }

    statuses = [api.get(URL).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert AccessTokenRead.objects.count() == 2


def test_the_token_never_reaches_the_logs(api, caplog):
    with caplog.at_level(logging.DEBUG):
        value = api.get(URL).json()["access_token"]

    assert all(value not in record.getMessage() for record in caplog.records)
    assert redact(f"token {value}") == f"token {MASK}"


@pytest.mark.django_db(transaction=True)
def test_two_readers_during_a_refresh_cause_one_fetch(django_user_model, sandbox_api, fresh_demo_token):
    from tests import factories

    account = factories.create_demo_account("Demo A")
    clients = [api_client(make_reader(django_user_model, f"service-{n}", account)) for n in range(2)]
    sandbox_api.add_api_fault(STABLE_TOKEN, delay_ms=500, times=None)  # the first fetch is still running
    barrier = threading.Barrier(len(clients))
    answers: list[dict] = []

    def read(client: APIClient) -> None:
        try:
            barrier.wait()
            response = client.get(URL, {"min_ttl": 600})
            answers.append(response.json())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=read, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(answers) == 2
    assert answers[0]["access_token"] == answers[1]["access_token"]
    assert token_fetches(sandbox_api) == 1
    assert sorted(AccessTokenRead.objects.values_list("refreshed", flat=True)) == [False, True]
