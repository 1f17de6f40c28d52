"""GET /metrics: Prometheus text that parses, with counters that move when sends, callbacks and token fetches happen.

Each test run writes its metrics to a directory of its own (tests/settings.py), so the counters seen here are this
process's; tests compare before and after because other tests of the run add to them too.
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlencode

import pytest
from django.core.cache import cache
from prometheus_client.parser import text_string_to_metric_families

from accounts.clients import wechat_client_for
from accounts.models import Follower, OfficialAccount
from messaging import metrics
from messaging.models import Message
from messaging.services import send_message
from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID
from tests.factories import ORDER_DATA, ORDER_TEMPLATE, create_demo_account, create_templates
from wxnotify.wechat.crypto import compute_signature
from wxnotify.wechat.errors import NetworkError, RecipientError
from wxnotify.wechat.tokens import default_token_manager

# What sends move.  A family appears once one of its counters moved in this run: wxnotify_callback_requests after a
# callback (test_callback_requests_are_counted_by_outcome), which a send does not make.
SEND_FAMILIES = {
    "wxnotify_messages",
    "wxnotify_queue_lag_seconds",
    "wxnotify_send_latency_seconds",
    "wxnotify_wechat_errors",
    "wxnotify_token_fetches",
}


def scrape(client, **headers) -> dict[str, dict[tuple, float]]:
    """Family name → {(sample name, sorted labels): value}, parsed by prometheus_client's own parser."""
    response = client.get("/metrics", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    families: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families


def value(families, family: str, sample: str, **labels) -> float:
    return families.get(family, {}).get((sample, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def demo_account(transactional_db, sandbox_api, settings, fresh_demo_token):
    """The sandbox's demo account on our side, with its templates and followers."""
    cache.clear()
    account = create_demo_account()
    create_templates(account)
    Follower.objects.bulk_create([Follower(account=account, openid=openid) for openid in sandbox_api.followers()])
    return account


def send_to(account, openids):
    return [
        send_message(account=account, template_id=ORDER_TEMPLATE, data=ORDER_DATA, touser=openid).message
        for openid in openids
    ]


def test_sends_move_the_latency_histogram_errors_token_fetches_and_the_status_gauge(client, demo_account, sandbox_api):
    before = scrape(client)
    send_to(demo_account, sandbox_api.followers()[:3])
    sandbox_api.set_faults(error_rate=1.0, error_code=43101)
    send_to(demo_account, sandbox_api.followers()[3:5])
    after = scrape(client)

    assert set(after) >= SEND_FAMILIES
    latency = "wxnotify_send_latency_seconds"
    for result, sent in (("ok", 3), ("wechat_error", 2)):
        labels = {"account": DEMO_APPID, "result": result, "channel": "template"}
        count = value(after, latency, f"{latency}_count", **labels) - value(
            before, latency, f"{latency}_count", **labels
        )
        assert count == sent
        in_inf = value(after, latency, f"{latency}_bucket", le="+Inf", **labels) - value(
            before, latency, f"{latency}_bucket", le="+Inf", **labels
        )
        assert in_inf == sent
        assert value(after, latency, f"{latency}_sum", **labels) > value(before, latency, f"{latency}_sum", **labels)
    errors = {"account": DEMO_APPID, "errcode": "43101", "kind": "recipient", "channel": "template"}
    assert (
        value(after, "wxnotify_wechat_errors", "wxnotify_wechat_errors_total", **errors)
        - value(before, "wxnotify_wechat_errors", "wxnotify_wechat_errors_total", **errors)
        == 2
    )
    fetches = {"account": DEMO_APPID, "endpoint": "stable", "force_refresh": "false"}
    assert (
        value(after, "wxnotify_token_fetches", "wxnotify_token_fetches_total", **fetches)
        - value(before, "wxnotify_token_fetches", "wxnotify_token_fetches_total", **fetches)
        == 1
    )
    statuses = {status: Message.objects.filter(status=status).count() for status in Message.Status.values}
    assert statuses[Message.Status.SENT] == 3
    assert statuses[Message.Status.FAILED] == 2
    for status in (Message.Status.QUEUED, Message.Status.SENDING):
        assert value(after, "wxnotify_messages", "wxnotify_messages", status=status) == statuses[status]
    assert ("wxnotify_messages", (("status", "sent"),)) not in after["wxnotify_messages"]


def test_a_token_fetch_is_counted_through_the_signal_and_the_token_never_shows(client, demo_account, sandbox_api):
    labels = {"account": DEMO_APPID, "endpoint": "stable", "force_refresh": "false"}
    before = value(scrape(client), "wxnotify_token_fetches", "wxnotify_token_fetches_total", **labels)
    client_for_demo = wechat_client_for(demo_account)
    token = default_token_manager().get_token(client_for_demo)
    default_token_manager().get_token(client_for_demo)  # cached: no second fetch
    default_token_manager().refresh(client_for_demo)
    response = client.get("/metrics")
    after = scrape(client)
    assert value(after, "wxnotify_token_fetches", "wxnotify_token_fetches_total", **labels) - before == 2
    assert token not in response.content.decode()
    assert DEMO_ACCOUNT["secret"] not in response.content.decode()


@pytest.fixture
def plain_account(db):
    return OfficialAccount.objects.create(
        name="Callbacks", appid="wx00000000000000d1", app_secret="s" * 32, token="metricstoken"
    )


def post_callback(client, account, *, signature: str | None = None):
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
    query = {
        "signature": signature or compute_signature(account.token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
    }
    body = (
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
        f"<FromUserName><![CDATA[openid-{nonce}]]></FromUserName><CreateTime>{timestamp}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event></xml>"
    )
    return client.post(f"{account.callback_path()}?{urlencode(query)}", data=body, content_type="text/xml")


def test_callback_requests_are_counted_by_outcome(client, plain_account):
    family, sample = "wxnotify_callback_requests", "wxnotify_callback_requests_total"
    ok = {"account": plain_account.appid, "method": "POST", "outcome": "ok"}
    forbidden = {"account": plain_account.appid, "method": "POST", "outcome": "forbidden"}
    unknown = {"account": "unknown", "method": "POST", "outcome": "unknown_account"}
    before = scrape(client)
    assert post_callback(client, plain_account).status_code == 200
    assert post_callback(client, plain_account, signature="0" * 40).status_code == 403
    assert (
        client.post("/wechat/callback/wx0000000000000bad/", data="<xml/>", content_type="text/xml").status_code == 404
    )
    after = scrape(client)
    assert value(after, family, sample, **ok) - value(before, family, sample, **ok) == 1
    assert value(after, family, sample, **forbidden) - value(before, family, sample, **forbidden) == 1
    assert value(after, family, sample, **unknown) - value(before, family, sample, **unknown) == 1
    assert not any(dict(labels).get("account") == "wx0000000000000bad" for _name, labels in after[family])


def test_send_results_are_told_apart():
    assert metrics.send_result(None) == "ok"
    assert metrics.send_result(RecipientError("refused", errcode=43101)) == "wechat_error"
    assert metrics.send_result(NetworkError("timed out", outcome_unknown=True)) == "no_answer"
    assert metrics.send_result(RuntimeError("bug")) == "internal_error"


@pytest.mark.django_db
def test_a_metrics_token_is_required_when_set(client, settings):
    settings.WXNOTIFY_METRICS_TOKEN = "scrape-me-0123456789"
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic scrape-me-0123456789").status_code == 401
    assert scrape(client, HTTP_AUTHORIZATION="Bearer scrape-me-0123456789")["wxnotify_messages"]


@pytest.mark.django_db
def test_openmetrics_is_served_when_asked_for(client):
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")
