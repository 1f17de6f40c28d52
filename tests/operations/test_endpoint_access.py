"""Who reads what from /metrics and /healthz: the bearer token, WXNOTIFY_METRICS_PUBLIC, the DEBUG demo, anonymous
load balancers; and the token stays a secret (masked in logs, long enough)."""

from __future__ import annotations

import pytest
from django.apps import apps

from operations.checks import metrics_reachable
from tests.factories import run_manage_py
from wxnotify.log import MASK, redact

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-0123456789abcdef"


@pytest.fixture
def production(settings):
    """DEBUG off, no token, not public: what a production start gets unless it configures /metrics."""
    settings.DEBUG = False
    settings.WXNOTIFY_METRICS_TOKEN = ""
    settings.WXNOTIFY_METRICS_PUBLIC = False
    return settings


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_without_a_token_production_metrics_do_not_exist(client, production):
    response = client.get("/metrics")
    assert response.status_code == 404
    assert b"wxnotify_" not in response.content
    assert client.get("/metrics", **bearer()).status_code == 404


def test_check_deploy_warns_when_metrics_are_unreachable(production):
    assert [warning.id for warning in metrics_reachable()] == ["operations.W001"]
    production.WXNOTIFY_METRICS_TOKEN = TOKEN
    assert metrics_reachable() == []
    production.WXNOTIFY_METRICS_TOKEN = ""
    production.WXNOTIFY_METRICS_PUBLIC = True
    assert metrics_reachable() == []


def test_production_metrics_need_the_bearer_token(client, production):
    production.WXNOTIFY_METRICS_TOKEN = TOKEN
    for headers in ({}, bearer("wrong-token-0123456789abcdef"), {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"}):
        refused = client.get("/metrics", **headers)
        assert refused.status_code == 401
        assert refused["WWW-Authenticate"] == 'Bearer realm="wxnotify operations"'
        assert b"wxnotify_" not in refused.content
    response = client.get("/metrics", **bearer())
    assert response.status_code == 200
    assert b"wxnotify_queue_lag_seconds" in response.content
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"bearer  {TOKEN} ").status_code == 200


def test_a_token_of_other_characters_is_refused_not_an_error(client, production):
    production.WXNOTIFY_METRICS_TOKEN = TOKEN
    assert client.get("/metrics", **bearer("jeton-de-mise-à-jour-ü-0123456789")).status_code == 401


def test_metrics_public_opens_metrics_without_a_token(client, production):
    production.WXNOTIFY_METRICS_PUBLIC = True
    assert client.get("/metrics").status_code == 200
    assert client.get("/healthz").json()["checks"]


def test_a_configured_token_is_required_even_when_public(client, production):
    production.WXNOTIFY_METRICS_PUBLIC = True
    production.WXNOTIFY_METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 401
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/metrics", **bearer()).status_code == 200


def test_the_debug_demo_without_a_token_keeps_metrics_and_health_details_open(client, settings):
    settings.DEBUG = True
    settings.WXNOTIFY_METRICS_TOKEN = ""
    settings.WXNOTIFY_METRICS_PUBLIC = False
    assert client.get("/metrics").status_code == 200
    assert set(client.get("/healthz").json()["checks"]) == {"database", "cache", "broker", "queue_lag"}


def test_anonymous_health_says_only_ok(client, production):
    production.WXNOTIFY_METRICS_TOKEN = TOKEN
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


def test_anonymous_health_says_only_not_ok(client, production):
    production.WXNOTIFY_HEALTH_MAX_QUEUE_LAG_SECONDS = -1  # any lag, even none, now fails the queue check
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "fail"}


def test_health_details_with_the_token(client, production):
    production.WXNOTIFY_METRICS_TOKEN = TOKEN
    production.WXNOTIFY_HEALTH_MAX_QUEUE_LAG_SECONDS = -1
    response = client.get("/healthz", **bearer())
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["failed"] == ["queue_lag"]
    assert body["checks"]["broker"]["queued_tasks"] >= 0
    assert body["checks"]["queue_lag"]["lag_seconds"] == 0.0
    assert client.get("/healthz", **bearer("wrong-token-0123456789abcdef")).json() == {"status": "fail"}


def test_the_token_is_masked_in_logs(settings):
    settings.WXNOTIFY_METRICS_TOKEN = "operations-token-masked-0123456789"
    apps.get_app_config("operations").ready()
    assert redact(f"Authorization: Bearer {settings.WXNOTIFY_METRICS_TOKEN}") == f"Authorization: Bearer {MASK}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("token", "starts"),
    [("short-token", False), ("a-token-long-enough-0123", True)],
)
def test_a_short_token_is_refused_at_start(tmp_path, token, starts):
    result = run_manage_py(tmp_path, "check", DJANGO_DEBUG="1", WXNOTIFY_METRICS_TOKEN=token)
    assert (result.returncode == 0) is starts, result.stderr
    if not starts:
        assert "WXNOTIFY_METRICS_TOKEN must be at least 16 characters" in result.stderr
        assert token not in result.stderr
