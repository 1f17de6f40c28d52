"""An account that takes its access_token from another token authority: wxnotify never calls WeChat's token
endpoints for it, refreshes from the source, and holds (does not fail) its messages while the source fails."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import OfficialAccount
from messaging.models import Message
from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID
from tests.factories import ORDER_DATA, ORDER_TEMPLATE, english_client
from tests.servers import LOCALHOST, QuietHandler, serving
from wxnotify.log import MASK, redact
from wxnotify.wechat.errors import TOKEN_SOURCE_ERRCODE

SOURCE_SECRET = "shared-secret-of-the-token-authority"
WECHAT_TOKEN_PATHS = ("/cgi-bin/token", "/cgi-bin/stable_token")
sends = pytest.mark.django_db(transaction=True)


@dataclass
class TokenAuthority:
    """A stand-in for the company's other token authority: hands out tokens the sandbox issued."""

    sandbox: Any
    status: int = 200
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, authorization: str) -> tuple[int, dict]:
        with self.lock:
            self.requests.append(authorization)
        if authorization != f"Bearer {SOURCE_SECRET}":
            return 401, {"error": "unauthorized"}
        if self.status != 200:
            return self.status, {"error": "down"}
        issued = self.sandbox.state.issue_stable_token(
            {"grant_type": "client_credential", "appid": DEMO_APPID, "secret": DEMO_ACCOUNT["secret"]}
        )
        return 200, issued


@pytest.fixture
def authority(sandbox_api) -> Iterator[TokenAuthority]:
    source = TokenAuthority(sandbox_api)

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            status, body = source.answer(self.headers.get("Authorization", ""))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    with serving(ThreadingHTTPServer((LOCALHOST, 0), Handler)) as server:
        source.url = f"http://{LOCALHOST}:{server.server_address[1]}/token?key=abc123-source-key"
        yield source


@pytest.fixture
def external_account(account_a, authority, fresh_cache, fresh_demo_token) -> OfficialAccount:
    account_a.token_endpoint = OfficialAccount.TokenEndpoint.EXTERNAL
    account_a.token_source_url = authority.url
    account_a.token_source_secret = SOURCE_SECRET
    account_a.full_clean()
    account_a.save()
    return account_a


def wechat_token_calls(sandbox) -> int:
    return sum(1 for request in sandbox.requests() if request.path in WECHAT_TOKEN_PATHS)


def send(staff, openid: str) -> dict:
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=staff)[0].key}")
    body = {"account": DEMO_APPID, "touser": openid, "template_id": ORDER_TEMPLATE, "data": ORDER_DATA}
    response = client.post("/api/v1/messages/", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


@sends
def test_messages_go_out_with_the_sources_token_and_wechat_issues_none(external_account, staff_a, authority):
    sandbox = authority.sandbox
    openid = sandbox.followers()[0]

    assert send(staff_a, openid)["status"] == Message.Status.SENT
    assert send(staff_a, openid)["status"] == Message.Status.SENT

    assert len(sandbox.messages(DEMO_APPID)) == 2
    assert wechat_token_calls(sandbox) == 0
    assert authority.requests == [f"Bearer {SOURCE_SECRET}"]


@sends
def test_a_rejected_token_is_replaced_from_the_source(external_account, staff_a, authority):
    sandbox = authority.sandbox
    openid = sandbox.followers()[0]
    send(staff_a, openid)
    sandbox.invalidate_tokens(DEMO_APPID)  # the authority renewed its token (with force_refresh, say)

    assert send(staff_a, openid)["status"] == Message.Status.SENT

    assert len(authority.requests) == 2
    assert wechat_token_calls(sandbox) == 0


@sends
def test_a_failing_source_holds_the_messages_with_a_clear_error(external_account, staff_a, authority):
    authority.status = 503

    message = send(staff_a, authority.sandbox.followers()[0])

    assert message["status"] == Message.Status.QUEUED
    stored = Message.objects.get(pk=message["id"])
    assert stored.status == Message.Status.QUEUED
    assert stored.next_attempt_at is not None
    external_account.refresh_from_db()
    assert external_account.last_error_code == TOKEN_SOURCE_ERRCODE
    assert "external token source" in external_account.last_error_message
    assert "HTTP 503" in external_account.last_error_message
    assert "abc123-source-key" not in external_account.last_error_message
    assert wechat_token_calls(authority.sandbox) == 0
    assert authority.sandbox.messages(DEMO_APPID) == []


@pytest.mark.django_db
def test_the_token_api_serves_the_sources_token(external_account, authority, django_user_model):
    from tests.accounts.test_token_api import api_client, make_reader

    reader = api_client(make_reader(django_user_model, "crm", external_account))
    body = reader.get(f"/api/v1/accounts/{DEMO_APPID}/access-token/").json()

    assert authority.sandbox.state.authenticate(body["access_token"]).appid == DEMO_APPID
    assert wechat_token_calls(authority.sandbox) == 0
    assert len(authority.requests) == 1
    assert redact(f"Bearer {SOURCE_SECRET}") == f"Bearer {MASK}"


@pytest.mark.django_db
def test_a_wrong_secret_is_a_clear_error(external_account, authority, django_user_model):
    from tests.accounts.test_token_api import api_client, make_reader

    OfficialAccount.objects.filter(pk=external_account.pk).update(token_source_secret="not-the-secret")
    reader = api_client(make_reader(django_user_model, "crm", external_account))
    response = reader.get(f"/api/v1/accounts/{DEMO_APPID}/access-token/")

    assert response.status_code == 503
    assert "external token source" in response.json()["detail"]
    assert "HTTP 401" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "secret", "bad_field"),
    [
        ("http://tokens.example.com/token", SOURCE_SECRET, "token_source_url"),
        ("", SOURCE_SECRET, "token_source_url"),
        ("https://tokens.example.com/token", "", "token_source_secret"),
    ],
)
def test_an_external_source_needs_an_https_url_and_a_secret(account_a, url, secret, bad_field):
    account_a.token_endpoint = OfficialAccount.TokenEndpoint.EXTERNAL
    account_a.token_source_url, account_a.token_source_secret = url, secret

    with pytest.raises(ValidationError) as raised:
        account_a.full_clean()

    assert set(raised.value.message_dict) == {bad_field}


@pytest.mark.django_db
def test_the_admin_never_shows_the_source_url_or_secret(external_account, authority):
    admin = english_client(get_user_model().objects.create_superuser("root", password="pw"))

    page = admin.get(reverse("admin:accounts_officialaccount_change", args=[external_account.pk])).content.decode()

    assert "Replace token source secret" in page
    assert SOURCE_SECRET not in page
    assert "abc123-source-key" not in page
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT token_source_url, token_source_secret FROM accounts_officialaccount WHERE id = %s",
            [external_account.pk],
        )
        url, secret = cursor.fetchone()
    assert "abc123-source-key" not in url  # both columns hold ciphertext
    assert SOURCE_SECRET not in secret
