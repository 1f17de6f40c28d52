"""``manage.py serve_metrics``: a worker-only host's /metrics, under the web hosts' access rule."""

from __future__ import annotations

import threading
from typing import Any
from wsgiref.simple_server import make_server

import pytest
import requests
from django.core.management import CommandError

from operations.management.commands.serve_metrics import _QuietHandler, _ThreadingServer, metrics_app, parse_bind
from tests.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "worker-scrape-token-0123456789"


@pytest.fixture
def listener(settings) -> Any:
    """The command's server on a free port, in a thread; the settings of a production worker host."""
    settings.DEBUG = False
    settings.WXNOTIFY_METRICS_TOKEN = TOKEN
    settings.WXNOTIFY_METRICS_PUBLIC = False
    port = free_port()
    server = make_server("127.0.0.1", port, metrics_app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_token_reads_this_hosts_metrics(listener):
    response = requests.get(f"{listener}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200
    assert "wxnotify_" in response.text
    assert response.headers["Cache-Control"] == "no-store"


def test_without_the_token_nothing_is_shown(listener):
    missing = requests.get(f"{listener}/metrics", timeout=10)
    wrong = requests.get(f"{listener}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "wxnotify_" not in response.text


def test_only_metrics_is_served(listener):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(f"{listener}/admin/", headers=headers, timeout=10).status_code == 404
    assert requests.post(f"{listener}/metrics", headers=headers, timeout=10).status_code == 405


def test_without_a_token_production_has_no_metrics(listener, settings):
    settings.WXNOTIFY_METRICS_TOKEN = ""
    assert requests.get(f"{listener}/metrics", timeout=10).status_code == 404
    settings.WXNOTIFY_METRICS_PUBLIC = True
    assert requests.get(f"{listener}/metrics", timeout=10).status_code == 200


@pytest.mark.parametrize("value", ["9108", "host:", ":9108", "host:99999", "host:http"])
def test_a_bad_bind_is_a_clear_error(value):
    with pytest.raises(CommandError, match="HOST:PORT"):
        parse_bind(value)


def test_bind_takes_ipv4_and_ipv6():
    assert parse_bind("10.1.2.3:9108") == ("10.1.2.3", 9108)
    assert parse_bind("[::]:9108") == ("::", 9108)
