"""The admin's operations dashboard: numbers equal to the database's, per-account scoping, bounded queries."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.clients import wechat_client_for
from accounts.models import OfficialAccount
from accounts.selectors import STAFF_GROUP
from messaging.models import Message
from operations.dashboard import build_dashboard, hour_chart
from sandbox.demo import DEMO_ACCOUNT, DEMO_APPID
from templates_app.models import MessageTemplate
from wxnotify.wechat.errors import describe_errcode
from wxnotify.wechat.tokens import default_token_manager

URL = "/admin/ops/dashboard/"
Status = Message.Status


def make_account(name: str, appid: str, **fields) -> OfficialAccount:
    return OfficialAccount.objects.create(
        name=name, appid=appid, app_secret=fields.pop("app_secret", "s" * 32), token="t", **fields
    )


class Log:
    """Creates messages with chosen status, age, sending time and errcode (timestamps set after auto_now_add)."""

    def __init__(self) -> None:
        self.serial = 0

    def add(self, account, template, status, *, age, sent_ago=None, errcode=None, next_attempt_in=None):
        self.serial += 1
        now = timezone.now()
        message = Message.objects.create(
            account=account,
            template=template,
            template_id_sent=template.template_id,
            touser=f"openid-{self.serial}",
            client_msg_id=f"dash-{self.serial}",
            status=status,
            errcode=errcode,
            next_attempt_at=None if next_attempt_in is None else now + next_attempt_in,
        )
        Message.objects.filter(pk=message.pk).update(
            created_at=now - age, sent_at=None if sent_ago is None else now - sent_ago
        )
        return message


@pytest.fixture
def world(db, django_user_model):
    """Two accounts with a week of messages, a superuser, and a staff member who operates account A only."""
    a = make_account("Alpha shop", DEMO_APPID, app_secret=DEMO_ACCOUNT["secret"])
    b = make_account("Beta clinic", "wx00000000000000b2", last_error_code=48001, last_error_message="api unauthorized")
    b.last_error_at = timezone.now()
    b.save()
    ta = MessageTemplate.objects.create(
        account=a, template_id="tpl-a", title="Order shipped", content="{{thing1.DATA}}"
    )
    tb = MessageTemplate.objects.create(
        account=b,
        template_id="tpl-b",
        title="Booking confirmed",
        content="{{thing1.DATA}}",
        problem_code=40037,
        problem_message="invalid template_id",
        problem_at=timezone.now(),
    )
    log = Log()
    hour = timedelta(hours=1)
    for _ in range(3):
        log.add(a, ta, Status.SENT, age=2 * hour, sent_ago=2 * hour)
    log.add(a, ta, Status.DELIVERED, age=5 * hour, sent_ago=5 * hour)
    log.add(a, ta, Status.FAILED, age=3 * hour, errcode=43101)
    log.add(a, ta, Status.FAILED, age=3 * timedelta(days=1), errcode=43101)
    log.add(a, ta, Status.FAILED, age=30 * hour, errcode=None)
    log.add(a, ta, Status.SENT, age=10 * timedelta(days=1), sent_ago=10 * timedelta(days=1))
    log.add(a, ta, Status.QUEUED, age=40 * timedelta(minutes=1))
    log.add(a, ta, Status.QUEUED, age=5 * timedelta(minutes=1), next_attempt_in=timedelta(minutes=10))
    log.add(a, ta, Status.SENDING, age=timedelta(minutes=1))
    for _ in range(2):
        log.add(b, tb, Status.FAILED, age=hour, errcode=40037)
    log.add(b, tb, Status.SENT, age=26 * hour, sent_ago=20 * hour)
    log.add(b, tb, Status.QUEUED, age=2 * hour)
    superuser = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    staff = django_user_model.objects.create_user("alice", password="pw", is_staff=True)
    staff.groups.add(Group.objects.get(name=STAFF_GROUP))
    a.operators.add(staff)
    return {"a": a, "b": b, "superuser": superuser, "staff": staff, "log": log, "ta": ta}


def expected_counts(since, accounts) -> dict[str, int]:
    """Counted in Python over every row: an independent check of the GROUP BY."""
    counts = dict.fromkeys(Status.values, 0)
    for message in Message.objects.filter(account__in=accounts):
        if message.created_at >= since:
            counts[message.status] += 1
    return counts


def test_the_numbers_equal_the_database_for_a_superuser(client, world):
    client.force_login(world["superuser"])
    response = client.get(URL)
    assert response.status_code == 200
    dashboard = response.context["dashboard"]
    now = dashboard.generated_at
    accounts = [world["a"], world["b"]]
    day, week = dashboard.summaries
    assert day.counts == expected_counts(now - timedelta(hours=24), accounts)
    assert week.counts == expected_counts(now - timedelta(days=7), accounts)
    assert day.counts == {"scheduled": 0, "queued": 3, "sending": 1, "sent": 3, "delivered": 1, "failed": 3}
    assert day.success_rate == round(100 * 4 / 7, 1)
    assert week.counts["sent"] == 4 and week.counts["failed"] == 5

    rows = Message.objects.filter(sent_at__gte=now - timedelta(hours=24))
    assert dashboard.chart.total == rows.count() == 5
    by_hour = Counter(timezone.localtime(m.sent_at).replace(minute=0, second=0, microsecond=0) for m in rows)
    assert {bar.start: bar.count for bar in dashboard.chart.bars if bar.count} == dict(by_hour)
    assert len(dashboard.chart.bars) == 24

    failed = Message.objects.filter(status=Status.FAILED, created_at__gte=now - timedelta(days=7))
    assert [(row.errcode, row.count) for row in dashboard.top_errcodes] == Counter(
        failed.values_list("errcode", flat=True)
    ).most_common()
    assert dashboard.top_errcodes[0].meaning == describe_errcode(40037)

    health = {item.account.appid: item for item in dashboard.accounts}
    alpha, beta = health[DEMO_APPID], health["wx00000000000000b2"]
    assert (alpha.queued, alpha.due, alpha.sending) == (2, 1, 1)
    assert 40 * 60 <= alpha.oldest_queued_age_seconds < 41 * 60
    assert (beta.queued, beta.due, beta.sending) == (1, 1, 0)
    assert [t.template_id for t in beta.flagged_templates] == ["tpl-b"]
    assert beta.last_error_meaning == describe_errcode(48001)

    html = response.content.decode()
    assert "Alpha shop" in html and "Beta clinic" in html
    assert 'data-window="1" data-status="failed">3<' in html
    assert 'data-window="2" data-status="total">' + str(week.total) + "<" in html
    assert len(re.findall(r'<rect class="bar"', html)) == 24
    assert describe_errcode(43101) in html


def test_staff_see_only_the_accounts_they_operate(client, world):
    client.force_login(world["staff"])
    response = client.get(URL)
    assert response.status_code == 200
    dashboard = response.context["dashboard"]
    assert [item.account.appid for item in dashboard.accounts] == [DEMO_APPID]
    now = dashboard.generated_at
    assert dashboard.summaries[1].counts == expected_counts(now - timedelta(days=7), [world["a"]])
    assert dashboard.chart.total == 4
    assert {row.errcode for row in dashboard.top_errcodes} == {43101, None}
    html = response.content.decode()
    assert "Beta clinic" not in html
    assert "wx00000000000000b2" not in html
    assert "Booking confirmed" not in html


def test_staff_without_accounts_see_an_empty_dashboard(client, world, django_user_model):
    nobody = django_user_model.objects.create_user("bob", password="pw", is_staff=True)
    client.force_login(nobody)
    dashboard = client.get(URL).context["dashboard"]
    assert dashboard.accounts == []
    assert all(summary.total == 0 for summary in dashboard.summaries)
    assert dashboard.top_errcodes == []


def test_non_staff_are_sent_to_the_admin_login(client, world, django_user_model):
    assert client.get(URL).status_code == 302
    client.force_login(django_user_model.objects.create_user("carol", password="pw"))
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_admin_index_links_to_the_dashboard(client, world):
    client.force_login(world["staff"])
    html = client.get("/admin/").content.decode()
    assert f'href="{URL}"' in html


def test_the_query_count_does_not_grow_with_the_messages(client, world):
    client.force_login(world["superuser"])
    client.get(URL)  # warm up (session, content types)
    with CaptureQueriesContext(connection) as few:
        client.get(URL)
    for _ in range(40):
        world["log"].add(world["a"], world["ta"], Status.SENT, age=timedelta(hours=1), sent_ago=timedelta(minutes=30))
    with CaptureQueriesContext(connection) as many:
        response = client.get(URL)
    assert response.context["dashboard"].chart.total == 45
    assert len(many) == len(few)


def test_token_age_and_expiry_are_shown_never_the_token(client, world, sandbox_api, fresh_demo_token):
    token = default_token_manager().get_token(wechat_client_for(world["a"]))
    client.force_login(world["superuser"])
    response = client.get(URL)
    alpha = next(item for item in response.context["dashboard"].accounts if item.account.appid == DEMO_APPID)
    assert alpha.token is not None
    assert 0 <= alpha.token.age_seconds < 5
    assert 7000 < alpha.token.expires_in_seconds <= 7200
    html = response.content.decode()
    assert token not in html
    assert DEMO_ACCOUNT["secret"] not in html
    beta = next(item for item in response.context["dashboard"].accounts if item.account.appid != DEMO_APPID)
    assert beta.token is None


def test_labels_follow_the_language(client, world):
    client.force_login(world["superuser"])
    english = client.get(URL, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    chinese = client.get(URL, HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "Operations dashboard" in english
    assert "运营看板" in chinese
    assert "过去 24 小时" in chinese


def test_the_chart_scales_bars_to_the_busiest_hour():
    now = timezone.now()
    chart = hour_chart([(now, 0), (now, 5), (now, 10)], width=300, height=100)
    assert [bar.height for bar in chart.bars] == [0.0, 50.0, 100.0]
    assert [bar.y for bar in chart.bars] == [100.0, 50.0, 0.0]
    assert chart.peak == 10
    assert hour_chart([(now, 0)] * 3).total == 0


def test_build_dashboard_is_empty_for_anonymous_users(db):
    from django.contrib.auth.models import AnonymousUser

    dashboard = build_dashboard(AnonymousUser())
    assert dashboard.accounts == []
    assert dashboard.chart.total == 0
