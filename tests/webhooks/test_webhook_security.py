"""What a webhook may reach (docs/security.md), the README's signature check, and the secret kept sealed."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from tests.factories import create_staff, ensure_staff_group
from webhooks import signing, transport
from webhooks.delivery import attempt, claim, fan_out
from webhooks.models import Delivery, Endpoint, Event
from webhooks.services import reseal_secrets

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "s3cret-for-the-tests"


def readme_verify():
    """The README's sample, run as a receiver would paste it."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- webhook-verify[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert block, "the README's signature sample is missing"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)  # noqa: S102 -- our own README
    return namespace["verify"]


def test_the_readme_sample_accepts_our_signature_and_refuses_a_bad_or_old_one():
    verify = readme_verify()
    body = b'{"id":"evt_1","type":"message.sent"}'
    now = int(time.time())
    header = signing.signature_header(SECRET, now, body)
    assert verify(SECRET, body, header)
    assert not verify("another-secret-entirely", body, header)
    assert not verify(SECRET, body + b" ", header)
    assert not verify(SECRET, body, header.replace("v1=", "v1=0"))
    assert not verify(SECRET, body, "garbage")
    old = now - 3600
    assert not verify(SECRET, body, signing.signature_header(SECRET, old, body))


@pytest.mark.parametrize(
    ("url", "debug", "allowed"),
    [
        ("https://hooks.example.com/x", False, True),
        ("http://hooks.example.com/x", True, False),
        ("http://127.0.0.1:8080/x", True, True),
        ("http://localhost/x", True, True),
        ("http://127.0.0.1:8080/x", False, False),
        ("https://user:pw@hooks.example.com/x", False, False),
        ("ftp://hooks.example.com/x", False, False),
        ("/relative", False, False),
    ],
)
def test_endpoint_urls_must_be_https_or_loopback_http_in_debug(url, debug, allowed):
    with override_settings(DEBUG=debug):
        assert (transport.url_problem(url) is None) == allowed


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:10.0.0.1",
        "0.0.0.0",  # noqa: S104 -- an address refused, nothing binds to it
    ],
)
def test_internal_addresses_are_refused_unless_allow_listed(address, settings):
    settings.WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS = []
    assert not transport.address_allowed(transport.ipaddress.ip_address(address))
    settings.WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS = ["10.0.0.0/8", "127.0.0.1/32", "::/0", "0.0.0.0/0"]
    assert transport.address_allowed(transport.ipaddress.ip_address(address))


def test_public_addresses_are_allowed(settings):
    settings.WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS = []
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"):
        assert transport.address_allowed(transport.ipaddress.ip_address(address))


def fake_dns(monkeypatch, *answers: str) -> list[str]:
    """DNS answering ``answers`` in turn (the last one repeated); returns the names asked."""
    asked: list[str] = []

    def lookup(host, port):
        asked.append(host)
        return [answers[min(len(asked), len(answers)) - 1]]

    monkeypatch.setattr(transport, "lookup", lookup)
    return asked


@pytest.fixture
def endpoint(db, account_a, django_user_model):
    owner = create_staff(django_user_model, "service", ensure_staff_group(), account_a)
    return lambda url: Endpoint.objects.create(
        owner=owner, account=account_a, url=url, secret=SECRET, event_types=["message.sent"]
    )


def pending_delivery(endpoint: Endpoint) -> Delivery:
    now = timezone.now()
    Event.objects.create(kind="message.sent", account=endpoint.account, message_id=1, occurred_at=now)
    fan_out(now=now)
    (delivery,) = claim(now=timezone.now() + timedelta(seconds=1), token="test", limit=10)
    return delivery


def test_a_host_resolving_to_a_private_address_is_refused_at_send_time(endpoint, monkeypatch, settings, english):
    settings.WXNOTIFY_WEBHOOK_ALLOWED_NETWORKS = []
    asked = fake_dns(monkeypatch, "10.1.2.3")
    connects: list = []
    monkeypatch.setattr(transport.urllib3.HTTPSConnectionPool, "urlopen", lambda *a, **k: connects.append(a))
    result = attempt(pending_delivery(endpoint("https://hooks.example.com/x")))
    assert not result.ok
    assert "10.1.2.3" in result.error and "not a public address" in result.error
    assert asked == ["hooks.example.com"]
    assert connects == []


def test_the_connection_goes_to_the_address_checked_with_the_host_name_kept(endpoint, monkeypatch, receiver):
    """DNS rebinding: a second look-up would answer a private address; there is none, and Host names the URL's host."""
    asked = fake_dns(monkeypatch, "127.0.0.1", "10.9.9.9")
    delivery = pending_delivery(endpoint(f"http://hooks.example.com:{receiver.port}/hooks/wxnotify"))
    result = attempt(delivery)
    assert result.ok, result.error
    assert asked == ["hooks.example.com"]
    (request,) = receiver.received
    assert request.headers["Host"] == f"hooks.example.com:{receiver.port}"
    assert request.headers["X-Wxnotify-Event-Id"] == delivery.event.event_id


def test_redirects_are_not_followed(endpoint, receiver):
    receiver.status = 302
    result = attempt(pending_delivery(endpoint(receiver.url)))
    assert not result.ok
    assert result.error.startswith("HTTP 302")


def test_the_secret_is_stored_encrypted_and_resealed_by_rotation(endpoint, settings):
    hook = endpoint("https://hooks.example.com/x")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT secret FROM {Endpoint._meta.db_table} WHERE id = %s", [hook.pk])  # noqa: S608
        (stored,) = cursor.fetchone()
    assert SECRET not in stored
    assert reseal_secrets(dry_run=True) == 0
    settings.WXNOTIFY_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.WXNOTIFY_ENCRYPTION_KEYS]
    assert reseal_secrets(dry_run=True) == 1
    assert reseal_secrets() == 1
    assert reseal_secrets(dry_run=True) == 0
    hook.refresh_from_db()
    assert hook.secret == SECRET
