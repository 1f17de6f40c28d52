"""The per-process memo of API tokens, account access and templates (``wxnotify.memo``): what it serves, and
how soon a change is seen — at once in the process that saved it, within the memo's lifetime everywhere."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Group
from django.core.cache.backends import locmem
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from messaging.models import Message
from templates_app.models import MessageTemplate
from templates_app.selectors import get_active_template
from tests.messaging.test_api import MESSAGES, SHIPPED, TICKET, _send_body
from wxnotify.memo import lookup_memo

pytestmark = pytest.mark.django_db(transaction=True)

TICKET_DATA = {"thing1": "巡检", "character_string2": "T-1", "time3": "10:30"}


def send(client, followers) -> tuple[int, dict]:
    response = client.post(MESSAGES, _send_body(followers[1].openid), format="json")
    return response.status_code, response.json()


@pytest.fixture
def warmed(api_a, followers_a, no_broker):
    """A caller whose token, account and template are memoised by a first accepted send."""
    status, body = send(api_a, followers_a)
    assert status == 202, body
    return api_a


def later(monkeypatch, seconds: float) -> None:
    """Move the memo's clock on (LocMemCache reads time.time for expiry)."""
    now = time.time() + seconds
    monkeypatch.setattr(locmem.time, "time", lambda: now)


def test_a_deleted_token_is_refused_at_once_by_the_process_that_deleted_it(warmed, followers_a, staff_a):
    Token.objects.filter(user=staff_a).delete()
    status, body = send(warmed, followers_a)
    assert status == 401, body


def test_a_deactivated_user_is_refused_at_once(warmed, followers_a, staff_a):
    staff_a.is_active = False
    staff_a.save()
    assert send(warmed, followers_a)[0] == 401


def test_a_withdrawn_account_answers_like_an_unknown_one_at_once(warmed, followers_a, staff_a, account_a):
    account_a.operators.remove(staff_a)
    status, body = send(warmed, followers_a)
    assert status == 400
    assert body["errors"]["account"] == [f"Unknown account “{account_a.appid}”."]


def test_leaving_the_staff_group_takes_the_send_permission_at_once(warmed, followers_a, staff_a, staff_group):
    staff_a.groups.remove(staff_group)
    assert send(warmed, followers_a)[0] == 403


def test_a_group_losing_its_permission_is_seen_at_once(warmed, followers_a, staff_group):
    staff_group.permissions.clear()
    assert send(warmed, followers_a)[0] == 403


def test_a_deactivated_template_is_refused_at_once(warmed, followers_a, account_a):
    template = MessageTemplate.objects.get(account=account_a, template_id=SHIPPED)
    template.is_active = False
    template.save()
    status, body = send(warmed, followers_a)
    assert status == 400
    assert "template_id" in body["errors"]


def test_a_change_another_process_made_is_seen_within_the_memo_lifetime(warmed, followers_a, account_a, monkeypatch):
    """An UPDATE sends no signal, as a change made by another process does not reach this one's memo."""
    MessageTemplate.objects.filter(account=account_a, template_id=SHIPPED).update(is_active=False)
    assert send(warmed, followers_a)[0] == 202
    later(monkeypatch, 11)
    assert send(warmed, followers_a)[0] == 400


def test_without_a_lifetime_nothing_is_memoised(warmed, followers_a, account_a, staff_a, settings):
    settings.WXNOTIFY_LOOKUP_MEMO_SECONDS = 0
    MessageTemplate.objects.filter(account=account_a, template_id=SHIPPED).update(is_active=False)
    assert send(warmed, followers_a)[0] == 400
    Token.objects.filter(user=staff_a).update(key="0" * 40)
    assert send(warmed, followers_a)[0] == 401


def test_what_was_never_there_is_not_memoised(api_a, followers_a, no_broker, account_a, staff_a):
    """A new grant or a newly synced template works at once: misses are not remembered."""
    account_a.operators.remove(staff_a)
    assert send(api_a, followers_a)[0] == 400
    Group.objects.get(name="business staff").user_set.add(staff_a)
    account_a.operators.through.objects.create(officialaccount=account_a, user=staff_a)  # no m2m signal
    status, body = send(api_a, followers_a)
    assert status == 202, body
    assert Message.objects.filter(touser=followers_a[1].openid).count() == 1


def test_unknown_tokens_are_not_memoised(api_a, followers_a, no_broker):
    api_a.credentials(HTTP_AUTHORIZATION="Token " + "f" * 40)
    assert send(api_a, followers_a)[0] == 401
    assert not lookup_memo()._cache


def test_a_template_deleted_behind_the_memo_answers_400_and_is_forgotten(api_a, followers_a, no_broker, account_a):
    """Another process deleted a template this process still remembers: the INSERT's foreign key fails."""
    ticket = MessageTemplate.objects.get(account=account_a, template_id=TICKET)
    assert get_active_template(account_a, TICKET) is not None  # now memoised
    MessageTemplate.objects.filter(pk=ticket.pk)._raw_delete(using="default")  # no signal, like another process

    body = _send_body(followers_a[1].openid, template_id=TICKET, data=TICKET_DATA)
    response = api_a.post(MESSAGES, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["errors"] == {
        "non_field_errors": [
            "The account, template or recipient changed while this message was being accepted; send it again."
        ]
    }
    again = api_a.post(MESSAGES, body, format="json")
    assert again.status_code == 400
    assert list(again.json()["errors"]) == ["template_id"]
    assert not Message.objects.exists()


def test_a_campaign_on_a_template_deleted_behind_the_memo_answers_400(api_a, followers_a, no_broker, account_a):
    ticket = MessageTemplate.objects.get(account=account_a, template_id=TICKET)
    assert get_active_template(account_a, TICKET) is not None
    MessageTemplate.objects.filter(pk=ticket.pk)._raw_delete(using="default")

    body = {
        "account": account_a.appid,
        "template_id": TICKET,
        "data": TICKET_DATA,
        "recipients": {"openids": [follower.openid for follower in followers_a]},
    }
    response = api_a.post("/api/v1/campaigns/", body, format="json")
    assert response.status_code == 400, response.content
    assert "non_field_errors" in response.json()["errors"]
    assert not Message.objects.exists()


def test_polling_a_message_status_repeats_no_permission_or_group_query(warmed, followers_a, settings):
    message = Message.objects.get()
    warmed.get(f"{MESSAGES}{message.pk}/")
    with CaptureQueriesContext(connection) as queries:
        response = warmed.get(f"{MESSAGES}{message.pk}/")
    assert response.status_code == 200
    cache_table = settings.CACHES["default"].get("LOCATION", "")
    tables = [
        query["sql"].split('"')[1]
        for query in queries.captured_queries
        if query["sql"].startswith("SELECT") and f'"{cache_table}"' not in query["sql"]
    ]
    assert tables == ["messaging_message"]
