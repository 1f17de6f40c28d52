"""GET /healthz: every check passes on a working stack, and each broken dependency is named in a 503."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import pytest
import redis
from django.db import OperationalError
from django.utils import timezone
from django_q.brokers.redis_broker import Redis as RedisBroker

from accounts.models import OfficialAccount
from messaging.models import Message
from operations import health
from templates_app.models import MessageTemplate
from tests.servers import free_port

pytestmark = pytest.mark.django_db


def queued_message(created_ago: timedelta, next_attempt_in: timedelta | None = None) -> Message:
    account, _ = OfficialAccount.objects.get_or_create(
        appid="wx00000000000000c1", defaults={"name": "Health", "app_secret": "s" * 32, "token": "t"}
    )
    template, _ = MessageTemplate.objects.get_or_create(
        account=account, template_id="tpl-health", defaults={"title": "T", "content": "{{thing1.DATA}}"}
    )
    message = Message.objects.create(
        account=account,
        template=template,
        template_id_sent=template.template_id,
        touser=f"openid-{Message.objects.count()}",
        client_msg_id=f"health-{Message.objects.count()}",
        next_attempt_at=None if next_attempt_in is None else timezone.now() + next_attempt_in,
    )
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - created_ago)
    return message


def test_all_checks_pass(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker", "queue_lag"}
    for check in body["checks"].values():
        assert check["ok"] is True
        assert isinstance(check["ms"], float)
    assert body["checks"]["queue_lag"]["lag_seconds"] == 0.0
    assert body["checks"]["broker"]["queued_tasks"] >= 0
    assert "failed" not in body
    assert response["Cache-Control"].startswith("max-age=0")


def test_a_cache_on_a_closed_port_fails_the_cache_check(client, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    }
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert "cache" in body["failed"]
    assert body["checks"]["cache"]["ok"] is False
    assert body["checks"]["cache"]["error"]
    assert body["checks"]["database"]["ok"] is True
    assert "127.0.0.1" not in response.content.decode()


def test_a_redis_that_stops_answering_fails_the_cache_check_within_its_timeout(client, settings):
    """Accepts connections, never replies: without a socket timeout the probe (and every request) would hang."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings.CACHES = {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{silent.getsockname()[1]}/0",
                "OPTIONS": {
                    "CLIENT_CLASS": "django_redis.client.DefaultClient",
                    "SOCKET_CONNECT_TIMEOUT": 1,
                    "SOCKET_TIMEOUT": 1,
                },
            }
        }
        started = time.monotonic()
        response = client.get("/healthz")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["checks"]["cache"]["error"] == "TimeoutError"
    assert elapsed < 10


def test_a_broker_on_a_closed_port_fails_the_broker_check(client, monkeypatch):
    port = free_port()

    class UnreachableRedisBroker(RedisBroker):
        @staticmethod
        def get_connection(list_key=None):
            return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

    monkeypatch.setattr(health, "get_broker", lambda: UnreachableRedisBroker(list_key="wxnotify-health-test"))
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["broker"]
    assert body["checks"]["broker"] == {"ok": False, "ms": body["checks"]["broker"]["ms"], "error": "ConnectionError"}


def test_a_failing_database_is_a_503_not_a_500(client, monkeypatch):
    class BrokenConnection:
        def cursor(self):
            raise OperationalError("could not connect to server at db.internal:5432 as user wxnotify")

    monkeypatch.setattr(health, "connection", BrokenConnection())
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert "database" in body["failed"]
    assert body["checks"]["database"]["error"] == "OperationalError"
    assert "db.internal" not in response.content.decode()


def test_queue_lag_over_the_threshold_fails(client, settings):
    settings.WXNOTIFY_HEALTH_MAX_QUEUE_LAG_SECONDS = 60
    queued_message(created_ago=timedelta(minutes=10))
    queued_message(created_ago=timedelta(seconds=5))
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["queue_lag"]
    lag = body["checks"]["queue_lag"]
    assert lag["ok"] is False
    assert 600 <= lag["lag_seconds"] < 660
    assert lag["threshold_seconds"] == 60


def test_messages_waiting_for_a_later_attempt_are_not_lag(client, settings):
    settings.WXNOTIFY_HEALTH_MAX_QUEUE_LAG_SECONDS = 60
    queued_message(created_ago=timedelta(hours=2), next_attempt_in=timedelta(minutes=30))
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"]["queue_lag"]["lag_seconds"] == 0.0


def test_a_retry_is_due_from_its_attempt_time_not_its_acceptance():
    message = queued_message(created_ago=timedelta(hours=2), next_attempt_in=timedelta(minutes=-3))
    now = timezone.now()
    assert 180 <= health.queue_lag_seconds(now) < 185
    Message.objects.filter(pk=message.pk).update(status=Message.Status.SENT)
    assert health.queue_lag_seconds(now) == 0.0


def test_only_get_is_allowed(client):
    assert client.post("/healthz").status_code == 405
