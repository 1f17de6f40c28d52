"""The send pipeline against the sandbox WeChat: every outcome, retries, idempotency, campaigns, receipts.

Tasks run inline (``Q_CLUSTER["sync"]``), and these tests use real transactions (``transactional_db``):
delivery starts on commit and the send pool's threads use their own database connections.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone, translation

from accounts.models import Follower, OfficialAccount
from messaging import ratelimit
from messaging.models import Campaign, DeliveryReceipt, Message
from messaging.selectors import campaign_progress, campaign_status_counts
from messaging.services import (
    UNSUBSCRIBED_REASON,
    CampaignActionRefused,
    IdempotencyConflict,
    MessageRejected,
    RecipientSpec,
    apply_received_receipts,
    cancel_campaign,
    create_campaign,
    record_delivery_receipt,
    retry_failed,
    send_message,
)
from messaging.sweeper import recover_expired_leases
from messaging.tasks import deliver_messages, sweep_messages
from sandbox.demo import DEMO_APPID, DEMO_TEMPLATES
from sandbox.state import special_openids
from templates_app.models import MessageTemplate
from tests.factories import ORDER_DATA, ORDER_TEMPLATE, create_demo_account, create_templates
from wxnotify.tracing import TraceIdFilter, traced
from wxnotify.wechat.tokens import default_token_manager


@pytest.fixture
def pipeline(transactional_db, sandbox_api, settings):
    """The demo account registered on our side, with its templates and the sandbox's followers."""
    settings.WXNOTIFY_RETRY_BASE_DELAY = 0.01
    settings.WXNOTIFY_RETRY_MAX_DELAY = 0.02
    # Retries that soon are sent by the task that wrote them, at their time, as in production.
    settings.WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS = 5
    cache.clear()
    default_token_manager().forget(DEMO_APPID)
    account = create_demo_account(message_mode=OfficialAccount.MessageMode.SAFE)
    create_templates(account)
    sync_followers_from(sandbox_api, account)
    yield account
    default_token_manager().forget(DEMO_APPID)


def sync_followers_from(sandbox, account: OfficialAccount) -> list[str]:
    openids = sandbox.followers()
    Follower.objects.bulk_create(
        [Follower(account=account, openid=openid) for openid in openids], ignore_conflicts=True
    )
    return openids


def send(account, **overrides):
    arguments = {"account": account, "template_id": ORDER_TEMPLATE, "data": ORDER_DATA, "touser": None}
    arguments.update(overrides)
    return send_message(**arguments)


def stored_message(account: OfficialAccount, openid: str, client_msg_id: str, **fields) -> Message:
    """A queued message written straight to the table, as if its enqueueing (or its worker) had been lost."""
    return Message.objects.create(
        account=account,
        template=MessageTemplate.objects.get(account=account, template_id=ORDER_TEMPLATE),
        template_id_sent=ORDER_TEMPLATE,
        touser=openid,
        data={key: {"value": value} for key, value in ORDER_DATA.items()},
        client_msg_id=client_msg_id,
        **fields,
    )


def refreshed(message: Message) -> Message:
    message.refresh_from_db()
    return message


def run_due_retries() -> None:
    """What the schedule does every minute, with the clock past every backoff."""
    Message.objects.filter(status=Message.Status.QUEUED).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    sweep_messages()


# --- Success and receipts -----------------------------------------------------------------------------------------


def receipt_arrives(account: OfficialAccount, **receipt) -> DeliveryReceipt | None:
    """What the callback stores and the receipt task then does; the receipt if it still waits (None once applied)."""
    assert record_delivery_receipt(account=account, **receipt)
    apply_received_receipts()
    return (
        DeliveryReceipt.objects.filter(account=account, msgid=receipt["msgid"])
        .exclude(state=DeliveryReceipt.State.APPLIED)
        .order_by("-pk")
        .first()
    )


def test_a_message_is_sent_with_its_msgid_and_delivered_by_the_receipt(pipeline, sandbox_api):
    openid = sandbox_api.followers()[0]
    result = send(pipeline, touser=openid, trace_id="trace-happy")
    message = refreshed(result.message)
    assert result.created
    assert message.status == Message.Status.SENT
    assert message.attempts == 1
    delivered = sandbox_api.messages(DEMO_APPID)
    assert len(delivered) == 1
    assert delivered[0]["msgid"] == message.msgid
    assert delivered[0]["client_msg_id"] == message.client_msg_id
    assert delivered[0]["data"] == {key: {"value": value} for key, value in ORDER_DATA.items()}

    assert receipt_arrives(pipeline, msgid=message.msgid, wechat_status="success", openid=openid) is None
    assert refreshed(message).status == Message.Status.DELIVERED
    assert message.finished_at is not None
    assert message.trace_id == "trace-happy"


def test_a_failed_receipt_fails_the_message_with_wechats_status(pipeline, sandbox_api):
    message = send(pipeline, touser=sandbox_api.followers()[1]).message
    receipt_arrives(pipeline, msgid=refreshed(message).msgid, wechat_status="failed:  user block")
    message = refreshed(message)
    assert message.status == Message.Status.FAILED
    assert "failed: user block" in message.errmsg


def test_a_receipt_that_beats_the_msgid_waits_and_is_applied_when_the_msgid_lands(pipeline, sandbox_api):
    openid = sandbox_api.followers()[2]
    send(pipeline, touser=sandbox_api.followers()[1])  # fetches the token, so the next id goes to the send
    # The sandbox numbers msgids in sequence; pin the next one so the early receipt is for the next send.
    sandbox_api.state._ids = itertools.count(10_000_000_000_000_001)
    early = receipt_arrives(pipeline, msgid=10_000_000_000_000_001, wechat_status="success")
    assert early.state == DeliveryReceipt.State.PENDING
    message = refreshed(send(pipeline, touser=openid).message)
    assert message.msgid == 10_000_000_000_000_001
    assert message.status == Message.Status.DELIVERED
    early.refresh_from_db()
    assert early.state == DeliveryReceipt.State.APPLIED
    assert early.message_id == message.pk


def test_receipts_with_msgid_zero_or_never_matched_become_unmatched(pipeline, settings):
    zero = receipt_arrives(pipeline, msgid=0, wechat_status="success")
    assert zero.state == DeliveryReceipt.State.UNMATCHED
    stray = receipt_arrives(pipeline, msgid=424242, wechat_status="success")
    assert stray.state == DeliveryReceipt.State.PENDING
    DeliveryReceipt.objects.filter(pk=stray.pk).update(received_at=timezone.now() - timedelta(hours=1))
    result = sweep_messages()
    stray.refresh_from_db()
    assert stray.state == DeliveryReceipt.State.UNMATCHED
    assert result["receipts_unmatched"] == 1
    assert sweep_messages()["receipts_unmatched"] == 0


def test_an_unmatched_receipt_is_still_applied_when_its_msgid_lands_late(pipeline, sandbox_api):
    send(pipeline, touser=sandbox_api.followers()[1])  # fetches the token, so the next id goes to the send
    sandbox_api.state._ids = itertools.count(20_000_000_000_000_001)
    late = receipt_arrives(pipeline, msgid=20_000_000_000_000_001, wechat_status="success")
    DeliveryReceipt.objects.filter(pk=late.pk).update(
        state=DeliveryReceipt.State.UNMATCHED, received_at=timezone.now() - timedelta(hours=1)
    )
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[2]).message)
    assert message.msgid == 20_000_000_000_000_001
    assert message.status == Message.Status.DELIVERED
    late.refresh_from_db()
    assert (late.state, late.message_id) == (DeliveryReceipt.State.APPLIED, message.pk)


# --- Validation and idempotency -----------------------------------------------------------------------------------


def test_validation_errors_name_the_fields(pipeline):
    with pytest.raises(MessageRejected) as excinfo:
        send(pipeline, touser="o-valid", data={"thing2": "x" * 21, "nope": "1"}, url="ftp://example.com")
    errors = excinfo.value.errors
    assert set(errors) == {"data", "url"}
    assert {"thing2", "nope", "character_string1"} <= set(errors["data"])
    with pytest.raises(MessageRejected) as excinfo:
        send(pipeline, touser="o1", user="someone", template_id="missing")
    assert set(excinfo.value.errors) == {"touser", "template_id"}
    with pytest.raises(MessageRejected) as excinfo:
        send(pipeline, client_msg_id="has space")
    assert set(excinfo.value.errors) == {"touser", "client_msg_id"}
    assert not Message.objects.exists()


def test_user_recipient_resolves_through_the_binding(pipeline, sandbox_api, django_user_model):
    alice = django_user_model.objects.create_user("alice")
    django_user_model.objects.create_user("bob")
    openid = sandbox_api.followers()[3]
    Follower.objects.filter(account=pipeline, openid=openid).update(user=alice)
    message = refreshed(send(pipeline, user="alice").message)
    assert (message.touser, message.status) == (openid, Message.Status.SENT)
    with pytest.raises(MessageRejected) as excinfo, translation.override("en"):
        send(pipeline, user="bob")
    assert "bound" in excinfo.value.errors["user"][0]


def test_repeated_client_msg_id_returns_the_message_and_sends_nothing_new(pipeline, sandbox_api):
    openid = sandbox_api.followers()[0]
    first = send(pipeline, touser=openid, client_msg_id="order-1")
    wechat_shape = {key: {"value": value} for key, value in ORDER_DATA.items()}
    again = send(pipeline, touser=openid, client_msg_id="order-1", data=wechat_shape)
    assert first.created and not again.created
    assert again.message.pk == first.message.pk
    assert len(sandbox_api.messages(DEMO_APPID)) == 1
    with pytest.raises(IdempotencyConflict) as excinfo:
        send(pipeline, touser=openid, client_msg_id="order-1", data={**ORDER_DATA, "thing2": "鼠标"})
    assert excinfo.value.existing.pk == first.message.pk
    assert Message.objects.count() == 1


def test_two_racing_requests_with_one_client_msg_id_make_one_message(pipeline, sandbox_api):
    openid = sandbox_api.followers()[0]
    barrier = threading.Barrier(4)
    results, errors = [], []

    def racer():
        barrier.wait()
        try:
            results.append(send(pipeline, touser=openid, client_msg_id="race-1"))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({result.message.pk for result in results}) == 1
    assert sum(result.created for result in results) == 1
    assert Message.objects.count() == 1
    assert len(sandbox_api.messages(DEMO_APPID)) == 1


def test_generated_client_msg_ids_are_unique_and_always_sent(pipeline, sandbox_api):
    openid = sandbox_api.followers()[0]
    first = refreshed(send(pipeline, touser=openid).message)
    second = refreshed(send(pipeline, touser=openid).message)
    assert first.client_msg_id != second.client_msg_id
    assert len(first.client_msg_id) <= 64
    assert [m["client_msg_id"] for m in sandbox_api.messages(DEMO_APPID)] == [
        first.client_msg_id,
        second.client_msg_id,
    ]


# --- Outcomes by error kind ---------------------------------------------------------------------------------------


def test_a_known_unsubscribed_follower_fails_at_once_without_calling_wechat(pipeline, sandbox_api):
    openid = sandbox_api.followers()[4]
    Follower.objects.filter(account=pipeline, openid=openid).update(subscribed=False)
    message = refreshed(send(pipeline, touser=openid).message)
    assert message.status == Message.Status.FAILED
    assert "no longer follows" in message.errmsg
    assert message.attempts == 0
    assert sandbox_api.counters()["sends"] == 0


def test_unsubscribe_between_acceptance_and_delivery_is_checked_again(pipeline, sandbox_api):
    openid = sandbox_api.followers()[5]
    message = stored_message(pipeline, openid, "late-unsub")
    Follower.objects.filter(account=pipeline, openid=openid).update(subscribed=False)
    deliver_messages([message.pk])
    assert refreshed(message).status == Message.Status.FAILED
    assert sandbox_api.counters()["sends"] == 0


def test_43004_fails_the_message_and_marks_the_follower_unsubscribed(pipeline, sandbox_api):
    openid = special_openids(DEMO_APPID, "unsub_")[0]
    Follower.objects.create(account=pipeline, openid=openid, subscribed=True)
    message = refreshed(send(pipeline, touser=openid).message)
    assert (message.status, message.errcode, message.attempts) == (Message.Status.FAILED, 43004, 1)
    follower = Follower.objects.get(account=pipeline, openid=openid)
    assert not follower.subscribed
    assert follower.unsubscribed_at is not None


def test_43101_fails_at_once_and_keeps_the_follower(pipeline, sandbox_api):
    openid = special_openids(DEMO_APPID, "block_")[0]
    message = refreshed(send(pipeline, touser=openid).message)
    assert (message.status, message.errcode) == (Message.Status.FAILED, 43101)
    assert Follower.objects.get(account=pipeline, openid=openid).subscribed


def test_40037_fails_and_flags_the_template(pipeline, sandbox_api):
    sandbox_api.update_account(DEMO_APPID, templates=DEMO_TEMPLATES[1:])
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert (message.status, message.errcode) == (Message.Status.FAILED, 40037)
    template = MessageTemplate.objects.get(template_id=ORDER_TEMPLATE)
    assert template.problem_code == 40037
    assert template.problem_at is not None


def test_configuration_error_flags_the_account(pipeline, sandbox_api):
    sandbox_api.set_faults(error_rate=1.0, error_code=48001)
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert (message.status, message.errcode) == (Message.Status.FAILED, 48001)
    pipeline.refresh_from_db()
    assert pipeline.last_error_code == 48001
    assert pipeline.last_error_at is not None


def test_payload_error_fails_at_once(pipeline, sandbox_api):
    sandbox_api.set_faults(error_rate=1.0, error_code=47003)
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert (message.status, message.errcode, message.attempts) == (Message.Status.FAILED, 47003, 1)


def slow_retries(settings) -> None:
    """Retries a minute away: a test sees the message back in the queue before anything retries it."""
    settings.WXNOTIFY_RETRY_BASE_DELAY = 60
    settings.WXNOTIFY_RETRY_MAX_DELAY = 120


def test_a_transient_error_queues_the_message_again_after_its_backoff(pipeline, sandbox_api, settings):
    slow_retries(settings)
    sandbox_api.set_faults(error_rate=1.0, error_code=-1)
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert (message.status, message.errcode, message.attempts) == (Message.Status.QUEUED, -1, 1)
    # The first retry waits half its 60 s step fixed and up to the other half at random.
    wait = (message.next_attempt_at - message.attempted_at).total_seconds()
    assert 30 <= wait <= 61
    assert message.outcome_unknown_since is None


def test_transient_errors_retry_at_their_time_then_fail_with_the_last_reason(pipeline, sandbox_api, settings):
    """Retries due within the task's run are sent by it at their time, without waiting for the sweeper."""
    settings.WXNOTIFY_MAX_ATTEMPTS = 3
    sandbox_api.set_faults(error_rate=1.0, error_code=-1)
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert (message.status, message.errcode, message.attempts) == (Message.Status.FAILED, -1, 3)
    assert message.errmsg.startswith("system error")
    assert sandbox_api.counters()["sends"] == 3
    run_due_retries()
    assert refreshed(message).attempts == 3


def test_quota_holds_the_account_without_burning_attempts(pipeline, sandbox_api):
    followers = sandbox_api.followers()
    sandbox_api.set_faults(error_rate=1.0, error_code=45009)
    first = refreshed(send(pipeline, touser=followers[0]).message)
    assert (first.status, first.attempts, first.errcode) == (Message.Status.QUEUED, 0, None)
    until = ratelimit.held_until(pipeline.pk)
    assert until is not None
    assert first.next_attempt_at.timestamp() == pytest.approx(until, abs=1)
    sends_so_far = sandbox_api.counters()["sends"]
    second = refreshed(send(pipeline, touser=followers[1]).message)
    assert (second.status, second.attempts) == (Message.Status.QUEUED, 0)
    assert sandbox_api.counters()["sends"] == sends_so_far
    pipeline.refresh_from_db()
    assert pipeline.last_error_code == 45009

    sandbox_api.set_faults(error_rate=0.0)
    ratelimit.release_hold(pipeline.pk)
    run_due_retries()
    assert {refreshed(first).status, refreshed(second).status} == {Message.Status.SENT}
    assert refreshed(first).attempts == 1


def test_read_timeout_is_retried_with_the_same_client_msg_id_and_sent_once(pipeline, sandbox_api, settings):
    slow_retries(settings)
    settings.WECHAT_READ_TIMEOUT = 0.2
    sandbox_api.set_faults(latency_ms=400)
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert message.status == Message.Status.QUEUED
    assert message.errcode is None
    assert "same client_msg_id" in message.errmsg
    sandbox_api.set_faults(latency_ms=0)
    run_due_retries()
    message = refreshed(message)
    assert message.status == Message.Status.SENT
    assert message.attempts == 2
    # The first attempt did reach WeChat; the resend was de-duplicated by client_msg_id.
    assert sandbox_api.counters()["delivered"] == 1
    assert sandbox_api.counters()["duplicates"] == 1
    assert sandbox_api.messages(DEMO_APPID)[0]["msgid"] == message.msgid


def test_thirty_percent_failures_all_end_sent_exactly_once(pipeline, sandbox_api, settings):
    settings.WXNOTIFY_MAX_ATTEMPTS = 50
    sandbox_api.update_account(DEMO_APPID, followers=300)
    openids = sync_followers_from(sandbox_api, pipeline)[:300]
    sandbox_api.set_faults(error_rate=0.3, error_code=-1)
    campaign = create_campaign(
        account=pipeline, template_id=ORDER_TEMPLATE, data=ORDER_DATA, recipients=RecipientSpec.openids(openids)
    )
    for _ in range(30):
        if not Message.objects.filter(status=Message.Status.QUEUED).exists():
            break
        run_due_retries()
    counts = campaign_status_counts(campaign)
    assert counts[Message.Status.SENT] == 300
    assert sandbox_api.counters()["delivered"] == 300
    assert len({m["touser"] for m in sandbox_api.messages(DEMO_APPID)}) == 300
    assert sandbox_api.counters()["errors"].get("-1", 0) > 0
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.DONE


def test_a_token_invalidated_mid_run_costs_one_fetch_and_loses_nothing(pipeline, sandbox_api):
    followers = sandbox_api.followers()
    first = send(pipeline, touser=followers[0]).message
    fetches = sandbox_api.counters()["token_fetches"]
    sandbox_api.invalidate_tokens(DEMO_APPID)
    campaign = create_campaign(
        account=pipeline,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec.openids(followers[1:15]),
    )
    after = sandbox_api.counters()["token_fetches"]
    assert sum(after.values()) == sum(fetches.values()) + 1
    assert refreshed(first).status == Message.Status.SENT
    assert campaign_status_counts(campaign)[Message.Status.SENT] == 14
    assert sandbox_api.counters()["delivered"] == 15


def test_rate_limit_spreads_sends_over_seconds(pipeline, sandbox_api):
    pipeline.send_rate_limit = 5
    pipeline.save(update_fields=["send_rate_limit"])
    openids = sandbox_api.followers()[:12]
    started = timezone.now()
    campaign = create_campaign(
        account=pipeline, template_id=ORDER_TEMPLATE, data=ORDER_DATA, recipients=RecipientSpec.openids(openids)
    )
    elapsed = (timezone.now() - started).total_seconds()
    assert campaign_status_counts(campaign)[Message.Status.SENT] == 12
    # 12 sends at 5/s need three one-second windows: two window boundaries must pass.
    assert elapsed >= 1.0
    per_second: dict[int, int] = {}
    for item in sandbox_api.messages(DEMO_APPID):
        per_second[int(item["time"])] = per_second.get(int(item["time"]), 0) + 1
    assert max(per_second.values()) <= 5


# --- Crash recovery -----------------------------------------------------------------------------------------------


def test_expired_lease_is_recovered_and_resent_with_the_same_client_msg_id(pipeline, sandbox_api):
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    # Simulate a worker that sent it and died before writing back.
    Message.objects.filter(pk=message.pk).update(
        status=Message.Status.SENDING, msgid=None, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    result = sweep_messages()
    assert result["recovered"] == 1
    recovered = refreshed(message)
    assert recovered.status == Message.Status.SENT
    assert recovered.msgid == message.msgid
    assert sandbox_api.counters()["delivered"] == 1
    assert sandbox_api.counters()["duplicates"] == 1


def test_sweeper_dispatches_forgotten_messages_and_is_idempotent(pipeline, sandbox_api):
    lost = [
        stored_message(pipeline, openid, f"lost-{index}") for index, openid in enumerate(sandbox_api.followers()[:3])
    ]
    assert sweep_messages()["dispatched_singles"] == 1
    assert sweep_messages()["dispatched_singles"] == 0
    assert {refreshed(message).status for message in lost} == {Message.Status.SENT}
    assert sandbox_api.counters()["delivered"] == 3


def test_two_deliveries_of_the_same_batch_send_each_message_once(pipeline, sandbox_api):
    ids = [
        stored_message(pipeline, openid, f"twice-{index}").pk
        for index, openid in enumerate(sandbox_api.followers()[:10])
    ]
    sandbox_api.set_faults(latency_ms=50)
    threads = [threading.Thread(target=deliver_messages, args=(ids,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Message.objects.filter(pk__in=ids, status=Message.Status.SENT, attempts=1).count() == 10
    assert sandbox_api.counters()["sends"] == 10


# --- Campaigns ----------------------------------------------------------------------------------------------------


def test_campaign_of_2000_subscribed_followers_completes_with_correct_counts(pipeline, sandbox_api, settings):
    sandbox_api.update_account(DEMO_APPID, followers=2000)
    sync_followers_from(sandbox_api, pipeline)
    Follower.objects.filter(account=pipeline, openid__startswith="unsub_").update(subscribed=False)
    subscribed = Follower.objects.filter(account=pipeline, subscribed=True).count()
    campaign = create_campaign(
        account=pipeline,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec.all_subscribed(),
        name="Everyone",
        trace_id="campaign-trace",
    )
    campaign.refresh_from_db()
    assert campaign.recipient_count == subscribed
    assert campaign.state == Campaign.State.DONE
    counts = campaign_status_counts(campaign)
    blocked = len(special_openids(DEMO_APPID, "block_"))
    assert counts[Message.Status.SENT] == subscribed - blocked
    assert counts[Message.Status.FAILED] == blocked
    assert campaign_progress(campaign).percent == 100.0
    assert sandbox_api.counters()["delivered"] == subscribed - blocked
    assert Message.objects.filter(campaign=campaign, data__isnull=True).count() == subscribed
    assert set(Message.objects.filter(campaign=campaign).values_list("trace_id", flat=True)) == {"campaign-trace"}


def test_campaign_by_usernames_and_rejections(pipeline, sandbox_api, django_user_model):
    openids = sandbox_api.followers()[:2]
    for index, openid in enumerate(openids):
        user = django_user_model.objects.create_user(f"user{index}")
        Follower.objects.filter(account=pipeline, openid=openid).update(user=user)
    django_user_model.objects.create_user("unbound")
    with pytest.raises(MessageRejected) as excinfo:
        create_campaign(
            account=pipeline,
            template_id=ORDER_TEMPLATE,
            data=ORDER_DATA,
            recipients=RecipientSpec.usernames(["user0", "user1", "unbound"]),
        )
    assert "unbound" in excinfo.value.errors["recipients"][0]
    assert not Campaign.objects.exists()
    assert not Message.objects.exists()
    campaign = create_campaign(
        account=pipeline,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec.usernames(["user0", "user1", "user0"]),
    )
    assert campaign.recipient_count == 2
    assert sorted(m["touser"] for m in sandbox_api.messages(DEMO_APPID)) == sorted(openids)


def test_cancel_fails_queued_messages_and_retry_failed_requeues(pipeline, sandbox_api, settings):
    slow_retries(settings)
    sandbox_api.set_faults(error_rate=1.0, error_code=-1)
    campaign = create_campaign(
        account=pipeline,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec.openids(sandbox_api.followers()[:5]),
    )
    assert campaign_status_counts(campaign)[Message.Status.QUEUED] == 5
    assert cancel_campaign(campaign) == 5
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.CANCELLED
    assert set(Message.objects.filter(campaign=campaign).values_list("errmsg", flat=True)) == {
        "Cancelled with its campaign."
    }
    with pytest.raises(CampaignActionRefused):
        retry_failed(campaign)
    with pytest.raises(CampaignActionRefused):
        cancel_campaign(campaign)

    sandbox_api.set_faults(error_rate=1.0, error_code=47003)
    second = create_campaign(
        account=pipeline,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec.openids(sandbox_api.followers()[:5]),
    )
    second.refresh_from_db()
    assert second.state == Campaign.State.DONE
    assert campaign_status_counts(second)[Message.Status.FAILED] == 5
    sandbox_api.set_faults(error_rate=0.0)
    assert retry_failed(second).retried == 5
    second.refresh_from_db()
    assert campaign_status_counts(second)[Message.Status.SENT] == 5
    assert second.state == Campaign.State.DONE


def test_schedule_of_the_sweeper_exists_once(pipeline):
    from django.core.management import call_command
    from django_q.models import Schedule

    call_command("migrate", verbosity=0)
    schedules = Schedule.objects.filter(name="Sweep messages")
    assert schedules.count() == 1
    assert schedules.get().func == "messaging.tasks.sweep_messages"


def test_a_held_account_keeps_its_messages_queued_without_spending_attempts(pipeline, sandbox_api):
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    until = timezone.now().timestamp() + 60
    ratelimit.hold_account(pipeline.pk, until)
    Message.objects.filter(pk=message.pk).update(status=Message.Status.QUEUED, msgid=None, attempts=0)
    sweep_messages()
    held = refreshed(message)
    assert (held.status, held.attempts) == (Message.Status.QUEUED, 0)
    assert held.next_attempt_at.timestamp() == pytest.approx(until, abs=1)
    assert sandbox_api.counters()["sends"] == 1
    ratelimit.release_hold(pipeline.pk)
    run_due_retries()
    assert refreshed(message).status == Message.Status.SENT


# --- A worker killed mid-batch ------------------------------------------------------------------------------------

WORKER_SCRIPT = """
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
from django.conf import settings
settings.DATABASES["default"]["NAME"] = os.environ["WXNOTIFY_TEST_DB_NAME"]
settings.WECHAT_API_BASE = os.environ["WXNOTIFY_TEST_API_BASE"]
import django
django.setup()
from messaging.tasks import deliver_messages
print("started", flush=True)
deliver_messages(json.loads(sys.argv[1]), trace_id="doomed-worker")
print("finished", flush=True)
"""


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(pipeline, sandbox_api, settings):
    """A real OS process delivers a batch against the file database and is killed with SIGKILL halfway.

    Its claimed rows stay "sending" until their lease ends; the sweeper then sends them again with the same
    client_msg_id, and the sandbox (like WeChat) delivers each recipient exactly once.
    """
    openids = sandbox_api.followers()[:20]
    ids = [stored_message(pipeline, openid, f"crash-{index}").pk for index, openid in enumerate(openids)]
    sandbox_api.set_faults(latency_ms=150)
    env = {
        **os.environ,
        "WXNOTIFY_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "WXNOTIFY_TEST_API_BASE": sandbox_api.base_url,
        "WXNOTIFY_SEND_CONCURRENCY": "2",
        "WXNOTIFY_SEND_LEASE_SECONDS": "1",
    }
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, json.dumps(ids)],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        mid_run = Message.objects.filter(pk__in=ids)
        while (
            mid_run.filter(status=Message.Status.SENT).count() < 4
            or not mid_run.filter(status=Message.Status.SENDING).exists()
        ):
            assert time.monotonic() < deadline, "the worker never got going"
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == -signal.SIGKILL
    statuses = Counter(Message.objects.filter(pk__in=ids).values_list("status", flat=True))
    assert statuses[Message.Status.SENDING] > 0, statuses
    assert statuses[Message.Status.SENT] < len(ids)

    sandbox_api.set_faults(latency_ms=0)
    time.sleep(1.1)  # the dead worker's lease runs out
    result = sweep_messages()
    assert result["recovered"] == statuses[Message.Status.SENDING]
    assert Message.objects.filter(pk__in=ids, status=Message.Status.SENT).count() == len(ids)
    delivered = sandbox_api.messages(DEMO_APPID)
    assert sorted(item["touser"] for item in delivered) == sorted(openids)
    assert sandbox_api.counters()["delivered"] == len(ids)
    # Sends the dead worker had in flight reached WeChat; their resends were de-duplicated, not delivered.
    assert sandbox_api.counters()["duplicates"] >= 1
    msgids = dict(Message.objects.filter(pk__in=ids).values_list("touser", "msgid"))
    assert msgids == {item["touser"]: item["msgid"] for item in delivered}


# --- Tracing ------------------------------------------------------------------------------------------------------


def test_every_log_line_about_a_message_carries_its_trace_id(pipeline, sandbox_api):
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(logging.Formatter("%(name)s [%(trace_id)s] %(message)s"))
    loggers = [logging.getLogger("wxnotify.messaging"), logging.getLogger("wxnotify.wechat")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        blocked = special_openids(DEMO_APPID, "block_")[0]
        message = send(pipeline, touser=blocked, trace_id="req-trace-42").message
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    about_message = [line for line in lines if f"#{message.pk}" in line or "template/send" in line]
    # Acceptance, WeChat's refusal (logged by the client in a pool thread) and the outcome.
    assert len(about_message) >= 3, lines
    assert all("[req-trace-42]" in line for line in about_message), about_message
    assert any(line.startswith("wxnotify.wechat [req-trace-42]") for line in about_message)


def test_a_token_refused_even_after_the_refresh_is_retried_and_flags_the_account(pipeline, sandbox_api, settings):
    slow_retries(settings)
    openid = sandbox_api.followers()[0]
    send(pipeline, touser=sandbox_api.followers()[1])
    sandbox_api.set_faults(error_rate=1.0, error_code=40001)
    message = refreshed(send(pipeline, touser=openid).message)
    assert (message.status, message.errcode, message.attempts) == (Message.Status.QUEUED, 40001, 1)
    pipeline.refresh_from_db()
    assert pipeline.last_error_code == 40001
    sandbox_api.set_faults(error_rate=0.0)
    run_due_retries()
    assert refreshed(message).status == Message.Status.SENT


def test_a_wrong_app_secret_fails_the_batch_and_flags_the_account_without_sending(pipeline, sandbox_api):
    default_token_manager().forget(DEMO_APPID)
    OfficialAccount.objects.filter(pk=pipeline.pk).update(app_secret="0" * 32)
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert (message.status, message.errcode) == (Message.Status.FAILED, 40125)
    pipeline.refresh_from_db()
    assert pipeline.last_error_code == 40125
    assert sandbox_api.counters()["sends"] == 0


def test_campaign_by_openids_dedupes_and_fails_known_leavers_at_once(pipeline, sandbox_api):
    followers = sandbox_api.followers()
    left = followers[0]
    Follower.objects.filter(account=pipeline, openid=left).update(subscribed=False)
    stranger = special_openids(DEMO_APPID, "block_")[1]
    Follower.objects.filter(account=pipeline, openid=stranger).delete()  # unknown to us: WeChat decides
    with pytest.raises(MessageRejected) as excinfo:
        create_campaign(
            account=pipeline,
            template_id=ORDER_TEMPLATE,
            data=ORDER_DATA,
            recipients=RecipientSpec.openids([followers[1], "not an openid!"]),
        )
    assert "not an openid!" in excinfo.value.errors["recipients"][0]
    campaign = create_campaign(
        account=pipeline,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec.openids(iter([left, followers[1], followers[1], stranger])),
    )
    assert campaign.recipient_count == 3
    messages = {m.touser: m for m in Message.objects.filter(campaign=campaign)}
    assert (messages[left].status, messages[left].errmsg) == (Message.Status.FAILED, UNSUBSCRIBED_REASON)
    assert messages[left].finished_at is not None
    assert messages[left].follower_id == Follower.objects.get(account=pipeline, openid=left).pk
    assert messages[followers[1]].status == Message.Status.SENT
    assert (messages[stranger].status, messages[stranger].errcode, messages[stranger].follower_id) == (
        Message.Status.FAILED,
        43101,
        None,
    )
    assert [m["touser"] for m in sandbox_api.messages(DEMO_APPID)] == [followers[1]]


def test_a_campaign_whose_dispatch_task_was_lost_is_sent_by_the_sweeper(pipeline, sandbox_api, monkeypatch):
    from messaging import dispatch

    real_enqueue = dispatch.enqueue_campaign
    lost: list[int] = []

    def lose_the_first(campaign_id: int, trace_id: str = "") -> None:
        if not lost:
            lost.append(campaign_id)
            return
        real_enqueue(campaign_id, trace_id)

    monkeypatch.setattr(dispatch, "enqueue_campaign", lose_the_first)
    campaign = create_campaign(
        account=pipeline,
        template_id=ORDER_TEMPLATE,
        data=ORDER_DATA,
        recipients=RecipientSpec.openids(sandbox_api.followers()[:6]),
    )
    assert lost == [campaign.pk]
    assert campaign_status_counts(campaign)[Message.Status.QUEUED] == 6
    assert sweep_messages()["dispatched_campaigns"] == 1
    assert campaign_status_counts(campaign)[Message.Status.SENT] == 6
    campaign.refresh_from_db()
    assert campaign.state == Campaign.State.DONE
    assert sweep_messages()["dispatched_campaigns"] == 0


CLUSTER_SCRIPT = """
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
from django.conf import settings
settings.DATABASES["default"]["NAME"] = os.environ["WXNOTIFY_TEST_DB_NAME"]
settings.WECHAT_API_BASE = os.environ["WXNOTIFY_TEST_API_BASE"]
settings.Q_CLUSTER["sync"] = False
import django
django.setup()
from django.core.management import call_command
call_command("qcluster")
"""


@pytest.mark.slow
def test_a_real_qcluster_killed_mid_run_loses_nothing_and_sends_nothing_twice(pipeline, sandbox_api, settings):
    """The same crash with django-q2's own cluster (its broker: the ORM, or Redis with REDIS_URL), killed -9."""
    from django_q.tasks import async_task

    openids = sandbox_api.followers()[:20]
    ids = [stored_message(pipeline, openid, f"cluster-{index}").pk for index, openid in enumerate(openids)]
    for start in range(0, len(ids), 10):
        async_task("messaging.tasks.deliver_messages", ids[start : start + 10], sync=False)
    sandbox_api.set_faults(latency_ms=150)
    env = {
        **os.environ,
        "WXNOTIFY_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "WXNOTIFY_TEST_API_BASE": sandbox_api.base_url,
        "WXNOTIFY_SEND_CONCURRENCY": "1",
        "WXNOTIFY_SEND_LEASE_SECONDS": "1",
        "WXNOTIFY_Q_WORKERS": "2",
        "WXNOTIFY_TASKS_SYNC": "0",
    }
    cluster = subprocess.Popen(
        [sys.executable, "-c", CLUSTER_SCRIPT],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while Message.objects.filter(pk__in=ids, status=Message.Status.SENT).count() < 4:
            assert cluster.poll() is None, "the cluster exited on its own"
            assert time.monotonic() < deadline, "the cluster never delivered anything"
            time.sleep(0.05)
    finally:
        os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait(timeout=10)
    statuses = Counter(Message.objects.filter(pk__in=ids).values_list("status", flat=True))
    assert statuses[Message.Status.SENT] < len(ids), statuses

    sandbox_api.set_faults(latency_ms=0)
    time.sleep(1.1)
    sweep_messages()
    assert Message.objects.filter(pk__in=ids, status=Message.Status.SENT).count() == len(ids)
    delivered = sandbox_api.messages(DEMO_APPID)
    assert sorted(item["touser"] for item in delivered) == sorted(openids)
    assert sandbox_api.counters()["delivered"] == len(ids)


def test_the_current_trace_id_is_stored_when_none_is_given(pipeline, sandbox_api):
    with traced("from-the-request"):
        message = send(pipeline, touser=sandbox_api.followers()[0]).message
        campaign = create_campaign(
            account=pipeline,
            template_id=ORDER_TEMPLATE,
            data=ORDER_DATA,
            recipients=RecipientSpec.openids(sandbox_api.followers()[1:3]),
        )
    assert message.trace_id == "from-the-request"
    assert campaign.trace_id == "from-the-request"
    assert set(Message.objects.filter(campaign=campaign).values_list("trace_id", flat=True)) == {"from-the-request"}


def test_a_slow_batch_renews_its_lease_so_the_sweeper_leaves_it_alone(pipeline, sandbox_api, settings):
    # Waiting for a rate-limit window takes up to a second, so the lease must outlast that gap.
    settings.WXNOTIFY_SEND_LEASE_SECONDS = 3
    pipeline.send_rate_limit = 2
    pipeline.save(update_fields=["send_rate_limit"])
    ids = [
        stored_message(pipeline, openid, f"slow-{index}").pk
        for index, openid in enumerate(sandbox_api.followers()[:10])
    ]
    recovered: list[int] = []
    delivery = threading.Thread(target=deliver_messages, args=(ids,))
    delivery.start()
    while delivery.is_alive():
        recovered.append(recover_expired_leases(timezone.now()))
        time.sleep(0.1)
    delivery.join()
    assert sum(recovered) == 0
    assert Message.objects.filter(pk__in=ids, status=Message.Status.SENT, attempts=1).count() == 10
    assert sandbox_api.counters()["sends"] == 10
