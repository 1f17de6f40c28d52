"""The callback URLs leave the middleware chain at ``CallbackShortcutMiddleware``: what is above it still guards them
(forwarded headers, HTTPS redirect), the view's own checks still refuse oversized bodies and bad signatures, and
nothing below it (sessions, locale, CSRF, authentication, messages, axes) runs for them."""

from __future__ import annotations

import pytest
from axes.middleware import AxesMiddleware
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.locale import LocaleMiddleware
from django.test import Client
from django.urls import resolve, reverse
from django.utils import translation

from accounts.models import OfficialAccount
from callbacks import services
from callbacks.messages import CallbackResponse
from callbacks.middleware import CALLBACK_PATH_PREFIX, CALLBACK_URLCONF
from messaging.models import DeliveryReceipt
from tests.callbacks.test_callback_endpoint import SAFE_APPID, WeChat, make_account, new_openid, receipt_xml

pytestmark = pytest.mark.usefixtures("fresh_cache")

SKIPPED = (
    SessionMiddleware,
    LocaleMiddleware,
    CsrfViewMiddleware,
    AuthenticationMiddleware,
    MessageMiddleware,
    XFrameOptionsMiddleware,
)


@pytest.fixture
def safe(db, client) -> WeChat:
    return WeChat(client, make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE))


@pytest.fixture
def ran(monkeypatch) -> list[str]:
    """The names of the browser middleware that saw a request (their hooks wrapped to record it)."""
    seen: list[str] = []
    for middleware in SKIPPED:
        hook = "process_request" if hasattr(middleware, "process_request") else "process_response"
        real = getattr(middleware, hook)

        def recording(self, *args, real=real, name=middleware.__name__):
            seen.append(name)
            return real(self, *args)

        monkeypatch.setattr(middleware, hook, recording)
    real_axes = AxesMiddleware.__call__

    def axes_recording(self, request):
        seen.append(AxesMiddleware.__name__)
        return real_axes(self, request)

    monkeypatch.setattr(AxesMiddleware, "__call__", axes_recording)
    return seen


def test_the_callback_path_runs_without_the_browser_middleware(safe, ran):
    response = safe.post(receipt_xml(new_openid(), 5_000_001, "success"))
    assert response.content == b"success"
    assert DeliveryReceipt.objects.filter(msgid=5_000_001).exists()
    assert ran == []
    assert "X-Frame-Options" not in response  # set by XFrameOptionsMiddleware on every other answer
    assert response["X-Request-ID"]  # RequestIdMiddleware, above the shortcut, still runs

    Client().get(reverse("console:login"))
    assert {name for name in ran} == {middleware.__name__ for middleware in (*SKIPPED, AxesMiddleware)}


def test_the_callback_path_still_refuses_bad_signatures_and_oversized_bodies(safe, settings):
    xml = receipt_xml(new_openid(), 5_000_002, "success")
    query = safe.query()
    query["signature"] = "0" * 40
    assert safe.post_raw(query, xml).status_code == 403
    settings.WECHAT_CALLBACK_MAX_BODY_BYTES = 200
    assert safe.post(xml).status_code == 413
    assert not DeliveryReceipt.objects.exists()


def test_the_forwarded_headers_rule_and_the_https_redirect_still_apply(db, settings):
    """SecurityMiddleware and ForwardedHeadersMiddleware sit above the shortcut: a client that is not the proxy cannot
    claim HTTPS on the callback URL either."""
    settings.WXNOTIFY_BEHIND_PROXY = True
    settings.WXNOTIFY_PROXY_ADDRESSES = ["10.0.0.1"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    account = make_account(SAFE_APPID, OfficialAccount.MessageMode.SAFE)
    xml = receipt_xml(new_openid(), 5_000_003, "success")
    direct = WeChat(Client(REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_PROTO="https"), account)
    assert direct.post(xml).status_code == 301
    proxied = WeChat(Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_PROTO="https"), account)
    assert proxied.post(xml).content == b"success"


def test_the_callback_answers_in_the_site_language_whatever_the_thread_served_before(safe, monkeypatch, settings):
    languages: list[str] = []

    def handle_post(account, query, body):
        languages.append(translation.get_language())
        return CallbackResponse("success")

    monkeypatch.setattr(services, "handle_post", handle_post)
    with translation.override("en"):
        safe.post(receipt_xml(new_openid(), 5_000_004, "success"))
    assert languages == [settings.LANGUAGE_CODE]


def test_the_prefix_is_the_callback_urls_and_an_unknown_url_under_it_is_404(db, client):
    path = reverse("callbacks:wechat-callback", args=["wx0123456789abcdef"])
    assert path.startswith(CALLBACK_PATH_PREFIX)
    assert resolve(path).func is resolve(path, urlconf=CALLBACK_URLCONF).func  # the shortcut calls what Django would
    unknown = f"{CALLBACK_PATH_PREFIX}wx0123456789abcdef/extra/"
    assert client.post(unknown, data=b"", content_type="text/xml").status_code == 404
