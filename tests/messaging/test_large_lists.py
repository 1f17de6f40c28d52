"""Lists over millions of rows: page counts that never count a big list in full, filters that never scan it.

On PostgreSQL a list longer than ``EstimatedCountPaginator.exact_limit`` is numbered with the planner's estimate;
the tests lower the limit to a few rows, and pin the estimate where they need an under- or overestimate.  SQLite
always counts exactly.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.core.paginator import EmptyPage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Follower, OfficialAccount
from messaging.models import Campaign, Message
from tests import factories
from wxnotify import pagination
from wxnotify.pagination import EstimatedCountPaginator

pytestmark = pytest.mark.django_db
on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="planner estimates are PostgreSQL's")
ROWS = 12


def add_messages(account: OfficialAccount, count: int, **fields: Any) -> None:
    template = account.templates.first()
    Message.objects.bulk_create(
        Message(
            account=account,
            template=template,
            template_id_sent=template.template_id,
            touser=f"o-{account.pk}-{index}",
            client_msg_id=f"cm-{account.pk}-{fields.get('status', 'q')}-{index}",
            **fields,
        )
        for index in range(count)
    )


@pytest.fixture
def low_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EstimatedCountPaginator, "exact_limit", 5)


def full_counts(captured: CaptureQueriesContext, table: str) -> list[str]:
    """The queries that count every row of ``table`` a list reaches: a COUNT with no LIMIT in it."""
    return [
        query["sql"]
        for query in captured.captured_queries
        if "COUNT(" in query["sql"].upper() and f'"{table}"' in query["sql"] and "LIMIT" not in query["sql"].upper()
    ]


def test_counts_exactly_up_to_the_limit(account_a: OfficialAccount, low_limit: None) -> None:
    add_messages(account_a, 4)
    paginator = EstimatedCountPaginator(Message.objects.order_by("-id"), 2)
    assert (paginator.count, paginator.num_pages, paginator.count_is_estimate) == (4, 2, False)
    with pytest.raises(EmptyPage):
        paginator.page(3)


@pytest.mark.skipif(connection.vendor == "postgresql", reason="SQLite counts exactly")
def test_sqlite_counts_exactly_past_the_limit(account_a: OfficialAccount, low_limit: None) -> None:
    add_messages(account_a, ROWS)
    paginator = EstimatedCountPaginator(Message.objects.order_by("-id"), 5)
    assert (paginator.count, paginator.count_is_estimate) == (ROWS, False)


@on_postgresql
def test_past_the_limit_postgresql_estimates_without_a_full_count(account_a: OfficialAccount, low_limit: None) -> None:
    add_messages(account_a, ROWS)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE messaging_message")
    paginator = EstimatedCountPaginator(Message.objects.order_by("-id"), 5)
    with CaptureQueriesContext(connection) as captured:
        count = paginator.count
    assert paginator.count_is_estimate
    assert count > EstimatedCountPaginator.exact_limit
    assert any(query["sql"].startswith("EXPLAIN") for query in captured.captured_queries)
    assert full_counts(captured, "messaging_message") == []


@on_postgresql
def test_pages_past_an_underestimate_are_served(
    account_a: OfficialAccount, low_limit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_messages(account_a, ROWS)
    monkeypatch.setattr(pagination, "planner_estimate", lambda queryset: 6)
    paginator = EstimatedCountPaginator(Message.objects.order_by("id"), 5)
    assert paginator.num_pages == 2
    last = paginator.page(3)
    assert [message.touser for message in last] == [f"o-{account_a.pk}-{index}" for index in (10, 11)]
    with pytest.raises(EmptyPage):
        paginator.page(4)


@on_postgresql
def test_an_empty_page_past_an_overestimate_is_out_of_range(
    account_a: OfficialAccount, low_limit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_messages(account_a, ROWS)
    monkeypatch.setattr(pagination, "planner_estimate", lambda queryset: 1000)
    paginator = EstimatedCountPaginator(Message.objects.order_by("id"), 5)
    assert paginator.num_pages == 200
    assert len(paginator.page(3)) == 2
    with pytest.raises(EmptyPage):
        paginator.page(4)


@pytest.mark.parametrize("model", [Message, Follower])
def test_admin_lists_neither_count_nor_scan_every_row(
    account_a: OfficialAccount,
    account_b: OfficialAccount,
    staff_a: Any,
    low_limit: None,
    monkeypatch: pytest.MonkeyPatch,
    model: type[Message] | type[Follower],
) -> None:
    """Business staff's lists of messages and followers, unfiltered and filtered: on PostgreSQL no COUNT without a
    LIMIT, on SQLite the exact count; never a DISTINCT over the rows for the filters; every page reachable."""
    monkeypatch.setattr(admin.site._registry[model], "list_per_page", 5)
    staff_a.is_staff = True
    staff_a.save()
    add_messages(account_a, ROWS, status=Message.Status.FAILED)
    add_messages(account_b, 3, status=Message.Status.FAILED)
    Follower.objects.bulk_create(
        Follower(account=account, openid=f"f{i}") for account in (account_a, account_b) for i in range(ROWS)
    )
    client = factories.english_client(staff_a)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    table = model._meta.db_table
    for query in ("?", "?status__exact=failed&" if model is Message else "?subscribed__exact=1&"):
        with CaptureQueriesContext(connection) as captured:
            response = client.get(url + query)
        assert response.status_code == 200
        if connection.vendor == "postgresql":
            assert full_counts(captured, table) == []
        else:
            assert f"{ROWS} {model._meta.verbose_name_plural}" in response.content.decode()
        assert [
            q["sql"] for q in captured.captured_queries if "DISTINCT" in q["sql"] and f'"{table}"' in q["sql"]
        ] == []
        assert account_b.name not in response.content.decode()
        assert client.get(f"{url}{query}p=3").status_code == 200
        assert client.get(f"{url}{query}p=4").status_code == 302


def test_campaign_page_counts_its_messages_once_without_joining_them(account_a: OfficialAccount, staff_a: Any) -> None:
    """The change page shows the counts by status and the progress, from one GROUP BY over the (campaign, status)
    index; the scope check and the form's look-up no longer join every message of the campaign."""
    staff_a.is_staff = True
    staff_a.save()
    template = account_a.templates.first()
    campaign = Campaign.objects.create(
        account=account_a,
        template=template,
        name="Weekly",
        data={"thing1": {"value": "x"}},
        recipient_kind=Campaign.RecipientKind.ALL_SUBSCRIBED,
        recipient_count=5,
        state=Campaign.State.RUNNING,
    )
    add_messages(account_a, 3, campaign=campaign, status=Message.Status.DELIVERED)
    add_messages(account_a, 2, campaign=campaign, status=Message.Status.QUEUED)
    client = factories.english_client(staff_a)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("admin:messaging_campaign_change", args=[campaign.pk]))
    content = response.content.decode()
    assert "Queued: 2, Delivered: 3" in content
    assert "60%" in content
    message_queries = [q["sql"] for q in captured.captured_queries if '"messaging_message"' in q["sql"]]
    assert len(message_queries) == 1
    assert "GROUP BY" in message_queries[0]
    assert "JOIN" not in message_queries[0]


def test_the_api_filters_by_the_account_id_not_a_join_on_the_appid(
    account_a: OfficialAccount, account_b: OfficialAccount, staff_a: Any
) -> None:
    add_messages(account_a, 3, status=Message.Status.FAILED)
    add_messages(account_b, 2, status=Message.Status.FAILED)
    client = factories.english_client(staff_a)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(f"/api/v1/messages/?account={account_a.appid}&status=failed")
    assert len(response.json()["results"]) == 3
    listed = [q["sql"] for q in captured.captured_queries if 'FROM "messaging_message"' in q["sql"]]
    assert len(listed) == 1
    where = listed[0].split(" WHERE ", 1)[1]
    assert '"appid"' not in where
    assert f'"account_id" IN ({account_a.pk})' in where
    assert client.get(f"/api/v1/messages/?account={account_b.appid}").json()["results"] == []
    assert client.get("/api/v1/messages/?account=wx0000000000unknown").json()["results"] == []
