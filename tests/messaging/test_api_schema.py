"""The API's OpenAPI schema and offline Swagger UI, throttling, and the error shape outside the views."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import RequestFactory
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from messaging.api import throttles
from messaging.api.throttles import parse_rate, throttle_cache
from wxnotify.http_errors import server_error

MESSAGES = "/api/v1/messages/"


@pytest.fixture
def superuser_api(admin_user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=admin_user).key}")
    return client


@pytest.fixture
def throttle_rates(settings, monkeypatch):
    """Set throttle rates for one test; windows left over from other tests are cleared first.

    The throttles' clock is pinned half-way into a minute, an hour and a day: a test running across a window's end
    would otherwise see its count start again (fixed windows) or a short Retry-After.
    """
    throttle_cache().clear()
    mid_window = 20_000 * 86_400 + 12 * 3_600 + 30 * 60 + 30
    monkeypatch.setattr(throttles, "time", SimpleNamespace(time=lambda: mid_window, monotonic=time.monotonic))

    def set_rates(**rates: str) -> None:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}

    yield set_rates
    throttle_cache().clear()


@pytest.mark.django_db
def test_schema_is_valid_openapi_without_warnings(tmp_path: Path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    text = target.read_text()
    assert text.startswith("openapi: 3")
    for path in (
        "/api/v1/messages/:",
        "/api/v1/messages/{id}/:",
        "/api/v1/campaigns/:",
        "/api/v1/campaigns/{id}/cancel/:",
        "/api/v1/campaigns/{id}/retry-failed/:",
        "/api/v1/followers/:",
        "/api/v1/templates/:",
    ):
        assert path in text


@pytest.mark.django_db
def test_schema_endpoint_describes_the_send_operation(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    send = schema["paths"]["/api/v1/messages/"]["post"]
    assert {"200", "202", "400", "401", "403", "422", "429"} <= set(send["responses"])
    assert any(param["name"] == "Idempotency-Key" and param["in"] == "header" for param in send["parameters"])
    listing = schema["paths"]["/api/v1/messages/"]["get"]
    names = {param["name"] for param in listing["parameters"]}
    assert {"status", "account", "template", "openid", "campaign", "created_after", "created_before"} <= names
    assert {"cursor", "page_size"} <= names
    message = schema["components"]["schemas"]["Message"]["properties"]
    assert message["msgid"]["type"] == "string"
    assert "tokenAuth" in schema["components"]["securitySchemes"]


@pytest.mark.django_db
def test_docs_page_uses_only_local_assets(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls, html
    assert not re.search(r"https?://|//cdn", html)
    assets = [url for url in urls if url.startswith("/static/")]
    assert {Path(url).name for url in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for url in assets:
        assert finders.find(url.removeprefix("/static/")), url
    script = client.get("/api/docs/", {"script": ""})
    assert script.status_code == 200
    assert "/api/schema/" in script.content.decode()


@pytest.mark.parametrize(("rate", "parsed"), [("100/s", (100, 1)), ("5/min", (5, 60)), ("9/hour", (9, 3600))])
def test_parse_rate(rate, parsed):
    assert parse_rate(rate) == parsed


def test_parse_rate_refuses_nonsense():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured):
        parse_rate("fast")


def test_burst_throttle_answers_429_with_retry_after(superuser_api, throttle_rates):
    throttle_rates(burst="3/m", sustained="100/h")
    statuses = [superuser_api.get(MESSAGES).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = superuser_api.get(MESSAGES)
    body = response.json()
    assert (body["status"], body["code"]) == (429, "throttled")
    assert 1 <= int(response["Retry-After"]) <= 60


def test_send_scope_limits_sends_not_reads(superuser_api, throttle_rates):
    throttle_rates(burst="100/m", sustained="100/h", send="1/h")
    body: dict[str, Any] = {"account": "wx0000000000000000"}
    assert superuser_api.post(MESSAGES, body, format="json").status_code == 400
    throttled = superuser_api.post(MESSAGES, body, format="json")
    assert throttled.status_code == 429
    assert int(throttled["Retry-After"]) > 60
    assert superuser_api.get(MESSAGES).status_code == 200


def test_throttles_count_per_user(superuser_api, django_user_model, throttle_rates):
    throttle_rates(burst="1/m")
    assert superuser_api.get(MESSAGES).status_code == 200
    assert superuser_api.get(MESSAGES).status_code == 429
    other = APIClient()
    other_admin = django_user_model.objects.create_superuser("other-admin")
    other.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=other_admin).key}")
    assert other.get(MESSAGES).status_code == 200


def test_server_errors_under_api_answer_json():
    request = RequestFactory().get("/api/v1/messages/")
    response = server_error(request)
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert (body["status"], body["code"], body["errors"]) == (500, "server_error", {})
    assert body["detail"]


def test_requests_django_refuses_before_any_view_answer_json_under_api(client):
    response = client.get(MESSAGES, HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    assert client.get("/admin/", HTTP_HOST="evil.example")["Content-Type"].startswith("text/html")


def test_server_errors_elsewhere_keep_djangos_page():
    response = server_error(RequestFactory().get("/admin/"))
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_windows_of_several_scopes_are_counted_together_and_read_back_through_the_cache(throttle_rates):
    from messaging.api.throttles import count_requests

    assert count_requests([("throttle:test:a", 60), ("throttle:test:b", 3600)]) == [1, 1]
    assert count_requests([("throttle:test:a", 60)]) == [2]
    counters = throttle_cache()
    assert (counters.get("throttle:test:a"), counters.get("throttle:test:b")) == (2, 1)
    assert counters.incr("throttle:test:a") == 3


def test_a_send_counts_the_request_once_in_each_scope(superuser_api, throttle_rates):
    throttle_rates(burst="2/m", sustained="100/h", send="100/h")
    body: dict[str, Any] = {"account": "wx0000000000000000"}
    assert [superuser_api.post(MESSAGES, body, format="json").status_code for _ in range(3)] == [400, 400, 429]
    throttle_cache().clear()
    throttle_rates(burst="100/m", sustained="100/h", send="2/h")
    assert [superuser_api.post(MESSAGES, body, format="json").status_code for _ in range(3)] == [400, 400, 429]
