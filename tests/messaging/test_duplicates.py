"""The duplicate window (messaging.services.duplicates): the same content to the same user within X minutes is
answered with the first message (API: 200 + ``X-Wxnotify-Replay: duplicate``), and a campaign's recipient who
already got it fails as a duplicate; outside the window, or with other data, it is a new message."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import close_old_connections, connection

from messaging.models import Campaign, Message, SendingCap
from messaging.services import DUPLICATE_REASON, RecipientSpec, create_campaign, send_message
from sandbox.demo import DEMO_APPID
from tests.factories import ORDER_DATA, ORDER_TEMPLATE, api_client_for, create_staff, english_client
from tests.messaging import test_pipeline
from tests.messaging.test_console import _compose_body
from tests.messaging.test_pipeline import refreshed, send

pipeline = test_pipeline.pipeline
MESSAGES = "/api/v1/messages/"


@pytest.fixture
def staff(pipeline, django_user_model, staff_group):
    """A business staff member operating the pipeline's demo account."""
    return create_staff(django_user_model, "staff_dup", staff_group, pipeline)


def window(account, minutes: int | None) -> None:
    account.duplicate_window_minutes = minutes
    account.save()


def api_body(openid: str, **overrides: Any) -> dict[str, Any]:
    return {"account": DEMO_APPID, "touser": openid, "template_id": ORDER_TEMPLATE, "data": ORDER_DATA, **overrides}


def test_a_duplicate_in_the_window_is_answered_with_the_first_message(pipeline, sandbox_api):
    window(pipeline, 10)
    openid = sandbox_api.followers()[0]
    first = send(pipeline, touser=openid)
    again = send(pipeline, touser=openid, data={k: {"value": v} for k, v in ORDER_DATA.items()})

    assert (first.created, again.created, again.duplicate) == (True, False, True)
    assert again.message.pk == first.message.pk
    assert Message.objects.count() == 1
    assert sandbox_api.counters()["sends"] == 1


def test_after_the_window_with_other_data_or_with_no_window_it_is_a_new_message(pipeline, sandbox_api):
    window(pipeline, 10)
    openid, other = sandbox_api.followers()[:2]
    first = send(pipeline, touser=openid).message
    assert send(pipeline, touser=openid, data={**ORDER_DATA, "thing2": "鼠标"}).created
    assert send(pipeline, touser=other).created
    assert send(pipeline, touser=openid, url="https://example.com/orders/1").created

    Message.objects.filter(pk=first.pk).update(created_at=first.created_at - timedelta(minutes=11))
    later = send(pipeline, touser=openid)
    assert later.created and not later.duplicate

    window(pipeline, 0)
    assert send(pipeline, touser=openid).created
    assert sandbox_api.counters()["sends"] == 6


def test_a_failed_original_does_not_block_a_new_send(pipeline, sandbox_api):
    window(pipeline, 10)
    openid = sandbox_api.followers()[0]
    sandbox_api.set_faults(error_rate=1.0, error_code=40003)
    assert refreshed(send(pipeline, touser=openid).message).status == Message.Status.FAILED
    sandbox_api.set_faults(error_rate=0.0)
    retry = send(pipeline, touser=openid)
    assert retry.created
    assert refreshed(retry.message).status == Message.Status.SENT


def test_the_api_answers_a_duplicate_200_with_the_first_message_and_a_replay_header(pipeline, sandbox_api, staff):
    window(pipeline, 5)
    client = api_client_for(staff)
    openid = sandbox_api.followers()[0]
    first = client.post(MESSAGES, api_body(openid), format="json")
    again = client.post(MESSAGES, api_body(openid), format="json")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again["X-Wxnotify-Replay"] == "duplicate"
    # Its own idempotency key again is an idempotent repeat, said as such.
    key = first.json()["client_msg_id"]
    repeat = client.post(MESSAGES, api_body(openid, client_msg_id=key), format="json")
    assert (repeat.status_code, repeat["X-Wxnotify-Replay"]) == (200, "idempotency-key")
    assert len(sandbox_api.messages()) == 1


def test_identical_sends_racing_from_many_threads_make_one_message(pipeline, sandbox_api, no_broker):
    """Six threads, each with its own connection, send the same content at once: one message, five replays."""
    window(pipeline, 10)
    openid = sandbox_api.followers()[0]
    barrier = threading.Barrier(6)
    results: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(send_message(account=pipeline, template_id=ORDER_TEMPLATE, data=ORDER_DATA, touser=openid))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    close_old_connections()

    assert not errors, errors
    assert sum(result.created for result in results) == 1
    assert {result.message.pk for result in results} == {Message.objects.get().pk}
    assert sum(result.duplicate for result in results) == 5


def test_campaign_recipients_who_got_it_in_the_window_fail_as_duplicates(pipeline, sandbox_api):
    window(pipeline, 10)
    openids = sandbox_api.followers()[:3]
    original = send(pipeline, touser=openids[0]).message
    campaign = create_campaign(
        account=pipeline, template_id=ORDER_TEMPLATE, data=ORDER_DATA, recipients=RecipientSpec.openids(openids)
    )
    messages = {m.touser: m for m in Message.objects.filter(campaign=campaign)}
    assert (messages[openids[0]].status, messages[openids[0]].errmsg) == (Message.Status.FAILED, DUPLICATE_REASON)
    assert {messages[o].status for o in openids[1:]} == {Message.Status.SENT}
    assert sorted(m["touser"] for m in sandbox_api.messages(touser=openids[0])) == [openids[0]]
    assert sandbox_api.counters()["sends"] == 3

    # A single send of the same content now finds the campaign's message (the first of the window).
    again = send(pipeline, touser=openids[1])
    assert again.duplicate and again.message.pk == messages[openids[1]].pk
    assert original.pk != again.message.pk


def test_an_all_subscribed_campaign_fails_the_duplicates_of_each_chunk(pipeline, sandbox_api):
    window(pipeline, 10)
    openid = sandbox_api.followers()[0]
    send(pipeline, touser=openid)
    campaign = create_campaign(
        account=pipeline, template_id=ORDER_TEMPLATE, data=ORDER_DATA, recipients=RecipientSpec.all_subscribed()
    )
    campaign.refresh_from_db()
    duplicates = Message.objects.filter(campaign=campaign, errmsg=DUPLICATE_REASON)
    assert list(duplicates.values_list("touser", "status")) == [(openid, Message.Status.FAILED)]
    assert campaign.state == Campaign.State.DONE
    assert campaign.recipient_count == len(sandbox_api.followers())


def test_the_console_tells_staff_who_already_got_it_and_shows_the_rules(pipeline, sandbox_api, staff):
    window(pipeline, 10)
    openids = sandbox_api.followers()[:2]
    original = send(pipeline, touser=openids[0]).message
    client = english_client(staff)

    SendingCap.objects.create(account=pipeline, limit=2, action=SendingCap.Action.HOLD)
    page = client.get("/console/", {"account": DEMO_APPID}).content.decode()
    assert "At most 2 message(s) per user per day, all templates together." in page
    assert "Over it, a message waits for the next day." in page
    assert "The same content to the same user within 10 minutes is not sent again." in page
    assert "Days are counted in the account's time zone (Asia/Shanghai)." in page

    body = _compose_body(pipeline, "send", recipient_kind="openids", recipient_list="\n".join(openids))
    response = client.post("/console/", body, follow=True)
    text = response.content.decode()
    assert f"{openids[0]} already got this message 0 minutes ago (message #{original.pk}): not sent again." in text


@pytest.mark.django_db
def test_the_duplicate_window_is_validated(account_a):
    account_a.duplicate_window_minutes = 7 * 24 * 60 + 1
    with pytest.raises(ValidationError) as raised:
        account_a.full_clean()
    assert "duplicate_window_minutes" in raised.value.message_dict
