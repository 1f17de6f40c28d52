"""A scrape of /metrics and a probe of /healthz cost the same few queries however many messages the log holds, and
count only the messages in progress (bench/scrape_cost.py times them over 1,000,000 rows)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from messaging.models import Message
from tests.factories import create_demo_account, create_templates

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def open_endpoints(settings):
    settings.WXNOTIFY_METRICS_PUBLIC = True


@pytest.fixture
def add_messages():
    account = create_demo_account()
    template = create_templates(account)[0]
    created = 0

    def add(status: str, count: int) -> None:
        nonlocal created
        Message.objects.bulk_create(
            Message(
                account=account,
                template=template,
                template_id_sent=template.template_id,
                touser=f"openid-{created + number}",
                client_msg_id=f"scrape-{created + number}",
                status=status,
            )
            for number in range(count)
        )
        created += count

    return add


def scrape(client) -> tuple[dict[str, float], list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/metrics")
    assert response.status_code == 200
    gauges = {
        sample.labels["status"]: sample.value
        for family in text_string_to_metric_families(response.content.decode())
        if family.name == "wxnotify_messages"
        for sample in family.samples
    }
    return gauges, [query["sql"] for query in queries.captured_queries]


def probe(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/healthz").status_code == 200
    return len(queries)


def test_a_scrape_counts_only_messages_in_progress(client, add_messages):
    add_messages(Message.Status.QUEUED, 3)
    add_messages(Message.Status.SENDING, 2)
    add_messages(Message.Status.SENT, 4)
    add_messages(Message.Status.DELIVERED, 5)
    gauges, queries = scrape(client)
    assert gauges == {"scheduled": 0, "queued": 3, "sending": 2}
    message_queries = [sql for sql in queries if '"messaging_message"' in sql]
    assert message_queries
    assert all("WHERE" in sql for sql in message_queries), "no query may read the whole message table"


def test_scrape_and_probe_cost_the_same_queries_with_more_history(client, add_messages):
    add_messages(Message.Status.QUEUED, 1)
    scrape(client)  # first requests warm per-process state (sessions, content types) out of the comparison
    probe(client)
    _gauges, few = scrape(client)
    probe_few = probe(client)
    for status in (Message.Status.SENT, Message.Status.DELIVERED, Message.Status.FAILED):
        add_messages(status, 200)
    gauges, many = scrape(client)
    assert gauges == {"scheduled": 0, "queued": 1, "sending": 0}
    assert len(many) == len(few)
    assert probe(client) == probe_few
