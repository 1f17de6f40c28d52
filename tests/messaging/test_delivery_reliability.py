"""The delivery promise under faults: retries on time, final cancels, no blind resends, nothing dropped or stuck.

One test (or a few) per point of the reliability issue, against the sandbox WeChat with tasks run inline.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import OfficialAccount
from messaging import dispatch, ratelimit, services
from messaging.models import Campaign, Message, lease_from_now
from messaging.selectors import campaign_status_counts
from messaging.services import MessageRejected, RecipientSpec, cancel_campaign, create_campaign, retry_failed
from messaging.sweeper import recover_expired_leases, settle
from messaging.tasks import deliver_campaign, deliver_due_messages, deliver_messages, sweep_messages
from sandbox.demo import DEMO_APPID
from tests.factories import ORDER_DATA, ORDER_TEMPLATE
from tests.messaging.test_pipeline import pipeline, refreshed, send, slow_retries, stored_message, sync_followers_from
from wxnotify.wechat.client import WeChatClient
from wxnotify.wechat.errors import INTERNAL_ERROR_ERRCODE, OUTCOME_UNKNOWN_ERRCODE, SECRET_UNREADABLE_ERRCODE

__all__ = ["pipeline"]  # the fixture, imported for these tests


def campaign_to(account: OfficialAccount, openids: list[str]) -> Campaign:
    return create_campaign(
        account=account, template_id=ORDER_TEMPLATE, data=ORDER_DATA, recipients=RecipientSpec.openids(openids)
    )


# --- Retries on time ----------------------------------------------------------------------------------------------


def test_a_campaigns_retries_are_each_sent_at_their_time(pipeline, sandbox_api, settings):
    """30% of sends fail; every retry is claimed right when its backoff ends, by the task that stays for it."""
    settings.WXNOTIFY_RETRY_BASE_DELAY = 0.4
    settings.WXNOTIFY_MAX_ATTEMPTS = 30
    settings.WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS = 30
    sandbox_api.update_account(DEMO_APPID, followers=60)
    openids = sync_followers_from(sandbox_api, pipeline)[:60]
    sandbox_api.set_faults(error_rate=0.3, error_code=-1)
    campaign = campaign_to(pipeline, openids)
    assert campaign_status_counts(campaign)[Message.Status.SENT] == 60
    assert sandbox_api.counters()["delivered"] == 60
    retried = Message.objects.filter(campaign=campaign, attempts__gt=1)
    assert retried.exists(), "with 30% failing some messages needed a retry"
    for attempted_at, due in retried.values_list("attempted_at", "next_attempt_at"):
        assert 0 <= (attempted_at - due).total_seconds() < 2


# --- Final cancel -------------------------------------------------------------------------------------------------


def test_a_cancel_stops_the_rest_of_a_claimed_batch_before_it_reaches_wechat(pipeline, sandbox_api, settings):
    settings.WXNOTIFY_SEND_CONCURRENCY = 1
    ids = [stored_message(pipeline, openid, f"c-stop-{i}").pk for i, openid in enumerate(sandbox_api.followers()[:8])]
    campaign = Campaign.objects.create(
        account=pipeline,
        template=Message.objects.get(pk=ids[0]).template,
        data={},
        recipient_kind=Campaign.RecipientKind.OPENIDS,
        recipient_count=8,
        state=Campaign.State.RUNNING,
    )
    Message.objects.filter(pk__in=ids).update(campaign=campaign)
    sandbox_api.set_faults(latency_ms=150)
    delivery = threading.Thread(target=deliver_campaign, args=(campaign.pk,))
    delivery.start()
    deadline = time.monotonic() + 10
    while sandbox_api.counters()["sends"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    cancel_campaign(campaign)
    sends_at_cancel = sandbox_api.counters()["sends"]
    delivery.join()
    # At most the send already on its way (one at a time here) went out after the cancel.
    assert sandbox_api.counters()["sends"] <= sends_at_cancel + 1
    counts = campaign_status_counts(campaign)
    assert counts[Message.Status.SENT] == sandbox_api.counters()["delivered"]
    assert counts[Message.Status.SENT] + counts[Message.Status.FAILED] == 8
    assert set(
        Message.objects.filter(campaign=campaign, status=Message.Status.FAILED).values_list("errmsg", flat=True)
    ) == {services.CANCELLED_REASON}


def test_a_dead_workers_message_of_a_cancelled_campaign_is_not_recovered(pipeline, sandbox_api):
    campaign = campaign_to(pipeline, sandbox_api.followers()[:2])
    Message.objects.filter(campaign=campaign).update(
        status=Message.Status.SENDING, lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    Campaign.objects.filter(pk=campaign.pk).update(state=Campaign.State.CANCELLED)
    sends = sandbox_api.counters()["sends"]
    assert recover_expired_leases(timezone.now()) == 2
    sweep_messages()
    assert campaign_status_counts(campaign)[Message.Status.FAILED] == 2
    assert set(Message.objects.filter(campaign=campaign).values_list("errmsg", flat=True)) == {
        services.CANCELLED_REASON
    }
    assert sandbox_api.counters()["sends"] == sends


def test_a_retry_written_back_as_the_campaign_is_cancelled_is_never_sent(pipeline, sandbox_api, settings):
    slow_retries(settings)
    sandbox_api.set_faults(error_rate=1.0, error_code=-1)
    campaign = campaign_to(pipeline, sandbox_api.followers()[:3])
    assert campaign_status_counts(campaign)[Message.Status.QUEUED] == 3
    # The cancel's own UPDATE ran before a task wrote these retries back: they are queued in a cancelled campaign.
    Campaign.objects.filter(pk=campaign.pk).update(state=Campaign.State.CANCELLED)
    Message.objects.filter(campaign=campaign).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    sandbox_api.set_faults(error_rate=0.0)
    sends = sandbox_api.counters()["sends"]
    deliver_due_messages()
    assert sandbox_api.counters()["sends"] == sends, "claims skip cancelled campaigns"
    assert settle(timezone.now())["failed_cancelled"] == 3
    assert campaign_status_counts(campaign)[Message.Status.FAILED] == 3


# --- The resend window --------------------------------------------------------------------------------------------


def test_no_answer_is_retried_only_inside_the_resend_window(pipeline, sandbox_api, settings):
    slow_retries(settings)
    settings.WECHAT_READ_TIMEOUT = 0.2
    settings.WXNOTIFY_RESEND_WINDOW_SECONDS = 90
    sandbox_api.set_faults(latency_ms=400)
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert message.status == Message.Status.QUEUED, "the first retry (30 to 60 s) is inside the 90 s window"
    assert message.outcome_unknown_since == message.attempted_at
    # The second backoff (60 to 120 s) may end past the window: then it is failed, never blindly resent.
    settings.WXNOTIFY_RESEND_WINDOW_SECONDS = 61
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    deliver_due_messages()
    message = refreshed(message)
    assert (message.status, message.errcode) == (Message.Status.FAILED, OUTCOME_UNKNOWN_ERRCODE)
    assert "may have been delivered" in message.errmsg
    assert sandbox_api.counters()["delivered"] == 1, "the first attempt reached WeChat"


def test_a_message_past_the_window_is_failed_not_sent_whoever_finds_it(pipeline, sandbox_api, settings):
    settings.WXNOTIFY_RESEND_WINDOW_SECONDS = 60
    long_ago = timezone.now() - timedelta(minutes=5)
    lost = stored_message(
        pipeline,
        sandbox_api.followers()[0],
        "unknown-long-ago",
        status=Message.Status.SENDING,
        attempts=1,
        attempted_at=long_ago,
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    queued = stored_message(
        pipeline,
        sandbox_api.followers()[1],
        "held-past-window",
        attempts=1,
        outcome_unknown_since=long_ago,
        next_attempt_at=timezone.now() - timedelta(seconds=1),
    )
    deliver_due_messages()
    sweep_messages()
    for message in (lost, queued):
        message = refreshed(message)
        assert (message.status, message.errcode) == (Message.Status.FAILED, OUTCOME_UNKNOWN_ERRCODE)
    assert sandbox_api.counters()["sends"] == 0


def test_a_dead_workers_message_inside_the_window_is_sent_again_with_its_key(pipeline, sandbox_api):
    message = stored_message(
        pipeline,
        sandbox_api.followers()[0],
        "worker-died",
        status=Message.Status.SENDING,
        attempts=1,
        attempted_at=timezone.now() - timedelta(seconds=40),
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )
    sweep_messages()
    message = refreshed(message)
    assert (message.status, message.attempts) == (Message.Status.SENT, 2)
    assert message.outcome_unknown_since is not None
    assert sandbox_api.messages(DEMO_APPID)[0]["client_msg_id"] == "worker-died"


def test_retry_failed_leaves_messages_that_may_have_been_delivered_unless_asked(pipeline, sandbox_api):
    campaign = campaign_to(pipeline, sandbox_api.followers()[:4])
    Message.objects.filter(campaign=campaign, touser__in=sandbox_api.followers()[:2]).update(
        status=Message.Status.FAILED, errcode=OUTCOME_UNKNOWN_ERRCODE, errmsg="may have been delivered"
    )
    Message.objects.filter(campaign=campaign, touser__in=sandbox_api.followers()[2:4]).update(
        status=Message.Status.FAILED, errcode=-1, errmsg="system error"
    )
    result = retry_failed(campaign)
    assert (result.retried, result.left_unknown) == (2, 2)
    assert campaign_status_counts(campaign)[Message.Status.FAILED] == 2
    result = retry_failed(campaign, include_unknown=True)
    assert (result.retried, result.left_unknown) == (2, 0)
    assert campaign_status_counts(campaign)[Message.Status.SENT] == 4


def test_the_unknown_outcome_errcode_is_shown_in_words(english):
    from wxnotify.wechat.errors import describe_errcode

    assert "may have been delivered" in describe_errcode(OUTCOME_UNKNOWN_ERRCODE)
    assert "cannot be decrypted" in describe_errcode(SECRET_UNREADABLE_ERRCODE)


# --- Campaign keys ------------------------------------------------------------------------------------------------


def test_callers_cannot_use_the_campaign_key_namespace(pipeline, sandbox_api):
    with pytest.raises(MessageRejected) as rejected:
        send(pipeline, touser=sandbox_api.followers()[0], client_msg_id="c7-ofollower")
    assert "client_msg_id" in rejected.value.errors
    assert send(pipeline, touser=sandbox_api.followers()[0], client_msg_id="c-not-a-campaign").created


def test_a_campaign_counts_every_unique_recipient_even_if_a_single_send_took_an_old_style_key(pipeline, sandbox_api):
    from django.db.models.signals import post_save

    openids = sandbox_api.followers()[:5]

    def old_style_key_taken(sender, instance: Campaign, created: bool, **kwargs) -> None:
        # A message accepted before the namespace was reserved, holding the key the old scheme gave a recipient.
        if created:
            stored_message(pipeline, openids[0], f"c{instance.pk}-{openids[0]}", status=Message.Status.SENT)

    post_save.connect(old_style_key_taken, sender=Campaign)
    try:
        campaign = campaign_to(pipeline, [*openids, openids[1]])
    finally:
        post_save.disconnect(old_style_key_taken, sender=Campaign)
    assert Message.objects.filter(client_msg_id=f"c{campaign.pk}-{openids[0]}").exists()
    assert campaign.recipient_count == 5
    assert campaign_status_counts(campaign)[Message.Status.SENT] == 5


# --- Every failure counts -----------------------------------------------------------------------------------------


def test_an_exception_during_the_send_counts_as_an_attempt_and_ends_failed_with_its_class(
    pipeline, sandbox_api, settings, monkeypatch
):
    settings.WXNOTIFY_MAX_ATTEMPTS = 3

    def broken(self, **payload):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(WeChatClient, "send_template_message", broken)
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert (message.status, message.attempts, message.errcode) == (Message.Status.FAILED, 3, OUTCOME_UNKNOWN_ERRCODE)
    assert "RuntimeError" in message.errmsg
    assert "a bug of ours" not in message.errmsg


def test_an_exception_before_the_send_fails_with_the_internal_errcode(pipeline, sandbox_api, settings, monkeypatch):
    settings.WXNOTIFY_MAX_ATTEMPTS = 2

    def broken_payload(self, client, message, lane):
        raise KeyError("payload")

    monkeypatch.setattr("messaging.delivery.DeliveryRun._submit", broken_payload)
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert (message.status, message.attempts, message.errcode) == (Message.Status.FAILED, 2, INTERNAL_ERROR_ERRCODE)
    assert message.errmsg == "Internal error: KeyError"
    assert sandbox_api.counters()["sends"] == 0


def test_an_account_whose_secret_cannot_be_decrypted_is_flagged_and_held_not_cycled(pipeline, sandbox_api, settings):
    message = send(pipeline, touser=sandbox_api.followers()[0]).message
    Message.objects.filter(pk=message.pk).update(status=Message.Status.QUEUED, attempts=0, msgid=None)
    sends = sandbox_api.counters()["sends"]
    settings.WXNOTIFY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    try:
        deliver_due_messages()
        deliver_due_messages()
        held = refreshed(message)
        assert (held.status, held.attempts) == (Message.Status.QUEUED, 0)
        assert held.next_attempt_at > timezone.now() + timedelta(minutes=4)
        assert OfficialAccount.objects.filter(pk=pipeline.pk, last_error_code=SECRET_UNREADABLE_ERRCODE).exists()
        assert sandbox_api.counters()["sends"] == sends
    finally:
        ratelimit.release_hold(pipeline.pk)


# --- Rate limit within the task's time --------------------------------------------------------------------------


def test_a_rate_limited_campaign_hands_over_instead_of_outliving_its_task(pipeline, sandbox_api, settings, monkeypatch):
    settings.WXNOTIFY_DELIVERY_TASK_SECONDS = 1.0
    pipeline.send_rate_limit = 3
    pipeline.save(update_fields=["send_rate_limit"])
    handed_over: list[int] = []
    real_hand_over = dispatch.enqueue_campaign_delivery

    def count_hand_over(campaign_id: int, trace_id: str = "") -> None:
        handed_over.append(campaign_id)
        real_hand_over(campaign_id, trace_id)

    monkeypatch.setattr(dispatch, "enqueue_campaign_delivery", count_hand_over)
    campaign = campaign_to(pipeline, sandbox_api.followers()[:10])
    assert campaign_status_counts(campaign)[Message.Status.SENT] == 10
    assert len(handed_over) >= 3, "each task sent about one second's worth, then handed over"
    assert set(Message.objects.filter(campaign=campaign).values_list("attempts", flat=True)) == {1}
    per_second: dict[int, int] = {}
    for item in sandbox_api.messages(DEMO_APPID):
        per_second[int(item["time"])] = per_second.get(int(item["time"]), 0) + 1
    assert max(per_second.values()) <= 3


# --- Quick recovery of a dead worker ------------------------------------------------------------------------------


def test_a_running_task_takes_a_dead_workers_messages_back_after_their_lease(
    pipeline, sandbox_api, settings, monkeypatch
):
    """While any delivery task runs, one of them settles the pipeline every few seconds (patched shorter here)."""
    monkeypatch.setattr("messaging.delivery.MAINTENANCE_SECONDS", 0.2)
    monkeypatch.setattr("messaging.dispatch.MAINTENANCE_KEY_SECONDS", 1)
    settings.WXNOTIFY_SEND_CONCURRENCY = 1
    dead = stored_message(
        pipeline,
        sandbox_api.followers()[0],
        "lease-soon-over",
        status=Message.Status.SENDING,
        attempts=1,
        attempted_at=timezone.now(),
        lease_expires_at=timezone.now() + timedelta(seconds=1),
    )
    sandbox_api.set_faults(latency_ms=300)
    campaign = campaign_to(pipeline, sandbox_api.followers()[1:17])
    assert campaign_status_counts(campaign)[Message.Status.SENT] == 16
    dead = refreshed(dead)
    assert (dead.status, dead.attempts) == (Message.Status.SENT, 2)
    assert dead.errmsg == ""


def test_a_live_claim_is_judged_by_the_databases_clock_not_the_sweeping_hosts(pipeline, sandbox_api):
    """A sweeping host whose clock runs an hour ahead must not take a claim another host is still renewing."""
    claimed = stored_message(
        pipeline, sandbox_api.followers()[0], "live-claim", status=Message.Status.SENDING, attempts=1
    )
    Message.objects.filter(pk=claimed.pk).update(lease_expires_at=lease_from_now())
    assert settle(timezone.now() + timedelta(hours=1))["recovered"] == 0
    assert refreshed(claimed).status == Message.Status.SENDING
    Message.objects.filter(pk=claimed.pk).update(lease_expires_at=Now() - timedelta(seconds=1))
    assert settle(timezone.now() - timedelta(hours=1))["recovered"] == 1
    assert refreshed(claimed).status == Message.Status.QUEUED


def test_listed_delivery_sends_each_message_once(pipeline, sandbox_api):
    ids = [stored_message(pipeline, openid, f"listed-{i}").pk for i, openid in enumerate(sandbox_api.followers()[:5])]
    deliver_messages(ids)
    assert Message.objects.filter(pk__in=ids, status=Message.Status.SENT, attempts=1).count() == 5


def test_a_cache_outage_behind_the_token_keeps_messages_queued_with_their_attempts(
    pipeline, sandbox_api, monkeypatch, settings
):
    from redis.exceptions import ConnectionError as RedisConnectionError

    settings.WXNOTIFY_RETRY_WAIT_HORIZON_SECONDS = 0  # in production a task would stay and try again every 5 s

    from wxnotify.wechat.tokens import AccessTokenManager

    def cache_down(self, client):
        raise RedisConnectionError("Redis is restarting")

    monkeypatch.setattr(AccessTokenManager, "get_token", cache_down)
    message = refreshed(send(pipeline, touser=sandbox_api.followers()[0]).message)
    assert (message.status, message.attempts) == (Message.Status.QUEUED, 0)
    assert timezone.now() < message.next_attempt_at <= timezone.now() + timedelta(seconds=6)
    monkeypatch.undo()
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    deliver_due_messages()
    assert (refreshed(message).status, refreshed(message).attempts) == (Message.Status.SENT, 1)
